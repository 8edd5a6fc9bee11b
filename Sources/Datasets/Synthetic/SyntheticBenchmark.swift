import Torch

/// The benchmark's splits.
public enum Split: String, Codable, CaseIterable, Sendable {
    /// In-distribution combinations, for training.
    case train
    /// The same distribution as `train` drawn from an independent stream.
    case validation
    /// Only the combinations of ``HeldOut`` (never in train or validation).
    case heldout

    var salt: UInt64 {
        switch self {
        case .train: 0x7472_6169_6E
        case .validation: 0x7661_6C69_64
        case .heldout: 0x6865_6C64_6F
        }
    }
}

/// The benchmark's settings, saved next to exported data. Missing keys decode to the defaults.
public struct SyntheticBenchmarkConfig: Codable, Hashable, Sendable {
    /// Width and height of the images in pixels (8...1024).
    public var imageSize: Int = 32
    /// Every sample is a pure function of (seed, split, index).
    public var seed: UInt64 = 0
    /// The share of two-object scenes (0...1).
    public var twoObjectFraction: Double = 0.5
    /// The shapes drawn (non-empty).
    public var shapes: [ObjectShape] = ObjectShape.allCases
    /// Anti-aliasing: samples per pixel along each axis (coverage-weighted blend), 1...16.
    public var supersampling: Int = 4

    public init(
        imageSize: Int = 32, seed: UInt64 = 0, twoObjectFraction: Double = 0.5,
        shapes: [ObjectShape] = ObjectShape.allCases, supersampling: Int = 4
    ) {
        self.imageSize = imageSize
        self.seed = seed
        self.twoObjectFraction = twoObjectFraction
        self.shapes = shapes
        self.supersampling = supersampling
    }

    enum CodingKeys: String, CodingKey {
        case imageSize = "image_size", seed, twoObjectFraction = "two_object_fraction", shapes, supersampling
    }

    /// The camelCase keys files written before the snake_case convention used.
    enum LegacyKeys: String, CodingKey {
        case imageSize, twoObjectFraction
    }

    /// Missing keys take the defaults; the older camelCase spellings still load.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let legacy = try decoder.container(keyedBy: LegacyKeys.self)
        let defaults = SyntheticBenchmarkConfig()
        imageSize = try c.decodeIfPresent(Int.self, forKey: .imageSize)
            ?? legacy.decodeIfPresent(Int.self, forKey: .imageSize) ?? defaults.imageSize
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? defaults.seed
        twoObjectFraction = try c.decodeIfPresent(Double.self, forKey: .twoObjectFraction)
            ?? legacy.decodeIfPresent(Double.self, forKey: .twoObjectFraction) ?? defaults.twoObjectFraction
        shapes = try c.decodeIfPresent([ObjectShape].self, forKey: .shapes) ?? defaults.shapes
        supersampling = try c.decodeIfPresent(Int.self, forKey: .supersampling) ?? defaults.supersampling
    }

    /// Throws ``DatasetError/invalidConfig(_:)`` naming the first bad setting.
    public func validate() throws {
        guard (8...1024).contains(imageSize) else {
            throw DatasetError.invalidConfig("image_size must be in 8...1024, got \(imageSize)")
        }
        guard (0...1).contains(twoObjectFraction) else {
            throw DatasetError.invalidConfig("two_object_fraction must be in 0...1, got \(twoObjectFraction)")
        }
        guard !shapes.isEmpty else { throw DatasetError.invalidConfig("shapes must not be empty") }
        guard (1...16).contains(supersampling) else {
            throw DatasetError.invalidConfig("supersampling must be in 1...16, got \(supersampling)")
        }
    }
}

/// The labels and caption of one sample, without its pixels (cheap to compute).
public struct SceneAnnotation: Codable, Hashable, Sendable {
    public var split: Split
    public var index: Int
    public var caption: String
    public var style: CaptionStyle
    /// The exact attribute labels.
    public var scene: Scene

