import NN
import Torch

/// The shape of a ``ConvTrunk``: a small all-convolutional image encoder for the benchmark's
/// low-resolution renders.
public struct ConvTrunkConfig: Codable, Sendable, Equatable {
    /// Width and height of the input images.
    public var imageSize = 32
    /// Channels per stage; stage 0 runs at full resolution, each later stage halves it.
    public var channels = [16, 32, 64]
    /// ``ConvTrunk/features(_:)`` average-pools the last map to `pooledSize × pooledSize` and
    /// flattens it, so the vector keeps where things are (left/right, top/bottom).
    public var pooledSize = 2
    public var normGroups = 8

    public init() {}

    enum CodingKeys: String, CodingKey {
        case imageSize = "image_size", channels, pooledSize = "pooled_size", normGroups = "norm_groups"
    }

    /// Side of the last feature map.
    public var mapSize: Int { imageSize >> (channels.count - 1) }
    /// Channels of the last feature map.
    public var mapChannels: Int { channels.last ?? 0 }
    /// Width of the pooled feature vector.
    public var featureDim: Int { mapChannels * pooledSize * pooledSize }

    public func validate() throws {
        guard imageSize >= 8, !channels.isEmpty, normGroups > 0, channels.allSatisfy({ $0 > 0 && $0 % normGroups == 0 }) else {
            throw ModuleError.invalidConfiguration("conv trunk: image size ≥ 8 and channels divisible by \(normGroups) groups required, got \(imageSize), \(channels)")
        }
        guard imageSize % (1 << (channels.count - 1)) == 0, pooledSize > 0, mapSize % pooledSize == 0 else {
            throw ModuleError.invalidConfiguration("conv trunk: the last map (\(mapSize)×\(mapSize)) cannot pool to \(pooledSize)×\(pooledSize)")
        }
    }
}

/// Conv 3×3 → GroupNorm → SiLU.
public final class ConvNormAct: Module, UnaryLayer {
    public let conv: Conv2d
    public let norm: GroupNorm

    public init(_ inputs: Int, _ outputs: Int, stride: Int = 1, groups: Int) throws {
        conv = try Conv2d(inputs, outputs, kernel: 3, stride: stride, padding: 1)
        norm = try GroupNorm(groups: groups, channels: outputs)
        super.init()
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try norm(conv(x)).silu()
    }
}

/// Two blocks at full resolution, then per stage a stride-2 block and a stride-1 block.
/// Images `[B, 3, S, S]` in [-1, 1] → a feature map `[B, C, S/2^k, S/2^k]` (``map(_:)``) or
/// its pooled, flattened form `[B, featureDim]` (``features(_:)``).
public final class ConvTrunk: Module {
    public let config: ConvTrunkConfig
    public let layers: [ConvNormAct]

    public init(_ config: ConvTrunkConfig) throws {
        try config.validate()
        self.config = config
        let g = config.normGroups
        var layers = [try ConvNormAct(3, config.channels[0], groups: g), try ConvNormAct(config.channels[0], config.channels[0], groups: g)]
        for i in 1..<config.channels.count {
            layers.append(try ConvNormAct(config.channels[i - 1], config.channels[i], stride: 2, groups: g))
            layers.append(try ConvNormAct(config.channels[i], config.channels[i], groups: g))
        }
        self.layers = layers
        super.init()
    }

    /// The last feature map.
    public func map(_ x: Tensor) throws -> Tensor {
        let s = x.shape
        guard s.count == 4, s[1] == 3, s[2] == config.imageSize, s[3] == config.imageSize else {
            throw ModuleError.invalidInput("expected images [B, 3, \(config.imageSize), \(config.imageSize)], got \(s)")
        }
        var h = x
        for layer in layers { h = try layer(h) }
        return h
    }

    /// The last map average-pooled to ``ConvTrunkConfig/pooledSize`` and flattened.
    public func features(fromMap map: Tensor) throws -> Tensor {
        try map.adaptiveAvgPool2d(config.pooledSize, config.pooledSize).flattened(from: 1)
    }

    public func features(_ x: Tensor) throws -> Tensor { try features(fromMap: map(x)) }
}
