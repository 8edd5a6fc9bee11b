import ArgumentParser
import ContextDiff
import Evaluation
import Foundation
import NN

#if canImport(Glibc)
import Glibc
#endif

/// `contextdiff experiment`: the paper's claims measured on the benchmark.
struct ExperimentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "experiment",
        abstract: "Reproduce the paper's claims on the benchmark with equal budgets and several seeds.",
        subcommands: [TextToImageExperimentCommand.self]
    )
}

/// Trains the baseline (r_φ ≡ 0) and ContextDiff with the same recipe, budget and seeds, evaluates
/// every run (final weights, intermediate checkpoints, guidance scales, samplers) and writes the
/// tables and plots. Each piece of work is a `contextdiff train` or `contextdiff evaluate --json`
/// child process whose output is kept; a rerun skips what is done, so a killed experiment
/// continues where it stopped.
struct TextToImageExperimentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "t2i",
        abstract: "Baseline vs ContextDiff on the compositional benchmark: Table 1, guidance trade-off, convergence, samplers.",
        discussion: """
            Writes into the output folder: runs/<method>-seed<k>/ (training runs), evals/*.json (one \
            `contextdiff evaluate --json` report per configuration), logs/*.log, and the results: \
            results.md (tables), summary.json, tradeoff.svg (alignment vs Fréchet distance over \
            guidance scales) and convergence.svg (alignment vs training steps).

            Needs the evaluation models (models/evaluator and models/clip, shipped with the \
            repository; see `contextdiff evaluator train` and `contextdiff clip train`).
            """
    )

    @Option(name: .shortAndLong, help: "Experiment folder.") var output = "experiments/t2i"
    @Option(help: "Training steps of every run (the equal budget).") var steps = 800
    @Option(help: "Checkpoint (and convergence point) every N steps.") var checkpointEvery = 200
    @Option(help: "Seeds, comma separated (one run per method and seed).") var seeds = "0,1,2"
    @Option(help: "Synthetic training images per run.") var datasetSize = 20000
    @Option(help: "Evaluation prompts per kind and split (×3 kinds ×2 splits images per configuration).")
    var count = 16
    @Option(help: "Prompts per kind and split for the intermediate checkpoints (convergence curve).")
    var convergenceCount = 8
    @Option(help: "Guidance scales of the trade-off curve, comma separated.") var guidanceScales = "1,2,3,5,8"
    @Option(help: "Guidance of the main table and of the sampler comparison.") var guidance = 3.0
    @Option(help: "How many of the seeds get the guidance sweep and the sampler comparison.") var sweepSeeds = 1
    @Option(help: "Child processes at a time.") var jobs = 2
    @Option(help: "Intra-op threads per child process.") var threads = 1
    @Flag(help: "Print the plan (every child command) and exit.") var dryRun = false
    @Flag(help: "Only rebuild the tables and plots from the evaluations already done.") var reportOnly = false

    func validate() throws {
        guard steps > 0, checkpointEvery > 0, checkpointEvery <= steps else {
            throw ValidationError("--steps and --checkpoint-every must be positive, with --checkpoint-every ≤ --steps")
        }
        guard count > 0, convergenceCount > 0, jobs > 0, threads > 0, datasetSize > 0 else {
            throw ValidationError("--count, --convergence-count, --jobs, --threads and --dataset-size must be positive")
        }
        guard guidance >= 0, guidance.isFinite else { throw ValidationError("--guidance must be a non-negative number") }
        _ = try seedList()
        _ = try scaleList()
        guard (1...(try seedList().count)).contains(sweepSeeds) else {
            throw ValidationError("--sweep-seeds must be between 1 and the number of seeds")
        }
    }

    func seedList() throws -> [UInt64] {
        let values = seeds.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let parsed = values.compactMap { UInt64($0) }
        guard !parsed.isEmpty, parsed.count == values.count, Set(parsed).count == parsed.count else {
            throw ValidationError("--seeds must be distinct non-negative integers, comma separated (got \(seeds))")
        }
        return parsed
    }

    func scaleList() throws -> [Double] {
        let values = guidanceScales.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let parsed = values.compactMap { Double($0) }.filter { $0 >= 0 && $0.isFinite }
        guard !parsed.isEmpty, parsed.count == values.count else {
            throw ValidationError("--guidance-scales must be non-negative numbers, comma separated (got \(guidanceScales))")
        }
        return parsed
    }

    // MARK: - The plan

    /// One child process: its arguments and the file that proves it finished.
    struct Job {
        var name: String
        var arguments: [String]
        /// For evaluations: where standard output (the JSON report) is kept.
        var report: URL?
        /// For training: the file that exists once the run is complete.
        var completion: URL

        var isDone: Bool { FileManager.default.fileExists(atPath: completion.path) }
    }

    enum Method: String, CaseIterable {
        case baseline, contextdiff

        var label: String { self == .baseline ? "baseline (r_φ ≡ 0)" : "ContextDiff" }
    }

    struct Run {
        var method: Method
        var seed: UInt64
        var name: String { "\(method.rawValue)-seed\(seed)" }
    }

    /// A sampling configuration evaluated on final weights.
    struct SamplerSetting: Hashable {
        var sampler: String
        var steps: Int
        var name: String { "\(sampler)-\(steps)" }
    }

    static let samplerSettings = [
        SamplerSetting(sampler: "ddpm", steps: 50), SamplerSetting(sampler: "ddpm", steps: 20),
        SamplerSetting(sampler: "ddim", steps: 50), SamplerSetting(sampler: "ddim", steps: 20),
    ]

    var root: URL { URL(fileURLWithPath: output) }
    func runFolder(_ run: Run) -> URL { root.appendingPathComponent("runs/\(run.name)") }
    func evalFile(_ run: Run, _ what: String) -> URL { root.appendingPathComponent("evals/\(run.name)-\(what).json") }
    func checkpointSteps() -> [Int] { Array(stride(from: checkpointEvery, through: steps, by: checkpointEvery)) }
    func guidanceName(_ w: Double) -> String { "guidance-" + String(format: "%g", w) }

    func runs() throws -> [Run] {
        try seedList().flatMap { seed in Method.allCases.map { Run(method: $0, seed: seed) } }
    }

    func trainingJobs() throws -> [Job] {
        try runs().map { run in
            var args = ["train", "-o", runFolder(run).path, "--steps", "\(steps)", "--seed", "\(run.seed)",
                        "--checkpoint-every", "\(checkpointEvery)", "--keep-checkpoints", "\(steps / checkpointEvery + 1)",
                        "--dataset-size", "\(datasetSize)", "--threads", "\(threads)", "--no-samples"]
            if run.method == .baseline { args.append("--baseline") }
            let last = runFolder(run).appendingPathComponent(String(format: "checkpoints/step-%07d/training_state.safetensors", steps))
            return Job(name: "train-\(run.name)", arguments: args, report: nil, completion: last)
        }
    }

    func evaluationJobs() throws -> [Job] {
        let sweep = Set(try seedList().prefix(sweepSeeds))
        var jobs: [Job] = []
        for run in try runs() {
            func evaluate(_ what: String, step: Int, count: Int, sampler: String = "ddim", samplingSteps: Int = 50,
                          guidance w: Double? = nil) {
                let file = evalFile(run, what)
                let args = ["evaluate", "--model", runFolder(run).path, "--checkpoint", "\(step)", "--split", "both",
                            "--num-samples", "\(count)", "--sampler", sampler, "--steps", "\(samplingSteps)",
                            "--guidance", String(format: "%g", w ?? guidance), "--threads", "\(threads)", "--json"]
                jobs.append(Job(name: "evaluate-\(run.name)-\(what)", arguments: args, report: file, completion: file))
            }
            evaluate("final", step: steps, count: count)
            for step in checkpointSteps() where step != steps {
                evaluate("step-\(step)", step: step, count: convergenceCount)
            }
            guard sweep.contains(run.seed) else { continue }
            for w in try scaleList() where w != guidance {
                evaluate(guidanceName(w), step: steps, count: count, guidance: w)
            }
            for s in Self.samplerSettings where s != SamplerSetting(sampler: "ddim", steps: 50) {
                evaluate(s.name, step: steps, count: count, sampler: s.sampler, samplingSteps: s.steps)
            }
        }
        return jobs
    }

    // MARK: - Running

    func run() throws {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let training = try trainingJobs(), evaluations = try evaluationJobs()
        if dryRun {
            for job in training + evaluations {
                print((job.isDone ? "[done] " : "") + ([binary.path] + job.arguments).joined(separator: " ")
                      + (job.report.map { " > \($0.path)" } ?? ""))
            }
            return
        }
        for folder in ["runs", "evals", "logs"] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        if !reportOnly {
            try checkEvaluationModels()
            try runAll(training, binary: binary, label: "train")
            try runAll(evaluations, binary: binary, label: "evaluate")
        }
        let summary = try ExperimentSummary(command: self)
        try summary.write(to: root, self)
        print(summary.markdown)
    }

    func checkEvaluationModels() throws {
        for (url, how) in [(defaultEvaluatorDirectory(), "contextdiff evaluator train"), (defaultClipDirectory(), "contextdiff clip train")] {
            guard FileManager.default.fileExists(atPath: url.appendingPathComponent(ModelFolder.configName).path) else {
                throw ValidationError("no evaluation model at \(url.path): run `\(how) -o \(url.path)` first")
            }
        }
    }

    /// Runs the jobs that are not done, `jobs` at a time. Every job runs even if another fails;
    /// failures are listed at the end (their logs name the cause).
    func runAll(_ all: [Job], binary: URL, label: String) throws {
        let pending = all.filter { !$0.isDone }
        guard !pending.isEmpty else { return }
        note("\(label): \(pending.count) of \(all.count) jobs to run (\(all.count - pending.count) done before), \(jobs) at a time; logs in \(root.appendingPathComponent("logs").path)")
        let bar = ProgressBar(total: pending.count, label: label)
        var queue = pending[...]
        var running: [(job: Job, process: Process, partial: URL?)] = []
        var failed: [String] = []
        var finished = 0
        var environment = ProcessInfo.processInfo.environment
        environment["OPENBLAS_NUM_THREADS"] = "1"  // OpenBLAS' own pool would contend with the other jobs
        environment["OMP_NUM_THREADS"] = "\(threads)"
        while !queue.isEmpty || !running.isEmpty {
            while running.count < jobs, let job = queue.popFirst() {
                let p = Process()
                p.executableURL = binary
                p.arguments = job.arguments
                p.environment = environment
                let log = root.appendingPathComponent("logs/\(job.name).log")
                FileManager.default.createFile(atPath: log.path, contents: nil)
                p.standardError = try FileHandle(forWritingTo: log)
                var partial: URL?
                if let report = job.report {
                    let tmp = report.appendingPathExtension("partial")
                    FileManager.default.createFile(atPath: tmp.path, contents: nil)
                    p.standardOutput = try FileHandle(forWritingTo: tmp)
                    partial = tmp
                } else {
                    p.standardOutput = p.standardError
                }
                try p.run()
                running.append((job, p, partial))
            }
            Thread.sleep(forTimeInterval: 0.5)
            var still: [(job: Job, process: Process, partial: URL?)] = []
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
                bar.update(finished, status: failed.isEmpty ? "" : "\(failed.count) failed")
            }
            running = still
        }
        if !failed.isEmpty {
            throw ExperimentError.jobsFailed(failed, logs: root.appendingPathComponent("logs").path)
        }
    }
}

