import Foundation
import Testing
import Torch

@testable import Diffusion

/// DPM-Solver++ against diffusers 0.27.2's `DPMSolverMultistepScheduler` (Fixtures/diffusers_dpmsolver.json,
/// scripts/reference/make_dpmsolver_references.py), and its contextualization (docs/SOLVERS.md).
@Suite("DPM-Solver++", .serialized)
struct DPMSolverTests {
    struct TimestepSet: Decodable {
        let spacing: String
        let useKarrasSigmas: Bool
        let stepsOffset: Int?
        let numInferenceSteps: Int
        let timesteps: [Int]
        let sigmas: [Double]?

        enum CodingKeys: String, CodingKey {
            case spacing, timesteps, sigmas
            case useKarrasSigmas = "use_karras_sigmas"
            case stepsOffset = "steps_offset"
            case numInferenceSteps = "num_inference_steps"
        }
    }

    struct Config: Decodable {
        let betaSchedule: String
        let betaStart: Double
        let betaEnd: Double
        let solverOrder: Int?
        let solverType: String?
        let algorithmType: String?
        let predictionType: String?
        let useKarrasSigmas: Bool?
        let timestepSpacing: String?
        let stepsOffset: Int?
        let finalSigmasType: String?
        let lowerOrderFinal: Bool?
        let thresholding: Bool?
        let sampleMaxValue: Double?

        enum CodingKeys: String, CodingKey {
            case thresholding
            case betaSchedule = "beta_schedule", betaStart = "beta_start", betaEnd = "beta_end"
            case solverOrder = "solver_order", solverType = "solver_type", algorithmType = "algorithm_type"
            case predictionType = "prediction_type", useKarrasSigmas = "use_karras_sigmas"
            case timestepSpacing = "timestep_spacing", stepsOffset = "steps_offset"
            case finalSigmasType = "final_sigmas_type", lowerOrderFinal = "lower_order_final"
            case sampleMaxValue = "sample_max_value"
        }

        func sampler(steps: Int) throws -> DPMSolverSampler {
            let schedule = try NoiseSchedule(
                NoiseScheduleConfig(
                    trainTimesteps: 1000, betaSchedule: BetaSchedule(parsing: betaSchedule), betaStart: betaStart,
                    betaEnd: betaEnd))
            return try DPMSolverSampler(
                schedule: schedule, inferenceSteps: steps,
                configuration: .init(
                    predictionType: try predictionType.map { try PredictionTarget(parsing: $0) } ?? .epsilon,
                    x0Processing: thresholding == true
                        ? .dynamicThreshold(ratio: 0.995, maxValue: sampleMaxValue ?? 1) : .none,
                    solverOrder: solverOrder ?? 2, solverType: try solverType.map { try DPMSolverType(parsing: $0) } ?? .midpoint,
                    stochastic: algorithmType == "sde-dpmsolver++", lowerOrderFinal: lowerOrderFinal ?? true,
                    karrasSigmas: useKarrasSigmas ?? false,
                    finalSigmas: try finalSigmasType.map { try DPMFinalSigmas(parsing: $0) } ?? .zero,
                    spacing: try timestepSpacing.map { try TimestepSpacing(parsing: $0) } ?? .linspace,
                    stepsOffset: stepsOffset ?? 0))
        }
    }

    struct LoopStep: Decodable {
        let t: Int
        let prevSampleAbsSum: Double
        enum CodingKeys: String, CodingKey {
            case t
            case prevSampleAbsSum = "prev_sample_abs_sum"
        }
    }

    struct Loop: Decodable {
        let name: String
        let config: Config
        let numInferenceSteps: Int
        let noise: Bool
        let timesteps: [Int]
        let sigmas: [Double]
        let steps: [LoopStep]
        let finalSample: [Double]

        enum CodingKeys: String, CodingKey {
            case name, config, noise, timesteps, sigmas, steps
            case numInferenceSteps = "num_inference_steps"
            case finalSample = "final_sample"
        }
    }

    struct File: Decodable {
        let timesteps: [TimestepSet]
        let loops: [Loop]
    }

