import Datasets
import Foundation
import Torch

/// The paper's Table 2 metrics for an edited video, with the project's contrastive image–text
/// model standing in for CLIP (DESIGN §6), plus structure preservation.
public struct VideoEditScores: Codable, Sendable, Equatable {
    /// CLIP-text: mean over frames of `100 · max(cos, 0)` between the frame and the edit prompt.
    public var clipText: Double
    /// CLIP-temporal: mean cosine between the image embeddings of consecutive frames.
    public var clipTemporal: Double
    /// CLIP-temporal as the paper computes it: mean cosine over all pairs of distinct frames.
    public var clipTemporalAllPairs: Double
    /// Structure preservation: mean over frames of the IoU between the source's and the edit's
    /// foreground masks (pixels away from the white background), i.e. whether the object is
    /// where (and moves how) it was. 1 for a single frame pair of identical layouts.
    public var structure: Double
    /// Motion preservation that does not depend on the shape: mean over frames of the IoU
    /// between the bounding boxes of the source's and the edit's foreground masks. A shape edit
    /// drawn in the source object's box scores 1 here but less in ``structure`` (a diamond in a
    /// square's place has mask IoU 0.5).
    public var structureBoxes: Double
    /// Evaluator alignment ("CLIP-text" read by the attribute evaluator): the fraction of frames
    /// in which every object, colour, shape, size and the relation of the edit prompt are read
    /// right. Nil without an evaluator, or when the prompt is not a benchmark caption.
    public var evaluatorText: Double?

    enum CodingKeys: String, CodingKey {
        case clipText = "clip_text", clipTemporal = "clip_temporal", clipTemporalAllPairs = "clip_temporal_all_pairs", structure
        case structureBoxes = "structure_boxes"
        case evaluatorText = "evaluator_text"
    }
}

public enum VideoMetrics {
    /// Scores `edited` (`[F, 3, S, S]` in [-1, 1]) for `prompt` against `source` (same shape).
    public static func scores(
        source: Tensor, edited: Tensor, prompt: String, scorer: ContrastiveScorer, evaluator: AttributeEvaluator? = nil
    ) throws -> VideoEditScores {
        guard source.shape == edited.shape, edited.rank == 4, try edited.size(0) > 0 else {
            throw EvaluationError.invalidInput("source \(source.shape) and edit \(edited.shape) must both be [F, 3, S, S]")
        }
        let frames = try edited.size(0)
        let text = try scorer.scores(images: edited, texts: Array(repeating: prompt, count: frames))
        return VideoEditScores(
            clipText: text.reduce(0, +) / Double(frames),
            clipTemporal: try temporalConsistency(edited, model: scorer.model),
            clipTemporalAllPairs: try temporalConsistency(edited, model: scorer.model, allPairs: true),
            structure: try structure(source: source, edited: edited),
            structureBoxes: try boxStructure(source: source, edited: edited),
            evaluatorText: try evaluator.flatMap { try evaluatorAlignment(edited, prompt: prompt, evaluator: $0) })
    }

    /// The fraction of frames (`[F, 3, S, S]` in [-1, 1], read as 8-bit images) that the
    /// evaluator finds fully aligned with `prompt`; nil when ``CaptionParser`` cannot read the
    /// prompt as a benchmark caption.
    public static func evaluatorAlignment(_ frames: Tensor, prompt: String, evaluator: AttributeEvaluator) throws -> Double? {
        guard let spec = CaptionParser.parse(prompt) else { return nil }
        let scenes = try evaluator.detect(RGBImage.batch(RGBImage.images(fromBatch: frames)))
        guard !scenes.isEmpty else { return nil }
        return Double(scenes.filter { Alignment.matches(spec, $0) }.count) / Double(scenes.count)
    }

    /// Mean cosine of consecutive frames' image embeddings, or with `allPairs` of every pair of
    /// distinct frames (the paper's definition); 1 for a single frame.
    public static func temporalConsistency(_ frames: Tensor, model: ContrastiveImageText, allPairs: Bool = false) throws -> Double {
        let f = try frames.size(0)
        guard f > 1 else { return 1 }
        model.eval()
        return try Torch.withNoGrad {
            let e = try model.imageEmbeddings(frames)  // unit vectors
            if allPairs {
                // The Gram matrix's off-diagonal mean: (sum of all − trace) / (f² − f).
                let gram = try e.matmul(e.transposed(0, 1))
                let total = try gram.sum().item(), trace = try (e * e).sum().item()
                return (total - trace) / Double(f * f - f)
            }
            let cos = try (e.slice(dim: 0, 0, f - 1) * e.slice(dim: 0, 1, f)).sum(dims: [1])
            return try cos.mean().item()
        }
    }

    /// Mean IoU of the bounding boxes of the foreground masks (``structure(source:edited:threshold:)``'s
    /// masks); frames where neither has foreground count 1, where one has none 0.
    public static func boxStructure(source: Tensor, edited: Tensor, threshold: Double = 0.6) throws -> Double {
        let s = source.shape
        guard s.count == 4, edited.shape == s else {
            throw EvaluationError.invalidInput("source \(s) and edit \(edited.shape) must both be [F, 3, S, S]")
        }
        let (f, h, w) = (s[0], s[2], s[3])
        func boxes(_ x: Tensor) throws -> [(Int, Int, Int, Int)?] {
            let m = try x.min(dims: [1]).lt(threshold).to(.float32).contiguous().scalars(as: Float.self)
            return (0..<f).map { k in
                var (x0, y0, x1, y1) = (w, h, 0, 0)
                for y in 0..<h {
                    for x in 0..<w where m[(k * h + y) * w + x] > 0 {
                        (x0, y0, x1, y1) = (min(x0, x), min(y0, y), max(x1, x + 1), max(y1, y + 1))
                    }
                }
                return x1 > x0 ? (x0, y0, x1, y1) : nil
            }
        }
        let ious = zip(try boxes(source), try boxes(edited)).map { a, b -> Double in
            guard let a, let b else { return a == nil && b == nil ? 1 : 0 }
            let iw = max(0, min(a.2, b.2) - max(a.0, b.0)), ih = max(0, min(a.3, b.3) - max(a.1, b.1))
            let inter = Double(iw * ih)
            let union = Double((a.2 - a.0) * (a.3 - a.1) + (b.2 - b.0) * (b.3 - b.1)) - inter
            return inter / union
        }
        return ious.reduce(0, +) / Double(Swift.max(1, ious.count))
    }

    /// Mean IoU of the foreground masks (a pixel is foreground when some channel is below
    /// `threshold` in [-1, 1], i.e. clearly not white). Frames where neither has foreground count 1.
    public static func structure(source: Tensor, edited: Tensor, threshold: Double = 0.6) throws -> Double {
        func mask(_ x: Tensor) throws -> Tensor { try x.min(dims: [1]).lt(threshold).to(.float32).flattened(from: 1) }
        let a = try mask(source), b = try mask(edited)
        let inter = try (a * b).sum(dims: [1]).scalars(as: Float.self)
        let union = try (a + b).clamped(max: 1).sum(dims: [1]).scalars(as: Float.self)
        let ious = zip(inter, union).map { i, u in u == 0 ? 1.0 : Double(i / u) }
        return ious.reduce(0, +) / Double(Swift.max(1, ious.count))
    }
}
