import Foundation
import Testing
import Torch

/// Training killed with SIGKILL at random moments, and checkpoint/output writes on a full disk.
///
/// The default suite runs a short seeded version; docs/RELIABILITY.md gives the commands of the
/// full trials (`CONTEXTDIFF_KILL_TRIALS=10`, `CONTEXTDIFF_DISK_FULL=tmpfs`).
@Suite("Reliability: kill -9 and full disks", .serialized)
struct ReliabilityTests {
    /// A seeded generator for kill times (the trials are reproducible up to scheduling).
    struct Seeded {
        var state: UInt64
        mutating func unit() -> Double {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Double(state >> 11) / Double(1 << 53)
        }
    }

    static func arguments(_ run: URL) -> [String] {
        tinyTrainArguments(run, steps: 12).map { $0 == "4" ? "2" : $0 }  // a checkpoint every 2 steps
    }

    static func bitIdentical(_ a: [String: Tensor], _ b: [String: Tensor]) throws -> Bool {
        guard !a.isEmpty, Set(a.keys) == Set(b.keys) else { return false }
        for (key, t) in a {
            guard let u = b[key], t.shape == u.shape else { return false }
            let x = try t.to(.float64).contiguous().scalars(as: Double.self), y = try u.to(.float64).contiguous().scalars(as: Double.self)
            guard x == y else { return false }
        }
        return true
    }

    /// Every step 1...steps logged exactly once.
    static func loggedSteps(_ run: URL) throws -> [Int] {
        let text = try String(contentsOf: run.appendingPathComponent("log.jsonl"), encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return Int(object["step"] as! Double)
        }
    }

    /// The last step in the log of a run that may be writing it (a partial last line is skipped).
    static func lastLoggedStep(_ run: URL) -> Int {
        guard let text = try? String(contentsOf: run.appendingPathComponent("log.jsonl"), encoding: .utf8) else { return 0 }
        return text.split(separator: "\n").compactMap { line -> Int? in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            return (object["step"] as? Double).map { Int($0) }
        }.max() ?? 0
    }

    /// Whether a checkpoint or the exported model is being written right now.
    static func writing(_ run: URL) -> Bool {
        let fm = FileManager.default
        let names = ((try? fm.contentsOfDirectory(atPath: run.appendingPathComponent("checkpoints").path)) ?? [])
            + ((try? fm.contentsOfDirectory(atPath: run.path)) ?? [])
        return names.contains { $0.hasSuffix(".partial") || $0.hasSuffix(".old") || $0.contains(".tmp-") }
    }

