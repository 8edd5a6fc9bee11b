import CTorch

extension Tensor {
    /// Whether gradients are recorded for this tensor.
    public var requiresGrad: Bool { ct_requires_grad(handle) }

    /// Marks a leaf tensor as requiring (or not) gradients; returns `self` for chaining.
    @discardableResult
    public func requiringGrad(_ flag: Bool = true) throws -> Tensor {
        try Tensor.check(status: ct_set_requires_grad(handle, flag), "requires_grad")
        return self
    }

    /// Back-propagates from this tensor (a scalar unless `gradient` is given).
    public func backward(_ gradient: Tensor? = nil, retainGraph: Bool = false) throws {
        try withExtendedLifetime(gradient) {
            try Tensor.check(status: ct_backward(handle, gradient?.handle, retainGraph), "backward")
        }
    }

    /// The accumulated gradient, or `nil` when none has been computed.
    public var grad: Tensor? {
        var out: OpaquePointer?
        guard ct_grad(handle, &out) == 0, let out else { return nil }
        return Tensor(owning: out)
    }

    /// Replaces the data behind this tensor (storage, shape and dtype) with `source`'s while
    /// keeping its identity, as PyTorch's `param.data = source`. Used to load or convert weights.
    public func setData(_ source: Tensor) throws {
        try Tensor.check(status: ct_set_data(handle, source.handle), "set_data")
    }

    /// Drops the accumulated gradient.
    public func zeroGrad() throws {
        try Tensor.check(status: ct_zero_grad(handle), "zero_grad")
    }

    /// A view sharing storage that is cut from the autograd graph.
    public func detached() throws -> Tensor { try Tensor.check(ct_detach(handle), "detach") }
}

/// Global switches of libtorch (thread-local where libtorch makes them so).
public enum Torch {
    /// Whether autograd records operations on this thread.
    public static var isGradEnabled: Bool { ct_grad_enabled() }

    /// Runs `body` with gradient recording off on this thread, restoring the previous mode.
    public static func withNoGrad<R>(_ body: () throws -> R) rethrows -> R {
        let previous = ct_grad_enabled()
        ct_set_grad_enabled(false)
        defer { ct_set_grad_enabled(previous) }
        return try body()
    }

    /// Runs `body` with gradient recording on (e.g. inside a no-grad region).
    public static func withGrad<R>(_ body: () throws -> R) rethrows -> R {
        let previous = ct_grad_enabled()
        ct_set_grad_enabled(true)
        defer { ct_set_grad_enabled(previous) }
        return try body()
    }

    /// Runs `body` in libtorch's inference mode (no autograd bookkeeping at all; faster than
    /// no-grad). Tensors created inside cannot later take part in autograd.
    public static func withInferenceMode<R>(_ body: () throws -> R) rethrows -> R {
        let guardHandle = ct_inference_mode_enter()
        defer { ct_inference_mode_exit(guardHandle) }
        return try body()
    }

    /// Seeds libtorch's global generator (used by random operations given no ``Generator``,
    /// such as weight initialisation, outside a ``withSeed(_:_:)`` scope). The generator is
    /// shared by the whole process: code that may run concurrently seeds with `withSeed`.
    public static func manualSeed(_ seed: UInt64) { ct_manual_seed(seed) }

    /// The number of intra-op threads libtorch uses. Setting it sets OpenBLAS's own thread
    /// pool to the same count (``blasThreads``), which libtorch's setting does not reach, unless
    /// the environment names a count (`OPENBLAS_NUM_THREADS`), which then wins.
    public static var numThreads: Int {
        get { Int(ct_get_num_threads()) }
        set { ct_set_num_threads(Int64(newValue)) }
    }

    /// OpenBLAS's thread count, or nil when the BLAS libtorch uses is not OpenBLAS. Setting it
    /// (a count ≥ 1) does nothing where there is no OpenBLAS.
    public static var blasThreads: Int? {
        get {
            let n = ct_get_blas_threads()
            return n < 0 ? nil : Int(n)
        }
        set { if let newValue, newValue >= 1 { _ = ct_set_blas_threads(Int64(newValue)) } }
    }

    /// The libtorch this build was compiled against, "MAJOR.MINOR.PATCH" (Debian's 1.13.x by
    /// default; a PyPI torch 2.x with `CONTEXTDIFF_LIBTORCH`).
    public static var libtorchVersion: String { String(cString: ct_libtorch_version()) }

    /// libtorch's description of its parallel backends (OpenMP, MKL-DNN, BLAS threads).
    public static var parallelInfo: String { String(cString: ct_parallel_info()) }
}
