import ArgumentParser
import ContextDiff
import Datasets
import Foundation
import NN
import Torch

/// Everything that defines a training run, saved as `recipe.json` in the run folder.
struct TrainingRecipe: Codable, Equatable {
    var unet = UNetConfig.shapesDefault
    /// The adapter; `nil` trains the r_φ ≡ 0 baseline.
    var adapter: ContextAdapterConfig? = .shapesDefault
    var schedule = NoiseScheduleConfig()
    var training = TrainingConfig.shapesDefault
    var benchmark = SyntheticBenchmarkConfig()
    /// Synthetic training images rendered up front.
    var datasetSize = 20000
    /// An image folder with metadata.jsonl instead of the synthetic benchmark.
    var imageFolder: String?
    var maxTokens = 32

    enum CodingKeys: String, CodingKey {
        case unet, adapter, schedule, training, benchmark, datasetSize = "dataset_size", imageFolder = "image_folder"
        case maxTokens = "max_tokens"
    }
}

extension UNetConfig {
    /// The shipped model's denoiser: 32×32, widths 32/64/64, attention at 8×8, cross-attention at 16 and 8.
    static var shapesDefault: UNetConfig {
        var c = UNetConfig()
        c.sampleSize = 32
        c.baseChannels = 32
        c.channelMultipliers = [1, 2, 2]
        c.layersPerBlock = 1
        c.attentionResolutions = [8]
        c.crossAttentionResolutions = [16, 8]
        c.heads = 4
        return c
    }
}

extension ContextAdapterConfig {
    static var shapesDefault: ContextAdapterConfig {
        var c = ContextAdapterConfig()
        c.sampleSize = 32
        c.patchSize = 4
        c.width = 64
        c.depth = 1
        c.heads = 8
        return c
    }
}

