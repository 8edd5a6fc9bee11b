import ContextDiff
import Datasets
import Foundation
import Torch

/// One prompt to evaluate: its text and, when it is in the benchmark's grammar, its labels.
public struct EvaluationPrompt: Sendable, Equatable {
    public var text: String
    public var spec: PromptSpec?

    public init(text: String, spec: PromptSpec?) {
        self.text = text
        self.spec = spec
    }

    /// A prompt from free text: labelled when ``CaptionParser`` reads it.
    public init(parsing text: String) {
        self.init(text: text, spec: CaptionParser.parse(text))
    }
}

/// The pixel-level color/position check (``ColorPositionChecker``) by prompt kind.
public struct PixelCheckSummary: Codable, Sendable, Equatable {
    /// Keyed by ``PromptKind`` raw values.
    public var kinds: [String: Tally] = [:]

    public init() {}

    public var twoObjectAccuracy: Double? {
        let two = kinds.filter { $0.key != PromptKind.singleObject.rawValue }.values.reduce(Tally(), +)
        return two.accuracy
    }

    enum CodingKeys: String, CodingKey { case kinds, twoObjectAccuracy = "two_object_accuracy" }

    public init(from decoder: Decoder) throws {
        kinds = try decoder.container(keyedBy: CodingKeys.self).decode([String: Tally].self, forKey: .kinds)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kinds, forKey: .kinds)
        try c.encodeIfPresent(twoObjectAccuracy, forKey: .twoObjectAccuracy)
    }
}

/// The metrics of one prompt set (a benchmark split's prompts, or a prompts file).
public struct PromptSetEvaluation: Codable, Sendable {
    public var name: String
    public var prompts: Int
    public var images: Int
    /// Prompts in the benchmark grammar (alignment and pixel checks use only these).
    public var parsedPrompts: Int
    public var alignment: AlignmentSummary?
    public var pixel: PixelCheckSummary?
    /// Mean and standard deviation of the CLIP-style score over all images.
    public var clipScore: Double
    public var clipScoreStd: Double
    /// Fréchet distance of the evaluator's features, generated vs real renders (nil without a reference).
    public var frechetDistance: Double?
    public var referenceImages: Int?
    /// Per prompt (in order): the detected scene of each of its images.
    public var detected: [[DetectedScene]]?
    /// Precision and recall against the real renders, and the spread of layouts across seeds.
    public var diversity: DiversitySummary?
    /// The pipeline's notices (e.g. truncated prompts), each once; nil when there were none.
    public var notices: [String]?

    enum CodingKeys: String, CodingKey {
        case name, prompts, images, parsedPrompts = "parsed_prompts", alignment, pixel, clipScore = "clip_score"
        case clipScoreStd = "clip_score_std", frechetDistance = "frechet_distance", referenceImages = "reference_images"
        case detected, diversity, notices
    }
}

/// Real renders for the Fréchet distance: per split, the same number of single-object,
/// left/right and above/below scenes (the mix of the evaluation prompts), from a benchmark
/// seed no model trains on (``EvaluationSeeds/frechetReference``); their evaluator-feature
/// statistics are computed once and reused.
public final class FrechetReference {
    public let evaluator: AttributeEvaluator
    public let perKind: Int
    public let seed: UInt64
    private var statistics: [Split: GaussianStatistics] = [:]
    private var features: [Split: Tensor] = [:]

    public init(evaluator: AttributeEvaluator, perKind: Int = 334, seed: UInt64 = EvaluationSeeds.frechetReference) {
        self.evaluator = evaluator
        self.perKind = perKind
        self.seed = seed
    }

