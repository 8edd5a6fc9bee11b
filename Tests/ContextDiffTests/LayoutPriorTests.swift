import ContextDiff
import Foundation
import NN
import Testing
import TestSupport
import Torch

@Suite("Layout prior")
struct LayoutPriorTests {
    static let left = GroundedObject(tokens: [1, 2], minX: 0, minY: 0.25, maxX: 0.5, maxY: 0.75)

    /// The target puts each object's box on its words (centre and size), gates exactly those
    /// words, ignores positions past the caption, and marks unknown rows; the canvas paints a
    /// token's projected state inside its box and nothing outside it or for gate 0.
    @Test func targetAndCanvasGoldenValues() throws {
        let far = GroundedObject(tokens: [3, 9], minX: 0.5, minY: 0, maxX: 1, maxY: 0.5)
        let target = try LayoutTarget(objects: [[Self.left, far], nil, []], tokens: 5)
        #expect(target.gates.shape == [3, 5])
        #expect(try target.gates.scalars(as: Float.self) == [0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(try target.known.scalars(as: Float.self) == [1, 0, 1])
        #expect(try target.boxes.select(dim: 0, 0).select(dim: 0, 1).scalars(as: Float.self) == [0.25, 0.5, 0.5, 0.5])
        #expect(try target.boxes.select(dim: 0, 0).select(dim: 0, 3).scalars(as: Float.self) == [0.75, 0.25, 0.5, 0.5])

        try Torch.withSeed(1) {
            let prior = try LayoutPrior(LayoutPriorConfig(layers: 1, width: 8, heads: 2, channels: 3, maxTokens: 5), contextDim: 12, outputChannels: 4)
            let condition = try TinyConfigs.condition(batch: 3, length: 5)
            let canvas = try Torch.withNoGrad {
                try prior.canvas(condition, boxes: target.boxes, gates: target.gates * target.known.unsqueezed(1), size: 16)
            }
            #expect(canvas.shape == [3, 3, 16, 16])
            let values = try Torch.withNoGrad { try prior.value(condition.tokens) }  // [B, T, C]
            let words = try (values.select(dim: 0, 0).select(dim: 0, 1) + values.select(dim: 0, 0).select(dim: 0, 2)).scalars(as: Float.self)
            func pixel(_ b: Int, _ y: Int, _ x: Int) throws -> [Float] {
                try canvas.select(dim: 0, b).select(dim: 1, y).select(dim: 1, x).scalars(as: Float.self)
            }
            // Row 0 at pixel (y 8, x 2), inside the left object's box: the words' states times the
            // soft box's weight there, a product of logistic edges half a pixel wide.
            func edge(_ d: Double) -> Double { 1 / (1 + Foundation.exp(-d / (0.5 / 16))) }
            let (u, v) = (2.5 / 16, 8.5 / 16)
            let weight = edge(u - 0) * edge(0.5 - u) * edge(v - 0.25) * edge(0.75 - v)
            #expect(weight > 0.98 && weight < 0.999)
            for (a, b) in zip(try pixel(0, 8, 2), words) { #expect(abs(Double(a) - weight * Double(b)) < 1e-5 * max(1, abs(Double(b)))) }
            // Outside both boxes (bottom right), and unknown or object-free rows: empty.
            #expect(try pixel(0, 14, 13).allSatisfy { abs($0) < 1e-3 })
            #expect(try canvas.select(dim: 0, 1).abs().max().item() == 0)
            #expect(try canvas.select(dim: 0, 2).abs().max().item() == 0)
            #expect(throws: ModuleError.self) {
                try prior.canvas(condition, boxes: target.boxes.slice(dim: 1, 0, 4), gates: target.gates, size: 16)
            }
        }
    }

