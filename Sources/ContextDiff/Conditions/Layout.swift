import Foundation
import TextEncoders
import Torch

/// Errors of a user-given layout.
public enum LayoutError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A box or phrase outside what a layout allows; the message says which and why.
    case invalid(String)
    /// An object's phrase does not occur in the prompt, so no prompt token can carry its box.
    case phraseNotInPrompt(phrase: String, prompt: String)
    /// The model has no layout prior, so nothing in it reads a layout.
    case modelHasNoLayoutPrior
    /// Layouts given for some prompts but not one per prompt.
    case countMismatch(layouts: Int, prompts: Int)

    public var description: String {
        switch self {
        case let .invalid(m): "layout: \(m)"
        case let .phraseNotInPrompt(phrase, prompt):
            "layout: the phrase \"\(phrase)\" is not in the prompt \"\(prompt)\"; name each object with words of the prompt"
        case .modelHasNoLayoutPrior: "layout: this model has no layout prior, so it cannot be given a layout (train with --layout-prior)"
        case let .countMismatch(layouts, prompts): "layout: \(layouts) layouts for \(prompts) prompts (give one, or one per prompt)"
        }
    }
}

/// Where the objects of a prompt go (layout-to-image, paper App. B): each object named by a
/// phrase of the prompt ("red circle") and its box as fractions of the image side, `[x0, y0, x1,
/// y1]` with y down — GLIGEN's convention (diffusers' `gligen_phrases`, `gligen_boxes`).
///
/// A layout conditions the model through the prompt's own tokens: the tokens of each phrase get
/// the phrase's box, exactly as training gives the dataset's boxes to the caption's object words
/// (``LayoutTarget/init(objects:tokens:)``), and the U-Net's layout canvas paints them. So a
/// model draws a given layout with what it learnt from true boxes; it needs a layout prior.
///
/// JSON: `{"objects": [{"phrase": "red circle", "box": [0.1, 0.2, 0.4, 0.5]}]}`.
public struct Layout: Codable, Sendable, Equatable {
    public struct Object: Codable, Sendable, Equatable {
        /// Words of the prompt that name the object (e.g. "red circle", "big blue square").
        public var phrase: String
        /// `[x0, y0, x1, y1]` in [0, 1], x0 < x1 and y0 < y1.
        public var box: [Double]

        public init(phrase: String, box: [Double]) {
            self.phrase = phrase
            self.box = box
        }
    }

    /// The most objects a layout may name.
    public static let maxObjects = 16

    public var objects: [Object]

    public init(objects: [Object]) {
        self.objects = objects
    }

    /// Reads `PHRASE@x0,y0,x1,y1` (the CLI's inline form), one object per string.
    public init(parsing specs: [String]) throws {
        objects = try specs.map { spec in
            guard let at = spec.lastIndex(of: "@") else {
                throw LayoutError.invalid("'\(spec)' must look like 'red circle@0.1,0.1,0.4,0.4'")
            }
            let numbers = spec[spec.index(after: at)...].split(separator: ",").map {
                Double($0.trimmingCharacters(in: .whitespaces))
            }
            guard numbers.count == 4, numbers.allSatisfy({ $0 != nil }) else {
                throw LayoutError.invalid("'\(spec)': the box must be four numbers x0,y0,x1,y1")
            }
            return Object(phrase: String(spec[..<at]).trimmingCharacters(in: .whitespaces), box: numbers.map { $0! })
        }
        try validate()
    }

    /// Reads a layout JSON file.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw LayoutError.invalid("cannot read \(url.path)") }
        guard data.count <= 1 << 20 else { throw LayoutError.invalid("\(url.path) is over 1 MiB") }
        do { self = try JSONDecoder().decode(Layout.self, from: data) } catch {
            throw LayoutError.invalid("\(url.path) is not a layout ({\"objects\": [{\"phrase\": ..., \"box\": [x0, y0, x1, y1]}]})")
        }
        try validate()
    }

    /// Throws a message naming the first object that is not a valid box with a phrase.
    public func validate() throws {
        guard (1...Self.maxObjects).contains(objects.count) else {
            throw LayoutError.invalid("give 1...\(Self.maxObjects) objects, got \(objects.count)")
        }
        for o in objects {
            guard !o.phrase.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw LayoutError.invalid("an object has an empty phrase")
            }
            guard o.box.count == 4, o.box.allSatisfy({ $0.isFinite && (0...1).contains($0) }) else {
                throw LayoutError.invalid("the box of \"\(o.phrase)\" must be four numbers in [0, 1], got \(o.box)")
            }
            guard o.box[0] < o.box[2], o.box[1] < o.box[3] else {
                throw LayoutError.invalid("the box of \"\(o.phrase)\" must have x0 < x1 and y0 < y1, got \(o.box)")
            }
        }
    }

    /// Each object with the positions of its phrase's tokens in `prompt` (as `tokenizer` encodes
    /// it, special tokens included, so positions index the text encoder's token states). A
    /// phrase's words must stand together in the prompt, at a place no earlier object took: in
    /// "a red circle above a red square", "red square" takes the second "red", and in "a red
    /// circle and a blue square" there is no "red square".
    public func grounded(in prompt: String, tokenizer: any TextTokenizer) throws -> [GroundedObject] {
        try validate()
        let ids = tokenizer.encode(prompt)
        var used = Set<Int>()
        return try objects.map { o in
            let words = o.phrase.lowercased().split(whereSeparator: \.isWhitespace).map(String.init)
            let pieces = words.map { Array(tokenizer.encode($0).dropFirst().dropLast()) }
            guard pieces.allSatisfy({ !$0.isEmpty }),
                  let positions = Self.locate(pieces, in: ids, avoiding: used)
            else { throw LayoutError.phraseNotInPrompt(phrase: o.phrase, prompt: prompt) }
            used.formUnion(positions)
            return GroundedObject(tokens: positions, minX: o.box[0], minY: o.box[1], maxX: o.box[2], maxY: o.box[3])
        }
    }

    /// `layouts[i]` grounded in `prompts[i]`, one row each, for a ``LayoutTarget`` over `tokens`
    /// caption positions; an object whose words lie past that limit is an error.
    public static func groundedRows(
        _ layouts: [Layout], in prompts: [String], tokens: Int, tokenizer: any TextTokenizer
    ) throws -> [[GroundedObject]] {
        precondition(layouts.count == prompts.count, "one prompt per layout")
        return try zip(layouts, prompts).map { layout, prompt in
            let objects = try layout.grounded(in: prompt, tokenizer: tokenizer)
            if objects.contains(where: { $0.tokens.contains { $0 >= tokens } }) {
                throw LayoutError.invalid("an object's words lie past the model's \(tokens)-token limit in \"\(prompt)\"")
            }
            return objects
        }
    }

    /// Token positions of `pieces` (one id sequence per word) in `ids`: the phrase's words
    /// next to each other, at the first such place none of whose tokens is in `avoiding`.
    static func locate(_ pieces: [[Int]], in ids: [Int], avoiding: Set<Int>) -> [Int]? {
        let phrase = pieces.flatMap { $0 }
        guard !phrase.isEmpty, phrase.count <= ids.count else { return nil }
        for start in 0...(ids.count - phrase.count) where Array(ids[start..<(start + phrase.count)]) == phrase {
            let positions = Array(start..<(start + phrase.count))
            if avoiding.isDisjoint(with: positions) { return positions }
        }
        return nil
    }
}
