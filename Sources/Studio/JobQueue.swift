import ContextDiff
import Core
import Datasets
import Foundation

/// A generation job as clients see it.
public struct JobSnapshot: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        case queued, running, succeeded, failed, cancelled
        public var isFinal: Bool { self == .succeeded || self == .failed || self == .cancelled }
    }

    public var id: String
    /// `generate` or `edit-video`.
    public var kind: String
    public var status: Status
    /// What a running job is doing ("sampling"; a video edit: "tuning", "inversion", "editing").
    public var phase: String?
    /// Jobs ahead of this one (queued jobs only).
    public var position: Int?
    /// Denoising steps done of `total`.
    public var completed: Int
    public var total: Int
    public var prompt: String
    /// The seed the job runs with (drawn when the request gave none).
    public var seed: UInt64
    /// The finished run (succeeded image jobs).
    public var run: StudioRun?
    /// The finished edit (succeeded video edits).
    public var edit: StudioEdit?
    /// Why it failed.
    public var error: String?
    /// The library's notices (a prompt cut to the encoder's length, ...).
    public var notices: [String]
    /// The denoising step of the latest preview (`/api/jobs/ID/preview`); nil before the first.
    public var previewStep: Int?

    enum CodingKeys: String, CodingKey {
        case id, kind, status, phase, position, completed, total, prompt, seed, run, edit, error, notices
        case previewStep = "preview_step"
    }
}

