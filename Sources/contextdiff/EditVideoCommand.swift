import ArgumentParser
import ContextDiff
import Datasets
import Evaluation
import Foundation
import NN
import Torch
import Workflows

extension VideoEditMethod: ExpressibleByArgument {}

/// Where a model with a layout prior is told the objects are during an edit.
enum EditLayoutMode: String, ExpressibleByArgument, CaseIterable {
    /// The source video's own objects, found in every frame; the target's words take their places.
    case source
    /// No boxes painted: the inversion alone carries the layout (`--layout none`).
    case unpainted = "none"
    /// The boxes the prior predicts from each prompt (one place for every frame).
    case predicted
}
extension FrameAttention: ExpressibleByArgument {}
extension VideoTuning: ExpressibleByArgument {}

/// `OUT` without a video/image extension, so `--output out/edit.mp4` and `--output out/edit`
/// both write `out/edit.{mp4,gif,png}`.
func outputStem(_ path: String) -> URL {
    let url = URL(fileURLWithPath: path)
    return ["mp4", "gif", "png"].contains(url.pathExtension.lowercased()) ? url.deletingPathExtension() : url
}

/// Writes `video` as STEM.mp4, STEM.gif and STEM.png (a strip of the frames); returns the paths.
func writeVideoOutputs(_ video: Video, stem: URL, ffmpeg: FFmpeg, scale: Int) throws -> [URL] {
    let mp4 = stem.appendingPathExtension("mp4"), gif = stem.appendingPathExtension("gif")
    let png = stem.appendingPathExtension("png")
    try ffmpeg.write(video, to: mp4, scale: scale)
    try ffmpeg.write(video, to: gif, scale: scale)
    try video.strip().writePNG(to: png)
    return [mp4, gif, png]
}

func prepareOutputFolder(_ stem: URL) throws {
    let folder = stem.deletingLastPathComponent()
    do {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    } catch {
        throw ValidationError("cannot create the output folder \(folder.path): \(error.localizedDescription)")
    }
    guard FileManager.default.isWritableFile(atPath: folder.path) else {
        throw ValidationError("the output folder \(folder.path) is not writable")
    }
}

