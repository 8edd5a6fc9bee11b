import ArgumentParser
import ContextDiff
import Foundation
import TextEncoders
import Torch
import Workflows

struct TrainSuperResolutionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-sr",
        abstract: "Train the cascade's super-resolution stage (Efficient U-Net, noise conditioning augmentation); resumes from the run folder's last checkpoint."
    )

    @Option(name: .shortAndLong, help: "Run folder (checkpoints, log.jsonl, samples, model/).")
    var output: String
    @Option(help: "A super-resolution recipe JSON (docs/TRAINING.md); flags below override it.")
    var config: String?
    @Option(help: "Training steps.") var steps: Int?
    @Option(help: "Batch size.") var batchSize: Int?
    @Option(help: "Peak learning rate.") var learningRate: Double?
    @Option(help: "Side of the high-resolution training crops; 0 trains on whole images.") var cropSize: Int?
    @Option(help: "Output side (a multiple of the base model's 32).") var outputSize: Int?
    @Option(help: "Training augmentation levels are drawn from 0..<N.") var maxNoiseLevel: Int?
    @Option(help: "The augmentation level the stage samples at by default.") var samplingNoiseLevel: Int?
    @Option(help: "Seed for initialisation, data order and noise.") var seed: UInt64?
    @Option(help: "Checkpoint every N steps.") var checkpointEvery: Int?
    @Option(help: "Distinct training scenes.") var datasetSize: Int?
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Start from scratch even if the run folder has checkpoints.") var noResume = false
    @Flag(help: "Skip the validation grid at checkpoints.") var noSamples = false
    @Option(help: ArgumentHelp(
        "Start from a super-resolution stage's weights (fine-tuning, e.g. on whole images after crops); ignored when resuming.",
        discussion: "Its network must be the recipe's."))
    var initFrom: String?

    func recipe() throws -> SuperResolutionRecipe {
        var r = SuperResolutionRecipe()
        if let config {
            let url = URL(fileURLWithPath: config)
            guard FileManager.default.fileExists(atPath: url.path) else { throw ValidationError("config file not found: \(config)") }
            do {
                r = try JSONDecoder().decode(SuperResolutionRecipe.self, from: Data(contentsOf: url))
            } catch {
                throw ValidationError("cannot read recipe \(config): \(error)")
            }
        }
        if let steps { r.training.training.steps = steps }
        if let batchSize { r.training.training.batchSize = batchSize }
        if let learningRate {
            r.training.training.learningRate = learningRate
            r.training.training.minLearningRate = min(r.training.training.minLearningRate, learningRate)
        }
        if let cropSize { r.training.cropSize = cropSize == 0 ? nil : cropSize }
        if let outputSize { r.unet.sampleSize = outputSize }
        if let maxNoiseLevel { r.training.maxNoiseLevel = maxNoiseLevel }
        if let samplingNoiseLevel { r.samplingNoiseLevel = samplingNoiseLevel }
        if let seed { r.training.training.seed = seed; r.benchmark.seed = seed }
        if let checkpointEvery { r.training.training.checkpointEvery = checkpointEvery }
        if let datasetSize { r.datasetSize = datasetSize }
        try r.validate()
        return r
    }

    func run() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        useThreads(threads)
        MemorySettings.applyForTraining()
        let folder = RunFolder(URL(fileURLWithPath: output))
        let (recipe, replaced) = try SuperResolutionSetup.prepare(folder: folder, given: try recipe(), resume: !noResume)
        if replaced { note("note: resuming with the run folder's recipe.json (its settings win over the flags given)") }
        note("loading the MiniLM text encoder…")
        let textEncoder = try MiniLMTextEncoder()
        var bar: ProgressBar?
        var midBar = false
        try SuperResolutionSetup(recipe: recipe, folder: folder).train(
            textEncoder: textEncoder, command: CommandLine.arguments, resume: !noResume,
            initFrom: initFrom.map { URL(fileURLWithPath: $0) }, writeSamples: !noSamples
        ) { p in
            if bar == nil { bar = ProgressBar(total: p.total, label: "train") }
            bar?.update(p.completed, status: String(format: "loss %.4f lr %.1e", p.metric("loss") ?? Double.nan, p.metric("lr") ?? Double.nan))
            midBar = p.completed < p.total
            return true
        } notes: { text in
            note(midBar ? "\n" + text : text)
        }
    }
}
