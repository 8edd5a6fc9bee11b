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
        // Rank 0 (sleeping 60 s) was stopped, not waited for (by SIGTERM, or where the test
        // runner's thread blocks SIGTERM and `sleep` inherits that mask, by the SIGKILL after the
        // 5 s grace).
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

/// A rank's group settings from values and torchrun's variables.
@Suite("Workflows: distributed settings")
struct DistributedSettingsTests {
    @Test func givenValuesWinOverTheEnvironment() throws {
        let environment = ["MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "RANK": "1", "WORLD_SIZE": "4"]
        let fromEnvironment = try DistributedSettings.resolve(
            masterAddr: nil, masterPort: nil, rank: nil, worldSize: nil, timeout: 30, environment: environment)
        #expect(fromEnvironment == DistributedSettings(host: "10.0.0.1", port: 29500, rank: 1, worldSize: 4, timeout: 30))
        let given = try DistributedSettings.resolve(
            masterAddr: "h", masterPort: 1234, rank: 3, worldSize: nil, timeout: 5, environment: environment)
        #expect(given == DistributedSettings(host: "h", port: 1234, rank: 3, worldSize: 4, timeout: 5))
        // One process: nothing given, or a world of one.
        #expect(try DistributedSettings.resolve(masterAddr: nil, masterPort: nil, rank: nil, worldSize: nil, timeout: 5, environment: [:]) == nil)
        #expect(try DistributedSettings.resolve(masterAddr: nil, masterPort: nil, rank: 0, worldSize: 1, timeout: 5, environment: [:]) == nil)
    }

    @Test func incompleteOrInconsistentSettingsNameWhatIsWrong() throws {
        func message(_ rank: Int?, _ world: Int?, _ environment: [String: String] = [:], port: Int? = nil) -> String? {
            do {
                _ = try DistributedSettings.resolve(masterAddr: nil, masterPort: port, rank: rank, worldSize: world, timeout: 5, environment: environment)
                return nil
            } catch let DistributedTrainingError.invalidSettings(message) { return message } catch { return "\(error)" }
        }
        #expect(message(0, 2)?.contains("missing master_addr (MASTER_ADDR), master_port (MASTER_PORT)") == true)
        #expect(message(nil, 2)?.contains("missing rank (RANK)") == true)
        #expect(message(2, 2, ["MASTER_ADDR": "a", "MASTER_PORT": "1"])?.contains("outside 0..<2") == true)
        #expect(message(nil, nil, ["RANK": "one"])?.contains("RANK=one is not an integer") == true)
        #expect(message(0, 2, ["MASTER_ADDR": "a"], port: 70000)?.contains("outside 1...65535") == true)
    }
}
