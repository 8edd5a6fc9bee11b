import Foundation
import Testing
import Torch

@testable import Diffusion

/// diffusers 0.27.2's own scheduler tests (tests/schedulers/test_scheduler_ddim.py,
/// test_scheduler_ddim_inverse.py, test_scheduler_ddpm.py) re-created against the values diffusers
/// itself produced (Fixtures/diffusers_schedulers.json). The issue asks for sums and means within
/// 1e-3 relative; the tests also record the elementwise difference and require far tighter bounds.
@Suite("Samplers vs diffusers", .serialized)
struct DiffusersSamplerTests {
    static let fixture = Result { try SamplerFixture.load() }

    func runLoop(_ loop: SamplerFixture.Loop, sampler: any DiffusionSampler, noise: Tensor?) throws -> Tensor {
        var sampler = sampler
        var sample = try SamplerFixture.dummySample()
        #expect(sampler.timesteps == loop.timesteps, "\(loop.name): timesteps")
        var worstStep = 0.0
        for (i, t) in sampler.timesteps.enumerated() {
            let out = try sampler.step(
                modelOutput: SamplerFixture.dummyModel(sample, t), timestep: t, sample: sample, context: nil,
                noise: noise)
            sample = out.sample
            let ref = loop.steps[i]
            worstStep = max(
                worstStep, relativeError(try absSum(out.predictedOriginal), ref.predOriginalAbsSum),
                relativeError(try absSum(out.sample), ref.prevSampleAbsSum))
        }
        #expect(worstStep <= 1e-5, "\(loop.name): per-step abs sums differ by \(worstStep) relative")
        return sample
    }

    func checkFinal(_ loop: SamplerFixture.Loop, _ sample: Tensor) throws {
        let sumError = relativeError(try absSum(sample), loop.absSum)
        let meanError = relativeError(try sample.abs().mean().item(), loop.absMean)
        let (maxAbs, differing) = try compareFloat32(sample, loop.finalSample)
        print(
            "[diffusers \(loop.scheduler) \(loop.name)] abs_sum rel err \(sumError), abs_mean rel err \(meanError), "
                + "max |Δ| \(maxAbs), \(differing)/768 elements differ in any bit")
        #expect(sumError <= 1e-3 && meanError <= 1e-3, "\(loop.name)")
        // Same float32 operations in the same order on the same libtorch: bit for bit.
        #expect(maxAbs <= 1e-6, "\(loop.name): max elementwise difference \(maxAbs)")
        #expect(differing == 0, "\(loop.name): \(differing) elements differ from diffusers in some bit")
        #expect(!(try sample.isNaN().any().item() != 0), "\(loop.name): NaN")
    }

    @Test func ddimFullLoops() throws {
        let fixture = try Self.fixture.get()
        #expect(fixture.ddimLoops.count == 11)
        for loop in fixture.ddimLoops {
            let c = loop.config
            let sampler = try DDIMSampler(
                schedule: c.schedule(), inferenceSteps: loop.numInferenceSteps,
                configuration: .init(
                    predictionType: try c.prediction, x0Processing: c.processing, eta: loop.eta ?? 0,
                    setAlphaToOne: c.setAlphaToOne ?? true, spacing: try c.spacing, stepsOffset: c.stepsOffset ?? 0))
            // ᾱ bookkeeping, bit for bit.
            for (info, ref) in zip(sampler.stepTable, loop.steps) {
                #expect(info.toTimestep == ref.prevT, "\(loop.name) t=\(ref.t)")
                #expect(info.alphaBarFrom == Float(ref.alphaProdT!), "\(loop.name) t=\(ref.t)")
                #expect(info.alphaBarTo == Float(ref.alphaProdTPrev!), "\(loop.name) t=\(ref.t)")
            }
            let noise = loop.varianceNoise == nil ? nil : try SamplerFixture.deterministicNoise()
            try checkFinal(loop, runLoop(loop, sampler: sampler, noise: noise))
        }
    }

