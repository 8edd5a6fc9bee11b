extension SamplerKind: NamedOption {
    public static var optionName: String { "sampler" }
}

/// Everything that defines a sampler's schedule, as the `contextdiff schedule` command takes it.
public struct ScheduleRequest: Sendable, Equatable {
    public var schedule: NoiseScheduleConfig
    public var sampler: SamplerKind
    public var inferenceSteps: Int
    public var spacing: TimestepSpacing
    public var stepsOffset: Int
    /// DDIM only.
    public var eta: Double
    /// DDIM only.
    public var setAlphaToOne: Bool
    /// DDPM only.
    public var varianceType: DDPMVarianceType

    public init(
        schedule: NoiseScheduleConfig = NoiseScheduleConfig(), sampler: SamplerKind = .ddim, inferenceSteps: Int = 50,
        spacing: TimestepSpacing = .leading, stepsOffset: Int = 0, eta: Double = 0, setAlphaToOne: Bool = true,
        varianceType: DDPMVarianceType = .fixedSmall
    ) {
        self.schedule = schedule
        self.sampler = sampler
        self.inferenceSteps = inferenceSteps
        self.spacing = spacing
        self.stepsOffset = stepsOffset
        self.eta = eta
        self.setAlphaToOne = setAlphaToOne
        self.varianceType = varianceType
    }

    /// Builds the sampler (validating every option: ``ScheduleError`` / ``SamplingError``).
    public func makeSampler() throws -> any DiffusionSampler {
        let noise = try NoiseSchedule(schedule)
        switch sampler {
        case .ddim:
            return try DDIMSampler(
                schedule: noise, inferenceSteps: inferenceSteps,
                configuration: .init(eta: eta, setAlphaToOne: setAlphaToOne, spacing: spacing, stepsOffset: stepsOffset)
            )
        case .ddpm:
            return try DDPMSampler(
                schedule: noise, inferenceSteps: inferenceSteps,
                configuration: .init(varianceType: varianceType, spacing: spacing, stepsOffset: stepsOffset))
        }
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
        case alphaBar = "alpha_bar"
        case posteriorVariance = "posterior_variance"
        case noiseVariance = "noise_variance"
    }

    public init(request: ScheduleRequest, table: [SamplerStepInfo]) {
        config = request.schedule
        sampler = request.sampler
        numInferenceSteps = request.inferenceSteps
        timestepSpacing = request.spacing
        stepsOffset = request.stepsOffset
        eta = request.sampler == .ddim ? request.eta : nil
        setAlphaToOne = request.sampler == .ddim ? request.setAlphaToOne : nil
        varianceType = request.sampler == .ddpm ? request.varianceType : nil
        timesteps = table.map(\.timestep)
        alphaBar = table.map(\.alphaBarFrom)
        k = table.map(\.kFrom)
        posteriorVariance = table.map(\.posteriorVariance)
        noiseVariance = table.map(\.noiseVariance)
        steps = table
    }
}
