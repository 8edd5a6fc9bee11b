import Foundation
import NN
import Torch

/// How a model with a layout prior places the objects its prompt names.
public enum LayoutMode: String, Codable, Sendable, CaseIterable {
    /// A layout drawn per image from the prior's mixture p(boxes | caption) (seeded by the
    /// generation seed): positions and unstated sizes vary as in the data. Models whose prior
    /// has no mixture use the typical layout.
    case sampled
    /// The prompt's typical layout, the same for every seed.
    case typical
}

/// Options of one generation call; every field has a sensible default.
public struct GenerationOptions: Codable, Sendable, Equatable {
    /// Any registered sampler (``SamplerRegistry``).
    public var sampler = SamplerKind.ddim
    /// Denoising steps.
    public var steps = 50
    /// Classifier-free guidance weight w ≥ 0 (1 = conditional only, 0 = unconditional).
    public var guidance = 3.0
    /// DDIM's η in [0, 1].
    public var eta = 0.0
    /// Images per prompt.
    public var imagesPerPrompt = 1
    public var seed: UInt64 = 0
    /// Pushes away from this prompt instead of the empty caption.
    public var negativePrompt: String?
    /// Clip x̂0 to ±1 (default) or use Imagen's dynamic thresholding.
    public var dynamicThresholding = false
    /// Use the context adapter when the model has one (false: sample as if r_φ ≡ 0).
    public var useContext = true
    /// Where a layout prior puts the objects (only models with one).
    public var layout = LayoutMode.sampled
    /// DPM-Solver++'s order (1...3; the SDE variant 1...2).
    public var solverOrder = 2
    /// Karras et al.'s σ spacing (DPM-Solver++ only).
    public var karrasSigmas = false
    /// The U-Net's and r_φ's matrix products and convolutions in float32 or bfloat16 mixed
    /// precision (``Precision``); the sampler's arithmetic and the layout prior stay float32.
    public var precision = Precision.fp32

    public init() {}

    enum CodingKeys: String, CodingKey {
        case sampler, steps, guidance, eta, seed, layout
        case imagesPerPrompt = "images_per_prompt", negativePrompt = "negative_prompt"
        case dynamicThresholding = "dynamic_thresholding", useContext = "use_context"
        case solverOrder = "solver_order", karrasSigmas = "karras_sigmas"
        case precision
    }

    /// Every key is optional: a missing one keeps its default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = GenerationOptions()
        sampler = try c.decodeIfPresent(SamplerKind.self, forKey: .sampler) ?? d.sampler
        steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? d.steps
        guidance = try c.decodeIfPresent(Double.self, forKey: .guidance) ?? d.guidance
        eta = try c.decodeIfPresent(Double.self, forKey: .eta) ?? d.eta
        imagesPerPrompt = try c.decodeIfPresent(Int.self, forKey: .imagesPerPrompt) ?? d.imagesPerPrompt
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
        negativePrompt = try c.decodeIfPresent(String.self, forKey: .negativePrompt)
        dynamicThresholding = try c.decodeIfPresent(Bool.self, forKey: .dynamicThresholding) ?? d.dynamicThresholding
        useContext = try c.decodeIfPresent(Bool.self, forKey: .useContext) ?? d.useContext
        layout = try c.decodeIfPresent(LayoutMode.self, forKey: .layout) ?? d.layout
        solverOrder = try c.decodeIfPresent(Int.self, forKey: .solverOrder) ?? d.solverOrder
        karrasSigmas = try c.decodeIfPresent(Bool.self, forKey: .karrasSigmas) ?? d.karrasSigmas
        precision = try c.decodeIfPresent(Precision.self, forKey: .precision) ?? d.precision
    }

    /// The sampler options these generation options select for a model predicting `prediction`.
    public func samplerOptions(prediction: PredictionTarget) -> SamplerOptions {
        let reads = SamplerRegistry.registration(for: sampler).reads
        var o = SamplerOptions(
            inferenceSteps: steps, predictionType: prediction,
            x0Processing: dynamicThresholding ? .imagenThreshold : .diffusersDefault)
        if reads.contains(.eta) { o.eta = eta }
        if reads.contains(.solverOrder) { o.solverOrder = solverOrder }
        if reads.contains(.karrasSigmas) { o.karrasSigmas = karrasSigmas }
        return o
    }

    /// Throws a message naming the first invalid option.
    public func validate(trainTimesteps: Int) throws {
        guard steps > 0 else { throw PipelineError.invalidOption("steps must be positive, got \(steps)") }
        guard steps <= trainTimesteps else {
            throw PipelineError.invalidOption("steps \(steps) exceeds the model's \(trainTimesteps) training timesteps")
        }
        guard guidance.isFinite, guidance >= 0 else {
            throw PipelineError.invalidOption("guidance must be ≥ 0, got \(guidance)")
        }
        guard eta.isFinite, (0...1).contains(eta) else { throw PipelineError.invalidOption("eta must be in [0, 1], got \(eta)") }
        if eta != 0, !SamplerRegistry.registration(for: sampler).reads.contains(.eta) {
            throw PipelineError.invalidOption("eta applies to DDIM only, not to sampler \(sampler)")
        }
        guard (1...1024).contains(imagesPerPrompt) else {
            throw PipelineError.invalidOption("images per prompt must be in 1...1024, got \(imagesPerPrompt)")
        }
    }
}

