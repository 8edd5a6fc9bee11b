import Foundation
import Testing
import Torch
@testable import Datasets

@Suite("Image IO, conversion, resampling, grid")
struct ImageIOTests {
    @Test func pngRoundTripIsExact() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        let image = try gradientImage(width: 33, height: 17)
        try image.writePNG(to: dir.file("a.png"))
        #expect(try RGBImage(contentsOf: dir.file("a.png")) == image)
        // Overwriting is atomic and leaves no temporary files behind.
        try image.flippedHorizontally().writePNG(to: dir.file("a.png"))
        #expect(try RGBImage(contentsOf: dir.file("a.png")) == image.flippedHorizontally())
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.url.path) == ["a.png"])
    }

    /// Text chunks come back in order, ASCII (tEXt) and UTF-8 (iTXt) alike, and the pixels are
    /// untouched; keys libpng would reject are refused before anything is written.
    @Test func pngTextChunksRoundTrip() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        let image = try gradientImage(width: 9, height: 5)
        let text = [("parameters", "a red circle\nSteps: 50, Seed: 7"), ("comment", "ein Kreis — 円"), ("empty", "")]
        try image.writePNG(to: dir.file("t.png"), text: text)
        let data = try Data(contentsOf: dir.file("t.png"))
        let read = try PNGText.read(from: data)
        #expect(read.map(\.key) == text.map(\.0) && read.map(\.value) == text.map(\.1), "\(read)")
        #expect(try RGBImage(contentsOf: dir.file("t.png")) == image)
        #expect(data.range(of: Data("tEXtparameters".utf8)) != nil && data.range(of: Data("iTXtcomment".utf8)) != nil)
        try image.writePNG(to: dir.file("plain.png"))
        #expect(try PNGText.read(from: Data(contentsOf: dir.file("plain.png"))).isEmpty)
        for key in ["", String(repeating: "k", count: 80), "tab\tkey", " lead"] {
            #expect(throws: ImageIOError.self) { try image.writePNG(to: dir.file("bad.png"), text: [(key, "v")]) }
        }
        #expect(throws: ImageIOError.self) { try image.writePNG(to: dir.file("bad.png"), text: [("k", "nul\u{0}byte")]) }
        #expect(!FileManager.default.fileExists(atPath: dir.file("bad.png").path))
        #expect(throws: ImageIOError.self) { try PNGText.read(from: Data("GIF89a".utf8)) }
        #expect(throws: ImageIOError.self) { try PNGText.read(from: data.prefix(40)) }
    }

    @Test func jpegReadsBackClose() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        let image = RGBImage(width: 16, height: 8, fill: RGBColor(200, 40, 60))
        try image.writeJPEG(to: dir.file("a.jpg"), quality: 95)
        let back = try RGBImage(contentsOf: dir.file("a.jpg"))
        #expect(back.width == 16 && back.height == 8)
        #expect(zip(back.pixels, image.pixels).allSatisfy { abs(Int($0) - Int($1)) <= 4 })
    }

    @Test func missingFileIsFileNotFound() {
        #expect(throws: ImageIOError.fileNotFound(path: "/nonexistent/x.png")) {
            try RGBImage(contentsOf: URL(fileURLWithPath: "/nonexistent/x.png"))
        }
    }

    @Test func truncatedAndForeignFilesAreCorrupt() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        try gradientImage(width: 64, height: 64).writePNG(to: dir.file("full.png"))
        let bytes = try Data(contentsOf: dir.file("full.png"))
        try bytes.prefix(bytes.count / 2).write(to: dir.file("half.png"))
        try bytes.prefix(20).write(to: dir.file("header.png"))
        var flipped = bytes
        flipped[bytes.count / 2] ^= 0xFF  // breaks the IDAT CRC
        try flipped.write(to: dir.file("crc.png"))
        try Data("hello".utf8).write(to: dir.file("text.png"))
        try Data().write(to: dir.file("empty.png"))
        try RGBImage(width: 32, height: 32).writeJPEG(to: dir.file("full.jpg"))
        let jpeg = try Data(contentsOf: dir.file("full.jpg"))
        try jpeg.prefix(jpeg.count / 2).write(to: dir.file("half.jpg"))
        for name in ["half.png", "header.png", "crc.png", "text.png", "empty.png", "half.jpg"] {
            do {
                _ = try RGBImage(contentsOf: dir.file(name))
                Issue.record("\(name) decoded without error")
            } catch let ImageIOError.corrupt(path, reason) {
                #expect(path.hasSuffix(name) && !reason.isEmpty, "\(name): \(reason)")
            }
        }
    }

    @Test func directoryIsUnreadable() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        #expect(throws: ImageIOError.self) { try RGBImage(contentsOf: dir.url) }
    }

    @Test func unwritablePathsThrow() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        let image = RGBImage(width: 2, height: 2)
        for url in [URL(fileURLWithPath: "/nonexistent/folder/x.png"), dir.url /* a directory */] {
            do {
                try image.writePNG(to: url)
                Issue.record("wrote \(url.path)")
            } catch let ImageIOError.unwritable(path, reason) {
                #expect(path == url.path && !reason.isEmpty)
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.url.path).isEmpty)
        #expect(throws: ImageIOError.self) { try image.writeJPEG(to: dir.file("q.jpg"), quality: 0) }
    }

    @Test func invalidPixelCountsThrow() {
        #expect(throws: ImageIOError.self) { try RGBImage(width: 2, height: 2, pixels: [0, 0, 0]) }
        #expect(throws: ImageIOError.self) { try RGBImage(width: 0, height: 2, pixels: []) }
    }

    @Test func tensorRoundTripIsExact() throws {
        let image = try gradientImage()
        let t = try image.tensor()
        #expect(t.shape == [3, 5, 7] && t.dtype == .float32)
        let values = try t.scalars(as: Float.self)
        #expect(values.min()! >= -1 && values.max()! <= 1)
        // Channel-first layout: element (c, y, x) is pixel (x, y) channel c.
        let expected: Float = Float(image[3, 2].g) / 127.5 - 1
        let offset = 1 * 35 + 2 * 7 + 3
        #expect(values[offset] == expected)
        #expect(try RGBImage(tensor: t) == image)

        let batch = try RGBImage.batch([image, image.flippedVertically()])
        #expect(batch.shape == [2, 3, 5, 7])
        #expect(try RGBImage.images(fromBatch: batch) == [image, image.flippedVertically()])
        // Out-of-range values clamp; float64 input is accepted.
        let clamped = try RGBImage(tensor: Tensor.full([3, 1, 2], value: 3, dtype: .float64))
        #expect(clamped.pixels == [255, 255, 255, 255, 255, 255])
        #expect(throws: ImageIOError.self) { try RGBImage(tensor: Tensor.zeros([1, 3, 4, 4])) }
        #expect(throws: ImageIOError.self) { try RGBImage.batch([image, RGBImage(width: 3, height: 3)]) }
    }

    @Test func areaResizeAveragesExactly() throws {
        // 4×2 → 2×1: each output pixel is the mean of a 2×2 block.
        let image = try RGBImage(width: 4, height: 2, pixels: [
            0, 0, 0, 100, 100, 100, 10, 20, 30, 10, 20, 30,
            100, 100, 100, 200, 200, 200, 10, 20, 30, 50, 60, 70,
        ])
        let small = try image.resized(width: 2, height: 1, filter: .area)
        #expect(small.pixels == [100, 100, 100, 20, 30, 40])
        // Fractional factor: a constant image stays constant.
        let gray = RGBImage(width: 7, height: 5, fill: RGBColor(9, 99, 199))
        #expect(try gray.resized(width: 3, height: 4, filter: .area) == RGBImage(width: 3, height: 4, fill: RGBColor(9, 99, 199)))
        #expect(try gray.resized(width: 11, height: 13, filter: .bilinear) == RGBImage(width: 11, height: 13, fill: RGBColor(9, 99, 199)))
    }

    @Test func bilinearMatchesTorchInterpolate() throws {
        let image = try gradientImage(width: 6, height: 4)
        let ours = try image.resized(width: 9, height: 10, filter: .bilinear)
        let theirs = try RGBImage(tensor: image.tensor().unsqueezed(0)
            .interpolate(size: (10, 9), mode: .bilinear(alignCorners: false)).squeezed(0))
        #expect(zip(ours.pixels, theirs.pixels).allSatisfy { abs(Int($0) - Int($1)) <= 1 })
    }

    @Test func resizeToFillCropsTheCenter() throws {
        // A 40×20 image whose middle 20×20 is red and sides blue: filling 10×10 keeps only red.
        var image = RGBImage(width: 40, height: 20, fill: RGBColor(0, 0, 255))
        image.paste(RGBImage(width: 20, height: 20, fill: RGBColor(255, 0, 0)), x: 10, y: 0)
        let out = try image.resizedToFill(width: 10, height: 10)
        #expect(out == RGBImage(width: 10, height: 10, fill: RGBColor(255, 0, 0)))
        #expect(try image.centerCropped(width: 20, height: 20) == RGBImage(width: 20, height: 20, fill: RGBColor(255, 0, 0)))
        #expect(throws: ImageIOError.self) { try image.centerCropped(width: 41, height: 1) }
        #expect(try RGBImage(width: 3, height: 5).resizedToFill(width: 32, height: 32).width == 32)
    }

    @Test func gridHasWhiteGutters() throws {
        let red = RGBImage(width: 4, height: 3, fill: RGBColor(255, 0, 0))
        let grid = try RGBImage.grid(Array(repeating: red, count: 5), columns: 3)
        #expect(grid.width == 3 * 4 + 2 * 2 && grid.height == 2 * 3 + 2)
        #expect(grid[4, 0] == .white && grid[5, 0] == .white && grid[6, 0] == RGBColor(255, 0, 0))
        #expect(grid[0, 3] == .white && grid[0, 5] == RGBColor(255, 0, 0))
        #expect(grid[grid.width - 1, grid.height - 1] == .white)  // the empty sixth cell
        #expect(throws: ImageIOError.self) { try RGBImage.grid([], columns: 2) }
        #expect(throws: ImageIOError.self) { try RGBImage.grid([red, RGBImage(width: 1, height: 1)], columns: 2) }
    }
}
