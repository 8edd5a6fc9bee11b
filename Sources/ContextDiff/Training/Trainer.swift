import Foundation
import NN
import Torch

/// Errors of training.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case invalidConfig(String)
    case invalidData(String)
    /// The loss became NaN or infinite; the last good checkpoint is kept.
    case nonFiniteLoss(step: Int, lastCheckpoint: String?)
    case corruptCheckpoint(path: String, reason: String)
    /// A checkpoint or the exported model could not be written (a full disk, say). Nothing
    /// under a final name was touched: the previous checkpoint and model still load.
    case checkpointWriteFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidConfig(m): "invalid training configuration: \(m)"
        case let .invalidData(m): "invalid training data: \(m)"
        case let .nonFiniteLoss(step, last):
            "loss became NaN/Inf at step \(step); stopped. Last good checkpoint: \(last ?? "none")"
        case let .corruptCheckpoint(p, r): "cannot resume from \(p): \(r)"
        case let .checkpointWriteFailed(p, r): "cannot write checkpoint \(p): \(r) (the previous checkpoint is intact; free space and rerun to resume)"
        }
    }
}

/// Hyper-parameters of a training run (saved with every checkpoint). The defaults are the
/// shipped model's recipe (docs/TRAINING.md).
public struct TrainingConfig: Codable, Sendable, Equatable {
    public var steps = 2000
    public var batchSize = 32
    public var learningRate = 5e-4
    public var warmupSteps = 100
    public var minLearningRate = 2e-5
    public var weightDecay = 0.01
    public var gradientClip = 1.0
    public var emaDecay = 0.995
    /// Fraction of samples whose condition is replaced by the empty caption (for guidance).
    public var conditionDropout = 0.1
    public var weighting = LossWeighting.uniform
    public var seed: UInt64 = 0
    public var checkpointEvery = 250
    /// Checkpoints kept on disk (oldest deleted first).
    public var keepCheckpoints = 2
    /// Weight of the token-grounding loss on the cross-attention (``TokenGrounding``); 0 turns
    /// it off. Needs the training images' object boxes and caption token positions.
    public var groundingWeight = 0.0
    /// Training timesteps are drawn uniformly from `[lo, hi)` (nil: every timestep). Fine-tuning
    /// on the noisy end trains where a sample's layout is decided.
    public var timestepRange: [Int]?
    /// Weight of a ``LayoutPrior``'s supervised box loss (used only when the U-Net has one).
    public var layoutWeight = 1.0
    /// Steps of ``Trainer/fitLayoutPrior(progress:)`` before the first diffusion step: the box
    /// predictor alone, on the cached caption states, at ``layoutFitLearningRate``, batch 256.
    public var layoutFitSteps = 1500
    public var layoutFitLearningRate = 1e-3
    /// Fit only the prior's mixture head (``LayoutPrior/mixture``) on the frozen predictor: the
    /// typical boxes and gates stay exactly as they were.
    public var layoutFitMixtureOnly = false
    /// The networks' matrix products and convolutions in float32 or in bfloat16 mixed precision
    /// (``Precision``); weights, AdamW's moments, the EMA, the losses and backward's
    /// accumulation stay float32 either way.
    public var precision = Precision.fp32

    public init() {}

    enum CodingKeys: String, CodingKey {
        case steps, batchSize = "batch_size", learningRate = "learning_rate", warmupSteps = "warmup_steps"
        case minLearningRate = "min_learning_rate", weightDecay = "weight_decay", gradientClip = "gradient_clip"
        case emaDecay = "ema_decay", conditionDropout = "condition_dropout", weighting, seed
        case checkpointEvery = "checkpoint_every", keepCheckpoints = "keep_checkpoints"
        case groundingWeight = "grounding_weight"
        case timestepRange = "timestep_range"
        case layoutWeight = "layout_weight"
        case layoutFitSteps = "layout_fit_steps", layoutFitLearningRate = "layout_fit_learning_rate"
        case layoutFitMixtureOnly = "layout_fit_mixture_only"
        case precision
    }

