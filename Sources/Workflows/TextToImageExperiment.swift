import ContextDiff
import Evaluation
import Foundation
import Torch

/// Baseline (r_φ ≡ 0) vs ContextDiff on the compositional benchmark with equal budgets and
/// several seeds: the plan (every `contextdiff train` / `contextdiff evaluate --json` child
/// command and the file that proves it done), and the tables and plots made from the reports.
/// `contextdiff experiment t2i` is this plus flags and a ``JobRunner``.
public struct TextToImageExperiment: Sendable {
    /// Where everything goes: runs/, evals/, logs/, results.md, summary.json, *.svg.
    public var root: URL
    /// Training steps of every run (the equal budget).
    public var steps = 800
    public var checkpointEvery = 200
    /// One run per method and seed.
    public var seeds: [UInt64] = [0, 1, 2]
    public var datasetSize = 20000
    /// Evaluation prompts per kind and split.
    public var count = 16
    /// Prompts per kind and split at intermediate checkpoints.
    public var convergenceCount = 8
    public var guidanceScales: [Double] = [1, 2, 3, 5, 8]
    /// Guidance of the main table and of the sampler comparison.
    public var guidance = 3.0
    /// How many of the seeds get the guidance sweep and the sampler comparison.
    public var sweepSeeds = 1
    /// Intra-op threads per child process.
    public var threads = 1
    /// The sampler comparison (on final weights; DDIM 50 is the main table's setting).
    public var samplerSettings = SamplerSetting.defaults

    public init(root: URL) { self.root = root }

    public func validate() throws {
        guard steps > 0, checkpointEvery > 0, checkpointEvery <= steps else {
            throw ExperimentError.invalid("steps and checkpoint_every must be positive, with checkpoint_every ≤ steps")
        }
        guard count > 0, convergenceCount > 0, threads > 0, datasetSize > 0 else {
            throw ExperimentError.invalid("count, convergence_count, threads and dataset_size must be positive")
        }
        guard guidance >= 0, guidance.isFinite else { throw ExperimentError.invalid("guidance must be a non-negative number") }
        guard !seeds.isEmpty, Set(seeds).count == seeds.count else { throw ExperimentError.invalid("seeds must be distinct") }
        guard !guidanceScales.isEmpty, guidanceScales.allSatisfy({ $0 >= 0 && $0.isFinite }) else {
            throw ExperimentError.invalid("guidance scales must be non-negative numbers")
        }
        guard (1...seeds.count).contains(sweepSeeds) else {
            throw ExperimentError.invalid("sweep_seeds must be between 1 and the number of seeds")
        }
        for s in samplerSettings {
            guard SamplerKind(rawValue: s.sampler) != nil, s.steps > 0 else {
                throw ExperimentError.invalid("sampler setting \(s.name): unknown sampler or non-positive steps")
            }
        }
    }

    /// One child process: its arguments and the file that proves it finished.
    public struct Job: Sendable {
        public var name: String
        public var arguments: [String]
        /// For evaluations: where standard output (the JSON report) is kept.
        public var report: URL?
        /// For training: the file that exists once the run is complete.
        public var completion: URL

        public var isDone: Bool { FileManager.default.fileExists(atPath: completion.path) }

        public init(name: String, arguments: [String], report: URL?, completion: URL) {
            self.name = name
            self.arguments = arguments
            self.report = report
            self.completion = completion
        }
    }

    public enum Method: String, CaseIterable, Sendable {
        case baseline, contextdiff

        public var label: String { self == .baseline ? "baseline (r_φ ≡ 0)" : "ContextDiff" }
    }

    public struct Run: Sendable {
        public var method: Method
        public var seed: UInt64
        public var name: String { "\(method.rawValue)-seed\(seed)" }
    }

    /// A sampling configuration evaluated on final weights.
    public struct SamplerSetting: Hashable, Sendable {
        public var sampler: String
        public var steps: Int
        public var name: String { "\(sampler)-\(steps)" }

        public init(sampler: String, steps: Int) {
            self.sampler = sampler
            self.steps = steps
        }

        /// `ddim:50`-style text, comma separated.
        public static func parse(_ text: String) throws -> [SamplerSetting] {
            try text.split(separator: ",").map { item in
                let parts = item.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2, let steps = Int(parts[1]), steps > 0, SamplerKind(rawValue: parts[0]) != nil else {
                    throw ExperimentError.invalid("sampler setting '\(item)' is not SAMPLER:STEPS with a registered sampler")
                }
                return SamplerSetting(sampler: parts[0], steps: steps)
            }
        }

