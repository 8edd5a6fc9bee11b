import Foundation
import NN
import Torch

/// Configuration of ``EfficientUNet``, saved as `config.json` next to the weights.
public struct EfficientUNetConfig: Codable, Sendable, Equatable {
    /// Image channels (the noisy sample and the low-resolution image each have this many).
    public var channels = 3
    /// Side of the low-resolution input (the base model's `sample_size`).
    public var lowResolutionSize = 32
    /// Side of the output.
    public var sampleSize = 128
    public var baseChannels = 32
    /// Level i works at `sampleSize / 2^i` with `baseChannels * channelMultipliers[i]` channels.
    public var channelMultipliers = [1, 2, 3, 4]
    /// Residual blocks per level, on the way down and again on the way up: Imagen's Efficient
    /// U-Net puts its capacity at the low resolutions, where a block is cheap.
    public var blocksPerLevel = [1, 1, 2, 2]
    /// Feature-map sides whose blocks end with cross-attention over the text tokens.
    public var crossAttentionResolutions = [16]
    /// Feature-map sides whose transformers also self-attend.
    public var selfAttentionResolutions = [16]
    public var heads = 4
    public var contextDim = 384
    public var pooledDim = 384
    public var normGroups = 8
    public var dropout = 0.0
    /// Skip connections are scaled by this before they are concatenated (Imagen: 1/√2).
    public var skipScale = 1 / 2.0.squareRoot()
    public var prediction = PredictionTarget.vPrediction

    public init() {}

    enum CodingKeys: String, CodingKey {
        case channels, lowResolutionSize = "low_resolution_size", sampleSize = "sample_size"
        case baseChannels = "base_channels", channelMultipliers = "channel_multipliers"
        case blocksPerLevel = "blocks_per_level", crossAttentionResolutions = "cross_attention_resolutions"
        case selfAttentionResolutions = "self_attention_resolutions", heads, contextDim = "context_dim"
        case pooledDim = "pooled_dim", normGroups = "norm_groups", dropout, skipScale = "skip_scale", prediction
    }

    /// Every key is optional: a missing one keeps its default (a recipe names what it changes).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = EfficientUNetConfig()
        channels = try c.decodeIfPresent(Int.self, forKey: .channels) ?? d.channels
        lowResolutionSize = try c.decodeIfPresent(Int.self, forKey: .lowResolutionSize) ?? d.lowResolutionSize
        sampleSize = try c.decodeIfPresent(Int.self, forKey: .sampleSize) ?? d.sampleSize
        baseChannels = try c.decodeIfPresent(Int.self, forKey: .baseChannels) ?? d.baseChannels
        channelMultipliers = try c.decodeIfPresent([Int].self, forKey: .channelMultipliers) ?? d.channelMultipliers
        blocksPerLevel = try c.decodeIfPresent([Int].self, forKey: .blocksPerLevel) ?? d.blocksPerLevel
        crossAttentionResolutions = try c.decodeIfPresent([Int].self, forKey: .crossAttentionResolutions) ?? d.crossAttentionResolutions
        selfAttentionResolutions = try c.decodeIfPresent([Int].self, forKey: .selfAttentionResolutions) ?? d.selfAttentionResolutions
        heads = try c.decodeIfPresent(Int.self, forKey: .heads) ?? d.heads
        contextDim = try c.decodeIfPresent(Int.self, forKey: .contextDim) ?? d.contextDim
        pooledDim = try c.decodeIfPresent(Int.self, forKey: .pooledDim) ?? d.pooledDim
        normGroups = try c.decodeIfPresent(Int.self, forKey: .normGroups) ?? d.normGroups
        dropout = try c.decodeIfPresent(Double.self, forKey: .dropout) ?? d.dropout
        skipScale = try c.decodeIfPresent(Double.self, forKey: .skipScale) ?? d.skipScale
        prediction = try c.decodeIfPresent(PredictionTarget.self, forKey: .prediction) ?? d.prediction
    }

    /// The upscaling factor (`sampleSize / lowResolutionSize`).
    public var factor: Int { sampleSize / max(1, lowResolutionSize) }

    /// Checks the configuration and throws a message naming the offending field.
    public func validate() throws {
        func fail(_ m: String) -> Error { ModuleError.invalidConfiguration("EfficientUNet config: \(m)") }
        try ConfigLimits.check([
            "channels": channels, "low_resolution_size": lowResolutionSize, "sample_size": sampleSize,
            "base_channels": baseChannels, "context_dim": contextDim, "pooled_dim": pooledDim, "norm_groups": normGroups,
        ], in: 1...ConfigLimits.size, fail)
        try ConfigLimits.check(["levels (channel_multipliers.count)": channelMultipliers.count], in: 1...16, fail)
        try ConfigLimits.check(["heads": heads], in: 1...ConfigLimits.heads, fail)
        guard blocksPerLevel.count == channelMultipliers.count else {
            throw fail("blocks_per_level has \(blocksPerLevel.count) entries for \(channelMultipliers.count) levels")
        }
        for m in channelMultipliers { try ConfigLimits.check(["channel_multipliers[i]": m], in: 1...ConfigLimits.count, fail) }
        for b in blocksPerLevel { try ConfigLimits.check(["blocks_per_level[i]": b], in: 1...ConfigLimits.count, fail) }
        let reduction = 1 << (channelMultipliers.count - 1)
        guard sampleSize % reduction == 0 else {
            throw fail("sample_size \(sampleSize) must be divisible by \(reduction) for \(channelMultipliers.count) levels")
        }
        guard sampleSize > lowResolutionSize, sampleSize % lowResolutionSize == 0 else {
            throw fail("sample_size \(sampleSize) must be a multiple (> 1) of low_resolution_size \(lowResolutionSize)")
        }
        for m in channelMultipliers where (baseChannels * m) % heads != 0 {
            throw fail("width \(baseChannels * m) not divisible by \(heads) heads")
        }
        guard (0..<1).contains(dropout) else { throw fail("dropout must be in [0, 1)") }
        guard skipScale.isFinite, skipScale > 0 else { throw fail("skip_scale must be positive") }
    }
}

