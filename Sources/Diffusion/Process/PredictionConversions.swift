import Torch

/// What the denoiser's output means (for ContextDiff, ε and v include the bias: issue 23, docs/SOLVERS.md).
public enum PredictionTarget: String, Codable, Sendable, CaseIterable {
    /// The clean image x0 (ContextDiff's parameterisation, Eq. 8).
    case sample
    /// The noise ε.
    case epsilon
    /// v = √ᾱ ε − √(1−ᾱ) x0.
    case vPrediction = "v_prediction"
}


/// Conversions between the parameterisations of a denoiser's output (``PredictionTarget``,
/// declared with the U-Net config: ε, x0 = `sample`, v), as diffusers 0.27.2 `DDIMScheduler.step`
/// (scheduling_ddim.py, "compute predicted original sample from predicted noise") and
/// `DDPMScheduler.get_velocity` compute them, in the same float32 scalar arithmetic: with
/// `c = sqrt(ᾱ)` and `d = sqrt(1 − ᾱ)` rounded as torch rounds `alpha_prod_t ** 0.5` and
/// `(1 - alpha_prod_t) ** 0.5`,
///
///     epsilon: x0 = (x − d·ε) / c              ε = output
///     sample:  x0 = output                     ε = (x − c·x0) / d
///     v:       x0 = c·x − d·v                  ε = c·v + d·x
///     target:  v  = c·ε − d·x0
extension PredictionTarget: NamedOption {
    public static var optionName: String { "prediction type" }
    public static var aliases: [String: PredictionTarget] { ["eps": .epsilon, "x0": .sample, "v": .vPrediction] }

    /// The clean-sample estimate x̂0 from a model output at noise level ᾱ. As in diffusers,
    /// ε-prediction at ᾱ = 0 (zero terminal SNR) divides by 0 (use v or x0 prediction there).
    public func originalSample(modelOutput: Tensor, sample: Tensor, alphaBar: Float) throws -> Tensor {
        let c = LevelScalars(alphaBar: alphaBar)
        switch self {
        case .epsilon:
            return try (sample - modelOutput * c.sqrtOneMinusAlphaBar) / c.sqrtAlphaBar
        case .sample:
            return modelOutput
        case .vPrediction:
            return try sample * c.sqrtAlphaBar - modelOutput * c.sqrtOneMinusAlphaBar
        }
    }

    /// The noise estimate ε̂ from a model output at noise level ᾱ.
    ///
    /// For ``sample`` at a clean level (ᾱ = 1) ε is 0/0: it is defined as 0 there (the clean
    /// sample carries no noise), where diffusers returns NaN.
    public func noise(modelOutput: Tensor, sample: Tensor, alphaBar: Float) throws -> Tensor {
        let c = LevelScalars(alphaBar: alphaBar)
        switch self {
        case .epsilon:
            return modelOutput
        case .sample:
            return try c.noise(fromResidual: sample - modelOutput * c.sqrtAlphaBar)
        case .vPrediction:
            return try modelOutput * c.sqrtAlphaBar + sample * c.sqrtOneMinusAlphaBar
        }
    }

    /// The training target of this parameterisation for a clean sample and its noise
    /// (ε, x0, or diffusers' `get_velocity`: `c·ε − d·x0`).
    public func target(originalSample x0: Tensor, noise: Tensor, alphaBar: Float) throws -> Tensor {
        let c = LevelScalars(alphaBar: alphaBar)
        switch self {
        case .epsilon: return noise
        case .sample: return x0
        case .vPrediction: return try noise * c.sqrtAlphaBar - x0 * c.sqrtOneMinusAlphaBar
        }
    }

    /// Re-expresses a model output of this type as an output of type `other` at the same level.
    public func converted(_ modelOutput: Tensor, to other: PredictionTarget, sample: Tensor, alphaBar: Float) throws
        -> Tensor
    {
        if other == self { return modelOutput }
        let x0 = try originalSample(modelOutput: modelOutput, sample: sample, alphaBar: alphaBar)
        let eps = try noise(modelOutput: modelOutput, sample: sample, alphaBar: alphaBar)
        return try other.target(originalSample: x0, noise: eps, alphaBar: alphaBar)
    }
}

/// The float32 scalars diffusers derives from one ᾱ (0-dim float32 tensors in Python):
/// `alpha_prod ** 0.5` and `(1 - alpha_prod) ** 0.5` (torch's pow(·, 0.5) is sqrt).
struct LevelScalars {
    let alphaBar: Float
    let oneMinusAlphaBar: Float
    let sqrtAlphaBar: Double
    let sqrtOneMinusAlphaBar: Double

    init(alphaBar: Float) {
        self.alphaBar = alphaBar
        oneMinusAlphaBar = 1 - alphaBar
        sqrtAlphaBar = Double(alphaBar.squareRoot())
        sqrtOneMinusAlphaBar = Double(oneMinusAlphaBar.squareRoot())
    }

    /// `residual / sqrt(1 − ᾱ)` — the noise implied by `x − b − sqrt(ᾱ)·x0` — with the 0/0 at a
    /// clean level (ᾱ = 1) defined as ε̂ = 0.
    func noise(fromResidual residual: Tensor) throws -> Tensor {
        if oneMinusAlphaBar == 0 { return try residual.zerosLike() }
        return try residual / sqrtOneMinusAlphaBar
    }
}
