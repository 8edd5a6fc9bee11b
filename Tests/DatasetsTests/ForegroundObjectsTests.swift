import Testing
import Torch

@testable import Datasets

@Suite("ForegroundObjectsTests: objects of plain-background frames")
struct ForegroundObjectsTests {
    /// On the benchmark's renders every object is found once, with its colour and a box within
    /// a pixel of the scene's (anti-aliased edges count as object).
    @Test func findsTheBenchmarksObjects() throws {
        let benchmark = try SyntheticBenchmark()
        let finder = ForegroundObjects()
        var checked = 0
        for index in 0..<40 {
            let annotation = benchmark.annotation(index: index, split: .train)
            let scene = annotation.scene
            // Overlapping or touching objects are one region; the tracker handles those frames.
            if scene.objects.count == 2 {
                let (a, b) = (scene.objects[0].bbox, scene.objects[1].bbox)
                if a.minX - 1 < b.maxX && b.minX - 1 < a.maxX && a.minY - 1 < b.maxY && b.minY - 1 < a.maxY { continue }
            }
            let found = try #require(finder.objects(in: benchmark.render(scene)), "\(annotation.caption)")
            #expect(found.count == scene.objects.count, "\(annotation.caption): \(found)")
            let n = Double(benchmark.config.imageSize)
            for object in scene.objects {
                let match = found.first { $0.color == object.color }
                let box = try #require(match, "\(annotation.caption): no \(object.color) region").box
                let truth = [object.bbox.minX / n, object.bbox.minY / n, object.bbox.maxX / n, object.bbox.maxY / n]
                for (u, v) in zip(box, truth) { #expect(abs(u - v) <= 1.01 / n, "\(annotation.caption): \(box) vs \(truth)") }
            }
            checked += 1
        }
        #expect(checked >= 25)
    }

    @Test func noiseAndBusyBackgroundsAreNotObjects() throws {
        var image = RGBImage(width: 16, height: 16, fill: RGBColor(250, 250, 250))
        image[3, 3] = RGBColor(200, 0, 0)  // one stray pixel: below the minimum area
        for y in 8..<12 { for x in 9..<14 { image[x, y] = RGBColor(35, 75, 220) } }
        let found = try #require(ForegroundObjects().objects(in: image))
        #expect(found == [ForegroundObject(box: [9 / 16, 8 / 16, 14 / 16, 12 / 16], area: 20, color: .blue)])
        // A frame whose border is half black, half white has no single background colour.
        var busy = RGBImage(width: 16, height: 16, fill: .white)
        for y in 0..<16 { for x in 0..<8 { busy[x, y] = .black } }
        #expect(ForegroundObjects().objects(in: busy) == nil)
        // A grey object has no palette colour.
        var grey = RGBImage(width: 16, height: 16, fill: .white)
        for y in 4..<9 { for x in 4..<9 { grey[x, y] = RGBColor(90, 90, 90) } }
        #expect(ForegroundObjects().objects(in: grey)?.first?.color == nil)
    }
}
