import ArgumentParser
import ContextDiff
import Foundation
import NN
import Torch

/// The settings every side of `contextdiff benchmark` reads from `bench.json` in the work folder.
struct BenchmarkSpec: Codable {
    struct Training: Codable {
        var batch: Int
        var warmup: Int
        var steps: Int
        var learningRate: Double
        var warmupSteps: Int
        var totalSteps: Int
        var minLearningRate: Double
        var weightDecay: Double
        var gradientClip: Double
        var emaDecay: Double
        var conditionDropout: Double
        var seed: UInt64

        enum CodingKeys: String, CodingKey {
            case batch, warmup, steps, seed
            case learningRate = "learning_rate", warmupSteps = "warmup_steps", totalSteps = "total_steps"
            case minLearningRate = "min_learning_rate", weightDecay = "weight_decay", gradientClip = "gradient_clip"
            case emaDecay = "ema_decay", conditionDropout = "condition_dropout"
        }
    }

    struct Sampling: Codable {
        var batch: Int
        var steps: Int
        var guidance: Double
        var seed: UInt64
        /// Denoising steps run once before timing (same shapes).
        var warmupSteps: Int
        var repeats: Int

        enum CodingKeys: String, CodingKey {
            case batch, steps, guidance, seed, repeats
            case warmupSteps = "warmup_steps"
        }
    }

    /// One-shot video edit (``VideoEditPipeline/edit(video:sourcePrompt:targetPrompt:options:progress:)``).
    struct Edit: Codable {
        var frames: Int
        var tuneSteps: Int
        var tuneLearningRate: Double
        var steps: Int
        var guidance: Double
        var seed: UInt64
        var method: VideoEditMethod
        var frameAttention: FrameAttention
        var fusion: AttentionFusionConfig
        var inversionEvaluation: InversionEvaluation
        var repeats: Int

        enum CodingKeys: String, CodingKey {
            case frames, steps, guidance, seed, method, fusion, repeats
            case tuneSteps = "tune_steps", tuneLearningRate = "tune_learning_rate", frameAttention = "frame_attention"
            case inversionEvaluation = "inversion_evaluation"
        }

        init(frames: Int, tuneSteps: Int, steps: Int, guidance: Double, repeats: Int, defaults o: VideoEditOptions = VideoEditOptions()) {
            self.frames = frames
            self.tuneSteps = tuneSteps
            self.steps = steps
            self.guidance = guidance
            self.repeats = repeats
            tuneLearningRate = o.tuneLearningRate
            seed = o.seed
            method = .contextdiff
            frameAttention = o.frameAttention
            fusion = o.fusion
            inversionEvaluation = o.inversionEvaluation
        }

        var options: VideoEditOptions {
            var o = VideoEditOptions()
            o.method = method
            o.tuneSteps = tuneSteps
            o.tuneLearningRate = tuneLearningRate
            o.steps = steps
            o.guidance = guidance
            o.seed = seed
            o.frameAttention = frameAttention
            o.fusion = fusion
            o.inversionEvaluation = inversionEvaluation
            return o
        }
    }

    var threads: Int
    var train: Training
    var sample: Sampling
    /// The timed edit, and a short one whose output both sides must agree on first.
    var edit: Edit?
    var editCheck: Edit?
    /// diffusers' depth (default: the U-Net's).
    var diffusersLayersPerBlock: Int?

    enum CodingKeys: String, CodingKey {
        case threads, train, sample, edit
        case editCheck = "edit_check"
        case diffusersLayersPerBlock = "diffusers_layers_per_block"
    }

    static func load(from directory: URL) throws -> BenchmarkSpec {
        try JSONDecoder().decode(BenchmarkSpec.self, from: Data(contentsOf: directory.appendingPathComponent("bench.json")))
    }

    func save(to directory: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: directory.appendingPathComponent("bench.json"), options: .atomic)
    }
}

