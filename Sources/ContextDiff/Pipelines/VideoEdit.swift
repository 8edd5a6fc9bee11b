import Foundation
import NN
import Torch

/// The text-to-video editing methods of the paper's Table 2, in one code path.
public enum VideoEditMethod: String, Codable, Sendable, CaseIterable {
    /// ContextDiff (paper §5.2): attention fusion from the inversion, and the context adapter
    /// (with spatio-temporal attention) in both the inversion and the sampling trajectories.
    case contextdiff
    /// FateZero-like: attention fusion, no adapter (r_φ ≡ 0).
    case fatezero
    /// Tune-A-Video-like: DDIM inversion and sampling only, no fusion, no adapter.
    case tuneavideo

    public var usesFusion: Bool { self != .tuneavideo }
    public var usesAdapter: Bool { self == .contextdiff }
}

/// Options of one video edit; every field has a default.
public struct VideoEditOptions: Codable, Sendable, Equatable {
    public var method = VideoEditMethod.contextdiff
    /// One-shot tuning steps on the source video (0: zero-shot).
    public var tuneSteps = 50
    /// What the tuning updates.
    public var tuning = VideoTuning.queriesAndTemporal
    public var tuneLearningRate = 1e-4
    /// DDIM steps of the inversion and of the editing (the paper: T = 20).
    public var steps = 20
    /// Classifier-free guidance weight of the editing (the inversion uses w = 1). 1.5, not the
    /// text-to-image 3: with the source's layout painted, stronger guidance makes the object's
    /// colour and shape flicker from frame to frame (docs/VIDEO.md, "Edits that land").
    public var guidance = 1.5
    public var seed: UInt64 = 0
    public var frameAttention = FrameAttention.sparseCausal
    public var fusion = AttentionFusionConfig()
    /// Where the inversion evaluates the model for the step from level s to level t.
    public var inversionEvaluation = InversionEvaluation.source
    /// With per-frame layouts (``VideoEditLayouts``): outside the boxes of the objects the edit
    /// changes (source and target, grown by ``backgroundMargin`` pixels) every editing step takes
    /// the inversion's latent at the level it reached, and the last step the source frame —
    /// FateZero's blending with the mask given by the layout, so the background and the objects
    /// the prompts name alike stay the source's exactly.
    public var keepsBackground = true
    /// Pixels (at the model's size) the blending mask extends past the boxes.
    public var backgroundMargin = 2

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case method, steps, guidance, seed, fusion, tuning
        case tuneSteps = "tune_steps", tuneLearningRate = "tune_learning_rate", frameAttention = "frame_attention"
        case inversionEvaluation = "inversion_evaluation"
        case keepsBackground = "keeps_background", backgroundMargin = "background_margin"
    }

    /// Reads snake_case keys and, for files written before 2026-12-03, the camelCase ones;
    /// a missing key keeps its default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let legacy = try decoder.container(keyedBy: LegacyKey.self)
        func value<T: Decodable>(_ key: CodingKeys, _ type: T.Type) throws -> T? {
            if let v = try c.decodeIfPresent(type, forKey: key) { return v }
            return try legacy.decodeIfPresent(type, forKey: LegacyKey(key))
        }
        method = try value(.method, VideoEditMethod.self) ?? method
        tuneSteps = try value(.tuneSteps, Int.self) ?? tuneSteps
        tuning = try value(.tuning, VideoTuning.self) ?? tuning
        tuneLearningRate = try value(.tuneLearningRate, Double.self) ?? tuneLearningRate
        steps = try value(.steps, Int.self) ?? steps
        guidance = try value(.guidance, Double.self) ?? guidance
        seed = try value(.seed, UInt64.self) ?? seed
        frameAttention = try value(.frameAttention, FrameAttention.self) ?? frameAttention
        fusion = try value(.fusion, AttentionFusionConfig.self) ?? fusion
        inversionEvaluation = try value(.inversionEvaluation, InversionEvaluation.self) ?? inversionEvaluation
        keepsBackground = try value(.keepsBackground, Bool.self) ?? keepsBackground
        backgroundMargin = try value(.backgroundMargin, Int.self) ?? backgroundMargin
    }

    /// The camelCase spelling of a key (the Swift property name).
    struct LegacyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
        init(_ key: CodingKeys) {
            // snake_case → camelCase: tune_learning_rate → tuneLearningRate.
            let parts = key.stringValue.split(separator: "_")
            stringValue = parts.enumerated().map { $0.offset == 0 ? String($0.element) : $0.element.capitalized }.joined()
        }
    }

    public func validate(trainTimesteps: Int) throws {
        guard tuneSteps >= 0 else { throw VideoEditError.invalidOption("tune_steps must be ≥ 0, got \(tuneSteps)") }
        guard tuneLearningRate.isFinite, tuneLearningRate > 0 else {
            throw VideoEditError.invalidOption("tune_learning_rate must be > 0, got \(tuneLearningRate)")
        }
        guard steps > 0, steps <= trainTimesteps else {
            throw VideoEditError.invalidOption("steps must be in 1...\(trainTimesteps), got \(steps)")
        }
        guard guidance.isFinite, guidance >= 0 else {
            throw VideoEditError.invalidOption("guidance must be ≥ 0, got \(guidance)")
        }
        guard (0...64).contains(backgroundMargin) else {
            throw VideoEditError.invalidOption("background_margin must be in 0...64 pixels, got \(backgroundMargin)")
        }
        try fusion.validate()
    }
}

