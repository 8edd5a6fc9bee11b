import Foundation
import NN
import Torch

/// Which text encoder a model was trained with.
public struct TextEncoderSpec: Codable, Sendable, Equatable {
    /// `minilm` (the frozen all-MiniLM-L6-v2), or `class` for a class-conditional model (its
    /// condition is a learned class token, ``ContextDiffModel/classEncoder``).
    public var kind: String
    public var maxTokens: Int

    public init(kind: String = "minilm", maxTokens: Int = 32) {
        self.kind = kind
        self.maxTokens = maxTokens
    }

    enum CodingKeys: String, CodingKey { case kind, maxTokens = "max_tokens" }
}

/// The folder index of a ContextDiff model (diffusers' `model_index.json` analogue).
public struct ModelIndex: Codable, Sendable, Equatable {
    public var format = "contextdiff"
    public var version = 1
    /// Whether the model has a context adapter r_φ (false: the plain-diffusion baseline).
    public var contextual: Bool
    public var textEncoder: TextEncoderSpec
    /// Free-form provenance (training command, step, date).
    public var notes: [String: String]

    public init(contextual: Bool, textEncoder: TextEncoderSpec, notes: [String: String] = [:]) {
        self.contextual = contextual
        self.textEncoder = textEncoder
        self.notes = notes
    }

    enum CodingKeys: String, CodingKey {
        case format, version, contextual, textEncoder = "text_encoder", notes
    }
}

/// A denoiser f_θ, an optional context adapter r_φ and their noise schedule: everything a
/// sampler needs besides the text encoder. Saved as `model_index.json`,
/// `scheduler/scheduler_config.json`, `unet/`, `adapter/` (ContextDiff only) and
/// `class_encoder/` (class-conditional models only).
public final class ContextDiffModel {
    public let unet: UNet
    public let adapter: ContextAdapter?
    public let schedule: NoiseSchedule
    /// The learned class tokens of a class-conditional model (paper App. B), nil for text.
    public let classEncoder: ClassLabelEncoder?
    public var index: ModelIndex

    public init(
        unet: UNet, adapter: ContextAdapter?, schedule: NoiseSchedule, textEncoder: TextEncoderSpec,
        classEncoder: ClassLabelEncoder? = nil
    ) {
        self.unet = unet
        self.adapter = adapter
        self.schedule = schedule
        self.classEncoder = classEncoder
        self.index = ModelIndex(contextual: adapter != nil, textEncoder: textEncoder)
    }

    /// Every trainable parameter: the U-Net's, then the adapter's, then the class encoder's.
    public var parameters: [Tensor] {
        unet.parameters() + (adapter?.parameters() ?? []) + (classEncoder?.parameters() ?? [])
    }

    /// The state dict with `unet.`, `adapter.` and `class_encoder.` prefixes.
    public func stateDict() -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (k, v) in unet.namedParameters() { out["unet." + k] = v }
        for (k, v) in adapter?.namedParameters() ?? [] { out["adapter." + k] = v }
        for (k, v) in classEncoder?.namedParameters() ?? [] { out["class_encoder." + k] = v }
        return out
    }

    /// The device holding the networks' weights.
    public var device: Device {
        get throws { try unet.device ?? .cpu }
    }

    /// Moves the U-Net and the adapter to `device` in place (``Module/to(_:)``). Sampling then
    /// runs there: the seeded noise is drawn on the CPU (so a seed gives the same x_T on every
    /// device, as diffusers' `randn_tensor` does) and moved. Only `cpu` has kernels in this build.
    public func to(_ device: Device) throws {
        try unet.to(device)
        try adapter?.to(device)
        try classEncoder?.to(device)
    }

    public func train(_ on: Bool = true) {
        unet.train(on)
        adapter?.train(on)
        classEncoder?.train(on)
    }

    /// Writes the folder: sub-models first, the index last (a reader checks the index first).
    public func save(to directory: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        try ModelFolder.save(unet, to: directory.appendingPathComponent("unet"))
        let adapterDir = directory.appendingPathComponent("adapter")
        if let adapter {
            try ModelFolder.save(adapter, to: adapterDir)
        } else if fm.fileExists(atPath: adapterDir.path) {
            try fm.removeItem(at: adapterDir)
        }
        let classDir = directory.appendingPathComponent("class_encoder")
        if let classEncoder {
            try ModelFolder.save(classEncoder, to: classDir)
        } else if fm.fileExists(atPath: classDir.path) {
            try fm.removeItem(at: classDir)
        }
        try writeSchedulerAndIndex(schedule: schedule, index: index, to: directory)
    }

    /// Loads a folder written by ``save(to:)``, verifying every tensor.
    public static func load(from directory: URL) throws -> ContextDiffModel {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CheckpointError.missingFile(directory.path)
        }
        let indexURL = directory.appendingPathComponent("model_index.json")
        guard fm.fileExists(atPath: indexURL.path) else { throw CheckpointError.missingFile(indexURL.path) }
        let index: ModelIndex
        do {
            index = try JSONDecoder().decode(ModelIndex.self, from: Data(contentsOf: indexURL))
        } catch {
            throw CheckpointError.invalidConfig(path: indexURL.path, reason: "\(error)")
        }
        guard index.format == "contextdiff" else {
            throw CheckpointError.invalidConfig(path: indexURL.path, reason: "format '\(index.format)' is not 'contextdiff'")
        }
        let schedule = try NoiseSchedule(ModelFolder.config(
            NoiseScheduleConfig.self, in: directory.appendingPathComponent("scheduler"), file: "scheduler_config.json"))
        let unet = try ModelFolder.load(UNet.self, from: directory.appendingPathComponent("unet"))
        let adapter = index.contextual
            ? try ModelFolder.load(ContextAdapter.self, from: directory.appendingPathComponent("adapter")) : nil
        let classEncoder = index.textEncoder.kind == "class"
            ? try ModelFolder.load(ClassLabelEncoder.self, from: directory.appendingPathComponent("class_encoder")) : nil
        if let classEncoder, classEncoder.width != unet.config.contextDim {
            throw CheckpointError.invalidConfig(
                path: directory.appendingPathComponent("class_encoder").path,
                reason: "class tokens are \(classEncoder.width) wide, the U-Net reads \(unet.config.contextDim)")
        }
        let model = ContextDiffModel(
            unet: unet, adapter: adapter, schedule: schedule, textEncoder: index.textEncoder, classEncoder: classEncoder)
        model.index = index
        return model
    }
}

/// The last files of a pipeline folder: `scheduler/scheduler_config.json`, then `model_index.json`
/// (written last: a reader checks the index first).
func writeSchedulerAndIndex(schedule: NoiseSchedule, index: some Encodable, to directory: URL) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let schedulerDir = directory.appendingPathComponent("scheduler")
    try FileManager.default.createDirectory(at: schedulerDir, withIntermediateDirectories: true)
    try encoder.encode(schedule.config).write(to: schedulerDir.appendingPathComponent("scheduler_config.json"), options: .atomic)
    try encoder.encode(index).write(to: directory.appendingPathComponent("model_index.json"), options: .atomic)
}
