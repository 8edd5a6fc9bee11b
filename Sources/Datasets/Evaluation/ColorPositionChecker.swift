/// A part of an image. For odd sizes the halves exclude the middle column or row.
public enum ImageRegion: String, Sendable, CaseIterable {
    case all, leftHalf, rightHalf, topHalf, bottomHalf

    /// The pixel ranges (columns, rows) of the region in a `width × height` image.
    public func bounds(width: Int, height: Int) -> (x: Range<Int>, y: Range<Int>) {
        switch self {
        case .all: (0..<width, 0..<height)
        case .leftHalf: (0..<(width / 2), 0..<height)
        case .rightHalf: (((width + 1) / 2)..<width, 0..<height)
        case .topHalf: (0..<width, 0..<(height / 2))
        case .bottomHalf: (0..<width, ((height + 1) / 2)..<height)
        }
    }
}

/// What a pixel shows, according to ``ColorPositionChecker/classify(_:)``.
public enum PixelClass: Hashable, Sendable {
    /// Near white or gray (low saturation).
    case background
    /// Too dark to name a hue.
    case dark
    /// Saturated; the palette color nearest in hue.
    case color(ObjectColor)
}

/// A pixel-level color and position checker (the color/position metric of the evaluation):
/// pixels are background when unsaturated, otherwise the palette color nearest in hue (hue is
/// unchanged by anti-aliasing against white, so edge pixels vote correctly). A region is
/// dominated by the color with the most pixels, provided it covers at least
/// ``minimumFraction`` of the region.
public struct ColorPositionChecker: Sendable {
    /// Pixels with HSV saturation below this are background.
    public var minimumSaturation: Double
    /// Pixels with HSV value below this are ``PixelClass/dark`` (no reliable hue).
    public var minimumValue: Double
    /// The least share of a region's pixels the dominant color must cover.
    public var minimumFraction: Double

    public init(minimumSaturation: Double = 0.3, minimumValue: Double = 0.25, minimumFraction: Double = 0.01) {
        self.minimumSaturation = minimumSaturation
        self.minimumValue = minimumValue
        self.minimumFraction = minimumFraction
    }

    public func classify(_ pixel: RGBColor) -> PixelClass {
        let hsv = HSV(pixel)
        if hsv.value < minimumValue { return .dark }
        if hsv.saturation < minimumSaturation { return .background }
        var best = ObjectColor.red, bestDistance = Double.infinity
        for color in ObjectColor.allCases {
            let d = abs(hsv.hue - Self.hues[color]!)
            let distance = Swift.min(d, 360 - d)
            if distance < bestDistance { (best, bestDistance) = (color, distance) }
        }
        return .color(best)
    }

    /// The number of pixels of each palette color in `region`.
    public func colorCounts(in image: RGBImage, region: ImageRegion = .all) -> [ObjectColor: Int] {
        let (xs, ys) = region.bounds(width: image.width, height: image.height)
        var counts = [ObjectColor: Int]()
        for y in ys {
            for x in xs {
                if case let .color(c) = classify(image[x, y]) { counts[c, default: 0] += 1 }
            }
        }
        return counts
    }

    /// The palette color with the most pixels in `region` (ties go to the earlier color of
    /// ``ObjectColor/allCases``), or nil when no color covers ``minimumFraction`` of it.
    public func dominantColor(of image: RGBImage, region: ImageRegion = .all) -> ObjectColor? {
        let (xs, ys) = region.bounds(width: image.width, height: image.height)
        let needed = Swift.max(1, Int((minimumFraction * Double(xs.count * ys.count)).rounded(.up)))
        let counts = colorCounts(in: image, region: region)
        var best: (ObjectColor, Int)?
        for color in ObjectColor.allCases {
            if let n = counts[color], n >= needed, n > (best?.1 ?? 0) { best = (color, n) }
        }
        return best?.0
    }

    /// Whether the image's dominant color is the prompt's (single-object prompts).
    public func singleObjectColorCorrect(_ image: RGBImage, prompt: PromptSpec) -> Bool {
        guard let target = prompt.objects.first?.color else { return false }
        return dominantColor(of: image, region: .all) == target
    }

    /// Whether "A rel B" holds by color: for "A left of B" the left half is dominated by A's
    /// color and the right half by B's (above: top/bottom; "right of" and "below" mirrored).
    public func twoObjectCorrect(_ image: RGBImage, prompt: PromptSpec) -> Bool {
        guard prompt.objects.count == 2, let relation = prompt.relation else { return false }
        let (a, b) = (prompt.objects[0].color, prompt.objects[1].color)
        let (regionA, regionB): (ImageRegion, ImageRegion) = switch relation {
        case .leftOf: (.leftHalf, .rightHalf)
        case .rightOf: (.rightHalf, .leftHalf)
        case .above: (.topHalf, .bottomHalf)
        case .below: (.bottomHalf, .topHalf)
        }
        return dominantColor(of: image, region: regionA) == a && dominantColor(of: image, region: regionB) == b
    }

    /// ``singleObjectColorCorrect(_:prompt:)`` or ``twoObjectCorrect(_:prompt:)`` by the prompt's kind.
    public func isCorrect(_ image: RGBImage, prompt: PromptSpec) -> Bool {
        prompt.kind == .singleObject ? singleObjectColorCorrect(image, prompt: prompt) : twoObjectCorrect(image, prompt: prompt)
    }

    private static let hues: [ObjectColor: Double] = Dictionary(
        uniqueKeysWithValues: ObjectColor.allCases.map { ($0, $0.hue) })
}
