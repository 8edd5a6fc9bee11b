import CTorch

/// A seeded random-number generator (ATen's CPU mt19937). Pass one to every random operation
/// to make results reproducible; its state can be saved and restored for exact resumption.
public final class Generator: @unchecked Sendable {
    let handle: OpaquePointer

    /// Creates a generator seeded with `seed`.
    public init(seed: UInt64) {
        // ct_generator_new only fails on allocation failure.
        guard let h = ct_generator_new(seed) else {
            fatalError("libtorch could not allocate a generator: \(String(cString: ct_last_error()))")
        }
        handle = h
    }

    deinit { ct_generator_free(handle) }

    /// The generator's full state as bytes (restorable with ``setState(_:)``).
    public func state() throws -> [UInt8] {
        let t = try Tensor.check(ct_generator_get_state(handle), "generator state")
        return try t.scalars(as: UInt8.self)
    }

    /// Restores a state returned by ``state()``.
    public func setState(_ bytes: [UInt8]) throws {
        let t = try Tensor(bytes, shape: [bytes.count])
        try Tensor.check(status: ct_generator_set_state(handle, t.handle), "set generator state")
    }

    /// The generator random operations use when given none, inside ``Torch/withSeed(_:_:)``;
    /// `nil` (libtorch's process-wide generator) elsewhere.
    @TaskLocal public static var scoped: Generator?
}

extension Torch {
    /// Runs `body` with every random operation that is given no ``Generator`` (weight
    /// initialisation, `randn`, …) drawing from a fresh generator seeded with `seed`.
    ///
    /// Unlike ``manualSeed(_:)``, the scope belongs to the calling task (and the tasks it
    /// starts), so concurrent callers — tests run in parallel, a server building models — each
    /// get the values a lone caller gets. A generator seeded with `seed` draws what the global
    /// one draws after `manualSeed(seed)`.
    public static func withSeed<R>(_ seed: UInt64, _ body: () throws -> R) rethrows -> R {
        try Generator.$scoped.withValue(Generator(seed: seed), operation: body)
    }
}

extension Tensor {
    // MARK: - From Swift arrays

