import Foundation
import Torch

/// An optimizer over a fixed list of parameters whose `.grad` has been filled by `backward()`.
public protocol Optimizer: AnyObject {
    var parameters: [Tensor] { get }
    var learningRate: Double { get set }
    /// Applies one update from the current gradients.
    func step() throws
}

extension Optimizer {
    /// Drops every parameter's gradient.
    public func zeroGrad() throws {
        for p in parameters { try p.zeroGrad() }
    }
}

/// AdamW (Loshchilov & Hutter), with PyTorch's `torch.optim.AdamW` update and defaults.
public final class AdamW: Optimizer {
    public let parameters: [Tensor]
    public var learningRate: Double
    public var betas: (Double, Double)
    public var eps: Double
    public var weightDecay: Double
    /// Number of updates applied so far (bias correction uses it).
    public private(set) var stepCount = 0
    /// First and second moments, one per parameter, created on the first step.
    public private(set) var firstMoments: [Tensor] = []
    public private(set) var secondMoments: [Tensor] = []

    public init(
        parameters: [Tensor], learningRate: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999),
        eps: Double = 1e-8, weightDecay: Double = 1e-2
    ) throws {
        guard learningRate >= 0, eps >= 0, weightDecay >= 0, (0..<1).contains(betas.0), (0..<1).contains(betas.1) else {
            throw OptimizerError.invalidHyperparameters("AdamW: invalid hyper-parameters lr=\(learningRate) betas=\(betas) eps=\(eps) wd=\(weightDecay)")
        }
        self.parameters = parameters
        self.learningRate = learningRate
        self.betas = betas
        self.eps = eps
        self.weightDecay = weightDecay
    }

    public func step() throws {
        if firstMoments.isEmpty {
            firstMoments = try parameters.map { try $0.detached().zerosLike() }
            secondMoments = try parameters.map { try $0.detached().zerosLike() }
        }
        stepCount += 1
        let (b1, b2) = betas
        let correction1 = 1 - Foundation.pow(b1, Double(stepCount))
        let correction2 = 1 - Foundation.pow(b2, Double(stepCount))
        let stepSize = learningRate / correction1
        let correction2Root = correction2.squareRoot()
        var params: [Tensor] = [], grads: [Tensor] = [], ms: [Tensor] = [], vs: [Tensor] = []
        for (i, p) in parameters.enumerated() {
            guard let g = p.grad else { continue }
            params.append(try p.detached())
            grads.append(g)
            ms.append(firstMoments[i])
            vs.append(secondMoments[i])
        }
        guard !params.isEmpty else { return }
        // A few multi-tensor calls for the whole model (on CUDA, eight launches per parameter
        // made the step launch-bound); the same per-tensor arithmetic on the CPU.
        try Torch.withNoGrad {
            try Tensor.adamWUpdate(
                parameters: params, gradients: grads, firstMoments: ms, secondMoments: vs,
                learningRate: learningRate, betas: betas, eps: eps, weightDecay: weightDecay,
                stepSize: stepSize, correction2Root: correction2Root)
        }
    }

    /// The optimizer's state for checkpoints: step count and moments (keys `m.i`, `v.i`).
    public func stateTensors() -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (i, t) in firstMoments.enumerated() { out["m.\(i)"] = t }
        for (i, t) in secondMoments.enumerated() { out["v.\(i)"] = t }
        return out
    }

    /// Restores ``stateTensors()`` and the step count.
    public func restore(stepCount: Int, state: [String: Tensor]) throws {
        guard !state.isEmpty else {
            self.stepCount = stepCount
            firstMoments = []
            secondMoments = []
            return
        }
        var m: [Tensor] = [], v: [Tensor] = []
        for (i, p) in parameters.enumerated() {
            guard let mi = state["m.\(i)"], let vi = state["v.\(i)"] else {
                throw ModuleError.missingKey("optimizer moment \(i)")
            }
            guard mi.shape == p.shape, vi.shape == p.shape else {
                throw ModuleError.shapeMismatch(key: "optimizer moment \(i)", expected: p.shape, found: mi.shape)
            }
            // A checkpoint's moments are read onto the CPU; they live where their parameter does.
            let device = try p.device
            m.append(try mi.to(device).to(p.dtype).contiguous())
            v.append(try vi.to(device).to(p.dtype).contiguous())
        }
        firstMoments = m
        secondMoments = v
        self.stepCount = stepCount
    }
}

