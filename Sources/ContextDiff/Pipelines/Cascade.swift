import Foundation
import NN
import Torch

/// Which stages of a cascade run.
public enum CascadeStages: String, Codable, Sendable, CaseIterable {
    /// The base model only: its `sample_size` thumbnails.
    case base
    /// The base model, then the super-resolution stage.
    case all
}

/// Imagen's cascade (paper §5.1): the text-to-image base model draws the picture at its size,
/// the super-resolution stage draws it again `factor` times larger, conditioned on the base
/// image and on the same prompt. Each stage is an ordinary model folder; the text encoder is
/// shared. Like its stages, the cascade keeps no state between calls.
public final class CascadePipeline {
    public let base: TextToImagePipeline
    public let superResolution: SuperResolutionPipeline
    /// The prompts → the stage's condition (its own token limit, the shared encoder).
    public let conditionEncoder: TextConditionEncoder

    public init(base: TextToImagePipeline, superResolution: SuperResolutionPipeline) throws {
        let stage = superResolution.model
        let c = stage.unet.config
        guard c.lowResolutionSize == base.model.unet.config.sampleSize, c.channels == base.model.unet.config.inChannels else {
            throw PipelineError.incompatibleTextEncoder(
                "the super-resolution stage reads \(c.lowResolutionSize)×\(c.lowResolutionSize) images with \(c.channels) channels; the base model draws \(base.model.unet.config.sampleSize)×\(base.model.unet.config.sampleSize) with \(base.model.unet.config.inChannels)")
        }
        guard stage.index.textEncoder.kind == base.model.index.textEncoder.kind, base.textEncoder.width == c.contextDim else {
            throw PipelineError.incompatibleTextEncoder(
                "the super-resolution stage reads \(stage.index.textEncoder.kind) states \(c.contextDim) wide; the base model's encoder is \(base.model.index.textEncoder.kind), \(base.textEncoder.width) wide")
        }
        self.base = base
        self.superResolution = superResolution
        conditionEncoder = TextConditionEncoder(textEncoder: base.textEncoder, maxTokens: stage.index.textEncoder.maxTokens)
    }

    /// The side of the images ``generate(prompts:options:superResolution:stages:layouts:progress:)`` returns for `stages`.
    public func outputSize(_ stages: CascadeStages) -> Int {
        stages == .base ? base.model.unet.config.sampleSize : superResolution.outputSize
    }

    /// Generates as ``TextToImagePipeline/generate(prompts:options:layouts:start:progress:preview:)``
    /// does, then (``CascadeStages/all``) upsamples every image with the stage. `progress` sees
    /// phase "sampling" (the base), then "upsampling". `superResolution.seed` seeds the stage's
    /// noise independently of the base's.
    public func generate(
        prompts: [String], options: GenerationOptions, superResolution: SuperResolutionOptions = SuperResolutionOptions(),
        stages: CascadeStages = .all, layouts: [Layout]? = nil, progress: ProgressHandler? = nil
    ) throws -> GenerationResult {
        try superResolution.validate(trainTimesteps: self.superResolution.model.schedule.config.trainTimesteps)
        var result = try base.generate(prompts: prompts, options: options, layouts: layouts, progress: progress)
        guard stages == .all else { return result }
        let upsampled = try self.superResolution.upsample(
            result.images, prompts: prompts, imagesPerPrompt: options.imagesPerPrompt, negativePrompt: options.negativePrompt,
            encoder: conditionEncoder, options: superResolution, progress: progress)
        result.images = upsampled.images
        result.notices += upsampled.notices.filter { !result.notices.contains($0) }
        return result
    }
}
