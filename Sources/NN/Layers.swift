import Torch

/// Uniform initialisation in `[-bound, bound]` from the scoped generator (`Torch.withSeed`) or
/// else libtorch's global one, as PyTorch's `kaiming_uniform_(a: sqrt(5))` does for
/// Linear and Conv layers (bound `1/sqrt(fanIn)`).
func uniformInit(_ shape: [Int], bound: Double) throws -> Tensor {
    try Tensor.rand(shape) * (2 * bound) - bound
}

/// `y = x Wᵀ + b`.
public final class Linear: Module, UnaryLayer {
    public let weight: Tensor
    public let bias: Tensor?

    public init(_ inputs: Int, _ outputs: Int, bias: Bool = true) throws {
        let bound = 1 / Double(inputs).squareRoot()
        weight = try uniformInit([outputs, inputs], bound: bound)
        self.bias = bias ? try uniformInit([outputs], bound: bound) : nil
        super.init()
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        Kernels.linearAsConvolution ? try x.linearViaConvolution(weight: weight, bias: bias) : try x.linear(weight: weight, bias: bias)
    }
}

/// 2-D convolution over NCHW inputs.
public final class Conv2d: Module, UnaryLayer {
    public let weight: Tensor
    public let bias: Tensor?
    public let stride: Int
    public let padding: Int
    public let groups: Int

    public init(
        _ inputs: Int, _ outputs: Int, kernel: Int, stride: Int = 1, padding: Int = 0, groups: Int = 1, bias: Bool = true
    ) throws {
        guard inputs % groups == 0, outputs % groups == 0 else {
            throw ModuleError.invalidConfiguration("Conv2d: channels \(inputs)->\(outputs) not divisible by groups \(groups)")
        }
        let fanIn = inputs / groups * kernel * kernel
        let bound = 1 / Double(fanIn).squareRoot()
        weight = try uniformInit([outputs, inputs / groups, kernel, kernel], bound: bound)
        self.bias = bias ? try uniformInit([outputs], bound: bound) : nil
        self.stride = stride
        self.padding = padding
        self.groups = groups
        super.init()
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try x.conv2d(weight: weight, bias: bias, stride: stride, padding: padding, groups: groups)
    }
}

/// Group normalisation over NC... inputs.
public final class GroupNorm: Module, UnaryLayer {
    public let weight: Tensor?
    public let bias: Tensor?
    public let groups: Int
    public let eps: Double

    public init(groups: Int, channels: Int, eps: Double = 1e-5, affine: Bool = true) throws {
        guard groups > 0, channels % groups == 0 else {
            throw ModuleError.invalidConfiguration("GroupNorm: \(channels) channels not divisible into \(groups) groups")
        }
        weight = affine ? try Tensor.ones([channels]) : nil
        bias = affine ? try Tensor.zeros([channels]) : nil
        self.groups = groups
        self.eps = eps
        super.init()
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try x.groupNorm(groups: groups, weight: weight, bias: bias, eps: eps)
    }
}

/// Layer normalisation over the last dimension.
public final class LayerNorm: Module, UnaryLayer {
    public let weight: Tensor?
    public let bias: Tensor?
    public let dimensions: Int
    public let eps: Double

    public init(_ dimensions: Int, eps: Double = 1e-5, affine: Bool = true) throws {
        weight = affine ? try Tensor.ones([dimensions]) : nil
        bias = affine ? try Tensor.zeros([dimensions]) : nil
        self.dimensions = dimensions
        self.eps = eps
        super.init()
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try x.layerNorm([dimensions], weight: weight, bias: bias, eps: eps)
    }
}

/// A lookup table of `count` vectors of `dimensions`.
public final class Embedding: Module, UnaryLayer {
    public let weight: Tensor

    public init(_ count: Int, _ dimensions: Int) throws {
        weight = try Tensor.randn([count, dimensions])
        super.init()
    }

    /// Looks up int64 `indices` of any shape; the result has one more dimension.
    public func callAsFunction(_ indices: Tensor) throws -> Tensor {
        try weight.embedding(indices)
    }
}

/// Inverted dropout that is active only in training mode.
public final class Dropout: Module, UnaryLayer {
    public let probability: Double
    public let generator: Generator?

    public init(_ probability: Double, generator: Generator? = nil) throws {
        guard (0..<1).contains(probability) else {
            throw ModuleError.invalidConfiguration("dropout probability \(probability) outside [0, 1)")
        }
        self.probability = probability
        // Built inside `Torch.withSeed`, the layer keeps drawing from that scope's generator,
        // so a seeded model's dropout masks are reproducible too.
        self.generator = generator ?? Generator.scoped
        super.init()
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        guard isTraining, probability > 0 else { return x }
        return try x.dropout(probability, generator: generator)
    }
}

/// `x * sigmoid(x)`.
public struct SiLU: UnaryLayer {
    public init() {}
    public func callAsFunction(_ x: Tensor) throws -> Tensor { try x.silu() }
}

/// GELU, exact (erf) form.
public struct GELU: UnaryLayer {
    public init() {}
    public func callAsFunction(_ x: Tensor) throws -> Tensor { try x.gelu() }
}
