import Foundation
import Testing
@testable import Datasets

@Suite("Image folder with metadata.jsonl, and export")
struct ImageFolderTests {
    @Test func loadsResizesAndCrops() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        try FileManager.default.createDirectory(at: dir.file("sub"), withIntermediateDirectories: true)
        try RGBImage(width: 64, height: 48, fill: RGBColor(10, 20, 30)).writePNG(to: dir.file("a.png"))
        try RGBImage(width: 20, height: 40, fill: RGBColor(200, 100, 50)).writeJPEG(to: dir.file("sub/b.jpg"), quality: 100)
        try dir.write("""
            {"file_name": "a.png", "text": "a dark square", "extra": [1, 2], "score": 0.5}

            {"text": "an orange thing", "file_name": "sub/b.jpg"}\r

            """, to: "metadata.jsonl")
        let dataset = try ImageFolderDataset(folder: dir.url, imageSize: 16)
        #expect(dataset.count == 2)
        #expect(dataset.entries.map(\.text) == ["a dark square", "an orange thing"])
        #expect(dataset.entries.map(\.line) == [1, 3])
        #expect(try dataset.image(at: 0) == RGBImage(width: 16, height: 16, fill: RGBColor(10, 20, 30)))
        let b = try dataset.image(at: 1)
        #expect(b.width == 16 && b.height == 16 && abs(Int(b[8, 8].r) - 200) <= 3)
        let (images, captions) = try dataset.batch(indices: [1, 0])
        #expect(images.shape == [2, 3, 16, 16] && captions == ["an orange thing", "a dark square"])
    }

    @Test func missingFolderAndMetadata() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        #expect(throws: DatasetError.folderNotFound(path: dir.file("nope").path)) {
            try ImageFolderDataset(folder: dir.file("nope"), imageSize: 8)
        }
        #expect(throws: DatasetError.metadataNotFound(path: dir.file("metadata.jsonl").path)) {
            try ImageFolderDataset(folder: dir.url, imageSize: 8)
        }
    }

    @Test(arguments: [
        (#"{"file_name": "a.png", "text": "ok"}"# + "\n" + #"{"file_name": "a.png", "text": "#, 2, "not valid JSON"),
        (#"["a.png", "text"]"#, 1, "expected a JSON object"),
        (#"{"text": "no file"}"#, 1, "file_name"),
        ("\n\n" + #"{"file_name": "a.png"}"#, 3, "\"text\""),
        (#"{"file_name": "../a.png", "text": "escape"}"#, 1, "relative path"),
        (#"{"file_name": "/etc/passwd", "text": "absolute"}"#, 1, "relative path"),
        (#"{"file_name": "a.png", "text": ""# + String(repeating: "a", count: 1 << 20) + #""}"#, 1, "longer than"),
    ])
    func badLinesNameTheirLineNumber(metadata: String, line: Int, reason: String) throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        try RGBImage(width: 4, height: 4).writePNG(to: dir.file("a.png"))
        try dir.write(metadata, to: "metadata.jsonl")
        do {
            _ = try ImageFolderDataset(folder: dir.url, imageSize: 8)
            Issue.record("loaded bad metadata")
        } catch let DatasetError.badMetadataLine(path, number, message) {
            #expect(path.hasSuffix("metadata.jsonl") && number == line && message.contains(reason), "\(message)")
            #expect(DatasetError.badMetadataLine(path: path, line: number, reason: message).description.contains("metadata.jsonl:\(line):"))
        }
    }

    @Test func missingImageAndEmptyDataset() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        try RGBImage(width: 4, height: 4).writePNG(to: dir.file("a.png"))
        try dir.write(#"{"file_name": "a.png", "text": "x"}"# + "\n" + #"{"file_name": "gone.png", "text": "y"}"#, to: "metadata.jsonl")
        #expect(throws: DatasetError.imageNotFound(path: dir.file("gone.png").path, line: 2)) {
            try ImageFolderDataset(folder: dir.url, imageSize: 8)
        }
        try dir.write("\n  \n", to: "metadata.jsonl")
        #expect(throws: DatasetError.emptyDataset(path: dir.url.path)) {
            try ImageFolderDataset(folder: dir.url, imageSize: 8)
        }
    }

    @Test func corruptImageFailsOnAccessWithItsPath() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        try Data("not an image".utf8).write(to: dir.file("bad.png"))
        try dir.write(#"{"file_name": "bad.png", "text": "x"}"#, to: "metadata.jsonl")
        let dataset = try ImageFolderDataset(folder: dir.url, imageSize: 8)
        #expect(throws: ImageIOError.self) { try dataset.image(at: 0) }
    }

    @Test func exportWritesAnImageFolderWithLabels() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        let benchmark = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: 16, seed: 5))
        let out = dir.file("export")
        var reported = [Int]()
        try benchmark.export(split: .heldout, count: 12, to: out) { p in
            #expect(p.total == 12 && p.phase == "exporting")
            reported.append(p.completed)
            return true
        }
        #expect(reported == Array(1...12))
        let files = try FileManager.default.contentsOfDirectory(atPath: out.path).sorted()
        #expect(files.count == 14 && files.contains("metadata.jsonl") && files.contains("benchmark.json") && files.contains("00011.png"))

        let dataset = try ImageFolderDataset(folder: out, imageSize: 16)
        let lines = try String(contentsOf: out.appendingPathComponent("metadata.jsonl"), encoding: .utf8)
            .split(separator: "\n").map { try JSONDecoder().decode(ExportedMetadata.self, from: Data($0.utf8)) }
        for i in 0..<12 {
            let sample = benchmark.sample(index: i, split: .heldout)
            #expect(try dataset.image(at: i) == sample.image)
            #expect(dataset.entries[i].text == sample.caption)
            #expect(lines[i].scene == sample.scene && lines[i].split == .heldout && lines[i].index == i)
        }
        // A second export into the same folder is refused unless overwriting.
        #expect(throws: DatasetError.outputNotEmpty(path: out.path)) {
            try benchmark.export(split: .train, count: 2, to: out)
        }
        try benchmark.export(split: .train, count: 2, to: out, overwrite: true)
        #expect(try ImageFolderDataset(folder: out, imageSize: 16).count == 2)
    }
}
