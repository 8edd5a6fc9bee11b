// A dependency-free reader and writer for the safetensors format
// (https://github.com/huggingface/safetensors), Foundation only.
//
// Layout of a file:
//
//     [8 bytes]  N, the header length, unsigned little-endian
//     [N bytes]  the header: a UTF-8 JSON object, optionally padded with trailing spaces
//     [rest]     the data section: every tensor's raw little-endian bytes
//
// The header maps each tensor name to `{"dtype": "F32", "shape": [2, 3],
// "data_offsets": [begin, end]}` (offsets relative to the start of the data section)
// and may carry one `"__metadata__"` object of string → string.

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Public API

/// The element types of the safetensors format that this codec reads and writes.
///
/// The raw value is the spelling used in a file's header.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case f64 = "F64"
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    case i64 = "I64"
    case i32 = "I32"
    case i16 = "I16"
    case i8 = "I8"
    case u8 = "U8"
    case bool = "BOOL"

    /// The size of one element in bytes.
    public var byteSize: Int {
        switch self {
        case .f64, .i64: 8
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
        case .i8, .u8, .bool: 1
        }
    }
}

/// One tensor of a safetensors file.
public struct SafeTensorsEntry: Sendable, Equatable {
    /// The element type.
    public var dtype: SafeTensorsDType
    /// The dimensions, outermost first; `[]` is a 0-dimensional (scalar) tensor.
    public var shape: [Int]
    /// The elements' raw little-endian bytes in row-major order.
    ///
    /// Its `count` must be the product of `shape` times `dtype.byteSize`; entries read from a
    /// file always satisfy this, and ``SafeTensorsFile/serialized()`` checks it.
    public var data: Data

    /// Creates an entry; the consistency of `data` with `shape` and `dtype` is checked when
    /// the file is serialized.
    public init(dtype: SafeTensorsDType, shape: [Int], data: Data) {
        self.dtype = dtype
        self.shape = shape
        self.data = data
    }
}

/// The contents of a safetensors file: named tensors plus string metadata.
///
/// Reading validates the whole file before returning anything (see ``SafeTensorsError`` for
/// every check). Writing is deterministic: tensors are laid out in the byte order of their
/// UTF-8 names, the header's JSON has no insignificant whitespace and is padded with spaces to
/// a multiple of 8 bytes, and `"__metadata__"` (keys sorted the same way) is written only
/// when ``metadata`` is non-empty.
public struct SafeTensorsFile: Sendable, Equatable {
    /// The largest header this codec reads or writes, in bytes (the reference implementation's
    /// limit).
    public static let maxHeaderLength = 100_000_000

    /// The tensors, by name.
    public var tensors: [String: SafeTensorsEntry]
    /// The header's `"__metadata__"` (empty when the file has none).
    public var metadata: [String: String]

