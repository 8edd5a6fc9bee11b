import Foundation
import Torch

/// One line of an exported metadata.jsonl: the HF image-folder fields plus the labels.
public struct ExportedMetadata: Codable, Hashable, Sendable {
    public var fileName: String
    public var text: String
    public var split: Split
    public var index: Int
    public var style: CaptionStyle
    public var objects: [SceneObject]
    public var relation: SpatialRelation?
    public var imageSize: Int

    enum CodingKeys: String, CodingKey {
        case fileName = "file_name", text, split, index, style, objects, relation
        case imageSize = "image_size"
    }

    public init(fileName: String, annotation: SceneAnnotation) {
        self.fileName = fileName
        text = annotation.caption
        split = annotation.split
        index = annotation.index
        style = annotation.style
        objects = annotation.scene.objects
        relation = annotation.scene.relation
        imageSize = annotation.scene.imageSize
    }

    /// The labels as a scene.
    public var scene: Scene { Scene(imageSize: imageSize, objects: objects, relation: relation) }
}

extension SyntheticBenchmark {
    /// Writes samples `0..<count` of `split` into `folder` as PNGs (`00000.png`, ...) plus
    /// `metadata.jsonl` (file_name, text and the labels of ``ExportedMetadata``) and
    /// `benchmark.json` (the config, split and held-out definitions), so the folder loads with
    /// ``ImageFolderDataset`` and reproduces with the same config.
    ///
    /// Refuses a folder that already holds files unless `overwrite` (files are then replaced,
    /// others left alone). Every file is written atomically. `progress` (phase "exporting", images) is called
    /// after each image.
    public func export(
        split: Split, count: Int, to folder: URL, overwrite: Bool = false,
        progress: ProgressHandler = { _ in true }
    ) throws {
        guard count > 0 else { throw DatasetError.invalidConfig("count must be positive, got \(count)") }
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: folder.path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw DatasetError.writeFailed(path: folder.path, reason: "a file with this name exists")
            }
            let contents = (try? fm.contentsOfDirectory(atPath: folder.path)) ?? []
            if !contents.isEmpty, !overwrite { throw DatasetError.outputNotEmpty(path: folder.path) }
        } else {
            do {
                try fm.createDirectory(at: folder, withIntermediateDirectories: true)
            } catch {
                throw DatasetError.writeFailed(path: folder.path, reason: error.localizedDescription)
            }
        }
        let digits = Swift.max(5, String(count - 1).count)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var lines = [String]()
        lines.reserveCapacity(count)
        for index in 0..<count {
            let sample = sample(index: index, split: split)
            let name = String(repeating: "0", count: Swift.max(0, digits - String(index).count)) + String(index) + ".png"
            try sample.image.writePNG(to: folder.appendingPathComponent(name))
            let json = try encoder.encode(ExportedMetadata(fileName: name, annotation: sample.annotation))
            lines.append(String(decoding: json, as: UTF8.self))
            _ = progress(ProgressUpdate(phase: "exporting", completed: index + 1, total: count))
        }
        try Self.writeAtomically(Data((lines.joined(separator: "\n") + "\n").utf8), to: folder.appendingPathComponent("metadata.jsonl"))
        let info = ExportInfo(config: config, split: split, count: count,
                              heldOutShapeColors: HeldOut.shapeColors, heldOutArrangements: HeldOut.arrangements)
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        try Self.writeAtomically(try encoder.encode(info), to: folder.appendingPathComponent("benchmark.json"))
    }

    struct ExportInfo: Codable {
        var config: SyntheticBenchmarkConfig
        var split: Split
        var count: Int
        var heldOutShapeColors: [ShapeColor]
        var heldOutArrangements: [ColorArrangement]

        enum CodingKeys: String, CodingKey {
            case config, split, count
            case heldOutShapeColors = "held_out_shape_colors", heldOutArrangements = "held_out_arrangements"
        }
    }

    static func writeAtomically(_ data: Data, to url: URL) throws {
        do {
            try data.write(to: url, options: .atomic)
        } catch {
            throw DatasetError.writeFailed(path: url.path, reason: error.localizedDescription)
        }
    }
}
