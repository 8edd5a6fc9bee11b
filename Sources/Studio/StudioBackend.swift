import ContextDiff
import Core
import Datasets
import Evaluation
import Foundation
import NN
import TextEncoders
import Workflows
import Torch

/// What the studio draws with. ``JobQueue`` calls ``generate(_:progress:)`` on its own worker
/// thread, one job at a time; `progress` returning false asks the call to stop (it then throws
/// the sampler's cancellation error).
public protocol StudioBackend: Sendable {
    /// The model's name as runs record it (the folder's name, never its path).
    var modelName: String { get }
    /// Side of the square images the model draws.
    var sampleSize: Int { get }
    /// Side of the images a job returns: the super-resolution stage's in a cascade, else ``sampleSize``.
    var outputSize: Int { get }
    /// The model's training timesteps (the most sampling steps it can take).
    var trainTimesteps: Int { get }
    /// Whether the model places objects with a layout prior (layout modes and boxes apply).
    var hasLayoutPrior: Bool { get }
    /// `preview` (may be nil) gets the current estimate of the images, side by side, now and
    /// then while sampling (a live preview).
    func generate(
        _ spec: GenerationJobSpec, progress: @escaping ProgressHandler, preview: ((_ step: Int, _ images: RGBImage) -> Void)?
    ) throws -> GeneratedImages
    /// Edits `spec.source` (one-shot tuning, inversion, fused editing: ``VideoEditPipeline``).
    func editVideo(_ spec: VideoEditJobSpec, progress: @escaping ProgressHandler) throws -> EditedVideo
}

/// A checked video edit: the decoded clip at the model's size and the edit's options.
public struct VideoEditJobSpec: Sendable, Equatable {
    public var source: Video
    public var sourcePrompt: String
    public var targetPrompt: String
    public var options: VideoEditOptions
}

/// An edit's frames and scores.
public struct EditedVideo: Sendable {
    public var source: Video
    public var edited: Video
    /// The paper's Table 2 scores, when the contrastive model (models/clip) is there.
    public var scores: VideoEditScores?
    public var notices: [String]

    public init(source: Video, edited: Video, scores: VideoEditScores?, notices: [String]) {
        self.source = source
        self.edited = edited
        self.scores = scores
        self.notices = notices
    }
}

extension StudioBackend {
    /// A backend without a cascade returns the model's own size.
    public var outputSize: Int { sampleSize }
}

/// A text-to-image model folder behind a lock: loaded once, called by one job at a time.
public final class PipelineBackend: StudioBackend, @unchecked Sendable {
    public let modelName: String
    public let sampleSize: Int
    public let trainTimesteps: Int
    public let hasLayoutPrior: Bool
    private let pipeline: TextToImagePipeline
    /// The cascade's super-resolution stage and its settings (the seed follows each job's), or nil.
    private let stage: (pipeline: SuperResolutionPipeline, encoder: TextConditionEncoder, options: SuperResolutionOptions)?
    private let scorer: ContrastiveScorer?
    private let evaluator: AttributeEvaluator?
    private let lock = NSLock()

    /// Loads `directory` with the text encoder `makeTextEncoder` builds. Class-conditional
    /// models have no prompts to serve and are refused. `scorer` and `evaluator`, when given,
    /// score video edits (CLIP-style text and temporal scores, evaluator alignment).
    /// `superResolution`, when given, upsamples every generated image (the cascade; phase
    /// "upsampling" after "sampling"), with `superResolutionOptions` and each job's seed.
    public init(
        directory: URL, scorer: ContrastiveScorer? = nil, evaluator: AttributeEvaluator? = nil,
        superResolution: SuperResolutionPipeline? = nil, superResolutionOptions: SuperResolutionOptions = SuperResolutionOptions(),
        makeTextEncoder: () throws -> any TextEncoder
    ) throws {
        self.scorer = scorer
        self.evaluator = evaluator
        let model = try ContextDiffModel.load(from: directory)
        guard model.classEncoder == nil else {
            throw PipelineError.incompatibleTextEncoder("the studio serves text-to-image models; \(directory.lastPathComponent) is class-conditional")
        }
        modelName = directory.standardizedFileURL.lastPathComponent
        sampleSize = model.unet.config.sampleSize
        trainTimesteps = model.schedule.config.trainTimesteps
        hasLayoutPrior = model.unet.layoutPrior != nil
        pipeline = try TextToImagePipeline(model: model, textEncoder: makeTextEncoder())
        if let superResolution {
            // The same checks as the cascade's (sizes, text encoder).
            let cascade = try CascadePipeline(base: pipeline, superResolution: superResolution)
            stage = (superResolution, cascade.conditionEncoder, superResolutionOptions)
        } else {
            stage = nil
        }
    }

    /// The side of the images a job returns (the stage's when there is one).
    public var outputSize: Int { stage?.pipeline.outputSize ?? sampleSize }

    public func generate(
        _ spec: GenerationJobSpec, progress: @escaping ProgressHandler, preview: ((_ step: Int, _ images: RGBImage) -> Void)?
    ) throws -> GeneratedImages {
        try lock.withLock {
            // At most ten previews a second (and always the last step's).
            var shown = Date.distantPast
            let steps = spec.options.steps
            let estimate = preview.map { show in
                { (step: Int, x0: Tensor) in
                    guard step >= steps || Date().timeIntervalSince(shown) >= 0.1,
                        let images = try? RGBImage.images(fromBatch: x0), let grid = try? RGBImage.grid(images, columns: images.count)
                    else { return }
                    shown = Date()
                    show(step, grid)
                }
            }
            var result = try pipeline.generate(
                prompts: [spec.prompt], options: spec.options, layouts: spec.layout.map { [$0] }, progress: progress, preview: estimate)
            if let stage {
                var options = stage.options
                options.seed = SuperResolutionOptions.stageSeed(following: spec.options.seed)
                let upsampled = try stage.pipeline.upsample(
                    result.images, prompts: [spec.prompt], imagesPerPrompt: spec.options.imagesPerPrompt,
                    negativePrompt: spec.options.negativePrompt, encoder: stage.encoder, options: options, progress: progress)
                result.images = upsampled.images
                result.notices += upsampled.notices.filter { !result.notices.contains($0) }
            }
            return try GeneratedImages(result)
        }
    }
}

extension PipelineBackend {
    public func editVideo(_ spec: VideoEditJobSpec, progress: @escaping ProgressHandler) throws -> EditedVideo {
        try lock.withLock {
            let video = try Torch.withSeed(spec.options.seed) { try VideoDiffusionModel(inflating: pipeline.model) }
            let editor = try VideoEditPipeline(model: video, textEncoder: pipeline.textEncoder)
            let source = try spec.source.tensor()
            // As `edit-video` by default: the source's objects, frame by frame, when they can be read.
            let (layouts, notice) = hasLayoutPrior
                ? SourceLayoutTracking().defaultLayouts(
                    frames: spec.source.frames, sourcePrompt: spec.sourcePrompt, targetPrompt: spec.targetPrompt)
                : (nil, nil)
            var result = try editor.edit(
                video: source, sourcePrompt: spec.sourcePrompt, targetPrompt: spec.targetPrompt, options: spec.options,
                layouts: layouts, progress: progress)
            if let notice { result.notices.append(notice) }
            let scores = try scorer.map {
                try VideoMetrics.scores(source: source, edited: result.edited, prompt: spec.targetPrompt, scorer: $0, evaluator: evaluator)
            }
            return EditedVideo(
                source: spec.source, edited: try Video(tensor: result.edited, fps: spec.source.fps), scores: scores, notices: result.notices)
        }
    }
}
