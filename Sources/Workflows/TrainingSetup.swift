import ContextDiff
import Datasets
import Foundation
import NN
import Torch

/// Errors of the workflows (what the commands do, as library calls).
public enum WorkflowError: Error, CustomStringConvertible, Equatable {
    /// A folder given as a model (warm start, evaluation) is not one.
    case notAModelFolder(String)
    /// The global batch does not split over the ranks.
    case batchDoesNotSplit(batch: Int, ranks: Int)
    /// An evaluation model (`evaluator`, `clip`) is not at `path`; `train` is the command that makes one.
    case missingEvaluationModel(kind: String, path: String, train: String)
    /// Two settings of a recipe disagree (the data's image size and the networks' sample size).
    case inconsistentRecipe(String)

    public var description: String {
        switch self {
        case let .notAModelFolder(path): "\(path): not a model folder (no unet/ inside)"
        case let .batchDoesNotSplit(batch, ranks): "the global batch \(batch) must split evenly over \(ranks) ranks"
        case let .missingEvaluationModel(kind, path, train):
            "no \(kind == "clip" ? "contrastive image–text model" : "attribute evaluator") at \(path); train one with `\(train)` (a few minutes)"
        case let .inconsistentRecipe(message): "inconsistent recipe: \(message)"
        }
    }
}

/// Everything a training run needs besides the loop itself (``Trainer``): the run folder and
/// its recipe, the data, the caption table, the networks (fresh or warm-started from a model
/// folder) with their provenance, the grounding of objects in captions, and the artefacts a run
/// leaves (validation grids, loss curve). `contextdiff train` is this plus flags and progress bars.
public struct TrainingSetup {
    public let recipe: TrainingRecipe
    public let folder: RunFolder

    public init(recipe: TrainingRecipe, folder: RunFolder) {
        self.recipe = recipe
        self.folder = folder
    }

    // MARK: - The run folder

    /// The recipe to train: the run folder's saved one when resuming (its settings win over the
    /// given ones; `replaced` says whether they differed), saved back atomically.
    public static func prepare(folder: RunFolder, given: TrainingRecipe, resume: Bool) throws
        -> (recipe: TrainingRecipe, replaced: Bool)
    {
        try folder.prepareRecipe(given, resume: resume) { try $0.validate() }
    }

    // MARK: - Data

    /// The training images, captions and (synthetic data only) scene annotations. `progress`
    /// reports phase "rendering" (synthetic) in images.
    public func loadData(progress: ProgressHandler = { _ in true }) throws -> (InMemoryImageSource, [SceneAnnotation]) {
        if let folder = recipe.imageFolder {
            let dataset = try ImageFolderDataset(folder: URL(fileURLWithPath: folder), imageSize: recipe.unet.sampleSize)
            var images: [RGBImage] = []
            for i in 0..<dataset.count {
                images.append(try dataset.image(at: i))
                _ = progress(ProgressUpdate(phase: "loading", completed: i + 1, total: dataset.count))
            }
            return (try InMemoryImageSource(pixels: RGBImage.batch(images), captions: dataset.entries.map(\.text)), [])
        }
        var config = recipe.benchmark
        if recipe.condition == .class { config.twoObjectFraction = 0 }  // one object: one class per image
        let benchmark = try SyntheticBenchmark(config)
        var chunks: [Tensor] = []
        var captions: [String] = []
        var annotations: [SceneAnnotation] = []
        for start in stride(from: 0, to: recipe.datasetSize, by: 1000) {
            let batch = try benchmark.batch(indices: start..<min(recipe.datasetSize, start + 1000), split: .train)
            chunks.append(batch.images)
            captions += recipe.condition == .class
                ? batch.annotations.map { "\($0.scene.objects[0].color.rawValue) \($0.scene.objects[0].shape.rawValue)" }
                : batch.captions
            annotations += batch.annotations
            _ = progress(ProgressUpdate(phase: "rendering", completed: captions.count, total: recipe.datasetSize))
        }
        return (try InMemoryImageSource(pixels: Tensor.cat(chunks), captions: captions), annotations)
    }

