import Foundation
import NN
import Torch

/// Pairs of low- and high-resolution images with captions, addressed by index.
public protocol SuperResolutionSource {
    var count: Int { get }
    /// `low` `[B, C, s, s]` and `high` `[B, C, S, S]` in [-1, 1], and the captions.
    func batch(at indices: [Int]) throws -> (low: Tensor, high: Tensor, captions: [String])
}

/// What a super-resolution stage trains with, beyond ``TrainingConfig``.
public struct SuperResolutionTrainingConfig: Codable, Sendable, Equatable {
    /// The optimiser, schedule, EMA, condition dropout, checkpoints and seed.
    public var training = TrainingConfig()
    /// Side of the random high-resolution crops a step trains on (nil: whole images). The
    /// network is convolutional apart from attention, so it samples whole images afterwards.
    public var cropSize: Int?
    /// Training augmentation levels are drawn uniformly from `0..<maxNoiseLevel` (Imagen draws
    /// them over the whole range; past the level where the low-resolution image is gone they
    /// only cost capacity).
    public var maxNoiseLevel = 500

    public init() {}

    enum CodingKeys: String, CodingKey {
        case training, cropSize = "crop_size", maxNoiseLevel = "max_noise_level"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = SuperResolutionTrainingConfig()
        training = try c.decodeIfPresent(TrainingConfig.self, forKey: .training) ?? d.training
        cropSize = try c.decodeIfPresent(Int.self, forKey: .cropSize)
        maxNoiseLevel = try c.decodeIfPresent(Int.self, forKey: .maxNoiseLevel) ?? d.maxNoiseLevel
    }

    public func validate(for unet: EfficientUNetConfig, trainTimesteps: Int) throws {
        try training.validate()
        guard training.steps > 0 else { throw TrainingError.invalidConfig("steps must be positive") }
        guard (1...trainTimesteps).contains(maxNoiseLevel) else {
            throw TrainingError.invalidConfig("max_noise_level must be in 1...\(trainTimesteps), got \(maxNoiseLevel)")
        }
        if let cropSize {
            let multiple = unet.factor * (1 << (unet.channelMultipliers.count - 1))
            guard cropSize > 0, cropSize <= unet.sampleSize, cropSize % multiple == 0 else {
                throw TrainingError.invalidConfig(
                    "crop_size must be a multiple of \(multiple) in \(multiple)...\(unet.sampleSize), got \(cropSize)")
            }
        }
    }
}

/// Trains a ``SuperResolutionModel``: the high-resolution image is noised by the stage's
/// forward process (v-, ε- or x0-prediction as configured) while the network reads the
/// low-resolution image upsampled and noised to a random augmentation level it is told, and
/// the caption (dropped to the empty one at the condition-dropout rate). AdamW with warm-up and
/// cosine decay, EMA, clipping; checkpoints as ``Trainer``'s (atomic, exact resume: weights,
/// moments, EMA, RNG and data order), in the same run-folder layout (``RunFolder``).
public final class SuperResolutionTrainer {
    public let model: SuperResolutionModel
    public let config: SuperResolutionTrainingConfig
    public let data: SuperResolutionSource
    public let captions: CaptionTable
    public let folder: RunFolder
    public let diffusion: ContextualDiffusion
    public let optimizer: AdamW
    public let ema: ExponentialMovingAverage
    let generator: Generator
    let sampler: EpochSampler
    let schedule: WarmupCosineSchedule
    public private(set) var step = 0
    public private(set) var lastCheckpoint: URL?

    public init(
        model: SuperResolutionModel, config: SuperResolutionTrainingConfig, data: SuperResolutionSource,
        captions: CaptionTable, runDirectory: URL
    ) throws {
        try config.validate(for: model.unet.config, trainTimesteps: model.schedule.config.trainTimesteps)
        self.model = model
        self.config = config
        self.data = data
        self.captions = captions
        folder = RunFolder(runDirectory)
        diffusion = ContextualDiffusion(schedule: model.schedule)
        let t = config.training
        for p in model.parameters { try p.requiringGrad() }
        optimizer = try AdamW(parameters: model.parameters, learningRate: t.learningRate, weightDecay: t.weightDecay)
        ema = try ExponentialMovingAverage(parameters: model.parameters, maxDecay: t.emaDecay)
        generator = Generator(seed: t.seed &+ 0x5EED_5AFE)
        sampler = try EpochSampler(count: data.count, batchSize: t.batchSize, seed: t.seed)
        schedule = WarmupCosineSchedule(
            peak: t.learningRate, warmupSteps: t.warmupSteps, totalSteps: t.steps, floor: t.minLearningRate)
    }

