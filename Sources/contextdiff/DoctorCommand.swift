import ArgumentParser
import Foundation
import ContextDiff
import Torch
import Workflows

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
        let gflops = try GemmPeak.sgemm(size: size)
        print(String(format: "sgemm %dx%d: %.1f GFLOP/s (float32)", size, size, gflops))
        if gflops < 20 {
            print("warning: matmul is slow; is libopenblas0-pthread installed? (run scripts/setup.sh)")
        }
        let minilm = MiniLMFiles.defaultDirectory()
        let found = FileManager.default.fileExists(atPath: minilm.appendingPathComponent("model.safetensors").path)
        print("MiniLM files: \(minilm.path) (\(found ? "found" : "missing: run scripts/setup.sh"))")
    }
}