    /// Every distinct caption of `data` encoded once, truncated to the recipe's token limit; for a
    /// class recipe, the model's class table (``classTable(model:)``).
    public func captionTable(for data: some CaptionedImageSource, textEncoder: any TextEncoder) throws -> CaptionTable {
        let limit = recipe.maxTokens
        return try CaptionTable(captions: (0..<data.count).map { data.caption(at: $0) }) { texts in
            let e = try textEncoder.encode(texts)
            let kept = min(limit, try e.tokenStates.size(1))
            return try Condition(
                tokens: e.tokenStates.slice(dim: 1, 0, kept), mask: e.attentionMask.slice(dim: 1, 0, kept), pooled: e.pooled)
        }
    }

    /// The class table of a class-conditional model; every caption of `data` must be one of its classes.
    public static func classTable(model: ContextDiffModel, data: some CaptionedImageSource) throws -> CaptionTable {
        guard let classes = model.classEncoder else { throw WorkflowError.inconsistentRecipe("condition class needs a class encoder") }
        let table = CaptionTable(classes: classes)
        for i in 0..<data.count where table.index[data.caption(at: i)] == nil {
            throw WorkflowError.inconsistentRecipe("training image \(i) has class '\(data.caption(at: i))', which the model does not have")
        }
        return table
    }

    /// Each synthetic image's objects for the grounding loss and the layout prior: the token
    /// positions of their words in the caption (the order the caption names them, which is the
    /// scene's) and their boxes. An image whose words cannot all be found (or with two identical
    /// objects) gets none.
    public static func groundings(_ annotations: [SceneAnnotation], tokenizer: any TextTokenizer) throws -> [[GroundedObject]] {
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
                GroundedObject(
                    tokens: tokens, minX: o.bbox.minX / side, minY: o.bbox.minY / side, maxX: o.bbox.maxX / side,
                    maxY: o.bbox.maxY / side)
            }
        }
    }

    /// Whether the recipe needs object groundings (a grounding loss or a layout prior).
    public var needsGroundings: Bool { recipe.training.groundingWeight > 0 || recipe.unet.layoutPrior != nil }

    // MARK: - The networks

    /// The recipe's networks for a text encoder of `width`, warm-started from `initFrom` when
    /// given, with the provenance a model folder records: the portable command, the portable
    /// recipe and, for a warm start, the source's command. The initialisation draws from a
    /// generator seeded with the recipe's seed, so it is reproducible (and independent of other
    /// work in the process).
    public func makeModel(textEncoderWidth width: Int, initFrom: URL?, command: [String]) throws -> ContextDiffModel {
        var unetConfig = recipe.unet
        unetConfig.contextDim = width
        unetConfig.pooledDim = width
        let (unet, adapter, classes) = try Torch.withSeed(recipe.training.seed) {
            let unet = try UNet(unetConfig)
            let adapter = try recipe.adapter.map { cfg -> ContextAdapter in
                var c = cfg
                c.contextDim = width
                return try ContextAdapter(c)
            }
            let classes = recipe.condition == .class
                ? try ClassLabelEncoder(ClassLabelEncoderConfig(names: recipe.classNames, width: width)) : nil
            return (unet, adapter, classes)
        }
        if let initFrom { try Self.warmStart(unet: unet, adapter: adapter, classEncoder: classes, from: initFrom) }
        let model = try ContextDiffModel(
            unet: unet, adapter: adapter, schedule: NoiseSchedule(recipe.schedule),
            textEncoder: TextEncoderSpec(kind: classes == nil ? "minilm" : "class", maxTokens: classes == nil ? recipe.maxTokens : 1),
            classEncoder: classes)
        model.index.notes["command"] = Provenance.portableCommand(command)
        model.index.notes["recipe"] = try recipe.portable.sortedJSON()
        if let initFrom,
            let source = try? JSONDecoder().decode(
                ModelIndex.self, from: Data(contentsOf: initFrom.appendingPathComponent("model_index.json"))),
            let sourceCommand = source.notes["command"]
        {
            model.index.notes["init_from_command"] = sourceCommand
        }
        return model
    }

    /// Copies a model folder's weights into freshly built networks (warm start). Position
    /// tables, a text refiner and a layout prior the source lacks keep their initialisation
    /// (zero tables, a refiner with zero output projections, a prior with a zero canvas
    /// convolution), so the network starts out computing exactly what the source did; anything
    /// else that does not match is an error naming it.
    /// A class encoder takes the source's class tokens when the source has the same classes.
    public static func warmStart(unet: UNet, adapter: ContextAdapter?, classEncoder: ClassLabelEncoder? = nil, from folder: URL) throws {
        guard FileManager.default.fileExists(atPath: folder.appendingPathComponent("unet").path) else {
            throw WorkflowError.notAModelFolder(folder.path)
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
        if let classEncoder, let classState = try weights("class_encoder"),
           let source = try? ModelFolder.config(ClassLabelEncoderConfig.self, in: folder.appendingPathComponent("class_encoder")),
           source == classEncoder.config
        {
            try classEncoder.load(classState)
        }
    }

    // MARK: - Artefacts

    /// Eight fixed prompts (single objects, relations, held-out combinations; for a class model,
    /// eight of its classes) from the run's exported EMA model, 20 DDIM steps, seed 1:
    /// `samples/step-NNNNNNN.png`.
    public func writeValidationGrid(step: Int, textEncoder: any TextEncoder) throws {
        let model = try ContextDiffModel.load(from: folder.model)
        var options = GenerationOptions()
        options.steps = 20
        options.seed = 1
        let images: GenerationResult
        if let classes = model.classEncoder {
            // Eight classes spread over the table.
            let labels = (0..<8).map { $0 * classes.classes / 8 }
            images = try ClassToImagePipeline(model: model).generate(labels: labels, options: options)
        } else {
            images = try TextToImagePipeline(model: model, textEncoder: textEncoder).generate(prompts: validationPrompts, options: options)
        }
        let grid = try RGBImage.grid(RGBImage.images(fromBatch: images.images), columns: 4)
        try FileManager.default.createDirectory(at: folder.samples, withIntermediateDirectories: true)
        try grid.writePNG(to: folder.sample(step: step))
    }

    /// `loss.svg` of the run (``RunFolder/writeLossCurve()``).
    public func writeLossCurve() throws { try folder.writeLossCurve() }
}

