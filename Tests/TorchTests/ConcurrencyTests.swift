import Foundation
import Testing
@testable import Torch

/// ``Torch/concurrently(_:threadsEach:_:)``: parts on separate threads at once, each computing
/// as the caller would (grad mode, default device, precision scope), with its own intra-op
/// threads; errors come back; a nested call runs inline.
@Suite("Torch: parts of a computation on concurrent threads")
struct ConcurrencyTests {
    /// One slot per part, written by that part's thread only.
    final class Slots<Value>: @unchecked Sendable {
        private var values: [Value?]
        init(_ count: Int) { values = Array(repeating: nil, count: count) }
        subscript(i: Int) -> Value? {
            get { values[i] }
            set { values[i] = newValue }
        }
    }

    @Test func partsRunAtOnceOnTheirOwnThreadsWithTheirShareOfThreads() throws {
        let caller = pthread_self()
        let threads = Slots<pthread_t>(2), intraOp = Slots<Int>(2)
        // Part 1 waits for part 0 to arrive and part 0 for part 1: only concurrent parts finish.
        let arrived = Slots<Bool>(2), lock = NSCondition()
        let before = Torch.numThreads
        try Torch.concurrently(2, threadsEach: 1) { i in
            threads[i] = pthread_self()
            intraOp[i] = Torch.numThreads
            lock.lock()
            arrived[i] = true
            lock.broadcast()
            let deadline = Date().addingTimeInterval(20)
            while arrived[1 - i] != true, lock.wait(until: deadline) {}
            lock.unlock()
        }
        #expect(arrived[0] == true && arrived[1] == true)
        #expect(pthread_equal(threads[0]!, caller) != 0, "part 0 runs on the caller's thread")
        #expect(pthread_equal(threads[1]!, caller) == 0, "part 1 runs on a helper thread")
        #expect(intraOp[0] == 1 && intraOp[1] == 1)
        #expect(Torch.numThreads == before, "the caller's intra-op threads are restored")
    }

    @Test func partsComputeAsTheCallerWould() throws {
        let g = Generator(seed: 4)
        let a = try Tensor.randn([16, 8], generator: g), b = try Tensor.randn([8, 5], generator: g)
        let w = try Tensor.randn([8, 5], generator: g).requiringGrad()
        // Grad mode: recorded outside no-grad, not inside.
        let recorded = Slots<Bool>(2)
        try Torch.withNoGrad {
            try Torch.concurrently(2) { i in recorded[i] = try a.matmul(w).requiresGrad }
        }
        #expect(recorded[0] == false && recorded[1] == false)
        try Torch.concurrently(2) { i in recorded[i] = try a.matmul(w).requiresGrad }
        #expect(recorded[0] == true && recorded[1] == true)
        // The precision scope: the helper's product is the caller's bf16 product, not float32's.
        let products = Slots<Tensor>(2)
        try Torch.withPrecision(.bf16, on: .cpu) {
            try Torch.concurrently(2) { i in products[i] = try a.matmul(b) }
        }
        #expect(try (products[0]! - products[1]!).abs().max().item() as Double == 0)
        #expect(try (products[1]! - a.matmul(b)).abs().max().item() as Double > 0, "the helper computed in float32")
        // The default device for new tensors.
        let devices = Slots<Device>(2)
        try Torch.withDefaultDevice(.meta) {
            try Torch.concurrently(2) { i in devices[i] = try Tensor.zeros([2]).device }
        }
        #expect(devices[0] == .meta && devices[1] == .meta)
        // Nothing leaks into the helper's next job.
        try Torch.concurrently(2) { i in
            devices[i] = try Tensor.zeros([2]).device
            recorded[i] = try a.matmul(w).requiresGrad
        }
        #expect(devices[1] == .cpu && recorded[1] == true)
    }

    /// OpenBLAS's own pool can be set (what `train` does: one thread); where libtorch's BLAS
    /// is not OpenBLAS there is nothing to set.
    @Test func blasThreadsCanBeSet() throws {
        guard let before = Torch.blasThreads else { return }
        Torch.blasThreads = 1
        #expect(Torch.blasThreads == 1)
        Torch.blasThreads = 2
        #expect(Torch.blasThreads == 2)
        Torch.blasThreads = 0  // ignored
        #expect(Torch.blasThreads == 2)
        Torch.blasThreads = before
    }

    struct PartFailed: Error, Equatable { let part: Int }

    @Test func theFirstErrorComesBackAndEveryPartRuns() throws {
        let ran = Slots<Bool>(3)
        #expect(throws: PartFailed(part: 1)) {
            try Torch.concurrently(3) { i in
                ran[i] = true
                if i > 0 { throw PartFailed(part: i) }
            }
        }
        #expect((0..<3).allSatisfy { ran[$0] == true })
        // The helpers are free again afterwards.
        try Torch.concurrently(2) { i in ran[i] = false }
        #expect(ran[0] == false && ran[1] == false)
    }

    @Test func aNestedCallRunsItsPartsInline() throws {
        let inner = Slots<pthread_t>(4)
        try Torch.concurrently(2) { i in
            let outer = pthread_self()
            let mine = Slots<pthread_t>(2)
            try Torch.concurrently(2) { j in mine[j] = pthread_self() }
            #expect(pthread_equal(mine[0]!, outer) != 0 && pthread_equal(mine[1]!, outer) != 0)
            inner[2 * i] = mine[0]
            inner[2 * i + 1] = mine[1]
        }
        #expect((0..<4).allSatisfy { inner[$0] != nil })
    }
}