        /// The main table's setting.
        public static let reference = SamplerSetting(sampler: "ddim", steps: 50)
        public static let defaults = [
            SamplerSetting(sampler: "ddpm", steps: 50), SamplerSetting(sampler: "ddpm", steps: 20),
            SamplerSetting(sampler: "ddim", steps: 50), SamplerSetting(sampler: "ddim", steps: 20),
            SamplerSetting(sampler: "dpmpp", steps: 15), SamplerSetting(sampler: "dpmpp", steps: 20),
        ]
    }

    public func runFolder(_ run: Run) -> RunFolder { RunFolder(root.appendingPathComponent("runs/\(run.name)")) }
    public func evalFile(_ run: Run, _ what: String) -> URL { root.appendingPathComponent("evals/\(run.name)-\(what).json") }
    public func checkpointSteps() -> [Int] { Array(stride(from: checkpointEvery, through: steps, by: checkpointEvery)) }
    public func guidanceName(_ w: Double) -> String { "guidance-" + String(format: "%g", w) }

    public func runs() -> [Run] {
        seeds.flatMap { seed in Method.allCases.map { Run(method: $0, seed: seed) } }
    }

    public func trainingJobs() -> [Job] {
        runs().map { run in
            var args = ["train", "-o", runFolder(run).url.path, "--steps", "\(steps)", "--seed", "\(run.seed)",
                        "--checkpoint-every", "\(checkpointEvery)", "--keep-checkpoints", "\(steps / checkpointEvery + 1)",
                        "--dataset-size", "\(datasetSize)", "--threads", "\(threads)", "--no-samples"]
            if run.method == .baseline { args.append("--baseline") }
            return Job(name: "train-\(run.name)", arguments: args, report: nil, completion: runFolder(run).trainingState(step: steps))
        }
    }

    public func evaluationJobs() -> [Job] {
        let sweep = Set(seeds.prefix(sweepSeeds))
        var jobs: [Job] = []
        for run in runs() {
            func evaluate(_ what: String, step: Int, count: Int, sampler: String = "ddim", samplingSteps: Int = 50,
                          guidance w: Double? = nil) {
                let file = evalFile(run, what)
                let args = ["evaluate", "--model", runFolder(run).url.path, "--checkpoint", "\(step)", "--split", "both",
                            "--num-samples", "\(count)", "--sampler", sampler, "--steps", "\(samplingSteps)",
                            "--guidance", String(format: "%g", w ?? guidance), "--threads", "\(threads)", "--json"]
                jobs.append(Job(name: "evaluate-\(run.name)-\(what)", arguments: args, report: file, completion: file))
            }
            evaluate("final", step: steps, count: count)
            for step in checkpointSteps() where step != steps {
                evaluate("step-\(step)", step: step, count: convergenceCount)
            }
            guard sweep.contains(run.seed) else { continue }
            for w in guidanceScales where w != guidance {
                evaluate(guidanceName(w), step: steps, count: count, guidance: w)
            }
            for s in samplerSettings where s != .reference {
                evaluate(s.name, step: steps, count: count, sampler: s.sampler, samplingSteps: s.steps)
            }
        }
        return jobs
    }

    /// The first `n` seeds (all when nil), as text.
    func seedText(_ n: Int?) -> String {
        (n.map { Array(seeds.prefix($0)) } ?? seeds).map(String.init).joined(separator: ", ")
    }
}

/// Runs child processes of one executable, some at a time, each with its own log; a job whose
/// report is kept writes it atomically (a `.partial` file renamed on success). Every job runs
/// even if another fails; the failures are listed at the end.
public struct JobRunner {
    public var binary: URL
    public var logs: URL
    public var parallel: Int
    public var environment: [String: String]

    public init(binary: URL, logs: URL, parallel: Int, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.binary = binary
        self.logs = logs
        self.parallel = max(1, parallel)
        self.environment = environment
    }

