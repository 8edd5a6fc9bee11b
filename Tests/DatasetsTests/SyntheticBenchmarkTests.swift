import Foundation
import Testing
@testable import Datasets

@Suite("Synthetic compositional benchmark")
struct SyntheticBenchmarkTests {
    let benchmark = try! SyntheticBenchmark()

    @Test func splitMixMatchesTheReferenceSequence() {
        // splitmix64.c (Vigna), seed 0.
        var rng = SplitMix64(seed: 0)
        #expect([rng.next(), rng.next(), rng.next()] == [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
        var counts = [Int](repeating: 0, count: 3)
        for _ in 0..<3000 { counts[rng.uniform(below: 3)] += 1 }
        #expect(counts.allSatisfy { (900...1100).contains($0) })
    }

    @Test func samplesAreAPureFunctionOfSeedSplitAndIndex() throws {
        let forward = (0..<40).map { benchmark.sample(index: $0, split: .train) }
        let backward = (0..<40).reversed().map { try! SyntheticBenchmark().sample(index: $0, split: .train) }.reversed()
        #expect(forward == Array(backward))
        // Splits and seeds give different streams.
        let validation = (0..<40).map { benchmark.sample(index: $0, split: .validation).caption }
        #expect(validation != forward.map(\.caption))
        let other = try SyntheticBenchmark(SyntheticBenchmarkConfig(seed: 1))
        #expect((0..<40).map { other.sample(index: $0, split: .train).caption } != forward.map(\.caption))
        // Rendering is part of the pure function: the image matches a fresh render of its labels.
        #expect(forward.allSatisfy { benchmark.render($0.scene) == $0.image })
    }

