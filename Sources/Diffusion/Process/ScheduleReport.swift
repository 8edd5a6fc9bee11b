
/// Everything that defines a sampler's schedule, as the `contextdiff schedule` command takes it.
public struct ScheduleRequest: Sendable, Equatable {
    public var schedule: NoiseScheduleConfig
    public var sampler: SamplerKind
    /// The sampler's options (its prediction type and x0 processing do not change the schedule).
    public var options: SamplerOptions

    public init(
        schedule: NoiseScheduleConfig = NoiseScheduleConfig(), sampler: SamplerKind = .ddim,
        options: SamplerOptions = SamplerOptions()
    ) {
        self.schedule = schedule
        self.sampler = sampler
        self.options = options
    }

    /// Builds the sampler (validating every option: ``ScheduleError`` / ``SamplingError``).
    public func makeSampler() throws -> any DiffusionSampler {
        try SamplerRegistry.make(sampler, schedule: NoiseSchedule(schedule), options: options)
    }

    public func makeReport() throws -> ScheduleReport {
        ScheduleReport(request: self, table: try makeSampler().stepTable)
    }
}

/// A sampler's schedule per kept step, for `contextdiff schedule` (JSON, diffusers-style keys).
/// The parallel arrays give, for each step in loop order, the model's timestep, ᾱ and `k` of the
/// level the step starts from, and the posterior / added-noise variances; `steps` has the full
/// bookkeeping of each step (see ``SamplerStepInfo``).
public struct ScheduleReport: Codable, Sendable, Equatable {
    public var config: NoiseScheduleConfig
    public var sampler: SamplerKind
    public var numInferenceSteps: Int
    public var timestepSpacing: TimestepSpacing
    public var stepsOffset: Int
    public var eta: Double?
    public var setAlphaToOne: Bool?
    public var varianceType: DDPMVarianceType?
    public var solverOrder: Int?
    public var solverType: DPMSolverType?
    public var lowerOrderFinal: Bool?
    public var useKarrasSigmas: Bool?
    public var finalSigmasType: DPMFinalSigmas?
    public var timesteps: [Int]
    public var alphaBar: [Float]
    public var k: [Double]
    public var posteriorVariance: [Float]
    public var noiseVariance: [Float]
    public var steps: [SamplerStepInfo]

    enum CodingKeys: String, CodingKey {
        case config, sampler, eta, timesteps, k, steps
        case numInferenceSteps = "num_inference_steps"
        case timestepSpacing = "timestep_spacing"
        case stepsOffset = "steps_offset"
        case setAlphaToOne = "set_alpha_to_one"
        case varianceType = "variance_type"
        case solverOrder = "solver_order"
        case solverType = "solver_type"
        case lowerOrderFinal = "lower_order_final"
        case useKarrasSigmas = "use_karras_sigmas"
        case finalSigmasType = "final_sigmas_type"
        case alphaBar = "alpha_bar"
        case posteriorVariance = "posterior_variance"
        case noiseVariance = "noise_variance"
    }

    public init(request: ScheduleRequest, table: [SamplerStepInfo]) {
        config = request.schedule
        sampler = request.sampler
        let o = request.options
        let registration = SamplerRegistry.registration(for: request.sampler)
        let reads = registration.reads
        numInferenceSteps = o.inferenceSteps
        timestepSpacing = o.spacing ?? registration.defaultSpacing
        stepsOffset = o.stepsOffset
        eta = reads.contains(.eta) ? o.eta : nil
        setAlphaToOne = reads.contains(.setAlphaToOne) ? o.setAlphaToOne : nil
        varianceType = reads.contains(.varianceType) ? o.varianceType : nil
        solverOrder = reads.contains(.solverOrder) ? o.solverOrder : nil
        solverType = reads.contains(.solverType) ? o.solverType : nil
        lowerOrderFinal = reads.contains(.lowerOrderFinal) ? o.lowerOrderFinal : nil
        useKarrasSigmas = reads.contains(.karrasSigmas) ? o.karrasSigmas : nil
        finalSigmasType = reads.contains(.finalSigmas) ? o.finalSigmas : nil
        timesteps = table.map(\.timestep)
        alphaBar = table.map(\.alphaBarFrom)
        k = table.map(\.kFrom)
        posteriorVariance = table.map(\.posteriorVariance)
        noiseVariance = table.map(\.noiseVariance)
        steps = table
    }
}
