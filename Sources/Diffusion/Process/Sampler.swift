import Torch

/// The result of one sampler step.
public struct SamplerStepOutput {
    /// The sample at the step's target level (diffusers' `prev_sample`).
    public let sample: Tensor
    /// The clean-sample estimate x̂0 after clipping / thresholding (diffusers' `pred_original_sample`).
    public let predictedOriginal: Tensor
}

/// What one step of a sampler does, in numbers (for `contextdiff schedule` and for tests).
public struct SamplerStepInfo: Codable, Sendable, Equatable {
    /// The timestep at which the model is evaluated.
    public let timestep: Int
    /// The level the step starts from and the level it reaches (diffusers indices; negative
    /// means "before timestep 0": ᾱ = 1, or ᾱ[0] with `set_alpha_to_one=False`).
    public let fromTimestep: Int
    public let toTimestep: Int
    public let alphaBarFrom: Float
    public let alphaBarTo: Float
    /// ContextDiff's bias scales `k` of the two levels (0 at the clean level and at T − 1).
    public let kFrom: Double
    public let kTo: Double
    /// The variance of the noise the step adds (0 when it adds none).
    public let noiseVariance: Float
    /// The order of a multistep solver's update at this step (nil for single-step samplers).
    public let order: Int?
    /// The DDPM posterior variance between the two levels, `(1 − ᾱ_to)/(1 − ᾱ_from)·(1 − ᾱ_from/ᾱ_to)`
    /// (DDIM's σ² at η = 1; 0 for inversion, which is deterministic).
    public let posteriorVariance: Float

    enum CodingKeys: String, CodingKey {
        case timestep
        case fromTimestep = "from_timestep"
        case toTimestep = "to_timestep"
        case alphaBarFrom = "alpha_bar_from"
        case alphaBarTo = "alpha_bar_to"
        case kFrom = "k_from"
        case kTo = "k_to"
        case noiseVariance = "noise_variance"
        case posteriorVariance = "posterior_variance"
        case order
    }

    public init(
        timestep: Int, fromTimestep: Int, toTimestep: Int, alphaBarFrom: Float, alphaBarTo: Float, kFrom: Double,
        kTo: Double, noiseVariance: Float, posteriorVariance: Float, order: Int? = nil
    ) {
        self.timestep = timestep
        self.fromTimestep = fromTimestep
        self.toTimestep = toTimestep
        self.alphaBarFrom = alphaBarFrom
        self.alphaBarTo = alphaBarTo
        self.kFrom = kFrom
        self.kTo = kTo
        self.noiseVariance = noiseVariance
        self.posteriorVariance = posteriorVariance
        self.order = order
    }
}

/// A diffusion sampler (diffusers' scheduler `step`), plain or ContextDiff-contextualised.
///
/// With `context == nil` a step is exactly the diffusers 0.27.2 step (same float32 arithmetic,
/// so results agree bit for bit on the same libtorch). With a ``ContextBias`` the step follows
/// DESIGN §3 / the paper's Eq. 9 and Eq. 13: the biases `b = k·r_φ(x̂0, c, ·)` are computed from the
/// processed x̂0, and the noise estimate becomes `ε̂ = (x_t − b_t − sqrt(ᾱ_t)·x̂0_raw)/sqrt(1 − ᾱ_t)`
/// (x̂0_raw: the unclipped estimate, as diffusers' `use_clipped_model_output=False`); for ε and v
/// models that is computed as `ε_model − b_t/sqrt(1 − ᾱ_t)`, its exact algebraic equal. Every bias
/// term is arranged so that a zero `r_φ` (``ZeroContext``) changes no bit of the result.
///
/// A sampler is a value. Single-step samplers (DDIM, DDPM) keep no state; multistep solvers
/// (DPM-Solver++) keep the history of their previous steps in the value itself, so ``step(modelOutput:timestep:sample:context:noise:)``
/// is `mutating`: each loop works on its own copy (``SamplingIterator`` resets it first), and two
/// loops never share a history. Adding a sampler: one file with the conforming type and its
/// ``SamplerRegistration``, one line in ``SamplerRegistry/builtIn``, a test (docs/ARCHITECTURE.md).
public protocol DiffusionSampler: Sendable {
    var schedule: NoiseSchedule { get }
    var predictionType: PredictionTarget { get }
    /// The timesteps at which the model is evaluated, in the order the loop visits them.
    var timesteps: [Int] { get }
    /// Whether the step at `timestep` adds random noise (and so needs noise or a generator).
    func addsNoise(at timestep: Int) -> Bool
    /// One step from `sample` at `timestep`, given the model's output there. `noise` is the
    /// standard-normal tensor the step adds (diffusers' `variance_noise`); it is required exactly
    /// when ``addsNoise(at:)`` is true and ignored otherwise. Steps must come in the order of
    /// ``timesteps``; a stateful solver throws ``SamplingError/unexpectedTimestep(_:expected:)`` otherwise.
    mutating func step(
        modelOutput: Tensor, timestep: Int, sample: Tensor, context: (any ContextBias)?, noise: Tensor?
    ) throws -> SamplerStepOutput
    /// One ``SamplerStepInfo`` per entry of ``timesteps``.
    var stepTable: [SamplerStepInfo] { get }
    /// The timestep at which the model is evaluated for the step at `timestep` (that timestep,
    /// for every sampler but an inversion evaluated at its source level); nil when the step needs
    /// no model call (``cleanLevelOutput(sample:)`` stands in for it).
    func modelTimestep(forStep timestep: Int) -> Int?
    /// Forgets the history of previous steps (a no-op for single-step samplers).
    mutating func reset()
    /// Forgets the history and expects the next step at `timesteps[index]` (img2img and
    /// inpainting start part-way down the schedule; diffusers' `set_begin_index`).
    mutating func reset(beginningAt index: Int)
}

