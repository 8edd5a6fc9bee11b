import Foundation

/// The model folders this project ships (in `models/`), and how a front end finds them.
public enum ShippedModel: String, Sendable, CaseIterable {
    /// The default text-to-image model (`models/default`, a `model_index.json` pipeline folder).
    case `default`
    /// The attribute evaluator (`models/evaluator`).
    case evaluator
    /// The contrastive image–text scorer (`models/clip`).
    case clip
    /// The cascade's super-resolution stage (`models/superres`, a `model_index.json` folder).
    case superres

    /// The environment variable that overrides the location.
    public var environmentVariable: String {
        switch self {
        case .default: "CONTEXTDIFF_MODEL"
        case .evaluator: "CONTEXTDIFF_EVALUATOR"
        case .clip: "CONTEXTDIFF_CLIP"
        case .superres: "CONTEXTDIFF_SUPERRES"
        }
    }

    /// The file whose presence marks a folder as this model.
    public var marker: String { self == .default || self == .superres ? "model_index.json" : ModelFolder.configName }
}

/// Finds shipped model folders the same way for every front end (CLI, server, tests):
/// `$VARIABLE` if set, else `models/<name>` under the working directory, else `models/<name>` in
/// the source checkout the executable was built in (`<repo>/.build/<config>/<binary>`).
public struct ModelLocator: Sendable {
    public var environment: [String: String]
    public var workingDirectory: URL
    /// The running executable (its checkout is the last place searched).
    public var executable: URL?

    public init(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        workingDirectory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath),
        executable: URL? = CommandLine.arguments.first.map { URL(fileURLWithPath: $0) }
    ) {
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.executable = executable
    }

    /// The folders searched for `model`, in order.
    public func candidates(_ model: ShippedModel) -> [URL] {
        var out: [URL] = []
        if let env = environment[model.environmentVariable], !env.isEmpty {
            return [URL(fileURLWithPath: env, relativeTo: workingDirectory).standardizedFileURL]
        }
        out.append(workingDirectory.appendingPathComponent("models/\(model.rawValue)"))
        if let executable {
            let repo = executable.resolvingSymlinksInPath().deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent()
            out.append(repo.appendingPathComponent("models/\(model.rawValue)"))
        }
        return out
    }

    /// The first candidate that holds the model, or nil (an environment override is returned
    /// as given, so that a wrong path fails loudly when it is loaded).
    public func locate(_ model: ShippedModel) -> URL? {
        let all = candidates(model)
        if environment[model.environmentVariable].map({ !$0.isEmpty }) == true { return all.first }
        return all.first { FileManager.default.fileExists(atPath: $0.appendingPathComponent(model.marker).path) }
    }
}