/// Errors of video editing.
public enum VideoEditError: Error, CustomStringConvertible, Equatable {
    /// A prompt is missing or blank (`which`: "source" or "target").
    case emptyPrompt(which: String)
    case noFrames
    /// The frames are not `[F, C, size, size]` for the model.
    case frameShapeMismatch(expected: [Int], found: [Int])
    case invalidOption(String)
    case incompatibleModel(String)
    /// Recording attention maps would pass the fusion budget.
    case fusionBudgetExceeded(needed: Int, budget: Int)
    case cancelled(phase: String)

    public var description: String {
        switch self {
        case .emptyPrompt(let which): "the \(which) prompt is empty; describe the \(which == "source" ? "video" : "edit")"
        case .noFrames: "the video has no frames"
        case .frameShapeMismatch(let e, let f): "video frames must be \(e) for this model, got \(f)"
        case .invalidOption(let m): m
        case .incompatibleModel(let m): m
        case .fusionBudgetExceeded(let n, let b):
            "attention fusion needs more than its budget (\(n) > \(b) bytes); lower the fusion resolutions or fraction"
        case .cancelled(let phase): "video editing cancelled during \(phase)"
        }
    }
}

/// The phases of an edit, as ``ProgressUpdate/phase`` names them (tuning reports the metric "loss").
public enum VideoEditPhase: String, Sendable, CaseIterable {
    case tuning, inversion, editing
}

/// What an edit returns: tensors `[F, C, H, W]` in [-1, 1].
public struct VideoEditResult {
    public var edited: Tensor
    /// x_T of the inversion.
    public var invertedLatent: Tensor
    /// Bytes of attention maps held by fusion (0 without fusion) and the bound they obey.
    public var fusionBytes: Int
    public var fusionBound: Int
    /// Tuning losses, one per step.
    public var tuningLosses: [Double]
    /// Notices for the caller to show (a truncated prompt, a fresh adapter).
    public var notices: [String]
}

/// Where the objects are in every frame of an edit, for a model with a layout prior: the
/// layout-to-image condition (paper App. B) given per frame. Tuning and inversion paint the
/// `source` boxes with the source prompt's words, the editing paints the same places with the
/// target prompt's words (`target`), so the edit draws the target objects where the source's
/// objects are, frame by frame, while the words say what to draw.
public struct VideoEditLayouts: Sendable, Equatable {
    /// One layout per frame; its phrases are words of the source prompt.
    public var source: [Layout]
    /// One layout per frame; its phrases are words of the target prompt.
    public var target: [Layout]

    public init(source: [Layout], target: [Layout]) {
        self.source = source
        self.target = target
    }
}

