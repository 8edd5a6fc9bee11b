import Foundation
import NN
import Torch

/// Where the all-MiniLM-L6-v2 files live, and which of them the encoder reads.
///
/// The folder is, first found: an explicit URL; `$CONTEXTDIFF_MINILM_DIR`;
/// `$XDG_CACHE_HOME/contextdiff/all-MiniLM-L6-v2`; `~/.cache/contextdiff/all-MiniLM-L6-v2`
/// (the same rule as scripts/setup.sh, which installs the files there). Empty variables count
/// as unset.
public struct MiniLMFiles: Sendable, Equatable {
    public static let folderName = "all-MiniLM-L6-v2"
    /// What to do when a file is missing.
    public static let setupHint =
        "run scripts/setup.sh to install all-MiniLM-L6-v2, or point CONTEXTDIFF_MINILM_DIR at a folder with its files"

    public let directory: URL

    /// The folder to use when none is given explicitly.
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        func nonEmpty(_ key: String) -> String? { environment[key].flatMap { $0.isEmpty ? nil : $0 } }
        if let dir = nonEmpty("CONTEXTDIFF_MINILM_DIR") { return URL(fileURLWithPath: dir, isDirectory: true) }
        let cache: URL
        if let xdg = nonEmpty("XDG_CACHE_HOME") {
            cache = URL(fileURLWithPath: xdg, isDirectory: true)
        } else {
            let home = nonEmpty("HOME").map { URL(fileURLWithPath: $0, isDirectory: true) }
                ?? FileManager.default.homeDirectoryForCurrentUser
            cache = home.appendingPathComponent(".cache", isDirectory: true)
        }
        return cache.appendingPathComponent("contextdiff", isDirectory: true)
            .appendingPathComponent(folderName, isDirectory: true)
    }

    /// Locates the folder and checks that the required files (``requiredFiles``) exist.
    /// - Throws: ``TextEncoderError/missingModelFile(path:hint:)`` naming the first missing path.
    public init(directory: URL? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        self.directory = directory ?? Self.defaultDirectory(environment: environment)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: self.directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TextEncoderError.missingModelFile(path: self.directory.path, hint: Self.setupHint)
        }
        for file in [config, weights, vocabulary] where !FileManager.default.fileExists(atPath: file.path) {
            throw TextEncoderError.missingModelFile(path: file.path, hint: Self.setupHint)
        }
    }

    /// BERT's `config.json` (required).
    public var config: URL { directory.appendingPathComponent("config.json") }
    /// The weights (required).
    public var weights: URL { directory.appendingPathComponent("model.safetensors") }
    /// WordPiece vocabulary (required).
    public var vocabulary: URL { directory.appendingPathComponent("vocab.txt") }
    /// Optional: `do_lower_case`, `strip_accents`, `tokenize_chinese_chars`, `model_max_length`.
    public var tokenizerConfig: URL { directory.appendingPathComponent("tokenizer_config.json") }
    /// Optional: sentence-transformers' `max_seq_length`.
    public var sentenceBertConfig: URL { directory.appendingPathComponent("sentence_bert_config.json") }
    /// Optional: the pooling mode (only mean pooling is implemented).
    public var poolingConfig: URL { directory.appendingPathComponent("1_Pooling/config.json") }
    /// Optional: the sentence-transformers pipeline (whether a `Normalize` module follows pooling).
    public var modules: URL { directory.appendingPathComponent("modules.json") }
}

/// How sentence-transformers runs the model: read from the folder's small JSON files.
public struct MiniLMSettings: Sendable, Equatable {
    /// Truncation length, `[CLS]`/`[SEP]` included: `max_seq_length` of sentence_bert_config.json
    /// (256 for all-MiniLM-L6-v2), else `min(model_max_length, max_position_embeddings)`.
    /// (tokenizer.json's own 128 is not used: sentence-transformers overrides it on every call.)
    public var maxLength: Int
    public var preTokenizer: BertPreTokenizer
    /// Whether the pooled vector is L2-normalised (a `Normalize` module in modules.json).
    public var normalizesPooled: Bool

    public init(maxLength: Int = 256, preTokenizer: BertPreTokenizer = BertPreTokenizer(), normalizesPooled: Bool = true) {
        self.maxLength = maxLength
        self.preTokenizer = preTokenizer
        self.normalizesPooled = normalizesPooled
    }

    /// Reads the settings; absent optional files keep all-MiniLM-L6-v2's values.
    public init(files: MiniLMFiles, config: BertConfig) throws {
        self.init()
        if let t = try Self.json(files.tokenizerConfig) {
            if let lower = t["do_lower_case"] as? Bool { preTokenizer.lowercase = lower }
            if let strip = t["strip_accents"] as? Bool { preTokenizer.stripAccents = strip }
            if let cjk = t["tokenize_chinese_chars"] as? Bool { preTokenizer.handleChineseCharacters = cjk }
        }
        var length: Int?
        if let s = try Self.json(files.sentenceBertConfig), let n = s["max_seq_length"] as? Int { length = n }
        if length == nil, let t = try Self.json(files.tokenizerConfig), let n = t["model_max_length"] as? Int {
            length = min(n, config.maxPositionEmbeddings)
        }
        maxLength = min(length ?? config.maxPositionEmbeddings, config.maxPositionEmbeddings)
        if let p = try Self.json(files.poolingConfig) {
            let others = ["pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                          "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"]
            guard p["pooling_mode_mean_tokens"] as? Bool ?? true, !others.contains(where: { p[$0] as? Bool == true }) else {
                throw TextEncoderError.invalidConfiguration(path: files.poolingConfig.path, reason: "only mean pooling is implemented")
            }
        }
        if let data = try? Data(contentsOf: files.modules) {
            guard let modules = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
                throw TextEncoderError.invalidConfiguration(path: files.modules.path, reason: "not a JSON array of modules")
            }
            normalizesPooled = modules.contains { ($0["type"] as? String)?.hasSuffix(".Normalize") == true }
        }
    }

