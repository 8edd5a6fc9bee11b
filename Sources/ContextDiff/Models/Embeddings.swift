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
        throw ModuleError.invalidConfiguration("timestep embedding width must be even and ≥ 2, got \(dimension)")
    }
    let half = dimension / 2
    let exponent = try Tensor.arange(0, Double(half)) * (-Foundation.log(10000.0) / Double(half))
    let args = try timesteps.to(.float32).unsqueezed(1) * exponent.exp().unsqueezed(0)
    return try Tensor.cat([args.cos(), args.sin()], dim: 1)
}

/// Sinusoidal features followed by `Linear → SiLU → Linear` (diffusers' `TimestepEmbedding`).
public final class TimestepEmbedding: Module {
    @CheckpointKey("linear_1") public private(set) var linear1: Linear
    @CheckpointKey("linear_2") public private(set) var linear2: Linear
    public let featureDim: Int

    public init(featureDim: Int, outputDim: Int) throws {
        _linear1.wrappedValue = try Linear(featureDim, outputDim)
        _linear2.wrappedValue = try Linear(outputDim, outputDim)
        self.featureDim = featureDim
        super.init()
    }

    public func callAsFunction(_ timesteps: Tensor) throws -> Tensor {
        try linear2(linear1(timestepFeatures(timesteps, dimension: featureDim)).silu())
    }
}
