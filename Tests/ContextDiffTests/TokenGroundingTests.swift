import ContextDiff
import Foundation
import NN
import Testing
import TestSupport
import Torch

@Suite("Token grounding loss")
struct TokenGroundingTests {
    /// Golden values on hand-made maps: 2×2 queries, 3 tokens, one object (token 1) in the left
    /// column. All of token 1's attention inside its box costs 0; spread evenly, half of it is
    /// outside: (1 − ½)² = ¼. Other tokens, dropped rows and positions past the tokens do not count.
    @Test func goldenValues() throws {
        let left = GroundedObject(tokens: [1, 7], minX: 0, minY: 0, maxX: 0.5, maxY: 1)
        #expect(left.cells(resolution: 2) == [true, false, true, false])
        func map(_ weightsOfToken1: [Float]) throws -> Tensor {
            // [B·heads = 1, N = 4, M = 3]; each row sums to 1 over the tokens.
            var values: [Float] = []
            for w in weightsOfToken1 { values += [(1 - w) / 2, w, (1 - w) / 2] }
            return try Tensor(values, shape: [1, 4, 3])
        }
        let site = AttentionSite(layer: "", kind: .crossAttention, resolution: 2)
        let inside = try TokenGrounding.loss(maps: [(site, map([0.9, 0, 0.8, 0]))], objects: [[left]]).item()
        #expect(abs(inside) < 1e-7)
        let even = try TokenGrounding.loss(maps: [(site, map([0.5, 0.5, 0.5, 0.5]))], objects: [[left]]).item()
        #expect(abs(even - 0.25) < 1e-6)
        let outside = try TokenGrounding.loss(maps: [(site, map([0, 0.6, 0, 0.6]))], objects: [[left]]).item()
        #expect(abs(outside - 1) < 1e-6)
        // Two layers average; a row without objects (a dropped caption) adds nothing.
        let both = try TokenGrounding.loss(
            maps: [(site, Tensor.cat([map([0.5, 0.5, 0.5, 0.5]), map([0, 0.6, 0, 0.6])])),
                   (site, Tensor.cat([map([0.9, 0, 0.8, 0]), map([0, 0.6, 0, 0.6])]))],
            objects: [[left], []]).item()
        #expect(abs(both - (0.25 + 0) / 2) < 1e-6)
        #expect(try TokenGrounding.loss(maps: [], objects: [[left]]).item() == 0)
        #expect(throws: ModuleError.self) { try TokenGrounding.loss(maps: [(site, Tensor.zeros([1, 3, 3]))], objects: [[left]]) }
    }

    /// Each object's words are found in caption order, so the same colour twice goes to the
    /// object the caption names at that point; a missing word gives nil.
    @Test func tokenPositionsFollowTheCaption() throws {
        let tokenizer = try WordLevelTokenizer(words: ["a", "red", "circle", "to", "the", "left", "of", "square", "small"])
        let ids = tokenizer.encode("a red circle to the left of a red square")
        let pieces = { (w: String) in Array(tokenizer.encode(w).dropFirst().dropLast()) }
        let found = TokenGrounding.tokenPositions(ids: ids, objects: [["red", "circle"], ["red", "square"]], pieces: pieces)
        #expect(found == [[2, 3], [9, 10]])
        #expect(TokenGrounding.tokenPositions(ids: ids, objects: [["small", "red", "circle"]], pieces: pieces) == nil)
    }

    /// The recorder hands the loss differentiable maps: minimising the grounding loss alone
    /// through a tiny U-Net's cross-attention drives it down, and with the recorder the U-Net
    /// computes what it computes without one.
    @Test func groundingLossTrainsTheCrossAttention() throws {
        try Torch.withSeed(12) {
            let unet = try UNet(TinyConfigs.unet)
            let x = try Tensor.randn([2, 3, 16, 16], generator: Generator(seed: 2))
            let t = try Tensor([Int64(100), 600], shape: [2])
            let c = try TinyConfigs.condition(batch: 2)
            let objects: [[GroundedObject]] = [
                [GroundedObject(tokens: [1], minX: 0, minY: 0, maxX: 0.5, maxY: 0.5), GroundedObject(tokens: [2], minX: 0.5, minY: 0.5, maxX: 1, maxY: 1)],
                [GroundedObject(tokens: [0, 1], minX: 0.5, minY: 0, maxX: 1, maxY: 1)],
            ]
            let plain = try Torch.withNoGrad { try unet(x, timesteps: t, condition: c) }
            let recorded = try Torch.withNoGrad {
                try unet(x, timesteps: t, condition: c, video: VideoLayout(frames: 1, selfAttention: .perFrame, control: CrossAttentionRecorder()))
            }
            #expect(try TestSupport.relativeDiff(recorded, plain) < 1e-5)

            let crossAttentionLayers = unet.transformers.filter { $0.block.crossAttention != nil }.count
            try unet.requireGrad()
            let optimizer = try AdamW(parameters: unet.parameters(), learningRate: 3e-3, weightDecay: 0)
            var losses: [Double] = []
            for _ in 0..<25 {
                let recorder = CrossAttentionRecorder()
                _ = try unet(x, timesteps: t, condition: c, video: VideoLayout(frames: 1, selfAttention: .perFrame, control: recorder))
                #expect(recorder.maps.count == crossAttentionLayers && crossAttentionLayers == 7)
                let loss = try TokenGrounding.loss(maps: recorder.maps, objects: objects)
                losses.append(try loss.item())
                try optimizer.zeroGrad()
                try loss.backward()
                try optimizer.step()
            }
            #expect(losses[0] > 0.2)
            #expect(losses.last! < 0.5 * losses[0], "grounding loss \(losses[0]) → \(losses.last!)")
        }
    }
}
