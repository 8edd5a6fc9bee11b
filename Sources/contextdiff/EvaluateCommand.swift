import ArgumentParser
import ContextDiff
import Datasets
import Foundation
import Torch


/// The colour-binding and position metric of the benchmark (GenEval-style, measured on pixels):
/// single objects — the dominant non-background colour is the prompt's; two objects with a
/// relation — the first object's colour dominates the named half and the second's the other.
struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Measure colour and position alignment of a model on benchmark prompts it was not trained on."
    )

    @Option(help: "Model folder (default: the shipped model).") var model: String?
    @Option(help: "Prompt split: validation (seen combinations, new samples) or heldout (unseen combinations).")
    var split: Split = .validation
    @Option(help: "Prompts per kind (single object; two objects left/right; two objects above/below).")
    var count = 64
    @Option(help: "Sampler: ddim or ddpm.") var sampler: SamplerKind = .ddim
    @Option(help: "Denoising steps.") var steps = 50
    @Option(help: "Guidance weight.") var guidance = 3.0
    @Option(help: "Seed of the sampling noise (training used others).") var seed: UInt64 = 1234
    @Option(help: "Images generated per batch.") var batch = 16
    @Flag(help: "Sample without the context adapter (as if r_φ ≡ 0).") var noContext = false
    @Option(help: "Write a grid of the samples to this PNG.") var grid: String?
    @Flag(help: "Print the result as JSON.") var json = false
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        guard count > 0 else { throw ValidationError("--count must be positive") }
        guard batch > 0 else { throw ValidationError("--batch must be positive") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
    }

    struct KindResult: Codable {
        var kind: String
        var prompts: Int
        var correct: Int
        var accuracy: Double
    }

    struct Report: Codable {
        var model: String
        var split: String
        var sampler: String
        var steps: Int
        var guidance: Double
        var seed: UInt64
        var context: Bool
        var results: [KindResult]
        var twoObjectAccuracy: Double
        var seconds: Double
    }

    func run() throws {
        Torch.numThreads = threads
        guard let modelURL = model.map({ URL(fileURLWithPath: $0) }) ?? defaultModelDirectory() else {
            throw ValidationError("no model given and no shipped model found; pass --model DIR")
        }
        let loaded = try ContextDiffModel.load(from: modelURL)
        let pipeline = try TextToImagePipeline(model: loaded, textEncoder: MiniLMTextEncoder())
        var benchmarkConfig = SyntheticBenchmarkConfig()
        benchmarkConfig.imageSize = loaded.unet.config.sampleSize
        let benchmark = try SyntheticBenchmark(benchmarkConfig)
        let checker = ColorPositionChecker()
        var options = GenerationOptions()
        options.sampler = sampler
        options.steps = steps
        options.guidance = guidance
        options.useContext = !noContext
        try options.validate(trainTimesteps: loaded.schedule.config.trainTimesteps)

        let kinds: [PromptKind] = [.singleObject, .horizontalPair, .verticalPair]
        let prompts = kinds.flatMap { benchmark.prompts(split: split, count: count, kind: $0) }
        let bar = ProgressBar(total: prompts.count, label: "evaluate")
        var images: [RGBImage] = []
        let started = Date()
        for start in stride(from: 0, to: prompts.count, by: batch) {
            let chunk = Array(prompts[start..<min(prompts.count, start + batch)])
            options.seed = seed &+ UInt64(start)
            let out = try pipeline.generate(prompts: chunk.map(\.text), options: options)
            images += try RGBImage.images(fromBatch: out)
            bar.update(images.count)
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
            model: modelURL.path, split: split.rawValue, sampler: sampler.rawValue, steps: steps, guidance: guidance,
            seed: seed, context: !noContext && loaded.adapter != nil, results: results,
            twoObjectAccuracy: Double(two.map(\.correct).reduce(0, +)) / Double(max(1, two.map(\.prompts).reduce(0, +))),
            seconds: Date().timeIntervalSince(started))
        if let grid {
            try RGBImage.grid(images, columns: 16).writePNG(to: URL(fileURLWithPath: grid))
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            for r in results {
                print(r.kind.padding(toLength: 16, withPad: " ", startingAt: 0)
                      + String(format: " %3d/%3d  %.1f%%", r.correct, r.prompts, 100 * r.accuracy))
            }
            print(String(format: "two objects       %.1f%%", 100 * report.twoObjectAccuracy))
        }
    }
}
