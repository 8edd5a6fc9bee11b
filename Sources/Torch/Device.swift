import CTorch

/// Where a tensor's data lives.
///
/// `cpu` is the only device with kernels in the default build. `meta` holds shapes and dtypes
/// but no data: a model built there allocates nothing, which is how a model folder's config is
/// checked against its weights before any memory is committed. `cuda(n)` needs a libtorch with
/// CUDA at run time; asking for it without one is a ``TorchError``.
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
