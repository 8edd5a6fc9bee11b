import NN
import Torch

/// Configuration of ``UNet``, saved as `config.json` next to the weights.
public struct UNetConfig: Codable, Sendable, Equatable {
    public var inChannels = 3
    public var outChannels = 3
    public var sampleSize = 32
    /// Channels of the first level; level i has `baseChannels * channelMultipliers[i]`.
    public var baseChannels = 64
    public var channelMultipliers = [1, 2, 2]
    /// Residual blocks per level on the way down (one more on the way up, as ADM).
    public var layersPerBlock = 2
    /// Feature-map sizes that get self-attention.
    public var attentionResolutions = [16, 8]
    /// Feature-map sizes that get cross-attention over the text tokens.
    public var crossAttentionResolutions = [16, 8]
    public var heads = 4
    /// Width of the text-token states (MiniLM: 384).
    public var contextDim = 384
    /// Width of the pooled text vector added to the timestep embedding.
    public var pooledDim = 384
    public var dropout = 0.0
    public var normGroups = 32
    public var prediction = PredictionTarget.sample
    /// A learned absolute position embedding per transformer (`pos_embed`, `[1, H·W, C]`,
    /// zero-initialised, added to the tokens after `proj_in`), so that attention knows where each
    /// token is: "left of" has to be read against a position. Off in older configs.
    public var positionalEmbedding = false
    /// A small trainable transformer over the text-token states before the U-Net uses them
    /// (``TextRefiner``); nil (absent in older configs) uses the encoder's states as they are.
    public var textRefiner: TextRefinerConfig?
    /// A text-side layout prior whose canvas is added to the first feature map
    /// (``LayoutPrior``); nil (absent in older configs) is the plain U-Net.
    public var layoutPrior: LayoutPriorConfig?
    /// The heads of the temporal attention layers of a video model (``UNet/inflate(temporalHeads:)``);
    /// nil (absent) is a 2-D model. Saved so that an inflated model loads as it was saved.
    public var temporalHeads: Int?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels", sampleSize = "sample_size"
        case baseChannels = "base_channels", channelMultipliers = "channel_multipliers"
        case layersPerBlock = "layers_per_block", attentionResolutions = "attention_resolutions"
        case crossAttentionResolutions = "cross_attention_resolutions", heads, contextDim = "context_dim"
        case pooledDim = "pooled_dim", dropout, normGroups = "norm_groups", prediction
        case positionalEmbedding = "positional_embedding", temporalHeads = "temporal_heads"
        case textRefiner = "text_refiner"
        case layoutPrior = "layout_prior"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inChannels = try c.decode(Int.self, forKey: .inChannels)
        outChannels = try c.decode(Int.self, forKey: .outChannels)
        sampleSize = try c.decode(Int.self, forKey: .sampleSize)
        baseChannels = try c.decode(Int.self, forKey: .baseChannels)
        channelMultipliers = try c.decode([Int].self, forKey: .channelMultipliers)
        layersPerBlock = try c.decode(Int.self, forKey: .layersPerBlock)
        attentionResolutions = try c.decode([Int].self, forKey: .attentionResolutions)
        crossAttentionResolutions = try c.decode([Int].self, forKey: .crossAttentionResolutions)
        heads = try c.decode(Int.self, forKey: .heads)
        contextDim = try c.decode(Int.self, forKey: .contextDim)
        pooledDim = try c.decode(Int.self, forKey: .pooledDim)
        dropout = try c.decode(Double.self, forKey: .dropout)
        normGroups = try c.decode(Int.self, forKey: .normGroups)
        prediction = try c.decode(PredictionTarget.self, forKey: .prediction)
        // Added after the first models were shipped: absent means off.
        positionalEmbedding = try c.decodeIfPresent(Bool.self, forKey: .positionalEmbedding) ?? false
        textRefiner = try c.decodeIfPresent(TextRefinerConfig.self, forKey: .textRefiner)
        layoutPrior = try c.decodeIfPresent(LayoutPriorConfig.self, forKey: .layoutPrior)
        temporalHeads = try c.decodeIfPresent(Int.self, forKey: .temporalHeads)
    }

    /// Checks the configuration and throws a message naming the offending field.
    public func validate() throws {
        func fail(_ m: String) -> Error { ModuleError.invalidConfiguration("UNet config: \(m)") }
        try ConfigLimits.check([
            "in_channels": inChannels, "out_channels": outChannels, "sample_size": sampleSize, "base_channels": baseChannels,
            "context_dim": contextDim, "pooled_dim": pooledDim, "norm_groups": normGroups,
        ], in: 1...ConfigLimits.size, fail)
        try ConfigLimits.check(["layers_per_block": layersPerBlock], in: 1...ConfigLimits.count, fail)
        try ConfigLimits.check(["levels (channel_multipliers.count)": channelMultipliers.count], in: 1...16, fail)
        try ConfigLimits.check(["heads": heads], in: 1...ConfigLimits.heads, fail)
        for m in channelMultipliers { try ConfigLimits.check(["channel_multipliers[i]": m], in: 1...ConfigLimits.count, fail) }
        if let temporalHeads { try ConfigLimits.check(["temporal_heads": temporalHeads], in: 1...ConfigLimits.heads, fail) }
        guard inChannels > 0, outChannels > 0 else { throw fail("channel counts must be positive") }
        guard baseChannels > 0, !channelMultipliers.isEmpty, channelMultipliers.allSatisfy({ $0 > 0 }) else {
            throw fail("base_channels and channel_multipliers must be positive")
        }
        guard layersPerBlock > 0 else { throw fail("layers_per_block must be positive") }
        let factor = 1 << (channelMultipliers.count - 1)
        guard sampleSize > 0, sampleSize % factor == 0 else {
            throw fail("sample_size \(sampleSize) must be divisible by \(factor) for \(channelMultipliers.count) levels")
        }
        guard heads > 0, contextDim > 0, pooledDim > 0, normGroups > 0 else { throw fail("heads, widths and groups must be positive") }
        for m in channelMultipliers where (baseChannels * m) % heads != 0 {
            throw fail("width \(baseChannels * m) not divisible by \(heads) heads")
        }
        guard (0..<1).contains(dropout) else { throw fail("dropout must be in [0, 1)") }
        try textRefiner?.validate()
        try layoutPrior?.validate()
    }
}

