import CTorch

/// A rendezvous key-value store (c10d's `TCPStore`). Rank 0 hosts it.
public final class TCPStore: @unchecked Sendable {
    let handle: OpaquePointer

    /// Connects to (or, when `isMaster`, serves) the store at `host:port`.
    public init(host: String, port: Int, worldSize: Int, isMaster: Bool, timeoutSeconds: Double = 60) throws {
        guard (1...65535).contains(port) else { throw TorchError.distributed("port \(port) outside 1...65535") }
        guard worldSize >= 1 else { throw TorchError.distributed("world size must be at least 1, got \(worldSize)") }
        guard let h = ct_store_new(host, UInt16(port), Int64(worldSize), isMaster, Int64(timeoutSeconds * 1000)) else {
            throw TorchError.distributed("cannot reach the store at \(host):\(port): \(String(cString: ct_last_error()))")
        }
        handle = h
    }

    deinit { ct_store_free(handle) }
}

/// A Gloo process group (c10d's `ProcessGroupGloo`) for CPU collectives.
public final class ProcessGroup: @unchecked Sendable {
    let handle: OpaquePointer
    public let rank: Int
    public let worldSize: Int
    let store: TCPStore

    public enum ReduceOp: Int32, Sendable { case sum = 0, product, min, max }

    public init(store: TCPStore, rank: Int, worldSize: Int, timeoutSeconds: Double = 60) throws {
        guard (0..<worldSize).contains(rank) else {
            throw TorchError.distributed("rank \(rank) outside 0..<\(worldSize)")
        }
        guard let h = ct_pg_gloo_new(store.handle, Int64(rank), Int64(worldSize), Int64(timeoutSeconds * 1000)) else {
            throw TorchError.distributed("cannot create the Gloo process group: \(String(cString: ct_last_error()))")
        }
        handle = h
        self.rank = rank
        self.worldSize = worldSize
        self.store = store
    }

    deinit { ct_pg_free(handle) }

    /// Reduces every tensor in place across all ranks.
    public func allReduce(_ tensors: [Tensor], op: ReduceOp = .sum) throws {
        try Tensor.withHandles(tensors) { hs, n in
            if ct_pg_allreduce(handle, hs, n, op.rawValue) != 0 {
                throw TorchError.distributed("all-reduce failed: \(String(cString: ct_last_error()))")
            }
        }
    }

    /// Overwrites every tensor with rank `root`'s values.
    public func broadcast(_ tensors: [Tensor], root: Int = 0) throws {
        try Tensor.withHandles(tensors) { hs, n in
            if ct_pg_broadcast(handle, hs, n, Int64(root)) != 0 {
                throw TorchError.distributed("broadcast failed: \(String(cString: ct_last_error()))")
            }
        }
    }

    public func barrier() throws {
        if ct_pg_barrier(handle) != 0 {
            throw TorchError.distributed("barrier failed: \(String(cString: ct_last_error()))")
        }
    }
}
