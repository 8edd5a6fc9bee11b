import Foundation

extension SafeTensorsDType {
    /// The tensor element type of this safetensors dtype.
    public var dtype: DType {
        switch self {
        case .f64: .float64
        case .f32: .float32
        case .f16: .float16
        case .bf16: .bfloat16
        case .i64: .int64
        case .i32: .int32
        case .i16: .int16
        case .i8: .int8
        case .u8: .uint8
        case .bool: .bool
        }
    }

    public init(_ dtype: DType) {
        switch dtype {
        case .float64: self = .f64
        case .float32: self = .f32
        case .float16: self = .f16
        case .bfloat16: self = .bf16
        case .int64: self = .i64
        case .int32: self = .i32
        case .int16: self = .i16
        case .int8: self = .i8
        case .uint8: self = .u8
        case .bool: self = .bool
        }
    }
}

extension SafeTensorsEntry {
    /// A copy of `tensor`'s values (detached from autograd).
    public init(_ tensor: Tensor) throws {
        let bytes = try tensor.bytes()
        self.init(dtype: SafeTensorsDType(tensor.dtype), shape: tensor.shape, data: Data(bytes))
    }

    /// A new tensor holding these values.
    public func tensor() throws -> Tensor {
        try data.withUnsafeBytes { raw in
            try Tensor(bytes: raw, shape: shape, dtype: dtype.dtype)
        }
    }
}

/// Reads every tensor of a safetensors file (validated; see ``SafeTensorsFile``).
public func loadSafeTensors(_ url: URL) throws -> [String: Tensor] {
    try loadSafeTensorsWithMetadata(url).tensors
}

/// Reads every tensor and the metadata of a safetensors file.
public func loadSafeTensorsWithMetadata(_ url: URL) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
    let file = try SafeTensorsFile(contentsOf: url)
    var out: [String: Tensor] = [:]
    for (name, entry) in file.tensors { out[name] = try entry.tensor() }
    return (out, file.metadata)
}

/// Writes tensors (and string metadata) to a safetensors file atomically (temp file + rename).
public func saveSafeTensors(_ tensors: [String: Tensor], metadata: [String: String] = [:], to url: URL) throws {
    var entries: [String: SafeTensorsEntry] = [:]
    for (name, t) in tensors { entries[name] = try SafeTensorsEntry(t) }
    try SafeTensorsFile(tensors: entries, metadata: metadata).write(to: url)
}
