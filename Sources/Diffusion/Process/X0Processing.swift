import Torch

/// What a sampler does to the predicted clean sample x̂0 before using it (diffusers'
/// `clip_sample` / `clip_sample_range` and `thresholding` / `dynamic_thresholding_ratio` /
/// `sample_max_value`; thresholding takes precedence there too).
///
/// As diffusers with `use_clipped_model_output=False`, the noise estimate ε̂ is *not* recomputed
/// from the processed x̂0; ContextDiff's biases `b = k·r_φ(x̂0, c, ·)` are computed from the
/// processed x̂0.
public enum X0Processing: Sendable, Equatable {
    /// Use x̂0 as predicted.
    case none
    /// `x̂0.clamp(-range, range)` (diffusers' default: `clip_sample=True`, range 1).
    case clip(range: Double)
    /// Imagen's dynamic thresholding (arXiv:2205.11487), diffusers `_threshold_sample`: per batch
    /// element, `s` = the `ratio`-quantile of |x̂0| clamped to [1, maxValue]; x̂0 ← clamp(x̂0, −s, s) / s.
    case dynamicThreshold(ratio: Double, maxValue: Double)

    /// diffusers' defaults for DDIM/DDPM schedulers (`clip_sample=True`, `clip_sample_range=1.0`).
    public static let diffusersDefault = X0Processing.clip(range: 1)
    /// diffusers' thresholding defaults (`dynamic_thresholding_ratio=0.995`, `sample_max_value=1.0`).
    public static let imagenThreshold = X0Processing.dynamicThreshold(ratio: 0.995, maxValue: 1)

    /// Throws for a clip range ≤ 0, a ratio outside (0, 1] or a max value below 1 (where
    /// `clamp(s, min: 1, max: maxValue)` would be empty).
    public func validate() throws(SamplingError) {
        switch self {
        case .none: break
        case .clip(let range):
            guard range.isFinite, range > 0 else { throw .invalidClipRange(range) }
        case .dynamicThreshold(let ratio, let maxValue):
            guard ratio > 0, ratio <= 1 else { throw .invalidThresholdRatio(ratio) }
            guard maxValue.isFinite, maxValue >= 1 else { throw .invalidThresholdMaxValue(maxValue) }
        }
    }

    /// Applies the processing to a batch-first x̂0 (`[B, ...]`).
    public func apply(_ x0: Tensor) throws -> Tensor {
        switch self {
        case .none:
            return x0
        case .clip(let range):
            return try x0.clamped(min: -range, max: range)
        case .dynamicThreshold(let ratio, let maxValue):
            return try Self.threshold(x0, ratio: ratio, maxValue: maxValue)
        }
    }

    /// diffusers `DDPMScheduler._threshold_sample` (identical in DDIMScheduler): quantile per
    /// batch element over all other dimensions, computed in float32 for half types.
    static func threshold(_ sample: Tensor, ratio: Double, maxValue: Double) throws -> Tensor {
        let shape = sample.shape
        guard shape.count >= 2 else {
            throw SamplingError.shapeMismatch(
                "dynamic thresholding needs a batch-first tensor of rank >= 2, got \(shape)")
        }
        let dtype = sample.dtype
        var x = sample
        if dtype != .float32 && dtype != .float64 { x = try x.to(.float32) }
        x = try x.reshaped([shape[0], -1])
        let s = try x.abs().quantile(ratio, dim: 1).clamped(min: 1, max: maxValue).unsqueezed(1)
        // torch.clamp(sample, -s, s) == min(max(sample, -s), s)
        x = try x.maximum(-s).minimum(s) / s
        return try x.reshaped(shape).to(dtype)
    }
}
