import Foundation
import NN
import Torch

/// What a checkpoint holds besides the files around it, for every trainer: the model's tensors
/// under `model.`, the EMA shadow as `ema.i`, the optimizer's moments under `optimizer.`, the
/// data/noise generator's state as `rng`, and the counters (`step`, `optimizer_step`,
/// `ema_step`) with the training config as metadata. Resuming from it is exact.
enum TrainingState {
    static func tensors(
        model: [String: Tensor], ema: ExponentialMovingAverage, optimizer: AdamW, generator: Generator
    ) throws -> [String: Tensor] {
        var tensors: [String: Tensor] = [:]
        for (k, v) in model { tensors["model." + k] = v }
        for (i, t) in ema.shadow.enumerated() { tensors["ema.\(i)"] = t }
        for (k, v) in optimizer.stateTensors() { tensors["optimizer." + k] = v }
        let state = try generator.state()
        tensors["rng"] = try Tensor(state, shape: [state.count])
        return tensors
    }

    static func metadata(step: Int, ema: ExponentialMovingAverage, optimizer: AdamW, config: some Encodable) throws -> [String: String] {
        [
            "step": String(step), "optimizer_step": String(optimizer.stepCount), "ema_step": String(ema.optimizationStep),
            "training_config": String(decoding: try JSONEncoder().encode(config), as: UTF8.self),
        ]
    }

    /// Restores the EMA, the optimizer and the generator from checkpoint `step` of `folder`
    /// and hands `loadModel` the model's tensors (keys without `model.`); returns the step.
    /// Anything missing or mis-shaped is ``TrainingError/corruptCheckpoint(path:reason:)``.
    static func restore(
        step latest: Int, from folder: RunFolder, ema: ExponentialMovingAverage, optimizer: AdamW, generator: Generator,
        loadModel: ([String: Tensor]) throws -> Void
    ) throws -> Int {
        let url = folder.trainingState(step: latest)
        let (tensors, meta) = try folder.readCheckpoint(step: latest)
        guard let s = meta["step"].flatMap(Int.init), let os = meta["optimizer_step"].flatMap(Int.init),
              let es = meta["ema_step"].flatMap(Int.init), let rng = tensors["rng"]
        else { throw TrainingError.corruptCheckpoint(path: url.path, reason: "missing step counters or RNG state") }
        do {
            var modelState: [String: Tensor] = [:], optimizerState: [String: Tensor] = [:]
            for (k, v) in tensors {
                if k.hasPrefix("model.") { modelState[String(k.dropFirst(6))] = v }
                if k.hasPrefix("optimizer.") { optimizerState[String(k.dropFirst(10))] = v }
            }
            try loadModel(modelState)
            try Torch.withNoGrad {
                for (i, shadow) in ema.shadow.enumerated() {
                    guard let t = tensors["ema.\(i)"], t.shape == shadow.shape else {
                        throw TrainingError.corruptCheckpoint(path: url.path, reason: "EMA tensor \(i) missing or mis-shaped")
                    }
                    try shadow.copy(from: t)
                }
            }
            try optimizer.restore(stepCount: os, state: optimizerState)
            try generator.setState(rng.scalars(as: UInt8.self))
        } catch let error as TrainingError {
            throw error
        } catch {
            throw TrainingError.corruptCheckpoint(path: url.path, reason: "\(error)")
        }
        ema.restore(optimizationStep: es)
        return s
    }
}
