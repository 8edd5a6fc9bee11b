import ContextDiff
import Foundation
import NN
import TestSupport
import Testing
import Torch
import Workflows

/// The benchmark's Swift side as library calls, without Python: the work folder it prepares, the
/// workloads that read it, and the settings' validation.
@Suite("Workflows: the benchmark's Swift side")
struct BenchmarkWorkloadTests {
    func tinySettings() -> BenchmarkSettings {
        var s = BenchmarkSettings(threads: 1)
        s.trainBatch = 2
        s.trainSteps = 1
        s.trainWarmup = 1
        s.sampleBatch = 2
        s.ddimSteps = 2
        s.editFrames = 0
        return s
    }

    func scratch() throws -> BenchmarkFolder {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return BenchmarkFolder(url: url)
    }

    @Test func settingsNameTheOptionOutOfRange() throws {
        try tinySettings().validate()
        var s = tinySettings()
        s.editFrames = 65
        #expect(throws: BenchmarkError.invalidSetting(option: "edit_frames", message: "must be in 0...64")) { try s.validate() }
        s = tinySettings()
        s.ddimSteps = 0
        #expect(throws: BenchmarkError.invalidSetting(option: "ddim_steps", message: "must be in 1...1000")) { try s.validate() }
        s = tinySettings()
        s.tolerance = .nan
        #expect(throws: BenchmarkError.self) { try s.validate() }
    }

    /// What `prepare` writes is what the workloads (and the Python twin) read: the networks load
    /// back to the outputs it recorded for the equivalence check, and the training and sampling
    /// workloads run on the folder and report finite figures.
    @Test func preparedFolderRoundTripsAndFeedsTheWorkloads() throws {
        let folder = try scratch()
        defer { try? FileManager.default.removeItem(at: folder.url) }
        let settings = tinySettings()
        let model = try settings.prepare(folder, textTokens: 8)
        #expect(try BenchmarkSpec.load(from: folder.url).sample.batch == 2)

        let reloaded = try folder.loadModel()
        reloaded.train(false)
        let inputs = try loadSafeTensors(folder.checkInputs), recorded = try loadSafeTensors(folder.swiftOutputs)
        let condition = try Condition(
            tokens: inputs["tokens"]!, mask: inputs["mask"]!, pooled: inputs["pooled"]!)
        let unet = try Torch.withInferenceMode {
            try reloaded.unet(inputs["x"]!, timesteps: inputs["timesteps"]!, condition: condition)
        }
        #expect(try TestSupport.relativeDiff(unet, recorded["unet"]!) <= 1e-6)
        #expect(try recorded["adapter"]!.abs().max().item() as Double > 0, "the adapter's last layer was given weights, so r_φ acts")
        #expect(model.unet.parameterCount == reloaded.unet.parameterCount)

        let sample = try BenchmarkWorkload.sample.measure(folder: folder)
        #expect(sample.double("images_per_s") > 0)
        #expect(try loadSafeTensors(folder.samples("swift"))["samples"]?.shape == [2, 3, 32, 32])
        let train = try BenchmarkWorkload.train.measure(folder: folder)
        #expect(train.doubles("losses").count == 2)
        #expect(train.double("shards") == 1, "one thread: the batch whole")
        let split = try BenchmarkWorkload.train.measure(folder: folder, shards: 2)
        #expect(split.double("shards") == 2)
        // The same first step: the halves' weighted means add up to the batch mean.
        #expect(abs(split.doubles("losses")[0] - train.doubles("losses")[0]) <= 1e-5 * abs(train.doubles("losses")[0]))
        #expect(train.doubles("losses").allSatisfy { $0.isFinite })
        #expect(train.double("parameters") == Double(model.parameters.reduce(0) { $0 + $1.count }))
        #expect(try train.jsonLine().hasPrefix("{"))
    }

    @Test func aFolderWithoutItsSpecIsATypedError() throws {
        let folder = try scratch()
        defer { try? FileManager.default.removeItem(at: folder.url) }
        #expect(throws: BenchmarkError.self) { try BenchmarkWorkload.sample.measure(folder: folder) }
        try Data("{\"threads\": 1".utf8).write(to: folder.url.appendingPathComponent("bench.json"))
        #expect(throws: BenchmarkError.self) { try BenchmarkWorkload.train.measure(folder: folder) }
    }
}
