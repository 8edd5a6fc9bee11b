import Foundation
import NN
import TestSupport
import Testing
import Torch

@testable import ContextDiff

/// A tiny untrained ContextDiff model (16×16, condition width 12) and a learned text encoder.
enum TinyPipeline {
    static func model(seed: UInt64 = 5, maxTokens: Int = 32) throws -> ContextDiffModel {
        return try Torch.withSeed(seed) {
            return ContextDiffModel(
                unet: try UNet(TinyConfigs.unet), adapter: try ContextAdapter(TinyConfigs.adapter),
                schedule: try NoiseSchedule(NoiseScheduleConfig()), textEncoder: TextEncoderSpec(kind: "learned", maxTokens: maxTokens))
        }
    }

    static func encoder() throws -> LearnedTextEncoder {
        return try Torch.withSeed(6) {
            return try TinyVideo.textEncoder()
        }
    }

    static func options(_ sampler: SamplerKind, steps: Int = 6, seed: UInt64 = 3) -> GenerationOptions {
        var o = GenerationOptions()
        o.sampler = sampler
        o.steps = steps
        o.seed = seed
        o.imagesPerPrompt = 2
        return o
    }
}

@Suite("Conditions and pipelines")
struct PipelineTests {
    /// Class labels encode to the same shape as text: one token, a mask, a pooled vector; the
    /// null class is the unconditional row; the networks take the result unchanged.
    @Test func classLabelsAreConditionsTheNetworksRead() throws {
        try Torch.withSeed(1) {
            let encoder = try ClassLabelEncoder(classes: 4, width: 12)
            let encoded = try encoder.encode([0, 3, 3]).condition
            #expect(encoded.tokens.shape == [3, 1, 12] && encoded.mask.shape == [3, 1] && encoded.pooled.shape == [3, 12])
            #expect(try encoded.mask.to(.int64).sum().item() == 3)
            #expect(try TestSupport.relativeDiff(encoded.tokens.squeezed(1), encoded.pooled) == 0)
            #expect(try TestSupport.relativeDiff(encoded.pooled.slice(dim: 0, 1, 2), encoded.pooled.slice(dim: 0, 2, 3)) == 0)
            #expect(try TestSupport.relativeDiff(encoded.pooled.slice(dim: 0, 0, 1), encoded.pooled.slice(dim: 0, 1, 2)) > 0.1)
            let null = try encoder.unconditional(count: 2)
            #expect(try TestSupport.relativeDiff(null.pooled.slice(dim: 0, 0, 1), encoder.embedding.weight.slice(dim: 0, 4, 5)) == 0)
            #expect(throws: ConditionError.unknownClass(label: 4, classes: 4)) { try encoder.encode([4]) }
            #expect(throws: ConditionError.unknownClass(label: -1, classes: 4)) { try encoder.encode([-1]) }
            #expect(throws: ConditionError.empty("class label list")) { try encoder.encode([]) }

            let model = try TinyPipeline.model()
            let x = try Tensor.randn([3, 3, 16, 16], generator: Generator(seed: 2))
            let t = try Tensor.full([3], value: 500, dtype: .int64)
            let (u, r) = try Torch.withNoGrad {
                (try model.unet(x, timesteps: t, condition: encoded), try model.adapter!(x, timesteps: t, condition: encoded))
            }
            #expect(u.shape == x.shape && r.shape == x.shape)
            // With a text condition of the same width the same networks run: one home for both.
            let text = try TextConditionEncoder(textEncoder: TinyPipeline.encoder(), maxTokens: 32).encode(["a red circle"])
            #expect(text.condition.tokens.shape[2] == encoder.width)
        }
    }

    /// A prompt longer than the model's limit is truncated, and the notice comes back with the
    /// result of that call only (the pipeline keeps nothing between calls).
    @Test func noticesComeBackPerCall() throws {
        let pipeline = try TextToImagePipeline(model: TinyPipeline.model(maxTokens: 5), textEncoder: TinyPipeline.encoder())
        let long = try pipeline.generate(prompts: ["a blue square moves right"], options: TinyPipeline.options(.ddim, steps: 2))
        #expect(long.notices.count == 1 && long.notices[0].contains("truncated to 5 tokens"))
        let short = try pipeline.generate(prompts: ["a red circle"], options: TinyPipeline.options(.ddim, steps: 2))
        #expect(short.notices.isEmpty)
        #expect(throws: PipelineError.emptyPrompt) { try pipeline.generate(prompts: [" "], options: .init()) }
    }

