import ContextDiff
import Foundation
import NN
import Torch

/// One measurement of the benchmark on the Swift side. `contextdiff benchmark` runs each in its
/// own child process (`contextdiff benchmark-worker`), so that the peak RSS it reports (VmHWM)
/// belongs to that workload and that side alone.
public enum BenchmarkWorkload: String, CaseIterable, Codable, Sendable {
    /// Training steps of the real ``Trainer`` on the folder's data and caption table.
    case train
    /// Guided DDIM sampling with the adapter (``TextToImagePipeline/sample(model:conditional:unconditional:options:progress:)``).
    case sample
    /// The one-shot video edit (tuning, inversion, fused guided sampling).
    case edit
    /// The machine's peak: a 2048² float32 product through OpenBLAS and through oneDNN, and a
    /// bfloat16 one through oneDNN where the CPU computes bfloat16 natively.
    case sgemm

    /// Runs this workload on `folder` (written by ``BenchmarkRun``) and returns its measurement.
    /// The process-wide kernel switches are the caller's: a worker sets
    /// ``Kernels/useReferenceKernels()`` (and says so with `referenceKernels`) before calling.
    /// - Parameter check: for ``edit``, run the short equivalence edit (`edit_check`) instead of the timed one.
    /// - Parameter precision: for ``train`` and ``sample``, the networks' ``Precision``.
    /// - Parameter shards: for ``train``, ``Trainer/shards`` (nil: the trainer's automatic choice).
    public func measure(
        folder: BenchmarkFolder, referenceKernels: Bool = false, check: Bool = false, precision: Precision = .fp32,
        shards: Int? = nil
    ) throws -> BenchmarkMeasurement {
        let spec = try BenchmarkSpec.load(from: folder.url)
        Torch.numThreads = spec.threads
        let side = referenceKernels ? "swift-reference" : precision == .bf16 ? "swift-bf16" : "swift"
        let device = try spec.resolvedDevice()
        try Torch.checkAvailable(device)
        var result: [String: Any] = [
            "impl": side, "threads": Torch.numThreads, "device": device.description, "libtorch": Torch.libtorchVersion,
            "precision": precision.rawValue,
        ]
        switch self {
        case .sgemm:
            result["sgemm_gflops"] = try GemmPeak.sgemm(size: 2048, device: device)
            // oneDNN is the CPU's; on a GPU the product above is cuBLAS's.
            result["onednn_gemm_gflops"] = device == .cpu ? try GemmPeak.oneDNN(size: 2048) : Double.nan
            let native = Precision.automatic(for: device).precision == .bf16
            result["bf16_gemm_gflops"] = native ? try GemmPeak.bf16(size: 2048) : Double.nan
            return BenchmarkMeasurement(object: result)
        case .edit:
            return try Self.edit(folder: folder, spec: spec, side: side, check: check)
        case .train, .sample:
            break
        }
        let model = try folder.loadModel()
        try model.to(device)
        let data = try loadSafeTensors(folder.data)
        guard let tokens = data["table_tokens"], let mask = data["table_mask"], let pooled = data["table_pooled"],
            let pixels = data["pixels"], let imageRows = data["image_rows"], let sampleRows = data["sample_rows"]
        else { throw BenchmarkError.incompleteFolder("benchmark data file \(folder.data.path) is incomplete") }
        let table = try Condition(tokens: tokens, mask: mask.to(.bool), pooled: pooled)
        let nullRow = tokens.shape[0] - 1
        if self == .train {
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
            config.precision = precision
            let trainer = try Trainer(
                model: model, config: config, data: source, captions: captions,
                runDirectory: folder.url.appendingPathComponent("swift-run"))
            // The reference side is the code before the kernel work: one batch, one thread.
            trainer.shards = referenceKernels ? 1 : shards
            result["shards"] = try trainer.shardRanges(rows: t.batch).count
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
        } else {
            let s = spec.sample
            let conditional = try table.selecting(sampleRows)
            let unconditional = try table.selecting(Tensor([Int64](repeating: Int64(nullRow), count: s.batch), shape: [s.batch]))
            var options = GenerationOptions()
            options.sampler = .ddim
            options.guidance = s.guidance
            options.seed = s.seed
            options.eta = 0
            options.precision = precision
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
                    try Torch.synchronize(device)
                }
                times.append(d.seconds)
            }
            if let images { try saveSafeTensors(["samples": images], to: folder.samples(side)) }
            result["images_per_s"] = Double(s.batch * times.count) / times.reduce(0, +)
            result["run_seconds"] = times
        }
        result["parameters"] = model.parameters.reduce(0) { $0 + $1.count }
        result["peak_rss_mb"] = peakResidentMegabytes()
        return BenchmarkMeasurement(object: result)
    }

    /// The one-shot video edit, `repeats` times, each from a fresh copy of the inflated model
    /// (tuning changes its weights); the first edit's tensors are saved for the comparison.
    private static func edit(folder: BenchmarkFolder, spec: BenchmarkSpec, side: String, check: Bool) throws -> BenchmarkMeasurement {
        guard let e = check ? spec.editCheck : spec.edit else {
            throw BenchmarkError.incompleteFolder("bench.json has no \(check ? "edit_check" : "edit") settings")
        }
        let inputs = try loadSafeTensors(folder.editInputs)
        let encoder = try StoredPromptEncoder(inputs)
        guard let video = inputs["video"] else { throw BenchmarkError.incompleteFolder("\(folder.editInputs.path) has no video") }
        let clock = ContinuousClock()
        var times: [Double] = [], phases: [String: Double] = [:], first: VideoEditResult?
        for _ in 0..<e.repeats {
            let pipeline = try VideoEditPipeline(model: folder.loadVideoModel(), textEncoder: encoder)
            var starts: [(String, ContinuousClock.Instant)] = []
            let started = clock.now
            let result = try pipeline.edit(video: video, sourcePrompt: "source", targetPrompt: "target", options: e.options) { p in
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
        guard let first else { throw BenchmarkError.incompleteFolder("bench.json asks for no edit (repeats 0)") }
        try saveSafeTensors([
            "edited": first.edited, "inverted": first.invertedLatent,
            "tuning_losses": Tensor(first.tuningLosses.isEmpty ? [0] : first.tuningLosses, shape: [Swift.max(1, first.tuningLosses.count)]),
        ], to: folder.edit(side, check: check))
        return BenchmarkMeasurement(object: [
            "impl": side, "threads": Torch.numThreads,
            "images_per_s": Double(e.frames * times.count) / times.reduce(0, +), "edit_seconds": times,
            "phase_seconds": phases, "tuning_losses": first.tuningLosses, "peak_rss_mb": peakResidentMegabytes(),
        ])
    }
}

/// One side's measurement of one workload: the JSON object a worker (Swift or Python) prints on
/// its last line (`images_per_s`, `peak_rss_mb`, `parameters`, and the workload's own figures).
public struct BenchmarkMeasurement: @unchecked Sendable {
    public let object: [String: Any]

    public init(object: [String: Any]) { self.object = object }

    /// A number of the object (NaN when absent or not a number).
    public func double(_ key: String) -> Double { (object[key] as? NSNumber)?.doubleValue ?? .nan }
    public func doubles(_ key: String) -> [Double] { (object[key] as? [NSNumber])?.map(\.doubleValue) ?? [] }

    /// The object as one line of JSON (non-finite numbers as null), as a worker prints it.
    public func jsonLine() throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: jsonSafe(object), options: [.sortedKeys]), as: UTF8.self)
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
            else { throw BenchmarkError.incompleteFolder("edit inputs lack the \(prefix) prompt") }
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
            throw BenchmarkError.incompleteFolder("the benchmark's prompt encoder knows one prompt at a time of \(stored.keys.sorted())")
        }
        return e
    }
}