    /// The caption as an evaluation prompt with its labels.
    public var prompt: PromptSpec {
        PromptSpec(
            text: caption,
            kind: scene.relation.map { $0.isHorizontal ? .horizontalPair : .verticalPair } ?? .singleObject,
            objects: scene.objects.map {
                PromptObject(shape: $0.shape, color: $0.color, size: style.mentionsSize ? $0.size : nil)
            },
            relation: scene.relation)
    }
}

/// One rendered sample: the labels, the caption and the image.
public struct SceneSample: Hashable, Sendable {
    public var annotation: SceneAnnotation
    public var image: RGBImage

    public var caption: String { annotation.caption }
    /// The exact attribute labels (shape, color, size, center, bbox per object; relation).
    public var scene: Scene { annotation.scene }
    public var prompt: PromptSpec { annotation.prompt }
}

/// Kinds of evaluation prompts.
public enum PromptKind: String, Codable, CaseIterable, Sendable {
    /// "a red circle" (color and shape; the checker verifies the color).
    case singleObject
    /// "a red circle to the left of a blue square" (or "to the right of").
    case horizontalPair
    /// "a red circle above a blue square" (or "below").
    case verticalPair
}

/// An evaluation prompt with the labels a correct image must satisfy.
public struct PromptSpec: Codable, Hashable, Sendable {
    public var text: String
    public var kind: PromptKind
    public var objects: [PromptObject]
    /// "objects[0] relation objects[1]" for the pair kinds.
    public var relation: SpatialRelation?

    public init(text: String, kind: PromptKind, objects: [PromptObject], relation: SpatialRelation?) {
        self.text = text
        self.kind = kind
        self.objects = objects
        self.relation = relation
    }
}

/// A batch for training: images `[B, 3, S, S]` in [-1, 1] and their captions.
public struct SyntheticBatch: Sendable {
    public var images: Tensor
    public var captions: [String]
    public var annotations: [SceneAnnotation]
}

/// The synthetic compositional benchmark: one or two shapes on white, with captions and exact
/// labels, deterministic from ``SyntheticBenchmarkConfig/seed``. Sample `(split, index)` is a
/// pure function of the config, the split and the index (its own random stream), so any
/// subset can be generated in any order, in parallel, and reproduced later.
///
/// Layout: a bounding-box side is ``ObjectSize/fraction`` × size, snapped to a quarter pixel;
/// boxes keep a margin of 3% of the image from the border. For two objects the boxes lie in
/// opposite halves along the relation's axis with a further 2% gap from the midline (so the
/// objects never overlap) and anywhere along the other axis.
public struct SyntheticBenchmark: Sendable {
    public let config: SyntheticBenchmarkConfig

    public init(_ config: SyntheticBenchmarkConfig = SyntheticBenchmarkConfig()) throws {
        try config.validate()
        self.config = config
    }

    /// The (shape, color) pairs a split draws single objects from: the held-out pairs for
    /// `.heldout`, all others for `.train` and `.validation` (restricted to ``SyntheticBenchmarkConfig/shapes``).
    public func shapeColors(for split: Split) -> [ShapeColor] {
        var pairs = [ShapeColor]()
        for color in ObjectColor.allCases {
            for shape in config.shapes where HeldOut.contains(ShapeColor(color, shape)) == (split == .heldout) {
                pairs.append(ShapeColor(color, shape))
            }
        }
        return pairs  // never empty: every shape has held-out and training colors
    }

    /// The canonical color arrangements a split draws two-object scenes from (`horizontal`:
    /// left/right, else above/below).
    public func arrangements(for split: Split, horizontal: Bool) -> [ColorArrangement] {
        let relation: SpatialRelation = horizontal ? .leftOf : .above
        if split == .heldout { return HeldOut.arrangements.filter { $0.relation == relation } }
        var out = [ColorArrangement]()
        for a in ObjectColor.allCases {
            for b in ObjectColor.allCases where a != b {
                let arrangement = ColorArrangement(a, relation, b)
                if !HeldOut.contains(arrangement) { out.append(arrangement) }
            }
        }
        return out
    }

