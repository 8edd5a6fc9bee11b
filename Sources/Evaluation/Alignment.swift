import Datasets

/// The attributes a prompt can state, checked per image (count, relation) or per prompt
/// object (shape, color, size — size only where the prompt names it).
public enum AlignmentAttribute: String, Codable, CaseIterable, Sendable {
    case count, shape, color, size, relation
}

/// GenEval's object-focused categories (Ghosh et al. 2023), on the benchmark's prompts. Each
/// benchmark prompt belongs to several: a one-object prompt to ``singleObject`` and ``colors``,
/// a two-object prompt to ``twoObjects``, ``position`` and ``colorAttribution`` (its two colors
/// always differ). The benchmark has no counting prompts beyond one vs two objects; the
/// ``AlignmentAttribute/count`` attribute reports that.
public enum AlignmentCategory: String, Codable, CaseIterable, Sendable {
    /// Exactly one object, of the named shape.
    case singleObject = "single_object"
    /// Exactly two objects, of the named shapes (in any place, any color).
    case twoObjects = "two_object"
    /// Exactly one object, of the named shape and color.
    case colors
    /// Two objects of the named shapes, in the named relation.
    case position
    /// Two objects of the named shapes, each with its own named color (binding).
    case colorAttribution = "color_attr"
}

/// Correct and total checks.
public struct Tally: Codable, Sendable, Equatable {
    public var correct = 0
    public var total = 0

    public init(correct: Int = 0, total: Int = 0) {
        self.correct = correct
        self.total = total
    }

    public var accuracy: Double? { total > 0 ? Double(correct) / Double(total) : nil }

    public mutating func add(_ ok: Bool) {
        total += 1
        if ok { correct += 1 }
    }

    public static func + (a: Tally, b: Tally) -> Tally { Tally(correct: a.correct + b.correct, total: a.total + b.total) }
}

/// How one image fares against its prompt.
public struct AlignmentScore: Sendable, Equatable {
    /// Everything the prompt states holds: the object count, every stated attribute of every
    /// object, and the relation.
    public var correct: Bool
    public var attributes: [AlignmentAttribute: Tally]
    public var categories: [AlignmentCategory: Bool]
    /// `assignment[k]`: the detected object matched to prompt object k (nil when missing).
    public var assignment: [Int?]
}

/// Scores a detected scene against a prompt.
///
/// The prompt's objects are matched to the detected ones by the assignment that agrees on the
/// most stated attributes (ties: the one under which the relation holds), so an image that
/// draws the right objects in swapped places loses only the relation, and one that swaps the
/// colors of the right shapes in the right places loses the colors — GenEval's separation of
/// position from color attribution. Relations are read from the detected centers
/// (``DetectedScene/relations(of:to:)``).
public enum Alignment {
    public static func score(_ prompt: PromptSpec, _ scene: DetectedScene) -> AlignmentScore {
        let n = prompt.objects.count
        let detected = scene.objects
        func agreement(_ p: PromptObject, _ o: DetectedObject) -> Int {
            (p.shape == o.shape ? 1 : 0) + (p.color == o.color ? 1 : 0) + (p.size.map { $0 == o.size ? 1 : 0 } ?? 0)
        }
        func relationHolds(_ a: [Int?]) -> Bool {
            guard let relation = prompt.relation, n == 2, let i = a[0], let j = a[1] else { return false }
            return scene.relations(of: i, to: j).contains(relation)
        }
        // Every injective assignment of prompt objects to detected objects (or to none).
        var candidates: [[Int?]] = []
        func extend(_ partial: [Int?]) {
            if partial.count == n { candidates.append(partial); return }
            var options: [Int?] = detected.indices.filter { !partial.contains($0) }.map { $0 }
            if options.count < n - partial.count { options.append(nil) }
            for o in options { extend(partial + [o]) }
        }
        extend([])
        let scored = candidates.map { a -> (assignment: [Int?], agreement: Int, relation: Bool) in
            let total = zip(prompt.objects, a).map { p, k in k.map { agreement(p, detected[$0]) } ?? 0 }.reduce(0, +)
            return (a, total, relationHolds(a))
        }
        let best = scored.max { x, y in (x.agreement, x.relation ? 1 : 0) < (y.agreement, y.relation ? 1 : 0) }
        let assignment = best?.assignment ?? Array(repeating: nil, count: n)

        var attributes: [AlignmentAttribute: Tally] = [:]
        attributes[.count, default: Tally()].add(detected.count == n)
        var shapesOK = true, colorsOK = true, sizesOK = true
        for (p, k) in zip(prompt.objects, assignment) {
            let o = k.map { detected[$0] }
            let shape = o?.shape == p.shape, color = o?.color == p.color
            attributes[.shape, default: Tally()].add(shape)
            attributes[.color, default: Tally()].add(color)
            shapesOK = shapesOK && shape
            colorsOK = colorsOK && color
            if let size = p.size {
                let ok = o?.size == size
                attributes[.size, default: Tally()].add(ok)
                sizesOK = sizesOK && ok
            }
        }
        let countOK = detected.count == n
        var relationOK = true
        if prompt.relation != nil {
            relationOK = relationHolds(assignment)
            attributes[.relation, default: Tally()].add(relationOK)
        }
        var categories: [AlignmentCategory: Bool] = [:]
        if n == 1 {
            categories[.singleObject] = countOK && shapesOK
            categories[.colors] = countOK && shapesOK && colorsOK
        } else if n == 2 {
            let wanted = prompt.objects.map(\.shape).sorted(), found = detected.map(\.shape).sorted()
            categories[.twoObjects] = countOK && wanted == found
            categories[.position] = countOK && shapesOK && relationOK
            categories[.colorAttribution] = countOK && shapesOK && colorsOK
        }
        return AlignmentScore(
            correct: countOK && shapesOK && colorsOK && sizesOK && relationOK, attributes: attributes,
            categories: categories, assignment: assignment)
    }

    /// Whether the scene satisfies everything the prompt states.
    public static func matches(_ prompt: PromptSpec, _ scene: DetectedScene) -> Bool { score(prompt, scene).correct }
}

/// Alignment over many images: overall, per attribute and per GenEval category.
public struct AlignmentSummary: Codable, Sendable, Equatable {
    public var images = 0
    public var correct = 0
    /// Keyed by ``AlignmentAttribute`` raw values.
    public var attributes: [String: Tally] = [:]
    /// Keyed by ``AlignmentCategory`` raw values.
    public var categories: [String: Tally] = [:]

    public init() {}

    public var accuracy: Double? { images > 0 ? Double(correct) / Double(images) : nil }

    public mutating func add(_ score: AlignmentScore) {
        images += 1
        if score.correct { correct += 1 }
        for (a, t) in score.attributes { attributes[a.rawValue, default: Tally()] = attributes[a.rawValue, default: Tally()] + t }
        for (c, ok) in score.categories { categories[c.rawValue, default: Tally()].add(ok) }
    }

    /// The accuracy of one attribute or category.
    public func accuracy(of attribute: AlignmentAttribute) -> Double? { attributes[attribute.rawValue]?.accuracy }
    public func accuracy(of category: AlignmentCategory) -> Double? { categories[category.rawValue]?.accuracy }

    /// GenEval's overall score: the mean of the category accuracies present.
    public var categoryMean: Double? {
        let values = AlignmentCategory.allCases.compactMap { accuracy(of: $0) }
        return values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
    }
}
