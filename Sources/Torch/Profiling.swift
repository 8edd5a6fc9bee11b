import CTorch

extension Torch {
    /// Runs `body` under libtorch's operator profiler and writes every operator call with its
    /// time to `path` as a Chrome trace (`scripts/profile_summary.py` totals it per operator).
    public static func profile<R>(to path: String, _ body: () throws -> R) throws -> R {
        guard let session = ct_profile_start(path) else { throw TorchError.lastError("profile") }
        var stopped = false
        defer { if !stopped { _ = ct_profile_stop(session) } }
        let result = try body()
        stopped = true
        try Tensor.check(status: ct_profile_stop(session), "profile: write \(path)")
        return result
    }
}
