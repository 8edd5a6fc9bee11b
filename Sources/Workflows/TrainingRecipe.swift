import ContextDiff
import Datasets
import Foundation

/// What a model is conditioned on.
public enum ConditionKind: String, Codable, Sendable, CaseIterable {
    /// Captions through the frozen MiniLM encoder (text-to-image).
    case text
    /// Class labels — the benchmark's colour × shape classes seen in training — as learned
    /// tokens (class-to-image, paper App. B); the data are single-object scenes.
    case `class`
}

/// Everything that defines a training run, saved as `recipe.json` in the run folder.
public struct TrainingRecipe: Codable, Equatable, Sendable {
    /// Text (the default) or class labels.
    public var condition = ConditionKind.text
    public var unet = UNetConfig.shapesDefault
    /// The adapter; `nil` trains the r_φ ≡ 0 baseline.
    public var adapter: ContextAdapterConfig? = .shapesDefault
    public var schedule = NoiseScheduleConfig()
    public var training = TrainingConfig.shapesDefault
    public var benchmark = SyntheticBenchmarkConfig()
    /// Synthetic training images rendered up front.
    public var datasetSize = 20000
    /// An image folder with metadata.jsonl instead of the synthetic benchmark.
    public var imageFolder: String?
    public var maxTokens = 32

    enum CodingKeys: String, CodingKey {
        case unet, adapter, schedule, training, benchmark, datasetSize = "dataset_size", imageFolder = "image_folder"
        case maxTokens = "max_tokens", condition
    }

    public init() {}

    /// Checks every part and that the parts agree, before anything is rendered or trained: the
    /// synthetic data's image size and the networks' sample sizes are one size, the timestep range
    /// lies in the schedule, losses and priors that need object boxes have the synthetic data, and
    /// the token limits of the prior and the refiner cover the recipe's.
    public func validate() throws {
        func fail(_ message: String) -> WorkflowError { .inconsistentRecipe(message) }
        guard datasetSize > 0 || imageFolder != nil else { throw fail("dataset_size must be positive, got \(datasetSize)") }
        try training.validate()
        try unet.validate()
        try adapter?.validate()
        let size = unet.sampleSize
        if imageFolder == nil, benchmark.imageSize != size {
            throw fail("benchmark.image_size \(benchmark.imageSize) differs from unet.sample_size \(size)")
        }
        if let adapter, adapter.sampleSize != size {
            throw fail("adapter.sample_size \(adapter.sampleSize) differs from unet.sample_size \(size)")
        }
        if let range = training.timestepRange, range.count == 2, range[1] > schedule.trainTimesteps {
            throw fail("training.timestep_range \(range[0])..<\(range[1]) goes past the schedule's \(schedule.trainTimesteps) timesteps")
        }
        if imageFolder != nil, training.groundingWeight > 0 {
            throw fail("the grounding loss needs the synthetic benchmark's object boxes; an image folder has none")
        }
        if imageFolder != nil, unet.layoutPrior != nil {
            throw fail("a layout prior learns from the synthetic benchmark's object boxes; an image folder has none")
        }
        if let prior = unet.layoutPrior, prior.maxTokens < maxTokens {
            throw fail("unet.layout_prior.max_tokens \(prior.maxTokens) is below the recipe's max_tokens \(maxTokens)")
        }
        if let refiner = unet.textRefiner, refiner.maxTokens < maxTokens {
            throw fail("unet.text_refiner.max_tokens \(refiner.maxTokens) is below the recipe's max_tokens \(maxTokens)")
        }
        if condition == .class {
            if imageFolder != nil { throw fail("condition class draws the synthetic benchmark's classes; an image folder has none") }
            if unet.layoutPrior != nil || unet.textRefiner != nil || training.groundingWeight > 0 {
                throw fail("condition class has no caption: no layout prior, text refiner or grounding loss")
            }
        }
    }

    /// A recipe may name only what it changes: a missing section or key keeps its default
    /// (`"adapter": null` asks for the baseline; a missing `adapter` keeps the default adapter).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = TrainingRecipe()
        unet = try c.decodeIfPresent(UNetConfig.self, forKey: .unet) ?? d.unet
        if c.contains(.adapter) {
            adapter = try c.decodeNil(forKey: .adapter) ? nil : c.decode(ContextAdapterConfig.self, forKey: .adapter)
        } else {
            adapter = d.adapter
        }
        schedule = try c.decodeIfPresent(NoiseScheduleConfig.self, forKey: .schedule) ?? d.schedule
        training = try c.decodeIfPresent(TrainingConfig.self, forKey: .training) ?? d.training
        benchmark = try c.decodeIfPresent(SyntheticBenchmarkConfig.self, forKey: .benchmark) ?? d.benchmark
        datasetSize = try c.decodeIfPresent(Int.self, forKey: .datasetSize) ?? d.datasetSize
        imageFolder = try c.decodeIfPresent(String.self, forKey: .imageFolder)
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens) ?? d.maxTokens
        condition = try c.decodeIfPresent(ConditionKind.self, forKey: .condition) ?? d.condition
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(unet, forKey: .unet)
        try c.encode(adapter, forKey: .adapter)  // an explicit null for the baseline
        try c.encode(schedule, forKey: .schedule)
        try c.encode(training, forKey: .training)
        try c.encode(benchmark, forKey: .benchmark)
        try c.encode(datasetSize, forKey: .datasetSize)
        try c.encodeIfPresent(imageFolder, forKey: .imageFolder)
        try c.encode(maxTokens, forKey: .maxTokens)
        if condition != .text { try c.encode(condition, forKey: .condition) }  // text recipes stay as they were
    }

    /// The class names of a class-conditional recipe: "colour shape" for every combination the
    /// benchmark's training split draws, in a fixed order.
    public var classNames: [String] {
        guard let benchmark = try? SyntheticBenchmark(benchmark) else { return [] }
        return benchmark.shapeColors(for: .train).map { "\($0.color.rawValue) \($0.shape.rawValue)" }
    }
}

extension TrainingConfig {
    /// The shipped model's recipe: ``TrainingConfig``'s defaults.
    public static var shapesDefault: TrainingConfig { TrainingConfig() }
}

extension TrainingRecipe {
    /// The recipe as recorded in a model's metadata: an image folder by its name only (recipes
    /// and portable commands, never this machine's paths).
    public var portable: TrainingRecipe {
        var r = self
        r.imageFolder = imageFolder.map { URL(fileURLWithPath: $0).lastPathComponent }
        return r
    }

    /// Sorted, compact JSON (for metadata and the run agreement of data-parallel ranks).
    public func sortedJSON() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}

/// The prompts of the validation grids and the docs' sample grid.
public let validationPrompts = [
    "a red circle", "a small blue triangle", "a green square", "a large yellow circle",
    "a red circle to the left of a blue square", "a green triangle above a purple circle",
    "a blue square to the right of an orange circle", "a yellow triangle below a red square",
]