/// The largest group count ≤ `preferred` that divides `channels`.
func groupCount(_ channels: Int, preferred: Int) -> Int {
    var g = min(preferred, channels)
    while channels % g != 0 { g -= 1 }
    return g
}

/// GroupNorm → SiLU → conv, plus the time embedding, → GroupNorm → SiLU → dropout → conv, plus a skip.
public final class ResBlock: Module {
    public let norm1: GroupNorm
    public let conv1: Conv2d
    @CheckpointKey("time_proj") public private(set) var timeProj: Linear
    public let norm2: GroupNorm
    public let dropout: Dropout
    public let conv2: Conv2d
    public let skip: Conv2d?

    public init(_ inputs: Int, _ outputs: Int, timeDim: Int, groups: Int, dropout: Double) throws {
        norm1 = try GroupNorm(groups: groupCount(inputs, preferred: groups), channels: inputs)
        conv1 = try Conv2d(inputs, outputs, kernel: 3, padding: 1)
        _timeProj.wrappedValue = try Linear(timeDim, outputs)
        norm2 = try GroupNorm(groups: groupCount(outputs, preferred: groups), channels: outputs)
        self.dropout = try Dropout(dropout)
        conv2 = try Conv2d(outputs, outputs, kernel: 3, padding: 1)
        skip = inputs == outputs ? nil : try Conv2d(inputs, outputs, kernel: 1)
        super.init()
    }

    public func callAsFunction(_ x: Tensor, time: Tensor) throws -> Tensor {
        var h = try conv1(norm1(x).silu())
        let t = try timeProj(time.silu())
        h = try h + t.reshaped([t.shape[0], t.shape[1], 1, 1])
        h = try conv2(dropout(norm2(h).silu()))
        return try h + (skip.map { try $0(x) } ?? x)
    }
}

