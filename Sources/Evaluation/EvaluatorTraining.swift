import Datasets
import Foundation
import NN
import Torch

/// How the attribute evaluator is trained (saved in its config.json as provenance).
public struct EvaluatorTrainingConfig: Codable, Sendable, Equatable {
    public var steps = 1500
    public var batchSize = 64
    public var learningRate = 2e-3
    public var warmupSteps = 50
    public var minLearningRate = 2e-5
    public var weightDecay = 1e-4
    /// Renders drawn up front (batches are sampled from them with replacement).
    public var datasetSize = 12000
    /// The share of renders from the held-out combinations, so every combination is readable.
    public var heldOutShare = 0.25
    /// The benchmark seed of the training renders (never a diffusion model's, never the check's).
    public var benchmarkSeed = EvaluationSeeds.evaluatorTraining
    /// Initialisation, batch order and augmentation.
    public var seed: UInt64 = 0
    /// Augmentation: Gaussian pixel noise with a per-image σ uniform in [0, noise] (units of
    /// the [-1, 1] range), and a per-image, per-channel offset uniform in ±colorJitter, so that
    /// slightly noisy or tinted generated images still read correctly.
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
        guard steps > 0, batchSize > 0, datasetSize > 0 else {
            throw EvaluationError.invalidConfiguration("evaluator training: steps, batch size and dataset size must be positive")
        }
        guard learningRate > 0, minLearningRate >= 0, minLearningRate <= learningRate, warmupSteps >= 0, weightDecay >= 0 else {
            throw EvaluationError.invalidConfiguration("evaluator training: need 0 ≤ min lr ≤ lr, lr > 0, warm-up and weight decay ≥ 0")
        }
        guard (0...1).contains(heldOutShare), noise >= 0, colorJitter >= 0 else {
            throw EvaluationError.invalidConfiguration("evaluator training: held-out share in [0, 1], noise and jitter ≥ 0")
        }
    }
}

/// The phases the evaluation models' training loops report (``ProgressUpdate/phase``; training
/// reports the metric "loss").
public enum EvaluationTrainingPhase: String, Sendable, CaseIterable {
    case rendering, encoding, training, checking
}

/// The evaluator's accuracy on renders it was never trained on.
public struct EvaluatorAccuracy: Codable, Sendable, Equatable {
    /// Renders checked (half from validation, half from the held-out combinations).
    public var images: Int
    /// Their benchmark seed.
    public var benchmarkSeed: UInt64
    /// Share of images read entirely right (``DetectedScene/agrees(with:)``): the object count,
    /// every object's shape, color and size, and the caption's relation — the number that must
    /// be ≥ 99% for alignment results to be trusted.
    public var accuracy: Double
    /// Per attribute: count (per image), shape, color, size (per object, in canonical order),
    /// relation (per two-object image).
    public var count: Double
    public var shape: Double
    public var color: Double
    public var size: Double
    public var relation: Double
    /// Mean over objects of the larger of the x and y center errors, in pixels.
    public var meanCenterError: Double
    /// ``accuracy`` on the validation (seen) and held-out-combination renders.
    public var seen: Double
    public var heldOut: Double

    enum CodingKeys: String, CodingKey {
        case images, benchmarkSeed = "benchmark_seed", accuracy, count, shape, color, size, relation
        case meanCenterError = "mean_center_error", seen
        case heldOut = "held_out"
    }
}

