import ContextDiff
import Foundation
import TestSupport
import Testing
import Torch

@Suite("Layout-to-image: layouts parsed, checked, grounded in the prompt and drawn where asked")
struct LayoutTests {
    @Test func inlineAndJSONFormsAgreeAndBadBoxesAreRefused() throws {
        let inline = try Layout(parsing: ["red circle@0.1,0.2,0.4,0.5", " blue square @ 0.5, 0.5, 0.9, 0.9"])
        #expect(inline.objects == [
            Layout.Object(phrase: "red circle", box: [0.1, 0.2, 0.4, 0.5]),
            Layout.Object(phrase: "blue square", box: [0.5, 0.5, 0.9, 0.9]),
        ])
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("layout-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: url) }
        try JSONEncoder().encode(inline).write(to: url)
        #expect(try Layout(contentsOf: url) == inline)
        for bad in ["red circle", "red circle@0.1,0.2,0.4", "red circle@0.5,0.2,0.4,0.6", "@0.1,0.1,0.2,0.2", "x@0,0,1,nan", "x@-0.1,0,1,1"] {
            #expect(throws: LayoutError.self, "\(bad)") { try Layout(parsing: [bad]) }
        }
        #expect(throws: LayoutError.self) { try Layout(parsing: []) }
        try Data("{\"objects\": 3}".utf8).write(to: url)
        #expect(throws: LayoutError.self) { try Layout(contentsOf: url) }
    }

    /// Each phrase takes its own words: the second "red" for "red square", in either order.
    @Test func phrasesAreGroundedInThePromptsTokens() throws {
        let tokenizer = try MiniLMTextEncoder().tokenizer
        let prompt = "a red circle above a red square"
        let ids = tokenizer.encode(prompt)
        let layout = try Layout(parsing: ["red square@0.5,0.5,0.9,0.9", "red circle@0.1,0.1,0.4,0.4"])
        let grounded = try layout.grounded(in: prompt, tokenizer: tokenizer)
        func words(_ positions: [Int]) -> [Int] { positions.map { ids[$0] } }
        let red = Array(tokenizer.encode("red").dropFirst().dropLast())
        let square = Array(tokenizer.encode("square").dropFirst().dropLast())
        #expect(words(grounded[0].tokens) == red + square)
        #expect(grounded[1].tokens.count == 2 && grounded[0].tokens[0] > grounded[1].tokens[1])
        #expect(grounded[0].minX == 0.5 && grounded[0].maxY == 0.9)
        // A phrase's words must stand together: "red" and "square" apart are not "red square".
        let apart = "a red circle and a blue square"
        #expect(throws: LayoutError.phraseNotInPrompt(phrase: "red square", prompt: apart)) {
            try Layout(parsing: ["red square@0.5,0.5,0.9,0.9"]).grounded(in: apart, tokenizer: tokenizer)
        }
        #expect(throws: LayoutError.phraseNotInPrompt(phrase: "green circle", prompt: prompt)) {
            try Layout(parsing: ["green circle@0.1,0.1,0.4,0.4"]).grounded(in: prompt, tokenizer: tokenizer)
        }
    }

    /// The shipped model draws "a red circle" inside the box it is given: the red pixels'
    /// centroid moves with the box, for two opposite boxes and two seeds.
    @Test func theShippedModelDrawsInTheGivenBox() throws {
        let model = try ContextDiffModel.load(from: repositoryRoot.appendingPathComponent("models/default"))
        let pipeline = try TextToImagePipeline(model: model, textEncoder: MiniLMTextEncoder())
        var options = GenerationOptions()
        options.steps = 20
        options.imagesPerPrompt = 2
        for box in [[0.05, 0.05, 0.4, 0.4], [0.55, 0.5, 0.95, 0.9]] {
            let layout = Layout(objects: [.init(phrase: "red circle", box: box)])
            let images = try pipeline.generate(prompts: ["a red circle"], options: options, layouts: [layout]).images
            let side = images.shape[3]
            let pixels = try images.contiguous().to(.float32).scalars(as: Float.self)
            for image in 0..<2 {
                var (sx, sy, n) = (0.0, 0.0, 0.0)
                for y in 0..<side {
                    for x in 0..<side {
                        let at = { (c: Int) in pixels[((image * 3 + c) * side + y) * side + x] }
                        if at(0) > 0.3, at(1) < -0.3, at(2) < -0.3 { (sx, sy, n) = (sx + Double(x) + 0.5, sy + Double(y) + 0.5, n + 1) }
                    }
                }
                #expect(n >= 10, "no red object for box \(box)")
                let (cx, cy) = (sx / max(n, 1) / Double(side), sy / max(n, 1) / Double(side))
                let (bx, by) = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
                #expect(abs(cx - bx) < 0.1 && abs(cy - by) < 0.1, "centroid (\(cx), \(cy)) for a box centred at (\(bx), \(by))")
            }
        }
        #expect(throws: LayoutError.countMismatch(layouts: 2, prompts: 3)) {
            try pipeline.layoutTarget(prompts: ["a", "b", "c"], layouts: [Layout(objects: []), Layout(objects: [])], imagesPerPrompt: 1)
        }
        // A model without a layout prior reads no layout: a typed error, not a silent ignore.
        let plain = try TextToImagePipeline(model: TinyPipeline.model(), textEncoder: TinyPipeline.encoder())
        #expect(throws: LayoutError.modelHasNoLayoutPrior) {
            try plain.generate(prompts: ["a red circle"], options: TinyPipeline.options(.ddim), layouts: [Layout(parsing: ["red circle@0,0,1,1"])])
        }
    }
}