/// A spatial transformer: GroupNorm → proj_in → [LN → self-attention] → [LN → cross-attention to
/// the text tokens] → [LN → GELU MLP] → proj_out, with residuals (Stable Diffusion's block).
public final class SpatialTransformer: Module {
    public let norm: GroupNorm
    @CheckpointKey("proj_in") public private(set) var projIn: Linear
    public let norm1: LayerNorm?
    @CheckpointKey("attn1") public private(set) var selfAttention: MultiHeadAttention?
    public let norm2: LayerNorm?
    @CheckpointKey("attn2") public private(set) var crossAttention: MultiHeadAttention?
    public let norm3: LayerNorm
    public let ff1: Linear
    public let ff2: Linear
    @CheckpointKey("proj_out") public private(set) var projOut: Linear
    /// Learned absolute position embedding `[1, H·W, C]` (``UNetConfig/positionalEmbedding``), or nil.
    @CheckpointKey("pos_embed") public private(set) var posEmbed: Tensor?
    /// Temporal attention over the frames of a video (Tune-A-Video's `attn_temp`), added by
    /// ``UNet/inflate()``; nil in a 2-D model, so 2-D checkpoints keep their keys.
    public private(set) var temporal: TemporalAttention?
    /// The layer's name in attention-control sites (`down.1.attentions.0`, `mid.attention`, ...).
    public internal(set) var siteName = ""

    public init(
        channels: Int, heads: Int, contextDim: Int, groups: Int, selfAttention: Bool, crossAttention: Bool,
        positions: Int? = nil
    ) throws {
        _posEmbed.wrappedValue = try positions.map { try Tensor.zeros([1, $0, channels]) }
        norm = try GroupNorm(groups: groupCount(channels, preferred: groups), channels: channels, eps: 1e-6)
        _projIn.wrappedValue = try Linear(channels, channels)
        norm1 = selfAttention ? try LayerNorm(channels) : nil
        _selfAttention.wrappedValue = selfAttention ? try MultiHeadAttention(queryDim: channels, heads: heads) : nil
        norm2 = crossAttention ? try LayerNorm(channels) : nil
        _crossAttention.wrappedValue = crossAttention
            ? try MultiHeadAttention(queryDim: channels, contextDim: contextDim, heads: heads) : nil
        norm3 = try LayerNorm(channels)
        ff1 = try Linear(channels, 4 * channels)
        ff2 = try Linear(4 * channels, channels)
        _projOut.wrappedValue = try Linear(channels, channels)
        super.init()
    }

    /// Adds ``temporal`` (zero-initialised output, so the layer starts as the identity).
    func inflate(temporalHeads: Int) throws {
        guard temporal == nil else { return }
        temporal = try TemporalAttention(channels: projIn.weight.shape[0], heads: temporalHeads, causal: false)
    }

    /// - Parameter video: for frames folded into the batch (`[B·F, C, H, W]`): the frame count,
    ///   the self-attention pattern across frames and an optional attention controller. Nil is
    ///   the 2-D block (temporal attention, if any, is skipped).
    public func callAsFunction(_ x: Tensor, context: Condition, video: VideoLayout? = nil) throws -> Tensor {
        let s = x.shape
        let (b, c, hw) = (s[0], s[1], s[2] * s[3])
        var h = try projIn(norm(x).reshaped([b, c, hw]).transposed(1, 2))  // [B, HW, C]
        if let posEmbed {
            guard posEmbed.shape[1] == hw else {
                throw ModuleError.invalidInput("position embedding of \(posEmbed.shape[1]) tokens for a \(s[2])×\(s[3]) feature map (the model's sample_size is fixed)")
            }
            h = try h + posEmbed
        }
        let control = video?.control
        let name = siteName
        func hook(_ kind: AttentionKind) -> ((Tensor) throws -> Tensor)? {
            guard let control else { return nil }
            let site = AttentionSite(layer: name, kind: kind, resolution: s[2])
            return { try control.process($0, site: site) }
        }
        if let selfAttention, let norm1 {
            let n = try norm1(h)
            var keys: Tensor?
            if let video, video.selfAttention == .sparseCausal { keys = try sparseCausalKeys(n, frames: video.frames) }
            h = try h + selfAttention(n, context: keys, editWeights: hook(.selfAttention))
        }
        if let crossAttention, let norm2 {
            h = try h + crossAttention(
                norm2(h), context: context.tokens, keyMask: context.mask, editWeights: hook(.crossAttention),
                cache: context.attentionCache)
        }
        h = try h + ff2(ff1(norm3(h)).gelu())
        if let temporal, let video { h = try temporal(h, frames: video.frames) }
        h = try projOut(h).transposed(1, 2).reshaped(s)
        return try x + h
    }
}

