import ArgumentParser
import ContextDiff
import Evaluation
import Foundation
import NN
import Workflows

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

    @Option(help: "Sampler comparison on final weights, SAMPLER:STEPS comma separated (DDIM 50 is the main table's).")
    var samplers = "ddpm:50,ddpm:20,ddim:50,ddim:20,dpmpp:15,dpmpp:20"

    /// The experiment these flags describe.
    func experiment() throws -> TextToImageExperiment {
        var e = TextToImageExperiment(root: URL(fileURLWithPath: output))
        e.steps = steps
        e.checkpointEvery = checkpointEvery
        let seedValues = seeds.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        e.seeds = seedValues.compactMap { UInt64($0) }
        guard e.seeds.count == seedValues.count, !e.seeds.isEmpty else {
            throw ValidationError("--seeds must be distinct non-negative integers, comma separated (got \(seeds))")
        }
        let scaleValues = guidanceScales.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        e.guidanceScales = scaleValues.compactMap { Double($0) }
        guard e.guidanceScales.count == scaleValues.count else {
            throw ValidationError("--guidance-scales must be non-negative numbers, comma separated (got \(guidanceScales))")
        }
        e.datasetSize = datasetSize
        e.count = count
        e.convergenceCount = convergenceCount
        e.guidance = guidance
        e.sweepSeeds = sweepSeeds
        e.threads = threads
        e.samplerSettings = try TextToImageExperiment.SamplerSetting.parse(samplers)
        do { try e.validate() } catch { throw ValidationError(String(describing: error)) }
        return e
    }

    func validate() throws {
        guard jobs > 0 else { throw ValidationError("--jobs must be positive") }
        _ = try experiment()
    }

    func run() throws {
        let e = try experiment()
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let training = e.trainingJobs(), evaluations = e.evaluationJobs()
        if dryRun {
            for job in training + evaluations {
                print((job.isDone ? "[done] " : "") + ([binary.path] + job.arguments).joined(separator: " ")
                      + (job.report.map { " > \($0.path)" } ?? ""))
            }
            return
        }
        for folder in ["runs", "evals", "logs"] {
            try FileManager.default.createDirectory(at: e.root.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        if !reportOnly {
            try checkEvaluationModels()
            var environment = ProcessInfo.processInfo.environment
            environment["OPENBLAS_NUM_THREADS"] = "1"  // OpenBLAS' own pool would contend with the other jobs
            environment["OMP_NUM_THREADS"] = "\(threads)"
            let runner = JobRunner(binary: binary, logs: e.root.appendingPathComponent("logs"), parallel: jobs, environment: environment)
            for (all, label) in [(training, "train"), (evaluations, "evaluate")] {
                let pending = all.filter { !$0.isDone }.count
                if pending > 0 {
                    note("\(label): \(pending) of \(all.count) jobs to run (\(all.count - pending) done before), \(jobs) at a time; logs in \(runner.logs.path)")
                }
                let display = ProgressDisplay()
                try runner.run(all, label: label) { display.update($0) }
            }
        }
        let summary = try ExperimentSummary(e, command: CommandLine.arguments.joined(separator: " "))
        try summary.write(to: e.root, e)
        print(summary.markdown)
    }

    func checkEvaluationModels() throws {
        for (url, how) in [(defaultEvaluatorDirectory(), "contextdiff evaluator train"), (EvaluationModels.clipURL(), "contextdiff clip train")] {
            guard FileManager.default.fileExists(atPath: url.appendingPathComponent(ModelFolder.configName).path) else {
                throw ValidationError("no evaluation model at \(url.path): run `\(how) -o \(url.path)` first")
            }
        }
    }
}