    /// Runs the jobs that are not done. `progress` (phase `label`) counts finished jobs and
    /// reports the metric "failed".
    public func run(_ all: [TextToImageExperiment.Job], label: String, progress: ProgressHandler = { _ in true }) throws {
        let pending = all.filter { !$0.isDone }
        guard !pending.isEmpty else { return }
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        var queue = pending[...]
        var running: [(job: TextToImageExperiment.Job, process: Process, partial: URL?)] = []
        var failed: [String] = []
        var finished = 0
        while !queue.isEmpty || !running.isEmpty {
            while running.count < parallel, let job = queue.popFirst() {
                let p = Process()
                p.executableURL = binary
                p.arguments = job.arguments
                p.environment = environment
                let log = logs.appendingPathComponent("\(job.name).log")
                _ = FileManager.default.createFile(atPath: log.path, contents: nil)
                p.standardError = try FileHandle(forWritingTo: log)
                var partial: URL?
                if let report = job.report {
                    let tmp = report.appendingPathExtension("partial")
                    try FileManager.default.createDirectory(at: report.deletingLastPathComponent(), withIntermediateDirectories: true)
                    _ = FileManager.default.createFile(atPath: tmp.path, contents: nil)
                    p.standardOutput = try FileHandle(forWritingTo: tmp)
                    partial = tmp
                } else {
                    p.standardOutput = p.standardError
                }
                try p.run()
                running.append((job, p, partial))
            }
            Thread.sleep(forTimeInterval: 0.1)
            var still: [(job: TextToImageExperiment.Job, process: Process, partial: URL?)] = []
            for entry in running {
                if entry.process.isRunning { still.append(entry); continue }
                finished += 1
                if entry.process.terminationStatus == 0, entry.process.terminationReason == .exit {
                    if let partial = entry.partial, let report = entry.job.report {
                        _ = try? FileManager.default.removeItem(at: report)
                        try FileManager.default.moveItem(at: partial, to: report)
                    }
                } else {
                    failed.append(entry.job.name)
                    if let partial = entry.partial { try? FileManager.default.removeItem(at: partial) }
                }
                _ = progress(
                    ProgressUpdate(phase: label, completed: finished, total: pending.count, metrics: [.init("failed", Double(failed.count))]))
            }
            running = still
        }
        if !failed.isEmpty {
            throw ExperimentError.jobsFailed(failed, logs: logs.path)
        }
    }
}

public enum ExperimentError: Error, CustomStringConvertible, Equatable {
    case invalid(String)
    case jobsFailed([String], logs: String)
    case missingReport(String)

    public var description: String {
        switch self {
        case let .invalid(m): m
        case let .jobsFailed(names, logs):
            "\(names.count) job(s) failed: \(names.joined(separator: ", ")); see their logs in \(logs). Rerun the same command to retry them (finished jobs are kept)."
        case let .missingReport(path): "evaluation report missing or unreadable: \(path)"
        }
    }
}


/// What one evaluation report says, in the numbers the tables use.
public struct ExperimentMetrics: Codable, Sendable {
    public var seenAlignment: Double
    public var heldOutAlignment: Double
    public var position: Double
    public var colorAttribution: Double
    public var clipScore: Double
    public var frechetSeen: Double
    public var frechetHeldOut: Double
    public var pixelTwoObject: Double
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case seenAlignment = "seen_alignment", heldOutAlignment = "heldout_alignment", position
        case colorAttribution = "color_attribution", clipScore = "clip_score", frechetSeen = "frechet_seen"
        case frechetHeldOut = "frechet_heldout", pixelTwoObject = "pixel_two_object", seconds
    }

    public var alignment: Double { (seenAlignment + heldOutAlignment) / 2 }
    public var frechet: Double { (frechetSeen + frechetHeldOut) / 2 }

    public init(report url: URL) throws {
        guard let data = try? Data(contentsOf: url), let report = try? JSONDecoder().decode(EvaluationReport.self, from: data) else {
            throw ExperimentError.missingReport(url.path)
        }
        func set(_ name: String) throws -> PromptSetEvaluation {
            guard let s = report.sets.first(where: { $0.name == name }) else { throw ExperimentError.missingReport(url.path + " (no \(name) set)") }
            return s
        }
        let seen = try set("seen"), held = try set("heldout")
        func tally(_ c: AlignmentCategory) -> Double {
            let a = seen.alignment?.categories[c.rawValue] ?? Tally(), b = held.alignment?.categories[c.rawValue] ?? Tally()
            return Double(a.correct + b.correct) / Double(max(1, a.total + b.total))
        }
        seenAlignment = seen.alignment?.accuracy ?? 0
        heldOutAlignment = held.alignment?.accuracy ?? 0
        position = tally(.position)
        colorAttribution = tally(.colorAttribution)
        clipScore = (seen.clipScore * Double(seen.images) + held.clipScore * Double(held.images)) / Double(max(1, seen.images + held.images))
        frechetSeen = seen.frechetDistance ?? .nan
        frechetHeldOut = held.frechetDistance ?? .nan
        let two = [seen.pixel?.twoObjectAccuracy, held.pixel?.twoObjectAccuracy].compactMap { $0 }
        pixelTwoObject = two.isEmpty ? .nan : two.reduce(0, +) / Double(two.count)
        seconds = report.seconds
    }
}

/// Mean and sample standard deviation.
public struct MeanStd: Codable, Sendable {
    public var mean: Double
    public var std: Double
    public var n: Int

