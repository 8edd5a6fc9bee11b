import ContextDiff
import Datasets
import Evaluation
import Foundation
import Torch

/// Mean and sample standard deviation of a list of numbers.
public struct MeanSpread: Codable, Sendable, Equatable {
    public var mean: Double
    public var std: Double
    public var count: Int

    public init(_ values: [Double]) {
        count = values.count
        mean = values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count)
        let m = mean
        std = values.count > 1
            ? (values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(values.count - 1)).squareRoot() : 0
    }
}

/// What `contextdiff evaluate-sr` reports: the stage against bicubic upsampling on real
/// held-out pairs (the real low-resolution render in, the real high-resolution render as the
/// reference), and whether the stage keeps what the evaluator reads in the low-resolution image.
public struct SuperResolutionQualityReport: Codable, Sendable {
    public struct Method: Codable, Sendable {
        public var name: String
        /// Per-image PSNR with an exact match counted as ``SuperResolutionQualityReport/identicalPSNR``.
        public var psnr: MeanSpread
        public var ssim: MeanSpread
        /// Images identical to the reference (infinite PSNR): nearest-neighbour upsampling of a
        /// scene whose edges lie on the low-resolution grid reproduces the render exactly.
        public var identical: Int
    }

    /// The PSNR an exact match counts as in the means (dB): above that of any 8-bit image that
    /// differs at all (one step in one channel of one pixel of a 128×128 image is 94.9 dB).
    public static let identicalPSNR = 100.0

    public struct SplitResult: Codable, Sendable {
        public var split: String
        public var pairs: Int
        public var methods: [Method]
        /// Per-pair PSNR and SSIM of the stage minus bicubic's.
        public var psnrGainOverBicubic: MeanSpread
        public var ssimGainOverBicubic: MeanSpread
        /// Evaluator accuracy (all attributes of the caption) on the real low-resolution renders,
        /// and on the stage's output reduced back to that size.
        public var alignmentLowResolution: Double
        public var alignmentUpsampledReduced: Double

        enum CodingKeys: String, CodingKey {
            case split, pairs, methods, psnrGainOverBicubic = "psnr_gain_over_bicubic"
            case ssimGainOverBicubic = "ssim_gain_over_bicubic", alignmentLowResolution = "alignment_low_resolution"
            case alignmentUpsampledReduced = "alignment_upsampled_reduced"
        }
    }

    public var model: String
    public var factor: Int
    public var options: SuperResolutionOptions
    public var noiseLevel: Int
    public var splits: [SplitResult]
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case model, factor, options, noiseLevel = "noise_level", splits, seconds
    }
}

/// `contextdiff evaluate-sr` as a library call.
public struct SuperResolutionEvaluation {
    public let stage: SuperResolutionPipeline
    public let encoder: TextConditionEncoder
    public let evaluator: AttributeEvaluator
    /// The benchmark whose pairs are measured (its seed and low-resolution size).
    public var benchmark = SyntheticBenchmarkConfig()

    public init(stage: SuperResolutionPipeline, encoder: TextConditionEncoder, evaluator: AttributeEvaluator) {
        self.stage = stage
        self.encoder = encoder
        self.evaluator = evaluator
    }

    /// Measures `count` pairs of each split in batches of `batch` (the stage's seed advances per
    /// batch). Progress phase "evaluating" in pairs over all splits.
    public func run(
        splits: [Split], count: Int, batch: Int = 16, options: SuperResolutionOptions, modelName: String,
        progress: ProgressHandler = { _ in true }
    ) throws -> SuperResolutionQualityReport {
        guard count > 0, batch > 0, !splits.isEmpty else { throw EvaluationError.invalidInput("nothing to evaluate") }
        let c = stage.model.unet.config
        var config = benchmark
        config.imageSize = c.lowResolutionSize
        guard evaluator.imageSize == c.lowResolutionSize else {
            throw EvaluationError.invalidInput("the evaluator reads \(evaluator.imageSize)×\(evaluator.imageSize); the stage's input is \(c.lowResolutionSize)×\(c.lowResolutionSize)")
        }
        let pairs = try SuperResolutionPairs(config, factor: c.factor)
        let started = Date()
        var results: [SuperResolutionQualityReport.SplitResult] = []
        var done = 0
        var batchIndex: UInt64 = 0
        for split in splits {
            var psnr: [String: [Double]] = [:], ssim: [String: [Double]] = [:], identical: [String: Int] = [:]
            var lowAlignment = AlignmentSummary(), upAlignment = AlignmentSummary()
            for start in stride(from: 0, to: count, by: batch) {
                let indices = Array(start..<min(count, start + batch))
                let (low, high, captions) = try pairs.batch(indices: indices, split: split)
                var o = options
                o.seed = options.seed &+ batchIndex
                batchIndex += 1
                let upsampled = try stage.upsample(low, prompts: captions, imagesPerPrompt: 1, encoder: encoder, options: o).images
                // Measured as saved: 8-bit.
                let stageImages = try RGBImage.batch(RGBImage.images(fromBatch: upsampled))
                let bicubic = try RGBImage.batch(RGBImage.images(fromBatch: NoiseAugmentation.upsample(low, to: pairs.highSize)))
                let nearest = try RGBImage.batch(RGBImage.images(fromBatch: low.interpolate(size: (pairs.highSize, pairs.highSize))))
                for (name, images) in [("nearest", nearest), ("bicubic", bicubic), ("stage", stageImages)] {
                    let values = try ImageQuality.psnr(images, high)
                    identical[name, default: 0] += values.filter(\.isInfinite).count
                    psnr[name, default: []] += values.map { min($0, SuperResolutionQualityReport.identicalPSNR) }
                    ssim[name, default: []] += try ImageQuality.ssim(images, high)
                }
                let specs = indices.map { pairs.benchmark.annotation(index: $0, split: split).prompt }
                for (spec, scene) in zip(specs, try evaluator.detect(low)) { lowAlignment.add(Alignment.score(spec, scene)) }
                let reduced = try stageImages.avgPool2d(kernel: c.factor)
                for (spec, scene) in zip(specs, try evaluator.detect(reduced)) { upAlignment.add(Alignment.score(spec, scene)) }
                done += indices.count
                guard progress(ProgressUpdate(phase: "evaluating", completed: done, total: count * splits.count)) else {
                    throw EvaluationError.invalidInput("cancelled")
                }
            }
            let gain = { (table: [String: [Double]]) in MeanSpread(zip(table["stage"]!, table["bicubic"]!).map { $0 - $1 }) }
            results.append(.init(
                split: split.rawValue, pairs: count,
                methods: ["nearest", "bicubic", "stage"].map {
                    .init(name: $0, psnr: MeanSpread(psnr[$0]!), ssim: MeanSpread(ssim[$0]!), identical: identical[$0, default: 0])
                },
                psnrGainOverBicubic: gain(psnr), ssimGainOverBicubic: gain(ssim),
                alignmentLowResolution: lowAlignment.accuracy ?? .nan, alignmentUpsampledReduced: upAlignment.accuracy ?? .nan))
        }
        return SuperResolutionQualityReport(
            model: modelName, factor: c.factor, options: options,
            noiseLevel: options.noiseLevel ?? stage.model.index.samplingNoiseLevel, splits: results,
            seconds: Date().timeIntervalSince(started))
    }
}
