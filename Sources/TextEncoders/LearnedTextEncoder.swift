import Foundation
import NN
import Torch

/// The shape of a ``LearnedTextEncoder``; saved next to its weights.
public struct LearnedTextEncoderConfig: Codable, Sendable, Equatable {
    /// Size of the token-embedding table (the tokenizer's vocabulary).
    public var vocabularySize: Int
    /// Most tokens per text (the number of learned positions).
    public var maxLength: Int
    public var width: Int
    public var layers: Int
    public var heads: Int
    /// Hidden width of each MLP, as a multiple of `width`.
    public var mlpRatio: Int
    /// Whether the pooled vector is L2-normalised.
    public var normalizesPooled: Bool

    public init(vocabularySize: Int, maxLength: Int, width: Int = 64, layers: Int = 2, heads: Int = 4,
                mlpRatio: Int = 4, normalizesPooled: Bool = false) {
        self.vocabularySize = vocabularySize
        self.maxLength = maxLength
        self.width = width
        self.layers = layers
        self.heads = heads
        self.mlpRatio = mlpRatio
        self.normalizesPooled = normalizesPooled
    }

    enum CodingKeys: String, CodingKey {
        case vocabularySize = "vocabulary_size"
        case maxLength = "max_length"
        case width, layers, heads
        case mlpRatio = "mlp_ratio"
        case normalizesPooled = "normalizes_pooled"
    }
}

/// A pre-LayerNorm transformer encoder block: `x + attn(LN(x))`, then `x + MLP(LN(x))` (GELU).
public final class TransformerEncoderLayer: Module {
    public let norm1: LayerNorm
    public let attention: MultiHeadAttention
    public let norm2: LayerNorm
    public let fc1: Linear
    public let fc2: Linear

    public init(width: Int, heads: Int, mlpRatio: Int = 4) throws {
        norm1 = try LayerNorm(width)
        attention = try MultiHeadAttention(queryDim: width, heads: heads, bias: true)
        norm2 = try LayerNorm(width)
        fc1 = try Linear(width, width * mlpRatio)
        fc2 = try Linear(width * mlpRatio, width)
        super.init()
    }

    /// `x` is `[B, L, D]`; `keyMask` `[B, L]` bool (`true` = real token).
    public func callAsFunction(_ x: Tensor, keyMask: Tensor) throws -> Tensor {
        let a = try x + attention(norm1(x), keyMask: keyMask)
        return try a + fc2(fc1(norm2(a)).gelu())
    }
}

/// A small text encoder trained together with the model: token + learned position embeddings,
/// a few ``TransformerEncoderLayer``s with the padding mask, a final LayerNorm; the pooled
/// vector is the mean over real tokens (optionally L2-normalised). Works over any
/// ``TextTokenizer`` — a ``WordLevelTokenizer`` fitted on the captions, or MiniLM's WordPiece.
///
/// Unlike ``MiniLMTextEncoder`` it records gradients (call it inside the training step), so do
/// not wrap it in a ``TextEmbeddingCache`` while it is being trained.
public final class LearnedTextEncoder: Module, TextEncoder {
    @CheckpointKey("token_embedding") public private(set) var tokenEmbedding: Embedding
    @CheckpointKey("position_embedding") public private(set) var positionEmbedding: Embedding
    public let layers: [TransformerEncoderLayer]
    @CheckpointKey("final_norm") public private(set) var finalNorm: LayerNorm
    public let config: LearnedTextEncoderConfig
    public let tokenizer: any TextTokenizer

    /// Embeddings are drawn from N(0, 0.02²) (BERT's `initializer_range`), linear layers as
    /// PyTorch's defaults, drawn from the scoped generator (`Torch.withSeed`) or libtorch's global one.
    public init(tokenizer: any TextTokenizer, width: Int = 64, layers: Int = 2, heads: Int = 4, mlpRatio: Int = 4,
                normalizesPooled: Bool = false) throws {
        let config = LearnedTextEncoderConfig(
            vocabularySize: tokenizer.vocabularySize, maxLength: tokenizer.maxLength, width: width, layers: layers,
            heads: heads, mlpRatio: mlpRatio, normalizesPooled: normalizesPooled)
        guard width > 0, layers >= 0, heads > 0, width % heads == 0, mlpRatio > 0 else {
            throw TextEncoderError.invalidConfiguration(path: "<LearnedTextEncoder>", reason: "invalid shape \(config)")
        }
        _tokenEmbedding.wrappedValue = try Embedding(config.vocabularySize, width)
        _positionEmbedding.wrappedValue = try Embedding(config.maxLength, width)
        self.layers = try (0..<layers).map { _ in try TransformerEncoderLayer(width: width, heads: heads, mlpRatio: mlpRatio) }
        _finalNorm.wrappedValue = try LayerNorm(width)
        self.config = config
        self.tokenizer = tokenizer
        super.init()
        try Torch.withNoGrad {
            try tokenEmbedding.weight.mulInPlace(0.02)
            try positionEmbedding.weight.mulInPlace(0.02)
        }
    }

    public var width: Int { config.width }

    /// Token states `[B, L, D]` (padding zeroed) for a tokenized batch.
    public func callAsFunction(_ batch: TokenizedBatch) throws -> Tensor {
        guard batch.length <= config.maxLength else {
            throw ModuleError.invalidInput("\(batch.length) tokens exceed the encoder's \(config.maxLength) positions")
        }
        let mask = try batch.attentionMask()
        let positions = try Tensor.arange(0, Double(batch.length), dtype: .int64)
        var h = try tokenEmbedding(batch.inputIDs()) + positionEmbedding(positions)
        for layer in layers { h = try layer(h, keyMask: mask) }
        return try TextPooling.zeroingPadding(finalNorm(h), mask: mask)
    }

    public func encode(_ texts: [String]) throws -> TextEncoding {
        guard !texts.isEmpty else { throw TextEncoderError.emptyBatch }
        let batch = tokenizer.encodeBatch(texts)
        let mask = try batch.attentionMask()
        let states = try self(batch)
        var pooled = try TextPooling.meanOverTokens(states, mask: mask)
        if config.normalizesPooled { pooled = try TextPooling.l2Normalized(pooled) }
        return TextEncoding(tokenStates: states, attentionMask: mask, pooled: pooled, tokenIDs: batch.ids)
    }
}
