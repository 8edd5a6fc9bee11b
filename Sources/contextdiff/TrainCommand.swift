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

    init() {}

    /// A recipe may name only what it changes: a missing section or key keeps its default
    /// (`"adapter": null` asks for the baseline; a missing `adapter` keeps the default adapter).
    init(from decoder: Decoder) throws {
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
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(unet, forKey: .unet)
        try c.encode(adapter, forKey: .adapter)  // an explicit null for the baseline
        try c.encode(schedule, forKey: .schedule)
        try c.encode(training, forKey: .training)
        try c.encode(benchmark, forKey: .benchmark)
        try c.encode(datasetSize, forKey: .datasetSize)
        try c.encodeIfPresent(imageFolder, forKey: .imageFolder)
        try c.encode(maxTokens, forKey: .maxTokens)
    }
}

extension TrainingConfig {
    /// The shipped model's recipe: ``TrainingConfig``'s defaults.
    static var shapesDefault: TrainingConfig { TrainingConfig() }
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
    @Option(help: "Checkpoints kept on disk, oldest deleted first (keep them all for a convergence curve).")
    var keepCheckpoints: Int?
    @Option(help: "Synthetic images to render for training.") var datasetSize: Int?
    @Option(help: "Train on an image folder with metadata.jsonl instead of the synthetic benchmark.")
    var imageFolder: String?
    @Option(help: "U-Net base channels.") var baseChannels: Int?
    @Option(help: "Image size (synthetic data and model).") var imageSize: Int?
    @Flag(help: "Give the U-Net's attention layers a learned position embedding (recipe: unet.positional_embedding).")
    var positionalEmbedding = false
    @Option(help: ArgumentHelp(
        "Layers of a trainable transformer over the text-token states (recipe: unet.text_refiner); 0 turns it off.",
        discussion: "Width 128, 4 heads; its output projections start at zero, so a model fine-tuned with a new refiner starts out computing what its source did."))
    var textRefinerLayers: Int?
    @Flag(help: ArgumentHelp(
        "Add a text-side layout prior (recipe: unet.layout_prior): boxes predicted from the caption, painted into the U-Net's input.",
        discussion: "Synthetic benchmark only: it learns from the dataset's object boxes (docs/TRAINING.md). Its canvas convolution starts at zero, so a model fine-tuned with a new prior starts out computing what its source did."))
    var layoutPrior = false
    @Option(help: ArgumentHelp(
        "Steps of fitting a new layout prior's box predictor alone before the first training step (recipe: training.layout_fit_steps; default 1500).",
        discussion: "Batches of 256 captions with their boxes at learning rate 1e-3 (training.layout_fit_learning_rate); 0 leaves the predictor to the joint steps."))
    var layoutFitSteps: Int?
    @Option(help: ArgumentHelp(
        "Components of a Gaussian mixture over each object's box (recipe: unet.layout_prior.mixture_components): layouts sampled per seed.",
        discussion: "Needs a layout prior. Learnt by likelihood during the prior's fit; with --init-from a model whose prior has no mixture, --steps 0 fits the prior alone (the U-Net is unchanged)."))
    var layoutMixture: Int?
    @Flag(help: ArgumentHelp(
        "Fit only the layout prior's mixture head (recipe: training.layout_fit_mixture_only); the typical boxes and gates stay as they were."))
    var layoutFitMixtureOnly = false
    @Option(help: ArgumentHelp(
        "Weight of the token-grounding loss on the cross-attention (recipe: training.grounding_weight); 0 turns it off.",
        discussion: "Synthetic benchmark only: each object's caption words are pulled towards its box (TokenCompose's token loss; docs/TRAINING.md)."))
    var groundingWeight: Double?
    @Option(help: ArgumentHelp(
        "Draw training timesteps from LO..<HI only, e.g. 400..<1000 (recipe: training.timestep_range).",
        discussion: "For fine-tuning on the noisy end of the process, where a sample's layout is decided."))
    var timestepRange: String?
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Start from scratch even if the run folder has checkpoints.") var noResume = false
    @Option(help: ArgumentHelp(
        "Start from a model folder's weights instead of a random initialisation (fine-tuning).",
        discussion: "The U-Net's and, when both have one, the adapter's. Every tensor must match the recipe's networks, except position-embedding tables, a text refiner and a layout prior the source lacks, which keep their initialisation (the identity). Ignored when resuming from a checkpoint."))
    var initFrom: String?
    @Flag(help: "Skip the validation sample grid at checkpoints.") var noSamples = false
    @OptionGroup(title: "Data-parallel training") var distributed: DistributedOptions

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
        if let keepCheckpoints { r.training.keepCheckpoints = keepCheckpoints }
        if let datasetSize { r.datasetSize = datasetSize }
        if let imageFolder { r.imageFolder = imageFolder }
        if let baseChannels { r.unet.baseChannels = baseChannels }
        if positionalEmbedding { r.unet.positionalEmbedding = true }
        if let textRefinerLayers {
            guard textRefinerLayers >= 0 else { throw ValidationError("--text-refiner-layers must be 0 or more") }
            if textRefinerLayers == 0 {
                r.unet.textRefiner = nil
            } else {
                var refiner = r.unet.textRefiner ?? TextRefinerConfig(maxTokens: r.maxTokens)
                refiner.layers = textRefinerLayers
                r.unet.textRefiner = refiner
            }
        }
        if layoutPrior, r.unet.layoutPrior == nil { r.unet.layoutPrior = LayoutPriorConfig(maxTokens: r.maxTokens) }
        if let layoutFitSteps { r.training.layoutFitSteps = layoutFitSteps }
        if let layoutMixture {
            guard r.unet.layoutPrior != nil else { throw ValidationError("--layout-mixture needs a layout prior (--layout-prior)") }
            guard (1...64).contains(layoutMixture) else { throw ValidationError("--layout-mixture must be in 1...64, got \(layoutMixture)") }
            r.unet.layoutPrior?.mixtureComponents = layoutMixture
        }
        if layoutFitMixtureOnly {
            guard r.unet.layoutPrior?.mixtureComponents != nil else {
                throw ValidationError("--layout-fit-mixture-only needs a prior with a mixture (--layout-mixture K)")
            }
            r.training.layoutFitMixtureOnly = true
        }
        if let groundingWeight { r.training.groundingWeight = groundingWeight }
        if let timestepRange {
            let parts = timestepRange.components(separatedBy: "..<").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard parts.count == 2 else { throw ValidationError("--timestep-range must look like 400..<1000, got '\(timestepRange)'") }
            r.training.timestepRange = parts
        }
        if let range = r.training.timestepRange, range.count == 2, range[1] > r.schedule.trainTimesteps {
            throw ValidationError("--timestep-range \(range[0])..<\(range[1]) goes past the schedule's \(r.schedule.trainTimesteps) timesteps")
        }
        if r.training.groundingWeight > 0, r.imageFolder != nil {
            throw ValidationError("the grounding loss needs the synthetic benchmark's object boxes; an image folder has none")
        }
        if r.unet.layoutPrior != nil, r.imageFolder != nil {
            throw ValidationError("a layout prior learns from the synthetic benchmark's object boxes; an image folder has none")
        }
        if let prior = r.unet.layoutPrior, prior.maxTokens < r.maxTokens {
            throw ValidationError("unet.layout_prior.max_tokens \(prior.maxTokens) is below the recipe's max_tokens \(r.maxTokens)")
        }
        if let refiner = r.unet.textRefiner, refiner.maxTokens < r.maxTokens {
            throw ValidationError("unet.text_refiner.max_tokens \(refiner.maxTokens) is below the recipe's max_tokens \(r.maxTokens)")
        }
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
        // Checked again when the weights are read; here so that a typo fails before data preparation.
        if let initFrom, !FileManager.default.fileExists(atPath: URL(fileURLWithPath: initFrom).appendingPathComponent("unet").path) {
            throw ValidationError("--init-from \(initFrom): not a model folder (no unet/ inside)")
        }
        let settings = try distributed.resolve()
        if let text = ProcessInfo.processInfo.environment[LaunchCommand.launcherVariable], let launcher = Int32(text),
           !Torch.exitWithParent(launcher) {
            throw ValidationError("the launcher (pid \(launcher)) exited before this rank started")
        }
        Torch.numThreads = threads
        Torch.keepFreedTensorMemory()
        var recipe = try recipe()
        guard let settings else { return try train(recipe: recipe, resume: !noResume, group: nil) }
        guard recipe.training.batchSize % settings.worldSize == 0 else {
            throw ValidationError("the global batch \(recipe.training.batchSize) must split evenly over \(settings.worldSize) ranks")
        }
        // Join first, so that a bad address fails before the minutes of data preparation.
        let group = try settings.join()
        do {
            if group.rank == 0 { recipe = try prepareRunFolder(recipe) }
            let agreed = try settings.agree(on: RunAgreement(recipe: recipe, resume: !noResume), in: group)
            try train(recipe: agreed.recipe, resume: agreed.resume, group: group)
        } catch let TorchError.distributed(message) {
            throw DistributedTrainingError.lostPeers(rank: settings.rank, worldSize: settings.worldSize, timeout: settings.timeout, message)
        }
    }

    /// Copies a model folder's weights into freshly built networks (`--init-from`). Position
    /// tables, a text refiner and a layout prior the source lacks keep their initialisation
    /// (zero tables, a refiner with zero output projections, a prior with a zero canvas
    /// convolution), so the network starts out computing exactly what the source did; anything
    /// else that does not match is an error naming it.
    func initialize(unet: UNet, adapter: ContextAdapter?, from folder: URL) throws {
        guard FileManager.default.fileExists(atPath: folder.appendingPathComponent("unet").path) else {
            throw ValidationError("--init-from \(folder.path): not a model folder (no unet/ inside)")
        }
        func weights(_ part: String) throws -> [String: Tensor]? {
            let url = folder.appendingPathComponent(part).appendingPathComponent(ModelFolder.weightsName)
            guard FileManager.default.fileExists(atPath: url.path) else { return nil }
            do { return try loadSafeTensors(url) } catch {
                throw CheckpointError.invalidWeights(path: url.path, reason: "\(error)")
            }
        }
        guard var state = try weights("unet") else {
            throw CheckpointError.missingFile(folder.appendingPathComponent("unet/\(ModelFolder.weightsName)").path)
        }
        let sourceHasRefiner = state.keys.contains { $0.hasPrefix("text_refiner.") }
        let sourceHasPrior = state.keys.contains { $0.hasPrefix("layout_prior.") }
        let sourceHasMixture = state.keys.contains { $0.hasPrefix("layout_prior.mixture.") }
        for (key, value) in unet.namedParameters() where state[key] == nil {
            if key.hasSuffix(".pos_embed") && !key.hasPrefix("text_refiner.") && !key.hasPrefix("layout_prior.") { state[key] = value }
            if key.hasPrefix("text_refiner.") && !sourceHasRefiner { state[key] = value }
            if key.hasPrefix("layout_prior.") && !sourceHasPrior { state[key] = value }
            if key.hasPrefix("layout_prior.mixture.") && !sourceHasMixture { state[key] = value }
        }
        try unet.load(state)
        if let adapter, let adapterState = try weights("adapter") { try adapter.load(adapterState) }
    }

    /// Uses the run folder's saved recipe when resuming, and saves the recipe. Rank 0 only.
    func prepareRunFolder(_ given: TrainingRecipe) throws -> TrainingRecipe {
        var recipe = given
        let runDirectory = URL(fileURLWithPath: output)
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
        return recipe
    }

    /// Trains in this process, alone or as one rank of `group` (only rank 0 writes files and
    /// draws progress; the other ranks stay quiet unless something fails).
    func train(recipe given: TrainingRecipe, resume: Bool, group: ProcessGroup?) throws {
        let runDirectory = URL(fileURLWithPath: output)
        let isRankZero = (group?.rank ?? 0) == 0
        let recipe = group == nil ? try prepareRunFolder(given) : given
        func note(_ text: String) { if isRankZero { contextdiff.note(text) } }

        note("loading the MiniLM text encoder…")
        let textEncoder = try MiniLMTextEncoder()
        let (data, annotations) = try loadData(recipe, showProgress: isRankZero)
        note("encoding \(Set((0..<data.count).map { data.caption(at: $0) }).count) distinct captions…")
        let captions = try CaptionTable(captions: (0..<data.count).map { data.caption(at: $0) }) { texts in
            let e = try textEncoder.encode(texts)
            let limit = min(recipe.maxTokens, try e.tokenStates.size(1))
            return try Condition(
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
        if let initFrom { try initialize(unet: unet, adapter: adapter, from: URL(fileURLWithPath: initFrom)) }
        let model = try ContextDiffModel(
            unet: unet, adapter: adapter, schedule: NoiseSchedule(recipe.schedule),
            textEncoder: TextEncoderSpec(kind: "minilm", maxTokens: recipe.maxTokens))
        // Recipes and portable commands, never this machine's paths.
        model.index.notes["command"] = Provenance.portableCommand(CommandLine.arguments)
        var portableRecipe = recipe
        portableRecipe.imageFolder = recipe.imageFolder.map { URL(fileURLWithPath: $0).lastPathComponent }
        model.index.notes["recipe"] = String(decoding: try JSONEncoder.sorted.encode(portableRecipe), as: UTF8.self)
        if let initFrom,
           let source = try? JSONDecoder().decode(ModelIndex.self, from: Data(contentsOf: URL(fileURLWithPath: initFrom).appendingPathComponent("model_index.json"))),
           let sourceCommand = source.notes["command"] {
            model.index.notes["init_from_command"] = sourceCommand
        }
        let groundings = recipe.training.groundingWeight > 0 || recipe.unet.layoutPrior != nil
            ? try Self.groundings(annotations, tokenizer: textEncoder.tokenizer) : nil
        if let groundings {
            let grounded = groundings.filter { !$0.isEmpty }.count
            if recipe.training.groundingWeight > 0 {
                note("grounding loss (weight \(recipe.training.groundingWeight)) on \(grounded) of \(groundings.count) images")
            }
            if recipe.unet.layoutPrior != nil {
                note("layout prior (loss weight \(recipe.training.layoutWeight)) learns from \(grounded) of \(groundings.count) images")
            }
        }
        let trainer = try Trainer(
            model: model, config: recipe.training, data: data, captions: captions, runDirectory: runDirectory, processGroup: group,
            groundings: groundings)
        if resume, try trainer.resumeFromLatest() {
            note("resumed from step \(trainer.step)")
        }
        if trainer.step == 0, unet.layoutPrior != nil, recipe.training.layoutFitSteps > 0 {
            let display = isRankZero ? ProgressDisplay() : nil
            let loss = try trainer.fitLayoutPrior { display?.update($0) ?? true }
            note(String(format: "layout prior fitted: loss %.4f after %d steps", loss ?? .nan, recipe.training.layoutFitSteps))
            if recipe.training.steps == 0 {
                // Fit only: the U-Net and adapter are the source's; save the model with the fitted prior.
                try trainer.saveCheckpoint()
                note("done: model at \(runDirectory.appendingPathComponent("model").path)")
                return
            }
        }
        let ranks = group.map { " on \($0.worldSize) ranks" } ?? ""
        note("training \(adapter == nil ? "the baseline (r_φ ≡ 0)" : "ContextDiff"): U-Net \(unet.parameterCount) parameters, adapter \(adapter?.parameterCount ?? 0); \(recipe.training.steps) steps of batch \(recipe.training.batchSize)\(ranks)")
        let bar = isRankZero ? ProgressBar(total: recipe.training.steps, label: "train") : nil
        var lastSampledStep = trainer.step
        try trainer.run(resume: false) { p in
            let step = p.completed
            bar?.update(step, status: String(format: "loss %.4f lr %.1e", p.metric("loss") ?? Double.nan, p.metric("lr") ?? Double.nan))
            if isRankZero, !noSamples, step % recipe.training.checkpointEvery == 0 || step == p.total, step != lastSampledStep {
                lastSampledStep = step
                do {
                    try writeValidationGrid(runDirectory: runDirectory, step: step, textEncoder: textEncoder)
                } catch {
                    note("\nwarning: validation samples failed: \(error)")
                }
            }
            return true
        }
        if let group {
            // A broadcast-free check that data parallelism kept every rank's weights the same.
            let spread = try trainer.parameterSpreadAcrossRanks()
            if spread == 0 {
                note("ranks in sync: weights and EMA identical on all \(group.worldSize) ranks")
            } else {
                note("warning: weights differ between ranks by up to \(spread) (different CPUs or libraries round differently)")
            }
        }
        guard isRankZero else { return }
        try writeLossCurve(runDirectory: runDirectory)
        note("done: model at \(runDirectory.appendingPathComponent("model").path)")
    }

    /// Each synthetic image's objects for the grounding loss: the token positions of their words
    /// in the caption (the order the caption names them, which is the scene's) and their boxes.
    /// An image whose words cannot all be found (or with two identical objects) gets none.
    static func groundings(_ annotations: [SceneAnnotation], tokenizer: any TextTokenizer) throws -> [[GroundedObject]] {
        var pieces: [String: [Int]] = [:]
        func piecesOf(_ word: String) -> [Int] {
            if let p = pieces[word] { return p }
            let p = Array(tokenizer.encode(word).dropFirst().dropLast())
            pieces[word] = p
            return p
        }
        return annotations.map { a in
            let objects = a.scene.objects
            guard Set(objects.map { "\($0.color)\($0.shape)\($0.size)" }).count == objects.count else { return [] }
            let words = objects.map { o in
                (a.style.mentionsSize ? [o.size.rawValue] : []) + [o.color.rawValue, o.shape.rawValue]
            }
            guard let positions = TokenGrounding.tokenPositions(ids: tokenizer.encode(a.caption), objects: words, pieces: piecesOf)
            else { return [] }
            let side = Double(a.scene.imageSize)
            return zip(objects, positions).map { o, tokens in
                GroundedObject(tokens: tokens, minX: o.bbox.minX / side, minY: o.bbox.minY / side, maxX: o.bbox.maxX / side, maxY: o.bbox.maxY / side)
            }
        }
    }

    func loadData(_ recipe: TrainingRecipe, showProgress: Bool) throws -> (InMemoryImageSource, [SceneAnnotation]) {
        if let folder = recipe.imageFolder {
            let dataset = try ImageFolderDataset(folder: URL(fileURLWithPath: folder), imageSize: recipe.unet.sampleSize)
            if showProgress { note("loading \(dataset.count) images from \(folder)…") }
            var images: [RGBImage] = []
            for i in 0..<dataset.count { images.append(try dataset.image(at: i)) }
            return (try InMemoryImageSource(pixels: RGBImage.batch(images), captions: dataset.entries.map(\.text)), [])
        }
        let benchmark = try SyntheticBenchmark(recipe.benchmark)
        let bar = showProgress ? ProgressBar(total: recipe.datasetSize, label: "render") : nil
        var chunks: [Tensor] = []
        var captions: [String] = []
        var annotations: [SceneAnnotation] = []
        for start in stride(from: 0, to: recipe.datasetSize, by: 1000) {
            let batch = try benchmark.batch(indices: start..<min(recipe.datasetSize, start + 1000), split: .train)
            chunks.append(batch.images)
            captions += batch.captions
            annotations += batch.annotations
            bar?.update(captions.count)
        }
        return (try InMemoryImageSource(pixels: Tensor.cat(chunks), captions: captions), annotations)
    }

    /// Eight fixed prompts (single objects, relations, held-out combinations) from the EMA model.
    func writeValidationGrid(runDirectory: URL, step: Int, textEncoder: MiniLMTextEncoder) throws {
        let model = try ContextDiffModel.load(from: runDirectory.appendingPathComponent("model"))
        let pipeline = try TextToImagePipeline(model: model, textEncoder: textEncoder)
        var options = GenerationOptions()
        options.steps = 20
        options.seed = 1
        let images = try pipeline.generate(prompts: validationPrompts, options: options)
        let grid = try RGBImage.grid(RGBImage.images(fromBatch: images.images), columns: 4)
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

// MARK: - Data-parallel settings

/// Where a rank finds its process group: torchrun's environment variables (`MASTER_ADDR`,
/// `MASTER_PORT`, `RANK`, `WORLD_SIZE`) or these flags, which win over them. With neither a
/// rank nor a world size, or a world size of 1, training runs in one process.
struct DistributedOptions: ParsableArguments {
    @Option(help: "Host or IP of rank 0, which serves the rendezvous store (env MASTER_ADDR).")
    var masterAddr: String?
    @Option(help: "TCP port of rank 0's store (env MASTER_PORT).")
    var masterPort: Int?
    @Option(help: "This process's rank in 0..<world size (env RANK).")
    var rank: Int?
    @Option(help: "Number of ranks in all (env WORLD_SIZE); `contextdiff launch` sets these for local ranks.")
    var worldSize: Int?
    @Option(help: "Seconds the rendezvous or any collective waits for the other ranks before failing.")
    var distTimeout: Double = 60

    func validate() throws {
        guard distTimeout > 0, distTimeout.isFinite else { throw ValidationError("--dist-timeout must be a positive number of seconds") }
    }

    /// A resolved rank of a process group.
    struct Settings {
        var host: String
        var port: Int
        var rank: Int
        var worldSize: Int
        var timeout: Double
    }

    /// The settings from flags and `environment`, or nil for a single process.
    func resolve(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Settings? {
        func integer(_ flag: Int?, _ variable: String) throws -> Int? {
            if let flag { return flag }
            guard let text = environment[variable], !text.isEmpty else { return nil }
            guard let value = Int(text.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("\(variable)=\(text) is not an integer")
            }
            return value
        }
        let rank = try integer(rank, "RANK")
        let worldSize = try integer(worldSize, "WORLD_SIZE")
        let port = try integer(masterPort, "MASTER_PORT")
        let host = masterAddr ?? environment["MASTER_ADDR"].flatMap { $0.isEmpty ? nil : $0 }
        if rank == nil, worldSize == nil {
            guard masterAddr == nil, masterPort == nil else {
                throw ValidationError("--master-addr and --master-port need --rank and --world-size (or RANK and WORLD_SIZE)")
            }
            return nil
        }
        var missing: [String] = []
        if rank == nil { missing.append("--rank or RANK") }
        if worldSize == nil { missing.append("--world-size or WORLD_SIZE") }
        if let worldSize, worldSize > 1 {
            if host == nil { missing.append("--master-addr or MASTER_ADDR") }
            if port == nil { missing.append("--master-port or MASTER_PORT") }
        }
        guard missing.isEmpty, let rank, let worldSize else {
            throw ValidationError("data-parallel training needs a rank, a world size, and rank 0's address and port; missing \(missing.joined(separator: ", "))")
        }
        guard worldSize >= 1 else { throw ValidationError("the world size must be at least 1, got \(worldSize)") }
        guard (0..<worldSize).contains(rank) else { throw ValidationError("rank \(rank) is outside 0..<\(worldSize)") }
        if worldSize == 1 { return nil }
        guard let host, let port else { return nil }
        guard (1...65535).contains(port) else { throw ValidationError("master port \(port) is outside 1...65535") }
        return Settings(host: host, port: port, rank: rank, worldSize: worldSize, timeout: distTimeout)
    }
}

extension DistributedOptions.Settings {
    /// Connects to rank 0's store (rank 0 serves it) and joins the Gloo group.
    func join() throws -> ProcessGroup {
        do {
            let store = try TCPStore(host: host, port: port, worldSize: worldSize, isMaster: rank == 0, timeoutSeconds: timeout)
            let group = try ProcessGroup(store: store, rank: rank, worldSize: worldSize, timeoutSeconds: timeout)
            let loopback = ["127.", "::1", "localhost"]
            if loopback.contains(where: group.listenAddress.hasPrefix), !loopback.contains(where: host.hasPrefix) {
                note("warning: rank \(rank) listens on the loopback address \(group.listenAddress), which ranks on other machines cannot reach; use rank 0's IP address as MASTER_ADDR or set GLOO_SOCKET_IFNAME")
            }
            if rank == 0 {
                note("process group of \(worldSize) ranks: store on port \(port), rank 0 listens on \(group.listenAddress)")
            }
            return group
        } catch let TorchError.distributed(message) {
            throw DistributedTrainingError.cannotJoin(rank: rank, worldSize: worldSize, host: host, port: port, timeout: timeout, message)
        }
    }

    /// Rank 0's recipe (it may come from the run folder) and resume choice, on every rank.
    func agree(on run: RunAgreement, in group: ProcessGroup) throws -> RunAgreement {
        let mine = Array(try JSONEncoder().encode(run))
        let length = try Tensor([Int64(mine.count)], shape: [1])
        try group.broadcast([length], root: 0)
        let count = Int(try length.scalars(as: Int64.self)[0])
        let bytes = try Tensor(group.rank == 0 ? mine : [UInt8](repeating: 0, count: count), shape: [count])
        try group.broadcast([bytes], root: 0)
        let agreed = try JSONDecoder().decode(RunAgreement.self, from: Data(bytes.scalars(as: UInt8.self)))
        guard agreed.recipe.training.batchSize % worldSize == 0 else {
            throw ValidationError("the run folder's global batch \(agreed.recipe.training.batchSize) must split evenly over \(worldSize) ranks")
        }
        return agreed
    }
}

/// What every rank takes from rank 0 before training.
struct RunAgreement: Codable {
    var recipe: TrainingRecipe
    var resume: Bool
}

/// A rank could not join its group, or lost the other ranks while training.
enum DistributedTrainingError: Error, CustomStringConvertible {
    case cannotJoin(rank: Int, worldSize: Int, host: String, port: Int, timeout: Double, String)
    case lostPeers(rank: Int, worldSize: Int, timeout: Double, String)

    var description: String {
        switch self {
        case let .cannotJoin(rank, worldSize, host, port, timeout, message):
            "rank \(rank) of \(worldSize) could not join the process group at \(host):\(port): \(message)"
                + (message.lowercased().contains("timed out") || message.lowercased().contains("timeout")
                    ? " (waited --dist-timeout \(seconds(timeout)): is rank 0 running with this address and port, did all \(worldSize) ranks start, and does the firewall let them connect?)"
                    : "")
        case let .lostPeers(rank, worldSize, timeout, message):
            "rank \(rank) of \(worldSize) lost contact with the other ranks (one exited, or none answered within --dist-timeout \(seconds(timeout))): \(message)"
        }
    }
}

private func seconds(_ value: Double) -> String {
    value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
}

extension JSONEncoder {
    /// Compact JSON with sorted keys (for notes that are compared or read by eye).
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}