    // MARK: - Samples

    /// The labels and caption of sample `index` of `split`, without rendering.
    public func annotation(index: Int, split: Split) -> SceneAnnotation {
        var rng = SplitMix64(seed: SplitMix64.derive(config.seed, 0x5343_454E, split.salt, UInt64(bitPattern: Int64(index))))
        let twoObjects = rng.unitDouble() < config.twoObjectFraction
        let style = rng.choose(CaptionStyle.allCases)
        let scene: Scene
        if twoObjects {
            let horizontal = rng.uniform(below: 2) == 0
            let arrangement = rng.choose(arrangements(for: split, horizontal: horizontal))
            scene = layOutPair(arrangement, converse: rng.uniform(below: 2) == 1, split: split, rng: &rng)
        } else {
            let pair = rng.choose(shapeColors(for: split))
            scene = layOutSingle(pair, size: rng.choose(ObjectSize.allCases), rng: &rng)
        }
        return SceneAnnotation(
            split: split, index: index, caption: Captions.caption(for: scene, style: style), style: style, scene: scene)
    }

    /// Sample `index` of `split`, rendered.
    public func sample(index: Int, split: Split) -> SceneSample {
        let annotation = annotation(index: index, split: split)
        return SceneSample(annotation: annotation, image: render(annotation.scene))
    }

    /// Samples `indices` of `split` as a training batch.
    public func batch(indices: some Sequence<Int>, split: Split) throws -> SyntheticBatch {
        let samples = indices.map { sample(index: $0, split: split) }
        return SyntheticBatch(
            images: try RGBImage.batch(samples.map(\.image)),
            captions: samples.map(\.caption),
            annotations: samples.map(\.annotation))
    }

    // MARK: - Evaluation prompts

    /// `count` evaluation prompts of `kind` for `split`, deterministic. The combinations are
    /// cycled in a fixed order so that each is evaluated equally often (prompt `i` uses
    /// combination `i % n`); styles, sizes, shapes and the phrasing direction ("left of" or
    /// "right of") come from the prompt's own random stream.
    public func prompts(split: Split, count: Int, kind: PromptKind) -> [PromptSpec] {
        (0..<Swift.max(0, count)).map { i in
            var rng = SplitMix64(seed: SplitMix64.derive(
                config.seed, 0x5052_4F4D, split.salt, UInt64(PromptKind.allCases.firstIndex(of: kind)!), UInt64(i)))
            let style = rng.choose(CaptionStyle.allCases)
            let objects: [PromptObject]
            var relation: SpatialRelation?
            switch kind {
            case .singleObject:
                let pairs = shapeColors(for: split)
                let pair = pairs[i % pairs.count]
                objects = [PromptObject(shape: pair.shape, color: pair.color, size: rng.choose(ObjectSize.allCases))]
            case .horizontalPair, .verticalPair:
                let arrangements = arrangements(for: split, horizontal: kind == .horizontalPair)
                let a = arrangements[i % arrangements.count]
                let converse = rng.uniform(below: 2) == 1
                let (first, second) = converse ? (a.second, a.first) : (a.first, a.second)
                relation = converse ? a.relation.converse : a.relation
                objects = [first, second].map {
                    PromptObject(shape: shape(for: $0, split: split, rng: &rng), color: $0, size: rng.choose(ObjectSize.allCases))
                }
            }
            let text = Captions.caption(objects, relation: relation, style: style)
            let stated = objects.map { PromptObject(shape: $0.shape, color: $0.color, size: style.mentionsSize ? $0.size : nil) }
            return PromptSpec(text: text, kind: kind, objects: stated, relation: relation)
        }
    }

    // MARK: - Layout

    private var margin: Double { 0.03 * Double(config.imageSize) }
    private var midlineGap: Double { 0.02 * Double(config.imageSize) }