/// One level of the U-Net: residual blocks, each optionally followed by a transformer.
public final class UNetLevel: Module {
    public let resnets: [ResBlock]
    public let attentions: [SpatialTransformer]
    public let resample: Conv2d?

    init(resnets: [ResBlock], attentions: [SpatialTransformer], resample: Conv2d?) {
        self.resnets = resnets
        self.attentions = attentions
        self.resample = resample
        super.init()
    }
}

/// A conditional U-Net in the style of Imagen/ADM (DESIGN §4): ResBlocks with GroupNorm and SiLU,
/// a sinusoidal timestep embedding plus the pooled text vector, self-attention at low resolutions,
/// and cross-attention over the full sequence of text-token states.
public final class UNet: Module {
    public private(set) var config: UNetConfig
    @CheckpointKey("time_embedding") public private(set) var timeEmbedding: TimestepEmbedding
    @CheckpointKey("pooled_proj") public private(set) var pooledProj: Linear
    @CheckpointKey("conv_in") public private(set) var convIn: Conv2d
    public let down: [UNetLevel]
    @CheckpointKey("mid.resnet_1") public private(set) var midResnet1: ResBlock
    @CheckpointKey("mid.attention") public private(set) var midAttention: SpatialTransformer
    @CheckpointKey("mid.resnet_2") public private(set) var midResnet2: ResBlock
    public let up: [UNetLevel]
    @CheckpointKey("norm_out") public private(set) var normOut: GroupNorm
    @CheckpointKey("conv_out") public private(set) var convOut: Conv2d
    /// The trainable text refiner (``UNetConfig/textRefiner``), or nil.
    @CheckpointKey("text_refiner") public private(set) var textRefiner: TextRefiner?
    /// The text-side layout prior (``UNetConfig/layoutPrior``), or nil.
    @CheckpointKey("layout_prior") public private(set) var layoutPrior: LayoutPrior?
    /// Whether the prior paints the layout it predicts when no `layout` is given (true for
    /// text-to-image). A video edit turns it off: the layout is the source video's, carried by
    /// its inversion, and a text-side box would pin a moving object to one place.
    public var paintsPredictedLayout = true

