import Foundation
import NN
import Torch

/// Shape of a ``LayoutPrior`` (``UNetConfig/layoutPrior``, saved as `unet.layout_prior`).
public struct LayoutPriorConfig: Codable, Sendable, Equatable {
    /// Encoder layers over the text-token states.
    public var layers = 2
    public var width = 128
    public var heads = 4
    /// Channels of the layout canvas given to the U-Net's first convolution.
    public var channels = 16
    /// Most text tokens (the number of learned positions).
    public var maxTokens = 32
    /// Components of a Gaussian mixture over each object's box (``LayoutPrior/sample(_:generator:)``):
    /// p(box | caption) learnt by likelihood, so that a seed draws one layout of the many the
    /// caption allows. nil (absent in older configs): only the typical box is predicted.
    public var mixtureComponents: Int?

    public init(layers: Int = 2, width: Int = 128, heads: Int = 4, channels: Int = 16, maxTokens: Int = 32, mixtureComponents: Int? = nil) {
        self.layers = layers
        self.width = width
        self.heads = heads
        self.channels = channels
        self.maxTokens = maxTokens
        self.mixtureComponents = mixtureComponents
    }

    enum CodingKeys: String, CodingKey {
        case layers, width, heads, channels, maxTokens = "max_tokens", mixtureComponents = "mixture_components"
    }

    public func validate() throws {
        func fail(_ m: String) -> Error { ModuleError.invalidConfiguration("UNet config: layout_prior: \(m)") }
        try ConfigLimits.check(["width": width, "channels": channels, "max_tokens": maxTokens], in: 1...ConfigLimits.size, fail)
        try ConfigLimits.check(["layers": layers], in: 1...ConfigLimits.count, fail)
        if let mixtureComponents { try ConfigLimits.check(["mixture_components": mixtureComponents], in: 1...ConfigLimits.count, fail) }
        try ConfigLimits.check(["heads": heads], in: 1...ConfigLimits.heads, fail)
        guard layers > 0, width > 0, heads > 0, channels > 0, maxTokens > 0 else { throw fail("sizes must be positive") }
        guard width % heads == 0 else { throw fail("width \(width) not divisible by \(heads) heads") }
    }
}

/// Where each caption token's object lies: for every token a box `(cx, cy, w, h)` as fractions of
/// the image side (y down) and a gate (1: the token names an object in that box; 0: it names
/// none). Built from the dataset's exact boxes for training (``LayoutTarget/init(objects:tokens:)``),
/// predicted from the text by ``LayoutPrior/predict(_:)`` when sampling.
public struct LayoutTarget {
    /// `[B, T, 4]`.
    public var boxes: Tensor
    /// `[B, T]` in [0, 1].
    public var gates: Tensor
    /// `[B]`, 1 for rows whose layout is known (0: not supervised, e.g. words not found).
    public var known: Tensor

    public init(boxes: Tensor, gates: Tensor, known: Tensor) {
        self.boxes = boxes
        self.gates = gates
        self.known = known
    }

    /// The rows of `a`, then those of `b` (for a guided batch: unconditional, conditional), the
    /// shorter padded with empty tokens as ``Condition/concatenate(_:_:)`` pads its tokens.
    public static func concatenate(_ a: LayoutTarget, _ b: LayoutTarget) throws -> LayoutTarget {
        let length = max(a.gates.shape[1], b.gates.shape[1])
        let (pa, pb) = (try a.padded(toTokens: length), try b.padded(toTokens: length))
        return LayoutTarget(
            boxes: try Tensor.cat([pa.boxes, pb.boxes]), gates: try Tensor.cat([pa.gates, pb.gates]),
            known: try Tensor.cat([pa.known, pb.known]))
    }