struct EditVideoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edit-video",
        abstract: "Edit a video with a text prompt: one-shot tuning, contextual DDIM inversion, attention fusion, editing.",
        discussion: """
            The text-to-image model is inflated to video (sparse-causal self-attention, zero-initialised \
            temporal attention; the adapter gains causal temporal attention), tuned on the source video \
            with the source prompt, inverted with DDIM, and sampled with the target prompt. Methods: \
            contextdiff (fusion + adapter), fatezero (fusion, no adapter), tuneavideo (neither). \
            Writes OUT.mp4, OUT.gif, OUT.png (the edited frames side by side) and OUT-source.png.
            """
    )

    @Option(help: "Input video: mp4, gif (anything ffmpeg reads) or a folder of PNG/JPEG frames.") var video: String
    @Option(help: "What the source video shows.") var sourcePrompt: String
    @Option(help: "What the edited video should show.") var targetPrompt: String
    @Option(name: .shortAndLong, help: "Output stem: writes OUT.mp4, OUT.gif, OUT.png and OUT-source.png.")
    var output: String
    @Option(help: "Text-to-image model folder (default: the shipped model, models/default).") var model: String?
    @Option(help: "contextdiff, fatezero or tuneavideo.") var method: VideoEditMethod = .contextdiff
    @Option(help: "One-shot tuning steps on the source video (0: zero-shot).") var tuneSteps = 50
    @Option(name: .customLong("tune-lr"), help: "Tuning learning rate.") var tuneLearningRate = 1e-4
    @Option(help: ArgumentHelp(
        "What tuning updates: queries-temporal (Tune-A-Video: the U-Net's attention queries and temporal layers, and the adapter) or adapter (the paper's protocol: r_φ only).",
        discussion: "With adapter, fatezero and tuneavideo have nothing to tune and run zero-shot."))
    var tune: VideoTuning = .queriesAndTemporal
    @Option(help: "DDIM steps of inversion and editing.") var steps = 20
    @Option(help: "Classifier-free guidance weight of the editing.") var guidance = VideoEditOptions().guidance
    @Option(help: "Seed of tuning.") var seed: UInt64 = 0
    @Option(help: "Frames read from the video.") var frames = 8
    @Option(help: "Share of the editing steps (from the noisiest) that take the inversion's attention maps.")
    var fusionFraction = 0.5
    @Option(help: "Self-attention across frames: sparse-causal or per-frame.") var frameAttention: FrameAttention = .sparseCausal
    @Option(help: "Enlarge the written mp4/gif this many times (nearest neighbour).") var scale = 4
    @Option(help: ArgumentHelp(
        "With a model that has a layout prior (the shipped one): source, none or predicted.",
        discussion: """
            source: find the source prompt's objects in every frame and paint the target prompt's objects \
            in their places (layout-to-image per frame); needs prompts like "a red circle" and a plain \
            background. none: paint nothing. predicted: the boxes the prior predicts from each prompt, \
            one place for all frames. Default: source when the video and prompts allow it, else none \
            (with a note); see docs/VIDEO.md.
            """))
    var layout: EditLayoutMode?
    @Flag(help: ArgumentHelp("Same as --layout predicted (kept for scripts written before --layout).", visibility: .hidden))
    var paintLayout = false
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var deviceOptions: DeviceOptions

    func validate() throws {
        guard !sourcePrompt.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ValidationError("the source prompt is empty; describe the video (--source-prompt)")
        }
        guard !targetPrompt.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ValidationError("the target prompt is empty; describe the edit (--target-prompt)")
        }
        guard (1...64).contains(frames) else { throw ValidationError("--frames must be in 1...64") }
        guard tuneSteps >= 0 else { throw ValidationError("--tune-steps must be ≥ 0") }
        guard steps > 0 else { throw ValidationError("--steps must be positive") }
        guard guidance >= 0, guidance.isFinite else { throw ValidationError("--guidance must be ≥ 0") }
        guard (0...1).contains(fusionFraction) else { throw ValidationError("--fusion-fraction must be in [0, 1]") }
        guard (1...32).contains(scale) else { throw ValidationError("--scale must be in 1...32") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        if paintLayout, let layout, layout != .predicted { throw ValidationError("--paint-layout contradicts --layout \(layout.rawValue)") }
    }

    func run() throws {
        useThreads(threads)
        let device = try deviceOptions.resolved()
        let ffmpeg = try FFmpeg()
        let stem = outputStem(output)
        try prepareOutputFolder(stem)
        guard let modelURL = model.map({ URL(fileURLWithPath: $0) }) ?? defaultModelDirectory() else {
            throw ValidationError("no model given and no shipped model found at models/default; pass --model DIR")
        }
        let base = try ContextDiffModel.load(from: modelURL)
        let size = base.unet.config.sampleSize
        let source = try ffmpeg.read(URL(fileURLWithPath: video), size: size, maxFrames: frames)
        if source.frames.count < frames {
            note("note: the video has \(source.frames.count) frame(s); editing all of them")
        }
        let videoModel = try Torch.withSeed(seed) { try VideoDiffusionModel(inflating: base) }
        try videoModel.to(device)
        let mode: EditLayoutMode? = paintLayout ? .predicted : layout
        var layouts: VideoEditLayouts?
        if let mode, mode != .unpainted, videoModel.unet.layoutPrior == nil {
            throw ValidationError("--layout \(mode.rawValue): the model has no layout prior")
        }
        switch mode {
        case .some(.predicted): videoModel.unet.paintsPredictedLayout = true
        case .some(.unpainted): break
        case .some(.source):
            do {
                layouts = try SourceLayoutTracking().layouts(
                    frames: source.frames, sourcePrompt: sourcePrompt, targetPrompt: targetPrompt)
            } catch let error as SourceLayoutError {
                throw ValidationError("--layout source: \(error)")
            }
        case nil:
            guard videoModel.unet.layoutPrior != nil else { break }
            let notice: String?
            (layouts, notice) = SourceLayoutTracking().defaultLayouts(
                frames: source.frames, sourcePrompt: sourcePrompt, targetPrompt: targetPrompt)
            if let notice { note("note: \(notice); pass --layout none to silence this") }
        }
        let pipeline = try VideoEditPipeline(model: videoModel, textEncoder: MiniLMTextEncoder())
        var options = VideoEditOptions()
        options.method = method
        options.tuneSteps = tuneSteps
        options.tuneLearningRate = tuneLearningRate
        options.tuning = tune
        options.steps = steps
        options.guidance = guidance
        options.seed = seed
        options.frameAttention = frameAttention
        options.fusion.fraction = fusionFraction
        try options.validate(trainTimesteps: base.schedule.config.trainTimesteps)

        let started = Date()
        let display = ProgressDisplay()
        let result = try pipeline.edit(
            video: source.tensor(), sourcePrompt: sourcePrompt, targetPrompt: targetPrompt, options: options,
            layouts: layouts
        ) { display.update($0) }
        for notice in result.notices { note("warning: \(notice)") }
        let edited = try Video(tensor: result.edited, fps: source.fps)
        for url in try writeVideoOutputs(edited, stem: stem, ffmpeg: ffmpeg, scale: scale) { print(url.path) }
        let sourceStrip = stem.deletingLastPathComponent().appendingPathComponent(stem.lastPathComponent + "-source.png")
        try source.strip().writePNG(to: sourceStrip)
        print(sourceStrip.path)
        // How far the inversion is from N(0, I): a model that memorised the source inverts to a
        // small latent, and the edit then rests on its fusion and layout (docs/VIDEO.md).
        let latentStd = try result.invertedLatent.to(.float32).std().item()
        note(String(
            format: "%@: edited %d frames %d×%d in %.1f s (fusion maps %.1f MiB, bound %.1f MiB; inverted x_T std %.3f; layout: %@)",
            method.rawValue, source.frames.count, size, size, Date().timeIntervalSince(started),
            Double(result.fusionBytes) / 1_048_576, Double(result.fusionBound) / 1_048_576, latentStd,
            layouts == nil ? (videoModel.unet.paintsPredictedLayout ? "predicted" : "none") : "source"))
    }
}

