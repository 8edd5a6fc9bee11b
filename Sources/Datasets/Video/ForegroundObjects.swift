/// One object found in a frame by ``ForegroundObjects``: a connected region of pixels that
/// differ from the background.
public struct ForegroundObject: Sendable, Equatable {
    /// `[x0, y0, x1, y1]` as fractions of the image side (y down), the pixels' outer edges.
    public var box: [Double]
    /// Pixels in the region.
    public var area: Int
    /// The palette colour most of its saturated pixels are nearest to in hue, or nil when too
    /// few of them are saturated (a grey or dark object).
    public var color: ObjectColor?

    public init(box: [Double], area: Int, color: ObjectColor?) {
        self.box = box
        self.area = area
        self.color = color
    }

    /// The box's centre, `(x, y)` in fractions of the side.
    public var center: (x: Double, y: Double) { ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) }
}

/// Finds the objects of a frame with a plain background (the benchmark's white canvas, a clip
/// drawn on one colour): the background is the median colour of the border pixels, a pixel is
/// foreground when some channel differs from it by more than ``threshold``, and each
/// 8-connected region of at least ``minimumArea`` pixels is one object. Anti-aliased edges are
/// part of their object. Meant for simple clips, not for natural video; a frame whose border is
/// not mostly one colour has no reliable background, and ``objects(in:)`` returns nil for it.
public struct ForegroundObjects: Sendable {
    /// The least channel difference (0...255) from the background that makes a pixel foreground.
    public var threshold: Int
    /// Regions smaller than this are noise.
    public var minimumArea: Int
    /// The least share of border pixels within ``threshold`` of the background colour.
    public var minimumBorderAgreement: Double

    public init(threshold: Int = 48, minimumArea: Int = 4, minimumBorderAgreement: Double = 0.8) {
        self.threshold = threshold
        self.minimumArea = minimumArea
        self.minimumBorderAgreement = minimumBorderAgreement
    }

    /// The objects of `image`, largest first; nil when its background is not one colour.
    public func objects(in image: RGBImage) -> [ForegroundObject]? {
        let (w, h) = (image.width, image.height)
        var border: [RGBColor] = []
        for x in 0..<w { border.append(image[x, 0]); border.append(image[x, h - 1]) }
        for y in 1..<max(1, h - 1) { border.append(image[0, y]); border.append(image[w - 1, y]) }
        func median(_ values: [UInt8]) -> UInt8 { values.sorted()[values.count / 2] }
        let background = RGBColor(median(border.map(\.r)), median(border.map(\.g)), median(border.map(\.b)))
        func differs(_ c: RGBColor) -> Bool {
            max(abs(Int(c.r) - Int(background.r)), abs(Int(c.g) - Int(background.g)), abs(Int(c.b) - Int(background.b))) > threshold
        }
        let agreeing = border.filter { !differs($0) }.count
        guard Double(agreeing) >= minimumBorderAgreement * Double(border.count) else { return nil }

        var visited = [Bool](repeating: false, count: w * h)
        var found: [ForegroundObject] = []
        let checker = ColorPositionChecker()
        for start in 0..<(w * h) where !visited[start] && differs(image[start % w, start / w]) {
            // Flood fill (8-connected) from `start`.
            var stack = [start], members: [Int] = []
            visited[start] = true
            while let i = stack.popLast() {
                members.append(i)
                let (x, y) = (i % w, i / w)
                for dy in -1...1 {
                    for dx in -1...1 where dx != 0 || dy != 0 {
                        let (nx, ny) = (x + dx, y + dy)
                        guard nx >= 0, nx < w, ny >= 0, ny < h else { continue }
                        let j = ny * w + nx
                        if !visited[j], differs(image[nx, ny]) {
                            visited[j] = true
                            stack.append(j)
                        }
                    }
                }
            }
            guard members.count >= minimumArea else { continue }
            var (x0, y0, x1, y1) = (w, h, 0, 0)
            var votes: [ObjectColor: Int] = [:]
            for i in members {
                let (x, y) = (i % w, i / w)
                (x0, y0, x1, y1) = (min(x0, x), min(y0, y), max(x1, x + 1), max(y1, y + 1))
                if case let .color(c) = checker.classify(image[x, y]) { votes[c, default: 0] += 1 }
            }
            let color = votes.max { a, b in a.value != b.value ? a.value < b.value : b.key < a.key }
                .flatMap { 2 * $0.value >= members.count ? $0.key : nil }
            found.append(ForegroundObject(
                box: [Double(x0) / Double(w), Double(y0) / Double(h), Double(x1) / Double(w), Double(y1) / Double(h)],
                area: members.count, color: color))
        }
        return found.sorted { $0.area > $1.area }
    }
}