/// Errors of the generation pipelines.
public enum PipelineError: Error, CustomStringConvertible, Equatable {
    /// An option outside its range; the message starts with the option's name (`steps`, `eta`).
    case invalidOption(String)
    case emptyPrompt
    case incompatibleTextEncoder(String)

    public var description: String {
        switch self {
        case let .invalidOption(m): m
        case .emptyPrompt: "the prompt is empty; describe the image to generate"
        case let .incompatibleTextEncoder(m): m
        }
    }
}

/// What a generation call returns.
public struct GenerationResult {
    /// `[N, C, H, W]` in [-1, 1], grouped by prompt.
    public var images: Tensor
    /// Notices for the caller to show (e.g. a prompt truncated to the encoder's limit).
    public var notices: [String]
}

/// Text-to-image generation with a ContextDiff (or baseline) model: encode the prompts, start
/// from seeded Gaussian noise, run any registered sampler with classifier-free guidance (one
/// batched model call per step) and, for ContextDiff, the context adapter on the guided x̂0 in
/// every step (paper Eqs. 9 and 13).
///
/// The pipeline holds no per-call state: every call's notices come back in its result. It is not
/// itself safe to call from several threads at once (the networks and a caching text encoder are
/// classes); a server shares one through ``ModelContainer``, which serializes the calls.
public final class TextToImagePipeline {
    public let model: ContextDiffModel
    public let textEncoder: any TextEncoder
    /// Captions → the model's condition (truncated to its token limit).
    public let conditionEncoder: TextConditionEncoder

    public init(model: ContextDiffModel, textEncoder: any TextEncoder) throws {
        guard model.classEncoder == nil else {
            throw PipelineError.incompatibleTextEncoder(
                "this model is class-conditional: it draws classes (ClassToImagePipeline, generate --class), not prompts")
        }
        guard textEncoder.width == model.unet.config.contextDim else {
            throw PipelineError.incompatibleTextEncoder(
                "the text encoder gives \(textEncoder.width)-wide states, the model expects \(model.unet.config.contextDim)")
        }
        self.model = model
        self.textEncoder = textEncoder
        conditionEncoder = TextConditionEncoder(textEncoder: textEncoder, maxTokens: model.index.textEncoder.maxTokens)
    }

    /// Encodes texts into the model's condition, truncating to the model's token limit.
    public func condition(for texts: [String]) throws -> EncodedCondition {
        try conditionEncoder.encode(texts)
    }

    /// The sampler an options value selects, for this model.
    public func sampler(for options: GenerationOptions) throws -> any DiffusionSampler {
        try Self.sampler(for: options, model: model)
    }

    /// Generates `imagesPerPrompt` images for each prompt: `[N, C, H, W]` in [-1, 1], grouped
    /// by prompt. `layouts` (layout-to-image; models with a layout prior) places the objects: one
    /// for every prompt, or one per prompt; without it the prior places them (``LayoutMode``).
    /// `start` begins from a picture instead of noise (img2img, inpainting: ``ImageStart``).
    /// `progress` (phase "sampling") may return false to cancel. `preview`, when given, sees
    /// the model's current estimate of the clean images (x̂0, `[N, C, H, W]` in [-1, 1]) at
    /// every denoising step (a live preview).
    public func generate(
        prompts: [String], options: GenerationOptions, layouts: [Layout]? = nil, start: ImageStart? = nil,
        progress: ProgressHandler? = nil, preview: ((_ step: Int, _ estimate: Tensor) -> Void)? = nil
    ) throws -> GenerationResult {
        guard !prompts.isEmpty, prompts.allSatisfy({ !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }) else {
            throw PipelineError.emptyPrompt
        }
        try options.validate(trainTimesteps: model.schedule.config.trainTimesteps)
        let given = try layouts.map { try layoutTarget(prompts: prompts, layouts: $0, imagesPerPrompt: options.imagesPerPrompt) }
        model.train(false)
        return try Torch.withInferenceMode {
            let encoded = try condition(for: prompts)
            let conditional = try encoded.condition.repeated(options.imagesPerPrompt)
            let negative = try condition(for: [options.negativePrompt ?? ""])
            let unconditional = try negative.condition.repeated(conditional.batchSize)
            let images = try Self.sample(
                model: model, conditional: conditional, unconditional: unconditional, options: options, layout: given,
                start: start, progress: progress, preview: preview)
            var notices = encoded.notices + negative.notices
            if start != nil, layouts == nil, model.unet.layoutPrior != nil {
                notices.append(
                    "this model places objects with its layout prior, which does not see the init image; give the picture's layout (a layout or boxes) to keep its structure")
            }
            return GenerationResult(images: images, notices: notices)
        }
    }

