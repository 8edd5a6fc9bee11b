import Foundation
import NN
import Torch

/// A loaded text-to-image model that a long-lived front end (a server, a studio) holds and
/// calls from many tasks: the model is loaded once, and the actor serializes the calls (the
/// networks and a caching text encoder are not safe to call concurrently). Each call's notices
/// come back in its result; nothing is left behind between calls.
///
///     let container = try await ModelContainer(directory: url) { try MiniLMTextEncoder() }
///     let result = try await container.generate(prompts: ["a red circle"], options: .init())
public actor ModelContainer {
    public let directory: URL
    /// What the model folder says about itself (for a UI: condition width, sample size, ...).
    public nonisolated let index: ModelIndex
    private let pipeline: TextToImagePipeline

    /// Loads the model folder and builds the pipeline with the encoder `makeTextEncoder` returns.
    public init(directory: URL, makeTextEncoder: () throws -> any TextEncoder) throws {
        let model = try ContextDiffModel.load(from: directory)
        self.directory = directory
        index = model.index
        pipeline = try TextToImagePipeline(model: model, textEncoder: makeTextEncoder())
    }

    /// Runs `body` with the pipeline, alone (no other call runs meanwhile).
    public func perform<R: Sendable>(_ body: (TextToImagePipeline) throws -> R) rethrows -> R {
        try body(pipeline)
    }

    /// ``TextToImagePipeline/generate(prompts:options:progress:)``, serialized. The images come
    /// back as 8-bit RGB rows (`[N][H·W·3]`), which may cross tasks.
    public func generate(
        prompts: [String], options: GenerationOptions, progress: (@Sendable (ProgressUpdate) -> Bool)? = nil
    ) throws -> GeneratedImages {
        let result = try pipeline.generate(prompts: prompts, options: options, progress: progress)
        return try GeneratedImages(result)
    }
}

/// Generated images as plain bytes (Sendable), with the call's notices.
public struct GeneratedImages: Sendable, Equatable {
    /// Per image: `height·width·3` bytes, row-major RGB.
    public var pixels: [[UInt8]]
    public var width: Int
    public var height: Int
    public var notices: [String]

    public init(pixels: [[UInt8]], width: Int, height: Int, notices: [String] = []) {
        self.pixels = pixels
        self.width = width
        self.height = height
        self.notices = notices
    }

    /// Quantises `[N, 3, H, W]` images in [-1, 1] (round half up, as the PNG writer does).
    public init(_ result: GenerationResult) throws {
        let s = result.images.shape
        guard s.count == 4, s[1] == 3 else {
            throw PipelineError.invalidOption("expected [N, 3, H, W] images, got \(s)")
        }
        let bytes = try ((result.images.clamped(min: -1, max: 1) + 1) * 127.5 + 0.5).floor()
            .permuted([0, 2, 3, 1]).contiguous().to(.uint8)
        let flat = try bytes.scalars(as: UInt8.self)
        let per = s[2] * s[3] * 3
        pixels = (0..<s[0]).map { Array(flat[($0 * per)..<(($0 + 1) * per)]) }
        height = s[2]
        width = s[3]
        notices = result.notices
    }
}
