import ContextDiff
import Core
import Datasets
import Foundation
import Hummingbird
import HummingbirdTesting
import NN
@testable import Studio
import Testing
import TestSupport
import Torch
import Workflows

/// A tiny untrained text-to-image model saved to a folder (16×16), with a learned encoder.
enum TinyStudio {
    static func modelFolder() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("studio-model-\(UUID().uuidString)")
        try Torch.withSeed(5) {
            var unet = UNetConfig()
            unet.sampleSize = 16
            unet.baseChannels = 16
            unet.channelMultipliers = [1, 2]
            unet.layersPerBlock = 1
            unet.attentionResolutions = [8]
            unet.crossAttentionResolutions = [8]
            unet.heads = 2
            unet.contextDim = 12
            unet.pooledDim = 12
            unet.normGroups = 4
            var adapter = ContextAdapterConfig()
            adapter.sampleSize = 16
            adapter.patchSize = 4
            adapter.width = 16
            adapter.depth = 1
            adapter.heads = 2
            adapter.contextDim = 12
            try ContextDiffModel(
                unet: UNet(unet), adapter: ContextAdapter(adapter), schedule: NoiseSchedule(NoiseScheduleConfig()),
                textEncoder: TextEncoderSpec(kind: "learned", maxTokens: 16)
            ).save(to: dir)
        }
        return dir
    }

    static func encoder() throws -> LearnedTextEncoder {
        try Torch.withSeed(6) {
            try LearnedTextEncoder(
                tokenizer: WordLevelTokenizer(fitting: ["a red circle", "a blue square to the left of a green triangle"]),
                width: 12, layers: 1, heads: 2)
        }
    }
}

/// A backend that takes a step only when the test lets it, so that queue states can be held.
final class GatedBackend: StudioBackend, @unchecked Sendable {
    let modelName = "gated"
    let sampleSize = 2
    let trainTimesteps = 1000
    let hasLayoutPrior = false
    private let permits = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var _started: [String] = []
    var started: [String] { lock.withLock { _started } }

    /// Lets `steps` more steps run (over all jobs).
    func allow(_ steps: Int) { for _ in 0..<steps { permits.signal() } }

    func generate(
        _ spec: GenerationJobSpec, progress: @escaping ProgressHandler, preview: ((_ step: Int, _ images: RGBImage) -> Void)?
    ) throws -> GeneratedImages {
        lock.withLock { _started.append(spec.prompt) }
        let total = spec.options.steps
        for step in 1...total {
            while permits.wait(timeout: .now() + .milliseconds(5)) == .timedOut {
                guard progress(ProgressUpdate(phase: "sampling", completed: step - 1, total: total)) else {
                    throw SamplingError.cancelled(completedSteps: step - 1, totalSteps: total)
                }
            }
            guard progress(ProgressUpdate(phase: "sampling", completed: step, total: total)) else {
                throw SamplingError.cancelled(completedSteps: step, totalSteps: total)
            }
        }
        let pixels = [UInt8](repeating: UInt8(spec.options.seed % 256), count: 2 * 2 * 3)
        return GeneratedImages(pixels: Array(repeating: pixels, count: spec.options.imagesPerPrompt), width: 2, height: 2)
    }

    func editVideo(_ spec: VideoEditJobSpec, progress: @escaping ProgressHandler) throws -> EditedVideo {
        lock.withLock { _started.append("edit: \(spec.targetPrompt)") }
        guard progress(ProgressUpdate(phase: "tuning", completed: 1, total: 1)) else {
            throw SamplingError.cancelled(completedSteps: 0, totalSteps: 1)
        }
        let frames = try spec.source.frames.map { try RGBImage(width: $0.width, height: $0.height, pixels: $0.pixels.map { 255 - $0 }) }
        return EditedVideo(source: spec.source, edited: try Video(frames: frames, fps: spec.source.fps), scores: nil, notices: ["inverted"])
    }
}

private func temporaryFolder(_ name: String) -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
}

