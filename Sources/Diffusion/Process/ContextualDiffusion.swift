import Torch

/// The forward process of ContextDiff (paper §3.1, DESIGN §3) with the bias
/// `b_t = k_t · r_φ(x0, c, t)`, `k_t = sqrt(ᾱ_t)(1 − sqrt(ᾱ_t))`, `k_T = 0`, `b_0 = 0`.
///
/// Timesteps are diffusers indices `0..<T` (the paper's `t − 1`); `−1` is the clean level
/// (ᾱ = 1, no bias). Coefficients are computed in Double from the schedule's float32 ᾱ.
/// "Context" arguments are `r_φ` values (shape of x0), or nil for `r_φ ≡ 0`.
public struct ContextualDiffusion: Sendable {
    public let schedule: NoiseSchedule

    public init(schedule: NoiseSchedule) {
        self.schedule = schedule
    }

    public var trainTimesteps: Int { schedule.config.trainTimesteps }

    /// ᾱ of timestep `t` in `-1..<T` (1 at −1).
    public func alphaBar(_ t: Int) -> Double { Double(schedule.alphaBar(t)) }

    /// `k_t` (see ``NoiseSchedule/contextCoefficient(_:)``).
    public func k(_ t: Int) -> Double { schedule.contextCoefficient(t) }

    /// The one-step factor `α_{s→t} = ᾱ_t / ᾱ_s` used by the transition and the posterior; for
    /// `s = t − 1` it is the paper's α_t (= 1 − β_t up to the float32 rounding of the cumprod),
    /// chosen so that transitions compose *exactly* to the marginals.
    public func stepAlpha(from s: Int, to t: Int) -> Double { alphaBar(t) / alphaBar(s) }

    // MARK: Eq. 3

    /// Eq. 3, the contextualized forward marginal `x_t = sqrt(ᾱ_t)·x0 + k_t·r + sqrt(1 − ᾱ_t)·ε`.
    public func marginal(x0: Tensor, timestep t: Int, noise: Tensor, context r: Tensor?) throws -> Tensor {
        try checkTimestep(t, allowClean: true)
        let a = alphaBar(t)
        var x = try x0 * a.squareRoot() + noise * (1 - a).squareRoot()
        if let r, k(t) != 0 { x = try x + r * k(t) }
        return x
    }

    /// Eq. 3 with one timestep per batch element (the first dimension of `x0`).
    public func marginal(x0: Tensor, timesteps: [Int], noise: Tensor, context r: Tensor?) throws -> Tensor {
        for t in timesteps { try checkTimestep(t, allowClean: false) }
        let a = timesteps.map(alphaBar)
        var x =
            try x0 * perSample(a.map { $0.squareRoot() }, like: x0)
            + noise * perSample(a.map { (1 - $0).squareRoot() }, like: x0)
        if let r { x = try x + r * perSample(timesteps.map(k), like: x0) }
        return x
    }

    // MARK: Eq. 4

    /// Eq. 4, the contextualized forward transition from level `s` (default `t − 1`) to `t`:
    /// `x_t = sqrt(α)·x_s + b_t − sqrt(α)·b_s + sqrt(1 − α)·ε` with `α = ᾱ_t/ᾱ_s`.
    /// `contextFrom` is `r_φ(x0, c, s)` (ignored at the clean level), `contextTo` is `r_φ(x0, c, t)`.
    public func transition(
        _ xs: Tensor, from s: Int? = nil, to t: Int, noise: Tensor, contextFrom rs: Tensor?, contextTo rt: Tensor?
    ) throws -> Tensor {
        let s = s ?? t - 1
        try checkTimestep(t, allowClean: false)
        try checkTimestep(s, allowClean: true)
        guard s < t else { throw SamplingError.invalidTransition(from: s, to: t) }
        let alpha = stepAlpha(from: s, to: t)
        var x = try xs * alpha.squareRoot()
        if let rt, k(t) != 0 { x = try x + rt * k(t) }
        if let rs, k(s) != 0 { x = try x - rs * (alpha.squareRoot() * k(s)) }
        return try x + noise * (1 - alpha).squareRoot()
    }

    // MARK: Eq. 5

