import Torch

/// The mean and covariance of a set of feature vectors, in float64 (the statistics FID keeps).
public struct GaussianStatistics {
    /// `[D]`
    public let mean: Tensor
    /// `[D, D]`, unbiased (divides by N − 1, as `numpy.cov(rowvar=False)`).
    public let covariance: Tensor
    /// The number of vectors N.
    public let count: Int

    /// Statistics of `features` `[N, D]` (N ≥ 2), computed in float64.
    public init(features: Tensor) throws {
        guard features.rank == 2 else {
            throw EvaluationError.invalidInput("Fréchet statistics need [N, D] features, got \(features.shape)")
        }
        let n = try features.size(0)
        guard n >= 2 else { throw EvaluationError.invalidInput("Fréchet statistics need at least 2 vectors, got \(n)") }
        let x = try features.detached().to(.float64)
        let mean = try x.mean(dims: [0])
        let centered = try x - mean
        covariance = try centered.transposed(0, 1).matmul(centered) / Double(n - 1)
        self.mean = mean
        count = n
    }
}

/// The Fréchet distance between two Gaussians fitted to feature sets — the FID formula
/// (Heusel et al. 2017; pytorch-fid's `calculate_frechet_distance`):
///
///     d² = ‖μ₁ − μ₂‖² + tr(Σ₁) + tr(Σ₂) − 2 tr( (Σ₁ Σ₂)^{1/2} )
///
/// `tr((Σ₁Σ₂)^{1/2})` is computed in float64 through symmetric eigendecompositions instead of
/// scipy's general `sqrtm`: with `A = Σ₁^{1/2}` (from `eigh(Σ₁)`, eigenvalues clamped at 0),
/// `Σ₁Σ₂ = A (A Σ₂ A) A⁻¹` is similar to the symmetric positive semi-definite `A Σ₂ A`, so the
/// trace of its square root is `Σ √λᵢ(A Σ₂ A)`. This is exact for positive definite covariances
/// (agrees with pytorch-fid to 1e-6 relative on Tests/EvaluationTests/Fixtures/frechet.json),
/// and stays real and finite for singular ones (fewer vectors than dimensions), where `sqrtm`
/// needs pytorch-fid's `eps` offset.
public enum FrechetDistance {
    /// The distance between the statistics of two feature sets.
    public static func distance(_ a: GaussianStatistics, _ b: GaussianStatistics) throws -> Double {
        guard a.mean.shape == b.mean.shape else {
            throw EvaluationError.invalidInput("feature widths differ: \(a.mean.shape) vs \(b.mean.shape)")
        }
        let meanTerm = try (a.mean - b.mean).square().sum().item()
        let traceA = try trace(a.covariance), traceB = try trace(b.covariance)
        let crossTrace = try traceOfSquareRootOfProduct(a.covariance, b.covariance)
        return meanTerm + traceA + traceB - 2 * crossTrace
    }

    /// The distance between the Gaussians fitted to `[N, D]` and `[M, D]` features.
    public static func distance(_ a: Tensor, _ b: Tensor) throws -> Double {
        try distance(GaussianStatistics(features: a), GaussianStatistics(features: b))
    }

    /// `tr((Σ₁Σ₂)^{1/2})` for symmetric positive semi-definite Σ₁, Σ₂ (see the type's note).
    public static func traceOfSquareRootOfProduct(_ sigma1: Tensor, _ sigma2: Tensor) throws -> Double {
        let s1 = try symmetrized(sigma1.to(.float64)), s2 = try symmetrized(sigma2.to(.float64))
        let (values, vectors) = try s1.eigh()
        let root = try vectors.matmul(vectors.transposed(0, 1) * values.clamped(min: 0).sqrt().unsqueezed(1))
        let inner = try symmetrized(root.matmul(s2).matmul(root))
        return try inner.eigh().values.clamped(min: 0).sqrt().sum().item()
    }

    static func trace(_ m: Tensor) throws -> Double {
        let n = try m.size(0)
        return try (m * Tensor.eye(n, dtype: m.dtype)).sum().item()
    }

    static func symmetrized(_ m: Tensor) throws -> Tensor {
        try (m + m.transposed(0, 1)) * 0.5
    }
}
