import Foundation
import Torch

/// How a command spreads its work over the CPU's threads.
public enum ThreadSettings {
    /// Gives libtorch `threads` intra-op threads, and OpenBLAS's own pool one thread unless the
    /// environment names a count (`OPENBLAS_NUM_THREADS`, which then wins). The products that
    /// reach OpenBLAS (attention's per-entry products, linear layers over few rows) already run
    /// spread over libtorch's threads; a second pool at the same count only spins beside them:
    /// `generate` ran 5.2 s with it against 3.5 s without, a training step ~10 % slower
    /// (docs/NOTES.md "Performance" 8 and 11).
    public static func apply(threads: Int, environment: [String: String] = ProcessInfo.processInfo.environment) {
        Torch.numThreads = threads
        if let blas = blasThreads(environment: environment) { Torch.blasThreads = blas }
    }

    /// The OpenBLAS thread count ``apply(threads:environment:)`` sets: 1, or nil (leave it as
    /// libtorch's setting and the environment make it) when `OPENBLAS_NUM_THREADS` is set.
    public static func blasThreads(environment: [String: String]) -> Int? {
        environment["OPENBLAS_NUM_THREADS"] == nil ? 1 : nil
    }
}
