import Testing
import Torch
import NN
import TestSupport

/// Finite-difference checks (float64) of every layer's gradients, inputs and parameters alike.
/// The loss is `sum(output * R)` with a fixed random `R`, so that no gradient vanishes by symmetry
/// (a plain sum of a normalised output would have zero gradient).
@Suite("Gradient checks (float64 finite differences)")
struct GradientCheckTests {
    init() { Torch.manualSeed(1234) }

    func input(_ shape: [Int]) throws -> Tensor {
        try Tensor.randn(shape, dtype: .float64).requiringGrad()
    }

    /// Runs the check on `module`'s parameters plus `extra` inputs.
    func check(
        _ module: Module, inputs extra: [(String, Tensor)], rtol: Double = 1e-4,
        _ forward: () throws -> Tensor
    ) throws -> GradientCheckReport {
        try module.convert(to: .float64)
        // Make affine parameters non-trivial so that their gradients are probed at generic points.
        try Torch.withNoGrad {
            for p in module.parameters() { try p.addInPlace(Tensor.randn(p.shape, dtype: .float64) * 0.1) }
        }
        try module.requireGrad()
        let outShape = try forward().shape
        let weights = try Tensor.randn(outShape, dtype: .float64)
        let all = module.namedParameters() + extra
        return try gradientCheck(all.map { (name: $0.0, tensor: $0.1) }, rtol: rtol) {
            try (forward() * weights).sum()
        }
    }

    @Test func linear() throws {
        let layer = try Linear(5, 3)
        let x = try input([4, 5])
        let r = try check(layer, inputs: [("x", x)]) { try layer(x) }
        #expect(r.passed, "\(r)")
    }

    @Test func conv2d() throws {
        let layer = try Conv2d(4, 6, kernel: 3, stride: 2, padding: 1, groups: 2)
        let x = try input([2, 4, 5, 5])
        let r = try check(layer, inputs: [("x", x)]) { try layer(x) }
        #expect(r.passed, "\(r)")
    }

    @Test func groupNorm() throws {
        let layer = try GroupNorm(groups: 2, channels: 4)
        let x = try input([2, 4, 3, 3])
        let r = try check(layer, inputs: [("x", x)]) { try layer(x) }
        #expect(r.passed, "\(r)")
    }

    @Test func layerNorm() throws {
        let layer = try LayerNorm(6)
        let x = try input([3, 6])
        let r = try check(layer, inputs: [("x", x)]) { try layer(x) }
        #expect(r.passed, "\(r)")
    }

    @Test func embedding() throws {
        let layer = try Embedding(7, 4)
        let ids = try Tensor([Int64(0), 3, 3, 6, 1], shape: [5])
        let r = try check(layer, inputs: []) { try layer(ids) }
        #expect(r.passed, "\(r)")
    }

    @Test func activations() throws {
        let x = try input([3, 7])
        let w = try Tensor.randn([3, 7], dtype: .float64)
        for (name, f) in [("silu", { (t: Tensor) in try SiLU()(t) }), ("gelu", { (t: Tensor) in try GELU()(t) })] {
            let r = try gradientCheck([(name: "x", tensor: x)]) { try (f(x) * w).sum() }
            #expect(r.passed, "\(name): \(r)")
        }
    }

    @Test func selfAttentionCausal() throws {
        let attention = try MultiHeadAttention(queryDim: 8, heads: 2, bias: true)
        let x = try input([2, 4, 8])
        let r = try check(attention, inputs: [("x", x)]) { try attention(x, causal: true) }
        #expect(r.passed, "\(r)")
    }

    @Test func crossAttentionWithMask() throws {
        let attention = try MultiHeadAttention(queryDim: 8, contextDim: 6, heads: 4)
        let x = try input([2, 3, 8])
        let context = try input([2, 5, 6])
        let mask = try Tensor([true, true, true, false, false, true, true, true, true, true], shape: [2, 5])
        let r = try check(attention, inputs: [("x", x), ("context", context)]) {
            try attention(x, context: context, keyMask: mask)
        }
        #expect(r.passed, "\(r)")
        // Masked keys must receive no gradient at all.
        let g = try #require(context.grad)
        let maskedRows = try g.select(dim: 0, 0).slice(dim: 0, 3, 5).abs().max().item()
        #expect(maskedRows == 0)
    }

    @Test func functionalKernels() throws {
        let x = try input([1, 2, 3, 3])
        let w = try input([2, 3, 2, 2])
        let up = try Tensor.randn([1, 3, 4, 4], dtype: .float64)
        let r1 = try gradientCheck([(name: "x", tensor: x), (name: "w", tensor: w)]) {
            try (x.convTranspose2d(weight: w, stride: 1) * up).sum()
        }
        #expect(r1.passed, "conv_transpose2d: \(r1)")
        let v = try input([1, 2, 3, 4, 4])
        let k = try input([3, 2, 2, 3, 3])
        let r2 = try gradientCheck([(name: "v", tensor: v), (name: "k", tensor: k)]) {
            try v.conv3d(weight: k, padding: (0, 1, 1)).square().sum()
        }
        #expect(r2.passed, "conv3d: \(r2)")
        let y = try input([1, 2, 3, 3])
        let r3 = try gradientCheck([(name: "y", tensor: y)]) {
            try (y.interpolate(size: (5, 6), mode: .bilinear(alignCorners: false)).square()).sum()
        }
        #expect(r3.passed, "bilinear: \(r3)")
    }
}
