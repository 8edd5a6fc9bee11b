import ContextDiff
import Evaluation
import Foundation
import NN

/// The evaluation models (the attribute evaluator and the contrastive image–text model): where
/// they are when none is given (``ModelLocator``: `$CONTEXTDIFF_EVALUATOR`, `$CONTEXTDIFF_CLIP`,
/// the shipped `models/…`; `models/<name>` under the current folder when none is found, so that
/// the error names the usual place), and loading them with an error that says how to make one.
public enum EvaluationModels {
    public static func evaluatorURL(_ given: URL? = nil, locator: ModelLocator = ModelLocator()) -> URL {
        given ?? locator.locate(.evaluator) ?? URL(fileURLWithPath: "models/evaluator")
    }

    public static func clipURL(_ given: URL? = nil, locator: ModelLocator = ModelLocator()) -> URL {
        given ?? locator.locate(.clip) ?? URL(fileURLWithPath: "models/clip")
    }

    /// Whether a model folder is there (its config file exists).
    public static func exists(_ url: URL) -> Bool {
        FileManager.default.fileExists(atPath: url.appendingPathComponent(ModelFolder.configName).path)
    }

    public static func loadEvaluator(_ given: URL? = nil) throws -> (AttributeEvaluator, URL) {
        let url = evaluatorURL(given)
        guard exists(url) else {
            throw WorkflowError.missingEvaluationModel(kind: "evaluator", path: url.path, train: "contextdiff evaluator train -o \(url.path)")
        }
        return (try AttributeEvaluator.load(from: url), url)
    }

    public static func loadScorer(_ given: URL? = nil, textEncoder: MiniLMTextEncoder) throws -> (ContrastiveScorer, URL) {
        let url = clipURL(given)
        guard exists(url) else {
            throw WorkflowError.missingEvaluationModel(kind: "clip", path: url.path, train: "contextdiff clip train -o \(url.path)")
        }
        return (try ContrastiveScorer(model: ContrastiveImageText.load(from: url), textEncoder: textEncoder), url)
    }
}
