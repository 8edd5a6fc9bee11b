import ContextDiff
import Datasets
import Foundation
import NN
import Testing
import Torch
@testable import Evaluation

/// One MiniLM for the test process (the files are required: CI runs scripts/setup.sh first).
final class SharedMiniLM: @unchecked Sendable {
    static let shared = SharedMiniLM()
    private let lock = NSLock()
    private var encoder: MiniLMTextEncoder?

    func get() throws -> MiniLMTextEncoder {
        lock.lock()
        defer { lock.unlock() }
        if let encoder { return encoder }
        let e = try MiniLMTextEncoder()
        encoder = e
        return e
    }
}

@Suite("Contrastive image–text score")
struct ContrastiveTests {
    @Test func scoresAreInRangeAndMatchingCaptionsScoreHigherAfterAShortTraining() throws {
        Torch.numThreads = 1
        let encoder = try SharedMiniLM.shared.get()
        var config = ContrastiveTrainingConfig()
        config.steps = 120
        config.batchSize = 32
        config.datasetSize = 400
        config.warmupSteps = 10
        let model = try ContrastiveTraining.train(config: config, textEncoder: encoder)
        let scorer = try ContrastiveScorer(model: model, textEncoder: encoder)
        let check = try ContrastiveTraining.check(scorer, count: 128)
        print("contrastive check after \(config.steps) steps: \(check)")
        #expect(check.matched > check.mismatched + 5, "matched \(check.matched) vs mismatched \(check.mismatched)")
        #expect(check.pairwiseAccuracy > 0.75)

        let images = try SyntheticBenchmark().batch(indices: 0..<8, split: .validation)
        let scores = try scorer.scores(images: images.images, texts: images.captions)
        #expect(scores.allSatisfy { (0...100).contains($0) })
        // CLIPScore clips at zero: a negative cosine scores 0, never below.
        let opposite = try model.clipScores(images: images.images, pooled: -(try scorer.pooled(images.captions)))
        #expect(try opposite.min().item() >= 0)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clip-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try ModelFolder.save(model, to: dir)
        let loaded = try ContrastiveScorer(model: ContrastiveImageText.load(from: dir), textEncoder: encoder)
        let again = try loaded.scores(images: images.images, texts: images.captions)
        #expect(zip(scores, again).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) })
    }
}