enum ExperimentError: Error, CustomStringConvertible {
    case jobsFailed([String], logs: String)
    case missingReport(String)

    var description: String {
        switch self {
        case let .jobsFailed(names, logs):
            "\(names.count) job(s) failed: \(names.joined(separator: ", ")); see their logs in \(logs). Rerun the same command to retry them (finished jobs are kept)."
        case let .missingReport(path): "evaluation report missing or unreadable: \(path)"
        }
    }
}

// MARK: - Tables and plots

/// What one evaluation report says, in the numbers the tables use.
struct ExperimentMetrics: Codable {
    var seenAlignment: Double
    var heldOutAlignment: Double
    var position: Double
    var colorAttribution: Double
    var clipScore: Double
    var frechetSeen: Double
    var frechetHeldOut: Double
    var pixelTwoObject: Double
    var seconds: Double

    enum CodingKeys: String, CodingKey {
        case seenAlignment = "seen_alignment", heldOutAlignment = "heldout_alignment", position
        case colorAttribution = "color_attribution", clipScore = "clip_score", frechetSeen = "frechet_seen"
        case frechetHeldOut = "frechet_heldout", pixelTwoObject = "pixel_two_object", seconds
    }

    var alignment: Double { (seenAlignment + heldOutAlignment) / 2 }
    var frechet: Double { (frechetSeen + frechetHeldOut) / 2 }

