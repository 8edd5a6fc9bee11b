import ArgumentParser
import Workflows
import ContextDiff
import Torch

/// `ThreadSettings.apply(threads:)`: libtorch's threads, and OpenBLAS one thread unless
/// `OPENBLAS_NUM_THREADS` is set.
func useThreads(_ threads: Int) { ThreadSettings.apply(threads: threads) }

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
        switch error {
        case let SamplingError.invalidSolverOption(option, message):
            if let key = SamplerOptions.Key(rawValue: option), let flag = flags[key] { return "\(flag) \(message)" }
        case let BenchmarkError.invalidSetting(option, message), let LaunchError.invalidSetting(option, message):
            return "\(flag(option)) \(message)"
        case let PipelineError.invalidOption(message), let VideoEditError.invalidOption(message):
            // The message starts with the option's name; the sampler is named with its flag too.
            var text = message.replacingOccurrences(of: "not to sampler ", with: "not to --sampler ")
            if let first = text.split(separator: " ", maxSplits: 1).first,
               ["steps", "guidance", "eta", "tune_steps", "tune_learning_rate", "sr_steps", "sr_guidance", "sr_eta", "sr_noise_level"].contains(String(first)) {
                text = flag(String(first)) + text.dropFirst(first.count)
            }
            return text
        case let WorkflowError.inconsistentRecipe(message):
            // Recipe keys that have a flag are named by it.
            var text = message
            for (key, flag) in [("training.timestep_range", "--timestep-range"), ("dataset_size", "--dataset-size")] {
                text = text.replacingOccurrences(of: key, with: flag)
            }
            return "inconsistent recipe: " + text
        case let DistributedTrainingError.invalidSettings(message):
            var text = message
            for option in ["master_addr", "master_port", "world_size", "dist_timeout", "rank"] {
                text = text.replacingOccurrences(of: option == "rank" ? "rank (RANK)" : option, with: option == "rank" ? "--rank (RANK)" : flag(option))
            }
            return text
        default:
            break
        }
        return String(describing: error)
    }

    /// The flag of a setting: `train_batch` → `--train-batch`.
    static func flag(_ option: String) -> String { "--" + option.replacingOccurrences(of: "_", with: "-") }

    /// `error` with settings' names replaced by their flags; other errors unchanged (so
    /// ArgumentParser's own errors keep their usage text and exit codes).
    static func translate(_ error: any Error) -> any Error {
        let described = describe(error)
        return described == String(describing: error) ? error : CLIError(described)
    }
}

/// A library error translated for the command line.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `--device`, shared by the commands that run networks. `resolved()` checks it before any
/// work: asking for CUDA without a CUDA libtorch, or without a visible GPU, fails at once with
/// the reason (and exit code 1), not halfway through a run.
struct DeviceOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Where the networks run: cpu, or cuda[:N] (a build against a CUDA torch, README).",
        discussion: "Noise and initial weights are drawn on the CPU's generator and moved, so a seed gives the same draws on every device."))
    var device: Device = .cpu

    /// The device, checked; with `rank` of a data-parallel group, `cuda` means one GPU per rank
    /// (`cuda:rank mod count`, as torchrun's LOCAL_RANK convention).
    func resolved(rank: Int? = nil) throws -> Device {
        do {
            try Torch.checkAvailable(device)
            if case .cuda = device, let rank { return .cuda(rank % Swift.max(1, try Torch.cudaDeviceCount())) }
            return device
        } catch let error as TorchError {
            throw CLIError("--device \(device): \(error)")
        }
    }
}

/// `--precision fp32|bf16|auto`: the networks' matrix products and convolutions in float32 or in
/// bfloat16 mixed precision (weights, optimizer state, losses and the samplers stay float32).
struct PrecisionOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "fp32, bf16 (mixed precision: products and convolutions in bfloat16) or auto.",
        discussion: "auto picks bf16 on a CPU with native bfloat16 (avx512_bf16 or amx_bf16 in /proc/cpuinfo) and fp32 elsewhere, and says which."))
    var precision: String?

    func validate() throws {
        if let precision, precision != "auto", Precision(rawValue: precision) == nil {
            throw ValidationError("--precision must be fp32, bf16 or auto, not '\(precision)'")
        }
    }

    /// The precision for `device`, and for `auto` a note saying what was picked and why.
    /// `fallback` is used when the flag is absent (a recipe's own precision, say).
    func resolved(for device: Device, fallback: Precision = .fp32) -> (Precision, note: String?) {
        guard let precision else { return (fallback, nil) }
        guard let p = Precision(rawValue: precision) else {  // "auto" (validate() let nothing else through)
            let (picked, reason) = Precision.automatic(for: device)
            return (picked, "precision: auto → \(picked) (\(reason))")
        }
        return (p, nil)
    }
}

extension Device: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
    public static var defaultCompletionKind: CompletionKind { .list(["cpu", "cuda", "cuda:0"]) }
}

extension ConditionKind: ExpressibleByArgument {}
