import Foundation
import NN
import Torch

/// The fields of a Hugging Face BERT `config.json` that the encoder uses.
public struct BertConfig: Codable, Sendable, Equatable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var intermediateSize: Int
    public var hiddenAct: String
    public var layerNormEps: Double
    public var maxPositionEmbeddings: Int
    public var typeVocabSize: Int
    public var positionEmbeddingType: String?

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case intermediateSize = "intermediate_size"
        case hiddenAct = "hidden_act"
        case layerNormEps = "layer_norm_eps"
        case maxPositionEmbeddings = "max_position_embeddings"
        case typeVocabSize = "type_vocab_size"
        case positionEmbeddingType = "position_embedding_type"
    }

    public init(
        vocabSize: Int, hiddenSize: Int, numHiddenLayers: Int, numAttentionHeads: Int, intermediateSize: Int,
        hiddenAct: String = "gelu", layerNormEps: Double = 1e-12, maxPositionEmbeddings: Int = 512,
        typeVocabSize: Int = 2, positionEmbeddingType: String? = "absolute"
    ) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.intermediateSize = intermediateSize
        self.hiddenAct = hiddenAct
        self.layerNormEps = layerNormEps
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.typeVocabSize = typeVocabSize
        self.positionEmbeddingType = positionEmbeddingType
    }

    /// all-MiniLM-L6-v2's configuration.
    public static let miniLML6 = BertConfig(
        vocabSize: 30522, hiddenSize: 384, numHiddenLayers: 6, numAttentionHeads: 12, intermediateSize: 1536)

    /// Reads `config.json` and checks that it describes a model this code implements.
    public init(contentsOf url: URL) throws {
        do {
            self = try JSONDecoder().decode(BertConfig.self, from: Data(contentsOf: url))
        } catch {
            throw TextEncoderError.invalidConfiguration(path: url.path, reason: "\(error)")
        }
        try validate(source: url.path)
    }

    func validate(source: String) throws {
        func fail(_ reason: String) -> TextEncoderError { .invalidConfiguration(path: source, reason: reason) }
        guard hiddenAct == "gelu" else { throw fail("hidden_act '\(hiddenAct)' is not implemented (only 'gelu')") }
        guard positionEmbeddingType == nil || positionEmbeddingType == "absolute" else {
            throw fail("position_embedding_type '\(positionEmbeddingType!)' is not implemented (only 'absolute')")
        }
        guard numAttentionHeads > 0, hiddenSize % numAttentionHeads == 0 else {
            throw fail("hidden_size \(hiddenSize) is not divisible into \(numAttentionHeads) heads")
        }
        guard [vocabSize, hiddenSize, numHiddenLayers, intermediateSize, maxPositionEmbeddings, typeVocabSize]
            .allSatisfy({ $0 > 0 }) else { throw fail("non-positive size") }
    }
}

// MARK: - Modules, named like Hugging Face's `modeling_bert.py` so checkpoint keys match

/// `BertEmbeddings`: word + token-type + absolute position embeddings, then LayerNorm.
public final class BertEmbeddings: Module {
    @CheckpointKey("word_embeddings") public private(set) var wordEmbeddings: Embedding
    @CheckpointKey("position_embeddings") public private(set) var positionEmbeddings: Embedding
    @CheckpointKey("token_type_embeddings") public private(set) var tokenTypeEmbeddings: Embedding
    @CheckpointKey("LayerNorm") public private(set) var layerNorm: LayerNorm

    init(_ c: BertConfig) throws {
        _wordEmbeddings.wrappedValue = try Embedding(c.vocabSize, c.hiddenSize)
        _positionEmbeddings.wrappedValue = try Embedding(c.maxPositionEmbeddings, c.hiddenSize)
        _tokenTypeEmbeddings.wrappedValue = try Embedding(c.typeVocabSize, c.hiddenSize)
        _layerNorm.wrappedValue = try LayerNorm(c.hiddenSize, eps: c.layerNormEps)
        super.init()
    }

    /// int64 ids `[B, L]` → `[B, L, D]`; token type 0 everywhere, positions `0..<L`.
    public func callAsFunction(_ ids: Tensor) throws -> Tensor {
        let l = try ids.size(1)
        let maxPositions = try positionEmbeddings.weight.size(0)
        guard l <= maxPositions else {
            throw ModuleError.invalidInput("sequence of \(l) tokens exceeds the \(maxPositions) position embeddings")
        }
        let positions = try Tensor.arange(0, Double(l), dtype: .int64)
        let tokenType = try tokenTypeEmbeddings.weight.select(dim: 0, 0)  // [D]
        // HF: (inputs_embeds + token_type_embeddings) + position_embeddings, then LayerNorm.
        let x = try (wordEmbeddings(ids) + tokenType) + positionEmbeddings(positions)
        return try layerNorm(x)
    }
}

/// `BertSelfAttention`: multi-head scaled dot-product attention with an additive mask.
public final class BertSelfAttention: Module {
    public let query: Linear
    @CheckpointKey("key") public private(set) var keyProjection: Linear
    public let value: Linear
    public let heads: Int

