import ContextDiff
import Core
import Foundation
import NN
import TextEncoders

/// What the studio draws with. ``JobQueue`` calls ``generate(_:progress:)`` on its own worker
/// thread, one job at a time; `progress` returning false asks the call to stop (it then throws
/// the sampler's cancellation error).
public protocol StudioBackend: Sendable {
    /// The model's name as runs record it (the folder's name, never its path).
    var modelName: String { get }
    /// Side of the square images the model draws.
    var sampleSize: Int { get }
    /// The model's training timesteps (the most sampling steps it can take).
    var trainTimesteps: Int { get }
    /// Whether the model places objects with a layout prior (layout modes and boxes apply).
    var hasLayoutPrior: Bool { get }
    func generate(_ spec: GenerationJobSpec, progress: @escaping ProgressHandler) throws -> GeneratedImages
}

/// A text-to-image model folder behind a lock: loaded once, called by one job at a time.
public final class PipelineBackend: StudioBackend, @unchecked Sendable {
    public let modelName: String
    public let sampleSize: Int
    public let trainTimesteps: Int
    public let hasLayoutPrior: Bool
    private let pipeline: TextToImagePipeline
    private let lock = NSLock()

    /// Loads `directory` with the text encoder `makeTextEncoder` builds. Class-conditional
    /// models have no prompts to serve and are refused.
    public init(directory: URL, makeTextEncoder: () throws -> any TextEncoder) throws {
        let model = try ContextDiffModel.load(from: directory)
        guard model.classEncoder == nil else {
            throw PipelineError.incompatibleTextEncoder("the studio serves text-to-image models; \(directory.lastPathComponent) is class-conditional")
        }
        modelName = directory.standardizedFileURL.lastPathComponent
        sampleSize = model.unet.config.sampleSize
        trainTimesteps = model.schedule.config.trainTimesteps
        hasLayoutPrior = model.unet.layoutPrior != nil
        pipeline = try TextToImagePipeline(model: model, textEncoder: makeTextEncoder())
    }

    public func generate(_ spec: GenerationJobSpec, progress: @escaping ProgressHandler) throws -> GeneratedImages {
        try lock.withLock {
            let result = try pipeline.generate(
                prompts: [spec.prompt], options: spec.options, layouts: spec.layout.map { [$0] }, progress: progress)
            return try GeneratedImages(result)
        }
    }
}
