/// Invalid sampler, guidance, clipping or loss options, and failures of a sampling loop.
///
/// Step counts and schedule problems are reported as ``ScheduleError``; names that match no
/// option as ``UnknownOptionError``.
public enum SamplingError: Error, Equatable, CustomStringConvertible, Sendable {
    /// DDIM's η must be finite and in [0, 1].
    case invalidEta(Double)
    /// The classifier-free guidance scale must be finite and ≥ 0.
    case invalidGuidanceScale(Double)
    /// The x0 clip range must be finite and > 0.
    case invalidClipRange(Double)
    /// The dynamic-thresholding percentile must be in (0, 1].
    case invalidThresholdRatio(Double)
    /// The dynamic-thresholding maximum must be finite and ≥ 1.
    case invalidThresholdMaxValue(Double)
    /// The min-SNR γ must be finite and > 0.
    case invalidSNRGamma(Double)
    /// A probability (condition dropout) outside [0, 1].
    case invalidProbability(Double)
    /// The inverse DDIM scheduler supports only `leading` and `trailing` spacing (as diffusers).
    case unsupportedSpacing(TimestepSpacing, sampler: String)
    /// A timestep that the sampler's schedule does not contain.
    case timestepOutOfRange(Int, trainTimesteps: Int)
    /// A training timestep range `lower..<upper` that is empty or not inside 0..<T.
    case invalidTimestepRange(lower: Int, upper: Int, trainTimesteps: Int)
    /// A forward transition must go from an earlier level to a later one.
    case invalidTransition(from: Int, to: Int)
    /// Tensors whose shapes (or dtypes) must agree do not.
    case shapeMismatch(String)
    /// The step needs random noise but neither noise nor a generator was given.
    case missingNoise(timestep: Int)
    /// The progress handler returned false.
    case cancelled(completedSteps: Int, totalSteps: Int)
    /// A stateful solver was given a step out of the order of its timesteps (nil: past the last).
    case unexpectedTimestep(Int, expected: Int?)
    /// A solver option outside its range (`option`: the option's name, e.g. "solver_order").
    case invalidSolverOption(option: String, message: String)
    /// A loop started at a step outside `0..<steps`.
    case invalidStart(firstStep: Int, steps: Int)

    public var description: String {
        switch self {
        case .invalidEta(let v): "eta must be in [0, 1], got \(v)"
        case .invalidGuidanceScale(let v): "guidance scale must be finite and >= 0, got \(v)"
        case .invalidClipRange(let v): "clip range must be finite and > 0, got \(v)"
        case .invalidThresholdRatio(let v): "dynamic thresholding ratio must be in (0, 1], got \(v)"
        case .invalidThresholdMaxValue(let v): "dynamic thresholding max value must be finite and >= 1, got \(v)"
        case .invalidSNRGamma(let v): "min-SNR gamma must be finite and > 0, got \(v)"
        case .invalidProbability(let v): "probability must be in [0, 1], got \(v)"
        case .unsupportedSpacing(let s, let sampler): "\(sampler) does not support '\(s.rawValue)' timestep spacing"
        case .timestepOutOfRange(let t, let n): "timestep \(t) is outside 0..<\(n)"
        case let .invalidTimestepRange(lower, upper, n): "timestep range \(lower)..<\(upper) is empty or not inside 0..<\(n)"
        case .invalidTransition(let s, let t):
            "a forward transition goes from an earlier timestep to a later one, got \(s) -> \(t)"
        case .shapeMismatch(let what): "shape mismatch: \(what)"
        case .missingNoise(let t): "the step at timestep \(t) adds noise: pass a Generator (or explicit noise)"
        case .cancelled(let done, let total): "sampling cancelled after \(done) of \(total) steps"
        case .unexpectedTimestep(let t, let expected):
            expected.map { "step at timestep \(t), expected the next timestep \($0) (call reset() to start again)" }
                ?? "step at timestep \(t) after the last step (call reset() to start again)"
        case .invalidSolverOption(let option, let message): "\(option): \(message)"
        case .invalidStart(let first, let steps): "a sampling loop of \(steps) steps cannot start at step \(first)"
        }
    }
}