    /// Missing keys take the defaults, so a recipe may name only what it changes.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = TrainingConfig()
        steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? d.steps
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? d.batchSize
        learningRate = try c.decodeIfPresent(Double.self, forKey: .learningRate) ?? d.learningRate
        warmupSteps = try c.decodeIfPresent(Int.self, forKey: .warmupSteps) ?? d.warmupSteps
        minLearningRate = try c.decodeIfPresent(Double.self, forKey: .minLearningRate) ?? d.minLearningRate
        weightDecay = try c.decodeIfPresent(Double.self, forKey: .weightDecay) ?? d.weightDecay
        gradientClip = try c.decodeIfPresent(Double.self, forKey: .gradientClip) ?? d.gradientClip
        emaDecay = try c.decodeIfPresent(Double.self, forKey: .emaDecay) ?? d.emaDecay
        conditionDropout = try c.decodeIfPresent(Double.self, forKey: .conditionDropout) ?? d.conditionDropout
        weighting = try c.decodeIfPresent(LossWeighting.self, forKey: .weighting) ?? d.weighting
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
        checkpointEvery = try c.decodeIfPresent(Int.self, forKey: .checkpointEvery) ?? d.checkpointEvery
        keepCheckpoints = try c.decodeIfPresent(Int.self, forKey: .keepCheckpoints) ?? d.keepCheckpoints
        groundingWeight = try c.decodeIfPresent(Double.self, forKey: .groundingWeight) ?? d.groundingWeight
        timestepRange = try c.decodeIfPresent([Int].self, forKey: .timestepRange)
        layoutWeight = try c.decodeIfPresent(Double.self, forKey: .layoutWeight) ?? d.layoutWeight
        layoutFitSteps = try c.decodeIfPresent(Int.self, forKey: .layoutFitSteps) ?? d.layoutFitSteps
        layoutFitLearningRate = try c.decodeIfPresent(Double.self, forKey: .layoutFitLearningRate) ?? d.layoutFitLearningRate
        layoutFitMixtureOnly = try c.decodeIfPresent(Bool.self, forKey: .layoutFitMixtureOnly) ?? d.layoutFitMixtureOnly
        precision = try c.decodeIfPresent(Precision.self, forKey: .precision) ?? d.precision
    }

    public func validate() throws {
        func fail(_ m: String) -> Error { TrainingError.invalidConfig(m) }
        guard steps > 0 || (steps == 0 && layoutFitSteps > 0) else {
            throw fail("steps must be positive (0 only to fit a layout prior alone: layout fit steps > 0)")
        }
        guard batchSize > 0 else { throw fail("batch size must be positive") }
        guard learningRate > 0, learningRate.isFinite, minLearningRate >= 0, minLearningRate <= learningRate else {
            throw fail("learning rates must satisfy 0 ≤ min ≤ lr, lr > 0")
        }
        guard warmupSteps >= 0, weightDecay >= 0, gradientClip > 0 else { throw fail("warmup, weight decay and clip must be non-negative/positive") }
        guard (0..<1).contains(emaDecay) else { throw fail("EMA decay must be in [0, 1)") }
        guard (0..<1).contains(conditionDropout) else { throw fail("condition dropout must be in [0, 1)") }
        guard checkpointEvery > 0, keepCheckpoints > 0 else { throw fail("checkpoint interval and count must be positive") }
        guard groundingWeight >= 0, groundingWeight.isFinite else { throw fail("grounding weight must be ≥ 0") }
        guard layoutWeight >= 0, layoutWeight.isFinite else { throw fail("layout weight must be ≥ 0") }
        guard layoutFitSteps >= 0, layoutFitLearningRate > 0, layoutFitLearningRate.isFinite else {
            throw fail("layout fit steps must be ≥ 0 and its learning rate positive")
        }
        if let r = timestepRange {
            guard r.count == 2, r[0] >= 0, r[0] < r[1] else { throw fail("timestep range must be [lo, hi) with 0 ≤ lo < hi") }
        }
    }
}

/// The phases the trainer reports (``ProgressUpdate/phase``): fitting the layout prior (metric
/// "loss"), then training (metrics "loss", "lr", "steps_per_second").
public enum TrainingPhase: String, Sendable {
    case layoutPrior = "layout prior"
    case training
}