/// The machine's matrix-product peak through libtorch.
public enum GemmPeak {
    /// Times `repeats` float32 products of two `size`×`size` matrices computed by `product`, after
    /// one untimed call, and returns the best rate in GFLOP/s (2·size³ per product).
    public static func measure(size: Int, repeats: Int = 5, _ product: (Tensor, Tensor) throws -> Tensor) throws -> Double {
        let a = try Tensor.randn([size, size], generator: Generator(seed: 0))
        let b = try Tensor.randn([size, size], generator: Generator(seed: 1))
        _ = try product(a, b)
        var best = Double.infinity
        let clock = ContinuousClock()
        for _ in 0..<repeats {
            best = min(best, try clock.measure { _ = try product(a, b) }.seconds)
        }
        return 2 * pow(Double(size), 3) / best / 1e9
    }

    /// The matmul through libtorch (OpenBLAS sgemm with Debian's libtorch, MKL with PyPI's,
    /// cuBLAS on `device` cuda, in full fp32), in GFLOP/s.
    public static func sgemm(size: Int, repeats: Int = 5, device: Device = .cpu) throws -> Double {
        guard device != .cpu else { return try measure(size: size, repeats: repeats) { try $0.matmul($1) } }
        var onDevice: (Tensor, Tensor)?
        return try measure(size: size, repeats: repeats) { a, b in
            if onDevice == nil { onDevice = (try a.to(device), try b.to(device)) }
            let out = try onDevice!.0.matmul(onDevice!.1)
            try Torch.synchronize(device)
            return out
        }
    }

    /// The same product in bfloat16 (oneDNN's native kernels; float32 operands converted
    /// before timing), in GFLOP/s: the peak a ``Precision/bf16`` workload is measured against.
    public static func bf16(size: Int, repeats: Int = 5) throws -> Double {
        var converted: (Tensor, Tensor)?
        return try measure(size: size, repeats: repeats) { a, b in
            if converted == nil { converted = (try a.to(.bfloat16), try b.to(.bfloat16)) }
            return try converted!.0.matmul(converted!.1)
        }
    }

    /// The same product as a oneDNN 1×1 convolution (the kernel Swift's linear layers use,
    /// ``Kernels/linearAsConvolution``), in GFLOP/s.
    public static func oneDNN(size: Int, repeats: Int = 5) throws -> Double {
        try measure(size: size, repeats: repeats) { try $0.linearViaConvolution(weight: $1, bias: nil) }
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

/// `value` with every non-finite number replaced by null (JSON has no NaN).
public func jsonSafe(_ value: Any) -> Any {
    switch value {
    case let d as Double: return d.isFinite ? d : NSNull()
    case let n as NSNumber where !(n.doubleValue.isFinite): return NSNull()
    case let a as [Any]: return a.map(jsonSafe)
    case let o as [String: Any]: return o.mapValues(jsonSafe)
    default: return value
    }
}
