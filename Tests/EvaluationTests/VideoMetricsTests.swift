import ContextDiff
import Datasets
import Foundation
import Testing
import Torch
@testable import Evaluation

@Suite("VideoMetricsTests: CLIP-text, CLIP-temporal, structure of an edited video")
struct VideoMetricsTests {
    @Test func stillVideosAreConsistentAndMovedObjectsLoseStructure() throws {
        Torch.numThreads = 1
        Torch.manualSeed(5)
        let benchmark = try SyntheticBenchmark()
        let moving = try benchmark.video(index: 1, split: .train, frames: 4).video().tensor()
        let still = try moving.slice(dim: 0, 0, 1).expanded([4, 3, 32, 32]).contiguous()
        let model = try ContrastiveImageText(ContrastiveImageTextConfig())
        model.eval()
        // A still video: consecutive embeddings identical.
        #expect(abs(try VideoMetrics.temporalConsistency(still, model: model) - 1) < 1e-5)
        #expect(try VideoMetrics.temporalConsistency(moving, model: model) <= 1 + 1e-6)
        // Structure: identical layouts score 1; the first frame repeated loses the motion.
        #expect(try VideoMetrics.structure(source: moving, edited: moving) == 1)
        let kept = try VideoMetrics.structure(source: moving, edited: still)
        #expect(kept < 0.6, "a still edit of a moving video keeps \(kept) of the structure")
        // A recolored object (same place) keeps the structure: the mask ignores color.
        let recolored = try moving.flipped([1])  // RGB → BGR, white stays white
        #expect(try VideoMetrics.structure(source: moving, edited: recolored) > 0.95)
        // CLIP-text through the scorer: in range, one number per video.
        let scorer = try ContrastiveScorer(model: model, textEncoder: SharedMiniLM.shared.get())
        let s = try VideoMetrics.scores(source: moving, edited: still, prompt: "an orange square", scorer: scorer)
        #expect((0...100).contains(s.clipText))
        #expect(abs(s.clipTemporal - 1) < 1e-5 && s.structure == kept)
        #expect(throws: (any Error).self) {
            _ = try VideoMetrics.scores(source: moving, edited: still.slice(dim: 0, 0, 2), prompt: "x", scorer: scorer)
        }
    }
}
