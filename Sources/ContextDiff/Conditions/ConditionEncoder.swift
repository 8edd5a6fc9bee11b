import NN
import Torch

/// Errors building or encoding a condition.
public enum ConditionError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The parts of a condition disagree in shape.
    case shapesDisagree(String)
    /// No input, or an empty one (`what`: "prompt", "class label", ...).
    case empty(String)
    /// A class label outside `0..<classes`.
    case unknownClass(label: Int, classes: Int)
    /// The encoder's width is not the model's condition width.
    case widthMismatch(encoder: Int, model: Int)
    /// A class name the model does not know.
    case unknownClassName(String, known: [String])

    public var description: String {
        switch self {
        case let .shapesDisagree(m): m
        case let .empty(what): "the \(what) is empty"
        case let .unknownClass(label, classes): "class label \(label) is outside 0..<\(classes)"
        case let .widthMismatch(e, m): "the condition encoder gives \(e)-wide states, the model expects \(m)"
        case let .unknownClassName(name, known):
            "unknown class '\(name)'; the model knows " + (known.count <= 40 ? known.joined(separator: ", ") : "\(known.count) classes")
        }
    }
}

/// A condition and what its encoder has to say about it (e.g. a prompt truncated to the token
/// limit), for the caller to show.
public struct EncodedCondition {
    public var condition: Condition
    public var notices: [String]

    public init(condition: Condition, notices: [String] = []) {
        self.condition = condition
        self.notices = notices
    }
}

/// Turns user inputs of one kind — captions, class labels, layouts — into a ``Condition``
/// that the U-Net and r_φ read. Adding a kind of condition: a conforming type (and, for training,
/// a data source that yields its inputs); the networks need no change as long as its width is
/// the model's `contextDim` (docs/ARCHITECTURE.md).
public protocol ConditionEncoder {
    associatedtype Input
    /// The width `D` of the condition tokens and the pooled vector.
    var width: Int { get }
    /// One condition row per input.
    func encode(_ inputs: [Input]) throws -> EncodedCondition
    /// The "no condition" rows classifier-free guidance pushes away from (the empty caption,
    /// the null class).
    func unconditional(count: Int) throws -> Condition
}

/// Captions through a ``TextEncoder``, truncated to the model's token limit.
public struct TextConditionEncoder: ConditionEncoder {
    public let textEncoder: any TextEncoder
    /// The most tokens a caption keeps (the model's `text_encoder.max_tokens`).
    public let maxTokens: Int

    public init(textEncoder: any TextEncoder, maxTokens: Int) {
        self.textEncoder = textEncoder
        self.maxTokens = maxTokens
    }

    public var width: Int { textEncoder.width }

    public func encode(_ texts: [String]) throws -> EncodedCondition {
        guard !texts.isEmpty else { throw ConditionError.empty("prompt list") }
        let encoding = try textEncoder.encode(texts)
        var tokens = encoding.tokenStates, mask = encoding.attentionMask
        var notices: [String] = []
        if try tokens.size(1) > maxTokens {
            for (text, ids) in zip(texts, encoding.tokenIDs) where ids.count > maxTokens {
                notices.append("prompt truncated to \(maxTokens) tokens (had \(ids.count)): \"\(text.prefix(60))…\"")
            }
            tokens = try tokens.slice(dim: 1, 0, maxTokens)
            mask = try mask.slice(dim: 1, 0, maxTokens)
        }
        return EncodedCondition(condition: try Condition(tokens: tokens, mask: mask, pooled: encoding.pooled), notices: notices)
    }

    public func unconditional(count: Int) throws -> Condition {
        try encode([""]).condition.repeated(count)
    }
}

/// The shape of a ``ClassLabelEncoder``: its class names (a label is an index into them) and
/// the token width (the model's condition width). Saved as `class_encoder/config.json`.
public struct ClassLabelEncoderConfig: Codable, Sendable, Equatable {
    /// One name per class, e.g. "red circle"; unique, non-empty.
    public var names: [String]
    public var width: Int

    public init(names: [String], width: Int) {
        self.names = names
        self.width = width
    }

    public func validate() throws {
        guard (1...ConfigLimits.size).contains(names.count), (1...ConfigLimits.size).contains(width) else {
            throw ModuleError.invalidConfiguration(
                "class encoder: give 1...\(ConfigLimits.size) class names and a width in 1...\(ConfigLimits.size), got \(names.count) and \(width)")
        }
        guard Set(names).count == names.count, names.allSatisfy({ !$0.trimmingCharacters(in: .whitespaces).isEmpty }) else {
            throw ModuleError.invalidConfiguration("class encoder: class names must be unique and non-empty")
        }
    }
}

/// Class labels (paper Appendix B's class-to-image) as one learned token each: an embedding
/// table of `classes + 1` rows, the last one the null class of classifier-free guidance. The
/// token is also the pooled vector, so the U-Net's cross-attention and scale-shift and r_φ all
/// see the class. Trained with the model (its weights are part of ``ContextDiffModel/parameters``).
public final class ClassLabelEncoder: Module, ConditionEncoder {
    public let config: ClassLabelEncoderConfig
    public let embedding: Embedding
    public let classes: Int

    public init(_ config: ClassLabelEncoderConfig) throws {
        try config.validate()
        self.config = config
        classes = config.names.count
        embedding = try Embedding(classes + 1, config.width)
        super.init()
    }

    /// Classes named by their index ("0", "1", ...).
    public convenience init(classes: Int, width: Int) throws {
        guard classes >= 1, width >= 1 else { throw ConditionError.unknownClass(label: 0, classes: classes) }
        try self.init(ClassLabelEncoderConfig(names: (0..<classes).map(String.init), width: width))
    }

    /// The label of a class name; "red-circle", "Red Circle" and "red circle" are one name.
    public func label(named name: String) throws -> Int {
        let key = Self.normalized(name)
        guard let i = config.names.firstIndex(where: { Self.normalized($0) == key }) else {
            throw ConditionError.unknownClassName(name, known: config.names)
        }
        return i
    }

    static func normalized(_ name: String) -> String {
        name.lowercased().split(whereSeparator: { $0 == "-" || $0 == "_" || $0.isWhitespace }).joined(separator: " ")
    }

    public var width: Int { embedding.weight.shape[1] }

    /// The null class (classifier-free guidance's "no condition").
    public var nullClass: Int { classes }

    /// The condition of `labels` (``nullClass`` allowed), with gradients to the embedding.
    public func condition(_ labels: [Int]) throws -> Condition {
        // The ids where the table is (a model moved to another device keeps its table there).
        let device = try embedding.weight.device
        let ids = try Tensor(labels.map(Int64.init), shape: [labels.count]).to(device)
        let pooled = try embedding(ids)  // [B, D]
        return try Condition(
            tokens: pooled.unsqueezed(1), mask: Tensor.ones([labels.count, 1], dtype: .bool).to(device), pooled: pooled)
    }

    public func encode(_ labels: [Int]) throws -> EncodedCondition {
        guard !labels.isEmpty else { throw ConditionError.empty("class label list") }
        for label in labels where !(0..<classes).contains(label) {
            throw ConditionError.unknownClass(label: label, classes: classes)
        }
        return EncodedCondition(condition: try condition(labels))
    }

    public func unconditional(count: Int) throws -> Condition {
        try condition(Array(repeating: nullClass, count: count))
    }
}
