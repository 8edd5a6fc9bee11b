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

    var threads: Int
    var train: Training
    var sample: Sampling
    /// diffusers' depth (default: the U-Net's).
    var diffusersLayersPerBlock: Int?

    enum CodingKeys: String, CodingKey {
        case threads, train, sample
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

    enum Workload: String, ExpressibleByArgument { case train, sample, sgemm }

    @Argument(help: "train, sample or sgemm.") var workload: Workload
    @Argument(help: "The benchmark work folder.") var directory: String
    @Flag(help: "Use the reference kernels (Kernels.useReferenceKernels) and glibc's default malloc settings.")
    var referenceKernels = false

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
            print("{\"impl\": \"swift\", \"sgemm_gflops\": \(gflops), \"threads\": \(Torch.numThreads)}")
            return
        }
        let model = try folder.loadModel()
        let data = try loadSafeTensors(folder.data)
        guard let tokens = data["table_tokens"], let mask = data["table_mask"], let pooled = data["table_pooled"],
            let pixels = data["pixels"], let imageRows = data["image_rows"], let sampleRows = data["sample_rows"]
        else { throw ValidationError("benchmark data file \(folder.data.path) is incomplete") }
        let table = try TextCondition(tokens: tokens, mask: mask.to(.bool), pooled: pooled)
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
        case .sgemm:
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
