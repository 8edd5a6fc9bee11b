import Torch

/// The two conditions of classifier-free guidance (arXiv:2207.12598): the prompt's and the one
/// the guided output is pushed away from — the "dropped" (null) condition the model was trained
/// with, or a negative prompt.
public struct GuidanceConditions {
    public let conditional: Tensor
    public let unconditional: Tensor

    /// The unconditional branch uses the null condition of condition dropout (training with
    /// ``ClassifierFreeGuidance/dropConditions(_:null:probability:generator:)``). A null condition
    /// with batch size 1 is broadcast to the prompt's batch.
    public static func dropped(conditional: Tensor, null: Tensor) throws -> GuidanceConditions {
        try GuidanceConditions(conditional: conditional, unconditional: null)
    }

    /// The unconditional branch uses a negative prompt's condition (batch 1 or the prompt's batch).
    public static func negativePrompt(conditional: Tensor, negative: Tensor) throws -> GuidanceConditions {
        try GuidanceConditions(conditional: conditional, unconditional: negative)
    }

    /// Checks that both conditions have the same trailing shape and the unconditional batch is 1
    /// or the conditional one (then broadcast).
    public init(conditional: Tensor, unconditional: Tensor) throws {
        let c = conditional.shape
        let u = unconditional.shape
        guard !c.isEmpty, u.count == c.count, Array(u.dropFirst()) == Array(c.dropFirst()), u[0] == c[0] || u[0] == 1
        else {
            throw SamplingError.shapeMismatch("unconditional condition \(u) does not fit conditional condition \(c)")
        }
        self.conditional = conditional
        self.unconditional = u[0] == c[0] ? unconditional : try unconditional.expanded(c)
    }
}

/// Classifier-free guidance `u + w·(c − u)` (diffusers pipelines:
/// `noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)`). For ContextDiff
/// (DESIGN §3) the combination is applied to the x̂0 predictions; dynamic thresholding and the
/// adapter then act on the guided x̂0 inside the sampler.
public struct ClassifierFreeGuidance: Sendable, Equatable {
    /// The guidance weight w ≥ 0: 0 is unconditional, 1 conditional, > 1 guided.
    public let scale: Double

    public init(scale: Double) throws(SamplingError) {
        guard scale.isFinite, scale >= 0 else { throw .invalidGuidanceScale(scale) }
        self.scale = scale
    }

    /// `unconditional + scale·(conditional − unconditional)`.
    public func combine(conditional: Tensor, unconditional: Tensor) throws -> Tensor {
        guard conditional.shape == unconditional.shape else {
            throw SamplingError.shapeMismatch(
                "conditional \(conditional.shape) vs unconditional \(unconditional.shape)")
        }
        return try unconditional + (conditional - unconditional) * scale
    }

    /// The guided output for `sample` with one model call on the doubled batch
    /// `cat([sample, sample])` with conditions `cat([unconditional, conditional])` (diffusers'
    /// order), split back and combined. With w = 1 (w = 0) only the conditional (unconditional)
    /// branch is evaluated, on the original batch.
    public func output(
        sample: Tensor, conditions: GuidanceConditions,
        model: (_ sample: Tensor, _ condition: Tensor) throws -> Tensor
    ) throws -> Tensor {
        try output(
            sample: sample, conditional: conditions.conditional, unconditional: conditions.unconditional,
            concatenate: { u, c in try Tensor.cat([u, c]) }, model: model)
    }

    /// The same for any condition type (e.g. token states with their mask): `concatenate(u, c)`
    /// must stack the unconditional batch before the conditional one, and both must have the
    /// sample's batch size.
    public func output<Condition>(
        sample: Tensor, conditional: Condition, unconditional: Condition,
        concatenate: (_ unconditional: Condition, _ conditional: Condition) throws -> Condition,
        model: (_ sample: Tensor, _ condition: Condition) throws -> Tensor
    ) throws -> Tensor {
        if scale == 1 { return try model(sample, conditional) }
        if scale == 0 { return try model(sample, unconditional) }
        let batch = try sample.size(0)
        let out = try model(Tensor.cat([sample, sample]), concatenate(unconditional, conditional))
        guard try out.size(0) == 2 * batch else {
            throw SamplingError.shapeMismatch("model returned \(out.shape) for a doubled batch of \(2 * batch)")
        }
        return try combine(
            conditional: out.slice(dim: 0, batch, 2 * batch), unconditional: out.slice(dim: 0, 0, batch))
    }

    /// Condition dropout for training a guidable model: each batch element's condition is
    /// replaced by `null` with probability `probability` (e.g. 0.1), drawn from `generator`.
    /// `null` has batch size 1 or the condition's.
    public static func dropConditions(
        _ condition: Tensor, null: Tensor, probability: Double, generator: Generator
    ) throws -> Tensor {
        guard probability >= 0, probability <= 1 else { throw SamplingError.invalidProbability(probability) }
        let pair = try GuidanceConditions(conditional: condition, unconditional: null)
        let shape = condition.shape
        let drop = try Tensor.rand([shape[0]], generator: generator).lt(probability)
            .reshaped([shape[0]] + Array(repeating: 1, count: shape.count - 1))
        return try Tensor.where(drop, pair.unconditional, condition)
    }
}
