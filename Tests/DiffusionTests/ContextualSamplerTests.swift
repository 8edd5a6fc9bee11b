import Foundation
import Testing
import TestSupport
import Torch

@testable import Diffusion

/// ContextDiff's samplers (paper Eq. 9, Eq. 13, contextual inversion): a zero `r_φ` changes no
/// bit, a non-zero one is used consistently (inversion + sampling reconstructs), and the
/// samplers agree with the process's own Eq. 5.
@Suite("Contextual samplers")
struct ContextualSamplerTests {
    static let schedule = Result { try NoiseSchedule(NoiseScheduleConfig()) }

    /// A deterministic stand-in for a network: smooth in x, depends on t, and produces exact
    /// zeros where x is zero.
    static func model(_ x: Tensor, _ t: Int) throws -> Tensor {
        try x.tanh() * (0.5 + Double(t) / 2000) + x * 0.25
    }

    /// A fixed non-zero `r_φ(x0, t)` that depends on x0 and t.
    static var nonZeroContext: ClosureContext {
        ClosureContext { x0, t in try (x0 * 3).sin() * (1 + Double(t) / 1000) + 0.5 }
    }

    /// A "zero" context that returns −0 everywhere (as a zero-initialised layer may).
    static var negativeZeroContext: ClosureContext { ClosureContext { x0, _ in try x0.zerosLike() * -1.0 } }

    /// A random start with exact +0 and −0 entries, to catch sign-of-zero changes.
    static func start(seed: UInt64) throws -> Tensor {
        let g = Generator(seed: seed)
        let x = try Tensor.randn([2, 3, 6, 6], generator: g)
        let keep = try Tensor.rand([2, 3, 6, 6], generator: g).gt(0.1).to(.float32)
        return try x * keep
    }

    static let processings: [X0Processing] = [.none, .clip(range: 1), .dynamicThreshold(ratio: 0.9, maxValue: 1.5)]

    func run(_ sampler: any DiffusionSampler, context: (any ContextBias)?, seed: UInt64) throws -> Tensor {
        try sampler.run(
            from: Self.start(seed: seed), context: context, generator: Generator(seed: seed + 1),
            denoiser: Self.model)
    }

    func expectZeroContextIsIdentity(_ sampler: any DiffusionSampler, _ label: String) throws {
        let plain = try run(sampler, context: nil, seed: 7)
        #expect(try plain.isFinite().all().item() != 0, "\(label)")
        for (name, context) in [
            ("ZeroContext", ZeroContext() as any ContextBias), ("-0 context", Self.negativeZeroContext),
        ] {
            let contextual = try run(sampler, context: context, seed: 7)
            #expect(try bitwiseEqual(plain, contextual), "\(label) with \(name) differs from the plain sampler")
        }
        let biased = try run(sampler, context: Self.nonZeroContext, seed: 7)
        #expect(try TestSupport.relativeDiff(plain, biased) > 1e-4, "\(label): the bias had no effect")
    }

    @Test(arguments: PredictionTarget.allCases)
    func ddpmZeroContextIsBitwisePlain(prediction: PredictionTarget) throws {
        let schedule = try Self.schedule.get()
        for variance in DDPMVarianceType.allCases {
            for processing in Self.processings {
                let sampler = try DDPMSampler(
                    schedule: schedule, inferenceSteps: 20,
                    configuration: .init(predictionType: prediction, x0Processing: processing, varianceType: variance))
                try expectZeroContextIsIdentity(sampler, "DDPM \(prediction) \(variance) \(processing)")
            }
        }
    }

    @Test(arguments: PredictionTarget.allCases)
    func ddimZeroContextIsBitwisePlain(prediction: PredictionTarget) throws {
        let schedule = try Self.schedule.get()
        for eta in [0.0, 0.5, 1.0] {
            for alphaToOne in [true, false] {
                for processing in Self.processings {
                    let sampler = try DDIMSampler(
                        schedule: schedule, inferenceSteps: 10,
                        configuration: .init(
                            predictionType: prediction, x0Processing: processing, eta: eta, setAlphaToOne: alphaToOne))
                    try expectZeroContextIsIdentity(
                        sampler, "DDIM \(prediction) eta \(eta) one \(alphaToOne) \(processing)")
                }
            }
        }
    }

