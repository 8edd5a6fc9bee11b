import Foundation
import TestSupport
import Testing
import Torch

@Suite("Tensor basics")
struct TensorTests {
    @Test func roundTripsArraysOfEveryScalarType() throws {
        #expect(try Tensor([Float(1.5), -2, 3], shape: [3]).scalars(as: Float.self) == [1.5, -2, 3])
        #expect(try Tensor([1.25, 2.5], shape: [2, 1]).scalars(as: Double.self) == [1.25, 2.5])
        #expect(try Tensor([Int64(7), -8], shape: [2]).scalars(as: Int64.self) == [7, -8])
        #expect(try Tensor([Int32(7)], shape: [1]).scalars(as: Int32.self) == [7])
        #expect(try Tensor([UInt8(255), 0], shape: [2]).scalars(as: UInt8.self) == [255, 0])
        #expect(try Tensor([true, false], shape: [2]).scalars(as: Bool.self) == [true, false])
        let s = try Tensor(scalar: Float(4))
        #expect(try s.shape == [] && s.count == 1 && s.item() == 4)
        let empty = try Tensor([Float](), shape: [0, 3])
        #expect(try empty.shape == [0, 3] && empty.scalars(as: Float.self).isEmpty)
    }

    @Test func rejectsDataThatDoesNotFillTheShape() {
        #expect(throws: TorchError.self) { try Tensor([Float(1), 2, 3], shape: [2, 2]) }
        #expect(throws: TorchError.self) { try Tensor([Float(1)], shape: [-1]) }
        #expect(throws: TorchError.self) { try Tensor([Float(1)], shape: [1]).scalars(as: Double.self) }
    }

    @Test func broadcastingArithmeticAndScalars() throws {
        let a = try Tensor([Float(1), 2, 3, 4, 5, 6], shape: [2, 3])
        let b = try Tensor([Float(10), 20, 30], shape: [3])
        #expect(try (a + b).scalars(as: Float.self) == [11, 22, 33, 14, 25, 36])
        #expect(try (a * 2 - 1).scalars(as: Float.self) == [1, 3, 5, 7, 9, 11])
        #expect(try (1 - a).scalars(as: Float.self) == [0, -1, -2, -3, -4, -5])
        #expect(try (12 / a).dtype == .float32)
        #expect(try (a / b).scalars(as: Float.self)[0] == 0.1)
        #expect(try (-a).sum().item() == -21)
        // Scalars do not promote float32 to float64.
        #expect(try (a * 0.5).dtype == .float32)
    }

    @Test func shapeErrorsCarryLibtorchsMessage() throws {
        let a = try Tensor.zeros([2, 3]), b = try Tensor.zeros([4])
        do {
            _ = try a + b
            Issue.record("expected an error")
        } catch let TorchError.libtorch(operation, message) {
            #expect(operation.contains("add"))
            #expect(message.contains("must match"))
            #expect(!message.contains("frame #"))  // no C++ backtrace
        }
        #expect(throws: TorchError.self) { try a.matmul(a) }
        #expect(throws: TorchError.self) { try a.reshaped([5]) }
        #expect(throws: TorchError.self) { try a.select(dim: 0, 5) }
        #expect(throws: TorchError.self) { try a.conv2d(weight: Tensor.zeros([1, 1, 3, 3])) }
        #expect(throws: TorchError.self) { try Tensor.cat([a, b]) }
        #expect(throws: TorchError.self) { try a.size(2) }
        #expect(throws: TorchError.self) { try a.chunked(0) }
    }

