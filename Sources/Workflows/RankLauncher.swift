import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Errors of ``RankLauncher``.
public enum LaunchError: Error, CustomStringConvertible, Equatable {
    /// A setting outside its range; `option` is its name (`nproc`, `master_port`).
    case invalidSetting(option: String, message: String)
    /// A rank could not start, failed or was killed (the message names it), or the launch was interrupted.
    case failed(String)

    public var description: String {
        switch self {
        case let .invalidSetting(option, message): "\(option): \(message)"
        case let .failed(message): message
        }
    }
}

/// Starts the local ranks of a data-parallel job as child processes, with torchrun's environment
/// (`MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`), and
/// watches them: when one fails, the others are stopped (SIGTERM, then SIGKILL after
/// `stopGrace` seconds). Rank 0 keeps this process's standard streams; the other ranks' lines
/// are prefixed with `[rank N]`. `contextdiff launch` is this with flags.
///
/// A rank inherits the signal mask of the thread that started the launcher: started from a
/// thread that blocks SIGTERM (a test runner's worker, a dispatch queue), a rank does not see the
/// launcher's SIGTERM unless it unblocks it (`contextdiff train` does, in
/// ``Torch/exitWithParent(_:)``), and is then killed (SIGKILL) `stopGrace` seconds after the stop
/// is asked.
public struct RankLauncher {
    /// The program every rank runs, and its arguments.
    public var executable: String
    public var arguments: [String]
    /// Ranks on this machine.
    public var nproc: Int
    /// Machines taking part (each runs one launcher).
    public var nnodes = 1
    /// This machine's index in 0..<nnodes; its ranks are nodeRank × nproc + 0..<nproc.
    public var nodeRank = 0
    /// Address of node 0, where rank 0 serves the store.
    public var masterAddr = "127.0.0.1"
    /// TCP port of rank 0's store (nil: a free port with one node, 29500 with several).
    public var masterPort: Int?
    /// Seconds the other ranks get to stop before they are killed.
    public var stopGrace: Double = 10
    /// Extra environment for every rank (on top of this process's).
    public var environment: [String: String] = [:]
    /// One line per rank started.
    public var notes: (String) -> Void = { _ in }

    public init(executable: String, arguments: [String], nproc: Int) {
        self.executable = executable
        self.arguments = arguments
        self.nproc = nproc
    }

    /// Throws ``LaunchError/invalidSetting(option:message:)`` for the first setting out of range.
    public func validate() throws {
        func require(_ ok: Bool, _ option: String, _ message: String) throws {
            guard ok else { throw LaunchError.invalidSetting(option: option, message: message) }
        }
        try require(nproc >= 1, "nproc", "must be at least 1")
        try require(nnodes >= 1, "nnodes", "must be at least 1")
        try require((0..<nnodes).contains(nodeRank), "node_rank", "must be in 0..<\(nnodes)")
        if let masterPort { try require((1...65535).contains(masterPort), "master_port", "\(masterPort) is outside 1...65535") }
        try require(stopGrace >= 0 && stopGrace.isFinite, "stop_grace", "must be a non-negative number of seconds")
    }

    /// Set for each rank to the launcher's pid; `train` asks to be stopped when that process exits.
    public static let launcherVariable = "CONTEXTDIFF_LAUNCHER_PID"

    /// Starts the ranks, waits for all of them, and throws ``LaunchError`` naming the rank that
    /// failed first (after stopping the others) or the signal that interrupted the launch.
    /// SIGINT and SIGTERM sent to this process are forwarded to the ranks while it runs.
    public func run() throws {
        try validate()
        let port = try masterPort ?? (nnodes == 1 ? freeLocalPort() : 29500)
        let worldSize = nnodes * nproc
        let monitor = ExitMonitor()
        let output = LinePrinter()
        var ranks: [Process] = []

        let interrupts = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { monitor.interrupt(sig) }
            source.resume()
            return source
        }
        defer { interrupts.forEach { $0.cancel() } }

        for local in 0..<nproc {
            let rank = nodeRank * nproc + local
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            var environment = ProcessInfo.processInfo.environment.merging(self.environment) { _, given in given }
            environment["MASTER_ADDR"] = masterAddr
            environment["MASTER_PORT"] = String(port)
            environment["RANK"] = String(rank)
            environment["WORLD_SIZE"] = String(worldSize)
            environment["LOCAL_RANK"] = String(local)
            environment["LOCAL_WORLD_SIZE"] = String(nproc)
            // A rank exits with its launcher (SIGTERM from the kernel), even when the launcher is
            // SIGKILLed and cannot stop it.
            environment[Self.launcherVariable] = String(getpid())
            process.environment = environment
            if rank != 0 {
                // Rank 0 keeps the terminal; the others' lines are prefixed.
                process.standardOutput = output.pipe(prefix: "[rank \(rank)] ", to: .standardOutput)
                process.standardError = output.pipe(prefix: "[rank \(rank)] ", to: .standardError)
            }
            process.terminationHandler = { _ in monitor.exited(local) }
            do {
                try process.run()
            } catch {
                for started in ranks where started.isRunning { kill(started.processIdentifier, SIGKILL) }
                throw LaunchError.failed("cannot start rank \(rank): \(error)")
            }
            ranks.append(process)
            notes("launch: rank \(rank) of \(worldSize) started (pid \(process.processIdentifier))")
        }

