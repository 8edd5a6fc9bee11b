import Datasets
import Torch

/// Benchmark seeds reserved for the evaluation models, so that nothing they are trained or
/// checked on is ever a sample a diffusion model trained on (`contextdiff train --seed S`
/// renders benchmark seed S; experiments use small seeds) or a sample they were checked on.
public enum EvaluationSeeds {
    /// The renders the attribute evaluator trains on.
    public static let evaluatorTraining: UInt64 = 0x4556_414C_0001
    /// The renders its held-out accuracy is measured on (never trained on).
    public static let evaluatorCheck: UInt64 = 0x4556_414C_0002
    /// The renders the contrastive image–text model trains on.
    public static let clipTraining: UInt64 = 0x4556_414C_0003
    /// The renders its sanity check uses.
    public static let clipCheck: UInt64 = 0x4556_414C_0004
    /// The real images the Fréchet distance compares generated ones with.
    public static let frechetReference: UInt64 = 0x4556_414C_0005
    /// The real renders of each evaluated prompt that its images' spread is compared with.
    public static let promptRenders: UInt64 = 0x4556_414C_0006
}

/// Rendered benchmark images with their canonical labels (see ``DetectedScene``) as tensors.
public struct LabelledRenders {
    /// `[N, 3, S, S]` float32 in [-1, 1].
    public var images: Tensor
    public var captions: [String]
    /// The labels in the evaluator's canonical form.
    public var scenes: [DetectedScene]
    /// The labels as rendered (caption order, relation).
    public var truth: [Scene]
    public var splits: [Split]

    public var count: Int { scenes.count }

    /// Renders `count` samples per entry of `parts` (split, first index) from `benchmark`.
    /// `progress` (phase "rendering") is called after every chunk.
    public static func render(
        _ benchmark: SyntheticBenchmark, parts: [(split: Split, range: Range<Int>)],
        progress: ProgressHandler = { _ in true }
    ) throws -> LabelledRenders {
        let total = parts.map(\.range.count).reduce(0, +)
        var chunks: [Tensor] = []
        var captions: [String] = [], scenes: [DetectedScene] = [], truth: [Scene] = [], splits: [Split] = []
        for part in parts {
            for start in stride(from: part.range.lowerBound, to: part.range.upperBound, by: 500) {
                let batch = try benchmark.batch(indices: start..<min(part.range.upperBound, start + 500), split: part.split)
                chunks.append(batch.images)
                captions += batch.captions
                scenes += batch.annotations.map { DetectedScene($0.scene) }
                truth += batch.annotations.map(\.scene)
                splits += batch.annotations.map(\.split)
                _ = progress(ProgressUpdate(phase: "rendering", completed: scenes.count, total: total))
            }
        }
        guard !chunks.isEmpty else { throw EvaluationError.invalidInput("no renders requested") }
        return LabelledRenders(images: try Tensor.cat(chunks), captions: captions, scenes: scenes, truth: truth, splits: splits)
    }

    /// A mix of in-distribution (`.train`) and held-out-combination (`.heldout`) renders of
    /// benchmark `seed`: the evaluation models must read every combination, including those a
    /// diffusion model never sees.
    public static func mixed(
        seed: UInt64, imageSize: Int, count: Int, heldOutShare: Double, progress: ProgressHandler = { _ in true }
    ) throws -> LabelledRenders {
        let benchmark = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: imageSize, seed: seed))
        let held = Swift.min(count, Swift.max(0, Int((Double(count) * heldOutShare).rounded())))
        var parts: [(split: Split, range: Range<Int>)] = []
        if count - held > 0 { parts.append((.train, 0..<(count - held))) }
        if held > 0 { parts.append((.heldout, 0..<held)) }
        return try render(benchmark, parts: parts, progress: progress)
    }

    /// The evaluator's targets on a `gridSize × gridSize` detection grid, per object slot (in
    /// ``DetectedScene``'s order): the cell holding the center, the class indices, the center's
    /// offset inside the cell, and a 0/1 mask of the slots that hold an object.
    public func targets(gridSize: Int) throws -> EvaluatorTargets {
        func column(_ f: (DetectedScene) -> Int) throws -> Tensor { try Tensor(scenes.map { Int64(f($0)) }) }
        func slot(_ s: DetectedScene, _ i: Int) -> DetectedObject? { i < s.objects.count ? s.objects[i] : nil }
        func grid(_ s: DetectedScene, _ v: Double) -> (cell: Int, offset: Double) {
            let scaled = v / Double(s.imageSize) * Double(gridSize)
            let cell = Swift.min(gridSize - 1, Swift.max(0, Int(scaled.rounded(.down))))
            return (cell, scaled - Double(cell))
        }
        return EvaluatorTargets(
            count: try column { $0.count - 1 },
            cell: try (0..<2).map { i in
                try column { s in slot(s, i).map { grid(s, $0.center.y).cell * gridSize + grid(s, $0.center.x).cell } ?? 0 }
            },
            shape: try (0..<2).map { i in try column { slot($0, i).map { ObjectShape.allCases.firstIndex(of: $0.shape)! } ?? 0 } },
            color: try (0..<2).map { i in try column { slot($0, i).map { ObjectColor.allCases.firstIndex(of: $0.color)! } ?? 0 } },
            size: try (0..<2).map { i in try column { slot($0, i).map { ObjectSize.allCases.firstIndex(of: $0.size)! } ?? 0 } },
            offset: try (0..<2).map { i in
                try Tensor(scenes.flatMap { s -> [Float] in
                    guard let o = slot(s, i) else { return [0.5, 0.5] }
                    return [Float(grid(s, o.center.x).offset), Float(grid(s, o.center.y).offset)]
                }, shape: [scenes.count, 2])
            },
            present: try (0..<2).map { i in try Tensor(scenes.map { Float(i < $0.objects.count ? 1 : 0) }) })
    }
}

/// Targets per object slot: the center's grid cell and the class indices (int64 `[N]`), the
/// center's offset inside its cell (`[N, 2]`, fractions of a cell), and `present[slot]` = 1
/// where the slot holds an object.
public struct EvaluatorTargets {
    public var count: Tensor
    public var cell: [Tensor]
    public var shape: [Tensor]
    public var color: [Tensor]
    public var size: [Tensor]
    public var offset: [Tensor]
    public var present: [Tensor]

    public func select(_ indices: Tensor) throws -> EvaluatorTargets {
        func s(_ t: Tensor) throws -> Tensor { try t.indexSelect(dim: 0, indices) }
        return EvaluatorTargets(
            count: try s(count), cell: try cell.map(s), shape: try shape.map(s), color: try color.map(s),
            size: try size.map(s), offset: try offset.map(s), present: try present.map(s))
    }
}
