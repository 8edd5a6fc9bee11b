import Foundation
import Testing
import Workflows

/// The launcher with `/bin/sh` ranks: torchrun's environment, the first failure named and the
/// other ranks stopped, and settings validated.
@Suite("Workflows: the rank launcher")
struct RankLauncherTests {
    func scratch() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("launch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test func everyRankGetsTorchrunsEnvironment() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        var launcher = RankLauncher(
            executable: "/bin/sh",
            arguments: ["-c", "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT\" > \(dir.path)/rank$RANK"],
            nproc: 3)
        launcher.nnodes = 2
        launcher.nodeRank = 1
        launcher.masterPort = 29611
        try launcher.run()
        for (local, rank) in [3, 4, 5].enumerated() {
            let line = try String(contentsOf: dir.appendingPathComponent("rank\(rank)"), encoding: .utf8)
            #expect(line == "\(rank) 6 \(local) 3 127.0.0.1 29611\n")
        }
    }

    @Test func theFirstFailureIsNamedAndTheOthersAreStopped() throws {
        var launcher = RankLauncher(
            executable: "/bin/sh", arguments: ["-c", "if [ \"$RANK\" = 1 ]; then exit 3; fi; exec sleep 60"], nproc: 2)
        launcher.stopGrace = 5
        let started = Date()
        #expect(throws: LaunchError.failed("rank 1 exited with status 3; stopped the other ranks")) { try launcher.run() }
        // Rank 0 (sleeping 60 s) was stopped, not waited for: `sleep` inherits the launcher's
        // ignored SIGTERM, so it is the SIGKILL after the 5 s grace that ends it.
        #expect(Date().timeIntervalSince(started) < 30)
    }

    @Test func settingsAreValidatedByName() throws {
        var launcher = RankLauncher(executable: "/bin/true", arguments: [], nproc: 0)
        #expect(throws: LaunchError.invalidSetting(option: "nproc", message: "must be at least 1")) { try launcher.run() }
        launcher.nproc = 1
        launcher.nodeRank = 1
        #expect(throws: LaunchError.invalidSetting(option: "node_rank", message: "must be in 0..<1")) { try launcher.validate() }
        launcher.nodeRank = 0
        launcher.masterPort = 70000
        #expect(throws: LaunchError.self) { try launcher.validate() }
    }
}
