import Torch

/// ContextDiff's context-aware adapter `r_φ(x0, c, t)` (paper §3.1), with the condition `c`
/// bound inside the conforming type. The samplers scale it into the bias
/// `b_t = k_t · r_φ(x̂0, c, t)` (see ``NoiseSchedule/contextCoefficient(_:)``).
///
/// Timesteps are diffusers indices in `0..<T` (the paper's `t − 1`). The samplers never ask for
/// a level whose `k` is 0 (the clean level and index `T − 1`).
/// The result must have `x0`'s shape and dtype.
public protocol ContextBias {
    /// `r_φ(x0, c, t)`.
    func context(x0: Tensor, timestep: Int) throws -> Tensor

    /// `r_φ` at two timesteps for the same `x0` (a sampler step needs the current and the target
    /// level). The default calls ``context(x0:timestep:)`` twice; an adapter may batch them.
    func contexts(x0: Tensor, timesteps: (Int, Int)) throws -> (Tensor, Tensor)
}

extension ContextBias {
    public func contexts(x0: Tensor, timesteps: (Int, Int)) throws -> (Tensor, Tensor) {
        (try context(x0: x0, timestep: timesteps.0), try context(x0: x0, timestep: timesteps.1))
    }
}

/// `r_φ ≡ 0`: the plain diffusion baseline. Every sampler given `ZeroContext` returns bit for
/// bit what it returns without a context.
public struct ZeroContext: ContextBias, Sendable {
    public init() {}
    public func context(x0: Tensor, timestep: Int) throws -> Tensor { try x0.zerosLike() }
}

/// A ``ContextBias`` from a closure (tests, quick experiments).
public struct ClosureContext: ContextBias {
    let body: (Tensor, Int) throws -> Tensor
    public init(_ body: @escaping (_ x0: Tensor, _ timestep: Int) throws -> Tensor) { self.body = body }
    public func context(x0: Tensor, timestep: Int) throws -> Tensor { try body(x0, timestep) }
}

// MARK: - Bias arithmetic shared by the samplers

/// One noise level a sampler step moves from or to.
struct NoiseLevel {
    /// The diffusers timestep (may be negative: "before the first training step").
    let timestep: Int
    /// ᾱ of the level (float32, as diffusers indexes `alphas_cumprod` or uses 1 / ᾱ[0]).
    let alphaBar: Float
    /// The timestep passed to `r_φ`, or nil when the bias is identically 0 (`k = 0`).
    let biasTimestep: Int?
    /// `k` of the level (0 when `biasTimestep` is nil).
    let k: Double

    /// Level of an in-range timestep: `k_t` with `k_{T−1} = 0` (the paper's `k_T = 0`).
    init(timestep t: Int, schedule: NoiseSchedule) {
        timestep = t
        alphaBar = schedule.alphasCumprod[t]
        let k = schedule.contextCoefficient(t)
        self.k = k
        biasTimestep = k == 0 ? nil : t
    }

    /// The level "before" timestep 0 (diffusers' `prev_t < 0`): the clean image (ᾱ = 1, `b_0 = 0`)
    /// when `alphaToOne`, else the level of timestep 0 (diffusers' `set_alpha_to_one=False`
    /// reuses ᾱ[0]; the bias is then timestep 0's).
    static func beforeStart(timestep t: Int, alphaToOne: Bool, schedule: NoiseSchedule) -> NoiseLevel {
        if alphaToOne { return NoiseLevel(timestep: t, alphaBar: 1, biasTimestep: nil, k: 0) }
        let first = NoiseLevel(timestep: 0, schedule: schedule)
        return NoiseLevel(timestep: t, alphaBar: first.alphaBar, biasTimestep: first.biasTimestep, k: first.k)
    }

    init(timestep: Int, alphaBar: Float, biasTimestep: Int?, k: Double) {
        self.timestep = timestep
        self.alphaBar = alphaBar
        self.biasTimestep = biasTimestep
        self.k = k
    }
}

/// The biases of a step's two levels, `b = k · r_φ(x̂0, c, ·)`; nil where the bias is identically
/// zero (no context, or `k = 0`), in which case no arithmetic is done at all.
struct StepBiases {
    var current: Tensor?
    var target: Tensor?

    static let none = StepBiases(current: nil, target: nil)

    init(current: Tensor?, target: Tensor?) {
        self.current = current
        self.target = target
    }

    init(context: (any ContextBias)?, x0: Tensor, current: NoiseLevel, target: NoiseLevel) throws {
        guard let context else {
            self = .none
            return
        }
        func scaled(_ r: Tensor, _ k: Double) throws -> Tensor {
            guard r.shape == x0.shape, r.dtype == x0.dtype else {
                throw SamplingError.shapeMismatch(
                    "r_phi returned \(r.shape) \(r.dtype) for x0 of shape \(x0.shape) \(x0.dtype)")
            }
            // b = 0 − r·(−k): exactly k·r for r ≠ 0, and +0 for r = ±0, so that a zero context
            // (even one returning −0) leaves every sample bit for bit unchanged.
            return try 0 - r * (-k)
        }
        switch (current.biasTimestep, target.biasTimestep) {
        case (let a?, let b?):
            let (ra, rb) = try context.contexts(x0: x0, timesteps: (a, b))
            self.init(current: try scaled(ra, current.k), target: try scaled(rb, target.k))
        case (let a?, nil):
            self.init(current: try scaled(context.context(x0: x0, timestep: a), current.k), target: nil)
        case (nil, let b?):
            self.init(current: nil, target: try scaled(context.context(x0: x0, timestep: b), target.k))
        case (nil, nil):
            self = .none
        }
    }
}

extension Tensor {
    /// `self − b` (identity when `b` is nil; bitwise identity when `b` is +0, since x − (+0) = x).
    func subtractingBias(_ b: Tensor?) throws -> Tensor {
        guard let b else { return self }
        return try self - b
    }

    /// `self + b`, computed as `self − (0 − b)`: bitwise equal to `self + b` for every b ≠ 0 and
    /// exactly `self` when `b` is ±0 (whereas `(−0) + (+0)` would turn a −0 into +0).
    func addingBias(_ b: Tensor?) throws -> Tensor {
        guard let b else { return self }
        return try self - (0 - b)
    }
}