/// One level of the Efficient U-Net: an optional resampling convolution, residual blocks and an
/// optional transformer after them.
public final class EfficientLevel: Module {
    public let resample: Conv2d?
    public let resnets: [ResBlock]
    public let attention: SpatialTransformer?

    init(resample: Conv2d?, resnets: [ResBlock], attention: SpatialTransformer?) {
        self.resample = resample
        self.resnets = resnets
        self.attention = attention
        super.init()
    }
}

/// The super-resolution denoiser of the cascade: Imagen's Efficient U-Net (Saharia et al. 2022,
/// App. B.1) at CPU scale. It reads the noisy high-resolution sample concatenated with the
/// low-resolution image (upsampled to the output size and noised to a known level — noise
/// conditioning augmentation), the timestep and the augmentation level (both embedded and added
/// with the pooled text vector), and the text tokens through cross-attention at the low
/// resolutions. As in the paper's design, each down level resamples *before* its blocks and
/// each up level resamples *after* its blocks, most blocks sit at the low resolutions, and the
/// skip connections are scaled by ``EfficientUNetConfig/skipScale``. Fully convolutional apart
/// from attention (no position tables), so it trains on crops and samples at full size.
public final class EfficientUNet: Module, ConfiguredModel {
    public let config: EfficientUNetConfig
    @CheckpointKey("time_embedding") public private(set) var timeEmbedding: TimestepEmbedding
    @CheckpointKey("augmentation_embedding") public private(set) var augmentationEmbedding: TimestepEmbedding
    @CheckpointKey("pooled_proj") public private(set) var pooledProj: Linear
    @CheckpointKey("conv_in") public private(set) var convIn: Conv2d
    public let down: [EfficientLevel]
    public let up: [EfficientLevel]
    @CheckpointKey("norm_out") public private(set) var normOut: GroupNorm
    @CheckpointKey("conv_out") public private(set) var convOut: Conv2d