    /// Rows `range`, as views (no copy).
    public func rows(_ range: Range<Int>) throws -> LayoutTarget {
        LayoutTarget(
            boxes: try boxes.slice(dim: 0, range.lowerBound, range.upperBound),
            gates: try gates.slice(dim: 0, range.lowerBound, range.upperBound),
            known: try known.slice(dim: 0, range.lowerBound, range.upperBound))
    }

    /// This layout on `device`.
    public func to(_ device: Device) throws -> LayoutTarget {
        LayoutTarget(boxes: try boxes.to(device), gates: try gates.to(device), known: try known.to(device))
    }

    /// Pads with tokens that name nothing (gate 0) up to `length`.
    public func padded(toTokens length: Int) throws -> LayoutTarget {
        let s = boxes.shape
        guard length > s[1] else { return self }
        return LayoutTarget(
            boxes: try Tensor.cat([boxes, Tensor.zeros([s[0], length - s[1], 4], dtype: boxes.dtype)], dim: 1),
            gates: try Tensor.cat([gates, Tensor.zeros([s[0], length - s[1]], dtype: gates.dtype)], dim: 1), known: known)
    }

    /// The layout of `objects[b]` over `tokens` caption positions; `nil` rows are unknown
    /// (their canvas is empty and they are not supervised), empty rows have no objects.
    public init(objects: [[GroundedObject]?], tokens: Int) throws {
        let b = objects.count
        var boxes = [Float](repeating: 0, count: b * tokens * 4)
        var gates = [Float](repeating: 0, count: b * tokens)
        var known = [Float](repeating: 0, count: b)
        for (row, objs) in objects.enumerated() {
            guard let objs else { continue }
            known[row] = 1
            for o in objs {
                for t in o.tokens where t >= 0 && t < tokens {
                    let i = row * tokens + t
                    gates[i] = 1
                    let box = [(o.minX + o.maxX) / 2, (o.minY + o.maxY) / 2, o.maxX - o.minX, o.maxY - o.minY]
                    for (k, v) in box.enumerated() { boxes[i * 4 + k] = Float(v) }
                }
            }
        }
        self.boxes = try Tensor(boxes, shape: [b, tokens, 4])
        self.gates = try Tensor(gates, shape: [b, tokens])
        self.known = try Tensor(known, shape: [b])
    }
}

/// A text-side layout prior (after LayoutGPT / LLM-grounded diffusion, which plan boxes from the
/// prompt and then draw inside them): a small transformer over the frozen text-token states
/// predicts, for every token, whether it names an object and that object's box; a canvas paints
/// each token's (projected) state into its box; and a zero-initialised convolution adds the
/// canvas to the U-Net's first feature map.
///
/// Why: in "a red circle to the left of a blue square" the diffusion loss says only faintly
/// which object goes where (the objects are a few percent of the pixels, and the layout is
/// decided at noise levels where the loss weights the clean image least), so a U-Net trained on
/// it alone draws the same arrangement for both orders. Here the two halves are learnt
/// separately, each from a direct signal: the boxes from the dataset's exact ones (a supervised
/// loss, ``loss(_:target:)``), and the drawing from the true boxes (the trainer passes them as
/// the canvas, teacher-forced); when sampling the canvas comes from the predicted boxes.
///
/// A new prior's canvas convolution is zero, so a model fine-tuned with one starts out
/// computing what it did before.
public final class LayoutPrior: Module {
    public let config: LayoutPriorConfig
    @CheckpointKey("proj_in") public private(set) var projIn: Linear
    @CheckpointKey("pos_embed") public private(set) var posEmbed: Tensor
    public let layers: [TransformerEncoderLayer]
    public let norm: LayerNorm
    /// Per token: `(cx, cy, w, h)` logits and the gate logit.
    public let head: Linear
    /// Each token's state projected to the canvas channels.
    public let value: Linear
    @CheckpointKey("canvas_in") public private(set) var canvasIn: Conv2d
    /// Per token and mixture component: a weight logit, the mean and the log-std of the box in
    /// logit coordinates (``LayoutPriorConfig/mixtureComponents``); nil without a mixture.
    public let mixture: Linear?

