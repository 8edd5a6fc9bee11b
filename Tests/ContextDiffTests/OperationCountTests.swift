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

    /// A text refiner and a layout prior add their own work: hand-counted for a tiny U-Net
    /// (12-wide tokens, 5 of them, 16×16 images, base 16): refiner width 8 (1 layer, MLP ×2),
    /// prior width 8 (1 layer, MLP ×2, 3 canvas channels).
    @Test func refinerAndLayoutPriorAreCounted() throws {
        var config = UNetConfig()
        (config.sampleSize, config.baseChannels, config.channelMultipliers, config.layersPerBlock) = (16, 16, [1, 2], 1)
        (config.attentionResolutions, config.crossAttentionResolutions, config.heads) = ([8], [16, 8], 2)
        (config.contextDim, config.pooledDim, config.normGroups) = (12, 12, 4)
        let plain = try UNet(config).forwardMACs(batch: 2, textTokens: 5)
        config.textRefiner = TextRefinerConfig(layers: 1, width: 8, heads: 2, mlpRatio: 2, maxTokens: 5)
        let refined = try UNet(config).forwardMACs(batch: 2, textTokens: 5)
        // proj_in 12→8, attention (4 projections 8×8 and 2·5·5·8), MLP 8→16→8, tokens_out 8→12 per token; pooled_out 8→12 per image.
        let layer = 4 * 5 * 8 * 8 + 2 * 5 * 5 * 8 + 2 * 5 * 8 * 16
        #expect(refined - plain == 2 * (5 * 12 * 8 + layer + 5 * 8 * 12 + 8 * 12))
        config.layoutPrior = LayoutPriorConfig(layers: 1, width: 8, heads: 2, channels: 3, maxTokens: 5)
        let both = try UNet(config).forwardMACs(batch: 2, textTokens: 5)
        // proj_in, the layer, head 8→5 and value 12→3 per token; canvas 3·5·256; conv 3→16, 3×3, on 16×16.
        #expect(both - refined == 2 * (5 * 12 * 8 + layer + 5 * 8 * 5 + 5 * 12 * 3 + 3 * 5 * 256 + 256 * 16 * 3 * 9))
    }
}
