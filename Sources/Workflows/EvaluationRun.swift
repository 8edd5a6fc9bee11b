import ContextDiff
import Datasets
import Evaluation
import Foundation
import Torch

/// What `contextdiff evaluate` measures: which prompts, how they are sampled, how the metrics
/// are referenced.
public struct EvaluationRequest: Sendable {
    /// The prompts: the benchmark's (per split, `perKind` of each of the three kinds) or a list.
    public enum Prompts: Sendable, Equatable {
        case benchmark(splits: [Split], perKind: Int)
        case file([String])
    }

    public var options: GenerationOptions
    public var prompts = Prompts.benchmark(splits: [.validation, .heldout], perKind: 64)
    /// How the report names the model (its folder, or a run folder with a checkpoint step).
    public var modelDescription = ""
    public var checkpoint: Int?
    /// Prompts generated per batch.
    public var batch = 16
    /// Held-out renders the evaluator's own accuracy is checked on (reported beside the results).
    public var evaluatorCheckImages = 1000
    /// Real renders per prompt kind for the Fréchet reference.
    public var referencePerKind = 334

    public init(options: GenerationOptions) { self.options = options }
}

/// The name of a benchmark split's prompt set in reports: "seen" or "heldout".
public func promptSetName(_ split: Split) -> String { split == .heldout ? "heldout" : "seen" }

/// `contextdiff evaluate` as a library call: generate for each prompt set and score alignment
/// (attribute evaluator), CLIP-style score, Fréchet distance, precision/recall and layout spread,
/// with the evaluator's own held-out accuracy beside them.
public struct EvaluationRun {
    public let pipeline: TextToImagePipeline
    public let evaluator: (model: AttributeEvaluator, url: URL)
    public let scorer: (scorer: ContrastiveScorer, url: URL)
    /// Applied to every generated batch before it is measured (``TextToImageEvaluation/transform``):
    /// ``cascadeTransform(_:encoder:options:)`` measures a cascade's images at the evaluator's size.
    public var transform: ((_ images: Tensor, _ prompts: [String], _ imagesPerPrompt: Int) throws -> Tensor)?

    /// The phase of the evaluator's accuracy check (before the sets are generated).
    public static let checkingPhase = "checking"

    public init(
        pipeline: TextToImagePipeline, evaluator: (model: AttributeEvaluator, url: URL),
        scorer: (scorer: ContrastiveScorer, url: URL)
    ) throws {
        self.pipeline = pipeline
        self.evaluator = evaluator
        self.scorer = scorer
    }

