import Foundation
import Torch

/// Turns captions into token ids for a ``TextEncoder``.
public protocol TextTokenizer: Sendable {
    /// The number of ids (the size of the embedding table that reads them).
    var vocabularySize: Int { get }
    /// The most ids ``encode(_:)`` returns, special tokens included.
    var maxLength: Int { get }
    /// The id written into padding positions.
    var padID: Int { get }
    /// The ids of one text with its special tokens, truncated to ``maxLength``.
    func encode(_ text: String) -> [Int]
}

extension TextTokenizer {
    /// Encodes every text and pads the batch to its longest sequence (padding on the right).
    public func encodeBatch(_ texts: [String]) -> TokenizedBatch {
        TokenizedBatch(ids: texts.map(encode), padID: padID)
    }
}

/// A batch of token-id sequences padded on the right to the longest one, with its attention mask.
public struct TokenizedBatch: Sendable, Equatable {
    /// Each text's ids without padding.
    public let ids: [[Int]]
    public let padID: Int

    public init(ids: [[Int]], padID: Int) {
        self.ids = ids
        self.padID = padID
    }

    /// The number of sequences.
    public var count: Int { ids.count }
    /// The padded length `L`: the longest sequence's length.
    public var length: Int { ids.map(\.count).max() ?? 0 }
    /// Each sequence's number of real (unpadded) tokens.
    public var lengths: [Int] { ids.map(\.count) }

    /// `[B][L]` ids, padded with ``padID``.
    public var paddedIDs: [[Int]] {
        let l = length
        return ids.map { $0 + Array(repeating: padID, count: l - $0.count) }
    }

    /// `[B][L]`: `true` for real tokens, `false` for padding.
    public var mask: [[Bool]] {
        let l = length
        return ids.map { Array(repeating: true, count: $0.count) + Array(repeating: false, count: l - $0.count) }
    }

    /// The padded ids as an int64 tensor `[B, L]`.
    public func inputIDs() throws -> Tensor {
        try Tensor(paddedIDs.joined().map { Int64($0) }, shape: [count, length])
    }

    /// The attention mask as a bool tensor `[B, L]` (`true` = attend).
    public func attentionMask() throws -> Tensor {
        try Tensor(Array(mask.joined()), shape: [count, length])
    }
}

/// Errors from loading tokenizers and text encoders.
public enum TextEncoderError: Error, Equatable, CustomStringConvertible {
    /// A file the encoder needs does not exist. `hint` says how to install it.
    case missingModelFile(path: String, hint: String)
    /// A vocabulary file is unreadable or lacks a required token.
    case invalidVocabulary(path: String, reason: String)
    /// A configuration file is unreadable or describes a model this code does not implement.
    case invalidConfiguration(path: String, reason: String)
    /// A checkpoint tensor that is deliberately not loaded does not hold what it should.
    case unexpectedCheckpointContent(key: String, reason: String)
    /// `encode` was called with no texts.
    case emptyBatch

    public var description: String {
        switch self {
        case let .missingModelFile(path, hint): "missing text-encoder file \(path): \(hint)"
        case let .invalidVocabulary(path, reason): "invalid vocabulary \(path): \(reason)"
        case let .invalidConfiguration(path, reason): "invalid text-encoder configuration \(path): \(reason)"
        case let .unexpectedCheckpointContent(key, reason): "checkpoint tensor '\(key)': \(reason)"
        case .emptyBatch: "cannot encode an empty batch of texts"
        }
    }
}

// MARK: - WordPiece

/// BERT's uncased WordPiece tokenizer, matching Hugging Face's `BertTokenizerFast` as
/// sentence-transformers calls it for all-MiniLM-L6-v2 (`padding=True`,
/// `truncation="longest_first"`, `max_length=max_seq_length`).
///
/// 1. The special tokens (`[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`) are matched first,
///    case-sensitively, in the raw text (they are "added tokens" with `normalized: false`), so a
///    caption containing `[MASK]` yields id 103 while `[mask]` is split as punctuation + word.
/// 2. The rest goes through ``BertPreTokenizer`` (clean, CJK, accents, lower-case, split).
/// 3. Each word longer than ``maxCharactersPerWord`` Unicode scalars becomes `[UNK]`; otherwise
///    it is split greedily into the longest vocabulary pieces from the left, continuation pieces
///    carrying the `##` prefix; if any position has no piece the whole word is `[UNK]`.
///    Pieces are compared byte for byte (UTF-8), never by Swift's canonical string equivalence.
/// 4. `[CLS] pieces [SEP]`, the pieces truncated to `maxLength - 2`.
///
/// An empty or all-whitespace text encodes as `[CLS] [SEP]` (ids 101, 102 in BERT's vocabulary),
/// exactly as Hugging Face does.
///
/// Golden ids: Tests/ContextDiffTests/Fixtures/text_tokens.json, written by
/// scripts/reference/make_text_references.py (`model.tokenize([text])["input_ids"]`).
public struct WordPieceTokenizer: TextTokenizer {
    /// The vocabulary in id order.
    public let tokens: [String]
    private let pieceIDs: [[UInt8]: Int]
    public var preTokenizer: BertPreTokenizer
    /// The most ids per text, `[CLS]` and `[SEP]` included.
    public var maxLength: Int
    public var maxCharactersPerWord: Int = 100
    public let unknownID: Int
    public let clsID: Int
    public let sepID: Int
    public let padID: Int
    /// Special-token strings matched verbatim in the raw text, with their ids.
    public let specialTokens: [(text: [Unicode.Scalar], id: Int)]