    /// Every registered sampler runs through the pipeline, seeded and reproducible; the
    /// multistep solver gives its own result (its history is per call).
    @Test func everyRegisteredSamplerGenerates() throws {
        let pipeline = try TextToImagePipeline(model: TinyPipeline.model(), textEncoder: TinyPipeline.encoder())
        var outputs: [SamplerKind: Tensor] = [:]
        for kind in SamplerKind.allCases {
            var phases: Set<String> = []
            let first = try pipeline.generate(prompts: ["a red circle"], options: TinyPipeline.options(kind)) {
                phases.insert($0.phase)
                return true
            }
            let again = try pipeline.generate(prompts: ["a red circle"], options: TinyPipeline.options(kind))
            #expect(first.images.shape == [2, 3, 16, 16], "\(kind)")
            #expect(try first.images.isNaN().any().item() == 0, "\(kind)")
            #expect(try TestSupport.relativeDiff(first.images, again.images) == 0, "\(kind): same seed, same images")
            #expect(phases == ["sampling"], "\(kind)")
            outputs[kind] = first.images
        }
        #expect(try TestSupport.relativeDiff(outputs[.dpmpp]!, outputs[.ddim]!) > 1e-4)
        // An option the sampler does not read is refused, naming it.
        var bad = TinyPipeline.options(.dpmpp)
        bad.eta = 0.5
        #expect(throws: PipelineError.self) { try pipeline.generate(prompts: ["a red circle"], options: bad) }
    }

    /// The model knows its device and moves as a whole; a move libtorch cannot make (no CUDA in
    /// this build) is a typed error that leaves the model where it was, still generating the
    /// same images. Conditions follow the model's device.
    @Test func theModelMovesAsAWholeAndSamplingFollowsIt() throws {
        let model = try TinyPipeline.model()
        let pipeline = try TextToImagePipeline(model: model, textEncoder: TinyPipeline.encoder())
        #expect(try model.device == .cpu)
        let before = try pipeline.generate(prompts: ["a red circle"], options: TinyPipeline.options(.ddim, steps: 3))
        try model.to(.cpu)
        #expect(throws: TorchError.self) { try model.to(.cuda(99)) }
        #expect(try model.device == .cpu)
        #expect(try model.adapter?.device == .cpu)
        let after = try pipeline.generate(prompts: ["a red circle"], options: TinyPipeline.options(.ddim, steps: 3))
        #expect(try TestSupport.relativeDiff(before.images, after.images) == 0)
        let condition = try pipeline.condition(for: ["a red circle"]).condition
        let moved = try condition.to(.cpu)
        #expect(moved.tokens === condition.tokens, "already there: the same tensors")
    }

    /// A container serves concurrent callers one at a time, each getting what a lone call gets.
    @Test func containerServesConcurrentCalls() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("container-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try TinyPipeline.model().save(to: dir)
        let container = try ModelContainer(directory: dir) { try TinyPipeline.encoder() }
        #expect(container.index.contextual)
        let seeds: [UInt64] = [1, 2, 3, 1]
        let results = try await withThrowingTaskGroup(of: (Int, GeneratedImages).self) { group in
            for (i, seed) in seeds.enumerated() {
                group.addTask {
                    (i, try await container.generate(prompts: ["a red circle"], options: TinyPipeline.options(.dpmpp, seed: seed)))
                }
            }
            var out: [Int: GeneratedImages] = [:]
            for try await (i, r) in group { out[i] = r }
            return out
        }
        #expect(results[0] == results[3])
        #expect(results[0] != results[1])
        #expect(results[0]!.pixels.count == 2 && results[0]!.pixels[0].count == 16 * 16 * 3 && results[0]!.width == 16)
        let lone = try TextToImagePipeline(model: ContextDiffModel.load(from: dir), textEncoder: TinyPipeline.encoder())
            .generate(prompts: ["a red circle"], options: TinyPipeline.options(.dpmpp, seed: 2))
        #expect(try GeneratedImages(lone) == results[1])
    }

    /// The locator searches the environment override, the working directory, then the checkout.
    @Test func modelLocatorOrder() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("locator-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let checkout = root.appendingPathComponent("repo"), work = root.appendingPathComponent("work")
        let binary = checkout.appendingPathComponent(".build/release/contextdiff")
        for folder in [checkout.appendingPathComponent("models/default"), work, binary.deletingLastPathComponent()] {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        }
        _ = FileManager.default.createFile(atPath: checkout.appendingPathComponent("models/default/model_index.json").path, contents: Data("{}".utf8))
        var locator = ModelLocator(environment: [:], workingDirectory: work, executable: binary)
        #expect(locator.locate(.default)?.standardizedFileURL == checkout.appendingPathComponent("models/default").standardizedFileURL)
        #expect(locator.locate(.clip) == nil)
        try FileManager.default.createDirectory(at: work.appendingPathComponent("models/default"), withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: work.appendingPathComponent("models/default/model_index.json").path, contents: Data("{}".utf8))
        #expect(locator.locate(.default) == work.appendingPathComponent("models/default"))
        locator.environment = ["CONTEXTDIFF_MODEL": "/nowhere/model"]
        #expect(locator.locate(.default)?.path == "/nowhere/model")
    }
}