extension TrainingConfig {
    static var shapesDefault: TrainingConfig {
        var c = TrainingConfig()
        c.steps = 2000
        c.batchSize = 32
        c.learningRate = 5e-4
        c.warmupSteps = 100
        c.minLearningRate = 2e-5
        c.emaDecay = 0.995
        c.checkpointEvery = 250
        return c
    }
}

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a ContextDiff (or baseline) text-to-image model; resumes from the run folder's last checkpoint."
    )

    @Option(name: .shortAndLong, help: "Run folder (checkpoints, log.jsonl, loss.svg, samples, model/).")
    var output: String

    @Option(help: "A recipe JSON (see docs/TRAINING.md); flags below override it.")
    var config: String?

    @Flag(help: "Train the plain-diffusion baseline (r_φ ≡ 0, no adapter).")
    var baseline = false

    @Option(help: "Training steps.") var steps: Int?
    @Option(help: "Global batch size.") var batchSize: Int?
    @Option(help: "Peak learning rate.") var learningRate: Double?
    @Option(help: "Loss weighting λ_t: uniform, p2, min-snr, min-snr:G.") var weighting: String?
    @Option(help: "Seed for initialisation, data order and noise.") var seed: UInt64?
    @Option(help: "Checkpoint every N steps.") var checkpointEvery: Int?
    @Option(help: "Synthetic images to render for training.") var datasetSize: Int?
    @Option(help: "Train on an image folder with metadata.jsonl instead of the synthetic benchmark.")
    var imageFolder: String?
    @Option(help: "U-Net base channels.") var baseChannels: Int?
    @Option(help: "Image size (synthetic data and model).") var imageSize: Int?
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Start from scratch even if the run folder has checkpoints.") var noResume = false
    @Flag(help: "Skip the validation sample grid at checkpoints.") var noSamples = false

    func recipe() throws -> TrainingRecipe {
        var r = TrainingRecipe()
        if let config {
            let url = URL(fileURLWithPath: config)
            guard FileManager.default.fileExists(atPath: url.path) else { throw ValidationError("config file not found: \(config)") }
            do {
                r = try JSONDecoder().decode(TrainingRecipe.self, from: Data(contentsOf: url))
            } catch {
                throw ValidationError("cannot read recipe \(config): \(error)")
            }
        }
        if baseline { r.adapter = nil }
        if let steps { r.training.steps = steps }
        if let batchSize { r.training.batchSize = batchSize }
        if let learningRate {
            r.training.learningRate = learningRate
            r.training.minLearningRate = min(r.training.minLearningRate, learningRate)
        }
        if let weighting { r.training.weighting = try LossWeighting(parsing: weighting) }
        if let seed { r.training.seed = seed; r.benchmark.seed = seed }
        if let checkpointEvery { r.training.checkpointEvery = checkpointEvery }
        if let datasetSize { r.datasetSize = datasetSize }
        if let imageFolder { r.imageFolder = imageFolder }
        if let baseChannels { r.unet.baseChannels = baseChannels }
        if let imageSize {
            r.unet.sampleSize = imageSize
            r.adapter?.sampleSize = imageSize
            r.benchmark.imageSize = imageSize
            r.unet.attentionResolutions = [imageSize / 4]
            r.unet.crossAttentionResolutions = [imageSize / 2, imageSize / 4]
        }
        guard r.datasetSize > 0 else { throw ValidationError("--dataset-size must be positive") }
        try r.training.validate()
        try r.unet.validate()
        try r.adapter?.validate()
        return r
    }

    func run() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        Torch.numThreads = threads
        let runDirectory = URL(fileURLWithPath: output)
        var recipe = try recipe()
        let recipeURL = runDirectory.appendingPathComponent("recipe.json")
        let fm = FileManager.default
        if !noResume, fm.fileExists(atPath: recipeURL.path) {
            let saved = try JSONDecoder().decode(TrainingRecipe.self, from: Data(contentsOf: recipeURL))
            if saved != recipe {
                note("note: resuming with the run folder's recipe.json (its settings win over the flags given)")
                recipe = saved
            }
        }
        try fm.createDirectory(at: runDirectory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(recipe).write(to: recipeURL, options: .atomic)

        note("loading the MiniLM text encoder…")
        let textEncoder = try MiniLMTextEncoder()
        let data = try loadData(recipe)
        note("encoding \(Set((0..<data.count).map { data.caption(at: $0) }).count) distinct captions…")
        let captions = try CaptionTable(captions: (0..<data.count).map { data.caption(at: $0) }) { texts in
            let e = try textEncoder.encode(texts)
            let limit = min(recipe.maxTokens, try e.tokenStates.size(1))
            return try TextCondition(
                tokens: e.tokenStates.slice(dim: 1, 0, limit), mask: e.attentionMask.slice(dim: 1, 0, limit), pooled: e.pooled)
        }

        Torch.manualSeed(recipe.training.seed)
        var unetConfig = recipe.unet
        unetConfig.contextDim = textEncoder.width
        unetConfig.pooledDim = textEncoder.width
        let unet = try UNet(unetConfig)
        let adapter = try recipe.adapter.map { cfg -> ContextAdapter in
            var c = cfg
            c.contextDim = textEncoder.width
            return try ContextAdapter(c)
        }
        let model = try ContextDiffModel(
            unet: unet, adapter: adapter, schedule: NoiseSchedule(recipe.schedule),
            textEncoder: TextEncoderSpec(kind: "minilm", maxTokens: recipe.maxTokens))
        model.index.notes["command"] = CommandLine.arguments.joined(separator: " ")
        let trainer = try Trainer(model: model, config: recipe.training, data: data, captions: captions, runDirectory: runDirectory)
        if !noResume, try trainer.resumeFromLatest() {
            note("resumed from step \(trainer.step)")
        }
        note("training \(adapter == nil ? "the baseline (r_φ ≡ 0)" : "ContextDiff"): U-Net \(unet.parameterCount) parameters, adapter \(adapter?.parameterCount ?? 0); \(recipe.training.steps) steps of batch \(recipe.training.batchSize)")
        let bar = ProgressBar(total: recipe.training.steps, label: "train")
        var lastSampledStep = trainer.step
        try trainer.run(resume: false) { p in
            bar.update(p.step, status: String(format: "loss %.4f lr %.1e", p.loss, p.learningRate))
            if !noSamples, p.step % recipe.training.checkpointEvery == 0 || p.step == p.totalSteps, p.step != lastSampledStep {
                lastSampledStep = p.step
                do {
                    try writeValidationGrid(runDirectory: runDirectory, step: p.step, textEncoder: textEncoder)
                } catch {
                    note("\nwarning: validation samples failed: \(error)")
                }
            }
            return true
        }
        try writeLossCurve(runDirectory: runDirectory)
        note("done: model at \(runDirectory.appendingPathComponent("model").path)")
    }

    func loadData(_ recipe: TrainingRecipe) throws -> InMemoryImageSource {
        if let folder = recipe.imageFolder {
            let dataset = try ImageFolderDataset(folder: URL(fileURLWithPath: folder), imageSize: recipe.unet.sampleSize)
            note("loading \(dataset.count) images from \(folder)…")
            var images: [RGBImage] = []
            for i in 0..<dataset.count { images.append(try dataset.image(at: i)) }
            return try InMemoryImageSource(pixels: RGBImage.batch(images), captions: dataset.entries.map(\.text))
        }
        let benchmark = try SyntheticBenchmark(recipe.benchmark)
        let bar = ProgressBar(total: recipe.datasetSize, label: "render")
        var chunks: [Tensor] = []
        var captions: [String] = []
        for start in stride(from: 0, to: recipe.datasetSize, by: 1000) {
            let batch = try benchmark.batch(indices: start..<min(recipe.datasetSize, start + 1000), split: .train)
            chunks.append(batch.images)
            captions += batch.captions
            bar.update(captions.count)
        }
        return try InMemoryImageSource(pixels: Tensor.cat(chunks), captions: captions)
    }

    /// Eight fixed prompts (single objects, relations, held-out combinations) from the EMA model.
    func writeValidationGrid(runDirectory: URL, step: Int, textEncoder: MiniLMTextEncoder) throws {
        let model = try ContextDiffModel.load(from: runDirectory.appendingPathComponent("model"))
        let pipeline = try TextToImagePipeline(model: model, textEncoder: textEncoder)
        var options = GenerationOptions()
        options.steps = 20
        options.seed = 1
        let images = try pipeline.generate(prompts: validationPrompts, options: options)
        let grid = try RGBImage.grid(RGBImage.images(fromBatch: images), columns: 4)
        let dir = runDirectory.appendingPathComponent("samples")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try grid.writePNG(to: dir.appendingPathComponent(String(format: "step-%07d.png", step)))
    }

    func writeLossCurve(runDirectory: URL) throws {
        let log = try String(contentsOf: runDirectory.appendingPathComponent("log.jsonl"), encoding: .utf8)
        var points: [(x: Double, y: Double)] = []
        for line in log.split(separator: "\n") {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Double],
                  let s = obj["step"], let l = obj["loss"] else { continue }
            points.append((s, l))
        }
        // A running mean over 50 steps makes the trend readable.
        var smoothed: [(x: Double, y: Double)] = []
        var window: [Double] = []
        for p in points {
            window.append(p.y)
            if window.count > 50 { window.removeFirst() }
            smoothed.append((p.x, window.reduce(0, +) / Double(window.count)))
        }
        let chart = SVGLineChart(
            title: "Training loss", xLabel: "step", yLabel: "loss (mean of 50 steps)",
            series: [.init(name: "loss", points: smoothed, color: "#1f77b4")], logY: true)
        try chart.write(to: runDirectory.appendingPathComponent("loss.svg"))
    }
}

/// The prompts of the validation grids and the docs' sample grid.
let validationPrompts = [
    "a red circle", "a small blue triangle", "a green square", "a large yellow circle",
    "a red circle to the left of a blue square", "a green triangle above a purple circle",
    "a blue square to the right of an orange circle", "a yellow triangle below a red square",
]
