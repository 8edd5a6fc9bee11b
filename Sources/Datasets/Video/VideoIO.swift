import Foundation
import Torch

/// Errors reading and writing videos.
public enum VideoIOError: Error, Equatable, CustomStringConvertible {
    case fileNotFound(path: String)
    /// No `ffmpeg` executable was found (searched `$CONTEXTDIFF_FFMPEG`, then `PATH`).
    case ffmpegNotFound
    /// ffmpeg could not decode the input (its last error line is kept).
    case unreadable(path: String, reason: String)
    /// The input decoded to zero frames (or a folder holds no PNG/JPEG frames).
    case noFrames(path: String)
    /// The frames of a folder do not all have the same size.
    case mismatchedFrameSizes(path: String, first: String, firstSize: [Int], other: String, otherSize: [Int])
    case unwritable(path: String, reason: String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .fileNotFound(let p): "video not found: \(p)"
        case .ffmpegNotFound:
            "ffmpeg is not installed (or not on PATH); install it (apt-get install ffmpeg) or set CONTEXTDIFF_FFMPEG"
        case .unreadable(let p, let r): "cannot decode video \(p): \(r)"
        case .noFrames(let p): "the video \(p) has no frames"
        case .mismatchedFrameSizes(let p, let a, let sa, let b, let sb):
            "frames of \(p) differ in size: \(a) is \(sa[0])×\(sa[1]) but \(b) is \(sb[0])×\(sb[1])"
        case .unwritable(let p, let r): "cannot write video \(p): \(r)"
        case .invalidArgument(let m): m
        }
    }
}

/// A short clip: equally sized RGB frames and a frame rate.
public struct Video: Sendable, Equatable {
    public var frames: [RGBImage]
    public var fps: Double

    public init(frames: [RGBImage], fps: Double = 8) throws {
        guard let first = frames.first else { throw VideoIOError.noFrames(path: "<memory>") }
        for (i, f) in frames.enumerated() where f.width != first.width || f.height != first.height {
            throw VideoIOError.mismatchedFrameSizes(
                path: "<memory>", first: "frame 0", firstSize: [first.width, first.height], other: "frame \(i)",
                otherSize: [f.width, f.height])
        }
        guard fps.isFinite, fps > 0 else { throw VideoIOError.invalidArgument("fps must be positive, got \(fps)") }
        self.frames = frames
        self.fps = fps
    }

    public var width: Int { frames[0].width }
    public var height: Int { frames[0].height }

    /// `[F, 3, H, W]` float32 in [-1, 1].
    public func tensor() throws -> Tensor { try RGBImage.batch(frames) }

    /// Frames from a `[F, 3, H, W]` tensor in [-1, 1].
    public init(tensor: Tensor, fps: Double = 8) throws {
        try self.init(frames: RGBImage.images(fromBatch: tensor), fps: fps)
    }

    /// The frames side by side, separated by a `gutter`-pixel white band.
    public func strip(gutter: Int = 2) throws -> RGBImage {
        try RGBImage.grid(frames, columns: frames.count, gutter: gutter)
    }

    /// Every frame scaled to cover `size × size` and center-cropped.
    public func resizedToFill(size: Int) throws -> Video {
        try Video(frames: frames.map { try $0.resizedToFill(width: size, height: size) }, fps: fps)
    }
}

/// Video input and output through an `ffmpeg` subprocess (never a hand-written codec): any
/// container ffmpeg decodes (mp4, gif, webm, ...) or a folder of PNG/JPEG frames in, mp4 (H.264)
/// and gif out.
public struct FFmpeg: Sendable {
    public let executable: URL