/// The files of a benchmark work folder, shared by the orchestrator and the Swift worker.
struct BenchmarkFolder {
    let url: URL
    var unet: URL { url.appendingPathComponent("unet") }
    var adapter: URL { url.appendingPathComponent("adapter") }
    var data: URL { url.appendingPathComponent("data.safetensors") }
    var checkInputs: URL { url.appendingPathComponent("check_inputs.safetensors") }
    var swiftOutputs: URL { url.appendingPathComponent("swift_outputs.safetensors") }
    func samples(_ side: String) -> URL { url.appendingPathComponent("\(side)_samples.safetensors") }
    /// The inflated networks (2-D weights plus perturbed temporal layers) the edit starts from.
    var videoUnet: URL { url.appendingPathComponent("video_unet") }
    var videoAdapter: URL { url.appendingPathComponent("video_adapter") }
    /// The source video and the three prompts' encodings (`source_`, `target_`, `null_` +
    /// `tokens`/`mask`/`pooled`/`ids`) and the target→source token alignment (−1: new word).
    var editInputs: URL { url.appendingPathComponent("edit_inputs.safetensors") }
    /// `edited`, `inverted`, `tuning_losses` of a side's first edit (`check`: the short edit).
    func edit(_ side: String, check: Bool) -> URL { url.appendingPathComponent("\(side)_edit\(check ? "_check" : "").safetensors") }

    /// A fresh copy of the inflated model (tuning changes weights in place).
    func loadVideoModel() throws -> VideoDiffusionModel {
        let video = try VideoDiffusionModel(inflating: loadModel())
        try video.unet.load(loadSafeTensors(videoUnet.appendingPathComponent(ModelFolder.weightsName)))
        if let adapter = video.adapter { try adapter.load(loadSafeTensors(videoAdapter.appendingPathComponent(ModelFolder.weightsName))) }
        return video
    }

    /// The model as the Swift side uses it (loaded back from the folder the Python side reads).
    func loadModel() throws -> ContextDiffModel {
        let unet = try ModelFolder.load(UNet.self, from: unet)
        let adapter = try ModelFolder.load(ContextAdapter.self, from: adapter)
        return ContextDiffModel(unet: unet, adapter: adapter, schedule: try NoiseSchedule(NoiseScheduleConfig()), textEncoder: TextEncoderSpec())
    }
}

