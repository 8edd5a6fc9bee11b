import CTorch

/// Where a tensor's data lives.
///
/// `cpu` always has kernels. `meta` holds shapes and dtypes but no data: a model built there
/// allocates nothing, which is how a model folder's config is checked against its weights before
/// any memory is committed. `cuda(n)` needs libtorch_cuda at run time (a build against a CUDA
/// torch, `CONTEXTDIFF_LIBTORCH`; it is loaded on first use) and a visible GPU; asking for it
/// without them is ``TorchError/deviceUnavailable(_:)`` saying which is missing.
public enum Device: Hashable, Sendable, CustomStringConvertible {
    case cpu
    case meta
    case cuda(Int)

    public var description: String {
        switch self {
        case .cpu: "cpu"
        case .meta: "meta"
        case let .cuda(index): "cuda:\(index)"
        }
    }

    /// Parses `cpu`, `meta`, `cuda` (device 0) or `cuda:N`.
    public init?(_ text: String) {
        switch text {
        case "cpu": self = .cpu
        case "meta": self = .meta
        case "cuda": self = .cuda(0)
        default:
            guard text.hasPrefix("cuda:"), let index = Int(text.dropFirst(5)), index >= 0 else { return nil }
            self = .cuda(index)
        }
    }

    var abi: (type: Int32, index: Int64) {
        switch self {
        case .cpu: (Int32(CT_DEVICE_CPU.rawValue), 0)
        case .meta: (Int32(CT_DEVICE_META.rawValue), 0)
        case let .cuda(index): (Int32(CT_DEVICE_CUDA.rawValue), Int64(index))
        }
    }

    init(abi type: Int32, index: Int64) throws {
        switch UInt32(bitPattern: type) {
        case CT_DEVICE_CPU.rawValue: self = .cpu
        case CT_DEVICE_META.rawValue: self = .meta
        case CT_DEVICE_CUDA.rawValue: self = .cuda(Int(index))
        default: throw TorchError.invalidArgument("unknown device type \(type)")
        }
    }
}

extension Torch {
    /// How many CUDA devices libtorch sees, loading libtorch_cuda on first use. Throws
    /// ``TorchError/deviceUnavailable(_:)`` saying why when there is no usable CUDA.
    public static func cudaDeviceCount() throws -> Int {
        let count = ct_cuda_device_count()
        guard count >= 0 else { throw TorchError.deviceUnavailable(String(cString: ct_last_error()).trimmingTrailingNewlines()) }
        return Int(count)
    }

    /// Checks that tensors can live on `device` here: `cpu` and `meta` always; `cuda:N` when
    /// libtorch_cuda loads and device N is visible. Commands call it before any work, so a
    /// missing GPU is a clear error at the start and not a failure halfway through.
    public static func checkAvailable(_ device: Device) throws {
        guard case let .cuda(index) = device else { return }
        let count = try cudaDeviceCount()
        guard index < count else {
            throw TorchError.deviceUnavailable("\(device) asked for, but \(count) CUDA device(s) are visible")
        }
    }

    /// Lets CUDA's convolutions and matrix products use TF32 (10-bit mantissa inputs: faster on
    /// recent GPUs, results about 1e-3 from fp32). Off by default here, unlike PyTorch's cuDNN
    /// default, so a CUDA run equals the CPU's within 1e-4. Throws without CUDA.
    public static func allowTF32(_ allow: Bool) throws {
        guard ct_set_allow_tf32(allow ? 1 : 0) == 0 else {
            throw TorchError.deviceUnavailable(String(cString: ct_last_error()).trimmingTrailingNewlines())
        }
    }

    /// Waits until `device` has finished the work queued on it (CUDA runs kernels
    /// asynchronously; timings must wait). A no-op on the CPU.
    public static func synchronize(_ device: Device) throws {
        guard case let .cuda(index) = device else { return }
        guard ct_cuda_synchronize(Int64(index)) == 0 else {
            throw TorchError.deviceUnavailable(String(cString: ct_last_error()).trimmingTrailingNewlines())
        }
    }

    /// The calling thread's device for new tensors (creation functions and weight
    /// initialisation).
    public static var defaultDevice: Device {
        var type: Int32 = 0, index: Int64 = 0
        guard ct_get_default_device(&type, &index) == 0, let device = try? Device(abi: type, index: index) else { return .cpu }
        return device
    }

    /// Runs `body` with new tensors made on `device` on this thread, then restores the previous
    /// default. `withDefaultDevice(.meta) { try UNet(config) }` builds a model without allocating.
    public static func withDefaultDevice<R>(_ device: Device, _ body: () throws -> R) throws -> R {
        let previous = defaultDevice
        try setDefaultDevice(device)
        defer { try? setDefaultDevice(previous) }
        return try body()
    }

    static func setDefaultDevice(_ device: Device) throws {
        let (type, index) = device.abi
        try Tensor.check(status: ct_set_default_device(type, index), "set default device \(device)")
    }
}

extension Tensor {
    /// The device holding this tensor's data.
    public var device: Device {
        get throws {
            var type: Int32 = 0, index: Int64 = 0
            try Tensor.check(status: ct_tensor_device(handle, &type, &index), "device")
            return try Device(abi: type, index: index)
        }
    }

    /// This tensor on `device` (itself when it is already there).
    public func to(_ device: Device) throws -> Tensor {
        let (type, index) = device.abi
        return try Tensor.check(ct_to_device(handle, type, index), "to \(device)")
    }
}