    /// Creates a tensor by copying `values`, laid out row-major with the given shape.
    public convenience init<S: TensorScalar>(_ values: [S], shape: [Int]) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw TorchError.invalidArgument("negative dimension in shape \(shape)")
        }
        let expected = shape.reduce(1, *)
        guard expected == values.count else {
            throw TorchError.invalidArgument(
                "\(values.count) values do not fill shape \(shape) (\(expected) elements)")
        }
        let dims = int64s(shape)
        let h = values.withUnsafeBytes { raw in
            ct_from_data(raw.baseAddress, dims, Int64(dims.count), S.dtype.rawValue)
        }
        guard let h else { throw TorchError.lastError("tensor from data") }
        self.init(owning: h)
    }

    /// Creates a 1-D tensor from `values`.
    public convenience init<S: TensorScalar>(_ values: [S]) throws {
        try self.init(values, shape: [values.count])
    }

    /// Creates a 0-dimensional tensor holding `value`.
    public convenience init<S: TensorScalar>(scalar value: S) throws {
        try self.init([value], shape: [])
    }

    /// Creates a tensor of `dtype` from raw little-endian bytes.
    public convenience init(bytes: UnsafeRawBufferPointer, shape: [Int], dtype: DType) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw TorchError.invalidArgument("negative dimension in shape \(shape)")
        }
        let expected = shape.reduce(1, *) * dtype.byteSize
        guard expected == bytes.count else {
            throw TorchError.invalidArgument(
                "\(bytes.count) bytes do not fill shape \(shape) of \(dtype) (\(expected) bytes)")
        }
        let dims = int64s(shape)
        guard let h = ct_from_data(bytes.baseAddress, dims, Int64(dims.count), dtype.rawValue) else {
            throw TorchError.lastError("tensor from bytes")
        }
        self.init(owning: h)
    }

    /// The elements in row-major order. `S` must match ``dtype`` exactly (use ``to(_:)`` first).
    public func scalars<S: TensorScalar>(as type: S.Type = S.self) throws -> [S] {
        guard S.dtype == dtype else {
            throw TorchError.invalidArgument("tensor of \(dtype) read as \(S.dtype); convert with to(_:) first")
        }
        let n = count
        var out = [S]()
        out.reserveCapacity(n)
        var status: Int32 = 0
        out = try [S](unsafeUninitializedCapacity: n) { buffer, initialized in
            status = ct_copy_out(handle, UnsafeMutableRawPointer(buffer.baseAddress), n * S.dtype.byteSize)
            if status != 0 { throw TorchError.lastError("copy out") }
            initialized = n
        }
        return out
    }

    /// The raw bytes of the elements, row-major.
    public func bytes() throws -> [UInt8] {
        let n = count * dtype.byteSize
        return try [UInt8](unsafeUninitializedCapacity: n) { buffer, initialized in
            if ct_copy_out(handle, UnsafeMutableRawPointer(buffer.baseAddress), n) != 0 {
                throw TorchError.lastError("copy out")
            }
            initialized = n
        }
    }

    /// The value of a one-element tensor, as a `Double`.
    public func item() throws -> Double {
        var v = 0.0
        try Tensor.check(status: ct_item_double(handle, &v), "item")
        return v
    }

    /// The value of a one-element tensor, as an `Int`.
    public func intItem() throws -> Int {
        var v: Int64 = 0
        try Tensor.check(status: ct_item_int64(handle, &v), "item")
        return Int(v)
    }

    // MARK: - Factories

    public static func zeros(_ shape: [Int], dtype: DType = .float32) throws -> Tensor {
        let d = int64s(shape)
        return try check(ct_zeros(d, Int64(d.count), dtype.rawValue), "zeros \(shape)")
    }

    public static func ones(_ shape: [Int], dtype: DType = .float32) throws -> Tensor {
        let d = int64s(shape)
        return try check(ct_ones(d, Int64(d.count), dtype.rawValue), "ones \(shape)")
    }

    public static func full(_ shape: [Int], value: Double, dtype: DType = .float32) throws -> Tensor {
        let d = int64s(shape)
        return try check(ct_full(d, Int64(d.count), value, dtype.rawValue), "full \(shape)")
    }

    /// Values `start, start+step, ...` below `end`.
    public static func arange(_ start: Double = 0, _ end: Double, step: Double = 1, dtype: DType = .float32) throws -> Tensor {
        try check(ct_arange(start, end, step, dtype.rawValue), "arange")
    }

    public static func linspace(_ start: Double, _ end: Double, count: Int, dtype: DType = .float32) throws -> Tensor {
        try check(ct_linspace(start, end, Int64(count), dtype.rawValue), "linspace")
    }

    public static func eye(_ n: Int, dtype: DType = .float32) throws -> Tensor {
        try check(ct_eye(Int64(n), dtype.rawValue), "eye")
    }

    /// Standard normal samples. Without a generator, the scoped one (``Torch/withSeed(_:_:)``)
    /// or else libtorch's global one is used.
    public static func randn(_ shape: [Int], dtype: DType = .float32, generator: Generator? = nil) throws -> Tensor {
        let d = int64s(shape), generator = generator ?? Generator.scoped
        return try withExtendedLifetime(generator) {
            try check(ct_randn(d, Int64(d.count), dtype.rawValue, generator?.handle), "randn \(shape)")
        }
    }

    /// Uniform samples in [0, 1).
    public static func rand(_ shape: [Int], dtype: DType = .float32, generator: Generator? = nil) throws -> Tensor {
        let d = int64s(shape), generator = generator ?? Generator.scoped
        return try withExtendedLifetime(generator) {
            try check(ct_rand(d, Int64(d.count), dtype.rawValue, generator?.handle), "rand \(shape)")
        }
    }

    /// Uniform integers in [low, high), as int64.
    public static func randint(_ low: Int, _ high: Int, shape: [Int], generator: Generator? = nil) throws -> Tensor {
        let d = int64s(shape), generator = generator ?? Generator.scoped
        return try withExtendedLifetime(generator) {
            try check(ct_randint(Int64(low), Int64(high), d, Int64(d.count), generator?.handle), "randint")
        }
    }

    /// A random permutation of 0..<n, as int64.
    public static func randperm(_ n: Int, generator: Generator? = nil) throws -> Tensor {
        let generator = generator ?? Generator.scoped
        return try withExtendedLifetime(generator) {
            try check(ct_randperm(Int64(n), generator?.handle), "randperm")
        }
    }

    public func zerosLike() throws -> Tensor { try Tensor.check(ct_zeros_like(handle), "zeros_like") }
    public func onesLike() throws -> Tensor { try Tensor.check(ct_ones_like(handle), "ones_like") }
    public func randnLike(generator: Generator? = nil) throws -> Tensor {
        let generator = generator ?? Generator.scoped
        return try withExtendedLifetime(generator) {
            try Tensor.check(ct_randn_like(handle, generator?.handle), "randn_like")
        }
    }
}
