/// The shapes of the synthetic benchmark.
public enum ObjectShape: String, Codable, CaseIterable, Sendable, Comparable {
    case circle, square, triangle, diamond

    public static func < (a: ObjectShape, b: ObjectShape) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// The palette: six saturated colors with well-separated hues (the closest pair, orange and
/// yellow, is 30° apart), so that a pixel's hue names its color unambiguously.
///
/// | color  | RGB             | hue  |
/// |--------|-----------------|------|
/// | red    | (220, 30, 30)   | 0°   |
/// | orange | (245, 120, 20)  | 27°  |
/// | yellow | (235, 225, 30)  | 57°  |
/// | green  | (40, 170, 50)   | 125° |
/// | blue   | (35, 75, 220)   | 227° |
/// | purple | (140, 50, 190)  | 279° |
public enum ObjectColor: String, Codable, CaseIterable, Sendable, Comparable {
    case red, green, blue, yellow, purple, orange

    /// The exact color the renderer paints.
    public var rgb: RGBColor {
        switch self {
        case .red: RGBColor(220, 30, 30)
        case .orange: RGBColor(245, 120, 20)
        case .yellow: RGBColor(235, 225, 30)
        case .green: RGBColor(40, 170, 50)
        case .blue: RGBColor(35, 75, 220)
        case .purple: RGBColor(140, 50, 190)
        }
    }

    /// The hue of ``rgb`` in degrees [0, 360).
    public var hue: Double { HSV(rgb).hue }

    public static func < (a: ObjectColor, b: ObjectColor) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// Object size: the side of the object's square bounding box as a fraction of the image side.
public enum ObjectSize: String, Codable, CaseIterable, Sendable {
    case small, large

    /// Bounding-box side / image side.
    public var fraction: Double {
        switch self {
        case .small: 0.25
        case .large: 0.40
        }
    }
}

/// A spatial relation "first REL second", decided by bounding boxes: for `.leftOf` the first
/// object's whole box lies in the left half of the image and the second's in the right half
/// (`.above`: top/bottom halves); `.rightOf` and `.below` are the mirror images.
public enum SpatialRelation: String, Codable, CaseIterable, Sendable {
    case leftOf = "left of"
    case rightOf = "right of"
    case above
    case below

    /// The words used in captions.
    public var phrase: String {
        switch self {
        case .leftOf: "to the left of"
        case .rightOf: "to the right of"
        case .above: "above"
        case .below: "below"
        }
    }

    /// Whether the relation is about the horizontal axis (left/right).
    public var isHorizontal: Bool { self == .leftOf || self == .rightOf }

    /// The relation with the roles of the two objects exchanged (A left of B == B right of A).
    public var converse: SpatialRelation {
        switch self {
        case .leftOf: .rightOf
        case .rightOf: .leftOf
        case .above: .below
        case .below: .above
        }
    }
}

/// A point in pixel coordinates: origin at the top-left corner of the image, x to the right,
/// y down; pixel (i, j) covers [i, i+1) × [j, j+1).
public struct Point: Codable, Hashable, Sendable {
    public var x: Double
    public var y: Double
    public init(x: Double, y: Double) {
        self.x = x
        self.y = y
    }

    /// The Euclidean distance to `other`.
    public func distance(to other: Point) -> Double { ((x - other.x) * (x - other.x) + (y - other.y) * (y - other.y)).squareRoot() }
}

/// An axis-aligned box in pixel coordinates (see ``Point``).
public struct BoundingBox: Codable, Hashable, Sendable {
    public var minX: Double
    public var minY: Double
    public var maxX: Double
    public var maxY: Double

    enum CodingKeys: String, CodingKey {
        case minX = "min_x", minY = "min_y", maxX = "max_x", maxY = "max_y"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        self.init(
            minX: try c.decode(Double.self, snakeOrCamel: "min_x"), minY: try c.decode(Double.self, snakeOrCamel: "min_y"),
            maxX: try c.decode(Double.self, snakeOrCamel: "max_x"), maxY: try c.decode(Double.self, snakeOrCamel: "max_y"))
    }

