import Foundation
import TestSupport
import Testing
import Torch

@testable import ContextDiff

/// img2img and inpainting through the pipeline (tiny untrained model: the properties hold for
/// any network).
@Suite("Starting from a picture: img2img and inpainting")
struct ImageStartTests {
    static func picture() throws -> Tensor {
        try Tensor.rand([1, 3, 16, 16], generator: Generator(seed: 4)) * 2 - 1
    }

    /// Inpainting gives back the kept pixels exactly, changes the repainted ones, and runs every
    /// step at strength 1; with and without r_φ.
    @Test(arguments: [true, false])
    func inpaintingKeepsTheUnmaskedPixels(useContext: Bool) throws {
        let pipeline = try TextToImagePipeline(model: TinyPipeline.model(), textEncoder: TinyPipeline.encoder())
        let image = try Self.picture()
        var values = [Float](repeating: 0, count: 256)
        for y in 4..<12 { for x in 2..<10 { values[y * 16 + x] = 1 } }
        let mask = try Tensor(values, shape: [1, 1, 16, 16])
        var options = TinyPipeline.options(.ddim)
        options.useContext = useContext
        var steps = 0
        let out = try pipeline.generate(
            prompts: ["a red circle"], options: options, start: ImageStart(image: image, mask: mask),
            progress: { p in steps = p.completed; return true }
        ).images
        #expect(steps == options.steps)
        let keep = try (-mask + 1).expanded([2, 3, 16, 16])
        #expect(try ((out - image) * keep).abs().max().item() == 0, "kept pixels changed")
        #expect(try ((out - image) * mask).abs().max().item() > 0.05, "repainted pixels did not change")
    }

    /// img2img runs the last ⌊n·strength⌋ steps; a small strength stays near the picture, a large
    /// one moves further; the same seed gives the same images.
    @Test func img2imgRunsTheStrengthsShareOfTheSteps() throws {
        let pipeline = try TextToImagePipeline(model: TinyPipeline.model(), textEncoder: TinyPipeline.encoder())
        let image = try Self.picture()
        var options = TinyPipeline.options(.ddim, steps: 10)
        var distances: [Double] = []
        for strength in [0.2, 0.9] {
            var steps = 0
            let out = try pipeline.generate(
                prompts: ["a red circle"], options: options, start: ImageStart(image: image, strength: strength),
                progress: { p in steps = p.total; return true }
            ).images
            #expect(steps == Int(10 * strength))
            distances.append(try (out - image).square().mean().item())
            let again = try pipeline.generate(prompts: ["a red circle"], options: options, start: ImageStart(image: image, strength: strength)).images
            #expect(try (out - again).abs().max().item() == 0)
        }
        #expect(distances[0] < distances[1], "\(distances)")
        // DPM-Solver++ starts part-way too.
        options.sampler = .dpmpp
        _ = try pipeline.generate(prompts: ["a red circle"], options: options, start: ImageStart(image: image, strength: 0.5))
    }

    @Test func badStartsAreTypedErrors() throws {
        let pipeline = try TextToImagePipeline(model: TinyPipeline.model(), textEncoder: TinyPipeline.encoder())
        let options = TinyPipeline.options(.ddim)
        let image = try Self.picture()
        for (start, text) in [
            (ImageStart(image: image, strength: 0), "strength"),
            (ImageStart(image: image, strength: 1.5), "strength"),
            (ImageStart(image: image, strength: 0.1), "runs no step"),
            (ImageStart(image: try Tensor.zeros([1, 3, 8, 8])), "init image"),
            (ImageStart(image: image, mask: try Tensor.zeros([1, 3, 16, 16])), "mask"),
        ] {
            #expect(throws: PipelineError.self, "\(text)") {
                try pipeline.generate(prompts: ["a red circle"], options: options, start: start)
            }
            do { _ = try pipeline.generate(prompts: ["a red circle"], options: options, start: start) } catch {
                #expect("\(error)".contains(text), "\(error)")
            }
        }
    }
}
