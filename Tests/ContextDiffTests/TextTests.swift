import Foundation
import NN
import Testing
import TestSupport
import Torch

import ContextDiff

// Golden data: Fixtures/text_tokens.json and Fixtures/text_embeddings.json, written by
// scripts/reference/make_text_references.py with transformers 4.40.2 (BertTokenizerFast,
// tokenizers 0.19.1) and sentence-transformers 2.7.0 on torch 1.13:
//     HF_HUB_OFFLINE=1 /tmp/tvenv/bin/python scripts/reference/make_text_references.py
// The MiniLM files are required (CI runs scripts/setup.sh first); without them these tests
// fail with a message naming the missing path and the setup script.

private struct TokenFixture: Decodable {
    struct Case: Decodable {
        let name: String
        let text: String
        let ids: [Int]
        let tokens: [String]
    }

    struct Batch: Decodable {
        let texts: [String]
        let inputIDs: [[Int]]
        let attentionMask: [[Int]]

        enum CodingKeys: String, CodingKey {
            case texts
            case inputIDs = "input_ids"
            case attentionMask = "attention_mask"
        }
    }

    let maxSeqLength: Int
    let cases: [Case]
    let batch: Batch

    enum CodingKeys: String, CodingKey {
        case cases, batch
        case maxSeqLength = "max_seq_length"
    }
}

private struct EmbeddingFixture: Decodable {
    struct Case: Decodable {
        let text: String
        let embedding: [Double]
    }

    let cases: [Case]
}

private func fixture<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)")
    return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
}

/// The installed MiniLM files. Required: when absent the thrown
/// ``TextEncoderError/missingModelFile(path:hint:)`` names the path and scripts/setup.sh.
private func miniLMFiles() throws -> MiniLMFiles {
    try MiniLMFiles()
}

/// One MiniLM for the whole test process (loading reads 90 MB).
private final class SharedMiniLM: @unchecked Sendable {
    static let instance = SharedMiniLM()
    private let lock = NSLock()
    private var encoder: MiniLMTextEncoder?

    func get() throws -> MiniLMTextEncoder {
        try lock.withLock {
            if let encoder { return encoder }
            let e = try MiniLMTextEncoder(files: miniLMFiles())
            encoder = e
            return e
        }
    }
}

private func cosine(_ a: [Double], _ b: [Double]) -> Double {
    let dot = zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
    let na = a.reduce(0) { $0 + $1 * $1 }.squareRoot(), nb = b.reduce(0) { $0 + $1 * $1 }.squareRoot()
    return dot / (na * nb)
}

private func rows(_ t: Tensor) throws -> [[Double]] {
    let s = t.shape
    let flat = try t.to(.float64).contiguous().scalars(as: Double.self)
    return (0..<s[0]).map { Array(flat[($0 * s[1])..<(($0 + 1) * s[1])]) }
}

// MARK: - Tokenizer

@Suite("Text: WordPiece tokenizer against Hugging Face")
struct WordPieceTextTests {
    @Test func tokenIDsMatchHuggingFaceForEveryFixtureSentence() throws {
        let fixture = try fixture("text_tokens.json", as: TokenFixture.self)
        let tokenizer = try WordPieceTokenizer(vocabularyURL: miniLMFiles().vocabulary, maxLength: fixture.maxSeqLength)
        #expect(fixture.cases.count >= 20)
        var matched = 0
        for c in fixture.cases {
            let ids = tokenizer.encode(c.text)
            #expect(ids == c.ids, "\(c.name): got \(tokenizer.tokens(of: ids)), HF \(c.tokens)")
            if ids == c.ids { matched += 1 }
        }
        print("WordPiece: \(matched)/\(fixture.cases.count) fixture sentences match Hugging Face's ids")
    }

    @Test func settingsFromTheModelFolderMirrorSentenceTransformers() throws {
        let files = try miniLMFiles()
        let settings = try MiniLMSettings(files: files, config: BertConfig(contentsOf: files.config))
        #expect(settings.maxLength == 256)  // sentence_bert_config.json's max_seq_length, not tokenizer.json's 128
        #expect(settings.preTokenizer == BertPreTokenizer(lowercase: true))
        #expect(settings.normalizesPooled)
    }

