import ContextDiff
import Datasets
import Evaluation
import Foundation

/// The output of `contextdiff evaluate` (and of every configuration of `contextdiff experiment`).
public struct EvaluationReport: Codable, Sendable {
    public struct EvaluatorInfo: Codable, Sendable {
        public var path: String
        public var heldOutAccuracy: EvaluatorAccuracy

        public init(path: String, heldOutAccuracy: EvaluatorAccuracy) {
            self.path = path
            self.heldOutAccuracy = heldOutAccuracy
        }

        enum CodingKeys: String, CodingKey { case path, heldOutAccuracy = "held_out_accuracy" }
    }

    public var model: String
    /// The training step whose EMA weights were evaluated (`--checkpoint`), if not a model folder.
    public var checkpoint: Int?
    public var sampler: String
    public var steps: Int
    public var guidance: Double
    public var eta: Double
    public var seed: UInt64
    public var context: Bool
    public var imagesPerPrompt: Int
    public var evaluator: EvaluatorInfo
    public var clipModel: String
    /// "seen" (validation prompts), "heldout" (held-out combinations) or "prompts" (a file).
    public var sets: [PromptSetEvaluation]
    public var unparsedPrompts: [String]?
    public var seconds: Double

    public init(
        model: String, checkpoint: Int?, sampler: String, steps: Int, guidance: Double, eta: Double, seed: UInt64,
        context: Bool, imagesPerPrompt: Int, evaluator: EvaluatorInfo, clipModel: String, sets: [PromptSetEvaluation],
        unparsedPrompts: [String]?, seconds: Double
    ) {
        self.model = model
        self.checkpoint = checkpoint
        self.sampler = sampler
        self.steps = steps
        self.guidance = guidance
        self.eta = eta
        self.seed = seed
        self.context = context
        self.imagesPerPrompt = imagesPerPrompt
        self.evaluator = evaluator
        self.clipModel = clipModel
        self.sets = sets
        self.unparsedPrompts = unparsedPrompts
        self.seconds = seconds
    }

    enum CodingKeys: String, CodingKey {
        case model, checkpoint, sampler, steps, guidance, eta, seed, context, imagesPerPrompt = "images_per_prompt", evaluator
        case clipModel = "clip_model", sets, unparsedPrompts = "unparsed_prompts", seconds
    }

    /// A plain-text table: one column per prompt set.
    public func table() -> String {
        func pct(_ v: Double?) -> String { v.map { String(format: "%.1f%%", 100 * $0) } ?? "–" }
        func num(_ v: Double?) -> String { v.map { String(format: "%.2f", $0) } ?? "–" }
        var rows: [(String, [String])] = []
        rows.append(("images", sets.map { "\($0.images)" }))
        rows.append(("alignment (all correct)", sets.map { pct($0.alignment?.accuracy) }))
        for c in AlignmentCategory.allCases {
            rows.append(("  \(c.rawValue)", sets.map { pct($0.alignment?.accuracy(of: c)) }))
        }
        rows.append(("  GenEval mean", sets.map { pct($0.alignment?.categoryMean) }))
        for a in AlignmentAttribute.allCases {
            rows.append(("  attribute \(a.rawValue)", sets.map { pct($0.alignment?.accuracy(of: a)) }))
        }
        rows.append(("pixel check, two objects", sets.map { pct($0.pixel?.twoObjectAccuracy) }))
        rows.append(("pixel check, single object", sets.map { pct($0.pixel?.kinds[PromptKind.singleObject.rawValue]?.accuracy) }))
        rows.append(("CLIP score", sets.map { num($0.clipScore) }))
        rows.append(("Fréchet distance", sets.map { num($0.frechetDistance) }))
        rows.append(("precision", sets.map { num($0.diversity?.precision) }))
        rows.append(("recall", sets.map { num($0.diversity?.recall) }))
        rows.append(("centre spread px (real)", sets.map { s in
            s.diversity?.spread.map { String(format: "%.2f (%.2f)", $0.centreSpread, s.diversity?.realSpread?.centreSpread ?? .nan) } ?? "–"
        }))
        rows.append(("size CV (real)", sets.map { s in
            s.diversity?.spread.map { String(format: "%.2f (%.2f)", $0.sizeCV, s.diversity?.realSpread?.sizeCV ?? .nan) } ?? "–"
        }))
        let width = (rows.map(\.0.count).max() ?? 0) + 2
        var text = "".padding(toLength: width, withPad: " ", startingAt: 0)
            + sets.map { $0.name.padding(toLength: 12, withPad: " ", startingAt: 0) }.joined() + "\n"
        for (label, values) in rows {
            text += label.padding(toLength: width, withPad: " ", startingAt: 0)
                + values.map { $0.padding(toLength: 12, withPad: " ", startingAt: 0) }.joined() + "\n"
        }
        text += String(format: "evaluator held-out accuracy %.2f%%%@", 100 * evaluator.heldOutAccuracy.accuracy,
                       evaluator.heldOutAccuracy.accuracy < 0.99 ? " (below 99%: not trustworthy)" : "")
        if let unparsedPrompts, !unparsedPrompts.isEmpty {
            text += "\nnot in the caption grammar (CLIP score only): " + unparsedPrompts.joined(separator: " | ")
        }
        return text
    }
}
