import ContextDiff
import Datasets
import Foundation
import Hummingbird
import Logging
import NIOCore

/// The studio's HTTP face: the page, its script and style (embedded in the binary), the JSON
/// API (described by `/api/openapi.yaml`) and server-sent progress events. Every error is
/// answered with a JSON body `{"error": {"message": …}}` and a 4xx status for bad requests.
public struct StudioServer: Sendable {
    public let queue: JobQueue
    public var limits: StudioLimits { queue.limits }

    public init(queue: JobQueue) { self.queue = queue }

    /// The routes, for an ``Application`` or a test client.
    public func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.middlewares.add(JSONErrorMiddleware())
        router.get("/") { _, _ in Self.asset(PackageResources.index_html, type: "text/html; charset=utf-8") }
        router.get("/studio.js") { _, _ in Self.asset(PackageResources.studio_js, type: "text/javascript; charset=utf-8") }
        router.get("/studio.css") { _, _ in Self.asset(PackageResources.studio_css, type: "text/css; charset=utf-8") }
        router.get("/api/openapi.yaml") { _, _ in Self.asset(PackageResources.openapi_yaml, type: "application/yaml") }
        router.get("/api/health") { _, _ in try await Self.json(self.health()) }
        router.post("/api/generate") { request, _ in try await self.generate(request) }
        router.get("/api/jobs/:id") { _, context in
            let id = try context.parameters.require("id")
            guard let snapshot = await self.queue.snapshot(id) else { throw HTTPError(.notFound, message: "no job \(id)") }
            return try Self.json(snapshot)
        }
        router.post("/api/jobs/:id/cancel") { _, context in
            let id = try context.parameters.require("id")
            guard let snapshot = await self.queue.cancel(id) else { throw HTTPError(.notFound, message: "no job \(id)") }
            return try Self.json(snapshot)
        }
        router.get("/api/jobs/:id/preview") { _, context in
            let id = try context.parameters.require("id")
            guard let bmp = await self.queue.preview(id) else { throw HTTPError(.notFound, message: "no preview of job \(id) (not sampling)") }
            return Response(status: .ok, headers: [.contentType: "image/bmp", .cacheControl: "no-store"], body: .init(byteBuffer: ByteBuffer(bytes: bmp)))
        }
        router.get("/api/jobs/:id/events") { _, context in try await self.events(context.parameters.require("id")) }
        router.post("/api/edit-video") { request, _ in try await self.editVideo(request) }
        router.get("/api/edits") { _, _ in try Self.json(["edits": self.queue.history.edits(limit: 50)]) }
        router.get("/api/edits/:id/:file") { _, context in
            let (id, name) = (try context.parameters.require("id"), try context.parameters.require("file"))
            guard let file = try self.queue.history.editFile(edit: id, name: name),
                let data = FileManager.default.contents(atPath: file.path)
            else { throw HTTPError(.notFound, message: "no such file") }
            return Response(
                status: .ok, headers: [.contentType: name.hasSuffix(".gif") ? "image/gif" : "image/png", .cacheControl: "public, max-age=31536000, immutable"],
                body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        router.get("/api/runs") { request, _ in try self.runs(request) }
        router.get("/api/runs/:id") { _, context in
            let id = try context.parameters.require("id")
            guard let run = try self.queue.history.run(id: id) else { throw HTTPError(.notFound, message: "no run \(id)") }
            return try Self.json(run)
        }
        router.get("/api/runs/:id/images/:index") { _, context in
            let id = try context.parameters.require("id")
            guard let index = Int(try context.parameters.require("index")),
                let file = try self.queue.history.imageFile(run: id, index: index),
                let data = FileManager.default.contents(atPath: file.path)
            else { throw HTTPError(.notFound, message: "no such image") }
            return Response(
                status: .ok, headers: [.contentType: "image/png", .cacheControl: "public, max-age=31536000, immutable"],
                body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        return router
    }

    /// Status for the page: the model and the queue.
    public struct Health: Codable, Sendable {
        public var model: String
        public var sampleSize: Int
        /// Side of the images a job returns (the cascade's stage, else `sample_size`).
        public var outputSize: Int
        public var layoutPrior: Bool
        /// The samplers a request may name, the default first.
        public var samplers: [String]
        public var running: Int
        public var queued: Int
        public var limits: StudioLimits
        enum CodingKeys: String, CodingKey {
            case model, samplers, running, queued, limits
            case sampleSize = "sample_size", outputSize = "output_size", layoutPrior = "layout_prior"
        }
    }

    func health() async -> Health {
        let load = await queue.load
        return Health(
            model: queue.backend.modelName, sampleSize: queue.backend.sampleSize, outputSize: queue.backend.outputSize,
            layoutPrior: queue.backend.hasLayoutPrior,
            samplers: [GenerationOptions().sampler.rawValue] + SamplerKind.allCases.map(\.rawValue).filter { $0 != GenerationOptions().sampler.rawValue },
            running: load.running, queued: load.queued, limits: limits)
    }

    func generate(_ request: Request) async throws -> Response {
        guard let type = request.headers[.contentType], type.lowercased().hasPrefix("application/json") else {
            throw HTTPError(.unsupportedMediaType, message: "send the request as application/json")
        }
        try Self.refuseLargerThan(limits.maxBodyBytes, request)
        var request = request
        let body = try await request.collectBody(upTo: limits.maxBodyBytes)
        let decoded: GenerateRequest
        do {
            decoded = try JSONDecoder().decode(GenerateRequest.self, from: Data(buffer: body))
        } catch {
            throw HTTPError(.badRequest, message: "the body is not a generation request: \(Self.describe(error))")
        }
        let spec: GenerationJobSpec
        do {
            spec = try decoded.validated(limits: limits, trainTimesteps: queue.backend.trainTimesteps)
        } catch let error as StudioRequestError {
            throw HTTPError(.init(code: error.status), message: error.message)
        }
        if spec.layout != nil, !queue.backend.hasLayoutPrior {
            throw HTTPError(.unprocessableContent, message: "boxes: this model has no layout prior")
        }
        return try await accepted { try await queue.submit(spec) }
    }

    /// The clip is the body (any type ffmpeg reads, sent as video/*, image/gif or
    /// application/octet-stream); the prompts and settings are query parameters. The upload is
    /// decoded before the job is queued, so a file that is not a video is answered 422 at once.
    func editVideo(_ request: Request) async throws -> Response {
        guard let ffmpeg = queue.ffmpeg else { throw HTTPError(.serviceUnavailable, message: "video edits need ffmpeg, which is not installed") }
        let type = request.headers[.contentType]?.lowercased() ?? ""
        guard type.hasPrefix("video/") || type.hasPrefix("image/gif") || type.hasPrefix("application/octet-stream") else {
            throw HTTPError(.unsupportedMediaType, message: "send the clip as the body (video/*, image/gif or application/octet-stream)")
        }
        var query: [String: String] = [:]
        for (key, value) in request.uri.queryParameters { query[String(key)] = String(value) }
        let settings: (VideoEditOptions, frames: Int)
        let given: VideoEditRequest
        do {
            given = try VideoEditRequest(query: query)
            settings = try given.validated(limits: limits, trainTimesteps: queue.backend.trainTimesteps)
        } catch let error as StudioRequestError {
            throw HTTPError(.init(code: error.status), message: error.message)
        }
        try Self.refuseLargerThan(limits.maxUploadBytes, request)
        var request = request
        let body = try await request.collectBody(upTo: limits.maxUploadBytes)
        guard body.readableBytes > 0 else { throw HTTPError(.badRequest, message: "the body is empty: send the clip") }
        // A name of our own in the data folder; nothing from the request names a path.
        let uploads = queue.history.folder.appendingPathComponent("uploads", isDirectory: true)
        try FileManager.default.createDirectory(at: uploads, withIntermediateDirectories: true)
        let file = uploads.appendingPathComponent(UUID().uuidString.lowercased())
        try Data(body.readableBytesView).write(to: file, options: .atomic)
        defer { try? FileManager.default.removeItem(at: file) }
        let size = queue.backend.sampleSize, frames = settings.frames
        let decoded: Result<Video, any Error> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: Result { try ffmpeg.read(file, size: size, maxFrames: frames) }) }
        }
        guard case let .success(video) = decoded else {
            throw HTTPError(.unprocessableContent, message: "the upload is not a video ffmpeg can read")
        }
        let spec = VideoEditJobSpec(
            source: video, sourcePrompt: given.sourcePrompt.trimmingCharacters(in: .whitespacesAndNewlines),
            targetPrompt: given.targetPrompt.trimmingCharacters(in: .whitespacesAndNewlines), options: settings.0)
        return try await accepted { try await queue.submit(spec) }
    }

