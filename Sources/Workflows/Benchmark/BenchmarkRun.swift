import ContextDiff
import Datasets
import Foundation
import NN
import Torch

/// Errors of `contextdiff benchmark`.
public enum BenchmarkError: Error, CustomStringConvertible, Equatable {
    /// A setting outside its range; `option` is the setting's name (`train_batch`).
    case invalidSetting(option: String, message: String)
    /// Swift and the PyTorch twin compute different things on the same weights and inputs.
    case disagreement(String)
    /// A worker (Swift or Python) could not start, failed, or printed no JSON; `log`: the end of its stderr.
    case workerFailed(what: String, message: String, log: String)
    /// No Python with torch (or diffusers), or no bench_peer.py.
    case peerUnavailable(String)
    /// The work folder lacks a file or a setting a workload needs.
    case incompleteFolder(String)

    public var description: String {
        switch self {
        case let .invalidSetting(option, message): "\(option): \(message)"
        case let .disagreement(message), let .peerUnavailable(message), let .incompleteFolder(message): message
        case let .workerFailed(what, message, log): "\(what) failed: \(message)" + (log.isEmpty ? "" : "\n\(log)")
        }
    }
}

/// How to start a Swift worker process: `executable arguments... WORKLOAD FOLDER [--reference-kernels] [--check]`.
public struct BenchmarkWorker: Sendable {
    public var executable: String
    public var arguments: [String]

    public init(executable: String, arguments: [String]) {
        self.executable = executable
        self.arguments = arguments
    }
}

/// What the benchmark measured: the JSON document (`--json-output`), the printed summary, and
/// the figures a caller checks.
public struct BenchmarkResult: @unchecked Sendable {
    /// Every figure, as written to JSON (non-finite numbers still in; ``jsonData()`` writes them as null).
    public let document: [String: Any]
    /// The tables and ratios, as `contextdiff benchmark` prints them.
    public let summary: String
    /// max |Swift − twin| of the U-Net and of r_φ on the same weights and inputs.
    public let unetMaxAbsDiff: Double
    public let adapterMaxAbsDiff: Double
    public let ratios: [String: Double]
    public let targets: [String: String]

    public func jsonData() throws -> Data {
        try JSONSerialization.data(withJSONObject: jsonSafe(document), options: [.prettyPrinted, .sortedKeys])
    }
}