/// Trains a ``ContextDiffModel`` (ContextDiff, or the r_φ ≡ 0 baseline when it has no adapter)
/// with AdamW, warm-up + cosine, EMA, gradient clipping and condition dropout. Checkpoints are
/// written atomically every `checkpointEvery` steps to `runDirectory/checkpoints/step-NNNNNNN`
/// and resume is exact: weights, optimizer moments, EMA, RNG state and data order.
///
/// Data-parallel training (a `processGroup` of N ranks) computes exactly what one process with
/// the same global batch computes, up to the order of float additions: every rank draws the
/// global batch's condition dropout, timesteps and noise from the same generator and keeps its
/// own stride of it (``EpochSampler/positions``), gradients are averaged over the global batch,
/// and rank 0 writes checkpoints and logs and shares resumed state with the other ranks.
public final class Trainer {
    public let model: ContextDiffModel
    public let config: TrainingConfig
    public let data: CaptionedImageSource
    public let captions: CaptionTable
    /// The objects of each training image (index-aligned with `data`), for the grounding loss
    /// and a layout prior; an empty entry is an image whose objects are not known.
    public let groundings: [[GroundedObject]]?
    public let runDirectory: URL
    public let diffusion: ContextualDiffusion
    /// Optional data-parallel group: gradients are averaged over ranks; rank 0 writes files.
    public let processGroup: ProcessGroup?
    /// Where the steps run: the model's device when the trainer was made (move the model with
    /// ``ContextDiffModel/to(_:)`` first). Batches and the caption table are moved there; every
    /// random draw stays on the CPU generator, so a seed trains the same on every device up to
    /// the kernels' rounding.
    public let device: Device

    public let optimizer: AdamW
    public let ema: ExponentialMovingAverage
    let generator: Generator
    let sampler: EpochSampler
    /// Every module of the networks, to set training mode each step without walking the tree.
    let modules: [Module]
    /// Whether a module of the networks drops activations in training (one generator: the
    /// batch is not split).
    let dropsActivations: Bool
    let schedule: WarmupCosineSchedule
    public private(set) var step = 0
    /// Into how many parts each step's batch is split, each part's forward and backward on its
    /// own thread at once (``Torch/concurrently(_:threadsEach:_:)``), with libtorch's intra-op
    /// threads shared out among them: 1 or 2, nil for automatic — 2 on a CPU with at least two
    /// intra-op threads, 1 elsewhere. On a 2-core CPU, two halves each on one core save what
    /// one batch on two intra-op threads spends synchronising them at every operator (1.05–1.16×
    /// a step; docs/NOTES.md "Performance" 8). Not more than two: the halves' gradients add up in
    /// whichever order the threads finish, and a sum of two is the same in either order, so a
    /// run stays reproducible. Steps with the grounding loss (it records the cross-attention
    /// of the whole batch) and models with dropout (one generator for the whole batch) run
    /// whole. The split changes only the order of float additions.
    public var shards: Int?
    public private(set) var lastCheckpoint: URL?
    /// The unweighted grounding loss of the last step (nil when it is off).
    public private(set) var lastGroundingLoss: Double?
    /// The unweighted layout-prior loss of the last step (nil without a prior).
    public private(set) var lastLayoutLoss: Double?

    public init(
        model: ContextDiffModel, config: TrainingConfig, data: CaptionedImageSource, captions: CaptionTable,
        runDirectory: URL, processGroup: ProcessGroup? = nil, groundings: [[GroundedObject]]? = nil
    ) throws {
        try config.validate()
        if config.groundingWeight > 0 {
            guard let groundings, groundings.count == data.count else {
                throw TrainingError.invalidData(
                    "the grounding loss needs every training image's object boxes and caption tokens (\(groundings?.count ?? 0) for \(data.count) images)")
            }
        }
        if model.unet.layoutPrior != nil {
            guard let groundings, groundings.count == data.count else {
                throw TrainingError.invalidData(
                    "a layout prior learns from every training image's object boxes and caption tokens (\(groundings?.count ?? 0) for \(data.count) images)")
            }
        }
        self.model = model
        self.config = config
        self.data = data
        device = try model.device
        self.captions = try captions.to(device)
        self.groundings = groundings
        self.runDirectory = runDirectory
        self.processGroup = processGroup
        diffusion = ContextualDiffusion(schedule: model.schedule)
        modules = model.unet.descendants() + (model.adapter?.descendants() ?? []) + (model.classEncoder?.descendants() ?? [])
        dropsActivations = modules.contains { ($0 as? Dropout).map { $0.probability > 0 } ?? false }
        for p in model.parameters { try p.requiringGrad() }
        optimizer = try AdamW(parameters: model.parameters, learningRate: config.learningRate, weightDecay: config.weightDecay)
        ema = try ExponentialMovingAverage(parameters: model.parameters, maxDecay: config.emaDecay)
        let rank = processGroup?.rank ?? 0
        // The same seed on every rank: each draws the whole global batch's randomness.
        generator = Generator(seed: config.seed &+ 0x5EED)
        sampler = try EpochSampler(
            count: data.count, batchSize: config.batchSize, seed: config.seed, rank: rank, worldSize: processGroup?.worldSize ?? 1)
        schedule = WarmupCosineSchedule(
            peak: config.learningRate, warmupSteps: config.warmupSteps, totalSteps: config.steps, floor: config.minLearningRate)
        if let pg = processGroup {
            // Every rank starts from rank 0's initial weights.
            try Torch.withNoGrad { try pg.broadcast(model.parameters.map { try $0.detached() }, root: 0) }
            try Torch.withNoGrad { try ema.copy(from: model.parameters) }
        }
    }

