import ArgumentParser
import ContextDiff
import Datasets
import Foundation
import Torch
import Workflows

/// `contextdiff attention-maps`: per word, the cross-attention map over the denoising steps
/// (paper App. A), ContextDiff and its baseline side by side.
struct AttentionMapsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention-maps",
        abstract: "Write each word's cross-attention map over the denoising steps (a PNG: one row per word), ContextDiff beside its baseline."
    )

    @Argument(help: "The prompt.") var prompt: String
    @Option(help: "Model folder (default: the shipped model).") var model: String?
    @Option(help: "A baseline model folder (trained with r_φ ≡ 0) for the right panel; default: the same model sampled without its adapter.")
    var baselineModel: String?
    @OptionGroup var sampling: SamplingOptions
    @Option(help: "Seed of the initial noise (the same for both panels).") var seed: UInt64 = 0
    @Option(help: "Steps shown per row (spread from the first to the last).") var columns = 8
    @Option(help: "Enlarge every cell this many times.") var scale = 4
    @Option(name: .shortAndLong, help: "Output PNG.") var output = "attention-maps.png"
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        guard !prompt.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ValidationError("the prompt is empty; describe the image to generate")
        }
        guard (1...64).contains(columns) else { throw ValidationError("--columns must be in 1...64") }
        guard (1...16).contains(scale) else { throw ValidationError("--scale must be in 1...16") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard output.lowercased().hasSuffix(".png") else { throw ValidationError("--output must be a .png file") }
    }

    func run() throws {
        useThreads(threads)
        guard let modelURL = model.map({ URL(fileURLWithPath: $0) }) ?? defaultModelDirectory() else {
            throw ValidationError("no model given and no shipped model found at models/default; pass --model DIR")
        }
        let textEncoder = try MiniLMTextEncoder()
        let main = try TextToImagePipeline(model: ContextDiffModel.load(from: modelURL), textEncoder: textEncoder)
        var options = GenerationOptions()
        sampling.apply(to: &options)
        options.seed = seed
        var panels: [(String, TextToImagePipeline, GenerationOptions)] = [
            (main.model.adapter == nil ? "baseline (no adapter)" : "ContextDiff", main, options)
        ]
        if let baselineModel {
            let base = try TextToImagePipeline(
                model: ContextDiffModel.load(from: URL(fileURLWithPath: baselineModel)), textEncoder: textEncoder)
            panels.append(("baseline \(baselineModel)", base, options))
        } else if main.model.adapter != nil {
            var off = options
            off.useContext = false
            panels.append(("the same model without r_φ", main, off))
        }
        let words = try AttentionMapFigure.words(of: prompt, tokenizer: textEncoder.tokenizer)
        var images: [RGBImage] = []
        for (label, pipeline, o) in panels {
            let bar = ProgressBar(total: o.steps, label: label)
            let maps = try pipeline.attentionMaps(prompts: [prompt], options: o) { p in
                bar.update(p.completed)
                return true
            }
            let steps = AttentionMapFigure.shownSteps(of: maps.timesteps.count, count: columns)
            images.append(try AttentionMapFigure.panel(maps, words: words, steps: steps, scale: scale))
            if images.count == 1 {
                note("rows: " + words.map(\.word).joined(separator: ", ") + "; columns: the image, then timesteps "
                    + steps.map { String(maps.timesteps[$0]) }.joined(separator: ", "))
            }
        }
        note("panels, left to right: " + panels.map(\.0).joined(separator: " | "))
        let url = URL(fileURLWithPath: output)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try RGBImage.grid(images, columns: images.count, gutter: 4 * scale).writePNG(to: url)
        print(url.path)
    }
}