    @Test func ddimInverseFullLoops() throws {
        let fixture = try Self.fixture.get()
        #expect(fixture.ddimInverseLoops.count == 8)
        for loop in fixture.ddimInverseLoops {
            let c = loop.config
            let sampler = try DDIMInverseSampler(
                schedule: c.schedule(), inferenceSteps: loop.numInferenceSteps,
                configuration: .init(
                    predictionType: try c.prediction, x0Processing: c.processing,
                    setAlphaToOne: c.setAlphaToOne ?? true, spacing: try c.spacing, stepsOffset: c.stepsOffset ?? 0))
            for (info, ref) in zip(sampler.stepTable, loop.steps) {
                #expect(info.fromTimestep == ref.sourceT, "\(loop.name) t=\(ref.t)")
                #expect(info.alphaBarFrom == Float(ref.alphaProdSource!), "\(loop.name) t=\(ref.t)")
                #expect(info.alphaBarTo == Float(ref.alphaProdTarget!), "\(loop.name) t=\(ref.t)")
            }
            try checkFinal(loop, runLoop(loop, sampler: sampler, noise: nil))
        }
    }

    @Test func ddpmVariances() throws {
        let ddpm = try Self.fixture.get().ddpm
        let schedule = try ddpm.config.schedule()
        #expect(ddpm.variances.count == 16)
        for ref in ddpm.variances {
            let sampler = try DDPMSampler(
                schedule: schedule, inferenceSteps: ref.numInferenceSteps ?? 1000,
                configuration: .init(varianceType: try DDPMVarianceType(parsing: ref.varianceType)))
            #expect(sampler.previousTimestep(ref.t) == ref.prevT)
            #expect(
                sampler.variance(at: ref.t) == Float(ref.variance),
                "\(ref.varianceType) n=\(String(describing: ref.numInferenceSteps)) t=\(ref.t)")
        }
    }

    @Test func ddpmStepsWithZeroNoise() throws {
        let ddpm = try Self.fixture.get().ddpm
        let schedule = try ddpm.config.schedule()
        #expect(ddpm.stepsZeroNoise.count == 9)
        var worst = (prev: 0.0, original: 0.0, sum: 0.0)
        for ref in ddpm.stepsZeroNoise {
            let sampler = try DDPMSampler(
                schedule: schedule, inferenceSteps: 1000,
                configuration: .init(
                    predictionType: try PredictionTarget(parsing: ref.predictionType),
                    x0Processing: ddpm.config.processing,
                    varianceType: try DDPMVarianceType(parsing: ref.varianceType)))
            let sample = try SamplerFixture.dummySample()
            let out = try sampler.step(
                modelOutput: SamplerFixture.dummyModel(sample, ref.t), timestep: ref.t, sample: sample, context: nil,
                noise: sample.zerosLike())
            let prev = try compareFloat32(out.sample, ref.prevSample)
            let original = try compareFloat32(out.predictedOriginal, ref.predOriginalSample)
            let sumError = relativeError(try absSum(out.sample), ref.prevSampleAbsSum)
            worst = (max(worst.prev, prev.maxAbs), max(worst.original, original.maxAbs), max(worst.sum, sumError))
            #expect(
                prev.maxAbs <= 1e-6 && original.maxAbs <= 1e-6, "\(ref.predictionType) t=\(ref.t): \(prev) \(original)")
            #expect(prev.differing == 0 && original.differing == 0, "\(ref.predictionType) t=\(ref.t): not bit-exact")
            #expect(sumError <= 1e-5)
        }
        print(
            "[diffusers DDPMScheduler zero-noise steps] max |Δ prev| \(worst.prev), max |Δ x0| \(worst.original), max abs_sum rel err \(worst.sum)"
        )
    }

    /// diffusers' inverse scheduler returns NaN for x0 prediction with `set_alpha_to_one=True`
    /// (ε = 0/0 at the clean first level); here ε̂ = 0 there, so the loop stays finite.
    @Test func inverseSamplePredictionFromCleanLevelIsFinite() throws {
        let schedule = try NoiseSchedule(NoiseScheduleConfig())
        let sampler = try DDIMInverseSampler(
            schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: .sample, setAlphaToOne: true))
        let out = try sampler.run(from: SamplerFixture.dummySample()) { x, t in try SamplerFixture.dummyModel(x, t) }
        #expect(try out.isFinite().all().item() != 0)
        // The first step maps the clean sample (ᾱ = 1) with x̂0 = model(x, 0) = 0 to exactly 0.
        let first = try sampler.step(
            modelOutput: SamplerFixture.dummyModel(SamplerFixture.dummySample(), 0), timestep: 0,
            sample: SamplerFixture.dummySample(), context: nil, noise: nil)
        #expect(try first.sample.abs().max().item() == 0)
    }
}
