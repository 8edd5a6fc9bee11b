import CTorch

extension Tensor {
    @inline(__always)
    private func reduce(_ op: ct_reduce_op, _ dims: [Int]?, _ keepDim: Bool, _ name: String) throws -> Tensor {
        guard let dims else {
            return try Tensor.check(ct_reduce_all(Int32(op.rawValue), handle), name)
        }
        let d = int64s(dims)
        return try Tensor.check(ct_reduce(Int32(op.rawValue), handle, d, Int64(d.count), keepDim), "\(name) over \(dims) of \(shape)")
    }

    /// Sum over `dims` (all elements when `nil`).
    public func sum(dims: [Int]? = nil, keepDim: Bool = false) throws -> Tensor { try reduce(CT_SUM, dims, keepDim, "sum") }
    public func mean(dims: [Int]? = nil, keepDim: Bool = false) throws -> Tensor { try reduce(CT_MEAN, dims, keepDim, "mean") }
    public func max(dims: [Int]? = nil, keepDim: Bool = false) throws -> Tensor { try reduce(CT_AMAX, dims, keepDim, "amax") }
    public func min(dims: [Int]? = nil, keepDim: Bool = false) throws -> Tensor { try reduce(CT_AMIN, dims, keepDim, "amin") }
    public func prod(dim: Int, keepDim: Bool = false) throws -> Tensor { try reduce(CT_PROD, [dim], keepDim, "prod") }
    /// Population variance (divides by N) unless `unbiased`.
    public func variance(dims: [Int]? = nil, unbiased: Bool = false, keepDim: Bool = false) throws -> Tensor {
        try reduce(unbiased ? CT_VAR_UNBIASED : CT_VAR, dims, keepDim, "var")
    }
    public func std(dims: [Int]? = nil, unbiased: Bool = false, keepDim: Bool = false) throws -> Tensor {
        try reduce(unbiased ? CT_STD_UNBIASED : CT_STD, dims, keepDim, "std")
    }
    public func logsumexp(dims: [Int]? = nil, keepDim: Bool = false) throws -> Tensor { try reduce(CT_LOGSUMEXP, dims, keepDim, "logsumexp") }
    /// Euclidean norm.
    public func norm(dims: [Int]? = nil, keepDim: Bool = false) throws -> Tensor { try reduce(CT_NORM2, dims, keepDim, "norm") }
    public func any(dims: [Int]? = nil, keepDim: Bool = false) throws -> Tensor { try reduce(CT_ANY, dims, keepDim, "any") }
    public func all(dims: [Int]? = nil, keepDim: Bool = false) throws -> Tensor { try reduce(CT_ALL, dims, keepDim, "all") }

    public func argmax(dim: Int, keepDim: Bool = false) throws -> Tensor {
        try Tensor.check(ct_argmax(handle, Int64(dim), keepDim), "argmax")
    }
    public func cumsum(dim: Int) throws -> Tensor { try Tensor.check(ct_cumsum(handle, Int64(dim)), "cumsum") }
    public func cumprod(dim: Int) throws -> Tensor { try Tensor.check(ct_cumprod(handle, Int64(dim)), "cumprod") }

    /// The `q`-quantile (linear interpolation), over `dim` or over all elements.
    public func quantile(_ q: Double, dim: Int? = nil, keepDim: Bool = false) throws -> Tensor {
        guard (0...1).contains(q) else { throw TorchError.invalidArgument("quantile \(q) outside [0, 1]") }
        return try Tensor.check(ct_quantile(handle, q, Int64(dim ?? 0), dim != nil, keepDim), "quantile")
    }
}

// MARK: - Linear algebra

extension Tensor {
    public func matmul(_ other: Tensor) throws -> Tensor {
        try Tensor.check(ct_matmul(handle, other.handle), "matmul \(shape) x \(other.shape)")
    }
    public func bmm(_ other: Tensor) throws -> Tensor {
        try Tensor.check(ct_bmm(handle, other.handle), "bmm \(shape) x \(other.shape)")
    }
    /// `beta * self + alpha * (a @ b)` batched.
    public func baddbmm(_ a: Tensor, _ b: Tensor, beta: Double = 1, alpha: Double = 1) throws -> Tensor {
        try Tensor.check(ct_baddbmm(handle, a.handle, b.handle, beta, alpha), "baddbmm")
    }
    /// `self @ weightᵀ + bias`, PyTorch's `F.linear`.
    public func linear(weight: Tensor, bias: Tensor?) throws -> Tensor {
        try withExtendedLifetime(bias) {
            try Tensor.check(ct_linear(handle, weight.handle, bias?.handle), "linear \(shape) with weight \(weight.shape)")
        }
    }

    /// The same `self @ weightᵀ + bias`, computed by oneDNN as a 1×1 convolution over a
    /// channels-last view of the rows (float32 with ≥ 256 rows; anything else takes ``linear(weight:bias:)``).
    /// Several times faster than the BLAS path for the skinny matrices of transformer layers on
    /// the CPUs measured (docs/NOTES.md "Performance"); equal up to float rounding.
    public func linearViaConvolution(weight: Tensor, bias: Tensor?) throws -> Tensor {
        try withExtendedLifetime(bias) {
            try Tensor.check(ct_linear_conv(handle, weight.handle, bias?.handle), "linear \(shape) with weight \(weight.shape)")
        }
    }

    /// Eigen-decomposition of a symmetric matrix: eigenvalues ascending, eigenvectors as columns.
    public func eigh() throws -> (values: Tensor, vectors: Tensor) {
        var values: OpaquePointer?
        var vectors: OpaquePointer?
        try Tensor.check(status: ct_eigh(handle, &values, &vectors), "eigh")
        return (Tensor(owning: values!), Tensor(owning: vectors!))
    }
}

extension Torch {
    /// Batched float32 products on the CPU (`bmm`, `baddbmm`: attention's) as one direct BLAS
    /// call per batch entry spread over libtorch's threads, forward and backward, instead of
    /// libtorch 1.13's per-entry dispatcher loop on one thread (same arithmetic; on by default).
    public static func setDirectBatchedProducts(_ on: Bool) { ct_set_direct_batched_products(on) }

    /// Within the direct products, the whole batch as one oneDNN matmul (on by default) where the
    /// build has oneDNN's headers and oneDNN a kernel for the product (not its reference one);
    /// else one BLAS call per entry. Equal up to float rounding.
    public static func setOneDNNBatchedProducts(_ on: Bool) { ct_set_onednn_batched_products(on) }

    /// How many batched products ran as one oneDNN matmul so far in this process.
    public static var oneDNNBatchedProductCalls: Int { Int(ct_onednn_batched_product_calls()) }

    /// 3×3 float32 convolutions (stride 1, padding 1, channel counts multiples of 16) by oneDNN's
    /// Winograd algorithm, forward and backward, instead of libtorch's direct algorithm; on by
    /// default. Where the build has no oneDNN headers or the CPU no Winograd kernel (oneDNN has
    /// one for AVX-512), libtorch's convolution runs as before.
    public static func setWinogradConvolutions(_ on: Bool) { ct_set_winograd_convolutions(on) }

    /// How many convolutions ran by the Winograd algorithm in this process so far.
    public static var winogradConvolutionCalls: Int { Int(ct_winograd_convolution_calls()) }

    /// Whether this build can run Winograd convolutions at all (compiled against oneDNN's headers).
    public static var winogradConvolutionsCompiled: Bool { ct_winograd_convolutions_compiled() }
}