    @Test func killedAtRandomMomentsTrainingResumesBitIdentically() throws {
        let trials = Int(ProcessInfo.processInfo.environment["CONTEXTDIFF_KILL_TRIALS"] ?? "") ?? 2
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let straight = root.appendingPathComponent("straight")
        let started = Date()
        let reference = try CLI.run(Self.arguments(straight))
        let duration = Date().timeIntervalSince(started)
        #expect(reference.status == 0, "\(reference.stderr)")
        let expected = try modelTensors(straight, step: 12)

        var rng = Seeded(state: 20_261_203)
        var killedDuringWrite = 0, killed = 0
        for trial in 0..<trials {
            let run = root.appendingPathComponent("trial-\(trial)")
            // Odd trials wait for a checkpoint write and kill inside it; even ones kill at a
            // random moment, up to three times.
            let kills = trial % 2 == 1 ? 1 : 1 + Int(rng.unit() * 3)
            for _ in 0..<kills {
                let process = try CLI.start(Self.arguments(run))
                if trial % 2 == 1 {
                    let deadline = Date().addingTimeInterval(120)
                    while !Self.writing(run), process.isRunning, Date() < deadline { usleep(200) }
                } else {
                    // A random moment inside the run: once a random step of 1...10 (of 12) is
                    // logged, then a random part of half a step. Counting steps, not seconds, the
                    // kill lands before the end however much faster this run is than the
                    // reference one (a busy machine made the reference slow and the kill late).
                    let target = 1 + Int(rng.unit() * 10)
                    let deadline = Date().addingTimeInterval(120)
                    while process.isRunning, Date() < deadline, Self.lastLoggedStep(run) < target { usleep(1000) }
                    let extra = Date().addingTimeInterval(duration / 24 * rng.unit())
                    while process.isRunning, Date() < extra { usleep(1000) }
                }
                let duringWrite = Self.writing(run)
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                if process.terminationReason == .uncaughtSignal {
                    killed += 1
                    if duringWrite { killedDuringWrite += 1 }
                }
            }
            let resumed = try CLI.run(Self.arguments(run))
            #expect(resumed.status == 0, "trial \(trial): \(resumed.stderr)")
            #expect(try Self.bitIdentical(modelTensors(run, step: 12), expected), "trial \(trial): final weights differ")
            let logged = try Self.loggedSteps(run)
            #expect(logged == Array(1...12), "trial \(trial): log \(logged)")
            let model = try loadSafeTensors(run.appendingPathComponent("model/unet/model.safetensors"))
            let straightModel = try loadSafeTensors(straight.appendingPathComponent("model/unet/model.safetensors"))
            #expect(try Self.bitIdentical(model, straightModel), "trial \(trial): exported model differs")
            #expect(!Self.writing(run), "trial \(trial): leftovers of a killed write remain")
        }
        // The trials did what they say: most kills landed before the end, some inside a write.
        #expect(killed >= trials, "only \(killed) kills landed before the run finished")
        #expect(trials < 2 || killedDuringWrite >= 1, "no kill landed inside a checkpoint write")
        print("[kill -9] \(trials) trials, \(killed) kills (\(killedDuringWrite) during a write): all resumed bit-identically")
    }

    /// The disk fills during a checkpoint (a file-size limit by default, a small tmpfs with
    /// CONTEXTDIFF_DISK_FULL=tmpfs): a clear error, nothing corrupt under a final name, the
    /// previous checkpoint resumes to the same weights; an output image on a full disk is
    /// refused the same way.
    @Test func aFullDiskDuringACheckpointLeavesThePreviousOne() throws {
        let useTmpfs = ProcessInfo.processInfo.environment["CONTEXTDIFF_DISK_FULL"] == "tmpfs"
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let straight = root.appendingPathComponent("straight")
        #expect(try CLI.run(Self.arguments(straight)).status == 0)

        // The run's folder: on a tmpfs (32 MiB: three checkpoints and two models fit), filled up to 3 MB before the resume.
        let mount = root.appendingPathComponent("disk")
        let run = mount.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: mount, withIntermediateDirectories: true)
        if useTmpfs {
            let mounted = try CLI.shell("mount -t tmpfs -o size=32m tmpfs '\(mount.path)'")
            try #require(mounted.status == 0, "mount failed: \(mounted.stderr)")
        }
        defer { if useTmpfs { _ = try? CLI.shell("umount '\(mount.path)'") } }

