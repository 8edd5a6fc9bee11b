/// An 8-bit sRGB color.
public struct RGBColor: Hashable, Codable, Sendable, CustomStringConvertible {
    public var r: UInt8
    public var g: UInt8
    public var b: UInt8

    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) {
        self.r = r
        self.g = g
        self.b = b
    }

    public static let white = RGBColor(255, 255, 255)
    public static let black = RGBColor(0, 0, 0)

    public var description: String { "rgb(\(r), \(g), \(b))" }
}

/// An 8-bit RGB image: `width × height` pixels stored row-major, top row first, 3 bytes per pixel
/// (`pixels.count == width * height * 3`).
public struct RGBImage: Hashable, Sendable {
    public let width: Int
    public let height: Int
    /// Interleaved R, G, B bytes, row-major.
    public private(set) var pixels: [UInt8]

    /// Wraps existing interleaved RGB bytes; throws if the count does not match the size.
    public init(width: Int, height: Int, pixels: [UInt8]) throws {
        guard width > 0, height > 0 else {
            throw ImageIOError.invalidImage("image size must be positive, got \(width)×\(height)")
        }
        guard pixels.count == width * height * 3 else {
            throw ImageIOError.invalidImage(
                "\(pixels.count) bytes do not fill a \(width)×\(height) RGB image (\(width * height * 3) bytes)")
        }
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// An image filled with one color. Sizes below 1 are clamped to 1.
    public init(width: Int, height: Int, fill color: RGBColor = .white) {
        self.width = Swift.max(1, width)
        self.height = Swift.max(1, height)
        var bytes = [UInt8](repeating: 0, count: self.width * self.height * 3)
        for i in stride(from: 0, to: bytes.count, by: 3) {
            bytes[i] = color.r
            bytes[i + 1] = color.g
            bytes[i + 2] = color.b
        }
        self.pixels = bytes
    }

    /// The pixel at column `x`, row `y` (both must be in range).
    public subscript(x: Int, y: Int) -> RGBColor {
        get {
            precondition(x >= 0 && x < width && y >= 0 && y < height, "pixel (\(x), \(y)) outside \(width)×\(height)")
            let i = (y * width + x) * 3
            return RGBColor(pixels[i], pixels[i + 1], pixels[i + 2])
        }
        set {
            precondition(x >= 0 && x < width && y >= 0 && y < height, "pixel (\(x), \(y)) outside \(width)×\(height)")
            let i = (y * width + x) * 3
            pixels[i] = newValue.r
            pixels[i + 1] = newValue.g
            pixels[i + 2] = newValue.b
        }
    }

    /// The image mirrored left-right.
    public func flippedHorizontally() -> RGBImage {
        var out = self
        for y in 0..<height {
            for x in 0..<width { out[x, y] = self[width - 1 - x, y] }
        }
        return out
    }

    /// The image mirrored top-bottom.
    public func flippedVertically() -> RGBImage {
        var out = self
        for y in 0..<height {
            for x in 0..<width { out[x, y] = self[x, height - 1 - y] }
        }
        return out
    }

    /// The sub-image with top-left corner (`x`, `y`) and the given size; throws if it leaves the image.
    public func cropped(x: Int, y: Int, width w: Int, height h: Int) throws -> RGBImage {
        guard w > 0, h > 0, x >= 0, y >= 0, x + w <= width, y + h <= height else {
            throw ImageIOError.invalidImage("crop \(w)×\(h) at (\(x), \(y)) leaves a \(width)×\(height) image")
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(w * h * 3)
        for row in y..<(y + h) {
            let start = (row * width + x) * 3
            bytes.append(contentsOf: pixels[start..<(start + w * 3)])
        }
        return try RGBImage(width: w, height: h, pixels: bytes)
    }

    /// Copies `other` into this image with its top-left corner at (`x`, `y`), clipping at the edges.
    public mutating func paste(_ other: RGBImage, x: Int, y: Int) {
        for sy in 0..<other.height {
            let ty = y + sy
            guard ty >= 0, ty < height else { continue }
            for sx in 0..<other.width {
                let tx = x + sx
                guard tx >= 0, tx < width else { continue }
                self[tx, ty] = other[sx, sy]
            }
        }
    }
}
