import NN
import Torch

/// Shape of a ``TextRefiner`` (``UNetConfig/textRefiner``, saved as `unet.text_refiner`).
public struct TextRefinerConfig: Codable, Sendable, Equatable {
    public var layers = 2
    public var width = 128
    public var heads = 4
    /// Hidden width of each MLP, as a multiple of `width`.
    public var mlpRatio = 2
    /// Most text tokens (the number of learned positions).
    public var maxTokens = 32

    public init(layers: Int = 2, width: Int = 128, heads: Int = 4, mlpRatio: Int = 2, maxTokens: Int = 32) {
        self.layers = layers
        self.width = width
        self.heads = heads
        self.mlpRatio = mlpRatio
        self.maxTokens = maxTokens
    }

    enum CodingKeys: String, CodingKey {
        case layers, width, heads, mlpRatio = "mlp_ratio", maxTokens = "max_tokens"
    }

    public func validate() throws {
        func fail(_ m: String) -> Error { ModuleError.invalidConfiguration("UNet config: text_refiner: \(m)") }
        try ConfigLimits.check(["width": width, "max_tokens": maxTokens], in: 1...ConfigLimits.size, fail)
        try ConfigLimits.check(["layers": layers, "mlp_ratio": mlpRatio], in: 1...ConfigLimits.count, fail)
        try ConfigLimits.check(["heads": heads], in: 1...ConfigLimits.heads, fail)
        guard layers > 0, width > 0, heads > 0, mlpRatio > 0, maxTokens > 0 else { throw fail("sizes must be positive") }
        guard width % heads == 0 else { throw fail("width \(width) not divisible by \(heads) heads") }
    }
}

/// A small transformer trained with the denoiser over the frozen text encoder's token states:
/// the states are projected to `width`, given a learned position table, passed through
/// pre-LayerNorm encoder layers with the padding mask, and projected back as a residual onto
/// the tokens (and, mean-pooled, onto the pooled vector). Both output projections start at
/// zero, so a new refiner is the identity and a model fine-tuned with one starts out computing
/// what it did before.
///
/// Why: cross-attention keys are a linear function of each token's state, and in "a red circle
/// to the right of a blue square" which half the red object belongs to depends jointly on the
/// token's role (first or second object) and on the relation word — an interaction a frozen
/// sentence encoder's states need not expose linearly. A trainable layer that mixes the tokens
/// can compute it.
public final class TextRefiner: Module {
    public let config: TextRefinerConfig
    @CheckpointKey("proj_in") public private(set) var projIn: Linear
    @CheckpointKey("pos_embed") public private(set) var posEmbed: Tensor
    public let layers: [TransformerEncoderLayer]
    public let norm: LayerNorm
    @CheckpointKey("tokens_out") public private(set) var tokensOut: Linear
    @CheckpointKey("pooled_out") public private(set) var pooledOut: Linear

    public init(_ config: TextRefinerConfig, contextDim: Int, pooledDim: Int) throws {
        try config.validate()
        self.config = config
        _projIn.wrappedValue = try Linear(contextDim, config.width)
        _posEmbed.wrappedValue = try Tensor.randn([1, config.maxTokens, config.width]) * 0.02
        layers = try (0..<config.layers).map { _ in
            try TransformerEncoderLayer(width: config.width, heads: config.heads, mlpRatio: config.mlpRatio)
        }
        norm = try LayerNorm(config.width)
        _tokensOut.wrappedValue = try Linear(config.width, contextDim)
        _pooledOut.wrappedValue = try Linear(config.width, pooledDim)
        super.init()
        try Torch.withNoGrad {
            for p in [tokensOut.weight, tokensOut.bias, pooledOut.weight, pooledOut.bias].compactMap({ $0 }) { try p.zero() }
        }
    }

    /// The refined condition; an attention cache on `condition` carries over (with fixed weights
    /// the refined tokens are the same at every sampling step).
    public func callAsFunction(_ condition: Condition) throws -> Condition {
        let mask = try condition.mask.to(.bool)
        let h = try norm(encodeTokens(condition, projIn: projIn, positions: posEmbed, layers: layers, owner: "text refiner"))
        var refined = try Condition(
            tokens: condition.tokens + tokensOut(h),
            mask: condition.mask,
            pooled: condition.pooled + pooledOut(TextPooling.meanOverTokens(h, mask: mask)))
        refined.attentionCache = condition.attentionCache
        return refined
    }
}

/// The shared trunk of ``TextRefiner`` and ``LayoutPrior``: `condition`'s token states projected
/// by `projIn`, plus the first positions of the learned table `positions` `[1, maxTokens, width]`,
/// through `layers` with the padding mask. Too many tokens is an error naming `owner`.
func encodeTokens(
    _ condition: Condition, projIn: Linear, positions: Tensor, layers: [TransformerEncoderLayer], owner: String
) throws -> Tensor {
    let length = condition.tokens.shape[1], available = positions.shape[1]
    guard length <= available else {
        throw ModuleError.invalidInput("\(owner): \(length) tokens exceed its \(available) positions")
    }
    let mask = try condition.mask.to(.bool)
    var h = try projIn(condition.tokens) + positions.slice(dim: 1, 0, length)
    for layer in layers { h = try layer(h, keyMask: mask) }
    return h
}