/// One measurement of `contextdiff benchmark`, run in its own process so that its peak RSS
/// (VmHWM) is its own. Prints one JSON object on its last line.
struct BenchmarkWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "benchmark-worker",
        abstract: "One measurement of `contextdiff benchmark` (internal; run by it in a child process).",
        shouldDisplay: false
    )

    enum Workload: String, ExpressibleByArgument { case train, sample, edit, sgemm }

    @Argument(help: "train, sample, edit or sgemm.") var workload: Workload
    @Argument(help: "The benchmark work folder.") var directory: String
    @Flag(help: "Use the reference kernels (Kernels.useReferenceKernels) and glibc's default malloc settings.")
    var referenceKernels = false
    @Flag(help: "edit: run the short equivalence edit (bench.json's edit_check) instead of the timed one.")
    var check = false

    func run() throws {
        if referenceKernels {
            Kernels.useReferenceKernels()
        } else {
            Torch.keepFreedTensorMemory()
        }
        let folder = BenchmarkFolder(url: URL(fileURLWithPath: directory))
        let spec = try BenchmarkSpec.load(from: folder.url)
        Torch.numThreads = spec.threads
        if workload == .sgemm {
            // A 2048×2048 float32 matmul through libtorch (BLAS), best of 5.
            let gflops = try measureSgemm(size: 2048)
            let onednn = try measureOneDNNGemm(size: 2048)
            print("{\"impl\": \"swift\", \"sgemm_gflops\": \(gflops), \"onednn_gemm_gflops\": \(onednn), \"threads\": \(Torch.numThreads)}")
            return
        }
        if workload == .edit { return try runEdit(folder: folder, spec: spec) }
        let model = try folder.loadModel()
        let data = try loadSafeTensors(folder.data)
        guard let tokens = data["table_tokens"], let mask = data["table_mask"], let pooled = data["table_pooled"],
            let pixels = data["pixels"], let imageRows = data["image_rows"], let sampleRows = data["sample_rows"]
        else { throw ValidationError("benchmark data file \(folder.data.path) is incomplete") }
        let table = try Condition(tokens: tokens, mask: mask.to(.bool), pooled: pooled)
        let nullRow = tokens.shape[0] - 1
        var result: [String: Any] = ["impl": referenceKernels ? "swift-reference" : "swift", "threads": Torch.numThreads]
        switch workload {
        case .train:
            // The real trainer: captions "row r" name rows of the saved table, "" its null row.
            let rows = try imageRows.scalars(as: Int64.self).map(Int.init)
            let source = try InMemoryImageSource(pixels: pixels, captions: rows.map { "row \($0)" })
            let captions = try CaptionTable(captions: source.captions) { texts in
                let r = texts.map { Int64($0.isEmpty ? nullRow : Int($0.dropFirst(4))!) }
                return try table.selecting(Tensor(r, shape: [r.count]))
            }
            var config = TrainingConfig.shapesDefault
            let t = spec.train
            config.batchSize = t.batch
            config.learningRate = t.learningRate
            config.warmupSteps = t.warmupSteps
            config.steps = t.totalSteps
            config.minLearningRate = t.minLearningRate
            config.weightDecay = t.weightDecay
            config.gradientClip = t.gradientClip
            config.emaDecay = t.emaDecay
            config.conditionDropout = t.conditionDropout
            config.seed = t.seed
            let trainer = try Trainer(
                model: model, config: config, data: source, captions: captions,
                runDirectory: folder.url.appendingPathComponent("swift-run"))
            var losses: [Double] = [], times: [Double] = []
            let clock = ContinuousClock()
            for i in 0..<(t.warmup + t.steps) {
                var loss = 0.0
                let d = try clock.measure { loss = try trainer.trainStep() }
                losses.append(loss)
                if i >= t.warmup { times.append(d.seconds) }
            }
            result["images_per_s"] = Double(t.batch * times.count) / times.reduce(0, +)
            result["step_seconds"] = times
            result["losses"] = losses
            result["parameters"] = model.parameters.reduce(0) { $0 + $1.count }
        case .sgemm, .edit:
            return
        case .sample:
            let s = spec.sample
            let conditional = try table.selecting(sampleRows)
            let unconditional = try table.selecting(Tensor([Int64](repeating: Int64(nullRow), count: s.batch), shape: [s.batch]))
            var options = GenerationOptions()
            options.sampler = .ddim
            options.guidance = s.guidance
            options.seed = s.seed
            options.eta = 0
            options.steps = s.warmupSteps
            _ = try TextToImagePipeline.sample(
                model: model, conditional: conditional, unconditional: unconditional, options: options)
            options.steps = s.steps
            var times: [Double] = []
            var images: Tensor?
            let clock = ContinuousClock()
            for _ in 0..<s.repeats {
                let d = try clock.measure {
                    images = try TextToImagePipeline.sample(
                        model: model, conditional: conditional, unconditional: unconditional, options: options)
                }
                times.append(d.seconds)
            }
            if let images { try saveSafeTensors(["samples": images], to: folder.samples(referenceKernels ? "swift-reference" : "swift")) }
            result["images_per_s"] = Double(s.batch * times.count) / times.reduce(0, +)
            result["run_seconds"] = times
            result["parameters"] = model.parameters.reduce(0) { $0 + $1.count }
        }
        result["peak_rss_mb"] = peakResidentMegabytes()
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
    }
}