    /// Creates a file from tensors and metadata without validating them
    /// (``serialized()`` does).
    public init(tensors: [String: SafeTensorsEntry] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Parses and validates the bytes of a whole safetensors file.
    ///
    /// Every entry's `data` is an independent, zero-based copy of its bytes.
    public init(data: Data) throws(SafeTensorsError) {
        let base = data.startIndex
        let headerLength = try Self.checkedHeaderLength(prefix: data.prefix(8), fileSize: data.count)
        let header = [UInt8](data[(base + 8)..<(base + 8 + headerLength)])
        let dataStart = base + 8 + headerLength
        let layout = try Layout(header: header, dataSize: data.count - 8 - headerLength)
        var tensors: [String: SafeTensorsEntry] = [:]
        tensors.reserveCapacity(layout.tensors.count)
        for tensor in layout.tensors {
            let bytes = Data(data[(dataStart + tensor.span.lowerBound)..<(dataStart + tensor.span.upperBound)])
            tensors[tensor.name] = SafeTensorsEntry(dtype: tensor.dtype, shape: tensor.shape, data: bytes)
        }
        self.init(tensors: tensors, metadata: layout.metadata)
    }

    /// Reads, parses and validates the safetensors file at `url`.
    ///
    /// The header is validated before any tensor data is read, and each tensor is read
    /// straight into its own buffer, so the whole file is never held in memory twice.
    ///
    /// - Throws: ``SafeTensorsError/io(path:message:)`` when the file cannot be opened or read,
    ///   otherwise the same errors as ``init(data:)``.
    public init(contentsOf url: URL) throws(SafeTensorsError) {
        let (tensors, metadata) = try Self.read(url) { file, dataStart, layout throws(SafeTensorsError) in
            var tensors: [String: SafeTensorsEntry] = [:]
            tensors.reserveCapacity(layout.tensors.count)
            for tensor in layout.tensors {
                let bytes = try file.read(at: dataStart + tensor.span.lowerBound, count: tensor.span.count)
                tensors[tensor.name] = SafeTensorsEntry(dtype: tensor.dtype, shape: tensor.shape, data: bytes)
            }
            return (tensors, layout.metadata)
        }
        self.init(tensors: tensors, metadata: metadata)
    }

    /// Reads and validates only the header of the safetensors file at `url`: every tensor's
    /// dtype and shape, without its data. The checks are those of ``init(contentsOf:)`` (the
    /// spans must tile the data section of the file as it is on disk), so a file that passes
    /// here fails a full read only by an I/O error.
    public static func header(contentsOf url: URL) throws(SafeTensorsError) -> (tensors: [String: (dtype: SafeTensorsDType, shape: [Int])], metadata: [String: String]) {
        try read(url) { _, _, layout in
            var tensors: [String: (dtype: SafeTensorsDType, shape: [Int])] = [:]
            for tensor in layout.tensors { tensors[tensor.name] = (tensor.dtype, tensor.shape) }
            return (tensors, layout.metadata)
        }
    }

    /// Opens `url`, validates its header and passes the open file, the data section's offset and
    /// the layout to `body`.
    private static func read<R>(
        _ url: URL, _ body: (ReadableFile, Int, Layout) throws(SafeTensorsError) -> R
    ) throws(SafeTensorsError) -> R {
        let path = url.isFileURL ? url.path : url.absoluteString
        guard url.isFileURL else { throw .io(path: path, message: "not a file URL") }
        let file = try ReadableFile(path: path)
        defer { file.close() }
        let size = try file.size()
        let prefix = try file.read(at: 0, count: min(size, 8))
        let headerLength = try checkedHeaderLength(prefix: prefix, fileSize: size)
        let layout = try Layout(header: [UInt8](try file.read(at: 8, count: headerLength)), dataSize: size - 8 - headerLength)
        return try body(file, 8 + headerLength, layout)
    }

    /// The file's bytes.
    ///
    /// - Throws: ``SafeTensorsError/emptyTensorName``,
    ///   ``SafeTensorsError/reservedTensorName(_:)``,
    ///   ``SafeTensorsError/invalidShape(tensor:found:)`` (a negative dimension),
    ///   ``SafeTensorsError/elementCountOverflow(tensor:shape:)``,
    ///   ``SafeTensorsError/inconsistentEntry(tensor:dtype:shape:expectedBytes:actualBytes:)``
    ///   or ``SafeTensorsError/headerTooLarge(length:limit:)``.
    public func serialized() throws(SafeTensorsError) -> Data {
        var json = JSONWriter()
        json.bytes.append(UInt8(ascii: "{"))
        if !metadata.isEmpty {
            json.string("__metadata__")
            json.bytes.append(UInt8(ascii: ":"))
            json.bytes.append(UInt8(ascii: "{"))
            for (index, (key, value)) in metadata.sorted(by: { utf8Precedes($0.key, $1.key) }).enumerated() {
                if index > 0 { json.bytes.append(UInt8(ascii: ",")) }
                json.string(key)
                json.bytes.append(UInt8(ascii: ":"))
                json.string(value)
            }
            json.bytes.append(UInt8(ascii: "}"))
        }

        let ordered = tensors.sorted { utf8Precedes($0.key, $1.key) }
        var offset = 0
        for (name, entry) in ordered {
            guard !name.isEmpty else { throw .emptyTensorName }
            guard name != metadataKey else { throw .reservedTensorName(name) }
            if entry.shape.contains(where: { $0 < 0 }) {
                throw .invalidShape(tensor: name, found: JSONWriter.render(entry.shape))
            }
            guard let expected = tensorByteCount(dtype: entry.dtype, shape: entry.shape) else {
                throw .elementCountOverflow(tensor: name, shape: entry.shape)
            }
            guard entry.data.count == expected else {
                throw .inconsistentEntry(tensor: name, dtype: entry.dtype, shape: entry.shape,
                                         expectedBytes: expected, actualBytes: entry.data.count)
            }
            let (end, overflow) = offset.addingReportingOverflow(expected)
            guard !overflow else { throw .elementCountOverflow(tensor: name, shape: entry.shape) }
            if json.bytes.count > 1 { json.bytes.append(UInt8(ascii: ",")) }
            json.string(name)
            json.ascii(#":{"dtype":"\#(entry.dtype.rawValue)","shape":\#(JSONWriter.render(entry.shape)),"#)
            json.ascii(#""data_offsets":[\#(offset),\#(end)]}"#)
            offset = end
        }
        json.bytes.append(UInt8(ascii: "}"))
        while json.bytes.count % 8 != 0 { json.bytes.append(UInt8(ascii: " ")) }
        guard json.bytes.count <= Self.maxHeaderLength else {
            throw .headerTooLarge(length: UInt64(json.bytes.count), limit: Self.maxHeaderLength)
        }

        var out = Data(capacity: 8 + json.bytes.count + offset)
        var length = UInt64(json.bytes.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(contentsOf: json.bytes)
        for (_, entry) in ordered { out.append(entry.data) }
        return out
    }

    /// Writes the file to `url` atomically.
    ///
    /// The bytes go to a hidden temporary file in the same directory, which is flushed to
    /// disk (`fsync`) and then renamed over `url`, so readers see either the old file or the
    /// complete new one, never a partial write. The temporary file is removed on failure.
    /// The new file gets the default permissions (`0666` less the umask), not those of any
    /// file it replaces, and a symbolic link at `url` is replaced rather than followed.
    ///
    /// - Throws: the errors of ``serialized()`` (before touching the disk), or
    ///   ``SafeTensorsError/io(path:message:)``.
    public func write(to url: URL) throws(SafeTensorsError) {
        let path = url.isFileURL ? url.path : url.absoluteString
        guard url.isFileURL else { throw .io(path: path, message: "not a file URL") }
        let bytes = try serialized()
        let directory = url.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(UUID().uuidString)").path

        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw .io(path: path, message: "cannot create \(temporary): \(errnoText())") }
        var failure: String?
        let writeErrno = bytes.withUnsafeBytes { raw -> Int32 in
            var done = 0
            while done < raw.count, let base = raw.baseAddress {
                let n = posixWrite(fd, base + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                done += n
            }
            return 0
        }
        if writeErrno != 0 {
            failure = "cannot write \(temporary): \(String(cString: strerror(writeErrno)))"
        } else if fsync(fd) != 0 {
            failure = "cannot flush \(temporary) to disk: \(errnoText())"
        }
        if posixClose(fd) != 0, failure == nil {
            failure = "cannot close \(temporary): \(errnoText())"
        }
        if failure == nil, rename(temporary, path) != 0 {
            failure = "cannot rename \(temporary) to \(path): \(errnoText())"
        }
        if let failure {
            unlink(temporary)
            throw .io(path: path, message: failure)
        }
        // Make the rename itself durable; failing to is not an error of this write.
        let directoryFD = open(directory.path, O_RDONLY | O_CLOEXEC)
        if directoryFD >= 0 {
            _ = fsync(directoryFD)
            _ = posixClose(directoryFD)
        }
    }
}

/// Why a safetensors file could not be read or written.
///
/// Offsets in data-section errors are relative to the start of the data section, as in the
/// header's `data_offsets`; `found` strings are compact JSON excerpts of the offending value.
public enum SafeTensorsError: Error, Equatable, CustomStringConvertible {
    /// The file could not be opened, read, created, flushed or renamed.
    case io(path: String, message: String)
    /// The file is shorter than the 8-byte header length.
    case fileTooShort(byteCount: Int)
    /// The header length exceeds ``SafeTensorsFile/maxHeaderLength``.
    case headerTooLarge(length: UInt64, limit: Int)
    /// The header length runs past the end of the file.
    case headerBeyondFile(length: UInt64, available: Int)
    /// The header is not valid UTF-8; `offset` is the first bad byte within the header.
    case headerNotUTF8(offset: Int)
    /// The header is not valid JSON; `offset` is the byte within the header where parsing stopped.
    case invalidJSON(offset: Int, reason: String)
    /// The header's JSON is not an object.
    case headerNotObject(found: String)
    /// A tensor name is the empty string.
    case emptyTensorName
    /// A tensor to be written is named `"__metadata__"`, the metadata's key.
    case reservedTensorName(String)
    /// The header has two entries with the same name (or two `"__metadata__"`). Names that
    /// differ only in Unicode normalization also count as the same.
    case duplicateTensorName(String)
    /// A tensor's entry is not a JSON object.
    case entryNotObject(tensor: String, found: String)
    /// A tensor's entry has the same field twice.
    case duplicateField(tensor: String, field: String)
    /// A tensor's entry lacks `dtype`, `shape` or `data_offsets`.
    case missingField(tensor: String, field: String)
    /// A tensor's `dtype` is not a string.
    case invalidDType(tensor: String, found: String)
    /// A tensor's `dtype` is a string this codec does not know.
    case unknownDType(tensor: String, dtype: String)
    /// A tensor's `shape` is not an array of non-negative integers that fit in `Int`.
    case invalidShape(tensor: String, found: String)
    /// The number of bytes a tensor's shape implies does not fit in `Int`.
    case elementCountOverflow(tensor: String, shape: [Int])
    /// A tensor's `data_offsets` is not an array of two non-negative integers that fit in `Int`.
    case invalidDataOffsets(tensor: String, found: String)
    /// A tensor's `data_offsets` has `begin > end`.
    case invertedDataOffsets(tensor: String, begin: Int, end: Int)
    /// A tensor's shape and dtype imply `expectedBytes`, but its `data_offsets` span `actualBytes`.
    case byteSizeMismatch(tensor: String, dtype: SafeTensorsDType, shape: [Int], expectedBytes: Int, actualBytes: Int)
    /// A tensor's bytes run past the end of the data section.
    case spanBeyondData(tensor: String, begin: Int, end: Int, dataSize: Int)
    /// Two tensors' byte spans overlap.
    case overlappingTensors(first: String, second: String)
    /// Bytes `start..<end` of the data section belong to no tensor (the format requires the
    /// tensors to cover the data section contiguously).
    case uncoveredBytes(start: Int, end: Int)
    /// `"__metadata__"` is not a JSON object.
    case metadataNotObject(found: String)
    /// A `"__metadata__"` value is not a string.
    case metadataValueNotString(key: String, found: String)
    /// `"__metadata__"` has the same key twice.
    case duplicateMetadataKey(String)
    /// A tensor to be written has `data.count` different from its shape's element count
    /// times its dtype's size.
    case inconsistentEntry(tensor: String, dtype: SafeTensorsDType, shape: [Int], expectedBytes: Int, actualBytes: Int)

    public var description: String {
        switch self {
        case let .io(path, message):
            "safetensors: \(path): \(message)"
        case let .fileTooShort(byteCount):
            "safetensors: the file is \(byteCount) bytes long, shorter than its 8-byte header length"
        case let .headerTooLarge(length, limit):
            "safetensors: the header length \(length) exceeds the limit of \(limit) bytes"
        case let .headerBeyondFile(length, available):
            "safetensors: the header length \(length) exceeds the \(available) bytes that follow it in the file"
        case let .headerNotUTF8(offset):
            "safetensors: the header is not valid UTF-8 (bad byte at header offset \(offset))"
        case let .invalidJSON(offset, reason):
            "safetensors: the header is not valid JSON at header offset \(offset): \(reason)"
        case let .headerNotObject(found):
            "safetensors: the header must be a JSON object, found \(found)"
        case .emptyTensorName:
            "safetensors: a tensor has an empty name"
        case let .reservedTensorName(name):
            "safetensors: a tensor cannot be named \(quoted(name)), the metadata's key"
        case let .duplicateTensorName(name) where name == metadataKey:
            "safetensors: the header has more than one \(quoted(name))"
        case let .duplicateTensorName(name):
            "safetensors: the header lists tensor \(quoted(name)) more than once"
        case let .entryNotObject(tensor, found):
            "safetensors: tensor \(quoted(tensor)): the entry must be a JSON object, found \(found)"
        case let .duplicateField(tensor, field):
            "safetensors: tensor \(quoted(tensor)): field \(quoted(field)) appears more than once"
        case let .missingField(tensor, field):
            "safetensors: tensor \(quoted(tensor)): missing field \(quoted(field))"
        case let .invalidDType(tensor, found):
            "safetensors: tensor \(quoted(tensor)): \"dtype\" must be a string, found \(found)"
        case let .unknownDType(tensor, dtype):
            "safetensors: tensor \(quoted(tensor)): unknown dtype \(quoted(dtype)) (known: "
                + SafeTensorsDType.allCases.map(\.rawValue).joined(separator: ", ") + ")"
        case let .invalidShape(tensor, found):
            "safetensors: tensor \(quoted(tensor)): \"shape\" must be an array of non-negative integers, found \(found)"
        case let .elementCountOverflow(tensor, shape):
            "safetensors: tensor \(quoted(tensor)): the byte size of shape \(shape) overflows"
        case let .invalidDataOffsets(tensor, found):
            "safetensors: tensor \(quoted(tensor)): \"data_offsets\" must be [begin, end] with non-negative integers, found \(found)"
        case let .invertedDataOffsets(tensor, begin, end):
            "safetensors: tensor \(quoted(tensor)): \"data_offsets\" begin \(begin) is after end \(end)"
        case let .byteSizeMismatch(tensor, dtype, shape, expected, actual):
            "safetensors: tensor \(quoted(tensor)): shape \(shape) of \(dtype.rawValue) needs \(expected) bytes, but \"data_offsets\" span \(actual) bytes"
        case let .spanBeyondData(tensor, begin, end, dataSize):
            "safetensors: tensor \(quoted(tensor)): bytes \(begin)..<\(end) run past the end of the \(dataSize)-byte data section"
        case let .overlappingTensors(first, second):
            "safetensors: tensors \(quoted(first)) and \(quoted(second)) overlap in the data section"
        case let .uncoveredBytes(start, end):
            "safetensors: bytes \(start)..<\(end) of the data section belong to no tensor"
        case let .metadataNotObject(found):
            "safetensors: \"__metadata__\" must be an object of strings, found \(found)"
        case let .metadataValueNotString(key, found):
            "safetensors: \"__metadata__\" key \(quoted(key)): the value must be a string, found \(found)"
        case let .duplicateMetadataKey(key):
            "safetensors: \"__metadata__\" has key \(quoted(key)) more than once"
        case let .inconsistentEntry(tensor, dtype, shape, expected, actual):
            "safetensors: tensor \(quoted(tensor)): shape \(shape) of \(dtype.rawValue) needs \(expected) bytes, but its data has \(actual)"
        }
    }
}

// MARK: - Header validation

/// The key of the metadata object in a header.
private let metadataKey = "__metadata__"

/// `name` as a JSON string literal, for messages.
private func quoted(_ name: String) -> String {
    var writer = JSONWriter()
    writer.string(name)
    return String(decoding: writer.bytes, as: UTF8.self)
}

/// Byte-wise order of the UTF-8 encodings (the order of Rust's `String`), independent of
/// Unicode normalization and locale.
private func utf8Precedes(_ a: String, _ b: String) -> Bool {
    a.utf8.lexicographicallyPrecedes(b.utf8)
}

/// The bytes of a tensor of `shape` and `dtype`, or `nil` if that overflows `Int` or a
/// dimension is negative. A zero dimension gives zero however large the others are.
private func tensorByteCount(dtype: SafeTensorsDType, shape: [Int]) -> Int? {
    guard !shape.contains(where: { $0 < 0 }) else { return nil }
    if shape.contains(0) { return 0 }
    var count = dtype.byteSize
    for dimension in shape {
        let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
        if overflow { return nil }
        count = product
    }
    return count
}

extension SafeTensorsFile {
    /// The header length stored in the first 8 bytes, checked against the limit and the file size.
    fileprivate static func checkedHeaderLength(prefix: Data, fileSize: Int) throws(SafeTensorsError) -> Int {
        guard fileSize >= 8, prefix.count >= 8 else { throw .fileTooShort(byteCount: fileSize) }
        var length: UInt64 = 0
        for (shift, byte) in prefix.prefix(8).enumerated() {
            length |= UInt64(byte) << (8 * UInt64(shift))
        }
        guard length <= UInt64(maxHeaderLength) else {
            throw .headerTooLarge(length: length, limit: maxHeaderLength)
        }
        guard length <= UInt64(fileSize - 8) else {
            throw .headerBeyondFile(length: length, available: fileSize - 8)
        }
        return Int(length)
    }
}

/// A header's tensors and metadata, fully validated against the data section's size.
private struct Layout {
    struct Tensor {
        var name: String
        var dtype: SafeTensorsDType
        var shape: [Int]
        var span: Range<Int>
    }

    var tensors: [Tensor] = []
    var metadata: [String: String] = [:]

    init(header: [UInt8], dataSize: Int) throws(SafeTensorsError) {
        if let offset = firstInvalidUTF8Offset(header) { throw .headerNotUTF8(offset: offset) }
        var parser = JSONParser(bytes: header)
        let root = try parser.parseDocument()
        guard case let .object(members) = root else { throw .headerNotObject(found: root.excerpt) }

        var seen = Set<String>()
        for (name, value) in members {
            guard seen.insert(name).inserted else { throw .duplicateTensorName(name) }
            if name == metadataKey {
                metadata = try Self.metadata(value)
            } else {
                guard !name.isEmpty else { throw .emptyTensorName }
                tensors.append(try Self.tensor(name: name, value, dataSize: dataSize))
            }
        }
        try Self.checkCoverage(tensors, dataSize: dataSize)
    }

    private static func metadata(_ value: JSONValue) throws(SafeTensorsError) -> [String: String] {
        guard case let .object(members) = value else { throw .metadataNotObject(found: value.excerpt) }
        var metadata: [String: String] = [:]
        for (key, value) in members {
            guard case let .string(text) = value else {
                throw .metadataValueNotString(key: key, found: value.excerpt)
            }
            guard metadata.updateValue(text, forKey: key) == nil else { throw .duplicateMetadataKey(key) }
        }
        return metadata
    }

    private static func tensor(name: String, _ value: JSONValue, dataSize: Int) throws(SafeTensorsError) -> Tensor {
        guard case let .object(fields) = value else { throw .entryNotObject(tensor: name, found: value.excerpt) }
        var dtypeValue: JSONValue?, shapeValue: JSONValue?, offsetsValue: JSONValue?
        var seen = Set<String>()
        for (field, value) in fields {
            guard seen.insert(field).inserted else { throw .duplicateField(tensor: name, field: field) }
            switch field {
            case "dtype": dtypeValue = value
            case "shape": shapeValue = value
            case "data_offsets": offsetsValue = value
            default: break  // Unknown fields are ignored, as by the reference implementation.
            }
        }

        guard let dtypeValue else { throw .missingField(tensor: name, field: "dtype") }
        guard case let .string(dtypeName) = dtypeValue else {
            throw .invalidDType(tensor: name, found: dtypeValue.excerpt)
        }
        guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
            throw .unknownDType(tensor: name, dtype: dtypeName)
        }

        guard let shapeValue else { throw .missingField(tensor: name, field: "shape") }
        guard let shape = shapeValue.nonNegativeIntegers() else {
            throw .invalidShape(tensor: name, found: shapeValue.excerpt)
        }

        guard let offsetsValue else { throw .missingField(tensor: name, field: "data_offsets") }
        guard let offsets = offsetsValue.nonNegativeIntegers(), offsets.count == 2 else {
            throw .invalidDataOffsets(tensor: name, found: offsetsValue.excerpt)
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end else { throw .invertedDataOffsets(tensor: name, begin: begin, end: end) }

        guard let expected = tensorByteCount(dtype: dtype, shape: shape) else {
            throw .elementCountOverflow(tensor: name, shape: shape)
        }
        guard expected == end - begin else {
            throw .byteSizeMismatch(tensor: name, dtype: dtype, shape: shape,
                                    expectedBytes: expected, actualBytes: end - begin)
        }
        guard end <= dataSize else {
            throw .spanBeyondData(tensor: name, begin: begin, end: end, dataSize: dataSize)
        }
        return Tensor(name: name, dtype: dtype, shape: shape, span: begin..<end)
    }

    /// Checks that the spans tile `0..<dataSize` exactly: no overlap, no gap, nothing after.
    private static func checkCoverage(_ tensors: [Tensor], dataSize: Int) throws(SafeTensorsError) {
        let ordered = tensors.sorted {
            ($0.span.lowerBound, $0.span.upperBound) != ($1.span.lowerBound, $1.span.upperBound)
                ? ($0.span.lowerBound, $0.span.upperBound) < ($1.span.lowerBound, $1.span.upperBound)
                : utf8Precedes($0.name, $1.name)
        }
        var covered = 0
        var previous = ""
        for tensor in ordered {
            if tensor.span.lowerBound < covered {
                throw .overlappingTensors(first: previous, second: tensor.name)
            }
            if tensor.span.lowerBound > covered {
                throw .uncoveredBytes(start: covered, end: tensor.span.lowerBound)
            }
            covered = tensor.span.upperBound
            previous = tensor.name
        }
        if covered < dataSize { throw .uncoveredBytes(start: covered, end: dataSize) }
    }
}

/// The offset of the first byte of `bytes` that is not part of valid UTF-8, or `nil`.
private func firstInvalidUTF8Offset(_ bytes: [UInt8]) -> Int? {
    // Headers are almost always ASCII; skip the decoder for them.
    guard let firstNonASCII = bytes.firstIndex(where: { $0 >= 0x80 }) else { return nil }
    var iterator = bytes[firstNonASCII...].makeIterator()
    var decoder = UTF8()
    var offset = firstNonASCII
    while true {
        switch decoder.decode(&iterator) {
        case let .scalarValue(scalar): offset += UTF8.width(scalar)
        case .emptyInput: return nil
        case .error: return offset
        }
    }
}

// MARK: - JSON

/// A parsed JSON value. Objects keep their members in document order, duplicates included,
/// and numbers keep their source text so that integers are never rounded through `Double`.
private enum JSONValue {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    /// The elements, if this is an array of integers each in `0...Int.max`.
    func nonNegativeIntegers() -> [Int]? {
        guard case let .array(elements) = self else { return nil }
        var integers: [Int] = []
        integers.reserveCapacity(elements.count)
        for element in elements {
            // `Int(_:)` rejects fractions, exponents and out-of-range values.
            guard case let .number(text) = element, let value = Int(text), value >= 0 else { return nil }
            integers.append(value)
        }
        return integers
    }

    /// Compact JSON for messages, cut to about 64 characters.
    var excerpt: String {
        let limit = 64
        var writer = JSONWriter()
        write(to: &writer, limit: limit)
        let text = String(decoding: writer.bytes, as: UTF8.self)
        return text.utf8.count > limit ? String(text.prefix(limit)) + "…" : text
    }

    private func write(to writer: inout JSONWriter, limit: Int) {
        guard writer.bytes.count <= limit else { return }
        switch self {
        case let .object(members):
            writer.bytes.append(UInt8(ascii: "{"))
            for (index, member) in members.enumerated() {
                guard writer.bytes.count <= limit else { return }
                if index > 0 { writer.bytes.append(UInt8(ascii: ",")) }
                writer.string(member.key)
                writer.bytes.append(UInt8(ascii: ":"))
                member.value.write(to: &writer, limit: limit)
            }
            writer.bytes.append(UInt8(ascii: "}"))
        case let .array(elements):
            writer.bytes.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                guard writer.bytes.count <= limit else { return }
                if index > 0 { writer.bytes.append(UInt8(ascii: ",")) }
                element.write(to: &writer, limit: limit)
            }
            writer.bytes.append(UInt8(ascii: "]"))
        case let .string(text): writer.string(text)
        case let .number(text): writer.ascii(text)
        case let .bool(value): writer.ascii(value ? "true" : "false")
        case .null: writer.ascii("null")
        }
    }
}

/// Appends compact JSON as UTF-8, escaping strings the way serde_json does.
private struct JSONWriter {
    var bytes: [UInt8] = []

    mutating func ascii(_ text: String) {
        bytes.append(contentsOf: text.utf8)
    }

    mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): ascii(#"\""#)
            case UInt8(ascii: "\\"): ascii(#"\\"#)
            case 0x08: ascii(#"\b"#)
            case 0x0C: ascii(#"\f"#)
            case UInt8(ascii: "\n"): ascii(#"\n"#)
            case UInt8(ascii: "\r"): ascii(#"\r"#)
            case UInt8(ascii: "\t"): ascii(#"\t"#)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                ascii(#"\u00"#)
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 0xF)])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    static func render(_ integers: [Int]) -> String {
        "[" + integers.map(String.init).joined(separator: ",") + "]"
    }
}

/// A strict RFC 8259 parser over UTF-8 bytes (already validated as UTF-8).
private struct JSONParser {
    /// Deeper nesting is rejected rather than risking the stack (serde_json's limit too).
    static let maxDepth = 128

    let bytes: [UInt8]
    var index = 0

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// One value surrounded only by whitespace (which covers the format's space padding).
    mutating func parseDocument() throws(SafeTensorsError) -> JSONValue {
        skipWhitespace()
        let value = try parseValue(depth: 0)
        skipWhitespace()
        guard index == bytes.count else { throw failure("unexpected \(describe(bytes[index])) after the top-level value") }
        return value
    }

    private func failure(_ reason: String) -> SafeTensorsError {
        .invalidJSON(offset: index, reason: reason)
    }

    private func describe(_ byte: UInt8) -> String {
        (0x21..<0x7F).contains(byte) ? "character '\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16, uppercase: true))"
    }

    private var current: UInt8? {
        index < bytes.count ? bytes[index] : nil
    }

    private mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 {
            index += 1
        }
    }

    private mutating func expect(_ byte: UInt8, _ context: String) throws(SafeTensorsError) {
        guard let found = current else { throw failure("unexpected end of header, expected \(context)") }
        guard found == byte else { throw failure("expected \(context), found \(describe(found))") }
        index += 1
    }

    private mutating func parseValue(depth: Int) throws(SafeTensorsError) -> JSONValue {
        guard let byte = current else { throw failure("unexpected end of header, expected a value") }
        switch byte {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try parseLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try parseLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try parseLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw failure("expected a value, found \(describe(byte))")
        }
    }

    private mutating func parseObject(depth: Int) throws(SafeTensorsError) -> JSONValue {
        guard depth <= Self.maxDepth else { throw failure("nesting deeper than \(Self.maxDepth) levels") }
        index += 1  // {
        var members: [(key: String, value: JSONValue)] = []
        skipWhitespace()
        if current == UInt8(ascii: "}") {
            index += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else {
                throw failure(current.map { "expected a string key, found \(describe($0))" } ?? "unexpected end of header, expected a string key")
            }
            let key = try parseString()
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "':' after an object key")
            skipWhitespace()
            members.append((key, try parseValue(depth: depth)))
            skipWhitespace()
            if current == UInt8(ascii: ",") {
                index += 1
                continue
            }
            try expect(UInt8(ascii: "}"), "',' or '}' in an object")
            return .object(members)
        }
    }

    private mutating func parseArray(depth: Int) throws(SafeTensorsError) -> JSONValue {
        guard depth <= Self.maxDepth else { throw failure("nesting deeper than \(Self.maxDepth) levels") }
        index += 1  // [
        var elements: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") {
            index += 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth))
            skipWhitespace()
            if current == UInt8(ascii: ",") {
                index += 1
                continue
            }
            try expect(UInt8(ascii: "]"), "',' or ']' in an array")
            return .array(elements)
        }
    }

    private mutating func parseLiteral(_ literal: String) throws(SafeTensorsError) {
        for expected in literal.utf8 {
            guard current == expected else { throw failure("invalid literal, expected '\(literal)'") }
            index += 1
        }
    }

    private mutating func parseNumber() throws(SafeTensorsError) -> String {
        let start = index
        if current == UInt8(ascii: "-") { index += 1 }
        if current == UInt8(ascii: "0") {
            index += 1
        } else if skipDigits() == 0 {
            throw failure("invalid number, expected a digit")
        }
        if current == UInt8(ascii: ".") {
            index += 1
            guard skipDigits() > 0 else { throw failure("invalid number, expected a digit after '.'") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard skipDigits() > 0 else { throw failure("invalid number, expected a digit in the exponent") }
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    /// Skips ASCII digits and returns how many there were.
    private mutating func skipDigits() -> Int {
        let start = index
        while let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { index += 1 }
        return index - start
    }

    private mutating func parseString() throws(SafeTensorsError) -> String {
        index += 1  // opening quote
        var text: [UInt8] = []
        while true {
            guard let byte = current else { throw failure("unterminated string") }
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return String(decoding: text, as: UTF8.self)
            case UInt8(ascii: "\\"):
                index += 1
                try parseEscape(into: &text)
            case 0..<0x20:
                throw failure("unescaped control character \(describe(byte)) in a string")
            default:
                text.append(byte)
                index += 1
            }
        }
    }

    private mutating func parseEscape(into text: inout [UInt8]) throws(SafeTensorsError) {
        guard let byte = current else { throw failure("unterminated string") }
        index += 1
        switch byte {
        case UInt8(ascii: "\""): text.append(UInt8(ascii: "\""))
        case UInt8(ascii: "\\"): text.append(UInt8(ascii: "\\"))
        case UInt8(ascii: "/"): text.append(UInt8(ascii: "/"))
        case UInt8(ascii: "b"): text.append(0x08)
        case UInt8(ascii: "f"): text.append(0x0C)
        case UInt8(ascii: "n"): text.append(0x0A)
        case UInt8(ascii: "r"): text.append(0x0D)
        case UInt8(ascii: "t"): text.append(0x09)
        case UInt8(ascii: "u"):
            var value = try parseHex4()
            if (0xD800..<0xDC00).contains(value) {
                guard current == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else {
                    throw failure("unpaired UTF-16 surrogate in a \\u escape")
                }
                index += 2
                let low = try parseHex4()
                guard (0xDC00..<0xE000).contains(low) else { throw failure("unpaired UTF-16 surrogate in a \\u escape") }
                value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00..<0xE000).contains(value) {
                throw failure("unpaired UTF-16 surrogate in a \\u escape")
            }
            guard let scalar = Unicode.Scalar(value) else { throw failure("invalid \\u escape") }
            UTF8.encode(scalar) { text.append($0) }
        default:
            index -= 1
            throw failure("invalid escape \\\(describe(byte))")
        }
    }

    private mutating func parseHex4() throws(SafeTensorsError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = current else { throw failure("unterminated \\u escape") }
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw failure("expected a hex digit in a \\u escape, found \(describe(byte))")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }
}

// MARK: - Reading files

/// A file opened for reading with POSIX calls, so that errors carry `errno`'s text.
private struct ReadableFile {
    let path: String
    let descriptor: Int32

    init(path: String) throws(SafeTensorsError) {
        self.path = path
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .io(path: path, message: "cannot open: \(errnoText())") }
    }

    func close() {
        _ = posixClose(descriptor)
    }

    func size() throws(SafeTensorsError) -> Int {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw .io(path: path, message: "cannot stat: \(errnoText())") }
        return Int(info.st_size)
    }

    /// Exactly `count` bytes starting at `offset`.
    func read(at offset: Int, count: Int) throws(SafeTensorsError) -> Data {
        var data = Data(count: count)
        let outcome = data.withUnsafeMutableBytes { raw -> (done: Int, errno: Int32) in
            var done = 0
            while done < count, let base = raw.baseAddress {
                let n = pread(descriptor, base + done, count - done, off_t(offset + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    return (done, errno)
                }
                if n == 0 { break }
                done += n
            }
            return (done, 0)
        }
        if outcome.errno != 0 {
            throw .io(path: path, message: "cannot read: \(String(cString: strerror(outcome.errno)))")
        }
        guard outcome.done == count else {
            throw .io(path: path, message: "unexpected end of file at byte \(offset + outcome.done) (did the file shrink while being read?)")
        }
        return data
    }
}

/// POSIX `write`, named apart from ``SafeTensorsFile/write(to:)``.
private func posixWrite(_ descriptor: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, buffer, count)
}

/// POSIX `close`, named apart from `ReadableFile.close()`.
private func posixClose(_ descriptor: Int32) -> Int32 {
    close(descriptor)
}

/// `strerror(errno)`.
private func errnoText() -> String {
    String(cString: strerror(errno))
}
