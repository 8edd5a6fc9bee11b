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
    public func writePNG(to url: URL) throws {
        try writeAtomically(to: url) { tmp, message in
            cio_write_png(tmp, pixels, Int32(width), Int32(height), message, 512)
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