public enum EvaluatorTraining {
    /// Trains an attribute evaluator from scratch on fresh renders. Deterministic in `config`.
    public static func train(
        config: EvaluatorTrainingConfig, trunk: ConvTrunkConfig = ConvTrunkConfig(),
        progress: ProgressHandler = { _ in true }
    ) throws -> AttributeEvaluator {
        try config.validate()
        var modelConfig = AttributeEvaluatorConfig()
        modelConfig.trunk = trunk
        modelConfig.training = config
        let model = try Torch.withSeed(config.seed) { try AttributeEvaluator(modelConfig) }
        let data = try LabelledRenders.mixed(
            seed: config.benchmarkSeed, imageSize: trunk.imageSize, count: config.datasetSize,
            heldOutShare: config.heldOutShare
        ) { progress($0) }
        let targets = try data.targets(gridSize: model.gridSize)
        try model.requireGrad()
        model.train()
        let optimizer = try AdamW(parameters: model.parameters(), learningRate: config.learningRate, weightDecay: config.weightDecay)
        let schedule = WarmupCosineSchedule(
            peak: config.learningRate, warmupSteps: config.warmupSteps, totalSteps: config.steps, floor: config.minLearningRate)
        let generator = Generator(seed: config.seed &+ 0xE7A1)
        for step in 0..<config.steps {
            optimizer.learningRate = schedule.learningRate(at: step)
            let indices = try Tensor.randint(0, data.count, shape: [config.batchSize], generator: generator)
            let images = try augment(
                data.images.indexSelect(dim: 0, indices), noise: config.noise, colorJitter: config.colorJitter, generator: generator)
            let loss = try self.loss(model.logits(images), try targets.select(indices))
            try optimizer.zeroGrad()
            try loss.backward()
            try optimizer.step()
            let value = try loss.item()
            guard value.isFinite else { throw EvaluationError.diverged("evaluator loss became \(value) at step \(step + 1)") }
            if !progress(ProgressUpdate(phase: EvaluationTrainingPhase.training.rawValue, completed: step + 1, total: config.steps, metrics: [.init("loss", value)])) { break }
        }
        try model.requireGrad(false)
        model.eval()
        return model
    }

    /// Noise and color-offset augmentation (see ``EvaluatorTrainingConfig/noise``), clamped to [-1, 1].
    public static func augment(_ images: Tensor, noise: Double, colorJitter: Double, generator: Generator) throws -> Tensor {
        let b = try images.size(0)
        var x = images
        if noise > 0 {
            let sigma = try Tensor.rand([b, 1, 1, 1], generator: generator) * noise
            x = try x + Tensor.randn(x.shape, generator: generator) * sigma
        }
        if colorJitter > 0 {
            x = try x + (Tensor.rand([b, 3, 1, 1], generator: generator) * 2 - 1) * colorJitter
        }
        return try x.clamped(min: -1, max: 1)
    }

    /// Weight of the offset loss (squared error in cells; a quarter-cell error costs 0.6).
    static let offsetWeight = 10.0

    /// The detector's loss: cross-entropy of the count head; per object, the cross-entropy of
    /// its center cell under a softmax over the grid's objectness, and at that cell the
    /// cross-entropy of its shape, color and size and the weighted squared offset error.
    /// Averaged over images (count) and over objects (the rest).
    static func loss(_ l: EvaluatorLogits, _ t: EvaluatorTargets) throws -> Tensor {
        let logObjectness = try l.objectness.logSoftmax(dim: 1)
        var objects = try Tensor.zeros([try l.count.size(0)])
        for slot in 0..<2 {
            let cell = t.cell[slot]
            func atCell(_ map: Tensor) throws -> Tensor {  // [B, K, G²] → [B, K]
                let k = try map.size(1)
                return try map.gather(dim: 2, cell.reshaped([-1, 1, 1]).expanded([try map.size(0), k, 1])).squeezed(2)
            }
            var perObject = try -(logObjectness.gather(dim: 1, cell.unsqueezed(1)).squeezed(1))
            perObject = try perObject + perSampleCrossEntropy(atCell(l.shape), t.shape[slot])
            perObject = try perObject + perSampleCrossEntropy(atCell(l.color), t.color[slot])
            perObject = try perObject + perSampleCrossEntropy(atCell(l.size), t.size[slot])
            perObject = try perObject + (atCell(l.offset).sigmoid() - t.offset[slot]).square().sum(dims: [1]) * offsetWeight
            objects = try objects + perObject * t.present[slot]
        }
        let present = try (t.present[0] + t.present[1]).sum().clamped(min: 1)
        return try l.count.crossEntropy(targets: t.count) + objects.sum() / present
    }