    /// The layout the U-Net paints for `layouts` (one for all prompts or one per prompt), one row
    /// per image, over the prompts' token positions (truncated to the model's token limit).
    public func layoutTarget(prompts: [String], layouts: [Layout], imagesPerPrompt: Int) throws -> LayoutTarget {
        guard model.unet.layoutPrior != nil else { throw LayoutError.modelHasNoLayoutPrior }
        guard layouts.count == 1 || layouts.count == prompts.count else {
            throw LayoutError.countMismatch(layouts: layouts.count, prompts: prompts.count)
        }
        let tokens = min(conditionEncoder.maxTokens, prompts.map { textEncoder.tokenizer.encode($0).count }.max() ?? 1)
        let perPrompt = try Layout.groundedRows(
            layouts.count == 1 ? Array(repeating: layouts[0], count: prompts.count) : layouts, in: prompts, tokens: tokens,
            tokenizer: textEncoder.tokenizer)
        let rows: [[GroundedObject]?] = perPrompt.flatMap { Array(repeating: $0, count: imagesPerPrompt) }
        return try LayoutTarget(objects: rows, tokens: tokens)
    }

    /// The sampler an options value selects for `model`.
    public static func sampler(for options: GenerationOptions, model: ContextDiffModel) throws -> any DiffusionSampler {
        try SamplerRegistry.make(
            options.sampler, schedule: model.schedule, options: options.samplerOptions(prediction: model.unet.config.prediction))
    }

    /// The sampling loop of ``generate(prompts:options:progress:)`` for already encoded conditions
    /// (one row per image; `unconditional` is the negative or empty caption, same batch): seeded
    /// x_T, then every step calls the U-Net once on the doubled batch (classifier-free guidance)
    /// and, for ContextDiff, the adapter once on the guided x̂0 at both levels of the step.
    /// Runs in inference mode. Text-side work that is the same in every step (the cross-attention
    /// keys and values of the tokens) is computed once, before the loop. `layout` (one row per
    /// image) is painted instead of the prior's layout; `start` begins from a picture
    /// (``ImageStart``), drawn down the same process with the same x_T noise. `attention` sees
    /// every attention layer's weights (``AttentionMapRecorder``).
    public static func sample(
        model: ContextDiffModel, conditional: Condition, unconditional: Condition, options: GenerationOptions,
        layout: LayoutTarget? = nil, start: ImageStart? = nil, attention: (any AttentionController)? = nil,
        progress: ProgressHandler? = nil, preview: ((_ step: Int, _ estimate: Tensor) -> Void)? = nil
    ) throws -> Tensor {
        try options.validate(trainTimesteps: model.schedule.config.trainTimesteps)
        let batch = conditional.batchSize
        guard unconditional.batchSize == batch else {
            throw PipelineError.invalidOption(
                "unconditional batch \(unconditional.batchSize) differs from the conditional batch \(batch)")
        }
        let sampler = try sampler(for: options, model: model)
        model.train(false)
        let device = try model.device
        let (conditional, unconditional) = (try conditional.to(device), try unconditional.to(device))
        let c = model.unet.config
        try start?.validate(batch: batch, channels: c.inChannels, size: c.sampleSize)
        let generator = Generator(seed: options.seed)
        // x_T from the CPU generator, then moved: the same picture for a seed on every device.
        let noise = try Torch.withDefaultDevice(.cpu) {
            try Tensor.randn([batch, c.inChannels, c.sampleSize, c.sampleSize], generator: generator)
        }.to(device)
        let picture = start
        return try Torch.withDefaultDevice(device) { try Torch.withInferenceMode {
            let both = try Condition.concatenate(unconditional, conditional).cachingAttention()
            let conditional = conditional.cachingAttention()
            let guidance = options.guidance
            let unet = model.unet
            let layouts = try layouts(
                model: model, conditional: conditional, unconditional: unconditional, options: options, given: layout?.to(device))
            // An attention controller sees the 2-D model as a one-frame video (no change to the result).
            let video = attention.map { VideoLayout(frames: 1, selfAttention: .perFrame, control: $0) }
            let guided: Denoiser = { x, t in
                if guidance == 1 {
                    return try unet(
                        x, timesteps: Tensor.full([batch], value: Double(t), dtype: .int64), condition: conditional,
                        video: video, layout: layouts?.conditional)
                }
                let out = try unet(
                    Tensor.cat([x, x]), timesteps: Tensor.full([2 * batch], value: Double(t), dtype: .int64), condition: both,
                    video: video, layout: layouts?.both)
                let u = try out.slice(dim: 0, 0, batch), c = try out.slice(dim: 0, batch, 2 * batch)
                return try u + (c - u) * guidance
            }
            // The preview's x̂0: exact for x0-predicting models; for ε and v the plain DDPM
            // conversion (r_φ's small bias b_t left out — a preview, not a sample).
            var step = 0
            let prediction = c.prediction, schedule = model.schedule
            let denoiser: Denoiser = preview.map { show in
                { x, t in
                    let out = try guided(x, t)
                    let a = Double(schedule.alphaBar(t))
                    let estimate: Tensor
                    switch prediction {
                    case .sample: estimate = out
                    case .epsilon: estimate = try (x - out * (1 - a).squareRoot()) / a.squareRoot()
                    case .vPrediction: estimate = try x * a.squareRoot() - out * (1 - a).squareRoot()
                    }
                    step += 1
                    show(step, try estimate.clamped(min: -1, max: 1))
                    return out
                }
            } ?? guided
            let context: (any ContextBias)? = try (options.useContext ? model.adapter : nil).map { adapter in
                try AdapterContext(adapter: adapter, condition: conditional)
            }
            return try Torch.withPrecision(options.precision, on: device) {
                guard let picture else {
                    return try sampler.run(from: noise, context: context, generator: generator, progress: progress, denoiser: denoiser)
                }
                let begin = try picture.begin(sampler: sampler, noise: noise, context: context)
                return try sampler.run(
                    from: begin.sample, context: context, generator: generator, firstStep: begin.firstStep,
                    constraint: begin.constraint, progress: progress, denoiser: denoiser)
            }
        } }
    }

