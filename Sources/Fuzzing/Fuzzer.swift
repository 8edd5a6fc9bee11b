import ContextDiff
import Datasets
import Foundation
import NN
import Torch

/// The file formats the fuzzer attacks, each through the loader a user's file reaches.
public enum FuzzFormat: String, CaseIterable, Sendable, Codable, CodingKeyRepresentable {
    /// `SafeTensorsFile(contentsOf:)`, `SafeTensorsFile(data:)` and `loadSafeTensors`.
    case safetensors
    /// `ContextDiffModel.load(from:)` on a model folder with one file mutated (model_index.json,
    /// a config.json, scheduler_config.json or a model.safetensors).
    case modelFolder = "model-folder"
    /// `RGBImage(contentsOf:)` on a PNG.
    case png
    /// `RGBImage(contentsOf:)` on a JPEG.
    case jpeg
    /// `ImageFolderDataset(folder:imageSize:)` and each of its images, with metadata.jsonl mutated.
    case metadata
    /// `FFmpeg.read(_:size:maxFrames:)` on a mutated GIF or MP4 (and empty, one-frame, not-a-video files).
    case video

    var ordinal: Int { Self.allCases.firstIndex(of: self)! }
}

/// What one fuzz run found.
public struct FuzzReport: Codable, Sendable {
    /// One case that broke a rule: an untyped error, a case slower than the time limit, or a
    /// rise of the peak memory beyond the bound.
    public struct Failure: Codable, Sendable, CustomStringConvertible {
        public var format: FuzzFormat
        public var index: Int
        public var kind: String
        public var detail: String
        public var description: String { "\(format.rawValue) case \(index): \(kind): \(detail)" }
    }

    public struct Counts: Codable, Sendable {
        public var cases = 0
        /// Mutated inputs that still loaded (a flipped bit inside tensor data, say).
        public var accepted = 0
        /// Rejections, by the error type that carried them.
        public var rejectedBy: [String: Int] = [:]
        public var rejected: Int { rejectedBy.values.reduce(0, +) }
        /// The slowest case, in seconds.
        public var slowestSeconds = 0.0

        enum CodingKeys: String, CodingKey {
            case cases, accepted
            case rejectedBy = "rejected_by", slowestSeconds = "slowest_seconds"
        }
    }

    public var seed: UInt64
    public var counts: [FuzzFormat: Counts] = [:]
    public var failures: [Failure] = []
    /// Peak resident memory before the first case (after the seeds were loaded once) and at the end, in bytes.
    public var peakBytesBefore = 0
    public var peakBytesAfter = 0
    /// The bound on the rise of the peak, in bytes.
    public var memoryBoundBytes = 0
    public var seconds = 0.0

    enum CodingKeys: String, CodingKey {
        case seed, counts, failures, seconds
        case peakBytesBefore = "peak_bytes_before", peakBytesAfter = "peak_bytes_after", memoryBoundBytes = "memory_bound_bytes"
    }

    public var totalCases: Int { counts.values.reduce(0) { $0 + $1.cases } }
    public var passed: Bool { failures.isEmpty }
}

/// Limits a fuzz run holds every case to.
public struct FuzzLimits: Sendable {
    /// The longest a case may take (video cases run ffmpeg twice).
    public var secondsPerCase = 10.0
    public var secondsPerVideoCase = 30.0
    /// How far the process's peak resident memory may rise above its level once the seeds are
    /// loaded: no input here is larger than a few hundred KiB, so any larger rise means a
    /// declared size was believed.
    public var memoryBoundBytes = 64 << 20

    public init() {}
}

extension ProgressUpdate {
    /// A fuzz run's report before each case: the phase is the format's name and the metric
    /// "case" the case index (see ``Fuzzer``).
    public var fuzzCase: (format: FuzzFormat, index: Int)? {
        guard let format = FuzzFormat(rawValue: phase), let index = metric("case") else { return nil }
        return (format, Int(index))
    }
}

/// A seeded, reproducible fuzzer over the project's file loaders.
///
/// Every case is a pure function of `(seed, format, index)`: a rerun of one case reproduces it.
/// Cases run in this process, so a crash ends the run (the last progress report names the
/// case); a case that exceeds its time limit is reported through `onHang` while it is still
/// running, and as a failure if it finishes.
public final class Fuzzer {
    public let seed: UInt64
    public let limits: FuzzLimits
    let scratch: URL
    let corpus: FuzzCorpus

    /// Builds the seed corpus (valid files of every format) under `scratch`, a folder the
    /// fuzzer owns and empties.
    public init(seed: UInt64, scratch: URL, limits: FuzzLimits = FuzzLimits()) throws {
        self.seed = seed
        self.limits = limits
        self.scratch = scratch
        try? FileManager.default.removeItem(at: scratch)
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        corpus = try FuzzCorpus(folder: scratch.appendingPathComponent("seeds"))
    }

    deinit { try? FileManager.default.removeItem(at: scratch) }

