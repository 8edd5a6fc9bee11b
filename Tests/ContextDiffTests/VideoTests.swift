import ContextDiff
import Foundation
import NN
import Testing
import TestSupport
import Torch

/// Tiny videos and models for the video tests.
enum TinyVideo {
    static let caption = "a red square moves right"

    /// A red square gliding left to right over white, `[F, 3, 16, 16]` in [-1, 1].
    static func movingSquare(frames: Int = 4, size: Int = 16, side: Int = 5) throws -> Tensor {
        var values = [Float](repeating: 1, count: frames * 3 * size * size)
        for f in 0..<frames {
            let x0 = 1 + f * (size - side - 2) / Swift.max(1, frames - 1), y0 = 5
            for y in y0..<(y0 + side) {
                for x in x0..<(x0 + side) {
                    let base = f * 3 * size * size + y * size + x
                    values[base] = 0.7  // red
                    values[base + size * size] = -0.8
                    values[base + 2 * size * size] = -0.8
                }
            }
        }
        return try Tensor(values, shape: [frames, 3, size, size])
    }

    static func textEncoder() throws -> LearnedTextEncoder {
        let tokenizer = try WordLevelTokenizer(fitting: [caption, "a blue square moves right", "a red circle"])
        return try LearnedTextEncoder(tokenizer: tokenizer, width: 12, layers: 1, heads: 2)
    }

    /// A 2-D model of `unet` (and `adapter`) with the default schedule and a learned encoder.
    static func model(_ unet: UNet, adapter: ContextAdapter? = nil) throws -> ContextDiffModel {
        try ContextDiffModel(
            unet: unet, adapter: adapter, schedule: NoiseSchedule(NoiseScheduleConfig()),
            textEncoder: TextEncoderSpec(kind: "learned", maxTokens: 32))
    }

    static func condition(_ encoder: any TextEncoder, _ text: String, repeated: Int) throws -> Condition {
        let e = try encoder.encode([text])
        return try Condition(tokens: e.tokenStates, mask: e.attentionMask, pooled: e.pooled).repeated(repeated)
    }
}

/// PSNR in dB of two tensors in [-1, 1] (peak-to-peak 2).
func psnr(_ a: Tensor, _ b: Tensor) throws -> Double {
    let mse = try (a.clamped(min: -1, max: 1) - b.clamped(min: -1, max: 1)).square().mean().item()
    return 10 * Foundation.log10(4 / Swift.max(mse, 1e-12))
}

@Suite("VideoTests: inflation, sparse-causal and temporal attention, fusion, reconstruction", .serialized)
struct VideoTests {
    func randomize(_ m: Module, seed: UInt64) throws {
        let g = Generator(seed: seed)
        try Torch.withNoGrad {
            for p in m.parameters() { try p.addInPlace(Tensor.randn(p.shape, generator: g) * 0.05) }
        }
    }

    func randomBatch(videos: Int, frames: Int, seed: UInt64) throws -> (Tensor, Tensor, Condition) {
        let g = Generator(seed: seed)
        let n = videos * frames
        let x = try Tensor.randn([n, 3, 16, 16], generator: g)
        let t = try Tensor(Array(repeating: Int64(321), count: n), shape: [n])
        let cond = try TinyConfigs.condition(batch: videos).repeated(frames)
        return (x, t, cond)
    }