    var isWriter: Bool { (processGroup?.rank ?? 0) == 0 }
    var folder: RunFolder { RunFolder(runDirectory) }
    var checkpointsDirectory: URL { folder.checkpoints }

    /// One optimisation step; returns the loss (the mean over the global batch).
    public func trainStep() throws -> Double {
        try Torch.withDefaultDevice(device) { try step(on: device) }
    }

    private func step(on device: Device) throws -> Double {
        Module.setTraining(true, of: modules)
        optimizer.learningRate = schedule.learningRate(at: step)
        let indices = try sampler.indices(step: step)
        let x0 = try data.images(at: indices).to(device)
        // The global batch's random draws, identical on every rank; this rank keeps its stride.
        let global = config.batchSize
        let mine = sampler.positions
        let keepAll = try Tensor.rand([global], generator: generator).scalars(as: Float.self)
        let timestepsAll = try diffusion.sampleTimesteps(
            count: global, generator: generator, range: config.timestepRange.map { $0[0]..<$0[1] })
        let noiseAll = try Tensor.randn([global] + x0.shape.dropFirst(), generator: generator)
        let noise = mine.count == global
            ? noiseAll : try noiseAll.indexSelect(dim: 0, Tensor(mine.map(Int64.init), shape: [mine.count]))
        let t = mine.map { timestepsAll[$0] }
        var rows = indices.map { captions.index[data.caption(at: $0)] ?? captions.nullRow }
        let trueCondition = try captions.rows(rows)
        for (i, position) in mine.enumerated() where Double(keepAll[position]) < config.conditionDropout {
            rows[i] = captions.nullRow
        }
        let denoiserCondition = try captions.rows(rows)
        let adapter = model.adapter
        // The grounding loss reads the cross-attention of this call: a one-frame, per-frame
        // layout with a recorder computes exactly the 2-D model.
        let recorder = config.groundingWeight > 0 && groundings != nil ? CrossAttentionRecorder() : nil
        let layout = recorder.map { VideoLayout(frames: 1, selfAttention: .perFrame, control: $0) }
        // A layout prior draws from the true boxes (dropped captions: none) and learns to predict them.
        var target: LayoutTarget?
        if model.unet.layoutPrior != nil, let groundings {
            let objects = zip(indices, rows).map { index, row -> [GroundedObject]? in
                row == captions.nullRow ? [] : groundings[index].isEmpty ? nil : groundings[index]
            }
            target = try LayoutTarget(objects: objects, tokens: denoiserCondition.tokens.shape[1])
        }
        // The diffusion loss of rows `range` of the batch, weighted by their share of it: the
        // networks' forward passes in the configured precision (their outputs are float32, so
        // is the loss); backward outside the scope.
        let rowCount = mine.count
        func diffusionLoss(_ range: Range<Int>) throws -> Tensor {
            let whole = range.count == rowCount
            let x0Rows = whole ? x0 : try x0.slice(dim: 0, range.lowerBound, range.upperBound)
            let noiseRows = whole ? noise : try noise.slice(dim: 0, range.lowerBound, range.upperBound)
            let denoiserRows = whole ? denoiserCondition : try denoiserCondition.rows(range)
            let trueRows = whole ? trueCondition : try trueCondition.rows(range)
            let targetRows = whole ? target : try target?.rows(range)
            let loss = try Torch.withPrecision(config.precision, on: device) { () throws -> Tensor in
                try diffusion.trainingLoss(
                    x0: x0Rows, timesteps: Array(t[range]), noise: noiseRows, weighting: config.weighting,
                    prediction: model.unet.config.prediction,
                    denoiser: { xt, t in try self.model.unet(xt, timesteps: t, condition: denoiserRows, video: layout, layout: targetRows) },
                    context: adapter.map { a in { x, t in try a(x, timesteps: t, condition: trueRows) } })
            }
            return whole ? loss : try loss * (Double(range.count) / Double(rowCount))
        }
        try optimizer.zeroGrad()
        var value: Double
        let shards = recorder == nil ? try shardRanges(rows: rowCount) : [0..<rowCount]
        if shards.count > 1 {
            // Each shard's forward and backward on its own thread; the parameters' gradients
            // add up in place (two terms: the same sum in either order).
            let values = ShardValues(count: shards.count)
            try Torch.concurrently(shards.count) { i in
                let loss = try diffusionLoss(shards[i])
                values[i] = try loss.item()
                try loss.backward()
            }
            value = values.sum
            if let prior = model.unet.layoutPrior, let target {
                let layoutLoss = try prior.loss(denoiserCondition, target: target)
                lastLayoutLoss = try layoutLoss.item()
                let weighted = try layoutLoss * config.layoutWeight
                value += try weighted.item()
                try weighted.backward()
            }
        } else {
            var loss = try diffusionLoss(0..<rowCount)
            if let recorder, let groundings {
                // Rows whose caption was dropped have no words to ground.
                let objects = zip(indices, rows).map { index, row in row == captions.nullRow ? [] : groundings[index] }
                let grounding = try Torch.withPrecision(config.precision, on: device) {
                    try TokenGrounding.loss(maps: recorder.maps, objects: objects)
                }
                lastGroundingLoss = try grounding.item()
                loss = try loss + grounding * config.groundingWeight
            }
            // The layout prior's likelihood in float32 (a small network; its mixture's densities
            // need the mantissa).
            if let prior = model.unet.layoutPrior, let target {
                let layoutLoss = try prior.loss(denoiserCondition, target: target)
                lastLayoutLoss = try layoutLoss.item()
                loss = try loss + layoutLoss * config.layoutWeight
            }
            value = try loss.item()
            try loss.backward()
        }
        // Checked after the all-reduce, so that every rank sees the same loss and stops together.
        if let pg = processGroup { value = try allReduceGradients(pg, loss: value) }
        guard value.isFinite else {
            throw TrainingError.nonFiniteLoss(step: step, lastCheckpoint: lastCheckpoint?.path)
        }
        try clipGradNorm(optimizer.parameters, maxNorm: config.gradientClip)
        try optimizer.step()
        // The optimizer's list: the model's parameters in the same order, without walking the
        // module tree again (~4 ms a step for the shipped networks).
        try ema.update(from: optimizer.parameters)
        step += 1
        return value
    }