    @Test func reductions() throws {
        let a = try Tensor([Float(1), 2, 3, 4, 5, 6], shape: [2, 3])
        #expect(try a.sum().item() == 21)
        #expect(try a.sum(dims: [0]).scalars(as: Float.self) == [5, 7, 9])
        #expect(try a.mean(dims: [1], keepDim: true).shape == [2, 1])
        #expect(try a.max().item() == 6)
        #expect(try a.min(dims: [1]).scalars(as: Float.self) == [1, 4])
        #expect(try a.argmax(dim: 1).scalars(as: Int64.self) == [2, 2])
        #expect(try Swift.abs(a.variance().item() - 35.0 / 12.0) < 1e-5)
        #expect(try Swift.abs(a.variance(unbiased: true).item() - 3.5) < 1e-5)
        #expect(try a.cumsum(dim: 1).scalars(as: Float.self) == [1, 3, 6, 4, 9, 15])
        #expect(try Swift.abs(a.norm().item() - Double(91).squareRoot()) < 1e-5)
        #expect(try a.quantile(0.5).item() == 3.5)
        #expect(try a.quantile(1.0, dim: 1).scalars(as: Float.self) == [3, 6])
        #expect(throws: TorchError.self) { try a.quantile(1.5) }
        #expect(try Swift.abs(a.logsumexp().item() - 6.456193) < 1e-5)
    }

    @Test func shapeOperations() throws {
        let a = try Tensor.arange(0, 24).reshaped([2, 3, 4])
        #expect(try a.permuted([2, 0, 1]).shape == [4, 2, 3])
        #expect(try a.transposed(0, 2).contiguous().isContiguous)
        #expect(try a.slice(dim: 2, 1, 3).scalars(as: Float.self) == [1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22])
        #expect(try a.select(dim: 1, 2).scalars(as: Float.self) == [8, 9, 10, 11, 20, 21, 22, 23])
        #expect(try a.chunked(2, dim: 2).map(\.shape) == [[2, 3, 2], [2, 3, 2]])
        #expect(try a.split(sizes: [1, 3], dim: 2).map(\.shape) == [[2, 3, 1], [2, 3, 3]])
        #expect(try Tensor.cat([a, a], dim: 1).shape == [2, 6, 4])
        #expect(try Tensor.stack([a, a], dim: 0).shape == [2, 2, 3, 4])
        #expect(try a.flattened(from: 1).shape == [2, 12])
        #expect(try a.unsqueezed(0).squeezed(0).shape == [2, 3, 4])
        #expect(try Tensor.ones([1, 3]).expanded([2, 3]).sum().item() == 6)
        let idx = try Tensor([Int64(2), 0], shape: [2])
        #expect(try a.select(dim: 0, 0).select(dim: 0, 0).indexSelect(dim: 0, idx).scalars(as: Float.self) == [2, 0])
        let g = try Tensor([Int64(3), 0], shape: [1, 2])
        #expect(try a.select(dim: 0, 0).slice(dim: 0, 0, 1).gather(dim: 1, g).scalars(as: Float.self) == [3, 0])
        #expect(try Tensor.ones([3, 3]).tril().sum().item() == 6)
        #expect(try a.flipped([2]).select(dim: 0, 0).select(dim: 0, 0).scalars(as: Float.self) == [3, 2, 1, 0])
        let c = try Tensor([true, false], shape: [2])
        #expect(try Tensor.where(c, Tensor.ones([2]), Tensor.zeros([2])).scalars(as: Float.self) == [1, 0])
        #expect(try Tensor([Float(-2), 0.5, 3], shape: [3]).clamped(min: -1, max: 1).scalars(as: Float.self) == [-1, 0.5, 1])
    }

    @Test func kernelsMatchHandComputedValues() throws {
        // A 3x3 box filter over a 4x4 ramp with padding 1.
        let x = try Tensor.arange(0, 16).reshaped([1, 1, 4, 4])
        let w = try Tensor.ones([1, 1, 3, 3])
        let y = try x.conv2d(weight: w, padding: 1)
        #expect(try y.select(dim: 2, 1).select(dim: 2, 1).item() == 45)  // sum of 0,1,2,4,5,6,8,9,10
        #expect(try x.avgPool2d(kernel: 2).scalars(as: Float.self) == [2.5, 4.5, 10.5, 12.5])
        #expect(try x.interpolate(size: (8, 8)).shape == [1, 1, 8, 8])
        let s = try Tensor([Float(0), Float(log(3.0))], shape: [1, 2]).softmax(dim: 1).scalars(as: Float.self)
        #expect(Swift.abs(s[0] - 0.25) < 1e-6 && Swift.abs(s[1] - 0.75) < 1e-6)
        let ln = try Tensor([Float(1), 3], shape: [1, 2]).layerNorm([2], weight: nil, bias: nil, eps: 0)
        #expect(try ln.scalars(as: Float.self) == [-1, 1])
        let table = try Tensor.arange(0, 6).reshaped([3, 2])
        #expect(try table.embedding(Tensor([Int64(2)], shape: [1])).scalars(as: Float.self) == [4, 5])
        let logits = try Tensor([Float(0), 0], shape: [1, 2])
        #expect(try Swift.abs(logits.crossEntropy(targets: Tensor([Int64(1)], shape: [1])).item() - log(2.0)) < 1e-6)
    }

