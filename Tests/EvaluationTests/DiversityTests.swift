import Datasets
import Foundation
import Testing
import Torch

@testable import Evaluation

@Suite("Diversity: precision, recall and the spread of layouts")
struct DiversityTests {
    /// Golden cases of Kynkäänniemi et al.'s k-NN manifolds: the same set covers itself; a
    /// collapsed model (one point, repeated) is precise but recalls almost nothing; a model off
    /// the data has neither.
    @Test func precisionAndRecallOnKnownGeometry() throws {
        // 64 real points on an 8×8 grid of spacing 1; with k = 3 each ball has radius 1 (its
        // third neighbour is at distance 1 for inner points, √2 for corners).
        var grid: [Double] = []
        for i in 0..<8 { for j in 0..<8 { grid += [Double(i), Double(j)] } }
        let real = try Tensor(grid, shape: [64, 2])
        let same = try PrecisionRecall.compute(real: real, generated: real)
        #expect(same.precision == 1 && same.recall == 1)
        // Collapse: 32 copies of (3.1, 3.0) with small jitter: inside the real manifold, and their
        // own balls (tiny) cover only the real points right next to them.
        let g = Generator(seed: 1)
        let collapsed = try Tensor([Double](repeating: 0, count: 64).enumerated().map { $0.offset % 2 == 0 ? 3.1 : 3.0 }, shape: [32, 2])
            + Tensor.randn([32, 2], dtype: .float64, generator: g) * 0.01
        let c = try PrecisionRecall.compute(real: real, generated: collapsed)
        #expect(c.precision == 1)
        #expect(c.recall <= 2.0 / 64, "recall \(c.recall)")
        let far = try real + 100
        let f = try PrecisionRecall.compute(real: real, generated: far)
        #expect(f.precision == 0 && f.recall == 0)
        #expect(throws: EvaluationError.self) { try PrecisionRecall.compute(real: real, generated: real.slice(dim: 0, 0, 3)) }
    }

    @Test func spreadOfCentresAndSizesGoldenValues() {
        let spec = PromptSpec(text: "a red circle", kind: .singleObject, objects: [PromptObject(shape: .circle, color: .red)], relation: nil)
        func scene(_ x: Double, _ y: Double, _ size: ObjectSize) -> DetectedScene {
            DetectedScene(imageSize: 32, objects: [DetectedObject(shape: .circle, color: .red, size: size, center: Point(x: x, y: y))])
        }
        // Centres (10, 10) and (14, 10): RMS distance from (12, 10) is 2; sizes the same: CV 0.
        let a = LayoutSpread.measure(prompts: [spec], scenes: [[scene(10, 10, .small), scene(14, 10, .small)]])
        #expect(a == LayoutSpread(centreSpread: 2, sizeCV: 0, objects: 1))
        // One image per prompt, or the object missing from all but one: nothing measured.
        #expect(LayoutSpread.measure(prompts: [spec], scenes: [[scene(1, 1, .small)]]).objects == 0)
        let small = ObjectSize.small.fraction, large = ObjectSize.large.fraction
        let b = LayoutSpread.measure(prompts: [spec], scenes: [[scene(5, 5, .small), scene(5, 5, .large)]])
        let mean = (small + large) / 2
        #expect(abs(b.sizeCV - abs(large - small) / 2 / mean) < 1e-12 && b.centreSpread == 0)
    }

    /// Real renders of a prompt satisfy it (colors, shapes, given sizes, the relation's halves)
    /// and vary where it leaves room (positions, unstated sizes); the same seed gives the same renders.
    @Test func rendersOfAPromptSatisfyItAndVary() throws {
        let benchmark = try SyntheticBenchmark()
        let pair = PromptSpec(
            text: "a big red circle to the right of a blue square", kind: .horizontalPair,
            objects: [PromptObject(shape: .circle, color: .red, size: .large), PromptObject(shape: .square, color: .blue)],
            relation: .rightOf)
        var rng = SplitMix64(seed: 3)
        var centres: Set<Double> = [], sizes: Set<ObjectSize> = []
        for _ in 0..<40 {
            let scene = benchmark.scene(for: pair, rng: &rng)
            let red = scene.objects[0], blue = scene.objects[1]
            #expect(red.color == .red && red.shape == .circle && red.size == .large)
            #expect(blue.color == .blue && blue.shape == .square)
            #expect(red.bbox.center.x > 16 && blue.bbox.center.x < 16, "right of: \(red.bbox) \(blue.bbox)")
            centres.insert(blue.bbox.center.y)
            sizes.insert(blue.size)
        }
        #expect(centres.count > 5 && sizes.count > 1)
        let a = try benchmark.renders(of: [pair], count: 3, seed: 9), b = try benchmark.renders(of: [pair], count: 3, seed: 9)
        #expect(a.shape == [3, 3, 32, 32])
        #expect(try (a - b).abs().max().item() == 0)
    }
}
