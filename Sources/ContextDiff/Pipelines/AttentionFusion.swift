import Foundation
import Torch

/// Which attention maps FateZero-style fusion keeps, and for how long (paper §5.2: "we fuse the
/// attentions in the interval t ∈ [0.5·T, T] of the DDIM step with total timestep T = 20").
public struct AttentionFusionConfig: Codable, Sendable, Equatable {
    /// The share of the editing steps, counted from the noisiest, whose attention maps come from
    /// the inversion: 0.5 fuses t ∈ [0.5·T, T]. 0 turns fusion off.
    public var fraction = 0.5
    /// Self-attention maps are stored only on layers whose feature map side is at most this
    /// (low resolution carries the layout; high-resolution maps are the expensive ones).
    public var selfAttentionMaxResolution = 8
    /// Cross-attention maps are stored only on layers whose feature map side is at most this.
    public var crossAttentionMaxResolution = 16
    /// A hard cap on the bytes the store may hold; recording past it throws.
    public var budgetBytes = 256 << 20

    public init() {}

    enum CodingKeys: String, CodingKey {
        case fraction
        case selfAttentionMaxResolution = "self_attention_max_resolution"
        case crossAttentionMaxResolution = "cross_attention_max_resolution"
        case budgetBytes = "budget_bytes"
    }

    public func validate() throws {
        guard fraction.isFinite, (0...1).contains(fraction) else {
            throw VideoEditError.invalidOption("fusion fraction must be in [0, 1], got \(fraction)")
        }
        guard selfAttentionMaxResolution >= 0, crossAttentionMaxResolution >= 0, budgetBytes > 0 else {
            throw VideoEditError.invalidOption("fusion resolutions must be ≥ 0 and the budget positive")
        }
    }

    /// The editing timesteps (of a DDIM run visiting `timesteps` in order) whose maps are fused:
    /// the first `ceil(fraction · n)`.
    public func fusedTimesteps(_ timesteps: [Int]) -> Set<Int> {
        let n = Int((fraction * Double(timesteps.count)).rounded(.up))
        return Set(timesteps.prefix(Swift.min(n, timesteps.count)))
    }

    /// Whether a site's maps are kept.
    public func stores(_ site: AttentionSite) -> Bool {
        switch site.kind {
        case .selfAttention: site.resolution <= selfAttentionMaxResolution
        case .crossAttention: site.resolution <= crossAttentionMaxResolution
        }
    }

    /// The exact number of bytes the store holds after recording one inversion of `videos`
    /// videos of `frames` frames with `sourceTokens` text tokens through `unet` (float32 maps):
    /// Σ over fused steps and stored sites of `videos·F·heads·N·M·4`, with N = resolution²
    /// queries and M = N keys (per-frame), 2N (sparse-causal) or `sourceTokens` (cross).
    public func storageBytes(
        unet: UNet, frames: Int, videos: Int = 1, sourceTokens: Int, frameAttention: FrameAttention, steps: Int
    ) -> Int {
        var perStep = 0
        for (name, resolution, block) in unet.transformers {
            let n = resolution * resolution
            if let a = block.selfAttention, stores(AttentionSite(layer: name, kind: .selfAttention, resolution: resolution)) {
                perStep += videos * frames * a.heads * n * (frameAttention == .sparseCausal ? 2 * n : n)
            }
            if let a = block.crossAttention, stores(AttentionSite(layer: name, kind: .crossAttention, resolution: resolution)) {
                perStep += videos * frames * a.heads * n * sourceTokens
            }
        }
        let fusedSteps = Int((fraction * Double(steps)).rounded(.up))
        return perStep * Swift.min(fusedSteps, steps) * MemoryLayout<Float>.size
    }
}

/// The attention maps of a DDIM inversion, recorded and substituted into editing (FateZero,
/// arXiv:2303.09535, and prompt-to-prompt's word alignment for cross-attention).
///
/// - Recording (``Mode/record(timestep:)``): the weights of every site that
///   ``AttentionFusionConfig/stores(_:)`` at a fused timestep are kept (float32, detached).
/// - Injection (``Mode/inject(timestep:)``): at a fused timestep, self-attention weights are
///   replaced by the stored ones (in both halves of a classifier-free-guidance batch: structure
///   does not depend on the prompt); cross-attention weights of the conditional half take the
///   stored column of every target token aligned with a source token, and keep their own column
///   for new words (prompt-to-prompt "refine"). Sites or steps not stored are left as computed.
///
/// Memory is bounded by ``AttentionFusionConfig/storageBytes(unet:frames:videos:sourceTokens:frameAttention:steps:)``
/// and capped by ``AttentionFusionConfig/budgetBytes``.
public final class AttentionFusionStore: AttentionController {
    public enum Mode: Equatable {
        case idle
        case record(timestep: Int)
        case inject(timestep: Int)
    }

