import Torch

/// Multi-head attention: self-attention when no context is given, cross-attention otherwise.
///
/// Inputs are `[batch, queries, queryDim]` and `[batch, keys, contextDim]`. A key mask of shape
/// `[batch, keys]` (bool, `true` = attend) hides padding tokens; `causal` hides later positions.
/// Keys are named like diffusers' `Attention` (`to_q`, `to_k`, `to_v`, `to_out`).
public final class MultiHeadAttention: Module {
    @CheckpointKey("to_q") public private(set) var toQ: Linear
    @CheckpointKey("to_k") public private(set) var toK: Linear
    @CheckpointKey("to_v") public private(set) var toV: Linear
    @CheckpointKey("to_out") public private(set) var toOut: Linear
    public let heads: Int
    public let headDim: Int

    /// - Parameters:
    ///   - queryDim: width of the queries (and of the output).
    ///   - contextDim: width of the keys/values source; `nil` for self-attention.
    ///   - heads: number of heads; `headDim` defaults to `queryDim / heads`.
    public init(queryDim: Int, contextDim: Int? = nil, heads: Int, headDim: Int? = nil, bias: Bool = false) throws {
        guard heads > 0 else { throw ModuleError.invalidConfiguration("attention needs at least one head") }
        let d = headDim ?? queryDim / heads
        guard d > 0, headDim != nil || queryDim % heads == 0 else {
            throw ModuleError.invalidConfiguration("attention width \(queryDim) not divisible into \(heads) heads")
        }
        let inner = d * heads
        _toQ.wrappedValue = try Linear(queryDim, inner, bias: bias)
        _toK.wrappedValue = try Linear(contextDim ?? queryDim, inner, bias: bias)
        _toV.wrappedValue = try Linear(contextDim ?? queryDim, inner, bias: bias)
        _toOut.wrappedValue = try Linear(inner, queryDim)
        self.heads = heads
        self.headDim = d
        super.init()
    }

    /// `[B, N, H*D]` → `[B*H, N, D]`
    private func splitHeads(_ x: Tensor) throws -> Tensor {
        let s = x.shape
        return try x.reshaped([s[0], s[1], heads, headDim]).permuted([0, 2, 1, 3]).reshaped([s[0] * heads, s[1], headDim])
    }

    /// - Parameter editWeights: called with the softmax attention weights `[batch*heads, queries, keys]`
    ///   (batch-major, heads inner); returns the weights to use (record them, or substitute
    ///   stored ones, as prompt-to-prompt / FateZero attention control does). Must keep the shape.
    public func callAsFunction(
        _ x: Tensor, context: Tensor? = nil, keyMask: Tensor? = nil, causal: Bool = false,
        editWeights: ((Tensor) throws -> Tensor)? = nil, cache: AttentionContextCache? = nil
    ) throws -> Tensor {
        try attend(x, context: context, keyMask: keyMask, causal: causal, editWeights: editWeights, cache: cache,
                   fused: Kernels.fusedAttention)
    }

    /// The attention with an explicit kernel choice: `fused` as ``Kernels/fusedAttention`` (the
    /// cache is used only by the fused path); the results agree up to float rounding.
    public func attend(
        _ x: Tensor, context: Tensor? = nil, keyMask: Tensor? = nil, causal: Bool = false,
        editWeights: ((Tensor) throws -> Tensor)? = nil, cache: AttentionContextCache? = nil, fused useFused: Bool
    ) throws -> Tensor {
        if useFused {
            return try fused(x, context: context, keyMask: keyMask, causal: causal, editWeights: editWeights, cache: cache)
        }
        let (source, b, n, m) = try Self.sizes(x, context: context)
        let q = try splitHeads(toQ(x))
        let k = try splitHeads(toK(source))
        let v = try splitHeads(toV(source))
        var scores = try q.bmm(k.transposed(1, 2)) * (1 / Double(headDim).squareRoot())  // [B*H, N, M]
        if let keyMask {
            guard keyMask.shape == [b, m] else {
                throw ModuleError.invalidInput("key mask \(keyMask.shape) must be [\(b), \(m)]")
            }
            let hidden = try keyMask.to(.bool).logicalNot().reshaped([b, 1, 1, m])
                .expanded([b, heads, 1, m]).reshaped([b * heads, 1, m])
            scores = try scores.maskedFill(hidden, value: -.infinity)
        }
        if causal {
            guard n == m else { throw ModuleError.invalidInput("causal attention needs as many keys as queries") }
            let future = try Tensor.ones([n, m], dtype: .bool).triu(1)
            scores = try scores.maskedFill(future, value: -.infinity)
        }
        let weights = try Self.edit(scores.softmax(dim: -1), with: editWeights)
        let out = try weights.bmm(v)  // [B*H, N, D]
            .reshaped([b, heads, n, headDim]).permuted([0, 2, 1, 3]).reshaped([b, n, heads * headDim])
        return try toOut(out)
    }

    /// The key/value source (`context`, else `x`) and the batch, query and key counts, after
    /// checking that both are `[batch, tokens, dim]` with the same batch.
    private static func sizes(_ x: Tensor, context: Tensor?) throws -> (source: Tensor, b: Int, n: Int, m: Int) {
        let xs = x.shape
        guard xs.count == 3 else { throw ModuleError.invalidInput("attention input must be [batch, tokens, dim], got \(xs)") }
        let source = context ?? x
        let cs = source.shape
        guard cs.count == 3, cs[0] == xs[0] else {
            throw ModuleError.invalidInput("attention context \(cs) does not match input \(xs)")
        }
        return (source, xs[0], xs[1], cs[1])
    }

