import ArgumentParser
import ContextDiff
import Foundation
import NN
import Studio
import TextEncoders
import Torch
import Workflows

/// `contextdiff serve`: ContextDiff Studio, the local web app.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "ContextDiff Studio: a local web app (and JSON API) for generating with a model.",
        discussion: "Open the printed address in a browser. The API is described at /api/openapi.yaml; docs/STUDIO.md has curl examples."
    )

    @Option(help: "Model folder (default: the shipped models/default).") var model: String?
    @Option(help: "Address to bind; anything but loopback exposes the studio to the network.") var host = "127.0.0.1"
    @Option(help: "Port (0: any free port; the address is printed).") var port = 8080
    @Option(name: .customLong("data-dir"), help: "Folder of the run history (SQLite) and its images.") var dataDir = "studio-data"
    @Option(help: "Jobs that may wait or run at once; more are answered 429.") var queue = 8
    @Option(help: "Most images per request.") var maxImages = 8
    @Option(help: "Most denoising steps per request.") var maxSteps = 200
    @Option(help: "libtorch intra-op threads.") var threads = 2
    @OptionGroup(title: "Super-resolution (the cascade's second stage)") var superResolution: SuperResolutionFlags

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
        guard (1...1024).contains(queue) else { throw ValidationError("--queue must be in 1...1024") }
        guard (1...64).contains(maxImages) else { throw ValidationError("--max-images must be in 1...64") }
        guard (1...1000).contains(maxSteps) else { throw ValidationError("--max-steps must be in 1...1000") }
        guard threads > 0 else { throw ValidationError("--threads must be positive") }
    }

    func run() throws {
        useThreads(threads)
        Torch.keepFreedTensorMemory()
        guard let modelURL = model.map({ URL(fileURLWithPath: $0) }) ?? defaultModelDirectory() else {
            throw ValidationError("no model given and no shipped model found at models/default; pass --model DIR")
        }
        var limits = StudioLimits()
        limits.queueCapacity = queue
        limits.maxImages = maxImages
        limits.maxSteps = maxSteps
        // Video edits are scored when the evaluation models are there (models/clip, models/evaluator).
        let scorer = EvaluationModels.exists(EvaluationModels.clipURL())
            ? try EvaluationModels.loadScorer(textEncoder: MiniLMTextEncoder()).0 : nil
        let evaluator = EvaluationModels.exists(EvaluationModels.evaluatorURL()) ? try EvaluationModels.loadEvaluator().0 : nil
        let baseSize = try ModelFolder.config(UNetConfig.self, in: modelURL.appendingPathComponent("unet")).sampleSize
        let stage = try superResolution.load(device: .cpu, baseSize: baseSize)
        let backend = try PipelineBackend(
            directory: modelURL, scorer: scorer, evaluator: evaluator, superResolution: stage,
            superResolutionOptions: superResolution.options(seed: 0)
        ) { try MiniLMTextEncoder() }
        note(stage == nil ? "images: \(backend.sampleSize)×\(backend.sampleSize) (the base model)" : "images: \(backend.outputSize)×\(backend.outputSize) (the base model, then the super-resolution stage)")
        let history = try RunHistory(folder: URL(fileURLWithPath: dataDir))
        let server = StudioServer(queue: JobQueue(backend: backend, history: history, limits: limits))
        if !StudioServer.isLoopback(host) {
            note("warning: --host \(host) is not loopback: anyone who can reach this machine can use the studio (there is no authentication)")
        }
        let (host, dataDir) = (host, dataDir)
        let done = DispatchSemaphore(value: 0)
        let failure = LockedError()
        Task {
            do {
                try await server.run(host: host, port: port) { bound in
                    let shown = host.contains(":") ? "[\(host)]" : host
                    // Written unbuffered, so that a script waiting for the address sees it at once.
                    FileHandle.standardOutput.write(Data(
                        "ContextDiff Studio on http://\(shown):\(bound)/  (model \(backend.modelName), history in \(dataDir); Ctrl-C stops)\n".utf8))
                }
            } catch {
                failure.error = error
            }
            done.signal()
        }
        done.wait()
        if let error = failure.error { throw CLIError("the studio stopped: \(error)") }
    }
}

private final class LockedError: @unchecked Sendable {
    private let lock = NSLock()
    private var value: (any Error)?
    var error: (any Error)? {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}
