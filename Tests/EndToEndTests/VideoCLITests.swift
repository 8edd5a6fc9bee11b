import Datasets
import Foundation
import Testing

@Suite("VideoCLITests: contextdiff edit-video and dataset video", .serialized)
struct VideoCLITests {
    /// Issue 19's simplest edit with the shipped model and `edit-video`'s defaults: a red circle
    /// gliding right over 8 frames (drawn here, not by the benchmark) becomes a blue circle in
    /// every frame, where the source's circle is, on the source's white background.
    @Test func theShippedModelRecoloursAMovingCircle() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let frames = root.appendingPathComponent("frames")
        try FileManager.default.createDirectory(at: frames, withIntermediateDirectories: true)
        var centres: [Double] = []
        for k in 0..<8 {
            var image = RGBImage(width: 32, height: 32, fill: .white)
            let cx = 8.0 + 2.2 * Double(k), cy = 15.0
            centres.append(cx)
            for y in 0..<32 {
                for x in 0..<32 where (Double(x) + 0.5 - cx) * (Double(x) + 0.5 - cx) + (Double(y) + 0.5 - cy) * (Double(y) + 0.5 - cy) <= 25 {
                    image[x, y] = RGBColor(215, 35, 30)
                }
            }
            try image.writePNG(to: frames.appendingPathComponent(String(format: "f%02d.png", k)))
        }
        let out = root.appendingPathComponent("edit")
        let r = try CLI.run([
            "edit-video", "--video", frames.path, "--source-prompt", "a red circle", "--target-prompt", "a blue circle",
            "--output", out.path, "--threads", "2",
        ])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("layout: source"), "the source's layout is painted by default: \(r.stderr)")
        let edited = try FFmpeg().read(out.appendingPathExtension("gif"), size: 32, maxFrames: 8)
        #expect(edited.frames.count == 8)
        let checker = ColorPositionChecker()
        for (k, frame) in edited.frames.enumerated() {
            #expect(checker.dominantColor(of: frame) == .blue, "frame \(k) is not blue")
            var (sx, n) = (0.0, 0.0)
            for y in 0..<32 {
                for x in 0..<32 where checker.classify(frame[x, y]) == .color(.blue) { (sx, n) = (sx + Double(x) + 0.5, n + 1) }
            }
            #expect(n >= 30 && abs(sx / max(n, 1) - centres[k]) <= 2, "frame \(k): \(n) blue pixels centred at x \(sx / max(n, 1)), source \(centres[k])")
            let corner = frame[1, 30]
            #expect(corner.r > 245 && corner.g > 245 && corner.b > 245, "frame \(k): background \(corner)")
        }
    }

    @Test func editVideoWritesMp4GifAndStripAndRejectsBadInput() throws {
        let root = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let run = root.appendingPathComponent("run")
        let trained = try CLI.run(tinyTrainArguments(run, steps: 2))
        #expect(trained.status == 0, "\(trained.stderr)")
        let model = run.appendingPathComponent("model").path

        // A real video file from ffmpeg's test source, and a synthetic benchmark video.
        let input = root.appendingPathComponent("in.mp4")
        let make = Process()
        make.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        make.arguments = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=8",
                          "-frames:v", "8", input.path]
        try make.run()
        make.waitUntilExit()
        #expect(make.terminationStatus == 0)
        let synthetic = try CLI.run(["dataset", "video", "--index", "2", "--size", "16", "-o", root.appendingPathComponent("syn").path])
        #expect(synthetic.status == 0, "\(synthetic.stderr)")
        #expect(synthetic.stderr.contains("caption: "))
        for suffix in ["syn.mp4", "syn.gif", "syn.png", "syn-frames/frame-007.png"] {
            #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent(suffix).path), "\(suffix)")
        }

        let out = root.appendingPathComponent("out/edit")
        for (video, method) in [(input.path, "contextdiff"), (root.appendingPathComponent("syn-frames").path, "fatezero")] {
            let edited = try CLI.run([
                "edit-video", "--video", video, "--source-prompt", "a red circle", "--target-prompt", "a blue square",
                "--output", out.path, "--model", model, "--method", method, "--tune-steps", "1", "--steps", "2",
                "--frames", "4", "--threads", "1",
            ])
            #expect(edited.status == 0, "\(edited.stderr)")
            #expect(edited.stderr.contains("editing 2/2"), "progress is drawn: \(edited.stderr)")
            for ext in ["mp4", "gif", "png"] {
                let file = out.appendingPathExtension(ext)
                #expect(try Data(contentsOf: file).count > 100, "\(file.path)")
            }
            #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent("out/edit-source.png").path))
        }

        // Bad input: clear messages and non-zero exits, never a crash.
        func failure(_ args: [String], environment: [String: String] = [:], mentions text: String) throws {
            let r = try CLI.run(args, environment: environment)
            #expect(r.status != 0 && r.status < 128, "\(args) exited \(r.status)")
            #expect(r.stderr.lowercased().contains(text.lowercased()), "\(args): \(r.stderr)")
        }
        let base = ["edit-video", "--output", out.path, "--model", model, "--threads", "1", "--steps", "2", "--tune-steps", "0"]
        let prompts = ["--source-prompt", "a red circle", "--target-prompt", "a blue square"]
        try failure(base + prompts + ["--video", root.appendingPathComponent("nope.mp4").path], mentions: "not found")
        let junk = root.appendingPathComponent("junk.mp4")
        try Data("not a video".utf8).write(to: junk)
        try failure(base + prompts + ["--video", junk.path], mentions: "cannot decode")
        let empty = root.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        try failure(base + prompts + ["--video", empty.path], mentions: "no frames")
        // Layout modes a model without a layout prior cannot follow, and a contradiction.
        let clip = root.appendingPathComponent("syn.gif").path
        try failure(base + prompts + ["--video", clip, "--layout", "source"], mentions: "no layout prior")
        try failure(base + prompts + ["--video", clip, "--layout", "predicted"], mentions: "no layout prior")
        try failure(base + prompts + ["--video", clip, "--layout", "none", "--paint-layout"], mentions: "contradicts")
        try failure(base + prompts + ["--video", clip, "--layout", "sideways"], mentions: "layout")
        try failure(base + prompts + ["--video", clip, "--tune", "everything"], mentions: "tune")
        try failure(base + ["--video", input.path, "--target-prompt", "a blue square"], mentions: "source-prompt")
        try failure(base + ["--video", input.path, "--source-prompt", " ", "--target-prompt", "x"], mentions: "source prompt is empty")
        try failure(base + ["--video", input.path, "--source-prompt", "x", "--target-prompt", ""], mentions: "target prompt is empty")
        try failure(base + prompts + ["--video", input.path, "--method", "pix2pix"], mentions: "method")
        try failure(base + prompts + ["--video", input.path],
                    environment: ["CONTEXTDIFF_FFMPEG": root.appendingPathComponent("no-ffmpeg").path], mentions: "ffmpeg")
        try failure(base + prompts + ["--video", input.path, "--model", root.appendingPathComponent("none").path], mentions: "not found")
        try failure(base + prompts + ["--video", input.path, "--paint-layout"], mentions: "no layout prior")
    }
}
