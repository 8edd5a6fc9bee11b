extension RGBImage {
    /// Composes equally sized images into a grid of `columns` columns (rows as needed), in
    /// row-major order, separated by a `gutter`-pixel band of `background` (default 2 px white).
    /// Cells after the last image stay `background`.
    public static func grid(
        _ images: [RGBImage], columns: Int, gutter: Int = 2, background: RGBColor = .white
    ) throws -> RGBImage {
        guard let first = images.first else { throw ImageIOError.invalidImage("a grid needs at least one image") }
        guard columns > 0, gutter >= 0 else {
            throw ImageIOError.invalidImage("a grid needs columns > 0 and gutter >= 0, got \(columns), \(gutter)")
        }
        for (i, image) in images.enumerated() where image.width != first.width || image.height != first.height {
            throw ImageIOError.invalidImage(
                "grid cell \(i) is \(image.width)×\(image.height), cell 0 is \(first.width)×\(first.height)")
        }
        let cols = Swift.min(columns, images.count)
        let rows = (images.count + columns - 1) / columns
        var canvas = RGBImage(
            width: cols * first.width + (cols - 1) * gutter,
            height: rows * first.height + (rows - 1) * gutter,
            fill: background)
        for (i, image) in images.enumerated() {
            let r = i / columns, c = i % columns
            canvas.paste(image, x: c * (first.width + gutter), y: r * (first.height + gutter))
        }
        return canvas
    }
}
