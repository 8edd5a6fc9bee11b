import ArgumentParser
import Foundation
import ContextDiff
import Torch

/// Checks the installation: libtorch's threads and BLAS speed, and the text encoder's files.
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check the libtorch installation, measure matmul speed and find the MiniLM files."
    )

    @Option(help: "Intra-op threads (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Matrix size for the sgemm measurement.")
    var size: Int = 1024

    func validate() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard (16...8192).contains(size) else { throw ValidationError("--size must be in 16...8192") }
    }

    func run() throws {
        Torch.numThreads = threads
        print("libtorch threads: \(Torch.numThreads)")
        let gflops = try measureSgemm(size: size)
        print(String(format: "sgemm %dx%d: %.1f GFLOP/s (float32)", size, size, gflops))
        if gflops < 20 {
            print("warning: matmul is slow; is libopenblas0-pthread installed? (run scripts/setup.sh)")
        }
        let minilm = MiniLMFiles.defaultDirectory()
        let found = FileManager.default.fileExists(atPath: minilm.appendingPathComponent("model.safetensors").path)
        print("MiniLM files: \(minilm.path) (\(found ? "found" : "missing: run scripts/setup.sh"))")
    }
}

/// Times `repeats` float32 products of two `size`×`size` matrices computed by `product`, after
/// one untimed call, and returns the best rate in GFLOP/s (2·size³ per product).
func measureGemm(size: Int, repeats: Int = 5, _ product: (Tensor, Tensor) throws -> Tensor) throws -> Double {
    let a = try Tensor.randn([size, size], generator: Generator(seed: 0))
    let b = try Tensor.randn([size, size], generator: Generator(seed: 1))
    _ = try product(a, b)
    var best = Double.infinity
    let clock = ContinuousClock()
    for _ in 0..<repeats {
        let elapsed = try clock.measure { _ = try product(a, b) }
        best = min(best, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
    }
    return 2 * pow(Double(size), 3) / best / 1e9
}

/// The matmul through libtorch (OpenBLAS sgemm on this build), in GFLOP/s.
func measureSgemm(size: Int, repeats: Int = 5) throws -> Double {
    try measureGemm(size: size, repeats: repeats) { try $0.matmul($1) }
}

/// The same product as a oneDNN 1×1 convolution (the kernel Swift's linear layers use,
/// ``Kernels/linearAsConvolution``), in GFLOP/s.
func measureOneDNNGemm(size: Int, repeats: Int = 5) throws -> Double {
    try measureGemm(size: size, repeats: repeats) { try $0.linearViaConvolution(weight: $1, bias: nil) }
}
