import CTorch
import Foundation

/// A rendezvous key-value store (c10d's `TCPStore`). Rank 0 hosts it on `port` (all interfaces).
public final class TCPStore: @unchecked Sendable {
    let handle: OpaquePointer
    public let host: String
    public let port: Int

    /// Connects to (or, when `isMaster`, serves) the store at `host:port`. A client retries until
    /// `timeoutSeconds` pass; a name that does not resolve fails at once.
    public init(host: String, port: Int, worldSize: Int, isMaster: Bool, timeoutSeconds: Double = 60) throws {
        guard (1...65535).contains(port) else { throw TorchError.distributed("port \(port) outside 1...65535") }
        guard worldSize >= 1 else { throw TorchError.distributed("world size must be at least 1, got \(worldSize)") }
        guard timeoutSeconds > 0, timeoutSeconds.isFinite else {
            throw TorchError.distributed("timeout must be positive, got \(timeoutSeconds) s")
        }
        guard let h = ct_store_new(host, UInt16(port), Int64(worldSize), isMaster, Int64(timeoutSeconds * 1000)) else {
            let reason = String(cString: ct_last_error()).trimmingTrailingNewlines()
            throw TorchError.distributed(
                isMaster ? "cannot serve the store on port \(port): \(reason)" : "cannot reach the store at \(host):\(port): \(reason)")
        }
        handle = h
        self.host = host
        self.port = port
    }

    deinit { ct_store_free(handle) }
}

/// A Gloo process group (c10d's `ProcessGroupGloo`) for CPU collectives.
public final class ProcessGroup: @unchecked Sendable {
    let handle: OpaquePointer
    public let rank: Int
    public let worldSize: Int
    let store: TCPStore

    /// The address (or interface) this rank's Gloo transport listens on; peers connect to it.
    public let listenAddress: String

    public enum ReduceOp: Int32, Sendable { case sum = 0, product, min, max }

    /// Where Gloo listens for its peers.
    public enum Transport: Sendable, Equatable {
        /// The interface named by `GLOO_SOCKET_IFNAME` when set (PyTorch's convention), otherwise
        /// the local address the kernel routes to the store's host through (127.0.0.1 for a
        /// loopback store).
        case automatic
        /// A network interface by name, e.g. `eth0`.
        case interface(String)
        /// A local IP address or host name.
        case address(String)
    }

    /// Joins the group: rendezvous through `store`, then a full mesh of Gloo connections.
    /// `timeoutSeconds` bounds the rendezvous and every later collective, so a dead or stuck
    /// peer makes collectives throw ``TorchError/distributed(_:)`` instead of hanging.
    public init(
        store: TCPStore, rank: Int, worldSize: Int, timeoutSeconds: Double = 60, transport: Transport = .automatic
    ) throws {
        guard (0..<worldSize).contains(rank) else {
            throw TorchError.distributed("rank \(rank) outside 0..<\(worldSize)")
        }
        guard timeoutSeconds > 0, timeoutSeconds.isFinite else {
            throw TorchError.distributed("timeout must be positive, got \(timeoutSeconds) s")
        }
        var interface: String?, address: String?
        switch transport {
        case .automatic:
            if let name = ProcessInfo.processInfo.environment["GLOO_SOCKET_IFNAME"], !name.isEmpty {
                interface = name
            } else {
                address = try Self.routeAddress(to: store.host)
            }
        case let .interface(name): interface = name
        case let .address(a): address = a
        }
        let created = ct_pg_gloo_new(store.handle, Int64(rank), Int64(worldSize), Int64(timeoutSeconds * 1000), interface, address)
        listenAddress = interface.map { "interface \($0)" } ?? address ?? "127.0.0.1"
        guard let h = created else {
            let reason = String(cString: ct_last_error()).trimmingTrailingNewlines()
            throw TorchError.distributed("rank \(rank) cannot join the Gloo process group of \(worldSize) ranks: \(reason)")
        }
        handle = h
        self.rank = rank
        self.worldSize = worldSize
        self.store = store
    }

    /// The local address through which this machine reaches `host`.
    public static func routeAddress(to host: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        guard ct_route_address(host, &buffer, buffer.count) == 0 else {
            throw TorchError.distributed(String(cString: ct_last_error()).trimmingTrailingNewlines())
        }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    deinit { ct_pg_free(handle) }

    static var lastError: String { String(cString: ct_last_error()).trimmingTrailingNewlines() }

    /// Reduces every tensor in place across all ranks.
    public func allReduce(_ tensors: [Tensor], op: ReduceOp = .sum) throws {
        try Tensor.withHandles(tensors) { hs, n in
            if ct_pg_allreduce(handle, hs, n, op.rawValue) != 0 {
                throw TorchError.distributed("all-reduce failed: \(Self.lastError)")
            }
        }
    }

    /// Overwrites every tensor with rank `root`'s values.
    public func broadcast(_ tensors: [Tensor], root: Int = 0) throws {
        try Tensor.withHandles(tensors) { hs, n in
            if ct_pg_broadcast(handle, hs, n, Int64(root)) != 0 {
                throw TorchError.distributed("broadcast failed: \(Self.lastError)")
            }
        }
    }

    public func barrier() throws {
        if ct_pg_barrier(handle) != 0 {
            throw TorchError.distributed("barrier failed: \(Self.lastError)")
        }
    }
}
