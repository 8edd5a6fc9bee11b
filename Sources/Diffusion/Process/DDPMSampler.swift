import Torch

/// diffusers' DDPM `variance_type` choices that this sampler implements.
public enum DDPMVarianceType: String, Codable, Sendable, CaseIterable, NamedOption {
    /// The posterior variance `β̃ = (1 − ᾱ_prev)/(1 − ᾱ_t)·β'_t`, clamped ≥ 1e-20.
    case fixedSmall = "fixed_small"
    /// `β'_t = 1 − ᾱ_t/ᾱ_prev`.
    case fixedLarge = "fixed_large"

    public static var optionName: String { "DDPM variance type" }
}

/// Ancestral DDPM sampling (arXiv:2006.11239, Eq. 6–7) as diffusers 0.27.2 `DDPMScheduler.step`,
/// and ContextDiff's context-aware sampling (paper Eq. 9 with the posterior of Eq. 5):
///
///     x̂0      = processed(x̂0_raw)
///     b_t     = k_t·r_φ(x̂0, c, t),  b_prev = k_prev·r_φ(x̂0, c, prev)
///     x_prev  = sqrt(ᾱ_prev)·β'_t/(1 − ᾱ_t)·x̂0
///             + sqrt(α'_t)·(1 − ᾱ_prev)/(1 − ᾱ_t)·(x_t − b_t) + b_prev + σ_t·z
///
/// with `prev = t − T//n`, `α'_t = ᾱ_t/ᾱ_prev`, `β'_t = 1 − α'_t`, ᾱ_prev = 1 (and `b = 0`) for
/// `prev < 0`, σ² from ``DDPMVarianceType``, and noise only when `t > 0` — all as diffusers
/// (including its float32 order of operations).
public struct DDPMSampler: DiffusionSampler, Sendable {
    public struct Configuration: Sendable, Equatable {
        public var predictionType: PredictionTarget
        public var x0Processing: X0Processing
        public var varianceType: DDPMVarianceType
        public var spacing: TimestepSpacing
        public var stepsOffset: Int

        public init(
            predictionType: PredictionTarget = .epsilon, x0Processing: X0Processing = .diffusersDefault,
            varianceType: DDPMVarianceType = .fixedSmall, spacing: TimestepSpacing = .leading, stepsOffset: Int = 0
        ) {
            self.predictionType = predictionType
            self.x0Processing = x0Processing
            self.varianceType = varianceType
            self.spacing = spacing
            self.stepsOffset = stepsOffset
        }
    }

    public let schedule: NoiseSchedule
    public let configuration: Configuration
    /// The number of sampling steps; T gives diffusers' behaviour before `set_timesteps`
    /// (`previous_timestep(t) = t − 1`).
    public let inferenceSteps: Int
    public let timesteps: [Int]
    public var predictionType: PredictionTarget { configuration.predictionType }

    public init(schedule: NoiseSchedule, inferenceSteps: Int, configuration: Configuration = .init()) throws {
        try configuration.x0Processing.validate()
        self.timesteps = try schedule.timesteps(
            inferenceSteps: inferenceSteps, spacing: configuration.spacing, stepsOffset: configuration.stepsOffset)
        self.schedule = schedule
        self.configuration = configuration
        self.inferenceSteps = inferenceSteps
    }

    /// diffusers adds noise only for `t > 0`.
    public func addsNoise(at timestep: Int) -> Bool { timestep > 0 }

    /// diffusers `previous_timestep(t)` (non-custom timesteps).
    public func previousTimestep(_ t: Int) -> Int {
        t - stepRatio(trainTimesteps: trainTimesteps, inferenceSteps: inferenceSteps)
    }

    func levels(at t: Int) -> (current: NoiseLevel, target: NoiseLevel) {
        let prev = previousTimestep(t)
        let target =
            prev >= 0
            ? NoiseLevel(timestep: prev, schedule: schedule)
            : NoiseLevel.beforeStart(timestep: prev, alphaToOne: true, schedule: schedule)
        return (NoiseLevel(timestep: t, schedule: schedule), target)
    }

    /// diffusers `DDPMScheduler._get_variance(t)` for the configured variance type (float32).
    public func variance(at t: Int) -> Float {
        let (current, target) = levels(at: t)
        let currentBeta: Float = 1 - current.alphaBar / target.alphaBar
        switch configuration.varianceType {
        case .fixedSmall:
            // torch.clamp(variance, min=1e-20): the bound is rounded to float32.
            return max(
                posteriorVarianceFloat32(alphaBar: current.alphaBar, alphaBarPrev: target.alphaBar), Float(1e-20))
        case .fixedLarge:
            return currentBeta
        }
    }

    public func step(
        modelOutput: Tensor, timestep t: Int, sample: Tensor, context: (any ContextBias)?, noise: Tensor?
    ) throws -> SamplerStepOutput {
        try checkTimestep(t)
        let (current, target) = levels(at: t)
        let at = current.alphaBar
        let ap = target.alphaBar
        let betaProd: Float = 1 - at
        let betaProdPrev: Float = 1 - ap
        let currentAlpha: Float = at / ap
        let currentBeta: Float = 1 - currentAlpha

        let rawOriginal = try predictionType.originalSample(modelOutput: modelOutput, sample: sample, alphaBar: at)
        let original = try configuration.x0Processing.apply(rawOriginal)
        let biases = try StepBiases(context: context, x0: original, current: current, target: target)

        // pred_original_sample_coeff = (alpha_prod_t_prev ** 0.5 * current_beta_t) / beta_prod_t
        // current_sample_coeff = current_alpha_t ** 0.5 * beta_prod_t_prev / beta_prod_t
        let originalCoeff: Float = (ap.squareRoot() * currentBeta) / betaProd
        let sampleCoeff: Float = currentAlpha.squareRoot() * betaProdPrev / betaProd
        var prev = try original * Double(originalCoeff) + sample.subtractingBias(biases.current) * Double(sampleCoeff)
        prev = try prev.addingBias(biases.target)
        if t > 0 {
            let z = try checkNoise(noise, like: sample, timestep: t)
            prev = try prev + z * Double(variance(at: t).squareRoot())
        }
        return SamplerStepOutput(sample: prev, predictedOriginal: original)
    }

    public var stepTable: [SamplerStepInfo] {
        timesteps.map { t in
            let (current, target) = levels(at: t)
            return SamplerStepInfo(
                timestep: t, fromTimestep: t, toTimestep: target.timestep,
                alphaBarFrom: current.alphaBar, alphaBarTo: target.alphaBar, kFrom: current.k, kTo: target.k,
                noiseVariance: t > 0 ? variance(at: t) : 0,
                posteriorVariance: posteriorVarianceFloat32(alphaBar: current.alphaBar, alphaBarPrev: target.alphaBar))
        }
    }
}
