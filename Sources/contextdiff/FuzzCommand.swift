import ArgumentParser
import Foundation
import Fuzzing

/// Runs the seeded fuzzer over the file loaders and prints counts per format.
struct FuzzCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuzz",
        abstract: "Fuzz the file loaders (safetensors, model folders, PNG, JPEG, metadata.jsonl, video) with seeded mutations.",
        discussion: """
            Every case is reproducible from --seed, the format and its index (--only FORMAT --from N --cases 1). \
            Exits 1 when a case throws an untyped error, takes longer than its limit or raises peak memory beyond the bound; \
            exits 3 at once when a case hangs.
            """
    )

    @Option(help: "Cases per format (one number for all, or FORMAT=N,FORMAT=N).")
    var cases: String = "1000"

    @Option(help: "Only these formats (comma-separated: \(FuzzFormat.allCases.map(\.rawValue).joined(separator: ", "))).")
    var only: String?

    @Option(help: "The index of each format's first case (to rerun one: --from N --cases 1).")
    var from: Int = 0

    @Option(help: "Write the cases' files into this folder instead of running them.")
    var dump: String?

    @Option(help: "The run's seed.")
    var seed: UInt64 = 1

    @Option(help: "Seconds a non-video case may take.")
    var caseLimit: Double = 10

    @Option(help: "MiB the peak resident memory may rise above its level once the seeds are loaded.")
    var memoryBound: Int = 64

    @Option(help: "Write the report as JSON to this file.")
    var jsonOutput: String?

    @Option(help: "Scratch folder (emptied; default: a fresh folder in the temporary directory).")
    var scratch: String?

    func plan() throws -> [FuzzFormat: Int] {
        var formats = FuzzFormat.allCases
        if let only {
            formats = try only.split(separator: ",").map { name in
                guard let f = FuzzFormat(rawValue: String(name)) else { throw ValidationError("--only: unknown format '\(name)'") }
                return f
            }
        }
        var plan: [FuzzFormat: Int] = [:]
        if let n = Int(cases) {
            for f in formats { plan[f] = n }
        } else {
            for part in cases.split(separator: ",") {
                let pieces = part.split(separator: "=")
                guard pieces.count == 2, let f = FuzzFormat(rawValue: String(pieces[0])), let n = Int(pieces[1]) else {
                    throw ValidationError("--cases: expected N or FORMAT=N,..., got '\(part)'")
                }
                if formats.contains(f) { plan[f] = n }
            }
        }
        guard plan.values.allSatisfy({ (0...10_000_000).contains($0) }), plan.values.contains(where: { $0 > 0 }) else {
            throw ValidationError("--cases must ask for between 1 and 10,000,000 cases")
        }
        return plan
    }

    func validate() throws {
        _ = try plan()
        guard from >= 0 else { throw ValidationError("--from must be at least 0") }
        guard caseLimit > 0 else { throw ValidationError("--case-limit must be positive") }
        guard memoryBound > 0 else { throw ValidationError("--memory-bound must be positive") }
    }

    func run() throws {
        let plan = try plan()
        let folder = scratch.map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("contextdiff-fuzz-\(UUID().uuidString)")
        var limits = FuzzLimits()
        limits.secondsPerCase = caseLimit
        limits.memoryBoundBytes = memoryBound << 20
        let fuzzer = try Fuzzer(seed: seed, scratch: folder, limits: limits)
        if let dump {
            let out = URL(fileURLWithPath: dump)
            for (format, count) in plan.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                for index in from..<(from + count) {
                    let input = try fuzzer.caseInput(format, index: index)
                    let url = out.appendingPathComponent("\(format.rawValue)-\(index)").appendingPathComponent(input.path)
                    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                    try Data(input.bytes).write(to: url)
                    print("\(url.path): \(input.mutation)")
                }
            }
            return
        }
        let total = plan.values.reduce(0, +)
        let bar = ProgressBar(total: total, label: "fuzz")
        let report = try fuzzer.run(
            cases: plan, from: from,
            onHang: { format, index, limit in
                FileHandle.standardError.write(Data("\nfuzz: \(format.rawValue) case \(index) (seed \(seed)) is still running after \(limit) s: a hang\n".utf8))
                Foundation.exit(3)
            },
            progress: { p in
                bar.update(p.completed, status: p.fuzzCase.map { "\($0.format.rawValue) #\($0.index)" } ?? p.phase)
                return true
            })
        bar.update(total)
        print("fuzz seed \(report.seed): \(report.totalCases) cases in \(String(format: "%.1f", report.seconds)) s")
        print("format        cases  accepted  rejected (by error type)                                                 slowest")
        for format in FuzzFormat.allCases {
            guard let c = report.counts[format] else { continue }
            let types = c.rejectedBy.keys.sorted().map { "\($0) \(c.rejectedBy[$0]!)" }.joined(separator: ", ")
            print(format.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)
                  + String(format: " %6d  %8d  %8d ", c.cases, c.accepted, c.rejected)
                  + "(\(types))".padding(toLength: 72, withPad: " ", startingAt: 0)
                  + String(format: " %.2f s", c.slowestSeconds))
        }
        print("peak RSS \(report.peakBytesBefore >> 20) MiB before the cases, \(report.peakBytesAfter >> 20) MiB after (bound: +\(report.memoryBoundBytes >> 20) MiB)")
        print("failures: \(report.failures.count) (untyped errors, hangs, memory)")
        for failure in report.failures.prefix(50) { print("  \(failure)") }
        if let jsonOutput {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            try encoder.encode(report).write(to: URL(fileURLWithPath: jsonOutput), options: .atomic)
        }
        if !report.passed { throw ExitCode(1) }
    }
}