/// `contextdiff benchmark`: the Swift implementation and its PyTorch peers, side by side in one
/// invocation, on the same weights and inputs (DESIGN §8, docs/PERFORMANCE.md).
///
/// 1. Builds the shipped model (U-Net + adapter r_φ), saves weights, data and settings to a work
///    folder, and checks that the PyTorch twin (`benchmarks/peer/contextdiff_torch.py`) loaded
///    from them gives the same U-Net and adapter outputs (fails otherwise).
/// 2. Times, each workload in its own process (so peak RSS is per side and per workload):
///    (a) the training step of the real trainer, (b) DDIM sampling with guidance and the adapter,
///    for Swift, the twin and diffusers' `UNet2DConditionModel` of the same widths, and (c) the
///    one-shot video edit (tuning, inversion with recorded attention maps, fused guided sampling
///    with the adapter) for Swift and the twin, after a short edit on which both must agree.
/// 3. Measures a large sgemm, counts FLOPs, and returns the tables and the ratios.
public struct BenchmarkSettings: Sendable, Equatable {
    /// Intra-op threads for every side.
    public var threads: Int
    /// OpenBLAS threads for every side (nil: `threads`). At 2 threads the PyTorch peers run
    /// faster with 1 (docs/PERFORMANCE.md, Threads).
    public var blasThreads: Int?
    public var trainBatch = 32
    /// Timed training steps, after `trainWarmup` untimed ones.
    public var trainSteps = 5
    public var trainWarmup = 2
    /// Sampling batch (images; the guided U-Net call sees twice as many).
    public var sampleBatch = 16
    public var ddimSteps = 50
    public var sampleRepeats = 1
    /// Rounds over all sides; each side keeps its best (robust to a changing background load).
    public var rounds = 1
    public var guidance = 3.0
    /// Maximum |Swift − twin| allowed on the U-Net and adapter outputs.
    public var tolerance = 1e-4
    public var skipDiffusers = false
    /// ResBlocks per level of the diffusers U-Net (nil: the same depth as ours).
    public var diffusersLayersPerBlock: Int?
    /// Also time Swift with its reference kernels (the "before" of docs/NOTES.md "Performance").
    public var referenceSide = true
    /// Frames of the timed video edit (0 leaves the edit out).
    public var editFrames = 8
    public var editTuneSteps = 50
    public var editSteps = 20
    public var editRepeats = 1
    /// Maximum |Swift − twin| / max |twin| allowed on the short check edit's output.
    public var editTolerance = 1e-3
    /// Where the timed training and sampling run, on both Swift and the twin. On CUDA the video
    /// edit, the diffusers peer and the reference kernels are left out (``forDevice()``).
    public var device = Device.cpu
    /// Also time training and sampling in bf16 mixed precision (Swift's ``Precision/bf16``; the
    /// PyTorch peers with `torch.autocast`), beside float32. By default where the CPU computes
    /// bfloat16 natively.
    public var bf16 = Precision.automatic(for: .cpu).precision == .bf16

    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount) {
        self.threads = threads
    }

    /// These settings with what does not run on `device` left out: on CUDA, the video edit, the
    /// diffusers peer and the reference kernels (CPU kernels); the list says what was dropped.
    public func forDevice() -> (settings: BenchmarkSettings, dropped: [String]) {
        guard case .cuda = device else { return (self, []) }
        var s = self, dropped: [String] = []
        if s.editFrames > 0 { s.editFrames = 0; dropped.append("the video edit") }
        if !s.skipDiffusers { s.skipDiffusers = true; dropped.append("the diffusers peer") }
        if s.referenceSide { s.referenceSide = false; dropped.append("the reference-kernel side") }
        if s.bf16 { s.bf16 = false; dropped.append("the bf16 sides") }
        return (s, dropped)
    }

    /// Throws ``BenchmarkError/invalidSetting(option:message:)`` naming the first setting out of range.
    public func validate() throws {
        func require(_ ok: Bool, _ option: String, _ message: String) throws {
            guard ok else { throw BenchmarkError.invalidSetting(option: option, message: message) }
        }
        try require(threads >= 1, "threads", "must be at least 1")
        try require((blasThreads ?? 1) >= 1, "blas_threads", "must be at least 1")
        try require(trainBatch >= 1, "train_batch", "must be at least 1")
        try require(trainSteps >= 1, "train_steps", "must be at least 1")
        try require(trainWarmup >= 0, "train_warmup", "must not be negative")
        try require(sampleBatch >= 1, "sample_batch", "must be at least 1")
        try require((1...1000).contains(ddimSteps), "ddim_steps", "must be in 1...1000")
        try require(sampleRepeats >= 1, "sample_repeats", "must be at least 1")
        try require(rounds >= 1, "rounds", "must be at least 1")
        try require(guidance.isFinite && guidance >= 0, "guidance", "must be finite and >= 0")
        try require(tolerance.isFinite && tolerance >= 0, "tolerance", "must be finite and >= 0")
        try require((diffusersLayersPerBlock ?? 1) >= 1, "diffusers_layers_per_block", "must be at least 1")
        try require((0...64).contains(editFrames), "edit_frames", "must be in 0...64")
        try require(editTuneSteps >= 0, "edit_tune_steps", "must not be negative")
        try require((1...1000).contains(editSteps), "edit_steps", "must be in 1...1000")
        try require(editRepeats >= 1, "edit_repeats", "must be at least 1")
        try require(editTolerance.isFinite && editTolerance >= 0, "edit_tolerance", "must be finite and >= 0")
    }

    /// Prepares a work folder, checks that Swift and the PyTorch twin agree, times every
    /// workload on every side (each in its own process), and returns the figures. `notes`
    /// receives one line per stage (what is being measured now).
    /// - Parameters:
    ///   - worker: how to start a Swift worker process (`contextdiff benchmark-worker`).
    ///   - peer: the Python side.
    ///   - keepFiles: keep the work folder (weights, data, samples) instead of deleting it.
    public func run(worker: BenchmarkWorker, peer: BenchmarkPeer, keepFiles: Bool = false, notes: (String) -> Void = { _ in }) throws
        -> BenchmarkResult
    {
        try validate()
        Torch.keepFreedTensorMemory()
        Torch.numThreads = threads
        var peer = peer
        peer.environment = childEnvironment
        let work = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("contextdiff-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { if !keepFiles { try? FileManager.default.removeItem(at: work) } }
        let folder = BenchmarkFolder(url: work)
        let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
        notes("work folder \(work.path); python \(peer.python); load average before: \(load)")

        // 1. Same weights and inputs for every side; equivalence first.
        let textTokens = 32
        let model = try prepare(folder, textTokens: textTokens)
        let check = try peer.run(["check", work.path])
        let unetDiff = check.double("unet_max_abs_diff"), adapterDiff = check.double("adapter_max_abs_diff")
        notes(String(format: "equivalence: U-Net max |Swift − twin| %.2e, adapter %.2e (tolerance %.0e)", unetDiff, adapterDiff, tolerance))
        guard unetDiff <= tolerance, adapterDiff <= tolerance else {
            throw BenchmarkError.disagreement(String(
                format: "Swift and the PyTorch twin disagree: U-Net %.3e, adapter %.3e > %.0e; not benchmarking different models",
                unetDiff, adapterDiff, tolerance))
        }

        func swiftSide(_ workload: String, reference: Bool = false, check: Bool = false, bf16: Bool = false) throws -> Report {
            try runJSON(
                executable: worker.executable,
                arguments: worker.arguments + [workload, work.path] + (reference ? ["--reference-kernels"] : []) + (check ? ["--check"] : [])
                    + (bf16 ? ["--precision", "bf16"] : []),
                what: "Swift \(workload)", environment: childEnvironment)
        }
        // The video edit: a short edit first, on whose output both sides must agree.
        var editCheck: [String: Double] = [:]
        if editFrames > 0 {
            notes("video edit equivalence: a \(editCheckSettings.tuneSteps)-step tuning, \(editCheckSettings.steps)-step edit on each side…")
            _ = try swiftSide("edit", check: true)
            _ = try peer.run(["edit", work.path, "--check"])
            editCheck = try Torch.withNoGrad {
                let a = try loadSafeTensors(folder.edit("swift", check: true)), b = try loadSafeTensors(folder.edit("twin", check: true))
                var out: [String: Double] = [:]
                for key in ["edited", "inverted", "tuning_losses"] {
                    guard let x = a[key], let y = b[key] else { throw BenchmarkError.incompleteFolder("video edit check: a side did not write '\(key)'") }
                    let diff = try (x.to(.float64) - y.to(.float64)).abs().max().item()
                    let scale = try y.to(.float64).abs().max().item()
                    out[key + "_max_abs_diff"] = diff
                    out[key + "_scale"] = scale
                    // Relative to the output's size: the kernels (and their rounding) differ between CPUs.
                    out[key + "_relative_diff"] = diff == 0 ? 0 : diff / max(scale, .leastNormalMagnitude)
                }
                return out
            }
            notes(String(format: "video edit equivalence: edited max |Swift − twin| / max |twin| %.2e, inverted %.2e, tuning losses %.2e (tolerance %.0e)",
                             editCheck["edited_relative_diff"]!, editCheck["inverted_relative_diff"]!, editCheck["tuning_losses_relative_diff"]!, editTolerance))
            guard editCheck["edited_relative_diff"]! <= editTolerance, editCheck["inverted_relative_diff"]! <= editTolerance else {
                throw BenchmarkError.disagreement(String(
                    format: "Swift and the PyTorch twin edit differently: edited %.3e, inverted %.3e > %.0e (relative); not benchmarking different edits",
                    editCheck["edited_relative_diff"]!, editCheck["inverted_relative_diff"]!, editTolerance))
            }
        }

        // 2. Each workload, each side, in its own process.
        var training: [String: Report] = [:], sampling: [String: Report] = [:], editing: [String: Report] = [:]
        // Each round runs every side once per workload (odd rounds in reverse order, so a drift
        // of the background load does not favour one side); each side keeps its best round.
        let fp32Sides = ["swift"] + (referenceSide ? ["swift-reference"] : []) + ["twin"] + (skipDiffusers ? [] : ["diffusers"])
        let bf16Sides = bf16 ? ["swift-bf16", "twin-bf16"] + (skipDiffusers ? [] : ["diffusers-bf16"]) : []
        var sides = fp32Sides + bf16Sides
        func measure(_ workload: String, _ name: String) throws -> Report {
            switch name {
            case "swift": return try swiftSide(workload)
            case "swift-reference": return try swiftSide(workload, reference: true)
            case "swift-bf16": return try swiftSide(workload, bf16: true)
            case "twin": return try peer.run([workload, work.path])
            case "twin-bf16": return try peer.run([workload, work.path, "--precision", "bf16"])
            case "diffusers-bf16": return try peer.run([workload, work.path, "--impl", "diffusers", "--precision", "bf16"])
            default: return try peer.run([workload, work.path, "--impl", "diffusers"])
            }
        }
        let titles = ["train": "training step", "sample": "sampling", "edit": "video edit"]
        for workload in ["train", "sample"] + (editFrames > 0 ? ["edit"] : []) {
            for round in 0..<rounds {
                // diffusers' U-Net has no video edit; the edit is timed in float32.
                for name in sides where !(workload == "edit" && (name == "diffusers" || bf16Sides.contains(name))) {
                    notes("\(titles[workload]!): \(name) (round \(round + 1)/\(rounds))…")
                    let r = try measure(workload, name)
                    let best = workload == "train" ? training[name] : workload == "sample" ? sampling[name] : editing[name]
                    if best == nil || r.double("images_per_s") > best!.double("images_per_s") {
                        switch workload {
                        case "train": training[name] = r
                        case "sample": sampling[name] = r
                        default: editing[name] = r
                        }
                    }
                }
                sides.reverse()
            }
        }

        // Agreement of what was timed: first training losses and the final samples.
        let editDiff: Double = editFrames > 0 ? try Torch.withNoGrad {
            try (loadSafeTensors(folder.edit("swift", check: false))["edited"]! - loadSafeTensors(folder.edit("twin", check: false))["edited"]!)
                .abs().max().item()
        } : .nan
        let lossDiff = abs((training["swift"]?.doubles("losses").first ?? .nan) - (training["twin"]?.doubles("losses").first ?? .nan))
        let sampleDiff = try Torch.withNoGrad {
            try (loadSafeTensors(folder.samples("swift"))["samples"]! - loadSafeTensors(folder.samples("twin"))["samples"]!)
                .abs().max().item()
        }
        // What bf16 changes in the timed samples (same seed, same weights).
        let bf16SampleDiff: Double = bf16 ? try Torch.withNoGrad {
            try (loadSafeTensors(folder.samples("swift-bf16"))["samples"]! - loadSafeTensors(folder.samples("swift"))["samples"]!)
                .abs().max().item()
        } : .nan

        // 3. Machine peak and FLOPs.
        // In a child, so that it runs with the same OPENBLAS_NUM_THREADS as the sides.
        // The machine's peak: every thread for OpenBLAS too, whatever --blas-threads gives the sides.
        var peakEnvironment = childEnvironment
        peakEnvironment["OPENBLAS_NUM_THREADS"] = String(threads)
        let peak = try runJSON(
            executable: worker.executable, arguments: worker.arguments + ["sgemm", work.path], what: "Swift sgemm", environment: peakEnvironment)
        let sgemm = peak.double("sgemm_gflops"), onednnGemm = peak.double("onednn_gemm_gflops")
        let bf16Gemm = peak.double("bf16_gemm_gflops")
        let unetMACs = Double(model.unet.forwardMACs(batch: 1, textTokens: textTokens))
        let adapterMACs = Double(model.adapter!.forwardMACs(batch: 1, textTokens: textTokens))
        let twinFlops = try peer.run(["flops", work.path])
        let diffusersFlops = skipDiffusers ? nil : try peer.run(["flops", work.path, "--impl", "diffusers"])
        // Adapter calls per image in a sampling run: one per bias level that is not identically 0.
        let sampler = try TextToImagePipeline.sampler(for: samplingOptions(steps: ddimSteps), model: model)
        let adapterLevels = sampler.stepTable.reduce(0) { $0 + ($1.kFrom != 0 ? 1 : 0) + ($1.kTo != 0 ? 1 : 0) }
        let ourTrainFlops = 3 * 2 * (unetMACs + adapterMACs) * Double(trainBatch)
        let ourSampleFlops = 2 * (2 * unetMACs * Double(ddimSteps) + adapterMACs * Double(adapterLevels)) * Double(sampleBatch)
        let diffusersForward = diffusersFlops?.double("unet_forward_flops_per_image") ?? .nan
        let diffusersTrainFlops = 3 * diffusersForward * Double(trainBatch)
        let diffusersSampleFlops = 2 * diffusersForward * Double(ddimSteps) * Double(sampleBatch)

        func side(_ r: Report?, flopsPerImage: Double) -> [String: Any] {
            guard let r else { return [:] }
            let ips = r.double("images_per_s")
            var out: [String: Any] = [
                "images_per_s": ips, "peak_rss_mb": r.double("peak_rss_mb"), "gflops": ips * flopsPerImage / 1e9,
                "parameters": r.double("parameters"), "raw": r.object,
            ]
            // Swift's training sides: into how many concurrent parts each step's batch was split.
            if let shards = r.object["shards"] { out["shards"] = shards }
            return out
        }
        let trainPerImage = ourTrainFlops / Double(trainBatch), samplePerImage = ourSampleFlops / Double(sampleBatch)
        var trainingJSON: [String: Any] = [
            "swift": side(training["swift"], flopsPerImage: trainPerImage),
            "twin": side(training["twin"], flopsPerImage: trainPerImage),
        ]
        var samplingJSON: [String: Any] = [
            "swift": side(sampling["swift"], flopsPerImage: samplePerImage),
            "twin": side(sampling["twin"], flopsPerImage: samplePerImage),
        ]
        if referenceSide {
            trainingJSON["swift-reference"] = side(training["swift-reference"], flopsPerImage: trainPerImage)
            samplingJSON["swift-reference"] = side(sampling["swift-reference"], flopsPerImage: samplePerImage)
        }
        if !skipDiffusers {
            trainingJSON["diffusers"] = side(training["diffusers"], flopsPerImage: diffusersTrainFlops / Double(trainBatch))
            samplingJSON["diffusers"] = side(sampling["diffusers"], flopsPerImage: diffusersSampleFlops / Double(sampleBatch))
        }
        for name in bf16Sides {
            let diffusers = name.hasPrefix("diffusers")
            trainingJSON[name] = side(training[name], flopsPerImage: diffusers ? diffusersTrainFlops / Double(trainBatch) : trainPerImage)
            samplingJSON[name] = side(sampling[name], flopsPerImage: diffusers ? diffusersSampleFlops / Double(sampleBatch) : samplePerImage)
        }
        var editingJSON: [String: Any] = [:]
        for (name, r) in editing {
            editingJSON[name] = [
                "frames_per_s": r.double("images_per_s"), "peak_rss_mb": r.double("peak_rss_mb"), "raw": r.object,
            ]
        }
        func ratio(_ d: [String: Report], _ a: String, _ b: String, _ key: String) -> Double {
            (d[a]?.double(key) ?? .nan) / (d[b]?.double(key) ?? .nan)
        }
        // Achieved GFLOP/s of a side over the measured GEMM peak at its precision.
        func ofPeak(_ d: [String: Report], _ name: String, perImage: Double, peak: Double) -> Double {
            (d[name]?.double("images_per_s") ?? .nan) * perImage / 1e9 / peak
        }
        var ratios: [String: Double] = [
            "train_swift_over_twin": ratio(training, "swift", "twin", "images_per_s"),
            "train_swift_over_diffusers": ratio(training, "swift", "diffusers", "images_per_s"),
            "sample_swift_over_twin": ratio(sampling, "swift", "twin", "images_per_s"),
            "sample_swift_over_diffusers": ratio(sampling, "swift", "diffusers", "images_per_s"),
            "train_rss_swift_over_twin": ratio(training, "swift", "twin", "peak_rss_mb"),
            "train_rss_swift_over_diffusers": ratio(training, "swift", "diffusers", "peak_rss_mb"),
            "sample_rss_swift_over_twin": ratio(sampling, "swift", "twin", "peak_rss_mb"),
            "sample_rss_swift_over_diffusers": ratio(sampling, "swift", "diffusers", "peak_rss_mb"),
            "train_swift_reference_over_twin": ratio(training, "swift-reference", "twin", "images_per_s"),
            "sample_swift_reference_over_twin": ratio(sampling, "swift-reference", "twin", "images_per_s"),
            "train_swift_gflops_over_sgemm": (training["swift"]?.double("images_per_s") ?? .nan) * trainPerImage / 1e9 / sgemm,
            "train_swift_gflops_over_onednn_gemm": (training["swift"]?.double("images_per_s") ?? .nan) * trainPerImage / 1e9 / onednnGemm,
            "edit_swift_over_twin": ratio(editing, "swift", "twin", "images_per_s"),
            "edit_swift_reference_over_twin": ratio(editing, "swift-reference", "twin", "images_per_s"),
            "edit_rss_swift_over_twin": ratio(editing, "swift", "twin", "peak_rss_mb"),
            "sample_swift_gflops_over_onednn_gemm": ofPeak(sampling, "swift", perImage: samplePerImage, peak: onednnGemm),
        ]
        if bf16 {
            ratios["train_swift_bf16_over_swift"] = ratio(training, "swift-bf16", "swift", "images_per_s")
            ratios["sample_swift_bf16_over_swift"] = ratio(sampling, "swift-bf16", "swift", "images_per_s")
            ratios["train_swift_bf16_over_twin_bf16"] = ratio(training, "swift-bf16", "twin-bf16", "images_per_s")
            ratios["sample_swift_bf16_over_twin_bf16"] = ratio(sampling, "swift-bf16", "twin-bf16", "images_per_s")
            ratios["train_swift_bf16_over_diffusers_bf16"] = ratio(training, "swift-bf16", "diffusers-bf16", "images_per_s")
            ratios["sample_swift_bf16_over_diffusers_bf16"] = ratio(sampling, "swift-bf16", "diffusers-bf16", "images_per_s")
            ratios["train_twin_bf16_over_twin"] = ratio(training, "twin-bf16", "twin", "images_per_s")
            ratios["train_rss_swift_bf16_over_twin_bf16"] = ratio(training, "swift-bf16", "twin-bf16", "peak_rss_mb")
            ratios["train_swift_bf16_gflops_over_bf16_gemm"] = ofPeak(training, "swift-bf16", perImage: trainPerImage, peak: bf16Gemm)
            ratios["sample_swift_bf16_gflops_over_bf16_gemm"] = ofPeak(sampling, "swift-bf16", perImage: samplePerImage, peak: bf16Gemm)
        }
        func target(_ key: String, _ threshold: Double, atLeast: Bool = true) -> String {
            let v = ratios[key]!
            guard v.isFinite else { return "not measured" }
            return (atLeast ? v >= threshold : v <= threshold) ? "met" : "not met"
        }
        let rssKeys = ["train_rss_swift_over_twin", "train_rss_swift_over_diffusers", "sample_rss_swift_over_twin", "sample_rss_swift_over_diffusers"]
        // Issue 20's targets (docs/PERFORMANCE.md).
        let targets: [String: String] = [
            "train >= 1.5x twin": target("train_swift_over_twin", 1.5),
            "sample >= 1.5x twin": target("sample_swift_over_twin", 1.5),
            "train >= 3x diffusers": target("train_swift_over_diffusers", 3),
            "sample >= 3x diffusers": target("sample_swift_over_diffusers", 3),
            "edit >= 1.5x twin": target("edit_swift_over_twin", 1.5),
            "train at >= 65% of the GEMM peak": target("train_swift_gflops_over_onednn_gemm", 0.65),
            "peak RSS <= both peers": rssKeys.contains { ratios[$0]! > 1 } ? "not met"
                : rssKeys.allSatisfy { ratios[$0]!.isFinite } ? "met" : "met where measured",
        ]
        let flopsJSON: [String: Any] = [
            "method": "analytic MAC count of every convolution, linear layer and attention matmul (QK^T, weights·V), FLOPs = 2·MACs; "
                + "training step = 3 × forward (U-Net + adapter); sampling = per step 1 guided U-Net call on 2×batch + the adapter at each "
                + "non-zero bias level; diffusers: torch.profiler with_flops on its forward (conv2d/mm/addmm/bmm/baddbmm only), same rules",
            "unet_forward_flops_per_image": 2 * unetMACs, "adapter_forward_flops_per_image": 2 * adapterMACs,
            "twin_profiler_unet_forward_flops_per_image": twinFlops.double("unet_forward_flops_per_image"),
            "twin_profiler_adapter_forward_flops_per_image": twinFlops.double("adapter_forward_flops_per_image"),
            "diffusers_unet_forward_flops_per_image": diffusersForward,
            "adapter_calls_per_image_per_sampling_run": adapterLevels,
            "training_flops_per_image": trainPerImage, "sampling_flops_per_image": samplePerImage,
        ]
        var json: [String: Any] = [
            "date": ISO8601DateFormatter().string(from: Date()),
            "machine": ["cpus": ProcessInfo.processInfo.activeProcessorCount, "cpu_model": cpuModel(), "load_average_before": load],
            "device": device.description, "libtorch": Torch.libtorchVersion,
            "winograd_convolutions": Torch.winogradConvolutionsCompiled && CPUFeatures.avx512Core && device == .cpu,
            "threads": threads, "openblas_num_threads": blasThreads ?? threads,
            "settings": [
                "train_batch": trainBatch, "train_steps": trainSteps, "train_warmup": trainWarmup, "sample_batch": sampleBatch,
                "ddim_steps": ddimSteps, "sample_repeats": sampleRepeats, "rounds": rounds, "guidance": guidance, "image_size": model.unet.config.sampleSize,
                "text_tokens": textTokens, "diffusers_layers_per_block": diffusersLayersPerBlock ?? model.unet.config.layersPerBlock,
            ],
            "equivalence": [
                "unet_max_abs_diff": unetDiff, "adapter_max_abs_diff": adapterDiff, "tolerance": tolerance,
                "first_training_loss_abs_diff": lossDiff, "final_samples_max_abs_diff": sampleDiff,
                "bf16_samples_max_abs_diff_from_fp32": bf16SampleDiff,
            ],
            "sgemm": [
                "size": 2048, "gflops": sgemm, "onednn_gemm_gflops": onednnGemm, "bf16_gemm_gflops": bf16Gemm,
                "threads": threads, "openblas_threads": threads,
                "note": device == .cpu
                    ? "2048³ float32 products at every thread: torch.matmul (OpenBLAS sgemm) and the same product as a oneDNN 1×1 convolution"
                    : "2048³ float32 product on \(device) through libtorch (cuBLAS), TF32 off; no oneDNN figure",
            ],
            "flops": flopsJSON,
            "training": trainingJSON,
            "sampling": samplingJSON,
            "ratios": ratios,
            "targets_met": targets,
            "video_edit": editFrames > 0 ? [
                "settings": jsonObject(editSettings), "check_settings": jsonObject(editCheckSettings),
                "equivalence": editCheck.merging(["tolerance": editTolerance, "timed_edit_edited_max_abs_diff": editDiff]) { a, _ in a },
                "sides": editingJSON,
                "note": "frames per second of the whole edit (tuning + inversion + editing), each edit from freshly loaded weights; "
                    + "diffusers has no video edit; no GFLOP/s: the analytic count does not cover the temporal layers",
            ] as [String: Any] : "not measured (edit_frames 0)",
        ]
        if skipDiffusers { json["diffusers"] = "skipped (skip_diffusers)" }

        // Report.
        var lines: [String] = []
        func print(_ line: String = "") { lines.append(line) }
        print("ContextDiff benchmark — \(threads) thread(s), OpenBLAS \(blasThreads ?? threads), \(cpuModel()), load before: \(load)"
            + (device == .cpu ? "" : "; timed on \(device), libtorch \(Torch.libtorchVersion)"))
        let diffusersParams = training["diffusers"].map { String(format: "%.2fM parameters", $0.double("parameters") / 1e6) } ?? "skipped"
        print(String(format: "model: U-Net %.2fM + adapter %.2fM parameters (Swift and twin); diffusers U-Net: ",
                     Double(model.unet.parameterCount) / 1e6, Double(model.adapter!.parameterCount) / 1e6) + diffusersParams)
        print(String(format: "equivalence (same weights): U-Net %.1e, adapter %.1e ≤ %.0e; first training loss |Δ| %.1e; final samples max |Δ| %.1e",
                     unetDiff, adapterDiff, tolerance, lossDiff, sampleDiff))
        if device == .cpu {
            print(String(format: "sgemm 2048×2048 through libtorch, %d threads: %.1f GFLOP/s (OpenBLAS), %.1f GFLOP/s (oneDNN 1×1 convolution)",
                         threads, sgemm, onednnGemm) + (bf16Gemm.isFinite ? String(format: "; bf16: %.1f GFLOP/s (oneDNN)", bf16Gemm) : ""))
        } else {
            print(String(format: "sgemm 2048×2048 through libtorch on %@, full fp32 (TF32 off): %.1f GFLOP/s", device.description, sgemm))
        }
        print(String(format: "FLOPs per image (analytic): training step %.2f GFLOP, sampling run %.2f GFLOP; diffusers %.2f / %.2f GFLOP",
                     trainPerImage / 1e9, samplePerImage / 1e9, diffusersTrainFlops / Double(trainBatch) / 1e9,
                     diffusersSampleFlops / Double(sampleBatch) / 1e9))
        func table(_ title: String, _ d: [String: Any]) {
            print("\n\(title)")
            print("  side              images/s   peak RSS MiB   GFLOP/s")
            for name in ["swift", "swift-reference", "twin", "diffusers", "swift-bf16", "twin-bf16", "diffusers-bf16"] {
                guard let s = d[name] as? [String: Any], let ips = s["images_per_s"] as? Double else { continue }
                let label = name.padding(toLength: 16, withPad: " ", startingAt: 0)
                print("  \(label)" + String(format: " %9.3f   %12.0f   %7.1f", ips, s["peak_rss_mb"] as? Double ?? .nan, s["gflops"] as? Double ?? .nan))
            }
        }
        let shardNote = (trainingJSON["swift"] as? [String: Any])?["shards"].map { ", Swift's batch in \($0) concurrent shard(s)" } ?? ""
        table("(a) training step, batch \(trainBatch), \(model.unet.config.sampleSize)×\(model.unet.config.sampleSize), forward+backward+clip+AdamW+EMA\(shardNote)", trainingJSON)
        table("(b) sampling, DDIM \(ddimSteps) steps, batch \(sampleBatch), guidance \(guidance) (one batched call), adapter at t and t−1", samplingJSON)
        print("\nratios (same run):")
        for key in ratios.keys.sorted() {
            print("  " + key.padding(toLength: 32, withPad: " ", startingAt: 0) + String(format: " %.3f", ratios[key]!))
        }
        let trainGFLOPs = (training["swift"]?.double("images_per_s") ?? .nan) * trainPerImage / 1e9
        if device == .cpu {
            print(String(format: "  Swift training step achieves %.1f GFLOP/s = %.0f%% of OpenBLAS sgemm, %.0f%% of the oneDNN GEMM",
                         trainGFLOPs, 100 * ratios["train_swift_gflops_over_sgemm"]!, 100 * ratios["train_swift_gflops_over_onednn_gemm"]!))
        } else {
            print(String(format: "  Swift training step achieves %.1f GFLOP/s = %.1f%% of the sgemm on %@",
                         trainGFLOPs, 100 * ratios["train_swift_gflops_over_sgemm"]!, device.description))
        }
        if bf16 {
            print(String(format: "  bf16: training %.2fx and sampling %.2fx Swift's fp32; Swift bf16 training at %.1f GFLOP/s = %.0f%% of the bf16 GEMM; bf16 samples differ from fp32's by max |Δ| %.1e",
                         ratios["train_swift_bf16_over_swift"]!, ratios["sample_swift_bf16_over_swift"]!,
                         (training["swift-bf16"]?.double("images_per_s") ?? .nan) * trainPerImage / 1e9,
                         100 * ratios["train_swift_bf16_gflops_over_bf16_gemm"]!, bf16SampleDiff))
        }
        print("targets: " + targets.keys.sorted().map { "\($0): \(targets[$0]!)" }.joined(separator: "; "))
        if editFrames > 0 {
            print(String(format: "\n(c) video edit, %d frames %d×%d: %d tuning steps, DDIM inversion %d steps with attention recording, %d guided steps with fusion and the adapter",
                         editFrames, model.unet.config.sampleSize, model.unet.config.sampleSize, editTuneSteps, editSteps, editSteps))
            print(String(format: "  check edit (%d tuning, %d DDIM steps): max |Swift − twin| edited %.1e, inverted %.1e; timed edit's output max |Δ| %.1e",
                         editCheckSettings.tuneSteps, editCheckSettings.steps, editCheck["edited_max_abs_diff"] ?? .nan,
                         editCheck["inverted_max_abs_diff"] ?? .nan, editDiff))
            print("  side              frames/s   peak RSS MiB   seconds per edit (tuning / inversion / editing)")
            for name in ["swift", "swift-reference", "twin"] {
                guard let r = editing[name] else { continue }
                let phases = r.object["phase_seconds"] as? [String: Any] ?? [:]
                func phase(_ k: String) -> Double { (phases[k] as? NSNumber)?.doubleValue ?? .nan }
                let label = name.padding(toLength: 16, withPad: " ", startingAt: 0)
                print("  \(label)" + String(format: " %9.3f   %12.0f   %.2f (%.2f / %.2f / %.2f)", r.double("images_per_s"), r.double("peak_rss_mb"),
                                           r.doubles("edit_seconds").min() ?? .nan, phase("tuning"), phase("inversion"), phase("editing")))
            }
        }
        return BenchmarkResult(
            document: json, summary: lines.joined(separator: "\n"), unetMaxAbsDiff: unetDiff, adapterMaxAbsDiff: adapterDiff,
            ratios: ratios, targets: targets)
    }

    /// Every side runs with `threads` threads: libtorch's intra-op pool is set by each side, but
    /// Debian's libtorch does not control OpenBLAS's own pthread pool (`torch.set_num_threads(1)`
    /// still lets OpenBLAS use every core), so OPENBLAS_NUM_THREADS is set for every child too.
    public var childEnvironment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = String(blasThreads ?? threads)
        env["OMP_NUM_THREADS"] = String(threads)
        return env
    }

    public var editSettings: BenchmarkSpec.Edit {
        BenchmarkSpec.Edit(frames: editFrames, tuneSteps: editTuneSteps, steps: editSteps, guidance: guidance, repeats: editRepeats)
    }

    /// A short edit of the same video, whose output both sides must reproduce before timing.
    public var editCheckSettings: BenchmarkSpec.Edit {
        BenchmarkSpec.Edit(frames: editFrames, tuneSteps: min(editTuneSteps, 3), steps: min(editSteps, 4), guidance: guidance, repeats: 1)
    }

    func jsonObject<T: Encodable>(_ value: T) -> Any {
        (try? JSONEncoder().encode(value)).flatMap { try? JSONSerialization.jsonObject(with: $0) } ?? NSNull()
    }

    /// The inflated model (temporal layers given small random output weights, so that they act)
    /// and the edit's inputs: a synthetic video of the benchmark and three prompts with random
    /// token states — "source", "target" (one word changed, so fusion aligns the rest) and "".
    func prepareEdit(_ folder: BenchmarkFolder, model: ContextDiffModel) throws {
        let video = try Torch.withSeed(3) { try VideoDiffusionModel(inflating: model) }
        let g = Generator(seed: 11)
        try Torch.withNoGrad {
            for module in [video.unet, video.adapter!] as [Module] {
                for (key, p) in module.namedParameters() where VideoDiffusionModel.isTemporalKey(key) && key.contains("to_out") {
                    try p.copy(from: Tensor.randn(p.shape, generator: g) * 0.05)
                }
            }
        }
        try ModelFolder.save(video.unet, to: folder.videoUnet)
        try ModelFolder.save(video.adapter!, to: folder.videoAdapter)
        let size = model.unet.config.sampleSize, width = model.unet.config.contextDim
        let benchmark = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: size, seed: 0))
        let frames = try benchmark.video(index: 3, split: .train, frames: editFrames).video().tensor()
        var inputs: [String: Tensor] = ["video": frames]
        let ids: [String: [Int]] = ["source": [2, 10, 11, 12, 13, 3], "target": [2, 10, 14, 12, 13, 3], "null": [2, 3]]
        for prefix in ["source", "target", "null"] {
            let n = ids[prefix]!.count
            inputs[prefix + "_tokens"] = try Tensor.randn([1, n, width], generator: g)
            inputs[prefix + "_mask"] = try Tensor.ones([1, n]).to(.uint8)
            inputs[prefix + "_pooled"] = try Tensor.randn([1, width], generator: g)
            inputs[prefix + "_ids"] = try Tensor(ids[prefix]!.map(Int64.init), shape: [n])
        }
        let alignment = AttentionFusionStore.alignTokens(source: ids["source"]!, target: ids["target"]!)
        inputs["alignment"] = try Tensor(alignment.map { Int64($0 ?? -1) }, shape: [alignment.count])
        try saveSafeTensors(inputs, to: folder.editInputs)
    }

    public func samplingOptions(steps: Int) -> GenerationOptions {
        var o = GenerationOptions()
        o.steps = steps
        o.guidance = guidance
        return o
    }

    /// Builds the shipped model (seeded), gives the adapter's zero-initialised last layer small
    /// random weights so that r_φ contributes, and writes weights, data, settings and the Swift
    /// outputs of the equivalence check.
    public func prepare(_ folder: BenchmarkFolder, textTokens: Int) throws -> ContextDiffModel {
        let (unet, adapter) = try Torch.withSeed(0) { (try UNet(.shapesDefault), try ContextAdapter(.shapesDefault)) }
        try Torch.withNoGrad {
            try adapter.projOut.weight.copy(from: Tensor.randn(adapter.projOut.weight.shape, generator: Generator(seed: 7)) * 0.05)
        }
        try ModelFolder.save(unet, to: folder.unet)
        try ModelFolder.save(adapter, to: folder.adapter)
        let model = try folder.loadModel()

        let g = Generator(seed: 1)
        let (captions, length, width) = (64, textTokens, model.unet.config.contextDim)
        let size = model.unet.config.sampleSize
        // A caption table like the trainer's: 64 captions + the empty one (last row), 32 tokens.
        let tokens = try Tensor.randn([captions + 1, length, width], generator: g)
        let lengths = try Tensor.randint(4, length + 1, shape: [captions + 1], generator: g).scalars(as: Int64.self)
        let mask = try Tensor(
            (0...captions).flatMap { r in (0..<length).map { $0 < (r == captions ? 2 : Int(lengths[r])) } }, shape: [captions + 1, length])
        let pooled = try Tensor.randn([captions + 1, width], generator: g)
        let images = 4 * trainBatch * (trainSteps + trainWarmup)
        let data: [String: Tensor] = [
            "pixels": try Tensor.rand([images, 3, size, size], generator: g) * 2 - 1,
            "image_rows": try Tensor.randint(0, captions, shape: [images], generator: g),
            "sample_rows": try Tensor((0..<sampleBatch).map { Int64($0 % captions) }, shape: [sampleBatch]),
            "table_tokens": tokens, "table_mask": mask, "table_pooled": pooled,
            "alphas_cumprod": try Tensor(model.schedule.alphasCumprod, shape: [model.schedule.alphasCumprod.count]),
        ]
        try saveSafeTensors(data, to: folder.data)
        let shipped = TrainingConfig.shapesDefault
        let spec = BenchmarkSpec(
            threads: threads,
            train: .init(
                batch: trainBatch, warmup: trainWarmup, steps: trainSteps, learningRate: shipped.learningRate,
                warmupSteps: shipped.warmupSteps, totalSteps: shipped.steps, minLearningRate: shipped.minLearningRate,
                weightDecay: shipped.weightDecay, gradientClip: shipped.gradientClip, emaDecay: shipped.emaDecay,
                conditionDropout: shipped.conditionDropout, seed: shipped.seed),
            sample: .init(batch: sampleBatch, steps: ddimSteps, guidance: guidance, seed: 0, warmupSteps: 2, repeats: sampleRepeats),
            edit: editFrames > 0 ? editSettings : nil, editCheck: editFrames > 0 ? editCheckSettings : nil,
            diffusersLayersPerBlock: diffusersLayersPerBlock, device: device == .cpu ? nil : device.description)
        try spec.save(to: folder.url)
        if editFrames > 0 { try prepareEdit(folder, model: model) }

        // Equivalence inputs: 4 images at assorted timesteps, captions with padding.
        let rows = try Tensor([0, 1, 2, Int64(captions)], shape: [4])
        let condition = try Condition(
            tokens: tokens.indexSelect(dim: 0, rows), mask: mask.indexSelect(dim: 0, rows), pooled: pooled.indexSelect(dim: 0, rows))
        let x = try Tensor.randn([4, 3, size, size], generator: g)
        let t = try Tensor([5, 250, 600, 980] as [Int64], shape: [4])
        try saveSafeTensors(
            ["x": x, "timesteps": t, "tokens": condition.tokens, "mask": condition.mask, "pooled": condition.pooled], to: folder.checkInputs)
        model.train(false)
        let outputs = try Torch.withInferenceMode {
            ["unet": try model.unet(x, timesteps: t, condition: condition),
             "adapter": try model.adapter!(x, timesteps: t, condition: condition)]
        }
        try saveSafeTensors(outputs, to: folder.swiftOutputs)
        return model
    }
}

