import ArgumentParser
import ContextDiff

extension SamplerKind: ExpressibleByArgument {
    public init?(argument: String) { try? self.init(parsing: argument) }
    public static var allValueStrings: [String] { allCases.map(\.rawValue) }
}

/// The sampler flags `generate`, `evaluate` and the studio's CLI twin share.
struct SamplingOptions: ParsableArguments {
    @Option(help: "Sampler: \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var sampler: SamplerKind = .ddim
    @Option(help: "Denoising steps.") var steps = 50
    @Option(help: "Classifier-free guidance weight (≥ 0).") var guidance = 3.0
    @Option(help: "DDIM η in [0, 1] (ddim only).") var eta = 0.0
    @Option(help: "DPM-Solver++ order: 1, 2 (2M, default) or 3 (dpmpp/dpmpp-sde only).") var solverOrder: Int?
    @Flag(help: "Karras sigmas (dpmpp/dpmpp-sde only).") var karras = false

    func apply(to options: inout GenerationOptions) {
        options.sampler = sampler
        options.steps = steps
        options.guidance = guidance
        options.eta = eta
        options.solverOrder = solverOrder ?? 2
        options.karrasSigmas = karras
    }

    func validate() throws {
        guard steps > 0 else { throw ValidationError("--steps must be positive") }
        guard guidance >= 0, guidance.isFinite else { throw ValidationError("--guidance must be ≥ 0") }
        let reads = SamplerRegistry.registration(for: sampler).reads
        if eta != 0, !reads.contains(.eta) { throw ValidationError("--eta does not apply to --sampler \(sampler)") }
        if solverOrder != nil, !reads.contains(.solverOrder) {
            throw ValidationError("--solver-order does not apply to --sampler \(sampler)")
        }
        if karras, !reads.contains(.karrasSigmas) { throw ValidationError("--karras does not apply to --sampler \(sampler)") }
    }
}

/// DPM-Solver++'s own flags, for `schedule`.
struct SolverOptions: ParsableArguments {
    @Option(help: "DPM-Solver++ order: 1, 2 or 3.") var solverOrder: Int?
    @Option(help: "DPM-Solver++ second-order update: midpoint or heun.") var solverType: String?
    @Flag(help: "Karras sigmas (DPM-Solver++).") var karras = false
    @Option(help: "Where DPM-Solver++'s last step lands: zero or sigma_min.") var finalSigmas: String?
    @Flag(help: "Keep the full order at the last steps (DPM-Solver++; diffusers lower_order_final=False).")
    var noLowerOrderFinal = false

    func apply(to options: inout SamplerOptions) throws {
        if let solverOrder { options.solverOrder = solverOrder }
        if let solverType { options.solverType = try DPMSolverType(parsing: solverType) }
        options.karrasSigmas = karras
        if let finalSigmas { options.finalSigmas = try DPMFinalSigmas(parsing: finalSigmas) }
        options.lowerOrderFinal = !noLowerOrderFinal
    }
}

/// The library's errors name options by their config keys; the CLI names its flags.
enum CLIMessages {
    static let flags: [SamplerOptions.Key: String] = [
        .eta: "--eta", .setAlphaToOne: "--no-set-alpha-to-one", .varianceType: "--variance",
        .solverOrder: "--solver-order", .solverType: "--solver-type", .lowerOrderFinal: "--no-lower-order-final",
        .karrasSigmas: "--karras", .finalSigmas: "--final-sigmas",
    ]

    static func describe(_ error: any Error) -> String {
        if case let SamplingError.invalidSolverOption(option, message) = error,
            let key = SamplerOptions.Key(rawValue: option), let flag = flags[key]
        {
            return "\(flag) \(message)"
        }
        return String(describing: error)
    }
}
