import Foundation

/// What a model folder records of how it was made: recipes and portable commands, never the
/// paths of the machine that trained it.
public enum Provenance {
    /// The options whose values name a machine-local folder, and the placeholder each becomes.
    static let placeholders = ["-o": "RUN", "--output": "RUN", "--init-from": "INIT"]

    /// `arguments` (a `CommandLine.arguments`) as a command another machine can read: the
    /// program becomes `contextdiff`, the run folder `RUN`, the model fine-tuned from `INIT`,
    /// and any other absolute path its last component (a recipe file named relative to the
    /// repository, such as `docs/recipes/relations-v2.json`, stays as it is).
    public static func portableCommand(_ arguments: [String]) -> String {
        var out = ["contextdiff"]
        var index = 1
        while index < arguments.count {
            let argument = arguments[index]
            if let (name, value) = splitOption(argument), let placeholder = placeholders[name] {
                out.append(value.isEmpty ? name : "\(name)=\(placeholder)")
            } else if let placeholder = placeholders[argument], index + 1 < arguments.count {
                out += [argument, placeholder]
                index += 1
            } else {
                out.append(portable(argument))
            }
            index += 1
        }
        return out.map(quoted).joined(separator: " ")
    }

    static func splitOption(_ argument: String) -> (String, String)? {
        guard argument.hasPrefix("-"), let eq = argument.firstIndex(of: "=") else { return nil }
        return (String(argument[..<eq]), String(argument[argument.index(after: eq)...]))
    }

    static func portable(_ argument: String) -> String {
        if let (name, value) = splitOption(argument), value.hasPrefix("/") { return "\(name)=\(portable(value))" }
        guard argument.hasPrefix("/") else { return argument }
        return URL(fileURLWithPath: argument).lastPathComponent
    }

    static func quoted(_ word: String) -> String {
        word.isEmpty || word.contains(where: { " \"'\\$`".contains($0) }) ? "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'" : word
    }
}