        // Wait for every rank; on the first failure, stop the others (SIGTERM, then SIGKILL).
        var failures: [(rank: Int, reason: String, signalled: Bool)] = []
        var finished = Set<Int>()
        var killDeadline: Date?
        func stopOthers(_ signal: Int32) {
            for (i, p) in ranks.enumerated() where !finished.contains(i) && p.isRunning { kill(p.processIdentifier, signal) }
        }
        func record(_ local: Int) {
            finished.insert(local)
            let p = ranks[local]
            let rank = nodeRank * nproc + local
            if p.terminationReason == .uncaughtSignal {
                failures.append((rank, "was killed by signal \(p.terminationStatus) (\(signalName(p.terminationStatus)))", true))
            } else if p.terminationStatus != 0 {
                failures.append((rank, "exited with status \(p.terminationStatus)", false))
            }
        }
        while finished.count < ranks.count {
            switch monitor.next(until: killDeadline) {
            case let .exited(local):
                let stopping = !failures.isEmpty || monitor.interruptedBy != nil
                if stopping {
                    finished.insert(local)
                } else {
                    record(local)
                    if !failures.isEmpty {
                        // Ranks that died at the same moment are reported too (the cause comes first).
                        while case let .exited(other)? = monitor.poll() { record(other) }
                        stopOthers(SIGTERM)
                        killDeadline = Date().addingTimeInterval(stopGrace)
                    }
                }
            case let .interrupted(sig):
                stopOthers(sig)
                killDeadline = Date().addingTimeInterval(stopGrace)
            case .timedOut:
                stopOthers(SIGKILL)
                killDeadline = nil
            }
        }
        output.finish()

        if let sig = monitor.interruptedBy {
            throw LaunchError.failed("interrupted by \(signalName(sig)); stopped all \(ranks.count) local ranks")
        }
        guard !failures.isEmpty else { return }
        let ordered = failures.filter(\.signalled) + failures.filter { !$0.signalled }
        let what = ordered.map { "rank \($0.rank) \($0.reason)" }.joined(separator: "; ")
        throw LaunchError.failed("\(what); stopped the other ranks")
    }
}

/// A TCP port on the loopback interface that was free a moment ago (the kernel's choice).
private func freeLocalPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw LaunchError.failed("cannot open a socket to find a free port") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    guard ok else { throw LaunchError.failed("cannot find a free port; give a master port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

private func signalName(_ sig: Int32) -> String {
    switch sig {
    case SIGKILL: "SIGKILL"
    case SIGTERM: "SIGTERM"
    case SIGINT: "SIGINT"
    case SIGSEGV: "SIGSEGV"
    case SIGABRT: "SIGABRT"
    case SIGBUS: "SIGBUS"
    case SIGHUP: "SIGHUP"
    default: "signal \(sig)"
    }
}

/// Exits of child processes and interrupts, delivered in order to one waiting thread.
private final class ExitMonitor: @unchecked Sendable {
    enum Event { case exited(Int), interrupted(Int32), timedOut }
    private let lock = NSCondition()
    private var events: [Event] = []
    private(set) var interruptedBy: Int32?

    func exited(_ local: Int) { push(.exited(local)) }

    func interrupt(_ sig: Int32) {
        lock.lock()
        if interruptedBy == nil { interruptedBy = sig }
        lock.unlock()
        push(.interrupted(sig))
    }

    private func push(_ event: Event) {
        lock.lock()
        events.append(event)
        lock.signal()
        lock.unlock()
    }

    /// The next event, waiting until `deadline` (forever when nil).
    func next(until deadline: Date?) -> Event {
        lock.lock()
        defer { lock.unlock() }
        while events.isEmpty {
            if let deadline {
                if !lock.wait(until: deadline) && events.isEmpty { return .timedOut }
            } else {
                lock.wait()
            }
        }
        return events.removeFirst()
    }

    /// An event already queued, without waiting.
    func poll() -> Event? {
        lock.lock()
        defer { lock.unlock() }
        return events.isEmpty ? nil : events.removeFirst()
    }
}

/// Copies children's output to ours line by line with a prefix, whole lines at a time.
private final class LinePrinter: @unchecked Sendable {
    enum Stream { case standardOutput, standardError }
    private let lock = NSLock()
    private let done = DispatchGroup()

    func pipe(prefix: String, to stream: Stream) -> Pipe {
        let pipe = Pipe()
        let reader = pipe.fileHandleForReading
        let target = stream == .standardOutput ? FileHandle.standardOutput : FileHandle.standardError
        done.enter()
        let thread = Thread { [self] in
            var pending = Data()
            while true {
                let chunk = reader.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    write(prefix, pending[pending.startIndex...newline], to: target)
                    pending.removeSubrange(pending.startIndex...newline)
                }
            }
            if !pending.isEmpty { write(prefix, pending + Data("\n".utf8), to: target) }
            done.leave()
        }
        thread.start()
        return pipe
    }

    private func write(_ prefix: String, _ line: Data, to target: FileHandle) {
        lock.lock()
        defer { lock.unlock() }
        target.write(Data(prefix.utf8) + line)
    }

    /// Waits (briefly) until the children's pipes are drained.
    func finish() { _ = done.wait(timeout: .now() + 5) }
}
