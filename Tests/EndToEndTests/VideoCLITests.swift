import Foundation
import Testing

@Suite("VideoCLITests: contextdiff edit-video and dataset video", .serialized)
struct VideoCLITests {
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
