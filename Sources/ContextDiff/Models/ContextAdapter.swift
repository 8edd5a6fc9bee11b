import NN
import Torch

/// Configuration of ``ContextAdapter`` (r_φ), saved as `config.json` next to the weights.
public struct ContextAdapterConfig: Codable, Sendable, Equatable {
    public var inChannels = 3
    public var sampleSize = 32
    /// Side of the square patches the image encoder cuts x0 into (tokens = (size/patch)²).
    public var patchSize = 4
    public var width = 128
    public var depth = 2
    /// Heads of the cross-attention from image tokens to text tokens (the paper uses 8).
    public var heads = 8
    public var contextDim = 384
    public var mlpRatio = 4
    /// The heads of the causal temporal attention of a video adapter (``ContextAdapter/inflate(heads:)``);
    /// nil (absent) is a 2-D adapter. Saved so that an inflated adapter loads as it was saved.
    public var temporalHeads: Int?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", sampleSize = "sample_size", patchSize = "patch_size", width, depth, heads
        case contextDim = "context_dim", mlpRatio = "mlp_ratio", temporalHeads = "temporal_heads"
    }

    public func validate() throws {
        func fail(_ m: String) -> Error { ModuleError.invalidConfiguration("adapter config: \(m)") }
        try ConfigLimits.check([
            "in_channels": inChannels, "sample_size": sampleSize, "patch_size": patchSize, "width": width, "context_dim": contextDim,
        ], in: 1...ConfigLimits.size, fail)
        try ConfigLimits.check(["depth": depth], in: 0...ConfigLimits.count, fail)
        try ConfigLimits.check(["mlp_ratio": mlpRatio], in: 1...ConfigLimits.count, fail)
        try ConfigLimits.check(["heads": heads], in: 1...ConfigLimits.heads, fail)
        if let temporalHeads { try ConfigLimits.check(["temporal_heads": temporalHeads], in: 1...ConfigLimits.heads, fail) }
        guard inChannels > 0, width > 0, depth >= 0, heads > 0, contextDim > 0, mlpRatio > 0 else {
            throw fail("sizes must be positive")
        }
        guard patchSize > 0, sampleSize > 0, sampleSize % patchSize == 0 else {
            throw fail("sample_size \(sampleSize) must be a multiple of patch_size \(patchSize)")
        }
        guard width % heads == 0 else { throw fail("width \(width) not divisible by \(heads) heads") }
    }

    public var tokenGrid: Int { sampleSize / patchSize }
}

/// One adapter block: [LN → self-attention] → [LN → cross-attention to text] → [LN → MLP], residual each.
public final class ContextBlock: Module {
    public let norm1: LayerNorm
    @CheckpointKey("attn1") public private(set) var selfAttention: MultiHeadAttention
    public let norm2: LayerNorm
    @CheckpointKey("attn2") public private(set) var crossAttention: MultiHeadAttention
    public let norm3: LayerNorm
    public let mlp1: Linear
    public let mlp2: Linear
    /// Causal temporal attention across frames (after the spatial self-attention), added by
    /// ``ContextAdapter/inflate()``; nil in a 2-D adapter.
    public private(set) var temporal: TemporalAttention?

    init(width: Int, heads: Int, contextDim: Int, mlpRatio: Int) throws {
        norm1 = try LayerNorm(width)
        _selfAttention.wrappedValue = try MultiHeadAttention(queryDim: width, heads: heads)
        norm2 = try LayerNorm(width)
        _crossAttention.wrappedValue = try MultiHeadAttention(queryDim: width, contextDim: contextDim, heads: heads)
        norm3 = try LayerNorm(width)
        mlp1 = try Linear(width, width * mlpRatio)
        mlp2 = try Linear(width * mlpRatio, width)
        super.init()
    }

    func inflate(heads: Int) throws {
        guard temporal == nil else { return }
        temporal = try TemporalAttention(channels: norm1.dimensions, heads: heads, causal: true)
    }

    func callAsFunction(_ x: Tensor, context: Condition, frames: Int? = nil) throws -> Tensor {
        var h = try x + selfAttention(norm1(x))
        if let temporal, let frames { h = try temporal(h, frames: frames) }
        h = try h + crossAttention(norm2(h), context: context.tokens, keyMask: context.mask, cache: context.attentionCache)
        return try h + mlp2(mlp1(norm3(h)).gelu())
    }
}

