import ArgumentParser
import ContextDiff
import Datasets
import Foundation
import NN
import Torch
import Workflows

extension LayoutMode: ExpressibleByArgument {}
extension CascadeStages: ExpressibleByArgument {}

/// Where the shipped model lives when no `--model` is given (``ModelLocator``).
func defaultModelDirectory() -> URL? { ModelLocator().locate(.default) }

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate images for a prompt with a ContextDiff model (the shipped one by default)."
    )

    @Argument(help: "What to draw, e.g. \"a red circle to the left of a blue square\" (several prompts: one grid row each).")
    var prompts: [String] = []

    @Option(name: .customLong("class"), help: ArgumentHelp(
        "With a class-conditional model: a class to draw, e.g. red-circle (repeat for more; one grid row each).", valueName: "NAME"))
    var classes: [String] = []

    @Option(help: "A file with one prompt per line (added to the prompts given).")
    var promptsFile: String?

    @Option(help: "Model folder (default: the shipped model, models/default).") var model: String?
    @OptionGroup var sampling: SamplingOptions
    @Option(help: "Push away from this prompt instead of the empty one.") var negativePrompt: String?
    @Option(help: "Seed of the initial noise.") var seed: UInt64 = 0
    @Option(name: .customLong("num-images"), help: "Images to generate.") var numImages = 4
    @Option(name: .shortAndLong, help: "Output folder (image-N.png and grid.png) or a .png file.")
    var output = "outputs"
    @Flag(help: "Sample without the context adapter (as if r_φ ≡ 0).") var noContext = false
    @Option(help: ArgumentHelp(
        "Where a model with a layout prior puts the objects: sampled (one layout per image, from the seed), typical (the same for every seed), or a layout JSON file (layout-to-image).",
        valueName: "sampled|typical|FILE.json"))
    var layout = LayoutMode.sampled.rawValue
    @Option(name: .customLong("box"), help: ArgumentHelp(
        "An object of the layout, inline: words of the prompt and a box in fractions of the image side (repeat for more objects).",
        valueName: "PHRASE@x0,y0,x1,y1"))
    var boxes: [String] = []
    @Option(help: "Start from this picture (img2img, SDEdit) instead of pure noise; with --mask or --mask-box, inpaint.")
    var initImage: String?
    @Option(help: "With --init-image: the share of the steps that run, in (0, 1] (1: from pure noise; default 0.6 for img2img, 1 for inpainting).")
    var strength: Double?
    @Option(help: "With --init-image: a mask image whose light pixels are repainted and dark ones kept.") var mask: String?
    @Option(help: ArgumentHelp("With --init-image: repaint this box (fractions of the side), keep the rest.", valueName: "x0,y0,x1,y1"))
    var maskBox: String?
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var precisionOptions: PrecisionOptions
    @OptionGroup(title: "Super-resolution (the cascade's second stage)") var superResolution: SuperResolutionFlags

    /// The prompts from the arguments and the prompts file.
    func allPrompts() throws -> [String] {
        var all = prompts
        if let promptsFile {
            guard let text = try? String(contentsOfFile: promptsFile, encoding: .utf8) else {
                throw ValidationError("cannot read the prompts file \(promptsFile)")
            }
            all += text.split(whereSeparator: \.isNewline).map(String.init).filter {
                !$0.trimmingCharacters(in: .whitespaces).isEmpty
            }
        }
        guard !all.isEmpty else { throw ValidationError("give a prompt (or --prompts-file, or --class for a class-conditional model)") }
        return all
    }

    func validate() throws {
        guard !(classes.isEmpty && prompts.isEmpty && promptsFile == nil) else {
            throw ValidationError("give a prompt (or --prompts-file, or --class for a class-conditional model)")
        }
        guard prompts.allSatisfy({ !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }) else {
            throw ValidationError("the prompt is empty; describe the image to generate")
        }
        guard (1...256).contains(numImages) else { throw ValidationError("--num-images must be in 1...256") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        if initImage == nil, strength != nil || mask != nil || maskBox != nil {
            throw ValidationError("--strength, --mask and --mask-box need --init-image")
        }
        if mask != nil, maskBox != nil { throw ValidationError("give --mask or --mask-box, not both") }
        if let strength, !(strength > 0 && strength <= 1) { throw ValidationError("--strength must be in (0, 1], got \(strength)") }
    }

    /// The picture to start from (`--init-image`, `--strength`, `--mask`, `--mask-box`), nil without one.
    func imageStart(size: Int) throws -> (start: ImageStart, notices: [String])? {
        guard let initImage else { return nil }
        let box = try maskBox.map { text -> [Double] in
            let numbers = text.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard numbers.count == 4 else { throw ValidationError("--mask-box must be four numbers x0,y0,x1,y1, got '\(text)'") }
            return numbers
        }
        let inpainting = mask != nil || box != nil
        return try ImageStart.load(
            image: URL(fileURLWithPath: initImage), strength: strength ?? (inpainting ? 1 : 0.6),
            mask: mask.map { URL(fileURLWithPath: $0) }, maskBox: box, size: size)
    }

    func run() throws {
        useThreads(threads)
        Torch.keepFreedTensorMemory()
        let device = try deviceOptions.resolved()
        guard let modelURL = model.map({ URL(fileURLWithPath: $0) }) ?? defaultModelDirectory() else {
            throw ValidationError("no model given and no shipped model found at models/default; pass --model DIR")
        }
        // Check the output location before the work, not after.
        let out = URL(fileURLWithPath: output)
        let single = out.pathExtension.lowercased() == "png"
        let folder = single ? out.deletingLastPathComponent() : out
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        } catch {
            throw ValidationError("cannot create the output folder \(folder.path): \(error.localizedDescription)")
        }
        guard FileManager.default.isWritableFile(atPath: folder.path) else {
            throw ValidationError("the output folder \(folder.path) is not writable")
        }

        let loaded = try ContextDiffModel.load(from: modelURL)
        try loaded.to(device)
        var options = GenerationOptions()
        sampling.apply(to: &options)
        options.negativePrompt = negativePrompt
        options.seed = seed
        options.imagesPerPrompt = numImages
        options.useContext = !noContext
        let (precision, precisionNote) = precisionOptions.resolved(for: device)
        options.precision = precision
        if let precisionNote { note(precisionNote) }
        let given = try givenLayout()
        if given == nil { options.layout = LayoutMode(rawValue: layout) ?? .sampled }
        try options.validate(trainTimesteps: loaded.schedule.config.trainTimesteps)
        let stage = try superResolution.load(device: device, baseSize: loaded.unet.config.sampleSize)
        let start = try imageStart(size: loaded.unet.config.sampleSize)
        for notice in start?.notices ?? [] { note("note: \(notice)") }
        let steps = try start.map { try sampling.steps - $0.start.firstStep(of: sampling.steps) } ?? sampling.steps
        let bar = ProgressBar(total: steps, label: "\(sampling.sampler.rawValue)")
        let started = Date()
        let result: GenerationResult
        var called: [String] = classes
        // Loaded once: the text model reads the prompts for both stages of the cascade.
        var minilm: MiniLMTextEncoder?
        if loaded.classEncoder != nil || !classes.isEmpty {
            guard prompts.isEmpty, promptsFile == nil, given == nil, start == nil else {
                throw ValidationError(loaded.classEncoder == nil
                    ? "--class needs a class-conditional model (train --condition class)"
                    : "this model draws classes (--class NAME), not prompts, layouts or init images")
            }
            guard !classes.isEmpty else {
                throw ValidationError("this model is class-conditional: give --class NAME (it knows \(loaded.classEncoder!.config.names.count) classes, e.g. \(loaded.classEncoder!.config.names.prefix(3).joined(separator: ", ")))")
            }
            result = try ClassToImagePipeline(model: loaded).generate(classes: classes, options: options) { p in
                bar.update(p.completed)
                return true
            }
        } else {
            let encoder = try MiniLMTextEncoder()
            minilm = encoder
            let pipeline = try TextToImagePipeline(model: loaded, textEncoder: encoder)
            called = try allPrompts()
            result = try pipeline.generate(prompts: called, options: options, layouts: given.map { [$0] }, start: start?.start) { p in
                bar.update(p.completed)
                return true
            }
        }
        var images = result.images, notices = result.notices
        var srOptions: SuperResolutionOptions?
        if let stage {
            // Class names ("red-circle") read as the captions they stand for.
            let captions = loaded.classEncoder == nil ? called : called.map { $0.replacingOccurrences(of: "-", with: " ") }
            let o = superResolution.options(seed: seed)
            let upBar = ProgressBar(total: o.steps, label: "upsample ×\(stage.model.unet.config.factor)")
            let upsampled = try stage.upsample(
                images, prompts: captions, imagesPerPrompt: numImages, negativePrompt: negativePrompt,
                encoder: TextConditionEncoder(textEncoder: minilm ?? MiniLMTextEncoder(), maxTokens: stage.model.index.textEncoder.maxTokens),
                options: o
            ) { p in
                upBar.update(p.completed)
                return true
            }
            images = upsampled.images
            notices += upsampled.notices.filter { !notices.contains($0) }
            srOptions = o
        }
        for notice in notices { note("warning: \(notice)") }
        let rgb = try RGBImage.images(fromBatch: images)
        // Every PNG carries what made it (text chunks; `GenerationRecord`).
        func record(_ index: Int?) -> GenerationRecord {
            var r = GenerationRecord(prompts: called, index: index, options: options, model: modelURL.standardizedFileURL.lastPathComponent)
            r.superResolution = srOptions
            r.superResolutionModel = srOptions == nil ? nil : superResolution.modelName
            return r
        }
        if single {
            try (rgb.count == 1 ? rgb[0] : RGBImage.grid(rgb, columns: gridColumns(rgb.count)))
                .writePNG(to: out, record: record(rgb.count == 1 ? 0 : nil))
            print(out.path)
        } else {
            for (i, image) in rgb.enumerated() {
                let url = out.appendingPathComponent("image-\(i).png")
                try image.writePNG(to: url, record: record(i))
                print(url.path)
            }
            let grid = out.appendingPathComponent("grid.png")
            try RGBImage.grid(rgb, columns: gridColumns(rgb.count)).writePNG(to: grid, record: record(nil))
            print(grid.path)
        }
        note(String(format: "generated %d image(s) in %.1f s", rgb.count, Date().timeIntervalSince(started)))
    }

    /// The layout of `--layout FILE.json` or `--box`, nil for a layout mode.
    func givenLayout() throws -> Layout? {
        if LayoutMode(rawValue: layout) != nil {
            return boxes.isEmpty ? nil : try Layout(parsing: boxes)
        }
        guard boxes.isEmpty else { throw ValidationError("give the layout as --layout FILE.json or as --box, not both") }
        guard FileManager.default.fileExists(atPath: layout) else {
            throw ValidationError("--layout \(layout): not sampled, typical or a layout file")
        }
        return try Layout(contentsOf: URL(fileURLWithPath: layout))
    }

    /// One row per prompt when there are several prompts; otherwise up to 4 columns.
    func gridColumns(_ count: Int) -> Int {
        count > numImages ? numImages : min(4, count)
    }
}

