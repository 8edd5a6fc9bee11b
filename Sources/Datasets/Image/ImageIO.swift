import CImageIO
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors from reading, writing and converting images.
public enum ImageIOError: Error, Equatable, CustomStringConvertible {
    /// No file exists at `path`.
    case fileNotFound(path: String)
    /// The file exists but could not be opened (permissions, a directory...).
    case unreadable(path: String, reason: String)
    /// The file is not a PNG or JPEG, or libpng/libjpeg rejected its data (truncated, corrupt).
    case corrupt(path: String, reason: String)
    /// The image could not be written at `path` (missing folder, permissions, disk full).
    case unwritable(path: String, reason: String)
    /// Pixel data, sizes or a tensor did not describe a valid image.
    case invalidImage(String)

    public var description: String {
        switch self {
        case let .fileNotFound(path): "image file not found: \(path)"
        case let .unreadable(path, reason): "cannot read image \(path): \(reason)"
        case let .corrupt(path, reason): "unreadable or corrupt image \(path): \(reason)"
        case let .unwritable(path, reason): "cannot write image \(path): \(reason)"
        case let .invalidImage(message): "invalid image: \(message)"
        }
    }
}

extension RGBImage {
    /// Reads a PNG or JPEG file (detected by its signature, not its extension). Grayscale,
    /// palette and 16-bit PNGs are converted to RGB8; transparency is composited over white.
    public init(contentsOf url: URL) throws {
        let path = url.path
        var image = cio_image()
        var message = [CChar](repeating: 0, count: 512)
        let status = cio_read_image(path, &image, &message, message.count)
        defer { cio_image_free(&image) }
        guard status == Int32(CIO_OK.rawValue) else {
            let reason = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            switch UInt32(status) {
            case CIO_ERR_NOT_FOUND.rawValue: throw ImageIOError.fileNotFound(path: path)
            case CIO_ERR_OPEN.rawValue: throw ImageIOError.unreadable(path: path, reason: reason)
            default: throw ImageIOError.corrupt(path: path, reason: reason)
            }
        }
        let count = Int(image.width) * Int(image.height) * 3
        let bytes = [UInt8](UnsafeBufferPointer(start: image.pixels, count: count))
        try self.init(width: Int(image.width), height: Int(image.height), pixels: bytes)
    }

    /// Writes the image as a PNG, atomically: the bytes go to a temporary file in the same
    /// folder which is then renamed over `url`, so readers never see a half-written file.
    ///
    /// `text` becomes text chunks before the image data, in order (the generation parameters, as
    /// other diffusion tools write them): an ASCII value in a tEXt chunk, any other in an iTXt
    /// chunk (UTF-8). Keys have 1–79 printable ASCII characters; ``PNGText/read(from:)`` reads
    /// them back.
    public func writePNG(to url: URL, text: [(key: String, value: String)] = []) throws {
        for (key, value) in text {
            guard (1...79).contains(key.utf8.count), key.utf8.allSatisfy({ (0x20...0x7e).contains($0) }),
                key.first != " ", key.last != " "
            else { throw ImageIOError.invalidImage("PNG text key \"\(key)\": 1 to 79 printable ASCII characters") }
            guard !value.utf8.contains(0) else { throw ImageIOError.invalidImage("PNG text \"\(key)\" contains a NUL byte") }
        }
        try writeAtomically(to: url) { tmp, message in
            withCStrings(text.map(\.key)) { keys in
                withCStrings(text.map(\.value)) { values in
                    cio_write_png_text(tmp, pixels, Int32(width), Int32(height), keys, values, Int32(text.count), message, 512)
                }
            }
        }
    }

    /// Writes the image as a baseline JPEG of `quality` (1...100), atomically like ``writePNG(to:)``.
    public func writeJPEG(to url: URL, quality: Int = 90) throws {
        guard (1...100).contains(quality) else {
            throw ImageIOError.invalidImage("JPEG quality must be in 1...100, got \(quality)")
        }
        try writeAtomically(to: url) { tmp, message in
            cio_write_jpeg(tmp, pixels, Int32(width), Int32(height), Int32(quality), message, 512)
        }
    }

    private func writeAtomically(
        to url: URL, _ encode: (String, UnsafeMutablePointer<CChar>) -> Int32
    ) throws {
        let path = url.path
        let folder = url.deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ImageIOError.unwritable(path: path, reason: "folder \(folder) does not exist")
        }
        let tmp = folder + "/." + url.lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var message = [CChar](repeating: 0, count: 512)
        let status = message.withUnsafeMutableBufferPointer { encode(tmp, $0.baseAddress!) }
        guard status == Int32(CIO_OK.rawValue) else {
            unlink(tmp)
            let reason = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw ImageIOError.unwritable(path: path, reason: reason)
        }
        guard rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw ImageIOError.unwritable(path: path, reason: reason)
        }
    }
}

/// Calls `body` with NUL-terminated copies of `strings` that live for the call.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { UnsafePointer<CChar>($0) }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// The text chunks of a PNG (tEXt, and uncompressed iTXt), read without decoding the image.
public enum PNGText {
    /// Key–value pairs in file order. Compressed chunks (zTXt, compressed iTXt) are skipped; a
    /// file that is not a PNG or ends before its IEND chunk is ``ImageIOError/corrupt(path:reason:)``.
    public static func read(from data: Data) throws -> [(key: String, value: String)] {
        let bytes = [UInt8](data)
        let signature: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10]
        guard bytes.count >= 8, Array(bytes[0..<8]) == signature else {
            throw ImageIOError.corrupt(path: "<data>", reason: "not a PNG")
        }
        var out: [(key: String, value: String)] = []
        var at = 8
        while at + 12 <= bytes.count {
            let length = bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) }
            let type = String(decoding: bytes[(at + 4)..<(at + 8)], as: UTF8.self)
            let start = at + 8, end = start + length
            guard length >= 0, end + 4 <= bytes.count else {
                throw ImageIOError.corrupt(path: "<data>", reason: "a \(type) chunk runs past the end")
            }
            let body = Array(bytes[start..<end])
            if type == "tEXt", let nul = body.firstIndex(of: 0) {
                // Latin-1: each byte is its code point.
                let latin1 = { (b: ArraySlice<UInt8>) in String(String.UnicodeScalarView(b.map { Unicode.Scalar($0) })) }
                out.append((latin1(body[..<nul]), latin1(body[(nul + 1)...])))
            } else if type == "iTXt", let pair = uncompressedITXt(body) {
                out.append(pair)
            }
            if type == "IEND" { return out }
            at = end + 4
        }
        throw ImageIOError.corrupt(path: "<data>", reason: "the PNG ends before its IEND chunk")
    }

    /// key NUL, compression flag 0, method, language NUL, translated key NUL, UTF-8 text.
    private static func uncompressedITXt(_ body: [UInt8]) -> (key: String, value: String)? {
        guard let nul = body.firstIndex(of: 0), nul + 2 < body.count, body[nul + 1] == 0,
            let languageEnd = body[(nul + 3)...].firstIndex(of: 0),
            let translatedEnd = body[(languageEnd + 1)...].firstIndex(of: 0)
        else { return nil }
        return (String(decoding: body[..<nul], as: UTF8.self), String(decoding: body[(translatedEnd + 1)...], as: UTF8.self))
    }
}
