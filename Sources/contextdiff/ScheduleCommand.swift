import ArgumentParser
import ContextDiff
import Foundation

/// Prints a sampler's schedule (timesteps, ᾱ, ContextDiff's k_t, variances per kept step) as JSON.
struct ScheduleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule",
        abstract: "Print the noise schedule of a sampler as JSON (diffusers 0.27.2 bookkeeping).",
        discussion: """
            For each kept step: the timestep the model sees, the levels the step moves between, \
            alpha_bar, ContextDiff's bias scale k_t = sqrt(alpha_bar)(1 - sqrt(alpha_bar)) (0 at the last \
            training timestep and at the clean level), the DDPM posterior variance and the variance of the \
            noise the sampler adds.
            """
    )

    @Option(help: "Beta schedule: linear, scaled_linear or squaredcos_cap_v2 (alias cosine).")
    var schedule = "linear"

    @Option(help: "Number of training timesteps T.")
    var trainTimesteps = 1000

    @Option(help: "First beta (linear and scaled_linear).")
    var betaStart = 0.0001

    @Option(help: "Last beta (linear and scaled_linear).")
    var betaEnd = 0.02

    @Option(help: "Number of sampling steps.")
    var steps = 50

    @Option(help: "Timestep spacing: leading, trailing or linspace (default: the sampler's diffusers default).")
    var spacing: String?

    @Option(help: "Offset added to leading timesteps (diffusers steps_offset).")
    var stepsOffset = 0

    @Option(help: "Sampler: \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var sampler = "ddim"

    @Option(help: "DDIM eta in [0, 1] (ddim only).")
    var eta: Double?

    @Option(help: "DDPM variance type: fixed_small or fixed_large (ddpm only).")
    var variance: String?

    @Flag(inversion: .prefixedNo, help: "DDIM's final alpha_bar is 1 (else alpha_bar[0]; ddim only).")
    var setAlphaToOne = true

    @Flag(help: "Rescale the betas to zero terminal SNR (arXiv:2305.08891).")
    var zeroSnr = false

    @OptionGroup var solver: SolverOptions

    /// The library request these options describe (every error carries a clear message).
    func request() throws -> ScheduleRequest {
        let kind = try SamplerKind(parsing: sampler)
        var options = SamplerOptions(
            inferenceSteps: steps, spacing: try spacing.map { try TimestepSpacing(parsing: $0) }, stepsOffset: stepsOffset,
            eta: eta ?? 0, setAlphaToOne: setAlphaToOne,
            varianceType: try variance.map { try DDPMVarianceType(parsing: $0) } ?? .fixedSmall)
        try solver.apply(to: &options)
        let reads = SamplerRegistry.registration(for: kind).reads
        if eta != nil && !reads.contains(.eta) { throw ValidationError("--eta does not apply to --sampler \(kind)") }
        if variance != nil && !reads.contains(.varianceType) {
            throw ValidationError("--variance does not apply to --sampler \(kind)")
        }
        return ScheduleRequest(
            schedule: NoiseScheduleConfig(
                trainTimesteps: trainTimesteps, betaSchedule: try BetaSchedule(parsing: schedule),
                betaStart: betaStart, betaEnd: betaEnd, rescaleZeroTerminalSNR: zeroSnr),
            sampler: kind, options: options)
    }

    /// Builds the report, turning the library's typed errors into usage errors.
    func report() throws -> ScheduleReport {
        do {
            return try request().makeReport()
        } catch let error as ValidationError {
            throw error
        } catch {
            throw ValidationError(CLIMessages.describe(error))
        }
    }

    func validate() throws {
        _ = try report()
    }

    func run() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(report()), as: UTF8.self))
    }
}
