import CTorch

/// Neural-network kernels (PyTorch's `torch.nn.functional`), as methods on the input.
extension Tensor {
    /// 2-D convolution of an NCHW input with an OIHW weight.
    public func conv2d(
        weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1
    ) throws -> Tensor {
        try conv2d(weight: weight, bias: bias, stride: (stride, stride), padding: (padding, padding),
                   dilation: (dilation, dilation), groups: groups)
    }

    public func conv2d(
        weight: Tensor, bias: Tensor?, stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int), groups: Int
    ) throws -> Tensor {
        let s: [Int64] = [Int64(stride.0), Int64(stride.1)]
        let p: [Int64] = [Int64(padding.0), Int64(padding.1)]
        let d: [Int64] = [Int64(dilation.0), Int64(dilation.1)]
        return try withExtendedLifetime(bias) {
            try Tensor.check(ct_conv2d(handle, weight.handle, bias?.handle, s, p, d, Int64(groups)),
                             "conv2d of \(shape) with weight \(weight.shape)")
        }
    }

    /// Transposed 2-D convolution (weight is `[in, out/groups, kh, kw]`).
    public func convTranspose2d(
        weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0, outputPadding: Int = 0,
        groups: Int = 1, dilation: Int = 1
    ) throws -> Tensor {
        let s: [Int64] = [Int64(stride), Int64(stride)]
        let p: [Int64] = [Int64(padding), Int64(padding)]
        let o: [Int64] = [Int64(outputPadding), Int64(outputPadding)]
        let d: [Int64] = [Int64(dilation), Int64(dilation)]
        return try withExtendedLifetime(bias) {
            try Tensor.check(ct_conv_transpose2d(handle, weight.handle, bias?.handle, s, p, o, Int64(groups), d),
                             "conv_transpose2d of \(shape) with weight \(weight.shape)")
        }
    }

    /// 3-D convolution of an NCDHW input; sizes given as (depth, height, width).
    public func conv3d(
        weight: Tensor, bias: Tensor? = nil, stride: (Int, Int, Int) = (1, 1, 1), padding: (Int, Int, Int) = (0, 0, 0),
        dilation: (Int, Int, Int) = (1, 1, 1), groups: Int = 1
    ) throws -> Tensor {
        let s: [Int64] = [Int64(stride.0), Int64(stride.1), Int64(stride.2)]
        let p: [Int64] = [Int64(padding.0), Int64(padding.1), Int64(padding.2)]
        let d: [Int64] = [Int64(dilation.0), Int64(dilation.1), Int64(dilation.2)]
        return try withExtendedLifetime(bias) {
            try Tensor.check(ct_conv3d(handle, weight.handle, bias?.handle, s, p, d, Int64(groups)),
                             "conv3d of \(shape) with weight \(weight.shape)")
        }
    }

    public func groupNorm(groups: Int, weight: Tensor?, bias: Tensor?, eps: Double = 1e-5) throws -> Tensor {
        try withExtendedLifetime((weight, bias)) {
            try Tensor.check(ct_group_norm(handle, Int64(groups), weight?.handle, bias?.handle, eps),
                             "group_norm(\(groups)) of \(shape)")
        }
    }

    /// Layer normalisation over the trailing dimensions `normalizedShape`.
    public func layerNorm(_ normalizedShape: [Int], weight: Tensor?, bias: Tensor?, eps: Double = 1e-5) throws -> Tensor {
        let n = int64s(normalizedShape)
        return try withExtendedLifetime((weight, bias)) {
            try Tensor.check(ct_layer_norm(handle, n, Int64(n.count), weight?.handle, bias?.handle, eps),
                             "layer_norm over \(normalizedShape) of \(shape)")
        }
    }

    public func softmax(dim: Int) throws -> Tensor { try Tensor.check(ct_softmax(handle, Int64(dim)), "softmax") }
    public func logSoftmax(dim: Int) throws -> Tensor { try Tensor.check(ct_log_softmax(handle, Int64(dim)), "log_softmax") }

    /// Rows of `self` (a `[num, dim]` table) at integer `indices`.
    public func embedding(_ indices: Tensor) throws -> Tensor {
        try Tensor.check(ct_embedding(handle, indices.handle), "embedding lookup in table \(shape)")
    }

    /// `bicubic` is PyTorch's (Keys' kernel, a = −0.75; values may overshoot the input's range).
    public enum InterpolationMode: Sendable { case nearest, bilinear(alignCorners: Bool), bicubic(alignCorners: Bool) }

    /// Resizes the spatial dimensions of an NCHW tensor.
    public func interpolate(size: (height: Int, width: Int), mode: InterpolationMode = .nearest) throws -> Tensor {
        guard size.height > 0, size.width > 0 else {
            throw TorchError.invalidArgument("interpolate to non-positive size \(size)")
        }
        switch mode {
        case .nearest:
            return try Tensor.check(ct_upsample_nearest2d(handle, Int64(size.height), Int64(size.width)), "interpolate nearest")
        case let .bilinear(align):
            return try Tensor.check(ct_upsample_bilinear2d(handle, Int64(size.height), Int64(size.width), align), "interpolate bilinear")
        case let .bicubic(align):
            return try Tensor.check(ct_upsample_bicubic2d(handle, Int64(size.height), Int64(size.width), align), "interpolate bicubic")
        }
    }

    public func avgPool2d(kernel: Int, stride: Int? = nil) throws -> Tensor {
        try Tensor.check(ct_avg_pool2d(handle, Int64(kernel), Int64(stride ?? kernel)), "avg_pool2d")
    }

    public func adaptiveAvgPool2d(_ height: Int, _ width: Int) throws -> Tensor {
        try Tensor.check(ct_adaptive_avg_pool2d(handle, Int64(height), Int64(width)), "adaptive_avg_pool2d")
    }

    /// Mean cross-entropy of logits `[N, C]` against int64 class indices `[N]`.
    public func crossEntropy(targets: Tensor, labelSmoothing: Double = 0) throws -> Tensor {
        try Tensor.check(ct_cross_entropy(handle, targets.handle, labelSmoothing), "cross_entropy")
    }

    /// Mean squared error against `target`.
    public func mseLoss(_ target: Tensor) throws -> Tensor {
        try Tensor.check(ct_mse_loss(handle, target.handle), "mse_loss \(shape) vs \(target.shape)")
    }

    /// Inverted dropout with an explicit generator: zeroes each element with probability `p`
    /// and scales the rest by `1/(1-p)`. Identity when `p == 0`.
    public func dropout(_ p: Double, generator: Generator? = nil) throws -> Tensor {
        guard (0..<1).contains(p) else { throw TorchError.invalidArgument("dropout probability \(p) outside [0, 1)") }
        if p == 0 { return self }
        let keep = try Tensor.rand(shape, dtype: dtype, generator: generator).ge(p)
        return try self * keep.to(dtype) * (1 / (1 - p))
    }
}
