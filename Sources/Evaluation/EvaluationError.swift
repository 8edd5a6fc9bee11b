import ContextDiff

/// Errors from evaluating models and training the evaluation models.
public enum EvaluationError: Error, Equatable, CustomStringConvertible {
    /// Training options outside their ranges (the message names them).
    case invalidConfiguration(String)
    /// Inputs a metric or an evaluation cannot take: too few images, mismatched sizes or widths.
    case invalidInput(String)
    /// A training loss became non-finite.
    case diverged(String)

    public var description: String {
        switch self {
        case let .invalidConfiguration(message), let .invalidInput(message), let .diverged(message): message
        }
    }
}

extension AttributeEvaluator {
    /// Throws unless this evaluator reads images of the size `model` draws.
    public func checkReads(imagesOf model: ContextDiffModel) throws {
        let size = model.unet.config.sampleSize
        guard imageSize == size else {
            throw EvaluationError.invalidInput("the evaluator reads \(imageSize)-px images, the model draws \(size)-px ones")
        }
    }
}
