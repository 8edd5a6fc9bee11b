import Foundation
import Torch

/// The repository's root folder (for shipped models, scripts and fixtures).
public let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Shared helpers for the test targets (not a product).
public enum TestSupport {
    /// The largest absolute difference between two tensors (converted to float64).
    public static func maxAbsDiff(_ a: Tensor, _ b: Tensor) throws -> Double {
        guard a.shape == b.shape else {
            throw TorchError.invalidArgument("shapes differ: \(a.shape) vs \(b.shape)")
        }
        return try (a.to(.float64) - b.to(.float64)).abs().max().item()
    }

    /// The largest absolute difference divided by the reference's largest magnitude,
    /// `max|a − b| / max|b|` (0 when both are all zeros).
    ///
    /// Use it to compare two float32 computations of the same value by different kernels
    /// (a fused and a reference path, a batched and a single call, Swift and its PyTorch twin):
    /// oneDNN and OpenBLAS pick different kernels on Intel and AMD, whose rounding differs by a
    /// few ulps of the values' size, so a bound on the absolute difference is a bound tuned to
    /// one machine's magnitudes.
    public static func relativeDiff(_ a: Tensor, _ b: Tensor) throws -> Double {
        let diff = try maxAbsDiff(a, b)
        guard diff > 0 else { return 0 }
        let scale = try b.to(.float64).abs().max().item() as Double
        return scale > 0 ? diff / scale : .infinity
    }

    /// `difference / scale`, for comparisons made outside Swift (the PyTorch twin reports both).
    public static func relative(_ difference: Double, scale: Double) -> Double {
        difference == 0 ? 0 : (scale > 0 ? difference / scale : .infinity)
    }

    /// Whether `|a - b| <= atol + rtol * |b|` holds elementwise.
    public static func allClose(_ a: Tensor, _ b: Tensor, rtol: Double = 1e-5, atol: Double = 1e-6) throws -> Bool {
        guard a.shape == b.shape else { return false }
        let a64 = try a.to(.float64), b64 = try b.to(.float64)
        let bad = try (a64 - b64).abs().gt(try b64.abs() * rtol + atol).any()
        return try bad.item() == 0
    }

    /// Whether two arrays agree within `atol + rtol * |expected|` elementwise.
    public static func allClose(_ a: [Double], _ b: [Double], rtol: Double = 1e-5, atol: Double = 1e-6) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { Swift.abs($0 - $1) <= atol + rtol * Swift.abs($1) }
    }
}

/// The outcome of a finite-difference gradient check.
public struct GradientCheckReport: CustomStringConvertible, Sendable {
    public var checked = 0
    public var maxAbsError = 0.0
    public var failures: [String] = []
    public var passed: Bool { failures.isEmpty && checked > 0 }
    public var description: String {
        "checked \(checked) entries, max abs error \(maxAbsError)" + (failures.isEmpty ? "" : ", failures: \(failures.prefix(5))")
    }
}

/// Compares autograd's gradients of `loss()` with central finite differences, in float64.
///
/// Every tensor in `inputs` must be a float64 leaf that requires grad. `loss` must return a
/// scalar and recompute from the current values of `inputs`. At most `maxEntries` entries of
/// each input are probed (spread evenly over the tensor).
public func gradientCheck(
    _ inputs: [(name: String, tensor: Tensor)],
    step: Double = 1e-6, rtol: Double = 1e-4, atol: Double = 1e-6, maxEntries: Int = 40,
    loss: () throws -> Tensor
) throws -> GradientCheckReport {
    for (name, t) in inputs {
        guard t.dtype == .float64, t.requiresGrad else {
            throw TorchError.invalidArgument("gradient check input \(name) must be a float64 leaf requiring grad")
        }
        try t.zeroGrad()
    }
    try loss().backward()
    var report = GradientCheckReport()
    for (name, t) in inputs {
        guard let g = t.grad else {
            report.failures.append("\(name): no gradient")
            continue
        }
        let analytic = try g.to(.float64).contiguous().scalars(as: Double.self)
        let original = try t.detached().contiguous().scalars(as: Double.self)
        let shape = t.shape
        let n = original.count
        let stride = Swift.max(1, n / maxEntries)
        for i in Swift.stride(from: 0, to: n, by: stride) {
            func evaluate(_ delta: Double) throws -> Double {
                var values = original
                values[i] += delta
                try Torch.withNoGrad { try t.copy(from: Tensor(values, shape: shape)) }
                return try Torch.withNoGrad { try loss().item() }
            }
            let numeric = (try evaluate(step) - evaluate(-step)) / (2 * step)
            let error = Swift.abs(numeric - analytic[i])
            report.maxAbsError = Swift.max(report.maxAbsError, error)
            report.checked += 1
            if error > atol + rtol * Swift.abs(numeric) {
                report.failures.append("\(name)[\(i)]: autograd \(analytic[i]) vs numeric \(numeric)")
            }
        }
        try Torch.withNoGrad { try t.copy(from: Tensor(original, shape: shape)) }
    }
    return report
}
