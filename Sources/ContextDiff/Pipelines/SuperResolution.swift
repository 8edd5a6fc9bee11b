import Foundation
import NN
import Torch

/// The folder index of a super-resolution stage (`model_index.json`, format `contextdiff-superres`).
public struct SuperResolutionIndex: Codable, Sendable, Equatable {
    public var format = SuperResolutionIndex.formatName
    public var version = 1
    public var textEncoder: TextEncoderSpec
    /// The augmentation level (a timestep of the stage's schedule) the low-resolution image is
    /// noised to at sampling time unless the caller picks another (``SuperResolutionOptions/noiseLevel``).
    public var samplingNoiseLevel: Int
    /// Free-form provenance (training command, step).
    public var notes: [String: String]

    public static let formatName = "contextdiff-superres"

    public init(textEncoder: TextEncoderSpec, samplingNoiseLevel: Int, notes: [String: String] = [:]) {
        self.textEncoder = textEncoder
        self.samplingNoiseLevel = samplingNoiseLevel
        self.notes = notes
    }

    enum CodingKeys: String, CodingKey {
        case format, version, textEncoder = "text_encoder", samplingNoiseLevel = "sampling_noise_level", notes
    }
}

/// A super-resolution stage: the ``EfficientUNet`` denoiser and its noise schedule. Saved as
/// `model_index.json`, `scheduler/scheduler_config.json` and `unet/`.
public final class SuperResolutionModel {
    public let unet: EfficientUNet
    public let schedule: NoiseSchedule
    public var index: SuperResolutionIndex

    public init(unet: EfficientUNet, schedule: NoiseSchedule, index: SuperResolutionIndex) throws {
        guard (0..<schedule.config.trainTimesteps).contains(index.samplingNoiseLevel) else {
            throw PipelineError.invalidOption(
                "sampling_noise_level \(index.samplingNoiseLevel) lies outside the schedule's 0..<\(schedule.config.trainTimesteps)")
        }
        self.unet = unet
        self.schedule = schedule
        self.index = index
    }

    public var parameters: [Tensor] { unet.parameters() }

    public func stateDict() -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: unet.namedParameters().map { ("unet." + $0.0, $0.1) })
    }

    public func train(_ on: Bool = true) { unet.train(on) }

    public var device: Device {
        get throws { try unet.device ?? .cpu }
    }

    public func to(_ device: Device) throws { try unet.to(device) }

    /// Writes the folder: the network first, the index last (a reader checks the index first).
    public func save(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try ModelFolder.save(unet, to: directory.appendingPathComponent("unet"))
        try writeSchedulerAndIndex(schedule: schedule, index: index, to: directory)
    }

    /// Whether `directory` holds a super-resolution stage (its index names the format).
    public static func isStage(_ directory: URL) -> Bool {
        let url = directory.appendingPathComponent("model_index.json")
        guard let data = try? Data(contentsOf: url),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return false }
        return object["format"] as? String == SuperResolutionIndex.formatName
    }

    /// Loads a folder written by ``save(to:)``, verifying every tensor.
    public static func load(from directory: URL) throws -> SuperResolutionModel {
        let indexURL = directory.appendingPathComponent("model_index.json")
        guard FileManager.default.fileExists(atPath: indexURL.path) else { throw CheckpointError.missingFile(indexURL.path) }
        struct Format: Decodable { var format: String }
        let index: SuperResolutionIndex
        do {
            let data = try Data(contentsOf: indexURL)
            // The format first: a base model's folder is named as such, not as a missing key.
            let format = try JSONDecoder().decode(Format.self, from: data).format
            guard format == SuperResolutionIndex.formatName else {
                throw CheckpointError.invalidConfig(
                    path: indexURL.path, reason: "format '\(format)' is not '\(SuperResolutionIndex.formatName)' (not a super-resolution stage)")
            }
            index = try JSONDecoder().decode(SuperResolutionIndex.self, from: data)
        } catch let error as CheckpointError {
            throw error
        } catch {
            throw CheckpointError.invalidConfig(path: indexURL.path, reason: "\(error)")
        }
        let schedule = try NoiseSchedule(ModelFolder.config(
            NoiseScheduleConfig.self, in: directory.appendingPathComponent("scheduler"), file: "scheduler_config.json"))
        let unet = try ModelFolder.load(EfficientUNet.self, from: directory.appendingPathComponent("unet"))
        do {
            return try SuperResolutionModel(unet: unet, schedule: schedule, index: index)
        } catch {
            throw CheckpointError.invalidConfig(path: indexURL.path, reason: "\(error)")
        }
    }
}

/// Noise conditioning augmentation (Imagen §2.5, after Ho et al.'s cascades): the low-resolution
/// image is noised by the stage's forward process to a level `s` the network is told. Training
/// draws `s` at random, so the stage learns to ignore the artefacts of a base model's samples
/// below that level; sampling uses one fixed level.
public enum NoiseAugmentation {
    /// Upsamples `low` `[B, C, s, s]` to `size` (bicubic, clamped to [-1, 1]) — the stage's view
    /// of the low-resolution image before augmentation.
    public static func upsample(_ low: Tensor, to size: Int) throws -> Tensor {
        try low.interpolate(size: (size, size), mode: .bicubic(alignCorners: false)).clamped(min: -1, max: 1)
    }

