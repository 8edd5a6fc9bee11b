import Foundation
import Torch

/// Memoises a frozen ``TextEncoder`` per caption, so a caption seen again (every epoch of
/// training, every sample of a sweep) is not encoded again.
///
/// Each caption's entry keeps its unpadded token states `[Lᵢ, D]`, its pooled vector `[D]` and
/// its ids; ``encode(_:)`` encodes only the captions it has not seen (in one batch, each once)
/// and assembles the padded batch from the entries, so a caption's values do not depend on the
/// batch it comes in. ``embedding(for:)`` returns the very same tensors on every hit.
///
/// Safe to share between threads of one process (one lock around the dictionary and the base
/// encoder, so encodes are serialised). Captions are keyed by their exact text; cache only
/// frozen encoders (``MiniLMTextEncoder``), never one that is being trained.
public final class TextEmbeddingCache: TextEncoder, @unchecked Sendable {
    /// One caption's encoding.
    public struct Entry: Sendable {
        /// `[Lᵢ, D]`, no padding.
        public let tokenStates: Tensor
        /// `[D]`.
        public let pooled: Tensor
        public let tokenIDs: [Int]
    }

    /// Hit and miss counts since creation (or ``removeAll()``).
    public struct Statistics: Sendable, Equatable {
        public var hits = 0
        public var misses = 0
        /// Calls made to the base encoder.
        public var baseCalls = 0
        public var entries = 0

        public init(hits: Int = 0, misses: Int = 0, baseCalls: Int = 0, entries: Int = 0) {
            self.hits = hits
            self.misses = misses
            self.baseCalls = baseCalls
            self.entries = entries
        }
    }

    public let base: any TextEncoder
    /// The most captions kept; the oldest inserted are dropped beyond it. `nil` = unbounded.
    public let capacity: Int?

    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private var insertionOrder: [String] = []
    private var stats = Statistics()

    public init(_ base: any TextEncoder, capacity: Int? = nil) {
        self.base = base
        self.capacity = capacity.map { Swift.max(1, $0) }
    }

    public var width: Int { base.width }
    public var tokenizer: any TextTokenizer { base.tokenizer }

    public var statistics: Statistics {
        lock.withLock {
            var s = stats
            s.entries = entries.count
            return s
        }
    }

    /// Forgets every caption and resets the statistics.
    public func removeAll() {
        lock.withLock {
            entries = [:]
            insertionOrder = []
            stats = Statistics()
        }
    }

    /// The cached encoding of one caption (encoding it on a miss).
    public func embedding(for caption: String) throws -> Entry {
        try lock.withLock { try entriesLocked(for: [caption])[0] }
    }

    public func encode(_ texts: [String]) throws -> TextEncoding {
        guard !texts.isEmpty else { throw TextEncoderError.emptyBatch }
        let rows = try lock.withLock { try entriesLocked(for: texts) }
        let lengths = rows.map(\.tokenIDs.count)
        let l = lengths.max()!
        let d = base.width
        return try Torch.withNoGrad {
            let states = try Tensor.zeros([rows.count, l, d], dtype: rows[0].tokenStates.dtype)
            for (i, row) in rows.enumerated() {
                try states.select(dim: 0, i).slice(dim: 0, 0, lengths[i]).copy(from: row.tokenStates)
            }
            let batch = TokenizedBatch(ids: rows.map(\.tokenIDs), padID: tokenizer.padID)
            return TextEncoding(
                tokenStates: states, attentionMask: try batch.attentionMask(),
                pooled: try Tensor.stack(rows.map(\.pooled)), tokenIDs: batch.ids)
        }
    }

    /// Must be called with `lock` held.
    private func entriesLocked(for texts: [String]) throws -> [Entry] {
        var missing: [String] = []
        var seen = Set<String>()
        for t in texts where entries[t] == nil && seen.insert(t).inserted { missing.append(t) }
        stats.misses += missing.count
        stats.hits += texts.count - missing.count
        var fresh: [String: Entry] = [:]
        if !missing.isEmpty {
            let encoding = try base.encode(missing)
            stats.baseCalls += 1
            try Torch.withNoGrad {
                for (i, text) in missing.enumerated() {
                    let n = encoding.tokenIDs[i].count
                    let states = try encoding.tokenStates.select(dim: 0, i).slice(dim: 0, 0, n)
                    // Own copies, so an entry does not keep its whole batch alive.
                    let entry = Entry(
                        tokenStates: try Self.copy(states), pooled: try Self.copy(encoding.pooled.select(dim: 0, i)),
                        tokenIDs: encoding.tokenIDs[i])
                    fresh[text] = entry
                    entries[text] = entry
                    insertionOrder.append(text)
                }
            }
        }
        let rows = texts.map { fresh[$0] ?? entries[$0]! }
        if let capacity, entries.count > capacity {
            let excess = entries.count - capacity
            for key in insertionOrder.prefix(excess) { entries[key] = nil }
            insertionOrder.removeFirst(excess)
        }
        return rows
    }

    private static func copy(_ t: Tensor) throws -> Tensor {
        let out = try Tensor.zeros(t.shape, dtype: t.dtype)
        try out.copy(from: t)
        return out
    }
}
