import Testing
import Torch
import NN
import TestSupport

final class Block: Module {
    let norm: LayerNorm
    let attention: MultiHeadAttention
    init(width: Int = 8) throws {
        norm = try LayerNorm(width)
        attention = try MultiHeadAttention(queryDim: 8, heads: 2)
        super.init()
    }
}

final class Stack: Module {
    let blocks: [Block]
    let head: Linear?
    let scale: Tensor
    init(head: Bool) throws {
        blocks = [try Block(), try Block()]
        self.head = head ? try Linear(8, 2) : nil
        scale = try Tensor.ones([1])
        super.init()
    }
}

@Suite("Modules: parameter discovery and verified loading")
struct ModuleTests {
    @Test func discoversParametersByReflection() throws {
        let m = try Stack(head: true)
        let keys = m.namedParameters().map(\.0)
        #expect(keys.first == "scale")
        #expect(keys.contains("blocks.0.norm.weight"))
        #expect(keys.contains("blocks.1.attention.to_q.weight"))
        #expect(keys.contains("blocks.1.attention.to_out.bias"))
        #expect(keys.contains("head.weight"))
        #expect(!keys.contains("blocks.0.attention.to_q.bias"))  // bias: false
        #expect(Set(keys).count == keys.count)
        #expect(try Stack(head: false).namedParameters().allSatisfy { !$0.0.hasPrefix("head") })
    }

    @Test func trainEvalPropagates() throws {
        let m = try Stack(head: true)
        m.eval()
        #expect(!m.blocks[1].attention.toQ.isTraining)
        m.train()
        #expect(m.blocks[1].attention.toQ.isTraining)
    }

    @Test func loadRoundTripsAndKeepsIdentity() throws {
        let a = try Stack(head: true), b = try Stack(head: true)
        let before = b.blocks[0].norm.weight
        try b.load(a.stateDict())
        #expect(b.blocks[0].norm.weight === before)
        for ((ka, ta), (kb, tb)) in zip(a.namedParameters(), b.namedParameters()) {
            #expect(ka == kb)
            #expect(try (ta - tb).abs().max().item() == 0)
        }
    }

    @Test func loadRejectsMissingExtraAndMisshapen() throws {
        let m = try Stack(head: true)
        var state = m.stateDict()
        state["head.weight"] = nil
        #expect(throws: ModuleError.missingKey("head.weight")) { try m.load(state) }

        state = m.stateDict()
        state["blocks.0.extra"] = try Tensor.zeros([1])
        #expect(throws: ModuleError.unexpectedKey("blocks.0.extra")) { try m.load(state) }

        state = m.stateDict()
        state["blocks.1.norm.bias"] = try Tensor.zeros([9])
        #expect(throws: ModuleError.shapeMismatch(key: "blocks.1.norm.bias", expected: [8], found: [9])) { try m.load(state) }

        state = m.stateDict()
        state["scale"] = try Tensor.ones([1], dtype: .float64)
        #expect(throws: ModuleError.dtypeMismatch(key: "scale", expected: .float32, found: .float64)) { try m.load(state) }
    }

    @Test func convertChangesDTypeInPlace() throws {
        let m = try Linear(3, 2)
        let w = m.weight
        try m.convert(to: .float64)
        #expect(m.weight === w)
        #expect(m.weight.dtype == .float64)
        let y = try m(Tensor.ones([1, 3], dtype: .float64))
        #expect(y.dtype == .float64)
    }

    @Test func attentionRejectsBadShapes() throws {
        let a = try MultiHeadAttention(queryDim: 8, heads: 2)
        #expect(throws: TorchError.self) { try a(Tensor.zeros([2, 8])) }
        #expect(throws: TorchError.self) { try a(Tensor.zeros([2, 3, 8]), keyMask: Tensor.ones([2, 4], dtype: .bool)) }
        #expect(throws: TorchError.self) { try MultiHeadAttention(queryDim: 7, heads: 2) }
    }

    /// Attention equals a direct evaluation of softmax(QKᵀ/√d)V for one head.
    @Test func attentionMatchesDefinition() throws {
        Torch.manualSeed(3)
        let a = try MultiHeadAttention(queryDim: 4, heads: 1, bias: false)
        let x = try Tensor.randn([1, 3, 4])
        let q = try a.toQ(x), k = try a.toK(x), v = try a.toV(x)
        let expected = try a.toOut((q.matmul(k.transposed(1, 2)) / 2).softmax(dim: -1).matmul(v))
        let got = try a(x)
        #expect(try TestSupport.relativeDiff(got, expected) < 1e-6)
    }
}
