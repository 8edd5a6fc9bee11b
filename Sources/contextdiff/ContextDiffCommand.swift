import ArgumentParser
import Foundation

@main
struct ContextDiffCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "contextdiff",
        abstract: "Contextualized diffusion (ContextDiff) for text-to-image and text-to-video on libtorch.",
        version: "0.1.0",
        subcommands: [GenerateCommand.self, EditVideoCommand.self, TrainCommand.self, LaunchCommand.self, EvaluateCommand.self, EvaluateVideoCommand.self, EvaluatorCommand.self, ClipCommand.self, ExperimentCommand.self, DoctorCommand.self, BenchmarkCommand.self, BenchmarkWorkerCommand.self, DatasetCommand.self, ScheduleCommand.self, FuzzCommand.self]
    )

    /// A file-size limit (`ulimit -f`) makes writes fail with EFBIG, reported like a full disk,
    /// instead of killing the process with SIGXFSZ.
    static func main() async {
        signal(SIGXFSZ, SIG_IGN)
        await Self.main(nil)
    }
}