    /// Runs `cases[format]` cases of each format, in order.
    ///
    /// - Parameters:
    ///   - start: the index of each format's first case (to rerun one case: `from: i`, one case).
    ///   - onHang: called from a watchdog thread when a case runs past its limit (the CLI
    ///     reports it and exits; a caller without one learns of it when the case returns).
    ///   - progress: called before each case; return `false` to stop.
    public func run(
        cases: [FuzzFormat: Int],
        from start: Int = 0,
        onHang: (@Sendable (FuzzFormat, Int, Double) -> Void)? = nil,
        progress: ProgressHandler = { _ in true }
    ) throws -> FuzzReport {
        var report = FuzzReport(seed: seed)
        report.memoryBoundBytes = limits.memoryBoundBytes
        let formats = FuzzFormat.allCases.filter { (cases[$0] ?? 0) > 0 }
        // Load every seed once, unmutated: they must load, and the memory they need is the baseline.
        for format in formats {
            if let error = outcome(of: try corpus.seedCase(format), format: format).error {
                throw FuzzSetupError("the \(format.rawValue) seed does not load: \(error)")
            }
        }
        report.peakBytesBefore = peakResidentBytes()
        let watchdog = Watchdog(onHang: onHang)
        let total = formats.reduce(0) { $0 + cases[$1]! }
        var done = 0
        let clock = ContinuousClock()
        let started = clock.now
        defer { watchdog.stop() }
        outer: for format in formats {
            var counts = FuzzReport.Counts()
            let limit = format == .video ? limits.secondsPerVideoCase : limits.secondsPerCase
            for index in start..<(start + cases[format]!) {
                guard progress(
                    ProgressUpdate(phase: format.rawValue, completed: done, total: total, metrics: [.init("case", Double(index))]))
                else { break outer }
                var rng = FuzzRNG.forCase(seed: seed, format: format, index: index)
                let input = try corpus.mutatedCase(format, using: &rng)
                watchdog.arm(format: format, index: index, limit: limit)
                let caseStart = clock.now
                let result = outcome(of: input, format: format)
                let elapsed = caseStart.duration(to: clock.now)
                watchdog.disarm()
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
                counts.cases += 1
                counts.slowestSeconds = max(counts.slowestSeconds, seconds)
                switch result {
                case .accepted: counts.accepted += 1
                case let .rejected(type): counts.rejectedBy[type, default: 0] += 1
                case let .untyped(error):
                    report.failures.append(.init(format: format, index: index, kind: "untyped error", detail: error))
                }
                if seconds > limit {
                    report.failures.append(.init(format: format, index: index, kind: "hang", detail: String(format: "%.1f s > %.0f s", seconds, limit)))
                }
                let peak = peakResidentBytes()
                if peak - report.peakBytesBefore > limits.memoryBoundBytes,
                   !report.failures.contains(where: { $0.kind == "memory" }) {
                    report.failures.append(.init(
                        format: format, index: index, kind: "memory",
                        detail: "peak RSS rose by \((peak - report.peakBytesBefore) >> 20) MiB (bound \(limits.memoryBoundBytes >> 20) MiB)"))
                }
                done += 1
            }
            report.counts[format] = counts
        }
        let elapsed = started.duration(to: clock.now)
        report.seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        report.peakBytesAfter = peakResidentBytes()
        return report
    }

    /// The bytes of case `index` of `format` (to reproduce or inspect one case).
    public func caseInput(_ format: FuzzFormat, index: Int) throws -> FuzzInput {
        var rng = FuzzRNG.forCase(seed: seed, format: format, index: index)
        return try corpus.mutatedCase(format, using: &rng)
    }

    enum Outcome {
        case accepted
        case rejected(String)
        case untyped(String)

        var error: String? {
            switch self {
            case .accepted: nil
            case let .rejected(type): type
            case let .untyped(message): message
            }
        }
    }

    func outcome(of input: FuzzInput, format: FuzzFormat) -> Outcome {
        do {
            try corpus.load(input, format: format)
            return .accepted
        } catch {
            if let type = Self.typedErrorName(error) { return .rejected(type) }
            return .untyped("\(type(of: error)): \(error)")
        }
    }

    /// The project's own error types: each carries a message that names the file and the fault.
    static func typedErrorName(_ error: any Error) -> String? {
        switch error {
        case is SafeTensorsError: "SafeTensorsError"
        case is CheckpointError: "CheckpointError"
        case is ModuleError: "ModuleError"
        case is ScheduleError: "ScheduleError"
        case is ImageIOError: "ImageIOError"
        case is DatasetError: "DatasetError"
        case is VideoIOError: "VideoIOError"
        case is TorchError: "TorchError"
        default: nil
        }
    }
}

/// The corpus could not be built or a seed did not load: a fault of the fuzzer's set-up, not a finding.
public struct FuzzSetupError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The peak resident set size of this process, in bytes (`getrusage`).
func peakResidentBytes() -> Int {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return usage.ru_maxrss * 1024
}

/// Watches the running case from a thread of its own.
final class Watchdog: @unchecked Sendable {
    private let lock = NSLock()
    private var current: (format: FuzzFormat, index: Int, deadline: Date, limit: Double, reported: Bool)?
    private var stopped = false
    private let onHang: (@Sendable (FuzzFormat, Int, Double) -> Void)?

    init(onHang: (@Sendable (FuzzFormat, Int, Double) -> Void)?) {
        self.onHang = onHang
        guard onHang != nil else { return }
        let thread = Thread { [weak self] in
            while let self, !self.isStopped {
                self.check()
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        thread.start()
    }

    var isStopped: Bool { lock.withLock { stopped } }

    func arm(format: FuzzFormat, index: Int, limit: Double) {
        lock.withLock { current = (format, index, Date().addingTimeInterval(limit), limit, false) }
    }

    func disarm() { lock.withLock { current = nil } }
    func stop() { lock.withLock { stopped = true } }

    private func check() {
        let hung: (FuzzFormat, Int, Double)? = lock.withLock {
            guard let c = current, !c.reported, Date() > c.deadline else { return nil }
            current?.reported = true
            return (c.format, c.index, c.limit)
        }
        if let hung { onHang?(hung.0, hung.1, hung.2) }
    }
}
