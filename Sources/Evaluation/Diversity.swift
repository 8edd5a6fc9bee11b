import Datasets
import Foundation
import Torch

/// Improved precision and recall (Kynkäänniemi et al. 2019): each set of features spans a
/// manifold, the union of balls around its points reaching each point's k-th nearest
/// neighbour. Precision is the share of generated points inside the real manifold (are the
/// images realistic?), recall the share of real points inside the generated one (does the model
/// cover what the data shows?). A model that draws one image per prompt keeps its precision and
/// loses its recall.
public enum PrecisionRecall {
    /// - Parameters: `real` `[N, D]`, `generated` `[M, D]` (N, M > k); `k` as in the paper (3).
    public static func compute(real: Tensor, generated: Tensor, k: Int = 3) throws -> (precision: Double, recall: Double) {
        let r = try real.to(.float64), g = try generated.to(.float64)
        guard r.shape.count == 2, g.shape.count == 2, r.shape[1] == g.shape[1] else {
            throw EvaluationError.invalidInput("precision/recall: features \(real.shape) and \(generated.shape) must be [N, D] and [M, D]")
        }
        guard k >= 1, r.shape[0] > k, g.shape[0] > k else {
            throw EvaluationError.invalidInput("precision/recall: need more than k = \(k) points on each side, got \(r.shape[0]) and \(g.shape[0])")
        }
        let realRadii = try kthNeighbourDistance(r, k: k), generatedRadii = try kthNeighbourDistance(g, k: k)
        return (try coverage(of: g, by: r, radii: realRadii), try coverage(of: r, by: g, radii: generatedRadii))
    }

    /// Squared Euclidean distances `[A, B]` between rows.
    static func squaredDistances(_ a: Tensor, _ b: Tensor) throws -> Tensor {
        let aa = try a.square().sum(dims: [1]).unsqueezed(1), bb = try b.square().sum(dims: [1]).unsqueezed(0)
        return try (aa + bb - a.matmul(b.transposed(0, 1)) * 2).clamped(min: 0)
    }

    /// Each row's squared distance to its k-th nearest other row.
    static func kthNeighbourDistance(_ x: Tensor, k: Int) throws -> [Double] {
        let d = try squaredDistances(x, x).contiguous().scalars(as: Double.self)
        let n = try x.size(0)
        return (0..<n).map { i in
            var row = Array(d[(i * n)..<((i + 1) * n)])
            row.remove(at: i)
            row.sort()
            return row[k - 1]
        }
    }

    /// The share of `points` within the ball of some row of `centres`.
    static func coverage(of points: Tensor, by centres: Tensor, radii: [Double]) throws -> Double {
        let d = try squaredDistances(points, centres).contiguous().scalars(as: Double.self)
        let n = try points.size(0), m = radii.count
        let inside = (0..<n).filter { i in (0..<m).contains { j in d[i * m + j] <= radii[j] } }.count
        return Double(inside) / Double(n)
    }
}

/// How much the images of one prompt vary across seeds: per named object (found by its color,
/// which the benchmark never repeats in one scene), the RMS distance of its detected centre from
/// the mean centre (pixels) and the coefficient of variation of its detected size; measured the
/// same way on real renders of the same prompt (``SyntheticBenchmark/scene(for:rng:)``).
public struct LayoutSpread: Codable, Sendable, Equatable {
    /// Mean over prompts and objects of the centres' RMS spread, in pixels.
    public var centreSpread: Double
    /// Mean over prompts and objects of std/mean of the size fraction.
    public var sizeCV: Double
    /// The objects measured (present in at least two images of their prompt).
    public var objects: Int

    enum CodingKeys: String, CodingKey { case centreSpread = "centre_spread", sizeCV = "size_cv", objects }

    /// Per prompt, the detected scenes of its images (≥ 2 each).
    public static func measure(prompts: [PromptSpec], scenes: [[DetectedScene]]) -> LayoutSpread {
        var spreads: [Double] = [], cvs: [Double] = []
        for (spec, images) in zip(prompts, scenes) where images.count >= 2 {
            for object in spec.objects {
                let found = images.compactMap { $0.objects.first { $0.color == object.color } }
                guard found.count >= 2 else { continue }
                let n = Double(found.count)
                let mx = found.map(\.center.x).reduce(0, +) / n, my = found.map(\.center.y).reduce(0, +) / n
                spreads.append((found.map { ($0.center.x - mx) * ($0.center.x - mx) + ($0.center.y - my) * ($0.center.y - my) }
                    .reduce(0, +) / n).squareRoot())
                let sizes = found.map(\.size.fraction), ms = sizes.reduce(0, +) / n
                cvs.append((sizes.map { ($0 - ms) * ($0 - ms) }.reduce(0, +) / n).squareRoot() / ms)
            }
        }
        let count = Double(Swift.max(1, spreads.count))
        return LayoutSpread(centreSpread: spreads.reduce(0, +) / count, sizeCV: cvs.reduce(0, +) / count, objects: spreads.count)
    }
}

/// Diversity of a prompt set against real data: precision and recall of the evaluator's
/// features, and the spread of layouts across seeds beside that of real renders.
public struct DiversitySummary: Codable, Sendable, Equatable {
    public var precision: Double?
    public var recall: Double?
    /// Generated images, per prompt across seeds (nil with one image per prompt).
    public var spread: LayoutSpread?
    /// Real renders of the same prompts, as many per prompt.
    public var realSpread: LayoutSpread?

    enum CodingKeys: String, CodingKey { case precision, recall, spread, realSpread = "real_spread" }

    /// Generated spread over real spread, for centres and sizes (nil when either is missing).
    public var spreadRatios: (centre: Double, size: Double)? {
        guard let spread, let realSpread, realSpread.centreSpread > 0, realSpread.sizeCV > 0 else { return nil }
        return (spread.centreSpread / realSpread.centreSpread, spread.sizeCV / realSpread.sizeCV)
    }
}

extension SyntheticBenchmark {
    /// `count` real renders of each prompt (`[P·count, 3, S, S]`, grouped by prompt), from a
    /// random stream of their own (`seed`).
    public func renders(of prompts: [PromptSpec], count: Int, seed: UInt64) throws -> Tensor {
        var images: [RGBImage] = []
        for (p, spec) in prompts.enumerated() {
            var rng = SplitMix64(seed: SplitMix64.derive(seed, 0x5350_5245, UInt64(p)))
            for _ in 0..<count { images.append(render(scene(for: spec, rng: &rng))) }
        }
        return try RGBImage.batch(images)
    }
}
