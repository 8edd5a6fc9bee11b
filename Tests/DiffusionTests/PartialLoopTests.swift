import Foundation
import Testing
import TestSupport
import Torch

@testable import Diffusion

/// Loops that start part-way down the schedule (img2img) and loops with a constraint after each
/// step (inpainting).
@Suite("Sampling loops that start part-way or are constrained")
struct PartialLoopTests {
    /// From the contextual marginal (Eq. 3) at step k's level, with the perfect output, every
    /// sampler recovers x0 in n − k steps; DPM-Solver++'s first step there is first order (its
    /// history is empty) and the loop still lands on x0.
    @Test(arguments: [0, 3, 9])
    func aLoopStartedAtStepKRecoversX0(firstStep: Int) throws {
        let schedule = try NoiseSchedule(NoiseScheduleConfig())
        let process = ContextualDiffusion(schedule: schedule)
        let g = Generator(seed: 21)
        let x0 = try Tensor.randn([2, 3, 4, 4], generator: g).clamped(min: -1, max: 1)
        let noise = try Tensor.randn([2, 3, 4, 4], generator: g)
        let r = ContextualSamplerTests.nonZeroContext
        let samplers: [(String, any DiffusionSampler)] = [
            ("DDIM", try DDIMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: .epsilon, x0Processing: .none))),
            ("DDPM", try DDPMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: .epsilon, x0Processing: .none))),
            ("DPM-Solver++", try DPMSolverSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: .epsilon))),
        ]
        for (label, sampler) in samplers {
            let t0 = sampler.timesteps[firstStep]
            let start = try process.marginal(x0: x0, timestep: t0, noise: noise, context: r.context(x0: x0, timestep: t0))
            var visited: [Int] = []
            let out = try sampler.run(
                from: start, context: r, generator: Generator(seed: 2), firstStep: firstStep,
                progress: { p in visited.append(p.completed); return p.total == 10 - firstStep }
            ) { x, t in try process.perfectOutput(.epsilon, x0: x0, xt: x, timestep: t) }
            #expect(visited == Array(1...(10 - firstStep)), "\(label)")
            #expect(try TestSupport.relativeDiff(out, x0) <= 1e-4, "\(label) from step \(firstStep)")
        }
    }

    /// The constraint sees every step's sample with the next timestep (nil after the last), and
    /// what it returns is what the loop continues from.
    @Test func theConstraintSeesEachLevelAndReplacesTheSample() throws {
        let schedule = try NoiseSchedule(NoiseScheduleConfig())
        let sampler = try DDIMSampler(schedule: schedule, inferenceSteps: 5, configuration: .init(predictionType: .epsilon))
        let x = try Tensor.randn([1, 3, 4, 4], generator: Generator(seed: 1))
        var seen: [Int?] = []
        var inputs: [Tensor] = []
        let out = try sampler.run(
            from: x, firstStep: 1,
            constraint: { sample, next in seen.append(next); return try sample.zerosLike() + Double(seen.count) }
        ) { sample, _ in inputs.append(sample); return try sample.zerosLike() }
        #expect(seen == Array(sampler.timesteps.dropFirst(2)).map { Optional($0) } + [nil])
        // Each model call after the first sees the previous constraint's output.
        for (k, input) in inputs.dropFirst().enumerated() { #expect(try input.max().item() == Double(k + 1)) }
        #expect(try out.min().item() == 4 && out.max().item() == 4)
        #expect(throws: SamplingError.invalidStart(firstStep: 5, steps: 5)) {
            try sampler.run(from: x, firstStep: 5) { s, _ in s }
        }
    }
}
