import Foundation
import Torch

/// A network built from a Codable configuration, stored as a folder with `config.json` and
/// `model.safetensors` (the diffusers layout).
public protocol ConfiguredModel: Module {
    associatedtype Config: Codable & Equatable
    var config: Config { get }
    init(_ config: Config) throws
}


/// Errors reading or writing a model folder.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case missingFile(String)
    case invalidConfig(path: String, reason: String)
    case invalidWeights(path: String, reason: String)

    public var description: String {
        switch self {
        case let .missingFile(p): "checkpoint file not found: \(p)"
        case let .invalidConfig(p, r): "invalid model config \(p): \(r)"
        case let .invalidWeights(p, r): "invalid weights \(p): \(r)"
        }
    }
}

public enum ModelFolder {
    public static let configName = "config.json"
    public static let weightsName = "model.safetensors"

    /// Writes `config.json` and `model.safetensors` into `directory` (created if needed); each
    /// file is written atomically, weights first, so a reader never sees a config without weights.
    public static func save<M: ConfiguredModel>(_ model: M, to directory: URL, metadata: [String: String] = [:]) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try saveSafeTensors(model.stateDict(), metadata: metadata, to: directory.appendingPathComponent(weightsName))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(model.config).write(to: directory.appendingPathComponent(configName), options: .atomic)
    }

    /// Reads the configuration of a model folder.
    public static func config<C: Decodable>(_ type: C.Type, in directory: URL, file: String = configName) throws -> C {
        let url = directory.appendingPathComponent(file)
        guard FileManager.default.fileExists(atPath: url.path) else { throw CheckpointError.missingFile(url.path) }
        do {
            return try JSONDecoder().decode(C.self, from: Data(contentsOf: url))
        } catch {
            throw CheckpointError.invalidConfig(path: url.path, reason: "\(error)")
        }
    }

    /// Builds the model from `config.json` and loads `model.safetensors`, verifying every name,
    /// shape and dtype (a missing, extra or mis-shaped tensor is an error naming it).
    ///
    /// The config is checked against the weights' header before anything is allocated: the
    /// model is first built on the meta device (shapes, no data), so a config that asks for a
    /// network the file does not hold fails at once instead of allocating it.
    public static func load<M: ConfiguredModel>(_ type: M.Type, from directory: URL) throws -> M {
        let config = try config(M.Config.self, in: directory)
        let configPath = directory.appendingPathComponent(configName).path
        let url = directory.appendingPathComponent(weightsName)
        guard FileManager.default.fileExists(atPath: url.path) else { throw CheckpointError.missingFile(url.path) }
        let header: [String: (dtype: SafeTensorsDType, shape: [Int])]
        do {
            header = try SafeTensorsFile.header(contentsOf: url).tensors
        } catch {
            throw CheckpointError.invalidWeights(path: url.path, reason: "\(error)")
        }
        let planned: [(String, [Int], DType)]
        do {
            planned = try Torch.withDefaultDevice(.meta) { try M(config).namedParameters().map { ($0.0, $0.1.shape, $0.1.dtype) } }
        } catch {
            throw CheckpointError.invalidConfig(path: configPath, reason: "\(error)")
        }
        // The same errors as `Module.load` gives for these weights, before any allocation.
        let plannedKeys = Set(planned.map(\.0))
        if let extra = header.keys.sorted().first(where: { !plannedKeys.contains($0) }) { throw ModuleError.unexpectedKey(extra) }
        for (key, shape, dtype) in planned {
            guard let entry = header[key] else { throw ModuleError.missingKey(key) }
            guard entry.shape == shape else { throw ModuleError.shapeMismatch(key: key, expected: shape, found: entry.shape) }
            guard entry.dtype.dtype == dtype else { throw ModuleError.dtypeMismatch(key: key, expected: dtype, found: entry.dtype.dtype) }
        }
        let model: M
        do {
            model = try M(config)
        } catch {
            throw CheckpointError.invalidConfig(path: configPath, reason: "\(error)")
        }
        let state: [String: Tensor]
        do {
            state = try loadSafeTensors(url)
        } catch {
            throw CheckpointError.invalidWeights(path: url.path, reason: "\(error)")
        }
        try model.load(state)
        return model
    }
}