    @Test(arguments: PredictionTarget.allCases)
    func inversionZeroContextIsBitwisePlain(prediction: PredictionTarget) throws {
        let schedule = try Self.schedule.get()
        for alphaToOne in [true, false] {
            for spacing in [TimestepSpacing.leading, .trailing] {
                let sampler = try DDIMInverseSampler(
                    schedule: schedule, inferenceSteps: 10,
                    configuration: .init(predictionType: prediction, setAlphaToOne: alphaToOne, spacing: spacing))
                try expectZeroContextIsIdentity(sampler, "inverse \(prediction) one \(alphaToOne) \(spacing)")
            }
        }
    }

    /// Contextual DDIM inversion then contextual DDIM sampling (η = 0) with an oracle x0-predictor
    /// returns the starting latent, and each inverted latent is the Eq. 3 marginal with the same ε.
    @Test func inversionThenSamplingReconstructs() throws {
        let schedule = try Self.schedule.get()
        let process = ContextualDiffusion(schedule: schedule)
        let g = Generator(seed: 11)
        let x0 = try Tensor.rand([2, 3, 8, 8], generator: g) * 1.8 - 0.9
        let eps = try Tensor.randn([2, 3, 8, 8], generator: g)
        let r = { (t: Int) throws -> Tensor in try Self.nonZeroContext.context(x0: x0, timestep: t) }
        // Start at timestep 0's level (set_alpha_to_one = false), where ε is well defined.
        let start = try process.marginal(x0: x0, timestep: 0, noise: eps, context: r(0))
        let oracle: Denoiser = { _, _ in x0 }

        let inverse = try DDIMInverseSampler(
            schedule: schedule, inferenceSteps: 10,
            configuration: .init(predictionType: .sample, setAlphaToOne: false))
        let forward = try DDIMSampler(
            schedule: schedule, inferenceSteps: 10,
            configuration: .init(predictionType: .sample, eta: 0, setAlphaToOne: false))

        func inversionDistanceToMarginals(context: (any ContextBias)?) throws -> (latent: Tensor, distance: Double) {
            var iterator = try SamplingIterator(sampler: inverse, initialSample: start, context: context, denoiser: oracle)
            var distance = 0.0
            while let step = try iterator.next() {
                let expected = try process.marginal(
                    x0: x0, timestep: step.timestep, noise: eps, context: r(step.timestep))
                distance = max(distance, try TestSupport.relativeDiff(step.sample, expected))
            }
            return (iterator.sample, distance)
        }
        let (latent, manifoldError) = try inversionDistanceToMarginals(context: Self.nonZeroContext)
        let reconstructed = try forward.run(from: latent, context: Self.nonZeroContext, denoiser: oracle)
        let error = try TestSupport.relativeDiff(reconstructed, start)
        print(
            "[contextual inversion] reconstruction max |Δ| \(error), max distance to the Eq. 3 marginal \(manifoldError)"
        )
        #expect(error <= 1e-4)
        #expect(manifoldError <= 1e-4)

        // The bias is really used: plain inversion leaves the contextualized marginals.
        #expect(try inversionDistanceToMarginals(context: nil).distance > 0.05)
    }

