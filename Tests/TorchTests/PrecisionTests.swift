import Foundation
import Testing
@testable import Torch

@Suite("Mixed precision (bf16 autocast)")
struct PrecisionTests {
    /// Inside a bf16 scope products and convolutions compute in bfloat16 and hand back float32
    /// (rounded as bfloat16 products are), the rest stays float32; outside, full float32 again.
    @Test func bf16ScopeRunsProductsInBFloat16AndEnds() throws {
        let g = Generator(seed: 1)
        let x = try Tensor.randn([2, 4, 8, 8], generator: g)
        let w = try Tensor.randn([4, 4, 3, 3], generator: g)
        let a = try Tensor.randn([16, 8], generator: g), b = try Tensor.randn([8, 5], generator: g)
        let (conv, product, normed) = try Torch.withPrecision(.bf16, on: .cpu) {
            let c = try x.conv2d(weight: w, bias: nil, padding: 1)
            let n = try c.groupNorm(groups: 2, weight: Tensor.ones([4]), bias: Tensor.zeros([4]))
            return (c, try a.matmul(b), n)
        }
        #expect(conv.dtype == .float32 && product.dtype == .float32 && normed.dtype == .float32)
        // bfloat16's 8-bit mantissa: within a few 1e-3 of float32, relative to the values' size.
        let reference = try a.matmul(b)
        #expect(reference.dtype == .float32)
        let err = try (product - reference).abs().max().item() / (try reference.abs().max().item())
        #expect(err < 2e-2, "bf16 product off by \(err)")
        #expect(err > 0, "the product was not computed in bfloat16")
        #expect(try x.conv2d(weight: w, bias: nil, padding: 1).dtype == .float32)
        // fp32 is no scope at all.
        #expect(try Torch.withPrecision(.fp32, on: .cpu) { try a.matmul(b) }.dtype == .float32)
    }

    @Test func automaticPrecisionFollowsTheCPUFlags() {
        let (picked, reason) = Precision.automatic(for: .cpu)
        let native = !(CPUFeatures.bf16Flags ?? []).isEmpty
        #expect(picked == (native ? .bf16 : .fp32), "\(reason)")
        #expect(Precision.automatic(for: .cuda(0)).precision == .fp32)
    }
}

extension PrecisionTests {
    /// Gradients flow through the bfloat16 products to the float32 weights, close to float32's.
    @Test func bf16GradientsReachFloat32Weights() throws {
        let g = Generator(seed: 2)
        let x = try Tensor.randn([3, 4, 6, 6], generator: g)
        func grad(_ p: Precision) throws -> Tensor {
            let w = try Tensor.randn([5, 4, 3, 3], generator: Generator(seed: 4)).requiringGrad()
            let y = try Torch.withPrecision(p, on: .cpu) { try x.conv2d(weight: w, bias: nil, padding: 1) }
            try (y * y).sum().backward()
            let gw = try #require(w.grad)
            #expect(gw.dtype == .float32)
            return gw
        }
        let full = try grad(.fp32), mixed = try grad(.bf16)
        let err = try (mixed - full).abs().max().item() / (try full.abs().max().item())
        #expect(err > 0 && err < 3e-2, "bf16 weight gradient off by \(err)")
    }
}

extension PrecisionTests {
    /// The scope's own float32 → bfloat16 conversion rounds exactly as libtorch's (to nearest,
    /// ties to even): a product in the scope equals the product of libtorch-converted operands,
    /// bit for bit, for row-major and channels-last inputs, with and without autograd.
    @Test func bf16ScopeConvertsExactlyAsLibtorch() throws {
        let g = Generator(seed: 5)
        // Values that exercise rounding: many ties once scaled by powers of two.
        let a = try (Tensor.randn([33, 70], generator: g) * 1000).rounded() / 256
        let b = try Tensor.randn([70, 9], generator: g)
        let inScope = try Torch.withPrecision(.bf16, on: .cpu) { try a.matmul(b) }
        let byHand = try a.to(.bfloat16).matmul(b.to(.bfloat16)).to(.float32)
        #expect(try (inScope - byHand).abs().max().item() == 0)

        let x = try Tensor.randn([2, 8, 5, 5], generator: g).channelsLast()
        let w = try Tensor.randn([4, 8, 3, 3], generator: g).requiringGrad()
        let y = try Torch.withPrecision(.bf16, on: .cpu) { try x.conv2d(weight: w, bias: nil, padding: 1) }
        let reference = try x.to(.bfloat16).conv2d(weight: w.detached().to(.bfloat16), bias: nil, padding: 1).to(.float32)
        #expect(try (y - reference).abs().max().item() == 0)
    }
}
