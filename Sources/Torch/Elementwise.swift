import CTorch

// MARK: - Unary

extension Tensor {
    @inline(__always)
    private func unary(_ op: ct_unary_op, _ name: @autoclosure () -> String) throws -> Tensor {
        try Tensor.check(ct_unary(Int32(op.rawValue), handle), name())
    }

    public func exp() throws -> Tensor { try unary(CT_EXP, "exp") }
    public func log() throws -> Tensor { try unary(CT_LOG, "log") }
    public func sqrt() throws -> Tensor { try unary(CT_SQRT, "sqrt") }
    public func rsqrt() throws -> Tensor { try unary(CT_RSQRT, "rsqrt") }
    public func abs() throws -> Tensor { try unary(CT_ABS, "abs") }
    public func sin() throws -> Tensor { try unary(CT_SIN, "sin") }
    public func cos() throws -> Tensor { try unary(CT_COS, "cos") }
    public func tanh() throws -> Tensor { try unary(CT_TANH, "tanh") }
    public func sigmoid() throws -> Tensor { try unary(CT_SIGMOID, "sigmoid") }
    public func relu() throws -> Tensor { try unary(CT_RELU, "relu") }
    public func silu() throws -> Tensor { try unary(CT_SILU, "silu") }
    /// GELU with the exact erf form (as BERT and PyTorch's default).
    public func gelu() throws -> Tensor { try unary(CT_GELU, "gelu") }
    /// GELU with the tanh approximation.
    public func geluTanh() throws -> Tensor { try unary(CT_GELU_TANH, "gelu(tanh)") }
    public func square() throws -> Tensor { try unary(CT_SQUARE, "square") }
    public func sign() throws -> Tensor { try unary(CT_SIGN, "sign") }
    public func floor() throws -> Tensor { try unary(CT_FLOOR, "floor") }
    public func ceil() throws -> Tensor { try unary(CT_CEIL, "ceil") }
    public func rounded() throws -> Tensor { try unary(CT_ROUND, "round") }
    public func reciprocal() throws -> Tensor { try unary(CT_RECIPROCAL, "reciprocal") }
    public func log1p() throws -> Tensor { try unary(CT_LOG1P, "log1p") }
    public func expm1() throws -> Tensor { try unary(CT_EXPM1, "expm1") }
    public func erf() throws -> Tensor { try unary(CT_ERF, "erf") }
    public func isNaN() throws -> Tensor { try unary(CT_ISNAN, "isnan") }
    public func isFinite() throws -> Tensor { try unary(CT_ISFINITE, "isfinite") }
    public func logicalNot() throws -> Tensor { try unary(CT_LOGICAL_NOT, "logical_not") }

    public static prefix func - (x: Tensor) throws -> Tensor { try x.unary(CT_NEG, "neg") }
}

// MARK: - Binary

extension Tensor {
    @inline(__always)
    static func binary(_ op: ct_binary_op, _ a: Tensor, _ b: Tensor, _ name: @autoclosure () -> String) throws -> Tensor {
        try check(ct_binary(Int32(op.rawValue), a.handle, b.handle), "\(name()) \(a.shape) and \(b.shape)")
    }

    @inline(__always)
    static func binary(_ op: ct_binary_op, _ a: Tensor, _ s: Double, reversed: Bool, _ name: @autoclosure () -> String) throws -> Tensor {
        try check(ct_binary_scalar(Int32(op.rawValue), a.handle, s, reversed), name())
    }

    public static func + (a: Tensor, b: Tensor) throws -> Tensor { try binary(CT_ADD, a, b, "add") }
    public static func - (a: Tensor, b: Tensor) throws -> Tensor { try binary(CT_SUB, a, b, "sub") }
    public static func * (a: Tensor, b: Tensor) throws -> Tensor { try binary(CT_MUL, a, b, "mul") }
    public static func / (a: Tensor, b: Tensor) throws -> Tensor { try binary(CT_DIV, a, b, "div") }

    public static func + (a: Tensor, s: Double) throws -> Tensor { try binary(CT_ADD, a, s, reversed: false, "add") }
    public static func - (a: Tensor, s: Double) throws -> Tensor { try binary(CT_SUB, a, s, reversed: false, "sub") }
    public static func * (a: Tensor, s: Double) throws -> Tensor { try binary(CT_MUL, a, s, reversed: false, "mul") }
    public static func / (a: Tensor, s: Double) throws -> Tensor { try binary(CT_DIV, a, s, reversed: false, "div") }
    public static func + (s: Double, a: Tensor) throws -> Tensor { try binary(CT_ADD, a, s, reversed: true, "add") }
    public static func - (s: Double, a: Tensor) throws -> Tensor { try binary(CT_SUB, a, s, reversed: true, "sub") }
    public static func * (s: Double, a: Tensor) throws -> Tensor { try binary(CT_MUL, a, s, reversed: true, "mul") }
    public static func / (s: Double, a: Tensor) throws -> Tensor { try binary(CT_DIV, a, s, reversed: true, "div") }