    /// Finds ffmpeg: `$CONTEXTDIFF_FFMPEG`, else the first `ffmpeg` on `PATH`.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let fm = FileManager.default
        if let explicit = environment["CONTEXTDIFF_FFMPEG"], !explicit.isEmpty {
            guard fm.isExecutableFile(atPath: explicit) else { throw VideoIOError.ffmpegNotFound }
            executable = URL(fileURLWithPath: explicit)
            return
        }
        for dir in (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(dir)).appendingPathComponent("ffmpeg")
            if fm.isExecutableFile(atPath: candidate.path) {
                executable = candidate
                return
            }
        }
        throw VideoIOError.ffmpegNotFound
    }

    public init(executable: URL) { self.executable = executable }

    /// Reads up to `maxFrames` frames of `url` scaled to cover `size × size` and center-cropped
    /// (`-vf scale=...:force_original_aspect_ratio=increase,crop=size:size`), at the source frame
    /// rate. A folder is read as its PNG/JPEG frames in name order (then resized the same way).
    public func read(_ url: URL, size: Int, maxFrames: Int = 8) throws -> Video {
        guard size > 0, maxFrames > 0 else {
            throw VideoIOError.invalidArgument("size and frame count must be positive, got \(size), \(maxFrames)")
        }
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: url.path, isDirectory: &isDirectory) else { throw VideoIOError.fileNotFound(path: url.path) }
        if isDirectory.boolValue { return try Self.readFolder(url, size: size, maxFrames: maxFrames) }
        let filter = "scale=\(size):\(size):force_original_aspect_ratio=increase:flags=area,crop=\(size):\(size)"
        let (status, out, err) = try run([
            "-nostdin", "-v", "error", "-i", url.path, "-vf", filter, "-frames:v", "\(maxFrames)",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
        ])
        guard status == 0 else {
            let reason = Self.lastLine(err)
            // A file without a video stream (audio only, empty container) has no frames to edit.
            if reason.contains("does not contain any stream") || reason.contains("matches no streams") {
                throw VideoIOError.noFrames(path: url.path)
            }
            throw VideoIOError.unreadable(path: url.path, reason: reason)
        }
        let frameBytes = size * size * 3
        let count = out.count / frameBytes
        guard count > 0 else { throw VideoIOError.noFrames(path: url.path) }
        let bytes = [UInt8](out)
        let frames = try (0..<count).map { i in
            try RGBImage(width: size, height: size, pixels: Array(bytes[(i * frameBytes)..<((i + 1) * frameBytes)]))
        }
        return try Video(frames: frames, fps: (try? frameRate(url)) ?? 8)
    }

    /// The average frame rate ffmpeg reports for the first video stream (nil if unknown).
    func frameRate(_ url: URL) throws -> Double? {
        let (_, _, err) = try run(["-nostdin", "-hide_banner", "-i", url.path])
        let text = String(decoding: err, as: UTF8.self)
        guard let range = text.range(of: #"([0-9.]+) fps"#, options: .regularExpression) else { return nil }
        return Double(text[range].split(separator: " ")[0])
    }

    static func readFolder(_ url: URL, size: Int, maxFrames: Int) throws -> Video {
        let names = try FileManager.default.contentsOfDirectory(atPath: url.path)
            .filter { ["png", "jpg", "jpeg"].contains(($0 as NSString).pathExtension.lowercased()) }
            .sorted { $0.localizedStandardCompare($1) == .orderedAscending }
        guard !names.isEmpty else { throw VideoIOError.noFrames(path: url.path) }
        var frames: [RGBImage] = []
        for name in names.prefix(maxFrames) {
            let image = try RGBImage(contentsOf: url.appendingPathComponent(name))
            if let f0 = frames.first, f0.width != image.width || f0.height != image.height {
                throw VideoIOError.mismatchedFrameSizes(
                    path: url.path, first: names[0], firstSize: [f0.width, f0.height], other: name,
                    otherSize: [image.width, image.height])
            }
            frames.append(image)
        }
        return try Video(frames: frames.map { try $0.resizedToFill(width: size, height: size) }, fps: 8)
    }

    /// Writes `video` as H.264 mp4 (yuv420p, CRF 18) or gif (own palette), chosen by the
    /// extension of `url`, each frame enlarged `scale` times with nearest-neighbour. Atomic: the
    /// file appears complete or not at all.
    public func write(_ video: Video, to url: URL, scale: Int = 1) throws {
        guard scale >= 1 else { throw VideoIOError.invalidArgument("scale must be ≥ 1, got \(scale)") }
        let ext = url.pathExtension.lowercased()
        let (w, h) = (video.width * scale, video.height * scale)
        var filter = "scale=\(w):\(h):flags=neighbor"
        var codec: [String]
        switch ext {
        case "mp4", "m4v", "mov":
            guard w % 2 == 0, h % 2 == 0 else {
                throw VideoIOError.invalidArgument("H.264 needs even sizes, got \(w)×\(h); use an even scale")
            }
            codec = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-movflags", "+faststart"]
        case "gif":
            filter += ",split[a][b];[a]palettegen=reserve_transparent=0[p];[b][p]paletteuse=dither=none"
            codec = ["-loop", "0"]
        default:
            throw VideoIOError.invalidArgument("unsupported video format '.\(ext)' (use .mp4 or .gif)")
        }
        let folder = url.deletingLastPathComponent()
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw VideoIOError.unwritable(path: url.path, reason: "folder \(folder.path) does not exist")
        }
        let tmp = folder.appendingPathComponent(".\(url.deletingPathExtension().lastPathComponent)-\(UUID().uuidString).\(ext)")
        var input = Data()
        input.reserveCapacity(video.frames.count * video.width * video.height * 3)
        for f in video.frames { input.append(contentsOf: f.pixels) }
        let (status, _, err) = try run(
            ["-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "\(video.width)x\(video.height)",
             "-r", String(format: "%g", video.fps), "-i", "-", "-vf", filter] + codec + ["-f", ext == "gif" ? "gif" : "mp4", tmp.path],
            input: input)
        guard status == 0 else {
            try? FileManager.default.removeItem(at: tmp)
            throw VideoIOError.unwritable(path: url.path, reason: Self.lastLine(err))
        }
        guard rename(tmp.path, url.path) == 0 else {
            try? FileManager.default.removeItem(at: tmp)
            throw VideoIOError.unwritable(path: url.path, reason: String(cString: strerror(errno)))
        }
    }

    static func lastLine(_ data: Data) -> String {
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.split(whereSeparator: \.isNewline).last.map(String.init) ?? "ffmpeg failed"
    }

    /// Runs ffmpeg, feeding `input` to its stdin and draining stdout and stderr concurrently.
    func run(_ arguments: [String], input: Data? = nil) throws -> (Int32, Data, Data) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let inPipe = input.map { _ in Pipe() }
        process.standardInput = inPipe ?? FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw VideoIOError.ffmpegNotFound
        }
        final class Box: @unchecked Sendable { var data = Data() }
        let errBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errBox.data = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        if let inPipe, let input {
            group.enter()
            DispatchQueue.global().async {
                // A write to a closed pipe (ffmpeg failed early) must not kill us: SIGPIPE is ignored.
                signal(SIGPIPE, SIG_IGN)
                try? inPipe.fileHandleForWriting.write(contentsOf: input)
                try? inPipe.fileHandleForWriting.close()
                group.leave()
            }
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return (process.terminationStatus, outData, errBox.data)
    }
}
