import Foundation
import Torch

/// diffusers' `solver_type` of DPM-Solver++'s second-order update.
public enum DPMSolverType: String, Codable, Sendable, CaseIterable, NamedOption {
    case midpoint, heun
    public static var optionName: String { "solver type" }
}

/// diffusers' `final_sigmas_type`: where the last step lands.
public enum DPMFinalSigmas: String, Codable, Sendable, CaseIterable, NamedOption {
    /// The clean level (σ = 0, ᾱ = 1, no bias); the last step is first order.
    case zero
    /// The level of timestep 0.
    case sigmaMin = "sigma_min"
    public static var optionName: String { "final sigmas type" }
}

/// DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095): the multistep solver of the diffusion ODE in
/// data prediction, first to third order, and its SDE variant (`sde-dpmsolver++`), as diffusers
/// 0.27.2 `DPMSolverMultistepScheduler` computes them (same float32 scalars, same order of
/// operations) — and **contextualized** for ContextDiff's biased process (docs/SOLVERS.md):
///
///     y   = x_s − b_s                                  b_s = k_s·r_φ(x̂0, c, s)
///     y'  = DPM-Solver++ update of y from level s to t with the data predictions x̂0 (this and
///           the previous steps'), exactly diffusers' formula
///     x_t = y' + b_t                                   b_t = k_t·r_φ(x̂0, c, t)
///
/// The forward marginal of Eq. 3 is `x_s = α_s·x0 + b_s + σ_s·ε`, so `y = x − b` is a plain
/// diffusion with the same x0: for a fixed r the update is diffusers' solver on y, and with r ≡ 0
/// it is diffusers' solver on x, bit for bit. First order is DDIM's Eq. 13 with η = 0.
///
/// Levels are diffusers' σ = sqrt((1 − ᾱ)/ᾱ) (`sigmas`, one more than the steps; with Karras
/// sigmas they fall between training timesteps, the model then sees the rounded timestep).
/// ContextDiff's `k` at a level is `sqrt(ᾱ)(1 − sqrt(ᾱ))` of that level's ᾱ = 1/(1 + σ²), and 0 at
/// timestep T − 1 and at the clean level.
///
/// The solver keeps its previous data predictions: ``step(modelOutput:timestep:sample:context:noise:)``
/// must visit ``timesteps`` in order (``SamplingIterator`` does); ``reset()`` starts again.
public struct DPMSolverSampler: DiffusionSampler {
    public struct Configuration: Sendable, Equatable {
        public var predictionType: PredictionTarget
        /// diffusers' `thresholding` (none by default: DPM-Solver++ has no `clip_sample`).
        public var x0Processing: X0Processing
        /// 1, 2 (DPM-Solver++(2M), the default) or 3 (ODE only).
        public var solverOrder: Int
        public var solverType: DPMSolverType
        /// `algorithm_type="sde-dpmsolver++"`: adds noise at every step.
        public var stochastic: Bool
        /// diffusers `lower_order_final`: first/second order at the last steps below 15 steps.
        public var lowerOrderFinal: Bool
        /// diffusers `use_karras_sigmas` (Karras et al. 2022, ρ = 7).
        public var karrasSigmas: Bool
        public var finalSigmas: DPMFinalSigmas
        /// diffusers' default for this scheduler is `linspace`.
        public var spacing: TimestepSpacing
        public var stepsOffset: Int

        public init(
            predictionType: PredictionTarget = .epsilon, x0Processing: X0Processing = .none, solverOrder: Int = 2,
            solverType: DPMSolverType = .midpoint, stochastic: Bool = false, lowerOrderFinal: Bool = true,
            karrasSigmas: Bool = false, finalSigmas: DPMFinalSigmas = .zero, spacing: TimestepSpacing = .linspace,
            stepsOffset: Int = 0
        ) {
            self.predictionType = predictionType
            self.x0Processing = x0Processing
            self.solverOrder = solverOrder
            self.solverType = solverType
            self.stochastic = stochastic
            self.lowerOrderFinal = lowerOrderFinal
            self.karrasSigmas = karrasSigmas
            self.finalSigmas = finalSigmas
            self.spacing = spacing
            self.stepsOffset = stepsOffset
        }
    }

    public let schedule: NoiseSchedule
    public let configuration: Configuration
    public let timesteps: [Int]
    /// σ of every level the loop visits: one per timestep, then the final level.
    public let sigmas: [Float]
    public var predictionType: PredictionTarget { configuration.predictionType }

    // The solver's state: where it is, and the data predictions of the last steps (newest last).
    private var stepIndex = 0
    private var history: [(x0: Tensor, lambda: Float)] = []

