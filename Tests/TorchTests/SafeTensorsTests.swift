import Foundation
import Testing
@testable import Torch

// MARK: - Helpers

/// A safetensors file from a header text (or raw header bytes) and a data section; the length
/// prefix is the header's byte count unless `length` overrides it.
private func makeFile(_ header: String, data: [UInt8] = [], length: UInt64? = nil) -> Data {
    makeFile(bytes: Array(header.utf8), data: data, length: length)
}

private func makeFile(bytes header: [UInt8], data: [UInt8] = [], length: UInt64? = nil) -> Data {
    var out = Data()
    let prefix = length ?? UInt64(header.count)
    for shift in stride(from: 0, to: 64, by: 8) { out.append(UInt8(truncatingIfNeeded: prefix >> UInt64(shift))) }
    out.append(contentsOf: header)
    out.append(contentsOf: data)
    return out
}

/// Little-endian bytes of fixed-width integers.
private func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> Data {
    var out = Data()
    for value in values {
        for shift in stride(from: 0, to: T.bitWidth, by: 8) { out.append(UInt8(truncatingIfNeeded: value >> shift)) }
    }
    return out
}

/// The unsigned little-endian integer of `width` bytes at element `index` of `data`.
private func unsignedElement(_ data: Data, _ index: Int, width: Int) -> UInt64 {
    var value: UInt64 = 0
    for byte in 0..<width {
        value |= UInt64(data[data.startIndex + index * width + byte]) << (8 * UInt64(byte))
    }
    return value
}

/// IEEE 754 binary16 to Double, without relying on `Float16` (unavailable on some hosts).
private func halfToDouble(_ bits: UInt16) -> Double {
    let sign: Double = bits & 0x8000 != 0 ? -1 : 1
    let exponent = Int(bits >> 10) & 0x1F
    let fraction = Double(bits & 0x3FF)
    switch exponent {
    case 0: return sign * fraction * 0x1p-24
    case 0x1F: return fraction == 0 ? sign * .infinity : .nan
    default: return sign * (1 + fraction / 1024) * Double(sign: .plus, exponent: exponent - 15, significand: 1)
    }
}

/// Every element of `entry` as a Double, in row-major order.
private func doubles(_ entry: SafeTensorsEntry) -> [Double] {
    let count = entry.data.count / entry.dtype.byteSize
    return (0..<count).map { index in
        let bits = unsignedElement(entry.data, index, width: entry.dtype.byteSize)
        switch entry.dtype {
        case .f64: return Double(bitPattern: bits)
        case .f32: return Double(Float(bitPattern: UInt32(bits)))
        case .f16: return halfToDouble(UInt16(bits))
        case .bf16: return Double(Float(bitPattern: UInt32(bits) << 16))
        case .i64: return Double(Int64(bitPattern: bits))
        case .i32: return Double(Int32(bitPattern: UInt32(bits)))
        case .i16: return Double(Int16(bitPattern: UInt16(bits)))
        case .i8: return Double(Int8(bitPattern: UInt8(bits)))
        case .u8, .bool: return Double(bits)
        }
    }
}