    @Test func batchIsPaddedOnTheRightWithMask() throws {
        let fixture = try fixture("text_tokens.json", as: TokenFixture.self)
        let tokenizer = try WordPieceTokenizer(vocabularyURL: miniLMFiles().vocabulary)
        let batch = tokenizer.encodeBatch(fixture.batch.texts)
        #expect(batch.paddedIDs == fixture.batch.inputIDs)
        #expect(batch.mask.map { $0.map { $0 ? 1 : 0 } } == fixture.batch.attentionMask)
        let ids = try batch.inputIDs(), mask = try batch.attentionMask()
        #expect(ids.shape == [4, 13] && ids.dtype == .int64)
        #expect(mask.shape == [4, 13] && mask.dtype == .bool)
        #expect(batch.lengths == [4, 2, 13, 3])
    }

    @Test func emptyPromptIsClsSep() throws {
        let tokenizer = try WordPieceTokenizer(vocabularyURL: miniLMFiles().vocabulary)
        for text in ["", " ", "\n\t  ", "\u{0}\u{200B}"] {
            #expect(tokenizer.encode(text) == [101, 102], "\(text.debugDescription)")
        }
    }

    @Test func truncatesToMaxLengthKeepingSep() throws {
        let tokenizer = try WordPieceTokenizer(vocabularyURL: miniLMFiles().vocabulary, maxLength: 8)
        let ids = tokenizer.encode("one two three four five six seven eight nine ten")
        #expect(ids.count == 8)
        #expect(ids.first == 101 && ids.last == 102)
        #expect(tokenizer.tokens(of: Array(ids[1..<7])) == ["one", "two", "three", "four", "five", "six"])
    }

    @Test func greedyLongestMatchOnAToyVocabulary() throws {
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "runn", "##ing", "a", "##a", ","]
        var tokenizer = try WordPieceTokenizer(vocabulary: vocab)
        #expect(tokenizer.tokens(of: tokenizer.pieceIDs("unaffable running, xyz")) ==
            ["un", "##aff", "##able", "runn", "##ing", ",", "[UNK]"])
        tokenizer.maxCharactersPerWord = 5
        #expect(tokenizer.tokens(of: tokenizer.pieceIDs("aaaaa aaaaaa")) == ["a", "##a", "##a", "##a", "##a", "[UNK]"])
        #expect(tokenizer.tokens(of: tokenizer.pieceIDs("[MASK]un[mask]")) == ["[MASK]", "un", "[UNK]", "[UNK]", "[UNK]"])
    }

    @Test func vocabularyWithoutSpecialTokensIsRejected() throws {
        #expect(throws: TextEncoderError.invalidVocabulary(path: "<memory>", reason: "no [UNK] token")) {
            try WordPieceTokenizer(vocabulary: ["[PAD]", "[CLS]", "[SEP]", "a"])
        }
    }

    @Test func preTokenizerCharacterClasses() {
        let p = BertPreTokenizer()
        #expect(p.words("Café NAÏVE") == ["cafe", "naive"])
        #expect(p.words("a$b+c<d^e`f|g~h") == ["a", "$", "b", "+", "c", "<", "d", "^", "e", "`", "f", "|", "g", "~", "h"])
        #expect(p.words("中文ab") == ["中", "文", "ab"])
        #expect(p.words("x\u{00A0}y\u{3000}z") == ["x", "y", "z"])
        #expect(p.words("ΟΔΟΣ") == ["οδοσ"])  // context-free lowercase, as the Rust tokenizer
        #expect(BertPreTokenizer(stripAccents: false, lowercase: true).words("Café") == ["café"])
        #expect(BertPreTokenizer(lowercase: false).words("Café") == ["Café"])
    }

    @Test func wordLevelTokenizerFittedOnCaptions() throws {
        let t = try WordLevelTokenizer(fitting: ["a red circle", "a blue square", "A red square."], maxLength: 5)
        #expect(t.tokens == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red", "square", ".", "blue", "circle"])
        #expect(t.encode("a green circle") == [2, 4, 1, 9, 3])
        #expect(t.encode("a red square a red") == [2, 4, 5, 6, 3])  // truncated to 5
        #expect(t.encode("") == [2, 3])
    }
}

// MARK: - Model files

