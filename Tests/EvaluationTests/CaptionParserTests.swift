import Datasets
import Testing
@testable import Evaluation

@Suite("Caption parser")
struct CaptionParserTests {
    @Test(arguments: [Split.train, .validation, .heldout])
    func everyBenchmarkCaptionRoundTripsToItsLabels(split: Split) throws {
        let benchmark = try SyntheticBenchmark()
        for index in 0..<400 {
            let annotation = benchmark.annotation(index: index, split: split)
            #expect(CaptionParser.parse(annotation.caption) == annotation.prompt, "\(annotation.caption)")
        }
        for kind in PromptKind.allCases {
            for prompt in benchmark.prompts(split: split, count: 40, kind: kind) {
                #expect(CaptionParser.parse(prompt.text) == prompt, "\(prompt.text)")
            }
        }
    }

    @Test func toleratesCaseSpacingAndAPeriod() throws {
        let p = try #require(CaptionParser.parse("  A Photo of a Small RED circle   to the left of an orange  square. "))
        #expect(p.kind == .horizontalPair)
        #expect(p.relation == .leftOf)
        #expect(p.objects == [PromptObject(shape: .circle, color: .red, size: .small), PromptObject(shape: .square, color: .orange)])
        #expect(CaptionParser.parse("the blue diamond below a green triangle")?.relation == .below)
    }

    @Test(arguments: [
        "", "a red", "a pink circle", "a red hexagon", "two red circles", "a red circle and a blue square",
        "a red circle to the left of", "a red circle above a blue square above a green triangle", "red circle",
        "a cat on a mat",
    ])
    func rejectsPromptsOutsideTheGrammar(text: String) {
        #expect(CaptionParser.parse(text) == nil)
    }
}
