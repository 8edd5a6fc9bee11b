/// The caption templates. Every caption names each object's color and shape and, for two
/// objects, the relation; only `.sized` also names the sizes.
///
/// | style     | one object                          | two objects                                              |
/// |-----------|-------------------------------------|----------------------------------------------------------|
/// | `plain`   | a red circle                        | a red circle to the left of a blue square                |
/// | `sized`   | a small red circle                  | a small red circle to the left of a large blue square    |
/// | `photo`   | a photo of a red circle             | a photo of a red circle above a blue square              |
/// | `onWhite` | a red circle on a white background  | a red circle below a blue square on a white background   |
public enum CaptionStyle: String, Codable, CaseIterable, Sendable {
    case plain, sized, photo, onWhite

    /// Whether captions of this style name object sizes.
    public var mentionsSize: Bool { self == .sized }
}

/// What a caption or prompt says about one object (size only when it is mentioned).
public struct PromptObject: Codable, Hashable, Sendable {
    public var shape: ObjectShape
    public var color: ObjectColor
    public var size: ObjectSize?

    public init(shape: ObjectShape, color: ObjectColor, size: ObjectSize? = nil) {
        self.shape = shape
        self.color = color
        self.size = size
    }
}

public enum Captions {
    /// The caption for `objects` (one, or two with a relation) in `style`.
    public static func caption(_ objects: [PromptObject], relation: SpatialRelation?, style: CaptionStyle) -> String {
        func noun(_ o: PromptObject) -> String {
            let words = [style.mentionsSize ? o.size?.rawValue : nil, o.color.rawValue, o.shape.rawValue].compactMap { $0 }
            let phrase = words.joined(separator: " ")
            return (phrase.first.map { "aeiou".contains($0) } == true ? "an " : "a ") + phrase
        }
        var text = noun(objects[0])
        if objects.count > 1, let relation {
            text += " \(relation.phrase) " + noun(objects[1])
        }
        switch style {
        case .plain, .sized: return text
        case .photo: return "a photo of " + text
        case .onWhite: return text + " on a white background"
        }
    }

    /// The caption of a scene in `style`.
    public static func caption(for scene: Scene, style: CaptionStyle) -> String {
        caption(
            scene.objects.map { PromptObject(shape: $0.shape, color: $0.color, size: $0.size) },
            relation: scene.relation, style: style)
    }
}