    private func side(_ size: ObjectSize) -> Double {
        (size.fraction * Double(config.imageSize) * 4).rounded() / 4
    }

    /// A uniform multiple of 1/4 in [lo, hi]; when the margins leave no quarter step, one in
    /// [hardLo, hardHi] instead (the limits that keep the box in the image or its half).
    private func quarter(in lo: Double, _ hi: Double, hard hardLo: Double, _ hardHi: Double, rng: inout SplitMix64) -> Double {
        var a = Int((lo * 4).rounded(.up)), b = Int((hi * 4).rounded(.down))
        if b < a {
            a = Int((hardLo * 4).rounded(.up))
            b = Swift.max(a, Int((hardHi * 4).rounded(.down)))
        }
        return Double(rng.uniform(in: a...b)) / 4
    }

    /// A shape for an object of `color` in a two-object scene of `split`: never a held-out
    /// (shape, color) pair, so held-out pair scenes test only the arrangement.
    private func shape(for color: ObjectColor, split: Split, rng: inout SplitMix64) -> ObjectShape {
        let allowed = config.shapes.filter { !HeldOut.contains(ShapeColor(color, $0)) }
        return rng.choose(allowed.isEmpty ? config.shapes : allowed)
    }

    private func layOutSingle(_ pair: ShapeColor, size: ObjectSize, rng: inout SplitMix64) -> Scene {
        let object = SceneObject(shape: pair.shape, color: pair.color, size: size, bbox: singleBox(side(size), rng: &rng))
        return Scene(imageSize: config.imageSize, objects: [object], relation: nil)
    }

    /// A single object's box of side `s`, anywhere inside the margins.
    private func singleBox(_ s: Double, rng: inout SplitMix64) -> BoundingBox {
        let n = Double(config.imageSize)
        let x = quarter(in: margin, n - margin - s, hard: 0, n - s, rng: &rng)
        let y = quarter(in: margin, n - margin - s, hard: 0, n - s, rng: &rng)
        return BoundingBox(minX: x, minY: y, maxX: x + s, maxY: y + s)
    }

    /// A pair object's box of side `s`: the lead object (left or top) in the first half along
    /// the relation's axis, the trailing one in the second, anywhere across it.
    private func pairBox(_ s: Double, lead: Bool, horizontal: Bool, rng: inout SplitMix64) -> BoundingBox {
        let n = Double(config.imageSize)
        let low = Double(config.imageSize / 2), high = Double((config.imageSize + 1) / 2)
        let along = lead
            ? quarter(in: margin, low - midlineGap - s, hard: 0, low - s, rng: &rng)
            : quarter(in: high + midlineGap, n - margin - s, hard: high, n - s, rng: &rng)
        let across = quarter(in: margin, n - margin - s, hard: 0, n - s, rng: &rng)
        let (x, y) = horizontal ? (along, across) : (across, along)
        return BoundingBox(minX: x, minY: y, maxX: x + s, maxY: y + s)
    }

    /// A scene that `spec` describes, laid out as the benchmark lays out its own (positions, and
    /// sizes the prompt leaves open, drawn from `rng`): "real renders of the same prompt", the
    /// reference for how much a model's images of one prompt should vary.
    public func scene(for spec: PromptSpec, rng: inout SplitMix64) -> Scene {
        func size(_ o: PromptObject) -> ObjectSize { o.size ?? rng.choose(ObjectSize.allCases) }
        guard spec.objects.count == 2, let relation = spec.relation else {
            let o = spec.objects[0], s = size(o)
            let object = SceneObject(shape: o.shape, color: o.color, size: s, bbox: singleBox(side(s), rng: &rng))
            return Scene(imageSize: config.imageSize, objects: [object], relation: nil)
        }
        let horizontal = relation == .leftOf || relation == .rightOf
        let firstLeads = relation == .leftOf || relation == .above
        let objects = spec.objects.enumerated().map { k, o -> SceneObject in
            let s = size(o)
            return SceneObject(shape: o.shape, color: o.color, size: s,
                               bbox: pairBox(side(s), lead: (k == 0) == firstLeads, horizontal: horizontal, rng: &rng))
        }
        return Scene(imageSize: config.imageSize, objects: objects, relation: relation)
    }

