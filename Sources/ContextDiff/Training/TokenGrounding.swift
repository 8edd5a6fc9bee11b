import Foundation
import NN
import Torch

/// One object of a training image: the caption's token positions that name it (its colour,
/// shape and size words) and its box, as fractions of the image side (y down).
public struct GroundedObject: Sendable, Equatable {
    public var tokens: [Int]
    public var minX: Double, minY: Double, maxX: Double, maxY: Double

    public init(tokens: [Int], minX: Double, minY: Double, maxX: Double, maxY: Double) {
        self.tokens = tokens
        self.minX = minX
        self.minY = minY
        self.maxX = maxX
        self.maxY = maxY
    }

    /// Which cells of a `resolution`×`resolution` grid (row-major, y down) the box covers: cells
    /// whose centre lies inside it, and always the cell of the box's centre.
    public func cells(resolution r: Int) -> [Bool] {
        var out = [Bool](repeating: false, count: r * r)
        for i in 0..<r {
            for j in 0..<r {
                let (x, y) = ((Double(j) + 0.5) / Double(r), (Double(i) + 0.5) / Double(r))
                out[i * r + j] = x >= minX && x <= maxX && y >= minY && y <= maxY
            }
        }
        let cx = Swift.min(r - 1, Swift.max(0, Int((minX + maxX) / 2 * Double(r))))
        let cy = Swift.min(r - 1, Swift.max(0, Int((minY + maxY) / 2 * Double(r))))
        out[cy * r + cx] = true
        return out
    }
}

/// Records the cross-attention weights of one U-Net call (with their gradients), for
/// ``TokenGrounding/loss(maps:objects:)``. Pass it as the `control` of a one-frame
/// ``VideoLayout`` (`.perFrame`), which computes exactly the 2-D model.
public final class CrossAttentionRecorder: AttentionController {
    public private(set) var maps: [(site: AttentionSite, weights: Tensor)] = []

    public init() {}

    public func process(_ weights: Tensor, site: AttentionSite) throws -> Tensor {
        if site.kind == .crossAttention { maps.append((site, weights)) }
        return weights
    }
}

/// A token-grounding loss on the U-Net's cross-attention (after TokenCompose, Wang et al.,
/// CVPR 2024, arXiv:2312.03626, its token loss): for every object of a training image, the
/// share of the attention its caption tokens receive that falls outside the object's box,
/// squared — `(1 − Σ_in A / Σ A)²`, with `A` the per-pixel softmax weight summed over the
/// object's tokens and averaged over heads — averaged over objects and cross-attention layers.
///
/// The diffusion loss carries only a faint signal about which object of "X left of Y" goes
/// where (the objects are a few percent of the pixels, and at the noise levels that decide the
/// layout their positions are mostly unpredictable); this term says it directly, for the words
/// of each object, from the dataset's exact boxes. It acts in training only: sampling is the
/// plain text-to-image model.
public enum TokenGrounding {
    /// The mean grounding loss over `maps` (each `[B·heads, N, M]`, N a square number of
    /// queries) for `objects[b]`, the objects of batch row `b` (empty: row not grounded, e.g. a
    /// dropped caption). Token positions at or past `M` are ignored; an object with none left
    /// does not count. Returns a zero scalar when nothing is grounded.
    public static func loss(maps: [(site: AttentionSite, weights: Tensor)], objects: [[GroundedObject]]) throws -> Tensor {
        let b = objects.count
        let k = Swift.max(1, objects.map(\.count).max() ?? 0)
        var total: Tensor?
        var layers = 0
        var selections: [Int: (Tensor, Tensor, Double)] = [:]  // by token count M: (S [B, M, K], valid [B, K], Σ valid)
        var masks: [Int: Tensor] = [:]  // by resolution: [B, N, K]
        for (_, weights) in maps {
            let s = weights.shape
            guard s.count == 3, b > 0, s[0] % b == 0 else {
                throw ModuleError.invalidInput("grounding: attention weights \(s) for a batch of \(b)")
            }
            let (heads, n, m) = (s[0] / b, s[1], s[2])
            let r = Int(Double(n).squareRoot().rounded())
            guard r * r == n else { throw ModuleError.invalidInput("grounding: \(n) queries are not a square feature map") }
            if selections[m] == nil {
                var select = [Float](repeating: 0, count: b * m * k), valid = [Float](repeating: 0, count: b * k)
                for (row, objs) in objects.enumerated() {
                    for (j, o) in objs.enumerated() {
                        let tokens = o.tokens.filter { $0 >= 0 && $0 < m }
                        guard !tokens.isEmpty else { continue }
                        valid[row * k + j] = 1
                        for t in tokens { select[(row * m + t) * k + j] = 1 }
                    }
                }
                selections[m] = (try Tensor(select, shape: [b, m, k]), try Tensor(valid, shape: [b, k]), Double(valid.reduce(0, +)))
            }
            if masks[r] == nil {
                var cells = [Float](repeating: 0, count: b * n * k)
                for (row, objs) in objects.enumerated() {
                    for (j, o) in objs.enumerated() {
                        for (q, inside) in o.cells(resolution: r).enumerated() where inside { cells[(row * n + q) * k + j] = 1 }
                    }
                }
                masks[r] = try Tensor(cells, shape: [b, n, k])
            }
            let (select, valid, count) = selections[m]!
            let attention = try weights.to(.float32).reshaped([b, heads, n, m]).mean(dims: [1]).bmm(select)  // [B, N, K]
            let inside = try (attention * masks[r]!).sum(dims: [1])
            let all = try attention.sum(dims: [1]).clamped(min: 1e-8)
            let perObject = try (1 - inside / all).square() * valid
            let layerLoss = try perObject.sum() / Swift.max(1, count)
            total = try total.map { try $0 + layerLoss } ?? layerLoss
            layers += 1
        }
        guard let total else { return try Tensor.zeros([]) }
        return try total / Double(layers)
    }

    /// The objects a synthetic caption names, in the order it names them: for each, the token
    /// positions (in `ids`, the caption's token ids) of its words, found in order — the size
    /// word if the caption has one, the colour word, the shape word. `words(o)` gives an
    /// object's words and `pieces(w)` a word's token ids. Returns nil when a word is not found.
    public static func tokenPositions(
        ids: [Int], objects: [[String]], pieces: (String) -> [Int]
    ) -> [[Int]]? {
        var cursor = 0
        var out: [[Int]] = []
        for words in objects {
            var positions: [Int] = []
            for word in words {
                let p = pieces(word)
                guard !p.isEmpty else { return nil }
                var found: Int?
                var i = cursor
                while i + p.count <= ids.count {
                    if Array(ids[i..<(i + p.count)]) == p { found = i; break }
                    i += 1
                }
                guard let at = found else { return nil }
                positions += Array(at..<(at + p.count))
                cursor = at + p.count
            }
            out.append(positions)
        }
        return out
    }
}