extension DiffusionSampler {
    public func modelTimestep(forStep timestep: Int) -> Int? { timestep }
    public mutating func reset() {}
    public mutating func reset(beginningAt index: Int) { reset() }

    /// The model output at the clean level (ᾱ = 1), which needs no model call: x̂0 is the sample
    /// itself, and ε or v are multiplied by zero there.
    public func cleanLevelOutput(sample: Tensor) throws -> Tensor {
        predictionType == .sample ? sample : try sample.zerosLike()
    }

    /// One step whose noise, when the step adds any, is drawn from `generator` (shape and dtype of
    /// `sample`, as diffusers' `randn_tensor(model_output.shape, ...)`), and only then.
    public mutating func step(
        modelOutput: Tensor, timestep: Int, sample: Tensor, context: (any ContextBias)? = nil, generator: Generator?
    ) throws -> SamplerStepOutput {
        var noise: Tensor?
        if addsNoise(at: timestep) {
            guard let generator else { throw SamplingError.missingNoise(timestep: timestep) }
            noise = try Tensor.randn(sample.shape, dtype: sample.dtype, generator: generator)
        }
        return try step(modelOutput: modelOutput, timestep: timestep, sample: sample, context: context, noise: noise)
    }

    /// The number of training timesteps T.
    public var trainTimesteps: Int { schedule.config.trainTimesteps }
}

// MARK: - Pieces shared by the samplers

extension DiffusionSampler {
    func checkTimestep(_ t: Int) throws {
        guard t >= 0, t < trainTimesteps else {
            throw SamplingError.timestepOutOfRange(t, trainTimesteps: trainTimesteps)
        }
    }

    func checkNoise(_ noise: Tensor?, like sample: Tensor, timestep: Int) throws -> Tensor {
        guard let noise else { throw SamplingError.missingNoise(timestep: timestep) }
        guard noise.shape == sample.shape else {
            throw SamplingError.shapeMismatch("noise \(noise.shape) for a sample of shape \(sample.shape)")
        }
        return noise
    }

    /// ContextDiff's noise estimate at level `level` (see ``DiffusionSampler``):
    /// `(x − b − sqrt(ᾱ)·x̂0_raw) / sqrt(1 − ᾱ)`, with ε̂ = 0 where 1 − ᾱ = 0.
    /// Without a bias this is exactly diffusers' `pred_epsilon`.
    func contextualNoise(
        modelOutput: Tensor, sample: Tensor, rawOriginal: Tensor, level: NoiseLevel, bias: Tensor?
    ) throws -> Tensor {
        let c = LevelScalars(alphaBar: level.alphaBar)
        switch predictionType {
        case .sample:
            // diffusers: (sample - alpha_prod_t ** 0.5 * pred_original_sample) / beta_prod_t ** 0.5
            return try c.noise(fromResidual: sample.subtractingBias(bias) - rawOriginal * c.sqrtAlphaBar)
        case .epsilon, .vPrediction:
            let eps = try predictionType.noise(modelOutput: modelOutput, sample: sample, alphaBar: level.alphaBar)
            // A bias implies k ≠ 0, hence 0 < ᾱ < 1 and a non-zero divisor.
            guard let bias, c.oneMinusAlphaBar > 0 else { return eps }
            return try eps - bias / c.sqrtOneMinusAlphaBar
        }
    }
}

/// `T // n` of diffusers' step functions.
func stepRatio(trainTimesteps: Int, inferenceSteps: Int) -> Int { trainTimesteps / inferenceSteps }

/// The DDPM posterior variance between two levels, in diffusers' float32 order:
/// `(1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev)` (`DDIMScheduler._get_variance` and the unclamped
/// `DDPMScheduler._get_variance` fixed-small value).
func posteriorVarianceFloat32(alphaBar at: Float, alphaBarPrev ap: Float) -> Float {
    (1 - ap) / (1 - at) * (1 - at / ap)
}
