import CTorch
import Foundation

extension Torch {
    /// Runs `body(0)`, …, `body(count − 1)` at the same time, each on its own thread (`body(0)`
    /// on the caller's), and returns when all have; the first error (by index) is rethrown.
    ///
    /// This is inter-op parallelism for work that splits into independent parts, such as the
    /// shards of a training batch: on a 2-core CPU, two halves of a step each on one core save
    /// what libtorch's two intra-op threads spend synchronising at every operator and the
    /// kernels too small for it to split. Each part runs with `threadsEach` intra-op threads (default:
    /// ``numThreads`` / `count`, at least 1) and with the caller's grad mode, inference mode,
    /// default device and precision scope. The helper threads persist between calls, so
    /// libtorch's and oneDNN's per-thread set-up happens once.
    ///
    /// Parts must not depend on one another or on a shared random stream. A call made from
    /// inside a part runs its parts one after another on that part's thread (no thread
    /// explosion, no deadlock); calls from unrelated threads each get their own helpers.
    public static func concurrently(
        _ count: Int, threadsEach: Int? = nil, _ body: (Int) throws -> Void
    ) throws {
        precondition(count >= 0, "a negative number of parts")
        if count <= 1 {
            if count == 1 { try body(0) }
            return
        }
        let marker = Thread.current.threadDictionary
        if marker[HelperThreads.insidePart] != nil {
            for i in 0..<count { try body(i) }
            return
        }
        let pool = HelperThreads.shared.acquire(count - 1)
        defer { HelperThreads.shared.release(pool) }
        marker[HelperThreads.insidePart] = true
        defer { marker.removeObject(forKey: HelperThreads.insidePart) }
        let each = max(1, threadsEach ?? numThreads / count)
        guard let context = ct_thread_context_capture() else { throw TorchError.lastError("capture thread state") }
        defer { ct_thread_context_free(context) }
        try withoutActuallyEscaping(body) { body in
            let task = SharedBody(body, context: context)
            var errors = [Error?](repeating: nil, count: count)
            for (i, helper) in pool.enumerated() {
                helper.start {
                    let scope = ct_thread_context_enter(task.context, Int64(each))
                    defer { ct_thread_context_exit(scope) }
                    if scope == nil { return TorchError.lastError("enter thread state") }
                    do { try task.body(i + 1) } catch { return error }
                    return nil
                }
            }
            let previous = ct_set_thread_intraop_threads(Int64(each))
            do { try body(0) } catch { errors[0] = error }
            if previous > 0 { _ = ct_set_thread_intraop_threads(previous) }
            for (i, helper) in pool.enumerated() { errors[i + 1] = helper.wait() }
            if let first = errors.lazy.compactMap({ $0 }).first { throw first }
        }
    }
}

/// The body of one ``Torch/concurrently(_:threadsEach:_:)`` call and the caller's libtorch
/// state, handed to its helper threads; the call waits for them before it returns (and frees
/// the state), so both outlive every use.
private final class SharedBody: @unchecked Sendable {
    let body: (Int) throws -> Void
    let context: ct_thread_context
    init(_ body: @escaping (Int) throws -> Void, context: ct_thread_context) {
        self.body = body
        self.context = context
    }
}

/// The process's idle helper threads: made on demand, kept for the life of the process, each
/// lent to one ``Torch/concurrently(_:threadsEach:_:)`` call at a time.
private final class HelperThreads: @unchecked Sendable {
    static let shared = HelperThreads()
    /// Marks a thread that is running a part (its thread dictionary's key).
    static let insidePart = "contextdiff.torch.concurrently.part"
    private let lock = NSLock()
    private var idle: [HelperThread] = []
    private var made = 0

    func acquire(_ count: Int) -> [HelperThread] {
        lock.lock()
        defer { lock.unlock() }
        var lent = Array(idle.suffix(count))
        idle.removeLast(lent.count)
        while lent.count < count {
            made += 1
            lent.append(HelperThread(index: made))
        }
        return lent
    }

    func release(_ helpers: [HelperThread]) {
        lock.lock()
        idle.append(contentsOf: helpers)
        lock.unlock()
    }
}

/// One persistent thread that runs a job at a time (``start(_:)``, then ``wait()``).
private final class HelperThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var job: (@Sendable () -> Error?)?
    private var finished = false
    private var outcome: Error?

    init(index: Int) {
        let thread = Thread { self.loop() }  // kept alive by its thread, for the life of the process
        thread.name = "contextdiff-helper-\(index)"
        // Backward of a deep graph and oneDNN's kernels want more than the 512 KiB default.
        thread.stackSize = 8 << 20
        thread.start()
    }

    func start(_ job: @escaping @Sendable () -> Error?) {
        condition.lock()
        self.job = job
        finished = false
        condition.signal()
        condition.unlock()
    }

    func wait() -> Error? {
        condition.lock()
        defer { condition.unlock() }
        while !finished { condition.wait() }
        let error = outcome
        outcome = nil
        return error
    }

    private func loop() {
        Thread.current.threadDictionary[HelperThreads.insidePart] = true
        while true {
            condition.lock()
            while job == nil { condition.wait() }
            var work = job
            job = nil
            condition.unlock()
            let error = work?()
            // Released before the caller hears of it: the job holds the caller's body, which
            // must not outlive its call.
            work = nil
            condition.lock()
            outcome = error
            finished = true
            condition.broadcast()
            condition.unlock()
        }
    }
}