/// A fresh empty directory under the temporary directory.
private func makeTemporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("SafeTensorsTests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// A deterministic generator (SplitMix64) so that fuzz failures reproduce.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A file with several dtypes, a scalar, an empty tensor, awkward names and metadata.
private let sample = SafeTensorsFile(
    tensors: [
        "weight": SafeTensorsEntry(dtype: .f32, shape: [2, 3],
                                   data: littleEndianBytes((0..<6).map { Float($0) * 0.5 - 1 }.map(\.bitPattern))),
        "half": SafeTensorsEntry(dtype: .f16, shape: [3], data: littleEndianBytes([UInt16(0x3C00), 0xC000, 0x7BFF])),
        "brain": SafeTensorsEntry(dtype: .bf16, shape: [1, 2], data: littleEndianBytes([UInt16(0x3F80), 0xBF00])),
        "double scalar": SafeTensorsEntry(dtype: .f64, shape: [], data: littleEndianBytes([Double.pi.bitPattern])),
        "steps": SafeTensorsEntry(dtype: .i64, shape: [2], data: littleEndianBytes([Int64.min, Int64.max])),
        "i32": SafeTensorsEntry(dtype: .i32, shape: [1, 1, 1], data: littleEndianBytes([Int32(-7)])),
        "i16": SafeTensorsEntry(dtype: .i16, shape: [2], data: littleEndianBytes([Int16(-300), 300])),
        "i8": SafeTensorsEntry(dtype: .i8, shape: [3], data: littleEndianBytes([Int8(-128), 0, 127])),
        "u8": SafeTensorsEntry(dtype: .u8, shape: [2], data: Data([0, 255])),
        "mask": SafeTensorsEntry(dtype: .bool, shape: [2, 2], data: Data([1, 0, 0, 1])),
        "empty": SafeTensorsEntry(dtype: .f32, shape: [0, 4], data: Data()),
        "unet.down.0/\"quoted\"\\ ü 🙂": SafeTensorsEntry(dtype: .u8, shape: [1], data: Data([42])),
    ],
    metadata: ["format": "pt", "note": "line\nbreak\t\u{1} \"q\" ünï 🙂", "": "empty key"]
)

/// A one-tensor header with the given raw JSON for each field (`nil` leaves the field out).
private func entryJSON(dtype: String? = #""F32""#, shape: String? = "[2]", offsets: String? = "[0,8]") -> String {
    let fields = [("dtype", dtype), ("shape", shape), ("data_offsets", offsets)]
        .compactMap { name, value in value.map { "\"\(name)\":\($0)" } }
    return "{" + fields.joined(separator: ",") + "}"
}

private let eightBytes = [UInt8](repeating: 0, count: 8)

/// Parses `bytes`; whatever parses must survive a serialize/parse round trip unchanged.
private func checkNoCrash(_ bytes: Data) {
    guard let parsed = try? SafeTensorsFile(data: bytes) else { return }
    #expect((try? SafeTensorsFile(data: parsed.serialized())) == parsed)
}

private struct FixtureExpectation: Decodable {
    struct Tensor: Decodable {
        var dtype: String
        var shape: [Int]
        var values: [Double]
    }

    var metadata: [String: String]
    var tensors: [String: Tensor]
}

@Suite("SafeTensors codec")
struct SafeTensorsTests {
    // MARK: - Round trips and layout

    @Test func dtypeByteSizes() {
        #expect(SafeTensorsDType.allCases.map(\.byteSize) == [8, 4, 2, 2, 8, 4, 2, 1, 1, 1])
        #expect(SafeTensorsDType(rawValue: "BF16") == .bf16)
    }

    @Test func roundTripKeepsEveryTensorAndMetadata() throws {
        let bytes = try sample.serialized()
        let decoded = try SafeTensorsFile(data: bytes)
        #expect(decoded == sample)
        #expect(decoded.tensors["double scalar"]?.shape == [])
        #expect(decoded.tensors["empty"]?.data.isEmpty == true)
        #expect(try decoded.serialized() == bytes, "serialization is deterministic")
    }

    @Test func roundTripWithoutTensorsOrMetadata() throws {
        let bytes = try SafeTensorsFile().serialized()
        #expect(bytes == makeFile("{}      "))
        #expect(try SafeTensorsFile(data: bytes) == SafeTensorsFile())
    }

    @Test func serializedLayoutIsExact() throws {
        let small = SafeTensorsFile(
            tensors: [
                "b": SafeTensorsEntry(dtype: .u8, shape: [2], data: Data([1, 2])),
                "a": SafeTensorsEntry(dtype: .i16, shape: [], data: Data([3, 4])),
            ],
            metadata: ["z": "1", "y": "2"]
        )
        let bytes = try small.serialized()
        let header = #"{"__metadata__":{"y":"2","z":"1"},"a":{"dtype":"I16","shape":[],"data_offsets":[0,2]},"#
            + #""b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#
        let padded = header + String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
        #expect(bytes == makeFile(padded, data: [3, 4, 1, 2]))
        #expect((bytes.count - 4) % 8 == 0, "the header ends on an 8-byte boundary")
    }

    @Test func parsesFromADataSlice() throws {
        let bytes = try sample.serialized()
        let padded = Data([9, 9, 9]) + bytes + Data([9])
        let slice = padded[3..<(3 + bytes.count)]
        #expect(try SafeTensorsFile(data: slice) == sample)
    }

    @Test func acceptsWhitespaceAndUnknownFieldsAndEscapes() throws {
        let header = " {\n\t\"\\u0041\\ud83d\\ude42\" : { \"shape\" : [ 1 ] , \"extra\": {\"x\": [null, true, false, -1.5e3]},"
            + " \"data_offsets\" : [0, 2], \"dtype\" : \"F16\" } }   "
        let decoded = try SafeTensorsFile(data: makeFile(header, data: [0, 0x3C]))
        #expect(decoded.tensors == ["A🙂": SafeTensorsEntry(dtype: .f16, shape: [1], data: Data([0, 0x3C]))])
        #expect(decoded.metadata.isEmpty)
    }

    @Test func zeroSizedTensorsMayShareAnOffset() throws {
        let header = #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"#
            + #""b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"c":{"dtype":"I8","shape":[3,0],"data_offsets":[4,4]}}"#
        let decoded = try SafeTensorsFile(data: makeFile(header, data: [0, 0, 128, 63]))
        #expect(decoded.tensors.count == 3)
        #expect(decoded.tensors["b"]?.data == Data([0, 0, 128, 63]))
    }

    @Test func zeroDimensionAvoidsOverflow() throws {
        let big = Int.max / 2
        let entry = SafeTensorsEntry(dtype: .f64, shape: [big, big, 0], data: Data())
        let bytes = try SafeTensorsFile(tensors: ["z": entry]).serialized()
        #expect(try SafeTensorsFile(data: bytes).tensors["z"] == entry)
    }

    // MARK: - Malformed files

    /// A malformed file and the error it must produce.
    struct Malformed: Sendable, CustomTestStringConvertible {
        let label: String
        let bytes: Data
        let expected: SafeTensorsError
        var testDescription: String { label }

        init(_ label: String, _ bytes: Data, _ expected: SafeTensorsError) {
            self.label = label
            self.bytes = bytes
            self.expected = expected
        }
    }

    static let malformedCases: [Malformed] = [
        Malformed("empty file", Data(), .fileTooShort(byteCount: 0)),
        Malformed("five bytes", Data([1, 0, 0, 0, 0]), .fileTooShort(byteCount: 5)),
        Malformed("header over 100 MB", makeFile("{}", length: 100_000_001),
            .headerTooLarge(length: 100_000_001, limit: 100_000_000)),
        Malformed("header length of UInt64.max", makeFile("{}", length: .max),
            .headerTooLarge(length: .max, limit: 100_000_000)),
        Malformed("header past end of file", makeFile("{}", length: 100), .headerBeyondFile(length: 100, available: 2)),
        Malformed("header not UTF-8", makeFile(bytes: Array(#"{"a"#.utf8) + [0xFF] + Array(#"":{}}"#.utf8)),
            .headerNotUTF8(offset: 3)),
        Malformed("bad byte after non-ASCII", makeFile(bytes: Array("{\"é🙂".utf8) + [0xC0, 0x80] + Array("\":1}".utf8)),
            .headerNotUTF8(offset: 8)),
        Malformed("truncated UTF-8 sequence", makeFile(bytes: [0x7B, 0x22, 0xE2, 0x82, 0x22, 0x7D]), .headerNotUTF8(offset: 2)),
        Malformed("empty header", makeFile(""), .invalidJSON(offset: 0, reason: "unexpected end of header, expected a value")),
        Malformed("truncated JSON", makeFile(#"{"a":"#),
            .invalidJSON(offset: 5, reason: "unexpected end of header, expected a value")),
        Malformed("trailing garbage", makeFile("{} x"),
            .invalidJSON(offset: 3, reason: "unexpected character 'x' after the top-level value")),
        Malformed("NUL padding", makeFile("{}\0"), .invalidJSON(offset: 2, reason: "unexpected byte 0x0 after the top-level value")),
        Malformed("trailing comma", makeFile(#"{"a":1,}"#), .invalidJSON(offset: 7, reason: "expected a string key, found character '}'")),
        Malformed("leading zero", makeFile(#"{"a":{"shape":[01]}}"#),
            .invalidJSON(offset: 16, reason: "expected ',' or ']' in an array, found character '1'")),
        Malformed("lone surrogate", makeFile(#"{"\udc00":1}"#),
            .invalidJSON(offset: 8, reason: "unpaired UTF-16 surrogate in a \\u escape")),
        Malformed("raw newline in string", makeFile("{\"a\nb\":1}"),
            .invalidJSON(offset: 3, reason: "unescaped control character byte 0xA in a string")),
        Malformed("nesting too deep", makeFile(String(repeating: "[", count: 200)),
            .invalidJSON(offset: 128, reason: "nesting deeper than 128 levels")),
        Malformed("header is an array", makeFile("[1,2]"), .headerNotObject(found: "[1,2]")),
        Malformed("header is a string", makeFile(#""x""#), .headerNotObject(found: #""x""#)),
        Malformed("entry not an object", makeFile(#"{"w":[0,8]}"#), .entryNotObject(tensor: "w", found: "[0,8]")),
        Malformed("missing dtype", makeFile(#"{"w":\#(entryJSON(dtype: nil))}"#, data: eightBytes),
            .missingField(tensor: "w", field: "dtype")),
        Malformed("dtype not a string", makeFile(#"{"w":\#(entryJSON(dtype: "7"))}"#, data: eightBytes),
            .invalidDType(tensor: "w", found: "7")),
        Malformed("unknown dtype", makeFile(#"{"w":\#(entryJSON(dtype: #""F8_E4M3""#))}"#, data: eightBytes),
            .unknownDType(tensor: "w", dtype: "F8_E4M3")),
        Malformed("lowercase dtype", makeFile(#"{"w":\#(entryJSON(dtype: #""f32""#))}"#, data: eightBytes),
            .unknownDType(tensor: "w", dtype: "f32")),
        Malformed("missing shape", makeFile(#"{"w":\#(entryJSON(shape: nil))}"#, data: eightBytes),
            .missingField(tensor: "w", field: "shape")),
        Malformed("shape not an array", makeFile(#"{"w":\#(entryJSON(shape: "2"))}"#, data: eightBytes),
            .invalidShape(tensor: "w", found: "2")),
        Malformed("fractional dimension", makeFile(#"{"w":\#(entryJSON(shape: "[2.0]"))}"#, data: eightBytes),
            .invalidShape(tensor: "w", found: "[2.0]")),
        Malformed("string dimension", makeFile(#"{"w":\#(entryJSON(shape: #"["2"]"#))}"#, data: eightBytes),
            .invalidShape(tensor: "w", found: #"["2"]"#)),
        Malformed("negative dimension", makeFile(#"{"w":\#(entryJSON(shape: "[-2]"))}"#, data: eightBytes),
            .invalidShape(tensor: "w", found: "[-2]")),
        Malformed("dimension past Int.max", makeFile(#"{"w":\#(entryJSON(shape: "[9223372036854775808]"))}"#, data: eightBytes),
            .invalidShape(tensor: "w", found: "[9223372036854775808]")),
        Malformed("shape product overflows", makeFile(#"{"w":\#(entryJSON(shape: "[4294967296,4294967296]"))}"#, data: eightBytes),
            .elementCountOverflow(tensor: "w", shape: [4_294_967_296, 4_294_967_296])),
        Malformed("byte size overflows", makeFile(#"{"w":\#(entryJSON(shape: "[4611686018427387904]"))}"#, data: eightBytes),
            .elementCountOverflow(tensor: "w", shape: [4_611_686_018_427_387_904])),
        Malformed("missing data_offsets", makeFile(#"{"w":\#(entryJSON(offsets: nil))}"#, data: eightBytes),
            .missingField(tensor: "w", field: "data_offsets")),
        Malformed("one offset", makeFile(#"{"w":\#(entryJSON(offsets: "[8]"))}"#, data: eightBytes),
            .invalidDataOffsets(tensor: "w", found: "[8]")),
        Malformed("three offsets", makeFile(#"{"w":\#(entryJSON(offsets: "[0,8,8]"))}"#, data: eightBytes),
            .invalidDataOffsets(tensor: "w", found: "[0,8,8]")),
        Malformed("negative offset", makeFile(#"{"w":\#(entryJSON(offsets: "[-8,0]"))}"#, data: eightBytes),
            .invalidDataOffsets(tensor: "w", found: "[-8,0]")),
        Malformed("offsets an object", makeFile(#"{"w":\#(entryJSON(offsets: #"{"begin":0}"#))}"#, data: eightBytes),
            .invalidDataOffsets(tensor: "w", found: #"{"begin":0}"#)),
        Malformed("begin after end", makeFile(#"{"w":\#(entryJSON(offsets: "[8,0]"))}"#, data: eightBytes),
            .invertedDataOffsets(tensor: "w", begin: 8, end: 0)),
        Malformed("span shorter than shape", makeFile(#"{"w":\#(entryJSON(offsets: "[0,4]"))}"#, data: eightBytes),
            .byteSizeMismatch(tensor: "w", dtype: .f32, shape: [2], expectedBytes: 8, actualBytes: 4)),
        Malformed("span beyond data", makeFile(#"{"w":\#(entryJSON())}"#, data: [0, 0, 0, 0]),
            .spanBeyondData(tensor: "w", begin: 0, end: 8, dataSize: 4)),
        Malformed("overlapping tensors",
            makeFile(#"{"a":\#(entryJSON(offsets: "[0,8]")),"b":\#(entryJSON(offsets: "[4,12]"))}"#, data: eightBytes + [0, 0, 0, 0]),
            .overlappingTensors(first: "a", second: "b")),
        Malformed("identical spans",
            makeFile(#"{"b":\#(entryJSON()),"a":\#(entryJSON())}"#, data: eightBytes),
            .overlappingTensors(first: "a", second: "b")),
        Malformed("empty tensor inside another",
            makeFile(#"{"a":\#(entryJSON()),"e":\#(entryJSON(shape: "[0]", offsets: "[4,4]"))}"#, data: eightBytes),
            .overlappingTensors(first: "a", second: "e")),
        Malformed("gap between tensors",
            makeFile(#"{"a":\#(entryJSON(offsets: "[0,8]")),"b":\#(entryJSON(offsets: "[12,20]"))}"#, data: eightBytes + eightBytes + [0, 0, 0, 0]),
            .uncoveredBytes(start: 8, end: 12)),
        Malformed("gap before first tensor", makeFile(#"{"a":\#(entryJSON(offsets: "[4,12]"))}"#, data: eightBytes + [0, 0, 0, 0]),
            .uncoveredBytes(start: 0, end: 4)),
        Malformed("trailing bytes", makeFile(#"{"a":\#(entryJSON())}"#, data: eightBytes + [0]), .uncoveredBytes(start: 8, end: 9)),
        Malformed("data without tensors", makeFile("{}", data: [1, 2]), .uncoveredBytes(start: 0, end: 2)),
        Malformed("metadata not an object", makeFile(#"{"__metadata__":["a"]}"#), .metadataNotObject(found: #"["a"]"#)),
        Malformed("metadata null", makeFile(#"{"__metadata__":null}"#), .metadataNotObject(found: "null")),
        Malformed("metadata value a number", makeFile(#"{"__metadata__":{"epoch":3}}"#),
            .metadataValueNotString(key: "epoch", found: "3")),
        Malformed("duplicate metadata key", makeFile(#"{"__metadata__":{"k":"1","k":"2"}}"#), .duplicateMetadataKey("k")),
        Malformed("duplicate tensor name", makeFile(#"{"a":\#(entryJSON()),"a":\#(entryJSON())}"#, data: eightBytes),
            .duplicateTensorName("a")),
        Malformed("names equal after normalization",
            makeFile("{\"\u{E9}\":\(entryJSON()),\"e\u{301}\":\(entryJSON())}", data: eightBytes), .duplicateTensorName("e\u{301}")),
        Malformed("two metadata objects", makeFile(#"{"__metadata__":{},"__metadata__":{}}"#), .duplicateTensorName("__metadata__")),
        Malformed("duplicate field", makeFile(#"{"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: eightBytes),
            .duplicateField(tensor: "w", field: "dtype")),
        Malformed("empty tensor name", makeFile(#"{"":\#(entryJSON())}"#, data: eightBytes), .emptyTensorName),
    ]

    @Test(arguments: SafeTensorsTests.malformedCases)
    func malformedFileIsRejected(_ malformed: Malformed) {
        #expect(throws: malformed.expected) {
            try SafeTensorsFile(data: malformed.bytes)
        }
    }

    @Test func errorDescriptionsNameTheCulprit() {
        let mismatch = SafeTensorsError.byteSizeMismatch(tensor: "unet.w", dtype: .f32, shape: [2, 3], expectedBytes: 24, actualBytes: 20)
        #expect(mismatch.description.contains("\"unet.w\""))
        #expect(mismatch.description.contains("24") && mismatch.description.contains("20"))
        let overlap = SafeTensorsError.overlappingTensors(first: "a.weight", second: "b.bias").description
        #expect(overlap.contains("\"a.weight\"") && overlap.contains("\"b.bias\""))
        #expect(SafeTensorsError.unknownDType(tensor: "t", dtype: "F8").description.contains("\"F8\""))
        for malformed in Self.malformedCases {
            #expect(!malformed.expected.description.isEmpty)
        }
    }

    @Test func malformedCasesAreDistinctAndMany() {
        #expect(Self.malformedCases.count >= 15)
        #expect(Set(Self.malformedCases.map(\.label)).count == Self.malformedCases.count)
    }

    // MARK: - Writing invalid entries

    @Test func serializationRejectsInconsistentEntries() {
        let short = SafeTensorsFile(tensors: ["w": SafeTensorsEntry(dtype: .f32, shape: [2, 2], data: Data(count: 12))])
        #expect(throws: SafeTensorsError.inconsistentEntry(tensor: "w", dtype: .f32, shape: [2, 2], expectedBytes: 16, actualBytes: 12)) {
            try short.serialized()
        }
        let negative = SafeTensorsFile(tensors: ["w": SafeTensorsEntry(dtype: .u8, shape: [-1], data: Data())])
        #expect(throws: SafeTensorsError.invalidShape(tensor: "w", found: "[-1]")) { try negative.serialized() }
        let huge = SafeTensorsFile(tensors: ["w": SafeTensorsEntry(dtype: .u8, shape: [Int.max, 2], data: Data())])
        #expect(throws: SafeTensorsError.elementCountOverflow(tensor: "w", shape: [Int.max, 2])) { try huge.serialized() }
        let unnamed = SafeTensorsFile(tensors: ["": SafeTensorsEntry(dtype: .u8, shape: [], data: Data([1]))])
        #expect(throws: SafeTensorsError.emptyTensorName) { try unnamed.serialized() }
        let reserved = SafeTensorsFile(tensors: ["__metadata__": SafeTensorsEntry(dtype: .u8, shape: [], data: Data([1]))])
        #expect(throws: SafeTensorsError.reservedTensorName("__metadata__")) { try reserved.serialized() }
    }

    // MARK: - Files

    @Test func atomicWriteLeavesOnlyTheTarget() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let target = directory.appendingPathComponent("model.safetensors")

        try sample.write(to: target)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["model.safetensors"])
        #expect(try SafeTensorsFile(contentsOf: target) == sample)

        // Overwriting replaces the file whole.
        let smaller = SafeTensorsFile(tensors: ["x": SafeTensorsEntry(dtype: .u8, shape: [1], data: Data([7]))])
        try smaller.write(to: target)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["model.safetensors"])
        #expect(try Data(contentsOf: target) == smaller.serialized())

        // A file that cannot be serialized leaves the old one untouched and no temporary file.
        let invalid = SafeTensorsFile(tensors: ["x": SafeTensorsEntry(dtype: .f32, shape: [1], data: Data([7]))])
        #expect(throws: SafeTensorsError.self) { try invalid.write(to: target) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["model.safetensors"])
        #expect(try SafeTensorsFile(contentsOf: target) == smaller)
    }

    @Test func writeIntoMissingDirectoryFailsCleanly() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let target = directory.appendingPathComponent("missing/model.safetensors")
        do {
            try sample.write(to: target)
            Issue.record("writing into a missing directory succeeded")
        } catch {
            guard case let .io(path, message) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(path == target.path)
            #expect(message.contains("No such file or directory"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
    }

    @Test func readingAMissingFileIsAnIOError() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let missing = directory.appendingPathComponent("absent.safetensors")
        #expect(throws: SafeTensorsError.io(path: missing.path, message: "cannot open: No such file or directory")) {
            try SafeTensorsFile(contentsOf: missing)
        }
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile(contentsOf: directory) }
    }

    @Test func readingAFileValidatesLikeReadingData() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("bad.safetensors")
        for malformed in Self.malformedCases {
            try malformed.bytes.write(to: url)
            #expect(throws: malformed.expected, "\(malformed.label)") { try SafeTensorsFile(contentsOf: url) }
        }
    }

    // MARK: - Python-written fixture

    @Test func loadsAFileWrittenByPythonSafetensors() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        let url = fixtures.appendingPathComponent("python_written.safetensors")
        let expected = try JSONDecoder().decode(
            FixtureExpectation.self, from: Data(contentsOf: fixtures.appendingPathComponent("python_written.json")))

        let loaded = try SafeTensorsFile(contentsOf: url)
        #expect(try SafeTensorsFile(data: Data(contentsOf: url)) == loaded)
        #expect(loaded.metadata == expected.metadata)
        #expect(loaded.metadata == ["format": "pt", "author": "fixture"])
        #expect(Set(loaded.tensors.keys) == Set(expected.tensors.keys))
        #expect(Set(loaded.tensors.values.map(\.dtype)) == [.f32, .f16, .bf16, .i64, .f64, .bool, .u8])
        for (name, want) in expected.tensors {
            let entry = try #require(loaded.tensors[name], "tensor \(name)")
            #expect(entry.dtype.rawValue == want.dtype, "\(name)")
            #expect(entry.shape == want.shape, "\(name)")
            #expect(doubles(entry) == want.values, "\(name)")
        }
        #expect(loaded.tensors["f64_scalar"]?.shape == [])
        #expect(loaded.tensors["f32_empty_0x3"]?.data.isEmpty == true)

        // Our own serialization of it reads back identically (the layout differs: Python orders
        // tensors by alignment, this codec by name).
        #expect(try SafeTensorsFile(data: loaded.serialized()) == loaded)
    }

    // MARK: - Robustness

    @Test func randomBytesNeverCrash() {
        var random = SplitMix64(state: 0x5AFE_7E45)
        for _ in 0..<2_000 {
            let count = Int.random(in: 0..<96, using: &random)
            var bytes = Data((0..<count).map { _ in UInt8.random(in: 0...255, using: &random) })
            // Keep the length prefix plausible half the time so the header parser gets exercised.
            if count >= 8, Bool.random(using: &random) {
                let length = UInt64.random(in: 0...UInt64(count - 8), using: &random)
                bytes.replaceSubrange(0..<8, with: littleEndianBytes([length]))
            }
            checkNoCrash(bytes)
        }
    }

    @Test func mutatedValidFilesNeverCrash() throws {
        let valid = try sample.serialized()
        let headerEnd = 8 + Int(unsignedElement(valid, 0, width: 8))
        let alphabet = Array(#"{}[]",:0123456789-.eE \"#.utf8) + [0x00, 0xFF, 0x80]
        var random = SplitMix64(state: 42)
        for _ in 0..<3_000 {
            var bytes = valid
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let index = Int.random(in: 0..<headerEnd, using: &random)
                switch Int.random(in: 0..<4, using: &random) {
                case 0: bytes[index] = alphabet.randomElement(using: &random) ?? 0
                case 1: bytes[index] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &random)
                case 2: bytes.remove(at: index)
                default: bytes.insert(alphabet.randomElement(using: &random) ?? 0, at: index)
                }
            }
            if Int.random(in: 0..<10, using: &random) == 0 {
                bytes = bytes.prefix(Int.random(in: 0...bytes.count, using: &random))
            }
            checkNoCrash(bytes)
        }
    }
}

@Suite("SafeTensors and tensors")
struct SafeTensorsTensorTests {
    @Test func tensorsRoundTripThroughAFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("t.safetensors")
        let a = try Tensor.randn([2, 3, 4], generator: Generator(seed: 5))
        let b = try Tensor([Int64(1), -2, 3], shape: [3])
        let c = try Tensor.randn([5], dtype: .float64).transposed(0, 0)  // any view works
        let h = try Tensor.randn([3]).to(.bfloat16)
        try saveSafeTensors(["a": a, "b": b, "c": c, "h": h], metadata: ["k": "v"], to: url)
        let (loaded, metadata) = try loadSafeTensorsWithMetadata(url)
        #expect(metadata == ["k": "v"])
        #expect(Set(loaded.keys) == ["a", "b", "c", "h"])
        for (name, original) in [("a", a), ("b", b), ("c", c), ("h", h)] {
            let t = try #require(loaded[name])
            #expect(t.shape == original.shape && t.dtype == original.dtype)
            #expect(try t.bytes() == original.bytes())
        }
    }

    @Test func pythonWrittenFileLoadsAsTensors() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/python_written.safetensors")
        let tensors = try loadSafeTensors(url)
        #expect(try tensors["f32_2x3"]?.scalars(as: Float.self) == [0, 1, 2, 3, 4, 5])
        #expect(tensors["bf16_2x2"]?.dtype == .bfloat16)
    }
}
