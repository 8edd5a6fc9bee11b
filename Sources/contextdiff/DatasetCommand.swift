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
        let progress = ProgressDisplay(prefix: split.rawValue)
        try benchmark.export(split: split, count: count, to: folder, overwrite: force) { progress.update($0) }
        print("wrote \(count) images and metadata.jsonl to \(folder.path) (split \(split.rawValue), seed \(seed))")
    }
}
