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
    public static func steps(in runDirectory: URL) -> [Int] {
        let dir = runDirectory.appendingPathComponent("checkpoints")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.compactMap { name in
            guard name.hasPrefix("step-"), !name.hasSuffix(".partial") else { return nil }
            return Int(name.dropFirst(5))
        }.sorted()
    }

    /// The run's model with the EMA weights of checkpoint `step`.
    public static func emaModel(runDirectory: URL, step: Int) throws -> ContextDiffModel {
        let model = try ContextDiffModel.load(from: runDirectory.appendingPathComponent("model"))
        let url = runDirectory.appendingPathComponent("checkpoints")
            .appendingPathComponent(String(format: "step-%07d", step)).appendingPathComponent("training_state.safetensors")
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