    /// One optimisation step; returns the loss.
    public func trainStep() throws -> Double {
        model.train(true)
        let t = config.training, unetConfig = model.unet.config
        optimizer.learningRate = schedule.learningRate(at: step)
        let indices = try sampler.indices(step: step)
        let batch = indices.count
        let (low, high, texts) = try data.batch(at: indices)
        let size = unetConfig.sampleSize
        guard high.shape == [batch, unetConfig.channels, size, size],
              low.shape == [batch, unetConfig.channels, unetConfig.lowResolutionSize, unetConfig.lowResolutionSize]
        else {
            throw TrainingError.invalidData(
                "pairs of \(low.shape) and \(high.shape) for a \(unetConfig.lowResolutionSize) → \(size) stage")
        }
        var upsampled = try NoiseAugmentation.upsample(low, to: size)
        var target = high
        if let crop = config.cropSize, crop < size {
            // One window per image, on the low-resolution grid so both views stay aligned.
            let cells = (size - crop) / unetConfig.factor + 1
            let offsets = try Tensor.randint(0, cells, shape: [batch, 2], generator: generator).scalars(as: Int64.self)
            var xs: [Tensor] = [], zs: [Tensor] = []
            for i in 0..<batch {
                let y = Int(offsets[2 * i]) * unetConfig.factor, x = Int(offsets[2 * i + 1]) * unetConfig.factor
                func window(_ image: Tensor) throws -> Tensor {
                    try image.slice(dim: 0, i, i + 1).slice(dim: 2, y, y + crop).slice(dim: 3, x, x + crop)
                }
                xs.append(try window(high))
                zs.append(try window(upsampled))
            }
            target = try Tensor.cat(xs).contiguous()
            upsampled = try Tensor.cat(zs).contiguous()
        }
        let levels = try Tensor.randint(0, config.maxNoiseLevel, shape: [batch], generator: generator)
            .scalars(as: Int64.self).map(Int.init)
        let augmentationNoise = try Tensor.randn(upsampled.shape, generator: generator)
        let augmented = try NoiseAugmentation.apply(upsampled, levels: levels, schedule: model.schedule, noise: augmentationNoise)
        let keep = try Tensor.rand([batch], generator: generator).scalars(as: Float.self)
        let timesteps = try diffusion.sampleTimesteps(count: batch, generator: generator)
        let noise = try Tensor.randn(target.shape, generator: generator)
        let rows = zip(texts, keep).map { text, k in
            Double(k) < t.conditionDropout ? captions.nullRow : captions.index[text] ?? captions.nullRow
        }
        let condition = try captions.rows(rows)
        let levelTensor = try Tensor(levels.map(Int64.init), shape: [batch])
        let loss = try diffusion.trainingLoss(
            x0: target, timesteps: timesteps, noise: noise, weighting: t.weighting, prediction: unetConfig.prediction,
            denoiser: { xt, ts in
                try self.model.unet(xt, timesteps: ts, lowResolution: augmented, augmentationLevels: levelTensor, condition: condition)
            },
            context: nil)
        let value = try loss.item()
        guard value.isFinite else { throw TrainingError.nonFiniteLoss(step: step, lastCheckpoint: lastCheckpoint?.path) }
        try optimizer.zeroGrad()
        try loss.backward()
        try clipGradNorm(optimizer.parameters, maxNorm: t.gradientClip)
        try optimizer.step()
        try ema.update(from: model.parameters)
        step += 1
        return value
    }

    /// Runs until `steps` (resuming from the newest checkpoint first when `resume`); `progress`
    /// (phase "training": loss, lr, steps_per_second) may return false to stop after a checkpoint.
    public func run(resume: Bool = true, progress: ProgressHandler = { _ in true }) throws {
        if resume { try resumeFromLatest() }
        let steps = config.training.steps, every = config.training.checkpointEvery
        let clock = ContinuousClock()
        var recent: [Double] = []
        while step < steps {
            let started = clock.now
            let loss = try trainStep()
            let elapsed = started.duration(to: clock.now)
            recent.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
            if recent.count > 20 { recent.removeFirst() }
            try folder.appendLog(["step": Double(step), "loss": loss, "lr": optimizer.learningRate])
            let finished = step == steps
            if finished || step % every == 0 { try saveCheckpoint() }
            let keepGoing = progress(ProgressUpdate(
                phase: TrainingPhase.training.rawValue, completed: step, total: steps,
                metrics: [
                    .init("loss", loss), .init("lr", optimizer.learningRate),
                    .init("steps_per_second", Double(recent.count) / recent.reduce(0, +)),
                ]))
            if !keepGoing {
                if step % every != 0 && !finished { try saveCheckpoint() }
                return
            }
        }
    }

    /// Writes checkpoint `step-NNNNNNN`, the EMA model under `model/`, and prunes old checkpoints.
    public func saveCheckpoint() throws {
        let tensors = try TrainingState.tensors(model: model.stateDict(), ema: ema, optimizer: optimizer, generator: generator)
        let metadata = try TrainingState.metadata(step: step, ema: ema, optimizer: optimizer, config: config)
        lastCheckpoint = try folder.writeCheckpoint(step: step, tensors: tensors, metadata: metadata)
        do {
            try exportEMAModel(to: folder.model)
        } catch {
            throw TrainingError.checkpointWriteFailed(path: folder.model.path, reason: RunFolder.reason(error))
        }
        folder.pruneCheckpoints(keep: config.training.keepCheckpoints)
    }

    /// Saves the EMA weights as a model folder (atomically replaced).
    public func exportEMAModel(to directory: URL) throws {
        let live = try model.parameters.map { try $0.detached() * 1.0 }
        try ema.copy(to: model.parameters)
        defer { try? Torch.withNoGrad { for (p, v) in zip(model.parameters, live) { try p.copy(from: v) } } }
        model.index.notes["step"] = String(step)
        try RunFolder.replaceDirectory(directory) { try model.save(to: $0) }
    }

    /// Restores the newest complete checkpoint, if any, and repairs what a kill left behind.
    @discardableResult
    public func resumeFromLatest() throws -> Bool {
        guard let latest = folder.checkpointSteps().last else {
            try folder.trimLog(after: 0)
            return false
        }
        let s = try TrainingState.restore(step: latest, from: folder, ema: ema, optimizer: optimizer, generator: generator) { state in
            try model.unet.load(Dictionary(uniqueKeysWithValues: state.compactMap { k, v in
                k.hasPrefix("unet.") ? (String(k.dropFirst(5)), v) : nil
            }))
        }
        step = s
        lastCheckpoint = folder.checkpoint(step: latest)
        folder.removePartialCheckpoints()
        if !FileManager.default.fileExists(atPath: folder.model.appendingPathComponent("model_index.json").path) {
            try exportEMAModel(to: folder.model)
        }
        try folder.trimLog(after: step)
        return true
    }
}