    private func layOutPair(_ arrangement: ColorArrangement, converse: Bool, split: Split, rng: inout SplitMix64) -> Scene {
        // Canonical order: `lead` is left/top, `trail` right/bottom.
        var boxes = [BoundingBox]()
        var objects = [(ObjectShape, ObjectColor, ObjectSize)]()
        for (k, color) in [arrangement.first, arrangement.second].enumerated() {
            let size = rng.choose(ObjectSize.allCases)
            boxes.append(pairBox(side(size), lead: k == 0, horizontal: arrangement.relation == .leftOf, rng: &rng))
            objects.append((shape(for: color, split: split, rng: &rng), color, size))
        }
        var scene = (0..<2).map { SceneObject(shape: objects[$0].0, color: objects[$0].1, size: objects[$0].2, bbox: boxes[$0]) }
        var relation = arrangement.relation
        if converse {
            scene.reverse()
            relation = relation.converse
        }
        return Scene(imageSize: config.imageSize, objects: scene, relation: relation)
    }

    // MARK: - Rendering

    /// Renders a scene on white with `supersampling²` samples per pixel; each object is blended
    /// over the canvas by its coverage.
    public func render(_ scene: Scene) -> RGBImage {
        var image = RGBImage(width: scene.imageSize, height: scene.imageSize, fill: .white)
        let ss = config.supersampling
        let total = Double(ss * ss)
        for object in scene.objects {
            let box = object.bbox
            let x0 = Swift.max(0, Int(box.minX.rounded(.down))), x1 = Swift.min(scene.imageSize, Int(box.maxX.rounded(.up)))
            let y0 = Swift.max(0, Int(box.minY.rounded(.down))), y1 = Swift.min(scene.imageSize, Int(box.maxY.rounded(.up)))
            guard x0 < x1, y0 < y1 else { continue }
            let color = object.color.rgb
            for py in y0..<y1 {
                for px in x0..<x1 {
                    var hits = 0
                    for sy in 0..<ss {
                        let y = Double(py) + (Double(sy) + 0.5) / Double(ss)
                        for sx in 0..<ss {
                            let x = Double(px) + (Double(sx) + 0.5) / Double(ss)
                            if Self.contains(object.shape, box, x: x, y: y) { hits += 1 }
                        }
                    }
                    guard hits > 0 else { continue }
                    let coverage = Double(hits) / total
                    let old = image[px, py]
                    func blend(_ a: UInt8, _ b: UInt8) -> UInt8 {
                        UInt8((Double(a) * (1 - coverage) + Double(b) * coverage).rounded())
                    }
                    image[px, py] = RGBColor(blend(old.r, color.r), blend(old.g, color.g), blend(old.b, color.b))
                }
            }
        }
        return image
    }

    /// Whether the point lies inside the shape inscribed in `box`: the circle of diameter
    /// box.width, the box itself, the upward triangle with its apex at the top middle, or the
    /// diamond touching the midpoints of the four sides.
    static func contains(_ shape: ObjectShape, _ box: BoundingBox, x: Double, y: Double) -> Bool {
        guard x >= box.minX, x <= box.maxX, y >= box.minY, y <= box.maxY else { return false }
        let c = box.center, hw = box.width / 2, hh = box.height / 2
        switch shape {
        case .square:
            return true
        case .circle:
            let dx = (x - c.x) / hw, dy = (y - c.y) / hh
            return dx * dx + dy * dy <= 1
        case .diamond:
            return abs(x - c.x) / hw + abs(y - c.y) / hh <= 1
        case .triangle:
            // At height y the triangle spans half-width hw * (y - minY) / height around c.x.
            let t = (y - box.minY) / box.height
            return abs(x - c.x) <= hw * t
        }
    }
}