extension BenchmarkWorkerCommand {
    /// The one-shot video edit, `repeats` times, each from a fresh copy of the inflated model
    /// (tuning changes its weights); the first edit's tensors are saved for the comparison.
    func runEdit(folder: BenchmarkFolder, spec: BenchmarkSpec) throws {
        guard let e = check ? spec.editCheck : spec.edit else {
            throw ValidationError("bench.json has no \(check ? "edit_check" : "edit") settings")
        }
        let inputs = try loadSafeTensors(folder.editInputs)
        let encoder = try StoredPromptEncoder(inputs)
        guard let video = inputs["video"] else { throw ValidationError("\(folder.editInputs.path) has no video") }
        let clock = ContinuousClock()
        var times: [Double] = [], phases: [String: Double] = [:], first: VideoEditResult?
        for _ in 0..<e.repeats {
            let pipeline = try VideoEditPipeline(model: folder.loadVideoModel(), textEncoder: encoder)
            var starts: [(String, ContinuousClock.Instant)] = []
            var result: VideoEditResult?
            let started = clock.now
            result = try pipeline.edit(video: video, sourcePrompt: "source", targetPrompt: "target", options: e.options) { p in
                if p.completed == 0 { starts.append((p.phase, clock.now)) }
                return true
            }
            let ended = clock.now
            times.append(started.duration(to: ended).seconds)
            for (i, (name, at)) in starts.enumerated() {
                phases[name] = at.duration(to: i + 1 < starts.count ? starts[i + 1].1 : ended).seconds
            }
            if first == nil { first = result }
        }
        guard let first else { return }
        try saveSafeTensors([
            "edited": first.edited, "inverted": first.invertedLatent,
            "tuning_losses": Tensor(first.tuningLosses.isEmpty ? [0] : first.tuningLosses, shape: [Swift.max(1, first.tuningLosses.count)]),
        ], to: folder.edit(referenceKernels ? "swift-reference" : "swift", check: check))
        let result: [String: Any] = [
            "impl": referenceKernels ? "swift-reference" : "swift", "threads": Torch.numThreads,
            "images_per_s": Double(e.frames * times.count) / times.reduce(0, +), "edit_seconds": times,
            "phase_seconds": phases, "tuning_losses": first.tuningLosses, "peak_rss_mb": peakResidentMegabytes(),
        ]
        print(String(decoding: try JSONSerialization.data(withJSONObject: jsonSafe(result), options: [.sortedKeys]), as: UTF8.self))
    }
}

/// The benchmark's three prompts ("source", "target" and the empty one) as stored encodings, so
/// that every side edits with the same text states without a text encoder.
final class StoredPromptEncoder: TextEncoder {
    let tokenizer: any TextTokenizer
    let width: Int
    let stored: [String: TextEncoding]

    init(_ inputs: [String: Tensor]) throws {
        var stored: [String: TextEncoding] = [:]
        for (text, prefix) in [("source", "source"), ("target", "target"), ("", "null")] {
            guard let tokens = inputs[prefix + "_tokens"], let mask = inputs[prefix + "_mask"], let pooled = inputs[prefix + "_pooled"],
                  let ids = inputs[prefix + "_ids"]
            else { throw ValidationError("edit inputs lack the \(prefix) prompt") }
            stored[text] = TextEncoding(
                tokenStates: tokens, attentionMask: try mask.to(.bool), pooled: pooled,
                tokenIDs: [try ids.scalars(as: Int64.self).map(Int.init)])
        }
        self.stored = stored
        width = stored["source"]!.tokenStates.shape[2]
        tokenizer = try WordLevelTokenizer(words: [], maxLength: stored.values.map { $0.tokenStates.shape[1] }.max()!)
    }

    func encode(_ texts: [String]) throws -> TextEncoding {
        guard texts.count == 1, let e = stored[texts[0]] else {
            throw ValidationError("the benchmark's prompt encoder knows one prompt at a time of \(stored.keys.sorted())")
        }
        return e
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}

/// This process's peak resident set size (VmHWM of /proc/self/status), in MiB.
func peakResidentMegabytes() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return .nan }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Double($0) }
        return (kb ?? .nan) / 1024
    }
    return .nan
}