        // 1. Kill once the first checkpoint exists (so a previous checkpoint is there).
        let process = try CLI.start(Self.arguments(run))
        let first = run.appendingPathComponent("checkpoints/step-0000002")
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: first.path), process.isRunning, Date() < deadline { usleep(1000) }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try #require(process.terminationReason == .uncaughtSignal, "the run finished before the disk could fill")
        let before = try FileManager.default.contentsOfDirectory(atPath: run.appendingPathComponent("checkpoints").path)
            .filter { $0.hasPrefix("step-") }.sorted()

        // 2. Resume on a full disk: the next checkpoint cannot be written.
        let limited = useTmpfs
            ? try CLI.shell(
                "head -c $(( $(df --output=avail -B1 '\(mount.path)' | tail -1) - 3000000 )) /dev/zero > '\(mount.path)/filler' 2>/dev/null; "
                    + "exec '\(CLI.binary.path)' " + Self.arguments(run).map { "'\($0)'" }.joined(separator: " "))
            : try CLI.shell("ulimit -f 2048; exec '\(CLI.binary.path)' " + Self.arguments(run).map { "'\($0)'" }.joined(separator: " "))
        #expect(limited.status != 0 && limited.status < 128, "exit \(limited.status): \(limited.stderr)")
        #expect(limited.stderr.contains("cannot write checkpoint"), "\(limited.stderr)")
        #expect(limited.stderr.contains(useTmpfs ? "No space left" : "File too large"), "\(limited.stderr)")
        let after = try FileManager.default.contentsOfDirectory(atPath: run.appendingPathComponent("checkpoints").path)
        #expect(!after.contains { $0.hasSuffix(".partial") }, "a half-written checkpoint remains: \(after)")
        #expect(after.filter { $0.hasPrefix("step-") }.sorted() == before, "checkpoints changed: \(before) → \(after)")
        // The previous checkpoint and the exported model still load.
        for step in before.compactMap({ Int($0.dropFirst(5)) }) { #expect(try !modelTensors(run, step: step).isEmpty) }
        let out = root.appendingPathComponent("x.png")
        let generated = try CLI.run(["generate", "a red circle", "--model", run.appendingPathComponent("model").path,
                                     "--steps", "2", "--num-images", "1", "-o", out.path, "--threads", "1"])
        #expect(generated.status == 0, "\(generated.stderr)")

        // 3. With room again, the run resumes to the uninterrupted run's weights.
        if useTmpfs { try FileManager.default.removeItem(at: mount.appendingPathComponent("filler")) }
        let resumed = try CLI.run(Self.arguments(run))
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(try Self.bitIdentical(modelTensors(run, step: 12), modelTensors(straight, step: 12)))
        #expect(try Self.loggedSteps(run) == Array(1...12))

        // 4. An output image on a full disk: a clear error and no file under the final name.
        let full = mount.appendingPathComponent("full.png")
        let refused = useTmpfs
            ? try CLI.shell(
                "head -c 100000000 /dev/zero > '\(mount.path)/filler' 2>/dev/null; exec '\(CLI.binary.path)' generate 'a red circle' --model '\(straight.path)/model' --steps 2 --num-images 1 -o '\(full.path)' --threads 1")
            : try CLI.shell(
                "ulimit -f 0; exec '\(CLI.binary.path)' generate 'a red circle' --model '\(straight.path)/model' --steps 2 --num-images 1 -o '\(full.path)' --threads 1")
        #expect(refused.status != 0 && refused.status < 128, "exit \(refused.status): \(refused.stderr)")
        #expect(refused.stderr.lowercased().contains("cannot write") || refused.stderr.lowercased().contains("unwritable")
                    || refused.stderr.contains("No space") || refused.stderr.contains("File too large"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: full.path))
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: mount.path)) ?? []
        #expect(!leftovers.contains { $0.contains(".tmp-") }, "temporary files remain: \(leftovers)")
    }
}

@Suite("Fuzzing in a process of its own")
struct FuzzCommandTests {
    /// A seeded slice of `contextdiff fuzz` with its peak-memory bound (its own process, so the
    /// peak is its own); a bad option is a clear error.
    @Test func fuzzCommandHoldsTheMemoryBound() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let json = root.appendingPathComponent("fuzz.json")
        let result = try CLI.run([
            "fuzz", "--cases", "safetensors=60,model-folder=60,png=60,jpeg=60,metadata=60,video=10", "--seed", "3",
            "--json-output", json.path, "--scratch", root.appendingPathComponent("scratch").path,
        ])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("failures: 0"), "\(result.stdout)")
        let report = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any])
        #expect(report["memory_bound_bytes"] as? Int == 64 << 20)
        #expect((report["failures"] as? [Any])?.isEmpty == true)
        let bad = try CLI.run(["fuzz", "--only", "gif"])
        #expect(bad.status != 0 && bad.stderr.contains("unknown format"), "\(bad.stderr)")
    }
}