    /// The attention weights after `editWeights` (which must keep their shape).
    private static func edit(_ weights: Tensor, with editWeights: ((Tensor) throws -> Tensor)?) throws -> Tensor {
        guard let editWeights else { return weights }
        let edited = try editWeights(weights)
        guard edited.shape == weights.shape else {
            throw ModuleError.invalidInput("edited attention weights \(edited.shape) must keep the shape \(weights.shape)")
        }
        return edited
    }

    /// `x W1ᵀ … ` for several layers at once: one matrix product with the stacked weights.
    private func project(_ x: Tensor, _ layers: [Linear]) throws -> Tensor {
        if layers.count == 1 { return try layers[0](x) }
        let weight = try Tensor.cat(layers.map(\.weight), dim: 0)
        let biases = layers.compactMap(\.bias)
        let bias = biases.count == layers.count ? try Tensor.cat(biases, dim: 0) : nil
        guard biases.isEmpty || bias != nil else {
            return try Tensor.cat(layers.map { try $0(x) }, dim: -1)
        }
        return Kernels.linearAsConvolution
            ? try x.linearViaConvolution(weight: weight, bias: bias) : try x.linear(weight: weight, bias: bias)
    }

    /// `[B, N, parts·H·D]` → `parts` tensors `[B·H, N, D]`.
    private func splitHeads(_ x: Tensor, parts: Int) throws -> [Tensor] {
        let s = x.shape
        let all = try x.reshaped([s[0], s[1], parts, heads, headDim]).permuted([2, 0, 3, 1, 4]).contiguous()
            .reshaped([parts, s[0] * heads, s[1], headDim])
        return try (0..<parts).map { try all.select(dim: 0, $0) }
    }

    /// The same attention with fewer passes (``Kernels/fusedAttention``): one projection for q, k
    /// and v (k and v for cross-attention), the scale and the key mask applied inside the score
    /// product (`baddbmm` with an additive 0/−∞ bias), and the projected keys and values of a
    /// context taken from `cache` when it has them.
    private func fused(
        _ x: Tensor, context: Tensor?, keyMask: Tensor?, causal: Bool, editWeights: ((Tensor) throws -> Tensor)?,
        cache: AttentionContextCache?
    ) throws -> Tensor {
        let (source, b, n, m) = try Self.sizes(x, context: context)
        let q: Tensor, k: Tensor, v: Tensor
        if context == nil {
            let qkv = try splitHeads(project(x, [toQ, toK, toV]), parts: 3)
            (q, k, v) = (qkv[0], qkv[1], qkv[2])
        } else {
            q = try splitHeads(toQ(x), parts: 1)[0]
            let key = ObjectIdentifier(self)
            if let cached = cache?.entries[key] {
                (k, v) = cached
            } else {
                let kv = try splitHeads(project(source, [toK, toV]), parts: 2)
                (k, v) = (kv[0], kv[1])
                cache?.entries[key] = (k, v)
            }
        }
        var bias: Tensor?
        if let keyMask {
            guard keyMask.shape == [b, m] else {
                throw ModuleError.invalidInput("key mask \(keyMask.shape) must be [\(b), \(m)]")
            }
            // In the scores' dtype: libtorch 2.x's baddbmm does not promote.
            bias = try Tensor.zeros([b, 1, 1, m], dtype: q.dtype).maskedFill(keyMask.to(.bool).logicalNot().reshaped([b, 1, 1, m]), value: -.infinity)
                .expanded([b, heads, 1, m]).reshaped([b * heads, 1, m])
        }
        if causal {
            guard n == m else { throw ModuleError.invalidInput("causal attention needs as many keys as queries") }
            let future = try Tensor.zeros([1, n, m], dtype: q.dtype).maskedFill(Tensor.ones([n, m], dtype: .bool).triu(1), value: -.infinity)
            bias = try bias.map { try $0 + future } ?? future
        }
        let scale = 1 / Double(headDim).squareRoot()
        let scores = try bias.map { try $0.baddbmm(q, k.transposed(1, 2), beta: 1, alpha: scale) }
            ?? q.bmm(k.transposed(1, 2)) * scale
        let out = try Self.edit(scores.softmax(dim: -1), with: editWeights).bmm(v)
            .reshaped([b, heads, n, headDim]).permuted([0, 2, 1, 3]).reshaped([b, n, heads * headDim])
        return try toOut(out)
    }
}

/// The projected keys and values of one fixed context (e.g. the text tokens of a sampling run),
/// per attention layer, reused across calls instead of recomputed at every denoising step.
/// Valid only while the weights and the context do not change; ``MultiHeadAttention`` uses it
/// only with ``Kernels/fusedAttention``. Other modules keep what they derive from the context
/// alone here too (``derived(by:_:)``).
public final class AttentionContextCache: @unchecked Sendable {
    var entries: [ObjectIdentifier: (Tensor, Tensor)] = [:]
    var derivedEntries: [ObjectIdentifier: Tensor] = [:]
    public init() {}

    /// What `owner` derives from the context alone: `compute()` the first time, then the same tensor.
    public func derived(by owner: AnyObject, _ compute: () throws -> Tensor) rethrows -> Tensor {
        let key = ObjectIdentifier(owner)
        if let cached = derivedEntries[key] { return cached }
        let value = try compute()
        derivedEntries[key] = value
        return value
    }
}