    public init(minX: Double, minY: Double, maxX: Double, maxY: Double) {
        self.minX = minX
        self.minY = minY
        self.maxX = maxX
        self.maxY = maxY
    }

    public var width: Double { maxX - minX }
    public var height: Double { maxY - minY }
    public var center: Point { Point(x: (minX + maxX) / 2, y: (minY + maxY) / 2) }

    public func intersects(_ other: BoundingBox) -> Bool {
        minX < other.maxX && other.minX < maxX && minY < other.maxY && other.minY < maxY
    }
}

/// The exact labels of one rendered object.
public struct SceneObject: Codable, Hashable, Sendable {
    public var shape: ObjectShape
    public var color: ObjectColor
    public var size: ObjectSize
    /// The center of the bounding box.
    public var center: Point
    /// The object's bounding box (the shape touches all four sides).
    public var bbox: BoundingBox

    public init(shape: ObjectShape, color: ObjectColor, size: ObjectSize, bbox: BoundingBox) {
        self.shape = shape
        self.color = color
        self.size = size
        self.center = bbox.center
        self.bbox = bbox
    }
}

/// The exact attribute labels of one image: one or two objects on a white background and,
/// for two objects, the relation "objects[0] relation objects[1]".
public struct Scene: Codable, Hashable, Sendable {
    /// Width and height of the (square) image in pixels.
    public var imageSize: Int
    public var objects: [SceneObject]
    public var relation: SpatialRelation?

    enum CodingKeys: String, CodingKey {
        case imageSize = "image_size", objects, relation
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        self.init(
            imageSize: try c.decode(Int.self, snakeOrCamel: "image_size"), objects: try c.decode([SceneObject].self, snakeOrCamel: "objects"),
            relation: try c.decodeIfPresent(SpatialRelation.self, snakeOrCamel: "relation"))
    }

    public init(imageSize: Int, objects: [SceneObject], relation: SpatialRelation?) {
        self.imageSize = imageSize
        self.objects = objects
        self.relation = relation
    }

    /// Whether the bounding boxes satisfy ``relation`` in the half-image sense documented on
    /// ``SpatialRelation`` (always true for one object without a relation).
    public var relationHolds: Bool {
        guard let relation else { return objects.count == 1 }
        guard objects.count == 2 else { return false }
        let low = Double(imageSize / 2), high = Double((imageSize + 1) / 2)
        let (a, b) = (objects[0].bbox, objects[1].bbox)
        let inside = [a, b].allSatisfy { $0.minX >= 0 && $0.minY >= 0 && $0.maxX <= Double(imageSize) && $0.maxY <= Double(imageSize) }
        guard inside, !a.intersects(b) else { return false }
        switch relation {
        case .leftOf: return a.maxX <= low && b.minX >= high
        case .rightOf: return b.maxX <= low && a.minX >= high
        case .above: return a.maxY <= low && b.minY >= high
        case .below: return b.maxY <= low && a.minY >= high
        }
    }
}

/// Hue, saturation, value of an 8-bit color (hue in degrees, the others in [0, 1]).
public struct HSV: Hashable, Sendable {
    public var hue: Double
    public var saturation: Double
    public var value: Double

    public init(_ c: RGBColor) {
        let r = Double(c.r) / 255, g = Double(c.g) / 255, b = Double(c.b) / 255
        let hi = Swift.max(r, g, b), lo = Swift.min(r, g, b), chroma = hi - lo
        value = hi
        saturation = hi > 0 ? chroma / hi : 0
        var h: Double
        if chroma == 0 {
            h = 0
        } else if hi == r {
            h = 60 * ((g - b) / chroma)
        } else if hi == g {
            h = 60 * ((b - r) / chroma + 2)
        } else {
            h = 60 * ((r - g) / chroma + 4)
        }
        if h < 0 { h += 360 }
        hue = h
    }
}