    /// The scalars of Eq. 5 between `t` and an earlier level `s` (default `t − 1`):
    /// mean = `x0Coefficient·x0 + sampleCoefficient·(x_t − b_t) + b_s`.
    public struct PosteriorCoefficients: Sendable, Equatable {
        /// `sqrt(ᾱ_s)·β/(1 − ᾱ_t)`
        public let x0Coefficient: Double
        /// `sqrt(α)·(1 − ᾱ_s)/(1 − ᾱ_t)`
        public let sampleCoefficient: Double
        /// `(1 − ᾱ_s)·β/(1 − ᾱ_t)`
        public let variance: Double
    }

    public func posteriorCoefficients(timestep t: Int, previous s: Int? = nil) -> PosteriorCoefficients {
        let s = s ?? t - 1
        let at = alphaBar(t)
        let as_ = alphaBar(s)
        let alpha = at / as_
        let beta = 1 - alpha
        return PosteriorCoefficients(
            x0Coefficient: as_.squareRoot() * beta / (1 - at),
            sampleCoefficient: alpha.squareRoot() * (1 - as_) / (1 - at),
            variance: (1 - as_) * beta / (1 - at))
    }

    /// Eq. 5, the posterior `q(x_s | x_t, x0)` of the contextualized process: mean
    /// `sqrt(ᾱ_s)·β/(1 − ᾱ_t)·x0 + sqrt(α)·(1 − ᾱ_s)/(1 − ᾱ_t)·(x_t − b_t) + b_s`, variance
    /// `(1 − ᾱ_s)·β/(1 − ᾱ_t)`; `contextT`/`contextS` are `r_φ(x0, c, t)` and `r_φ(x0, c, s)`.
    public func posterior(
        x0: Tensor, xt: Tensor, timestep t: Int, previous s: Int? = nil, contextT rt: Tensor?, contextS rs: Tensor?
    ) throws -> (mean: Tensor, variance: Double) {
        let s = s ?? t - 1
        try checkTimestep(t, allowClean: false)
        try checkTimestep(s, allowClean: true)
        let c = posteriorCoefficients(timestep: t, previous: s)
        var y = xt
        if let rt, k(t) != 0 { y = try y - rt * k(t) }
        var mean = try x0 * c.x0Coefficient + y * c.sampleCoefficient
        if let rs, k(s) != 0 { mean = try mean + rs * k(s) }
        return (mean, c.variance)
    }

    // MARK: Eq. 8

    /// Uniform training timesteps in `0..<T`, one per batch element, from `generator`.
    public func sampleTimesteps(count: Int, generator: Generator, range: Range<Int>? = nil) throws -> [Int] {
        let r = range ?? 0..<trainTimesteps
        guard r.lowerBound >= 0, r.upperBound <= trainTimesteps, !r.isEmpty else {
            throw SamplingError.invalidTimestepRange(lower: r.lowerBound, upper: r.upperBound, trainTimesteps: trainTimesteps)
        }
        return try Tensor.randint(r.lowerBound, r.upperBound, shape: [count], generator: generator).scalars(as: Int64.self).map {
            Int($0)
        }
    }

