import Foundation
import Testing
import Workflows

@Suite("Workflows: experiments")
struct ExperimentPlanTests {
    func scratch() -> URL { FileManager.default.temporaryDirectory.appendingPathComponent("exp-\(UUID().uuidString)") }

    /// The plan: one training run per method and seed; per run the final and intermediate
    /// evaluations; the sweep seeds add guidance scales and the sampler comparison, which
    /// includes DPM-Solver++ by default.
    @Test func planCoversMethodsSeedsGuidanceAndSolvers() throws {
        var e = TextToImageExperiment(root: scratch())
        e.steps = 6
        e.checkpointEvery = 2
        e.seeds = [0, 1]
        e.guidanceScales = [1, 3]
        try e.validate()
        #expect(e.trainingJobs().count == 4)
        #expect(e.trainingJobs().filter { $0.arguments.contains("--baseline") }.count == 2)
        let evaluations = e.evaluationJobs()
        // 4 runs × (final + 2 intermediate) + 2 sweep runs × (1 guidance + 5 samplers).
        #expect(evaluations.count == 4 * 3 + 2 * (1 + 5))
        let dpm = evaluations.filter { $0.arguments.contains("dpmpp") }
        #expect(dpm.count == 4)
        #expect(dpm.allSatisfy { $0.report?.lastPathComponent.hasPrefix("contextdiff-seed0-dpmpp") == true || $0.report?.lastPathComponent.hasPrefix("baseline-seed0-dpmpp") == true })
        #expect(try TextToImageExperiment.SamplerSetting.parse("dpmpp:15, ddim:50") == [.init(sampler: "dpmpp", steps: 15), .reference])
        #expect(throws: ExperimentError.self) { try TextToImageExperiment.SamplerSetting.parse("plms:10") }
        e.sweepSeeds = 3
        #expect(throws: ExperimentError.self) { try e.validate() }
    }

    /// Jobs run some at a time; a finished report is renamed into place, a failed job leaves
    /// none and is named in the error; finished jobs are not run again.
    @Test func jobRunnerKeepsReportsAtomicAndRunsEachJobOnce() throws {
        let root = scratch()
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let counter = root.appendingPathComponent("runs.txt")
        func job(_ name: String, _ script: String) -> TextToImageExperiment.Job {
            let report = root.appendingPathComponent("\(name).json")
            return .init(
                name: name, arguments: ["-c", "echo \(name) >> \(counter.path); \(script)"], report: report, completion: report)
        }
        let jobs = [job("a", "echo '{\"ok\": 1}'"), job("b", "echo partial; exit 3"), job("c", "echo '{\"ok\": 3}'")]
        let runner = JobRunner(binary: URL(fileURLWithPath: "/bin/sh"), logs: root.appendingPathComponent("logs"), parallel: 2)
        var last = 0
        #expect(throws: ExperimentError.jobsFailed(["b"], logs: runner.logs.path)) {
            try runner.run(jobs, label: "test") { p in
                last = p.completed
                return true
            }
        }
        #expect(last == 3)
        #expect(try String(contentsOf: root.appendingPathComponent("a.json"), encoding: .utf8) == "{\"ok\": 1}\n")
        #expect(!FileManager.default.fileExists(atPath: root.appendingPathComponent("b.json").path))
        #expect(!FileManager.default.fileExists(atPath: root.appendingPathComponent("b.json.partial").path))
        // Rerun: only the failed job runs again.
        try? runner.run(jobs, label: "test")
        let lines = try String(contentsOf: counter, encoding: .utf8).split(separator: "\n").sorted()
        #expect(lines == ["a", "b", "b", "c"])
    }
}
