import ContextDiff
import Datasets
import Foundation
import NN
import Torch

/// How the contrastive image–text model is trained (saved in its config.json as provenance).
public struct ContrastiveTrainingConfig: Codable, Sendable, Equatable {
    public var steps = 1500
    public var batchSize = 128
    public var learningRate = 2e-3
    public var warmupSteps = 50
    public var minLearningRate = 2e-5
    public var weightDecay = 1e-4
    public var datasetSize = 8000
    public var heldOutShare = 0.25
    public var benchmarkSeed = EvaluationSeeds.clipTraining
    public var seed: UInt64 = 0
    /// Augmentation as the evaluator's (see ``EvaluatorTrainingConfig/noise``).
    public var noise = 0.1
    public var colorJitter = 0.05

    public init() {}

    enum CodingKeys: String, CodingKey {
        case steps, batchSize = "batch_size", learningRate = "learning_rate", warmupSteps = "warmup_steps"
        case minLearningRate = "min_learning_rate", weightDecay = "weight_decay", datasetSize = "dataset_size"
        case heldOutShare = "held_out_share", benchmarkSeed = "benchmark_seed", seed, noise
        case colorJitter = "color_jitter"
    }

    public func validate() throws {
        guard steps > 0, batchSize > 1, datasetSize > 1 else {
            throw EvaluationError.invalidConfiguration("contrastive training: steps > 0, batch size > 1 and dataset size > 1 required")
        }
        guard learningRate > 0, minLearningRate >= 0, minLearningRate <= learningRate, warmupSteps >= 0, weightDecay >= 0,
              (0...1).contains(heldOutShare), noise >= 0, colorJitter >= 0 else {
            throw EvaluationError.invalidConfiguration("contrastive training: invalid learning rates, share or augmentation")
        }
    }
}

/// The configuration of a ``ContrastiveImageText`` model (its `config.json`).
public struct ContrastiveImageTextConfig: Codable, Sendable, Equatable {
    public var format = "contextdiff-contrastive-image-text"
    /// The image tower's trunk; its last map is pooled to 4×4 so the embedding keeps positions.
    public var trunk: ConvTrunkConfig = {
        var c = ConvTrunkConfig()
        c.pooledSize = 4
        return c
    }()
    public var imageHidden = 256
    /// Width of the joint embedding space.
    public var embedDim = 128
    /// The frozen text encoder whose pooled sentence vector the text side projects.
    public var textEncoder = "minilm"
    /// Width of that pooled vector (MiniLM: 384).
    public var textDim = 384
    public var textHidden = 256
    /// CLIP's initial temperature τ (the logit scale is log(1/τ), learned) and the cap on 1/τ.
    public var initialTemperature = 0.07
    public var maxLogitScale = 100.0
    public var training: ContrastiveTrainingConfig?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case format, trunk, imageHidden = "image_hidden", embedDim = "embed_dim", textEncoder = "text_encoder", textDim = "text_dim"
        case textHidden = "text_hidden", initialTemperature = "initial_temperature", maxLogitScale = "max_logit_scale"
        case training
    }
}

/// A small CLIP for the benchmark: a CNN image tower (trunk, then an MLP) and, on the text side, a learned MLP
/// projection of the frozen MiniLM pooled sentence vector; both L2-normalised into one space
/// and trained with the symmetric InfoNCE loss and a learnable temperature (Radford et al. 2021).
public final class ContrastiveImageText: Module, ConfiguredModel {
    public let config: ContrastiveImageTextConfig
    public let trunk: ConvTrunk
    @CheckpointKey("image_hidden") public private(set) var imageHidden: Linear
    @CheckpointKey("image_projection") public private(set) var imageProjection: Linear
    @CheckpointKey("text_hidden") public private(set) var textHidden: Linear
    @CheckpointKey("text_projection") public private(set) var textProjection: Linear
    /// `log(1/τ)`, shape `[1]`.
    @CheckpointKey("logit_scale") public private(set) var logitScale: Tensor

    public init(_ config: ContrastiveImageTextConfig) throws {
        self.config = config
        trunk = try ConvTrunk(config.trunk)
        _imageHidden.wrappedValue = try Linear(config.trunk.featureDim, config.imageHidden)
        _imageProjection.wrappedValue = try Linear(config.imageHidden, config.embedDim)
        _textHidden.wrappedValue = try Linear(config.textDim, config.textHidden)
        _textProjection.wrappedValue = try Linear(config.textHidden, config.embedDim)
        _logitScale.wrappedValue = try Tensor([Float(Foundation.log(1 / config.initialTemperature))])
        super.init()
    }

