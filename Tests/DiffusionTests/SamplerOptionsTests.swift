import Foundation
import Testing
import TestSupport
import Torch

@testable import Diffusion

/// Invalid options throw typed errors with clear messages; guidance, thresholding, conversions,
/// the sampling loop and the step table behave as documented.
@Suite("Sampler options and helpers")
struct SamplerOptionsTests {
    static let schedule = Result { try NoiseSchedule(NoiseScheduleConfig()) }

    @Test func invalidStepCountsThrow() throws {
        let schedule = try Self.schedule.get()
        #expect(throws: ScheduleError.nonPositiveInferenceSteps(0)) {
            try DDIMSampler(schedule: schedule, inferenceSteps: 0)
        }
        #expect(throws: ScheduleError.nonPositiveInferenceSteps(0)) {
            try DDPMSampler(schedule: schedule, inferenceSteps: 0)
        }
        #expect(throws: ScheduleError.nonPositiveInferenceSteps(0)) {
            try DDIMInverseSampler(schedule: schedule, inferenceSteps: 0)
        }
        let tooMany = ScheduleError.tooManyInferenceSteps(requested: 1001, trainTimesteps: 1000)
        #expect(throws: tooMany) { try DDIMSampler(schedule: schedule, inferenceSteps: 1001) }
        #expect(throws: tooMany) { try DDPMSampler(schedule: schedule, inferenceSteps: 1001) }
        #expect(throws: tooMany) { try DDIMInverseSampler(schedule: schedule, inferenceSteps: 1001) }
        #expect(tooMany.description.contains("1001"))
    }

    @Test func unknownNamesThrow() throws {
        #expect(throws: UnknownOptionError.self) { try BetaSchedule(parsing: "linearr") }
        do {
            _ = try BetaSchedule(parsing: "quadratic")
            Issue.record("expected an error")
        } catch {
            #expect(error.option == "beta schedule" && error.value == "quadratic")
            #expect(error.description.contains("scaled_linear") && error.description.contains("squaredcos_cap_v2"))
        }
        #expect(try BetaSchedule(parsing: "cosine") == .cosine)
        #expect(try BetaSchedule(parsing: "scaled_linear") == .scaledLinear)
        #expect(throws: UnknownOptionError.self) { try TimestepSpacing(parsing: "uniform") }
        #expect(throws: UnknownOptionError.self) { try PredictionTarget(parsing: "noise") }
        #expect(throws: UnknownOptionError.self) { try DDPMVarianceType(parsing: "learned") }
        #expect(try PredictionTarget(parsing: "v_prediction") == .vPrediction)
        #expect(try PredictionTarget(parsing: "x0") == .sample)
    }

    @Test func invalidEtaThrows() throws {
        let schedule = try Self.schedule.get()
        for eta in [-0.1, -1, 1.5, .nan, .infinity] {
            #expect(throws: SamplingError.self, "eta \(eta)") {
                try DDIMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(eta: eta))
            }
        }
        #expect(throws: SamplingError.invalidEta(-0.1)) {
            try DDIMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(eta: -0.1))
        }
        #expect(SamplingError.invalidEta(-0.1).description == "eta must be in [0, 1], got -0.1")
        _ = try DDIMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(eta: 1))
    }

    @Test func invalidGuidanceScaleThrows() throws {
        #expect(throws: SamplingError.invalidGuidanceScale(-1)) { try ClassifierFreeGuidance(scale: -1) }
        #expect(throws: SamplingError.self) { try ClassifierFreeGuidance(scale: .nan) }
        #expect(throws: SamplingError.self) { try ClassifierFreeGuidance(scale: .infinity) }
        #expect(try ClassifierFreeGuidance(scale: 0).scale == 0)
        #expect(SamplingError.invalidGuidanceScale(-1).description.contains(">= 0"))
    }

    @Test func invalidX0ProcessingThrows() throws {
        let schedule = try Self.schedule.get()
        for range in [0.0, -1, .nan, .infinity] {
            let processing = X0Processing.clip(range: range)
            #expect(throws: SamplingError.self) { try processing.validate() }
            #expect(throws: SamplingError.self) {
                try DDIMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(x0Processing: processing))
            }
            #expect(throws: SamplingError.self) {
                try DDPMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(x0Processing: processing))
            }
            #expect(throws: SamplingError.self) {
                try DDIMInverseSampler(
                    schedule: schedule, inferenceSteps: 10, configuration: .init(x0Processing: processing))
            }
        }
        #expect(throws: SamplingError.invalidClipRange(0)) { try X0Processing.clip(range: 0).validate() }
        for ratio in [0.0, -0.5, 1.0001, .nan] {
            #expect(throws: SamplingError.self, "ratio \(ratio)") {
                try X0Processing.dynamicThreshold(ratio: ratio, maxValue: 1).validate()
            }
        }
        #expect(throws: SamplingError.invalidThresholdRatio(1.5)) {
            try X0Processing.dynamicThreshold(ratio: 1.5, maxValue: 1).validate()
        }
        #expect(throws: SamplingError.invalidThresholdMaxValue(0.5)) {
            try X0Processing.dynamicThreshold(ratio: 0.9, maxValue: 0.5).validate()
        }
        try X0Processing.dynamicThreshold(ratio: 1, maxValue: 1).validate()
        try X0Processing.imagenThreshold.validate()
        #expect(throws: SamplingError.unsupportedSpacing(.linspace, sampler: "DDIM inversion")) {
            try DDIMInverseSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(spacing: .linspace))
        }
    }

    @Test func noiseComesOnlyFromAnExplicitSource() throws {
        let schedule = try Self.schedule.get()
        var ddpm = try DDPMSampler(schedule: schedule, inferenceSteps: 10)
        let x = try Tensor.zeros([1, 1, 2, 2])
        #expect(throws: SamplingError.missingNoise(timestep: 900)) {
            try ddpm.step(modelOutput: x, timestep: 900, sample: x, generator: nil)
        }
        // The last DDPM step (t = 0) adds no noise and needs none.
        _ = try ddpm.step(modelOutput: x, timestep: 0, sample: x, generator: nil)
        let ddim = try DDIMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(eta: 0.3))
        #expect(throws: SamplingError.missingNoise(timestep: 900)) {
            try ddim.step(modelOutput: x, timestep: 900, sample: x, context: nil, noise: nil)
        }
        #expect(throws: SamplingError.self) {
            try ddim.step(modelOutput: x, timestep: 900, sample: x, context: nil, noise: Tensor.zeros([2]))
        }
        #expect(throws: SamplingError.timestepOutOfRange(1000, trainTimesteps: 1000)) {
            try ddim.step(modelOutput: x, timestep: 1000, sample: x, context: nil, noise: x)
        }
        // Same seed, same samples; another seed, other samples.
        let model: Denoiser = { x, t in try x * (Double(t) / 1000) }
        let a = try ddpm.run(from: x, generator: Generator(seed: 1), denoiser: model)
        let b = try ddpm.run(from: x, generator: Generator(seed: 1), denoiser: model)
        let c = try ddpm.run(from: x, generator: Generator(seed: 2), denoiser: model)
        #expect(try bitwiseEqual(a, b))
        #expect(!(try bitwiseEqual(a, c)))
    }

    @Test func progressAndCancellation() throws {
        let schedule = try Self.schedule.get()
        let sampler = try DDIMSampler(schedule: schedule, inferenceSteps: 10)
        let x = try Tensor.ones([1, 1, 2, 2])
        let model: Denoiser = { x, _ in try x * 0.1 }
        var seen: [[Int]] = []
        _ = try sampler.run(
            from: x,
            progress: { p in
                #expect(p.phase == "sampling")
                seen.append([p.completed, p.total])
                return true
            }, denoiser: model)
        #expect(seen == (1...10).map { [$0, 10] })
        #expect(throws: SamplingError.cancelled(completedSteps: 3, totalSteps: 10)) {
            try sampler.run(from: x, progress: { $0.completed < 3 }, denoiser: model)
        }
        var iterator = try SamplingIterator(sampler: sampler, initialSample: x, denoiser: model)
        var timesteps: [Int] = []
        while let step = try iterator.next() { timesteps.append(step.timestep) }
        #expect(timesteps == sampler.timesteps)
        #expect(iterator.completedSteps == 10)
        #expect(try iterator.next() == nil)
        #expect(try bitwiseEqual(iterator.sample, sampler.run(from: x, denoiser: model)))
    }

    @Test func guidanceCombinesAndBatches() throws {
        let g = Generator(seed: 12)
        let x = try Tensor.randn([2, 3, 4, 4], generator: g)
        let cond = try Tensor.randn([2, 5, 8], generator: g)
        let null = try Tensor.zeros([1, 5, 8])
        var calls: [[Int]] = []
        // A batch-elementwise "model": x scaled by the mean of its own condition.
        let model = { (x: Tensor, c: Tensor) throws -> Tensor in
            calls.append(x.shape)
            return try x * c.mean(dims: [1, 2]).reshaped([-1, 1, 1, 1]) + c.mean(dims: [1, 2]).reshaped([-1, 1, 1, 1])
        }
        let guidance = try ClassifierFreeGuidance(scale: 4)
        let conditions = try GuidanceConditions.dropped(conditional: cond, null: null)
        let batched = try guidance.output(sample: x, conditions: conditions, model: model)
        #expect(calls == [[4, 3, 4, 4]])
        let c = try model(x, cond)
        let u = try model(x, null.expanded([2, 5, 8]))
        let manual = try u + (c - u) * 4
        #expect(try TestSupport.relativeDiff(batched, manual) <= 1e-6)
        #expect(try TestSupport.relativeDiff(guidance.combine(conditional: c, unconditional: u), manual) == 0)

        // Negative prompt of the full batch.
        let negative = try Tensor.randn([2, 5, 8], generator: g)
        let withNegative = try guidance.output(
            sample: x, conditions: .negativePrompt(conditional: cond, negative: negative), model: model)
        let un = try model(x, negative)
        #expect(try TestSupport.relativeDiff(withNegative, un + (c - un) * 4) <= 1e-6)

        // w = 1 and w = 0 evaluate one branch only, on the original batch.
        calls = []
        let one = try ClassifierFreeGuidance(scale: 1).output(sample: x, conditions: conditions, model: model)
        let zero = try ClassifierFreeGuidance(scale: 0).output(sample: x, conditions: conditions, model: model)
        #expect(calls == [[2, 3, 4, 4], [2, 3, 4, 4]])
        #expect(try bitwiseEqual(one, c) && bitwiseEqual(zero, u))

        #expect(throws: SamplingError.self) {
            try GuidanceConditions.negativePrompt(conditional: cond, negative: Tensor.zeros([2, 6, 8]))
        }
        #expect(throws: SamplingError.self) {
            try guidance.combine(conditional: c, unconditional: Tensor.zeros([1, 3, 4, 4]))
        }
    }

    @Test func conditionDropout() throws {
        let cond = try Tensor.ones([64, 3])
        let null = try Tensor.zeros([1, 3])
        let none = try ClassifierFreeGuidance.dropConditions(
            cond, null: null, probability: 0, generator: Generator(seed: 1))
        let all = try ClassifierFreeGuidance.dropConditions(
            cond, null: null, probability: 1, generator: Generator(seed: 1))
        #expect(try none.sum().item() == 192 && all.sum().item() == 0)
        let some = try ClassifierFreeGuidance.dropConditions(
            cond, null: null, probability: 0.5, generator: Generator(seed: 1))
        let rows = try some.sum(dims: [1]).scalars(as: Float.self)
        #expect(rows.allSatisfy { $0 == 0 || $0 == 3 })  // whole conditions are dropped
        #expect(rows.contains(0) && rows.contains(3))
        #expect(throws: SamplingError.invalidProbability(1.5)) {
            try ClassifierFreeGuidance.dropConditions(cond, null: null, probability: 1.5, generator: Generator(seed: 1))
        }
    }

    /// diffusers `_threshold_sample` semantics on hand-computed values.
    @Test func dynamicThresholding() throws {
        let x = try Tensor([0.5, -3, 2, 0.1, 0.2, -0.3, 0.4, 0.1] as [Float], shape: [2, 1, 2, 2])
        // ratio 1: s = max|x| clamped to [1, 2.5]: 2.5 for the first image, 1 for the second.
        let a = try X0Processing.dynamicThreshold(ratio: 1, maxValue: 2.5).apply(x).scalars(as: Float.self)
        let expectedA: [Float] = [0.5 / 2.5, -1, 2 / 2.5, 0.1 / 2.5, 0.2, -0.3, 0.4, 0.1]
        #expect(zip(a, expectedA).allSatisfy { abs($0 - $1) <= 1e-7 }, "\(a)")
        // ratio 0.5: the median of |x| = (0.5 + 2)/2 = 1.25 for the first image.
        let b = try X0Processing.dynamicThreshold(ratio: 0.5, maxValue: 10).apply(x).scalars(as: Float.self)
        let expectedB: [Float] = [0.4, -1, 1, 0.08, 0.2, -0.3, 0.4, 0.1]
        #expect(zip(b, expectedB).allSatisfy { abs($0 - $1) <= 1e-7 }, "\(b)")
        #expect(try X0Processing.dynamicThreshold(ratio: 0.5, maxValue: 10).apply(x).shape == [2, 1, 2, 2])
        let clipped = try X0Processing.clip(range: 0.5).apply(x).scalars(as: Float.self)
        #expect(clipped == [0.5, -0.5, 0.5, 0.1, 0.2, -0.3, 0.4, 0.1])
        #expect(try bitwiseEqual(X0Processing.none.apply(x), x))
    }

    @Test func predictionConversionsRoundTrip() throws {
        let g = Generator(seed: 21)
        let x0 = try Tensor.randn([2, 3, 4, 4], generator: g)
        let eps = try Tensor.randn([2, 3, 4, 4], generator: g)
        for alphaBar: Float in [0.9999, 0.3, 0.002] {
            let c = Double(alphaBar.squareRoot())
            let d = Double((1 - alphaBar).squareRoot())
            let x = try x0 * c + eps * d
            for p in PredictionTarget.allCases {
                let output = try p.target(originalSample: x0, noise: eps, alphaBar: alphaBar)
                // x0 from ε amplifies rounding by d/c near ᾱ = 0.
                let tolerance = 1e-5 * max(1, d / c)
                #expect(
                    try TestSupport.relativeDiff(
                        p.originalSample(modelOutput: output, sample: x, alphaBar: alphaBar), x0) <= tolerance,
                    "\(p) x0 at \(alphaBar)")
                let epsTolerance = 1e-5 * max(1, c / d)
                #expect(
                    try TestSupport.relativeDiff(p.noise(modelOutput: output, sample: x, alphaBar: alphaBar), eps)
                        <= epsTolerance, "\(p) eps at \(alphaBar)")
                for q in PredictionTarget.allCases {
                    let converted = try p.converted(output, to: q, sample: x, alphaBar: alphaBar)
                    let expected = try q.target(originalSample: x0, noise: eps, alphaBar: alphaBar)
                    #expect(
                        try TestSupport.relativeDiff(converted, expected) <= max(tolerance, epsTolerance),
                        "\(p)→\(q) at \(alphaBar)")
                }
            }
        }
        // x0 prediction at a clean level: ε̂ is defined as 0, not 0/0.
        let clean = try PredictionTarget.sample.noise(modelOutput: x0, sample: x0, alphaBar: 1)
        #expect(try clean.abs().max().item() == 0)
    }

    @Test func stepTables() throws {
        let schedule = try Self.schedule.get()
        let ddim = try DDIMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(eta: 0.5))
        let table = ddim.stepTable
        #expect(table.map(\.timestep) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0])
        #expect(table.first?.toTimestep == 800 && table.last?.toTimestep == -100)
        #expect(table.last?.alphaBarTo == 1 && table.last?.kTo == 0)
        #expect(table[0].kFrom == schedule.contextCoefficient(900))
        for row in table {
            #expect(
                abs(Double(row.noiseVariance) - 0.25 * Double(row.posteriorVariance)) <= 1e-6
                    * Double(row.posteriorVariance) + 1e-12)
        }
        let trailing = try DDIMSampler(schedule: schedule, inferenceSteps: 10, configuration: .init(spacing: .trailing))
        #expect(trailing.stepTable[0].timestep == 999 && trailing.stepTable[0].kFrom == 0)  // k_T = 0
        #expect(trailing.stepTable.allSatisfy { $0.noiseVariance == 0 })

        let ddpm = try DDPMSampler(
            schedule: schedule, inferenceSteps: 50, configuration: .init(varianceType: .fixedLarge))
        for row in ddpm.stepTable where row.timestep > 0 {
            #expect(row.noiseVariance == 1 - row.alphaBarFrom / row.alphaBarTo)
        }
        #expect(ddpm.stepTable.last?.noiseVariance == 0)

        let inverse = try DDIMInverseSampler(
            schedule: schedule, inferenceSteps: 10, configuration: .init(setAlphaToOne: false))
        #expect(inverse.stepTable.map(\.timestep) == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900])
        #expect(
            inverse.stepTable[0].fromTimestep == -100 && inverse.stepTable[0].alphaBarFrom == schedule.alphasCumprod[0])
        #expect(inverse.stepTable[0].kFrom == schedule.contextCoefficient(0))

        let json = try JSONEncoder().encode(table[0])
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "timestep", "from_timestep", "to_timestep", "alpha_bar_from", "alpha_bar_to", "k_from", "k_to",
                "noise_variance", "posterior_variance",
            ])
    }

    @Test func scheduleReport() throws {
        let report = try ScheduleRequest(sampler: .ddim, options: .init(inferenceSteps: 10, eta: 0.5)).makeReport()
        #expect(report.timesteps == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0])
        let schedule = try Self.schedule.get()
        #expect(report.alphaBar == report.timesteps.map { schedule.alphasCumprod[$0] })
        #expect(report.k == report.timesteps.map { schedule.contextCoefficient($0) })
        #expect(report.eta == 0.5 && report.varianceType == nil && report.setAlphaToOne == true)
        #expect(report.steps.count == 10 && report.posteriorVariance.count == 10)

        let ddpm = try ScheduleRequest(
            schedule: NoiseScheduleConfig(betaSchedule: .cosine, rescaleZeroTerminalSNR: true), sampler: .ddpm,
            options: .init(inferenceSteps: 4, spacing: .trailing, varianceType: .fixedLarge)
        ).makeReport()
        #expect(ddpm.timesteps == [999, 749, 499, 249])
        #expect(ddpm.alphaBar[0] == 0 && ddpm.k[0] == 0)  // zero terminal SNR; k_T = 0
        #expect(ddpm.eta == nil && ddpm.varianceType == .fixedLarge)
        let json = try JSONEncoder().encode(ddpm)
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        #expect(
            Set(object.keys).isSuperset(of: [
                "timesteps", "alpha_bar", "k", "posterior_variance", "noise_variance", "steps", "config",
            ]))
        #expect(try JSONDecoder().decode(ScheduleReport.self, from: json) == ddpm)

        #expect(throws: ScheduleError.nonPositiveInferenceSteps(0)) {
            try ScheduleRequest(options: .init(inferenceSteps: 0)).makeReport()
        }
        #expect(throws: SamplingError.invalidEta(-1)) { try ScheduleRequest(options: .init(eta: -1)).makeReport() }
        // An option the sampler does not read is refused, naming the option.
        #expect(throws: SamplingError.invalidSolverOption(option: "eta", message: "applies only to samplers that read it, not to ddpm")) {
            try ScheduleRequest(sampler: .ddpm, options: .init(eta: 0.5)).makeReport()
        }
        #expect(throws: UnknownOptionError.self) { try SamplerKind(parsing: "plms") }
    }

    @Test func guidanceWithStructuredConditions() throws {
        // Any condition type works given its concatenation (here: a pair of tensors).
        let x = try Tensor.randn([2, 1, 2, 2], generator: Generator(seed: 1))
        typealias Pair = (scale: Tensor, shift: Tensor)
        let c: Pair = (try Tensor([2, 3] as [Float]), try Tensor([1, 1] as [Float]))
        let u: Pair = (try Tensor([1, 1] as [Float]), try Tensor([0, 0] as [Float]))
        let model = { (x: Tensor, p: Pair) throws -> Tensor in
            try x * p.scale.reshaped([-1, 1, 1, 1]) + p.shift.reshaped([-1, 1, 1, 1])
        }
        let guidance = try ClassifierFreeGuidance(scale: 2.5)
        let out = try guidance.output(
            sample: x, conditional: c, unconditional: u,
            concatenate: { a, b in (try Tensor.cat([a.scale, b.scale]), try Tensor.cat([a.shift, b.shift])) },
            model: model)
        let expected = try guidance.combine(conditional: model(x, c), unconditional: model(x, u))
        #expect(try TestSupport.relativeDiff(out, expected) == 0)
    }
}
