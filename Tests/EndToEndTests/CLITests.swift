import Datasets
import Foundation
import Testing
import Torch

/// Runs the built `contextdiff` binary (it sits next to the test bundle).
struct CLI {
    static let binary: URL = {
        var dir = Bundle.main.bundleURL
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("contextdiff")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: ".build/debug/contextdiff")
    }()

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func start(_ arguments: [String]) throws -> Process {
        let p = Process()
        p.executableURL = binary
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// Runs the binary to the end, with `environment` added to this process's.
    static func run(_ arguments: [String], environment extra: [String: String] = [:]) throws -> Result {
        try run(binary, arguments, environment: extra)
    }

    /// Runs a shell command line (`/bin/sh -c`) to the end.
    static func shell(_ command: String) throws -> Result {
        try run(URL(fileURLWithPath: "/bin/sh"), ["-c", command])
    }

    static func run(_ executable: URL, _ arguments: [String], environment extra: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = executable
        p.arguments = arguments
        if !extra.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(extra) { $1 } }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Read both pipes to the end before waiting, so a chatty child cannot block.
        final class Box: @unchecked Sendable { var data = Data() }
        let errBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errBox.data = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let errData = errBox.data
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}

func scratchDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cd-e2e-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// A training run small enough for a test: 16×16 images, tiny widths, one thread (deterministic).
func tinyTrainArguments(_ run: URL, steps: Int = 12) -> [String] {
    ["train", "-o", run.path, "--steps", "\(steps)", "--batch-size", "8", "--dataset-size", "64",
     "--image-size", "16", "--base-channels", "8", "--checkpoint-every", "4", "--threads", "1", "--no-samples",
     "--seed", "3"]
}

/// Trains `arguments(root/straight)` through, and `arguments(root/killed)` SIGKILLed once its
/// first checkpoint (step 4) exists and then resumed; returns both run folders.
func trainStraightAndKilled(root: URL, _ arguments: (URL) -> [String]) throws -> (straight: URL, killed: URL) {
    let straight = root.appendingPathComponent("straight"), killed = root.appendingPathComponent("killed")
    let reference = try CLI.run(arguments(straight))
    #expect(reference.status == 0, "\(reference.stderr)")
    let process = try CLI.start(arguments(killed))
    let firstCheckpoint = killed.appendingPathComponent("checkpoints/step-0000004")
    let deadline = Date().addingTimeInterval(120)
    while !FileManager.default.fileExists(atPath: firstCheckpoint.path), Date() < deadline, process.isRunning {
        Thread.sleep(forTimeInterval: 0.02)
    }
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
    #expect(process.terminationReason == .uncaughtSignal, "the run finished before it could be killed")
    let resumed = try CLI.run(arguments(killed))
    #expect(resumed.status == 0, "\(resumed.stderr)")
    #expect(resumed.stderr.contains("resumed from step"))
    return (straight, killed)
}

func modelTensors(_ run: URL, step: Int) throws -> [String: Tensor] {
    let url = run.appendingPathComponent(String(format: "checkpoints/step-%07d/training_state.safetensors", step))
    return try loadSafeTensors(url).filter { $0.key.hasPrefix("model.") || $0.key.hasPrefix("ema.") || $0.key.hasPrefix("optimizer.") }
}

@Suite("End to end: the contextdiff command", .serialized)
struct CLITests {
    @Test func killedTrainingResumesToTheSameWeights() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        // The same run straight, and killed once its first checkpoint exists, then resumed.
        let (straight, killed) = try trainStraightAndKilled(root: root) { tinyTrainArguments($0) }

        let a = try modelTensors(straight, step: 12), b = try modelTensors(killed, step: 12)
        #expect(!a.isEmpty && Set(a.keys) == Set(b.keys))
        var worst = 0.0
        for (key, t) in a {
            let diff = try (t.to(.float64) - b[key]!.to(.float64)).abs().max().item()
            worst = max(worst, diff)
        }
        // One thread, the same machine: a resumed run replays the same kernels on the same state,
        // so the weights, EMA and Adam moments are bit-identical.
        #expect(worst == 0, "max difference after resume \(worst)")

