/// The name of a registered sampler ("ddim", "ddpm", "dpmpp", ...), as options, configs and the
/// CLI spell it. Only names in ``SamplerRegistry/builtIn`` parse or decode.
public struct SamplerKind: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// A kind for a registration (unchecked: the registry is what makes it valid).
    init(name: String) { rawValue = name }

    public var description: String { rawValue }
}

extension SamplerKind: RawRepresentable, NamedOption, Codable {
    /// nil unless a sampler of that name is registered.
    public init?(rawValue: String) {
        guard SamplerRegistry.registration(named: rawValue) != nil else { return nil }
        self.rawValue = rawValue
    }

    public static var allCases: [SamplerKind] { SamplerRegistry.builtIn.map(\.kind) }
    public static var optionName: String { "sampler" }
    public static var aliases: [String: SamplerKind] { SamplerRegistry.aliases }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do {
            self = try SamplerKind(parsing: text)
        } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// Everything that configures a sampler besides its noise schedule: the union of the registered
/// samplers' options, each with diffusers' default. A sampler reads the common fields and the
/// ones its ``SamplerRegistration/reads`` names; the rest are ignored (the CLI refuses them).
public struct SamplerOptions: Sendable, Equatable {
    /// The options that only some samplers read (for validation and reports).
    public enum Key: String, Sendable, CaseIterable {
        case eta, setAlphaToOne = "set_alpha_to_one", varianceType = "variance_type"
        case solverOrder = "solver_order", solverType = "solver_type", lowerOrderFinal = "lower_order_final"
        case karrasSigmas = "use_karras_sigmas", finalSigmas = "final_sigmas_type"
    }

    // Common to every sampler.
    public var inferenceSteps: Int
    public var predictionType: PredictionTarget
    public var x0Processing: X0Processing
    /// nil: the sampler's own diffusers default (``SamplerRegistration/defaultSpacing``).
    public var spacing: TimestepSpacing?
    public var stepsOffset: Int

    // DDIM.
    public var eta: Double
    public var setAlphaToOne: Bool
    // DDPM.
    public var varianceType: DDPMVarianceType
    // DPM-Solver++.
    public var solverOrder: Int
    public var solverType: DPMSolverType
    public var lowerOrderFinal: Bool
    public var karrasSigmas: Bool
    public var finalSigmas: DPMFinalSigmas

    public init(
        inferenceSteps: Int = 50, predictionType: PredictionTarget = .epsilon,
        x0Processing: X0Processing = .diffusersDefault, spacing: TimestepSpacing? = nil, stepsOffset: Int = 0,
        eta: Double = 0, setAlphaToOne: Bool = true, varianceType: DDPMVarianceType = .fixedSmall,
        solverOrder: Int = 2, solverType: DPMSolverType = .midpoint, lowerOrderFinal: Bool = true,
        karrasSigmas: Bool = false, finalSigmas: DPMFinalSigmas = .zero
    ) {
        self.inferenceSteps = inferenceSteps
        self.predictionType = predictionType
        self.x0Processing = x0Processing
        self.spacing = spacing
        self.stepsOffset = stepsOffset
        self.eta = eta
        self.setAlphaToOne = setAlphaToOne
        self.varianceType = varianceType
        self.solverOrder = solverOrder
        self.solverType = solverType
        self.lowerOrderFinal = lowerOrderFinal
        self.karrasSigmas = karrasSigmas
        self.finalSigmas = finalSigmas
    }

    /// The keys whose values differ from the defaults (what a caller set explicitly).
    public var changedKeys: Set<Key> {
        let d = SamplerOptions()
        var keys: Set<Key> = []
        if eta != d.eta { keys.insert(.eta) }
        if setAlphaToOne != d.setAlphaToOne { keys.insert(.setAlphaToOne) }
        if varianceType != d.varianceType { keys.insert(.varianceType) }
        if solverOrder != d.solverOrder { keys.insert(.solverOrder) }
        if solverType != d.solverType { keys.insert(.solverType) }
        if lowerOrderFinal != d.lowerOrderFinal { keys.insert(.lowerOrderFinal) }
        if karrasSigmas != d.karrasSigmas { keys.insert(.karrasSigmas) }
        if finalSigmas != d.finalSigmas { keys.insert(.finalSigmas) }
        return keys
    }
}

/// How to build one sampler from options: what a sampler file declares about itself.
public struct SamplerRegistration: Sendable {
    public let kind: SamplerKind
    /// One line for `--help` and docs.
    public let summary: String
    /// diffusers' default `timestep_spacing` for this scheduler.
    public let defaultSpacing: TimestepSpacing
    /// The sampler-specific options it reads (others must stay at their defaults).
    public let reads: Set<SamplerOptions.Key>
    /// Other accepted spellings of the name.
    public let aliases: [String]
    let make: @Sendable (NoiseSchedule, SamplerOptions) throws -> any DiffusionSampler

