/// Errors from loading and exporting datasets.
public enum DatasetError: Error, Equatable, CustomStringConvertible {
    case folderNotFound(path: String)
    case metadataNotFound(path: String)
    /// Line `line` (1-based) of a metadata.jsonl file is not a JSON object with string
    /// `file_name` and `text` fields.
    case badMetadataLine(path: String, line: Int, reason: String)
    /// The image named on line `line` of metadata.jsonl does not exist.
    case imageNotFound(path: String, line: Int)
    /// The metadata lists no images.
    case emptyDataset(path: String)
    /// An export would write into a folder that already has files (pass `overwrite`).
    case outputNotEmpty(path: String)
    case invalidConfig(String)
    /// A file exists but could not be read.
    case readFailed(path: String, reason: String)
    /// A file could not be written.
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .folderNotFound(path): "dataset folder not found: \(path)"
        case let .metadataNotFound(path): "metadata.jsonl not found: \(path) (expected one JSON object per line with \"file_name\" and \"text\")"
        case let .badMetadataLine(path, line, reason): "\(path):\(line): \(reason)"
        case let .imageNotFound(path, line): "image listed on line \(line) of metadata.jsonl not found: \(path)"
        case let .emptyDataset(path): "the dataset at \(path) has no images"
        case let .outputNotEmpty(path): "output folder \(path) is not empty (use --force to write into it)"
        case let .invalidConfig(message): "invalid dataset configuration: \(message)"
        case let .readFailed(path, reason): "cannot read \(path): \(reason)"
        case let .writeFailed(path, reason): "cannot write \(path): \(reason)"
        }
    }
}
