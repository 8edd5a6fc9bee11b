import Torch

/// The denoiser as a sampler sees it: the model output (in the sampler's ``PredictionTarget``) for
/// a batch of samples at one timestep. Wrap a conditional model and classifier-free guidance
/// (``ClassifierFreeGuidance``) into this closure.
public typealias Denoiser = (_ sample: Tensor, _ timestep: Int) throws -> Tensor

/// One completed step of a sampling loop.
public struct SamplingStep {
    /// 0-based index of the step.
    public let index: Int
    /// The number of steps of the loop.
    public let total: Int
    /// The step's timestep (the model was evaluated at ``DiffusionSampler/modelTimestep(forStep:)``).
    public let timestep: Int
    /// The sample after the step.
    public let sample: Tensor
    /// The processed clean-sample estimate of the step.
    public let predictedOriginal: Tensor
}

/// A change applied to the sample after every step (inpainting puts the known region back at
/// the level the sample has reached): the sample and the next step's timestep, nil after the
/// last step (the sample is then at the clean level).
public typealias SampleConstraint = (_ sample: Tensor, _ nextTimestep: Int?) throws -> Tensor

/// Runs a sampler step by step; `next()` returns nil when every timestep has been visited.
/// (Swift's `IteratorProtocol` cannot throw, so this is a throwing iterator of the same shape.)
///
/// Run it inside `Torch.withNoGrad` (or `withInferenceMode`) unless gradients through the
/// sampling chain are wanted. The library never prints; callers draw progress from the steps.
public struct SamplingIterator {
    /// This loop's own copy of the sampler (a multistep solver keeps its history here).
    public private(set) var sampler: any DiffusionSampler
    /// The current sample (the initial one before the first step).
    public private(set) var sample: Tensor
    /// How many steps have run.
    public private(set) var completedSteps = 0
    /// The index in ``DiffusionSampler/timesteps`` of the first step (0 unless the loop starts
    /// part-way, as img2img does).
    public let firstStep: Int
    let context: (any ContextBias)?
    let generator: Generator?
    let denoiser: Denoiser
    let constraint: SampleConstraint?

    /// - Parameters:
    ///   - initialSample: x_T for sampling (e.g. ``initialNoise(shape:dtype:generator:)``), or the
    ///     clean/slightly noisy latent for inversion.
    ///   - context: ContextDiff's `r_φ` with the condition bound; nil for plain diffusion.
    ///   - generator: the source of every random number the sampler draws.
    ///   - firstStep: the index of the first step; `initialSample` must be at that step's level.
    ///   - constraint: applied to the sample after every step.
    public init(
        sampler: any DiffusionSampler, initialSample: Tensor, context: (any ContextBias)? = nil,
        generator: Generator? = nil, firstStep: Int = 0, constraint: SampleConstraint? = nil, denoiser: @escaping Denoiser
    ) throws {
        guard (0..<sampler.timesteps.count).contains(firstStep) else {
            throw SamplingError.invalidStart(firstStep: firstStep, steps: sampler.timesteps.count)
        }
        var sampler = sampler
        sampler.reset(beginningAt: firstStep)
        self.sampler = sampler
        self.sample = initialSample
        self.firstStep = firstStep
        self.context = context
        self.generator = generator
        self.constraint = constraint
        self.denoiser = denoiser
    }

    /// The steps this loop runs.
    public var totalSteps: Int { sampler.timesteps.count - firstStep }

    public mutating func next() throws -> SamplingStep? {
        let timesteps = sampler.timesteps
        let i = firstStep + completedSteps
        guard i < timesteps.count else { return nil }
        let t = timesteps[i]
        let modelOutput = try sampler.modelTimestep(forStep: t).map { try denoiser(sample, $0) }
            ?? sampler.cleanLevelOutput(sample: sample)
        let output = try sampler.step(
            modelOutput: modelOutput, timestep: t, sample: sample, context: context, generator: generator)
        sample = try constraint?(output.sample, i + 1 < timesteps.count ? timesteps[i + 1] : nil) ?? output.sample
        completedSteps += 1
        return SamplingStep(
            index: completedSteps - 1, total: totalSteps, timestep: t, sample: sample,
            predictedOriginal: output.predictedOriginal)
    }
}

extension DiffusionSampler {
    /// Runs every step from `initialSample` and returns the final sample.
    ///
    /// - Parameter progress: called after each step (phase `phase`, steps done of total); return
    ///   false to stop, which throws ``SamplingError/cancelled(completedSteps:totalSteps:)``.
    ///   `firstStep` and `constraint` as ``SamplingIterator/init(sampler:initialSample:context:generator:firstStep:constraint:denoiser:)``.
    public func run(
        from initialSample: Tensor, context: (any ContextBias)? = nil, generator: Generator? = nil,
        firstStep: Int = 0, constraint: SampleConstraint? = nil,
        phase: String = "sampling", progress: ProgressHandler? = nil, denoiser: @escaping Denoiser
    ) throws -> Tensor {
        var iterator = try SamplingIterator(
            sampler: self, initialSample: initialSample, context: context, generator: generator, firstStep: firstStep,
            constraint: constraint, denoiser: denoiser)
        while let step = try iterator.next() {
            if let progress, !progress(ProgressUpdate(phase: phase, completed: step.index + 1, total: step.total)) {
                throw SamplingError.cancelled(completedSteps: step.index + 1, totalSteps: step.total)
            }
        }
        return iterator.sample
    }

    /// Standard-normal x_T (diffusers' `init_noise_sigma` is 1 for DDPM and DDIM).
    public static func initialNoise(shape: [Int], dtype: DType = .float32, generator: Generator) throws -> Tensor {
        try Tensor.randn(shape, dtype: dtype, generator: generator)
    }
}