    public init(_ config: UNetConfig) throws {
        try config.validate()
        self.config = config
        let base = config.baseChannels
        let timeDim = 4 * base
        let groups = config.normGroups
        _timeEmbedding.wrappedValue = try TimestepEmbedding(featureDim: base, outputDim: timeDim)
        _pooledProj.wrappedValue = try Linear(config.pooledDim, timeDim)
        _convIn.wrappedValue = try Conv2d(config.inChannels, base, kernel: 3, padding: 1)

        func transformer(_ channels: Int, resolution: Int) throws -> SpatialTransformer? {
            let selfAttn = config.attentionResolutions.contains(resolution)
            let crossAttn = config.crossAttentionResolutions.contains(resolution)
            guard selfAttn || crossAttn else { return nil }
            return try SpatialTransformer(
                channels: channels, heads: config.heads, contextDim: config.contextDim, groups: groups,
                selfAttention: selfAttn, crossAttention: crossAttn,
                positions: config.positionalEmbedding ? resolution * resolution : nil)
        }

        var skipChannels = [base]
        var channels = base
        var resolution = config.sampleSize
        var downLevels: [UNetLevel] = []
        for (i, mult) in config.channelMultipliers.enumerated() {
            let out = base * mult
            var resnets: [ResBlock] = [], attentions: [SpatialTransformer] = []
            for _ in 0..<config.layersPerBlock {
                resnets.append(try ResBlock(channels, out, timeDim: timeDim, groups: groups, dropout: config.dropout))
                if let t = try transformer(out, resolution: resolution) { attentions.append(t) }
                channels = out
                skipChannels.append(channels)
            }
            let isLast = i == config.channelMultipliers.count - 1
            let resample = isLast ? nil : try Conv2d(channels, channels, kernel: 3, stride: 2, padding: 1)
            if !isLast {
                skipChannels.append(channels)
                resolution /= 2
            }
            downLevels.append(UNetLevel(resnets: resnets, attentions: attentions, resample: resample))
        }
        down = downLevels

        _midResnet1.wrappedValue = try ResBlock(channels, channels, timeDim: timeDim, groups: groups, dropout: config.dropout)
        _midAttention.wrappedValue = try SpatialTransformer(
            channels: channels, heads: config.heads, contextDim: config.contextDim, groups: groups,
            selfAttention: true, crossAttention: true,
            positions: config.positionalEmbedding ? resolution * resolution : nil)
        _midResnet2.wrappedValue = try ResBlock(channels, channels, timeDim: timeDim, groups: groups, dropout: config.dropout)

        var upLevels: [UNetLevel] = []
        for (i, mult) in config.channelMultipliers.enumerated().reversed() {
            let out = base * mult
            var resnets: [ResBlock] = [], attentions: [SpatialTransformer] = []
            for _ in 0...config.layersPerBlock {
                let skip = skipChannels.removeLast()
                resnets.append(try ResBlock(channels + skip, out, timeDim: timeDim, groups: groups, dropout: config.dropout))
                if let t = try transformer(out, resolution: resolution) { attentions.append(t) }
                channels = out
            }
            let resample = i == 0 ? nil : try Conv2d(channels, channels, kernel: 3, padding: 1)
            if i != 0 { resolution *= 2 }
            upLevels.append(UNetLevel(resnets: resnets, attentions: attentions, resample: resample))
        }
        up = upLevels
        _normOut.wrappedValue = try GroupNorm(groups: groupCount(channels, preferred: groups), channels: channels)
        _convOut.wrappedValue = try Conv2d(channels, config.outChannels, kernel: 3, padding: 1)
        // Built last, so that a config without it draws the same initial weights as before.
        _textRefiner.wrappedValue = try config.textRefiner.map {
            try TextRefiner($0, contextDim: config.contextDim, pooledDim: config.pooledDim)
        }
        _layoutPrior.wrappedValue = try config.layoutPrior.map {
            try LayoutPrior($0, contextDim: config.contextDim, outputChannels: config.baseChannels)
        }
        super.init()
        if let heads = config.temporalHeads { try inflate(temporalHeads: heads) }
    }

    /// Every transformer of the U-Net with its site name and feature-map side, in call order.
    public var transformers: [(name: String, resolution: Int, block: SpatialTransformer)] {
        var out: [(String, Int, SpatialTransformer)] = []
        var resolution = config.sampleSize
        for (i, level) in down.enumerated() {
            for (j, t) in level.attentions.enumerated() { out.append(("down.\(i).attentions.\(j)", resolution, t)) }
            if level.resample != nil { resolution /= 2 }
        }
        out.append(("mid.attention", resolution, midAttention))
        for (i, level) in up.enumerated() {
            for (j, t) in level.attentions.enumerated() { out.append(("up.\(i).attentions.\(j)", resolution, t)) }
            if level.resample != nil { resolution *= 2 }
        }
        return out
    }

    /// Whether ``inflate(temporalHeads:)`` has added temporal layers.
    public var isInflated: Bool { midAttention.temporal != nil }

