import Datasets
import Foundation
import Testing

/// `train-sr`, `generate` through a cascade and its errors, on tiny models (16 → 32 px).
@Suite("End to end: the cascade", .serialized)
struct CascadeCLITests {
    static let recipe = """
        {"unet": {"low_resolution_size": 16, "sample_size": 32, "base_channels": 8, "channel_multipliers": [1, 2],
                  "blocks_per_level": [1, 1], "cross_attention_resolutions": [16], "self_attention_resolutions": [],
                  "heads": 2, "norm_groups": 4},
         "benchmark": {"image_size": 16},
         "training": {"training": {"steps": 3, "batch_size": 2, "checkpoint_every": 2, "warmup_steps": 1}, "crop_size": 16},
         "dataset_size": 20, "sampling_noise_level": 50}
        """

    @Test func aTinyStageTrainsResumesAndUpsamplesTheBaseModel() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let recipe = root.appendingPathComponent("sr.json")
        try Data(Self.recipe.utf8).write(to: recipe)
        let stage = root.appendingPathComponent("sr")
        let trained = try CLI.run(["train-sr", "-o", stage.path, "--config", recipe.path, "--threads", "1"])
        #expect(trained.status == 0, "\(trained.stderr)")
        #expect(trained.stderr.contains("16 → 32 stage"))
        #expect(FileManager.default.fileExists(atPath: stage.appendingPathComponent("samples/step-0000003.png").path))
        #expect(FileManager.default.fileExists(atPath: stage.appendingPathComponent("loss.svg").path))
        let again = try CLI.run(["train-sr", "-o", stage.path, "--config", recipe.path, "--threads", "1"])
        #expect(again.status == 0 && again.stderr.contains("resumed from step 3"), "\(again.stderr)")
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: stage.appendingPathComponent("model/model_index.json"))) as? [String: Any]
        #expect(index?["format"] as? String == "contextdiff-superres" && index?["sampling_noise_level"] as? Int == 50)
        #expect((index?["notes"] as? [String: String])?["command"]?.contains(root.path) == false, "no local paths in the metadata")

        let base = root.appendingPathComponent("base")
        let baseRun = try CLI.run(tinyTrainArguments(base, steps: 2))
        #expect(baseRun.status == 0, "\(baseRun.stderr)")
        let model = base.appendingPathComponent("model").path
        let full = root.appendingPathComponent("full.png"), thumb = root.appendingPathComponent("thumb.png")
        let cascade = try CLI.run(["generate", "a red circle", "--model", model, "--sr-model", stage.appendingPathComponent("model").path,
                                   "--steps", "2", "--sr-steps", "2", "--num-images", "1", "-o", full.path, "--threads", "1"])
        #expect(cascade.status == 0, "\(cascade.stderr)")
        let image = try RGBImage(contentsOf: full)
        #expect(image.width == 32 && image.height == 32)
        let record = try PNGText.read(from: Data(contentsOf: full)).first { $0.key == "parameters" }?.value ?? ""
        #expect(record.contains("Super-resolution: model, 2 steps"), "\(record)")
        let baseOnly = try CLI.run(["generate", "a red circle", "--model", model, "--stages", "base", "--steps", "2",
                                    "--num-images", "1", "-o", thumb.path, "--threads", "1"])
        #expect(baseOnly.status == 0, "\(baseOnly.stderr)")
        #expect(try RGBImage(contentsOf: thumb).width == 16)

        // Asked for and missing, or for another size: an error naming the way out.
        let missing = try CLI.run(["generate", "a red circle", "--model", model, "--stages", "all", "--sr-model", root.appendingPathComponent("nowhere").path, "--steps", "2"])
        #expect(missing.status != 0 && missing.stderr.contains("nowhere"), "\(missing.stderr)")
        let wrong = try CLI.run(["generate", "a red circle", "--model", model, "--sr-model", base.appendingPathComponent("model").path, "--steps", "2"])
        #expect(wrong.status != 0 && wrong.stderr.contains("not 'contextdiff-superres'"), "\(wrong.stderr)")
        let bad = try CLI.run(["generate", "a red circle", "--model", model, "--sr-model", stage.appendingPathComponent("model").path,
                               "--sr-noise-level", "5000", "--steps", "2"])
        #expect(bad.status != 0 && bad.stderr.contains("--sr-noise-level"), "\(bad.stderr)")
        let evaluated = try CLI.run(["evaluate-sr", "--sr-model", stage.appendingPathComponent("model").path, "--num-samples", "2"])
        #expect(evaluated.status != 0 && evaluated.stderr.contains("evaluator reads"), "\(evaluated.stderr)")
    }

    /// The README's main job: the shipped base model and the shipped stage write 128×128 images;
    /// `--stages base` the base model's 32×32.
    @Test func theShippedCascadeWrites128PixelImages() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let full = root.appendingPathComponent("full.png"), thumb = root.appendingPathComponent("thumb.png")
        let cascade = try CLI.run(["generate", "a red circle to the left of a blue square", "--num-images", "1", "-o", full.path, "--threads", "2"])
        #expect(cascade.status == 0, "\(cascade.stderr)")
        let image = try RGBImage(contentsOf: full)
        #expect(image.width == 128 && image.height == 128)
        let record = try PNGText.read(from: Data(contentsOf: full)).first { $0.key == "parameters" }?.value ?? ""
        #expect(record.contains("Model: default") && record.contains("Super-resolution: superres, 20 steps"), "\(record)")
        // The stage keeps the base model's white background white (DPM-Solver++, no per-step clipping).
        #expect(image[2, 2].r > 245 && image[2, 2].g > 245 && image[2, 2].b > 245, "\(image[2, 2])")
        let base = try CLI.run(["generate", "a red circle to the left of a blue square", "--num-images", "1", "--stages", "base", "-o", thumb.path])
        #expect(base.status == 0, "\(base.stderr)")
        #expect(try RGBImage(contentsOf: thumb).width == 32)
    }
}
