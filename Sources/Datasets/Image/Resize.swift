/// How ``RGBImage/resized(width:height:filter:)`` resamples.
public enum ResizeFilter: String, Sendable, Codable, CaseIterable {
    /// Bilinear interpolation between pixel centers (half-pixel convention, like
    /// `interpolate(mode: bilinear, align_corners: false)` without antialiasing).
    case bilinear
    /// Exact area averaging: each output pixel is the coverage-weighted mean of the input pixels
    /// under it (like `adaptive_avg_pool2d` for integer factors). The right filter for shrinking.
    case area
    /// Per axis: area when shrinking, bilinear when enlarging.
    case automatic
}

extension RGBImage {
    /// The image resampled to `width × height`. Separable; computed in Float and rounded to 8 bits.
    public func resized(width newWidth: Int, height newHeight: Int, filter: ResizeFilter = .automatic) throws -> RGBImage {
        guard newWidth > 0, newHeight > 0 else {
            throw ImageIOError.invalidImage("resize to non-positive size \(newWidth)×\(newHeight)")
        }
        if newWidth == width, newHeight == height { return self }
        let xTaps = Self.taps(from: width, to: newWidth, filter: filter)
        let yTaps = Self.taps(from: height, to: newHeight, filter: filter)

        // Horizontal pass: height × newWidth × 3 floats.
        var horizontal = [Float](repeating: 0, count: height * newWidth * 3)
        for y in 0..<height {
            for x in 0..<newWidth {
                var r: Float = 0, g: Float = 0, b: Float = 0
                for tap in xTaps[x] {
                    let i = (y * width + tap.index) * 3
                    r += tap.weight * Float(pixels[i])
                    g += tap.weight * Float(pixels[i + 1])
                    b += tap.weight * Float(pixels[i + 2])
                }
                let o = (y * newWidth + x) * 3
                horizontal[o] = r
                horizontal[o + 1] = g
                horizontal[o + 2] = b
            }
        }
        // Vertical pass.
        var bytes = [UInt8](repeating: 0, count: newHeight * newWidth * 3)
        for y in 0..<newHeight {
            for x in 0..<newWidth {
                for c in 0..<3 {
                    var v: Float = 0
                    for tap in yTaps[y] { v += tap.weight * horizontal[(tap.index * newWidth + x) * 3 + c] }
                    bytes[(y * newWidth + x) * 3 + c] = UInt8(Swift.min(Swift.max(v, 0), 255).rounded())
                }
            }
        }
        return try RGBImage(width: newWidth, height: newHeight, pixels: bytes)
    }

    /// The central `width × height` region (the crop starts at `(W - width) / 2`, rounded down).
    public func centerCropped(width w: Int, height h: Int) throws -> RGBImage {
        guard w <= width, h <= height else {
            throw ImageIOError.invalidImage("center crop \(w)×\(h) is larger than the \(width)×\(height) image")
        }
        return try cropped(x: (width - w) / 2, y: (height - h) / 2, width: w, height: h)
    }

    /// Scales the image so that it covers `width × height` (the shorter side fits exactly) and
    /// center-crops the rest: the usual preprocessing of text-to-image training data.
    public func resizedToFill(width w: Int, height h: Int, filter: ResizeFilter = .automatic) throws -> RGBImage {
        guard w > 0, h > 0 else { throw ImageIOError.invalidImage("target size must be positive, got \(w)×\(h)") }
        let scale = Swift.max(Double(w) / Double(width), Double(h) / Double(height))
        let sw = Swift.max(w, Int((Double(width) * scale).rounded()))
        let sh = Swift.max(h, Int((Double(height) * scale).rounded()))
        return try resized(width: sw, height: sh, filter: filter).centerCropped(width: w, height: h)
    }

    struct Tap {
        var index: Int
        var weight: Float
    }

    /// For every output coordinate, the input indices and weights (summing to 1) along one axis.
    static func taps(from inSize: Int, to outSize: Int, filter: ResizeFilter) -> [[Tap]] {
        let useArea: Bool = switch filter {
        case .area: true
        case .bilinear: false
        case .automatic: outSize < inSize
        }
        let scale = Double(inSize) / Double(outSize)
        return (0..<outSize).map { o in
            if useArea {
                let lo = Double(o) * scale, hi = Double(o + 1) * scale
                var taps = [Tap]()
                var j = Int(lo.rounded(.down))
                while Double(j) < hi, j < inSize {
                    let overlap = Swift.min(hi, Double(j + 1)) - Swift.max(lo, Double(j))
                    if overlap > 1e-12 { taps.append(Tap(index: j, weight: Float(overlap / scale))) }
                    j += 1
                }
                return taps
            } else {
                let center = Swift.min(Swift.max((Double(o) + 0.5) * scale - 0.5, 0), Double(inSize - 1))
                let j0 = Int(center.rounded(.down))
                let j1 = Swift.min(j0 + 1, inSize - 1)
                let f = center - Double(j0)
                if j1 == j0 || f < 1e-12 { return [Tap(index: j0, weight: 1)] }
                return [Tap(index: j0, weight: Float(1 - f)), Tap(index: j1, weight: Float(f))]
            }
        }
    }
}

extension RGBImage {
    /// The image enlarged `factor` times in each direction by repeating pixels (nearest
    /// neighbour): what a 32-pixel figure needs to be seen.
    public func enlarged(by factor: Int) throws -> RGBImage {
        guard factor >= 1, factor <= 64 else { throw ImageIOError.invalidImage("enlargement factor must be in 1...64, got \(factor)") }
        let (w, h) = (width * factor, height * factor)
        var out = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            for x in 0..<w {
                let from = ((y / factor) * width + x / factor) * 3, to = (y * w + x) * 3
                out[to] = pixels[from]
                out[to + 1] = pixels[from + 1]
                out[to + 2] = pixels[from + 2]
            }
        }
        return try RGBImage(width: w, height: h, pixels: out)
    }
}
