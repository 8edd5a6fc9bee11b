import Foundation
import Torch

/// The output of a ``TextEncoder`` for a batch of `B` texts padded to `L` tokens.
public struct TextEncoding: Sendable {
    /// Per-token states `[B, L, D]`, float32. Padding positions are exactly zero, so the
    /// same caption gives the same values whatever it is batched with (up to float rounding).
    public let tokenStates: Tensor
    /// `[B, L]` bool, `true` for real tokens (pass it as the key mask of cross-attention).
    public let attentionMask: Tensor
    /// One vector per text `[B, D]`, float32 (for MiniLM: mean over real tokens, L2-normalised).
    public let pooled: Tensor
    /// The token ids of each text, unpadded.
    public let tokenIDs: [[Int]]

    public init(tokenStates: Tensor, attentionMask: Tensor, pooled: Tensor, tokenIDs: [[Int]]) {
        self.tokenStates = tokenStates
        self.attentionMask = attentionMask
        self.pooled = pooled
        self.tokenIDs = tokenIDs
    }

    /// The number of texts `B`.
    public var count: Int { tokenIDs.count }
}

/// Encodes captions into token states and a pooled sentence vector.
///
/// Implementations: ``MiniLMTextEncoder`` (pretrained, frozen), ``LearnedTextEncoder`` (small,
/// trained with the model), and ``TextEmbeddingCache`` (memoises another encoder per caption).
public protocol TextEncoder: AnyObject {
    /// The width `D` of token states and pooled vectors.
    var width: Int { get }
    /// The tokenizer that turns texts into ids.
    var tokenizer: any TextTokenizer { get }
    /// Encodes `texts` (at least one) as one padded batch.
    func encode(_ texts: [String]) throws -> TextEncoding
}

extension TextEncoder {
    /// The most tokens per text, special tokens included.
    public var maxLength: Int { tokenizer.maxLength }
}

/// Pooling shared by the encoders (and the ContextDiff text refiner).
public enum TextPooling {
    /// `sum(states * mask) / max(sum(mask), 1e-9)` over the token axis (sentence-transformers'
    /// `Pooling(pooling_mode_mean_tokens=True)`), `[B, L, D]` → `[B, D]`.
    public static func meanOverTokens(_ states: Tensor, mask: Tensor) throws -> Tensor {
        let m = try mask.to(states.dtype).unsqueezed(-1)  // [B, L, 1]
        let summed = try (states * m).sum(dims: [1])
        let counts = try m.sum(dims: [1]).clamped(min: 1e-9)
        return try summed / counts
    }

    /// `x / max(||x||₂, 1e-12)` along the last axis (PyTorch's `F.normalize`, as
    /// sentence-transformers' `Normalize` module).
    public static func l2Normalized(_ x: Tensor) throws -> Tensor {
        try x / x.norm(dims: [-1], keepDim: true).clamped(min: 1e-12)
    }

    /// Zeroes the padding positions of `[B, L, D]` states.
    public static func zeroingPadding(_ states: Tensor, mask: Tensor) throws -> Tensor {
        try states * mask.to(states.dtype).unsqueezed(-1)
    }
}
