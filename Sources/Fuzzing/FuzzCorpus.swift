import ContextDiff
import Datasets
import Foundation
import NN
import Torch

/// One fuzz case: the bytes of one file, and where it goes.
public struct FuzzInput: Sendable {
    /// The file's path relative to the case folder (`case.png`, `unet/config.json`, `metadata.jsonl`, ...).
    public var path: String
    public var bytes: [UInt8]
    /// What was done to the seed, for reports.
    public var mutation: String
}

/// Valid files of every format, the mutations that attack each, and the loaders they reach.
final class FuzzCorpus {
    let folder: URL
    let ffmpeg: FFmpeg?
    /// The seed files of each format, by path.
    private(set) var safetensors: [UInt8] = []
    private(set) var png: [UInt8] = []
    private(set) var jpeg: [UInt8] = []
    private(set) var modelFiles: [String: [UInt8]] = [:]
    private(set) var metadata: [UInt8] = []
    private(set) var videos: [String: [UInt8]] = [:]

    var caseFolder: URL { folder.appendingPathComponent("case") }
    var modelFolder: URL { folder.appendingPathComponent("model") }
    var imageFolder: URL { folder.appendingPathComponent("images") }

    init(folder: URL) throws {
        self.folder = folder
        ffmpeg = try? FFmpeg()
        let fm = FileManager.default
        try fm.createDirectory(at: caseFolder, withIntermediateDirectories: true)

        // safetensors: tensors of several dtypes and ranks, with metadata.
        let g = Generator(seed: 1)
        let seedTensors: [String: Tensor] = [
            "a.weight": try Tensor.randn([4, 3], generator: g),
            "a.bias": try Tensor.randn([4], generator: g),
            "b.table": try Tensor.randn([2, 2, 2], generator: g).to(.float64),
            "c.ids": try Tensor([Int64(1), 2, 3], shape: [3]),
            "d.scalar": try Tensor([Float(0.5)], shape: []),
        ]
        let stURL = folder.appendingPathComponent("seed.safetensors")
        try saveSafeTensors(seedTensors, metadata: ["format": "pt", "step": "3"], to: stURL)
        safetensors = [UInt8](try Data(contentsOf: stURL))

        // PNG and JPEG: a 32×32 picture with shapes and a gradient.
        var pixels = [UInt8](repeating: 0, count: 32 * 32 * 3)
        for y in 0..<32 {
            for x in 0..<32 {
                let i = (y * 32 + x) * 3
                let inside = (x - 10) * (x - 10) + (y - 12) * (y - 12) < 36
                pixels[i] = inside ? 220 : UInt8(x * 8)
                pixels[i + 1] = inside ? 30 : UInt8(y * 8)
                pixels[i + 2] = x > 20 && y > 20 ? 200 : 40
            }
        }
        let picture = try RGBImage(width: 32, height: 32, pixels: pixels)
        let pngURL = folder.appendingPathComponent("seed.png"), jpegURL = folder.appendingPathComponent("seed.jpg")
        try picture.writePNG(to: pngURL)
        try picture.writeJPEG(to: jpegURL, quality: 85)
        png = [UInt8](try Data(contentsOf: pngURL))
        jpeg = [UInt8](try Data(contentsOf: jpegURL))

        // A model folder: a tiny U-Net, an adapter and a schedule.
        var unet = UNetConfig()
        unet.sampleSize = 8
        unet.baseChannels = 8
        unet.channelMultipliers = [1, 2]
        unet.layersPerBlock = 1
        unet.attentionResolutions = [4]
        unet.crossAttentionResolutions = [4]
        unet.heads = 2
        unet.contextDim = 8
        unet.pooledDim = 8
        unet.normGroups = 4
        var adapter = ContextAdapterConfig()
        adapter.sampleSize = 8
        adapter.patchSize = 4
        adapter.width = 16
        adapter.depth = 1
        adapter.heads = 2
        adapter.contextDim = 8
        let model = ContextDiffModel(
            unet: try UNet(unet), adapter: try ContextAdapter(adapter),
            schedule: try NoiseSchedule(NoiseScheduleConfig()), textEncoder: TextEncoderSpec(kind: "minilm", maxTokens: 8))
        // Deterministic weights (the layers draw from the global generator, which other threads share).
        try Torch.withNoGrad {
            for p in model.parameters { try p.copy(from: Tensor.randn(p.shape, generator: g) * 0.1) }
        }
        model.index.notes["recipe"] = "fuzz seed"
        try model.save(to: modelFolder)
        for path in ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "unet/model.safetensors",
                     "adapter/config.json", "adapter/model.safetensors"] {
            modelFiles[path] = [UInt8](try Data(contentsOf: modelFolder.appendingPathComponent(path)))
        }