    @Test func inflatedUNetEqualsTheTwoDModelPerFrameAtInitialisation() throws {
        try Torch.withSeed(11) {
            let unet2D = try UNet(TinyConfigs.unet)
            try randomize(unet2D, seed: 1)
            let video = try VideoDiffusionModel.inflated(unet2D)
            #expect(video.isInflated && !unet2D.isInflated)
            // Inflation only adds keys, all under `.temporal.`; the 2-D keys are unchanged.
            let keys2D = Set(unet2D.stateDict().keys), keys = Set(video.stateDict().keys)
            #expect(keys2D.isSubset(of: keys))
            #expect(keys.subtracting(keys2D).allSatisfy(VideoDiffusionModel.isTemporalKey))
            #expect(keys.count > keys2D.count)

            try Torch.withNoGrad {
                // Per-frame self-attention: any video, frame by frame equal to the 2-D model.
                let (x, t, cond) = try randomBatch(videos: 2, frames: 3, seed: 2)
                let expected = try unet2D(x, timesteps: t, condition: cond)
                let perFrame = try video(x, timesteps: t, condition: cond, video: VideoLayout(frames: 3, selfAttention: .perFrame))
                #expect(try TestSupport.relativeDiff(perFrame, expected) < 1e-5)
                // Sparse-causal self-attention on a still video (every frame the same) equals the 2-D model too:
                // the keys are the frame's own tokens twice, which softmax weighs exactly as once.
                let still = try x.slice(dim: 0, 0, 1).expanded([4, 3, 16, 16]).contiguous()
                let t4 = try t.slice(dim: 0, 0, 4), c4 = try TinyConfigs.condition(batch: 1).repeated(4)
                let stillExpected = try unet2D(still, timesteps: t4, condition: c4)
                let sparse = try video(still, timesteps: t4, condition: c4, video: VideoLayout(frames: 4, selfAttention: .sparseCausal))
                #expect(try TestSupport.relativeDiff(sparse, stillExpected) < 1e-5)
                // Without a layout the inflated model is the 2-D one.
                #expect(try TestSupport.relativeDiff(video(x, timesteps: t, condition: cond), expected) < 1e-6)
            }

            // The adapter: per frame equal at initialisation as well.
            let adapter2D = try ContextAdapter(TinyConfigs.adapter)
            try randomize(adapter2D, seed: 3)
            let adapter = try VideoDiffusionModel.inflated(adapter2D)
            try Torch.withNoGrad {
                let (x, t, cond) = try randomBatch(videos: 2, frames: 3, seed: 4)
                let d = try TestSupport.relativeDiff(
                    adapter(x, timesteps: t, condition: cond, frames: 3), adapter2D(x, timesteps: t, condition: cond))
                #expect(d < 1e-6)
            }
        }
    }

