import Foundation

/// The layout of a training run's folder, in one place (the trainer writes it; evaluation,
/// experiments and the CLI read it):
///
///     recipe.json                                  what the run trains (written by the front end)
///     log.jsonl                                    one line per step: step, loss, lr, ...
///     model/                                       the EMA model of the latest checkpoint
///     checkpoints/step-NNNNNNN/training_state.safetensors
///     checkpoints/.step-NNNNNNN.partial/           a checkpoint being written (removed on resume)
///     samples/step-NNNNNNN.png                     validation grids
///     loss.svg                                     the loss curve
public struct RunFolder: Sendable, Equatable {
    public let url: URL

    public init(_ url: URL) { self.url = url }

    public var recipe: URL { url.appendingPathComponent("recipe.json") }
    public var log: URL { url.appendingPathComponent("log.jsonl") }
    public var model: URL { url.appendingPathComponent("model") }
    public var checkpoints: URL { url.appendingPathComponent("checkpoints") }
    public var samples: URL { url.appendingPathComponent("samples") }
    public var lossCurve: URL { url.appendingPathComponent("loss.svg") }

    /// `step-NNNNNNN`.
    public static func stepName(_ step: Int) -> String { String(format: "step-%07d", step) }

    public func checkpoint(step: Int) -> URL { checkpoints.appendingPathComponent(Self.stepName(step)) }
    /// The folder a checkpoint is written into before it is renamed into place.
    public func partialCheckpoint(step: Int) -> URL { checkpoints.appendingPathComponent(".\(Self.stepName(step)).partial") }
    public func trainingState(step: Int) -> URL { checkpoint(step: step).appendingPathComponent("training_state.safetensors") }
    public func sample(step: Int) -> URL { samples.appendingPathComponent(Self.stepName(step) + ".png") }

    /// Completed checkpoint steps, ascending (partial ones excluded).
    public func checkpointSteps() -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: checkpoints.path)) ?? []
        return names.compactMap { name in
            guard name.hasPrefix("step-"), !name.hasSuffix(".partial") else { return nil }
            return Int(name.dropFirst(5))
        }.sorted()
    }

    /// The (step, loss) pairs of `log.jsonl` (lines without both are skipped).
    public func losses() throws -> [(step: Int, loss: Double)] {
        let text = try String(contentsOf: log, encoding: .utf8)
        return text.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Double],
                  let step = object["step"], let loss = object["loss"]
            else { return nil }
            return (Int(step), loss)
        }
    }
}