/// A JSON object printed by a worker.
typealias Report = BenchmarkMeasurement

func cpuModel() -> String {
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown CPU" }
    for line in info.split(separator: "\n") where line.hasPrefix("model name") {
        return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
    }
    return "unknown CPU"
}

/// Runs a command, returns the JSON object on the last line of its stdout; a failure is an error
/// that carries the command's own message.
func runJSON(executable: String, arguments: [String], what: String, environment: [String: String]? = nil) throws -> Report {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    do { try process.run() } catch { throw BenchmarkError.workerFailed(what: what, message: "cannot start \(executable): \(error)", log: "") }
    // Read both pipes while the child runs (a full pipe would block it).
    final class Box: @unchecked Sendable { var data = Data() }
    let errBox = Box()
    let done = DispatchSemaphore(value: 0)
    let errHandle = err.fileHandleForReading
    DispatchQueue.global().async {
        errBox.data = errHandle.readDataToEndOfFile()
        done.signal()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    done.wait()
    let errData = errBox.data
    let text = String(decoding: outData, as: UTF8.self)
    let last = text.split(separator: "\n").last.map(String.init) ?? ""
    let object = (try? JSONSerialization.jsonObject(with: Data(last.utf8))) as? [String: Any]
    if process.terminationStatus != 0 || object == nil || object?["error"] != nil {
        let stderr = String(decoding: errData, as: UTF8.self).split(separator: "\n").suffix(15).joined(separator: "\n")
        let message = (object?["error"] as? String) ?? "exit status \(process.terminationStatus)"
        throw BenchmarkError.workerFailed(what: what, message: message, log: stderr)
    }
    return Report(object: object!)
}

/// The Python side: finds the Python that has torch (and diffusers when needed) and runs
/// `benchmarks/peer/bench_peer.py` commands.
public struct BenchmarkPeer: Sendable {
    public let python: String
    public let script: String
    public var environment: [String: String]?

    /// - Parameters:
    ///   - python: the interpreter (default: `$CONTEXTDIFF_PYTHON`, the benchmark venv of
    ///     scripts/setup-benchmark.sh, or python3).
    ///   - peerDir: the folder of bench_peer.py (default: benchmarks/peer of the repository).
    public init(python: String?, peerDir: String?, needDiffusers: Bool) throws {
        let fm = FileManager.default
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let dirs: [String?] = [peerDir, "benchmarks/peer", exe.deletingLastPathComponent().appendingPathComponent("../../../benchmarks/peer").standardized.path]
        guard let dir = dirs.compactMap({ $0 }).first(where: { fm.fileExists(atPath: $0 + "/bench_peer.py") }) else {
            throw BenchmarkError.peerUnavailable("benchmarks/peer/bench_peer.py not found; run from the repository root or give its folder (peer_dir)")
        }
        script = URL(fileURLWithPath: dir).appendingPathComponent("bench_peer.py").standardized.path
        let venv = (ProcessInfo.processInfo.environment["XDG_CACHE_HOME"] ?? NSHomeDirectory() + "/.cache") + "/contextdiff/bench-venv/bin/python"
        let candidates = [python, ProcessInfo.processInfo.environment["CONTEXTDIFF_PYTHON"], venv, "/usr/bin/python3", "python3"].compactMap { $0 }
        func works(_ p: String, _ module: String) -> Bool {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [p, "-c", "import \(module)"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            guard (try? process.run()) != nil else { return false }
            process.waitUntilExit()
            return process.terminationStatus == 0
        }
        let explicit = python ?? ProcessInfo.processInfo.environment["CONTEXTDIFF_PYTHON"]
        let pool = explicit.map { [$0] } ?? candidates
        guard let found = pool.first(where: { works($0, "torch") }) else {
            throw BenchmarkError.peerUnavailable(
                "no Python with torch found (tried \(pool.joined(separator: ", "))); install python3-torch (scripts/setup.sh) or name one (python)")
        }
        if needDiffusers, !works(found, "diffusers") {
            throw BenchmarkError.peerUnavailable(
                "\(found) has torch but not diffusers; run scripts/setup-benchmark.sh (or skip diffusers)")
        }
        self.python = found
    }

    func run(_ arguments: [String]) throws -> Report {
        try runJSON(
            executable: "/usr/bin/env", arguments: [python, script] + arguments, what: "python peer \(arguments.first ?? "")",
            environment: environment)
    }
}