    public init(schedule: NoiseSchedule, inferenceSteps n: Int, configuration: Configuration = .init()) throws {
        let c = configuration
        guard (1...3).contains(c.solverOrder) else {
            throw SamplingError.invalidSolverOption(option: "solver_order", message: "must be 1, 2 or 3, got \(c.solverOrder)")
        }
        if c.stochastic && c.solverOrder == 3 {
            throw SamplingError.invalidSolverOption(
                option: "solver_order", message: "the SDE variant has first- and second-order updates only, got 3")
        }
        try c.x0Processing.validate()
        let (timesteps, sigmas) = try Self.levels(schedule: schedule, inferenceSteps: n, configuration: c)
        self.schedule = schedule
        self.configuration = c
        self.timesteps = timesteps
        self.sigmas = sigmas
    }

    public func addsNoise(at timestep: Int) -> Bool { configuration.stochastic }

    public mutating func reset() {
        stepIndex = 0
        history = []
    }

    /// Starts at step `index` with no history: the first update is first order, as diffusers'
    /// `lower_order_nums` counts the steps taken, not the index.
    public mutating func reset(beginningAt index: Int) {
        stepIndex = index
        history = []
    }

    // MARK: - Timesteps and sigmas (diffusers `set_timesteps`)

    static func levels(schedule: NoiseSchedule, inferenceSteps n: Int, configuration c: Configuration) throws
        -> (timesteps: [Int], sigmas: [Float])
    {
        let T = schedule.config.trainTimesteps
        guard n >= 1 else { throw ScheduleError.nonPositiveInferenceSteps(n) }
        guard n <= T else { throw ScheduleError.tooManyInferenceSteps(requested: n, trainTimesteps: T) }
        guard c.stepsOffset >= 0 else { throw ScheduleError.negativeStepsOffset(c.stepsOffset) }
        // ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5 in float32.
        let all: [Float] = schedule.alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
        var timesteps: [Int]
        switch c.spacing {
        case .linspace:
            // np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
            let stop = Double(T - 1), step = stop / Double(n)
            timesteps = (1...n).reversed().map { i in Int((i == n ? stop : Double(i) * step).rounded(.toNearestOrEven)) }
        case .leading:
            let ratio = T / (n + 1)
            timesteps = (1...n).reversed().map { $0 * ratio + c.stepsOffset }
        case .trailing:
            timesteps = try schedule.timesteps(inferenceSteps: n, spacing: .trailing)
        }
        var sigmas: [Float]
        if c.karrasSigmas {
            let karras = Self.karrasSigmas(min: Double(all[0]), max: Double(all[T - 1]), count: n)
            let logSigmas = all.map { Foundation.log($0) }
            timesteps = karras.map { Int(Self.sigmaToT($0, logSigmas: logSigmas).rounded(.toNearestOrEven)) }
            sigmas = karras.map { Float($0) }
        } else {
            for t in timesteps where t < 0 || t >= T { throw ScheduleError.timestepOutOfRange(timestep: t, trainTimesteps: T) }
            sigmas = timesteps.map { all[$0] }
        }
        sigmas.append(c.finalSigmas == .zero ? 0 : all[0])
        for t in timesteps where t < 0 || t >= T { throw ScheduleError.timestepOutOfRange(timestep: t, trainTimesteps: T) }
        return (timesteps, sigmas)
    }

    /// `_convert_to_karras` (float64, ρ = 7).
    static func karrasSigmas(min: Double, max: Double, count n: Int) -> [Double] {
        let rho = 7.0
        let minInv = Foundation.pow(min, 1 / rho), maxInv = Foundation.pow(max, 1 / rho)
        return (0..<n).map { i in
            let ramp = n == 1 ? 0 : (i == n - 1 ? 1 : Double(i) * (1 / Double(n - 1)))
            return Foundation.pow(maxInv + ramp * (minInv - maxInv), rho)
        }
    }

    /// `_sigma_to_t`: the fractional timestep whose log σ interpolates `sigma` (numpy 1.x casting:
    /// the distances are float32, the weight float64).
    static func sigmaToT(_ sigma: Double, logSigmas: [Float]) -> Double {
        let logSigma = Foundation.log(Swift.max(sigma, 1e-10))
        let l32 = Float(logSigma)
        var low = 0
        for (j, ls) in logSigmas.enumerated() where l32 - ls >= 0 { low = j }
        low = Swift.min(low, logSigmas.count - 2)
        let high = low + 1
        let lo = logSigmas[low], hi = logSigmas[high]
        var w = (Double(lo) - logSigma) / Double(lo - hi)
        w = Swift.min(Swift.max(w, 0), 1)
        return (1 - w) * Double(low) + w * Double(high)
    }

    // MARK: - One level's scalars (`_sigma_to_alpha_sigma_t`, λ = log α − log σ, all float32)

