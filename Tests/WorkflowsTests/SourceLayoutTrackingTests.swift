import ContextDiff
import Datasets
import Evaluation
import Testing
import TextEncoders

@testable import Workflows

@Suite("SourceLayoutTrackingTests: a source video's objects as per-frame layouts for an edit")
struct SourceLayoutTrackingTests {
    /// On benchmark videos (objects moving, one or two, every relation) the source boxes are
    /// the true boxes of every frame within a pixel, in the prompt's order, and the target
    /// takes them object for object with its own words.
    @Test func tracksTheObjectsOfBenchmarkVideos() throws {
        let benchmark = try SyntheticBenchmark()
        let n = Double(benchmark.config.imageSize)
        var pairs = 0
        for index in 0..<16 {
            let sample = try benchmark.video(index: index, split: .train, frames: 6)
            let objects = sample.scenes[0].objects
            let recoloured = ObjectColor.allCases.first { c in !objects.contains { $0.color == c } }!
            var edited = try #require(CaptionParser.parse(sample.caption)).objects
            edited[0].color = recoloured
            let target = Captions.caption(edited, relation: sample.scenes[0].relation, style: edited[0].size == nil ? .plain : .sized)
            let layouts = try SourceLayoutTracking().layouts(frames: sample.frames, sourcePrompt: sample.caption, targetPrompt: target)
            #expect(layouts.source.count == 6 && layouts.target.count == 6)
            for (k, scene) in sample.scenes.enumerated() {
                let source = layouts.source[k].objects
                #expect(source.count == scene.objects.count)
                for (o, truth) in zip(source, scene.objects) {
                    #expect(o.phrase.hasSuffix("\(truth.color.rawValue) \(truth.shape.rawValue)"), "\(o.phrase) vs \(truth)")
                    let box = [truth.bbox.minX / n, truth.bbox.minY / n, truth.bbox.maxX / n, truth.bbox.maxY / n]
                    for (u, v) in zip(o.box, box) { #expect(abs(u - v) <= 1.01 / n, "\(sample.caption) frame \(k): \(o.box) vs \(box)") }
                }
                let t = layouts.target[k].objects
                #expect(t.map(\.box) == source.map(\.box))
                #expect(t[0].phrase.contains(recoloured.rawValue))
                // Every phrase is words of its prompt, so the pipeline can ground it.
                let tokenizer = try WordLevelTokenizer(fitting: [sample.caption, target])
                _ = try layouts.source[k].grounded(in: sample.caption, tokenizer: tokenizer)
                _ = try layouts.target[k].grounded(in: target, tokenizer: tokenizer)
            }
            if objects.count == 2 { pairs += 1 }
        }
        #expect(pairs >= 4)
    }

    @Test func sizeEditsResizeAroundTheCentreAndGapsAreInterpolated() throws {
        for (u, v) in zip(SourceLayoutTracking.resized([0.1, 0.2, 0.3, 0.4], from: nil, to: .large), [0.0, 0.1, 0.4, 0.5]) {
            #expect(abs(u - v) < 1e-12)
        }
        #expect(SourceLayoutTracking.resized([0.1, 0.2, 0.3, 0.4], from: .large, to: nil) == [0.1, 0.2, 0.3, 0.4])
        let a = [[0.0, 0.0, 0.2, 0.2]], b = [[0.4, 0.0, 0.6, 0.2]]
        let filled = SourceLayoutTracking.filled([nil, a, nil, nil, b, nil])
        #expect(filled[0] == a && filled[1] == a && filled[4] == b && filled[5] == b)
        for (u, v) in zip(filled[2][0], [0.4 / 3, 0.0, 0.2 + 0.4 / 3, 0.2]) { #expect(abs(u - v) < 1e-12) }
    }

    /// Two objects of the same colour are told apart by the relation.
    @Test func sameColouredObjectsFollowTheRelation() throws {
        let left = ForegroundObject(box: [0.1, 0.4, 0.3, 0.6], area: 30, color: .red)
        let right = ForegroundObject(box: [0.6, 0.4, 0.8, 0.6], area: 40, color: .red)
        let prompt = try #require(CaptionParser.parse("a red circle to the left of a red square"))
        #expect(SourceLayoutTracking.assign([right, left], to: prompt) == [left.box, right.box])
        let mirrored = try #require(CaptionParser.parse("a red circle to the right of a red square"))
        #expect(SourceLayoutTracking.assign([right, left], to: mirrored) == [right.box, left.box])
        #expect(SourceLayoutTracking.assign([left], to: prompt) == nil)
    }

    @Test func promptsAndVideosItCannotReadAreTypedErrors() throws {
        let benchmark = try SyntheticBenchmark()
        let sample = try benchmark.video(index: 0, split: .train, frames: 3)
        let tracking = SourceLayoutTracking()
        #expect(throws: SourceLayoutError.promptNotReadable(which: "source", prompt: "a cat")) {
            try tracking.layouts(frames: sample.frames, sourcePrompt: "a cat", targetPrompt: "a red circle")
        }
        #expect(throws: SourceLayoutError.objectCountDiffers(source: 1, target: 2)) {
            try tracking.layouts(frames: sample.frames, sourcePrompt: "a red circle", targetPrompt: "a red circle above a blue square")
        }
        #expect(throws: SourceLayoutError.relationDiffers) {
            try tracking.layouts(
                frames: sample.frames, sourcePrompt: "a red circle above a blue square", targetPrompt: "a red circle below a blue square")
        }
        let blank = Array(repeating: RGBImage(width: 32, height: 32, fill: .white), count: 3)
        #expect(throws: SourceLayoutError.objectsNotFound(expected: 1)) {
            try tracking.layouts(frames: blank, sourcePrompt: "a red circle", targetPrompt: "a blue circle")
        }
    }
}

