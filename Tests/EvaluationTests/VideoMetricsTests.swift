import ContextDiff
import Datasets
import Foundation
import Testing
import TestSupport
import Torch
@testable import Evaluation

@Suite("VideoMetricsTests: CLIP-text, CLIP-temporal, structure of an edited video")
struct VideoMetricsTests {
    @Test func stillVideosAreConsistentAndMovedObjectsLoseStructure() throws {
        Torch.numThreads = 1
        try Torch.withSeed(5) {
            let benchmark = try SyntheticBenchmark()
            let moving = try benchmark.video(index: 1, split: .train, frames: 4).video().tensor()
            let still = try moving.slice(dim: 0, 0, 1).expanded([4, 3, 32, 32]).contiguous()
            let model = try ContrastiveImageText(ContrastiveImageTextConfig())
            model.eval()
            // A still video: consecutive embeddings identical.
            #expect(abs(try VideoMetrics.temporalConsistency(still, model: model) - 1) < 1e-5)
            #expect(try VideoMetrics.temporalConsistency(moving, model: model) <= 1 + 1e-6)
            // All pairs (the paper's CLIP-temporal) against the mean over the 6 pairs by hand.
            #expect(abs(try VideoMetrics.temporalConsistency(still, model: model, allPairs: true) - 1) < 1e-5)
            let e = try model.imageEmbeddings(moving).to(.float64).scalars(as: Double.self)
            let d = e.count / 4
            var pairs: [Double] = []
            for i in 0..<4 {
                for j in 0..<4 where i != j { pairs.append((0..<d).map { e[i * d + $0] * e[j * d + $0] }.reduce(0, +)) }
            }
            let byHand = pairs.reduce(0, +) / Double(pairs.count)
            let allPairs = try VideoMetrics.temporalConsistency(moving, model: model, allPairs: true)
            #expect(abs(allPairs - byHand) <= 1e-5 * max(1, abs(byHand)), "\(allPairs) vs \(byHand)")
            #expect(byHand < 1 - 1e-4, "a moving video's frames should not all embed alike (\(byHand))")
            // Structure: identical layouts score 1; the first frame repeated loses the motion.
            #expect(try VideoMetrics.structure(source: moving, edited: moving) == 1)
            let kept = try VideoMetrics.structure(source: moving, edited: still)
            #expect(kept < 0.6, "a still edit of a moving video keeps \(kept) of the structure")
            #expect(try VideoMetrics.boxStructure(source: moving, edited: moving) == 1)
            #expect(try VideoMetrics.boxStructure(source: moving, edited: still) < 0.6)
            // A recolored object (same place) keeps the structure: the mask ignores color.
            let recolored = try moving.flipped([1])  // RGB → BGR, white stays white
            #expect(try VideoMetrics.structure(source: moving, edited: recolored) > 0.95)
            // A diamond drawn in a square's box: mask IoU 40/64 (its pixels of the 8×8 square), box IoU 1.
            func shape(_ diamond: Bool) throws -> Tensor {
                var v = [Float](repeating: 1, count: 3 * 16 * 16)
                for y in 4..<12 {
                    for x in 4..<12 where !diamond || abs(Double(x) - 7.5) + abs(Double(y) - 7.5) <= 4 { for c in 0..<3 { v[(c * 16 + y) * 16 + x] = -1 } }
                }
                return try Tensor(v, shape: [1, 3, 16, 16])
            }
            let (square, diamond) = (try shape(false), try shape(true))
            #expect(try VideoMetrics.boxStructure(source: square, edited: diamond) == 1)
            #expect(abs(try VideoMetrics.structure(source: square, edited: diamond) - 40.0 / 64) < 1e-6)
            #expect(try VideoMetrics.boxStructure(source: square, edited: Tensor.ones([1, 3, 16, 16])) == 0)
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

    /// The evaluator's per-frame alignment, with the shipped evaluator: a benchmark video is
    /// fully aligned with its own caption, not at all with a caption that changes the colour,
    /// the shape, or swaps a relation, and a prompt outside the benchmark's grammar has no score.
    @Test func evaluatorAlignmentReadsEveryFrame() throws {
        Torch.numThreads = 1
        let evaluator = try AttributeEvaluator.load(from: repositoryRoot.appendingPathComponent("models/evaluator"))
        let benchmark = try SyntheticBenchmark()
        for index in 0..<12 {
            let sample = try benchmark.video(index: index, split: .train, frames: 8)
            let frames = try sample.video().tensor()
            let caption = sample.caption
            #expect(try VideoMetrics.evaluatorAlignment(frames, prompt: caption, evaluator: evaluator) == 1, "\(caption)")
            let spec = try #require(CaptionParser.parse(caption))
            var wrong = spec.objects
            wrong[0].color = ObjectColor.allCases.first { $0 != spec.objects[0].color && !spec.objects.map(\.color).contains($0) }!
            let recolored = Captions.caption(wrong, relation: spec.relation, style: wrong[0].size == nil ? .plain : .sized)
            #expect(try VideoMetrics.evaluatorAlignment(frames, prompt: recolored, evaluator: evaluator) == 0, "\(recolored)")
        }
        let frames = try benchmark.video(index: 0, split: .train, frames: 2).video().tensor()
        #expect(try VideoMetrics.evaluatorAlignment(frames, prompt: "a cat on a sofa", evaluator: evaluator) == nil)
    }
}