    public static let continuationPrefix = "##"

    /// Builds a tokenizer over `vocabulary` (token of id `i` at index `i`).
    /// - Throws: ``TextEncoderError/invalidVocabulary(path:reason:)`` if `[UNK]`, `[CLS]`, `[SEP]`
    ///   or `[PAD]` is missing.
    public init(vocabulary: [String], maxLength: Int = 256, preTokenizer: BertPreTokenizer = BertPreTokenizer(),
                source: String = "<memory>") throws {
        guard maxLength >= 2 else {
            throw TextEncoderError.invalidConfiguration(path: source, reason: "maxLength \(maxLength) leaves no room for [CLS] and [SEP]")
        }
        var ids: [[UInt8]: Int] = [:]
        ids.reserveCapacity(vocabulary.count)
        for (i, token) in vocabulary.enumerated() { ids[Array(token.utf8)] = i }  // a later duplicate wins, as in HF
        func id(_ token: String) throws -> Int {
            guard let id = ids[Array(token.utf8)] else {
                throw TextEncoderError.invalidVocabulary(path: source, reason: "no \(token) token")
            }
            return id
        }
        tokens = vocabulary
        pieceIDs = ids
        self.preTokenizer = preTokenizer
        self.maxLength = maxLength
        unknownID = try id("[UNK]")
        clsID = try id("[CLS]")
        sepID = try id("[SEP]")
        padID = try id("[PAD]")
        specialTokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].compactMap { text in
            ids[Array(text.utf8)].map { (Array(text.unicodeScalars), $0) }
        }
    }

    /// Reads a BERT `vocab.txt` (one token per line, id = line number).
    public init(vocabularyURL url: URL, maxLength: Int = 256, preTokenizer: BertPreTokenizer = BertPreTokenizer()) throws {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TextEncoderError.missingModelFile(path: url.path, hint: "no vocabulary file there")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TextEncoderError.invalidVocabulary(path: url.path, reason: "\(error)")
        }
        var lines = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        var vocabulary: [String] = []
        vocabulary.reserveCapacity(lines.count)
        for (n, line) in lines.enumerated() {
            var bytes = line
            if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
            guard let token = String(bytes: bytes, encoding: .utf8) else {
                throw TextEncoderError.invalidVocabulary(path: url.path, reason: "line \(n + 1) is not UTF-8")
            }
            vocabulary.append(token)
        }
        try self.init(vocabulary: vocabulary, maxLength: maxLength, preTokenizer: preTokenizer, source: url.path)
    }

    public var vocabularySize: Int { tokens.count }

    /// The id of `token`, if it is in the vocabulary.
    public func id(of token: String) -> Int? { pieceIDs[Array(token.utf8)] }

    /// The ids of `text` without `[CLS]`/`[SEP]` and without truncation.
    public func pieceIDs(_ text: String) -> [Int] {
        var out: [Int] = []
        for segment in splitSpecialTokens(Array(text.unicodeScalars)) {
            switch segment {
            case let .special(id): out.append(id)
            case let .text(scalars):
                for word in preTokenizer.words(scalars) { wordPiece(word, into: &out) }
            }
        }
        return out
    }

    /// `[CLS] pieces [SEP]`, the pieces truncated to `maxLength - 2`.
    public func encode(_ text: String) -> [Int] {
        [clsID] + pieceIDs(text).prefix(maxLength - 2) + [sepID]
    }

    /// The token strings of `ids` (for inspection).
    public func tokens(of ids: [Int]) -> [String] {
        ids.map { tokens.indices.contains($0) ? tokens[$0] : "<\($0)?>" }
    }

    // MARK: Internals

    private enum Segment {
        case special(Int)
        case text(ArraySlice<Unicode.Scalar>)
    }

    /// Splits the raw text around verbatim special tokens (leftmost, then longest match).
    private func splitSpecialTokens(_ scalars: [Unicode.Scalar]) -> [Segment] {
        var segments: [Segment] = []
        var start = 0, i = 0
        while i < scalars.count {
            var match: (length: Int, id: Int)?
            if scalars[i] == "[" {
                for (text, id) in specialTokens where text.count > (match?.length ?? 0) {
                    if i + text.count <= scalars.count, scalars[i..<(i + text.count)].elementsEqual(text) {
                        match = (text.count, id)
                    }
                }
            }
            if let match {
                if start < i { segments.append(.text(scalars[start..<i])) }
                segments.append(.special(match.id))
                i += match.length
                start = i
            } else {
                i += 1
            }
        }
        if start < scalars.count { segments.append(.text(scalars[start...])) }
        return segments
    }

    /// Greedy longest-match-first WordPiece of one word (tokenizers/src/models/wordpiece).
    private func wordPiece(_ word: [Unicode.Scalar], into out: inout [Int]) {
        guard word.count <= maxCharactersPerWord else {
            out.append(unknownID)
            return
        }
        // UTF-8 bytes of the word and the byte offset of every scalar boundary.
        var bytes: [UInt8] = []
        var offsets: [Int] = [0]
        for c in word {
            UTF8.encode(c) { bytes.append($0) }
            offsets.append(bytes.count)
        }
        let prefix = Array(Self.continuationPrefix.utf8)
        var pieces: [Int] = []
        var start = 0
        while start < word.count {
            var end = word.count
            var found: Int?
            while start < end {
                var key = start > 0 ? prefix : []
                key.append(contentsOf: bytes[offsets[start]..<offsets[end]])
                if let id = pieceIDs[key] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let found else {
                out.append(unknownID)
                return
            }
            pieces.append(found)
            start = end
        }
        out.append(contentsOf: pieces)
    }
}

