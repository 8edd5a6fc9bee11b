import Foundation

/// BERT's text normalisation and word splitting, as Hugging Face `tokenizers` (the Rust crate
/// behind `BertTokenizerFast`, which sentence-transformers uses) implements it:
/// `normalizers.BertNormalizer` followed by `pre_tokenizers.BertPreTokenizer`.
///
/// Steps, in the crate's order:
/// 1. **Clean** (`clean_text`): drop U+0000, U+FFFD and control characters (general category
///    Cc, Cf, Co or Cs, except tab, newline and carriage return); every whitespace character
///    (Unicode `White_Space`, plus `\t \n \r`) becomes a plain space.
///    Unassigned code points (Cn) are *kept*, as the fast tokenizer keeps them (the slow Python
///    `BertTokenizer` drops them; they become `[UNK]` here).
/// 2. **CJK** (`handle_chinese_chars`): spaces around every CJK ideograph, so each is a word.
///    The ranges are the Rust crate's, which differ from the Python tokenizer's in one block:
///    U+2B920–U+2CEAF here (not U+2B820).
/// 3. **Strip accents** (`strip_accents`, which defaults to `lowercase`): canonical decomposition
///    (NFD), then drop nonspacing marks (Mn). Hangul syllables therefore decompose into jamo.
/// 4. **Lower-case** (`lowercase`): each scalar's full Unicode lowercase mapping, without
///    context (so a final capital sigma becomes σ, not ς, as in Rust's `char::to_lowercase`).
/// 5. **Split**: on whitespace (removed) and around punctuation (kept, each character its own
///    word). Punctuation is BERT's definition: every ASCII symbol in 33–47, 58–64, 91–96 and
///    123–126 (so `$`, `+`, `<`, `^`, `` ` ``, `|` and `~` split words) or any Unicode P* category.
///
/// The categories come from the Swift runtime's Unicode tables, which may be newer than the
/// crate's; characters assigned in recent Unicode versions may classify differently (rare).
public struct BertPreTokenizer: Sendable, Equatable {
    public var cleanText: Bool
    public var handleChineseCharacters: Bool
    /// `nil` follows `lowercase`, as in BERT's normalizer.
    public var stripAccents: Bool?
    public var lowercase: Bool

    public init(cleanText: Bool = true, handleChineseCharacters: Bool = true, stripAccents: Bool? = nil, lowercase: Bool = true) {
        self.cleanText = cleanText
        self.handleChineseCharacters = handleChineseCharacters
        self.stripAccents = stripAccents
        self.lowercase = lowercase
    }

    /// The normalised text (steps 1–4).
    public func normalize<S: Sequence>(_ scalars: S) -> [Unicode.Scalar] where S.Element == Unicode.Scalar {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(scalars.underestimatedCount)
        for c in scalars {
            if cleanText {
                if c.value == 0 || c.value == 0xFFFD || Self.isControl(c) { continue }
                if Self.isWhitespace(c) {
                    out.append(" ")
                    continue
                }
            }
            if handleChineseCharacters, Self.isChineseCharacter(c) {
                out.append(" ")
                out.append(c)
                out.append(" ")
            } else {
                out.append(c)
            }
        }
        if stripAccents ?? lowercase {
            var text = String.UnicodeScalarView()
            text.append(contentsOf: out)
            out = String(text).decomposedStringWithCanonicalMapping.unicodeScalars
                .filter { $0.properties.generalCategory != .nonspacingMark }
        }
        if lowercase {
            var lowered: [Unicode.Scalar] = []
            lowered.reserveCapacity(out.count)
            for c in out {
                if c.isASCII {
                    lowered.append(c.properties.changesWhenLowercased ? Unicode.Scalar(c.value + 32)! : c)
                } else {
                    lowered.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars)
                }
            }
            out = lowered
        }
        return out
    }

    /// The words of `text` after normalisation (steps 1–5), each as its Unicode scalars.
    public func words<S: Sequence>(_ text: S) -> [[Unicode.Scalar]] where S.Element == Unicode.Scalar {
        var words: [[Unicode.Scalar]] = []
        var current: [Unicode.Scalar] = []
        for c in normalize(text) {
            if Self.isWhitespace(c) {
                if !current.isEmpty { words.append(current); current = [] }
            } else if Self.isPunctuation(c) {
                if !current.isEmpty { words.append(current); current = [] }
                words.append([c])
            } else {
                current.append(c)
            }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }

    /// The words of `text` as strings.
    public func words(_ text: String) -> [String] {
        words(text.unicodeScalars).map { String(String.UnicodeScalarView($0)) }
    }

    // MARK: - Character classes (tokenizers/src/normalizers/bert.rs, pre_tokenizers/bert.rs)

    static func isWhitespace(_ c: Unicode.Scalar) -> Bool {
        c == "\t" || c == "\n" || c == "\r" || c.properties.isWhitespace
    }

    static func isControl(_ c: Unicode.Scalar) -> Bool {
        if c == "\t" || c == "\n" || c == "\r" { return false }
        switch c.properties.generalCategory {
        case .control, .format, .privateUse, .surrogate: return true
        default: return false
        }
    }

    static func isPunctuation(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) {
            return true
        }
        switch c.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }

    static func isChineseCharacter(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F,
             0x2B740...0x2B81F, 0x2B920...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
            return true
        default:
            return false
        }
    }
}
