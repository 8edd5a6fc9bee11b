import ArgumentParser
import ContextDiff
import Datasets
import Evaluation
import Foundation
import NN
import Torch
import Workflows

/// Which benchmark prompts to evaluate.
enum PromptSplits: String, ExpressibleByArgument, CaseIterable {
    case validation, heldout, both

    init?(argument: String) {
        if argument == "test" { self = .heldout } else { self.init(rawValue: argument) }
    }

    var splits: [Split] {
        switch self {
        case .validation: [.validation]
        case .heldout: [.heldout]
        case .both: [.validation, .heldout]
        }
    }
}

/// A benchmark split's name in reports: seen combinations (validation) or held-out ones.

/// `contextdiff evaluate`: text-alignment and fidelity metrics of a model (DESIGN §6).
struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Measure a model's alignment (GenEval-style), CLIP-style score and Fréchet distance on benchmark prompts.",
        discussion: """
            Generates images for the benchmark's evaluation prompts (single objects, left/right \
            pairs, above/below pairs; seen combinations from the validation split and unseen ones \
            from the held-out split) and reports: alignment accuracy read by the independent \
            attribute evaluator (overall, per attribute, per GenEval category), the pixel \
            color/position check, the CLIP-style score (100 × max(cos, 0) of the contrastive \
            model), the Fréchet distance of the evaluator's features against held-out real \
            renders, and the evaluator's own accuracy on renders it never saw (≥ 99% to be trusted).

            With --prompts FILE (one prompt per line) only those prompts are generated; the \
            CLIP-style score is reported for all of them and alignment for those in the \
            benchmark's caption grammar (the others are listed as unparsed).

            --pixel-only keeps the earlier behaviour (only the pixel check; no evaluator needed).

            Train the evaluation models once: `contextdiff evaluator train` and `contextdiff clip train`.
            """
    )

    @Option(help: "Model folder (default: the shipped model), or a training run folder with --checkpoint.") var model: String?
    @Option(help: "Evaluate the EMA weights of this checkpoint step of the run folder given by --model (for convergence curves).")
    var checkpoint: Int?
    @Option(help: "A file with one prompt per line instead of the benchmark prompts.") var prompts: String?
    @Option(help: "Benchmark prompts: validation (seen combinations), heldout (unseen combinations) or both.")
    var split: PromptSplits = .both
    @Option(name: [.customLong("num-samples"), .customLong("count")],
            help: "Benchmark prompts per kind (single object; left/right pair; above/below pair) and split.")
    var numSamples = 64
    @Option(help: "Images generated per prompt.") var imagesPerPrompt = 1
    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var precisionOptions: PrecisionOptions
    @Option(help: "Seed of the sampling noise (training used others).") var seed: UInt64 = 1234
    @Option(help: "Prompts generated per batch.") var batch = 16
    @Flag(help: "Sample without the context adapter (as if r_φ ≡ 0).") var noContext = false
    @Option(help: "Layout of a model with a layout prior: sampled or typical.") var layout: LayoutMode = .sampled
    @Option(help: "Attribute evaluator folder (default: models/evaluator or $CONTEXTDIFF_EVALUATOR).") var evaluator: String?
    @Option(help: "Contrastive model folder (default: models/clip or $CONTEXTDIFF_CLIP).") var clip: String?
    @Option(help: "Held-out renders the evaluator's accuracy is checked on.") var evaluatorCheckImages = 1000
    @Option(help: "Real renders per prompt kind for the Fréchet reference.") var referencePerKind = 334
    @Flag(help: "Only the pixel color/position check (the earlier behaviour; needs no evaluation models).")
    var pixelOnly = false
    @Flag(help: "Layout-to-image: generate --num-samples benchmark scenes of each split from their captions and boxes, and count the objects drawn right and within 3 px of their box's centre.")
    var layoutToImage = false
    @Flag(help: "Class-to-image (a class-conditional model): --num-samples images of every class; class accuracy, Fréchet distance, precision/recall and spread against real renders of each class.")
    var classToImage = false
    @Flag(help: "Inpainting: for --num-samples benchmark scenes of each split, repaint one object's box in a new colour (with and without r_φ) and check the colour and the kept pixels.")
    var inpainting = false
    @Option(help: "Write a grid of the samples to this PNG.") var grid: String?
    @Flag(help: "Print the result as JSON.") var json = false
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Measure the cascade: every image upsampled by the super-resolution stage, then reduced to the evaluator's size.")
    var cascade = false
    @Option(help: "With --cascade: the super-resolution model folder (default: models/superres).") var srModel: String?
    @Option(help: "With --cascade: super-resolution denoising steps.") var srSteps = SuperResolutionOptions().steps
    @Option(help: "With --cascade: the noise level of the low-resolution image (default: the stage's).") var srNoiseLevel: Int?

    func validate() throws {
        if !cascade, srModel != nil || srNoiseLevel != nil { throw ValidationError("--sr-model and --sr-noise-level need --cascade") }
        if cascade, pixelOnly || layoutToImage || inpainting || classToImage {
            throw ValidationError("--cascade measures text-to-image generation (not --pixel-only, --layout-to-image, --inpainting or --class-to-image)")
        }
        guard numSamples > 0 else { throw ValidationError("--num-samples must be positive") }
        guard imagesPerPrompt > 0 else { throw ValidationError("--images-per-prompt must be positive") }
        guard batch > 0 else { throw ValidationError("--batch must be positive") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard evaluatorCheckImages >= 2, referencePerKind >= 1 else {
            throw ValidationError("--evaluator-check-images ≥ 2 and --reference-per-kind ≥ 1 required")
        }
        if [layoutToImage, inpainting, classToImage].filter({ $0 }).count > 1 || (layoutToImage || inpainting || classToImage) && (pixelOnly || prompts != nil) {
            throw ValidationError("--layout-to-image, --inpainting and --class-to-image work on benchmark data, one at a time")
        }
        if pixelOnly, prompts != nil { throw ValidationError("--pixel-only works on the benchmark prompts, not --prompts") }
        if let checkpoint {
            guard checkpoint > 0 else { throw ValidationError("--checkpoint must be a positive step") }
            guard model != nil else { throw ValidationError("--checkpoint needs --model RUN_FOLDER (a `contextdiff train` output folder)") }
        }
    }

    var generationOptions: GenerationOptions {
        var options = GenerationOptions()
        sampling.apply(to: &options)
        options.seed = seed
        options.useContext = !noContext
        options.imagesPerPrompt = imagesPerPrompt
        options.layout = layout
        options.precision = precisionOptions.resolved(for: .cpu).0
        return options
    }

    func run() throws {
        useThreads(threads)
        Torch.keepFreedTensorMemory()
        if let note = precisionOptions.resolved(for: .cpu).note { FileHandle.standardError.write(Data("\(note)\n".utf8)) }
        guard let modelURL = model.map({ URL(fileURLWithPath: $0) }) ?? defaultModelDirectory() else {
            throw ValidationError("no model given and no shipped model found; pass --model DIR")
        }
        if pixelOnly { return try runPixelOnly(modelURL: modelURL) }
        if layoutToImage { return try runLayoutToImage(modelURL: modelURL) }
        if inpainting { return try runInpainting(modelURL: modelURL) }
        if classToImage { return try runClassToImage(modelURL: modelURL) }
        let textEncoder = try MiniLMTextEncoder()
        let loaded = try EvaluationRun.loadModel(modelURL, checkpoint: checkpoint)
        guard loaded.classEncoder == nil else {
            throw ValidationError("\(modelURL.path) is class-conditional: evaluate it with --class-to-image")
        }
        let (evaluatorModel, evaluatorURL) = try loadEvaluator(evaluator)
        let (scorer, clipURL) = try loadScorer(clip, textEncoder: textEncoder)
        var request = EvaluationRequest(options: generationOptions)
        request.modelDescription = modelURL.path
        request.checkpoint = checkpoint
        request.batch = batch
        request.evaluatorCheckImages = evaluatorCheckImages
        request.referencePerKind = referencePerKind
        if let prompts {
            request.prompts = .file(try EvaluationRun.readPromptFile(URL(fileURLWithPath: prompts)))
        } else {
            request.prompts = .benchmark(splits: split.splits, perKind: numSamples)
        }
        var run = try EvaluationRun(
            pipeline: TextToImagePipeline(model: loaded, textEncoder: textEncoder),
            evaluator: (evaluatorModel, evaluatorURL), scorer: (scorer, clipURL))
        if cascade {
            guard let folder = srModel.map({ URL(fileURLWithPath: $0) }) ?? ModelLocator().locate(.superres) else {
                throw ValidationError("--cascade: no super-resolution stage at models/superres; pass --sr-model DIR")
            }
            let stage = try SuperResolutionModel.load(from: folder)
            var o = SuperResolutionOptions()
            o.steps = srSteps
            o.noiseLevel = srNoiseLevel
            o.seed = SuperResolutionOptions.stageSeed(following: seed)
            run.transform = EvaluationRun.cascadeTransform(
                SuperResolutionPipeline(model: stage),
                encoder: TextConditionEncoder(textEncoder: textEncoder, maxTokens: stage.index.textEncoder.maxTokens), options: o)
            request.modelDescription += " + \(folder.standardizedFileURL.lastPathComponent) (cascade, reduced ×\(stage.unet.config.factor))"
        }
        var bar: ProgressBar?
        let (report, allImages) = try run.run(request) { p in
            if p.phase == EvaluationRun.checkingPhase { return true }
            if bar == nil { bar = ProgressBar(total: p.total, label: "evaluate") }
            bar?.update(p.completed)
            return true
        } notify: { note($0) }
        for w in Set(report.sets.flatMap { $0.notices ?? [] }) { note("warning: \(w)") }
        if let grid {
            try RGBImage.grid(allImages, columns: 16).writePNG(to: URL(fileURLWithPath: grid))
        }
        if json { try printJSON(report) } else { print(report.table()) }
    }

    /// The pixel-only check (``PixelCheckRun``), one report per split.
    func runPixelOnly(modelURL: URL) throws {
        let loaded = try EvaluationRun.loadModel(modelURL, checkpoint: checkpoint)
        var run = try PixelCheckRun(pipeline: TextToImagePipeline(model: loaded, textEncoder: MiniLMTextEncoder()), modelDescription: modelURL.path)
        run.batch = batch
        for s in split.splits {
            var bar: ProgressBar?
            let (report, images) = try run.run(split: s, perKind: numSamples, options: generationOptions) { p in
                if bar == nil { bar = ProgressBar(total: p.total, label: "evaluate") }
                bar?.update(p.completed)
                return true
            }
            if let grid {
                let url = URL(fileURLWithPath: grid)
                let target = split == .both ? url.deletingPathExtension().appendingPathExtension("\(s.rawValue).png") : url
                try RGBImage.grid(images, columns: 16).writePNG(to: target)
            }
            if json { try printJSON(report) } else { print(report.table()) }
        }
    }

    /// One report per split of a scene-based evaluation (`run(split, progress)` gives the report,
    /// its printed table and the grid's images with their column count).
    func perSplit<Report: Encodable>(
        label: String, _ run: (Split, @escaping ProgressHandler) throws -> (report: Report, table: String, images: [RGBImage], columns: Int)
    ) throws {
        for s in split.splits {
            let bar = ProgressBar(total: numSamples, label: "\(label) \(promptSetName(s))")
            let result = try run(s) { p in
                bar.update(p.completed)
                return true
            }
            if let grid {
                let url = URL(fileURLWithPath: grid)
                let target = split == .both ? url.deletingPathExtension().appendingPathExtension("\(s.rawValue).png") : url
                try RGBImage.grid(result.images, columns: result.columns).writePNG(to: target)
            }
            if json { try printJSON(result.report) } else { print(result.table) }
        }
    }

    /// Layout-to-image (``LayoutToImageEvaluation``), one report per split.
    func runLayoutToImage(modelURL: URL) throws {
        let loaded = try EvaluationRun.loadModel(modelURL, checkpoint: checkpoint)
        let evaluation = try LayoutToImageEvaluation(
            pipeline: TextToImagePipeline(model: loaded, textEncoder: MiniLMTextEncoder()), evaluator: loadEvaluator(evaluator).0)
        try perSplit(label: "layouts") { s, progress in
            let (report, images) = try evaluation.run(count: numSamples, split: s, options: generationOptions, batchSize: batch, progress: progress)
            return (report, report.table(), images, 16)
        }
    }

    /// Inpainting (``InpaintingEvaluation``), one report per split; the grid shows, per scene,
    /// the input and the results (ContextDiff, then r_φ ≡ 0), six scenes a row.
    func runInpainting(modelURL: URL) throws {
        let loaded = try EvaluationRun.loadModel(modelURL, checkpoint: checkpoint)
        let evaluation = try InpaintingEvaluation(
            pipeline: TextToImagePipeline(model: loaded, textEncoder: MiniLMTextEncoder()), evaluator: loadEvaluator(evaluator).0)
        try perSplit(label: "inpaint") { s, progress in
            let (report, images) = try evaluation.run(count: numSamples, split: s, options: generationOptions, batchSize: batch, progress: progress)
            return (report, report.table(), images, images.count / numSamples * 6)
        }
    }

    /// Class-to-image (``ClassToImageEvaluation``): `--num-samples` images of every class.
    func runClassToImage(modelURL: URL) throws {
        let loaded = try EvaluationRun.loadModel(modelURL, checkpoint: checkpoint)
        let (evaluatorModel, _) = try loadEvaluator(evaluator)
        let evaluation = try ClassToImageEvaluation(pipeline: ClassToImagePipeline(model: loaded), evaluator: evaluatorModel)
        let bar = ProgressBar(total: numSamples * loaded.classEncoder!.classes, label: "classes")
        let (report, images) = try evaluation.run(perClass: numSamples, options: generationOptions, modelDescription: modelURL.path) { p in
            bar.update(p.completed)
            return true
        }
        if let grid { try RGBImage.grid(images, columns: numSamples).writePNG(to: URL(fileURLWithPath: grid)) }
        if json { try printJSON(report) } else { print(report.table()) }
    }
}
