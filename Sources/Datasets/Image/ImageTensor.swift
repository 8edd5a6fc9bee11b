import Torch

/// Conversion between 8-bit images and the float tensors the models consume: channels first,
/// values in [-1, 1] (`v / 127.5 - 1`), the usual diffusion convention.
extension RGBImage {
    /// The image as a float32 tensor `[3, height, width]` in [-1, 1].
    public func tensor() throws -> Tensor {
        try Tensor(chwFloats(), shape: [3, height, width])
    }

    /// A float32 batch `[B, 3, H, W]` in [-1, 1]; every image must have the same size.
    public static func batch(_ images: [RGBImage]) throws -> Tensor {
        guard let first = images.first else {
            throw ImageIOError.invalidImage("cannot make a batch of zero images")
        }
        var values = [Float]()
        values.reserveCapacity(images.count * first.pixels.count)
        for (i, image) in images.enumerated() {
            guard image.width == first.width, image.height == first.height else {
                throw ImageIOError.invalidImage(
                    "image \(i) is \(image.width)×\(image.height), image 0 is \(first.width)×\(first.height)")
            }
            values.append(contentsOf: image.chwFloats())
        }
        return try Tensor(values, shape: [images.count, 3, first.height, first.width])
    }

    /// An image from a tensor `[3, H, W]` in [-1, 1] (any floating dtype). Values are clamped to
    /// [-1, 1] and rounded to the nearest 8-bit level; NaN becomes mid-gray.
    public init(tensor: Tensor) throws {
        let shape = tensor.shape
        guard shape.count == 3, shape[0] == 3, shape[1] > 0, shape[2] > 0 else {
            throw ImageIOError.invalidImage("expected a [3, H, W] tensor, got shape \(shape)")
        }
        let values = try tensor.to(.float32).contiguous().scalars(as: Float.self)
        try self.init(chw: values[...], height: shape[1], width: shape[2])
    }

    /// The images of a batch `[B, 3, H, W]` in [-1, 1].
    public static func images(fromBatch batch: Tensor) throws -> [RGBImage] {
        let shape = batch.shape
        guard shape.count == 4, shape[1] == 3, shape[2] > 0, shape[3] > 0 else {
            throw ImageIOError.invalidImage("expected a [B, 3, H, W] tensor, got shape \(shape)")
        }
        let values = try batch.to(.float32).contiguous().scalars(as: Float.self)
        let per = 3 * shape[2] * shape[3]
        return try (0..<shape[0]).map { b in
            try RGBImage(chw: values[(b * per)..<((b + 1) * per)], height: shape[2], width: shape[3])
        }
    }

    private init(chw values: ArraySlice<Float>, height: Int, width: Int) throws {
        let plane = height * width
        let base = values.startIndex
        var bytes = [UInt8](repeating: 0, count: plane * 3)
        for c in 0..<3 {
            for p in 0..<plane {
                let v = values[base + c * plane + p]
                let level: Float = v.isNaN ? 127.5 : (Swift.min(Swift.max(v, -1), 1) + 1) * 127.5
                bytes[p * 3 + c] = UInt8(level.rounded())
            }
        }
        try self.init(width: width, height: height, pixels: bytes)
    }

    private func chwFloats() -> [Float] {
        let plane = width * height
        var out = [Float](repeating: 0, count: plane * 3)
        for p in 0..<plane {
            for c in 0..<3 { out[c * plane + p] = Float(pixels[p * 3 + c]) / 127.5 - 1 }
        }
        return out
    }
}