    public func pow(_ exponent: Double) throws -> Tensor { try Tensor.binary(CT_POW, self, exponent, reversed: false, "pow") }
    public func pow(_ exponent: Tensor) throws -> Tensor { try Tensor.binary(CT_POW, self, exponent, "pow") }
    public func maximum(_ other: Tensor) throws -> Tensor { try Tensor.binary(CT_MAXIMUM, self, other, "maximum") }
    public func minimum(_ other: Tensor) throws -> Tensor { try Tensor.binary(CT_MINIMUM, self, other, "minimum") }
    public func maximum(_ s: Double) throws -> Tensor { try Tensor.binary(CT_MAXIMUM, self, s, reversed: false, "maximum") }
    public func minimum(_ s: Double) throws -> Tensor { try Tensor.binary(CT_MINIMUM, self, s, reversed: false, "minimum") }
    public func remainder(_ s: Double) throws -> Tensor { try Tensor.binary(CT_REMAINDER, self, s, reversed: false, "remainder") }

    // Comparisons return bool tensors.
    public func eq(_ o: Tensor) throws -> Tensor { try Tensor.binary(CT_EQ, self, o, "eq") }
    public func ne(_ o: Tensor) throws -> Tensor { try Tensor.binary(CT_NE, self, o, "ne") }
    public func lt(_ o: Tensor) throws -> Tensor { try Tensor.binary(CT_LT, self, o, "lt") }
    public func le(_ o: Tensor) throws -> Tensor { try Tensor.binary(CT_LE, self, o, "le") }
    public func gt(_ o: Tensor) throws -> Tensor { try Tensor.binary(CT_GT, self, o, "gt") }
    public func ge(_ o: Tensor) throws -> Tensor { try Tensor.binary(CT_GE, self, o, "ge") }
    public func eq(_ s: Double) throws -> Tensor { try Tensor.binary(CT_EQ, self, s, reversed: false, "eq") }
    public func lt(_ s: Double) throws -> Tensor { try Tensor.binary(CT_LT, self, s, reversed: false, "lt") }
    public func le(_ s: Double) throws -> Tensor { try Tensor.binary(CT_LE, self, s, reversed: false, "le") }
    public func gt(_ s: Double) throws -> Tensor { try Tensor.binary(CT_GT, self, s, reversed: false, "gt") }
    public func ge(_ s: Double) throws -> Tensor { try Tensor.binary(CT_GE, self, s, reversed: false, "ge") }
    public func logicalAnd(_ o: Tensor) throws -> Tensor { try Tensor.binary(CT_LOGICAL_AND, self, o, "logical_and") }
    public func logicalOr(_ o: Tensor) throws -> Tensor { try Tensor.binary(CT_LOGICAL_OR, self, o, "logical_or") }

    /// Elementwise `condition ? a : b`.
    public static func `where`(_ condition: Tensor, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        try check(ct_where(condition.handle, a.handle, b.handle), "where")
    }

    /// Clamps to `[min, max]`; either bound may be omitted.
    public func clamped(min lo: Double? = nil, max hi: Double? = nil) throws -> Tensor {
        try Tensor.check(ct_clamp(handle, lo ?? 0, hi ?? 0, lo != nil, hi != nil), "clamp")
    }

    /// Writes `value` where `mask` is true.
    public func maskedFill(_ mask: Tensor, value: Double) throws -> Tensor {
        try Tensor.check(ct_masked_fill(handle, mask.handle, value), "masked_fill")
    }

    /// Linear interpolation `self + weight * (end - self)`.
    public func lerp(_ end: Tensor, weight: Double) throws -> Tensor {
        try Tensor.check(ct_lerp(handle, end.handle, weight), "lerp")
    }

    /// A copy converted to `dtype` (or `self` when it already has it).
    public func to(_ dtype: DType) throws -> Tensor {
        if dtype == self.dtype { return self }
        return try Tensor.check(ct_to_dtype(handle, dtype.rawValue), "to \(dtype)")
    }
}

// MARK: - In place
//
// For tensors outside the autograd graph (optimizer state, parameters under `withNoGrad`).

