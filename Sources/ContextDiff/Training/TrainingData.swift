import Foundation
import Torch

/// Images with captions, addressed by index.
public protocol CaptionedImageSource {
    var count: Int { get }
    /// `[B, C, H, W]` float32 in [-1, 1].
    func images(at indices: [Int]) throws -> Tensor
    func caption(at index: Int) -> String
}

/// A dataset held in memory as one tensor.
public struct InMemoryImageSource: CaptionedImageSource {
    public let pixels: Tensor
    public let captions: [String]

    public init(pixels: Tensor, captions: [String]) throws {
        guard pixels.rank == 4, try pixels.size(0) == captions.count, !captions.isEmpty else {
            throw TrainingError.invalidData("expected [N, C, H, W] images with one caption each, got \(pixels.shape) and \(captions.count) captions")
        }
        self.pixels = pixels
        self.captions = captions
    }

    public var count: Int { captions.count }

    public func images(at indices: [Int]) throws -> Tensor {
        try pixels.indexSelect(dim: 0, Tensor(indices.map(Int64.init), shape: [indices.count]))
    }

    public func caption(at index: Int) -> String { captions[index] }
}

/// The condition of every distinct caption: either encoded once by a frozen text encoder, or
/// (class-to-image) a class name whose condition is the model's learned class token, computed
/// at every step so that it trains. Plus the "no condition" row used for classifier-free
/// guidance's dropout (the empty caption, the null class).
public struct CaptionTable {
    public let captions: [String]
    public let index: [String: Int]
    /// All rows of a text table; row `nullRow` is the empty caption. Nil for a class table.
    public let condition: Condition?
    /// The learned class tokens of a class table: row i is class i.
    public let classEncoder: ClassLabelEncoder?
    public var nullRow: Int { captions.count }

    /// Encodes the distinct `captions` (and "") in chunks with `encode`.
    public init(captions: [String], chunk: Int = 256, encode: ([String]) throws -> Condition) throws {
        var unique: [String] = []
        var index: [String: Int] = [:]
        for c in captions where index[c] == nil {
            index[c] = unique.count
            unique.append(c)
        }
        var parts: [Condition] = []
        let all = unique + [""]
        for start in stride(from: 0, to: all.count, by: chunk) {
            parts.append(try encode(Array(all[start..<min(all.count, start + chunk)])))
        }
        let length = parts.map { $0.tokens.shape[1] }.max() ?? 1
        let padded = try parts.map { try $0.padded(toLength: length) }
        self.condition = try Condition(
            tokens: Tensor.cat(padded.map(\.tokens)), mask: Tensor.cat(padded.map { try $0.mask.to(.bool) }),
            pooled: Tensor.cat(padded.map(\.pooled)))
        self.captions = unique
        self.index = index
        self.classEncoder = nil
    }

    /// A class table: the captions are the encoder's class names (row i is class i; the null
    /// row is the null class).
    public init(classes: ClassLabelEncoder) {
        captions = classes.config.names
        index = Dictionary(uniqueKeysWithValues: classes.config.names.enumerated().map { ($1, $0) })
        condition = nil
        classEncoder = classes
    }

    private init(captions: [String], index: [String: Int], condition: Condition?, classEncoder: ClassLabelEncoder?) {
        self.captions = captions
        self.index = index
        self.condition = condition
        self.classEncoder = classEncoder
    }

    /// This table with its text rows on `device` (a class table's tokens live in its encoder,
    /// which moves with the model).
    public func to(_ device: Device) throws -> CaptionTable {
        CaptionTable(captions: captions, index: index, condition: try condition?.to(device), classEncoder: classEncoder)
    }

    /// The conditions of `rows` (indices into the table; `nullRow` for the empty caption or the
    /// null class), on the table's device.
    public func rows(_ rows: [Int]) throws -> Condition {
        if let classEncoder { return try classEncoder.condition(rows) }  // nullRow == nullClass
        guard let condition else { throw TrainingError.invalidData("caption table without conditions") }
        return try condition.selecting(Tensor(rows.map(Int64.init), shape: [rows.count]).to(condition.tokens.device))
    }
}

/// A deterministic, stateless shuffling sampler: epoch `e` visits a permutation drawn from
/// `seed + e`, so the batch of any step can be recomputed on resume. With several ranks each
/// takes a disjoint stride of every global batch.
public struct EpochSampler: Sendable {
    public let count: Int
    public let batchSize: Int
    public let seed: UInt64
    public let rank: Int
    public let worldSize: Int

    public init(count: Int, batchSize: Int, seed: UInt64, rank: Int = 0, worldSize: Int = 1) throws {
        guard count > 0, batchSize > 0 else { throw TrainingError.invalidData("empty dataset or batch") }
        guard worldSize > 0, (0..<worldSize).contains(rank), batchSize % worldSize == 0 else {
            throw TrainingError.invalidConfig("global batch \(batchSize) must split evenly over \(worldSize) ranks")
        }
        self.count = count
        self.batchSize = batchSize
        self.seed = seed
        self.rank = rank
        self.worldSize = worldSize
    }

    /// This rank's indices for global step `step`.
    public func indices(step: Int) throws -> [Int] {
        let perEpoch = Swift.max(1, count / batchSize)
        let epoch = step / perEpoch
        let offset = (step % perEpoch) * batchSize
        let permutation = try Tensor.randperm(count, generator: Generator(seed: seed &+ UInt64(epoch) &* 0x9E37_79B9))
            .slice(dim: 0, offset, Swift.min(count, offset + batchSize)).scalars(as: Int64.self).map(Int.init)
        var global = permutation
        while global.count < batchSize { global.append(global[global.count % Swift.max(1, permutation.count)]) }
        return positions.map { global[$0] }
    }

    /// This rank's positions within every global batch: `rank, rank + worldSize, …`.
    public var positions: [Int] { Array(stride(from: rank, to: batchSize, by: worldSize)) }
}
