import ContextDiff
import Foundation
import NN
import Torch

/// The settings every side of `contextdiff benchmark` reads from `bench.json` in the work folder.
public struct BenchmarkSpec: Codable, Sendable {
    public struct Training: Codable, Sendable {
        public var batch: Int
        public var warmup: Int
        public var steps: Int
        public var learningRate: Double
        public var warmupSteps: Int
        public var totalSteps: Int
        public var minLearningRate: Double
        public var weightDecay: Double
        public var gradientClip: Double
        public var emaDecay: Double
        public var conditionDropout: Double
        public var seed: UInt64

        enum CodingKeys: String, CodingKey {
            case batch, warmup, steps, seed
            case learningRate = "learning_rate", warmupSteps = "warmup_steps", totalSteps = "total_steps"
            case minLearningRate = "min_learning_rate", weightDecay = "weight_decay", gradientClip = "gradient_clip"
            case emaDecay = "ema_decay", conditionDropout = "condition_dropout"
        }
    }

    public struct Sampling: Codable, Sendable {
        public var batch: Int
        public var steps: Int
        public var guidance: Double
        public var seed: UInt64
        /// Denoising steps run once before timing (same shapes).
        public var warmupSteps: Int
        public var repeats: Int

        enum CodingKeys: String, CodingKey {
            case batch, steps, guidance, seed, repeats
            case warmupSteps = "warmup_steps"
        }
    }

    /// One-shot video edit (``VideoEditPipeline/edit(video:sourcePrompt:targetPrompt:options:progress:)``).
    public struct Edit: Codable, Sendable {
        public var frames: Int
        public var tuneSteps: Int
        public var tuneLearningRate: Double
        public var steps: Int
        public var guidance: Double
        public var seed: UInt64
        public var method: VideoEditMethod
        public var frameAttention: FrameAttention
        public var fusion: AttentionFusionConfig
        public var inversionEvaluation: InversionEvaluation
        public var repeats: Int

        enum CodingKeys: String, CodingKey {
            case frames, steps, guidance, seed, method, fusion, repeats
            case tuneSteps = "tune_steps", tuneLearningRate = "tune_learning_rate", frameAttention = "frame_attention"
            case inversionEvaluation = "inversion_evaluation"
        }

        public init(frames: Int, tuneSteps: Int, steps: Int, guidance: Double, repeats: Int, defaults o: VideoEditOptions = VideoEditOptions()) {
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

        public var options: VideoEditOptions {
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

    public var threads: Int
    public var train: Training
    public var sample: Sampling
    /// The timed edit, and a short one whose output both sides must agree on first.
    public var edit: Edit?
    public var editCheck: Edit?
    /// diffusers' depth (default: the U-Net's).
    public var diffusersLayersPerBlock: Int?
    /// Where the timed workloads run ("cpu", "cuda:0"; nil: the CPU). Random draws stay on the
    /// CPU generator on both sides; on CUDA both run in full fp32 (TF32 off).
    public var device: String?

    enum CodingKeys: String, CodingKey {
        case threads, train, sample, edit, device
        case editCheck = "edit_check"
        case diffusersLayersPerBlock = "diffusers_layers_per_block"
    }

    /// ``device`` parsed (the CPU when absent).
    public func resolvedDevice() throws -> Device {
        guard let device else { return .cpu }
        guard let parsed = Device(device) else { throw BenchmarkError.incompleteFolder("bench.json names an unknown device '\(device)'") }
        return parsed
    }

    public static func load(from directory: URL) throws -> BenchmarkSpec {
        let url = directory.appendingPathComponent("bench.json")
        guard let data = try? Data(contentsOf: url) else { throw BenchmarkError.incompleteFolder("\(url.path) is missing or unreadable") }
        do { return try JSONDecoder().decode(BenchmarkSpec.self, from: data) } catch {
            throw BenchmarkError.incompleteFolder("\(url.path) is not a benchmark spec: \(error)")
        }
    }

    public func save(to directory: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: directory.appendingPathComponent("bench.json"), options: .atomic)
    }
}

/// The files of a benchmark work folder, shared by the orchestrator and the Swift worker.
public struct BenchmarkFolder: Sendable {
    public let url: URL

    public init(url: URL) { self.url = url }

    public var unet: URL { url.appendingPathComponent("unet") }
    public var adapter: URL { url.appendingPathComponent("adapter") }
    public var data: URL { url.appendingPathComponent("data.safetensors") }
    public var checkInputs: URL { url.appendingPathComponent("check_inputs.safetensors") }
    public var swiftOutputs: URL { url.appendingPathComponent("swift_outputs.safetensors") }
    public func samples(_ side: String) -> URL { url.appendingPathComponent("\(side)_samples.safetensors") }
    /// The inflated networks (2-D weights plus perturbed temporal layers) the edit starts from.
    public var videoUnet: URL { url.appendingPathComponent("video_unet") }
    public var videoAdapter: URL { url.appendingPathComponent("video_adapter") }
    /// The source video and the three prompts' encodings (`source_`, `target_`, `null_` +
    /// `tokens`/`mask`/`pooled`/`ids`) and the target→source token alignment (−1: new word).
    public var editInputs: URL { url.appendingPathComponent("edit_inputs.safetensors") }
    /// `edited`, `inverted`, `tuning_losses` of a side's first edit (`check`: the short edit).
    public func edit(_ side: String, check: Bool) -> URL { url.appendingPathComponent("\(side)_edit\(check ? "_check" : "").safetensors") }

    /// A fresh copy of the inflated model (tuning changes weights in place).
    public func loadVideoModel() throws -> VideoDiffusionModel {
        let video = try VideoDiffusionModel(inflating: loadModel())
        try video.unet.load(loadSafeTensors(videoUnet.appendingPathComponent(ModelFolder.weightsName)))
        if let adapter = video.adapter { try adapter.load(loadSafeTensors(videoAdapter.appendingPathComponent(ModelFolder.weightsName))) }
        return video
    }

    /// The model as the Swift side uses it (loaded back from the folder the Python side reads).
    public func loadModel() throws -> ContextDiffModel {
        let unet = try ModelFolder.load(UNet.self, from: unet)
        let adapter = try ModelFolder.load(ContextAdapter.self, from: adapter)
        return ContextDiffModel(unet: unet, adapter: adapter, schedule: try NoiseSchedule(NoiseScheduleConfig()), textEncoder: TextEncoderSpec())
    }
}
