import Torch

/// Class-to-image generation (paper App. B) with a class-conditional model: each class label is
/// one learned token (``ClassLabelEncoder``), read by the U-Net and by r_φ exactly as a caption's
/// tokens are; guidance pushes away from the null class. The sampling loop is text-to-image's
/// (``TextToImagePipeline/sample(model:conditional:unconditional:options:layout:start:attention:progress:)``).
public final class ClassToImagePipeline {
    public let model: ContextDiffModel
    public let classes: ClassLabelEncoder

    public init(model: ContextDiffModel) throws {
        guard let classes = model.classEncoder else {
            throw PipelineError.invalidOption("class: this model is conditioned on text, not on class labels (generate it from a prompt)")
        }
        self.model = model
        self.classes = classes
    }

    /// `imagesPerPrompt` images per class name (grouped by class): `[N, C, H, W]` in [-1, 1].
    public func generate(classes names: [String], options: GenerationOptions, progress: ProgressHandler? = nil) throws -> GenerationResult {
        try generate(labels: names.map { try classes.label(named: $0) }, options: options, progress: progress)
    }

    public func generate(labels: [Int], options: GenerationOptions, progress: ProgressHandler? = nil) throws -> GenerationResult {
        guard options.negativePrompt == nil else {
            throw PipelineError.invalidOption("negative prompt: a class-conditional model has no text; guidance pushes away from the null class")
        }
        try options.validate(trainTimesteps: model.schedule.config.trainTimesteps)
        model.train(false)
        return try Torch.withInferenceMode {
            let conditional = try classes.encode(labels).condition.repeated(options.imagesPerPrompt)
            let unconditional = try classes.unconditional(count: conditional.batchSize)
            let images = try TextToImagePipeline.sample(
                model: model, conditional: conditional, unconditional: unconditional, options: options, progress: progress)
            return GenerationResult(images: images, notices: [])
        }
    }
}