    struct Level {
        let sigma: Float
        let alpha: Float
        let sigmaT: Float
        let lambda: Float
        let noiseLevel: NoiseLevel

        var alphaBar: Float { alpha * alpha }
    }

    func level(_ i: Int) -> Level {
        let sigma = sigmas[i]
        let alpha: Float = 1 / (sigma * sigma + 1).squareRoot()
        let sigmaT = sigma * alpha
        let lambda = Foundation.log(alpha) - Foundation.log(sigmaT)
        let T = trainTimesteps
        let biasTimestep: Int? =
            if i < timesteps.count { timesteps[i] == T - 1 ? nil : timesteps[i] } else { sigma == 0 ? nil : 0 }
        let k = biasTimestep == nil ? 0 : NoiseSchedule.contextCoefficient(alphaBar: alpha * alpha)
        let t = i < timesteps.count ? timesteps[i] : -1
        return Level(
            sigma: sigma, alpha: alpha, sigmaT: sigmaT, lambda: lambda,
            noiseLevel: NoiseLevel(timestep: t, alphaBar: alpha * alpha, biasTimestep: k == 0 ? nil : biasTimestep, k: k))
    }

    /// The order of the update at step `i` (diffusers' `lower_order_final` / `lower_order_nums` rules).
    public func order(atStep i: Int) -> Int {
        let n = timesteps.count, c = configuration
        let lowerOrderNums = min(i, c.solverOrder)
        let lowerFinal = i == n - 1 && ((c.lowerOrderFinal && n < 15) || c.finalSigmas == .zero)
        let lowerSecond = i == n - 2 && c.lowerOrderFinal && n < 15
        if c.solverOrder == 1 || lowerOrderNums < 1 || lowerFinal { return 1 }
        if c.solverOrder == 2 || lowerOrderNums < 2 || lowerSecond { return 2 }
        return 3
    }

    // MARK: - The step

    public mutating func step(
        modelOutput: Tensor, timestep t: Int, sample: Tensor, context: (any ContextBias)?, noise: Tensor?
    ) throws -> SamplerStepOutput {
        let i = stepIndex
        guard i < timesteps.count, timesteps[i] == t else {
            throw SamplingError.unexpectedTimestep(t, expected: i < timesteps.count ? timesteps[i] : nil)
        }
        try checkTimestep(t)
        let s0 = level(i), target = level(i + 1)

        // convert_model_output (data prediction), with the level's α, σ from its sigma.
        let raw: Tensor
        switch predictionType {
        case .epsilon: raw = try (sample - modelOutput * Double(s0.sigmaT)) / Double(s0.alpha)
        case .sample: raw = modelOutput
        case .vPrediction: raw = try sample * Double(s0.alpha) - modelOutput * Double(s0.sigmaT)
        }
        let x0 = try configuration.x0Processing.apply(raw)
        let biases = try StepBiases(context: context, x0: x0, current: s0.noiseLevel, target: target.noiseLevel)
        let z = configuration.stochastic ? try checkNoise(noise, like: sample, timestep: t) : nil

        stepIndex += 1
        // A step between two equal levels (duplicate timesteps: linspace with n = T) is the
        // identity and leaves the history alone, where diffusers divides 0 by 0 (NaN).
        if target.sigma == s0.sigma { return SamplerStepOutput(sample: sample, predictedOriginal: x0) }
        history.append((x0, s0.lambda))
        if history.count > configuration.solverOrder { history.removeFirst() }
        let y = try sample.subtractingBias(biases.current)
        let next = try update(y, order: min(order(atStep: i), history.count), s0: s0, t: target, noise: z)
        return SamplerStepOutput(sample: try next.addingBias(biases.target), predictedOriginal: x0)
    }