    /// The row ranges of a batch of `rows` that a step computes at once (``shards``; one range:
    /// the whole batch on the calling thread). Throws for a ``shards`` other than 1, 2 or nil.
    public func shardRanges(rows: Int) throws -> [Range<Int>] {
        if let shards, !(1...2).contains(shards) {
            throw TrainingError.invalidConfig("shards must be 1 or 2 (got \(shards))")
        }
        let automatic = device == .cpu && Torch.numThreads >= 2 ? 2 : 1
        let count = min(shards ?? automatic, rows)
        guard count > 1, !dropsActivations else { return [0..<rows] }
        let first = (rows + 1) / 2
        return [0..<first, first..<rows]
    }

    /// Fits a new ``LayoutPrior``'s box predictor alone before diffusion training starts
    /// (`layoutFitSteps` AdamW steps at `layoutFitLearningRate` on batches of 256 training
    /// images' captions and boxes, a tenth of them the empty caption), then restarts the EMA
    /// from the fitted weights. The predictor learns from a direct, dense signal here, which
    /// the diffusion steps (its loss at `layoutWeight`, the U-Net's learning rate) only refine;
    /// the U-Net draws from the true boxes either way. Deterministic from the seed; every rank
    /// computes the same. Call it at step 0 (it throws later, when the weights are a checkpoint's).
    /// Returns the last batch's loss (nil without a prior or with 0 steps).
    @discardableResult
    public func fitLayoutPrior(progress: ProgressHandler = { _ in true }) throws -> Double? {
        guard let prior = model.unet.layoutPrior, let groundings, config.layoutFitSteps > 0 else { return nil }
        guard step == 0 else { throw TrainingError.invalidConfig("the layout prior is fitted before the first step, not at step \(step)") }
        if config.layoutFitMixtureOnly {
            guard let mixture = prior.mixture else {
                throw TrainingError.invalidConfig("layout_fit_mixture_only needs a layout prior with mixture_components")
            }
            // The rest of the predictor is frozen for the fit (and trainable again afterwards).
            let trainable = Set(mixture.parameters().map { ObjectIdentifier($0) })
            let frozen = prior.predictorParameters.filter { !trainable.contains(ObjectIdentifier($0)) && $0.requiresGrad }
            for p in frozen { try p.requiringGrad(false) }
            defer { for p in frozen { _ = try? p.requiringGrad(true) } }
            return try Torch.withDefaultDevice(device) {
                try fitLayoutPrior(prior, parameters: mixture.parameters(), groundings: groundings, progress: progress)
            }
        }
        return try Torch.withDefaultDevice(device) {
            try fitLayoutPrior(prior, parameters: prior.predictorParameters, groundings: groundings, progress: progress)
        }
    }

