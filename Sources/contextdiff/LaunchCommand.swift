import ArgumentParser
import Foundation
import Workflows

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
        do { try launcher(executable: "").validate() } catch let LaunchError.invalidSetting(option, message) {
            throw ValidationError("--\(option.replacingOccurrences(of: "_", with: "-")) \(message)")
        }
        guard command.first == "train" else {
            throw ValidationError("give the command after `--`, e.g. `contextdiff launch --nproc 2 -- train -o runs/x` (only train runs data-parallel)")
        }
        let own = ["--rank", "--world-size", "--master-addr", "--master-port"]
        if let clash = command.first(where: { arg in own.contains { arg == $0 || arg.hasPrefix($0 + "=") } }) {
            throw ValidationError("launch sets the ranks itself; remove \(clash) from the train command")
        }
    }

    func launcher(executable: String) -> RankLauncher {
        var l = RankLauncher(executable: executable, arguments: command, nproc: nproc)
        l.nnodes = nnodes
        l.nodeRank = nodeRank
        l.masterAddr = masterAddr
        l.masterPort = masterPort
        l.stopGrace = stopGrace
        l.notes = { note($0) }
        return l
    }

    func run() throws {
        try launcher(executable: FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")).run()
    }
}