/// `contextdiff dataset video`: one synthetic benchmark video (objects moving over the frames).
struct DatasetVideoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "video",
        abstract: "Write a synthetic benchmark video (OUT.mp4, OUT.gif, OUT.png, OUT-frames/) and print its caption."
    )

    @Option(name: .shortAndLong, help: "Output stem.") var output: String
    @Option(help: "Sample index.") var index = 0
    @Option(help: "Split: train, validation or heldout.") var split: Split = .train
    @Option(help: "Benchmark seed.") var seed: UInt64 = 0
    @Option(help: "Frame width and height.") var size = 32
    @Option(help: "Frames.") var frames = 8
    @Option(help: "Enlarge the written mp4/gif this many times.") var scale = 1

    func run() throws {
        let benchmark = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: size, seed: seed))
        let sample = try benchmark.video(index: index, split: split, frames: frames)
        let ffmpeg = try FFmpeg()
        let stem = outputStem(output)
        try prepareOutputFolder(stem)
        let video = try sample.video()
        for url in try writeVideoOutputs(video, stem: stem, ffmpeg: ffmpeg, scale: scale) { print(url.path) }
        let folder = stem.deletingLastPathComponent().appendingPathComponent(stem.lastPathComponent + "-frames")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (i, frame) in video.frames.enumerated() {
            try frame.writePNG(to: folder.appendingPathComponent(String(format: "frame-%03d.png", i)))
        }
        print(folder.path)
        note("caption: \(sample.caption)")
    }
}

/// `contextdiff evaluate-video`: the paper's Table 2 metrics of one edit (CLIP-text, CLIP-temporal
/// with the contrastive model, and structure preservation against the source).
struct EvaluateVideoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate-video",
        abstract: "Score an edited video: CLIP-text (contrastive model and attribute evaluator), CLIP-temporal and structure preservation."
    )

    @Option(help: "The source video (mp4, gif or a folder of frames).") var source: String
    @Option(help: "The edited video (OUT.gif is lossless at the model size; OUT.mp4 works too).") var edited: String
    @Option(help: "The edit prompt.") var prompt: String
    @Option(help: "Contrastive image–text model folder (default: models/clip).") var clip: String?
    @Option(help: "Attribute evaluator folder for the per-frame alignment (default: models/evaluator, skipped if absent).")
    var evaluator: String?
    @Option(help: "Frames compared.") var frames = 8
    @Option(help: "Frame size the videos are read at (the contrastive model's image size).") var size = 32
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard !prompt.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ValidationError("the prompt is empty")
        }
        guard (1...64).contains(frames), size > 0, threads >= 1 else { throw ValidationError("bad --frames, --size or --threads") }
    }

    func run() throws {
        useThreads(threads)
        let ffmpeg = try FFmpeg()
        let a = try ffmpeg.read(URL(fileURLWithPath: source), size: size, maxFrames: frames)
        let b = try ffmpeg.read(URL(fileURLWithPath: edited), size: size, maxFrames: frames)
        let n = min(a.frames.count, b.frames.count)
        guard n > 0 else { throw VideoIOError.noFrames(path: edited) }
        if a.frames.count != b.frames.count {
            note("note: comparing the first \(n) frames (source has \(a.frames.count), edit \(b.frames.count))")
        }
        let (scorer, _) = try loadScorer(clip, textEncoder: MiniLMTextEncoder())
        let attributeEvaluator: AttributeEvaluator?
        if evaluator != nil || EvaluationModels.exists(defaultEvaluatorDirectory()) {
            attributeEvaluator = try loadEvaluator(evaluator).0
        } else {
            attributeEvaluator = nil
            note("note: no attribute evaluator at \(defaultEvaluatorDirectory().path); the evaluator alignment is skipped")
        }
        let s = try VideoMetrics.scores(
            source: Video(frames: Array(a.frames.prefix(n))).tensor(), edited: Video(frames: Array(b.frames.prefix(n))).tensor(),
            prompt: prompt, scorer: scorer, evaluator: attributeEvaluator)
        if attributeEvaluator != nil, s.evaluatorText == nil {
            note("note: '\(prompt)' is not a benchmark caption; the evaluator alignment is skipped")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(s), as: UTF8.self))
        } else {
            var line = String(
                format: "CLIP-text %.2f  CLIP-temporal %.4f (all pairs %.4f)  structure: mask IoU %.3f, box IoU %.3f", s.clipText,
                s.clipTemporal, s.clipTemporalAllPairs, s.structure, s.structureBoxes)
            if let e = s.evaluatorText { line += String(format: "  evaluator alignment %.1f %%", 100 * e) }
            print(line)
        }
    }
}
