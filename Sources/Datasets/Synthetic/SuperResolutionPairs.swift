import Torch

extension Scene {
    /// The same scene on a canvas `factor` times larger (every box scaled about the origin):
    /// rendered, it is the high-resolution picture of what the small scene shows.
    public func scaled(by factor: Int) -> Scene {
        let f = Double(factor)
        return Scene(
            imageSize: imageSize * factor,
            objects: objects.map {
                SceneObject(
                    shape: $0.shape, color: $0.color, size: $0.size,
                    bbox: BoundingBox(minX: $0.bbox.minX * f, minY: $0.bbox.minY * f, maxX: $0.bbox.maxX * f, maxY: $0.bbox.maxY * f))
            },
            relation: relation)
    }
}

/// One training or evaluation pair of the super-resolution stage.
public struct SuperResolutionPair: Sendable {
    /// The scene as the base model's data shows it (``SyntheticBenchmarkConfig/imageSize``).
    public var low: RGBImage
    /// The same scene rendered `factor` times larger.
    public var high: RGBImage
    public var annotation: SceneAnnotation
}

/// The benchmark's scenes rendered twice, at the base model's size and `factor` times larger:
/// the low-resolution image is exactly what the base model learned to draw (the same renderer,
/// the same anti-aliasing), the high-resolution one the same boxes on a finer grid. Pair
/// `(split, index)` is a pure function of the benchmark's config, so data never has to be stored.
public struct SuperResolutionPairs: Sendable {
    public let benchmark: SyntheticBenchmark
    public let factor: Int
    let large: SyntheticBenchmark

    public init(_ config: SyntheticBenchmarkConfig, factor: Int) throws {
        guard (2...16).contains(factor) else { throw DatasetError.invalidConfig("super-resolution factor must be in 2...16, got \(factor)") }
        benchmark = try SyntheticBenchmark(config)
        var big = config
        big.imageSize = config.imageSize * factor
        large = try SyntheticBenchmark(big)
        self.factor = factor
    }

    public var lowSize: Int { benchmark.config.imageSize }
    public var highSize: Int { lowSize * factor }

    public func pair(index: Int, split: Split) -> SuperResolutionPair {
        let annotation = benchmark.annotation(index: index, split: split)
        return SuperResolutionPair(
            low: benchmark.render(annotation.scene), high: large.render(annotation.scene.scaled(by: factor)),
            annotation: annotation)
    }

    /// Pairs `indices` of `split` as tensors in [-1, 1]: `low` `[B, 3, s, s]`, `high`
    /// `[B, 3, s·f, s·f]`, with their captions.
    public func batch(indices: [Int], split: Split) throws -> (low: Tensor, high: Tensor, captions: [String]) {
        let pairs = indices.map { pair(index: $0, split: split) }
        return (try RGBImage.batch(pairs.map(\.low)), try RGBImage.batch(pairs.map(\.high)), pairs.map(\.annotation.caption))
    }
}
