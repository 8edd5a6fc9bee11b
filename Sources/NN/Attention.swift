import Torch

/// Multi-head attention: self-attention when no context is given, cross-attention otherwise.
///
/// Inputs are `[batch, queries, queryDim]` and `[batch, keys, contextDim]`. A key mask of shape
/// `[batch, keys]` (bool, `true` = attend) hides padding tokens; `causal` hides later positions.
/// Keys are named like diffusers' `Attention` (`to_q`, `to_k`, `to_v`, `to_out`).
public final class MultiHeadAttention: Module {
    public let toQ: Linear
    public let toK: Linear
    public let toV: Linear
    public let toOut: Linear
    public let heads: Int
    public let headDim: Int

    /// - Parameters:
    ///   - queryDim: width of the queries (and of the output).
    ///   - contextDim: width of the keys/values source; `nil` for self-attention.
    ///   - heads: number of heads; `headDim` defaults to `queryDim / heads`.
    public init(queryDim: Int, contextDim: Int? = nil, heads: Int, headDim: Int? = nil, bias: Bool = false) throws {
        guard heads > 0 else { throw TorchError.invalidArgument("attention needs at least one head") }
        let d = headDim ?? queryDim / heads
        guard d > 0, headDim != nil || queryDim % heads == 0 else {
            throw TorchError.invalidArgument("attention width \(queryDim) not divisible into \(heads) heads")
        }
        let inner = d * heads
        toQ = try Linear(queryDim, inner, bias: bias)
        toK = try Linear(contextDim ?? queryDim, inner, bias: bias)
        toV = try Linear(contextDim ?? queryDim, inner, bias: bias)
        toOut = try Linear(inner, queryDim)
        self.heads = heads
        self.headDim = d
        super.init()
    }

    override public func key(forProperty name: String) -> String {
        switch name {
        case "toQ": "to_q"
        case "toK": "to_k"
        case "toV": "to_v"
        case "toOut": "to_out"
        default: name
        }
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
        editWeights: ((Tensor) throws -> Tensor)? = nil
    ) throws -> Tensor {
        let xs = x.shape
        guard xs.count == 3 else { throw TorchError.invalidArgument("attention input must be [batch, tokens, dim], got \(xs)") }
        let source = context ?? x
        let cs = source.shape
        guard cs.count == 3, cs[0] == xs[0] else {
            throw TorchError.invalidArgument("attention context \(cs) does not match input \(xs)")
        }
        let (b, n, m) = (xs[0], xs[1], cs[1])
        let q = try splitHeads(toQ(x))
        let k = try splitHeads(toK(source))
        let v = try splitHeads(toV(source))
        var scores = try q.bmm(k.transposed(1, 2)) * (1 / Double(headDim).squareRoot())  // [B*H, N, M]
        if let keyMask {
            guard keyMask.shape == [b, m] else {
                throw TorchError.invalidArgument("key mask \(keyMask.shape) must be [\(b), \(m)]")
            }
            let hidden = try keyMask.to(.bool).logicalNot().reshaped([b, 1, 1, m])
                .expanded([b, heads, 1, m]).reshaped([b * heads, 1, m])
            scores = try scores.maskedFill(hidden, value: -.infinity)
        }
        if causal {
            guard n == m else { throw TorchError.invalidArgument("causal attention needs as many keys as queries") }
            let future = try Tensor.ones([n, m], dtype: .bool).triu(1)
            scores = try scores.maskedFill(future, value: -.infinity)
        }
        var weights = try scores.softmax(dim: -1)
        if let editWeights {
            let edited = try editWeights(weights)
            guard edited.shape == weights.shape else {
                throw TorchError.invalidArgument("edited attention weights \(edited.shape) must keep the shape \(weights.shape)")
            }
            weights = edited
        }
        let out = try weights.bmm(v)  // [B*H, N, D]
            .reshaped([b, heads, n, headDim]).permuted([0, 2, 1, 3]).reshaped([b, n, heads * headDim])
        return try toOut(out)
    }
}