/// The queue of generation jobs in front of one backend: one job runs at a time on a worker
/// thread of its own (so sampling never blocks the server's tasks), at most
/// ``StudioLimits/queueCapacity`` wait or run, and a job can be cancelled while it waits or
/// between two denoising steps, which frees the worker at once.
public actor JobQueue {
    /// The queue is full: the caller is answered 429.
    public struct Full: Error {}

    /// What a job does.
    enum Work: Sendable {
        case generate(GenerationJobSpec)
        case editVideo(VideoEditJobSpec)
    }

    private struct Job {
        var snapshot: JobSnapshot
        var work: Work
        let cancelled = CancelFlag()
        /// The latest preview, a BMP (running image jobs).
        var preview: [UInt8]?
        var watchers: [UUID: AsyncStream<JobSnapshot>.Continuation] = [:]
    }

    public let backend: any StudioBackend
    public let history: RunHistory
    public let limits: StudioLimits
    /// Writes edits' GIFs; nil without ffmpeg (edits are then refused).
    public nonisolated let ffmpeg: FFmpeg?
    private var jobs: [String: Job] = [:]
    private var waiting: [String] = []
    private var running: String?
    /// Finished jobs kept for polling, oldest first (bounded).
    private var finished: [String] = []
    private let keepFinished = 256
    private let worker = DispatchQueue(label: "contextdiff.studio.worker")

    public init(backend: any StudioBackend, history: RunHistory, limits: StudioLimits) {
        self.backend = backend
        self.history = history
        self.limits = limits
        ffmpeg = try? FFmpeg()
    }

    /// Jobs waiting and running.
    public var load: (running: Int, queued: Int) { (running == nil ? 0 : 1, waiting.count) }

    /// Queues a checked request; throws ``Full`` when ``StudioLimits/queueCapacity`` jobs are
    /// already waiting or running.
    public func submit(_ spec: GenerationJobSpec) throws -> JobSnapshot {
        try submit(.generate(spec), kind: "generate", prompt: spec.prompt, seed: spec.options.seed, total: spec.options.steps)
    }

    /// Queues a checked video edit, as ``submit(_:)``.
    public func submit(_ spec: VideoEditJobSpec) throws -> JobSnapshot {
        try submit(.editVideo(spec), kind: "edit-video", prompt: spec.targetPrompt, seed: spec.options.seed, total: spec.options.tuneSteps)
    }

    private func submit(_ work: Work, kind: String, prompt: String, seed: UInt64, total: Int) throws -> JobSnapshot {
        guard waiting.count + (running == nil ? 0 : 1) < limits.queueCapacity else { throw Full() }
        let id = UUID().uuidString.lowercased()
        let snapshot = JobSnapshot(
            id: id, kind: kind, status: .queued, phase: nil, position: waiting.count + (running == nil ? 0 : 1), completed: 0,
            total: total, prompt: prompt, seed: seed, run: nil, edit: nil, error: nil, notices: [], previewStep: nil)
        jobs[id] = Job(snapshot: snapshot, work: work)
        waiting.append(id)
        startNext()
        return jobs[id]!.snapshot
    }

    public func snapshot(_ id: String) -> JobSnapshot? { jobs[id]?.snapshot }

    /// The latest preview of a job that is sampling (a BMP: the estimate of its images, side by
    /// side); nil once it has ended.
    public func preview(_ id: String) -> [UInt8]? { jobs[id]?.preview }

    private func previewed(_ id: String, _ step: Int, _ bmp: [UInt8]) {
        guard let job = jobs[id], job.snapshot.status == .running, step > (job.snapshot.previewStep ?? 0) else { return }
        jobs[id]?.preview = bmp
        jobs[id]?.snapshot.previewStep = step
        publish(id)
    }

    /// Cancels a waiting job at once, a running one at its next step; nil for an unknown id.
    public func cancel(_ id: String) -> JobSnapshot? {
        guard var job = jobs[id] else { return nil }
        switch job.snapshot.status {
        case .queued:
            waiting.removeAll { $0 == id }
            job.snapshot.status = .cancelled
            job.snapshot.position = nil
            jobs[id] = job
            finish(id)
            renumber()
        case .running:
            job.cancelled.set()
        default: break
        }
        return jobs[id]?.snapshot
    }

    /// The job's snapshot now and after every change, ending with its final state; nil for an
    /// unknown id.
    public func updates(_ id: String) -> AsyncStream<JobSnapshot>? {
        guard let job = jobs[id] else { return nil }
        let (stream, continuation) = AsyncStream<JobSnapshot>.makeStream(bufferingPolicy: .bufferingNewest(8))
        continuation.yield(job.snapshot)
        if job.snapshot.status.isFinal {
            continuation.finish()
        } else {
            let key = UUID()
            jobs[id]?.watchers[key] = continuation
            continuation.onTermination = { [weak self] _ in
                Task { await self?.unwatch(id, key) }
            }
        }
        return stream
    }

    private func unwatch(_ id: String, _ key: UUID) { jobs[id]?.watchers[key] = nil }

    private func publish(_ id: String) {
        guard let job = jobs[id] else { return }
        for watcher in job.watchers.values {
            watcher.yield(job.snapshot)
            if job.snapshot.status.isFinal { watcher.finish() }
        }
        if job.snapshot.status.isFinal { jobs[id]?.watchers = [:] }
    }

    private func finish(_ id: String) {
        publish(id)
        finished.append(id)
        while finished.count > keepFinished { jobs[finished.removeFirst()] = nil }
    }

    private func renumber() {
        for (k, id) in waiting.enumerated() where jobs[id]?.snapshot.position != k + (running == nil ? 0 : 1) {
            jobs[id]?.snapshot.position = k + (running == nil ? 0 : 1)
            publish(id)
        }
    }

    private func progressed(_ id: String, _ phase: String, _ completed: Int, _ total: Int) {
        guard let job = jobs[id], job.snapshot.status == .running else { return }
        // Updates may arrive out of order: within a phase only forward.
        guard job.snapshot.phase != phase || completed > job.snapshot.completed else { return }
        jobs[id]?.snapshot.phase = phase
        jobs[id]?.snapshot.completed = completed
        jobs[id]?.snapshot.total = total
        publish(id)
    }

    private func startNext() {
        guard running == nil, !waiting.isEmpty else { return }
        let id = waiting.removeFirst()
        guard let job = jobs[id] else { return }
        running = id
        jobs[id]?.snapshot.status = .running
        jobs[id]?.snapshot.position = nil
        publish(id)
        renumber()
        let (backend, history, work, flag, ffmpeg) = (backend, history, job.work, job.cancelled, ffmpeg)
        worker.async { [weak self] in
            let started = Date()
            let report: ProgressHandler = { update in
                Task { await self?.progressed(id, update.phase, update.completed, update.total) }
                return !flag.isSet
            }
            let outcome = Result { () throws -> Finished? in
                switch work {
                case let .generate(spec):
                    let images = try backend.generate(spec, progress: report) { step, image in
                        let bmp = image.bmp()
                        Task { await self?.previewed(id, step, bmp) }
                    }
                    if flag.isSet { return nil }
                    let run = try history.record(
                        images, prompt: spec.prompt, options: spec.options, model: backend.modelName,
                        seconds: Date().timeIntervalSince(started))
                    return Finished(run: run, edit: nil, notices: images.notices)
                case let .editVideo(spec):
                    guard let ffmpeg else { throw StudioRequestError(status: 503, message: "ffmpeg is not installed") }
                    let edited = try backend.editVideo(spec, progress: report)
                    if flag.isSet { return nil }
                    let edit = try history.record(edited, spec: spec, ffmpeg: ffmpeg, seconds: Date().timeIntervalSince(started))
                    return Finished(run: nil, edit: edit, notices: edited.notices)
                }
            }
            Task { await self?.completed(id, outcome, cancelled: flag.isSet) }
        }
    }

    private struct Finished: Sendable {
        var run: StudioRun?
        var edit: StudioEdit?
        var notices: [String]
    }

    private func completed(_ id: String, _ outcome: Result<Finished?, any Error>, cancelled: Bool) {
        running = nil
        if var job = jobs[id] {
            switch outcome {
            case let .success(finished?):
                job.snapshot.status = .succeeded
                job.snapshot.run = finished.run
                job.snapshot.edit = finished.edit
                job.snapshot.notices = finished.notices
                job.snapshot.completed = job.snapshot.total
            case .success(nil):
                job.snapshot.status = .cancelled
            case let .failure(error):
                job.snapshot.status = cancelled ? .cancelled : .failed
                job.snapshot.error = cancelled ? nil : "\(error)"
            }
            job.preview = nil
            jobs[id] = job
            finish(id)
        }
        renumber()
        startNext()
    }
}

/// A flag set once from one thread and read from another.
final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

extension RGBImage {
    /// The image as an uncompressed 24-bit BMP (what a browser shows without an encoder).
    func bmp() -> [UInt8] {
        let rowBytes = (width * 3 + 3) & ~3
        let size = 54 + rowBytes * height
        var out = [UInt8](repeating: 0, count: size)
        func put(_ value: Int, at offset: Int, bytes: Int) {
            for k in 0..<bytes { out[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
        }
        out[0] = 0x42
        out[1] = 0x4D
        put(size, at: 2, bytes: 4)
        put(54, at: 10, bytes: 4)
        put(40, at: 14, bytes: 4)
        put(width, at: 18, bytes: 4)
        put(height, at: 22, bytes: 4)
        put(1, at: 26, bytes: 2)
        put(24, at: 28, bytes: 2)
        put(rowBytes * height, at: 34, bytes: 4)
        for y in 0..<height {
            let row = 54 + (height - 1 - y) * rowBytes  // bottom-up
            for x in 0..<width {
                let p = (y * width + x) * 3
                out[row + 3 * x] = pixels[p + 2]
                out[row + 3 * x + 1] = pixels[p + 1]
                out[row + 3 * x + 2] = pixels[p]
            }
        }
        return out
    }
}
