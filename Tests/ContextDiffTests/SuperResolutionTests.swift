import Foundation
import NN
import TestSupport
import Testing
import Torch

@testable import ContextDiff

/// A tiny super-resolution stage: 16 → 32 over the tiny base model's 16×16 images, condition width 12.
enum TinyStage {
    static var config: EfficientUNetConfig {
        var c = EfficientUNetConfig()
        c.lowResolutionSize = 16
        c.sampleSize = 32
        c.baseChannels = 8
        c.channelMultipliers = [1, 2]
        c.blocksPerLevel = [1, 2]
        c.crossAttentionResolutions = [16]
        c.selfAttentionResolutions = [16]
        c.heads = 2
        c.contextDim = 12
        c.pooledDim = 12
        c.normGroups = 4
        return c
    }

    static func model(seed: UInt64 = 9, noiseLevel: Int = 100) throws -> SuperResolutionModel {
        var schedule = NoiseScheduleConfig()
        schedule.betaSchedule = .cosine
        let unet = try Torch.withSeed(seed) { try EfficientUNet(config) }
        return try SuperResolutionModel(
            unet: unet, schedule: NoiseSchedule(schedule),
            index: SuperResolutionIndex(textEncoder: TextEncoderSpec(kind: "learned", maxTokens: 32), samplingNoiseLevel: noiseLevel))
    }

    static func condition(_ batch: Int, seed: UInt64 = 4) throws -> Condition {
        let g = Generator(seed: seed)
        return try Condition(
            tokens: Tensor.randn([batch, 5, 12], generator: g), mask: Tensor.ones([batch, 5]).to(.bool),
            pooled: Tensor.randn([batch, 12], generator: g))
    }
}

/// Low/high pairs drawn from a fixed seed (a smooth blob and its finer twin), for the trainer.
struct BlobPairs: SuperResolutionSource {
    let count = 6
    func batch(at indices: [Int]) throws -> (low: Tensor, high: Tensor, captions: [String]) {
        let high = try Tensor.cat(indices.map { i in
            try Tensor.randn([1, 3, 4, 4], generator: Generator(seed: UInt64(i))).tanh().interpolate(size: (32, 32), mode: .bilinear(alignCorners: false))
        })
        return (try high.avgPool2d(kernel: 2), high, indices.map { $0 % 2 == 0 ? "a red circle" : "a blue square" })
    }
}

