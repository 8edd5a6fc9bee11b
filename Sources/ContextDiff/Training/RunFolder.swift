import Foundation
import Torch

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

// MARK: - Writing and repairing a run (shared by the trainers)

extension RunFolder {
    /// Appends one JSON line of `fields` to `log.jsonl` (keys sorted).
    public func appendLog(_ fields: [String: Double]) throws {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        let line = "{" + fields.keys.sorted().map { "\"\($0)\":\(fields[$0]!)" }.joined(separator: ",") + "}\n"
        if let handle = try? FileHandle(forWritingTo: log) {
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(line.utf8))
        } else {
            try Data(line.utf8).write(to: log)
        }
    }

    /// Keeps the lines of `log.jsonl` whose step is at most `step` (and drops a torn last line).
    public func trimLog(after step: Int) throws {
        guard let data = try? Data(contentsOf: log) else { return }
        var kept = Data()
        for line in data.split(separator: UInt8(ascii: "\n")) {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                  let s = object["step"] as? Double, Int(s) <= step else { continue }
            kept.append(contentsOf: line)
            kept.append(UInt8(ascii: "\n"))
        }
        if kept != data { try kept.write(to: log, options: .atomic) }
    }

    /// Writes checkpoint `step` (`training_state.safetensors` with `tensors` and `metadata`) into
    /// a temporary folder renamed into place; on failure whatever was half-written goes and
    /// ``TrainingError/checkpointWriteFailed(path:reason:)`` says why. Returns the folder.
    @discardableResult
    public func writeCheckpoint(step: Int, tensors: [String: Tensor], metadata: [String: String]) throws -> URL {
        let fm = FileManager.default
        let final = checkpoint(step: step), temporary = partialCheckpoint(step: step)
        do {
            try fm.createDirectory(at: checkpoints, withIntermediateDirectories: true)
            try? fm.removeItem(at: temporary)
            try fm.createDirectory(at: temporary, withIntermediateDirectories: true)
            try saveSafeTensors(tensors, metadata: metadata, to: temporary.appendingPathComponent("training_state.safetensors"))
            try? fm.removeItem(at: final)
            try fm.moveItem(at: temporary, to: final)
        } catch {
            try? fm.removeItem(at: temporary)
            throw TrainingError.checkpointWriteFailed(path: final.path, reason: Self.reason(error))
        }
        return final
    }

    /// Deletes all but the newest `keep` checkpoints.
    public func pruneCheckpoints(keep: Int) {
        for old in checkpointSteps().dropLast(keep) { try? FileManager.default.removeItem(at: checkpoint(step: old)) }
    }

    /// Removes the leftovers of a killed checkpoint write.
    public func removePartialCheckpoints() {
        let fm = FileManager.default
        for name in (try? fm.contentsOfDirectory(atPath: checkpoints.path)) ?? [] where name.hasSuffix(".partial") {
            try? fm.removeItem(at: checkpoints.appendingPathComponent(name))
        }
    }

    /// The tensors and metadata of checkpoint `step`, or ``TrainingError/corruptCheckpoint(path:reason:)``.
    public func readCheckpoint(step: Int) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        let url = trainingState(step: step)
        do {
            return try loadSafeTensorsWithMetadata(url)
        } catch {
            throw TrainingError.corruptCheckpoint(path: url.path, reason: "\(error)")
        }
    }

    /// Replaces the folder `directory` with what `write` puts into a fresh temporary folder
    /// beside it: written whole first, then swapped in (rename(2) cannot replace a non-empty
    /// folder, so the old one is moved aside first; a crash in between leaves it in `.NAME.old`).
    public static func replaceDirectory(_ directory: URL, with write: (URL) throws -> Void) throws {
        let fm = FileManager.default
        let parent = directory.deletingLastPathComponent(), name = directory.lastPathComponent
        let temporary = parent.appendingPathComponent(".\(name).partial")
        try? fm.removeItem(at: temporary)
        do {
            try write(temporary)
        } catch {
            try? fm.removeItem(at: temporary)
            throw error
        }
        let old = parent.appendingPathComponent(".\(name).old")
        try? fm.removeItem(at: old)
        if fm.fileExists(atPath: directory.path) { try fm.moveItem(at: directory, to: old) }
        try fm.moveItem(at: temporary, to: directory)
        try? fm.removeItem(at: old)
    }

    static func reason(_ error: Error) -> String {
        if let e = error as? SafeTensorsError, case let .io(_, message) = e { return message }
        return "\(error)"
    }
}