    /// A video model saved with non-default temporal heads loads inflated, as it was saved.
    @Test func inflatedModelsSaveTheirTemporalHeads() throws {
        try Torch.withSeed(14) {
            let unet = try UNet(TinyConfigs.unet), adapter = try ContextAdapter(TinyConfigs.adapter)
            try unet.inflate(temporalHeads: 1)
            try adapter.inflate(heads: 2)
            try randomize(unet, seed: 15)
            try randomize(adapter, seed: 16)
            #expect(unet.config.temporalHeads == 1 && adapter.config.temporalHeads == 2)
            #expect(throws: ModuleError.self) { try unet.inflate(temporalHeads: 2) }
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cd-inflated-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: dir) }
            try ModelFolder.save(unet, to: dir.appendingPathComponent("unet"))
            try ModelFolder.save(adapter, to: dir.appendingPathComponent("adapter"))
            let unetBack = try ModelFolder.load(UNet.self, from: dir.appendingPathComponent("unet"))
            let adapterBack = try ModelFolder.load(ContextAdapter.self, from: dir.appendingPathComponent("adapter"))
            #expect(unetBack.isInflated && adapterBack.isInflated)
            #expect(unetBack.config == unet.config && adapterBack.config == adapter.config)
            #expect(unetBack.midAttention.temporal?.attention.heads == 1)
            try Torch.withNoGrad {
                let (x, t, cond) = try randomBatch(videos: 1, frames: 4, seed: 17)
                let layout = VideoLayout(frames: 4, selfAttention: .sparseCausal)
                #expect(try TestSupport.maxAbsDiff(unetBack(x, timesteps: t, condition: cond, video: layout),
                                                   unet(x, timesteps: t, condition: cond, video: layout)) == 0)
                #expect(try TestSupport.maxAbsDiff(adapterBack(x, timesteps: t, condition: cond, frames: 4),
                                                   adapter(x, timesteps: t, condition: cond, frames: 4)) == 0)
            }
            // A 2-D config (no temporal_heads key) stays 2-D.
            let plain = try JSONEncoder().encode(TinyConfigs.unet)
            #expect(!String(decoding: plain, as: UTF8.self).contains("temporal_heads"))
        }
    }

    @Test func temporalAttentionStartsAtZeroAndLearns() throws {
        try Torch.withSeed(12) {
            let layer = try TemporalAttention(channels: 8, heads: 2, causal: false)
            #expect(try layer.attention.toOut.weight.abs().max().item() == 0)
            #expect(try layer.attention.toOut.bias!.abs().max().item() == 0)
            let h = try Tensor.randn([6, 5, 8])  // 2 videos × 3 frames, 5 tokens
            #expect(try TestSupport.relativeDiff(layer(h, frames: 3), h) == 0)
            // Every inflated layer of a U-Net and an adapter starts at zero.
            let unet = try VideoDiffusionModel.inflated(UNet(TinyConfigs.unet))
            let adapter = try VideoDiffusionModel.inflated(ContextAdapter(TinyConfigs.adapter))
            for (key, p) in unet.namedParameters() + adapter.namedParameters() where key.contains(".temporal.attention.to_out") {
                #expect(try p.abs().max().item() == 0, "\(key)")
            }
            // It is trainable: a gradient reaches the zero output projection, and a step moves it.
            for p in layer.parameters() { try p.requiringGrad() }
            let target = try Tensor.randn([6, 5, 8])
            let loss = try (layer(h, frames: 3) - target).square().mean()
            try loss.backward()
            #expect(try layer.attention.toOut.weight.grad!.abs().max().item() > 0)
            let optimizer = try AdamW(parameters: layer.parameters(), learningRate: 1e-2)
            try optimizer.step()
            #expect(try TestSupport.relativeDiff(layer(h, frames: 3), h) > 0)
        }
    }

    @Test func sparseCausalFramesSeeOnlyTheFirstAndPreviousFrame() throws {
        try Torch.withSeed(13) {
            let unet2D = try UNet(TinyConfigs.unet)
            try randomize(unet2D, seed: 5)
            let unet = try VideoDiffusionModel.inflated(unet2D)
            let frames = 6, k = 3
            let layout = VideoLayout(frames: frames, selfAttention: .sparseCausal)
            try Torch.withNoGrad {
                let (x, t, cond) = try randomBatch(videos: 1, frames: frames, seed: 6)
                let base = try unet(x, timesteps: t, condition: cond, video: layout).select(dim: 0, k)
                func frameK(perturbing j: Int) throws -> Tensor {
                    var values = [Float](repeating: 0, count: frames)
                    values[j] = 1
                    let bump = try Tensor(values, shape: [frames, 1, 1, 1])
                    let y = try x + bump * Tensor.randn([1, 3, 16, 16])
                    return try unet(y, timesteps: t, condition: cond, video: layout).select(dim: 0, k)
                }
                // Through the whole U-Net (temporal layers at zero) the video is causal: later frames leave
                // frame k unchanged. Earlier frames reach it through frame k−1's features of earlier layers.
                for j in [k + 1, frames - 1] {
                    #expect(try TestSupport.relativeDiff(frameK(perturbing: j), base) < 1e-5, "frame \(j) leaked into frame \(k)")
                }
                for j in 0...k {
                    #expect(try TestSupport.relativeDiff(frameK(perturbing: j), base) > 1e-4, "frame \(j) ignored by frame \(k)")
                }
                // One sparse-causal transformer: frame k sees exactly frames 0, k−1 and itself.
                let (_, resolution, block) = unet.transformers.first { $0.name == "mid.attention" }!
                let channels = block.projIn.weight.shape[0]
                let h = try Tensor.randn([frames, channels, resolution, resolution])
                let one = try block(h, context: cond, video: layout).select(dim: 0, k)
                func blockFrameK(perturbing j: Int) throws -> Tensor {
                    var values = [Float](repeating: 0, count: frames)
                    values[j] = 1
                    let y = try h + Tensor(values, shape: [frames, 1, 1, 1]) * Tensor.randn([1, channels, resolution, resolution])
                    return try block(y, context: cond, video: layout).select(dim: 0, k)
                }
                for j in 0..<frames where ![0, k - 1, k].contains(j) {
                    #expect(try TestSupport.relativeDiff(blockFrameK(perturbing: j), one) < 1e-5, "frame \(j) leaked into frame \(k)")
                }
                for j in [0, k - 1, k] {
                    #expect(try TestSupport.relativeDiff(blockFrameK(perturbing: j), one) > 1e-4, "frame \(j) ignored by frame \(k)")
                }
                // The keys themselves: row k is [frame 0 | frame k−1].
                let tokens = try Tensor.randn([frames, 4, 2])
                let keys = try sparseCausalKeys(tokens, frames: frames)
                #expect(keys.shape == [frames, 8, 2])
                let expectedRow = try Tensor.cat([tokens.select(dim: 0, 0), tokens.select(dim: 0, k - 1)], dim: 0)
                #expect(try TestSupport.relativeDiff(keys.select(dim: 0, k), expectedRow) == 0)
            }
            // The adapter's temporal attention is causal: with trained (non-zero) temporal weights,
            // frame k of r_φ does not depend on later frames.
            let adapter = try VideoDiffusionModel.inflated(ContextAdapter(TinyConfigs.adapter))
            try randomize(adapter, seed: 7)
            try Torch.withNoGrad {
                let (x, t, cond) = try randomBatch(videos: 1, frames: frames, seed: 8)
                let later = try Tensor.cat([x.slice(dim: 0, 0, k + 1), Tensor.randn([frames - k - 1, 3, 16, 16])])
                let a = try adapter(x, timesteps: t, condition: cond, frames: frames)
                let b = try adapter(later, timesteps: t, condition: cond, frames: frames)
                #expect(try TestSupport.relativeDiff(a.slice(dim: 0, 0, k + 1), b.slice(dim: 0, 0, k + 1)) < 1e-5)
                #expect(try TestSupport.relativeDiff(a, b) > 1e-4)
            }
        }
    }

    @Test func loadingTwoDWeightsVerifiesEveryKey() throws {
        let unet2D = try UNet(TinyConfigs.unet)
        let video = try UNet(TinyConfigs.unet)
        try video.inflate()
        var state = unet2D.stateDict()
        try VideoDiffusionModel.loadInflating(video, from: state)
        let key = state.keys.sorted()[3]
        state[key] = nil
        #expect(throws: ModuleError.missingKey(key)) { try VideoDiffusionModel.loadInflating(video, from: state) }
        state = unet2D.stateDict()
        state["extra.weight"] = try Tensor.zeros([1])
        #expect(throws: ModuleError.unexpectedKey("extra.weight")) { try VideoDiffusionModel.loadInflating(video, from: state) }
    }

    @Test func tokenAlignmentFollowsTheCommonWords() {
        // [CLS] a red square [SEP]  →  [CLS] a big blue square [SEP]
        let aligned = AttentionFusionStore.alignTokens(source: [1, 5, 7, 9, 2], target: [1, 5, 11, 8, 9, 2])
        #expect(aligned == [0, 1, nil, nil, 3, 4])
    }

    /// A tiny ContextDiff model pretrained on the source video's frames (2-D, as a text-to-image
    /// model would be), wrapped in a pipeline.
    func pretrainedPipeline(video: Tensor, steps: Int) throws -> (VideoEditPipeline, LearnedTextEncoder) {
        return try Torch.withSeed(17) {
            let encoder = try TinyVideo.textEncoder()
            let unet = try UNet(TinyConfigs.unet)
            let adapter = try ContextAdapter(TinyConfigs.adapter)
            let model = try ContextDiffModel(
                unet: unet, adapter: adapter, schedule: NoiseSchedule(NoiseScheduleConfig()),
                textEncoder: TextEncoderSpec(kind: "learned", maxTokens: 32))
            let frames = try video.size(0)
            let cond = try TinyVideo.condition(encoder, TinyVideo.caption, repeated: frames)
            for p in model.parameters { try p.requiringGrad() }
            let optimizer = try AdamW(parameters: model.parameters, learningRate: 2e-3, weightDecay: 0)
            let diffusion = ContextualDiffusion(schedule: model.schedule)
            let g = Generator(seed: 9)
            for _ in 0..<steps {
                let t = try diffusion.sampleTimesteps(count: frames, generator: g)
                let loss = try diffusion.trainingLoss(
                    x0: video, timesteps: t, noise: Tensor.randn(video.shape, generator: g),
                    denoiser: { x, tt in try unet(x, timesteps: tt, condition: cond) },
                    context: { x, tt in try adapter(x, timesteps: tt, condition: cond) })
                try optimizer.zeroGrad()
                try loss.backward()
                try clipGradNorm(model.parameters, maxNorm: 1)
                try optimizer.step()
            }
            for p in model.parameters { try p.requiringGrad(false) }
            return (try VideoEditPipeline(model: VideoDiffusionModel(inflating: model), textEncoder: encoder), encoder)
        }
    }

    /// Measured (Torch.numThreads = 1, OPENBLAS_NUM_THREADS=1): see docs/VIDEO.md.
    @Test func invertingAndReconstructingWithTheSourcePromptKeepsTheVideo() throws {
        Torch.numThreads = 1
        let video = try TinyVideo.movingSquare(frames: 4)
        let (pipeline, _) = try pretrainedPipeline(video: video, steps: 400)
        var options = VideoEditOptions()
        options.tuneSteps = 20
        options.tuneLearningRate = 1e-3
        options.steps = 20
        options.guidance = 1
        options.fusion.selfAttentionMaxResolution = 8
        options.fusion.crossAttentionMaxResolution = 16
        let result = try pipeline.edit(
            video: video, sourcePrompt: TinyVideo.caption, targetPrompt: TinyVideo.caption, options: options)
        let value = try psnr(result.edited, video)
        print("video reconstruction PSNR (contextdiff, 20 DDIM steps, fusion 0.5): \(String(format: "%.2f", value)) dB")
        #expect(value >= 30, "reconstruction PSNR \(value) dB")
        #expect(result.tuningLosses.count == 20)
        #expect(result.fusionBytes > 0 && result.fusionBytes == result.fusionBound)
        // x_T is noise-like, not the video.
        #expect(try psnr(result.invertedLatent, video) < 15)
    }

    @Test func fusionStorageIsBoundedAndReplacesMaps() throws {
        Torch.numThreads = 1
        try Torch.withSeed(19) {
            let encoder = try TinyVideo.textEncoder()
            let model = try ContextDiffModel(
                unet: UNet(TinyConfigs.unet), adapter: ContextAdapter(TinyConfigs.adapter),
                schedule: NoiseSchedule(NoiseScheduleConfig()), textEncoder: TextEncoderSpec(kind: "learned", maxTokens: 32))
            let pipeline = try VideoEditPipeline(model: VideoDiffusionModel(inflating: model), textEncoder: encoder)
            let video = try TinyVideo.movingSquare(frames: 4)
            let cond = try TinyVideo.condition(encoder, TinyVideo.caption, repeated: 4)
            var options = VideoEditOptions()
            options.steps = 6
            options.fusion.selfAttentionMaxResolution = 8  // the 16×16 self-attention maps are not kept
            options.fusion.crossAttentionMaxResolution = 16
            let timesteps = try DDIMSampler(schedule: model.schedule, inferenceSteps: 6).timesteps
            let fused = options.fusion.fusedTimesteps(timesteps)
            #expect(fused == Set(timesteps.prefix(3)))  // t ∈ [0.5·T, T]: the 3 noisiest of 6
            let store = AttentionFusionStore(config: options.fusion, fusedTimesteps: fused)
            _ = try pipeline.invert(video: video, frames: 4, condition: cond, options: options, store: store)
            let bound = options.fusion.storageBytes(
                unet: pipeline.model.unet, frames: 4, sourceTokens: try cond.tokens.size(1), frameAttention: .sparseCausal,
                steps: 6)
            #expect(store.bytes == bound)
            #expect(store.recordedTimesteps == fused)
            #expect(store.recordedSites.allSatisfy { $0.kind == .crossAttention ? $0.resolution <= 16 : $0.resolution <= 8 })
            #expect(store.recordedSites.contains { $0.kind == .selfAttention })
            // By hand for the tiny config, per fused step: self-attention at 8×8 on 4 layers (down.1,
            // mid, up.0 ×2) of 4 frames × 2 heads × 64 queries × 128 sparse-causal keys; cross-attention
            // on 3 layers at 16×16 (256 queries) and 4 at 8×8 (64 queries) × L source tokens; float32.
            let l = try cond.tokens.size(1)
            let perStep = 4 * 4 * 2 * 64 * 128 + 3 * 4 * 2 * 256 * l + 4 * 4 * 2 * 64 * l
            #expect(bound == 3 * perStep * 4)

            // A budget below the bound fails with a typed error before (or while) recording.
            var tight = options
            tight.fusion.budgetBytes = bound / 2
            let small = AttentionFusionStore(config: tight.fusion, fusedTimesteps: fused)
            #expect(throws: VideoEditError.self) {
                _ = try pipeline.invert(video: video, frames: 4, condition: cond, options: tight, store: small)
            }
            #expect(small.bytes <= bound / 2)
            // Recording the same maps again at exactly the budget replaces them: no spurious error.
            var exact = options
            exact.fusion.budgetBytes = bound
            let full = AttentionFusionStore(config: exact.fusion, fusedTimesteps: fused)
            _ = try pipeline.invert(video: video, frames: 4, condition: cond, options: exact, store: full)
            _ = try pipeline.invert(video: video, frames: 4, condition: cond, options: exact, store: full)
            #expect(full.bytes == bound)
            // A whole edit over budget fails before tuning: no tuning step runs, no weight changes.
            let before = try pipeline.model.unet.stateDict().mapValues { try $0 * 1.0 }
            var phases: [String] = []
            #expect(throws: VideoEditError.fusionBudgetExceeded(needed: bound, budget: bound / 2)) {
                _ = try pipeline.edit(
                    video: video, sourcePrompt: TinyVideo.caption, targetPrompt: TinyVideo.caption, options: tight,
                    progress: { phases.append($0.phase); return true })
            }
            #expect(phases.isEmpty)
            for (key, value) in pipeline.model.unet.stateDict() {
                #expect(try (value - before[key]!).abs().max().item() == 0, "\(key) changed")
            }

            // Injection: substituting the maps recorded on the same input changes nothing (the
            // substitution is exact); on another input it changes the output.
            let unet = pipeline.model.unet
            try randomize(unet, seed: 31)
            let t = timesteps[0]
            let g = Generator(seed: 32)
            let x = try Tensor.randn([4, 3, 16, 16], generator: g), other = try Tensor.randn([4, 3, 16, 16], generator: g)
            let tt = try Tensor.full([4], value: Double(t), dtype: .int64)
            let probe = AttentionFusionStore(config: options.fusion, fusedTimesteps: [t])
            probe.tokenAlignment = Array(0..<l)
            let layout = VideoLayout(frames: 4, control: probe)
            try Torch.withNoGrad {
                probe.mode = .record(timestep: t)
                let recorded = try unet(x, timesteps: tt, condition: cond, video: layout)
                probe.mode = .inject(timestep: t)
                let replayed = try unet(x, timesteps: tt, condition: cond, video: layout)
                #expect(try TestSupport.relativeDiff(recorded, replayed) < 1e-6)
                let injected = try unet(other, timesteps: tt, condition: cond, video: layout)
                probe.mode = .idle
                let plain = try unet(other, timesteps: tt, condition: cond, video: layout)
                #expect(try TestSupport.relativeDiff(injected, plain) > 1e-4)
                // With classifier-free guidance (a doubled batch) injection also applies (up to
                // float rounding: Winograd convolutions tile a batch of 8 differently from one of 4).
                probe.mode = .inject(timestep: t)
                let doubled = try unet(
                    Tensor.cat([x, x]), timesteps: Tensor.cat([tt, tt]), condition: Condition.concatenate(cond, cond),
                    video: layout)
                #expect(try TestSupport.relativeDiff(doubled.slice(dim: 0, 4, 8), recorded) < 1e-5)
            }
            #expect(probe.injections > 0)
        }
    }

    /// Per-frame layouts reach the U-Net frame by frame: with sparse-causal attention (frame k
    /// sees frames 0, k−1 and k), a causal adapter and zero-initialised temporal layers, moving
    /// the box of the last frame only changes the last edited frame, in tuning-free inversion and
    /// editing alike. Bad layouts are typed errors.
    @Test func frameLayoutsArePaintedFrameByFrame() throws {
        try Torch.withSeed(29) {
            let encoder = try TinyVideo.textEncoder()
            var config = TinyConfigs.unet
            config.layoutPrior = LayoutPriorConfig(layers: 1, width: 8, heads: 2, channels: 3, maxTokens: 8)
            let unet = try UNet(config)
            try randomize(unet, seed: 41)
            let model = try TinyVideo.model(unet, adapter: ContextAdapter(TinyConfigs.adapter))
            let pipeline = try VideoEditPipeline(model: VideoDiffusionModel(inflating: model), textEncoder: encoder)
            let video = try TinyVideo.movingSquare(frames: 4)
            var options = VideoEditOptions()
            options.tuneSteps = 0
            options.steps = 4
            func layouts(lastBox: [Double]) -> VideoEditLayouts {
                let boxes = [[0.0, 0.3, 0.4, 0.65], [0.2, 0.3, 0.6, 0.65], [0.4, 0.3, 0.8, 0.65], lastBox]
                return VideoEditLayouts(
                    source: boxes.map { Layout(objects: [.init(phrase: "red square", box: $0)]) },
                    target: boxes.map { Layout(objects: [.init(phrase: "blue square", box: $0)]) })
            }
            func edit(_ l: VideoEditLayouts?) throws -> Tensor {
                try pipeline.edit(
                    video: video, sourcePrompt: "a red square moves right", targetPrompt: "a blue square moves right",
                    options: options, layouts: l
                ).edited
            }
            let a = try edit(layouts(lastBox: [0.6, 0.3, 1.0, 0.65]))
            let b = try edit(layouts(lastBox: [0.0, 0.0, 0.3, 0.3]))
            let none = try edit(nil)
            let first3 = { (x: Tensor) in try x.slice(dim: 0, 0, 3) }
            #expect(try (first3(a) - first3(b)).abs().max().item() <= 1e-5)
            let lastDiff = try (a.slice(dim: 0, 3, 4) - b.slice(dim: 0, 3, 4)).abs().max().item()
            #expect(lastDiff > 1e-3, "the last frame's box changed nothing (\(lastDiff))")
            #expect(try (a - none).abs().max().item() > 1e-3, "painting the layouts changed nothing")
            // The background (outside the boxes grown by the margin) is the source's, exactly.
            let l = layouts(lastBox: [0.6, 0.3, 1.0, 0.65])
            let mask = try VideoEditPipeline.objectMask(l, size: 16, margin: options.backgroundMargin)
            #expect(try ((a - video) * (-mask + 1)).abs().max().item() == 0)
            #expect(try ((a - video) * mask).abs().max().item() > 1e-3, "the objects were not edited")
            // The mask: a box's pixels, grown by the margin, clipped to the frame; per frame.
            let one = VideoEditLayouts(
                source: [Layout(objects: [.init(phrase: "red square", box: [0.25, 0.25, 0.5, 0.5])]), Layout(objects: [])],
                target: [Layout(objects: []), Layout(objects: [.init(phrase: "blue square", box: [0.9, 0.0, 1.0, 0.1])])])
            let m = try VideoEditPipeline.objectMask(one, size: 16, margin: 1).scalars(as: Float.self)
            for k in 0..<2 {
                for y in 0..<16 {
                    for x in 0..<16 {
                        let inside = k == 0 ? (3..<9).contains(x) && (3..<9).contains(y) : x >= 13 && y < 3
                        #expect(m[(k * 16 + y) * 16 + x] == (inside ? 1 : 0), "frame \(k) pixel (\(x), \(y))")
                    }
                }
            }
            // An object both prompts name alike, in the same box, is kept: it is not in the mask.
            let kept = Layout.Object(phrase: "green circle", box: [0.0, 0.0, 0.25, 0.25])
            let pair = VideoEditLayouts(
                source: [Layout(objects: [kept, .init(phrase: "red square", box: [0.5, 0.5, 0.75, 0.75])])],
                target: [Layout(objects: [kept, .init(phrase: "blue square", box: [0.5, 0.5, 0.75, 0.75])])])
            let pm = try VideoEditPipeline.objectMask(pair, size: 16, margin: 0).scalars(as: Float.self)
            #expect(pm.reduce(0, +) == 16 && pm[8 * 16 + 8] == 1 && pm[0] == 0)
            options.keepsBackground = false
            let unblended = try edit(l)
            #expect(try ((unblended - video) * (-mask + 1)).abs().max().item() > 0, "without blending the background is resampled")
            options.keepsBackground = true

            var short = layouts(lastBox: [0.6, 0.3, 1.0, 0.65])
            short.source.removeLast()
            #expect(throws: VideoEditError.self) { _ = try edit(short) }
            var wrongWords = layouts(lastBox: [0.6, 0.3, 1.0, 0.65])
            wrongWords.target[0] = Layout(objects: [.init(phrase: "green circle", box: [0, 0, 0.5, 0.5])])
            #expect(throws: LayoutError.phraseNotInPrompt(phrase: "green circle", prompt: "a blue square moves right")) {
                _ = try edit(wrongWords)
            }
            // A model without a prior reads no layout.
            let plain = try VideoEditPipeline(
                model: VideoDiffusionModel(inflating: TinyVideo.model(UNet(TinyConfigs.unet))),
                textEncoder: encoder)
            #expect(throws: LayoutError.modelHasNoLayoutPrior) {
                _ = try plain.edit(
                    video: video, sourcePrompt: "a red square moves right", targetPrompt: "a blue square moves right",
                    options: options, layouts: layouts(lastBox: [0.6, 0.3, 1.0, 0.65]))
            }
        }
    }

    /// The paper's protocol tunes the adapter alone: the U-Net stays bit for bit, the adapter
    /// moves; without an adapter (the baselines) nothing is tuned and a notice says so.
    @Test func adapterOnlyTuningLeavesTheUNetFrozen() throws {
        try Torch.withSeed(31) {
            let encoder = try TinyVideo.textEncoder()
            let video = try VideoDiffusionModel(
                inflating: TinyVideo.model(UNet(TinyConfigs.unet), adapter: ContextAdapter(TinyConfigs.adapter)))
            let keys = video.tunableParameters(.adapter, includeAdapter: true).map(\.0)
            #expect(!keys.isEmpty && keys.allSatisfy { $0.hasPrefix("adapter.") })
            #expect(video.tunableParameters(.adapter, includeAdapter: false).isEmpty)
            #expect(video.tunableParameters(.queriesAndTemporal, includeAdapter: false).allSatisfy { $0.0.hasPrefix("unet.") })

            let pipeline = try VideoEditPipeline(model: video, textEncoder: encoder)
            let frames = try TinyVideo.movingSquare(frames: 2)
            let before = try video.unet.parameters().map { try $0.detached() * 1 }
            let adapterBefore = try video.adapter!.parameters().map { try $0.detached() * 1 }
            var options = VideoEditOptions()
            options.tuning = .adapter
            options.tuneSteps = 3
            options.tuneLearningRate = 1e-2
            options.steps = 2
            let out = try pipeline.edit(video: frames, sourcePrompt: "a red square", targetPrompt: "a blue square", options: options)
            #expect(out.tuningLosses.count == 3)
            for (a, b) in zip(before, video.unet.parameters()) { #expect(try (a - b).abs().max().item() == 0) }
            let moved = try zip(adapterBefore, video.adapter!.parameters()).map { try ($0 - $1).abs().max().item() }.max() ?? 0
            #expect(moved > 0, "the adapter did not change")
            options.method = .fatezero
            let zeroShot = try pipeline.edit(video: frames, sourcePrompt: "a red square", targetPrompt: "a blue square", options: options)
            #expect(zeroShot.tuningLosses.isEmpty && zeroShot.notices.contains { $0.contains("zero-shot") })
        }
    }

    @Test func badInputGivesTypedErrors() throws {
        try Torch.withSeed(23) {
            let encoder = try TinyVideo.textEncoder()
            let model = try TinyVideo.model(UNet(TinyConfigs.unet))
            let pipeline = try VideoEditPipeline(model: VideoDiffusionModel(inflating: model), textEncoder: encoder)
            let video = try TinyVideo.movingSquare(frames: 2)
            var options = VideoEditOptions()
            options.tuneSteps = 0
            options.steps = 2
            #expect(throws: VideoEditError.emptyPrompt(which: "source")) {
                _ = try pipeline.edit(video: video, sourcePrompt: "  ", targetPrompt: "a red circle", options: options)
            }
            #expect(throws: VideoEditError.emptyPrompt(which: "target")) {
                _ = try pipeline.edit(video: video, sourcePrompt: "a red circle", targetPrompt: "", options: options)
            }
            #expect(throws: VideoEditError.noFrames) {
                _ = try pipeline.edit(video: Tensor.zeros([0, 3, 16, 16]), sourcePrompt: "a", targetPrompt: "b", options: options)
            }
            #expect(throws: VideoEditError.frameShapeMismatch(expected: [2, 3, 16, 16], found: [2, 3, 32, 32])) {
                _ = try pipeline.edit(video: Tensor.zeros([2, 3, 32, 32]), sourcePrompt: "a", targetPrompt: "b", options: options)
            }
            var bad = options
            bad.steps = 0
            #expect(throws: VideoEditError.self) {
                _ = try pipeline.edit(video: video, sourcePrompt: "a", targetPrompt: "b", options: bad)
            }
            bad = options
            bad.fusion.fraction = 1.5
            #expect(throws: VideoEditError.self) {
                _ = try pipeline.edit(video: video, sourcePrompt: "a", targetPrompt: "b", options: bad)
            }
            // A text encoder of the wrong width is refused up front.
            let wide = try LearnedTextEncoder(tokenizer: WordLevelTokenizer(fitting: ["a"]), width: 16, layers: 0, heads: 2)
            #expect(throws: VideoEditError.self) { _ = try VideoEditPipeline(model: pipeline.model, textEncoder: wide) }
            // All three methods run (the baseline model gets a fresh adapter for ContextDiff, with a warning).
            for method in VideoEditMethod.allCases {
                options.method = method
                let out = try pipeline.edit(video: video, sourcePrompt: "a red square", targetPrompt: "a blue square", options: options)
                #expect(out.edited.shape == video.shape)
                #expect((out.fusionBytes > 0) == method.usesFusion)
            }
            #expect(pipeline.model.adapter != nil)
        }
    }
}
