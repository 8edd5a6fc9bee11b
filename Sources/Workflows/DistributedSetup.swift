import ContextDiff
import Foundation
import Torch

/// One rank of a process group, resolved from settings and torchrun's environment variables.
public struct DistributedSettings: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var rank: Int
    public var worldSize: Int
    /// Seconds the rendezvous or any collective waits for the other ranks before failing.
    public var timeout: Double

    public init(host: String, port: Int, rank: Int, worldSize: Int, timeout: Double) {
        self.host = host
        self.port = port
        self.rank = rank
        self.worldSize = worldSize
        self.timeout = timeout
    }

    /// The settings from the given values, which win over torchrun's environment variables
    /// (`MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`), or nil for a single process (no
    /// rank nor world size, or a world size of 1). Errors name each setting with its variable.
    public static func resolve(
        masterAddr: String?, masterPort: Int?, rank: Int?, worldSize: Int?, timeout: Double,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> DistributedSettings? {
        func fail(_ message: String) -> DistributedTrainingError { .invalidSettings(message) }
        guard timeout > 0, timeout.isFinite else { throw fail("dist_timeout must be a positive number of seconds") }
        func integer(_ given: Int?, _ variable: String) throws -> Int? {
            if let given { return given }
            guard let text = environment[variable], !text.isEmpty else { return nil }
            guard let value = Int(text.trimmingCharacters(in: .whitespaces)) else {
                throw fail("\(variable)=\(text) is not an integer")
            }
            return value
        }
        let givenRank = rank, givenWorldSize = worldSize
        let rank = try integer(givenRank, "RANK")
        let worldSize = try integer(givenWorldSize, "WORLD_SIZE")
        let port = try integer(masterPort, "MASTER_PORT")
        let host = masterAddr ?? environment["MASTER_ADDR"].flatMap { $0.isEmpty ? nil : $0 }
        if rank == nil, worldSize == nil {
            guard masterAddr == nil, masterPort == nil else {
                throw fail("master_addr and master_port need rank (RANK) and world_size (WORLD_SIZE)")
            }
            return nil
        }
        var missing: [String] = []
        if rank == nil { missing.append("rank (RANK)") }
        if worldSize == nil { missing.append("world_size (WORLD_SIZE)") }
        if let worldSize, worldSize > 1 {
            if host == nil { missing.append("master_addr (MASTER_ADDR)") }
            if port == nil { missing.append("master_port (MASTER_PORT)") }
        }
        guard missing.isEmpty, let rank, let worldSize else {
            throw fail("data-parallel training needs a rank, a world size, and rank 0's address and port; missing \(missing.joined(separator: ", "))")
        }
        guard worldSize >= 1 else { throw fail("the world size must be at least 1, got \(worldSize)") }
        guard (0..<worldSize).contains(rank) else { throw fail("rank \(rank) is outside 0..<\(worldSize)") }
        if worldSize == 1 { return nil }
        guard let host, let port else { return nil }
        guard (1...65535).contains(port) else { throw fail("master port \(port) is outside 1...65535") }
        return DistributedSettings(host: host, port: port, rank: rank, worldSize: worldSize, timeout: timeout)
    }

    /// Connects to rank 0's store (rank 0 serves it) and joins the Gloo group; `notes` gets
    /// a warning when this rank listens on a loopback address other machines cannot reach.
    public func join(notes: (String) -> Void = { _ in }) throws -> ProcessGroup {
        do {
            let store = try TCPStore(host: host, port: port, worldSize: worldSize, isMaster: rank == 0, timeoutSeconds: timeout)
            let group = try ProcessGroup(store: store, rank: rank, worldSize: worldSize, timeoutSeconds: timeout)
            let loopback = ["127.", "::1", "localhost"]
            if loopback.contains(where: group.listenAddress.hasPrefix), !loopback.contains(where: host.hasPrefix) {
                notes("warning: rank \(rank) listens on the loopback address \(group.listenAddress), which ranks on other machines cannot reach; use rank 0's IP address as MASTER_ADDR or set GLOO_SOCKET_IFNAME")
            }
            if rank == 0 {
                notes("process group of \(worldSize) ranks: store on port \(port), rank 0 listens on \(group.listenAddress)")
            }
            return group
        } catch let TorchError.distributed(message) {
            throw DistributedTrainingError.cannotJoin(rank: rank, worldSize: worldSize, host: host, port: port, timeout: timeout, message)
        }
    }

    /// Rank 0's recipe (it may come from the run folder) and resume choice, on every rank.
    public func agree(on run: RunAgreement, in group: ProcessGroup) throws -> RunAgreement {
        let mine = Array(try JSONEncoder().encode(run))
        let length = try Tensor([Int64(mine.count)], shape: [1])
        try group.broadcast([length], root: 0)
        let count = Int(try length.scalars(as: Int64.self)[0])
        let bytes = try Tensor(group.rank == 0 ? mine : [UInt8](repeating: 0, count: count), shape: [count])
        try group.broadcast([bytes], root: 0)
        let agreed = try JSONDecoder().decode(RunAgreement.self, from: Data(bytes.scalars(as: UInt8.self)))
        guard agreed.recipe.training.batchSize % worldSize == 0 else {
            throw WorkflowError.batchDoesNotSplit(batch: agreed.recipe.training.batchSize, ranks: worldSize)
        }
        return agreed
    }
}

/// What every rank takes from rank 0 before training.
public struct RunAgreement: Codable, Sendable {
    public var recipe: TrainingRecipe
    public var resume: Bool

    public init(recipe: TrainingRecipe, resume: Bool) {
        self.recipe = recipe
        self.resume = resume
    }
}

/// A rank could not join its group, or lost the other ranks while training.
public enum DistributedTrainingError: Error, CustomStringConvertible, Equatable {
    /// Settings or environment variables that do not describe a rank of a group.
    case invalidSettings(String)
    case cannotJoin(rank: Int, worldSize: Int, host: String, port: Int, timeout: Double, String)
    case lostPeers(rank: Int, worldSize: Int, timeout: Double, String)

    public var description: String {
        switch self {
        case let .invalidSettings(message): message
        case let .cannotJoin(rank, worldSize, host, port, timeout, message):
            "rank \(rank) of \(worldSize) could not join the process group at \(host):\(port): \(message)"
                + (message.lowercased().contains("timed out") || message.lowercased().contains("timeout")
                    ? " (waited dist_timeout \(seconds(timeout)): is rank 0 running with this address and port, did all \(worldSize) ranks start, and does the firewall let them connect?)"
                    : "")
        case let .lostPeers(rank, worldSize, timeout, message):
            "rank \(rank) of \(worldSize) lost contact with the other ranks (one exited, or none answered within dist_timeout \(seconds(timeout))): \(message)"
        }
    }
}

private func seconds(_ value: Double) -> String {
    value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
}

