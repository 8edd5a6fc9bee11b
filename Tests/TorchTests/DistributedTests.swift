import Foundation
import Testing
import Torch

@Suite("c10d Gloo collectives")
struct DistributedTests {
    /// Two ranks in one process (one thread each) all-reduce and broadcast over loopback.
    @Test func twoRanksAllReduceAndBroadcast() async throws {
        let port = 29_000 + Int.random(in: 0..<2000)
        let results = try await withThrowingTaskGroup(of: (Int, [Float], [Float]).self) { group in
            for rank in 0..<2 {
                group.addTask {
                    try await Task.detached {
                        let store = try TCPStore(host: "127.0.0.1", port: port, worldSize: 2, isMaster: rank == 0, timeoutSeconds: 30)
                        let pg = try ProcessGroup(store: store, rank: rank, worldSize: 2, timeoutSeconds: 30)
                        let t = try Tensor([Float(rank + 1), Float(10 * (rank + 1))], shape: [2])
                        try pg.allReduce([t])
                        let b = try Tensor([Float(rank), Float(rank)], shape: [2])
                        try pg.broadcast([b], root: 1)
                        try pg.barrier()
                        return (rank, try t.scalars(as: Float.self), try b.scalars(as: Float.self))
                    }.value
                }
            }
            var out: [(Int, [Float], [Float])] = []
            for try await r in group { out.append(r) }
            return out
        }
        #expect(results.count == 2)
        for (_, reduced, broadcast) in results {
            #expect(reduced == [3, 30])
            #expect(broadcast == [1, 1])
        }
    }

    @Test func badArgumentsAreClearErrors() {
        #expect(throws: TorchError.self) { try TCPStore(host: "127.0.0.1", port: 70000, worldSize: 2, isMaster: true) }
        #expect(throws: TorchError.self) { try TCPStore(host: "127.0.0.1", port: 29500, worldSize: 0, isMaster: true) }
        // Nobody serves this port: the client gives up after its timeout with an error.
        #expect(throws: TorchError.self) {
            try TCPStore(host: "127.0.0.1", port: 1, worldSize: 2, isMaster: false, timeoutSeconds: 1)
        }
    }
}