    init(report url: URL) throws {
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
struct MeanStd: Codable {
    var mean: Double
    var std: Double
    var n: Int

    init(_ values: [Double]) {
        let n = values.count, mean = values.reduce(0, +) / Double(max(1, n))
        self.n = n
        self.mean = mean
        std = n > 1 ? (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n - 1)).squareRoot() : 0
    }

    func text(percent: Bool = false) -> String {
        let scale = percent ? 100.0 : 1.0
        return String(format: percent ? "%.1f ± %.1f" : "%.2f ± %.2f", mean * scale, std * scale)
    }
}

struct ExperimentSummary: Encodable {
    struct Row: Encodable {
        var method: String
        var seeds: [UInt64]
        var seenAlignment: MeanStd
        var heldOutAlignment: MeanStd
        var position: MeanStd
        var colorAttribution: MeanStd
        var clipScore: MeanStd
        var frechetSeen: MeanStd
        var frechetHeldOut: MeanStd
    }

    struct CurvePoint: Encodable {
        var x: Double
        var alignment: MeanStd
        var frechet: MeanStd?
    }

    var command: String
    var steps: Int
    var table: [Row]
    var guidance: [String: [CurvePoint]]
    var convergence: [String: [CurvePoint]]
    var samplers: [String: [String: ExperimentMetrics]]
    var markdown: String