private func json(_ response: TestResponse) throws -> [String: Any] {
    try #require(JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any], "\(String(buffer: response.body))")
}

private let jsonHeaders: HTTPFields = [.contentType: "application/json"]

/// Polls a job until it is final (a test-side timeout of 60 s).
private func waitForJob(_ client: some TestClientProtocol, _ id: String) async throws -> [String: Any] {
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline {
        let snapshot = try await client.execute(uri: "/api/jobs/\(id)", method: .get) { try json($0) }
        if ["succeeded", "failed", "cancelled"].contains(snapshot["status"] as? String) { return snapshot }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("job \(id) did not finish")
    return [:]
}

@Suite("Studio: the local web app's API, queue and history")
struct StudioTests {
    /// With a super-resolution stage the studio serves the cascade: a job's images are the
    /// stage's size and exactly what the cascade draws for the job's seed (the stage's seed
    /// derived from it), and progress passes through "sampling", then "upsampling".
    @Test func aCascadeBackendServesTheStagesImages() throws {
        let modelDir = try TinyStudio.modelFolder()
        defer { try? FileManager.default.removeItem(at: modelDir) }
        var config = EfficientUNetConfig()
        config.lowResolutionSize = 16
        config.sampleSize = 32
        config.baseChannels = 8
        config.channelMultipliers = [1, 2]
        config.blocksPerLevel = [1, 1]
        config.crossAttentionResolutions = [16]
        config.selfAttentionResolutions = []
        config.heads = 2
        config.contextDim = 12
        config.pooledDim = 12
        config.normGroups = 4
        let stage = try SuperResolutionModel(
            unet: Torch.withSeed(3) { try EfficientUNet(config) }, schedule: NoiseSchedule(NoiseScheduleConfig()),
            index: SuperResolutionIndex(textEncoder: TextEncoderSpec(kind: "learned", maxTokens: 16), samplingNoiseLevel: 50))
        var srOptions = SuperResolutionOptions()
        srOptions.steps = 3
        let backend = try PipelineBackend(
            directory: modelDir, superResolution: SuperResolutionPipeline(model: stage), superResolutionOptions: srOptions
        ) { try TinyStudio.encoder() }
        #expect(backend.sampleSize == 16 && backend.outputSize == 32)
        var options = GenerationOptions()
        options.steps = 3
        options.imagesPerPrompt = 2
        options.seed = 21
        var phases: [String] = []
        let images = try backend.generate(GenerationJobSpec(prompt: "a red circle", options: options, layout: nil), progress: { p in
            if phases.last != p.phase { phases.append(p.phase) }
            return true
        }, preview: nil)
        #expect(images.width == 32 && images.height == 32 && images.pixels.count == 2)
        #expect(phases == ["sampling", "upsampling"])
        let cascade = try CascadePipeline(
            base: TextToImagePipeline(model: ContextDiffModel.load(from: modelDir), textEncoder: TinyStudio.encoder()),
            superResolution: SuperResolutionPipeline(model: stage))
        var expected = srOptions
        expected.seed = SuperResolutionOptions.stageSeed(following: 21)
        let alone = try GeneratedImages(cascade.generate(prompts: ["a red circle"], options: options, superResolution: expected))
        #expect(alone.pixels == images.pixels)
    }

    /// A request runs on the real pipeline: progress events advance to the end, the run is in
    /// the history with its images, which carry their settings and are exactly what a lone
    /// pipeline call with the same options draws.
    @Test func generationRunsStreamsProgressAndIsRecorded() async throws {
        let modelDir = try TinyStudio.modelFolder(), data = temporaryFolder("studio-data")
        defer {
            try? FileManager.default.removeItem(at: modelDir)
            try? FileManager.default.removeItem(at: data)
        }
        let backend = try PipelineBackend(directory: modelDir) { try TinyStudio.encoder() }
        let queue = JobQueue(backend: backend, history: try RunHistory(folder: data), limits: StudioLimits())
        let app = Application(router: StudioServer(queue: queue).router())
        let body = #"{"prompt": "a red circle", "steps": 4, "num_images": 2, "seed": 11, "sampler": "dpmpp", "guidance": 2.5}"#
        let (snapshot, events) = try await app.test(.router) { client in
            let job = try await client.execute(uri: "/api/generate", method: .post, headers: jsonHeaders, body: ByteBuffer(string: body)) { r in
                #expect(r.status == .accepted)
                return try json(r)
            }
            let id = try #require(job["id"] as? String)
            let events = try await client.execute(uri: "/api/jobs/\(id)/events", method: .get) { r in
                #expect(r.headers[.contentType] == "text/event-stream")
                return String(buffer: r.body)
            }
            return (try await waitForJob(client, id), events)
        }
        #expect(snapshot["status"] as? String == "succeeded", "\(snapshot)")
        // Server-sent events: one JSON snapshot per change, ending with the final one.
        let sent = events.split(separator: "\n\n").map { try? JSONSerialization.jsonObject(with: Data($0.dropFirst(6).utf8)) as? [String: Any] }
        #expect(events.hasPrefix("data: ") && sent.allSatisfy { $0 != nil })
        let steps = sent.compactMap { $0?["completed"] as? Int }
        #expect(steps == steps.sorted() && steps.last == 4, "\(steps)")
        #expect(sent.last??["status"] as? String == "succeeded")

        let run = try #require(snapshot["run"] as? [String: Any])
        let runID = try #require(run["id"] as? String)
        let history = try RunHistory(folder: data)
        let stored = try #require(try history.run(id: runID))
        #expect(stored.imageCount == 2 && stored.width == 16 && stored.record.options.seed == 11)
        #expect(stored.record.options.sampler == .dpmpp && stored.record.options.guidance == 2.5 && stored.record.model == modelDir.lastPathComponent)

        var options = GenerationOptions()
        options.sampler = .dpmpp
        options.steps = 4
        options.imagesPerPrompt = 2
        options.seed = 11
        options.guidance = 2.5
        let lone = try GeneratedImages(
            TextToImagePipeline(model: ContextDiffModel.load(from: modelDir), textEncoder: TinyStudio.encoder())
                .generate(prompts: ["a red circle"], options: options))
        for k in 0..<2 {
            let png = try Data(contentsOf: try #require(try history.imageFile(run: runID, index: k)))
            let image = try RGBImage(contentsOf: try #require(try history.imageFile(run: runID, index: k)))
            #expect(image.pixels == lone.pixels[k], "image \(k) differs from a lone call")
            let record = try #require(GenerationRecord(pngText: try PNGText.read(from: png)))
            #expect(record.index == k && record.options == options && record.prompt == "a red circle", "\(record)")
        }
        #expect(try history.imageFile(run: runID, index: 2) == nil)
    }

    /// The preview sees x̂0 at every step; for an x0-predicting model sampled with DDIM the
    /// last estimate is the sample itself. The BMP a page shows is the grid, bottom-up BGR.
    @Test func previewsFollowTheDenoising() throws {
        let modelDir = try TinyStudio.modelFolder()
        defer { try? FileManager.default.removeItem(at: modelDir) }
        let pipeline = try TextToImagePipeline(model: ContextDiffModel.load(from: modelDir), textEncoder: TinyStudio.encoder())
        var options = GenerationOptions()
        options.steps = 5
        options.imagesPerPrompt = 2
        var steps: [Int] = []
        var last: Tensor?
        let result = try pipeline.generate(prompts: ["a red circle"], options: options, preview: { step, estimate in
            steps.append(step)
            last = estimate
        })
        #expect(steps == [1, 2, 3, 4, 5])
        #expect(try TestSupport.relativeDiff(try #require(last), result.images) < 1e-5)
        let plain = try pipeline.generate(prompts: ["a red circle"], options: options)
        #expect(try TestSupport.relativeDiff(plain.images, result.images) == 0, "a preview changes nothing")

        let image = try RGBImage(width: 3, height: 2, pixels: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18])
        let bmp = image.bmp()
        #expect(bmp.count == 54 + 12 * 2 && bmp[0] == 0x42 && bmp[1] == 0x4D && bmp[18] == 3 && bmp[22] == 2 && bmp[28] == 24)
        #expect(Array(bmp[54..<57]) == [12, 11, 10], "the bottom row first, blue green red")
        #expect(Array(bmp[66..<69]) == [3, 2, 1])
    }

    /// At most `queueCapacity` jobs wait or run; one more is 429 with a JSON error. A queued
    /// job cancels at once; a running one at its next step, which frees the worker for the next.
    @Test func theQueueIsBoundedAndCancellingFreesTheWorker() async throws {
        let data = temporaryFolder("studio-queue")
        defer { try? FileManager.default.removeItem(at: data) }
        let backend = GatedBackend()
        var limits = StudioLimits()
        limits.queueCapacity = 3
        let queue = JobQueue(backend: backend, history: try RunHistory(folder: data), limits: limits)
        let app = Application(router: StudioServer(queue: queue).router())
        try await app.test(.router) { client in
            func submit(_ prompt: String, steps: Int = 3) async throws -> (HTTPResponse.Status, [String: Any]) {
                let body = #"{"prompt": "\#(prompt)", "steps": \#(steps), "seed": 7}"#
                return try await client.execute(uri: "/api/generate", method: .post, headers: jsonHeaders, body: ByteBuffer(string: body)) {
                    ($0.status, try json($0))
                }
            }
            let first = try await submit("first"), second = try await submit("second"), third = try await submit("third")
            #expect([first.0, second.0, third.0] == [.accepted, .accepted, .accepted])
            #expect(second.1["status"] as? String == "queued" && second.1["position"] as? Int == 1)
            let refused = try await submit("fourth")
            #expect(refused.0 == .tooManyRequests)
            #expect((refused.1["error"] as? [String: Any])?["message"] as? String != nil, "\(refused.1)")

            // Cancel the waiting third job: at once, and the queue has room again.
            let thirdID = try #require(third.1["id"] as? String)
            let cancelled = try await client.execute(uri: "/api/jobs/\(thirdID)/cancel", method: .post) { try json($0) }
            #expect(cancelled["status"] as? String == "cancelled")
            #expect(try await submit("fifth").0 == .accepted)

            // Cancel the running first job between steps: the second starts without any step allowed.
            backend.allow(1)
            let firstID = try #require(first.1["id"] as? String)
            _ = try await client.execute(uri: "/api/jobs/\(firstID)/cancel", method: .post)
            #expect(try await waitForJob(client, firstID)["status"] as? String == "cancelled")
            let secondID = try #require(second.1["id"] as? String)
            let deadline = Date().addingTimeInterval(30)
            while backend.started.count < 2, Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(backend.started == ["first", "second"])

            backend.allow(100)
            let done = try await waitForJob(client, secondID)
            #expect(done["status"] as? String == "succeeded" && done["completed"] as? Int == 3, "\(done)")
            #expect(try await waitForJob(client, try #require(try await submit("sixth").1["id"] as? String))["status"] as? String == "succeeded")
            #expect(backend.started == ["first", "second", "fifth", "sixth"])
            let health = try await client.execute(uri: "/api/health", method: .get) { try json($0) }
            #expect(health["running"] as? Int == 0 && health["queued"] as? Int == 0)
        }
        // Only finished runs are history; cancelled ones leave nothing behind.
        let history = try RunHistory(folder: data)
        #expect(try history.runs(limit: 10).map(\.prompt) == ["sixth", "fifth", "second"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: data.appendingPathComponent("images").path).count == 3)
    }

    /// Malformed and hostile requests get a 4xx and a JSON error, and the server serves on.
    @Test func hostileRequestsAreJSONErrors() async throws {
        let data = temporaryFolder("studio-hostile")
        defer { try? FileManager.default.removeItem(at: data) }
        let backend = GatedBackend()
        backend.allow(10_000)
        let queue = JobQueue(backend: backend, history: try RunHistory(folder: data), limits: StudioLimits())
        let app = Application(router: StudioServer(queue: queue).router())
        let cases: [(String, HTTPRequest.Method, HTTPFields, String?, HTTPResponse.Status)] = [
            ("/api/generate", .post, jsonHeaders, "{not json", .badRequest),
            ("/api/generate", .post, jsonHeaders, "[1, 2]", .badRequest),
            ("/api/generate", .post, jsonHeaders, #"{"steps": 5}"#, .badRequest),
            ("/api/generate", .post, jsonHeaders, #"{"prompt": 5}"#, .badRequest),
            ("/api/generate", .post, [.contentType: "text/plain"], #"{"prompt": "a"}"#, .unsupportedMediaType),
            ("/api/generate", .post, [:], #"{"prompt": "a"}"#, .unsupportedMediaType),
            ("/api/generate", .post, jsonHeaders, #"{"prompt": "   "}"#, .unprocessableContent),
            ("/api/generate", .post, jsonHeaders, #"{"prompt": "a", "steps": -3}"#, .unprocessableContent),
            ("/api/generate", .post, jsonHeaders, #"{"prompt": "a", "steps": 100000}"#, .unprocessableContent),
            ("/api/generate", .post, jsonHeaders, #"{"prompt": "a", "num_images": 0}"#, .unprocessableContent),
            ("/api/generate", .post, jsonHeaders, #"{"prompt": "a", "num_images": 1000}"#, .unprocessableContent),
            ("/api/generate", .post, jsonHeaders, #"{"prompt": "a", "guidance": -1}"#, .unprocessableContent),
            ("/api/generate", .post, jsonHeaders, #"{"prompt": "a", "sampler": "../../etc/passwd"}"#, .unprocessableContent),
            ("/api/generate", .post, jsonHeaders, #"{"prompt": "a", "layout": "everywhere"}"#, .unprocessableContent),
            ("/api/generate", .post, jsonHeaders, #"{"prompt": "a", "boxes": [{"phrase": "a", "box": [0.5, 0.5, 0.1, 2]}]}"#, .unprocessableContent),
            ("/api/generate", .post, jsonHeaders, #"{"prompt": "a red circle", "boxes": [{"phrase": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]}"#, .unprocessableContent),
            ("/api/generate", .post, jsonHeaders, "{\"prompt\": \"\(String(repeating: "a", count: 501))\"}", .unprocessableContent),
            ("/api/generate", .post, jsonHeaders, "{\"prompt\": \"\(String(repeating: "a", count: 70_000))\"}", .contentTooLarge),
            ("/api/generate", .get, [:], nil, .notFound),  // Hummingbird answers a wrong method as an unknown route
            ("/api/jobs/nope", .get, [:], nil, .notFound),
            ("/api/jobs/nope/cancel", .post, [:], nil, .notFound),
            ("/api/jobs/nope/events", .get, [:], nil, .notFound),
            ("/api/runs/../../etc/passwd", .get, [:], nil, .notFound),
            ("/api/runs/%2e%2e%2fstudio.sqlite", .get, [:], nil, .notFound),
            ("/api/runs/00000000-0000-0000-0000-000000000000/images/0", .get, [:], nil, .notFound),
            ("/api/runs/x/images/-1", .get, [:], nil, .notFound),
            ("/api/runs?limit=0", .get, [:], nil, .badRequest),
            ("/api/runs?limit=abc", .get, [:], nil, .badRequest),
            ("/nowhere", .get, [:], nil, .notFound),
        ]
        try await app.test(.router) { client in
            for (uri, method, headers, body, status) in cases {
                try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) { r in
                    #expect(r.status == status, "\(method) \(uri) \(body?.prefix(80) ?? ""): \(r.status) \(String(buffer: r.body).prefix(200))")
                    #expect(Self.errorMessage(r) != nil, "\(method) \(uri): \(String(buffer: r.body).prefix(200))")
                }
            }
            // Still serving: a good request goes through.
            let job = try await client.execute(
                uri: "/api/generate", method: .post, headers: jsonHeaders, body: ByteBuffer(string: #"{"prompt": "a red circle", "steps": 2}"#)
            ) { try json($0) }
            #expect(try await waitForJob(client, try #require(job["id"] as? String))["status"] as? String == "succeeded")
            let page = try await client.execute(uri: "/", method: .get) { String(buffer: $0.body) }
            #expect(page.contains("<title>ContextDiff Studio</title>") && page.contains("/studio.js"))
            let spec = try await client.execute(uri: "/api/openapi.yaml", method: .get) { String(buffer: $0.body) }
            #expect(spec.hasPrefix("openapi: 3."))
        }
    }

    /// The message of a JSON error body (`{"error": {"message": ...}}`), nil for any other body.
    static func errorMessage(_ r: TestResponse) -> String? {
        ((try? JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [String: Any])?["error"] as? [String: Any])?["message"] as? String
    }

    /// The published API description and the router agree: every operation in openapi.yaml is
    /// answered by a route (a typed JSON answer, not the router's bare 404 for an unknown path),
    /// and every /api route the server declares (read from its source) is described there.
    @Test func openAPIDescribesEveryRouteAndOnlyRoutes() async throws {
        let data = temporaryFolder("studio-openapi")
        defer { try? FileManager.default.removeItem(at: data) }
        let backend = GatedBackend()
        backend.allow(10_000)
        let queue = JobQueue(backend: backend, history: try RunHistory(folder: data), limits: StudioLimits())
        let app = Application(router: StudioServer(queue: queue).router())
        let source = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("../../Sources/Studio/StudioServer.swift").standardizedFileURL, encoding: .utf8)
        let route = try Regex(#"router\.(get|post|put|delete|patch)\("(/api/[^"]*)""#)
        let routed = Set(source.matches(of: route).map { m in
            let method = String(m.output[1].substring ?? "").uppercased()
            let p = (m.output[2].substring ?? "").split(separator: "/").map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }
            return "\(method) /" + p.joined(separator: "/")
        })
        #expect(routed.count >= 12, "\(routed.sorted())")
        try await app.test(.router) { client in
            let spec = try await client.execute(uri: "/api/openapi.yaml", method: .get) { String(buffer: $0.body) }
            var documented: Set<String> = []  // "GET /api/jobs/{id}"
            var path: String?
            for line in spec.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix("  /"), line.hasSuffix(":") {
                    path = String(line.dropFirst(2).dropLast())
                } else if let p = path, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                    let method = line.trimmingCharacters(in: .whitespaces).dropLast().uppercased()
                    if ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(method) { documented.insert("\(method) \(p)") }
                } else if !line.hasPrefix(" ") && !line.isEmpty {
                    path = nil
                }
            }
            #expect(routed == documented, "routed, not documented: \(routed.subtracting(documented).sorted()); documented, not routed: \(documented.subtracting(routed).sorted())")
            for operation in documented.sorted() {
                let parts = operation.split(separator: " ")
                let uri = String(parts[1]).replacingOccurrences(of: "{id}", with: "00000000-0000-0000-0000-000000000000")
                    .replacingOccurrences(of: "{index}", with: "0").replacingOccurrences(of: "{file}", with: "edited.mp4")
                let method: HTTPRequest.Method = parts[0] == "POST" ? .post : .get
                try await client.execute(uri: uri, method: method, headers: jsonHeaders, body: method == .post ? ByteBuffer(string: "{}") : nil) { r in
                    let body = String(buffer: r.body)
                    // A route answers with content or its own error; only the router itself says a
                    // bare "Not Found" / "Method Not Allowed" (its reason phrase).
                    #expect(!["Not Found", "Method Not Allowed"].contains(Self.errorMessage(r)), "\(operation): \(r.status) \(body.prefix(200))")
                    #expect(r.status.code < 500, "\(operation): \(r.status) \(body.prefix(200))")
                }
            }
            // The discriminator itself: an undescribed path gets the router's bare answer.
            try await client.execute(uri: "/api/undescribed", method: .get) { r in
                #expect(r.status == .notFound && Self.errorMessage(r) == "Not Found", "\(String(buffer: r.body))")
            }
        }
    }

    /// The history outlives the server: a reopened store lists the same runs, newest first and
    /// by pages; image folders a kill left without a committed run are removed.
    @Test func historySurvivesARestartAndDropsHalfWrittenRuns() throws {
        let data = temporaryFolder("studio-history")
        defer { try? FileManager.default.removeItem(at: data) }
        var ids: [String] = []
        do {
            let history = try RunHistory(folder: data)
            for k in 0..<5 {
                var options = GenerationOptions()
                options.seed = UInt64(k)
                let images = GeneratedImages(pixels: [[UInt8](repeating: UInt8(k), count: 12)], width: 2, height: 2)
                ids.append(try history.record(images, prompt: "prompt \(k)", options: options, model: "m", seconds: 0.5).id)
            }
        }
        let orphan = data.appendingPathComponent("images/half-written")
        try FileManager.default.createDirectory(at: orphan, withIntermediateDirectories: true)
        let reopened = try RunHistory(folder: data)
        #expect(!FileManager.default.fileExists(atPath: orphan.path))
        #expect(try reopened.count == 5)
        let firstPage = try reopened.runs(limit: 2)
        #expect(firstPage.map(\.id) == [ids[4], ids[3]])
        let secondPage = try reopened.runs(limit: 2, before: firstPage.last!.id)
        #expect(secondPage.map(\.id) == [ids[2], ids[1]])
        #expect(try reopened.runs(limit: 10, before: ids[0]).isEmpty)
        let run = try #require(try reopened.run(id: ids[3]))
        #expect(run.record.options.seed == 3 && run.images == ["/api/runs/\(ids[3])/images/0"])
        #expect(try RGBImage(contentsOf: #require(try reopened.imageFile(run: ids[3], index: 0))).pixels == [UInt8](repeating: 3, count: 12))
        #expect(try reopened.imageFile(run: "../studio.sqlite", index: 0) == nil)
    }
}

@Suite("Studio under load")
struct StudioLoadTests {
    /// 50 requests at once against a queue of 8 whose worker is held: exactly 8 are accepted,
    /// 42 are answered 429 with a JSON error, none is lost, and the 8 then all finish.
    @Test func fiftyConcurrentRequestsAreAllAnswered() async throws {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("studio-load-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        let backend = GatedBackend()
        let queue = JobQueue(backend: backend, history: try RunHistory(folder: data), limits: StudioLimits())
        let app = Application(router: StudioServer(queue: queue).router())
        try await app.test(.router) { client in
            let raw = try await withThrowingTaskGroup(of: (HTTPResponse.Status, String).self) { group in
                for k in 0..<50 {
                    group.addTask {
                        let body = #"{"prompt": "a red circle", "steps": 2, "seed": \#(k)}"#
                        return try await client.execute(uri: "/api/generate", method: .post, headers: [.contentType: "application/json"], body: ByteBuffer(string: body)) {
                            ($0.status, String(buffer: $0.body))
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let answers = raw.map { ($0.0, (try? JSONSerialization.jsonObject(with: Data($0.1.utf8)) as? [String: Any]) ?? [:]) }
            #expect(answers.count == 50)
            let accepted = answers.filter { $0.0 == .accepted }, refused = answers.filter { $0.0 == .tooManyRequests }
            #expect(accepted.count == 8 && refused.count == 42, "\(answers.map(\.0))")
            #expect(refused.allSatisfy { ($0.1["error"] as? [String: Any])?["message"] is String })
            backend.allow(1000)
            for (_, job) in accepted {
                let id = try #require(job["id"] as? String)
                let deadline = Date().addingTimeInterval(60)
                var status = ""
                while Date() < deadline {
                    status = try await client.execute(uri: "/api/jobs/\(id)", method: .get) { (try? JSONSerialization.jsonObject(with: Data(buffer: $0.body)) as? [String: Any])?["status"] as? String ?? "" }
                    if status == "succeeded" { break }
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(status == "succeeded")
            }
        }
        #expect(try RunHistory(folder: data).count == 8)
    }
}

@Suite("Studio: video edits")
struct StudioVideoTests {
    /// A clip uploaded as the body is decoded, edited by the backend and kept with its strips
    /// and GIF; a body that is not a video is refused before anything is queued.
    @Test func anUploadedClipIsEditedAndKept() async throws {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("studio-video-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: data) }
        let ffmpeg = try FFmpeg()
        let frames = try (0..<4).map { k in try RGBImage(width: 2, height: 2, pixels: [UInt8](repeating: UInt8(40 * k), count: 12)) }
        let clip = data.appendingPathComponent("clip.gif")
        try ffmpeg.write(try Video(frames: frames, fps: 8), to: clip)
        let backend = GatedBackend()
        let queue = JobQueue(backend: backend, history: try RunHistory(folder: data.appendingPathComponent("history")), limits: StudioLimits())
        let app = Application(router: StudioServer(queue: queue).router())
        try await app.test(.router) { client in
            let path = "/api/edit-video?source_prompt=a%20red%20circle&target_prompt=a%20blue%20circle&frames=4&tune_steps=3"
            let refused = try await client.execute(
                uri: path, method: .post, headers: [.contentType: "video/mp4"], body: ByteBuffer(string: "not a video at all")
            ) { ($0.status, String(buffer: $0.body)) }
            #expect(refused.0 == .unprocessableContent && refused.1.contains("not a video"), "\(refused)")
            let bad = try await client.execute(uri: path + "&frames=99", method: .post, headers: [.contentType: "image/gif"], body: ByteBuffer(bytes: Array(try Data(contentsOf: clip)))) { $0.status }
            #expect(bad == .unprocessableContent)
            let job = try await client.execute(uri: path, method: .post, headers: [.contentType: "image/gif"], body: ByteBuffer(bytes: Array(try Data(contentsOf: clip)))) { r in
                #expect(r.status == .accepted)
                return try json(r)
            }
            #expect(job["kind"] as? String == "edit-video")
            let done = try await waitForJob(client, try #require(job["id"] as? String))
            #expect(done["status"] as? String == "succeeded" && done["notices"] as? [String] == ["inverted"], "\(done)")
            let edit = try #require(done["edit"] as? [String: Any])
            #expect(edit["frames"] as? Int == 4 && edit["target_prompt"] as? String == "a blue circle")
            for key in ["source", "edited", "animation"] {
                let url = try #require(edit[key] as? String)
                let body = try await client.execute(uri: url, method: .get) { r in
                    #expect(r.status == .ok)
                    return Array(r.body.readableBytesView)
                }
                #expect(body.starts(with: key == "animation" ? Array("GIF8".utf8) : [0x89, 0x50, 0x4E, 0x47]), "\(key)")
            }
            // The edited strip holds the inverted frames the backend returned.
            let strip = try await client.execute(uri: try #require(edit["edited"] as? String), method: .get) { Data(buffer: $0.body) }
            let stripFile = data.appendingPathComponent("strip.png")
            try strip.write(to: stripFile)
            let expected = try Video(frames: frames.map { try RGBImage(width: 2, height: 2, pixels: $0.pixels.map { 255 - $0 }) }).strip()
            let decodedSource = try ffmpeg.read(clip, size: 2, maxFrames: 4)
            #expect(decodedSource.frames.count == 4)
            let got = try RGBImage(contentsOf: stripFile)
            #expect(got.width == expected.width && got.height == expected.height)
            let listed = try await client.execute(uri: "/api/edits", method: .get) { try json($0) }
            #expect((listed["edits"] as? [[String: Any]])?.count == 1)
        }
        #expect(backend.started == ["edit: a blue circle"])
        // The upload is not kept once decoded.
        let uploads = data.appendingPathComponent("history/uploads")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: uploads.path)) ?? []).isEmpty)
    }
}