/// Scales all gradients so that their global L2 norm is at most `maxNorm` (as PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping.
@discardableResult
public func clipGradNorm(_ parameters: [Tensor], maxNorm: Double) throws -> Double {
    let grads = parameters.compactMap(\.grad)
    guard !grads.isEmpty else { return 0 }
    let total = try Torch.withNoGrad { () -> Double in
        try Tensor.norms(grads).norm().item()
    }
    let scale = maxNorm / (total + 1e-6)
    if scale < 1 {
        try Torch.withNoGrad { try Tensor.mulInPlace(grads, scale) }
    }
    return total
}

/// A learning-rate schedule: the rate for a (0-based) step.
public protocol LearningRateSchedule: Sendable {
    func learningRate(at step: Int) -> Double
}

/// Linear warm-up from 0 to `peak` over `warmupSteps`, then a cosine decay to `floor` at `totalSteps`.
public struct WarmupCosineSchedule: LearningRateSchedule, Codable, Equatable {
    public var peak: Double
    public var warmupSteps: Int
    public var totalSteps: Int
    public var floor: Double

    enum CodingKeys: String, CodingKey {
        case peak, floor, warmupSteps = "warmup_steps", totalSteps = "total_steps"
    }

    public init(peak: Double, warmupSteps: Int, totalSteps: Int, floor: Double = 0) {
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.floor = floor
    }

    public func learningRate(at step: Int) -> Double {
        if step < warmupSteps { return peak * Double(step + 1) / Double(warmupSteps) }
        let span = Swift.max(1, totalSteps - warmupSteps)
        let progress = Swift.min(1, Double(step - warmupSteps) / Double(span))
        return floor + (peak - floor) * 0.5 * (1 + Foundation.cos(Double.pi * progress))
    }
}

/// An exponential moving average of parameters with diffusers' `EMAModel` decay:
/// `decay = min(maxDecay, (1 + s) / (10 + s))` with `s = optimizationStep - 1` (0 on the first update,
/// so the first update copies the parameters), or the warm-up form `1 - (1 + s/invGamma)^-power`.
public final class ExponentialMovingAverage {
    public let shadow: [Tensor]
    public var maxDecay: Double
    public var minDecay: Double
    public var useWarmup: Bool
    public var invGamma: Double
    public var power: Double
    public private(set) var optimizationStep = 0

    public init(
        parameters: [Tensor], maxDecay: Double = 0.9999, minDecay: Double = 0, useWarmup: Bool = false,
        invGamma: Double = 1, power: Double = 2.0 / 3.0
    ) throws {
        shadow = try Torch.withNoGrad { try parameters.map { try $0.detached().to($0.dtype) * 1.0 } }
        self.maxDecay = maxDecay
        self.minDecay = minDecay
        self.useWarmup = useWarmup
        self.invGamma = invGamma
        self.power = power
    }

    /// The decay used for optimisation step `step` (1-based), as diffusers' `get_decay`.
    public func decay(atStep step: Int) -> Double {
        let s = Swift.max(0, step - 1)
        if s <= 0 { return 0 }
        let current = useWarmup ? 1 - Foundation.pow(1 + Double(s) / invGamma, -power) : (1 + Double(s)) / (10 + Double(s))
        return Swift.max(minDecay, Swift.min(current, maxDecay))
    }

    /// `shadow ← shadow + (1 - decay)(param - shadow)`.
    public func update(from parameters: [Tensor]) throws {
        optimizationStep += 1
        let d = decay(atStep: optimizationStep)
        let current = try parameters.map { try $0.detached() }
        try Torch.withNoGrad { try Tensor.lerpInPlace(shadow, towards: current, weight: 1 - d) }
    }

    /// Restores the step counter (for resuming).
    public func restore(optimizationStep: Int) { self.optimizationStep = optimizationStep }

    /// Copies the averaged values into `parameters` (e.g. before sampling or saving).
    public func copy(to parameters: [Tensor]) throws {
        try Torch.withNoGrad {
            for (p, s) in zip(parameters, shadow) { try p.copy(from: s) }
        }
    }
}

/// An optimizer built with hyper-parameters outside their ranges.
public enum OptimizerError: Error, Equatable, CustomStringConvertible {
    case invalidHyperparameters(String)

    public var description: String {
        switch self {
        case let .invalidHyperparameters(message): message
        }
    }
}
