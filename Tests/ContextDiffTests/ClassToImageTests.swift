import Foundation
import NN
import TestSupport
import Testing
import Torch

@testable import ContextDiff

@Suite("Class-to-image (paper App. B): class tokens trained with the model, saved, loaded, sampled")
struct ClassToImageTests {
    static func model(seed: UInt64 = 5) throws -> ContextDiffModel {
        return try Torch.withSeed(seed) {
            let classes = try ClassLabelEncoder(ClassLabelEncoderConfig(names: ["red circle", "blue square", "green triangle"], width: 12))
            return ContextDiffModel(
                unet: try UNet(TinyConfigs.unet), adapter: try ContextAdapter(TinyConfigs.adapter),
                schedule: try NoiseSchedule(NoiseScheduleConfig()), textEncoder: TextEncoderSpec(kind: "class", maxTokens: 1),
                classEncoder: classes)
        }
    }

    @Test func aClassModelSavesLoadsAndSamplesTheSame() throws {
        let model = try Self.model()
        #expect(model.parameters.count == model.unet.parameters().count + model.adapter!.parameters().count + 1)
        #expect(model.stateDict()["class_encoder.embedding.weight"]?.shape == [4, 12])
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("class-model-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try model.save(to: dir)
        let loaded = try ContextDiffModel.load(from: dir)
        #expect(loaded.classEncoder?.config == model.classEncoder?.config)
        let pipeline = try ClassToImagePipeline(model: loaded)
        var options = TinyPipeline.options(.ddim)
        options.imagesPerPrompt = 2
        let a = try ClassToImagePipeline(model: model).generate(classes: ["Blue-Square", "red circle"], options: options).images
        let b = try pipeline.generate(labels: [1, 0], options: options).images
        #expect(a.shape == [4, 3, 16, 16])
        #expect(try (a - b).abs().max().item() == 0)
        // The two classes draw different images from the same noise.
        #expect(try (a.slice(dim: 0, 0, 2) - a.slice(dim: 0, 2, 4)).abs().max().item() > 1e-3)
        #expect(throws: ConditionError.self) { try pipeline.generate(classes: ["purple circle"], options: options) }
        var negative = options
        negative.negativePrompt = "a red circle"
        #expect(throws: PipelineError.self) { try pipeline.generate(labels: [0], options: negative) }
        // A text model is not a class model, and a class folder without its encoder does not load.
        #expect(throws: PipelineError.self) { try ClassToImagePipeline(model: TinyPipeline.model()) }
        try FileManager.default.removeItem(at: dir.appendingPathComponent("class_encoder"))
        #expect(throws: CheckpointError.self) { try ContextDiffModel.load(from: dir) }
    }

    /// The class table's rows carry gradients to the class tokens (they train with the model);
    /// the null row is the null class.
    @Test func classRowsAreLearnedTokens() throws {
        let model = try Self.model()
        let table = CaptionTable(classes: model.classEncoder!)
        #expect(table.captions == ["red circle", "blue square", "green triangle"] && table.nullRow == 3)
        let weight = model.classEncoder!.embedding.weight
        try weight.requiringGrad()
        let rows = try table.rows([2, table.nullRow])
        #expect(rows.tokens.shape == [2, 1, 12])
        try rows.tokens.sum().backward()
        let grad = try #require(weight.grad)
        let perRow = try grad.abs().sum(dims: [1]).scalars(as: Float.self)
        #expect(perRow[2] > 0 && perRow[3] > 0 && perRow[0] == 0 && perRow[1] == 0)
    }
}