@Suite("Super-resolution stage and cascade")
struct SuperResolutionTests {
    /// The Efficient U-Net maps a sample to its own shape at full size and on any crop its
    /// levels divide (it trains on crops); wrong inputs are refused with the shapes named.
    @Test func efficientUNetIsFullyConvolutionalAndChecksInputs() throws {
        let unet = try TinyStage.model().unet
        let c = try TinyStage.condition(2)
        for side in [32, 16, 8] {
            let x = try Tensor.randn([2, 3, side, side], generator: Generator(seed: 1))
            let out = try Torch.withNoGrad {
                try unet(x, timesteps: Tensor([Int64(10), 900]), lowResolution: x * 0.5, augmentationLevels: Tensor([Int64(0), 300]), condition: c)
            }
            #expect(out.shape == x.shape)
            #expect(try out.abs().sum().item().isFinite)
        }
        let x = try Tensor.zeros([2, 3, 32, 32])
        #expect(throws: ModuleError.self) {
            try unet(x, timesteps: Tensor([Int64(1), 1]), lowResolution: Tensor.zeros([2, 3, 16, 16]), augmentationLevels: Tensor([Int64(0), 0]), condition: c)
        }
        #expect(throws: ModuleError.self) {
            try unet(Tensor.zeros([2, 3, 31, 31]), timesteps: Tensor([Int64(1), 1]), lowResolution: Tensor.zeros([2, 3, 31, 31]), augmentationLevels: Tensor([Int64(0), 0]), condition: c)
        }
        var bad = TinyStage.config
        bad.blocksPerLevel = [1]
        #expect(throws: ModuleError.self) { try EfficientUNet(bad) }
        bad = TinyStage.config
        bad.sampleSize = 24
        #expect(throws: ModuleError.self) { try EfficientUNet(bad) }
    }

    /// The augmentation level enters the network: the same input at two levels differs.
    @Test func augmentationLevelConditionsTheNetwork() throws {
        let unet = try TinyStage.model().unet
        let x = try Tensor.randn([1, 3, 32, 32], generator: Generator(seed: 3))
        let c = try TinyStage.condition(1)
        let (a, b) = try Torch.withNoGrad {
            (try unet(x, timesteps: Tensor([Int64(500)]), lowResolution: x, augmentationLevels: Tensor([Int64(0)]), condition: c),
             try unet(x, timesteps: Tensor([Int64(500)]), lowResolution: x, augmentationLevels: Tensor([Int64(400)]), condition: c))
        }
        #expect(try TestSupport.relativeDiff(a, b) > 1e-4)
    }

    /// Noise conditioning augmentation is the stage's forward marginal: level 0 leaves the image
    /// clean, level s gives √ᾱ_s·z + √(1−ᾱ_s)·ε exactly; a level outside the schedule is refused.
    @Test func noiseAugmentationIsTheForwardMarginal() throws {
        let schedule = try TinyStage.model().schedule
        let z = try Tensor.randn([2, 3, 8, 8], generator: Generator(seed: 1))
        let e = try Tensor.randn([2, 3, 8, 8], generator: Generator(seed: 2))
        let out = try NoiseAugmentation.apply(z, levels: [0, 250], schedule: schedule, noise: e)
        #expect(try TestSupport.maxAbsDiff(out.slice(dim: 0, 0, 1), z.slice(dim: 0, 0, 1)) == 0)
        let a = Double(schedule.alphaBar(250))
        let expected = try z.slice(dim: 0, 1, 2) * a.squareRoot() + e.slice(dim: 0, 1, 2) * (1 - a).squareRoot()
        #expect(try TestSupport.relativeDiff(out.slice(dim: 0, 1, 2), expected) < 1e-6)
        #expect(throws: PipelineError.self) { try NoiseAugmentation.apply(z, levels: [0, 1000], schedule: schedule, noise: e) }
        #expect(throws: PipelineError.self) { try NoiseAugmentation.apply(z, levels: [0], schedule: schedule, noise: e) }
        // Upsampling keeps [-1, 1] (bicubic overshoots; the stage's view is clamped).
        let edge = try Tensor.cat([Tensor.full([1, 3, 4, 2], value: -1), Tensor.full([1, 3, 4, 2], value: 1)], dim: 3)
        let up = try NoiseAugmentation.upsample(edge, to: 16)
        #expect(up.shape == [1, 3, 16, 16])
        #expect(try up.max().item() <= 1 && up.min().item() >= -1)
    }

    /// A saved stage loads to the same network (same output for the same input) and index; a
    /// base-model folder is refused as a stage, and the wrong format is named.
    @Test func stageFolderRoundTrips() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sr-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try TinyStage.model(noiseLevel: 123)
        model.index.notes["step"] = "7"
        try model.save(to: dir)
        #expect(SuperResolutionModel.isStage(dir))
        let loaded = try SuperResolutionModel.load(from: dir)
        #expect(loaded.index == model.index && loaded.unet.config == model.unet.config)
        let low = try Tensor.rand([2, 3, 16, 16], generator: Generator(seed: 5)) * 2 - 1
        var o = SuperResolutionOptions()
        o.steps = 3
        let c = try TinyStage.condition(2)
        let a = try SuperResolutionPipeline(model: model).upsample(low, conditional: c, unconditional: c, options: o)
        let b = try SuperResolutionPipeline(model: loaded).upsample(low, conditional: c, unconditional: c, options: o)
        #expect(try TestSupport.maxAbsDiff(a, b) == 0)

        let base = dir.appendingPathComponent("base")
        try TinyPipeline.model().save(to: base)
        #expect(!SuperResolutionModel.isStage(base))
        #expect(throws: CheckpointError.self) { try SuperResolutionModel.load(from: base) }
    }

    /// Upsampling is seeded (same seed, same images; another seed, others), returns the stage's
    /// size in [-1, 1], reads the noise level it is given, and refuses wrong inputs by name.
    @Test func upsamplingIsSeededAndChecked() throws {
        let stage = SuperResolutionPipeline(model: try TinyStage.model())
        let low = try Tensor.rand([2, 3, 16, 16], generator: Generator(seed: 5)) * 2 - 1
        let c = try TinyStage.condition(2)
        var o = SuperResolutionOptions()
        o.steps = 3
        let a = try stage.upsample(low, conditional: c, unconditional: c, options: o)
        #expect(a.shape == [2, 3, 32, 32])
        #expect(try a.max().item() <= 1 && a.min().item() >= -1)
        #expect(try TestSupport.maxAbsDiff(a, stage.upsample(low, conditional: c, unconditional: c, options: o)) == 0)
        var other = o
        other.seed = 1
        #expect(try TestSupport.maxAbsDiff(a, stage.upsample(low, conditional: c, unconditional: c, options: other)) > 0)
        var level = o
        level.noiseLevel = 600
        #expect(try TestSupport.maxAbsDiff(a, stage.upsample(low, conditional: c, unconditional: c, options: level)) > 0)
        var guided = o
        guided.guidance = 3
        let u = try TinyStage.condition(2, seed: 8)
        #expect(try TestSupport.maxAbsDiff(a, stage.upsample(low, conditional: c, unconditional: u, options: guided)) > 0)

        #expect(throws: PipelineError.self) { try stage.upsample(Tensor.zeros([2, 3, 32, 32]), conditional: c, unconditional: c, options: o) }
        #expect(throws: PipelineError.self) { try stage.upsample(low, conditional: TinyStage.condition(3), unconditional: c, options: o) }
        var bad = o
        bad.noiseLevel = 1000
        #expect(throws: PipelineError.invalidOption("sr_noise_level must be in 0..<1000, got 1000")) {
            try stage.upsample(low, conditional: c, unconditional: c, options: bad)
        }
        bad = o
        bad.steps = 0
        #expect(throws: PipelineError.invalidOption("sr_steps must be positive, got 0")) {
            try stage.upsample(low, conditional: c, unconditional: c, options: bad)
        }
    }

    /// The cascade's base stage is exactly the text-to-image pipeline's output; the full cascade
    /// returns the stage's size, one image per base image; a stage for another size is refused.
    @Test func cascadeRunsTheStagesInOrder() throws {
        let base = try TextToImagePipeline(model: TinyPipeline.model(), textEncoder: TinyPipeline.encoder())
        let cascade = try CascadePipeline(base: base, superResolution: SuperResolutionPipeline(model: TinyStage.model()))
        var options = TinyPipeline.options(.ddim, steps: 3)
        options.imagesPerPrompt = 2
        var sr = SuperResolutionOptions()
        sr.steps = 2
        let prompts = ["a red circle", "a blue square"]
        let alone = try base.generate(prompts: prompts, options: options).images
        let thumbnails = try cascade.generate(prompts: prompts, options: options, superResolution: sr, stages: .base).images
        #expect(try TestSupport.maxAbsDiff(alone, thumbnails) == 0)
        #expect(cascade.outputSize(.base) == 16 && cascade.outputSize(.all) == 32)
        var phases: [String] = []
        let full = try cascade.generate(prompts: prompts, options: options, superResolution: sr, stages: .all) { p in
            if phases.last != p.phase { phases.append(p.phase) }
            return true
        }.images
        #expect(full.shape == [4, 3, 32, 32])
        #expect(phases == ["sampling", "upsampling"])
        var other = TinyStage.config
        other.lowResolutionSize = 8
        other.sampleSize = 32
        let mismatched = try SuperResolutionModel(
            unet: EfficientUNet(other), schedule: NoiseSchedule(NoiseScheduleConfig()),
            index: SuperResolutionIndex(textEncoder: TextEncoderSpec(kind: "learned"), samplingNoiseLevel: 0))
        #expect(throws: PipelineError.self) { try CascadePipeline(base: base, superResolution: SuperResolutionPipeline(model: mismatched)) }
    }

    /// Training resumes exactly: two steps, a checkpoint, a new trainer that resumes and takes
    /// two more equals four steps in one go (weights, EMA); the run folder has the EMA model
    /// and one log line per step; a crop the levels cannot divide is refused.
    @Test func trainerResumesExactly() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("srt-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let encoder = try TinyPipeline.encoder()
        let data = BlobPairs()
        let captions = try CaptionTable(captions: ["a red circle", "a blue square"]) { texts in
            let e = try encoder.encode(texts)
            return try Condition(tokens: e.tokenStates, mask: e.attentionMask, pooled: e.pooled)
        }
        func config(steps: Int) -> SuperResolutionTrainingConfig {
            var c = SuperResolutionTrainingConfig()
            c.training.steps = steps
            c.training.batchSize = 3
            c.training.warmupSteps = 1
            c.training.checkpointEvery = 2
            c.cropSize = 16
            c.maxNoiseLevel = 300
            return c
        }
        func trainer(_ dir: String, steps: Int) throws -> SuperResolutionTrainer {
            try SuperResolutionTrainer(
                model: TinyStage.model(), config: config(steps: steps), data: data, captions: captions,
                runDirectory: root.appendingPathComponent(dir))
        }
        let straight = try trainer("a", steps: 4)
        try straight.run()
        let first = try trainer("b", steps: 4)
        try first.run { $0.completed < 2 }
        #expect(first.step == 2)
        let resumed = try trainer("b", steps: 4)
        #expect(try resumed.resumeFromLatest() && resumed.step == 2)
        try resumed.run(resume: false)
        for (p, q) in zip(straight.model.parameters, resumed.model.parameters) { #expect(try TestSupport.maxAbsDiff(p, q) == 0) }
        for (p, q) in zip(straight.ema.shadow, resumed.ema.shadow) { #expect(try TestSupport.maxAbsDiff(p, q) == 0) }
        let exported = try SuperResolutionModel.load(from: RunFolder(root.appendingPathComponent("a")).model)
        #expect(exported.index.notes["step"] == "4")
        #expect(try RunFolder(root.appendingPathComponent("a")).losses().count == 4)

        var wrong = config(steps: 4)
        wrong.cropSize = 10
        #expect(throws: TrainingError.self) {
            try SuperResolutionTrainer(model: TinyStage.model(), config: wrong, data: data, captions: captions, runDirectory: root)
        }
    }
}
