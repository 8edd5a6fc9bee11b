import Torch

/// DDIM (arXiv:2010.02502, Eq. 12) as diffusers 0.27.2 `DDIMScheduler.step`, and ContextDiff's
/// contextualized DDIM (paper Eq. 13 and its η > 0 form, DESIGN §3):
///
///     x̂0  = processed(x̂0_raw)                     clip / dynamic threshold (diffusers order)
///     b_t = k_t·r_φ(x̂0, c, t),  b_s = k_s·r_φ(x̂0, c, s)
///     ε̂   = (x_t − b_t − sqrt(ᾱ_t)·x̂0_raw) / sqrt(1 − ᾱ_t)
///     σ   = η·sqrt((1 − ᾱ_s)/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_s))
///     x_s = sqrt(ᾱ_s)·x̂0 + sqrt(1 − ᾱ_s − σ²)·ε̂ + b_s + σ·z
///
/// Bookkeeping exactly as diffusers: the target is `s = t − T//n` whatever the spacing; for
/// `s < 0`, ᾱ_s = 1 with `set_alpha_to_one` (the clean image, `b = 0`), else ᾱ[0] (and the bias
/// of timestep 0). ε̂ is not recomputed from the clipped x̂0 (`use_clipped_model_output=False`).
public struct DDIMSampler: DiffusionSampler, Sendable {
    public struct Configuration: Sendable, Equatable {
        public var predictionType: PredictionTarget
        /// diffusers `clip_sample` / `thresholding` (default: clip to ±1).
        public var x0Processing: X0Processing
        /// η in [0, 1]: 0 is deterministic DDIM, 1 has DDPM's posterior variance.
        public var eta: Double
        /// diffusers `set_alpha_to_one`: ᾱ of the level before timestep 0 is 1 (else ᾱ[0]).
        public var setAlphaToOne: Bool
        public var spacing: TimestepSpacing
        /// diffusers `steps_offset` (affects `leading` spacing only).
        public var stepsOffset: Int

        public init(
            predictionType: PredictionTarget = .epsilon, x0Processing: X0Processing = .diffusersDefault,
            eta: Double = 0, setAlphaToOne: Bool = true, spacing: TimestepSpacing = .leading, stepsOffset: Int = 0
        ) {
            self.predictionType = predictionType
            self.x0Processing = x0Processing
            self.eta = eta
            self.setAlphaToOne = setAlphaToOne
            self.spacing = spacing
            self.stepsOffset = stepsOffset
        }
    }

    public let schedule: NoiseSchedule
    public let configuration: Configuration
    public let inferenceSteps: Int
    public let timesteps: [Int]
    public var predictionType: PredictionTarget { configuration.predictionType }

    /// Throws ``ScheduleError`` for a bad step count or offset, ``SamplingError`` for a bad η or
    /// x0 processing.
    public init(schedule: NoiseSchedule, inferenceSteps: Int, configuration: Configuration = .init()) throws {
        guard configuration.eta.isFinite, configuration.eta >= 0, configuration.eta <= 1 else {
            throw SamplingError.invalidEta(configuration.eta)
        }
        try configuration.x0Processing.validate()
        self.timesteps = try schedule.timesteps(
            inferenceSteps: inferenceSteps, spacing: configuration.spacing, stepsOffset: configuration.stepsOffset)
        self.schedule = schedule
        self.configuration = configuration
        self.inferenceSteps = inferenceSteps
    }

    public func addsNoise(at timestep: Int) -> Bool { configuration.eta > 0 }

    func levels(at t: Int) -> (current: NoiseLevel, target: NoiseLevel) {
        let prev = t - stepRatio(trainTimesteps: trainTimesteps, inferenceSteps: inferenceSteps)
        let target =
            prev >= 0
            ? NoiseLevel(timestep: prev, schedule: schedule)
            : NoiseLevel.beforeStart(timestep: prev, alphaToOne: configuration.setAlphaToOne, schedule: schedule)
        return (NoiseLevel(timestep: t, schedule: schedule), target)
    }

    /// diffusers `_get_variance(t, prev)` and `std_dev_t = eta * variance ** 0.5` (float32).
    func sigma(_ current: NoiseLevel, _ target: NoiseLevel) -> (variance: Float, std: Float) {
        let variance = posteriorVarianceFloat32(alphaBar: current.alphaBar, alphaBarPrev: target.alphaBar)
        return (variance, Float(configuration.eta) * variance.squareRoot())
    }

    public func step(
        modelOutput: Tensor, timestep t: Int, sample: Tensor, context: (any ContextBias)?, noise: Tensor?
    ) throws -> SamplerStepOutput {
        try checkTimestep(t)
        let (current, target) = levels(at: t)
        let rawOriginal = try predictionType.originalSample(
            modelOutput: modelOutput, sample: sample, alphaBar: current.alphaBar)
        let original = try configuration.x0Processing.apply(rawOriginal)
        let biases = try StepBiases(context: context, x0: original, current: current, target: target)
        let eps = try contextualNoise(
            modelOutput: modelOutput, sample: sample, rawOriginal: rawOriginal, level: current, bias: biases.current)

        let std = sigma(current, target).std
        // (1 - alpha_prod_t_prev - std_dev_t**2) ** 0.5; a rounding-negative argument (η = 1) is 0.
        var directionSquared: Float = 1 - target.alphaBar - std * std
        if directionSquared < 0 { directionSquared = 0 }
        let direction = try eps * Double(directionSquared.squareRoot())
        var prev = try original * Double(target.alphaBar.squareRoot()) + direction
        prev = try prev.addingBias(biases.target)
        if configuration.eta > 0 {
            let z = try checkNoise(noise, like: sample, timestep: t)
            prev = try prev + z * Double(std)
        }
        return SamplerStepOutput(sample: prev, predictedOriginal: original)
    }

    public var stepTable: [SamplerStepInfo] {
        timesteps.map { t in
            let (current, target) = levels(at: t)
            let (variance, std) = sigma(current, target)
            return SamplerStepInfo(
                timestep: t, fromTimestep: t, toTimestep: target.timestep,
                alphaBarFrom: current.alphaBar, alphaBarTo: target.alphaBar, kFrom: current.k, kTo: target.k,
                noiseVariance: configuration.eta > 0 ? std * std : 0, posteriorVariance: variance)
        }
    }
}