    public init(_ config: LayoutPriorConfig, contextDim: Int, outputChannels: Int) throws {
        try config.validate()
        self.config = config
        _projIn.wrappedValue = try Linear(contextDim, config.width)
        _posEmbed.wrappedValue = try Tensor.randn([1, config.maxTokens, config.width]) * 0.02
        layers = try (0..<config.layers).map { _ in try TransformerEncoderLayer(width: config.width, heads: config.heads, mlpRatio: 2) }
        norm = try LayerNorm(config.width)
        head = try Linear(config.width, 5)
        value = try Linear(contextDim, config.channels)
        _canvasIn.wrappedValue = try Conv2d(config.channels, outputChannels, kernel: 3, padding: 1)
        mixture = try config.mixtureComponents.map { try Linear(config.width, 9 * $0) }
        super.init()
        try Torch.withNoGrad {
            for p in [canvasIn.weight, canvasIn.bias].compactMap({ $0 }) { try p.zero() }
        }
    }

    /// The parameters of the box predictor (everything but the canvas's `value` and
    /// `canvasIn`, which only the diffusion loss trains).
    public var predictorParameters: [Tensor] {
        [posEmbed] + projIn.parameters() + layers.flatMap { $0.parameters() } + norm.parameters() + head.parameters()
            + (mixture?.parameters() ?? [])
    }

    /// The predicted layout of `condition`'s tokens: boxes in (0, 1) and gate *logits*
    /// (``LayoutTarget/gates`` holds them; ``canvas(_:layout:size:)`` takes probabilities).
    public func predict(_ condition: Condition) throws -> (boxes: Tensor, gateLogits: Tensor) {
        try predictAll(condition).typical
    }

    /// The typical layout of `condition` as a layout to paint (gate probabilities, every row
    /// known): what the unconditional rows of a guided batch get.
    public func typicalTarget(_ condition: Condition) throws -> LayoutTarget {
        let typical = try predict(condition)
        return LayoutTarget(boxes: typical.boxes, gates: try typical.gateLogits.sigmoid(), known: try Tensor.ones([condition.batchSize]))
    }

    /// The typical layout and, with a mixture, its parameters: weight logits `[B, T, K]`, means
    /// and log-stds `[B, T, K, 4]` of the box in logit coordinates.
    func predictAll(_ condition: Condition) throws
        -> (typical: (boxes: Tensor, gateLogits: Tensor), mixture: (logits: Tensor, means: Tensor, logStds: Tensor)?)
    {
        let h = try norm(encodeTokens(condition, projIn: projIn, positions: posEmbed, layers: layers, owner: "layout prior"))
        let out = try head(h)  // [B, T, 5]
        let typical = (try out.slice(dim: 2, 0, 4).sigmoid(), try out.select(dim: 2, 4))
        guard let mixture, let k = config.mixtureComponents else { return (typical, nil) }
        let s = h.shape
        let m = try mixture(h).reshaped([s[0], s[1], k, 9])
        let logStds = try m.slice(dim: 3, 5, 9).clamped(min: Self.logStdRange.lowerBound, max: Self.logStdRange.upperBound)
        return (typical, (try m.select(dim: 3, 0), try m.slice(dim: 3, 1, 5), logStds))
    }

    /// The log-std of a component is kept in this range (in logit coordinates): no component
    /// collapses onto one training box, none spreads over everything.
    static let logStdRange = -5.0...2.0

    /// Box coordinates as the mixture models them: `logit(clamp(box, ε, 1 − ε))`.
    static func logitBoxes(_ boxes: Tensor) throws -> Tensor {
        let p = try boxes.clamped(min: 1e-4, max: 1 - 1e-4)
        return try (p / (1 - p)).log()
    }

