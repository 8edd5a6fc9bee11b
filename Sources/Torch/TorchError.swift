import CTorch

/// Errors thrown by the `Torch` module.
public enum TorchError: Error, Equatable, CustomStringConvertible {
    /// libtorch rejected an operation; `message` is libtorch's own text without its C++ backtrace.
    case libtorch(operation: String, message: String)
    /// An argument was invalid before it reached libtorch (a shape that does not match the data...).
    case invalidArgument(String)
    /// A distributed collective or rendezvous failed.
    case distributed(String)
    /// A device was asked for that this libtorch or this machine does not have (CUDA with a
    /// CPU-only libtorch, no GPU visible, `cuda:3` on a one-GPU machine).
    case deviceUnavailable(String)

    public var description: String {
        switch self {
        case let .libtorch(operation, message): "\(operation): \(message)"
        case let .invalidArgument(message): message
        case let .distributed(message): "distributed: \(message)"
        case let .deviceUnavailable(message): message
        }
    }

    /// The calling thread's last error from the C ABI.
    static func lastError(_ operation: String) -> TorchError {
        let message = String(cString: ct_last_error())
        return .libtorch(operation: operation, message: message.trimmingTrailingNewlines())
    }
}

extension String {
    func trimmingTrailingNewlines() -> String {
        var s = Substring(self)
        while let last = s.last, last.isNewline || last == " " { s = s.dropLast() }
        return String(s)
    }
}
