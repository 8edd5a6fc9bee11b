import Foundation
import Torch

/// Full-reference image quality, per image, for images in [-1, 1] (mapped to [0, 1] first, the
/// data range every published PSNR/SSIM of 8-bit images uses).
public enum ImageQuality {
    /// Peak signal-to-noise ratio in dB of each image of `images` against `reference` (`[B, C,
    /// H, W]`): `10·log10(1 / MSE)` over all channels. Identical images give +∞.
    public static func psnr(_ images: Tensor, _ reference: Tensor) throws -> [Double] {
        try checkShapes(images, reference)
        let a: Tensor = try unit(images), b: Tensor = try unit(reference)
        let difference: Tensor = try a - b
        let perImage = try difference.square().reshaped([images.shape[0], -1]).mean(dims: [1])
        let mse = try perImage.to(DType.float64).scalars(as: Double.self)
        return mse.map { $0 == 0 ? .infinity : 10 * Foundation.log10(1 / $0) }
    }

    /// The structural similarity index (Wang et al. 2004) of each image against `reference`:
    /// an 11×11 Gaussian window with σ = 1.5, K1 = 0.01, K2 = 0.03, data range 1, statistics per
    /// channel over the "valid" windows (no padding), the mean over windows and channels — the
    /// reference implementation's settings (and scikit-image's `gaussian_weights=True`).
    public static func ssim(_ images: Tensor, _ reference: Tensor) throws -> [Double] {
        try checkShapes(images, reference)
        let s = images.shape
        guard s[2] >= 11, s[3] >= 11 else {
            throw EvaluationError.invalidInput("SSIM needs images of at least 11×11, got \(s[2])×\(s[3])")
        }
        let (b, c) = (s[0], s[1])
        let x = try unit(images).to(.float64).reshaped([b * c, 1, s[2], s[3]])
        let y = try unit(reference).to(.float64).reshaped([b * c, 1, s[2], s[3]])
        let g = (-5...5).map { Foundation.exp(-Double($0 * $0) / (2 * 1.5 * 1.5)) }
        let total = g.reduce(0, +)
        let kernel1d = g.map { $0 / total }
        var window = [Double]()
        for i in 0..<11 { for j in 0..<11 { window.append(kernel1d[i] * kernel1d[j]) } }
        let w = try Tensor(window, shape: [1, 1, 11, 11])
        func blur(_ t: Tensor) throws -> Tensor { try t.conv2d(weight: w) }
        let muX = try blur(x), muY = try blur(y)
        let varX = try blur(x * x) - muX * muX
        let varY = try blur(y * y) - muY * muY
        let cov = try blur(x * y) - muX * muY
        let c1 = 0.01 * 0.01, c2 = 0.03 * 0.03
        let map = try ((muX * muY * 2 + c1) * (cov * 2 + c2)) / ((muX * muX + muY * muY + c1) * (varX + varY + c2))
        return try map.reshaped([b, -1]).mean(dims: [1]).scalars(as: Double.self)
    }

    static func unit(_ t: Tensor) throws -> Tensor { try ((t.to(.float32) + 1) * 0.5).clamped(min: 0, max: 1) }

    static func checkShapes(_ a: Tensor, _ b: Tensor) throws {
        guard a.rank == 4, a.shape == b.shape, a.shape[0] > 0 else {
            throw EvaluationError.invalidInput("image quality needs two [B, C, H, W] batches of one shape, got \(a.shape) and \(b.shape)")
        }
    }
}
