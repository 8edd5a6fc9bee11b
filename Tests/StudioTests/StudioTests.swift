import ContextDiff
import Core
import Datasets
import Foundation
import Hummingbird
import HummingbirdTesting
import NN
import Studio
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

    func generate(_ spec: GenerationJobSpec, progress: @escaping ProgressHandler) throws -> GeneratedImages {
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
            #expect(record.index == k && record.options == options && record.prompt == "a red circle")
        }
        #expect(try history.imageFile(run: runID, index: 2) == nil)
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
                    let error = (try? JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [String: Any])?["error"] as? [String: Any]
                    #expect(error?["message"] is String, "\(method) \(uri): \(String(buffer: r.body).prefix(200))")
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