/// The flags of the cascade's super-resolution stage (`generate`).
struct SuperResolutionFlags: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Which stages run: all (the base model, then the super-resolution stage: 128×128 with the shipped models) or base (the base model's 32×32 thumbnails). Default: all when a stage for the base model's size is found, else base with a note.",
        valueName: "all|base"))
    var stages: CascadeStages?
    @Option(help: "Super-resolution model folder (default: the shipped stage, models/superres).") var srModel: String?
    @Option(help: "Super-resolution sampler (default dpmpp).") var srSampler = SuperResolutionOptions().sampler
    @Option(help: "Super-resolution denoising steps.") var srSteps = SuperResolutionOptions().steps
    @Option(help: "Super-resolution guidance weight on the text (1: none).") var srGuidance = SuperResolutionOptions().guidance
    @Option(help: "Noise level of the low-resolution image (a timestep of the stage's schedule; default: the model's).")
    var srNoiseLevel: Int?

    func validate() throws {
        guard srSteps > 0 else { throw ValidationError("--sr-steps must be positive") }
        guard srGuidance >= 0, srGuidance.isFinite else { throw ValidationError("--sr-guidance must be ≥ 0") }
        if stages == .base, srModel != nil { throw ValidationError("--sr-model has no effect with --stages base") }
    }

    func options(seed: UInt64) -> SuperResolutionOptions {
        var o = SuperResolutionOptions()
        o.sampler = srSampler
        o.steps = srSteps
        o.guidance = srGuidance
        o.noiseLevel = srNoiseLevel
        o.seed = SuperResolutionOptions.stageSeed(following: seed)
        return o
    }

    var folder: URL? { srModel.map { URL(fileURLWithPath: $0) } ?? ModelLocator().locate(.superres) }
    var modelName: String { folder?.standardizedFileURL.lastPathComponent ?? "superres" }

    /// The stage to run (nil: the base model's images), checked against the base model's size.
    /// Asked for (`--stages all`, `--sr-model`), a missing or mismatched stage is an error; by
    /// default the command falls back to the base model's images with a note.
    func load(device: Device, baseSize: Int) throws -> SuperResolutionPipeline? {
        if stages == .base { return nil }
        let asked = stages == .all || srModel != nil
        func unavailable(_ why: String) throws -> SuperResolutionPipeline? {
            if asked { throw ValidationError(why + " (use --stages base for the base model's \(baseSize)×\(baseSize) images)") }
            note("note: \(why); writing the base model's \(baseSize)×\(baseSize) images")
            return nil
        }
        guard let folder else { return try unavailable("no super-resolution stage found at models/superres; pass --sr-model DIR") }
        if !asked, !SuperResolutionModel.isStage(folder) { return try unavailable("\(folder.path) is not a super-resolution stage") }
        let model = try SuperResolutionModel.load(from: folder)
        guard model.unet.config.lowResolutionSize == baseSize else {
            return try unavailable("the super-resolution stage at \(folder.path) reads \(model.unet.config.lowResolutionSize)×\(model.unet.config.lowResolutionSize) images; this model draws \(baseSize)×\(baseSize)")
        }
        try model.to(device)
        if let srNoiseLevel {
            let n = model.schedule.config.trainTimesteps
            guard (0..<n).contains(srNoiseLevel) else { throw ValidationError("--sr-noise-level must be in 0..<\(n), got \(srNoiseLevel)") }
        }
        return SuperResolutionPipeline(model: model)
    }
}