    /// Runs the request. `progress` reports phase "checking", then "evaluating" in images over
    /// all sets; `notify` receives lines for a person (the evaluator's accuracy, unparsed prompts).
    public func run(
        _ request: EvaluationRequest, progress: ProgressHandler = { _ in true }, notify: (String) -> Void = { _ in }
    ) throws -> (report: EvaluationReport, images: [RGBImage]) {
        let model = pipeline.model
        try request.options.validate(trainTimesteps: model.schedule.config.trainTimesteps)
        let evaluation = try TextToImageEvaluation(pipeline: pipeline, evaluator: evaluator.model, scorer: scorer.scorer)
        evaluation.transform = transform
        let accuracy = try EvaluatorTraining.measureAccuracy(of: evaluator.model, count: request.evaluatorCheckImages) { p in
            progress(ProgressUpdate(phase: Self.checkingPhase, completed: p.completed, total: p.total))
        }
        notify(Self.describe(accuracy))

        var sets: [(name: String, prompts: [EvaluationPrompt], split: Split?)] = []
        var unparsed: [String]?
        switch request.prompts {
        case let .file(lines):
            let parsed = lines.map { EvaluationPrompt(parsing: $0) }
            unparsed = parsed.filter { $0.spec == nil }.map(\.text)
            if let unparsed, !unparsed.isEmpty {
                notify("note: \(unparsed.count) of \(parsed.count) prompts are not in the benchmark's caption grammar; they get the CLIP-style score only (alignment is skipped for them)")
            }
            sets.append(("prompts", parsed, nil))
        case let .benchmark(splits, perKind):
            var benchmarkConfig = SyntheticBenchmarkConfig()
            benchmarkConfig.imageSize = model.unet.config.sampleSize
            let benchmark = try SyntheticBenchmark(benchmarkConfig)
            for s in splits {
                sets.append((promptSetName(s), TextToImageEvaluation.benchmarkPrompts(benchmark, split: s, perKind: perKind), s))
            }
        }
        let reference = FrechetReference(evaluator: evaluator.model, perKind: request.referencePerKind)
        let perPrompt = request.options.imagesPerPrompt
        let total = sets.map { $0.prompts.count * perPrompt }.reduce(0, +)
        var done = 0
        var results: [PromptSetEvaluation] = []
        var allImages: [RGBImage] = []
        let started = Date()
        for set in sets {
            let statistics = try set.split.map { try reference.statistics(for: $0) }
            let realFeatures = try set.split.map { try reference.features(for: $0) }
            let (result, images) = try evaluation.evaluate(
                set.prompts, name: set.name, options: request.options, batchSize: request.batch, reference: statistics,
                realFeatures: realFeatures
            ) { p in
                progress(ProgressUpdate(phase: "evaluating", completed: done + p.completed, total: total))
            }
            done += result.images
            results.append(result)
            allImages += images
        }
        let o = request.options
        let report = EvaluationReport(
            model: request.modelDescription, checkpoint: request.checkpoint, sampler: o.sampler.rawValue, steps: o.steps,
            guidance: o.guidance, eta: o.eta, seed: o.seed, context: o.useContext && model.adapter != nil,
            imagesPerPrompt: perPrompt, evaluator: .init(path: evaluator.url.path, heldOutAccuracy: accuracy),
            clipModel: scorer.url.path, sets: results, unparsedPrompts: unparsed, seconds: Date().timeIntervalSince(started))
        return (report, allImages)
    }

    /// The accuracy line printed with every evaluation.
    public static func describe(_ a: EvaluatorAccuracy) -> String {
        var text = String(
            format: "evaluator accuracy on %d held-out renders (benchmark seed %llu, never trained on): %.2f%% (count %.2f%%, shape %.2f%%, color %.2f%%, size %.2f%%, relation %.2f%%; center error %.2f px; seen %.2f%%, held-out combinations %.2f%%)",
            a.images, a.benchmarkSeed, 100 * a.accuracy, 100 * a.count, 100 * a.shape, 100 * a.color, 100 * a.size,
            100 * a.relation, a.meanCenterError, 100 * a.seen, 100 * a.heldOut)
        if a.accuracy < 0.99 { text += " — BELOW the 99% bar: alignment numbers from this evaluator are not trustworthy" }
        return text
    }
}

extension EvaluationRun {
    /// The cascade as the evaluator reads it: each batch of base images upsampled by `stage`
    /// under its prompts, then reduced back to the base size by averaging `factor`² pixels (the
    /// box filter the renderer's anti-aliasing is), so that alignment is measured on what the
    /// stage drew, at the evaluator's size. The stage's seed follows the batch's images.
    public static func cascadeTransform(
        _ stage: SuperResolutionPipeline, encoder: TextConditionEncoder, options: SuperResolutionOptions
    ) -> (Tensor, [String], Int) throws -> Tensor {
        var batch: UInt64 = 0
        return { images, prompts, perPrompt in
            var o = options
            o.seed = options.seed &+ batch
            batch += 1
            let high = try stage.upsample(images, prompts: prompts, imagesPerPrompt: perPrompt, encoder: encoder, options: o).images
            return try high.avgPool2d(kernel: stage.model.unet.config.factor)
        }
    }
}