    private static func json(_ url: URL) throws -> [String: Any]? {
        guard let data = try? Data(contentsOf: url) else { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TextEncoderError.invalidConfiguration(path: url.path, reason: "not a JSON object")
        }
        return object
    }
}

/// The pretrained sentence-transformers model all-MiniLM-L6-v2: BERT (6 layers, 384 wide,
/// 12 heads) over the uncased WordPiece vocabulary; token states are the last hidden layer;
/// the pooled vector is the mean over real tokens, L2-normalised — exactly
/// `SentenceTransformer("all-MiniLM-L6-v2").encode(texts)` (cosine ≥ 0.9999 against
/// Tests/ContextDiffTests/Fixtures/text_embeddings.json).
///
/// The encoder is frozen: evaluation mode, parameters without gradients, forward passes under
/// `Torch.withNoGrad`. (Not libtorch's inference mode: its tensors could not be saved for the
/// backward pass of a model trained on them, such as a U-Net's cross-attention.)
public final class MiniLMTextEncoder: TextEncoder {
    /// Checkpoint tensors that are deliberately not loaded:
    /// - `embeddings.position_ids`: a buffer holding `0..<512`, checked to hold exactly that;
    ///   positions are generated instead.
    /// - `pooler.dense.weight`, `pooler.dense.bias`: BERT's [CLS] pooler, which
    ///   sentence-transformers' mean pooling never uses.
    /// Every other tensor must match a parameter by name, shape and dtype (``Module/load(_:allowDTypeConversion:)``).
    public static let ignoredCheckpointKeys: [String] = ["embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"]

    public let model: BertModel
    public let wordPiece: WordPieceTokenizer
    public let settings: MiniLMSettings
    public let files: MiniLMFiles

    public var tokenizer: any TextTokenizer { wordPiece }
    public var width: Int { model.config.hiddenSize }

    /// Loads the model from `directory` (or the default folder, see ``MiniLMFiles``).
    /// - Throws: ``TextEncoderError/missingModelFile(path:hint:)`` naming the missing path, or a
    ///   loading error naming the offending tensor or file.
    public convenience init(directory: URL? = nil) throws {
        try self.init(files: MiniLMFiles(directory: directory))
    }

    public init(files: MiniLMFiles) throws {
        let config = try BertConfig(contentsOf: files.config)
        let settings = try MiniLMSettings(files: files, config: config)
        let wordPiece = try WordPieceTokenizer(
            vocabularyURL: files.vocabulary, maxLength: settings.maxLength, preTokenizer: settings.preTokenizer)
        guard wordPiece.vocabularySize <= config.vocabSize else {
            throw TextEncoderError.invalidVocabulary(
                path: files.vocabulary.path,
                reason: "\(wordPiece.vocabularySize) tokens but the model has \(config.vocabSize) embeddings")
        }
        let model = try BertModel(config)
        var state = try loadSafeTensors(files.weights)
        try Self.removeIgnoredTensors(from: &state)
        try model.load(state)
        model.eval()
        try model.requireGrad(false)
        self.model = model
        self.wordPiece = wordPiece
        self.settings = settings
        self.files = files
    }

    /// Drops ``ignoredCheckpointKeys`` from `state` after checking `embeddings.position_ids`.
    public static func removeIgnoredTensors(from state: inout [String: Tensor]) throws {
        if let ids = state["embeddings.position_ids"] {
            let values = try ids.to(.int64).contiguous().scalars(as: Int64.self)
            guard values.enumerated().allSatisfy({ Int64($0.offset) == $0.element }) else {
                throw TextEncoderError.unexpectedCheckpointContent(
                    key: "embeddings.position_ids", reason: "expected 0, 1, 2, ... (absolute positions)")
            }
        }
        for key in ignoredCheckpointKeys { state[key] = nil }
    }

    public func encode(_ texts: [String]) throws -> TextEncoding {
        guard !texts.isEmpty else { throw TextEncoderError.emptyBatch }
        let batch = wordPiece.encodeBatch(texts)
        return try Torch.withNoGrad {
            let mask = try batch.attentionMask()
            let states = try model(batch.inputIDs(), mask: mask)
            var pooled = try TextPooling.meanOverTokens(states, mask: mask)
            if settings.normalizesPooled { pooled = try TextPooling.l2Normalized(pooled) }
            return TextEncoding(
                tokenStates: try TextPooling.zeroingPadding(states, mask: mask), attentionMask: mask,
                pooled: pooled, tokenIDs: batch.ids)
        }
    }
}
