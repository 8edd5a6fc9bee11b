import ContextDiff
import Datasets
import Foundation
import NN
import TestSupport
import Testing
import Torch
import Workflows

@Suite("Workflows: training setup")
struct TrainingSetupTests {
    func temporaryFolder(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
    }

    /// A 16×16 recipe small enough to train in a test: 16 images, 4 per batch.
    func tinyRecipe(channels: Int = 8, adapterWidth: Int = 16) -> TrainingRecipe {
        var recipe = TrainingRecipe()
        recipe.datasetSize = 16
        recipe.benchmark.imageSize = 16
        recipe.unet.sampleSize = 16
        recipe.unet.baseChannels = channels
        recipe.unet.channelMultipliers = [1, 2]
        recipe.unet.layersPerBlock = 1
        recipe.unet.attentionResolutions = [8]
        recipe.unet.crossAttentionResolutions = [8]
        recipe.unet.normGroups = 4
        recipe.adapter?.sampleSize = 16
        recipe.adapter?.width = adapterWidth
        recipe.adapter?.depth = 1
        recipe.training.batchSize = 4
        return recipe
    }

    /// A recipe names only what it changes; `"adapter": null` is the baseline; it round-trips.
    @Test func recipesDecodePartiallyAndRoundTrip() throws {
        let partial = try JSONDecoder().decode(TrainingRecipe.self, from: Data(#"{"dataset_size": 64, "adapter": null}"#.utf8))
        #expect(partial.datasetSize == 64 && partial.adapter == nil)
        #expect(partial.unet == TrainingRecipe().unet && partial.training == TrainingRecipe().training)
        let defaults = try JSONDecoder().decode(TrainingRecipe.self, from: Data("{}".utf8))
        #expect(defaults == TrainingRecipe() && defaults.adapter != nil)
        let again = try JSONDecoder().decode(TrainingRecipe.self, from: JSONEncoder().encode(partial))
        #expect(again == partial)
        var withFolder = TrainingRecipe()
        withFolder.imageFolder = "/home/someone/data/shapes"
        #expect(withFolder.portable.imageFolder == "shapes")
        #expect(try withFolder.portable.sortedJSON().contains(#""image_folder":"shapes""#))
    }

    /// Resuming uses the folder's recipe (and says so); a fresh run saves the given one.
    @Test func runFolderKeepsItsRecipe() throws {
        let folder = RunFolder(temporaryFolder("run"))
        defer { try? FileManager.default.removeItem(at: folder.url) }
        var first = TrainingRecipe()
        first.datasetSize = 100
        let a = try TrainingSetup.prepare(folder: folder, given: first, resume: true)
        #expect(a.recipe == first && !a.replaced)
        var second = first
        second.datasetSize = 200
        let b = try TrainingSetup.prepare(folder: folder, given: second, resume: true)
        #expect(b.recipe == first && b.replaced)
        let c = try TrainingSetup.prepare(folder: folder, given: second, resume: false)
        #expect(c.recipe == second && !c.replaced)
        #expect(try JSONDecoder().decode(TrainingRecipe.self, from: Data(contentsOf: folder.recipe)) == second)
    }

    /// The run folder's layout: completed checkpoints only, ascending; the log's losses.
    @Test func runFolderLayout() throws {
        let folder = RunFolder(temporaryFolder("layout"))
        defer { try? FileManager.default.removeItem(at: folder.url) }
        let fm = FileManager.default
        for step in [200, 50] { try fm.createDirectory(at: folder.checkpoint(step: step), withIntermediateDirectories: true) }
        try fm.createDirectory(at: folder.partialCheckpoint(step: 300), withIntermediateDirectories: true)
        #expect(folder.checkpointSteps() == [50, 200])
        #expect(folder.checkpoint(step: 50).lastPathComponent == "step-0000050")
        #expect(folder.trainingState(step: 50).path.hasSuffix("checkpoints/step-0000050/training_state.safetensors"))
        try Data("{\"step\":1,\"loss\":0.5,\"lr\":0.001}\n{\"step\":2}\n{\"step\":3,\"loss\":0.25}\n".utf8).write(to: folder.log)
        let losses = try folder.losses()
        #expect(losses.map(\.step) == [1, 3] && losses.map(\.loss) == [0.5, 0.25])
    }

    /// Objects are grounded in the tokens of their words, in the caption's order; a caption
    /// with two identical objects gets none.
    @Test func groundingsFindEachObjectsWords() throws {
        let benchmark = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: 32, seed: 4))
        let batch = try benchmark.batch(indices: 0..<40, split: .train)
        let tokenizer = try WordLevelTokenizer(fitting: batch.captions)
        let groundings = try TrainingSetup.groundings(batch.annotations, tokenizer: tokenizer)
        #expect(groundings.count == 40)
        var grounded = 0
        for (a, g) in zip(batch.annotations, groundings) where !g.isEmpty {
            grounded += 1
            #expect(g.count == a.scene.objects.count)
            let ids = tokenizer.encode(a.caption)
            for (object, found) in zip(a.scene.objects, g) {
                // The grounded tokens hold the ids of the object's shape and colour words.
                let grounded = Set(found.tokens.map { ids[$0] })
                for word in [object.shape.rawValue, object.color.rawValue] {
                    let pieces = tokenizer.encode(word).dropFirst().dropLast()
                    #expect(grounded.isSuperset(of: pieces), "\(a.caption): \(word)")
                }
                #expect(abs(found.minX * 32 - object.bbox.minX) < 1e-9 && found.maxY <= 1)
            }
        }
        #expect(grounded >= 36, "only \(grounded) of 40 captions grounded")
    }