    /// Inflates the U-Net to video (Tune-A-Video, arXiv:2212.11565 §4.1): convolutions and
    /// normalisation stay per frame (frames are folded into the batch), self-attention becomes
    /// sparse-causal when called with a ``VideoLayout``, and every transformer gains a temporal
    /// attention layer whose output projection starts at zero. With `video: nil` the model is
    /// exactly the 2-D one; the new parameters live under `<transformer>.temporal.*`.
    /// The heads are recorded in ``UNetConfig/temporalHeads``, so a saved video model loads
    /// inflated. Inflating an inflated model with the same heads changes nothing.
    public func inflate(temporalHeads: Int? = nil) throws {
        let heads = temporalHeads ?? config.temporalHeads ?? config.heads
        if isInflated {
            guard heads == config.temporalHeads else {
                throw ModuleError.invalidConfiguration("UNet is already inflated with \(config.temporalHeads ?? 0) temporal heads, not \(heads)")
            }
            return
        }
        for (name, _, block) in transformers {
            try block.inflate(temporalHeads: heads)
            block.siteName = name
        }
        config.temporalHeads = heads
    }

    /// Predicts ``UNetConfig/prediction`` for noisy images `x` `[B, C, H, W]` at `timesteps` `[B]`
    /// (for a video: `[B·F, C, H, W]`, frames of each video adjacent, with `video` set).
    /// `layout` gives a ``LayoutPrior`` the true layout (training); without it the prior
    /// predicts one from the text. It is ignored by a U-Net without a prior.
    public func callAsFunction(
        _ x: Tensor, timesteps: Tensor, condition: Condition, video: VideoLayout? = nil, layout: LayoutTarget? = nil
    ) throws -> Tensor {
        let s = x.shape
        if let video {
            guard video.frames > 0, s.first.map({ $0 % video.frames == 0 }) == true else {
                throw ModuleError.invalidInput("UNet: batch \(s.first ?? 0) is not a whole number of \(video.frames)-frame videos")
            }
        }
        guard s.count == 4, s[1] == config.inChannels, s[2] == config.sampleSize, s[3] == config.sampleSize else {
            throw ModuleError.invalidInput(
                "UNet input must be [B, \(config.inChannels), \(config.sampleSize), \(config.sampleSize)], got \(s)")
        }
        guard timesteps.shape == [s[0]], condition.batchSize == s[0] else {
            throw ModuleError.invalidInput(
                "UNet: batch \(s[0]) but timesteps \(timesteps.shape) and condition batch \(condition.batchSize)")
        }
        let encoded = condition
        let condition = try textRefiner.map { try $0(condition) } ?? condition
        let time = try timeEmbedding(timesteps) + pooledProj(condition.pooled)
        var h = try convIn(x)
        // The prior reads the encoder's own states: its boxes are supervised against them.
        if let layoutPrior, layout != nil || paintsPredictedLayout {
            h = try h + layoutPrior(encoded, target: layout, size: config.sampleSize)
        }
        var skips = [h]
        for level in down {
            var attentions = level.attentions.makeIterator()
            for resnet in level.resnets {
                h = try resnet(h, time: time)
                if !level.attentions.isEmpty, let attention = attentions.next() { h = try attention(h, context: condition, video: video) }
                skips.append(h)
            }
            if let resample = level.resample {
                h = try resample(h)
                skips.append(h)
            }
        }
        h = try midResnet2(midAttention(midResnet1(h, time: time), context: condition, video: video), time: time)
        for level in up {
            var attentions = level.attentions.makeIterator()
            for resnet in level.resnets {
                h = try resnet(Tensor.cat([h, skips.removeLast()], dim: 1), time: time)
                if !level.attentions.isEmpty, let attention = attentions.next() { h = try attention(h, context: condition, video: video) }
            }
            if let resample = level.resample {
                let hs = h.shape
                h = try resample(h.interpolate(size: (hs[2] * 2, hs[3] * 2)))
            }
        }
        return try convOut(normOut(h).silu())
    }
}