    /// The mixture's negative log-likelihood of each token's true box (in logit coordinates),
    /// `[B, T]`: −log Σ_k π_k N(z | μ_k, diag σ_k²).
    func mixtureNLL(_ mixture: (logits: Tensor, means: Tensor, logStds: Tensor), boxes: Tensor) throws -> Tensor {
        let z = try Self.logitBoxes(boxes).unsqueezed(2)  // [B, T, 1, 4]
        let standardized = try (z - mixture.means) * (mixture.logStds * -1).exp()
        let logNormal = try (standardized.square() * -0.5 - mixture.logStds).sum(dims: [3]) - 2 * Foundation.log(2 * Double.pi)
        let logWeights = try mixture.logits.logSoftmax(dim: 2)
        return try (logWeights + logNormal).logsumexp(dims: [2]) * -1
    }

    /// A layout drawn from the mixture for every row of `condition`: the tokens that name an
    /// object (gate ≥ ½, consecutive tokens forming one object, as "red circle" in "a red
    /// circle") share one box drawn from the mixture of the object's last token; other tokens
    /// keep the typical box. The box is kept inside the image. Every random number comes from
    /// `generator`, drawn in one go, so a seed gives one layout per row.
    ///
    /// - Throws: when the prior has no mixture (``LayoutPriorConfig/mixtureComponents``).
    public func sample(_ condition: Condition, generator: Generator) throws -> LayoutTarget {
        let (typical, params) = try predictAll(condition)
        guard let params, let k = config.mixtureComponents else {
            throw ModuleError.invalidConfiguration("layout prior: this model predicts typical boxes only (no mixture_components)")
        }
        let b = condition.tokens.shape[0], t = condition.tokens.shape[1]
        let gates = try typical.gateLogits.sigmoid()
        let uniform = try Tensor.rand([b, t], generator: generator).scalars(as: Float.self)
        let normal = try Tensor.randn([b, t, 4], generator: generator).scalars(as: Float.self)
        let weights = try params.logits.softmax(dim: 2).to(.float32).contiguous().scalars(as: Float.self)
        let means = try params.means.to(.float32).contiguous().scalars(as: Float.self)
        let stds = try params.logStds.exp().to(.float32).contiguous().scalars(as: Float.self)
        let gate = try gates.to(.float32).contiguous().scalars(as: Float.self)
        let valid = try condition.mask.to(.float32).contiguous().scalars(as: Float.self)
        var boxes = try typical.boxes.to(.float32).contiguous().scalars(as: Float.self)
        for row in 0..<b {
            var token = 0
            while token < t {
                let named = { (i: Int) in valid[row * t + i] > 0 && gate[row * t + i] >= 0.5 }
                guard named(token) else { token += 1; continue }
                var last = token
                while last + 1 < t, named(last + 1) { last += 1 }
                let r = row * t + last
                var component = k - 1, cumulative: Float = 0
                for c in 0..<k {
                    cumulative += weights[r * k + c]
                    if uniform[r] < cumulative { component = c; break }
                }
                var box = (0..<4).map { d -> Float in
                    let z = means[(r * k + component) * 4 + d] + stds[(r * k + component) * 4 + d] * normal[r * 4 + d]
                    return 1 / (1 + Foundation.exp(-z))
                }
                for d in 0..<2 { box[d] = Swift.min(Swift.max(box[d], box[d + 2] / 2), 1 - box[d + 2] / 2) }
                for i in token...last { for d in 0..<4 { boxes[(row * t + i) * 4 + d] = box[d] } }
                token = last + 1
            }
        }
        return LayoutTarget(
            boxes: try Tensor(boxes, shape: [b, t, 4]), gates: try gates.to(.float32),
            known: try Tensor.ones([b]))
    }

