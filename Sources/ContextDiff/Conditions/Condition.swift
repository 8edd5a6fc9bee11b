import NN
import Torch

/// The condition every network receives (the U-Net's cross-attention and scale-shift, r_φ, the
/// layout prior): a set of condition tokens `[B, L, D]` with their mask and one pooled vector
/// `[B, D]`. Text, class labels and layouts all encode to this shape (a ``ConditionEncoder``):
/// a caption is its token states, a class label one learned token, a layout one token per box —
/// and mixtures are concatenations along the token axis. r_φ relates whatever the condition is
/// with the image: the paper's cross-modal context.
public struct Condition {
    /// `[B, L, D]` token states.
    public var tokens: Tensor
    /// `[B, L]` bool, `true` for real tokens.
    public var mask: Tensor
    /// `[B, D]` sentence vector.
    public var pooled: Tensor
    /// Projected keys and values of `tokens` per cross-attention layer, reused across calls
    /// (sampling: the condition is the same at every step). Only for a condition that is used
    /// unchanged with fixed weights; conditions derived from this one start without a cache.
    public var attentionCache: AttentionContextCache?

    public init(tokens: Tensor, mask: Tensor, pooled: Tensor) throws {
        let t = tokens.shape, m = mask.shape, p = pooled.shape
        guard t.count == 3, m == [t[0], t[1]], p == [t[0], t[2]] else {
            throw ConditionError.shapesDisagree("condition shapes disagree: tokens \(t), mask \(m), pooled \(p)")
        }
        self.tokens = tokens
        self.mask = mask
        self.pooled = pooled
    }

    /// This condition with a fresh ``attentionCache`` (for a sampling run with fixed weights).
    public func cachingAttention() -> Condition {
        var c = self
        c.attentionCache = AttentionContextCache()
        return c
    }

    public var batchSize: Int { tokens.shape[0] }

    /// Both conditions stacked along the batch (for one batched guidance call). Token lengths
    /// must agree; pad with ``padded(toLength:)`` first if they do not.
    public static func concatenate(_ a: Condition, _ b: Condition) throws -> Condition {
        let length = max(a.tokens.shape[1], b.tokens.shape[1])
        let (pa, pb) = (try a.padded(toLength: length), try b.padded(toLength: length))
        return try Condition(
            tokens: Tensor.cat([pa.tokens, pb.tokens]), mask: Tensor.cat([pa.mask, pb.mask]),
            pooled: Tensor.cat([pa.pooled, pb.pooled]))
    }

    /// Pads tokens with zeros and the mask with `false` up to `length`.
    public func padded(toLength length: Int) throws -> Condition {
        let s = tokens.shape
        guard length > s[1] else { return self }
        let extraTokens = try Tensor.zeros([s[0], length - s[1], s[2]], dtype: tokens.dtype)
        let extraMask = try Tensor.zeros([s[0], length - s[1]], dtype: .bool)
        return try Condition(
            tokens: Tensor.cat([tokens, extraTokens], dim: 1), mask: Tensor.cat([mask.to(.bool), extraMask], dim: 1),
            pooled: pooled)
    }

    /// Rows `indices` of every part.
    public func selecting(_ indices: Tensor) throws -> Condition {
        try Condition(
            tokens: tokens.indexSelect(dim: 0, indices), mask: mask.indexSelect(dim: 0, indices),
            pooled: pooled.indexSelect(dim: 0, indices))
    }

    /// Rows `range` of every part, as views (no copy).
    public func rows(_ range: Range<Int>) throws -> Condition {
        try Condition(
            tokens: tokens.slice(dim: 0, range.lowerBound, range.upperBound),
            mask: mask.slice(dim: 0, range.lowerBound, range.upperBound),
            pooled: pooled.slice(dim: 0, range.lowerBound, range.upperBound))
    }

    /// This condition on `device` (itself, tensors shared, when it is already there).
    public func to(_ device: Device) throws -> Condition {
        guard try tokens.device != device || mask.device != device || pooled.device != device else { return self }
        return try Condition(tokens: tokens.to(device), mask: mask.to(device), pooled: pooled.to(device))
    }

    /// Each row repeated `times` times (row-major: a, a, b, b for 2).
    public func repeated(_ times: Int) throws -> Condition {
        let idx = try Tensor.arange(0, Double(batchSize), dtype: .int64).unsqueezed(1)
            .expanded([batchSize, times]).reshaped([batchSize * times])
        return try selecting(idx)
    }
}
