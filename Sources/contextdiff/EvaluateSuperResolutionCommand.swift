import ArgumentParser
import ContextDiff
import Datasets
import Evaluation
import Foundation
import NN
import Torch
import Workflows

/// `contextdiff evaluate-sr`: the super-resolution stage alone, on real pairs.
struct EvaluateSuperResolutionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate-sr",
        abstract: "Measure the super-resolution stage on real pairs: PSNR/SSIM against bicubic and nearest upsampling, and alignment kept.",
        discussion: """
            For --num-samples benchmark scenes of each split, the real low-resolution render is \
            upsampled by the stage, by bicubic and by nearest-neighbour interpolation, and each is \
            compared with the real high-resolution render of the same scene (PSNR in dB and SSIM, \
            11×11 Gaussian window, on 8-bit images). The attribute evaluator reads the real \
            low-resolution render and the stage's output reduced back to that size: a stage that \
            keeps the content keeps the accuracy.
            """
    )

    @Option(help: "Super-resolution model folder (default: models/superres).") var srModel: String?
    @Option(help: "Benchmark scenes: validation, heldout or both.") var split: PromptSplits = .both
    @Option(name: .customLong("num-samples"), help: "Pairs per split.") var numSamples = 64
    @Option(help: "Sampler (default dpmpp).") var srSampler = SuperResolutionOptions().sampler
    @Option(help: "Denoising steps.") var srSteps = SuperResolutionOptions().steps
    @Flag(help: "Clip x̂0 to [-1, 1] at every step (diffusers' clip_sample).") var srClip = false
    @Option(help: "Noise level of the low-resolution image (default: the stage's).") var srNoiseLevel: Int?
    @Option(help: "Guidance weight on the text (1: none).") var srGuidance = SuperResolutionOptions().guidance
    @Option(help: "Seed of the stage's noise.") var seed: UInt64 = 1234
    @Option(help: "Pairs per batch.") var batch = 16
    @Option(help: "Attribute evaluator folder (default: models/evaluator or $CONTEXTDIFF_EVALUATOR).") var evaluator: String?
    @Flag(help: "Print the result as JSON.") var json = false
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        guard numSamples > 0, batch > 0, srSteps > 0 else { throw ValidationError("--num-samples, --batch and --sr-steps must be positive") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        useThreads(threads)
        Torch.keepFreedTensorMemory()
        guard let folder = srModel.map({ URL(fileURLWithPath: $0) }) ?? ModelLocator().locate(.superres) else {
            throw ValidationError("no super-resolution stage at models/superres; pass --sr-model DIR")
        }
        let model = try SuperResolutionModel.load(from: folder)
        var options = SuperResolutionOptions()
        options.sampler = srSampler
        options.steps = srSteps
        options.clipSample = srClip
        options.guidance = srGuidance
        options.noiseLevel = srNoiseLevel
        options.seed = seed
        try options.validate(trainTimesteps: model.schedule.config.trainTimesteps)
        let textEncoder = try MiniLMTextEncoder()
        let evaluation = SuperResolutionEvaluation(
            stage: SuperResolutionPipeline(model: model),
            encoder: TextConditionEncoder(textEncoder: textEncoder, maxTokens: model.index.textEncoder.maxTokens),
            evaluator: try loadEvaluator(evaluator).0)
        let bar = ProgressBar(total: numSamples * split.splits.count, label: "evaluate-sr")
        let report = try evaluation.run(
            splits: split.splits, count: numSamples, batch: batch, options: options, modelName: folder.standardizedFileURL.lastPathComponent
        ) { p in
            bar.update(p.completed)
            return true
        }
        if json { return try printJSON(report) }
        for s in report.splits {
            print("\(s.split): \(s.pairs) pairs, ×\(report.factor), \(report.options.sampler.rawValue) \(report.options.steps) steps\(report.options.clipSample ? " (clipped)" : ""), noise level \(report.noiseLevel)")
            for m in s.methods {
                print(String(format: "  %-8@ PSNR %.2f ± %.2f dB   SSIM %.4f ± %.4f", m.name as NSString, m.psnr.mean, m.psnr.std, m.ssim.mean, m.ssim.std)
                      + (m.identical > 0 ? "   (\(m.identical) identical to the render, counted as \(Int(SuperResolutionQualityReport.identicalPSNR)) dB)" : ""))
            }
            print(String(format: "  stage − bicubic (paired): PSNR %+.2f ± %.2f dB, SSIM %+.4f ± %.4f",
                         s.psnrGainOverBicubic.mean, s.psnrGainOverBicubic.std, s.ssimGainOverBicubic.mean, s.ssimGainOverBicubic.std))
            print(String(format: "  evaluator accuracy: low resolution %.1f%%, stage reduced back %.1f%%",
                         100 * s.alignmentLowResolution, 100 * s.alignmentUpsampledReduced))
        }
    }
}