    /// The layout a sampling run paints, for the conditional rows and (guided) the doubled batch:
    /// the given one, else (``LayoutMode/sampled``) one drawn from the prior; nil when the U-Net
    /// paints its typical prediction (or has no prior). The drawn layout has its own random
    /// stream, so a seed's x_T is the same in every mode. The unconditional rows get the prior's
    /// typical layout of the empty (or negative) caption.
    static func layouts(
        model: ContextDiffModel, conditional: Condition, unconditional: Condition, options: GenerationOptions,
        given: LayoutTarget? = nil
    ) throws -> (conditional: LayoutTarget, both: LayoutTarget)? {
        guard let prior = model.unet.layoutPrior else {
            if given != nil { throw LayoutError.modelHasNoLayoutPrior }
            return nil
        }
        let drawn: LayoutTarget
        if let given {
            guard given.gates.shape[0] == conditional.batchSize else {
                throw PipelineError.invalidOption("layout rows \(given.gates.shape[0]) differ from the batch \(conditional.batchSize)")
            }
            drawn = given
        } else {
            guard options.layout == .sampled, prior.config.mixtureComponents != nil, model.unet.paintsPredictedLayout
            else { return nil }
            drawn = try prior.sample(conditional, generator: Generator(seed: options.seed ^ 0x1A70_75A3_5EED_0001))
        }
        return (drawn, try LayoutTarget.concatenate(prior.typicalTarget(unconditional), drawn))
    }
}

/// r_φ(x0, c, t) with the condition bound, for the samplers; computes the contexts at the two
/// timesteps of a step in one batched adapter call.
public struct AdapterContext: ContextBias {
    public let adapter: ContextAdapter
    public let condition: Condition
    /// The condition stacked twice, for the batched call at a step's two levels.
    let doubled: Condition

    /// `condition` may carry an ``Condition/attentionCache``; the doubled condition of the
    /// batched two-level call gets its own.
    public init(adapter: ContextAdapter, condition: Condition) throws {
        self.adapter = adapter
        self.condition = condition
        var doubled = try Condition.concatenate(condition, condition)
        if condition.attentionCache != nil { doubled = doubled.cachingAttention() }
        self.doubled = doubled
    }

    public func context(x0: Tensor, timestep: Int) throws -> Tensor {
        let b = try x0.size(0)
        return try adapter(x0, timesteps: Tensor.full([b], value: Double(timestep), dtype: .int64), condition: condition)
    }

    public func contexts(x0: Tensor, timesteps: (Int, Int)) throws -> (Tensor, Tensor) {
        let b = try x0.size(0)
        let t = try Tensor.cat([
            Tensor.full([b], value: Double(timesteps.0), dtype: .int64), Tensor.full([b], value: Double(timesteps.1), dtype: .int64),
        ])
        let out = try adapter(Tensor.cat([x0, x0]), timesteps: t, condition: doubled)
        return (try out.slice(dim: 0, 0, b), try out.slice(dim: 0, b, 2 * b))
    }
}
