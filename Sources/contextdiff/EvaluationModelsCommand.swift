import ArgumentParser
import ContextDiff
import Datasets
import Evaluation
import Foundation
import NN
import Torch
import Workflows

func defaultEvaluatorDirectory() -> URL { EvaluationModels.evaluatorURL() }

/// Loads the attribute evaluator (``EvaluationModels``); the error also names the flag.
func loadEvaluator(_ path: String?) throws -> (AttributeEvaluator, URL) {
    do { return try EvaluationModels.loadEvaluator(path.map { URL(fileURLWithPath: $0) }) } catch let error as WorkflowError {
        throw ValidationError("\(error) or pass --evaluator DIR")
    }
}

/// Loads the contrastive model with the MiniLM encoder; the error also names the flag.
func loadScorer(_ path: String?, textEncoder: MiniLMTextEncoder) throws -> (ContrastiveScorer, URL) {
    do { return try EvaluationModels.loadScorer(path.map { URL(fileURLWithPath: $0) }, textEncoder: textEncoder) } catch let error as WorkflowError {
        throw ValidationError("\(error) or pass --clip DIR")
    }
}

/// The accuracy line printed with every evaluation.
func describe(_ a: EvaluatorAccuracy) -> String { EvaluationRun.describe(a) }

func writeJSON<T: Encodable>(_ value: T, to url: URL) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(value).write(to: url, options: .atomic)
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// The training settings both evaluation models share (``EvaluatorTrainingConfig`` and
/// ``ContrastiveTrainingConfig``).
protocol RenderTrainingSettings {
    var steps: Int { get set }
    var batchSize: Int { get set }
    var datasetSize: Int { get set }
    var learningRate: Double { get set }
    var minLearningRate: Double { get set }
    var seed: UInt64 { get set }
    func validate() throws
}

extension EvaluatorTrainingConfig: RenderTrainingSettings {}
extension ContrastiveTrainingConfig: RenderTrainingSettings {}

/// The flags of `evaluator train` and `clip train`; a flag not given keeps the config's default.
struct RenderTrainingOptions: ParsableArguments {
    @Option(help: "Training steps.") var steps: Int?
    @Option(help: "Batch size (for the contrastive model also the number of InfoNCE negatives).") var batchSize: Int?
    @Option(help: "Renders drawn up front.") var datasetSize: Int?
    @Option(help: "Peak learning rate.") var learningRate: Double?
    @Option(help: "Seed of initialisation, batches and augmentation.") var seed: UInt64?
    @Option(help: "Intra-op threads (use 1 when other jobs keep the cores busy).")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    /// `defaults` with the given flags applied and validated; sets up the thread count too.
    func configured<C: RenderTrainingSettings>(_ defaults: C) throws -> C {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        useThreads(threads)
        Torch.keepFreedTensorMemory()
        var config = defaults
        if let steps { config.steps = steps }
        if let batchSize { config.batchSize = batchSize }
        if let datasetSize { config.datasetSize = datasetSize }
        if let learningRate {
            config.learningRate = learningRate
            config.minLearningRate = min(config.minLearningRate, learningRate)
        }
        if let seed { config.seed = seed }
        do { try config.validate() } catch { throw ValidationError("\(error)") }
        return config
    }
}

// MARK: - contextdiff evaluator

struct EvaluatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluator",
        abstract: "The independent attribute evaluator behind alignment accuracy and the Fréchet distance.",
        subcommands: [EvaluatorTrainCommand.self, EvaluatorCheckCommand.self]
    )
}

struct EvaluatorTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train the attribute evaluator on ground-truth renders only and report its held-out accuracy.",
        discussion: """
            The evaluator is a small CNN detector that reads, from a 32×32 render, how many objects \
            there are and each object's shape, color, size and center (relations follow from the \
            centers). It trains on renders of a benchmark seed reserved for it (including the \
            held-out combinations, which it must be able to read) and is checked on renders of \
            another reserved seed it never saw. It must reach ≥ 99% there to be trusted. Writes \
            config.json, model.safetensors and accuracy.json into the output folder.
            """
    )

    @Option(name: .shortAndLong, help: "Output model folder (the default location is models/evaluator).")
    var output: String = "models/evaluator"
    @OptionGroup var training: RenderTrainingOptions
    @Option(help: "Held-out renders to check the accuracy on.") var checkImages = 2000

    func run() throws {
        guard checkImages >= 2 else { throw ValidationError("--check-images must be at least 2") }
        let config = try training.configured(EvaluatorTrainingConfig())
        let out = URL(fileURLWithPath: output)
        let started = Date()
        let progress = ProgressDisplay()
        let model = try EvaluatorTraining.train(config: config, progress: progress.update)
        let seconds = Date().timeIntervalSince(started)
        try ModelFolder.save(model, to: out, metadata: ["command": CommandLine.arguments.joined(separator: " ")])
        let accuracy = try EvaluatorTraining.measureAccuracy(of: model, count: checkImages, progress: progress.update)
        try writeJSON(accuracy, to: out.appendingPathComponent("accuracy.json"))
        note(String(format: "trained in %.0f s (%d steps of batch %d, %d parameters); saved to %@", seconds, config.steps,
                    config.batchSize, model.parameterCount, out.path))
        print(describe(accuracy))
    }
}

