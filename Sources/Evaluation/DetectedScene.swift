import Datasets

/// One object's attributes as the evaluator sees them.
public struct DetectedObject: Codable, Hashable, Sendable {
    public var shape: ObjectShape
    public var color: ObjectColor
    public var size: ObjectSize
    /// The center of the object's bounding box, in pixels (see ``Point``).
    public var center: Point

    public init(shape: ObjectShape, color: ObjectColor, size: ObjectSize, center: Point) {
        self.shape = shape
        self.color = color
        self.size = size
        self.center = center
    }

    /// Same shape, color and size (the center is continuous and compared separately).
    public func sameAttributes(as other: DetectedObject) -> Bool {
        shape == other.shape && color == other.color && size == other.size
    }
}

/// What an image shows: one or two objects in a canonical order that pixels alone determine —
/// by color (``ObjectColor/allCases`` order; the two objects of a benchmark scene never share a
/// color), then by center — and the spatial relations read from their centers.
///
/// Relations follow GenEval's center rule rather than the caption's axis, because a picture can
/// satisfy both axes ("left of" and "above" for a diagonal pair) while its caption names one:
/// "A left of B" holds when B's center is at least ``relationThreshold`` × image size to the
/// right of A's (likewise above, below, right of). Every ground-truth render satisfies its own
/// caption's relation under this rule: opposite halves with the renderer's 2% midline gap put
/// the centers at least 9.3 px apart at 32 px, and the threshold is 6.4 px.
public struct DetectedScene: Codable, Hashable, Sendable {
    public static let relationThreshold = 0.2

    public var imageSize: Int
    public var objects: [DetectedObject]

    enum CodingKeys: String, CodingKey {
        case imageSize = "image_size", objects
    }

    /// As stored (no reordering); reads `imageSize` from reports written before 2026-12-03.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        imageSize = try c.decode(Int.self, snakeOrCamel: "image_size")
        objects = try c.decode([DetectedObject].self, snakeOrCamel: "objects")
    }

    public init(imageSize: Int, objects: [DetectedObject]) {
        self.imageSize = imageSize
        self.objects = Self.canonicalOrder(objects)
    }

    /// The ground truth of a rendered scene.
    public init(_ scene: Scene) {
        self.init(imageSize: scene.imageSize, objects: scene.objects.map {
            DetectedObject(shape: $0.shape, color: $0.color, size: $0.size, center: $0.center)
        })
    }

    /// Sorted by color, then center x, then center y.
    public static func canonicalOrder(_ objects: [DetectedObject]) -> [DetectedObject] {
        objects.sorted { a, b in
            if a.color != b.color { return a.color < b.color }
            if a.center.x != b.center.x { return a.center.x < b.center.x }
            return a.center.y < b.center.y
        }
    }

    public var count: Int { objects.count }

    /// Every relation "objects[i] REL objects[j]" that holds by the center rule.
    public func relations(of i: Int, to j: Int) -> Set<SpatialRelation> {
        guard i != j, objects.indices.contains(i), objects.indices.contains(j) else { return [] }
        let a = objects[i].center, b = objects[j].center
        let t = Self.relationThreshold * Double(imageSize)
        var out: Set<SpatialRelation> = []
        if b.x - a.x >= t { out.insert(.leftOf) }
        if a.x - b.x >= t { out.insert(.rightOf) }
        if b.y - a.y >= t { out.insert(.above) }
        if a.y - b.y >= t { out.insert(.below) }
        return out
    }

    /// Whether this detection reads a ground-truth scene right: the same number of objects with
    /// the same shape, color and size each, and the scene's relation holding between them.
    public func agrees(with truth: Scene) -> Bool {
        let expected = DetectedScene(truth)
        guard objects.count == expected.objects.count,
              zip(objects, expected.objects).allSatisfy({ $0.sameAttributes(as: $1) }) else { return false }
        guard let relation = truth.relation, truth.objects.count == 2 else { return true }
        // The truth's first object, found in canonical order by its attributes.
        let first = truth.objects[0]
        guard let i = objects.firstIndex(where: { $0.color == first.color && $0.shape == first.shape && $0.size == first.size })
        else { return false }
        return relations(of: i, to: 1 - i).contains(relation)
    }
}
