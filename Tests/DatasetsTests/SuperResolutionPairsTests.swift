import Foundation
import Testing
import Torch

@testable import Datasets

@Suite("Super-resolution pairs")
struct SuperResolutionPairsTests {
    /// A pair is one scene twice: the low image is the benchmark's own sample, the high one the
    /// same boxes ×factor; averaged back down, the high image is the low one up to the
    /// renderers' anti-aliasing (16 vs 256 samples per low pixel); pairs are reproducible.
    @Test func pairsAreOneSceneAtTwoSizes() throws {
        let pairs = try SuperResolutionPairs(SyntheticBenchmarkConfig(imageSize: 32, seed: 3), factor: 4)
        #expect(pairs.lowSize == 32 && pairs.highSize == 128)
        for index in 0..<6 {
            let pair = pairs.pair(index: index, split: .validation)
            let sample = pairs.benchmark.sample(index: index, split: .validation)
            #expect(pair.low == sample.image && pair.annotation == sample.annotation)
            #expect(pair.high.width == 128 && pair.high.height == 128)
            let scaled = sample.scene.scaled(by: 4)
            #expect(scaled.imageSize == 128)
            for (a, b) in zip(scaled.objects, sample.scene.objects) {
                #expect(a.bbox.minX == 4 * b.bbox.minX && a.bbox.maxY == 4 * b.bbox.maxY && a.center.x == 4 * b.center.x)
            }
            let low = try pair.low.tensor(), reduced = try pair.high.tensor().unsqueezed(0).avgPool2d(kernel: 4).squeezed(0)
            let meanError = try (low - reduced).abs().mean().item()
            #expect(meanError < 0.01, "pair \(index): mean |low − reduce(high)| = \(meanError)")
        }
        let again = try SuperResolutionPairs(SyntheticBenchmarkConfig(imageSize: 32, seed: 3), factor: 4)
        #expect(again.pair(index: 4, split: .heldout).high == pairs.pair(index: 4, split: .heldout).high)
        let batch = try pairs.batch(indices: [0, 1, 2], split: .train)
        #expect(batch.low.shape == [3, 3, 32, 32] && batch.high.shape == [3, 3, 128, 128] && batch.captions.count == 3)
        #expect(throws: DatasetError.self) { try SuperResolutionPairs(SyntheticBenchmarkConfig(), factor: 1) }
    }
}