    /// A warm start copies every weight of a model folder; a folder without a U-Net is refused.
    @Test func warmStartCopiesTheSource() throws {
        let dir = temporaryFolder("warm")
        defer { try? FileManager.default.removeItem(at: dir) }
        var recipe = tinyRecipe(channels: 16, adapterWidth: 32)
        recipe.training.seed = 1
        let setup = TrainingSetup(recipe: recipe, folder: RunFolder(dir))
        let source = try setup.makeModel(textEncoderWidth: 12, initFrom: nil, command: ["contextdiff", "train", "-o", "/tmp/x"])
        #expect(source.index.notes["recipe"] != nil && source.index.notes["command"] != nil)
        try source.save(to: dir.appendingPathComponent("source"))
        var other = recipe
        other.training.seed = 2
        let fresh = try TrainingSetup(recipe: other, folder: RunFolder(dir)).makeModel(
            textEncoderWidth: 12, initFrom: nil, command: ["contextdiff"])
        #expect(try TestSupport.relativeDiff(fresh.parameters[0], source.parameters[0]) > 0)
        let warm = try TrainingSetup(recipe: other, folder: RunFolder(dir)).makeModel(
            textEncoderWidth: 12, initFrom: dir.appendingPathComponent("source"), command: ["contextdiff"])
        for (a, b) in zip(warm.parameters, source.parameters) { #expect(try TestSupport.relativeDiff(a, b) == 0) }
        #expect(warm.index.notes["init_from_command"] == source.index.notes["command"])
        #expect(throws: WorkflowError.notAModelFolder(dir.path)) {
            try TrainingSetup.warmStart(unet: warm.unet, adapter: warm.adapter, from: dir)
        }
    }