    /// diffusers' first-, second- and third-order updates of `y` from level s0 to t with the data
    /// predictions in `history` (newest last, with their levels' λ), in its float32 scalar arithmetic.
    func update(_ y: Tensor, order: Int, s0: Level, t: Level, noise: Tensor?) throws -> Tensor {
        let h = t.lambda - s0.lambda
        let e = Foundation.exp(-h)
        let m0 = history[history.count - 1].x0
        let sde = configuration.stochastic
        let e2 = sde ? Foundation.exp(-2 * h) : 0
        func withNoise(_ x: Tensor) throws -> Tensor {
            guard let noise else { return x }
            return try x + noise * Double(t.sigmaT * (1 - e2).squareRoot())
        }
        switch order {
        case 1:
            if sde {
                return try withNoise(y * Double(t.sigmaT / s0.sigmaT * e) + m0 * Double(t.alpha * (1 - e2)))
            }
            return try y * Double(t.sigmaT / s0.sigmaT) - m0 * Double(t.alpha * (e - 1))
        case 2:
            let (m1, lambda1) = history[history.count - 2]
            let r0 = (s0.lambda - lambda1) / h
            let d1 = try (m0 - m1) * Double(1 / r0)
            switch (sde, configuration.solverType) {
            case (false, .midpoint):
                return try y * Double(t.sigmaT / s0.sigmaT) - m0 * Double(t.alpha * (e - 1))
                    - d1 * Double(0.5 * (t.alpha * (e - 1)))
            case (false, .heun):
                return try y * Double(t.sigmaT / s0.sigmaT) - m0 * Double(t.alpha * (e - 1))
                    + d1 * Double(t.alpha * ((e - 1) / h + 1))
            case (true, .midpoint):
                return try withNoise(
                    y * Double(t.sigmaT / s0.sigmaT * e) + m0 * Double(t.alpha * (1 - e2))
                        + d1 * Double(0.5 * (t.alpha * (1 - e2))))
            case (true, .heun):
                return try withNoise(
                    y * Double(t.sigmaT / s0.sigmaT * e) + m0 * Double(t.alpha * (1 - e2))
                        + d1 * Double(t.alpha * ((1 - e2) / (-2 * h) + 1)))
            }
        default:
            let (m1, lambda1) = history[history.count - 2], (m2, lambda2) = history[history.count - 3]
            let r0 = (s0.lambda - lambda1) / h, r1 = (lambda1 - lambda2) / h
            let d10 = try (m0 - m1) * Double(1 / r0), d11 = try (m1 - m2) * Double(1 / r1)
            let d1 = try d10 + (d10 - d11) * Double(r0 / (r0 + r1))
            let d2 = try (d10 - d11) * Double(1 / (r0 + r1))
            return try y * Double(t.sigmaT / s0.sigmaT) - m0 * Double(t.alpha * (e - 1))
                + d1 * Double(t.alpha * ((e - 1) / h + 1)) - d2 * Double(t.alpha * ((e - 1 + h) / (h * h) - 0.5))
        }
    }

    public var stepTable: [SamplerStepInfo] {
        timesteps.indices.map { i in
            let s = level(i), t = level(i + 1)
            let h = t.lambda - s.lambda
            let noiseStd: Float = configuration.stochastic ? t.sigmaT * (1 - Foundation.exp(-2 * h)).squareRoot() : 0
            return SamplerStepInfo(
                timestep: timesteps[i], fromTimestep: timesteps[i], toTimestep: i + 1 < timesteps.count ? timesteps[i + 1] : -1,
                alphaBarFrom: s.alphaBar, alphaBarTo: t.alphaBar, kFrom: s.noiseLevel.k, kTo: t.noiseLevel.k,
                noiseVariance: noiseStd * noiseStd,
                posteriorVariance: t.alphaBar >= 1 && s.alphaBar >= 1
                    ? 0 : posteriorVarianceFloat32(alphaBar: s.alphaBar, alphaBarPrev: t.alphaBar),
                order: order(atStep: i))
        }
    }
}

extension DPMSolverSampler {
    static func make(_ schedule: NoiseSchedule, _ o: SamplerOptions, stochastic: Bool) throws -> DPMSolverSampler {
        try DPMSolverSampler(
            schedule: schedule, inferenceSteps: o.inferenceSteps,
            configuration: .init(
                predictionType: o.predictionType, x0Processing: o.x0Processing, solverOrder: o.solverOrder,
                solverType: o.solverType, stochastic: stochastic, lowerOrderFinal: o.lowerOrderFinal,
                karrasSigmas: o.karrasSigmas, finalSigmas: o.finalSigmas, spacing: o.spacing ?? .linspace,
                stepsOffset: o.stepsOffset))
    }

    static let solverKeys: Set<SamplerOptions.Key> = [.solverOrder, .solverType, .lowerOrderFinal, .karrasSigmas, .finalSigmas]

    public static let registration = SamplerRegistration(
        name: "dpmpp", summary: "DPM-Solver++ multistep (2M by default), contextualized; 10-20 steps",
        defaultSpacing: .linspace, reads: solverKeys, aliases: ["dpm++", "dpmsolver++"]
    ) { try make($0, $1, stochastic: false) }

    public static let sdeRegistration = SamplerRegistration(
        name: "dpmpp-sde", summary: "SDE-DPM-Solver++ (stochastic multistep), contextualized",
        defaultSpacing: .linspace, reads: solverKeys, aliases: ["sde-dpmsolver++"]
    ) { try make($0, $1, stochastic: true) }
}

extension SamplerKind {
    public static let dpmpp = DPMSolverSampler.registration.kind
    public static let dpmppSDE = DPMSolverSampler.sdeRegistration.kind
}