    /// The supervised layout loss of `condition` against `target`, over rows whose layout is
    /// known: binary cross-entropy of each real token's gate, plus the L1 error of the boxes of
    /// the tokens that name an object.
    public func loss(_ condition: Condition, target: LayoutTarget) throws -> Tensor {
        let predicted = try predictAll(condition)
        let (boxes, logits) = predicted.typical
        let valid = try condition.mask.to(.float32) * target.known.unsqueezed(1)  // [B, T]
        let y = target.gates
        // log(1 + e^z) − y·z, computed stably.
        let bce = try logits.relu() - y * logits + (logits.abs() * -1).exp().log1p()
        let gateLoss = try (bce * valid).sum() / (valid.sum() + 1e-6)
        let named = try y * valid
        let boxLoss = try ((boxes - target.boxes).abs().sum(dims: [2]) * named).sum() / (named.sum() * 4 + 1e-6)
        guard let mixture = predicted.mixture else { return try gateLoss + boxLoss }
        // The mixture's likelihood of the true boxes, per object token; scaled so that its
        // gradient is of the size of the others' (it is ~4 nats per box at the start).
        let nll = try (mixtureNLL(mixture, boxes: target.boxes) * named).sum() / (named.sum() + 1e-6)
        return try gateLoss + boxLoss + nll * Self.mixtureLossWeight
    }

    /// The weight of the mixture's negative log-likelihood in ``loss(_:target:)``.
    static let mixtureLossWeight = 0.05

    /// The canvas `[B, channels, size, size]`: Σ over tokens of gate × (soft box) × value(token).
    public func canvas(_ condition: Condition, boxes: Tensor, gates: Tensor, size: Int) throws -> Tensor {
        let b = condition.tokens.shape[0], t = condition.tokens.shape[1]
        guard boxes.shape == [b, t, 4], gates.shape == [b, t] else {
            throw ModuleError.invalidInput("layout prior: boxes \(boxes.shape) and gates \(gates.shape) for \(b) rows of \(t) tokens")
        }
        let grid = try Tensor.arange(0.5, Double(size), dtype: .float32) / Double(size)  // [S] cell centres
        let softness = 0.5 / Double(size)
        func extent(_ centre: Tensor, _ width: Tensor) throws -> Tensor {  // [B, T] → [B, T, S]
            let lo = try (centre - width * 0.5).unsqueezed(2), hi = try (centre + width * 0.5).unsqueezed(2)
            return try ((grid - lo) / softness).sigmoid() * ((hi - grid) / softness).sigmoid()
        }
        let xs = try extent(boxes.select(dim: 2, 0), boxes.select(dim: 2, 2))
        let ys = try extent(boxes.select(dim: 2, 1), boxes.select(dim: 2, 3))
        let weights = try (ys.unsqueezed(3) * xs.unsqueezed(2)).reshaped([b, t, size * size])
            * (gates * condition.mask.to(.float32)).unsqueezed(2)
        let values = try value(condition.tokens).transposed(1, 2)  // [B, C, T]
        return try values.bmm(weights).reshaped([b, config.channels, size, size])
    }

    /// The U-Net's added input features `[B, outputChannels, size, size]`: from `target` when
    /// given (training, teacher-forced), else from the layout predicted for `condition` — which
    /// depends on the text alone, so a condition with an ``Condition/attentionCache`` (a
    /// sampling run) computes it once, not at every denoising step.
    public func callAsFunction(_ condition: Condition, target: LayoutTarget?, size: Int) throws -> Tensor {
        if let target {
            func given() throws -> Tensor {
                try canvasIn(canvas(condition, boxes: target.boxes, gates: target.gates * target.known.unsqueezed(1), size: size))
            }
            // A sampling run (a condition with a cache) paints one layout: once.
            return try condition.attentionCache.map { try $0.derived(by: self, given) } ?? given()
        }
        func painted() throws -> Tensor {
            let predicted = try predict(condition)
            return try canvasIn(canvas(condition, boxes: predicted.boxes, gates: predicted.gateLogits.sigmoid(), size: size))
        }
        return try condition.attentionCache.map { try $0.derived(by: self, painted) } ?? painted()
    }
}
