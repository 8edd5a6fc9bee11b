import NN
import TestSupport
import Testing
import Torch

@Suite("Kernels: the fast paths equal the reference ones")
struct KernelTests {
    @Test(arguments: [[600, 64], [4, 256, 64], [2, 3, 70, 64], [100, 64], [3, 5, 64]])
    func linearViaConvolutionEqualsLinear(shape: [Int]) throws {
        let g = Generator(seed: 3)
        let x = try Tensor.randn(shape, generator: g)
        let w = try Tensor.randn([48, 64], generator: g), b = try Tensor.randn([48], generator: g)
        let fast = try x.linearViaConvolution(weight: w, bias: b)
        #expect(fast.shape == Array(shape.dropLast()) + [48])
        #expect(try TestSupport.relativeDiff(fast, x.linear(weight: w, bias: b)) < 1e-4)
        #expect(try TestSupport.relativeDiff(x.linearViaConvolution(weight: w, bias: nil), x.linear(weight: w, bias: nil)) < 1e-4)
    }

    /// bmm and baddbmm (``Kernels/directBatchedProducts``: the whole batch as one oneDNN matmul,
    /// or one BLAS call per entry) equal a product per entry through `matmul`, values and
    /// gradients, for row-major and transposed operands, a broadcast bias, beta and alpha.
    @Test(.serialized, arguments: [false, true], [true, false])
    func batchedProductsEqualPerEntryProducts(transposedKeys: Bool, oneDNN: Bool) throws {
        Torch.setOneDNNBatchedProducts(oneDNN)
        defer { Torch.setOneDNNBatchedProducts(true) }
        let callsBefore = Torch.oneDNNBatchedProductCalls
        defer {
            if oneDNN && Torch.winogradConvolutionsCompiled {
                #expect(Torch.oneDNNBatchedProductCalls > callsBefore, "the products ran as oneDNN matmuls")
            }
        }
        let g = Generator(seed: 8)
        let q = try Tensor.randn([6, 33, 16], generator: g).requiringGrad()
        let kStored = try Tensor.randn(transposedKeys ? [6, 21, 16] : [6, 16, 21], generator: g).requiringGrad()
        let bias = try Tensor.randn([6, 1, 21], generator: g).requiringGrad()
        func keys() throws -> Tensor { transposedKeys ? try kStored.transposed(1, 2) : kStored }
        func reference(_ withBias: Bool) throws -> Tensor {
            let k = try keys()
            let rows = try (0..<6).map { i in try q.select(dim: 0, i).matmul(k.select(dim: 0, i)) }
            let product = try Tensor.stack(rows)
            return withBias ? try bias * 0.5 + product * 0.25 : product
        }
        for withBias in [false, true] {
            let fast = withBias ? try bias.baddbmm(q, keys(), beta: 0.5, alpha: 0.25) : try q.bmm(keys())
            let slow = try reference(withBias)
            #expect(fast.shape == [6, 33, 21])
            #expect(try TestSupport.relativeDiff(fast, slow) < 1e-5)
            let weights = try Tensor.randn([6, 33, 21], generator: g)
            var grads: [[Tensor]] = []
            for out in [fast, slow] {
                for p in [q, kStored, bias] { try p.zeroGrad() }
                try (out * weights).sum().backward()
                grads.append(try [q, kStored].map { try #require($0.grad) } + (withBias ? [try #require(bias.grad)] : []))
            }
            for (a, b) in zip(grads[0], grads[1]) { #expect(try TestSupport.relativeDiff(a, b) < 1e-5) }
        }
    }

    @Test func linearViaConvolutionGradientsEqualLinear() throws {
        let g = Generator(seed: 4)
        let x0 = try Tensor.randn([4, 128, 32], generator: g)
        let w0 = try Tensor.randn([16, 32], generator: g), b0 = try Tensor.randn([16], generator: g)
        func grads(_ fast: Bool) throws -> [Tensor] {
            let x = try x0.detached().to(.float32).requiringGrad(), w = try (w0 * 1.0).detached().requiringGrad()
            let b = try (b0 * 1.0).detached().requiringGrad()
            let y = fast ? try x.linearViaConvolution(weight: w, bias: b) : try x.linear(weight: w, bias: b)
            try (y * y).sum().backward()
            return [x.grad!, w.grad!, b.grad!]
        }
        for (a, b) in zip(try grads(true), try grads(false)) { #expect(try TestSupport.relativeDiff(a, b) < 1e-3) }
    }

    /// The linear layer as 1×1 convolutions with its own backward (the weight gradient as one
    /// GEMM where oneDNN's headers are there) against float64 `linear`, for each combination of
    /// what needs a gradient: a frozen weight keeps no input for the backward pass, an input
    /// without gradient gets none.
    @Test(arguments: [(true, true), (true, false), (false, true)])
    func linearViaConvolutionGradientsEqualFloat64(inputGrad: Bool, weightGrad: Bool) throws {
        let g = Generator(seed: 12)
        let x0 = try Tensor.randn([3, 256, 48], generator: g), w0 = try Tensor.randn([80, 48], generator: g) * 0.2
        let b0 = try Tensor.randn([80], generator: g), upstream = try Tensor.randn([3, 256, 80], generator: g)
        func run(_ dtype: DType) throws -> [Tensor?] {
            let x = try x0.to(dtype).detached(), w = try w0.to(dtype).detached(), b = try b0.to(dtype).detached()
            if inputGrad { try x.requiringGrad() }
            if weightGrad { try w.requiringGrad(); try b.requiringGrad() }
            let y = dtype == .float32 ? try x.linearViaConvolution(weight: w, bias: b) : try x.linear(weight: w, bias: b)
            try (y * upstream.to(dtype)).sum().backward()
            return [y, x.grad, w.grad, b.grad]
        }
        let fast = try run(.float32), exact = try run(.float64)
        for (name, (a, b)) in zip(["output", "input grad", "weight grad", "bias grad"], zip(fast, exact)) {
            #expect((a == nil) == (b == nil), "\(name)")
            if let a, let b { #expect(try TestSupport.relativeDiff(a.to(.float64), b) < 1e-5, "\(name)") }
        }
        #expect((fast[1] != nil) == inputGrad && (fast[2] != nil) == weightGrad)
    }

    @Test(arguments: [false, true])
    func fusedAttentionEqualsReference(cross: Bool) throws {
        try Torch.withSeed(5) {
            let attention = try MultiHeadAttention(queryDim: 32, contextDim: cross ? 24 : nil, heads: 4)
            let g = Generator(seed: 6)
            let x = try Tensor.randn([3, 20, 32], generator: g)
            let context = cross ? try Tensor.randn([3, 7, 24], generator: g) : nil
            let m = cross ? 7 : 20
            let mask = try Tensor((0..<(3 * m)).map { $0 % m < 2 + $0 / m * 2 }, shape: [3, m])
            for keyMask in [nil, mask] {
                let reference = try attention.attend(x, context: context, keyMask: keyMask, fused: false)
                #expect(try TestSupport.relativeDiff(attention.attend(x, context: context, keyMask: keyMask, fused: true), reference) < 1e-5)
            }
            if !cross {
                let reference = try attention.attend(x, causal: true, fused: false)
                #expect(try TestSupport.relativeDiff(attention.attend(x, causal: true, fused: true), reference) < 1e-5)
            } else {
                // The cache returns the keys and values of the first call for the same context.
                let cache = AttentionContextCache()
                let first = try attention.attend(x, context: context, keyMask: mask, cache: cache, fused: true)
                let second = try attention.attend(x * 0.5, context: context, keyMask: mask, cache: cache, fused: true)
                #expect(try TestSupport.relativeDiff(first, attention.attend(x, context: context, keyMask: mask, fused: false)) < 1e-5)
                #expect(try TestSupport.relativeDiff(second, attention.attend(x * 0.5, context: context, keyMask: mask, fused: false)) < 1e-5)
            }
        }
    }

    @Test func fusedAttentionGradientsEqualReference() throws {
        try Torch.withSeed(7) {
            let attention = try MultiHeadAttention(queryDim: 16, contextDim: 12, heads: 2)
            for p in attention.parameters() { try p.requiringGrad() }
            let g = Generator(seed: 8)
            let x = try Tensor.randn([2, 9, 16], generator: g), c = try Tensor.randn([2, 5, 12], generator: g)
            let mask = try Tensor([true, true, true, false, false, true, true, true, true, true], shape: [2, 5])
            func grads(_ fused: Bool) throws -> [Tensor] {
                try attention.zeroGrad()
                try attention.attend(x, context: c, keyMask: mask, fused: fused).square().sum().backward()
                return try attention.parameters().map { try $0.grad! * 1.0 }
            }
            for (a, b) in zip(try grads(true), try grads(false)) { #expect(try TestSupport.relativeDiff(a, b) < 1e-4) }
        }
    }

    /// 3×3 convolutions (Winograd where oneDNN has the kernel: float32, stride 1, padding 1,
    /// channels multiples of 16; libtorch's direct algorithm otherwise) equal the same
    /// convolution in float64, which never takes the Winograd path: values and the gradients of
    /// input, weight and bias, with and without bias, with and without gradient tracking.
    @Test(arguments: [([2, 32, 9, 7], 48, true), ([3, 16, 8, 8], 16, false), ([2, 3, 8, 8], 16, true), ([1, 64, 4, 4], 32, true)])
    func threeByThreeConvolutionsEqualFloat64(input: [Int], outChannels: Int, withBias: Bool) throws {
        let g = Generator(seed: 11)
        let x0 = try Tensor.randn(input, generator: g)
        let w0 = try Tensor.randn([outChannels, input[1], 3, 3], generator: g) * 0.2
        let b0 = try Tensor.randn([outChannels], generator: g)
        let upstream = try Tensor.randn([input[0], outChannels, input[2], input[3]], generator: g)
        let before = Torch.winogradConvolutionCalls
        func run(_ dtype: DType) throws -> [Tensor] {
            let x = try x0.to(dtype).detached().requiringGrad(), w = try w0.to(dtype).detached().requiringGrad()
            let b = withBias ? try b0.to(dtype).detached().requiringGrad() : nil
            let y = try x.conv2d(weight: w, bias: b, padding: 1)
            let inference = try Torch.withNoGrad { try x.conv2d(weight: w, bias: b, padding: 1) }
            try (y * upstream.to(dtype)).sum().backward()
            return try [y, inference, try #require(x.grad), try #require(w.grad)] + (withBias ? [try #require(b?.grad)] : [])
        }
        let fast = try run(.float32), exact = try run(.float64)
        for (name, (a, b)) in zip(["output", "output without grad", "input grad", "weight grad", "bias grad"], zip(fast, exact)) {
            #expect(a.shape == b.shape, "\(name)")
            #expect(try TestSupport.relativeDiff(a.to(.float64), b) < 1e-5, "\(name)")
        }
        if Torch.winogradConvolutionsCompiled && CPUFeatures.avx512Core && input[1] % 16 == 0 && outChannels % 16 == 0 {
            #expect(Torch.winogradConvolutionCalls >= before + 2, "the Winograd path ran")
        }
    }

    /// The Winograd convolution's backward pass where only the input or only the weight and bias
    /// need gradients (a frozen layer keeps no input; a first layer computes no input gradient,
    /// and reorders the upstream gradient for the weights alone), against float64.
    @Test(arguments: [(true, false), (false, true)])
    func threeByThreeConvolutionPartialGradientsEqualFloat64(inputGrad: Bool, weightGrad: Bool) throws {
        let g = Generator(seed: 13)
        let x0 = try Tensor.randn([2, 32, 10, 12], generator: g), w0 = try Tensor.randn([16, 32, 3, 3], generator: g) * 0.2
        let b0 = try Tensor.randn([16], generator: g), upstream = try Tensor.randn([2, 16, 10, 12], generator: g)
        let before = Torch.winogradConvolutionCalls
        func run(_ dtype: DType) throws -> [Tensor?] {
            let x = try x0.to(dtype).detached(), w = try w0.to(dtype).detached(), b = try b0.to(dtype).detached()
            if inputGrad { try x.requiringGrad() }
            if weightGrad { try w.requiringGrad(); try b.requiringGrad() }
            try (x.conv2d(weight: w, bias: b, padding: 1) * upstream.to(dtype)).sum().backward()
            return [x.grad, w.grad, b.grad]
        }
        let fast = try run(.float32), exact = try run(.float64)
        for (name, (a, b)) in zip(["input grad", "weight grad", "bias grad"], zip(fast, exact)) {
            #expect((a == nil) == (b == nil), "\(name)")
            if let a, let b { #expect(try TestSupport.relativeDiff(a.to(.float64), b) < 1e-5, "\(name)") }
        }
        #expect((fast[0] != nil) == inputGrad && (fast[1] != nil) == weightGrad)
        if Torch.winogradConvolutionsCompiled && CPUFeatures.avx512Core {
            #expect(Torch.winogradConvolutionCalls >= before + 1, "the Winograd path ran")
        }
    }
}