@Suite("Text: locating the MiniLM files")
struct MiniLMFilesTextTests {
    @Test func defaultDirectoryFollowsSetupScript() {
        let name = "contextdiff/all-MiniLM-L6-v2"
        #expect(MiniLMFiles.defaultDirectory(environment: ["CONTEXTDIFF_MINILM_DIR": "/m", "XDG_CACHE_HOME": "/x", "HOME": "/h"]).path == "/m")
        #expect(MiniLMFiles.defaultDirectory(environment: ["XDG_CACHE_HOME": "/x", "HOME": "/h"]).path == "/x/\(name)")
        #expect(MiniLMFiles.defaultDirectory(environment: ["CONTEXTDIFF_MINILM_DIR": "", "XDG_CACHE_HOME": "", "HOME": "/h"]).path
            == "/h/.cache/\(name)")
    }

    @Test func missingFolderOrFileIsATypedErrorNamingThePath() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("minilm-missing-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        #expect(throws: TextEncoderError.missingModelFile(path: root.path, hint: MiniLMFiles.setupHint)) {
            try MiniLMTextEncoder(directory: root)
        }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        for file in ["config.json", "vocab.txt"] {
            try Data("{}".utf8).write(to: root.appendingPathComponent(file))
        }
        let error = #expect(throws: TextEncoderError.self) { try MiniLMTextEncoder(directory: root) }
        #expect(error == .missingModelFile(path: root.appendingPathComponent("model.safetensors").path, hint: MiniLMFiles.setupHint))
        #expect(error?.description.contains("scripts/setup.sh") == true)
        // The environment variable is honoured.
        #expect(throws: TextEncoderError.missingModelFile(path: "/nonexistent/minilm", hint: MiniLMFiles.setupHint)) {
            try MiniLMFiles(environment: ["CONTEXTDIFF_MINILM_DIR": "/nonexistent/minilm"])
        }
    }
}

// MARK: - MiniLM

@Suite("Text: MiniLM against sentence-transformers", .serialized)
struct MiniLMTextTests {
    @Test func sentenceEmbeddingsMatchSentenceTransformers() throws {
        let encoder = try SharedMiniLM.instance.get()
        let fixture = try fixture("text_embeddings.json", as: EmbeddingFixture.self)
        let encoding = try encoder.encode(fixture.cases.map(\.text))
        #expect(encoding.pooled.shape == [fixture.cases.count, 384])
        let got = try rows(encoding.pooled)
        var minCosine = 1.0, worstDiff = 0.0
        for (c, row) in zip(fixture.cases, got) {
            let cos = cosine(row, c.embedding)
            minCosine = min(minCosine, cos)
            #expect(cos >= 0.9999, "\(c.text.prefix(40).debugDescription): cosine \(cos)")
            let maxDiff = zip(row, c.embedding).map { Swift.abs($0 - $1) }.max()!
            #expect(maxDiff < 1e-4, "\(c.text.prefix(40).debugDescription): max |diff| \(maxDiff)")
            worstDiff = max(worstDiff, maxDiff)
        }
        print("MiniLM vs sentence-transformers: min cosine \(minCosine), max |diff| \(worstDiff) over \(fixture.cases.count) sentences")
    }

    @Test func outputShapesMaskAndPadding() throws {
        let encoder = try SharedMiniLM.instance.get()
        let texts = ["a cat", "A red circle to the left of a blue square.", ""]
        let e = try encoder.encode(texts)
        #expect(e.tokenStates.shape == [3, 13, 384] && e.tokenStates.dtype == .float32)
        #expect(e.attentionMask.shape == [3, 13] && e.attentionMask.dtype == .bool)
        #expect(e.tokenIDs.map(\.count) == [4, 13, 2])
        #expect(try e.attentionMask.to(.int64).sum(dims: [1]).scalars(as: Int64.self) == [4, 13, 2])
        #expect(try e.tokenStates.select(dim: 0, 0).slice(dim: 0, 4, 13).abs().max().item() == 0)
        let norms = try e.pooled.norm(dims: [1]).scalars(as: Float.self)
        #expect(norms.allSatisfy { Swift.abs($0 - 1) < 1e-5 })
        // The same caption alone (no padding) gives the same values.
        let alone = try encoder.encode(["a cat"])
        #expect(try TestSupport.relativeDiff(alone.tokenStates.select(dim: 0, 0), e.tokenStates.select(dim: 0, 0).slice(dim: 0, 0, 4)) < 1e-5)
        #expect(try TestSupport.relativeDiff(alone.pooled.select(dim: 0, 0), e.pooled.select(dim: 0, 0)) < 1e-6)
        #expect(throws: TextEncoderError.emptyBatch) { try encoder.encode([]) }
    }