    public init(_ config: EfficientUNetConfig) throws {
        try config.validate()
        self.config = config
        let base = config.baseChannels, groups = config.normGroups, timeDim = 4 * base
        _timeEmbedding.wrappedValue = try TimestepEmbedding(featureDim: base, outputDim: timeDim)
        _augmentationEmbedding.wrappedValue = try TimestepEmbedding(featureDim: base, outputDim: timeDim)
        _pooledProj.wrappedValue = try Linear(config.pooledDim, timeDim)
        _convIn.wrappedValue = try Conv2d(2 * config.channels, base, kernel: 3, padding: 1)

        func transformer(_ channels: Int, resolution: Int) throws -> SpatialTransformer? {
            let cross = config.crossAttentionResolutions.contains(resolution)
            let selfAttention = config.selfAttentionResolutions.contains(resolution)
            guard cross || selfAttention else { return nil }
            return try SpatialTransformer(
                channels: channels, heads: config.heads, contextDim: config.contextDim, groups: groups,
                selfAttention: selfAttention, crossAttention: cross)
        }
        func blocks(_ count: Int, from inputs: Int, to outputs: Int) throws -> [ResBlock] {
            try (0..<count).map { i in
                try ResBlock(i == 0 ? inputs : outputs, outputs, timeDim: timeDim, groups: groups, dropout: config.dropout)
            }
        }
        let widths = config.channelMultipliers.map { base * $0 }
        var levels: [EfficientLevel] = []
        var channels = base
        for (i, width) in widths.enumerated() {
            let resolution = config.sampleSize >> i
            let resample = i == 0 ? nil : try Conv2d(channels, channels, kernel: 3, stride: 2, padding: 1)
            levels.append(EfficientLevel(
                resample: resample, resnets: try blocks(config.blocksPerLevel[i], from: channels, to: width),
                attention: try transformer(width, resolution: resolution)))
            channels = width
        }
        down = levels
        levels = []
        let last = widths.count - 1
        for (i, width) in widths.enumerated().reversed() {
            let resolution = config.sampleSize >> i
            // The deepest level has no skip to read: its up blocks continue its down blocks.
            let inputs = i == last ? channels : channels + width
            let resample = i == 0 ? nil : try Conv2d(width, width, kernel: 3, padding: 1)
            levels.append(EfficientLevel(
                resample: resample, resnets: try blocks(config.blocksPerLevel[i], from: inputs, to: width),
                attention: try transformer(width, resolution: resolution)))
            channels = width
        }
        up = levels
        _normOut.wrappedValue = try GroupNorm(groups: groupCount(channels, preferred: groups), channels: channels)
        _convOut.wrappedValue = try Conv2d(channels, config.channels, kernel: 3, padding: 1)
        super.init()
    }

    /// Predicts ``EfficientUNetConfig/prediction`` for noisy samples `x` `[B, C, S, S]` (any
    /// side divisible by 2^(levels−1): crops in training) at `timesteps` `[B]`, given the
    /// low-resolution images already upsampled to `x`'s size and noised to `augmentationLevels`
    /// `[B]` (timesteps of the same schedule; 0 = clean).
    public func callAsFunction(
        _ x: Tensor, timesteps: Tensor, lowResolution: Tensor, augmentationLevels: Tensor, condition: Condition
    ) throws -> Tensor {
        let s = x.shape
        let reduction = 1 << (config.channelMultipliers.count - 1)
        guard s.count == 4, s[1] == config.channels, s[2] % reduction == 0, s[3] % reduction == 0, s[2] > 0, s[3] > 0 else {
            throw ModuleError.invalidInput(
                "EfficientUNet input must be [B, \(config.channels), H, W] with H and W divisible by \(reduction), got \(s)")
        }
        guard lowResolution.shape == s else {
            throw ModuleError.invalidInput("EfficientUNet: the low-resolution input \(lowResolution.shape) must be upsampled to the sample's \(s)")
        }
        guard timesteps.shape == [s[0]], augmentationLevels.shape == [s[0]], condition.batchSize == s[0] else {
            throw ModuleError.invalidInput(
                "EfficientUNet: batch \(s[0]) but timesteps \(timesteps.shape), levels \(augmentationLevels.shape), condition batch \(condition.batchSize)")
        }
        let time = try timeEmbedding(timesteps) + augmentationEmbedding(augmentationLevels) + pooledProj(condition.pooled)
        var h = try convIn(Tensor.cat([x, lowResolution], dim: 1))
        var skips: [Tensor] = []
        for level in down {
            if let resample = level.resample { h = try resample(h) }
            for resnet in level.resnets { h = try resnet(h, time: time) }
            if let attention = level.attention { h = try attention(h, context: condition) }
            skips.append(h)
        }
        for (k, level) in up.enumerated() {
            let skip = skips.removeLast()
            if k > 0 { h = try Tensor.cat([h, skip * config.skipScale], dim: 1) }
            for resnet in level.resnets { h = try resnet(h, time: time) }
            if let attention = level.attention { h = try attention(h, context: condition) }
            if let resample = level.resample {
                let hs = h.shape
                h = try resample(h.interpolate(size: (hs[2] * 2, hs[3] * 2)))
            }
        }
        return try convOut(normOut(h).silu())
    }
}
