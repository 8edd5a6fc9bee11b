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
    /// Structure preservation: mean over frames of the IoU between the source's and the edit's
    /// foreground masks (pixels away from the white background), i.e. whether the object is
    /// where (and moves how) it was. 1 for a single frame pair of identical layouts.
    public var structure: Double
    /// Evaluator alignment ("CLIP-text" read by the attribute evaluator): the fraction of frames
    /// in which every object, colour, shape, size and the relation of the edit prompt are read
    /// right. Nil without an evaluator, or when the prompt is not a benchmark caption.
    public var evaluatorText: Double?

    enum CodingKeys: String, CodingKey {
        case clipText = "clip_text", clipTemporal = "clip_temporal", structure, evaluatorText = "evaluator_text"
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
            structure: try structure(source: source, edited: edited),
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

    /// Mean cosine of consecutive frames' image embeddings (1 for a single frame).
    public static func temporalConsistency(_ frames: Tensor, model: ContrastiveImageText) throws -> Double {
        let f = try frames.size(0)
        guard f > 1 else { return 1 }
        model.eval()
        return try Torch.withNoGrad {
            let e = try model.imageEmbeddings(frames)  // unit vectors
            let cos = try (e.slice(dim: 0, 0, f - 1) * e.slice(dim: 0, 1, f)).sum(dims: [1])
            return try cos.mean().item()
        }
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