    /// Unit-norm image embeddings `[B, embedDim]` of images `[B, 3, S, S]` in [-1, 1].
    public func imageEmbeddings(_ images: Tensor) throws -> Tensor {
        try Self.normalized(imageProjection(imageHidden(trunk.features(images)).silu()))
    }

    /// Unit-norm text embeddings `[B, embedDim]` of pooled sentence vectors `[B, textDim]`.
    public func textEmbeddings(_ pooled: Tensor) throws -> Tensor {
        try Self.normalized(textProjection(textHidden(pooled).gelu()))
    }

    /// `exp(logitScale)` capped at ``ContrastiveImageTextConfig/maxLogitScale``.
    public func scale() throws -> Tensor { try logitScale.clamped(max: Foundation.log(config.maxLogitScale)).exp() }

    static func normalized(_ x: Tensor) throws -> Tensor {
        try x / x.norm(dims: [-1], keepDim: true).clamped(min: 1e-12)
    }

    /// CLIPScore (Hessel et al. 2021, as torchmetrics' `CLIPScore`): `100 · max(cos(image, text), 0)`
    /// per pair, `[B]`.
    public func clipScores(images: Tensor, pooled: Tensor) throws -> Tensor {
        let cosine = try (imageEmbeddings(images) * textEmbeddings(pooled)).sum(dims: [1])
        return try cosine.clamped(min: 0) * 100
    }

    public static func load(from directory: URL) throws -> ContrastiveImageText {
        let config = try ModelFolder.config(ContrastiveImageTextConfig.self, in: directory)
        guard config.format == ContrastiveImageTextConfig().format else {
            throw CheckpointError.invalidConfig(
                path: directory.appendingPathComponent(ModelFolder.configName).path,
                reason: "format '\(config.format)' is not a contrastive image–text model")
        }
        let model = try ModelFolder.load(ContrastiveImageText.self, from: directory)
        model.eval()
        return model
    }
}

/// CLIP-style scores of images against texts: the contrastive model plus its frozen text
/// encoder, with the texts' pooled vectors cached.
public final class ContrastiveScorer {
    public let model: ContrastiveImageText
    public let textEncoder: any TextEncoder
    private var cache: [String: Tensor] = [:]

    public init(model: ContrastiveImageText, textEncoder: any TextEncoder) throws {
        guard textEncoder.width == model.config.textDim else {
            throw EvaluationError.invalidInput(
                "the text encoder gives \(textEncoder.width)-wide vectors, the contrastive model expects \(model.config.textDim)")
        }
        self.model = model
        self.textEncoder = textEncoder
    }

    /// The pooled sentence vectors `[B, textDim]` of `texts` (encoded once each).
    public func pooled(_ texts: [String]) throws -> Tensor {
        let missing = Array(Set(texts.filter { cache[$0] == nil }))
        for start in stride(from: 0, to: missing.count, by: 256) {
            let chunk = Array(missing[start..<Swift.min(missing.count, start + 256)])
            let vectors = try textEncoder.encode(chunk).pooled
            for (i, text) in chunk.enumerated() { cache[text] = try vectors.select(dim: 0, i).contiguous() }
        }
        return try Tensor.stack(texts.map { cache[$0]! })
    }

    /// `100 · max(cos, 0)` of each image `[B, 3, S, S]` (in [-1, 1]) with its text.
    public func scores(images: Tensor, texts: [String]) throws -> [Double] {
        guard try images.size(0) == texts.count else {
            throw EvaluationError.invalidInput("\(try images.size(0)) images but \(texts.count) texts")
        }
        model.eval()
        return try Torch.withNoGrad {
            try model.clipScores(images: images, pooled: pooled(texts)).to(.float64).scalars(as: Double.self)
        }
    }
}