struct EvaluatorCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Measure an attribute evaluator's accuracy on renders it was never trained on.")

    @Option(help: "Evaluator folder (default: models/evaluator or $CONTEXTDIFF_EVALUATOR).") var evaluator: String?
    @Option(help: "Renders to check.") var images = 2000
    @Option(help: "Benchmark seed of the renders (must differ from the training seed).")
    var benchmarkSeed: UInt64 = EvaluationSeeds.evaluatorCheck
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let (model, _) = try loadEvaluator(evaluator)
        let accuracy = try EvaluatorTraining.measureAccuracy(of: model, seed: benchmarkSeed, count: images)
        if json { try printJSON(accuracy) } else { print(describe(accuracy)) }
    }
}

// MARK: - contextdiff clip

struct ClipCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clip",
        abstract: "The contrastive image–text model behind the CLIP-style score.",
        subcommands: [ClipTrainCommand.self, ClipCheckCommand.self]
    )
}

func describe(_ c: ContrastiveCheck) -> String {
    var text = String(
        format: "CLIP score on %d held-out renders (benchmark seed %llu): own caption %.2f, a mismatched caption %.2f (own higher for %.1f%%)",
        c.images, c.benchmarkSeed, c.matched, c.mismatched, 100 * c.pairwiseAccuracy)
    if let s = c.swapped, let a = c.swappedAccuracy {
        text += String(format: ", objects swapped %.2f (own higher for %.1f%%)", s, 100 * a)
    }
    return text + String(format: "; 1/τ = %.1f", c.logitScale)
}

struct ClipTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train the contrastive image–text model (CNN image tower, projection of frozen MiniLM sentence vectors, InfoNCE).",
        discussion: """
            Trains on renders of a benchmark seed reserved for it (including held-out combinations), \
            with a learnable temperature; captions an image satisfies count as positives. The score \
            is torchmetrics' CLIPScore: 100 × max(cosine, 0). Writes config.json, model.safetensors \
            and check.json (scores of own vs mismatched captions on renders it never saw).
            """
    )

    @Option(name: .shortAndLong, help: "Output model folder (the default location is models/clip).")
    var output: String = "models/clip"
    @OptionGroup var training: RenderTrainingOptions

    func run() throws {
        let config = try training.configured(ContrastiveTrainingConfig())
        note("loading the MiniLM text encoder…")
        let encoder = try MiniLMTextEncoder()
        let out = URL(fileURLWithPath: output)
        let started = Date()
        let progress = ProgressDisplay()
        let model = try ContrastiveTraining.train(config: config, textEncoder: encoder, progress: progress.update)
        let seconds = Date().timeIntervalSince(started)
        try ModelFolder.save(model, to: out, metadata: ["command": CommandLine.arguments.joined(separator: " ")])
        let check = try ContrastiveTraining.check(ContrastiveScorer(model: model, textEncoder: encoder))
        try writeJSON(check, to: out.appendingPathComponent("check.json"))
        note(String(format: "trained in %.0f s (%d steps of batch %d, %d parameters); saved to %@", seconds, config.steps,
                    config.batchSize, model.parameterCount, out.path))
        print(describe(check))
    }
}

struct ClipCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Score renders with their own, a mismatched and an object-swapped caption.")

    @Option(help: "Contrastive model folder (default: models/clip or $CONTEXTDIFF_CLIP).") var clip: String?
    @Option(help: "Renders to score.") var images = 512
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let (scorer, _) = try loadScorer(clip, textEncoder: MiniLMTextEncoder())
        let check = try ContrastiveTraining.check(scorer, count: images)
        if json { try printJSON(check) } else { print(describe(check)) }
    }
}
