import Foundation
import Testing
import Torch

@testable import Evaluation

@Suite("Image quality (PSNR, SSIM)")
struct ImageQualityTests {
    /// PSNR of a uniform error d (in [0, 1] units) is −20·log10(d); identical images give +∞;
    /// the images are read in [-1, 1].
    @Test func psnrOfAKnownError() throws {
        let a = try Tensor.rand([2, 3, 16, 16], generator: Generator(seed: 1)) * 1.6 - 0.8
        let shifted = try a + 0.2  // 0.1 in [0, 1] units
        let values = try ImageQuality.psnr(shifted, a)
        for v in values { #expect(abs(v - 20) < 1e-3) }
        #expect(try ImageQuality.psnr(a, a).allSatisfy { $0 == .infinity })
        #expect(throws: EvaluationError.self) { try ImageQuality.psnr(a, a.slice(dim: 0, 0, 1)) }
    }

    /// SSIM: 1 for identical images; for two flat images u and v (σ = 0) exactly
    /// (2uv + C1)/(u² + v² + C1); symmetric; lower for a noisier copy; too-small images refused.
    @Test func ssimMatchesItsDefinition() throws {
        let x = try Tensor.rand([1, 3, 24, 24], generator: Generator(seed: 2)) * 2 - 1
        #expect(try abs(ImageQuality.ssim(x, x)[0] - 1) < 1e-9)
        let (u, v) = (0.3, 0.5)
        let flatU = try Tensor.full([1, 1, 16, 16], value: 2 * u - 1), flatV = try Tensor.full([1, 1, 16, 16], value: 2 * v - 1)
        let c1 = 0.0001
        let expected = (2 * u * v + c1) / (u * u + v * v + c1)
        #expect(try abs(ImageQuality.ssim(flatU, flatV)[0] - expected) < 1e-6)
        let noise = try Tensor.randn([1, 3, 24, 24], generator: Generator(seed: 3))
        let slightly = try ImageQuality.ssim(x + noise * 0.05, x)[0], badly = try ImageQuality.ssim(x + noise * 0.3, x)[0]
        #expect(slightly < 1 && badly < slightly)
        #expect(try abs(ImageQuality.ssim(x, x + noise * 0.05)[0] - slightly) < 1e-9)
        #expect(throws: EvaluationError.self) { try ImageQuality.ssim(Tensor.zeros([1, 3, 8, 8]), Tensor.zeros([1, 3, 8, 8])) }
    }
}