    public init(
        name: String, summary: String, defaultSpacing: TimestepSpacing = .leading, reads: Set<SamplerOptions.Key> = [],
        aliases: [String] = [], make: @escaping @Sendable (NoiseSchedule, SamplerOptions) throws -> any DiffusionSampler
    ) {
        kind = SamplerKind(name: name)
        self.summary = summary
        self.defaultSpacing = defaultSpacing
        self.reads = reads
        self.aliases = aliases
        self.make = make
    }
}

/// The samplers this library offers, by name. Adding one: a file with the sampler type and a
/// `static let registration`, and one line here.
public enum SamplerRegistry {
    public static let builtIn: [SamplerRegistration] = [
        DDIMSampler.registration,
        DDPMSampler.registration,
        DPMSolverSampler.registration,
        DPMSolverSampler.sdeRegistration,
    ]

    public static func registration(named name: String) -> SamplerRegistration? {
        builtIn.first { $0.kind.rawValue == name }
    }

    public static func registration(for kind: SamplerKind) -> SamplerRegistration {
        // A SamplerKind exists only for registered names.
        builtIn.first { $0.kind == kind }!
    }

    static var aliases: [String: SamplerKind] {
        var out: [String: SamplerKind] = [:]
        for r in builtIn { for a in r.aliases { out[a] = r.kind } }
        return out
    }

    /// Builds the sampler `kind` over `schedule`. Throws ``SamplingError/invalidSolverOption(option:message:)``
    /// when an option the sampler does not read was changed from its default, and the sampler's own
    /// ``ScheduleError`` / ``SamplingError`` for values out of range.
    public static func make(_ kind: SamplerKind, schedule: NoiseSchedule, options: SamplerOptions) throws
        -> any DiffusionSampler
    {
        let registration = registration(for: kind)
        if let key = options.changedKeys.subtracting(registration.reads).sorted(by: { $0.rawValue < $1.rawValue }).first {
            throw SamplingError.invalidSolverOption(
                option: key.rawValue, message: "applies only to samplers that read it, not to \(kind)")
        }
        var options = options
        if options.spacing == nil { options.spacing = registration.defaultSpacing }
        return try registration.make(schedule, options)
    }
}

extension DDIMSampler {
    public static let registration = SamplerRegistration(
        name: "ddim", summary: "DDIM (Song et al. 2020) with ContextDiff's Eq. 13; eta in [0, 1]",
        reads: [.eta, .setAlphaToOne]
    ) { schedule, o in
        try DDIMSampler(
            schedule: schedule, inferenceSteps: o.inferenceSteps,
            configuration: .init(
                predictionType: o.predictionType, x0Processing: o.x0Processing, eta: o.eta,
                setAlphaToOne: o.setAlphaToOne, spacing: o.spacing ?? .leading, stepsOffset: o.stepsOffset))
    }
}

extension DDPMSampler {
    public static let registration = SamplerRegistration(
        name: "ddpm", summary: "ancestral DDPM (Ho et al. 2020) with ContextDiff's Eq. 9",
        reads: [.varianceType]
    ) { schedule, o in
        try DDPMSampler(
            schedule: schedule, inferenceSteps: o.inferenceSteps,
            configuration: .init(
                predictionType: o.predictionType, x0Processing: o.x0Processing, varianceType: o.varianceType,
                spacing: o.spacing ?? .leading, stepsOffset: o.stepsOffset))
    }
}

extension SamplerKind {
    public static let ddim = DDIMSampler.registration.kind
    public static let ddpm = DDPMSampler.registration.kind
}
