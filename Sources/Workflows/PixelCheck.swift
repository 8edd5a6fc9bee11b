import ContextDiff
import Datasets
import Evaluation
import Foundation
import Torch

/// The colour-binding and position check measured on pixels alone, with no evaluation models
/// (`contextdiff evaluate --pixel-only`): single objects — the dominant non-background colour is
/// the prompt's; two objects with a relation — the first object's colour dominates the named half
/// and the second's the other.
public struct PixelCheckRun {
    /// One prompt kind's result.
    public struct KindResult: Codable, Equatable, Sendable {
        public var kind: String
        public var prompts: Int
        public var correct: Int
        public var accuracy: Double
    }

    /// One split's report (snake_case keys, as every report of the project).
    public struct Report: Codable, Sendable {
        public var model: String
        public var split: String
        public var sampler: String
        public var steps: Int
        public var guidance: Double
        public var seed: UInt64
        public var context: Bool
        public var results: [KindResult]
        public var twoObjectAccuracy: Double
        public var seconds: Double

        enum CodingKeys: String, CodingKey {
            case model, split, sampler, steps, guidance, seed, context, results, seconds
            case twoObjectAccuracy = "two_object_accuracy"
        }

        /// The report as the CLI prints it without `--json`.
        public func table() -> String {
            var lines = ["\(split):"]
            for r in results {
                lines.append(r.kind.padding(toLength: 16, withPad: " ", startingAt: 0)
                             + String(format: " %3d/%3d  %.1f%%", r.correct, r.prompts, 100 * r.accuracy))
            }
            lines.append(String(format: "two objects       %.1f%%", 100 * twoObjectAccuracy))
            return lines.joined(separator: "\n")
        }
    }

    public let pipeline: TextToImagePipeline
    /// Names the model in the reports.
    public var modelDescription: String
    public var batch = 16
    public let checker = ColorPositionChecker()

    public init(pipeline: TextToImagePipeline, modelDescription: String) {
        self.pipeline = pipeline
        self.modelDescription = modelDescription
    }

    /// Generates `perKind` benchmark prompts of each kind (single object, left/right, above/below)
    /// of `split` with `options` (one image per prompt; batch `b` is seeded `options.seed + b`'s
    /// first index) and checks them. Progress: phase "evaluating", one unit per image.
    public func run(split: Split, perKind: Int, options: GenerationOptions, progress: ProgressHandler? = nil)
        throws -> (report: Report, images: [RGBImage])
    {
        let model = pipeline.model
        var benchmarkConfig = SyntheticBenchmarkConfig()
        benchmarkConfig.imageSize = model.unet.config.sampleSize
        let benchmark = try SyntheticBenchmark(benchmarkConfig)
        var options = options
        options.imagesPerPrompt = 1
        try options.validate(trainTimesteps: model.schedule.config.trainTimesteps)
        guard batch >= 1 else { throw EvaluationError.invalidConfiguration("batch must be at least 1, got \(batch)") }
        let kinds: [PromptKind] = [.singleObject, .horizontalPair, .verticalPair]
        let prompts = kinds.flatMap { benchmark.prompts(split: split, count: perKind, kind: $0) }
        guard !prompts.isEmpty else { throw EvaluationError.invalidInput("no prompts to evaluate") }
        let seed = options.seed
        var images: [RGBImage] = []
        let started = Date()
        for start in stride(from: 0, to: prompts.count, by: batch) {
            let chunk = Array(prompts[start..<min(prompts.count, start + batch)])
            options.seed = seed &+ UInt64(start)
            let out = try pipeline.generate(prompts: chunk.map(\.text), options: options)
            images += try RGBImage.images(fromBatch: out.images)
            if let progress, !progress(ProgressUpdate(phase: "evaluating", completed: images.count, total: prompts.count)) {
                throw SamplingError.cancelled(completedSteps: images.count, totalSteps: prompts.count)
            }
        }
        var results: [KindResult] = []
        for kind in kinds {
            let pairs = zip(prompts, images).filter { $0.0.kind == kind }
            let correct = pairs.filter { checker.isCorrect($0.1, prompt: $0.0) }.count
            results.append(KindResult(kind: kind.rawValue, prompts: pairs.count, correct: correct,
                                      accuracy: Double(correct) / Double(max(1, pairs.count))))
        }
        let two = results.filter { $0.kind != PromptKind.singleObject.rawValue }
        let report = Report(
            model: modelDescription, split: split.rawValue, sampler: options.sampler.rawValue, steps: options.steps,
            guidance: options.guidance, seed: seed, context: options.useContext && model.adapter != nil, results: results,
            twoObjectAccuracy: Double(two.map(\.correct).reduce(0, +)) / Double(max(1, two.map(\.prompts).reduce(0, +))),
            seconds: Date().timeIntervalSince(started))
        return (report, images)
    }
}

extension EvaluationRun {
    /// A model folder, or with `checkpoint` the EMA weights of that step of a run folder.
    public static func loadModel(_ url: URL, checkpoint: Int?) throws -> ContextDiffModel {
        guard let checkpoint else { return try ContextDiffModel.load(from: url) }
        let available = TrainingCheckpoints.steps(in: url)
        guard available.contains(checkpoint) else {
            throw EvaluationError.invalidInput("run folder \(url.path) has no checkpoint at step \(checkpoint)"
                + (available.isEmpty ? " (it has none)" : "; it has steps \(available.map(String.init).joined(separator: ", "))"))
        }
        return try TrainingCheckpoints.emaModel(runDirectory: url, step: checkpoint)
    }

    /// The prompts of a text file, one per line (blank lines and surrounding spaces dropped).
    public static func readPromptFile(_ url: URL) throws -> [String] {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw EvaluationError.invalidInput("cannot read prompts file \(url.path)")
        }
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !lines.isEmpty else { throw EvaluationError.invalidInput("prompts file \(url.path) has no prompts") }
        return lines
    }
}
