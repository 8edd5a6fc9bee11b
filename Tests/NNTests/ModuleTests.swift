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

/// Keys declared beside the properties: a renamed child, a dotted key, an absent optional, an
/// array and a bare tensor.
final class Keyed: Module {
    @CheckpointKey("proj_in") private(set) var projIn: Linear
    @CheckpointKey("mid.block_1") private(set) var midBlock: Block
    @CheckpointKey("extra_head") private(set) var extra: Linear?
    @CheckpointKey("layer") private(set) var layers: [Linear]
    @CheckpointKey("logit_scale") private(set) var logitScale: Tensor
    let plain: Linear
    init(width: Int = 8) throws {
        _projIn.wrappedValue = try Linear(8, 8)
        _midBlock.wrappedValue = try Block()
        _extra.wrappedValue = nil
        _layers.wrappedValue = [try Linear(8, 8), try Linear(8, 8)]
        _logitScale.wrappedValue = try Tensor.ones([1])
        plain = try Linear(8, 2)
        super.init()
    }
}

@Suite("Modules: parameter discovery and verified loading")
struct ModuleTests {
    @Test func checkpointKeysAreDeclaredBesideTheProperties() throws {
        let m = try Keyed()
        let keys = m.namedParameters().map(\.0)
        #expect(keys.first == "logit_scale")
        #expect(keys.contains("proj_in.weight"))
        #expect(keys.contains("mid.block_1.attention.to_k.weight"))
        #expect(keys.contains("layer.1.bias"))
        #expect(keys.contains("plain.weight"))
        #expect(!keys.contains { $0.hasPrefix("projIn") || $0.hasPrefix("midBlock") || $0.hasPrefix("extra") || $0.hasPrefix("layers") })
        #expect(m.namedChildren().map(\.0) == ["proj_in", "mid.block_1", "layer.0", "layer.1", "plain"])
        // A round trip through the declared keys.
        let copy = try Keyed()
        try copy.load(m.stateDict())
        #expect(try TestSupport.maxAbsDiff(copy.projIn.weight, m.projIn.weight) == 0)
    }

    @Test func movingToTheDeviceItIsOnKeepsIdentitiesAndValues() throws {
        let m = try Stack(head: true)
        #expect(try m.device == .cpu)
        let before = m.parameters()
        let values = try before.map { try $0.scalars(as: Float.self) }
        try m.to(.cpu)
        let after = m.parameters()
        #expect(zip(before, after).allSatisfy { $0 === $1 })
        for (p, v) in zip(after, values) { #expect(try p.scalars(as: Float.self) == v) }
        #expect(try Module().device == nil)
    }

    @Test func aMoveThatFailsLeavesTheModuleWhereItWas() throws {
        let m = try Stack(head: true)
        let values = try m.parameters().map { try $0.scalars(as: Float.self) }
        // No CUDA in this build (or no such device): libtorch refuses; the error is typed and
        // nothing moved.
        #expect(throws: TorchError.self) { try m.to(.cuda(99)) }
        #expect(try m.device == .cpu)
        for (p, v) in zip(m.parameters(), values) { #expect(try p.scalars(as: Float.self) == v) }
    }

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

    /// The flat list holds every module once, parents first, and setting the flag on it is
    /// what `train`/`eval` do through the tree.
    @Test func descendantsListEveryModuleAndSetTheFlagLikeTrain() throws {
        let m = try Stack(head: true)
        func count(_ x: Module) -> Int { 1 + x.namedChildren().reduce(0) { $0 + count($1.1) } }
        let all = m.descendants()
        #expect(all.count == count(m) && all.count > 3)
        #expect(all.first === m)
        #expect(Set(all.map(ObjectIdentifier.init)).count == all.count)
        #expect(all.contains { $0 === m.blocks[1].attention.toQ })
        Module.setTraining(false, of: all)
        #expect(all.allSatisfy { !$0.isTraining })
        m.train()
        #expect(all.allSatisfy { $0.isTraining })
        Module.setTraining(false, of: [m])
        #expect(!m.isTraining && m.blocks[1].attention.toQ.isTraining, "only the listed modules")
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
        #expect(throws: ModuleError.self) { try a(Tensor.zeros([2, 8])) }
        #expect(throws: ModuleError.self) { try a(Tensor.zeros([2, 3, 8]), keyMask: Tensor.ones([2, 4], dtype: .bool)) }
        #expect(throws: ModuleError.self) { try MultiHeadAttention(queryDim: 7, heads: 2) }
    }

    /// Attention equals a direct evaluation of softmax(QKᵀ/√d)V for one head.
    @Test func attentionMatchesDefinition() throws {
        try Torch.withSeed(3) {
            let a = try MultiHeadAttention(queryDim: 4, heads: 1, bias: false)
            let x = try Tensor.randn([1, 3, 4])
            let q = try a.toQ(x), k = try a.toK(x), v = try a.toV(x)
            let expected = try a.toOut((q.matmul(k.transposed(1, 2)) / 2).softmax(dim: -1).matmul(v))
            let got = try a(x)
            #expect(try TestSupport.relativeDiff(got, expected) < 1e-6)
        }
    }
}
