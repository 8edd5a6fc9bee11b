import CTorch

/// An n-dimensional array backed by a libtorch tensor.
///
/// A `Tensor` owns one reference to its libtorch storage and releases it when it is deallocated.
/// Every operation that can fail on user data (a wrong shape, a dtype libtorch rejects, an index
/// out of range) throws a ``TorchError`` carrying libtorch's own message; nothing aborts.
///
/// Tensors are reference types: in-place operations (``addInPlace(_:alpha:)`` and friends) are
/// visible through every reference, which is what optimizers and weight loading rely on.
public final class Tensor: @unchecked Sendable {
    @usableFromInline let handle: OpaquePointer

    @usableFromInline init(owning handle: OpaquePointer) {
        self.handle = handle
    }

    deinit { ct_free(handle) }

    // MARK: - Inspection

    /// The number of dimensions.
    public var rank: Int { Int(ct_dim(handle)) }

    /// The size of every dimension.
    public var shape: [Int] {
        let n = rank
        guard n > 0 else { return [] }
        var out = [Int64](repeating: 0, count: n)
        _ = ct_sizes(handle, &out, Int64(n))
        return out.map { Int($0) }
    }

    /// The strides of every dimension, in elements.
    public var strides: [Int] {
        let n = rank
        guard n > 0 else { return [] }
        var out = [Int64](repeating: 0, count: n)
        _ = ct_strides(handle, &out, Int64(n))
        return out.map { Int($0) }
    }

    /// The element type. Tensors of a type this library does not model report `.float32` never:
    /// every tensor it creates has one of ``DType``'s cases.
    public var dtype: DType { DType(rawValue: ct_scalar_type(handle)) ?? .float32 }

    /// The number of elements.
    public var count: Int { Int(ct_numel(handle)) }

    public var isContiguous: Bool { ct_is_contiguous(handle) }

    /// Whether `self` and `other` are the same libtorch tensor (the same storage view).
    public func isSameTensor(as other: Tensor) -> Bool { ct_same_storage(handle, other.handle) }

    /// The size of dimension `dim`; negative values count from the end.
    public func size(_ dim: Int) throws -> Int {
        let s = shape
        let d = dim < 0 ? dim + s.count : dim
        guard d >= 0, d < s.count else {
            throw TorchError.invalidArgument("dimension \(dim) out of range for a tensor of rank \(s.count)")
        }
        return s[d]
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        var text = "Tensor(shape: \(shape), dtype: \(dtype)"
        if count <= 16, let values = try? to(.float64).scalars(as: Double.self) {
            text += ", values: \(values)"
        }
        return text + ")"
    }
}

// MARK: - Plumbing shared by every operation

extension Tensor {
    /// Wraps a handle returned by the C ABI or throws libtorch's error message.
    @usableFromInline
    static func check(_ handle: OpaquePointer?, _ op: @autoclosure () -> String) throws -> Tensor {
        guard let handle else { throw TorchError.lastError(op()) }
        return Tensor(owning: handle)
    }

    @usableFromInline
    static func check(status: Int32, _ op: @autoclosure () -> String) throws {
        if status != 0 { throw TorchError.lastError(op()) }
    }

    /// Calls `body` with a buffer of the tensors' handles, keeping the tensors alive.
    static func withHandles<R>(
        _ tensors: [Tensor], _ body: (UnsafeMutablePointer<OpaquePointer?>, Int64) throws -> R
    ) rethrows -> R {
        var handles: [OpaquePointer?] = tensors.map { $0.handle }
        return try withExtendedLifetime(tensors) {
            try handles.withUnsafeMutableBufferPointer { buf in
                try body(buf.baseAddress!, Int64(buf.count))
            }
        }
    }
}

@inline(__always)
func int64s(_ values: [Int]) -> [Int64] { values.map { Int64($0) } }