    /// `perKind` renders of each prompt kind of `split`: `[3·perKind, 3, S, S]`.
    public func images(for split: Split) throws -> Tensor {
        let benchmark = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: evaluator.imageSize, seed: seed))
        var chosen: [PromptKind: [Int]] = [:]
        var index = 0
        while PromptKind.allCases.contains(where: { chosen[$0, default: []].count < perKind }) {
            let kind = benchmark.annotation(index: index, split: split).prompt.kind
            if chosen[kind, default: []].count < perKind { chosen[kind, default: []].append(index) }
            index += 1
        }
        let indices = PromptKind.allCases.flatMap { chosen[$0]! }
        return try benchmark.batch(indices: indices, split: split).images
    }

    public func statistics(for split: Split) throws -> GaussianStatistics {
        if let s = statistics[split] { return s }
        let s = try GaussianStatistics(features: features(for: split))
        statistics[split] = s
        return s
    }

    /// The evaluator's features of the renders of `split` `[3·perKind, D]` (for precision and recall).
    public func features(for split: Split) throws -> Tensor {
        if let f = features[split] { return f }
        let images = try images(for: split)
        var chunks: [Tensor] = []
        for start in stride(from: 0, to: try images.size(0), by: 256) {
            chunks.append(try evaluator.detectWithFeatures(images.slice(dim: 0, start, Swift.min(try images.size(0), start + 256))).features)
        }
        let f = try Tensor.cat(chunks)
        features[split] = f
        return f
    }
}

/// Evaluates a text-to-image pipeline on prompts: generates the images (quantised to 8 bits,
/// as saved), then measures alignment with the independent ``AttributeEvaluator``, the pixel
/// color/position check, the CLIP-style score and, given real renders, the Fréchet distance.
public final class TextToImageEvaluation {
    public let pipeline: TextToImagePipeline
    public let evaluator: AttributeEvaluator
    public let scorer: ContrastiveScorer
    public var checker = ColorPositionChecker()
    /// What happens to each batch of generated images before they are measured (`[N, C, S, S]`
    /// grouped by prompt, the batch's prompts, images per prompt): a cascade's later stages,
    /// say, followed by a reduction to the evaluator's size. Nil measures the pipeline's images.
    public var transform: ((_ images: Tensor, _ prompts: [String], _ imagesPerPrompt: Int) throws -> Tensor)?

    public init(pipeline: TextToImagePipeline, evaluator: AttributeEvaluator, scorer: ContrastiveScorer) throws {
        let size = pipeline.model.unet.config.sampleSize
        guard evaluator.imageSize == size, scorer.model.config.trunk.imageSize == size else {
            throw EvaluationError.invalidInput(
                "the model makes \(size)×\(size) images; the evaluator reads \(evaluator.imageSize) and the contrastive model \(scorer.model.config.trunk.imageSize)")
        }
        self.pipeline = pipeline
        self.evaluator = evaluator
        self.scorer = scorer
    }