    init(_ c: BertConfig) throws {
        query = try Linear(c.hiddenSize, c.hiddenSize)
        _keyProjection.wrappedValue = try Linear(c.hiddenSize, c.hiddenSize)
        value = try Linear(c.hiddenSize, c.hiddenSize)
        heads = c.numAttentionHeads
        super.init()
    }

    /// `[B, L, D]` → `[B, H, L, D/H]`
    private func splitHeads(_ x: Tensor) throws -> Tensor {
        let s = x.shape
        return try x.reshaped([s[0], s[1], heads, s[2] / heads]).permuted([0, 2, 1, 3])
    }

    /// `attentionBias` is `[B, 1, 1, L]`, 0 for real keys and float32's lowest value for padding.
    public func callAsFunction(_ x: Tensor, attentionBias: Tensor) throws -> Tensor {
        let s = x.shape
        let q = try splitHeads(query(x)), k = try splitHeads(keyProjection(x)), v = try splitHeads(value(x))
        let scores = try q.matmul(k.transposed(-1, -2)) / Double(s[2] / heads).squareRoot() + attentionBias
        let context = try scores.softmax(dim: -1).matmul(v)  // [B, H, L, D/H]
        return try context.permuted([0, 2, 1, 3]).reshaped(s)
    }
}

/// `BertSelfOutput` / `BertOutput`: dense, residual, LayerNorm.
public final class BertResidualOutput: Module {
    public let dense: Linear
    @CheckpointKey("LayerNorm") public private(set) var layerNorm: LayerNorm

    init(_ inputs: Int, _ c: BertConfig) throws {
        dense = try Linear(inputs, c.hiddenSize)
        _layerNorm.wrappedValue = try LayerNorm(c.hiddenSize, eps: c.layerNormEps)
        super.init()
    }

    public func callAsFunction(_ x: Tensor, residual: Tensor) throws -> Tensor {
        try layerNorm(dense(x) + residual)
    }
}

/// `BertAttention`: self-attention (key `self`) and its output block.
public final class BertAttention: Module {
    @CheckpointKey("self") public private(set) var selfAttention: BertSelfAttention
    public let output: BertResidualOutput

    init(_ c: BertConfig) throws {
        _selfAttention.wrappedValue = try BertSelfAttention(c)
        output = try BertResidualOutput(c.hiddenSize, c)
        super.init()
    }

    public func callAsFunction(_ x: Tensor, attentionBias: Tensor) throws -> Tensor {
        try output(selfAttention(x, attentionBias: attentionBias), residual: x)
    }
}

/// `BertIntermediate`: dense + GELU (erf).
public final class BertIntermediate: Module, UnaryLayer {
    public let dense: Linear

    init(_ c: BertConfig) throws {
        dense = try Linear(c.hiddenSize, c.intermediateSize)
        super.init()
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor { try dense(x).gelu() }
}

/// `BertLayer`: attention, intermediate, output.
public final class BertLayer: Module {
    public let attention: BertAttention
    public let intermediate: BertIntermediate
    public let output: BertResidualOutput

    init(_ c: BertConfig) throws {
        attention = try BertAttention(c)
        intermediate = try BertIntermediate(c)
        output = try BertResidualOutput(c.intermediateSize, c)
        super.init()
    }

    public func callAsFunction(_ x: Tensor, attentionBias: Tensor) throws -> Tensor {
        let a = try attention(x, attentionBias: attentionBias)
        return try output(intermediate(a), residual: a)
    }
}

/// `BertEncoder`: the stack of layers (keys `encoder.layer.N...`).
public final class BertEncoder: Module {
    @CheckpointKey("layer") public private(set) var layers: [BertLayer]

    init(_ c: BertConfig) throws {
        _layers.wrappedValue = try (0..<c.numHiddenLayers).map { _ in try BertLayer(c) }
        super.init()
    }

}

/// Hugging Face's `BertModel` without its pooler (which sentence-transformers never uses):
/// keys `embeddings.*` and `encoder.layer.N.*`, as in all-MiniLM-L6-v2's `model.safetensors`.
public final class BertModel: Module {
    public let embeddings: BertEmbeddings
    public let encoder: BertEncoder
    public let config: BertConfig

    public init(_ config: BertConfig) throws {
        try config.validate(source: "<BertConfig>")
        embeddings = try BertEmbeddings(config)
        encoder = try BertEncoder(config)
        self.config = config
        super.init()
    }

    /// The last hidden states `[B, L, D]` for int64 ids `[B, L]` and a `[B, L]` mask
    /// (bool or 0/1; `true`/1 = real token). Masked keys get float32's lowest value added to
    /// their attention scores, exactly as `get_extended_attention_mask` in transformers 4.40.
    public func callAsFunction(_ ids: Tensor, mask: Tensor) throws -> Tensor {
        let s = ids.shape
        guard s.count == 2, mask.shape == s else {
            throw ModuleError.invalidInput("BERT needs ids [B, L] and a mask of the same shape, got \(s) and \(mask.shape)")
        }
        let bias = try ((1.0 - mask.to(.float32)) * Double(-Float.greatestFiniteMagnitude)).reshaped([s[0], 1, 1, s[1]])
        var h = try embeddings(ids)
        for layer in encoder.layers { h = try layer(h, attentionBias: bias) }
        return h
    }
}
