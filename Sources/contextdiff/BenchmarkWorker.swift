import ArgumentParser
import Foundation
import NN
import Torch
import Workflows

/// One measurement of `contextdiff benchmark` (``BenchmarkWorkload``), run in its own process so
/// that its peak RSS (VmHWM) is its own. Prints one JSON object on its last line.
struct BenchmarkWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "benchmark-worker",
        abstract: "One measurement of `contextdiff benchmark` (internal; run by it in a child process).",
        shouldDisplay: false
    )

    @Argument(help: "train, sample, edit or sgemm.") var workload: BenchmarkWorkload
    @Argument(help: "The benchmark work folder.") var directory: String
    @Flag(help: "Use the reference kernels (Kernels.useReferenceKernels) and glibc's default malloc settings.")
    var referenceKernels = false
    @Flag(help: "edit: run the short equivalence edit (bench.json's edit_check) instead of the timed one.")
    var check = false
    @Option(help: "train and sample: fp32 or bf16 (mixed precision).") var precision: Precision = .fp32
    @Option(help: ArgumentHelp(
        "Write libtorch's operator profile of the measurement to this file (a Chrome trace).",
        discussion: "scripts/profile_summary.py FILE totals it per operator. The profiler's own overhead slows the run: time without it."))
    var profile: String?
    @Flag(inversion: .prefixedNo, help: ArgumentHelp(
        "3×3 convolutions by oneDNN's Winograd algorithm where it has a kernel (Kernels.winogradConvolutions).",
        discussion: "--no-winograd measures the same side with libtorch's direct convolutions (an A/B of that one kernel)."))
    var winograd = true
    @Option(help: ArgumentHelp(
        "train: split each step's batch into this many parts computed at once (Trainer.shards; 1 or 2).",
        discussion: "Default: the trainer's automatic choice (2 on a CPU with two or more threads). --shards 1 measures one batch on all threads."))
    var shards: Int?

    func run() throws {
        if referenceKernels {
            Kernels.useReferenceKernels()
        } else {
            // As the commands do: the training workload with `train`'s allocator.
            if workload == .train { MemorySettings.applyForTraining() } else { Torch.keepFreedTensorMemory() }
            Kernels.winogradConvolutions = winograd
        }
        let folder = BenchmarkFolder(url: URL(fileURLWithPath: directory))
        let measure = { try workload.measure(
                folder: folder, referenceKernels: referenceKernels, check: check, precision: precision, shards: shards) }
        let measurement = try profile.map { try Torch.profile(to: $0, measure) } ?? measure()
        print(try measurement.jsonLine())
    }
}

extension BenchmarkWorkload: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}
