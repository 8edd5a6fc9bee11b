import Datasets
import Testing
@testable import Evaluation

@Suite("Alignment scoring")
struct AlignmentTests {
    static func object(_ shape: ObjectShape, _ color: ObjectColor, _ size: ObjectSize = .small, x: Double, y: Double) -> DetectedObject {
        DetectedObject(shape: shape, color: color, size: size, center: Point(x: x, y: y))
    }
    static func scene(_ objects: DetectedObject...) -> DetectedScene { DetectedScene(imageSize: 32, objects: objects) }

    let redCircle = object(.circle, .red, x: 8, y: 16)
    let blueSquare = object(.square, .blue, .large, x: 24, y: 16)
    let prompt = CaptionParser.parse("a red circle to the left of a blue square")!

    @Test func aCorrectImagePassesEveryCheck() {
        let s = Alignment.score(prompt, Self.scene(redCircle, blueSquare))
        #expect(s.correct)
        #expect(s.categories == [.twoObjects: true, .position: true, .colorAttribution: true])
        #expect(s.attributes[.shape] == Tally(correct: 2, total: 2))
        #expect(s.attributes[.size] == nil)  // not stated
        // The same picture described the other way round.
        #expect(Alignment.matches(CaptionParser.parse("a blue square to the right of a red circle")!,
                                  Self.scene(blueSquare, redCircle)))
        // A diagonal pair satisfies both axes.
        let diagonal = Self.scene(Self.object(.circle, .red, x: 6, y: 6), Self.object(.square, .blue, x: 26, y: 26))
        #expect(Alignment.matches(prompt, diagonal))
        #expect(Alignment.matches(CaptionParser.parse("a red circle above a blue square")!, diagonal))
        #expect(!Alignment.matches(CaptionParser.parse("a red circle below a blue square")!, diagonal))
    }

    @Test func swappedPlacesLoseOnlyTheRelation() {
        let swapped = Self.scene(Self.object(.circle, .red, x: 24, y: 16), Self.object(.square, .blue, .large, x: 8, y: 16))
        let s = Alignment.score(prompt, swapped)
        #expect(!s.correct)
        #expect(s.categories == [.twoObjects: true, .position: false, .colorAttribution: true])
        #expect(s.attributes[.color] == Tally(correct: 2, total: 2))
        #expect(s.attributes[.relation] == Tally(correct: 0, total: 1))
        // Stacked vertically (centers 3 px apart in x): not "left of".
        let stacked = Self.scene(Self.object(.circle, .red, x: 15, y: 8), Self.object(.square, .blue, x: 18, y: 24))
        #expect(!Alignment.matches(prompt, stacked))
        #expect(Alignment.matches(CaptionParser.parse("a blue square below a red circle")!, stacked))
    }

    @Test func swappedColorsLoseTheBinding() {
        let s = Alignment.score(prompt, Self.scene(Self.object(.circle, .blue, x: 8, y: 16), Self.object(.square, .red, x: 24, y: 16)))
        #expect(!s.correct)
        #expect(s.categories[.twoObjects] == true)
        #expect(s.categories[.colorAttribution] == false)
    }

    @Test func countAndStatedSizesAreChecked() {
        let one = Alignment.score(prompt, Self.scene(redCircle))
        #expect(one.attributes[.count] == Tally(correct: 0, total: 1))
        #expect(one.categories[.twoObjects] == false)
        let sized = CaptionParser.parse("a large red circle")!
        let s = Alignment.score(sized, Self.scene(redCircle))
        #expect(!s.correct)
        #expect(s.categories == [.singleObject: true, .colors: true])
        #expect(s.attributes[.size] == Tally(correct: 0, total: 1))
    }

    @Test func groundTruthScenesMatchTheirOwnCaptions() throws {
        let benchmark = try SyntheticBenchmark()
        var summary = AlignmentSummary()
        for split in Split.allCases {
            for index in 0..<200 {
                let a = benchmark.annotation(index: index, split: split)
                summary.add(Alignment.score(a.prompt, DetectedScene(a.scene)))
            }
        }
        #expect(summary.accuracy == 1)
        #expect(summary.categoryMean == 1)
    }
}