        // An image folder: images at the top and in a subfolder, a text file and a folder.
        try fm.createDirectory(at: imageFolder.appendingPathComponent("sub"), withIntermediateDirectories: true)
        try fm.createDirectory(at: imageFolder.appendingPathComponent("dir"), withIntermediateDirectories: true)
        try Data(png).write(to: imageFolder.appendingPathComponent("a.png"))
        try Data(jpeg).write(to: imageFolder.appendingPathComponent("b.jpg"))
        try Data(png).write(to: imageFolder.appendingPathComponent("sub/c.png"))
        try Data("not an image\n".utf8).write(to: imageFolder.appendingPathComponent("notes.txt"))
        metadata = Array(Self.metadataLines.prefix(3).joined(separator: "\n").utf8) + [0x0A]

        // Videos: 8 frames of a square moving right, as GIF and MP4, and a one-frame GIF.
        if let ffmpeg {
            let frames = try (0..<8).map { f -> RGBImage in
                var p = [UInt8](repeating: 20, count: 16 * 16 * 3)
                for y in 5..<10 { for x in (2 + f)..<(6 + f) { p[(y * 16 + x) * 3] = 230 } }
                return try RGBImage(width: 16, height: 16, pixels: p)
            }
            for (name, video) in [("seed.gif", try Video(frames: frames)), ("seed.mp4", try Video(frames: frames)),
                                  ("one.gif", try Video(frames: [frames[0]]))] {
                let url = folder.appendingPathComponent(name)
                try ffmpeg.write(video, to: url)
                videos[name] = [UInt8](try Data(contentsOf: url))
            }
        }
    }

    /// Lines of a metadata.jsonl: the first three are valid; the rest attack the loader.
    static let metadataLines: [String] = [
        #"{"file_name": "a.png", "text": "a red circle"}"#,
        #"{"file_name": "b.jpg", "text": "a blue square"}"#,
        #"{"file_name": "sub/c.png", "text": "a green triangle"}"#,
        #"{"file_name": "./a.png", "text": "dot segment"}"#,
        #"{"text": "no file name"}"#,
        #"{"file_name": "a.png"}"#,
        #"{"file_name": 7, "text": "number"}"#,
        #"{"file_name": "a.png", "text": ["list"]}"#,
        #"{"file_name": "", "text": "empty"}"#,
        #"{"file_name": "../a.png", "text": "escape"}"#,
        #"{"file_name": "sub/../../a.png", "text": "escape"}"#,
        #"{"file_name": "/etc/passwd", "text": "absolute"}"#,
        #"{"file_name": "missing.png", "text": "missing"}"#,
        #"{"file_name": "dir", "text": "a folder"}"#,
        #"{"file_name": "notes.txt", "text": "not an image"}"#,
        #"{"file_name": "a.png\u0000.txt", "text": "NUL"}"#,
        #"{"file_name": "a.png", "text": "a", "text": "duplicate key"}"#,
        #"["a.png", "array"]"#,
        #"null"#,
        #"{"file_name": "a.png", "text": "unterminated"#,
        #"{"file_name": {"nested": true}, "text": "object"}"#,
        "",
        "   ",
        "\u{FEFF}" + #"{"file_name": "a.png", "text": "BOM"}"#,
        #"{"file_name": "a.png", "text": "CRLF"}"# + "\r",
    ]

    // MARK: - Cases

    /// The seed of `format`, unmutated (it must load).
    func seedCase(_ format: FuzzFormat) throws -> FuzzInput {
        switch format {
        case .safetensors: return FuzzInput(path: "case.safetensors", bytes: safetensors, mutation: "seed")
        case .png: return FuzzInput(path: "case.png", bytes: png, mutation: "seed")
        case .jpeg: return FuzzInput(path: "case.jpg", bytes: jpeg, mutation: "seed")
        case .modelFolder: return FuzzInput(path: "model_index.json", bytes: modelFiles["model_index.json"]!, mutation: "seed")
        case .metadata: return FuzzInput(path: "metadata.jsonl", bytes: metadata, mutation: "seed")
        case .video:
            guard let bytes = videos["seed.gif"] else { throw FuzzSetupError("ffmpeg is not installed: no video cases") }
            return FuzzInput(path: "case.gif", bytes: bytes, mutation: "seed")
        }
    }

    func mutatedCase(_ format: FuzzFormat, using rng: inout FuzzRNG) throws -> FuzzInput {
        switch format {
        case .safetensors: return SafeTensorsMutation.mutate(safetensors, using: &rng)
        case .png: return ImageMutation.png(png, using: &rng)
        case .jpeg: return ImageMutation.jpeg(jpeg, using: &rng)
        case .modelFolder:
            let path = modelFiles.keys.sorted().randomElement(using: &rng)!
            let seed = modelFiles[path]!
            if path.hasSuffix(".safetensors") {
                var input = SafeTensorsMutation.mutate(seed, using: &rng)
                input.path = path
                return input
            }
            return JSONMutation.mutate(seed, path: path, using: &rng)
        case .metadata: return metadataCase(using: &rng)
        case .video: return try videoCase(using: &rng)
        }
    }

    private func metadataCase(using rng: inout FuzzRNG) -> FuzzInput {
        let count = Int.random(in: 1...6, using: &rng)
        var lines = (0..<count).map { _ in Array(Self.metadataLines.randomElement(using: &rng)!.utf8) }
        var mutation = "lines"
        switch Int.random(in: 0..<8, using: &rng) {
        case 0:
            // Invalid UTF-8 inside a string.
            lines.append(Array(#"{"file_name": "a.png", "text": ""#.utf8) + [0xFF, 0xFE, 0xC3] + Array(#""}"#.utf8))
            mutation = "non-UTF-8"
        case 1:
            // A huge line (2 MiB of caption).
            lines.append(Array(#"{"file_name": "a.png", "text": ""#.utf8) + [UInt8](repeating: 0x61, count: 2 << 20) + Array(#""}"#.utf8))
            mutation = "huge line"
        case 2:
            let joined = Array(lines.joined(separator: [0x0A]))
            return FuzzInput(path: "metadata.jsonl", bytes: ByteMutation.apply(to: joined, using: &rng), mutation: "bytes")
        default: break
        }
        return FuzzInput(path: "metadata.jsonl", bytes: Array(lines.joined(separator: [0x0A])) + [0x0A], mutation: mutation)
    }

    private func videoCase(using rng: inout FuzzRNG) throws -> FuzzInput {
        guard !videos.isEmpty else { throw FuzzSetupError("ffmpeg is not installed: no video cases") }
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: return FuzzInput(path: "case.mp4", bytes: [], mutation: "empty file")
        case 1:
            return FuzzInput(path: "case.mp4", bytes: (0..<Int.random(in: 1...4096, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) },
                             mutation: "random bytes")
        case 2: return FuzzInput(path: "case.gif", bytes: Array("GIF89a but not really a video\n".utf8), mutation: "text")
        case 3:
            // Zero frames: an MP4 cut after its first box (ftyp), or a GIF without image blocks.
            let mp4 = videos["seed.mp4"]!
            let box = Int([UInt8](mp4.prefix(4)).readBigEndian32(at: 0))
            return Bool.random(using: &rng)
                ? FuzzInput(path: "case.mp4", bytes: Array(mp4.prefix(min(box, mp4.count))), mutation: "ftyp only")
                : FuzzInput(path: "case.gif", bytes: Array(videos["seed.gif"]!.prefix(13)) + [0x3B], mutation: "GIF header only")
        case 4: return FuzzInput(path: "case.gif", bytes: videos["one.gif"]!, mutation: "one frame")
        default:
            let name = ["seed.gif", "seed.mp4", "one.gif"].randomElement(using: &rng)!
            return FuzzInput(path: "case" + (name.hasSuffix(".mp4") ? ".mp4" : ".gif"),
                             bytes: ByteMutation.apply(to: videos[name]!, using: &rng), mutation: "bytes of \(name)")
        }
    }

    // MARK: - Loading

    /// Writes `input` where its loader reads it and loads it.
    func load(_ input: FuzzInput, format: FuzzFormat) throws {
        switch format {
        case .safetensors:
            let url = try write(input)
            _ = try SafeTensorsFile.header(contentsOf: url)
            _ = try SafeTensorsFile(data: Data(input.bytes))
            _ = try SafeTensorsFile(contentsOf: url)
            _ = try loadSafeTensors(url)
        case .png, .jpeg:
            _ = try RGBImage(contentsOf: try write(input))
        case .modelFolder:
            for (path, bytes) in modelFiles {
                try Data(path == input.path ? input.bytes : bytes).write(to: modelFolder.appendingPathComponent(path))
            }
            _ = try ContextDiffModel.load(from: modelFolder)
        case .metadata:
            try Data(input.bytes).write(to: imageFolder.appendingPathComponent("metadata.jsonl"))
            let dataset = try ImageFolderDataset(folder: imageFolder, imageSize: 16)
            for i in 0..<min(dataset.count, 8) { _ = try dataset.image(at: i) }
        case .video:
            guard let ffmpeg else { throw FuzzSetupError("ffmpeg is not installed") }
            _ = try ffmpeg.read(try write(input), size: 16, maxFrames: 8)
        }
    }

    private func write(_ input: FuzzInput) throws -> URL {
        let url = caseFolder.appendingPathComponent(input.path)
        try Data(input.bytes).write(to: url)
        return url
    }
}

/// Mutations of a safetensors file: of its bytes, its 8-byte header length, and its JSON header.
enum SafeTensorsMutation {
    static func mutate(_ seed: [UInt8], using rng: inout FuzzRNG) -> FuzzInput {
        let path = "case.safetensors"
        let headerLength = Int(seed.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let header = (try? JSONSerialization.jsonObject(with: Data(seed[8..<(8 + headerLength)]))) as? [String: Any] ?? [:]
        let data = Array(seed[(8 + headerLength)...])
        func file(_ header: Any, data: [UInt8] = data) -> [UInt8] {
            let json = HostileJSON.encode(header)
            var length = [UInt8](repeating: 0, count: 8)
            length.writeLittleEndian64(UInt64(json.count), at: 0)
            return length + json + data
        }
        let names = header.keys.filter { $0 != "__metadata__" }.sorted()
        switch Int.random(in: 0..<12, using: &rng) {
        case 0...2:
            return FuzzInput(path: path, bytes: ByteMutation.apply(to: seed, using: &rng), mutation: "bytes")
        case 3:
            var bytes = seed
            let lengths: [UInt64] = [0, 1, 7, UInt64(seed.count), UInt64(seed.count - 8 + 1), 100_000_001, 1 << 40, UInt64.max]
            bytes.writeLittleEndian64(lengths.randomElement(using: &rng)!, at: 0)
            return FuzzInput(path: path, bytes: bytes, mutation: "header length")
        case 4:
            // Offsets that run past the end, or overlap another tensor's.
            var h = header
            let name = names.randomElement(using: &rng)!, other = names.randomElement(using: &rng)!
            var entry = h[name] as! [String: Any]
            let offsets = entry["data_offsets"] as! [Int]
            let otherOffsets = (h[other] as! [String: Any])["data_offsets"] as! [Int]
            entry["data_offsets"] = [
                [offsets[0], offsets[1] + Int.random(in: 1...4096, using: &rng)], otherOffsets, [offsets[1], offsets[0]],
                [offsets[0] - 1, offsets[1] - 1], [0, Int(Int32.max)], [-4, offsets[1]],
            ].randomElement(using: &rng)!
            h[name] = entry
            return FuzzInput(path: path, bytes: file(h), mutation: "offsets")
        case 5:
            // Shapes whose element count overflows, negative or huge dimensions, with spans to match.
            var h = header
            let name = names.randomElement(using: &rng)!
            var entry = h[name] as! [String: Any]
            let shapes: [[Int]] = [[1 << 31, 1 << 31, 1 << 31], [Int.max], [-1, 4], [1 << 40], [0, 1 << 62], [3, 1 << 61], [1 << 20, 1 << 20]]
            let shape = shapes.randomElement(using: &rng)!
            entry["shape"] = shape
            if Bool.random(using: &rng) {
                let count = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).partialValue }
                entry["data_offsets"] = [0, count &* 4]
            }
            h[name] = entry
            return FuzzInput(path: path, bytes: file(h), mutation: "shape")
        case 6:
            // A dtype that does not match the bytes, or no dtype at all.
            var h = header
            let name = names.randomElement(using: &rng)!
            var entry = h[name] as! [String: Any]
            entry["dtype"] = ["F64", "F16", "BOOL", "U8", "X99", "", 4, NSNull()].randomElement(using: &rng)!
            h[name] = entry
            return FuzzInput(path: path, bytes: file(h), mutation: "dtype")
        case 7:
            // A duplicate key, written by hand (JSONSerialization would merge it).
            let name = names.randomElement(using: &rng)!
            var json = String(decoding: HostileJSON.encode(header), as: UTF8.self)
            let entry = String(decoding: HostileJSON.encode(header[name]!), as: UTF8.self)
            json.insert(contentsOf: "\"\(name)\":\(entry),", at: json.index(after: json.startIndex))
            var length = [UInt8](repeating: 0, count: 8)
            length.writeLittleEndian64(UInt64(json.utf8.count), at: 0)
            return FuzzInput(path: path, bytes: length + Array(json.utf8) + data, mutation: "duplicate key")
        case 8:
            // Huge declared sizes for a tiny file: a 1 TiB tensor.
            let h: [String: Any] = ["huge": ["dtype": "F32", "shape": [1 << 38], "data_offsets": [0, 1 << 40]]]
            return FuzzInput(path: path, bytes: file(h, data: Array(data.prefix(16))), mutation: "huge tensor")
        case 9:
            var h = header
            h["__metadata__"] = [["a": 1], "text", ["k": ["nested"]], NSNull()].randomElement(using: &rng)!
            return FuzzInput(path: path, bytes: file(h), mutation: "metadata")
        default:
            return FuzzInput(path: path, bytes: file(HostileJSON.mutate(header, using: &rng)), mutation: "header JSON")
        }
    }
}

/// Mutations of a JSON configuration file.
enum JSONMutation {
    static func mutate(_ seed: [UInt8], path: String, using rng: inout FuzzRNG) -> FuzzInput {
        if Int.random(in: 0..<4, using: &rng) == 0 {
            return FuzzInput(path: path, bytes: ByteMutation.apply(to: seed, using: &rng), mutation: "bytes")
        }
        let object = (try? JSONSerialization.jsonObject(with: Data(seed))) ?? [:]
        var mutated: Any = object
        for _ in 0..<Int.random(in: 1...3, using: &rng) { mutated = HostileJSON.mutate(mutated, using: &rng) }
        return FuzzInput(path: path, bytes: HostileJSON.encode(mutated), mutation: "fields")
    }
}

/// Mutations of PNG and JPEG files that keep their structure valid where it matters (PNG
/// chunk checksums), so the decoder's later checks are reached too.
enum ImageMutation {
    static let hostileDimensions: [UInt32] = [0, 1, 2, 65535, 65536, 100_000, 1 << 24, 0x7FFF_FFFF, 0xFFFF_FFFF]

    static func png(_ seed: [UInt8], using rng: inout FuzzRNG) -> FuzzInput {
        let path = "case.png"
        var bytes = seed
        // IHDR: length at 8, type at 12, data 16..<29 (width, height, depth, colour type, ...), CRC at 29.
        func fixIHDR() { bytes.writeBigEndian32(CRC32.checksum(bytes[12..<29]), at: 29) }
        switch Int.random(in: 0..<6, using: &rng) {
        case 0:
            bytes.writeBigEndian32(hostileDimensions.randomElement(using: &rng)!, at: 16)
            bytes.writeBigEndian32(hostileDimensions.randomElement(using: &rng)!, at: 20)
            fixIHDR()
            return FuzzInput(path: path, bytes: bytes, mutation: "IHDR dimensions")
        case 1:
            bytes[24] = [0, 1, 2, 4, 8, 16, 32, 255].randomElement(using: &rng)!
            bytes[25] = [0, 1, 2, 3, 4, 6, 7, 255].randomElement(using: &rng)!
            if Bool.random(using: &rng) { bytes[28] = UInt8.random(in: 0...2, using: &rng) }
            fixIHDR()
            return FuzzInput(path: path, bytes: bytes, mutation: "IHDR depth/colour")
        case 2:
            // Corrupt compressed data inside IDAT, with a valid checksum.
            guard let idat = find(Array("IDAT".utf8), in: bytes) else { break }
            let length = Int(bytes.readBigEndian32(at: idat - 4))
            for _ in 0..<Int.random(in: 1...6, using: &rng) where length > 0 {
                bytes[idat + 4 + Int.random(in: 0..<length, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            bytes.writeBigEndian32(CRC32.checksum(bytes[idat..<(idat + 4 + length)]), at: idat + 4 + length)
            return FuzzInput(path: path, bytes: bytes, mutation: "IDAT data")
        case 3:
            // A chunk length that runs past the end of the file.
            guard let idat = find(Array("IDAT".utf8), in: bytes) else { break }
            bytes.writeBigEndian32([0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 20].randomElement(using: &rng)!, at: idat - 4)
            return FuzzInput(path: path, bytes: bytes, mutation: "chunk length")
        default: break
        }
        return FuzzInput(path: path, bytes: ByteMutation.apply(to: seed, using: &rng), mutation: "bytes")
    }

    static func jpeg(_ seed: [UInt8], using rng: inout FuzzRNG) -> FuzzInput {
        let path = "case.jpg"
        var bytes = seed
        switch Int.random(in: 0..<5, using: &rng) {
        case 0, 1:
            // SOF0/SOF2: FF C0 len(2) precision(1) height(2) width(2) components(1).
            guard let sof = find([0xFF, 0xC0], in: bytes) ?? find([0xFF, 0xC2], in: bytes) else { break }
            let dims: [UInt16] = [0, 1, 8, 65535, 65500, 30000]
            bytes.writeBigEndian16(dims.randomElement(using: &rng)!, at: sof + 5)
            bytes.writeBigEndian16(dims.randomElement(using: &rng)!, at: sof + 7)
            if Int.random(in: 0..<4, using: &rng) == 0 { bytes[sof + 9] = [0, 1, 2, 4, 255].randomElement(using: &rng)! }
            if Bool.random(using: &rng) { bytes[sof + 1] = 0xC2 }  // claim progressive
            return FuzzInput(path: path, bytes: bytes, mutation: "SOF dimensions")
        case 2:
            // Cut before the end-of-image marker, or inside the entropy-coded data.
            return FuzzInput(path: path, bytes: Array(bytes.prefix(Int.random(in: 2..<bytes.count, using: &rng))), mutation: "truncated")
        default: break
        }
        return FuzzInput(path: path, bytes: ByteMutation.apply(to: seed, using: &rng), mutation: "bytes")
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        return (0...(haystack.count - needle.count)).first { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
    }
}