    /// `√ᾱ_s · z + √(1 − ᾱ_s) · ε` per row (level 0 leaves the row clean).
    public static func apply(_ z: Tensor, levels: [Int], schedule: NoiseSchedule, noise: Tensor) throws -> Tensor {
        let b = levels.count
        guard try z.size(0) == b, noise.shape == z.shape else {
            throw PipelineError.invalidOption("noise augmentation: \(b) levels for images \(z.shape) and noise \(noise.shape)")
        }
        let n = schedule.config.trainTimesteps
        guard let bad = levels.first(where: { !(0..<n).contains($0) }) else {
            let a = levels.map { $0 == 0 ? 1.0 : Double(schedule.alphaBar($0)) }
            let signal = try Tensor(a.map { Float($0.squareRoot()) }, shape: [b, 1, 1, 1]).to(z.device)
            let spread = try Tensor(a.map { Float((1 - $0).squareRoot()) }, shape: [b, 1, 1, 1]).to(z.device)
            return try z * signal + noise * spread
        }
        throw PipelineError.invalidOption("noise level \(bad) lies outside the schedule's 0..<\(n)")
    }
}

/// Options of one super-resolution call; every field has a default.
public struct SuperResolutionOptions: Codable, Sendable, Equatable {
    /// DPM-Solver++ (2M) by default: with DDIM, clipping x̂0 to [-1, 1] at every step pulls the
    /// stage's saturated white backgrounds grey (docs/CASCADE.md has the measurement).
    public var sampler = SamplerKind.dpmpp
    public var steps = 20
    /// Classifier-free guidance on the text (1 = conditional only: the low-resolution image
    /// already carries the content, and one network call per step halves the cost).
    public var guidance = 1.0
    public var eta = 0.0
    public var seed: UInt64 = 0
    /// The augmentation level of the low-resolution image (nil: the model's
    /// ``SuperResolutionIndex/samplingNoiseLevel``).
    public var noiseLevel: Int?
    /// Clip each step's x̂0 to [-1, 1] (diffusers' `clip_sample`); off by default, the output is
    /// clamped once at the end.
    public var clipSample = false

    public init() {}

    enum CodingKeys: String, CodingKey {
        case sampler, steps, guidance, eta, seed, noiseLevel = "noise_level", clipSample = "clip_sample"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = SuperResolutionOptions()
        sampler = try c.decodeIfPresent(SamplerKind.self, forKey: .sampler) ?? d.sampler
        steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? d.steps
        guidance = try c.decodeIfPresent(Double.self, forKey: .guidance) ?? d.guidance
        eta = try c.decodeIfPresent(Double.self, forKey: .eta) ?? d.eta
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
        noiseLevel = try c.decodeIfPresent(Int.self, forKey: .noiseLevel)
        clipSample = try c.decodeIfPresent(Bool.self, forKey: .clipSample) ?? d.clipSample
    }

    /// The sampler's options for a stage predicting `prediction`.
    func samplerOptions(prediction: PredictionTarget) -> SamplerOptions {
        var o = generation.samplerOptions(prediction: prediction)
        o.x0Processing = clipSample ? .diffusersDefault : .none
        return o
    }

    /// The stage's seed in a cascade whose base model draws with `baseSeed`: its own stream, so
    /// that the stage's noise never repeats the base model's x_T.
    public static func stageSeed(following baseSeed: UInt64) -> UInt64 { baseSeed ^ 0x5350_5253_5441_4745 }

    /// The same settings as text-to-image generation options (for the sampler registry).
    var generation: GenerationOptions {
        var o = GenerationOptions()
        o.sampler = sampler
        o.steps = steps
        o.guidance = guidance
        o.eta = eta
        o.seed = seed
        return o
    }

    /// Throws a message naming the first invalid option (as `sr_steps`, `sr_guidance`, ...).
    public func validate(trainTimesteps: Int) throws {
        do {
            try generation.validate(trainTimesteps: trainTimesteps)
        } catch let PipelineError.invalidOption(message) {
            throw PipelineError.invalidOption("sr_" + message)
        }
        if let noiseLevel, !(0..<trainTimesteps).contains(noiseLevel) {
            throw PipelineError.invalidOption("sr_noise_level must be in 0..<\(trainTimesteps), got \(noiseLevel)")
        }
    }
}

/// Upsamples images with a super-resolution stage: the low-resolution images are upsampled,
/// noised to the augmentation level, and a registered sampler runs the stage's denoiser from
/// seeded noise at the high resolution, with classifier-free guidance on the text when asked.
/// The stage runs through the same contextual samplers as the base model with r_φ ≡ 0 (the
/// paper's adapter relates the text to the base image, where the content is decided; the
/// stage only adds detail to what the base drew, conditioned on it).
public final class SuperResolutionPipeline {
    public let model: SuperResolutionModel