    /// Golden values pin the generator: a change here changes every dataset and result.
    @Test func goldenSamples() {
        let captions = (0..<4).map { benchmark.annotation(index: $0, split: .train).caption }
        #expect(captions == [
            "a photo of a purple square to the left of a green diamond",
            "an orange square",
            "a photo of a blue triangle to the left of a green triangle",
            "a photo of a purple square below a red circle",
        ])
        // FNV-1a of the rendered pixels.
        let hashes = (0..<4).map { fnv1a(benchmark.sample(index: $0, split: .train).image.pixels) }
        #expect(hashes == [0x2AFD_C8D2_44AC_5BB3, 0x2FF7_62B9_22E4_289D, 0xFA39_F0C0_6309_03FE, 0x0C56_166F_C8E3_CA15])
    }

    @Test func heldOutCombinationsNeverAppearInTrainingSplits() {
        var seenPairs = Set<ShapeColor>(), seenArrangements = Set<ColorArrangement>()
        for split in [Split.train, .validation] {
            for index in 0..<(split == .train ? 5000 : 1000) {
                let scene = benchmark.annotation(index: index, split: split).scene
                #expect(!HeldOut.touches(scene), "\(split) \(index): \(scene)")
                for o in scene.objects { seenPairs.insert(ShapeColor(o.color, o.shape)) }
                if let r = scene.relation { seenArrangements.insert(ColorArrangement(scene.objects[0].color, r, scene.objects[1].color)) }
            }
        }
        // Training covers every other combination, and every color, shape and relation.
        #expect(seenPairs.count == 24 - HeldOut.shapeColors.count)
        #expect(seenArrangements.count == 2 * 30 - HeldOut.arrangements.count)
        // The held-out split contains only held-out combinations, and all of them.
        var heldPairs = Set<ShapeColor>(), heldArrangements = Set<ColorArrangement>()
        for index in 0..<1000 {
            let scene = benchmark.annotation(index: index, split: .heldout).scene
            if let r = scene.relation {
                let arrangement = ColorArrangement(scene.objects[0].color, r, scene.objects[1].color)
                #expect(HeldOut.contains(arrangement))
                heldArrangements.insert(arrangement)
            } else {
                let pair = ShapeColor(scene.objects[0].color, scene.objects[0].shape)
                #expect(HeldOut.contains(pair))
                heldPairs.insert(pair)
            }
        }
        #expect(heldPairs == Set(HeldOut.shapeColors) && heldArrangements == Set(HeldOut.arrangements))
    }

    @Test(arguments: [8, 17, 32, 64])
    func relationGeometryHoldsForEveryTwoObjectSample(size: Int) throws {
        let bench = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: size, twoObjectFraction: 1))
        var relations = Set<SpatialRelation>()
        for split in Split.allCases {
            for index in 0..<(size <= 32 ? 400 : 60) {
                let sample = bench.annotation(index: index, split: split)
                let scene = sample.scene
                #expect(scene.objects.count == 2 && scene.relationHolds, "\(split) \(index): \(scene)")
                relations.insert(scene.relation!)
                for o in scene.objects {
                    #expect(o.bbox.width == o.bbox.height && abs(o.bbox.width - o.size.fraction * Double(size)) <= 0.125)
                    #expect(o.bbox.minX >= 0 && o.bbox.maxX <= Double(size) && o.center == o.bbox.center)
                }
                #expect(scene.objects[0].color != scene.objects[1].color)
            }
        }
        #expect(relations == Set(SpatialRelation.allCases))
    }

    @Test func relationsHoldAtEverySize() throws {
        for size in 8...160 {
            let bench = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: size, twoObjectFraction: 1))
            for index in 0..<40 {
                let scene = bench.annotation(index: index, split: .train).scene
                #expect(scene.relationHolds, "size \(size) index \(index): \(scene)")
            }
        }
    }

    @Test func renderedPixelsStayInsideTheirHalves() {
        let checker = ColorPositionChecker()
        for index in 0..<200 {
            let sample = benchmark.sample(index: index, split: .train)
            guard let relation = sample.scene.relation else { continue }
            let (a, b) = (sample.scene.objects[0].color, sample.scene.objects[1].color)
            let (ra, rb): (ImageRegion, ImageRegion) = switch relation {
            case .leftOf: (.leftHalf, .rightHalf)
            case .rightOf: (.rightHalf, .leftHalf)
            case .above: (.topHalf, .bottomHalf)
            case .below: (.bottomHalf, .topHalf)
            }
            // Each half holds exactly one object's color and nothing else.
            #expect(Set(checker.colorCounts(in: sample.image, region: ra).keys) == [a])
            #expect(Set(checker.colorCounts(in: sample.image, region: rb).keys) == [b])
        }
    }

    @Test func singleObjectsStayInsideTheImageAndAreAntiAliased() {
        var sawPartialPixel = false
        for index in 0..<100 {
            let sample = benchmark.sample(index: index, split: .train)
            for o in sample.scene.objects {
                #expect(o.bbox.minX >= 0.9 && o.bbox.minY >= 0.9 && o.bbox.maxX <= 31.1 && o.bbox.maxY <= 31.1)
            }
            let colors = Set(sample.scene.objects.map { $0.color.rgb })
            sawPartialPixel = sawPartialPixel || stride(from: 0, to: sample.image.pixels.count, by: 3).contains { i in
                let c = RGBColor(sample.image.pixels[i], sample.image.pixels[i + 1], sample.image.pixels[i + 2])
                return c != .white && !colors.contains(c)
            }
        }
        #expect(sawPartialPixel)
    }

    @Test func captionsMentionEveryAttribute() {
        var styles = Set<CaptionStyle>()
        for split in Split.allCases {
            for index in 0..<500 {
                let a = benchmark.annotation(index: index, split: split)
                styles.insert(a.style)
                let words = a.caption.split(separator: " ").map(String.init)
                var cursor = words.startIndex
                // Objects appear in order, each as "[size] color shape".
                for (k, o) in a.scene.objects.enumerated() {
                    guard let c = words[cursor...].firstIndex(of: o.color.rawValue) else {
                        Issue.record("\(a.caption) lacks \(o.color)")
                        break
                    }
                    #expect(words[c + 1] == o.shape.rawValue, "\(a.caption)")
                    #expect((words[c - 1] == o.size.rawValue) == a.style.mentionsSize, "\(a.caption)")
                    #expect(["a", "an"].contains(a.style.mentionsSize ? words[c - 2] : words[c - 1]), "\(a.caption)")
                    if k == 0, let r = a.scene.relation {
                        #expect(words[(c + 2)...].joined(separator: " ").hasPrefix(r.phrase), "\(a.caption)")
                    }
                    cursor = c + 2
                }
                #expect(!a.caption.contains("a orange") && !a.caption.contains("a  "))
                if a.style == .photo { #expect(a.caption.hasPrefix("a photo of ")) }
                if a.style == .onWhite { #expect(a.caption.hasSuffix(" on a white background")) }
                let sizes = ObjectSize.allCases.map(\.rawValue)
                if !a.style.mentionsSize { #expect(!words.contains { sizes.contains($0) }) }
            }
        }
        #expect(styles == Set(CaptionStyle.allCases))
        #expect(Captions.caption([PromptObject(shape: .circle, color: .orange)], relation: nil, style: .plain) == "an orange circle")
        #expect(Captions.caption(
            [PromptObject(shape: .circle, color: .red, size: .small), PromptObject(shape: .square, color: .blue, size: .large)],
            relation: .leftOf, style: .sized) == "a small red circle to the left of a large blue square")
    }

    @Test func promptsAreDeterministicBalancedAndLabelled() {
        for kind in PromptKind.allCases {
            for split in [Split.train, .heldout] {
                let prompts = benchmark.prompts(split: split, count: 48, kind: kind)
                #expect(prompts == benchmark.prompts(split: split, count: 48, kind: kind))
                #expect(prompts.count == 48 && prompts.allSatisfy { $0.kind == kind })
                for p in prompts {
                    #expect(p.text == Captions.caption(p.objects, relation: p.relation, style: p.objects[0].size == nil
                        ? (p.text.hasPrefix("a photo") ? .photo : p.text.hasSuffix("background") ? .onWhite : .plain) : .sized))
                    switch kind {
                    case .singleObject:
                        #expect(p.objects.count == 1 && p.relation == nil)
                        #expect(HeldOut.contains(ShapeColor(p.objects[0].color, p.objects[0].shape)) == (split == .heldout))
                    case .horizontalPair, .verticalPair:
                        #expect(p.objects.count == 2 && p.relation!.isHorizontal == (kind == .horizontalPair))
                        let arrangement = ColorArrangement(p.objects[0].color, p.relation!, p.objects[1].color)
                        #expect(HeldOut.contains(arrangement) == (split == .heldout))
                    }
                }
            }
        }
        // Held-out single prompts cycle through all held-out pairs equally.
        let held = benchmark.prompts(split: .heldout, count: 12, kind: .singleObject)
        #expect(Set(held.map { ShapeColor($0.objects[0].color, $0.objects[0].shape) }) == Set(HeldOut.shapeColors))
    }

    @Test func configValidatesAndDecodesWithDefaults() throws {
        #expect(throws: DatasetError.self) { try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: 4)) }
        #expect(throws: DatasetError.self) { try SyntheticBenchmark(SyntheticBenchmarkConfig(twoObjectFraction: 1.5)) }
        #expect(throws: DatasetError.self) { try SyntheticBenchmark(SyntheticBenchmarkConfig(shapes: [])) }
        let decoded = try JSONDecoder().decode(SyntheticBenchmarkConfig.self, from: Data(#"{"seed": 7}"#.utf8))
        #expect(decoded == SyntheticBenchmarkConfig(seed: 7))
        let config = SyntheticBenchmarkConfig(imageSize: 48, seed: 3, twoObjectFraction: 0.25, shapes: [.circle, .square])
        #expect(try JSONDecoder().decode(SyntheticBenchmarkConfig.self, from: JSONEncoder().encode(config)) == config)
        // Keys are snake_case like every other config; the camelCase of older recipes still loads.
        let encoded = String(decoding: try JSONEncoder().encode(config), as: UTF8.self)
        #expect(encoded.contains("\"image_size\"") && encoded.contains("\"two_object_fraction\"") && !encoded.contains("imageSize"))
        let legacy = try JSONDecoder().decode(SyntheticBenchmarkConfig.self, from: Data(#"{"imageSize": 48, "twoObjectFraction": 0.25}"#.utf8))
        #expect(legacy == SyntheticBenchmarkConfig(imageSize: 48, twoObjectFraction: 0.25))
        // Restricting the shapes restricts every split.
        let bench = try SyntheticBenchmark(config)
        for split in Split.allCases {
            for i in 0..<200 {
                #expect(bench.annotation(index: i, split: split).scene.objects.allSatisfy { [.circle, .square].contains($0.shape) })
            }
        }
    }

    @Test func batchesHaveTheModelLayout() throws {
        let batch = try benchmark.batch(indices: 3..<7, split: .validation)
        #expect(batch.images.shape == [4, 3, 32, 32])
        #expect(batch.captions == (3..<7).map { benchmark.annotation(index: $0, split: .validation).caption })
        #expect(try RGBImage.images(fromBatch: batch.images)[1] == benchmark.sample(index: 4, split: .validation).image)
    }
}

func fnv1a(_ bytes: [UInt8]) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return h
}
