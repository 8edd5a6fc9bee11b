import Testing
import Torch
import NN
import TestSupport

/// A small conv net: two convolutions, global pooling, a linear head.
final class TinyConvNet: Module {
    let conv1: Conv2d
    let norm: GroupNorm
    let conv2: Conv2d
    let head: Linear

    init(classes: Int) throws {
        conv1 = try Conv2d(1, 8, kernel: 3, padding: 1)
        norm = try GroupNorm(groups: 2, channels: 8)
        conv2 = try Conv2d(8, 8, kernel: 3, stride: 2, padding: 1)
        head = try Linear(8 * 4 * 4, classes)
        super.init()
    }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        var h = try norm(conv1(x)).silu()
        h = try conv2(h).silu()
        return try head(h.flattened(from: 1))
    }
}

@Suite("Training with AdamW")
struct TrainingTests {
    /// Images of 8×8 with a bright 3×3 square in one of four quadrants; the class is the quadrant.
    static func quadrantData(count: Int, generator: Generator) throws -> (Tensor, Tensor) {
        var pixels = [Float](repeating: 0, count: count * 64)
        var labels = [Int64]()
        let noise = try Tensor.rand([count * 64], generator: generator).scalars(as: Float.self)
        let positions = try Tensor.randint(0, 4, shape: [count, 3], generator: generator).scalars(as: Int64.self)
        for i in 0..<count {
            let q = Int(positions[3 * i])
            let dy = Int(positions[3 * i + 1]) % 2, dx = Int(positions[3 * i + 2]) % 2
            let (y0, x0) = ((q / 2) * 4 + dy, (q % 2) * 4 + dx)
            for y in y0..<(y0 + 3) { for x in x0..<(x0 + 3) { pixels[i * 64 + y * 8 + x] = 1 } }
            for j in 0..<64 { pixels[i * 64 + j] += 0.3 * noise[i * 64 + j] }
            labels.append(Int64(q))
        }
        return (try Tensor(pixels, shape: [count, 1, 8, 8]), try Tensor(labels, shape: [count]))
    }

    /// The same task trains as well in bf16 mixed precision (products and convolutions in
    /// bfloat16, weights and AdamW in float32).
    @Test(arguments: [Precision.fp32, .bf16])
    func convNetFitsQuadrantTask(precision: Precision) throws {
        try Torch.withSeed(7) {
            let generator = Generator(seed: 11)
            let (x, y) = try Self.quadrantData(count: 128, generator: generator)
            let (testX, testY) = try Self.quadrantData(count: 64, generator: generator)
            let model = try TinyConvNet(classes: 4)
            try model.requireGrad()
            let optimizer = try AdamW(parameters: model.parameters(), learningRate: 1e-2, weightDecay: 1e-4)
            let schedule = WarmupCosineSchedule(peak: 1e-2, warmupSteps: 10, totalSteps: 150)
            var firstLoss = 0.0, lastLoss = 0.0
            for step in 0..<150 {
                optimizer.learningRate = schedule.learningRate(at: step)
                let batch = try Tensor.randint(0, 128, shape: [32], generator: generator)
                let loss = try Torch.withPrecision(precision, on: .cpu) {
                    try model(x.indexSelect(dim: 0, batch)).crossEntropy(targets: y.indexSelect(dim: 0, batch))
                }
                try optimizer.zeroGrad()
                try loss.backward()
                try clipGradNorm(optimizer.parameters, maxNorm: 1.0)
                try optimizer.step()
                if step == 0 { firstLoss = try loss.item() }
                lastLoss = try loss.item()
            }
            let predictions = try Torch.withNoGrad { try Torch.withPrecision(precision, on: .cpu) { try model(testX).argmax(dim: 1) } }
            let accuracy = try predictions.eq(testY).to(.float32).mean().item()
            #expect(lastLoss < firstLoss * 0.2, "loss \(firstLoss) -> \(lastLoss)")
            #expect(accuracy >= 0.95, "held-out accuracy \(accuracy)")
        }
    }