    /// 202 with the queued job, or 429 when the queue is full.
    func accepted(_ submit: () async throws -> JobSnapshot) async throws -> Response {
        do {
            var response = try Self.json(await submit())
            response.status = .accepted
            return response
        } catch is JobQueue.Full {
            throw HTTPError(
                .tooManyRequests, headers: [.retryAfter: "5"],
                message: "the queue is full (\(limits.queueCapacity) jobs); try again shortly")
        }
    }

    func events(_ id: String) async throws -> Response {
        guard let stream = await queue.updates(id) else { throw HTTPError(.notFound, message: "no job \(id)") }
        return Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
            body: ResponseBody { writer in
                let encoder = Self.encoder
                for await snapshot in stream {
                    let line = String(decoding: try encoder.encode(snapshot), as: UTF8.self)
                    try await writer.write(ByteBuffer(string: "data: \(line)\n\n"))
                }
                try await writer.finish(nil)
            })
    }

    func runs(_ request: Request) throws -> Response {
        let query = request.uri.queryParameters
        var limit = 50
        if let given = query["limit"] {
            guard let n = Int(given), (1...limits.maxPageSize).contains(n) else {
                throw HTTPError(.badRequest, message: "limit: 1 to \(limits.maxPageSize)")
            }
            limit = n
        }
        let before = query["before"].map(String.init)
        return try Self.json(["runs": queue.history.runs(limit: limit, before: before)])
    }

    /// A body its Content-Length says is over `limit` is refused before a byte of it is read,
    /// and the connection closed (a client blocked sending it learns at once).
    static func refuseLargerThan(_ limit: Int, _ request: Request) throws {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw HTTPError(
                .contentTooLarge, headers: [.connection: "close"],
                message: "the request body is too large (\(length) bytes; at most \(limit))")
        }
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    static func json<T: Encodable>(_ value: T) throws -> Response {
        Response(
            status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }

    static func asset(_ bytes: [UInt8], type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "no-cache"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case let DecodingError.keyNotFound(key, _): "missing \(key.stringValue)"
        case let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context):
            "wrong type at \(context.codingPath.map(\.stringValue).joined(separator: "."))"
        case DecodingError.dataCorrupted: "not valid JSON"
        default: "\(error)"
        }
    }
}

/// Answers every error, the router's own 404 and 405 included, with a JSON body.
struct JSONErrorMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.body == nil {
            throw HTTPError(error.status, headers: error.headers, message: error.status.reasonPhrase)
        } catch let error as HTTPError {
            throw error
        } catch let error as any HTTPResponseError {
            throw HTTPError(error.status, message: error.status == .contentTooLarge ? "the request body is too large" : error.status.reasonPhrase)
        } catch {
            throw HTTPError(.internalServerError, message: "\(error)")
        }
    }
}

extension StudioServer {
    /// Serves on `host:port` (port 0: any free one) until the process is asked to stop
    /// (SIGINT/SIGTERM). `onRunning` gets the bound port once the server listens.
    public func run(host: String, port: Int, onRunning: @escaping @Sendable (Int) -> Void) async throws {
        var logger = Logger(label: "contextdiff.studio")
        logger.logLevel = .warning
        let app = Application(
            router: router(),
            configuration: .init(address: .hostname(host, port: port), serverName: "ContextDiff Studio"),
            onServerRunning: { channel in onRunning(channel.localAddress?.port ?? port) },
            logger: logger)
        try await app.runService()
    }

    /// Whether `host` binds only this machine.
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}
