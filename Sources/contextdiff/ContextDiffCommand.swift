import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

@main
struct ContextDiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "contextdiff",
        abstract: "Contextualized diffusion (ContextDiff) for text-to-image and text-to-video on libtorch.",
        version: "0.1.0",
        subcommands: [GenerateCommand.self, AttentionMapsCommand.self, EditVideoCommand.self, TrainCommand.self, TrainSuperResolutionCommand.self, LaunchCommand.self, EvaluateCommand.self, EvaluateSuperResolutionCommand.self, EvaluateVideoCommand.self, EvaluatorCommand.self, ClipCommand.self, ExperimentCommand.self, DoctorCommand.self, CheckDeviceCommand.self, ServeCommand.self, BenchmarkCommand.self, BenchmarkWorkerCommand.self, DatasetCommand.self, ScheduleCommand.self, FuzzCommand.self]
    )

    /// A file-size limit (`ulimit -f`) makes writes fail with EFBIG, reported like a full disk,
    /// instead of killing the process with SIGXFSZ.
    ///
    /// Library errors name settings (`solver_order`, `train_batch`); they leave as the flags
    /// that set them (``CLIMessages/translate(_:)``).
    ///
    /// Every command runs synchronously on the main thread: a rank started by `launch` is tied to
    /// the thread that started it (PR_SET_PDEATHSIG), which must live as long as the launcher.
    static func main() {
        signal(SIGXFSZ, SIG_IGN)
        do {
            var command = try parseAsRoot(nil)
            try command.run()
        } catch {
            exit(withError: CLIMessages.translate(error))
        }
    }
}