    /// AdamW's update equals PyTorch's formula, checked by hand on a scalar.
    @Test func adamWMatchesReferenceFormula() throws {
        let p = try Tensor([Float(1.0)], shape: [1]).requiringGrad()
        let opt = try AdamW(parameters: [p], learningRate: 0.1, betas: (0.9, 0.999), eps: 1e-8, weightDecay: 0.1)
        var (value, m, v) = (1.0, 0.0, 0.0)
        for t in 1...3 {
            try opt.zeroGrad()
            try (p * p).sum().backward()  // grad = 2p
            try opt.step()
            let g = 2 * value
            value *= 1 - 0.1 * 0.1
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            let mHat = m / (1 - pow(0.9, Double(t))), vHat = v / (1 - pow(0.999, Double(t)))
            value -= 0.1 * mHat / (vHat.squareRoot() + 1e-8)
        }
        #expect(try Swift.abs(p.item() - value) < 1e-5)
    }

    /// The multi-tensor update of a whole model equals the per-parameter formula, parameter by
    /// parameter: the lists stay aligned when a parameter has no gradient (it is left alone).
    @Test func adamWUpdatesEveryParameterLikeTheFormula() throws {
        let g = Generator(seed: 3)
        let shapes = [[4, 3], [5], [2, 2, 3], [7]]
        let params = try shapes.map { try Tensor.randn($0, generator: g).requiringGrad() }
        let start = try params.map { try $0.scalars(as: Float.self).map(Double.init) }
        let opt = try AdamW(parameters: params, learningRate: 0.05, betas: (0.9, 0.99), eps: 1e-8, weightDecay: 0.2)
        var values = start
        var m = start.map { [Double](repeating: 0, count: $0.count) }, v = m
        for t in 1...3 {
            try opt.zeroGrad()
            // Parameter 2 takes no part in the loss: no gradient, no update (not even decay).
            var loss = try Tensor(scalar: Float(0))
            for i in [0, 1, 3] { loss = try loss + (params[i] * params[i] * Double(i + 1)).sum() }
            try loss.backward()
            try opt.step()
            for i in [0, 1, 3] {
                for j in values[i].indices {
                    let grad = 2 * Double(i + 1) * values[i][j]
                    values[i][j] *= 1 - 0.05 * 0.2
                    m[i][j] = 0.9 * m[i][j] + 0.1 * grad
                    v[i][j] = 0.99 * v[i][j] + 0.01 * grad * grad
                    let mHat = m[i][j] / (1 - pow(0.9, Double(t))), vHat = v[i][j] / (1 - pow(0.99, Double(t)))
                    values[i][j] -= 0.05 * mHat / (vHat.squareRoot() + 1e-8)
                }
            }
        }
        for (i, p) in params.enumerated() {
            let got = try p.scalars(as: Float.self).map(Double.init)
            let scale = values[i].map(Swift.abs).max() ?? 1
            for (a, b) in zip(got, values[i]) { #expect(Swift.abs(a - b) <= 1e-5 * Swift.max(scale, 1), "parameter \(i)") }
        }
        #expect(try params[2].scalars(as: Float.self).map(Double.init) == start[2])
    }

    /// The one-pass AdamW kernel (16 lanes at a time where the CPU has AVX-512, the tail one
    /// element at a time) equals the update computed element by element in float32, bit for
    /// bit, with the multi-tensor path's operations in its order: sizes with tails and across
    /// the kernel's 16384-element chunks, both branches of the moment's lerp, with and without
    /// weight decay.
    @Test(arguments: [(0.9, 0.01), (0.3, 0.0)])
    func fusedAdamWIsBitIdenticalToTheElementwiseFormula(beta1: Double, weightDecay: Double) throws {
        let g = Generator(seed: 5)
        let sizes = [1000, 17, 16384 + 37, 5]
        func random(_ n: Int, positive: Bool = false) throws -> [Float] {
            let r = try Tensor.randn([n], generator: g).scalars(as: Float.self)
            return positive ? r.map { $0 * $0 * 1e-3 } : r
        }
        let p = try sizes.map { try random($0) }, grad = try sizes.map { try random($0) }
        let m = try sizes.map { try random($0) }, v = try sizes.map { try random($0, positive: true) }
        let tensors = { (a: [[Float]]) in try zip(a, sizes).map { try Tensor($0, shape: [$1]) } }
        let (tp, tg, tm, tv) = (try tensors(p), try tensors(grad), try tensors(m), try tensors(v))
        let (lr, beta2, eps, stepSize, root) = (0.002, 0.999, 1e-8, 0.0031, 0.7)
        try Tensor.adamWUpdate(
            parameters: tp, gradients: tg, firstMoments: tm, secondMoments: tv, learningRate: lr,
            betas: (beta1, beta2), eps: eps, weightDecay: weightDecay, stepSize: stepSize, correction2Root: root)
        let keep = Float(1 - lr * weightDecay), w1 = Float(1 - beta1), b2 = Float(beta2), w2 = Float(1 - beta2)
        let (fRoot, fEps, step) = (Float(root), Float(eps), Float(-stepSize))
        for t in sizes.indices {
            var ep = p[t], em = m[t], ev = v[t]
            for i in ep.indices {
                let gi = grad[t][i]
                em[i] = w1 < 0.5 ? em[i] + w1 * (gi - em[i]) : gi - (gi - em[i]) * (1 - w1)
                ev[i] = ev[i] * b2 + w2 * gi * gi
                let denom = ev[i].squareRoot() / fRoot + fEps
                ep[i] = (weightDecay != 0 ? ep[i] * keep : ep[i]) + step * (em[i] / denom)
            }
            #expect(try tm[t].scalars(as: Float.self) == em, "first moments of tensor \(t)")
            #expect(try tv[t].scalars(as: Float.self) == ev, "second moments of tensor \(t)")
            #expect(try tp[t].scalars(as: Float.self) == ep, "parameters of tensor \(t)")
        }
    }

    @Test func clipGradNormScalesToMaxNorm() throws {
        let a = try Tensor([Float(3), 0], shape: [2]).requiringGrad()
        let b = try Tensor([Float(0), 4], shape: [2]).requiringGrad()
        try ((a * a).sum() * 0.5 + (b * b).sum() * 0.5).backward()  // grads (3,0) and (0,4): norm 5
        let norm = try clipGradNorm([a, b], maxNorm: 1)
        #expect(Swift.abs(norm - 5) < 1e-5)
        let clipped = try Tensor.cat([a.grad!, b.grad!]).norm().item()
        #expect(Swift.abs(clipped - 1) < 1e-4)
    }

    @Test func warmupCosineSchedule() {
        let s = WarmupCosineSchedule(peak: 1, warmupSteps: 10, totalSteps: 110, floor: 0.1)
        #expect(Swift.abs(s.learningRate(at: 0) - 0.1) < 1e-12)
        #expect(Swift.abs(s.learningRate(at: 9) - 1) < 1e-12)
        #expect(Swift.abs(s.learningRate(at: 60) - 0.55) < 1e-12)
        #expect(Swift.abs(s.learningRate(at: 110) - 0.1) < 1e-12)
    }

    /// diffusers' EMAModel: decay 0 on the first update (copy), then (1+s)/(10+s) capped by maxDecay.
    @Test func emaFollowsDiffusersDecay() throws {
        let p = try Tensor([Float(0)], shape: [1])
        let ema = try ExponentialMovingAverage(parameters: [p], maxDecay: 0.5)
        #expect(ema.decay(atStep: 1) == 0)
        #expect(Swift.abs(ema.decay(atStep: 2) - 2.0 / 11.0) < 1e-12)
        #expect(ema.decay(atStep: 1000) == 0.5)
        try p.fill(10)
        try ema.update(from: [p])  // decay 0: shadow = 10
        #expect(try ema.shadow[0].item() == 10)
        try p.fill(21)
        try ema.update(from: [p])  // decay 2/11: 10 + 9/11 * 11 = 19
        #expect(try Swift.abs(ema.shadow[0].item() - 19) < 1e-5)
    }
}

private func pow(_ a: Double, _ b: Double) -> Double {
    var r = 1.0
    for _ in 0..<Int(b) { r *= a }
    return r
}
