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

    /// After a step, the kept region is the picture taken down Eq. 3 (r_φ included) to the level
    /// the sample reached, the repainted region the sample; after the last step, the picture.
    @Test func theConstraintPutsTheForwardMarginalBackInTheKeptRegion() throws {
        let schedule = try NoiseSchedule(NoiseScheduleConfig())
        let sampler = try DDIMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: .sample))
        let image = try Self.picture()
        let noise = try Tensor.randn([1, 3, 16, 16], generator: Generator(seed: 9))
        var values = [Float](repeating: 0, count: 256)
        for i in 0..<128 { values[i] = 1 }  // repaint the top half
        let mask = try Tensor(values, shape: [1, 1, 16, 16])
        let r = ClosureContext { x0, t in try x0.sin() * (0.5 + Double(t) / 1000) }
        let begin = try ImageStart(image: image, strength: 0.5, mask: mask).begin(sampler: sampler, noise: noise, context: r)
        #expect(begin.firstStep == 5)
        let process = ContextualDiffusion(schedule: schedule)
        let t0 = sampler.timesteps[5]
        let start = try process.marginal(x0: image, timestep: t0, noise: noise, context: r.context(x0: image, timestep: t0))
        #expect(try (begin.sample - start).abs().max().item() == 0)
        let x = try Tensor.randn([1, 3, 16, 16], generator: Generator(seed: 10))
        let constraint = try #require(begin.constraint)
        let t = sampler.timesteps[6]
        let kept = try process.marginal(x0: image, timestep: t, noise: noise, context: r.context(x0: image, timestep: t))
        let out = try constraint(x, t)
        let keep = try (-mask + 1).expanded([1, 3, 16, 16])
        #expect(try ((out - kept) * keep).abs().max().item() < 1e-6)
        #expect(try ((out - x) * mask.expanded([1, 3, 16, 16])).abs().max().item() == 0)
        #expect(try ((constraint(x, nil) - image) * keep).abs().max().item() == 0)
    }

    /// img2img runs the last ⌊n·strength⌋ steps (where it starts is checked above); the same seed
    /// gives the same images.
    @Test func img2imgRunsTheStrengthsShareOfTheSteps() throws {
        let pipeline = try TextToImagePipeline(model: TinyPipeline.model(), textEncoder: TinyPipeline.encoder())
        let image = try Self.picture()
        var options = TinyPipeline.options(.ddim, steps: 10)
        for strength in [0.2, 0.9] {
            var steps = 0
            let out = try pipeline.generate(
                prompts: ["a red circle"], options: options, start: ImageStart(image: image, strength: strength),
                progress: { p in steps = p.total; return true }
            ).images
            #expect(steps == Int(10 * strength))
            let again = try pipeline.generate(prompts: ["a red circle"], options: options, start: ImageStart(image: image, strength: strength)).images
            #expect(try (out - again).abs().max().item() == 0)
        }
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