    @Test func emptyPromptIsDeterministic() throws {
        let encoder = try SharedMiniLM.instance.get()
        let a = try encoder.encode([""]), b = try encoder.encode([""])
        #expect(a.tokenIDs == [[101, 102]])
        #expect(a.tokenStates.shape == [1, 2, 384])
        #expect(try a.pooled.isFinite().all().item() == 1)
        #expect(try TestSupport.relativeDiff(a.pooled, b.pooled) == 0)
        #expect(try TestSupport.relativeDiff(a.tokenStates, b.tokenStates) == 0)
    }

    @Test func everyCheckpointTensorIsLoadedOrExplicitlyIgnored() throws {
        let encoder = try SharedMiniLM.instance.get()
        var state = try loadSafeTensors(encoder.files.weights)
        let own = Set(encoder.model.namedParameters().map(\.0))
        #expect(Set(state.keys) == own.union(MiniLMTextEncoder.ignoredCheckpointKeys))
        #expect(own.contains("encoder.layer.5.attention.self.query.weight"))
        #expect(own.contains("embeddings.LayerNorm.weight"))
        #expect(own.count == 101)  // 5 embedding tensors + 6 layers × 16
        // position_ids is checked, not silently dropped.
        state["embeddings.position_ids"] = try Tensor.zeros([1, 512], dtype: .int64)
        #expect(throws: TextEncoderError.self) { try MiniLMTextEncoder.removeIgnoredTensors(from: &state) }
        // Anything else that is unknown is refused by Module.load.
        var extra = try loadSafeTensors(encoder.files.weights)
        try MiniLMTextEncoder.removeIgnoredTensors(from: &extra)
        extra["encoder.layer.6.output.dense.bias"] = try Tensor.zeros([384])
        #expect(throws: ModuleError.unexpectedKey("encoder.layer.6.output.dense.bias")) { try encoder.model.load(extra) }
    }

    @Test func frozenButUsableAsConditioningForTraining() throws {
        let encoder = try SharedMiniLM.instance.get()
        #expect(encoder.model.parameters().allSatisfy { !$0.requiresGrad })
        #expect(!encoder.model.encoder.layers[0].isTraining)
        let e = try encoder.encode(["a red circle"])
        #expect(!e.tokenStates.requiresGrad)
        let head = try Linear(384, 4)
        try head.requireGrad()
        try head(e.tokenStates).square().mean().backward()
        #expect(head.weight.grad != nil)
    }

    @Test func cacheOverMiniLMMatchesDirectEncoding() throws {
        let encoder = try SharedMiniLM.instance.get()
        let cache = TextEmbeddingCache(encoder)
        let texts = ["a small blue square", "two green triangles above a yellow circle"]
        let direct = try encoder.encode(texts)
        _ = try cache.encode([texts[1]])
        let cached = try cache.encode(texts)
        #expect(cache.statistics.baseCalls == 2)
        #expect(try TestSupport.relativeDiff(cached.tokenStates, direct.tokenStates) < 1e-5)
        #expect(try TestSupport.relativeDiff(cached.pooled, direct.pooled) < 1e-6)
        #expect(cached.tokenIDs == direct.tokenIDs)
    }
}

// MARK: - Cache

/// Counts calls to a learned encoder (run without gradients, as a frozen one would be).
private final class CountingEncoder: TextEncoder {
    let inner: LearnedTextEncoder
    private(set) var calls: [[String]] = []

    init() throws {
        inner = try Torch.withSeed(7) { try LearnedTextEncoder(
            tokenizer: WordLevelTokenizer(fitting: ["a red circle", "a blue square", "two green triangles"]),
            width: 16, layers: 1, heads: 2) }
    }

    var width: Int { inner.width }
    var tokenizer: any TextTokenizer { inner.tokenizer }

    func encode(_ texts: [String]) throws -> TextEncoding {
        calls.append(texts)
        return try Torch.withNoGrad { try inner.encode(texts) }
    }
}