    /// Generates `options.imagesPerPrompt` images per prompt in batches of `batchSize` prompts
    /// (each batch seeded `options.seed + first prompt index`) and measures them.
    /// `progress` (phase "evaluating", images); `keepImages` returns the images too.
    public func evaluate(
        _ prompts: [EvaluationPrompt], name: String, options: GenerationOptions, batchSize: Int = 16,
        reference: GaussianStatistics? = nil, realFeatures: Tensor? = nil, keepDetections: Bool = false,
        progress: ProgressHandler = { _ in true }
    ) throws -> (result: PromptSetEvaluation, images: [RGBImage]) {
        guard !prompts.isEmpty else { throw EvaluationError.invalidInput("no prompts to evaluate") }
        guard batchSize > 0 else { throw EvaluationError.invalidInput("batch size must be positive") }
        let perPrompt = options.imagesPerPrompt
        let total = prompts.count * perPrompt
        var images: [RGBImage] = []
        var features: [Tensor] = []
        var scenes: [DetectedScene] = []
        var clip: [Double] = []
        var notices: [String] = []
        var batchOptions = options
        for start in stride(from: 0, to: prompts.count, by: batchSize) {
            let chunk = Array(prompts[start..<Swift.min(prompts.count, start + batchSize)])
            batchOptions.seed = options.seed &+ UInt64(start)
            let generated = try pipeline.generate(prompts: chunk.map(\.text), options: batchOptions)
            notices += generated.notices.filter { !notices.contains($0) }
            let produced = try transform.map { try $0(generated.images, chunk.map(\.text), perPrompt) } ?? generated.images
            let rgb = try RGBImage.images(fromBatch: produced)
            let quantised = try RGBImage.batch(rgb)
            let (detected, f) = try evaluator.detectWithFeatures(quantised)
            // Images come grouped by prompt: prompt k's copies at k·perPrompt ..< (k+1)·perPrompt.
            let texts = chunk.flatMap { Array(repeating: $0.text, count: perPrompt) }
            clip += try scorer.scores(images: quantised, texts: texts)
            images += rgb
            scenes += detected
            features.append(f)
            _ = progress(ProgressUpdate(phase: "evaluating", completed: images.count, total: total))
        }
        var alignment = AlignmentSummary(), pixel = PixelCheckSummary()
        var parsed = 0
        for (k, prompt) in prompts.enumerated() {
            guard let spec = prompt.spec else { continue }
            parsed += 1
            for copy in 0..<perPrompt {
                let i = k * perPrompt + copy
                alignment.add(Alignment.score(spec, scenes[i]))
                pixel.kinds[spec.kind.rawValue, default: Tally()].add(checker.isCorrect(images[i], prompt: spec))
            }
        }
        let mean = clip.reduce(0, +) / Double(clip.count)
        let std = (clip.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(Swift.max(1, clip.count - 1))).squareRoot()
        var fd: Double?
        if let reference, total >= 2 {
            fd = try FrechetDistance.distance(GaussianStatistics(features: Tensor.cat(features)), reference)
        }
        let perPromptScenes = prompts.indices.map { k in Array(scenes[(k * perPrompt)..<((k + 1) * perPrompt)]) }
        let diversity = try diversity(
            prompts: prompts, scenes: perPromptScenes, features: Tensor.cat(features), realFeatures: realFeatures)
        let result = PromptSetEvaluation(
            name: name, prompts: prompts.count, images: total, parsedPrompts: parsed,
            alignment: parsed > 0 ? alignment : nil, pixel: parsed > 0 ? pixel : nil, clipScore: mean,
            clipScoreStd: clip.count > 1 ? std : 0, frechetDistance: fd, referenceImages: reference?.count,
            detected: keepDetections ? perPromptScenes : nil, diversity: diversity,
            notices: notices.isEmpty ? nil : notices)
        return (result, images)
    }

    /// Precision and recall against `realFeatures`, and with several images per prompt the
    /// spread of their layouts beside that of as many real renders of each prompt.
    func diversity(prompts: [EvaluationPrompt], scenes: [[DetectedScene]], features: Tensor, realFeatures: Tensor?) throws
        -> DiversitySummary?
    {
        var summary = DiversitySummary()
        if let realFeatures, try features.size(0) > 3, try realFeatures.size(0) > 3 {
            (summary.precision, summary.recall) = try PrecisionRecall.compute(real: realFeatures, generated: features)
        }
        let labelled = zip(prompts, scenes).compactMap { p, s in p.spec.map { ($0, s) } }
        if let perPrompt = scenes.first?.count, perPrompt >= 2, !labelled.isEmpty {
            summary.spread = LayoutSpread.measure(prompts: labelled.map(\.0), scenes: labelled.map(\.1))
            let benchmark = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: evaluator.imageSize))
            let renders = try benchmark.renders(of: labelled.map(\.0), count: perPrompt, seed: EvaluationSeeds.promptRenders)
            var real: [DetectedScene] = []
            for start in stride(from: 0, to: try renders.size(0), by: 256) {
                real += try evaluator.detectWithFeatures(renders.slice(dim: 0, start, Swift.min(try renders.size(0), start + 256))).scenes
            }
            summary.realSpread = LayoutSpread.measure(
                prompts: labelled.map(\.0), scenes: labelled.indices.map { Array(real[($0 * perPrompt)..<(($0 + 1) * perPrompt)]) })
        }
        return summary.precision == nil && summary.spread == nil ? nil : summary
    }

    /// The benchmark's evaluation prompts of `split`: `perKind` of each kind (single object,
    /// left/right pair, above/below pair), as ``SyntheticBenchmark/prompts(split:count:kind:)``.
    public static func benchmarkPrompts(_ benchmark: SyntheticBenchmark, split: Split, perKind: Int) -> [EvaluationPrompt] {
        PromptKind.allCases.flatMap { benchmark.prompts(split: split, count: perKind, kind: $0) }
            .map { EvaluationPrompt(text: $0.text, spec: $0) }
    }
}