    enum CodingKeys: String, CodingKey { case command, steps, table, guidance, convergence, samplers }

    init(command c: TextToImageExperimentCommand) throws {
        command = CommandLine.arguments.joined(separator: " ")
        steps = c.steps
        let runs = try c.runs()
        let sweepSeeds = Array(try c.seedList().prefix(c.sweepSeeds))
        func metrics(_ run: TextToImageExperimentCommand.Run, _ what: String) throws -> ExperimentMetrics {
            try ExperimentMetrics(report: c.evalFile(run, what))
        }
        var table: [Row] = [], guidance: [String: [CurvePoint]] = [:], convergence: [String: [CurvePoint]] = [:]
        var samplers: [String: [String: ExperimentMetrics]] = [:]
        for method in TextToImageExperimentCommand.Method.allCases {
            let mine = runs.filter { $0.method == method }
            let finals = try mine.map { try metrics($0, "final") }
            table.append(Row(
                method: method.label, seeds: mine.map(\.seed),
                seenAlignment: MeanStd(finals.map(\.seenAlignment)), heldOutAlignment: MeanStd(finals.map(\.heldOutAlignment)),
                position: MeanStd(finals.map(\.position)), colorAttribution: MeanStd(finals.map(\.colorAttribution)),
                clipScore: MeanStd(finals.map(\.clipScore)), frechetSeen: MeanStd(finals.map(\.frechetSeen)),
                frechetHeldOut: MeanStd(finals.map(\.frechetHeldOut))))
            let swept = mine.filter { sweepSeeds.contains($0.seed) }
            guidance[method.rawValue] = try c.scaleList().sorted().map { w in
                let reports = try swept.map { try metrics($0, w == c.guidance ? "final" : c.guidanceName(w)) }
                return CurvePoint(x: w, alignment: MeanStd(reports.map(\.alignment)), frechet: MeanStd(reports.map(\.frechet)))
            }
            convergence[method.rawValue] = try c.checkpointSteps().map { step in
                let reports = try mine.map { try metrics($0, step == c.steps ? "final" : "step-\(step)") }
                return CurvePoint(x: Double(step), alignment: MeanStd(reports.map(\.alignment)), frechet: nil)
            }
            var bySampler: [String: ExperimentMetrics] = [:]
            for s in TextToImageExperimentCommand.samplerSettings {
                let name = s == .init(sampler: "ddim", steps: 50) ? "final" : s.name
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

    func render(_ c: TextToImageExperimentCommand) -> String {
        var md = "Equal budget: \(c.steps) steps of batch 32 per run, seeds \(c.seeds); final weights (EMA) sampled with DDIM 50, guidance \(String(format: "%g", c.guidance)); \(c.count) prompts per kind (single object, left/right pair, above/below pair) per split. Alignment = all attributes and the relation right, read by the evaluator; Fréchet distance of evaluator features against real renders (lower is better).\n\n"
        md += "| method | alignment, seen (%) | alignment, held-out (%) | position (%) | color binding (%) | CLIP score | Fréchet, seen | Fréchet, held-out |\n"
        md += "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        for r in table {
            md += "| \(r.method) | \(r.seenAlignment.text(percent: true)) | \(r.heldOutAlignment.text(percent: true)) | \(r.position.text(percent: true)) | \(r.colorAttribution.text(percent: true)) | \(r.clipScore.text()) | \(r.frechetSeen.text()) | \(r.frechetHeldOut.text()) |\n"
        }
        md += "\nGuidance sweep (seeds \(c.seedText(c.sweepSeeds))): alignment (mean of seen and held-out) / Fréchet distance (mean of both)\n\n"
        md += "| method | " + ((try? c.scaleList().sorted()) ?? []).map { "w = \(String(format: "%g", $0))" }.joined(separator: " | ") + " |\n"
        md += "| --- |" + String(repeating: " --- |", count: (try? c.scaleList().count) ?? 0) + "\n"
        for m in TextToImageExperimentCommand.Method.allCases {
            let points = guidance[m.rawValue] ?? []
            md += "| \(m.label) | " + points.map { String(format: "%.1f%% / %.2f", 100 * $0.alignment.mean, $0.frechet?.mean ?? .nan) }.joined(separator: " | ") + " |\n"
        }
        md += "\nConvergence: alignment in % (mean of seen and held-out, \(c.convergenceCount) prompts per kind and split at intermediate steps, \(c.count) at the last) over \(c.seedText(nil)) seeds\n\n"
        md += "| method | " + c.checkpointSteps().map { "step \($0)" }.joined(separator: " | ") + " |\n"
        md += "| --- |" + String(repeating: " --- |", count: c.checkpointSteps().count) + "\n"
        for m in TextToImageExperimentCommand.Method.allCases {
            md += "| \(m.label) | " + (convergence[m.rawValue] ?? []).map { $0.alignment.text(percent: true) }.joined(separator: " | ") + " |\n"
        }
        md += "\nSamplers (seed \(c.seedText(1)), guidance \(String(format: "%g", c.guidance))): alignment / CLIP score / Fréchet distance\n\n"
        md += "| method | " + TextToImageExperimentCommand.samplerSettings.map { "\($0.sampler.uppercased()) \($0.steps)" }.joined(separator: " | ") + " |\n"
        md += "| --- |" + String(repeating: " --- |", count: TextToImageExperimentCommand.samplerSettings.count) + "\n"
        for m in TextToImageExperimentCommand.Method.allCases {
            md += "| \(m.label) | " + TextToImageExperimentCommand.samplerSettings.map { s in
                guard let x = samplers[m.rawValue]?[s.name] else { return "–" }
                return String(format: "%.1f%% / %.1f / %.2f", 100 * x.alignment, x.clipScore, x.frechet)
            }.joined(separator: " | ") + " |\n"
        }
        return md
    }

    func write(to root: URL, _ c: TextToImageExperimentCommand) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // A configuration without a number (e.g. no Fréchet reference) is written as "nan".
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try encoder.encode(self).write(to: root.appendingPathComponent("summary.json"), options: .atomic)
        try Data(markdown.utf8).write(to: root.appendingPathComponent("results.md"), options: .atomic)
        let colors = ["baseline": "#1f77b4", "contextdiff": "#d62728"]
        let label = ["baseline": "baseline (r_φ ≡ 0)", "contextdiff": "ContextDiff"]
        try SVGLineChart(
            title: "Guidance trade-off: alignment vs Fréchet distance (w = \(c.guidanceScales) along each line)", xLabel: "Fréchet distance (evaluator features)",
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

extension TextToImageExperimentCommand {
    /// The first `n` seeds (all when nil), as text.
    func seedText(_ n: Int?) -> String {
        let all = (try? seedList()) ?? []
        return (n.map { Array(all.prefix($0)) } ?? all).map(String.init).joined(separator: ", ")
    }
}