    private func fitLayoutPrior(
        _ prior: LayoutPrior, parameters: [Tensor], groundings: [[GroundedObject]], progress: ProgressHandler
    ) throws -> Double? {
        let optimizer = try AdamW(parameters: parameters, learningRate: config.layoutFitLearningRate, weightDecay: config.weightDecay)
        let generator = Generator(seed: config.seed &+ 0x1A_7007)
        let known = (0..<data.count).filter { !groundings[$0].isEmpty }
        guard !known.isEmpty else { throw TrainingError.invalidData("no training image has known object boxes for the layout prior") }
        let batch = 256
        var last = 0.0
        for i in 0..<config.layoutFitSteps {
            optimizer.learningRate = config.layoutFitLearningRate * 0.5 * (1 + Foundation.cos(Double.pi * Double(i) / Double(config.layoutFitSteps)))
            let picks = try Tensor.randint(0, known.count, shape: [batch], generator: generator).scalars(as: Int64.self)
            let drop = try Tensor.rand([batch], generator: generator).scalars(as: Float.self)
            var rows: [Int] = [], objects: [[GroundedObject]?] = []
            for (pick, d) in zip(picks, drop) {
                let index = known[Int(pick)]
                let dropped = d < 0.1
                rows.append(dropped ? captions.nullRow : captions.index[data.caption(at: index)] ?? captions.nullRow)
                objects.append(dropped ? [] : groundings[index])
            }
            let condition = try captions.rows(rows)
            let loss = try prior.loss(condition, target: LayoutTarget(objects: objects, tokens: condition.tokens.shape[1]))
            last = try loss.item()
            guard last.isFinite else { throw TrainingError.nonFiniteLoss(step: 0, lastCheckpoint: nil) }
            try optimizer.zeroGrad()
            try loss.backward()
            try clipGradNorm(parameters, maxNorm: config.gradientClip)
            try optimizer.step()
            _ = progress(
                ProgressUpdate(phase: TrainingPhase.layoutPrior.rawValue, completed: i + 1, total: config.layoutFitSteps, metrics: [.init("loss", last)]))
        }
        try Torch.withNoGrad { try ema.copy(from: model.parameters) }
        try optimizer.zeroGrad()
        return last
    }

    /// Averages gradients over ranks in flat buckets (one all-reduce per ~1M elements); the
    /// local `loss` rides in the last bucket and its average over ranks is returned.
    func allReduceGradients(_ pg: ProcessGroup, loss: Double) throws -> Double {
        var grads = optimizer.parameters.compactMap(\.grad)
        let lossTensor = try Tensor([loss], shape: [1]).to(grads.first?.dtype ?? .float32)
        grads.append(lossTensor)
        var bucket: [Tensor] = []
        var elements = 0
        func flush() throws {
            guard !bucket.isEmpty else { return }
            let flat = try Tensor.cat(bucket.map { try $0.reshaped([-1]) })
            try pg.allReduce([flat])
            try flat.mulInPlace(1 / Double(pg.worldSize))
            var offset = 0
            for g in bucket {
                try g.copy(from: flat.slice(dim: 0, offset, offset + g.count).reshaped(g.shape))
                offset += g.count
            }
            bucket = []
            elements = 0
        }
        try Torch.withNoGrad {
            for g in grads {
                bucket.append(g)
                elements += g.count
                if elements >= 1 << 20 { try flush() }
            }
            try flush()
        }
        return try lossTensor.item()
    }