    /// Eq. 8, ContextDiff's joint training loss `mean_b λ_{t_b} · mean ||f_θ(x_t, c, t) − target||²`
    /// with `x_t` drawn by Eq. 3 with `r_φ(x0, c, t)` inside, so gradients reach both the denoiser
    /// and the adapter.
    ///
    /// - Parameters:
    ///   - x0: clean samples `[B, ...]`.
    ///   - timesteps: one diffusers timestep per batch element.
    ///   - noise: ε, the shape of `x0`.
    ///   - weighting: λ_t (``LossWeighting``, shared with the trainer).
    ///   - prediction: the target; ContextDiff trains x0 (``PredictionTarget/sample``, Eq. 8), ε and
    ///     v are for baselines. With a context they target the *whole* deviation from √ᾱ·x0 that
    ///     Eq. 3 adds, ε̃ = ε + b_t/√(1 − ᾱ) (v = √ᾱ·ε̃ − √(1 − ᾱ)·x0), which is how every sampler
    ///     reads an ε or v output (x̂0 = (x_t − √(1 − ᾱ)·ε̂)/√ᾱ): a perfect denoiser of any type
    ///     then gives x̂0 = x0 exactly (``perfectOutput(_:x0:xt:timestep:)``). The bias in the
    ///     target is detached, so r_φ learns through x_t alone, as with the x0 target.
    ///   - denoiser: `f_θ(x_t, t)` with the condition bound, given the int64 timesteps `[B]`.
    ///   - context: `r_φ(x0, t)` with the condition bound, given the int64 timesteps `[B]`;
    ///     nil trains the plain baseline.
    /// - Returns: the scalar loss.
    public func trainingLoss(
        x0: Tensor, timesteps: [Int], noise: Tensor, weighting: LossWeighting = .uniform,
        prediction: PredictionTarget = .sample,
        denoiser: (_ xt: Tensor, _ timesteps: Tensor) throws -> Tensor,
        context: ((_ x0: Tensor, _ timesteps: Tensor) throws -> Tensor)?
    ) throws -> Tensor {
        if case .minSNR(let gamma) = weighting, !(gamma.isFinite && gamma > 0) {
            throw SamplingError.invalidSNRGamma(gamma)
        }
        let batch = try x0.size(0)
        guard timesteps.count == batch else {
            throw SamplingError.shapeMismatch("\(timesteps.count) timesteps for a batch of \(batch)")
        }
        guard noise.shape == x0.shape else {
            throw SamplingError.shapeMismatch("noise \(noise.shape) vs x0 \(x0.shape)")
        }
        let tTensor = try Tensor(timesteps.map { Int64($0) })
        var r: Tensor?
        if let context {
            let value = try context(x0, tTensor)
            guard value.shape == x0.shape else {
                throw SamplingError.shapeMismatch("r_phi returned \(value.shape) for x0 of shape \(x0.shape)")
            }
            r = value
        }
        let xt = try marginal(x0: x0, timesteps: timesteps, noise: noise, context: r)
        let output = try denoiser(xt, tTensor)
        guard output.shape == x0.shape else {
            throw SamplingError.shapeMismatch("denoiser returned \(output.shape) for x0 of shape \(x0.shape)")
        }
        let a = timesteps.map(alphaBar)
        var deviation = noise
        if let r, prediction != .sample {
            deviation = try noise + r.detached() * perSample(timesteps.map { k($0) / (1 - alphaBar($0)).squareRoot() }, like: x0)
        }
        let target: Tensor
        switch prediction {
        case .sample: target = x0
        case .epsilon: target = deviation
        case .vPrediction:
            target =
                try deviation * perSample(a.map { $0.squareRoot() }, like: x0)
                - x0 * perSample(a.map { (1 - $0).squareRoot() }, like: x0)
        }
        var perElement = try (output - target).square()
        if x0.rank > 1 { perElement = try perElement.mean(dims: Array(1..<x0.rank)) }
        if weighting == .uniform { return try perElement.mean() }
        let lambda = try Tensor(a.map { weighting.weight(alphaBar: $0) }).to(perElement.dtype)
        return try (perElement * lambda).mean()
    }

    /// The output of a perfect `prediction`-type denoiser for `xt` at timestep `t` whose clean
    /// sample is `x0` (the minimiser of ``trainingLoss(x0:timesteps:noise:weighting:prediction:denoiser:context:)``):
    /// x0 itself, or the deviation ε̃ = (x_t − √ᾱ·x0)/√(1 − ᾱ) (Eq. 3's noise and bias together),
    /// or v = √ᾱ·ε̃ − √(1 − ᾱ)·x0.
    public func perfectOutput(_ prediction: PredictionTarget, x0: Tensor, xt: Tensor, timestep t: Int) throws -> Tensor {
        try checkTimestep(t, allowClean: false)
        let a = alphaBar(t)
        let deviation = try (xt - x0 * a.squareRoot()) / (1 - a).squareRoot()
        switch prediction {
        case .sample: return x0
        case .epsilon: return deviation
        case .vPrediction: return try deviation * a.squareRoot() - x0 * (1 - a).squareRoot()
        }
    }

    // MARK: Helpers

    func checkTimestep(_ t: Int, allowClean: Bool) throws {
        guard t < trainTimesteps, t >= (allowClean ? -1 : 0) else {
            throw SamplingError.timestepOutOfRange(t, trainTimesteps: trainTimesteps)
        }
    }

    /// A `[B, 1, ...]` tensor of per-sample scalars in `like`'s dtype.
    func perSample(_ values: [Double], like x: Tensor) throws -> Tensor {
        let shape = [values.count] + Array(repeating: 1, count: Swift.max(0, x.rank - 1))
        return try Tensor(values, shape: shape).to(x.dtype)
    }
}
