import Datasets

/// Reads prompts written in the benchmark's caption grammar back into their labels
/// (``PromptSpec``), so that free-text prompts can be scored for alignment.
///
///     caption  := ["a photo of"] object [relation object] ["on a white background"]
///     object   := ("a" | "an" | "the" | "one") [size] color shape
///     relation := "to the left of" | "to the right of" | "left of" | "right of" | "above" | "below"
///
/// Case, surrounding whitespace, runs of spaces and one trailing period are ignored; the size
/// is kept only when the prompt states it (as ``SceneAnnotation/prompt`` does), so every
/// benchmark caption round-trips: `parse(annotation.caption) == annotation.prompt`.
/// Anything else (an unknown word, three objects, a color the palette lacks) does not parse.
public enum CaptionParser {
    /// The prompt's labels, or nil when it is not in the grammar.
    public static func parse(_ text: String) -> PromptSpec? {
        var words = text.lowercased().split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }).map(String.init)
        if let last = words.last, last.hasSuffix(".") {
            words[words.count - 1] = String(last.dropLast())
            if words.last?.isEmpty == true { words.removeLast() }
        }
        var rest = words[...]
        if rest.starts(with: ["a", "photo", "of"]) { rest = rest.dropFirst(3) }
        if rest.count >= 4, Array(rest.suffix(4)) == ["on", "a", "white", "background"] { rest = rest.dropLast(4) }
        guard let first = object(&rest) else { return nil }
        if rest.isEmpty {
            return PromptSpec(text: text, kind: .singleObject, objects: [first], relation: nil)
        }
        guard let relation = relation(&rest), let second = object(&rest), rest.isEmpty else { return nil }
        return PromptSpec(
            text: text, kind: relation.isHorizontal ? .horizontalPair : .verticalPair, objects: [first, second],
            relation: relation)
    }

    private static func object(_ words: inout ArraySlice<String>) -> PromptObject? {
        guard let article = words.first, ["a", "an", "the", "one"].contains(article) else { return nil }
        words = words.dropFirst()
        var size: ObjectSize?
        if let w = words.first, let s = ObjectSize(rawValue: w) {
            size = s
            words = words.dropFirst()
        }
        guard let c = words.first, let color = ObjectColor(rawValue: c) else { return nil }
        words = words.dropFirst()
        guard let s = words.first, let shape = ObjectShape(rawValue: s) else { return nil }
        words = words.dropFirst()
        return PromptObject(shape: shape, color: color, size: size)
    }

    private static func relation(_ words: inout ArraySlice<String>) -> SpatialRelation? {
        let phrases: [([String], SpatialRelation)] = [
            (["to", "the", "left", "of"], .leftOf), (["to", "the", "right", "of"], .rightOf),
            (["left", "of"], .leftOf), (["right", "of"], .rightOf), (["above"], .above), (["below"], .below),
        ]
        for (phrase, relation) in phrases where words.starts(with: phrase) {
            words = words.dropFirst(phrase.count)
            return relation
        }
        return nil
    }
}