    /// The largest difference of any parameter or EMA value between ranks (0 when they agree
    /// bit for bit), found with an element-wise max and min all-reduce; 0 without a group.
    public func parameterSpreadAcrossRanks() throws -> Double {
        guard let pg = processGroup else { return 0 }
        return try Torch.withNoGrad {
            let tensors = try model.parameters.map { try $0.detached() } + ema.shadow
            let flat = try Tensor.cat(tensors.map { try $0.reshaped([-1]).to(.float64) })
            let high = try flat * 1.0, low = try flat * 1.0
            try pg.allReduce([high], op: .max)
            try pg.allReduce([low], op: .min)
            return try (high - low).max().item()
        }
    }

    /// Runs until `config.steps` (resuming from the latest checkpoint first when `resume`).
    /// `progress` is called after every step; return `false` to stop early (a checkpoint is written).
    /// With a process group every rank must call `run` with the same `resume` and return the
    /// same from `progress`, since checkpoints and steps are collective.
    public func run(resume: Bool = true, progress: ProgressHandler = { _ in true }) throws {
        if resume { try resumeFromLatest() }
        let clock = ContinuousClock()
        var recent: [Double] = []
        while step < config.steps {
            let started = clock.now
            let loss = try trainStep()
            let elapsed = started.duration(to: clock.now)
            recent.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
            if recent.count > 20 { recent.removeFirst() }
            var fields = ["step": Double(step), "loss": loss, "lr": optimizer.learningRate]
            if let g = lastGroundingLoss { fields["grounding"] = g }
            if let l = lastLayoutLoss { fields["layout"] = l }
            try appendLog(fields)
            let finished = step == config.steps
            if finished || step % config.checkpointEvery == 0 { try saveCheckpoint() }
            let keepGoing = progress(
                ProgressUpdate(
                    phase: TrainingPhase.training.rawValue, completed: step, total: config.steps,
                    metrics: [
                        .init("loss", loss), .init("lr", optimizer.learningRate),
                        .init("steps_per_second", Double(recent.count) / recent.reduce(0, +)),
                    ]))
            if !keepGoing {
                if step % config.checkpointEvery != 0 && !finished { try saveCheckpoint() }
                return
            }
        }
    }

    // MARK: - Log

    func appendLog(_ fields: [String: Double]) throws {
        guard isWriter else { return }
        try folder.appendLog(fields)
    }

    // MARK: - Checkpoints

    /// Writes `step-NNNNNNN` (via a temporary folder renamed into place), the EMA model under
    /// `model/`, and prunes old checkpoints.
    public func saveCheckpoint() throws {
        guard isWriter else {
            try processGroup?.barrier()
            return
        }
        lastCheckpoint = try writeCheckpoint()
        do {
            try exportEMAModel(to: folder.model)
        } catch {
            throw TrainingError.checkpointWriteFailed(path: folder.model.path, reason: RunFolder.reason(error))
        }
        folder.pruneCheckpoints(keep: config.keepCheckpoints)
        try processGroup?.barrier()
    }

    private func writeCheckpoint() throws -> URL {
        let tensors = try TrainingState.tensors(model: model.stateDict(), ema: ema, optimizer: optimizer, generator: generator)
        let metadata = try TrainingState.metadata(step: step, ema: ema, optimizer: optimizer, config: config)
        return try folder.writeCheckpoint(step: step, tensors: tensors, metadata: metadata)
    }

    /// After a resume: the leftovers of a killed write go, the exported model is rewritten from
    /// the restored state when a kill took it away (between moving the old one aside and
    /// moving the new one in), and the log loses the lines of steps after the checkpoint, which
    /// the resumed run logs again.
    func repairAfterResume() throws {
        guard isWriter else { return }
        folder.removePartialCheckpoints()
        if !FileManager.default.fileExists(atPath: folder.model.appendingPathComponent("model_index.json").path) {
            try exportEMAModel(to: folder.model)
        }
        try folder.trimLog(after: step)
    }

    /// Saves the EMA weights as a model folder (atomically replaced).
    public func exportEMAModel(to directory: URL) throws {
        let live = try model.parameters.map { try $0.detached().to($0.dtype) * 1.0 }
        try ema.copy(to: model.parameters)
        defer { try? Torch.withNoGrad { for (p, v) in zip(model.parameters, live) { try p.copy(from: v) } } }
        model.index.notes["step"] = String(step)
        try RunFolder.replaceDirectory(directory) { try model.save(to: $0) }
    }

