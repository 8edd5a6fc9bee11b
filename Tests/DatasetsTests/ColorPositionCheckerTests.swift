import Testing
@testable import Datasets

@Suite("Pixel-level color and position checker")
struct ColorPositionCheckerTests {
    let checker = ColorPositionChecker()
    let benchmark = try! SyntheticBenchmark()

    @Test func classifiesPaletteBackgroundAndDark() {
        for color in ObjectColor.allCases {
            #expect(checker.classify(color.rgb) == .color(color))
            // Anti-aliased edges (a blend with white) keep their hue.
            let c = color.rgb
            let half = RGBColor(UInt8((Int(c.r) + 255) / 2), UInt8((Int(c.g) + 255) / 2), UInt8((Int(c.b) + 255) / 2))
            #expect(checker.classify(half) == .color(color))
        }
        #expect(checker.classify(.white) == .background)
        #expect(checker.classify(RGBColor(128, 128, 128)) == .background)
        #expect(checker.classify(RGBColor(250, 240, 240)) == .background)
        #expect(checker.classify(.black) == .dark)
        #expect(checker.dominantColor(of: RGBImage(width: 32, height: 32)) == nil)
    }

    @Test func isAccurateOnGroundTruthRenders() {
        var correct = 0, total = 0
        for split in Split.allCases {
            for index in 0..<150 {
                let sample = benchmark.sample(index: index, split: split)
                total += 1
                if checker.isCorrect(sample.image, prompt: sample.prompt) { correct += 1 }
            }
        }
        #expect(Double(correct) / Double(total) >= 0.99, "\(correct)/\(total)")
    }

    @Test func rejectsWrongImages() {
        var twoObject = 0, single = 0
        for index in 0..<200 {
            let sample = benchmark.sample(index: index, split: .train)
            let prompt = sample.prompt
            if prompt.kind == .singleObject {
                single += 1
                var wrong = prompt
                wrong.objects[0].color = ObjectColor.allCases.first { $0 != prompt.objects[0].color }!
                #expect(!checker.singleObjectColorCorrect(sample.image, prompt: wrong))
                #expect(!checker.singleObjectColorCorrect(RGBImage(width: 32, height: 32), prompt: prompt))
            } else {
                twoObject += 1
                #expect(checker.twoObjectCorrect(sample.image, prompt: prompt))
                // Swapped colors.
                var swapped = prompt
                swapped.objects.swapAt(0, 1)
                swapped.objects[0].shape = prompt.objects[0].shape
                swapped.objects[1].shape = prompt.objects[1].shape
                #expect(!checker.twoObjectCorrect(sample.image, prompt: swapped))
                // Flipped image along the relation's axis.
                let flipped = prompt.relation!.isHorizontal ? sample.image.flippedHorizontally() : sample.image.flippedVertically()
                #expect(!checker.twoObjectCorrect(flipped, prompt: prompt))
                // The converse phrasing of the same scene is accepted.
                var converse = prompt
                converse.objects.reverse()
                converse.relation = prompt.relation!.converse
                #expect(checker.twoObjectCorrect(sample.image, prompt: converse))
                // One object missing.
                var erased = sample.image
                let keep = sample.scene.objects[0].bbox
                erased = RGBImage(width: 32, height: 32)
                erased.paste(try! sample.image.cropped(
                    x: Int(keep.minX), y: Int(keep.minY),
                    width: Int(keep.maxX.rounded(.up)) - Int(keep.minX), height: Int(keep.maxY.rounded(.up)) - Int(keep.minY)),
                    x: Int(keep.minX), y: Int(keep.minY))
                #expect(!checker.twoObjectCorrect(erased, prompt: prompt))
            }
        }
        #expect(twoObject > 50 && single > 50)
    }

    @Test func oddSizedHalvesSkipTheMiddle() {
        #expect(ImageRegion.leftHalf.bounds(width: 5, height: 3).x == 0..<2)
        #expect(ImageRegion.rightHalf.bounds(width: 5, height: 3).x == 3..<5)
        #expect(ImageRegion.bottomHalf.bounds(width: 5, height: 3).y == 2..<3)
    }
}
