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
        // The machine's own figures: OpenBLAS keeps a pool of --threads here (the other
        // commands give it one thread, `useThreads`).
        Torch.numThreads = threads
        print("libtorch \(Torch.libtorchVersion), threads: \(Torch.numThreads)")
        do {
            print("CUDA: \(try Torch.cudaDeviceCount()) device(s) (contextdiff check-device --device cuda compares one with the CPU)")
        } catch {
            print("CUDA: none (\(error))")
        }
        let gflops = try GemmPeak.sgemm(size: size)
        let blas = Torch.blasThreads.map { ", OpenBLAS \($0) thread(s)" } ?? ""
        print(String(format: "sgemm %dx%d: %.1f GFLOP/s (float32%@)", size, size, gflops, blas))
        if gflops < 20 {
            print("warning: matmul is slow; is libopenblas0-pthread installed? (run scripts/setup.sh)")
        }
        let minilm = MiniLMFiles.defaultDirectory()
        let found = FileManager.default.fileExists(atPath: minilm.appendingPathComponent("model.safetensors").path)
        print("MiniLM files: \(minilm.path) (\(found ? "found" : "missing: run scripts/setup.sh"))")
    }
}

/// `contextdiff check-device`: networks, samplers and a short training run on a device against
/// the CPU (``DeviceCheck``); exit status 1 when a figure is over its tolerance.
struct CheckDeviceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-device",
        abstract: "Compare a device with the CPU: the networks, the samplers and a short training run on the same weights.",
        discussion: "Every figure is max |device − CPU| / max |CPU|; exits 1 when one is over its tolerance. Needs no text encoder."
    )

    @OptionGroup var deviceOptions: DeviceOptions
    @Option(help: "Largest relative difference of the networks' outputs that passes.") var tolerance = 1e-4
    @Option(help: "Largest relative difference of a sampler's result that passes (its steps amplify rounding).")
    var samplerTolerance = 1e-3
    @Option(help: "Largest relative difference of a training loss that passes.") var trainingTolerance = 1e-3
    @Option(help: "Steps of each sampler.") var samplerSteps = 10
    @Option(help: "Training steps on each side.") var trainingSteps = 10
    @Option(help: "Intra-op threads of the CPU side (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Write the report as JSON to this file.") var jsonOutput: String?

    func validate() throws {
        guard tolerance >= 0, samplerTolerance >= 0, trainingTolerance >= 0 else { throw ValidationError("tolerances must be ≥ 0") }
        guard (1...200).contains(samplerSteps), (1...200).contains(trainingSteps) else {
            throw ValidationError("--sampler-steps and --training-steps must be in 1...200")
        }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        useThreads(threads)
        var check = DeviceCheck(device: try deviceOptions.resolved())
        check.tolerance = tolerance
        check.samplerTolerance = samplerTolerance
        check.trainingTolerance = trainingTolerance
        check.samplerSteps = samplerSteps
        check.trainingSteps = trainingSteps
        let report = try check.run { FileHandle.standardError.write(Data("check-device: \($0)\n".utf8)) }
        print("\(report.device) against cpu (libtorch \(report.libtorch)), max |Δ| / max |cpu|:")
        for f in report.figures {
            let name = f.name.padding(toLength: 18, withPad: " ", startingAt: 0)
            print("  \(name) " + String(format: "%.2e  (≤ %.0e) ", f.relativeDifference, f.tolerance) + (f.passed ? "ok" : "FAILED"))
        }
        for (side, s) in report.trainingStepSeconds.sorted(by: { $0.key < $1.key }) {
            print(String(format: "  training step on %@: %.4f s", side, s))
        }
        if let jsonOutput {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            try encoder.encode(report).write(to: URL(fileURLWithPath: jsonOutput), options: .atomic)
            print("wrote \(jsonOutput)")
        }
        guard report.passed else { throw ExitCode(1) }
    }
}