/// r_φ(x0, c, t) of an inflated adapter with the condition (one row per frame) bound.
public struct VideoAdapterContext: ContextBias {
    public let adapter: ContextAdapter
    public let condition: Condition
    public let frames: Int

    public func context(x0: Tensor, timestep: Int) throws -> Tensor {
        let b = try x0.size(0)
        return try adapter(
            x0, timesteps: Tensor.full([b], value: Double(timestep), dtype: .int64), condition: condition, frames: frames)
    }

    public func contexts(x0: Tensor, timesteps: (Int, Int)) throws -> (Tensor, Tensor) {
        let b = try x0.size(0)
        let t = try Tensor.cat([
            Tensor.full([b], value: Double(timesteps.0), dtype: .int64), Tensor.full([b], value: Double(timesteps.1), dtype: .int64),
        ])
        let out = try adapter(
            Tensor.cat([x0, x0]), timesteps: t, condition: Condition.concatenate(condition, condition), frames: frames)
        return (try out.slice(dim: 0, 0, b), try out.slice(dim: 0, b, 2 * b))
    }
}

/// One-shot text-to-video editing (paper §5.2): tune the inflated model on the source video with
/// the source prompt (Tune-A-Video), invert the video with contextual DDIM and the source prompt
/// while recording attention maps, then sample with the target prompt (contextual DDIM with
/// classifier-free guidance), substituting the recorded maps for t ∈ [0.5·T, T] (FateZero).
/// The method picks which of fusion and adapter take part.
public final class VideoEditPipeline {
    public let model: VideoDiffusionModel
    public let textEncoder: any TextEncoder

    public init(model: VideoDiffusionModel, textEncoder: any TextEncoder) throws {
        guard textEncoder.width == model.unet.config.contextDim else {
            throw VideoEditError.incompatibleModel(
                "the text encoder gives \(textEncoder.width)-wide states, the model expects \(model.unet.config.contextDim)")
        }
        if let a = model.adapter, a.config.sampleSize != model.unet.config.sampleSize || a.config.inChannels != model.unet.config.inChannels {
            throw VideoEditError.incompatibleModel(
                "the adapter works on \(a.config.sampleSize)×\(a.config.sampleSize), the U-Net on \(model.unet.config.sampleSize)×\(model.unet.config.sampleSize)")
        }
        self.model = model
        self.textEncoder = textEncoder
    }

    /// The model's condition for one text, and its token ids (truncated to the model's limit,
    /// with a notice in `notices`).
    func encode(_ text: String, notices: inout [String]) throws -> (Condition, [Int]) {
        let encoding = try textEncoder.encode([text])
        let limit = model.index.textEncoder.maxTokens
        var tokens = encoding.tokenStates, mask = encoding.attentionMask
        var ids = encoding.tokenIDs[0]
        if try tokens.size(1) > limit {
            notices.append("prompt truncated to \(limit) tokens: \"\(text.prefix(60))\"")
            tokens = try tokens.slice(dim: 1, 0, limit)
            mask = try mask.slice(dim: 1, 0, limit)
            ids = Array(ids.prefix(limit))
        }
        return (try Condition(tokens: tokens, mask: mask, pooled: encoding.pooled), ids)
    }

    /// The `[F, C, S, S]` shape the model needs, or a typed error.
    func checkVideo(_ video: Tensor) throws -> Int {
        let c = model.unet.config
        let s = video.shape
        guard let f = s.first, s.count == 4, f > 0 else {
            if s.first == 0 { throw VideoEditError.noFrames }
            throw VideoEditError.frameShapeMismatch(expected: [-1, c.inChannels, c.sampleSize, c.sampleSize], found: s)
        }
        guard s == [f, c.inChannels, c.sampleSize, c.sampleSize] else {
            throw VideoEditError.frameShapeMismatch(expected: [f, c.inChannels, c.sampleSize, c.sampleSize], found: s)
        }
        return f
    }