    public init(_ values: [Double]) {
        let n = values.count, mean = values.reduce(0, +) / Double(max(1, n))
        self.n = n
        self.mean = mean
        std = n > 1 ? (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n - 1)).squareRoot() : 0
    }

    public func text(percent: Bool = false) -> String {
        let scale = percent ? 100.0 : 1.0
        return String(format: percent ? "%.1f ± %.1f" : "%.2f ± %.2f", mean * scale, std * scale)
    }
}

public struct ExperimentSummary: Encodable {
    public struct Row: Encodable {
        public var method: String
        public var seeds: [UInt64]
        public var seenAlignment: MeanStd
        public var heldOutAlignment: MeanStd
        public var position: MeanStd
        public var colorAttribution: MeanStd
        public var clipScore: MeanStd
        public var frechetSeen: MeanStd
        public var frechetHeldOut: MeanStd

        enum CodingKeys: String, CodingKey {
            case method, seeds, position
            case seenAlignment = "seen_alignment", heldOutAlignment = "held_out_alignment", colorAttribution = "color_attribution"
            case clipScore = "clip_score", frechetSeen = "frechet_seen", frechetHeldOut = "frechet_held_out"
        }
    }

    public struct CurvePoint: Encodable {
        public var x: Double
        public var alignment: MeanStd
        public var frechet: MeanStd?
    }

    public var command: String
    public var steps: Int
    public var table: [Row]
    public var guidance: [String: [CurvePoint]]
    public var convergence: [String: [CurvePoint]]
    public var samplers: [String: [String: ExperimentMetrics]]
    public var markdown: String

    enum CodingKeys: String, CodingKey { case command, steps, table, guidance, convergence, samplers }

    public init(_ c: TextToImageExperiment, command: String) throws {
        self.command = command
        steps = c.steps
        let runs = c.runs()
        let sweepSeeds = Array(c.seeds.prefix(c.sweepSeeds))
        func metrics(_ run: TextToImageExperiment.Run, _ what: String) throws -> ExperimentMetrics {
            try ExperimentMetrics(report: c.evalFile(run, what))
        }
        var table: [Row] = [], guidance: [String: [CurvePoint]] = [:], convergence: [String: [CurvePoint]] = [:]
        var samplers: [String: [String: ExperimentMetrics]] = [:]
        for method in TextToImageExperiment.Method.allCases {
            let mine = runs.filter { $0.method == method }
            let finals = try mine.map { try metrics($0, "final") }
            table.append(Row(
                method: method.label, seeds: mine.map(\.seed),
                seenAlignment: MeanStd(finals.map(\.seenAlignment)), heldOutAlignment: MeanStd(finals.map(\.heldOutAlignment)),
                position: MeanStd(finals.map(\.position)), colorAttribution: MeanStd(finals.map(\.colorAttribution)),
                clipScore: MeanStd(finals.map(\.clipScore)), frechetSeen: MeanStd(finals.map(\.frechetSeen)),
                frechetHeldOut: MeanStd(finals.map(\.frechetHeldOut))))
            let swept = mine.filter { sweepSeeds.contains($0.seed) }
            guidance[method.rawValue] = try c.guidanceScales.sorted().map { w in
                let reports = try swept.map { try metrics($0, w == c.guidance ? "final" : c.guidanceName(w)) }
                return CurvePoint(x: w, alignment: MeanStd(reports.map(\.alignment)), frechet: MeanStd(reports.map(\.frechet)))
            }
            convergence[method.rawValue] = try c.checkpointSteps().map { step in
                let reports = try mine.map { try metrics($0, step == c.steps ? "final" : "step-\(step)") }
                return CurvePoint(x: Double(step), alignment: MeanStd(reports.map(\.alignment)), frechet: nil)
            }
            var bySampler: [String: ExperimentMetrics] = [:]
            for s in c.samplerSettings {
                let name = s == .reference ? "final" : s.name
                // The sampler comparison uses the first sweep seed.
                if let run = swept.first { bySampler[s.name] = try metrics(run, name) }
            }
            samplers[method.rawValue] = bySampler
        }
        self.table = table
        self.guidance = guidance
        self.convergence = convergence
        self.samplers = samplers
        markdown = ""
        markdown = render(c)
    }