    /// The whole run as a library call: notes, progress phases, a model folder, a resumed run
    /// that starts where the first stopped.
    @Test func aTinyRunTrainsSavesAndResumes() throws {
        let dir = temporaryFolder("tiny-run")
        defer { try? FileManager.default.removeItem(at: dir) }
        var recipe = tinyRecipe()
        let folder = RunFolder(dir)
        // The data's size must match the networks' before anything is rendered.
        recipe.benchmark.imageSize = 32
        #expect(throws: WorkflowError.inconsistentRecipe("benchmark.image_size 32 differs from unet.sample_size 16")) {
            try TrainingSetup.prepare(folder: folder, given: recipe, resume: true)
        }
        recipe.benchmark.imageSize = 16
        recipe.training.steps = 2
        recipe.training.checkpointEvery = 2
        let setup = TrainingSetup(recipe: try TrainingSetup.prepare(folder: folder, given: recipe, resume: true).recipe, folder: folder)
        var options = TrainingSetup.RunOptions()
        options.writeSamples = false
        var notes: [String] = [], phases: [String] = [], lastTraining = 0
        try setup.train(textEncoder: MiniLMTextEncoder(), options: options, progress: { p in
            if phases.last != p.phase { phases.append(p.phase) }
            if p.phase == TrainingPhase.training.rawValue { lastTraining = p.completed }
            return true
        }, notes: { notes.append($0) })
        #expect(phases.last == TrainingPhase.training.rawValue && lastTraining == 2)
        #expect(notes.last == "done: model at \(folder.model.path)")
        #expect(FileManager.default.fileExists(atPath: folder.model.appendingPathComponent("unet").path))
        #expect(folder.checkpointSteps() == [2])
        // Two more steps resume from step 2.
        var longer = setup.recipe
        longer.training.steps = 4
        notes = []
        try TrainingSetup(recipe: longer, folder: folder).train(textEncoder: MiniLMTextEncoder(), options: options, notes: { notes.append($0) })
        #expect(notes.contains("resumed from step 2"))
        #expect(folder.checkpointSteps().last == 4)
    }

    /// A class recipe renders single objects captioned by their class, trains the class tokens
    /// with the networks and saves a model that draws from class names.
    @Test func aTinyClassRunTrainsItsTokens() throws {
        let dir = temporaryFolder("tiny-class-run")
        defer { try? FileManager.default.removeItem(at: dir) }
        var recipe = tinyRecipe()
        recipe.condition = .class
        recipe.training.steps = 3
        recipe.training.checkpointEvery = 3
        #expect(recipe.classNames.count == 18 && recipe.classNames.first == "red circle")
        let setup = TrainingSetup(recipe: recipe, folder: RunFolder(dir))
        let (data, _) = try setup.loadData()
        #expect((0..<data.count).allSatisfy { recipe.classNames.contains(data.caption(at: $0)) })
        var options = TrainingSetup.RunOptions()
        options.writeSamples = false
        try setup.train(textEncoder: MiniLMTextEncoder(), options: options)
        let model = try ContextDiffModel.load(from: setup.folder.model)
        let classes = try #require(model.classEncoder)
        #expect(model.index.textEncoder.kind == "class" && classes.config.names == recipe.classNames)
        // Trained: the saved (EMA) tokens moved away from the seeded initialisation.
        let fresh = try setup.makeModel(textEncoderWidth: 384, initFrom: nil, command: [])
        let moved = try (classes.embedding.weight - fresh.classEncoder!.embedding.weight).abs().max().item()
        #expect(moved > 0)
        var generation = GenerationOptions()
        generation.steps = 2
        #expect(try ClassToImagePipeline(model: model).generate(classes: ["red-circle"], options: generation).images.shape == [1, 3, 16, 16])
        // Stopped at step 2 and resumed to 3, the run ends where the uninterrupted one did:
        // the class tokens come back from the checkpoint with everything else.
        let resumed = temporaryFolder("tiny-class-resumed")
        defer { try? FileManager.default.removeItem(at: resumed) }
        var first = recipe
        first.training.checkpointEvery = 1
        var short = first
        short.training.steps = 2
        try TrainingSetup(recipe: short, folder: RunFolder(resumed)).train(textEncoder: MiniLMTextEncoder(), options: options)
        try TrainingSetup(recipe: first, folder: RunFolder(resumed)).train(textEncoder: MiniLMTextEncoder(), options: options)
        var whole = TrainingSetup.RunOptions()
        whole.writeSamples = false
        let straight = temporaryFolder("tiny-class-straight")
        defer { try? FileManager.default.removeItem(at: straight) }
        try TrainingSetup(recipe: first, folder: RunFolder(straight)).train(textEncoder: MiniLMTextEncoder(), options: whole)
        let a = try ContextDiffModel.load(from: RunFolder(resumed).model), b = try ContextDiffModel.load(from: RunFolder(straight).model)
        #expect(try (a.classEncoder!.embedding.weight - b.classEncoder!.embedding.weight).abs().max().item() == 0)
        #expect(try (a.stateDict()["unet.conv_in.weight"]! - b.stateDict()["unet.conv_in.weight"]!).abs().max().item() == 0)
        // A class recipe has no caption for a layout prior.
        var bad = recipe
        bad.unet.layoutPrior = LayoutPriorConfig()
        #expect(throws: WorkflowError.self) { try bad.validate() }
    }

    /// A recipe whose parts disagree is refused with the keys named; the default one is valid.
    @Test func recipeValidationNamesTheDisagreeingKeys() throws {
        try TrainingRecipe().validate()
        var sizes = TrainingRecipe()
        sizes.adapter?.sampleSize = 16
        #expect(throws: WorkflowError.inconsistentRecipe("adapter.sample_size 16 differs from unet.sample_size 32")) {
            try sizes.validate()
        }
        var range = TrainingRecipe()
        range.training.timestepRange = [500, 1200]
        #expect(throws: WorkflowError.inconsistentRecipe(
            "training.timestep_range 500..<1200 goes past the schedule's 1000 timesteps")) { try range.validate() }
        var folder = TrainingRecipe()
        folder.imageFolder = "/data"
        folder.unet.layoutPrior = LayoutPriorConfig(maxTokens: 32)
        #expect(throws: WorkflowError.self) { try folder.validate() }
        var tokens = TrainingRecipe()
        tokens.unet.layoutPrior = LayoutPriorConfig(maxTokens: 8)
        #expect(throws: WorkflowError.inconsistentRecipe("unet.layout_prior.max_tokens 8 is below the recipe's max_tokens 32")) {
            try tokens.validate()
        }
        var empty = TrainingRecipe()
        empty.datasetSize = 0
        #expect(throws: WorkflowError.self) { try empty.validate() }
    }

    /// The evaluation models: the shipped ones load; a missing one is a typed error naming the
    /// command that makes it.
    @Test func evaluationModelsLoadOrSayHowToMakeThem() throws {
        let missing = temporaryFolder("no-evaluator")
        #expect(throws: WorkflowError.missingEvaluationModel(
            kind: "evaluator", path: missing.path, train: "contextdiff evaluator train -o \(missing.path)")) {
            try EvaluationModels.loadEvaluator(missing)
        }
        let shipped = repositoryRoot.appendingPathComponent("models/evaluator")
        let (evaluator, url) = try EvaluationModels.loadEvaluator(shipped)
        #expect(url == shipped && evaluator.imageSize == 32)
    }
}

@Suite("Workflows: the attention-map figure")
struct AttentionMapFigureTests {
    @Test func wordsAndStepsAreFoundAndSpread() throws {
        let tokenizer = try MiniLMTextEncoder().tokenizer
        let words = try AttentionMapFigure.words(of: "A red circle, left of a blue square.", tokenizer: tokenizer)
        #expect(words.map(\.word) == ["a", "red", "circle", "left", "of", "a", "blue", "square"])
        #expect(words.map(\.positions.first!) == [1, 2, 3, 5, 6, 7, 8, 9])  // 4 is the comma
        #expect(AttentionMapFigure.shownSteps(of: 50, count: 5) == [0, 12, 25, 37, 49])
        #expect(AttentionMapFigure.shownSteps(of: 3, count: 8) == [0, 1, 2])
        #expect(AttentionMapFigure.shownSteps(of: 10, count: 1) == [9])
    }
}