    /// Completed checkpoint steps, ascending.
    func checkpointSteps() throws -> [Int] { folder.checkpointSteps() }

    /// Restores the newest complete checkpoint, if any. Returns whether one was found.
    ///
    /// With a process group only rank 0 reads the run folder; it then broadcasts the restored
    /// state (weights, EMA, optimizer moments and counters, RNG), so the other ranks need no
    /// access to rank 0's files.
    /// After a successful resume, the leftovers of a killed run are repaired (``repairAfterResume()``).
    @discardableResult
    public func resumeFromLatest() throws -> Bool {
        let restored = try restoreLatest()
        if restored {
            try repairAfterResume()
        } else if isWriter {
            // Steps a killed run logged before its first checkpoint are run (and logged) again.
            try folder.trimLog(after: 0)
        }
        return restored
    }

    func restoreLatest() throws -> Bool {
        guard let pg = processGroup else { return try loadLatestCheckpoint() }
        var status: Int64 = 0
        var failure: Error?
        if pg.rank == 0 {
            do {
                status = try loadLatestCheckpoint() ? 1 : 0
            } catch {
                status = -1
                failure = error
            }
        }
        let header = try Tensor(
            [status, Int64(step), Int64(optimizer.stepCount), Int64(ema.optimizationStep), optimizer.firstMoments.isEmpty ? 0 : 1],
            shape: [5])
        try pg.broadcast([header], root: 0)
        if let failure { throw failure }
        let h = try header.scalars(as: Int64.self)
        guard h[0] >= 0 else {
            throw TrainingError.corruptCheckpoint(path: checkpointsDirectory.path, reason: "rank 0 could not read its latest checkpoint (see rank 0's error)")
        }
        guard h[0] == 1 else { return false }
        if pg.rank != 0 {
            var moments: [String: Tensor] = [:]
            if h[4] == 1 {
                for (i, p) in optimizer.parameters.enumerated() {
                    moments["m.\(i)"] = try p.detached().zerosLike()
                    moments["v.\(i)"] = try p.detached().zerosLike()
                }
            }
            try optimizer.restore(stepCount: Int(h[2]), state: moments)
            ema.restore(optimizationStep: Int(h[3]))
            step = Int(h[1])
        }
        try Torch.withNoGrad {
            let tensors = try model.parameters.map { try $0.detached() } + ema.shadow + optimizer.firstMoments + optimizer.secondMoments
            try pg.broadcast(tensors, root: 0)
            let rng = try Tensor(try generator.state(), shape: [try generator.state().count])
            try pg.broadcast([rng], root: 0)
            try generator.setState(rng.scalars(as: UInt8.self))
        }
        return true
    }

    /// Restores this process's state from the newest checkpoint in the run folder.
    func loadLatestCheckpoint() throws -> Bool {
        guard let latest = try checkpointSteps().last else { return false }
        let s = try TrainingState.restore(step: latest, from: folder, ema: ema, optimizer: optimizer, generator: generator) { state in
            var unetState: [String: Tensor] = [:], adapterState: [String: Tensor] = [:], classState: [String: Tensor] = [:]
            for (k, v) in state {
                if k.hasPrefix("unet.") { unetState[String(k.dropFirst(5))] = v }
                if k.hasPrefix("adapter.") { adapterState[String(k.dropFirst(8))] = v }
                if k.hasPrefix("class_encoder.") { classState[String(k.dropFirst(14))] = v }
            }
            try model.unet.load(unetState)
            if let adapter = model.adapter { try adapter.load(adapterState) }
            if let classEncoder = model.classEncoder { try classEncoder.load(classState) }
        }
        step = s
        lastCheckpoint = folder.checkpoint(step: latest)
        return true
    }
}

extension ExponentialMovingAverage {
    /// Sets the shadow to `parameters` (used after a broadcast of initial weights).
    func copy(from parameters: [Tensor]) throws {
        for (s, p) in zip(shadow, parameters) { try s.copy(from: p.detached()) }
    }
}

/// One value per shard of a step, each written by its own thread (distinct slots).
private final class ShardValues: @unchecked Sendable {
    private var values: UnsafeMutableBufferPointer<Double>
    init(count: Int) { values = .allocate(capacity: count); values.initialize(repeating: 0) }
    deinit { values.deallocate() }
    subscript(i: Int) -> Double {
        get { values[i] }
        set { values[i] = newValue }
    }
    /// The values added in shard order.
    var sum: Double { values.reduce(0, +) }
}