    public init(model: SuperResolutionModel) {
        self.model = model
    }

    public var lowResolutionSize: Int { model.unet.config.lowResolutionSize }
    public var outputSize: Int { model.unet.config.sampleSize }

    /// Upsamples the images of a generation call (`[N, C, s, s]`, grouped by prompt,
    /// `imagesPerPrompt` each) under their prompts, encoded by `encoder`; guidance pushes away
    /// from `negativePrompt` (or the empty caption). Returns the images and the encoder's notices.
    public func upsample(
        _ images: Tensor, prompts: [String], imagesPerPrompt: Int, negativePrompt: String? = nil,
        encoder: TextConditionEncoder, options: SuperResolutionOptions, progress: ProgressHandler? = nil
    ) throws -> (images: Tensor, notices: [String]) {
        guard !prompts.isEmpty, imagesPerPrompt > 0, try images.size(0) == prompts.count * imagesPerPrompt else {
            throw PipelineError.invalidOption(
                "\(images.shape.first ?? 0) images for \(prompts.count) prompts × \(imagesPerPrompt) images per prompt")
        }
        let (conditional, unconditional, notices) = try Torch.withInferenceMode {
            let encoded = try encoder.encode(prompts)
            let conditional = try encoded.condition.repeated(imagesPerPrompt)
            let negative = try encoder.encode([negativePrompt ?? ""]).condition.repeated(conditional.batchSize)
            return (conditional, negative, encoded.notices)
        }
        let out = try upsample(images, conditional: conditional, unconditional: unconditional, options: options, progress: progress)
        return (out, notices)
    }

    /// Upsamples `low` `[N, C, s, s]` (in [-1, 1], s = the stage's low resolution) under the
    /// conditions (one row per image; `unconditional` is read only when guidance ≠ 1).
    /// Returns `[N, C, S, S]` in [-1, 1]. `progress` reports phase "upsampling".
    public func upsample(
        _ low: Tensor, conditional: Condition, unconditional: Condition, options: SuperResolutionOptions,
        progress: ProgressHandler? = nil
    ) throws -> Tensor {
        let c = model.unet.config
        try options.validate(trainTimesteps: model.schedule.config.trainTimesteps)
        let batch = try low.size(0)
        guard low.shape == [batch, c.channels, c.lowResolutionSize, c.lowResolutionSize] else {
            throw PipelineError.invalidOption(
                "the super-resolution stage reads [N, \(c.channels), \(c.lowResolutionSize), \(c.lowResolutionSize)] images, got \(low.shape)")
        }
        guard conditional.batchSize == batch, unconditional.batchSize == batch else {
            throw PipelineError.invalidOption(
                "conditions of \(conditional.batchSize) and \(unconditional.batchSize) rows for \(batch) images")
        }
        let sampler = try SamplerRegistry.make(
            options.sampler, schedule: model.schedule, options: options.samplerOptions(prediction: c.prediction))
        model.train(false)
        let device = try model.device
        let level = options.noiseLevel ?? model.index.samplingNoiseLevel
        let generator = Generator(seed: options.seed)
        let size = c.sampleSize
        // Both draws from the CPU generator, then moved: the same picture for a seed everywhere.
        let (noise, augmentation) = try Torch.withDefaultDevice(.cpu) {
            (try Tensor.randn([batch, c.channels, size, size], generator: generator),
             try Tensor.randn([batch, c.channels, size, size], generator: generator))
        }
        return try Torch.withDefaultDevice(device) { try Torch.withInferenceMode {
            let upsampled = try NoiseAugmentation.upsample(low.to(device), to: size)
            let augmented = try NoiseAugmentation.apply(
                upsampled, levels: Array(repeating: level, count: batch), schedule: model.schedule, noise: augmentation.to(device))
            let conditional = try conditional.to(device).cachingAttention()
            let guidance = options.guidance
            let unet = model.unet
            let levels = try Tensor.full([batch], value: Double(level), dtype: .int64)
            let both = guidance == 1 ? nil : try Condition.concatenate(unconditional.to(device), conditional).cachingAttention()
            let (doubledLow, doubledLevels) = guidance == 1
                ? (augmented, levels) : (try Tensor.cat([augmented, augmented]), try Tensor.cat([levels, levels]))
            let denoiser: Denoiser = { x, t in
                guard let both else {
                    return try unet(
                        x, timesteps: Tensor.full([batch], value: Double(t), dtype: .int64), lowResolution: augmented,
                        augmentationLevels: levels, condition: conditional)
                }
                let out = try unet(
                    Tensor.cat([x, x]), timesteps: Tensor.full([2 * batch], value: Double(t), dtype: .int64),
                    lowResolution: doubledLow, augmentationLevels: doubledLevels, condition: both)
                let u = try out.slice(dim: 0, 0, batch), c = try out.slice(dim: 0, batch, 2 * batch)
                return try u + (c - u) * guidance
            }
            return try sampler.run(
                from: noise.to(device), context: nil, generator: generator, phase: "upsampling", progress: progress,
                denoiser: denoiser).clamped(min: -1, max: 1)
        } }
    }
}
