import Foundation
import Testing
import Torch
@testable import Datasets

/// PSNR in dB between two equally sized 8-bit videos.
func videoPSNR(_ a: Video, _ b: Video) -> Double {
    var se = 0.0, n = 0
    for (fa, fb) in zip(a.frames, b.frames) {
        for (x, y) in zip(fa.pixels, fb.pixels) {
            let d = Double(x) - Double(y)
            se += d * d
            n += 1
        }
    }
    return 10 * Foundation.log10(255 * 255 / Swift.max(se / Double(Swift.max(n, 1)), 1e-12))
}

/// Runs ffmpeg with `arguments` (for making test inputs); returns its exit status.
@discardableResult
func ffmpegMake(_ arguments: [String]) throws -> Int32 {
    let p = Process()
    p.executableURL = try FFmpeg().executable
    p.arguments = ["-nostdin", "-v", "error", "-y"] + arguments
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    return p.terminationStatus
}

/// The ``VideoIOError`` `body` throws (nil if it throws nothing or another error).
func thrownVideoError(_ body: () throws -> Void) -> VideoIOError? {
    do {
        try body()
        return nil
    } catch {
        return error as? VideoIOError
    }
}

@Suite("VideoIOTests: ffmpeg video read/write, synthetic videos, bad input")
struct VideoIOTests {
    func syntheticVideo(index: Int = 3, size: Int = 32) throws -> SceneVideo {
        try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: size, seed: 0)).video(index: index, split: .train, frames: 8)
    }

    @Test func syntheticVideosMoveAndKeepTheirCaption() throws {
        let benchmark = try SyntheticBenchmark(SyntheticBenchmarkConfig(imageSize: 32, seed: 0))
        for index in 0..<12 {
            let v = try benchmark.video(index: index, split: .train, frames: 8)
            #expect(v.frames.count == 8 && v.scenes.count == 8)
            #expect(v.caption == benchmark.annotation(index: index, split: .train).caption)
            #expect(v.scenes.allSatisfy { $0.relationHolds }, "index \(index): the caption's relation must hold in every frame")
            #expect(v.frames.first != v.frames.last, "index \(index) does not move")
            // Deterministic.
            #expect(try benchmark.video(index: index, split: .train, frames: 8).frames == v.frames)
        }
        #expect(throws: DatasetError.self) { _ = try benchmark.video(index: 0, split: .train, frames: 0) }
    }

    @Test func mp4AndGifRoundTripThroughFFmpeg() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        let ffmpeg = try FFmpeg()
        let video = try syntheticVideo().video()
        // H.264 yuv420p halves the chroma resolution: 8-bit PSNR about 29 dB at 32×32.
        for (name, minimum) in [("v.mp4", 25.0), ("v.gif", 30.0)] {
            try ffmpeg.write(video, to: dir.file(name))
            let back = try ffmpeg.read(dir.file(name), size: 32, maxFrames: 8)
            #expect(back.frames.count == 8, "\(name)")
            #expect(back.width == 32 && back.height == 32)
            let quality = videoPSNR(video, back)
            #expect(quality >= minimum, "\(name): PSNR \(quality) dB")
        }
        // Enlarged output reads back to the same frames at the model size.
        try ffmpeg.write(video, to: dir.file("big.mp4"), scale: 4)
        let big = try ffmpeg.read(dir.file("big.mp4"), size: 32, maxFrames: 8)
        #expect(videoPSNR(video, big) >= 25)  // measured 4× enlarged: see the test log
        // Writes are atomic: no temporary files remain.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.url.path).sorted() == ["big.mp4", "v.gif", "v.mp4"])
        // A folder of frames reads back exactly (PNG is lossless and the size already fits).
        let frames = dir.file("frames")
        try FileManager.default.createDirectory(at: frames, withIntermediateDirectories: true)
        for (i, f) in video.frames.enumerated() { try f.writePNG(to: frames.appendingPathComponent("f\(i + 1).png")) }
        let folder = try ffmpeg.read(frames, size: 32, maxFrames: 8)
        #expect(folder.frames == video.frames)  // f10 would sort after f9: natural order
        // The strip puts the frames side by side.
        let strip = try video.strip()
        #expect(strip.width == 8 * 32 + 7 * 2 && strip.height == 32)
    }

    @Test func ffmpegTestSourceIsResizedAndCropped() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        #expect(try ffmpegMake(["-f", "lavfi", "-i", "testsrc=size=96x64:rate=8", "-frames:v", "10", dir.file("in.mp4").path]) == 0)
        let ffmpeg = try FFmpeg()
        let video = try ffmpeg.read(dir.file("in.mp4"), size: 32, maxFrames: 8)
        #expect(video.frames.count == 8)
        #expect(video.width == 32 && video.height == 32)
        #expect(abs(video.fps - 8) < 1e-6)
        let t = try video.tensor()
        #expect(t.shape == [8, 3, 32, 32])
        #expect(try t.min().item() >= -1 && t.max().item() <= 1)
        // Fewer frames than asked: all of them.
        #expect(try ffmpeg.read(dir.file("in.mp4"), size: 16, maxFrames: 64).frames.count == 10)
    }

    @Test func badInputGivesTypedErrors() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        let ffmpeg = try FFmpeg()
        #expect(throws: VideoIOError.fileNotFound(path: dir.file("nope.mp4").path)) {
            _ = try ffmpeg.read(dir.file("nope.mp4"), size: 32)
        }
        try dir.write("this is not a video", to: "junk.mp4")
        if case .unreadable? = thrownVideoError({ _ = try ffmpeg.read(dir.file("junk.mp4"), size: 32) }) {} else {
            Issue.record("a junk file must be .unreadable")
        }
        // Audio only: no frames.
        #expect(try ffmpegMake(["-f", "lavfi", "-i", "anullsrc=r=8000", "-t", "0.2", dir.file("audio.mp4").path]) == 0)
        #expect(throws: VideoIOError.noFrames(path: dir.file("audio.mp4").path)) {
            _ = try ffmpeg.read(dir.file("audio.mp4"), size: 32)
        }
        // A folder without frames, and one whose frames differ in size.
        let empty = dir.file("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        #expect(throws: VideoIOError.noFrames(path: empty.path)) { _ = try ffmpeg.read(empty, size: 32) }
        let mixed = dir.file("mixed")
        try FileManager.default.createDirectory(at: mixed, withIntermediateDirectories: true)
        try RGBImage(width: 8, height: 8).writePNG(to: mixed.appendingPathComponent("a.png"))
        try RGBImage(width: 9, height: 8).writePNG(to: mixed.appendingPathComponent("b.png"))
        if case .mismatchedFrameSizes? = thrownVideoError({ _ = try ffmpeg.read(mixed, size: 32) }) {} else {
            Issue.record("frames of different sizes must be .mismatchedFrameSizes")
        }
        // Frames of different sizes cannot form a video in memory either.
        #expect(throws: VideoIOError.self) { _ = try Video(frames: [RGBImage(width: 4, height: 4), RGBImage(width: 5, height: 4)]) }
        #expect(throws: VideoIOError.self) { _ = try Video(frames: []) }
        // Missing ffmpeg.
        #expect(throws: VideoIOError.ffmpegNotFound) { _ = try FFmpeg(environment: ["PATH": dir.url.path]) }
        #expect(throws: VideoIOError.ffmpegNotFound) { _ = try FFmpeg(environment: ["CONTEXTDIFF_FFMPEG": dir.file("none").path]) }
        let missing = FFmpeg(executable: dir.file("none"))
        #expect(throws: VideoIOError.ffmpegNotFound) { _ = try missing.read(dir.file("junk.mp4"), size: 32) }
        // Unsupported output format, odd H.264 size, missing output folder.
        let video = try syntheticVideo(size: 16).video()
        #expect(throws: VideoIOError.self) { try ffmpeg.write(video, to: dir.file("v.avi")) }
        let odd = try Video(frames: [RGBImage(width: 5, height: 5)])
        #expect(throws: VideoIOError.self) { try ffmpeg.write(odd, to: dir.file("odd.mp4")) }
        #expect(throws: VideoIOError.self) { try ffmpeg.write(video, to: dir.file("no/such/folder/v.mp4")) }
    }
}