extension Tensor {
    public func addInPlace(_ other: Tensor, alpha: Double = 1) throws {
        try Tensor.check(status: ct_add_scaled_(handle, other.handle, alpha), "add_")
    }
    public func subInPlace(_ other: Tensor) throws {
        try Tensor.check(status: ct_inplace_binary(Int32(CT_SUB.rawValue), handle, other.handle), "sub_")
    }
    public func mulInPlace(_ other: Tensor) throws {
        try Tensor.check(status: ct_inplace_binary(Int32(CT_MUL.rawValue), handle, other.handle), "mul_")
    }
    public func divInPlace(_ other: Tensor) throws {
        try Tensor.check(status: ct_inplace_binary(Int32(CT_DIV.rawValue), handle, other.handle), "div_")
    }
    public func addInPlace(_ s: Double) throws {
        try Tensor.check(status: ct_inplace_scalar(Int32(CT_ADD.rawValue), handle, s), "add_")
    }
    public func mulInPlace(_ s: Double) throws {
        try Tensor.check(status: ct_inplace_scalar(Int32(CT_MUL.rawValue), handle, s), "mul_")
    }
    /// `self += value * a * b`
    public func addcmulInPlace(_ a: Tensor, _ b: Tensor, value: Double = 1) throws {
        try Tensor.check(status: ct_addcmul_(handle, a.handle, b.handle, value), "addcmul_")
    }
    /// `self += value * a / b`
    public func addcdivInPlace(_ a: Tensor, _ b: Tensor, value: Double = 1) throws {
        try Tensor.check(status: ct_addcdiv_(handle, a.handle, b.handle, value), "addcdiv_")
    }
    /// `self += weight * (end - self)`
    public func lerpInPlace(_ end: Tensor, weight: Double) throws {
        try Tensor.check(status: ct_lerp_(handle, end.handle, weight), "lerp_")
    }
    /// Copies `source`'s values (broadcast and converted) into `self`.
    public func copy(from source: Tensor) throws {
        try Tensor.check(status: ct_copy_(handle, source.handle), "copy_ \(source.shape) into \(shape)")
    }
    public func fill(_ value: Double) throws {
        try Tensor.check(status: ct_fill_(handle, value), "fill_")
    }
    public func zero() throws {
        try Tensor.check(status: ct_zero_(handle), "zero_")
    }

    /// `a[i] += weight * (b[i] - a[i])` for every pair, in one fused libtorch call.
    public static func lerpInPlace(_ a: [Tensor], towards b: [Tensor], weight: Double) throws {
        guard a.count == b.count else { throw TorchError.invalidArgument("lerp lists differ in length") }
        try withHandles(a) { ha, n in
            try withHandles(b) { hb, _ in
                try check(status: ct_foreach_lerp_(ha, hb, n, weight), "foreach lerp_")
            }
        }
    }

    /// The 2-norm of every tensor, `[a.count]`, in one multi-tensor libtorch call.
    public static func norms(_ a: [Tensor]) throws -> Tensor {
        guard !a.isEmpty else { throw TorchError.invalidArgument("norms of no tensors") }
        return try withHandles(a) { ha, n in try check(ct_foreach_norm_stacked(ha, n), "foreach norm") }
    }

    /// One AdamW update (`torch.optim.AdamW`'s arithmetic, op for op) of every parameter, as a
    /// few multi-tensor libtorch calls: `p *= 1 − lr·wd`, `m ← lerp(m, g, 1 − β1)`,
    /// `v ← β2·v + (1 − β2)·g²`, `p −= stepSize · m / (√v / correction2Root + eps)`.
    /// The four lists are aligned; call without gradient tracking.
    public static func adamWUpdate(
        parameters: [Tensor], gradients: [Tensor], firstMoments: [Tensor], secondMoments: [Tensor],
        learningRate: Double, betas: (Double, Double), eps: Double, weightDecay: Double,
        stepSize: Double, correction2Root: Double
    ) throws {
        let n = parameters.count
        guard gradients.count == n, firstMoments.count == n, secondMoments.count == n else {
            throw TorchError.invalidArgument("AdamW lists differ in length")
        }
        try withHandles(parameters) { hp, count in
            try withHandles(gradients) { hg, _ in
                try withHandles(firstMoments) { hm, _ in
                    try withHandles(secondMoments) { hv, _ in
                        try check(
                            status: ct_adamw_step_(
                                hp, hg, hm, hv, count, learningRate, betas.0, betas.1, eps, weightDecay, stepSize,
                                correction2Root),
                            "AdamW step")
                    }
                }
            }
        }
    }

    /// `a[i] *= s` for every tensor, in one fused libtorch call.
    public static func mulInPlace(_ a: [Tensor], _ s: Double) throws {
        try withHandles(a) { ha, n in
            try check(status: ct_foreach_mul_scalar_(ha, n, s), "foreach mul_")
        }
    }
}
