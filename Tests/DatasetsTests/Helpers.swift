import Foundation
@testable import Datasets

/// A fresh empty folder under the system temporary directory, removed by `cleanUp()`.
struct TemporaryFolder {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("datasets-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> URL { url.appendingPathComponent(name) }

    func write(_ text: String, to name: String) throws {
        try Data(text.utf8).write(to: file(name))
    }

    func cleanUp() { try? FileManager.default.removeItem(at: url) }
}

/// A deterministic test image with every byte value present.
func gradientImage(width: Int = 7, height: Int = 5) throws -> RGBImage {
    var bytes = [UInt8]()
    for i in 0..<(width * height) {
        bytes += [UInt8((i * 37) % 256), UInt8((i * 11 + 3) % 256), UInt8(255 - (i * 5) % 256)]
    }
    return try RGBImage(width: width, height: height, pixels: bytes)
}