/// Sanity numbers of a contrastive model on renders it was not trained on.
public struct ContrastiveCheck: Codable, Sendable, Equatable {
    public var images: Int
    public var benchmarkSeed: UInt64
    /// Mean CLIP score of each image with its own caption.
    public var matched: Double
    /// … with the caption of another render that the image does not satisfy.
    public var mismatched: Double
    /// … with its own caption with the two objects exchanged ("B rel A" for "A rel B"; pairs only).
    public var swapped: Double?
    /// Share of images scoring higher with their caption than with the mismatched one.
    public var pairwiseAccuracy: Double
    /// … than with the swapped one (pairs only).
    public var swappedAccuracy: Double?
    public var logitScale: Double

    enum CodingKeys: String, CodingKey {
        case images, benchmarkSeed = "benchmark_seed", matched, mismatched, swapped
        case pairwiseAccuracy = "pairwise_accuracy", swappedAccuracy = "swapped_accuracy", logitScale = "logit_scale"
    }
}

public enum ContrastiveTraining {
    /// Trains the contrastive model on fresh renders with captions encoded by `textEncoder`.
    ///
    /// Soft InfoNCE targets: within a batch, every caption an image satisfies (by its labels,
    /// e.g. the same scene described in another caption style) counts as a positive, not only
    /// its own, so equivalent captions are not pushed apart.
    public static func train(
        config: ContrastiveTrainingConfig, model modelConfig: ContrastiveImageTextConfig = ContrastiveImageTextConfig(),
        textEncoder: any TextEncoder, progress: ProgressHandler = { _ in true }
    ) throws -> ContrastiveImageText {
        try config.validate()
        var mc = modelConfig
        mc.training = config
        mc.textDim = textEncoder.width
        let model = try Torch.withSeed(config.seed) { try ContrastiveImageText(mc) }
        let data = try LabelledRenders.mixed(
            seed: config.benchmarkSeed, imageSize: mc.trunk.imageSize, count: config.datasetSize,
            heldOutShare: config.heldOutShare
        ) { progress($0) }
        // Encode each distinct caption once.
        var unique: [String] = [], row: [String: Int] = [:]
        for c in data.captions where row[c] == nil {
            row[c] = unique.count
            unique.append(c)
        }
        var tables: [Tensor] = []
        for start in stride(from: 0, to: unique.count, by: 256) {
            tables.append(try textEncoder.encode(Array(unique[start..<Swift.min(unique.count, start + 256)])).pooled)
            _ = progress(
                ProgressUpdate(
                    phase: EvaluationTrainingPhase.encoding.rawValue, completed: Swift.min(unique.count, start + 256),
                    total: unique.count))
        }
        let table = try Tensor.cat(tables).detached()
        let captionRow = data.captions.map { row[$0]! }
        let prompts = unique.map { CaptionParser.parse($0) }
        // A cheap necessary condition for "caption describes image": the same colors.
        let captionColors = prompts.map { $0.map { $0.objects.map(\.color).sorted() } ?? [] }
        let imageColors = data.scenes.map { $0.objects.map(\.color).sorted() }

        try model.requireGrad()
        model.train()
        let optimizer = try AdamW(parameters: model.parameters(), learningRate: config.learningRate, weightDecay: config.weightDecay)
        let schedule = WarmupCosineSchedule(
            peak: config.learningRate, warmupSteps: config.warmupSteps, totalSteps: config.steps, floor: config.minLearningRate)
        let generator = Generator(seed: config.seed &+ 0xC11B)
        let b = Swift.min(config.batchSize, data.count)
        for step in 0..<config.steps {
            optimizer.learningRate = schedule.learningRate(at: step)
            let picked = try Tensor.randperm(data.count, generator: generator).slice(dim: 0, 0, b)
            let indices = try picked.scalars(as: Int64.self).map(Int.init)
            let images = try EvaluatorTraining.augment(
                data.images.indexSelect(dim: 0, picked), noise: config.noise, colorJitter: config.colorJitter,
                generator: generator)
            let texts = try table.indexSelect(dim: 0, Tensor(indices.map { Int64(captionRow[$0]) }))
            // positives[i][j]: caption j describes image i.
            var positives = [Float](repeating: 0, count: b * b)
            for i in 0..<b {
                for j in 0..<b {
                    let same = captionRow[indices[i]] == captionRow[indices[j]]
                    let c = captionRow[indices[j]]
                    let holds = !same && captionColors[c] == imageColors[indices[i]]
                        && prompts[c].map { Alignment.matches($0, data.scenes[indices[i]]) } ?? false
                    positives[i * b + j] = i == j || same || holds ? 1 : 0
                }
            }
            let targets = try Tensor(positives, shape: [b, b])
            let logits = try model.imageEmbeddings(images).matmul(model.textEmbeddings(texts).transposed(0, 1)) * model.scale()
            let loss = try (softCrossEntropy(logits, targets) + softCrossEntropy(logits.transposed(0, 1), targets.transposed(0, 1))) * 0.5
            try optimizer.zeroGrad()
            try loss.backward()
            try optimizer.step()
            let value = try loss.item()
            guard value.isFinite else { throw EvaluationError.diverged("contrastive loss became \(value) at step \(step + 1)") }
            if !progress(ProgressUpdate(phase: EvaluationTrainingPhase.training.rawValue, completed: step + 1, total: config.steps, metrics: [.init("loss", value)])) { break }
        }
        try model.requireGrad(false)
        model.eval()
        return model
    }

