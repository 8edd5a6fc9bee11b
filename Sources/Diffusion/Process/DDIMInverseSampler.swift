import Torch

/// DDIM inversion as diffusers 0.27.2 `DDIMInverseScheduler.step`, and ContextDiff's contextual
/// DDIM inversion (DESIGN §3, used for editing): the deterministic DDIM map run from a level `s`
/// up to the next level `t`, with x̂0 predicted from the latent at `s`. Where the model is
/// evaluated is one option, ``Configuration/evaluation``, which ``modelTimestep(forStep:)``
/// reports to every loop (``SamplingIterator``, the video pipeline): diffusers' usual
/// approximation evaluates it at the *target* timestep `t` on the latent at `s`
/// (``InversionEvaluation/target``, the default); ``InversionEvaluation/source`` evaluates it at
/// `s`, where the latent is, and not at all at the clean level. The step itself is the same:
///
///     x̂0  = processed(x̂0_raw(x_s))                at ᾱ_s
///     ε̂   = (x_s − b_s − sqrt(ᾱ_s)·x̂0_raw) / sqrt(1 − ᾱ_s)      (ε̂ = 0 when ᾱ_s = 1)
///     x_t = sqrt(ᾱ_t)·x̂0 + sqrt(1 − ᾱ_t)·ε̂ + b_t
///
/// Bookkeeping exactly as diffusers: timesteps ascending; `s = min(t − T//n, T − 1)`;
/// ᾱ_s = ᾱ[s], or for `s < 0` 1 with `set_alpha_to_one` (clean, `b_s = 0`) else ᾱ[0] (and the bias of
/// timestep 0). Only `leading` and `trailing` spacing exist, as in diffusers.
///
/// Deviations from diffusers: with x0 ("sample") prediction and ᾱ_s = 1, diffusers computes ε̂ as
/// 0/0 = NaN; here ε̂ = 0 (the clean latent carries no noise). Dynamic thresholding is accepted
/// (diffusers' inverse scheduler only clips).
public struct DDIMInverseSampler: DiffusionSampler, Sendable {
    public struct Configuration: Sendable, Equatable {
        public var predictionType: PredictionTarget
        public var x0Processing: X0Processing
        /// diffusers `set_alpha_to_one`: the level before timestep 0 has ᾱ = 1 (else ᾱ[0]).
        public var setAlphaToOne: Bool
        public var spacing: TimestepSpacing
        public var stepsOffset: Int
        /// Where the model is evaluated for the step from s up to t.
        public var evaluation: InversionEvaluation

        public init(
            predictionType: PredictionTarget = .epsilon, x0Processing: X0Processing = .diffusersDefault,
            setAlphaToOne: Bool = true, spacing: TimestepSpacing = .leading, stepsOffset: Int = 0,
            evaluation: InversionEvaluation = .target
        ) {
            self.predictionType = predictionType
            self.x0Processing = x0Processing
            self.setAlphaToOne = setAlphaToOne
            self.spacing = spacing
            self.stepsOffset = stepsOffset
            self.evaluation = evaluation
        }
    }

    public let schedule: NoiseSchedule
    public let configuration: Configuration
    public let inferenceSteps: Int
    /// Ascending.
    public let timesteps: [Int]
    public var predictionType: PredictionTarget { configuration.predictionType }

    public init(schedule: NoiseSchedule, inferenceSteps: Int, configuration: Configuration = .init()) throws {
        guard configuration.spacing != .linspace else {
            throw SamplingError.unsupportedSpacing(.linspace, sampler: "DDIM inversion")
        }
        try configuration.x0Processing.validate()
        self.timesteps = try schedule.timesteps(
            inferenceSteps: inferenceSteps, spacing: configuration.spacing, stepsOffset: configuration.stepsOffset
        ).reversed()
        self.schedule = schedule
        self.configuration = configuration
        self.inferenceSteps = inferenceSteps
    }

    public func addsNoise(at timestep: Int) -> Bool { false }

    /// `t` (``InversionEvaluation/target``), or the level `s` the step starts from
    /// (``InversionEvaluation/source``; nil at the clean level, where x̂0 is the sample itself).
    public func modelTimestep(forStep t: Int) -> Int? {
        switch configuration.evaluation {
        case .target: return t
        case .source:
            let s = levels(at: t).source.timestep
            return s >= 0 ? s : nil
        }
    }

    func levels(at t: Int) -> (source: NoiseLevel, target: NoiseLevel) {
        let s = min(t - stepRatio(trainTimesteps: trainTimesteps, inferenceSteps: inferenceSteps), trainTimesteps - 1)
        let source =
            s >= 0
            ? NoiseLevel(timestep: s, schedule: schedule)
            : NoiseLevel.beforeStart(timestep: s, alphaToOne: configuration.setAlphaToOne, schedule: schedule)
        return (source, NoiseLevel(timestep: t, schedule: schedule))
    }

    /// One inversion step *to* `timestep` (the model output must be evaluated there).
    public func step(
        modelOutput: Tensor, timestep t: Int, sample: Tensor, context: (any ContextBias)?, noise: Tensor?
    ) throws -> SamplerStepOutput {
        try checkTimestep(t)
        let (source, target) = levels(at: t)
        let rawOriginal = try predictionType.originalSample(
            modelOutput: modelOutput, sample: sample, alphaBar: source.alphaBar)
        let original = try configuration.x0Processing.apply(rawOriginal)
        let biases = try StepBiases(context: context, x0: original, current: source, target: target)
        let eps = try contextualNoise(
            modelOutput: modelOutput, sample: sample, rawOriginal: rawOriginal, level: source, bias: biases.current)
        // pred_sample_direction = (1 - alpha_prod_t_prev) ** 0.5 * pred_epsilon
        let direction = try eps * Double((1 - target.alphaBar).squareRoot())
        let next = try (original * Double(target.alphaBar.squareRoot()) + direction).addingBias(biases.target)
        return SamplerStepOutput(sample: next, predictedOriginal: original)
    }

    public var stepTable: [SamplerStepInfo] {
        timesteps.map { t in
            let (source, target) = levels(at: t)
            return SamplerStepInfo(
                timestep: t, fromTimestep: source.timestep, toTimestep: t,
                alphaBarFrom: source.alphaBar, alphaBarTo: target.alphaBar, kFrom: source.k, kTo: target.k,
                noiseVariance: 0, posteriorVariance: 0)
        }
    }
}

/// The timestep at which DDIM inversion evaluates the denoiser for its step from level s up to t.
public enum InversionEvaluation: String, Codable, Sendable, CaseIterable {
    /// At t, on the latent at s (diffusers' `DDIMInverseScheduler`, the usual approximation).
    case target
    /// At s, where the latent actually is (the clean level needs no model call: x̂0 is the video).
    /// For x0-predicting models (ContextDiff's Eq. 8) this keeps x̂0 an in-distribution estimate; at
    /// low noise the target variant's ε̂ = (x_s − √ᾱ_s·x̂0)/√(1−ᾱ_s) amplifies a mismatched x̂0 a
    /// hundredfold. See docs/VIDEO.md.
    case source
}
