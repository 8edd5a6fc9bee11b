import ContextDiff
import Core
import Foundation

/// A generation job as clients see it.
public struct JobSnapshot: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        case queued, running, succeeded, failed, cancelled
        public var isFinal: Bool { self == .succeeded || self == .failed || self == .cancelled }
    }

    public var id: String
    public var status: Status
    /// Jobs ahead of this one (queued jobs only).
    public var position: Int?
    /// Denoising steps done of `total`.
    public var completed: Int
    public var total: Int
    public var prompt: String
    /// The seed the job runs with (drawn when the request gave none).
    public var seed: UInt64
    /// The finished run (succeeded jobs).
    public var run: StudioRun?
    /// Why it failed.
    public var error: String?
    /// The library's notices (a prompt cut to the encoder's length, ...).
    public var notices: [String]

    enum CodingKeys: String, CodingKey {
        case id, status, position, completed, total, prompt, seed, run, error, notices
    }
}

/// The queue of generation jobs in front of one backend: one job runs at a time on a worker
/// thread of its own (so sampling never blocks the server's tasks), at most
/// ``StudioLimits/queueCapacity`` wait or run, and a job can be cancelled while it waits or
/// between two denoising steps, which frees the worker at once.
public actor JobQueue {
    /// The queue is full: the caller is answered 429.
    public struct Full: Error {}

    private struct Job {
        var snapshot: JobSnapshot
        var spec: GenerationJobSpec
        let cancelled = CancelFlag()
        var watchers: [UUID: AsyncStream<JobSnapshot>.Continuation] = [:]
    }

    public let backend: any StudioBackend
    public let history: RunHistory
    public let limits: StudioLimits
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
    }

    /// Jobs waiting and running.
    public var load: (running: Int, queued: Int) { (running == nil ? 0 : 1, waiting.count) }

    /// Queues a checked request; throws ``Full`` when ``StudioLimits/queueCapacity`` jobs are
    /// already waiting or running.
    public func submit(_ spec: GenerationJobSpec) throws -> JobSnapshot {
        guard waiting.count + (running == nil ? 0 : 1) < limits.queueCapacity else { throw Full() }
        let id = UUID().uuidString.lowercased()
        let snapshot = JobSnapshot(
            id: id, status: .queued, position: waiting.count + (running == nil ? 0 : 1), completed: 0,
            total: spec.options.steps, prompt: spec.prompt, seed: spec.options.seed, run: nil, error: nil, notices: [])
        jobs[id] = Job(snapshot: snapshot, spec: spec)
        waiting.append(id)
        startNext()
        return jobs[id]!.snapshot
    }

    public func snapshot(_ id: String) -> JobSnapshot? { jobs[id]?.snapshot }

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

    private func progressed(_ id: String, _ completed: Int, _ total: Int) {
        guard let job = jobs[id], job.snapshot.status == .running, completed > job.snapshot.completed else { return }
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
        let (backend, history, spec, flag) = (backend, history, job.spec, job.cancelled)
        worker.async { [weak self] in
            let started = Date()
            let outcome = Result { () throws -> (StudioRun, [String])? in
                let images = try backend.generate(spec) { update in
                    Task { await self?.progressed(id, update.completed, update.total) }
                    return !flag.isSet
                }
                if flag.isSet { return nil }
                let run = try history.record(
                    images, prompt: spec.prompt, options: spec.options, model: backend.modelName,
                    seconds: Date().timeIntervalSince(started))
                return (run, images.notices)
            }
            Task { await self?.completed(id, outcome, cancelled: flag.isSet) }
        }
    }

    private func completed(_ id: String, _ outcome: Result<(StudioRun, [String])?, any Error>, cancelled: Bool) {
        running = nil
        if var job = jobs[id] {
            switch outcome {
            case let .success((run, notices)?):
                job.snapshot.status = .succeeded
                job.snapshot.run = run
                job.snapshot.notices = notices
                job.snapshot.completed = job.snapshot.total
            case .success(nil):
                job.snapshot.status = .cancelled
            case let .failure(error):
                job.snapshot.status = cancelled ? .cancelled : .failed
                job.snapshot.error = cancelled ? nil : "\(error)"
            }
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