// MARK: - Word level

/// A tiny word-level tokenizer for small learned encoders: BERT's normalisation and splitting
/// (``BertPreTokenizer``), one id per word, `[UNK]` for words outside the vocabulary.
/// Ids 0–3 are `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`; sequences are `[CLS] words [SEP]`.
public struct WordLevelTokenizer: TextTokenizer {
    public static let specialTokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    public static let padID = 0, unknownID = 1, clsID = 2, sepID = 3

    /// The vocabulary in id order, special tokens first.
    public let tokens: [String]
    private let ids: [String: Int]
    public var preTokenizer: BertPreTokenizer
    public var maxLength: Int

    /// A tokenizer over `words` (ids from 4 on, in the order given; duplicates dropped).
    public init(words: [String], maxLength: Int = 32, preTokenizer: BertPreTokenizer = BertPreTokenizer()) throws {
        guard maxLength >= 2 else {
            throw TextEncoderError.invalidConfiguration(path: "<memory>", reason: "maxLength \(maxLength) leaves no room for [CLS] and [SEP]")
        }
        var tokens = Self.specialTokens
        var ids: [String: Int] = [:]
        for (i, t) in tokens.enumerated() { ids[t] = i }
        for w in words where ids[w] == nil {
            ids[w] = tokens.count
            tokens.append(w)
        }
        self.tokens = tokens
        self.ids = ids
        self.preTokenizer = preTokenizer
        self.maxLength = maxLength
    }

    /// A vocabulary of every word seen at least `minimumCount` times in `texts`, sorted by
    /// decreasing frequency then alphabetically (deterministic).
    public init(fitting texts: [String], minimumCount: Int = 1, maxLength: Int = 32,
                preTokenizer: BertPreTokenizer = BertPreTokenizer()) throws {
        var counts: [String: Int] = [:]
        for text in texts {
            for w in preTokenizer.words(text) { counts[w, default: 0] += 1 }
        }
        let words = counts.filter { $0.value >= minimumCount }
            .sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map(\.key)
        try self.init(words: words, maxLength: maxLength, preTokenizer: preTokenizer)
    }

    public var vocabularySize: Int { tokens.count }
    public var padID: Int { Self.padID }

    public func encode(_ text: String) -> [Int] {
        let words = preTokenizer.words(text).prefix(maxLength - 2).map { ids[$0] ?? Self.unknownID }
        return [Self.clsID] + words + [Self.sepID]
    }
}
