import ArgumentParser
import Foundation
import Workflows

/// `contextdiff benchmark`: flags → ``BenchmarkSettings``, then ``BenchmarkSettings/run(worker:peer:keepFiles:notes:)``
/// (the library does the work; see its documentation for what is measured).
struct BenchmarkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "benchmark",
        abstract: "Swift vs its PyTorch twin vs diffusers, side by side: training step, guided DDIM sampling, sgemm."
    )

    @Option(help: "Intra-op threads for every side (default: all cores).")
    var threads = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: ArgumentHelp(
        "OpenBLAS threads for every side (default: --threads).",
        discussion: "At 2 threads the PyTorch peers run faster with 1: OpenBLAS's pool competes with libtorch's OpenMP pool for their linear layers (docs/PERFORMANCE.md, Threads)."))
    var blasThreads: Int?
    @Option(help: "Training batch size.") var trainBatch = 32
    @Option(help: "Timed training steps (after --train-warmup untimed ones).") var trainSteps = 5
    @Option(help: "Untimed training steps first.") var trainWarmup = 2
    @Option(help: "Sampling batch size (images; the guided U-Net call sees twice as many).") var sampleBatch = 16
    @Option(help: "DDIM steps.") var ddimSteps = 50
    @Option(help: "Timed sampling runs.") var sampleRepeats = 1
    @Option(help: "Rounds over all sides (each side keeps its best; robust to a changing background load).") var rounds = 1
    @Option(help: "Classifier-free guidance weight.") var guidance = 3.0
    @Option(help: "Maximum |Swift − twin| allowed on the U-Net and adapter outputs.") var tolerance = 1e-4
    @Option(help: "Write every figure as JSON to this file.") var jsonOutput: String?
    @Option(help: "Python with torch (default: $CONTEXTDIFF_PYTHON, the benchmark venv of scripts/setup-benchmark.sh, or python3).")
    var python: String?
    @Option(help: "Folder of bench_peer.py (default: benchmarks/peer of the repository).") var peerDir: String?
    @Flag(help: "Leave out the diffusers peer.") var skipDiffusers = false
    @Option(help: "ResBlocks per level of the diffusers U-Net (default: the same depth as ours, 1; diffusers' default 2 gives 3.0M parameters).")
    var diffusersLayersPerBlock: Int?
    @Flag(inversion: .prefixedNo, help: "Also time Swift with its reference kernels (the 'before' of docs/NOTES.md \"Performance\").")
    var referenceSide = true
    @Flag(help: "Keep the work folder (weights, data, samples) instead of deleting it.") var keepFiles = false
    @Flag(inversion: .prefixedNo, help: ArgumentHelp(
        "Also time training and sampling in bf16 mixed precision (Swift --precision bf16; the PyTorch peers with torch.autocast).",
        discussion: "Default: on where the CPU computes bfloat16 natively (avx512_bf16 or amx_bf16), off elsewhere."))
    var bf16: Bool?
    @Option(help: "Frames of the timed video edit (0 leaves the edit out).") var editFrames = 8
    @Option(help: "One-shot tuning steps of the timed video edit.") var editTuneSteps = 50
    @Option(help: "DDIM steps of the video edit's inversion and of its editing.") var editSteps = 20
    @Option(help: "Timed video edits per side and round.") var editRepeats = 1
    @Option(help: "Maximum |Swift − twin| / max |twin| allowed on the short check edit's output.") var editTolerance = 1e-3
    @OptionGroup var deviceOptions: DeviceOptions

    var settings: BenchmarkSettings {
        var s = BenchmarkSettings(threads: threads)
        s.blasThreads = blasThreads
        s.trainBatch = trainBatch
        s.trainSteps = trainSteps
        s.trainWarmup = trainWarmup
        s.sampleBatch = sampleBatch
        s.ddimSteps = ddimSteps
        s.sampleRepeats = sampleRepeats
        s.rounds = rounds
        s.guidance = guidance
        s.tolerance = tolerance
        s.skipDiffusers = skipDiffusers
        s.diffusersLayersPerBlock = diffusersLayersPerBlock
        s.referenceSide = referenceSide
        s.editFrames = editFrames
        s.editTuneSteps = editTuneSteps
        s.editSteps = editSteps
        s.editRepeats = editRepeats
        s.editTolerance = editTolerance
        if let bf16 { s.bf16 = bf16 }
        return s
    }

    func validate() throws {
        do { try settings.validate() } catch let BenchmarkError.invalidSetting(option, message) {
            throw ValidationError("--\(option.replacingOccurrences(of: "_", with: "-")) \(message)")
        }
    }

    func run() throws {
        var settings = settings
        settings.device = try deviceOptions.resolved()
        let dropped: [String]
        (settings, dropped) = settings.forDevice()
        if !dropped.isEmpty {
            FileHandle.standardError.write(Data("benchmark: on \(settings.device): training and sampling only (\(dropped.joined(separator: ", ")) left out)\n".utf8))
        }
        let peer = try BenchmarkPeer(python: python, peerDir: peerDir, needDiffusers: !settings.skipDiffusers)
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let result = try settings.run(
            worker: BenchmarkWorker(executable: executable, arguments: ["benchmark-worker"]), peer: peer, keepFiles: keepFiles
        ) { note in
            FileHandle.standardError.write(Data("benchmark: \(note)\n".utf8))
        }
        print(result.summary)
        if let jsonOutput {
            try result.jsonData().write(to: URL(fileURLWithPath: jsonOutput), options: .atomic)
            print("wrote \(jsonOutput)")
        }
    }
}
