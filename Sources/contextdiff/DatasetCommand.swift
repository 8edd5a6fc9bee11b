import ArgumentParser
import Datasets
import Foundation

/// `contextdiff dataset ...`: the synthetic compositional benchmark on disk.
struct DatasetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dataset",
        abstract: "Export the synthetic compositional benchmark.",
        subcommands: [DatasetExportCommand.self, DatasetVideoCommand.self]
    )
}

extension Split: ExpressibleByArgument {
    public init?(argument: String) {
        if argument == "test" { self = .heldout } else { self.init(rawValue: argument) }
    }
}

struct DatasetExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write benchmark samples as PNGs plus metadata.jsonl (file_name, text and the labels).",
        discussion: """
            The folder loads as a Hugging Face image folder. The heldout split contains only the \
            held-out combinations (red triangle, green circle, ...; red left of blue, ...), which \
            never occur in train or validation.
            """
    )

    @Option(help: "Output folder (created if missing).")
    var out: String

    @Option(help: "Split: train, validation or heldout (alias: test).")
    var split: Split = .train

    @Option(help: "Number of images.")
    var count: Int = 1000

    @Option(help: "Benchmark seed; (seed, split, index) fixes every sample.")
    var seed: UInt64 = 0

    @Option(help: "Image width and height in pixels.")
    var size: Int = 32

    @Option(help: "Share of two-object scenes (0...1).")
    var twoObjectFraction: Double = 0.5

    @Flag(help: "Write into a non-empty folder (existing files of the same name are replaced).")
    var force = false

    func validate() throws {
        guard count > 0 else { throw ValidationError("--count must be positive") }
        guard (8...1024).contains(size) else { throw ValidationError("--size must be in 8...1024") }
        guard (0...1).contains(twoObjectFraction) else { throw ValidationError("--two-object-fraction must be in 0...1") }
    }

    func run() throws {
        let benchmark = try SyntheticBenchmark(SyntheticBenchmarkConfig(
            imageSize: size, seed: seed, twoObjectFraction: twoObjectFraction))
        let folder = URL(fileURLWithPath: out)
        let progress = StderrProgress(label: "export \(split.rawValue)")
        defer { progress.finish() }
        try benchmark.export(split: split, count: count, to: folder, overwrite: force) { done, total in
            progress.update(done, total)
        }
        progress.finish()
        print("wrote \(count) images and metadata.jsonl to \(folder.path) (split \(split.rawValue), seed \(seed))")
    }
}

/// A one-line progress indicator on stderr: count, percentage, rate and ETA, redrawn at most
/// every 0.1 s.
final class StderrProgress {
    private let label: String
    private let start = ContinuousClock.now
    private var lastDraw: ContinuousClock.Instant?
    private var drew = false

    init(label: String) { self.label = label }

    func update(_ done: Int, _ total: Int) {
        let now = ContinuousClock.now
        if let lastDraw, done < total, now - lastDraw < .milliseconds(100) { return }
        lastDraw = now
        let elapsed = Self.seconds(now - start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let line = String(format: "\r%@ %d/%d (%3.0f%%) %.0f img/s, ETA %.0fs ",
                          label, done, total, 100 * Double(done) / Double(max(total, 1)), rate, eta)
        FileHandle.standardError.write(Data(line.utf8))
        drew = true
    }

    func finish() {
        if drew { FileHandle.standardError.write(Data("\n".utf8)) }
        drew = false
    }

    private static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}
