import Foundation
import NN
import Torch

/// Sinusoidal timestep features `[cos(t ω_i), sin(t ω_i)]` with `ω_i = 10000^(-i/half)`,
/// as diffusers' `get_timestep_embedding(flip_sin_to_cos: true, downscale_freq_shift: 0)`.
///
/// - Parameter timesteps: a `[B]` tensor (any numeric dtype).
/// - Returns: `[B, dimension]` float32.
public func timestepFeatures(_ timesteps: Tensor, dimension: Int) throws -> Tensor {
    guard dimension >= 2, dimension % 2 == 0 else {
        throw TorchError.invalidArgument("timestep embedding width must be even and ≥ 2, got \(dimension)")
    }
    let half = dimension / 2
    let exponent = try Tensor.arange(0, Double(half)) * (-Foundation.log(10000.0) / Double(half))
    let args = try timesteps.to(.float32).unsqueezed(1) * exponent.exp().unsqueezed(0)
    return try Tensor.cat([args.cos(), args.sin()], dim: 1)
}

/// Sinusoidal features followed by `Linear → SiLU → Linear` (diffusers' `TimestepEmbedding`).
public final class TimestepEmbedding: Module {
    public let linear1: Linear
    public let linear2: Linear
    public let featureDim: Int

    public init(featureDim: Int, outputDim: Int) throws {
        linear1 = try Linear(featureDim, outputDim)
        linear2 = try Linear(outputDim, outputDim)
        self.featureDim = featureDim
        super.init()
    }

    override public func key(forProperty name: String) -> String {
        name == "linear1" ? "linear_1" : name == "linear2" ? "linear_2" : name
    }

    public func callAsFunction(_ timesteps: Tensor) throws -> Tensor {
        try linear2(linear1(timestepFeatures(timesteps, dimension: featureDim)).silu())
    }
}

/// The text condition every network receives: per-token states, their mask and a pooled vector.
public struct TextCondition {
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
            throw TorchError.invalidArgument("text condition shapes disagree: tokens \(t), mask \(m), pooled \(p)")
        }
        self.tokens = tokens
        self.mask = mask
        self.pooled = pooled
    }

    /// This condition with a fresh ``attentionCache`` (for a sampling run with fixed weights).
    public func cachingAttention() -> TextCondition {
        var c = self
        c.attentionCache = AttentionContextCache()
        return c
    }

    public var batchSize: Int { tokens.shape[0] }

    /// Both conditions stacked along the batch (for one batched guidance call). Token lengths
    /// must agree; pad with ``padded(toLength:)`` first if they do not.
    public static func concatenate(_ a: TextCondition, _ b: TextCondition) throws -> TextCondition {
        let length = max(a.tokens.shape[1], b.tokens.shape[1])
        let (pa, pb) = (try a.padded(toLength: length), try b.padded(toLength: length))
        return try TextCondition(
            tokens: Tensor.cat([pa.tokens, pb.tokens]), mask: Tensor.cat([pa.mask, pb.mask]),
            pooled: Tensor.cat([pa.pooled, pb.pooled]))
    }

    /// Pads tokens with zeros and the mask with `false` up to `length`.
    public func padded(toLength length: Int) throws -> TextCondition {
        let s = tokens.shape
        guard length > s[1] else { return self }
        let extraTokens = try Tensor.zeros([s[0], length - s[1], s[2]], dtype: tokens.dtype)
        let extraMask = try Tensor.zeros([s[0], length - s[1]], dtype: .bool)
        return try TextCondition(
            tokens: Tensor.cat([tokens, extraTokens], dim: 1), mask: Tensor.cat([mask.to(.bool), extraMask], dim: 1),
            pooled: pooled)
    }

    /// Rows `indices` of every part.
    public func selecting(_ indices: Tensor) throws -> TextCondition {
        try TextCondition(
            tokens: tokens.indexSelect(dim: 0, indices), mask: mask.indexSelect(dim: 0, indices),
            pooled: pooled.indexSelect(dim: 0, indices))
    }

    /// Each row repeated `times` times (row-major: a, a, b, b for 2).
    public func repeated(_ times: Int) throws -> TextCondition {
        let idx = try Tensor.arange(0, Double(batchSize), dtype: .int64).unsqueezed(1)
            .expanded([batchSize, times]).reshaped([batchSize * times])
        return try selecting(idx)
    }
}
