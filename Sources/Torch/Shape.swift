import CTorch

extension Tensor {
    public func reshaped(_ shape: [Int]) throws -> Tensor {
        let d = int64s(shape)
        return try Tensor.check(ct_reshape(handle, d, Int64(d.count)), "reshape \(self.shape) to \(shape)")
    }

    /// Collapses dimensions `start...end` into one.
    public func flattened(from start: Int = 0, to end: Int = -1) throws -> Tensor {
        let s = shape
        let a = start < 0 ? start + s.count : start
        let b = end < 0 ? end + s.count : end
        guard a >= 0, b < s.count, a <= b else {
            throw TorchError.invalidArgument("flatten \(start)...\(end) out of range for shape \(s)")
        }
        let merged = s[a...b].reduce(1, *)
        return try reshaped(Array(s[..<a]) + [merged] + Array(s[(b + 1)...]))
    }

    public func permuted(_ dims: [Int]) throws -> Tensor {
        let d = int64s(dims)
        return try Tensor.check(ct_permute(handle, d, Int64(d.count)), "permute \(shape) by \(dims)")
    }
    public func transposed(_ d0: Int, _ d1: Int) throws -> Tensor {
        try Tensor.check(ct_transpose(handle, Int64(d0), Int64(d1)), "transpose \(d0),\(d1) of \(shape)")
    }
    public func contiguous() throws -> Tensor {
        if isContiguous { return self }
        return try Tensor.check(ct_contiguous(handle), "contiguous")
    }
    /// The same values in NHWC memory order (shape unchanged).
    public func channelsLast() throws -> Tensor { try Tensor.check(ct_channels_last(handle), "channels_last") }
    public func squeezed(_ dim: Int) throws -> Tensor { try Tensor.check(ct_squeeze(handle, Int64(dim)), "squeeze") }
    public func unsqueezed(_ dim: Int) throws -> Tensor { try Tensor.check(ct_unsqueeze(handle, Int64(dim)), "unsqueeze") }
    public func expanded(_ shape: [Int]) throws -> Tensor {
        let d = int64s(shape)
        return try Tensor.check(ct_expand(handle, d, Int64(d.count)), "expand \(self.shape) to \(shape)")
    }
    public func repeated(_ repeats: [Int]) throws -> Tensor {
        let d = int64s(repeats)
        return try Tensor.check(ct_repeat(handle, d, Int64(d.count)), "repeat \(shape) by \(repeats)")
    }

    /// Elements `start..<end` (stepping by `step`) along `dim`; a view.
    public func slice(dim: Int, _ start: Int, _ end: Int, step: Int = 1) throws -> Tensor {
        try Tensor.check(ct_slice(handle, Int64(dim), Int64(start), Int64(end), Int64(step)), "slice \(start)..<\(end) of dim \(dim) of \(shape)")
    }
    /// The sub-tensor at `index` of `dim` (that dimension removed); a view.
    public func select(dim: Int, _ index: Int) throws -> Tensor {
        try Tensor.check(ct_select(handle, Int64(dim), Int64(index)), "select \(index) of dim \(dim) of \(shape)")
    }
    public func indexSelect(dim: Int, _ index: Tensor) throws -> Tensor {
        try Tensor.check(ct_index_select(handle, Int64(dim), index.handle), "index_select")
    }
    public func gather(dim: Int, _ index: Tensor) throws -> Tensor {
        try Tensor.check(ct_gather(handle, Int64(dim), index.handle), "gather")
    }
    public func flipped(_ dims: [Int]) throws -> Tensor {
        let d = int64s(dims)
        return try Tensor.check(ct_flip(handle, d, Int64(d.count)), "flip")
    }
    public func tril(_ diagonal: Int = 0) throws -> Tensor { try Tensor.check(ct_tril(handle, Int64(diagonal)), "tril") }
    public func triu(_ diagonal: Int = 0) throws -> Tensor { try Tensor.check(ct_triu(handle, Int64(diagonal)), "triu") }

    public static func cat(_ tensors: [Tensor], dim: Int = 0) throws -> Tensor {
        guard !tensors.isEmpty else { throw TorchError.invalidArgument("cat of no tensors") }
        return try withHandles(tensors) { hs, n in
            try check(ct_cat(hs, n, Int64(dim)), "cat \(tensors.map(\.shape)) along \(dim)")
        }
    }

    public static func stack(_ tensors: [Tensor], dim: Int = 0) throws -> Tensor {
        guard !tensors.isEmpty else { throw TorchError.invalidArgument("stack of no tensors") }
        return try withHandles(tensors) { hs, n in
            try check(ct_stack(hs, n, Int64(dim)), "stack \(tensors.map(\.shape)) along \(dim)")
        }
    }

    /// Splits into `chunks` nearly equal views along `dim` (the last may be smaller).
    public func chunked(_ chunks: Int, dim: Int = 0) throws -> [Tensor] {
        guard chunks > 0 else { throw TorchError.invalidArgument("chunk count must be positive, got \(chunks)") }
        var out = [OpaquePointer?](repeating: nil, count: chunks)
        var count: Int64 = 0
        try Tensor.check(status: ct_chunk(handle, Int64(chunks), Int64(dim), &out, Int64(chunks), &count), "chunk \(shape) into \(chunks)")
        return out[0..<Int(count)].map { Tensor(owning: $0!) }
    }

    /// Splits into views of the given sizes along `dim`.
    public func split(sizes: [Int], dim: Int = 0) throws -> [Tensor] {
        var out = [OpaquePointer?](repeating: nil, count: sizes.count)
        let s = int64s(sizes)
        try Tensor.check(status: ct_split(handle, s, Int64(s.count), Int64(dim), &out), "split \(shape) into \(sizes)")
        return out.map { Tensor(owning: $0!) }
    }
}