    /// Where DDIM inversion evaluates the model is one option of the sampler, which every loop
    /// (the sampling iterator here, the video pipeline) asks: at t, or at s and not at all at the
    /// clean level.
    @Test(arguments: InversionEvaluation.allCases)
    func inversionEvaluationIsOneOptionOfTheSampler(evaluation: InversionEvaluation) throws {
        let schedule = try Self.schedule.get()
        let inverse = try DDIMInverseSampler(
            schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: .sample, evaluation: evaluation))
        let start = try Self.start(seed: 4)
        var calls: [Int] = []
        let model: Denoiser = { x, t in
            calls.append(t)
            return try x * (1 - Double(t) / 2000)
        }
        let inverted = try inverse.run(from: start, context: Self.nonZeroContext, denoiser: model)
        let sources = inverse.timesteps.map { $0 - 100 }
        #expect(calls == (evaluation == .target ? inverse.timesteps : sources.filter { $0 >= 0 }))
        // The same steps by hand.
        var x = start
        for (t, s) in zip(inverse.timesteps, sources) {
            let at = evaluation == .target ? t : s
            let output = at >= 0 ? try x * (1 - Double(at) / 2000) : x
            x = try inverse.step(modelOutput: output, timestep: t, sample: x, context: Self.nonZeroContext, noise: nil).sample
        }
        #expect(try TestSupport.maxAbsDiff(inverted, x) == 0)
    }

    /// ε, v and x0 prediction agree with Eq. 3 when r ≠ 0: the perfect output minimises the
    /// training loss (to rounding), and a sampler fed the perfect output recovers x0 exactly at
    /// every step — DDIM at η = 0 and 0 < η < 1, and DDPM. Trained on pure noise, an ε model's x̂0
    /// would be off by (1 − √ᾱ)·r (≈ 1.4 at t = 700 here).
    @Test(arguments: PredictionTarget.allCases)
    func perfectPredictorRecoversX0WithABias(prediction: PredictionTarget) throws {
        let schedule = try Self.schedule.get()
        let process = ContextualDiffusion(schedule: schedule)
        let g = Generator(seed: 11)
        let x0 = try Tensor.randn([2, 3, 4, 4], generator: g), noise = try Tensor.randn([2, 3, 4, 4], generator: g)
        let r = Self.nonZeroContext
        // 1. The training target is the perfect output.
        for t in [10, 300, 700, 990] {
            var seen: Tensor?
            let loss = try process.trainingLoss(
                x0: x0, timesteps: [t, t], noise: noise, prediction: prediction,
                denoiser: { xt, _ in seen = xt; return try process.perfectOutput(prediction, x0: x0, xt: xt, timestep: t) },
                context: { x, ts in try r.context(x0: x, timestep: Int(try ts.select(dim: 0, 0).item())) })
            let scale = try process.perfectOutput(prediction, x0: x0, xt: #require(seen), timestep: t).square().mean().item()
            let value = try loss.item()
            #expect(value <= 1e-10 * max(1, scale), "\(prediction) t=\(t): loss \(value)")
            if prediction == .epsilon {
                // Pure noise is not the target when the bias is non-zero.
                let wrong = try process.trainingLoss(
                    x0: x0, timesteps: [t, t], noise: noise, prediction: .epsilon, denoiser: { _, _ in noise },
                    context: { x, ts in try r.context(x0: x, timestep: Int(try ts.select(dim: 0, 0).item())) })
                #expect(try wrong.item() > 1e-6, "t=\(t)")
            }
        }
        // 2. Samplers read the perfect output back as x0, at every step.
        let samplers: [(String, any DiffusionSampler)] = [
            ("DDIM η=0", try DDIMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: prediction, x0Processing: .none, eta: 0))),
            ("DDIM η=0.5", try DDIMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: prediction, x0Processing: .none, eta: 0.5))),
            ("DDPM", try DDPMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: prediction, x0Processing: .none))),
        ]
        for (label, sampler) in samplers {
            let first = sampler.timesteps[0]
            let start = try process.marginal(x0: x0, timestep: first, noise: noise, context: r.context(x0: x0, timestep: first))
            var iterator = try SamplingIterator(
                sampler: sampler, initialSample: start, context: r, generator: Generator(seed: 12),
                denoiser: { x, t in try process.perfectOutput(prediction, x0: x0, xt: x, timestep: t) })
            while let step = try iterator.next() {
                #expect(try TestSupport.relativeDiff(step.predictedOriginal, x0) <= 1e-4, "\(label) \(prediction) t=\(step.timestep)")
            }
            #expect(try TestSupport.relativeDiff(iterator.sample, x0) <= 1e-4, "\(label) \(prediction): final sample")
        }
    }

    /// The contextual DDPM step's mean is the process's Eq. 5 posterior mean at x̂0.
    @Test func ddpmStepIsTheEquation5Posterior() throws {
        let schedule = try Self.schedule.get()
        let process = ContextualDiffusion(schedule: schedule)
        let sampler = try DDPMSampler(
            schedule: schedule, inferenceSteps: 50, configuration: .init(predictionType: .sample, x0Processing: .none))
        let g = Generator(seed: 3)
        let x0 = try Tensor.randn([2, 3, 4, 4], generator: g)
        let xt = try Tensor.randn([2, 3, 4, 4], generator: g)
        for t in [980, 500, 20, 0] {
            let prev = sampler.previousTimestep(t)
            let out = try sampler.step(
                modelOutput: x0, timestep: t, sample: xt, context: Self.nonZeroContext, noise: xt.zerosLike())
            let rs = prev >= 0 ? try Self.nonZeroContext.context(x0: x0, timestep: prev) : nil
            let expected = try process.posterior(
                x0: x0, xt: xt, timestep: t, previous: max(prev, -1),
                contextT: Self.nonZeroContext.context(x0: x0, timestep: t), contextS: rs)
            // The sampler keeps diffusers' float32 scalar arithmetic, whose 1 − ᾱ_t/ᾱ_prev loses
            // digits at small t; the process computes in Double.
            let scale = try expected.mean.abs().max().item()
            #expect(try TestSupport.relativeDiff(out.sample, expected.mean) <= 1e-4 * scale, "t=\(t)")
            if t > 0 {
                #expect(abs(Double(sampler.variance(at: t)) - expected.variance) <= 1e-4 * expected.variance, "t=\(t)")
            }
        }
    }

    /// Contextual DDIM with η = 1 has DDPM's posterior mean and variance (DDIM paper §4.1), so one
    /// step with the same noise agrees with the contextual DDPM step.
    @Test func contextualDDIMWithEtaOneIsContextualDDPM() throws {
        let schedule = try Self.schedule.get()
        let ddim = try DDIMSampler(
            schedule: schedule, inferenceSteps: 50,
            configuration: .init(predictionType: .sample, x0Processing: .none, eta: 1))
        let ddpm = try DDPMSampler(
            schedule: schedule, inferenceSteps: 50, configuration: .init(predictionType: .sample, x0Processing: .none))
        let g = Generator(seed: 5)
        let x0 = try Tensor.randn([2, 3, 4, 4], generator: g)
        let xt = try Tensor.randn([2, 3, 4, 4], generator: g)
        let z = try Tensor.randn([2, 3, 4, 4], generator: g)
        for t in [980, 500, 20] {
            let a = try ddim.step(modelOutput: x0, timestep: t, sample: xt, context: Self.nonZeroContext, noise: z)
            let b = try ddpm.step(modelOutput: x0, timestep: t, sample: xt, context: Self.nonZeroContext, noise: z)
            #expect(try TestSupport.relativeDiff(a.sample, b.sample) <= 1e-5, "t=\(t)")
        }
    }

    @Test func contextPairIsRequestedOncePerStep() throws {
        final class Recorder: ContextBias {
            var singles: [Int] = []
            var pairs: [(Int, Int)] = []
            func context(x0: Tensor, timestep: Int) throws -> Tensor {
                singles.append(timestep)
                return try x0.zerosLike()
            }
            func contexts(x0: Tensor, timesteps: (Int, Int)) throws -> (Tensor, Tensor) {
                pairs.append(timesteps)
                return (try x0.zerosLike(), try x0.zerosLike())
            }
        }
        let schedule = try Self.schedule.get()
        let recorder = Recorder()
        let sampler = try DDIMSampler(
            schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: .sample))
        _ = try sampler.run(from: Self.start(seed: 1), context: recorder, denoiser: Self.model)
        // 900→800 … 100→0 batch two levels; 0→clean needs only the current one (b_0 = 0).
        #expect(recorder.pairs.map(\.0) == [900, 800, 700, 600, 500, 400, 300, 200, 100])
        #expect(recorder.pairs.map(\.1) == [800, 700, 600, 500, 400, 300, 200, 100, 0])
        #expect(recorder.singles == [0])

        // k_T = 0: the step from T − 1 never asks for r at T − 1.
        let trailing = try DDIMSampler(
            schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: .sample, spacing: .trailing))
        let recorder2 = Recorder()
        _ = try trailing.step(
            modelOutput: Self.start(seed: 2), timestep: 999, sample: Self.start(seed: 2), context: recorder2, noise: nil
        )
        #expect(recorder2.pairs.isEmpty && recorder2.singles == [899])
    }
}