    struct Key: Hashable {
        var timestep: Int
        var site: AttentionSite
    }

    public let config: AttentionFusionConfig
    public let fusedTimesteps: Set<Int>
    public var mode = Mode.idle
    /// For each target token position, the aligned source token position (nil: a new word).
    public var tokenAlignment: [Int?] = []
    private var maps: [Key: Tensor] = [:]
    public private(set) var bytes = 0
    /// How many attention calls took stored weights (self and cross).
    public private(set) var injections = 0

    public init(config: AttentionFusionConfig, fusedTimesteps: Set<Int>) {
        self.config = config
        self.fusedTimesteps = fusedTimesteps
    }

    /// The sites recorded, with the timesteps recorded for each.
    public var recordedSites: Set<AttentionSite> { Set(maps.keys.map(\.site)) }
    public var recordedTimesteps: Set<Int> { Set(maps.keys.map(\.timestep)) }

    public func process(_ weights: Tensor, site: AttentionSite) throws -> Tensor {
        switch mode {
        case .idle:
            return weights
        case .record(let t):
            guard fusedTimesteps.contains(t), config.stores(site) else { return weights }
            let kept = try weights.detached().to(.float32).contiguous()
            let size = kept.count * MemoryLayout<Float>.size
            // A map recorded again replaces the old one, whose bytes are freed first.
            let replaced = maps[Key(timestep: t, site: site)].map { $0.count * MemoryLayout<Float>.size } ?? 0
            guard bytes - replaced + size <= config.budgetBytes else {
                throw VideoEditError.fusionBudgetExceeded(needed: bytes - replaced + size, budget: config.budgetBytes)
            }
            maps[Key(timestep: t, site: site)] = kept
            bytes += size - replaced
            return weights
        case .inject(let t):
            guard let stored = maps[Key(timestep: t, site: site)] else { return weights }
            let rows = stored.shape[0], total = weights.shape[0]
            // Same queries; the batch is the recorded one or a whole multiple (the guidance batch).
            guard total % rows == 0, weights.shape.count == 3, weights.shape[1] == stored.shape[1] else {
                throw VideoEditError.invalidOption("fusion: stored map \(stored.shape) does not fit \(weights.shape) at \(site)")
            }
            injections += 1
            let s = try stored.to(weights.dtype)
            switch site.kind {
            case .selfAttention:
                guard stored.shape[2] == weights.shape[2] else {
                    throw VideoEditError.invalidOption("fusion: stored map \(stored.shape) does not fit \(weights.shape) at \(site)")
                }
                return total == rows ? s : try Tensor.cat(Array(repeating: s, count: total / rows))
            case .crossAttention:
                let keys = weights.shape[2]
                var alignment = tokenAlignment + Array(repeating: nil, count: Swift.max(0, keys - tokenAlignment.count))
                alignment = Array(alignment.prefix(keys))
                let sourceKeys = stored.shape[2]
                let index = try Tensor(alignment.map { Int64(Swift.min($0 ?? 0, sourceKeys - 1)) }, shape: [keys])
                let keep = try Tensor(alignment.map { $0 == nil ? Float(0) : Float(1) }, shape: [1, 1, keys]).to(weights.dtype)
                let own = try weights.slice(dim: 0, total - rows, total)
                let fused = try s.indexSelect(dim: 2, index) * keep + own * (1 - keep)
                return total == rows ? fused : try Tensor.cat([weights.slice(dim: 0, 0, total - rows), fused])
            }
        }
    }

    /// Drops every stored map.
    public func clear() {
        maps = [:]
        bytes = 0
        injections = 0
    }

    /// Aligns target token ids with source token ids by their longest common subsequence:
    /// `result[j]` is the source position of target token `j`, or nil for a token that is new.
    public static func alignTokens(source: [Int], target: [Int]) -> [Int?] {
        let n = source.count, m = target.count
        var lcs = [[Int]](repeating: [Int](repeating: 0, count: m + 1), count: n + 1)
        for i in stride(from: n - 1, through: 0, by: -1) {
            for j in stride(from: m - 1, through: 0, by: -1) {
                lcs[i][j] = source[i] == target[j] ? lcs[i + 1][j + 1] + 1 : Swift.max(lcs[i + 1][j], lcs[i][j + 1])
            }
        }
        var out = [Int?](repeating: nil, count: m)
        var i = 0, j = 0
        while i < n, j < m {
            if source[i] == target[j] {
                out[j] = i
                i += 1
                j += 1
            } else if lcs[i + 1][j] >= lcs[i][j + 1] {
                i += 1
            } else {
                j += 1
            }
        }
        return out
    }
}