@Suite("Text: embedding cache")
struct TextEmbeddingCacheTextTests {
    @Test func repeatedCaptionsAreNotReEncoded() throws {
        let base = try CountingEncoder()
        let cache = TextEmbeddingCache(base)
        let first = try cache.encode(["a red circle", "two green triangles", "a red circle"])
        #expect(base.calls == [["a red circle", "two green triangles"]])
        #expect(cache.statistics == .init(hits: 1, misses: 2, baseCalls: 1, entries: 2))

        let second = try cache.encode(["two green triangles", "a red circle"])
        #expect(base.calls.count == 1)
        #expect(cache.statistics.hits == 3)
        #expect(try TestSupport.relativeDiff(second.pooled.select(dim: 0, 1), first.pooled.select(dim: 0, 0)) == 0)
        #expect(try TestSupport.relativeDiff(second.tokenStates.select(dim: 0, 0).slice(dim: 0, 0, 5),
                               first.tokenStates.select(dim: 0, 1)) == 0)

        // The per-caption entry is the same tensors on every hit.
        let a = try cache.embedding(for: "a red circle"), b = try cache.embedding(for: "a red circle")
        #expect(a.tokenStates === b.tokenStates && a.pooled === b.pooled)
        #expect(a.tokenStates.shape == [5, 16] && a.tokenIDs.count == 5)
        #expect(base.calls.count == 1)

        // Values equal a direct encoding, padding zeroed.
        let direct = try base.encode(["a red circle", "two green triangles", "a red circle"])
        #expect(try TestSupport.relativeDiff(first.tokenStates, direct.tokenStates) < 1e-6)
        #expect(try TestSupport.relativeDiff(first.pooled, direct.pooled) < 1e-6)
        #expect(first.tokenIDs == direct.tokenIDs)
    }

    @Test func capacityDropsTheOldestCaptions() throws {
        let base = try CountingEncoder()
        let cache = TextEmbeddingCache(base, capacity: 2)
        _ = try cache.encode(["a red circle"])
        _ = try cache.encode(["a blue square"])
        _ = try cache.encode(["two green triangles"])
        #expect(cache.statistics.entries == 2)
        _ = try cache.encode(["two green triangles", "a blue square"])
        #expect(base.calls.count == 3)
        _ = try cache.encode(["a red circle"])
        #expect(base.calls.count == 4)
        cache.removeAll()
        #expect(cache.statistics == .init())
    }
}

// MARK: - Learned encoder

@Suite("Text: learned token encoder")
struct LearnedTextEncoderTextTests {
    static let captions = ["a red circle", "a blue square", "a green triangle", "a yellow circle"]

    @Test func shapesKeysAndPaddingInvariance() throws {
        try Torch.withSeed(1) {
            let tokenizer = try WordLevelTokenizer(fitting: Self.captions, maxLength: 8)
            let encoder = try LearnedTextEncoder(tokenizer: tokenizer, width: 32, layers: 2, heads: 4)
            let keys = encoder.namedParameters().map(\.0)
            #expect(keys.contains("token_embedding.weight") && keys.contains("position_embedding.weight"))
            #expect(keys.contains("layers.1.attention.to_q.weight") && keys.contains("final_norm.bias"))
            let e = try encoder.encode(["a red circle", "circle", ""])
            #expect(e.tokenStates.shape == [3, 5, 32])
            #expect(e.pooled.shape == [3, 32])
            #expect(try e.tokenStates.select(dim: 0, 2).slice(dim: 0, 2, 5).abs().max().item() == 0)
            let alone = try encoder.encode(["circle"])
            #expect(try TestSupport.relativeDiff(alone.tokenStates.select(dim: 0, 0), e.tokenStates.select(dim: 0, 1).slice(dim: 0, 0, 3)) < 1e-5)
            #expect(try TestSupport.relativeDiff(alone.pooled.select(dim: 0, 0), e.pooled.select(dim: 0, 1)) < 1e-5)
        }
    }

    @Test func learnsToSeparateColors() throws {
        // Pooled vectors are trained to predict each caption's color; the loss must fall.
        try Torch.withSeed(3) {
            let tokenizer = try WordLevelTokenizer(fitting: Self.captions)
            let encoder = try LearnedTextEncoder(tokenizer: tokenizer, width: 16, layers: 1, heads: 2)
            let head = try Linear(16, 4)
            try encoder.requireGrad()
            try head.requireGrad()
            let optimizer = try AdamW(parameters: encoder.parameters() + head.parameters(), learningRate: 1e-2, weightDecay: 0)
            let labels = try Tensor([Int64(0), 1, 2, 3])
            func loss() throws -> Tensor { try head(encoder.encode(Self.captions).pooled).crossEntropy(targets: labels) }
            let initial = try loss().item()
            for _ in 0..<40 {
                try optimizer.zeroGrad()
                try loss().backward()
                try optimizer.step()
            }
            #expect(encoder.tokenEmbedding.weight.grad != nil)
            let final = try loss().item()
            #expect(final < initial * 0.2, "loss \(initial) -> \(final)")
        }
    }
}