    @Test func eighOfSymmetricMatrix() throws {
        let m = try Tensor([2.0, 1, 1, 2], shape: [2, 2])
        let (values, vectors) = try m.eigh()
        #expect(TestTolerance.close(try values.scalars(as: Double.self), [1, 3]))
        let rebuilt = try vectors.matmul(Tensor.eye(2, dtype: .float64) * values).matmul(vectors.transposed(0, 1))
        #expect(try (rebuilt - m).abs().max().item() < 1e-12)
    }

    @Test func generatorsAreReproducibleAndRestorable() throws {
        let g1 = Generator(seed: 42), g2 = Generator(seed: 42)
        let a = try Tensor.randn([5], generator: g1).scalars(as: Float.self)
        let b = try Tensor.randn([5], generator: g2).scalars(as: Float.self)
        #expect(a == b)
        let state = try g1.state()
        let next = try Tensor.rand([4], generator: g1).scalars(as: Float.self)
        try g1.setState(state)
        #expect(try Tensor.rand([4], generator: g1).scalars(as: Float.self) == next)
        #expect(throws: TorchError.self) { try g1.setState([1, 2, 3]) }
        let perm = try Tensor.randperm(10, generator: g2).scalars(as: Int64.self)
        #expect(perm.sorted() == Array(0..<10))
    }

    /// Inside `withSeed`, draws given no generator come from that scope's own generator: what a
    /// generator with the seed draws, in order, whatever other tasks do to the global generator
    /// at the same time; outside the scope there is none.
    @Test func seededScopesBelongToTheirTask() async throws {
        let expected = try { () throws -> [Float] in
            let g = Generator(seed: 9)
            return try Tensor.randn([6], generator: g).scalars(as: Float.self)
                + Tensor.rand([3], generator: g).scalars(as: Float.self)
        }()
        #expect(Generator.scoped == nil)
        let draws = try await withThrowingTaskGroup(of: [Float].self) { group in
            for i in 0..<8 {
                group.addTask {
                    if i.isMultiple(of: 2) {  // another task seeds and draws from the global generator meanwhile
                        for _ in 0..<50 { Torch.manualSeed(UInt64(i)); _ = try Tensor.randn([64]) }
                        return expected
                    }
                    return try Torch.withSeed(9) {
                        let normal = try Tensor.randn([6]).scalars(as: Float.self)
                        _ = try Tensor.randn([64], generator: Generator(seed: 1))  // an explicit generator leaves the scope's alone
                        return normal + (try Tensor.rand([3]).scalars(as: Float.self))
                    }
                }
            }
            return try await group.reduce(into: [[Float]]()) { $0.append($1) }
        }
        #expect(draws.allSatisfy { $0 == expected }, "\(draws)")
        #expect(Generator.scoped == nil)
    }

    @Test func autogradAndNoGrad() throws {
        let x = try Tensor([Float(1), 2, 3], shape: [3]).requiringGrad()
        try (x * x).sum().backward()
        #expect(try x.grad!.scalars(as: Float.self) == [2, 4, 6])
        try (x * 3).sum().backward()  // accumulates
        #expect(try x.grad!.scalars(as: Float.self) == [5, 7, 9])
        try x.zeroGrad()
        #expect(x.grad == nil)
        let y = try Torch.withNoGrad { try x * 2 }
        #expect(!y.requiresGrad)
        #expect(Torch.isGradEnabled)
        let z = try Torch.withInferenceMode { try x * 2 }
        #expect(!z.requiresGrad)
        // backward from a tensor outside any graph is an error, not a crash
        #expect(throws: TorchError.self) { try Tensor.zeros([1]).backward() }
        #expect(!(try x.detached()).requiresGrad)
    }

