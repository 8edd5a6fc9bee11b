/// A (shape, color) combination.
public struct ShapeColor: Codable, Hashable, Sendable, CustomStringConvertible {
    public var shape: ObjectShape
    public var color: ObjectColor
    public init(_ color: ObjectColor, _ shape: ObjectShape) {
        self.shape = shape
        self.color = color
    }
    public var description: String { "\(color.rawValue) \(shape.rawValue)" }
}

/// An arrangement of two colors along one axis, in canonical form: `first` is on the left
/// (``SpatialRelation/leftOf``) or on top (``SpatialRelation/above``) of `second`. A scene
/// "blue square to the right of red circle" has the arrangement "red left of blue".
public struct ColorArrangement: Codable, Hashable, Sendable, CustomStringConvertible {
    public var first: ObjectColor
    /// `.leftOf` or `.above`.
    public var relation: SpatialRelation
    public var second: ObjectColor

    public init(_ first: ObjectColor, _ relation: SpatialRelation, _ second: ObjectColor) {
        switch relation {
        case .leftOf, .above: (self.first, self.relation, self.second) = (first, relation, second)
        case .rightOf, .below: (self.first, self.relation, self.second) = (second, relation.converse, first)
        }
    }

    public var description: String { "\(first.rawValue) \(relation.rawValue) \(second.rawValue)" }
}

/// The held-out combinations: never rendered in the train or validation splits, and the only
/// combinations of the held-out split. They measure compositional generalisation: every color,
/// shape and relation is seen in training, only these pairings are not.
///
/// - Single objects: red triangle, green circle, blue square, yellow diamond, purple triangle,
///   orange circle (one per color; every shape keeps at least three colors in training).
///   These pairs also never occur as either object of a two-object training scene.
/// - Two objects (ordered colors per axis, in either phrasing): red left of blue, yellow left of
///   green, purple above orange, blue above yellow. The reversed arrangements (blue left of
///   red, ...) and the other axis (red above blue, ...) stay in training, so a model must bind
///   each color to its position to get them right.
public enum HeldOut {
    public static let shapeColors: [ShapeColor] = [
        ShapeColor(.red, .triangle), ShapeColor(.green, .circle), ShapeColor(.blue, .square),
        ShapeColor(.yellow, .diamond), ShapeColor(.purple, .triangle), ShapeColor(.orange, .circle),
    ]

    public static let arrangements: [ColorArrangement] = [
        ColorArrangement(.red, .leftOf, .blue), ColorArrangement(.yellow, .leftOf, .green),
        ColorArrangement(.purple, .above, .orange), ColorArrangement(.blue, .above, .yellow),
    ]

    static let shapeColorSet = Set(shapeColors)
    static let arrangementSet = Set(arrangements)

    public static func contains(_ pair: ShapeColor) -> Bool { shapeColorSet.contains(pair) }

    public static func contains(_ arrangement: ColorArrangement) -> Bool { arrangementSet.contains(arrangement) }

    /// Whether any object's (shape, color) or the scene's color arrangement is held out.
    public static func touches(_ scene: Scene) -> Bool {
        if scene.objects.contains(where: { contains(ShapeColor($0.color, $0.shape)) }) { return true }
        if let relation = scene.relation, scene.objects.count == 2 {
            return contains(ColorArrangement(scene.objects[0].color, relation, scene.objects[1].color))
        }
        return false
    }
}
