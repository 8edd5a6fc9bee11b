import Foundation
import Testing

/// An `evaluate --json` report with chosen numbers (the fields `experiment t2i` reads).
private func report(seenCorrect: Int, heldCorrect: Int, images: Int, clip: Double, frechet: Double) -> [String: Any] {
    func set(_ name: String, correct: Int) -> [String: Any] {
        [
            "name": name, "prompts": images, "images": images, "parsed_prompts": images,
            "alignment": [
                "images": images, "correct": correct, "attributes": [String: Any](),
                "categories": ["position": ["correct": correct, "total": images],
                               "color_attr": ["correct": images, "total": images]],
            ],
            "pixel": ["kinds": [String: Any](), "two_object_accuracy": 0.5],
            "clip_score": clip, "clip_score_std": 1.0, "frechet_distance": frechet, "reference_images": 10,
        ]
    }
    let accuracy: [String: Any] = [
        "accuracy": 1, "benchmark_seed": 1, "color": 1, "count": 1, "held_out": 1, "images": 10,
        "mean_center_error": 0.1, "relation": 1, "seen": 1, "shape": 1, "size": 1,
    ]
    return [
        "model": "m", "checkpoint": 4, "sampler": "ddim", "steps": 50, "guidance": 3, "eta": 0, "seed": 1, "context": true,
        "images_per_prompt": 1, "evaluator": ["path": "e", "held_out_accuracy": accuracy], "clip_model": "c",
        "sets": [set("seen", correct: seenCorrect), set("heldout", correct: heldCorrect)], "seconds": 1.0,
    ]
}

@Suite("End to end: contextdiff experiment")
struct ExperimentTests {
    @Test func tablesAreMeansAndStandardDeviationsOfTheReports() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let options = ["-o", root.path, "--steps", "4", "--checkpoint-every", "2", "--seeds", "0,1",
                       "--guidance-scales", "1,3", "--guidance", "3", "--samplers", "ddpm:50,ddpm:20,ddim:50,ddim:20"]
        // The plan: 4 training runs and, per run, the final and one intermediate evaluation; the
        // first seed also gets guidance 1 and three more samplers.
        let plan = try CLI.run(["experiment", "t2i", "--dry-run"] + options)
        #expect(plan.status == 0, "\(plan.stderr)")
        let lines = plan.stdout.split(separator: "\n")
        #expect(lines.count == 4 + 4 * 2 + 2 * (1 + 3))
        #expect(lines.filter { $0.contains(" train ") && $0.contains("--baseline") }.count == 2)

        // Fabricated reports with known numbers: seeds 0 and 1 of ContextDiff have seen alignment
        // 6/10 and 8/10 → 70.0 ± 14.1 %; the baseline 2/10 and 2/10 → 20.0 ± 0.0 %.
        let evals = root.appendingPathComponent("evals")
        try FileManager.default.createDirectory(at: evals, withIntermediateDirectories: true)
        let whats = ["final", "step-2", "guidance-1", "ddpm-50", "ddpm-20", "ddim-20"]
        for (method, seenBySeed) in [("contextdiff", [6, 8]), ("baseline", [2, 2])] {
            for (seed, seen) in seenBySeed.enumerated() {
                for what in whats {
                    let data = try JSONSerialization.data(withJSONObject: report(
                        seenCorrect: seen, heldCorrect: seen / 2, images: 10, clip: 20 + Double(seen), frechet: 5 - Double(seen) / 4))
                    try data.write(to: evals.appendingPathComponent("\(method)-seed\(seed)-\(what).json"))
                }
            }
        }
        let made = try CLI.run(["experiment", "t2i", "--report-only"] + options)
        #expect(made.status == 0, "\(made.stderr)")
        let table = try String(contentsOf: root.appendingPathComponent("results.md"), encoding: .utf8)
        #expect(table.contains("| ContextDiff | 70.0 ± 14.1 | 35.0 ± 7.1 |"), "\(table)")
        #expect(table.contains("| baseline (r_φ ≡ 0) | 20.0 ± 0.0 | 10.0 ± 0.0 |"), "\(table)")
        #expect(table.contains("27.00 ± 1.41"))  // CLIP score of ContextDiff: 26 and 28
        for plot in ["tradeoff.svg", "convergence.svg"] {
            let svg = try String(contentsOf: root.appendingPathComponent(plot), encoding: .utf8)
            #expect(svg.hasPrefix("<svg") && svg.contains("ContextDiff"))
        }

        // A missing report is a clear error, not a crash.
        try FileManager.default.removeItem(at: evals.appendingPathComponent("baseline-seed1-final.json"))
        let broken = try CLI.run(["experiment", "t2i", "--report-only"] + options)
        #expect(broken.status != 0 && broken.status < 128)
        #expect(broken.stderr.contains("baseline-seed1-final.json"), "\(broken.stderr)")
    }
}