/// The context-aware adapter r_φ(x0, c, t) of ContextDiff (paper §3.1, DESIGN §4).
///
/// An image encoder cuts x0 into patch tokens (a strided convolution plus learned positions), adds
/// the timestep embedding, runs blocks of self-attention and 8-head cross-attention from image
/// tokens to text tokens, and decodes back to the shape of x0. The decoder's last layer starts at
/// zero, so training starts from the plain diffusion model (r_φ ≡ 0). Unlike the official code,
/// the output depends on the image, the text and the timestep.
public final class ContextAdapter: Module {
    public private(set) var config: ContextAdapterConfig
    @CheckpointKey("patch_embed") public private(set) var patchEmbed: Conv2d
    public let positions: Tensor
    @CheckpointKey("time_embedding") public private(set) var timeEmbedding: TimestepEmbedding
    public let blocks: [ContextBlock]
    @CheckpointKey("norm_out") public private(set) var normOut: LayerNorm
    @CheckpointKey("proj_out") public private(set) var projOut: Linear

    public init(_ config: ContextAdapterConfig) throws {
        try config.validate()
        self.config = config
        let w = config.width
        _patchEmbed.wrappedValue = try Conv2d(config.inChannels, w, kernel: config.patchSize, stride: config.patchSize)
        positions = try Tensor.randn([1, config.tokenGrid * config.tokenGrid, w]) * 0.02
        _timeEmbedding.wrappedValue = try TimestepEmbedding(featureDim: w, outputDim: w)
        blocks = try (0..<config.depth).map { _ in
            try ContextBlock(width: w, heads: config.heads, contextDim: config.contextDim, mlpRatio: config.mlpRatio)
        }
        _normOut.wrappedValue = try LayerNorm(w)
        let projOut = try Linear(w, config.patchSize * config.patchSize * config.inChannels)
        try projOut.weight.zero()
        try projOut.bias?.zero()
        _projOut.wrappedValue = projOut
        super.init()
        if let heads = config.temporalHeads { try inflate(heads: heads) }
    }

    /// Whether ``inflate()`` has added temporal layers.
    public var isInflated: Bool { blocks.first?.temporal != nil }

    /// Inflates the adapter to video (paper §5.2: "spatio-temporal attention, which includes
    /// spatial self-attention and temporal causal attention"): each block's self-attention stays
    /// within a frame and a causal temporal attention across frames follows it, its output
    /// projection zero-initialised. Called with `frames: nil` the adapter is the 2-D one.
    /// The heads (default: the cross-attention's) are recorded in
    /// ``ContextAdapterConfig/temporalHeads``, so a saved video adapter loads inflated.
    public func inflate(heads: Int? = nil) throws {
        let heads = heads ?? config.temporalHeads ?? config.heads
        if isInflated {
            guard heads == config.temporalHeads else {
                throw ModuleError.invalidConfiguration("adapter is already inflated with \(config.temporalHeads ?? 0) temporal heads, not \(heads)")
            }
            return
        }
        for block in blocks { try block.inflate(heads: heads) }
        config.temporalHeads = heads
    }

    /// r_φ(x0, c, t): `x0` `[B, C, H, W]`, `timesteps` `[B]`; returns a tensor shaped like `x0`.
    /// For videos, `x0` is `[B·F, C, H, W]` (frames adjacent) and `frames` is `F`.
    public func callAsFunction(_ x0: Tensor, timesteps: Tensor, condition: Condition, frames: Int? = nil) throws -> Tensor {
        let s = x0.shape
        if let frames, frames <= 0 || s.first.map({ $0 % frames != 0 }) ?? true {
            throw ModuleError.invalidInput("adapter: batch \(s.first ?? 0) is not a whole number of \(frames)-frame videos")
        }
        let (c, size, p, g) = (config.inChannels, config.sampleSize, config.patchSize, config.tokenGrid)
        guard s.count == 4, s[1] == c, s[2] == size, s[3] == size else {
            throw ModuleError.invalidInput("adapter input must be [B, \(c), \(size), \(size)], got \(s)")
        }
        let b = s[0]
        guard timesteps.shape == [b], condition.batchSize == b else {
            throw ModuleError.invalidInput("adapter: batch \(b) but timesteps \(timesteps.shape) and condition batch \(condition.batchSize)")
        }
        var h = try patchEmbed(x0).flattened(from: 2).transposed(1, 2)  // [B, N, W]
        h = try h + positions + timeEmbedding(timesteps).unsqueezed(1)
        for block in blocks { h = try block(h, context: condition, frames: frames) }
        let patches = try projOut(normOut(h))  // [B, N, p*p*C]
        return try patches.reshaped([b, g, g, p, p, c]).permuted([0, 5, 1, 3, 2, 4]).reshaped([b, c, size, size])
    }
}