// MARK: - The run

extension TrainingSetup {
    /// What a training run does besides the recipe.
    public struct RunOptions: Sendable {
        /// A model folder to start the networks from (warm start), or nil for fresh weights.
        public var initFrom: URL?
        /// The command line, recorded in the model's provenance (local paths become placeholders).
        public var command: [String] = []
        /// Continue from the run folder's latest checkpoint, if any.
        public var resume = true
        /// Write a grid of validation samples at every checkpoint (rank 0).
        public var writeSamples = true
        /// Where the networks train (``Trainer/device``).
        public var device = Device.cpu
        /// ``Trainer/shards``: each step's batch in 1 or 2 concurrent parts (nil: automatic).
        public var shards: Int?

        public init() {}
    }

    /// The whole run: data, caption table, networks (fresh or warm-started), groundings, the
    /// layout prior's fit where the recipe asks for it, the training loop with checkpoints and
    /// validation grids, and the loss curve. As one rank of `group`, only rank 0 writes files,
    /// reports progress and notes. Progress phases: the data's (rendering), then
    /// ``TrainingPhase`` (layout prior, training; metrics loss, lr, steps per second).
    public func train(
        textEncoder: MiniLMTextEncoder, options: RunOptions, group: ProcessGroup? = nil,
        progress: ProgressHandler = { _ in true }, notes: (String) -> Void = { _ in }
    ) throws {
        let isRankZero = (group?.rank ?? 0) == 0
        func note(_ text: String) { if isRankZero { notes(text) } }
        let quiet: ProgressHandler = { _ in true }
        let report = isRankZero ? progress : quiet

        let (data, annotations) = try loadData(progress: report)
        let model = try makeModel(textEncoderWidth: textEncoder.width, initFrom: options.initFrom, command: options.command)
        try model.to(options.device)
        let captions: CaptionTable
        if recipe.condition == .class {
            captions = try Self.classTable(model: model, data: data)
            note("class-conditional: \(captions.captions.count) classes")
        } else {
            note("encoding \(Set((0..<data.count).map { data.caption(at: $0) }).count) distinct captions…")
            captions = try captionTable(for: data, textEncoder: textEncoder)
        }
        let groundings = needsGroundings ? try Self.groundings(annotations, tokenizer: textEncoder.tokenizer) : nil
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
            model: model, config: recipe.training, data: data, captions: captions, runDirectory: folder.url, processGroup: group,
            groundings: groundings)
        trainer.shards = options.shards
        _ = try trainer.shardRanges(rows: recipe.training.batchSize)  // a bad count fails before any work
        if options.resume, try trainer.resumeFromLatest() {
            note("resumed from step \(trainer.step)")
        }
        if trainer.step == 0, model.unet.layoutPrior != nil, recipe.training.layoutFitSteps > 0 {
            let loss = try trainer.fitLayoutPrior(progress: report)
            note(String(format: "layout prior fitted: loss %.4f after %d steps", loss ?? .nan, recipe.training.layoutFitSteps))
            if recipe.training.steps == 0 {
                // Fit only: the U-Net and adapter are the source's; save the model with the fitted prior.
                try trainer.saveCheckpoint()
                note("done: model at \(folder.model.path)")
                return
            }
        }
        let ranks = group.map { " on \($0.worldSize) ranks" } ?? ""
        note("training \(model.adapter == nil ? "the baseline (r_φ ≡ 0)" : "ContextDiff"): U-Net \(model.unet.parameterCount) parameters, adapter \(model.adapter?.parameterCount ?? 0); \(recipe.training.steps) steps of batch \(recipe.training.batchSize)\(ranks)")
        var lastSampledStep = trainer.step
        try trainer.run(resume: false) { p in
            guard report(p) else { return false }
            let step = p.completed
            if isRankZero, options.writeSamples, step % recipe.training.checkpointEvery == 0 || step == p.total, step != lastSampledStep {
                lastSampledStep = step
                do {
                    try writeValidationGrid(step: step, textEncoder: textEncoder)
                } catch {
                    note("warning: validation samples failed: \(error)")
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
        try writeLossCurve()
        note("done: model at \(folder.model.path)")
    }
}

extension RunFolder {
    /// `loss.svg`: the loss of `log.jsonl` as a running mean over 50 steps (log scale).
    public func writeLossCurve() throws {
        var smoothed: [(x: Double, y: Double)] = []
        var window: [Double] = []
        for (step, loss) in try losses() {
            window.append(loss)
            if window.count > 50 { window.removeFirst() }
            smoothed.append((Double(step), window.reduce(0, +) / Double(window.count)))
        }
        let chart = SVGLineChart(
            title: "Training loss", xLabel: "step", yLabel: "loss (mean of 50 steps)",
            series: [.init(name: "loss", points: smoothed, color: "#1f77b4")], logY: true)
        try chart.write(to: lossCurve)
    }

    /// The recipe a run trains: the folder's saved `recipe.json` when resuming (its settings
    /// win over `given`; `replaced` says whether they differed), validated and saved back atomically.
    public func prepareRecipe<Recipe: Codable & Equatable>(
        _ given: Recipe, resume: Bool, validate: (Recipe) throws -> Void
    ) throws -> (recipe: Recipe, replaced: Bool) {
        var recipe = given
        var replaced = false
        let fm = FileManager.default
        if resume, fm.fileExists(atPath: self.recipe.path) {
            let saved = try JSONDecoder().decode(Recipe.self, from: Data(contentsOf: self.recipe))
            if saved != recipe {
                recipe = saved
                replaced = true
            }
        }
        try validate(recipe)
        try fm.createDirectory(at: url, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(recipe).write(to: self.recipe, options: .atomic)
        return (recipe, replaced)
    }
}