    /// `−log softmax(logits)[target]` per row, `[B]`.
    static func perSampleCrossEntropy(_ logits: Tensor, _ targets: Tensor) throws -> Tensor {
        try -(logits.logSoftmax(dim: 1).gather(dim: 1, targets.unsqueezed(1)).squeezed(1))
    }

    /// The evaluator's accuracy on `count` renders of benchmark `seed` (half validation, half
    /// held-out combinations), which it must never have been trained on.
    public static func measureAccuracy(
        of model: AttributeEvaluator, seed: UInt64 = EvaluationSeeds.evaluatorCheck, count: Int = 1000,
        progress: ProgressHandler = { _ in true }
    ) throws -> EvaluatorAccuracy {
        guard count >= 2 else { throw EvaluationError.invalidInput("check at least 2 renders, got \(count)") }
        if let trained = model.config.training?.benchmarkSeed, trained == seed {
            throw EvaluationError.invalidInput("the evaluator was trained on benchmark seed \(seed); check it on another seed")
        }
        let benchmark = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: model.imageSize, seed: seed))
        let half = count / 2
        let data = try LabelledRenders.render(benchmark, parts: [(.validation, 0..<(count - half)), (.heldout, 0..<half)]) { p in
            progress(ProgressUpdate(phase: EvaluationTrainingPhase.checking.rawValue, completed: p.completed, total: p.total))
        }
        var detected: [DetectedScene] = []
        for start in stride(from: 0, to: data.count, by: 256) {
            detected += try model.detect(data.images.slice(dim: 0, start, Swift.min(data.count, start + 256)))
        }
        var strict = [Split: (Int, Int)]()
        var count = 0, objects = 0, shape = 0, color = 0, size = 0, relations = 0, relationsRight = 0
        var centerError = 0.0
        for (i, truthScene) in data.truth.enumerated() {
            let d = detected[i], truth = data.scenes[i]
            strict[data.splits[i], default: (0, 0)].1 += 1
            if d.agrees(with: truthScene) { strict[data.splits[i], default: (0, 0)].0 += 1 }
            if d.count == truth.count { count += 1 }
            for (k, o) in truth.objects.enumerated() {
                objects += 1
                guard k < d.objects.count else { centerError += Double(model.imageSize); continue }
                if d.objects[k].shape == o.shape { shape += 1 }
                if d.objects[k].color == o.color { color += 1 }
                if d.objects[k].size == o.size { size += 1 }
                centerError += Swift.max(Swift.abs(d.objects[k].center.x - o.center.x), Swift.abs(d.objects[k].center.y - o.center.y))
            }
            if let relation = truthScene.relation, truth.count == 2 {
                relations += 1
                let first = truthScene.objects[0]
                if let a = d.objects.firstIndex(where: { $0.color == first.color }), d.count == 2,
                   d.relations(of: a, to: 1 - a).contains(relation) { relationsRight += 1 }
            }
        }
        func share(_ p: (Int, Int)?) -> Double { p.map { Double($0.0) / Double(Swift.max(1, $0.1)) } ?? 0 }
        let correct = strict.values.map(\.0).reduce(0, +)
        return EvaluatorAccuracy(
            images: data.count, benchmarkSeed: seed, accuracy: Double(correct) / Double(data.count),
            count: Double(count) / Double(data.count), shape: Double(shape) / Double(objects),
            color: Double(color) / Double(objects), size: Double(size) / Double(objects),
            relation: Double(relationsRight) / Double(Swift.max(1, relations)),
            meanCenterError: centerError / Double(objects),
            seen: share(strict[.validation]), heldOut: share(strict[.heldout]))
    }
}
