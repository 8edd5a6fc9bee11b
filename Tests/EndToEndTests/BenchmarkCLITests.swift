import Foundation
import TestSupport
import Testing

/// Whether Debian's python3 with torch is there to run the PyTorch peers.
let benchmarkPeerAvailable: Bool = {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    p.arguments = ["-c", "import torch"]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return false }
    p.waitUntilExit()
    return p.terminationStatus == 0
}()

@Suite("BenchmarkCLITests: contextdiff benchmark")
struct BenchmarkCLITests {
    /// The whole benchmark at toy sizes: the networks' equivalence, every workload on Swift and
    /// the twin, and the video edit — whose short check edit (tuning, inversion with recorded
    /// attention maps, fused guided sampling with the adapter) must come out the same on both
    /// sides from the same weights, video and prompt states before anything is timed.
    @Test(.enabled(if: benchmarkPeerAvailable, "needs /usr/bin/python3 with torch"))
    func benchmarkTimesEveryWorkloadIncludingTheVideoEdit() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let json = root.appendingPathComponent("bench.json")
        let result = try CLI.run([
            "benchmark", "--threads", "1", "--train-batch", "2", "--train-steps", "1", "--train-warmup", "0",
            "--sample-batch", "1", "--ddim-steps", "2", "--edit-frames", "2", "--edit-tune-steps", "2", "--edit-steps", "2",
            "--skip-diffusers", "--no-reference-side", "--python", "/usr/bin/python3",
            "--peer-dir", repositoryRoot.appendingPathComponent("benchmarks/peer").path, "--json-output", json.path,
        ], environment: ["OPENBLAS_NUM_THREADS": "1"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("(c) video edit, 2 frames"))
        let report = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any])
        let edit = try #require(report["video_edit"] as? [String: Any])
        let equivalence = try #require(edit["equivalence"] as? [String: Double])
        // The check edit agrees, and is not vacuous: the output is an image, not zeros.
        // Relative to each output's size (kernels, and their rounding, differ between CPUs).
        #expect(try #require(equivalence["edited_relative_diff"]) <= 1e-3)
        #expect(try #require(equivalence["inverted_relative_diff"]) <= 1e-3)
        #expect(try #require(equivalence["tuning_losses_relative_diff"]) <= 1e-4)
        #expect(try #require(equivalence["edited_scale"]) > 0.1)
        let sides = try #require(edit["sides"] as? [String: [String: Any]])
        for side in ["swift", "twin"] {
            let fps = try #require(sides[side]?["frames_per_s"] as? Double)
            #expect(fps > 0, "\(side) frames/s")
            let raw = try #require(sides[side]?["raw"] as? [String: Any])
            #expect((raw["tuning_losses"] as? [Double])?.count == 2, "\(side) ran two tuning steps")
        }
        let ratios = try #require(report["ratios"] as? [String: Any])
        #expect(ratios["edit_swift_over_twin"] is Double)
        // At one thread Swift's training step runs its batch whole, and says so.
        let training = try #require(report["training"] as? [String: [String: Any]])
        #expect(training["swift"]?["shards"] as? Int == 1, "\(training["swift"] ?? [:])")
        #expect(result.stdout.contains("Swift's batch in 1 concurrent shard(s)"))
    }

    @Test func benchmarkRejectsAbsurdEditSizes() throws {
        for (arguments, flag) in [
            (["--edit-frames=-1"], "--edit-frames"), (["--edit-steps", "0"], "--edit-steps"),
            (["--edit-tune-steps=-3"], "--edit-tune-steps"), (["--edit-frames", "65"], "--edit-frames"),
        ] {
            let result = try CLI.run(["benchmark"] + arguments)
            #expect(result.status != 0 && result.stderr.contains(flag), "\(arguments): \(result.stderr)")
        }
    }
}
