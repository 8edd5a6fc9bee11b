import ContextDiff
import Foundation
import NN
import Torch

/// The EMA weights of a training run's intermediate checkpoints, for convergence curves.
///
/// Reads the ``Trainer``'s checkpoint layout: `checkpoints/step-NNNNNNN/training_state.safetensors`
/// with the EMA shadow of parameter i (in ``ContextDiffModel/parameters`` order) under `ema.i`.
/// The architecture comes from the run's exported `model/` folder.
public enum TrainingCheckpoints {
    /// Completed checkpoint steps of a run folder, ascending.
    public static func steps(in runDirectory: URL) -> [Int] { RunFolder(runDirectory).checkpointSteps() }

    /// The run's model with the EMA weights of checkpoint `step`.
    public static func emaModel(runDirectory: URL, step: Int) throws -> ContextDiffModel {
        let folder = RunFolder(runDirectory)
        let model = try ContextDiffModel.load(from: folder.model)
        let url = folder.trainingState(step: step)
        guard FileManager.default.fileExists(atPath: url.path) else { throw CheckpointError.missingFile(url.path) }
        let tensors = try loadSafeTensors(url)
        let parameters = model.parameters
        try Torch.withNoGrad {
            for (i, p) in parameters.enumerated() {
                guard let shadow = tensors["ema.\(i)"] else {
                    throw CheckpointError.invalidWeights(path: url.path, reason: "no EMA tensor ema.\(i)")
                }
                guard shadow.shape == p.shape else {
                    throw CheckpointError.invalidWeights(
                        path: url.path, reason: "ema.\(i) has shape \(shadow.shape), the model expects \(p.shape)")
                }
                try p.copy(from: shadow)
            }
        }
        if tensors["ema.\(parameters.count)"] != nil {
            throw CheckpointError.invalidWeights(path: url.path, reason: "more EMA tensors than model parameters")
        }
        model.index.notes["step"] = String(step)
        return model
    }
}