    static func checkPrompt(_ text: String, _ which: String) throws {
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw VideoEditError.emptyPrompt(which: which) }
    }

    /// The painted layout of `layouts` (one per frame, phrases of `prompt`), one row per frame,
    /// over the tokens of `condition`.
    func layoutTarget(_ layouts: [Layout], prompt: String, condition: Condition, frames: Int) throws -> LayoutTarget {
        guard model.unet.layoutPrior != nil else { throw LayoutError.modelHasNoLayoutPrior }
        guard layouts.count == frames else {
            throw VideoEditError.invalidOption("\(layouts.count) frame layouts for a video of \(frames) frames")
        }
        let tokens = try condition.tokens.size(1)
        let rows = try Layout.groundedRows(
            layouts, in: Array(repeating: prompt, count: frames), tokens: tokens, tokenizer: textEncoder.tokenizer)
        return try LayoutTarget(objects: rows, tokens: tokens)
    }

    /// `[F, 1, size, size]`: 1 on pixels inside the source or target box, grown by `margin`
    /// pixels, of every object the edit changes, 0 elsewhere (what the edit keeps from the source).
    /// Objects pair up by position in the layouts; one whose phrase and box are the same in both
    /// is kept, as FateZero keeps what the edited words do not attend to. Layouts of different
    /// lengths change every object.
    public static func objectMask(_ layouts: VideoEditLayouts, size: Int, margin: Int) throws -> Tensor {
        let frames = layouts.source.count
        guard layouts.target.count == frames else {
            throw VideoEditError.invalidOption("\(layouts.source.count) source and \(layouts.target.count) target frame layouts")
        }
        var values = [Float](repeating: 0, count: frames * size * size)
        for k in 0..<frames {
            let (a, b) = (layouts.source[k].objects, layouts.target[k].objects)
            let changed = a.count != b.count ? a + b : zip(a, b).filter { $0 != $1 }.flatMap { [$0, $1] }
            for object in changed {
                let b = object.box.map { $0 * Double(size) }
                let x0 = max(0, Int((b[0] - Double(margin)).rounded(.down))), y0 = max(0, Int((b[1] - Double(margin)).rounded(.down)))
                let x1 = min(size, Int((b[2] + Double(margin)).rounded(.up))), y1 = min(size, Int((b[3] + Double(margin)).rounded(.up)))
                guard x0 < x1, y0 < y1 else { continue }
                for y in y0..<y1 { for x in x0..<x1 { values[(k * size + y) * size + x] = 1 } }
            }
        }
        return try Tensor(values, shape: [frames, 1, size, size])
    }

    /// Edits `video` (`[F, C, S, S]` in [-1, 1], one video) from `sourcePrompt` to `targetPrompt`.
    /// `progress` may return false to cancel. The model is tuned in place (its tuned weights
    /// stay in ``model``).
    public func edit(
        video: Tensor, sourcePrompt: String, targetPrompt: String, options: VideoEditOptions,
        layouts: VideoEditLayouts? = nil, progress: ProgressHandler? = nil
    ) throws -> VideoEditResult {
        // On the model's device: the clip and the prompts' states are moved there, and every
        // tensor the edit makes is made there.
        // The result comes back on the CPU, where the caller's clip is.
        let device = try model.device
        var result = try Torch.withDefaultDevice(device) {
            try edit(
                video: video.to(device), on: device, sourcePrompt: sourcePrompt, targetPrompt: targetPrompt, options: options,
                layouts: layouts, progress: progress)
        }
        if device != .cpu {
            result.edited = try result.edited.to(.cpu)
            result.invertedLatent = try result.invertedLatent.to(.cpu)
        }
        return result
    }

    private func edit(
        video: Tensor, on device: Device, sourcePrompt: String, targetPrompt: String, options: VideoEditOptions,
        layouts: VideoEditLayouts?, progress: ProgressHandler?
    ) throws -> VideoEditResult {
        var notices: [String] = []
        try Self.checkPrompt(sourcePrompt, "source")
        try Self.checkPrompt(targetPrompt, "target")
        try options.validate(trainTimesteps: model.schedule.config.trainTimesteps)
        let frames = try checkVideo(video)
        if options.method.usesAdapter, model.adapter == nil {
            var config = ContextAdapterConfig()
            config.sampleSize = model.unet.config.sampleSize
            config.inChannels = model.unet.config.inChannels
            config.contextDim = model.unet.config.contextDim
            config.patchSize = config.sampleSize % 4 == 0 ? 4 : 1
            config.width = 64
            config.depth = 1
            try model.addFreshAdapter(config)
            notices.append("the model has no context adapter; ContextDiff tunes a fresh one (zero at start) on the source video")
        }
        if options.tuning == .adapter, !options.method.usesAdapter, options.tuneSteps > 0 {
            notices.append("\(options.method.rawValue) has no adapter to tune: zero-shot under the paper's protocol (--tune adapter)")
        }
        // The text encoder runs where its weights are (the CPU).
        let ((sourceCPU, sourceIDs), (targetCPU, targetIDs), (nullCPU, _)) = try Torch.withDefaultDevice(.cpu) {
            (try encode(sourcePrompt, notices: &notices), try encode(targetPrompt, notices: &notices), try encode("", notices: &notices))
        }
        let (source, target, null) = (try sourceCPU.to(device), try targetCPU.to(device), try nullCPU.to(device))
        let sourceLayout = try layouts.map { try layoutTarget($0.source, prompt: sourcePrompt, condition: source, frames: frames) }
        let targetLayout = try layouts.map { try layoutTarget($0.target, prompt: targetPrompt, condition: target, frames: frames) }

        // The fusion budget is checked before tuning, which changes the model in place.
        let store: AttentionFusionStore?
        var bound = 0
        if options.method.usesFusion, options.fusion.fraction > 0 {
            let timesteps = try DDIMSampler(schedule: model.schedule, inferenceSteps: options.steps).timesteps
            store = AttentionFusionStore(config: options.fusion, fusedTimesteps: options.fusion.fusedTimesteps(timesteps))
            store?.tokenAlignment = AttentionFusionStore.alignTokens(source: sourceIDs, target: targetIDs)
            bound = options.fusion.storageBytes(
                unet: model.unet, frames: frames, sourceTokens: try source.tokens.size(1),
                frameAttention: options.frameAttention, steps: options.steps)
            guard bound <= options.fusion.budgetBytes else {
                throw VideoEditError.fusionBudgetExceeded(needed: bound, budget: options.fusion.budgetBytes)
            }
        } else {
            store = nil
        }
        let losses = try tune(
            video: video, frames: frames, condition: source.repeated(frames), layout: sourceLayout, options: options,
            progress: progress)
        var trajectory: [Int: Tensor] = [:]
        let blending = layouts.flatMap { options.keepsBackground ? $0 : nil }
        let latent = try invert(
            video: video, frames: frames, condition: source.repeated(frames), layout: sourceLayout, options: options,
            store: store, progress: progress, record: blending == nil ? nil : { trajectory[$0] = $1 })
        let constraint = try blending.map { layouts -> SampleConstraint in
            let mask = try Self.objectMask(layouts, size: model.unet.config.sampleSize, margin: options.backgroundMargin)
            let keep = try -mask + 1
            return { x, next in
                let known: Tensor
                if let next {
                    guard let latent = trajectory[next] else {
                        throw VideoEditError.invalidOption("the inversion did not reach level \(next); cannot keep the background")
                    }
                    known = latent
                } else {
                    known = video
                }
                return try x * mask + known * keep
            }
        }
        let edited = try sample(
            from: latent, frames: frames, condition: target.repeated(frames), unconditional: null.repeated(frames),
            layout: targetLayout, options: options, store: store, constraint: constraint, progress: progress)
        return VideoEditResult(
            edited: edited, invertedLatent: latent, fusionBytes: store?.bytes ?? 0, fusionBound: bound, tuningLosses: losses,
            notices: notices)
    }

    /// One-shot tuning (Tune-A-Video §4.2 with ContextDiff's joint loss, Eq. 8): `steps` AdamW
    /// updates of ``VideoDiffusionModel/tunableParameters(_:includeAdapter:)`` on the source video,
    /// one timestep shared by all frames per step. Returns the losses.
    public func tune(
        video: Tensor, frames: Int, condition: Condition, layout boxes: LayoutTarget? = nil, options: VideoEditOptions,
        progress: ProgressHandler? = nil
    ) throws -> [Double] {
        guard options.tuneSteps > 0 else { return [] }
        let includeAdapter = options.method.usesAdapter
        let trainable = model.tunableParameters(options.tuning, includeAdapter: includeAdapter).map(\.1)
        guard !trainable.isEmpty else { return [] }
        let all = model.unet.parameters() + (model.adapter?.parameters() ?? [])
        for p in all { try p.requiringGrad(false) }
        for p in trainable { try p.requiringGrad(true) }
        defer {
            for p in trainable { _ = try? p.requiringGrad(false) }
            model.train(false)
        }
        let optimizer = try AdamW(parameters: trainable, learningRate: options.tuneLearningRate, weightDecay: 0.01)
        let diffusion = ContextualDiffusion(schedule: model.schedule)
        let generator = Generator(seed: options.seed &+ 0x70E)
        let layout = VideoLayout(frames: frames, selfAttention: options.frameAttention)
        let unet = model.unet
        let adapter = includeAdapter ? model.adapter : nil
        model.train(true)
        _ = progress?(ProgressUpdate(phase: VideoEditPhase.tuning.rawValue, completed: 0, total: options.tuneSteps))
        var losses: [Double] = []
        for step in 0..<options.tuneSteps {
            let t = try diffusion.sampleTimesteps(count: 1, generator: generator)[0]
            let noise = try Tensor.randn(video.shape, generator: generator)
            let loss = try Torch.withGrad {
                try diffusion.trainingLoss(
                    x0: video, timesteps: Array(repeating: t, count: frames), noise: noise,
                    prediction: unet.config.prediction,
                    denoiser: { xt, tt in try unet(xt, timesteps: tt, condition: condition, video: layout, layout: boxes) },
                    context: adapter.map { a in { x, tt in try a(x, timesteps: tt, condition: condition, frames: frames) } })
            }
            let value = try loss.item()
            guard value.isFinite else { throw VideoEditError.invalidOption("tuning diverged (loss \(value)); lower the learning rate") }
            try optimizer.zeroGrad()
            try loss.backward()
            try clipGradNorm(trainable, maxNorm: 1)
            try optimizer.step()
            losses.append(value)
            if let progress, !progress(ProgressUpdate(
                phase: VideoEditPhase.tuning.rawValue, completed: step + 1, total: options.tuneSteps,
                metrics: [.init("loss", value)])) {
                throw VideoEditError.cancelled(phase: "tuning")
            }
        }
        return losses
    }

    /// Contextual DDIM inversion of the clean video with its prompt (w = 1), recording attention
    /// maps into `store` at its fused timesteps. Returns x_T.
    public func invert(
        video: Tensor, frames: Int, condition: Condition, layout boxes: LayoutTarget? = nil, options: VideoEditOptions,
        store: AttentionFusionStore?, progress: ProgressHandler? = nil, record: ((Int, Tensor) -> Void)? = nil
    ) throws -> Tensor {
        let sampler = try DDIMInverseSampler(
            schedule: model.schedule, inferenceSteps: options.steps,
            configuration: .init(
                predictionType: model.unet.config.prediction, x0Processing: .diffusersDefault,
                evaluation: options.inversionEvaluation))
        model.train(false)
        let unet = model.unet
        let layout = VideoLayout(frames: frames, selfAttention: options.frameAttention, control: store)
        let context: (any ContextBias)? = options.method.usesAdapter
            ? model.adapter.map { VideoAdapterContext(adapter: $0, condition: condition, frames: frames) } : nil
        _ = progress?(ProgressUpdate(phase: VideoEditPhase.inversion.rawValue, completed: 0, total: options.steps))
        return try Torch.withInferenceMode {
            var x = video
            for (i, t) in sampler.timesteps.enumerated() {
                let output: Tensor
                if let at = sampler.modelTimestep(forStep: t) {
                    store?.mode = .record(timestep: at)
                    defer { store?.mode = .idle }
                    output = try unet(
                        x, timesteps: Tensor.full([frames], value: Double(at), dtype: .int64), condition: condition,
                        video: layout, layout: boxes)
                } else {
                    output = try sampler.cleanLevelOutput(sample: x)
                }
                x = try sampler.step(modelOutput: output, timestep: t, sample: x, context: context, noise: nil).sample
                record?(t, x)
                if let progress, !progress(ProgressUpdate(phase: VideoEditPhase.inversion.rawValue, completed: i + 1, total: sampler.timesteps.count)) {
                    throw VideoEditError.cancelled(phase: "inversion")
                }
            }
            // Evaluated at s, the inversion never calls the model at the last timestep; the editing
            // starts there from this very latent, so record its maps with one more call.
            if let store, options.inversionEvaluation == .source, let last = sampler.timesteps.last,
               store.fusedTimesteps.contains(last)
            {
                store.mode = .record(timestep: last)
                defer { store.mode = .idle }
                _ = try unet(
                    x, timesteps: Tensor.full([frames], value: Double(last), dtype: .int64), condition: condition,
                    video: layout, layout: boxes)
            }
            return x
        }
    }

    /// Contextual DDIM sampling from `latent` with the target condition and classifier-free
    /// guidance (one batched call on [unconditional video, conditional video]); the adapter acts
    /// on the guided x̂0 with the target prompt; fused steps take the stored attention maps.
    public func sample(
        from latent: Tensor, frames: Int, condition: Condition, unconditional: Condition, layout boxes: LayoutTarget? = nil,
        options: VideoEditOptions, store: AttentionFusionStore?, constraint: SampleConstraint? = nil,
        progress: ProgressHandler? = nil
    ) throws -> Tensor {
        let sampler = try DDIMSampler(
            schedule: model.schedule, inferenceSteps: options.steps,
            configuration: .init(predictionType: model.unet.config.prediction, x0Processing: .diffusersDefault))
        model.train(false)
        let unet = model.unet
        let layout = VideoLayout(frames: frames, selfAttention: options.frameAttention, control: store)
        let guidance = options.guidance
        let both = try Condition.concatenate(unconditional, condition)
        // The unconditional rows paint the prior's typical layout of the empty caption, as in
        // text-to-image sampling.
        let bothBoxes = try boxes.map { given -> LayoutTarget in
            guard let prior = model.unet.layoutPrior else { throw LayoutError.modelHasNoLayoutPrior }
            return try LayoutTarget.concatenate(prior.typicalTarget(unconditional), given)
        }
        let context: (any ContextBias)? = options.method.usesAdapter
            ? model.adapter.map { VideoAdapterContext(adapter: $0, condition: condition, frames: frames) } : nil
        _ = progress?(ProgressUpdate(phase: VideoEditPhase.editing.rawValue, completed: 0, total: options.steps))
        do {
            return try Torch.withInferenceMode {
                try sampler.run(
                    from: latent, context: context, constraint: constraint,
                    phase: VideoEditPhase.editing.rawValue, progress: progress,
                    denoiser: { x, t in
                        if let store, store.fusedTimesteps.contains(t) { store.mode = .inject(timestep: t) }
                        defer { store?.mode = .idle }
                        if guidance == 1 {
                            return try unet(
                                x, timesteps: Tensor.full([frames], value: Double(t), dtype: .int64), condition: condition,
                                video: layout, layout: boxes)
                        }
                        let out = try unet(
                            Tensor.cat([x, x]), timesteps: Tensor.full([2 * frames], value: Double(t), dtype: .int64),
                            condition: both, video: layout, layout: bothBoxes)
                        let u = try out.slice(dim: 0, 0, frames), c = try out.slice(dim: 0, frames, 2 * frames)
                        return try u + (c - u) * guidance
                    })
            }
        } catch SamplingError.cancelled {
            throw VideoEditError.cancelled(phase: "editing")
        }
    }
}