    /// The multi-tensor lerp (the EMA's update) equals libtorch's per-tensor lerp on float32
    /// lists of several chunks (one-pass path) and on non-contiguous ones (multi-tensor path),
    /// with either of lerp's two formulas (weight below and above ½).
    @Test func multiTensorLerpEqualsPerTensorLerp() throws {
        let g = Generator(seed: 12)
        for weight in [0.005, 0.3, 0.8] {
            for contiguous in [true, false] {
                let shapes = [[200, 300], [7, 3], [1, 1]]
                var a = try shapes.map { try Tensor.randn($0, generator: g) }
                if !contiguous { a = try a.map { try $0.transposed(0, 1) } }
                let b = try a.map { try Tensor.randn($0.shape, generator: g) }
                let expected = try zip(a, b).map { p, q -> Tensor in
                    let e = try Tensor.zeros(p.shape)
                    try e.copy(from: p)
                    try e.lerpInPlace(q, weight: weight)
                    return e
                }
                try Tensor.lerpInPlace(a, towards: b, weight: weight)
                for (got, want) in zip(a, expected) {
                    let scale = try want.abs().max().item() as Double
                    #expect(try TestSupport.maxAbsDiff(got, want) <= 1e-6 * scale, "weight \(weight), contiguous \(contiguous)")
                }
                // Not the untouched values: the update happened.
                #expect(try TestSupport.maxAbsDiff(a[0], b[0]) > 0)
            }
        }
    }

    @Test func inPlaceOperations() throws {
        let a = try Tensor([Float(1), 2], shape: [2])
        let b = try Tensor([Float(3), 5], shape: [2])
        try a.addInPlace(b, alpha: 2)
        #expect(try a.scalars(as: Float.self) == [7, 12])
        try a.addcmulInPlace(b, b, value: 0.5)
        #expect(try a.scalars(as: Float.self) == [11.5, 24.5])
        try a.lerpInPlace(b, weight: 1)
        #expect(try a.scalars(as: Float.self) == [3, 5])
        try Tensor.lerpInPlace([a], towards: [Tensor.zeros([2])], weight: 0.5)
        #expect(try a.scalars(as: Float.self) == [1.5, 2.5])
        try a.copy(from: Tensor.full([2], value: 9))
        #expect(try a.scalars(as: Float.self) == [9, 9])
        #expect(throws: TorchError.self) { try a.copy(from: Tensor.zeros([3])) }
        let v = try Tensor.zeros([3])
        try v.setData(Tensor.ones([2, 2], dtype: .float64))
        #expect(v.shape == [2, 2] && v.dtype == .float64)
    }

    @Test func threadCountIsSettable() {
        let before = Torch.numThreads
        Torch.numThreads = 2
        #expect(Torch.numThreads == 2)
        if Torch.libtorchVersion.hasPrefix("1.") {
            // Debian's libtorch calls OpenBLAS, whose own pool follows (the project's set-up
            // installs libopenblas0-pthread; without it matmul is ~20× slower, so its absence is a
            // failure here too). An explicit OPENBLAS_NUM_THREADS wins over the setting.
            let explicit = ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"].flatMap { Int($0) }
            #expect(Torch.blasThreads == (explicit ?? 2), "OpenBLAS not found or not following --threads")
            Torch.numThreads = 1
            #expect(Torch.blasThreads == (explicit ?? 1))
        } else {
            // PyPI's torch carries MKL inside libtorch_cpu, and libtorch's setting drives it.
            #expect(Torch.parallelInfo.contains("mkl_get_max_threads() : 2"), "\(Torch.parallelInfo)")
            Torch.numThreads = 1
            #expect(Torch.parallelInfo.contains("mkl_get_max_threads() : 1"), "\(Torch.parallelInfo)")
        }
        Torch.numThreads = before
        #expect(Torch.parallelInfo.contains("ATen"))
    }
}

enum TestTolerance {
    static func close(_ a: [Double], _ b: [Double], atol: Double = 1e-9) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { Swift.abs($0 - $1) <= atol }
    }
}