    /// Mean over rows of `−Σ_j p_ij log softmax(logits)_ij`, with `p` the row-normalised `positives`.
    static func softCrossEntropy(_ logits: Tensor, _ positives: Tensor) throws -> Tensor {
        let p = try positives / positives.sum(dims: [1], keepDim: true).clamped(min: 1)
        return try -((p * logits.logSoftmax(dim: 1)).sum(dims: [1]).mean())
    }

    /// Scores `count` renders of benchmark `seed` (half validation, half held-out combinations)
    /// with their own caption, a mismatched caption, and (pairs) the object-swapped caption.
    public static func check(
        _ scorer: ContrastiveScorer, seed: UInt64 = EvaluationSeeds.clipCheck, count: Int = 512
    ) throws -> ContrastiveCheck {
        guard count >= 2 else { throw EvaluationError.invalidInput("check at least 2 renders, got \(count)") }
        if let trained = scorer.model.config.training?.benchmarkSeed, trained == seed {
            throw EvaluationError.invalidInput("the contrastive model was trained on benchmark seed \(seed); check it on another seed")
        }
        let benchmark = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: scorer.model.config.trunk.imageSize, seed: seed))
        let half = count / 2
        let data = try LabelledRenders.render(benchmark, parts: [(.validation, 0..<(count - half)), (.heldout, 0..<half)])
        let prompts = data.captions.map { CaptionParser.parse($0) }
        var mismatched: [String] = []
        var rng = SplitMix64(seed: seed)
        for i in 0..<data.count {
            var pick = data.captions[(i + 1) % data.count]
            for _ in 0..<32 {
                let j = rng.uniform(below: data.count)
                if let p = prompts[j], !Alignment.matches(p, data.scenes[i]) { pick = data.captions[j]; break }
            }
            mismatched.append(pick)
        }
        var swappedIndex: [Int] = [], swappedText: [String] = []
        for (i, p) in prompts.enumerated() {
            guard let p, p.objects.count == 2, let relation = p.relation else { continue }
            let swapped = Captions.caption([p.objects[1], p.objects[0]], relation: relation, style: .plain)
            if let q = CaptionParser.parse(swapped), !Alignment.matches(q, data.scenes[i]) {
                swappedIndex.append(i)
                swappedText.append(swapped)
            }
        }
        let own = try scorer.scores(images: data.images, texts: data.captions)
        let other = try scorer.scores(images: data.images, texts: mismatched)
        let swapImages = try swappedIndex.isEmpty ? nil : data.images.indexSelect(dim: 0, Tensor(swappedIndex.map(Int64.init)))
        let swapped = try swapImages.map { try scorer.scores(images: $0, texts: swappedText) }
        func mean(_ v: [Double]) -> Double { v.reduce(0, +) / Double(Swift.max(1, v.count)) }
        let better = zip(own, other).filter { $0 > $1 }.count
        let swappedBetter = swapped.map { s in zip(swappedIndex, s).filter { own[$0.0] > $0.1 }.count }
        return ContrastiveCheck(
            images: data.count, benchmarkSeed: seed, matched: mean(own), mismatched: mean(other),
            swapped: swapped.map(mean), pairwiseAccuracy: Double(better) / Double(data.count),
            swappedAccuracy: swappedBetter.map { Double($0) / Double(swappedIndex.count) },
            logitScale: try scorer.model.scale().item())
    }
}