    static let fixture = Result {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/diffusers_dpmsolver.json")
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: url))
    }

    static let schedule = Result { try NoiseSchedule(NoiseScheduleConfig()) }

    func maxRelative(_ sigmas: [Float], _ expected: [Double]) -> Double {
        let scale = expected.map(Swift.abs).max() ?? 1
        return zip(sigmas, expected).map { Swift.abs(Double($0) - $1) }.max().map { $0 / scale } ?? 0
    }

    @Test func timestepsAndSigmasMatchDiffusers() throws {
        let fixture = try Self.fixture.get()
        let schedule = try Self.schedule.get()
        #expect(fixture.timesteps.count >= 60)
        for set in fixture.timesteps {
            let label = "\(set.spacing) karras=\(set.useKarrasSigmas) n=\(set.numInferenceSteps)"
            let sampler = try DPMSolverSampler(
                schedule: schedule, inferenceSteps: set.numInferenceSteps,
                configuration: .init(
                    karrasSigmas: set.useKarrasSigmas, spacing: try TimestepSpacing(parsing: set.spacing),
                    stepsOffset: set.stepsOffset ?? 0))
            #expect(sampler.timesteps == set.timesteps, "\(label)")
            if let sigmas = set.sigmas {
                #expect(sampler.sigmas.count == sigmas.count, "\(label)")
                // Non-Karras sigmas are float32 values of the schedule; Karras ones a float64 power
                // rounded once (pow may differ in the last bit between libms).
                #expect(maxRelative(sampler.sigmas, sigmas) <= (set.useKarrasSigmas ? 1e-6 : 0), "\(label)")
            }
        }
    }

    @Test func fullLoopsMatchDiffusers() throws {
        let fixture = try Self.fixture.get()
        #expect(fixture.loops.count == 19)
        for loop in fixture.loops {
            var sampler = try loop.config.sampler(steps: loop.numInferenceSteps)
            #expect(sampler.timesteps == loop.timesteps, "\(loop.name)")
            #expect(sampler.addsNoise(at: loop.timesteps[0]) == loop.noise, "\(loop.name)")
            var sample = try SamplerFixture.dummySample()
            let noise = loop.noise ? try SamplerFixture.deterministicNoise() : nil
            var worstStep = 0.0
            for (i, t) in sampler.timesteps.enumerated() {
                sample = try sampler.step(
                    modelOutput: SamplerFixture.dummyModel(sample, t), timestep: t, sample: sample, context: nil,
                    noise: noise
                ).sample
                worstStep = max(worstStep, relativeError(try absSum(sample), loop.steps[i].prevSampleAbsSum))
            }
            let mine = try sample.contiguous().scalars(as: Float.self)
            let scale = loop.finalSample.map(Swift.abs).max() ?? 1
            let maxDiff = zip(mine, loop.finalSample).map { Swift.abs(Double($0) - $1) }.max() ?? .infinity
            print("[diffusers DPMSolverMultistep \(loop.name)] max |Δ| / max|ref| \(maxDiff / scale), worst step abs-sum rel err \(worstStep)")
            // The bound: within 1e-5 (relative to the sample's scale; log/exp of the
            // float32 λ may round differently in libm and in torch).
            #expect(maxDiff / scale <= 1e-5, "\(loop.name): final sample differs by \(maxDiff / scale) relative")
            #expect(worstStep <= 1e-5, "\(loop.name): per-step abs sums differ by \(worstStep)")
        }
    }

    @Test func stepOrdersFollowDiffusersRules() throws {
        let schedule = try Self.schedule.get()
        let ten = try DPMSolverSampler(schedule: schedule, inferenceSteps: 10)
        #expect(ten.stepTable.map(\.order) == [1, 2, 2, 2, 2, 2, 2, 2, 2, 1])
        let third = try DPMSolverSampler(
            schedule: schedule, inferenceSteps: 20, configuration: .init(solverOrder: 3, finalSigmas: .sigmaMin))
        #expect(third.stepTable.map(\.order) == [1, 2] + Array(repeating: 3, count: 18))
        #expect(ten.stepTable.last?.alphaBarTo == 1 && ten.stepTable.last?.kTo == 0 && ten.stepTable.first?.kFrom == 0)
        #expect(throws: SamplingError.self) {
            try DPMSolverSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(solverOrder: 4))
        }
        #expect(throws: SamplingError.self) {
            try DPMSolverSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(solverOrder: 3, stochastic: true))
        }
    }

    @Test func historyIsPerLoopAndStepsComeInOrder() throws {
        let schedule = try Self.schedule.get()
        let sampler = try DPMSolverSampler(schedule: schedule, inferenceSteps: 8)
        let model: Denoiser = { x, t in try SamplerFixture.dummyModel(x, t) }
        let start = try SamplerFixture.dummySample()
        let a = try sampler.run(from: start, denoiser: model)
        let b = try sampler.run(from: start, denoiser: model)
        #expect(try bitwiseEqual(a, b))
        var manual = sampler
        let x = try SamplerFixture.dummySample()
        #expect(throws: SamplingError.unexpectedTimestep(sampler.timesteps[1], expected: sampler.timesteps[0])) {
            try manual.step(modelOutput: x, timestep: sampler.timesteps[1], sample: x, context: nil, noise: nil)
        }
        for t in sampler.timesteps { _ = try manual.step(modelOutput: x, timestep: t, sample: x, context: nil, noise: nil) }
        #expect(throws: SamplingError.unexpectedTimestep(sampler.timesteps[0], expected: nil)) {
            try manual.step(modelOutput: x, timestep: sampler.timesteps[0], sample: x, context: nil, noise: nil)
        }
        manual.reset()
        _ = try manual.step(modelOutput: x, timestep: sampler.timesteps[0], sample: x, context: nil, noise: nil)
    }

    @Test func registeredByNameWithOptions() throws {
        #expect(try SamplerKind(parsing: "dpmpp") == .dpmpp)
        #expect(try SamplerKind(parsing: "dpm++") == .dpmpp)
        #expect(try SamplerKind(parsing: "sde-dpmsolver++") == .dpmppSDE)
        let schedule = try Self.schedule.get()
        let made = try SamplerRegistry.make(
            .dpmpp, schedule: schedule, options: .init(inferenceSteps: 12, solverOrder: 3, karrasSigmas: true))
        let solver = try #require(made as? DPMSolverSampler)
        #expect(solver.configuration.solverOrder == 3 && solver.configuration.karrasSigmas && !solver.configuration.stochastic)
        #expect(solver.configuration.spacing == .linspace)
        #expect(throws: SamplingError.self) {
            try SamplerRegistry.make(.ddim, schedule: schedule, options: .init(inferenceSteps: 12, karrasSigmas: true))
        }
        let json = try JSONEncoder().encode([SamplerKind.dpmppSDE])
        #expect(String(decoding: json, as: UTF8.self) == "[\"dpmpp-sde\"]")
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([SamplerKind].self, from: Data("[\"plms\"]".utf8)) }
    }

    // MARK: - Contextualized

    /// A fixed r (a pattern), the bias b_t = k_t·r, and the exact denoiser of Gaussian data
    /// N(μ, s²) under ContextDiff's forward marginal x_t = α_t·x0 + b_t + σ_t·ε.
    struct GaussianWithBias {
        let schedule: NoiseSchedule
        let r: Tensor
        let mu: Tensor
        let s2 = 0.25

        init(schedule: NoiseSchedule) throws {
            self.schedule = schedule
            let shape = [2, 3, 4, 4]
            let n = shape.reduce(1, *)
            r = try Tensor((0..<n).map { Float(sin(Double($0) * 0.7)) * 0.8 }, shape: shape)
            mu = try Tensor((0..<n).map { Float(cos(Double($0) * 0.3)) * 0.5 }, shape: shape)
        }

        var context: ClosureContext { ClosureContext { [r] x0, _ in try r.to(x0.dtype) } }

        /// E[x0 | x_t] for the timestep's level.
        func posteriorMean(_ x: Tensor, _ t: Int) throws -> Tensor {
            let ab = Double(schedule.alphasCumprod[t])
            let a = ab.squareRoot(), v = 1 - ab
            let y = try x - r * schedule.contextCoefficient(t)
            return try mu + (y - mu * a) * (a * s2 / (ab * s2 + v))
        }

        func denoiser(_ prediction: PredictionTarget) -> Denoiser {
            { x, t in
                let x0 = try posteriorMean(x, t)
                switch prediction {
                case .sample: return x0
                case .epsilon:
                    // ContextDiff's ε target includes the bias: (x − α·x0)/σ.
                    let ab = Double(schedule.alphasCumprod[t])
                    return try (x - x0 * ab.squareRoot()) / (1 - ab).squareRoot()
                case .vPrediction:
                    let ab = Double(schedule.alphasCumprod[t])
                    let eps = try (x - x0 * ab.squareRoot()) / (1 - ab).squareRoot()
                    return try eps * ab.squareRoot() - x0 * (1 - ab).squareRoot()
                }
            }
        }
    }

    func distance(_ a: Tensor, _ b: Tensor) throws -> Double {
        try ((a - b).abs().max().item() as Double) / (b.abs().max().item() as Double)
    }

    @Test func zeroContextChangesNoBit() throws {
        let schedule = try Self.schedule.get()
        for stochastic in [false, true] {
            let sampler = try DPMSolverSampler(
                schedule: schedule, inferenceSteps: 12,
                configuration: .init(x0Processing: .clip(range: 1), stochastic: stochastic))
            let start = try SamplerFixture.dummySample()
            let model: Denoiser = { x, t in try SamplerFixture.dummyModel(x, t) }
            let plain = try sampler.run(from: start, generator: Generator(seed: 3), denoiser: model)
            let zero = try sampler.run(from: start, context: ZeroContext(), generator: Generator(seed: 3), denoiser: model)
            #expect(try bitwiseEqual(plain, zero), "stochastic \(stochastic)")
        }
    }

    /// One first-order step is DDIM's Eq. 13 with η = 0 between the same two levels.
    @Test func firstOrderStepIsContextualDDIM() throws {
        let schedule = try Self.schedule.get()
        let g = try GaussianWithBias(schedule: schedule)
        var solver = try DPMSolverSampler(
            schedule: schedule, inferenceSteps: 10, configuration: .init(predictionType: .sample, solverOrder: 1))
        let x = try Tensor.randn([2, 3, 4, 4], generator: Generator(seed: 5))
        for (i, t) in solver.timesteps.enumerated() where i < 3 {
            let x0 = try g.posteriorMean(x, t)
            let out = try solver.step(modelOutput: x0, timestep: t, sample: x, context: g.context, noise: nil).sample
            let info = solver.stepTable[i]
            let aS = Double(info.alphaBarFrom), aT = Double(info.alphaBarTo)
            let eps = try (x - g.r * info.kFrom - x0 * aS.squareRoot()) / (1 - aS).squareRoot()
            let ddim = try x0 * aT.squareRoot() + eps * (1 - aT).squareRoot() + g.r * info.kTo
            #expect(try distance(out, ddim) <= 1e-5, "step \(i)")
        }
    }

    /// With a fixed r, DPM-Solver++(2M) converges to the contextual DDIM (Eq. 13) trajectory as the
    /// steps grow, for every prediction type (the bias-aware ε and v of Eq. 3 give the same x̂0).
    /// For Gaussian data the limit of both, the probability-flow ODE of y = x − b, is known in
    /// closed form: y keeps its standardized coordinate z = (y − α·μ)/sqrt(α²s² + σ²), so the
    /// clean end point is μ + s·z.
    @Test func contextualSolverConvergesToDDIMTrajectory() throws {
        let schedule = try Self.schedule.get()
        let g = try GaussianWithBias(schedule: schedule)
        let start = try Tensor.randn([2, 3, 4, 4], generator: Generator(seed: 11))
        let first = 999  // both samplers start at timestep 999, where k = 0 (y = x)
        let ab = Double(schedule.alphasCumprod[first])
        let z = try (start - g.mu * ab.squareRoot()) / (ab * g.s2 + 1 - ab).squareRoot()
        let exact = try g.mu + z * g.s2.squareRoot()
        for prediction in [PredictionTarget.sample, .epsilon, .vPrediction] {
            var errors: [Double] = []
            var ddimErrors: [Double] = []
            for n in [5, 10, 20, 50, 1000] {
                let solver = try DPMSolverSampler(
                    schedule: schedule, inferenceSteps: n, configuration: .init(predictionType: prediction))
                #expect(solver.timesteps.first == first)
                errors.append(try distance(solver.run(from: start, context: g.context, denoiser: g.denoiser(prediction)), exact))
                let ddim = try DDIMSampler(
                    schedule: schedule, inferenceSteps: n,
                    configuration: .init(predictionType: prediction, x0Processing: .none, spacing: .trailing))
                #expect(ddim.timesteps.first == first)
                ddimErrors.append(try distance(ddim.run(from: start, context: g.context, denoiser: g.denoiser(prediction)), exact))
            }
            print("[DPM-Solver++ contextual convergence \(prediction)] error vs the exact ODE end point at n=5,10,20,50,1000: DPM-Solver++ \(errors); DDIM \(ddimErrors)")
            for (a, b) in zip(errors, errors.dropFirst()) { #expect(b < a, "\(prediction): \(errors)") }
            for (a, b) in zip(ddimErrors, ddimErrors.dropFirst()) { #expect(b < a, "\(prediction): DDIM \(ddimErrors)") }
            // Both reach the same limit; the second-order solver gets there with far fewer steps.
            #expect(errors[3] < 2e-3 && ddimErrors[4] < 1e-2, "\(prediction): \(errors) DDIM \(ddimErrors)")
            #expect(errors[1] < ddimErrors[1] && errors[3] < ddimErrors[3] / 5, "\(prediction): \(errors) vs DDIM \(ddimErrors)")
        }
    }
}