        // The model records a portable command and its recipe, not this machine's paths.
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: straight.appendingPathComponent("model/model_index.json"))) as? [String: Any]
        let notes = try #require(index?["notes"] as? [String: String])
        #expect(notes["command"]?.hasPrefix("contextdiff train -o RUN") == true, "\(notes)")
        #expect(notes["recipe"]?.contains("\"training\"") == true, "\(notes)")
        #expect(!notes.values.contains { $0.contains(root.path) }, "\(notes)")

        // The trained tiny model generates a PNG.
        let out = root.appendingPathComponent("out/x.png")
        let generated = try CLI.run(["generate", "a red circle", "--model", straight.appendingPathComponent("model").path,
                                     "--steps", "3", "--num-images", "1", "-o", out.path, "--threads", "1"])
        #expect(generated.status == 0, "\(generated.stderr)")
        let png = try Data(contentsOf: out)
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]))
        // It carries what made it: a line a person reads and the record as JSON.
        let text = try PNGText.read(from: png)
        #expect(text.map(\.key) == ["parameters", "contextdiff"])
        #expect(text.first?.value == "a red circle\nSteps: 3, Sampler: ddim, CFG scale: 3, Seed: 0, Batch index: 0, Model: model", "\(text)")
        let record = try #require(text.last.flatMap { try? JSONSerialization.jsonObject(with: Data($0.value.utf8)) as? [String: Any] })
        #expect(record["prompts"] as? [String] == ["a red circle"] && record["model"] as? String == "model", "\(record)")
        #expect((record["options"] as? [String: Any])?["steps"] as? Int == 3, "\(record)")
        #expect((record["options"] as? [String: Any])?["precision"] as? String == "fp32", "\(record)")

        // --precision auto says what it picked, and the record says it too.
        let auto = root.appendingPathComponent("out/auto.png")
        let picked = try CLI.run(["generate", "a red circle", "--model", straight.appendingPathComponent("model").path,
                                  "--steps", "3", "--num-images", "1", "-o", auto.path, "--threads", "1", "--precision", "auto"])
        #expect(picked.status == 0, "\(picked.stderr)")
        let expected = Precision.automatic(for: .cpu).precision
        #expect(picked.stderr.contains("precision: auto → \(expected)"), "\(picked.stderr)")
        let autoRecord = try #require(try PNGText.read(from: Data(contentsOf: auto)).last.flatMap {
            try? JSONSerialization.jsonObject(with: Data($0.value.utf8)) as? [String: Any] })
        #expect((autoRecord["options"] as? [String: Any])?["precision"] as? String == expected.rawValue, "\(autoRecord)")

        // Bad input: clear messages and non-zero exits, never a crash.
        let model = straight.appendingPathComponent("model").path
        func failure(_ args: [String], mentions text: String) throws {
            let r = try CLI.run(args)
            #expect(r.status != 0 && r.status < 128, "\(args) exited \(r.status)")
            #expect(r.stderr.lowercased().contains(text.lowercased()), "\(args): \(r.stderr)")
        }
        try failure(["generate", "a red circle", "--model", root.appendingPathComponent("nope").path], mentions: "not found")
        try failure(["generate", "a red circle", "--model", model, "--sampler", "euler"], mentions: "sampler")
        try failure(["generate", "a red circle", "--model", model, "--steps", "0"], mentions: "steps")
        try failure(["generate", "a red circle", "--model", model, "--guidance=-1"], mentions: "guidance")
        try failure(["generate", "a red circle", "--model", model, "--precision", "half"], mentions: "--precision must be fp32, bf16 or auto")
        try failure(["generate", "   ", "--model", model], mentions: "prompt is empty")
        try failure(["train", "-o", root.appendingPathComponent("shards").path, "--shards", "3"], mentions: "--shards must be 1 or 2")
        try failure(["generate", "a red circle", "--model", model, "--steps", "5000"], mentions: "exceeds")
        try failure(["generate", "a red circle", "--model", model, "-o", "/proc/forbidden/out"], mentions: "output folder")
        // Layouts: a model without a layout prior, a bad box, a missing file, a phrase not in the prompt.
        try failure(["generate", "a red circle", "--model", model, "--box", "red circle@0.1,0.1,0.5,0.5"], mentions: "no layout prior")
        try failure(["generate", "a red circle", "--model", model, "--box", "red circle@0.5,0.1,0.4,0.5"], mentions: "x0 < x1")
        try failure(["generate", "a red circle", "--model", model, "--layout", "/nowhere/layout.json"], mentions: "not sampled, typical or a layout file")
        try failure(["generate", "a red circle", "--steps", "2", "--box", "green circle@0.1,0.1,0.5,0.5"], mentions: "not in the prompt")
        // A corrupt model folder: truncate the U-Net's weights.
        let corrupt = root.appendingPathComponent("corrupt")
        try FileManager.default.copyItem(atPath: model, toPath: corrupt.path)
        let weights = corrupt.appendingPathComponent("unet/model.safetensors")
        let bytes = try Data(contentsOf: weights)
        try bytes.prefix(bytes.count / 2).write(to: weights)
        try failure(["generate", "a red circle", "--model", corrupt.path], mentions: "invalid weights")

        // An over-long prompt is truncated with a warning, and still generates.
        let long = Array(repeating: "a red circle to the left of a blue square", count: 6).joined(separator: " and ")
        let warned = try CLI.run(["generate", long, "--model", model, "--steps", "2", "--num-images", "1",
                                  "-o", root.appendingPathComponent("long.png").path, "--threads", "1"])
        #expect(warned.status == 0, "\(warned.stderr)")
        #expect(warned.stderr.contains("truncated"))
    }

    /// The same with each step's batch in two shards on two threads (`--shards 2`): the halves'
    /// gradients add in whichever order the threads finish, and a killed, resumed run still
    /// ends on the straight run's weights bit for bit.
    @Test func shardedTrainingResumesToTheSameWeights() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        func arguments(_ run: URL) -> [String] {
            tinyTrainArguments(run).map { $0 == "1" ? "2" : $0 } + ["--shards", "2"]
        }
        #expect(arguments(root).contains("--threads") && arguments(root)[arguments(root).firstIndex(of: "--threads")! + 1] == "2")
        let (straight, killed) = try trainStraightAndKilled(root: root, arguments)
        let a = try modelTensors(straight, step: 12), b = try modelTensors(killed, step: 12)
        #expect(!a.isEmpty && Set(a.keys) == Set(b.keys))
        for (key, t) in a {
            #expect(try (t.to(.float64) - b[key]!.to(.float64)).abs().max().item() as Double == 0, "\(key)")
        }
    }

    @Test func partialRecipeKeepsDefaultsAndCheckpointsEvaluate() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let run = root.appendingPathComponent("run")
        // A recipe naming only what it changes: the baseline, and more kept checkpoints.
        let config = root.appendingPathComponent("recipe.json")
        try Data(#"{"adapter": null, "training": {"keep_checkpoints": 5}}"#.utf8).write(to: config)
        let trained = try CLI.run(tinyTrainArguments(run) + ["--config", config.path])
        #expect(trained.status == 0, "\(trained.stderr)")
        let saved = try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("recipe.json"))) as? [String: Any]
        #expect(saved?["adapter"] is NSNull, "the baseline is an explicit null adapter")
        let training = saved?["training"] as? [String: Any]
        #expect(training?["keep_checkpoints"] as? Int == 5)
        #expect(training?["learning_rate"] as? Double == 5e-4, "unnamed keys keep the default recipe")
        let kept = try FileManager.default.contentsOfDirectory(atPath: run.appendingPathComponent("checkpoints").path)
        #expect(kept.sorted() == ["step-0000004", "step-0000008", "step-0000012"])

        // An intermediate checkpoint's EMA weights evaluate (pixel check, no evaluation models needed).
        let evaluated = try CLI.run(["evaluate", "--model", run.path, "--checkpoint", "4", "--pixel-only", "--split", "validation",
                                     "--num-samples", "1", "--steps", "2", "--json", "--threads", "1"])
        #expect(evaluated.status == 0, "\(evaluated.stderr)")
        #expect(evaluated.stdout.contains("\"two_object_accuracy\"") && !evaluated.stdout.contains("twoObjectAccuracy"))
        let missing = try CLI.run(["evaluate", "--model", run.path, "--checkpoint", "7", "--pixel-only", "--num-samples", "1"])
        #expect(missing.status != 0 && missing.stderr.contains("no checkpoint at step 7"), "\(missing.stderr)")
        #expect(missing.stderr.contains("4, 8, 12"))

        // Fine-tuning from that model with position embeddings, a text refiner and a layout prior
        // added: at a vanishing learning rate the new run's weights are the source's, plus zero
        // position tables, a refiner whose output projections are zero (the identity) and a
        // prior whose canvas convolution is zero.
        let tuned = root.appendingPathComponent("tuned")
        let source = run.appendingPathComponent("model")
        let fineTuned = try CLI.run(tinyTrainArguments(tuned, steps: 4) + [
            "--config", config.path, "--init-from", source.path, "--positional-embedding", "--text-refiner-layers", "1",
            "--layout-prior", "--layout-fit-steps", "5", "--learning-rate", "1e-12"])
        #expect(fineTuned.status == 0, "\(fineTuned.stderr)")
        let before = try loadSafeTensors(source.appendingPathComponent("unet/model.safetensors"))
        let after = try loadSafeTensors(tuned.appendingPathComponent("model/unet/model.safetensors"))
        let tables = after.keys.filter { $0.hasSuffix(".pos_embed") && !$0.hasPrefix("text_refiner.") && !$0.hasPrefix("layout_prior.") }
        let refiner = after.keys.filter { $0.hasPrefix("text_refiner.") }
        let prior = after.keys.filter { $0.hasPrefix("layout_prior.") }
        #expect(!tables.isEmpty && refiner.contains("text_refiner.layers.0.fc1.weight"))
        #expect(prior.contains("layout_prior.head.weight"))
        #expect(Set(after.keys).subtracting(tables).subtracting(refiner).subtracting(prior) == Set(before.keys))
        for key in ["text_refiner.tokens_out.weight", "text_refiner.pooled_out.weight", "layout_prior.canvas_in.weight", "layout_prior.canvas_in.bias"] {
            #expect(try after[key]!.abs().max().item() < 1e-9, "\(key) does not start at zero")
        }
        for key in tables { #expect(try after[key]!.abs().max().item() < 1e-9, "\(key) does not start at zero") }
        for (key, t) in before {
            let diff = try (t - after[key]!).abs().max().item()
            #expect(diff < 1e-6, "\(key) moved by \(diff)")
        }
        let wrongWidth = try CLI.run(tinyTrainArguments(root.appendingPathComponent("wide"), steps: 4) + [
            "--config", config.path, "--init-from", source.path, "--base-channels", "16"])
        #expect(wrongWidth.status != 0 && wrongWidth.stderr.contains("has shape"), "\(wrongWidth.stderr)")
        let notAModel = try CLI.run(tinyTrainArguments(root.appendingPathComponent("none"), steps: 4) + ["--init-from", root.path])
        #expect(notAModel.status != 0 && notAModel.stderr.contains("not a model folder"), "\(notAModel.stderr)")
    }

    /// `--grounding-weight` trains with the token-grounding loss (logged per step, recorded in
    /// the recipe) on the synthetic benchmark, and refuses an image folder, which has no boxes;
    /// so does `--layout-prior`.
    @Test func groundingLossTrainsAndNeedsBoxes() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let run = root.appendingPathComponent("run")
        let trained = try CLI.run(tinyTrainArguments(run, steps: 3) + ["--grounding-weight", "0.05"])
        #expect(trained.status == 0, "\(trained.stderr)")
        #expect(trained.stderr.contains("grounding loss (weight 0.05) on"))
        let log = try String(contentsOf: run.appendingPathComponent("log.jsonl"), encoding: .utf8)
        let lines = log.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Double] }
        #expect(lines.count == 3)
        for line in lines {
            let g = try #require(line["grounding"])
            #expect(g > 0 && g < 1, "grounding loss \(g)")
        }
        let recipe = try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("recipe.json"))) as? [String: Any]
        #expect((recipe?["training"] as? [String: Any])?["grounding_weight"] as? Double == 0.05)
        let folder = try CLI.run(["train", "-o", root.appendingPathComponent("f").path, "--image-folder", root.path, "--grounding-weight", "1"])
        #expect(folder.status != 0 && folder.stderr.contains("object boxes"), "\(folder.stderr)")
        let priorOnFolder = try CLI.run(["train", "-o", root.appendingPathComponent("f").path, "--image-folder", root.path, "--layout-prior"])
        #expect(priorOnFolder.status != 0 && priorOnFolder.stderr.contains("object boxes"), "\(priorOnFolder.stderr)")
        let negative = try CLI.run(tinyTrainArguments(root.appendingPathComponent("n"), steps: 1) + ["--grounding-weight=-1"])
        #expect(negative.status != 0 && negative.stderr.contains("grounding weight"), "\(negative.stderr)")
        // --timestep-range: parsed, checked against the schedule and recorded in the recipe.
        for (range, message) in [("abc", "must look like"), ("600..<300", "timestep range"), ("900..<1200", "goes past")] {
            let bad = try CLI.run(tinyTrainArguments(root.appendingPathComponent("r"), steps: 1) + ["--timestep-range", range])
            #expect(bad.status != 0 && bad.stderr.contains(message), "\(range): \(bad.stderr)")
        }
        let ranged = root.appendingPathComponent("ranged")
        let high = try CLI.run(tinyTrainArguments(ranged, steps: 1) + ["--timestep-range", "500..<1000"])
        #expect(high.status == 0, "\(high.stderr)")
        let saved = try JSONSerialization.jsonObject(with: Data(contentsOf: ranged.appendingPathComponent("recipe.json"))) as? [String: Any]
        #expect((saved?["training"] as? [String: Any])?["timestep_range"] as? [Int] == [500, 1000])
    }

    /// `--layout-prior` adds the prior to the recipe's U-Net; its box predictor is fitted alone
    /// before the first step (the fitted run starts from a far lower box loss than one without
    /// the fit), then trains alongside the diffusion loss (logged per step); the model it writes
    /// generates from its predicted layout.
    @Test func layoutPriorTrainsAndGenerates() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        func firstLayoutLosses(_ run: URL) throws -> [Double] {
            let log = try String(contentsOf: run.appendingPathComponent("log.jsonl"), encoding: .utf8)
            return log.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Double] }
                .compactMap { $0["layout"] }
        }
        let unfitted = root.appendingPathComponent("unfitted")
        let plain = try CLI.run(tinyTrainArguments(unfitted, steps: 2) + ["--layout-prior", "--layout-fit-steps", "0"])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(!plain.stderr.contains("layout prior fitted"))
        let run = root.appendingPathComponent("run")
        let trained = try CLI.run(tinyTrainArguments(run, steps: 2) + ["--layout-prior", "--layout-fit-steps", "60"])
        #expect(trained.status == 0, "\(trained.stderr)")
        #expect(trained.stderr.contains("layout prior (loss weight 1.0) learns from"))
        #expect(trained.stderr.contains("layout prior fitted"))
        let (before, after) = (try firstLayoutLosses(unfitted), try firstLayoutLosses(run))
        #expect(before.count == 2 && after.count == 2)
        #expect(after[0] < before[0] / 2, "first logged layout loss: \(after[0]) with the fit, \(before[0]) without")
        let recipe = try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("recipe.json"))) as? [String: Any]
        #expect((recipe?["unet"] as? [String: Any])?["layout_prior"] is [String: Any])
        #expect((recipe?["training"] as? [String: Any])?["layout_fit_steps"] as? Int == 60)
        let out = root.appendingPathComponent("out/x.png")
        let generated = try CLI.run(["generate", "a red circle to the left of a blue square", "--model", run.appendingPathComponent("model").path,
                                     "--steps", "3", "--num-images", "1", "-o", out.path, "--threads", "1"])
        #expect(generated.status == 0, "\(generated.stderr)")
        #expect(try Data(contentsOf: out).starts(with: [0x89, 0x50, 0x4E, 0x47]))

        // A mixture over the boxes, fitted alone on the trained model (--steps 0, mixture head
        // only): every other weight stays the source's, the typical boxes and gates too;
        // generation samples a layout per image (with guidance, whose empty caption is shorter
        // than the prompt), or paints the typical one.
        let mixture = root.appendingPathComponent("mixture")
        let fitted = try CLI.run(tinyTrainArguments(mixture, steps: 0) + [
            "--layout-prior", "--layout-mixture", "4", "--layout-fit-mixture-only", "--layout-fit-steps", "40",
            "--init-from", run.appendingPathComponent("model").path,
        ])
        #expect(fitted.status == 0, "\(fitted.stderr)")
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: mixture.appendingPathComponent("model/unet/config.json"))) as? [String: Any]
        #expect((config?["layout_prior"] as? [String: Any])?["mixture_components"] as? Int == 4)
        let source = try loadSafeTensors(run.appendingPathComponent("model/unet/model.safetensors"))
        let refit = try loadSafeTensors(mixture.appendingPathComponent("model/unet/model.safetensors"))
        for (key, t) in source {
            #expect(try (t - refit[key]!).abs().max().item() == 0, "\(key) changed")
        }
        let added = refit.keys.filter { source[$0] == nil }
        #expect(!added.isEmpty && added.allSatisfy { $0.hasPrefix("layout_prior.mixture.") }, "\(added)")
        #expect(try refit.filter { $0.key.hasPrefix("layout_prior.mixture.") }.values.contains { try $0.abs().max().item() > 0 })
        for mode in ["sampled", "typical"] {
            let folder = root.appendingPathComponent("out-\(mode)")
            let r = try CLI.run(["generate", "a red circle to the left of a blue square", "--model", mixture.appendingPathComponent("model").path,
                                 "--steps", "3", "--num-images", "2", "--layout", mode, "-o", folder.path, "--threads", "1"])
            #expect(r.status == 0, "\(mode): \(r.stderr)")
        }
        let typicalOnly = try CLI.run(["generate", "a red circle", "--model", run.appendingPathComponent("model").path,
                                       "--steps", "2", "--num-images", "1", "--layout", "sampled", "-o", root.appendingPathComponent("y.png").path])
        #expect(typicalOnly.status == 0, "a prior without a mixture paints its typical layout: \(typicalOnly.stderr)")
    }

    @Test func cudaAskedForWithoutItFailsAtOnceSayingWhy() throws {
        guard (try? Torch.cudaDeviceCount()) == nil else { return }  // a machine with CUDA
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("cuda-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        for arguments in [
            ["generate", "a red circle", "--device", "cuda", "-o", out.path],
            ["train", "-o", out.path, "--steps", "1", "--device", "cuda:1"],
            ["check-device", "--device", "cuda"],
        ] {
            let r = try CLI.run(arguments)
            #expect(r.status == 1, "\(arguments): \(r.stderr)")
            #expect(r.stderr.contains("CUDA is not available"), "\(arguments): \(r.stderr)")
            #expect(!r.stderr.contains("Fatal error"))
        }
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("checkpoints").path))
        let bad = try CLI.run(["generate", "a red circle", "--device", "tpu"])
        #expect(bad.status == 64, "\(bad.stderr)")
    }

    @Test func scheduleAndDoctorRun() throws {
        let schedule = try CLI.run(["schedule", "--steps", "10"])
        #expect(schedule.status == 0)
        #expect(schedule.stdout.contains("\"timesteps\""))
        let bad = try CLI.run(["schedule", "--steps", "0"])
        #expect(bad.status != 0)
        let badTrain = try CLI.run(["train", "-o", "/tmp/never", "--steps", "0"])
        #expect(badTrain.status != 0 && badTrain.stderr.contains("steps"))
    }

    /// `attention-maps` on the shipped model: one PNG with both panels; a bad output refused.
    @Test func attentionMapsWritesBothPanels() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let out = root.appendingPathComponent("maps.png")
        let r = try CLI.run(["attention-maps", "a red circle", "--steps", "4", "--columns", "2", "--scale", "1", "-o", out.path, "--threads", "1"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("rows: a, red, circle") && r.stderr.contains("ContextDiff | the same model without r_φ"), "\(r.stderr)")
        let png = try RGBImage(contentsOf: out)
        // Two panels of 3 rows × 3 cells of 32 px (gutter 1), 4 px apart.
        #expect(png.width == 2 * (3 * 32 + 2) + 4 && png.height == 3 * 32 + 2, "\(png.width)×\(png.height)")
        let bad = try CLI.run(["attention-maps", "a red circle", "-o", root.appendingPathComponent("maps.jpg").path])
        #expect(bad.status != 0 && bad.stderr.contains(".png"))
    }
}
