import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Starts the local ranks of a data-parallel `train` as child processes of this binary, with
/// torchrun's environment (`MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
/// `LOCAL_WORLD_SIZE`), and watches them: when one fails, the others are stopped.
struct LaunchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "launch",
        abstract: "Run a data-parallel `train` as N local ranks (like torchrun).",
        discussion: """
            Example: contextdiff launch --nproc 2 -- train -o runs/ddp --threads 1

            Rank 0 keeps this terminal (progress bar); the other ranks are quiet and their lines, if any, are prefixed with [rank N]. If a rank exits with an error or is killed, the others are stopped and launch exits non-zero naming the rank.

            For several machines run one launch per machine with the same --nnodes, --master-addr and --master-port and its own --node-rank; rank 0 runs on node 0 and serves the rendezvous store.
            """
    )

    @Option(help: "Ranks to start on this machine.")
    var nproc: Int

    @Option(help: "Machines taking part (each runs one launch).")
    var nnodes = 1

    @Option(help: "This machine's index in 0..<nnodes; its ranks are node-rank × nproc + 0..<nproc.")
    var nodeRank = 0

    @Option(help: "Address of node 0, where rank 0 serves the store.")
    var masterAddr = "127.0.0.1"

    @Option(help: "TCP port of rank 0's store (default: a free port with one node, 29500 with several).")
    var masterPort: Int?

    @Option(help: "Seconds the other ranks get to stop (SIGTERM) before they are killed (SIGKILL).")
    var stopGrace: Double = 10

    @Argument(parsing: .postTerminator, help: "The command each rank runs, after `--` (a `train` command).")
    var command: [String] = []

    func validate() throws {
        guard nproc >= 1 else { throw ValidationError("--nproc must be at least 1") }
        guard nnodes >= 1 else { throw ValidationError("--nnodes must be at least 1") }
        guard (0..<nnodes).contains(nodeRank) else { throw ValidationError("--node-rank must be in 0..<\(nnodes)") }
        if let masterPort, !(1...65535).contains(masterPort) {
            throw ValidationError("--master-port \(masterPort) is outside 1...65535")
        }
        guard stopGrace >= 0, stopGrace.isFinite else { throw ValidationError("--stop-grace must be a non-negative number of seconds") }
        guard command.first == "train" else {
            throw ValidationError("give the command after `--`, e.g. `contextdiff launch --nproc 2 -- train -o runs/x` (only train runs data-parallel)")
        }
        let own = ["--rank", "--world-size", "--master-addr", "--master-port"]
        if let clash = command.first(where: { arg in own.contains { arg == $0 || arg.hasPrefix($0 + "=") } }) {
            throw ValidationError("launch sets the ranks itself; remove \(clash) from the train command")
        }
    }

    /// Set for each rank to the launcher's pid; `train` asks to be stopped when that process exits.
    static let launcherVariable = "CONTEXTDIFF_LAUNCHER_PID"

    func run() throws {
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
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
            process.arguments = command
            var environment = ProcessInfo.processInfo.environment
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
                throw LaunchError("cannot start rank \(rank): \(error)")
            }
            ranks.append(process)
            note("launch: rank \(rank) of \(worldSize) started (pid \(process.processIdentifier))")
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
            throw LaunchError("interrupted by \(signalName(sig)); stopped all \(ranks.count) local ranks")
        }
        guard !failures.isEmpty else { return }
        let ordered = failures.filter(\.signalled) + failures.filter { !$0.signalled }
        let what = ordered.map { "rank \($0.rank) \($0.reason)" }.joined(separator: "; ")
        throw LaunchError("\(what); stopped the other ranks")
    }
}

struct LaunchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A TCP port on the loopback interface that was free a moment ago (the kernel's choice).
private func freeLocalPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw LaunchError("cannot open a socket to find a free port") }
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
    guard ok else { throw LaunchError("cannot find a free port; pass --master-port") }
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
