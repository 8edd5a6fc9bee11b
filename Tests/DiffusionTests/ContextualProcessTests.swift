import Foundation
import TestSupport
import Testing
import Torch

@testable import Diffusion

/// The contextualized forward process (paper Eq. 3–5) and its training loss (Eq. 8).
@Suite("Contextualized process")
struct ContextualProcessTests {
    static let schedule = Result { try NoiseSchedule(NoiseScheduleConfig()) }

    /// `k_t` written out independently of the library.
    static func k(_ schedule: NoiseSchedule, _ t: Int) -> Double {
        if t < 0 || t == schedule.alphasCumprod.count - 1 { return 0 }
        let s = Double(schedule.alphasCumprod[t]).squareRoot()
        return s * (1 - s)
    }

    static func alphaBar(_ schedule: NoiseSchedule, _ t: Int) -> Double {
        t < 0 ? 1 : Double(schedule.alphasCumprod[t])
    }

    /// The bias network used by these tests: depends on x0 and on t.
    static func r(_ x0: Double, _ t: Int) -> Double { Foundation.sin(3 * x0) * (1 + Double(t) / 1000) + 0.5 }

    /// Timesteps drawn from a range stay in it and cover it; the full range is the default and
    /// draws exactly what the call without a range draws; an empty or outside range is an error.
    @Test func timestepRange() throws {
        let diffusion = ContextualDiffusion(schedule: try Self.schedule.get())
        let high = try diffusion.sampleTimesteps(count: 4000, generator: Generator(seed: 1), range: 400..<1000)
        #expect(high.min()! >= 400 && high.max()! <= 999)
        #expect(high.min()! < 410 && high.max()! > 990)
        #expect(try diffusion.sampleTimesteps(count: 64, generator: Generator(seed: 2))
            == diffusion.sampleTimesteps(count: 64, generator: Generator(seed: 2), range: 0..<1000))
        #expect(throws: SamplingError.self) { try diffusion.sampleTimesteps(count: 1, generator: Generator(seed: 3), range: 900..<1001) }
        #expect(throws: SamplingError.self) { try diffusion.sampleTimesteps(count: 1, generator: Generator(seed: 3), range: 5..<5) }
    }

    @Test func contextCoefficient() throws {
        let schedule = try Self.schedule.get()
        #expect(schedule.contextCoefficient(-1) == 0)  // b_0 = 0: the clean image has no bias
        #expect(schedule.contextCoefficient(999) == 0)  // k_T = 0
        for t in [0, 1, 250, 500, 998] {
            #expect(schedule.contextCoefficient(t) == Self.k(schedule, t))
            #expect(schedule.contextCoefficient(t) > 0 && schedule.contextCoefficient(t) <= 0.25)
        }
    }

    /// Eq. 4 applied step by step from x0 (float64, 3 × 20 000 chains, T = 1000 steps) has the
    /// mean and variance of Eq. 3 at every checked t, for a bias that depends on x0 and t.
    @Test func transitionsComposeToTheMarginal() throws {
        let schedule = try Self.schedule.get()
        let process = ContextualDiffusion(schedule: schedule)
        let values: [Double] = [-0.8, 0.1, 0.7]
        let n = 20_000
        let x0 = try Tensor(values, shape: [3, 1]).expanded([3, n]).contiguous()
        func rTensor(_ t: Int) throws -> Tensor {
            try Tensor(values.map { Self.r($0, t) }, shape: [3, 1]).expanded([3, n])
        }
        let g = Generator(seed: 2024)
        let checkpoints: Set<Int> = [0, 1, 50, 250, 600, 998, 999]
        var x = x0
        var previousR: Tensor?
        var worst = (mean: 0.0, variance: 0.0)
        for t in 0..<1000 {
            let rt = try rTensor(t)
            x = try process.transition(
                x, from: t - 1, to: t, noise: Tensor.randn([3, n], dtype: .float64, generator: g),
                contextFrom: previousR, contextTo: rt)
            previousR = rt
            guard checkpoints.contains(t) else { continue }
            let mean = try x.mean(dims: [1]).scalars(as: Double.self)
            let variance = try x.variance(dims: [1]).scalars(as: Double.self)
            let a = Self.alphaBar(schedule, t)
            let expectedVariance = 1 - a
            for (i, v) in values.enumerated() {
                let expectedMean = a.squareRoot() * v + Self.k(schedule, t) * Self.r(v, t)
                let meanTolerance = 5 * (expectedVariance / Double(n)).squareRoot()
                let varianceTolerance = 5 * expectedVariance * (2 / Double(n)).squareRoot()
                #expect(
                    abs(mean[i] - expectedMean) <= meanTolerance, "t=\(t) x0=\(v): mean \(mean[i]) vs \(expectedMean)")
                #expect(
                    abs(variance[i] - expectedVariance) <= varianceTolerance,
                    "t=\(t) x0=\(v): variance \(variance[i]) vs \(expectedVariance)")
                worst.mean = max(worst.mean, abs(mean[i] - expectedMean) / meanTolerance * 5)
                worst.variance = max(worst.variance, abs(variance[i] - expectedVariance) / varianceTolerance * 5)
            }
        }
        print(
            "[Eq. 4 → Eq. 3 Monte Carlo] worst mean error \(worst.mean) standard errors, worst variance error \(worst.variance) standard errors"
        )
    }

    /// Eq. 5 is the Gaussian conditional of the joint of Eq. 3 (at s) and Eq. 4 (s → t), computed
    /// here independently in Swift Doubles, for random scalars and several (t, s).
    @Test func posteriorIsGaussianConditioning() throws {
        let schedule = try Self.schedule.get()
        let process = ContextualDiffusion(schedule: schedule)
        var rng = SplitMix64(seed: 99)
        let pairs: [(t: Int, s: Int)] = [
            (0, -1), (1, 0), (10, 9), (300, 299), (700, 699), (999, 998), (520, 500), (20, -1),
        ]
        var worst = (mean: 0.0, variance: 0.0)
        for (t, s) in pairs {
            for _ in 0..<20 {
                let x0 = rng.uniform(-1, 1)
                let xt = rng.uniform(-2, 2)
                let rt = rng.uniform(-2, 2)
                let rs = rng.uniform(-2, 2)
                // Joint of (x_s, x_t) given x0.
                let aS = Self.alphaBar(schedule, s)
                let aT = Self.alphaBar(schedule, t)
                let alpha = aT / aS
                let muS = aS.squareRoot() * x0 + Self.k(schedule, s) * rs
                let varS = 1 - aS
                let muT =
                    alpha.squareRoot() * muS + Self.k(schedule, t) * rt - alpha.squareRoot() * Self.k(schedule, s) * rs
                let varT = alpha * varS + (1 - alpha)
                let cov = alpha.squareRoot() * varS
                let expectedMean = muS + cov / varT * (xt - muT)
                let expectedVariance = varS - cov * cov / varT

                let (mean, variance) = try process.posterior(
                    x0: Tensor([x0]), xt: Tensor([xt]), timestep: t, previous: s,
                    contextT: Tensor([rt]), contextS: Tensor([rs]))
                let m = try mean.item()
                worst.mean = max(worst.mean, abs(m - expectedMean))
                worst.variance = max(worst.variance, abs(variance - expectedVariance))
                #expect(abs(m - expectedMean) <= 1e-10, "t=\(t) s=\(s)")
                #expect(abs(variance - expectedVariance) <= 1e-12, "t=\(t) s=\(s)")
            }
        }
        print("[Eq. 5 vs Gaussian conditioning] max |Δ mean| \(worst.mean), max |Δ variance| \(worst.variance)")
    }

    @Test func marginalBatchedMatchesScalarTimesteps() throws {
        let schedule = try Self.schedule.get()
        let process = ContextualDiffusion(schedule: schedule)
        let g = Generator(seed: 4)
        let x0 = try Tensor.randn([3, 2, 4, 4], dtype: .float64, generator: g)
        let eps = try Tensor.randn([3, 2, 4, 4], dtype: .float64, generator: g)
        let r = try Tensor.randn([3, 2, 4, 4], dtype: .float64, generator: g)
        let ts = [5, 480, 999]
        let batched = try process.marginal(x0: x0, timesteps: ts, noise: eps, context: r)
        for (i, t) in ts.enumerated() {
            let one = try process.marginal(
                x0: x0.select(dim: 0, i), timestep: t, noise: eps.select(dim: 0, i), context: r.select(dim: 0, i))
            #expect(try TestSupport.maxAbsDiff(batched.select(dim: 0, i), one) <= 1e-14)
        }
        // With r ≡ nil the marginal is the plain q(x_t | x0).
        let plain = try process.marginal(x0: x0, timesteps: ts, noise: eps, context: nil)
        let a = Double(schedule.alphasCumprod[480])
        let manual = try x0.select(dim: 0, 1) * a.squareRoot() + eps.select(dim: 0, 1) * (1 - a).squareRoot()
        #expect(try TestSupport.maxAbsDiff(plain.select(dim: 0, 1), manual) <= 1e-14)
    }

    /// Eq. 8's gradients reach both the denoiser and r_φ, and agree with finite differences.
    @Test(arguments: [LossWeighting.uniform, .p2, .minSNR(gamma: 5)])
    func lossGradientsReachDenoiserAndAdapter(weighting: LossWeighting) throws {
        let schedule = try Self.schedule.get()
        let process = ContextualDiffusion(schedule: schedule)
        let g = Generator(seed: 8)
        let x0 = try Tensor.randn([3, 2, 4, 4], dtype: .float64, generator: g)
        let noise = try Tensor.randn([3, 2, 4, 4], dtype: .float64, generator: g)
        let theta = try Tensor([0.7, -0.2]).requiringGrad()  // denoiser parameters
        let phi = try Tensor([0.3]).requiringGrad()  // adapter parameter
        let timesteps = [100, 400, 999]
        func loss() throws -> Tensor {
            try process.trainingLoss(
                x0: x0, timesteps: timesteps, noise: noise, weighting: weighting,
                denoiser: { xt, t in
                    // f_θ(x_t, t) = θ0·x_t + θ1·tanh(x_t)·t/1000
                    let scale = try t.to(.float64).reshaped([3, 1, 1, 1]) / 1000
                    return try xt * theta.select(dim: 0, 0) + xt.tanh() * scale * theta.select(dim: 0, 1)
                },
                context: { x, _ in try (x * phi).sin() })
        }
        let value = try loss()
        try value.backward()
        let gTheta = try #require(theta.grad)
        let gPhi = try #require(phi.grad)
        #expect(try gTheta.abs().min().item() > 0)
        #expect(try gPhi.abs().item() > 0)
        let report = try gradientCheck([("theta", theta), ("phi", phi)], loss: loss)
        #expect(report.passed, "\(report)")
    }

    @Test func lossMatchesAManualComputation() throws {
        let schedule = try Self.schedule.get()
        let process = ContextualDiffusion(schedule: schedule)
        let g = Generator(seed: 9)
        let x0 = try Tensor.randn([2, 3, 2, 2], dtype: .float64, generator: g)
        let noise = try Tensor.randn([2, 3, 2, 2], dtype: .float64, generator: g)
        let ts = [10, 700]
        let denoiser = { (xt: Tensor, _: Tensor) throws -> Tensor in try xt * 0.5 }
        let context = { (x: Tensor, _: Tensor) throws -> Tensor in try x.square() }
        for weighting in [LossWeighting.uniform, .p2, .minSNR(gamma: 2)] {
            for prediction in PredictionTarget.allCases {
                let loss = try process.trainingLoss(
                    x0: x0, timesteps: ts, noise: noise, weighting: weighting, prediction: prediction,
                    denoiser: denoiser, context: context
                ).item()
                var expected = 0.0
                for (i, t) in ts.enumerated() {
                    let a = Self.alphaBar(schedule, t)
                    let x = try x0.select(dim: 0, i)
                    let e = try noise.select(dim: 0, i)
                    let xt = try x * a.squareRoot() + x.square() * Self.k(schedule, t) + e * (1 - a).squareRoot()
                    // ε and v target the whole deviation from √ᾱ·x0, the bias included (as samplers read them).
                    let deviation = try e + x.square() * (Self.k(schedule, t) / (1 - a).squareRoot())
                    let target: Tensor
                    switch prediction {
                    case .sample: target = x
                    case .epsilon: target = deviation
                    case .vPrediction: target = try deviation * a.squareRoot() - x * (1 - a).squareRoot()
                    }
                    let mse = try (xt * 0.5 - target).square().mean().item()
                    expected += weighting.weight(alphaBar: a) * mse / Double(ts.count)
                }
                #expect(abs(loss - expected) <= 1e-12 * max(1, abs(expected)), "\(weighting) \(prediction)")
            }
        }
        #expect(throws: SamplingError.invalidSNRGamma(0)) {
            try process.trainingLoss(
                x0: x0, timesteps: ts, noise: noise, weighting: .minSNR(gamma: 0), denoiser: denoiser, context: nil)
        }
        #expect(throws: SamplingError.self) {
            try process.trainingLoss(x0: x0, timesteps: [1], noise: noise, denoiser: denoiser, context: nil)
        }
    }
}

/// A small deterministic generator for test scalars.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform(_ lo: Double, _ hi: Double) -> Double {
        lo + (hi - lo) * Double(next() >> 11) / Double(1 << 53)
    }
}
