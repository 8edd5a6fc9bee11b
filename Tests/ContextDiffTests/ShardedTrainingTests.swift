import Foundation
import NN
import TestSupport
import Testing
import Torch

@testable import ContextDiff

/// ``Trainer/shards``: a step's batch in two parts on two threads computes what the whole batch
/// computes, up to the order of float additions, and does so reproducibly.
@Suite("Training: a step's batch in two concurrent shards")
struct ShardedTrainingTests {
    func trainer(shards: Int?, unet: UNetConfig = TinyConfigs.unet, root: URL) throws -> Trainer {
        let model = try Torch.withSeed(5) {
            ContextDiffModel(
                unet: try UNet(unet), adapter: try ContextAdapter(TinyConfigs.adapter),
                schedule: try NoiseSchedule(NoiseScheduleConfig()), textEncoder: TextEncoderSpec(kind: "learned", maxTokens: 32))
        }
        // The adapter's last layer starts at zero; weights of their own make r_φ (and its gradients) act.
        for (i, p) in model.adapter!.parameters().enumerated() {
            try Torch.withNoGrad { try p.copy(from: Tensor.randn(p.shape, generator: Generator(seed: UInt64(50 + i))) * 0.05) }
        }
        let encoder = try TinyPipeline.encoder()
        let texts = ["a red circle", "a blue square", "a green triangle", "a red square"]
        let pixels = try Tensor.rand([8, 3, 16, 16], generator: Generator(seed: 9)) * 2 - 1
        let data = try InMemoryImageSource(pixels: pixels, captions: (0..<8).map { texts[$0 % texts.count] })
        let captions = try CaptionTable(captions: data.captions) { texts in
            let e = try encoder.encode(texts)
            return try Condition(tokens: e.tokenStates, mask: e.attentionMask, pooled: e.pooled)
        }
        var config = TrainingConfig()
        config.batchSize = 7  // halves of 4 and 3 rows
        config.steps = 3
        config.warmupSteps = 1
        config.checkpointEvery = 100
        config.seed = 11
        let trainer = try Trainer(
            model: model, config: config, data: data, captions: captions, runDirectory: root.appendingPathComponent(UUID().uuidString))
        trainer.shards = shards
        return trainer
    }

    @Test func twoShardsComputeTheWholeBatchsStepReproducibly() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("shards-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let whole = try trainer(shards: 1, root: root), split = try trainer(shards: 2, root: root)
        let again = try trainer(shards: 2, root: root)
        #expect(try whole.shardRanges(rows: 7) == [0..<7])
        #expect(try split.shardRanges(rows: 7) == [0..<4, 4..<7])
        for _ in 0..<3 {
            let (a, b, c) = (try whole.trainStep(), try split.trainStep(), try again.trainStep())
            // Each shard's mean weighted by its share of the rows: the batch mean, to float rounding.
            #expect(abs(a - b) <= 1e-5 * abs(a), "whole batch \(a), two shards \(b)")
            #expect(b == c, "two sharded runs disagree: \(b) vs \(c)")
        }
        // Three AdamW steps later the weights still agree to float rounding (relative to the
        // whole parameter vector's size) and the two sharded runs bit for bit.
        let flat = { (t: Trainer) in try Tensor.cat(t.model.parameters.map { try $0.detached().reshaped([-1]) }) }
        let (w, s, r) = (try flat(whole), try flat(split), try flat(again))
        #expect(try TestSupport.relativeDiff(s, w) <= 1e-4)
        #expect(try TestSupport.maxAbsDiff(s, r) == 0)
        // And training moved them: the comparison above is not between untouched weights.
        let untouched = try flat(try trainer(shards: 1, root: root))
        #expect(try TestSupport.relativeDiff(w, untouched) > 1e-3)
    }

    @Test func shardsAreOneOrTwoAndDropoutRunsWhole() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("shards-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let t = try trainer(shards: 3, root: root)
        #expect(throws: TrainingError.invalidConfig("shards must be 1 or 2 (got 3)")) { try t.shardRanges(rows: 8) }
        t.shards = 2
        #expect(try t.shardRanges(rows: 1) == [0..<1])
        var dropping = TinyConfigs.unet
        dropping.dropout = 0.1
        let d = try trainer(shards: 2, unet: dropping, root: root)
        #expect(try d.shardRanges(rows: 8) == [0..<8], "one generator's dropout masks would depend on thread timing")
        #expect(try d.trainStep().isFinite)
    }
}
