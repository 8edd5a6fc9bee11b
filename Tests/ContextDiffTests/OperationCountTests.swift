import ContextDiff
import NN
import Testing
import Torch

@Suite("Operation counts for achieved-GFLOP/s figures")
struct OperationCountTests {
    /// The shipped model's configuration.
    static func shipped() throws -> (UNet, ContextAdapter) {
        (try UNet(.shapesDefault), try ContextAdapter(.shapesDefault))
    }

    @Test func layersCountTheirMultiplyAccumulates() throws {
        #expect(try Linear(384, 64).macs(rows: 10) == 10 * 384 * 64)
        let conv = try Conv2d(32, 64, kernel: 3, stride: 2, padding: 1)
        #expect(conv.outputSize(32) == 16)
        #expect(conv.macs(batch: 2, size: 32) == 2 * 16 * 16 * 64 * 32 * 9)
        let attention = try MultiHeadAttention(queryDim: 64, contextDim: 384, heads: 4)
        #expect(attention.macs(batch: 1, queries: 256, keys: 32) == 256 * 64 * 64 * 2 + 2 * 32 * 384 * 64 + 2 * 256 * 32 * 64)
    }

    /// Expected values: torch.profiler(with_flops=True) on the PyTorch twin's forward, summing
    /// conv2d/mm/addmm/bmm/baddbmm (`bench_peer.py flops`), divided by 2 — 630 882 304 and
    /// 12 861 440 FLOPs per image with 32 text tokens.
    @Test func shippedModelCountsMatchTheProfiler() throws {
        let (unet, adapter) = try Self.shipped()
        #expect(unet.forwardMACs(batch: 1, textTokens: 32) == 315_441_152)
        #expect(adapter.forwardMACs(batch: 1, textTokens: 32) == 6_430_720)
        #expect(unet.forwardMACs(batch: 3, textTokens: 32) == 3 * 315_441_152)
    }
}