    func render(_ c: TextToImageExperiment) -> String {
        var md = "Equal budget: \(c.steps) steps of batch 32 per run, seeds \(c.seeds.map(String.init).joined(separator: ",")); final weights (EMA) sampled with DDIM 50, guidance \(String(format: "%g", c.guidance)); \(c.count) prompts per kind (single object, left/right pair, above/below pair) per split. Alignment = all attributes and the relation right, read by the evaluator; Fréchet distance of evaluator features against real renders (lower is better).\n\n"
        md += "| method | alignment, seen (%) | alignment, held-out (%) | position (%) | color binding (%) | CLIP score | Fréchet, seen | Fréchet, held-out |\n"
        md += "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        for r in table {
            md += "| \(r.method) | \(r.seenAlignment.text(percent: true)) | \(r.heldOutAlignment.text(percent: true)) | \(r.position.text(percent: true)) | \(r.colorAttribution.text(percent: true)) | \(r.clipScore.text()) | \(r.frechetSeen.text()) | \(r.frechetHeldOut.text()) |\n"
        }
        md += "\nGuidance sweep (seeds \(c.seedText(c.sweepSeeds))): alignment (mean of seen and held-out) / Fréchet distance (mean of both)\n\n"
        md += "| method | " + c.guidanceScales.sorted().map { "w = \(String(format: "%g", $0))" }.joined(separator: " | ") + " |\n"
        md += "| --- |" + String(repeating: " --- |", count: c.guidanceScales.count) + "\n"
        for m in TextToImageExperiment.Method.allCases {
            let points = guidance[m.rawValue] ?? []
            md += "| \(m.label) | " + points.map { String(format: "%.1f%% / %.2f", 100 * $0.alignment.mean, $0.frechet?.mean ?? .nan) }.joined(separator: " | ") + " |\n"
        }
        md += "\nConvergence: alignment in % (mean of seen and held-out, \(c.convergenceCount) prompts per kind and split at intermediate steps, \(c.count) at the last) over \(c.seedText(nil)) seeds\n\n"
        md += "| method | " + c.checkpointSteps().map { "step \($0)" }.joined(separator: " | ") + " |\n"
        md += "| --- |" + String(repeating: " --- |", count: c.checkpointSteps().count) + "\n"
        for m in TextToImageExperiment.Method.allCases {
            md += "| \(m.label) | " + (convergence[m.rawValue] ?? []).map { $0.alignment.text(percent: true) }.joined(separator: " | ") + " |\n"
        }
        md += "\nSamplers (seed \(c.seedText(1)), guidance \(String(format: "%g", c.guidance))): alignment / CLIP score / Fréchet distance\n\n"
        md += "| method | " + c.samplerSettings.map { "\($0.sampler.uppercased()) \($0.steps)" }.joined(separator: " | ") + " |\n"
        md += "| --- |" + String(repeating: " --- |", count: c.samplerSettings.count) + "\n"
        for m in TextToImageExperiment.Method.allCases {
            md += "| \(m.label) | " + c.samplerSettings.map { s in
                guard let x = samplers[m.rawValue]?[s.name] else { return "–" }
                return String(format: "%.1f%% / %.1f / %.2f", 100 * x.alignment, x.clipScore, x.frechet)
            }.joined(separator: " | ") + " |\n"
        }
        return md
    }

    public func write(to root: URL, _ c: TextToImageExperiment) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // A configuration without a number (e.g. no Fréchet reference) is written as "nan".
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try encoder.encode(self).write(to: root.appendingPathComponent("summary.json"), options: .atomic)
        try Data(markdown.utf8).write(to: root.appendingPathComponent("results.md"), options: .atomic)
        let colors = ["baseline": "#1f77b4", "contextdiff": "#d62728"]
        let label = ["baseline": "baseline (r_φ ≡ 0)", "contextdiff": "ContextDiff"]
        try SVGLineChart(
            title: "Guidance trade-off: alignment vs Fréchet distance (w = \(c.guidanceScales.map { String(format: "%g", $0) }.joined(separator: ",")) along each line)", xLabel: "Fréchet distance (evaluator features)",
            yLabel: "alignment accuracy",
            series: guidance.keys.sorted().map { key in
                .init(name: label[key] ?? key, points: (guidance[key] ?? []).map { ($0.frechet?.mean ?? .nan, $0.alignment.mean) },
                      color: colors[key] ?? "#000000")
            }
        ).write(to: root.appendingPathComponent("tradeoff.svg"))
        try SVGLineChart(
            title: "Convergence: alignment vs training steps (mean over seeds)", xLabel: "training step", yLabel: "alignment accuracy",
            series: convergence.keys.sorted().map { key in
                .init(name: label[key] ?? key, points: (convergence[key] ?? []).map { ($0.x, $0.alignment.mean) },
                      color: colors[key] ?? "#000000")
            }
        ).write(to: root.appendingPathComponent("convergence.svg"))
    }
}
