import CTorch
import Foundation

/// The precision of a network's matrix products and convolutions.
///
/// `bf16` is mixed precision: matrix products, linear layers and convolutions read bfloat16
/// copies of their float32 operands, compute in bfloat16 and return float32; weights, optimizer
/// state, norms, activations, softmax, losses and the samplers' arithmetic stay float32. On a
/// CPU with native bfloat16 (AVX-512 BF16, AMX) oneDNN runs those products at 2–4× the float32
/// rate. (PyTorch's autocast would also leave the products' outputs in bfloat16, sending the
/// activations through libtorch 1.13's bfloat16 GroupNorm and SiLU, which are slower than
/// float32's on the CPU: see docs/PERFORMANCE.md.)
public enum Precision: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    case fp32
    case bf16

    public var description: String { rawValue }

    /// What `auto` picks on `device`: `bf16` on a CPU with native bfloat16 instructions, else
    /// `fp32` (CPUs without them emulate bfloat16 slower than float32; CUDA keeps float32, the
    /// precision `check-device` compares). `reason` says why, for a CLI to print.
    public static func automatic(for device: Device) -> (precision: Precision, reason: String) {
        switch device {
        case .cpu:
            if let flags = CPUFeatures.bf16Flags, !flags.isEmpty {
                return (.bf16, "this CPU computes bfloat16 natively (\(flags.joined(separator: ", ")))")
            }
            return (.fp32, "this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag)")
        case .cuda, .meta:
            return (.fp32, "float32 on \(device)")
        }
    }
}

/// What the CPU says about itself (Linux's /proc/cpuinfo).
public enum CPUFeatures {
    /// The flags of the first CPU, nil when /proc/cpuinfo cannot be read.
    public static let flags: Set<String>? = {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
        return Set(line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" }).map(String.init))
    }()

    /// The native-bfloat16 flags of the first CPU (`avx512_bf16`, `amx_bf16`), nil when
    /// /proc/cpuinfo cannot be read.
    public static var bf16Flags: [String]? { flags.map { f in ["avx512_bf16", "amx_bf16"].filter(f.contains) } }

    /// AVX-512 with the byte/word, double/quad and vector-length extensions (oneDNN's
    /// `avx512_core`, where its Winograd convolutions run).
    public static var avx512Core: Bool {
        guard let f = flags else { return false }
        return ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(f.contains)
    }
}

extension Torch {
    /// Runs `body` with the matrix products and convolutions it calls on this thread in
    /// `precision` (on any device; `fp32` runs it as is). The graph records the casts, so
    /// backward computes the same products in bfloat16 wherever it is called.
    public static func withPrecision<R>(_ precision: Precision, on device: Device, _ body: () throws -> R) throws -> R {
        guard precision == .bf16 else { return try body() }
        let (type, _) = device.abi
        guard let scope = ct_mixed_precision_enter(type, Int32(DType.bfloat16.rawValue)) else {
            throw TorchError.lastError("bf16 on \(device)")
        }
        defer { ct_mixed_precision_exit(scope) }
        return try body()
    }
}
