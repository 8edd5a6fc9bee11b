import ContextDiff
import Foundation
import NN
import Testing
import TestSupport
import Torch

/// The measurement behind docs/VIDEO.md's inversion table (opt-in, ~1 min):
/// `CONTEXTDIFF_VIDEO_SWEEP=1 OPENBLAS_NUM_THREADS=1 swift test --filter VideoInversionSweep`.
@Suite("VideoInversionSweep")
struct VideoInversionSweep {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["CONTEXTDIFF_VIDEO_SWEEP"] != nil))
    func reconstructionPSNRByMethodTuningAndInversionEvaluation() throws {
        Torch.numThreads = 1
        let video = try TinyVideo.movingSquare(frames: 4)
        try Torch.withSeed(17) {
            let encoder = try TinyVideo.textEncoder()
            let unet = try UNet(TinyConfigs.unet)
            let adapter = try ContextAdapter(TinyConfigs.adapter)
            let model = try ContextDiffModel(
                unet: unet, adapter: adapter, schedule: NoiseSchedule(NoiseScheduleConfig()),
                textEncoder: TextEncoderSpec(kind: "learned", maxTokens: 32))
            let cond = try TinyVideo.condition(encoder, TinyVideo.caption, repeated: 4)
            for p in model.parameters { try p.requiringGrad() }
            let optimizer = try AdamW(parameters: model.parameters, learningRate: 2e-3, weightDecay: 0)
            let diffusion = ContextualDiffusion(schedule: model.schedule)
            let g = Generator(seed: 9)
            for _ in 0..<400 {
                let t = try diffusion.sampleTimesteps(count: 4, generator: g)
                let loss = try diffusion.trainingLoss(
                    x0: video, timesteps: t, noise: Tensor.randn(video.shape, generator: g),
                    denoiser: { x, tt in try unet(x, timesteps: tt, condition: cond) },
                    context: { x, tt in try adapter(x, timesteps: tt, condition: cond) })
                try optimizer.zeroGrad()
                try loss.backward()
                try clipGradNorm(model.parameters, maxNorm: 1)
                try optimizer.step()
            }
            for p in model.parameters { try p.requiringGrad(false) }
            print("| method | tuning steps | inversion at t (diffusers) | inversion at s (default) |")
            for method in VideoEditMethod.allCases {
                for tune in [0, 20] {
                    var row: [Double] = []
                    for evaluation in [InversionEvaluation.target, .source] {
                        let pipeline = try VideoEditPipeline(model: VideoDiffusionModel(inflating: model), textEncoder: encoder)
                        var o = VideoEditOptions()
                        o.method = method
                        o.tuneSteps = tune
                        o.tuneLearningRate = 1e-3
                        o.guidance = 1
                        o.inversionEvaluation = evaluation
                        let r = try pipeline.edit(video: video, sourcePrompt: TinyVideo.caption, targetPrompt: TinyVideo.caption, options: o)
                        row.append(try psnr(r.edited, video))
                    }
                    print(String(format: "| %@ | %d | %.2f dB | %.2f dB |", method.rawValue, tune, row[0], row[1]))
                }
            }
        }
    }
}