    /// A new prior adds nothing (its canvas convolution is zero); once it is non-zero the output
    /// depends on the layout, predicted or given, unless painting the predicted one is off. The config round-trips and is absent from
    /// older configs; too many tokens is a clear error.
    @Test func isOptionalAndStartsAsTheIdentity() throws {
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(TinyConfigs.unet)) as! [String: Any]
        #expect(json["layout_prior"] == nil)
        var config = TinyConfigs.unet
        config.layoutPrior = LayoutPriorConfig(layers: 1, width: 8, heads: 2, channels: 3, maxTokens: 6)
        json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(config)) as! [String: Any]
        #expect((json["layout_prior"] as? [String: Any])?["max_tokens"] as? Int == 6)
        #expect(try JSONDecoder().decode(UNetConfig.self, from: JSONSerialization.data(withJSONObject: json)) == config)
        config.layoutPrior?.heads = 3
        #expect(throws: ModuleError.self) { try config.validate() }
        config.layoutPrior?.heads = 2

        // Same weights apart from the prior (copied, not seeded: other tests draw from the
        // global generator concurrently).
        let with = try UNet(config)
        let without = try UNet(TinyConfigs.unet)
        var state = with.stateDict()
        let priorKeys = state.keys.filter { $0.hasPrefix("layout_prior.") }
        #expect(priorKeys.contains("layout_prior.canvas_in.weight") && priorKeys.contains("layout_prior.head.weight"))
        for key in priorKeys { state[key] = nil }
        try without.load(state)

        let x = try Tensor.randn([2, 3, 16, 16], generator: Generator(seed: 1))
        let t = try Tensor([Int64(10), 700], shape: [2])
        let c = try TinyConfigs.condition(batch: 2)
        let (a, b) = try Torch.withNoGrad { (try with(x, timesteps: t, condition: c), try without(x, timesteps: t, condition: c)) }
        #expect(try (a - b).abs().max().item() == 0)

        let prior = try #require(with.layoutPrior)
        try Torch.withNoGrad { try prior.canvasIn.weight.copy(from: Tensor.randn(prior.canvasIn.weight.shape) * 0.5) }
        let target = try LayoutTarget(objects: [[Self.left], [Self.left]], tokens: 5)
        let moved = try Torch.withNoGrad { try with(x, timesteps: t, condition: c) }
        let given = try Torch.withNoGrad { try with(x, timesteps: t, condition: c, layout: target) }
        let empty = try LayoutTarget(objects: [[], []], tokens: 5)
        let none = try Torch.withNoGrad { try with(x, timesteps: t, condition: c, layout: empty) }
        #expect(try (moved - b).abs().max().item() > 1e-3)
        #expect(try (given - moved).abs().max().item() > 1e-3)
        #expect(try TestSupport.relativeDiff(none, b) < 1e-5, "an empty layout paints nothing")
        // Not painting the predicted layout (a video edit's setting) is the U-Net without the prior;
        // a given layout is still painted. Inflating for video turns painting off.
        with.paintsPredictedLayout = false
        let unpainted = try Torch.withNoGrad { try with(x, timesteps: t, condition: c) }
        let stillGiven = try Torch.withNoGrad { try with(x, timesteps: t, condition: c, layout: target) }
        #expect(try (unpainted - b).abs().max().item() == 0)
        #expect(try (stillGiven - given).abs().max().item() == 0)
        with.paintsPredictedLayout = true
        #expect(try VideoDiffusionModel.inflated(with).paintsPredictedLayout == false)
        // A sampling run's condition (with an attention cache) paints the predicted layout once:
        // the same output as without the cache, and the first call's canvas is reused afterwards.
        let cached = c.cachingAttention()
        let first = try Torch.withNoGrad { try with(x, timesteps: t, condition: cached) }
        #expect(try TestSupport.relativeDiff(first, moved) < 1e-5)
        try Torch.withNoGrad { try prior.canvasIn.weight.zero() }
        let reused = try Torch.withNoGrad { try with(x, timesteps: t, condition: cached) }
        let fresh = try Torch.withNoGrad { try with(x, timesteps: t, condition: c) }
        #expect(try TestSupport.relativeDiff(reused, first) < 1e-5)
        #expect(try (fresh - b).abs().max().item() == 0)
        let long = try TinyConfigs.condition(batch: 2, length: 7)
        #expect(throws: ModuleError.self) { try with(x, timesteps: t, condition: long) }
    }

    /// The supervised loss teaches a rule that needs the tokens to interact: in "W₁ REL W₂", the first word's box is in the left half for REL = "left" and in
    /// the right half for REL = "right" (and the second word's the other way), for word pairs
    /// the training never showed in that order. Gates learn which tokens name objects.
    @Test func learnsWhichObjectGoesWhereFromTheRelationWord() throws {
        try Torch.withSeed(19) {
            let g = Generator(seed: 29)
            let dim = 12
            let words = try (0..<8).map { _ in try Tensor.randn([dim], generator: g) }
            let relations = try (0..<2).map { _ in try Tensor.randn([dim], generator: g) }
            let (cls, sep) = (try Tensor.randn([dim], generator: g), try Tensor.randn([dim], generator: g))
            // (first word, second word, relation): relation 0 puts the first word left, 1 right.
            var all: [(Int, Int, Int)] = []
            for w1 in 0..<8 { for w2 in 0..<8 where w1 != w2 { for r in 0..<2 { all.append((w1, w2, r)) } } }
            let heldOut = all.filter { ($0.0 + $0.1 + $0.2) % 5 == 0 }
            let train = all.filter { ($0.0 + $0.1 + $0.2) % 5 != 0 }
            func batch(_ items: [(Int, Int, Int)]) throws -> (Condition, LayoutTarget) {
                let tokens = try Tensor.stack(items.map { try Tensor.stack([cls, words[$0.0], relations[$0.2], words[$0.1], sep]) })
                let objects = items.map { w1, w2, r -> [GroundedObject]? in
                    let (a, b) = r == 0 ? (0.0, 0.5) : (0.5, 0.0)
                    return [GroundedObject(tokens: [1], minX: a, minY: 0.3, maxX: a + 0.5, maxY: 0.7),
                            GroundedObject(tokens: [3], minX: b, minY: 0.3, maxX: b + 0.5, maxY: 0.7)]
                }
                let condition = try Condition(
                    tokens: tokens, mask: Tensor.ones([items.count, 5]).to(.bool), pooled: Tensor.zeros([items.count, dim]))
                return (condition, try LayoutTarget(objects: objects, tokens: 5))
            }
            let prior = try LayoutPrior(LayoutPriorConfig(layers: 2, width: 32, heads: 4, channels: 2, maxTokens: 5), contextDim: dim, outputChannels: 4)
            for p in prior.parameters() { try p.requiringGrad() }
            let optimizer = try AdamW(parameters: prior.parameters(), learningRate: 3e-3, weightDecay: 0)
            let (trainCondition, trainTarget) = try batch(train)
            var first = 0.0, last = 0.0
            for step in 0..<300 {
                let loss = try prior.loss(trainCondition, target: trainTarget)
                if step == 0 { first = try loss.item() }
                last = try loss.item()
                try optimizer.zeroGrad()
                try loss.backward()
                try optimizer.step()
            }
            #expect(last < first / 4, "loss \(first) → \(last)")
            let (condition, _) = try batch(heldOut)
            let (boxes, logits) = try Torch.withNoGrad { try prior.predict(condition) }
            for (i, item) in heldOut.enumerated() {
                let firstX = try boxes.select(dim: 0, i).select(dim: 0, 1).select(dim: 0, 0).item()
                let secondX = try boxes.select(dim: 0, i).select(dim: 0, 3).select(dim: 0, 0).item()
                if item.2 == 0 {
                    #expect(firstX < 0.4 && secondX > 0.6, "\(item): \(firstX), \(secondX)")
                } else {
                    #expect(firstX > 0.6 && secondX < 0.4, "\(item): \(firstX), \(secondX)")
                }
                let gates = try logits.select(dim: 0, i).scalars(as: Float.self)
                #expect(gates[1] > 0 && gates[3] > 0 && gates[0] < 0 && gates[2] < 0 && gates[4] < 0, "\(item): \(gates)")
            }
        }
    }

    /// With a mixture the prior learns p(box | caption), not one box: for one caption whose
    /// object lies anywhere in a band and at one of two sizes, samples spread like the data, one
    /// object's words share one box, a seed reproduces its layout and another seed gives another;
    /// the typical box is the same for every row.
    @Test func mixtureLearnsTheSpreadOfBoxesAndSamplesPerSeed() throws {
        try Torch.withSeed(23) {
            let g = Generator(seed: 31)
            let dim = 12, n = 256
            let words = try Tensor.stack((0..<4).map { _ in try Tensor.randn([dim], generator: g) })  // [CLS] red circle [SEP]
            let tokens = try words.unsqueezed(0).expanded([n, 4, dim]).contiguous()
            let condition = try Condition(tokens: tokens, mask: Tensor.ones([n, 4]).to(.bool), pooled: Tensor.zeros([n, dim]))
            let cx = try Tensor.rand([n], generator: g).scalars(as: Float.self).map { 0.2 + 0.6 * Double($0) }
            let cy = try Tensor.rand([n], generator: g).scalars(as: Float.self).map { 0.3 + 0.4 * Double($0) }
            let side = try Tensor.rand([n], generator: g).scalars(as: Float.self).map { $0 < 0.5 ? 0.2 : 0.4 }
            let target = try LayoutTarget(
                objects: (0..<n).map { i in
                    [GroundedObject(tokens: [1, 2], minX: cx[i] - side[i] / 2, minY: cy[i] - side[i] / 2, maxX: cx[i] + side[i] / 2, maxY: cy[i] + side[i] / 2)]
                }, tokens: 4)
            let prior = try LayoutPrior(
                LayoutPriorConfig(layers: 1, width: 16, heads: 2, channels: 2, maxTokens: 4, mixtureComponents: 4), contextDim: dim, outputChannels: 4)
            for p in prior.parameters() { try p.requiringGrad() }
            let optimizer = try AdamW(parameters: prior.predictorParameters, learningRate: 1e-2, weightDecay: 0)
            var first = 0.0, last = 0.0
            for step in 0..<300 {
                let loss = try prior.loss(condition, target: target)
                if step == 0 { first = try loss.item() }
                last = try loss.item()
                try optimizer.zeroGrad()
                try loss.backward()
                try optimizer.step()
            }
            #expect(last < first - 0.05, "loss \(first) → \(last)")

            let drawn = try Torch.withNoGrad { try prior.sample(condition, generator: Generator(seed: 5)) }
            let boxes = try drawn.boxes.to(.float64).contiguous().scalars(as: Double.self)  // [n, 4, 4]
            func box(_ row: Int, _ token: Int) -> [Double] { Array(boxes[(row * 4 + token) * 4..<(row * 4 + token) * 4 + 4]) }
            #expect((0..<n).allSatisfy { box($0, 1) == box($0, 2) }, "one object's words share one box")
            func std(_ v: [Double]) -> Double {
                let m = v.reduce(0, +) / Double(v.count)
                return (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count)).squareRoot()
            }
            let sampledX = (0..<n).map { box($0, 1)[0] }, sampledW = (0..<n).map { box($0, 1)[2] }
            let dataX = std(cx), dataW = std(side)
            #expect(std(sampledX) > 0.6 * dataX && std(sampledX) < 1.5 * dataX, "centre spread \(std(sampledX)) vs data \(dataX)")
            #expect(std(sampledW) > 0.5 * dataW, "size spread \(std(sampledW)) vs data \(dataW)")
            #expect((0..<n).allSatisfy { box($0, 1)[0] >= box($0, 1)[2] / 2 - 1e-6 && box($0, 1)[0] <= 1 - box($0, 1)[2] / 2 + 1e-6 })
            // Reproducible per seed; another seed, another layout; the typical box never varies.
            let again = try Torch.withNoGrad { try prior.sample(condition, generator: Generator(seed: 5)) }
            let other = try Torch.withNoGrad { try prior.sample(condition, generator: Generator(seed: 6)) }
            #expect(try TestSupport.maxAbsDiff(again.boxes, drawn.boxes) == 0)
            #expect(try TestSupport.maxAbsDiff(other.boxes, drawn.boxes) > 0.05)
            let typical = try Torch.withNoGrad { try prior.predict(condition).boxes }
            #expect(std(try typical.select(dim: 1, 1).select(dim: 1, 0).to(.float64).scalars(as: Double.self)) < 1e-6)
            // A prior without a mixture cannot sample: a clear error.
            let plain = try LayoutPrior(LayoutPriorConfig(layers: 1, width: 16, heads: 2, channels: 2, maxTokens: 4), contextDim: dim, outputChannels: 4)
            #expect(throws: ModuleError.self) { try plain.sample(condition, generator: Generator(seed: 5)) }
        }
    }
}
