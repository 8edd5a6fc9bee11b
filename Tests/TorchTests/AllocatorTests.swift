import Foundation
import Testing
@testable import Torch

/// ``Torch/cacheTensorMemory(limit:largestBlock:)``: freed CPU tensor buffers are handed out
/// again for the next request of the same size, never while a tensor still holds them; values
/// survive reuse on concurrent threads; the limit and the largest cached size are honoured.
/// Process-wide state: the suite runs its tests one at a time, and other suites running beside
/// it only add hits and misses (the assertions are on lower bounds and on values).
@Suite("Torch: caching CPU tensor allocator", .serialized)
struct AllocatorTests {
    /// A size no other test allocates: 300 KiB of float32.
    static let odd = [300 * 256]

    init() throws {
        #expect(Torch.cacheTensorMemory(limit: 1 << 30, largestBlock: 32 << 20), "supported under libtorch 1.13")
    }

    @Test func aFreedBufferServesTheNextRequestOfItsSize() throws {
        let before = Torch.tensorMemoryCache
        do { _ = try Tensor.full(Self.odd, value: 1) }
        let second = try Tensor.full(Self.odd, value: 2)
        let after = Torch.tensorMemoryCache
        #expect(after.hits >= before.hits + 1, "the second tensor reuses the first one's buffer")
        #expect(try second.scalars(as: Float.self).allSatisfy { $0 == 2 })
    }

    @Test func liveTensorsNeverShareABuffer() throws {
        do { _ = try Tensor.zeros(Self.odd) }  // one cached block of this size
        let tensors = try (0..<6).map { try Tensor.full(Self.odd, value: Double($0)) }
        for (i, t) in tensors.enumerated() {
            #expect(try t.scalars(as: Float.self).allSatisfy { $0 == Float(i) }, "tensor \(i) kept its values")
        }
    }

    @Test func reusedBuffersComputeTheSameResults() throws {
        let a = try Tensor.randn([64, 700], generator: Generator(seed: 3))
        let b = try Tensor.randn([700, 96], generator: Generator(seed: 4))
        let first = try a.matmul(b).scalars(as: Float.self)
        for _ in 0..<3 {
            let again = try a.matmul(b).scalars(as: Float.self)
            #expect(again == first)
        }
    }

    @Test func concurrentThreadsKeepTheirValues() throws {
        let failures = Counter()
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for round in 0..<50 {
                let value = Double(worker * 1000 + round)
                guard let t = try? Tensor.full([worker % 2 == 0 ? 70_000 : 90_000], value: value),
                    let s = try? (t + 1).scalars(as: Float.self), s.allSatisfy({ $0 == Float(value + 1) })
                else {
                    failures.add()
                    continue
                }
            }
        }
        #expect(failures.value == 0)
    }

    @Test func theLimitAndTheLargestCachedSizeAreHonoured() throws {
        defer { Torch.cacheTensorMemory(limit: 1 << 30, largestBlock: 32 << 20) }
        // Nothing is cached with a limit of 0: freeing and allocating again misses.
        #expect(Torch.cacheTensorMemory(limit: 0, largestBlock: 32 << 20))
        Torch.releaseCachedTensorMemory()
        do { _ = try Tensor.zeros(Self.odd) }
        #expect(Torch.tensorMemoryCache.cachedBytes == 0)
        // A buffer above the largest cached size goes back to malloc (other suites may cache
        // their own small buffers meanwhile, never 64 MiB of them in these few microseconds).
        #expect(Torch.cacheTensorMemory(limit: 1 << 30, largestBlock: 1 << 20))
        Torch.releaseCachedTensorMemory()
        do { _ = try Tensor.zeros([16 << 20]) }
        #expect(Torch.tensorMemoryCache.cachedBytes < 64 << 20)
        // A cached buffer counts until it is reused or released.
        do { _ = try Tensor.zeros(Self.odd) }
        #expect(Torch.tensorMemoryCache.cachedBytes >= 300 * 1024)
        #expect(Torch.releaseCachedTensorMemory() >= 300 * 1024)
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0
        func add() { lock.lock(); count += 1; lock.unlock() }
        var value: Int { lock.lock(); defer { lock.unlock() }; return count }
    }
}
