import NN
import Torch

/// How the self-attention of a video frame sees the other frames.
public enum FrameAttention: String, Codable, Sendable, CaseIterable {
    /// Each frame attends to its own tokens only: the 2-D model applied frame by frame.
    case perFrame = "per-frame"
    /// Tune-A-Video's sparse-causal attention (arXiv:2212.11565 §4.1): the queries of frame k
    /// attend to the keys and values of frame 0 and frame k − 1 (frame 0 to itself twice).
    /// Frame k's output never depends on a later frame, nor on any frame other than 0, k − 1, k.
    case sparseCausal = "sparse-causal"
}

/// Which attention of a transformer block a control hook sees.
public enum AttentionKind: String, Codable, Sendable, Hashable {
    case selfAttention = "self"
    case crossAttention = "cross"
}

/// One attention call inside the U-Net, as an ``AttentionController`` sees it.
public struct AttentionSite: Sendable, Hashable, CustomStringConvertible {
    /// The transformer's name (`down.1.attentions.0`, `mid.attention`, `up.0.attentions.2`).
    public var layer: String
    public var kind: AttentionKind
    /// The side of the feature map (queries = resolution²).
    public var resolution: Int

    public init(layer: String, kind: AttentionKind, resolution: Int) {
        self.layer = layer
        self.kind = kind
        self.resolution = resolution
    }

    public var description: String { "\(layer).\(kind.rawValue)@\(resolution)" }
}

/// Sees (and may replace) the softmax weights `[batch·heads, queries, keys]` of every attention
/// call of a U-Net run with a ``VideoLayout`` (prompt-to-prompt / FateZero attention control).
public protocol AttentionController: AnyObject {
    func process(_ weights: Tensor, site: AttentionSite) throws -> Tensor
}

/// How a U-Net call treats frames folded into the batch: `[B·F, C, H, W]`, the `F` frames of
/// each video adjacent.
public struct VideoLayout {
    public var frames: Int
    public var selfAttention: FrameAttention
    public var control: (any AttentionController)?

    public init(frames: Int, selfAttention: FrameAttention = .sparseCausal, control: (any AttentionController)? = nil) {
        self.frames = frames
        self.selfAttention = selfAttention
        self.control = control
    }
}

/// The keys/values source of sparse-causal attention: for tokens `[B·F, N, C]` of `B` videos of
/// `F` frames, `[B·F, 2N, C]` whose row `(b, k)` is frame 0 of video b followed by frame
/// `max(k − 1, 0)` (Tune-A-Video: `cat([key[:, [0]*F], key[:, former_frame_index]], dim=2)`).
public func sparseCausalKeys(_ tokens: Tensor, frames f: Int) throws -> Tensor {
    let s = tokens.shape
    guard s.count == 3, f > 0, s[0] % f == 0 else {
        throw ModuleError.invalidInput("sparse-causal attention: \(s) is not [B·\(f), N, C]")
    }
    let b = s[0] / f
    let v = try tokens.reshaped([b, f, s[1], s[2]])
    let first = try v.indexSelect(dim: 1, Tensor([Int64](repeating: 0, count: f), shape: [f]))
    let previous = try v.indexSelect(dim: 1, Tensor((0..<f).map { Int64(Swift.max($0 - 1, 0)) }, shape: [f]))
    return try Tensor.cat([first, previous], dim: 2).reshaped([b * f, 2 * s[1], s[2]])
}

/// Attention across the frames at each spatial position, with a residual:
/// `h + attn(LN(h))` over `[B·N, F, C]`. The output projection starts at zero, so a freshly
/// inflated layer is the identity (the inflated model equals the 2-D one).
public final class TemporalAttention: Module {
    public let norm: LayerNorm
    public let attention: MultiHeadAttention
    /// Whether frame k attends only to frames ≤ k.
    public let causal: Bool

    public init(channels: Int, heads: Int, causal: Bool) throws {
        norm = try LayerNorm(channels)
        attention = try MultiHeadAttention(queryDim: channels, heads: heads)
        self.causal = causal
        super.init()
        try Torch.withNoGrad {
            try attention.toOut.weight.zero()
            try attention.toOut.bias?.zero()
        }
    }

    /// `h`: `[B·F, N, C]` tokens of `B` videos of `frames` frames.
    public func callAsFunction(_ h: Tensor, frames f: Int) throws -> Tensor {
        let s = h.shape
        guard s.count == 3, f > 0, s[0] % f == 0 else {
            throw ModuleError.invalidInput("temporal attention: \(s) is not [B·\(f), N, C]")
        }
        let (b, n, c) = (s[0] / f, s[1], s[2])
        let seq = try h.reshaped([b, f, n, c]).permuted([0, 2, 1, 3]).reshaped([b * n, f, c])
        let out = try attention(norm(seq), causal: causal)
        return try h + out.reshaped([b, n, f, c]).permuted([0, 2, 1, 3]).reshaped(s)
    }
}
