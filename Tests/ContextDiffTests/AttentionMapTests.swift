import Foundation
import TestSupport
import Testing
import Torch

@testable import ContextDiff

@Suite("Attention maps (paper App. A)")
struct AttentionMapTests {
    /// One map per step, image, token and pixel; every pixel's maps sum to 1 over the tokens;
    /// recording changes nothing in the images, with and without guidance.
    @Test(arguments: [1.0, 3.0])
    func mapsAreDistributionsOverTokensAndChangeNothing(guidance: Double) throws {
        let pipeline = try TextToImagePipeline(model: TinyPipeline.model(), textEncoder: TinyPipeline.encoder())
        var options = TinyPipeline.options(.ddim)
        options.guidance = guidance
        options.imagesPerPrompt = 1
        let prompts = ["a red circle", "a blue square above a green triangle"]
        let maps = try pipeline.attentionMaps(prompts: prompts, options: options)
        let s = maps.maps.shape
        let tokens = try pipeline.condition(for: prompts).condition.tokens.shape[1]
        #expect(s == [options.steps, 2, tokens, 16, 16], "\(s)")
        #expect(maps.timesteps == (try pipeline.sampler(for: options).timesteps))
        let sums = try maps.maps.sum(dims: [2])
        #expect(try (sums - 1).abs().max().item() < 1e-4)
        let plain = try pipeline.generate(prompts: prompts, options: options).images
        #expect(try TestSupport.relativeDiff(maps.images, plain) <= 1e-4)
        // The conditional rows are recorded: the first step (same x_T, same timestep) gives the
        // same maps with and without guidance.
        var unguided = options
        unguided.guidance = 1
        let reference = try pipeline.attentionMaps(prompts: prompts, options: unguided)
        #expect(try TestSupport.relativeDiff(maps.maps.select(dim: 0, 0), reference.maps.select(dim: 0, 0)) <= 1e-4)
        // A word's map is the sum of its tokens' maps.
        let word = try maps.word([1, 2], image: 1)
        let byHand = try maps.maps.select(dim: 1, 1).select(dim: 1, 1) + maps.maps.select(dim: 1, 1).select(dim: 1, 2)
        #expect(try (word - byHand).abs().max().item() == 0)
    }
}
