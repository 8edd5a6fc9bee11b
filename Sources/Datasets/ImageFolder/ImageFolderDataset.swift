import Foundation
import Torch

/// One image of an image folder and its caption.
public struct ImageFolderEntry: Hashable, Sendable {
    /// `file_name` as written in metadata.jsonl (relative to the folder).
    public var fileName: String
    public var text: String
    public var url: URL
    /// The 1-based line of metadata.jsonl that lists it.
    public var line: Int
}

/// A folder of images with captions in `metadata.jsonl`, the Hugging Face image-folder
/// convention: one JSON object per line with a `file_name` (relative path inside the folder)
/// and a `text` field; other fields are ignored and blank lines skipped.
///
/// The metadata is read and every listed file is checked to exist when the dataset is opened;
/// images are decoded on access, scaled to cover `imageSize × imageSize` and center-cropped.
public struct ImageFolderDataset: Sendable {
    public let folder: URL
    public let entries: [ImageFolderEntry]
    /// Side of the square images returned.
    public let imageSize: Int
    public let filter: ResizeFilter

    public init(folder: URL, imageSize: Int, filter: ResizeFilter = .automatic) throws {
        guard imageSize > 0 else { throw DatasetError.invalidConfig("imageSize must be positive, got \(imageSize)") }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DatasetError.folderNotFound(path: folder.path)
        }
        let metadata = folder.appendingPathComponent("metadata.jsonl")
        guard FileManager.default.fileExists(atPath: metadata.path) else {
            throw DatasetError.metadataNotFound(path: metadata.path)
        }
        let data: Data
        do {
            data = try Data(contentsOf: metadata)
        } catch {
            throw DatasetError.readFailed(path: metadata.path, reason: error.localizedDescription)
        }
        var entries = [ImageFolderEntry]()
        for (offset, rawLine) in Self.lines(of: data).enumerated() {
            let number = offset + 1
            guard case let (fileName, text)? = try Self.parse(rawLine, path: metadata.path, line: number) else { continue }
            let url = folder.appendingPathComponent(fileName)
            guard FileManager.default.fileExists(atPath: url.path) else {
                throw DatasetError.imageNotFound(path: url.path, line: number)
            }
            entries.append(ImageFolderEntry(fileName: fileName, text: text, url: url, line: number))
        }
        guard !entries.isEmpty else { throw DatasetError.emptyDataset(path: folder.path) }
        self.folder = folder
        self.entries = entries
        self.imageSize = imageSize
        self.filter = filter
    }

    public var count: Int { entries.count }

    /// Image `index`, decoded, scaled to cover the model size and center-cropped.
    /// Throws ``ImageIOError`` for an unreadable or corrupt file.
    public func image(at index: Int) throws -> RGBImage {
        guard entries.indices.contains(index) else {
            throw DatasetError.invalidConfig("index \(index) out of range 0..<\(entries.count)")
        }
        return try RGBImage(contentsOf: entries[index].url).resizedToFill(width: imageSize, height: imageSize, filter: filter)
    }

    /// Images `indices` as a float batch `[B, 3, S, S]` in [-1, 1] with their captions.
    public func batch(indices: some Sequence<Int>) throws -> (images: Tensor, captions: [String]) {
        let list = Array(indices)
        let images = try list.map { try image(at: $0) }
        return (try RGBImage.batch(images), list.map { entries[$0].text })
    }

    // MARK: - Parsing

    /// The file's lines (LF or CRLF), keeping blank ones so that line numbers stay right.
    static func lines(of data: Data) -> [Substring] {
        var text = String(decoding: data, as: UTF8.self)
        if text.hasPrefix("\u{FEFF}") { text.removeFirst() }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        return lines
    }

    /// The longest metadata line read (1 MiB): a caption is a sentence, and a longer line is a
    /// corrupt or hostile file.
    public static let maxLineBytes = 1 << 20

    static func parse(_ raw: Substring, path: String, line: Int) throws -> (String, String)? {
        func bad(_ reason: String) -> DatasetError { .badMetadataLine(path: path, line: line, reason: reason) }
        guard raw.utf8.count <= maxLineBytes else { throw bad("line of \(raw.utf8.count) bytes is longer than \(maxLineBytes)") }
        let trimmed = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty { return nil }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(trimmed.utf8))
        } catch {
            let preview = trimmed.count > 80 ? trimmed.prefix(80) + "…" : Substring(trimmed)
            throw bad("not valid JSON: \(preview)")
        }
        guard let dictionary = object as? [String: Any] else { throw bad("expected a JSON object") }
        guard let fileName = dictionary["file_name"] as? String, !fileName.isEmpty else {
            throw bad("missing string field \"file_name\"")
        }
        guard let text = dictionary["text"] as? String else { throw bad("missing string field \"text\"") }
        let components = fileName.split(separator: "/")
        guard !fileName.hasPrefix("/"), !components.contains("..") else {
            throw bad("file_name must be a relative path inside the folder, got \"\(fileName)\"")
        }
        return (fileName, text)
    }
}
