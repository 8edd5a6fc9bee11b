import ContextDiff
import Foundation
import NN
import Testing
import TestSupport
import Torch

/// Small configurations that exercise every branch (attention levels, skips, resampling).
enum TinyConfigs {
    static var unet: UNetConfig {
        var c = UNetConfig()
        c.sampleSize = 16
        c.baseChannels = 16
        c.channelMultipliers = [1, 2]
        c.layersPerBlock = 1
        c.attentionResolutions = [8]
        c.crossAttentionResolutions = [16, 8]
        c.heads = 2
        c.contextDim = 12
        c.pooledDim = 12
        c.normGroups = 4
        return c
    }

    static var adapter: ContextAdapterConfig {
        var c = ContextAdapterConfig()
        c.sampleSize = 16
        c.patchSize = 4
        c.width = 32
        c.depth = 2
        c.heads = 8
        c.contextDim = 12
        return c
    }

    static func condition(batch: Int, length: Int = 5, seed: UInt64 = 3) throws -> Condition {
        let g = Generator(seed: seed)
        var maskValues = [Bool]()
        for b in 0..<batch { for i in 0..<length { maskValues.append(i < length - b % 3) } }
        return try Condition(
            tokens: Tensor.randn([batch, length, 12], generator: g), mask: Tensor(maskValues, shape: [batch, length]),
            pooled: Tensor.randn([batch, 12], generator: g))
    }
}

func temporaryDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cd-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// Runs Debian's python3 (which has torch) and returns its standard output.
func runPython(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.standardError
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Whether Debian's python3 with torch is there to run the PyTorch twin (benchmarks/peer).
let peerTorchAvailable: Bool = (try? runPython(["-c", "import torch"]).status == 0) ?? false
let peerTorchMissing = Comment(rawValue: "/usr/bin/python3 with torch (Debian's python3-torch) not found, the PyTorch twin cannot run")

@Suite("Networks: U-Net and context adapter")
struct NetworkTests {
    /// Perturbs every parameter so that no zero-initialised layer hides a difference.
    func randomize(_ m: Module, seed: UInt64) throws {
        let g = Generator(seed: seed)
        try Torch.withNoGrad {
            for p in m.parameters() { try p.addInPlace(Tensor.randn(p.shape, generator: g) * 0.05) }
        }
    }

    /// Saves the networks, the inputs and the Swift outputs to a temporary folder and runs
    /// benchmarks/peer/check_equivalence.py on it; returns its JSON (max abs diff per output).
    func compareWithTwin(
        unet: UNet, adapter: ContextAdapter, inputs: [String: Tensor], outputs: [String: Tensor]
    ) throws -> [String: Double] {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try ModelFolder.save(unet, to: dir.appendingPathComponent("unet"))
        try ModelFolder.save(adapter, to: dir.appendingPathComponent("adapter"))
        try saveSafeTensors(inputs, to: dir.appendingPathComponent("inputs.safetensors"))
        try saveSafeTensors(outputs, to: dir.appendingPathComponent("swift_outputs.safetensors"))
        let script = repositoryRoot.appendingPathComponent("benchmarks/peer/check_equivalence.py").path
        let (status, output) = try runPython([script, dir.path])
        try #require(status == 0, "peer failed: \(output)")
        return try JSONDecoder().decode([String: Double].self, from: Data(output.utf8))
    }

    @Test(.enabled(if: peerTorchAvailable, peerTorchMissing), arguments: ["plain", "position tables", "text refiner"])
    func outputsMatchThePyTorchTwin(variant: String) throws {
        try Torch.withSeed(21) {
            var config = TinyConfigs.unet
            config.positionalEmbedding = variant != "plain"
            if variant == "text refiner" { config.textRefiner = TextRefinerConfig(layers: 2, width: 16, heads: 2, maxTokens: 8) }
            let unet = try UNet(config)
            let adapter = try ContextAdapter(TinyConfigs.adapter)
            try randomize(unet, seed: 1)
            try randomize(adapter, seed: 2)
            let batch = 3
            let x = try Tensor.randn([batch, 3, 16, 16], generator: Generator(seed: 9))
            let t = try Tensor([Int64(0), 500, 999], shape: [batch])
            let c = try TinyConfigs.condition(batch: batch)
            let (u, a) = try Torch.withNoGrad {
                (try unet(x, timesteps: t, condition: c), try adapter(x, timesteps: t, condition: c))
            }
            #expect(u.shape == [batch, 3, 16, 16] && a.shape == [batch, 3, 16, 16])

            let result = try compareWithTwin(
                unet: unet, adapter: adapter,
                inputs: ["x": x, "timesteps": t, "tokens": c.tokens, "mask": c.mask.to(.uint8), "pooled": c.pooled],
                outputs: ["unet": u, "adapter": a])
            let unetDiff = try #require(result["unet"]), adapterDiff = try #require(result["adapter"])
            // Relative to the outputs' size: the twin runs the same libtorch, but kernel choices (and
            // their rounding) differ between Intel and AMD; 1e-4 leaves room for a few ulps per layer.
            let unetScale = try #require(result["unet_scale"]), adapterScale = try #require(result["adapter_scale"])
            #expect(TestSupport.relative(unetDiff, scale: unetScale) <= 1e-4, "U-Net max abs diff \(unetDiff) at scale \(unetScale)")
            #expect(TestSupport.relative(adapterDiff, scale: adapterScale) <= 1e-4, "adapter max abs diff \(adapterDiff) at scale \(adapterScale)")
            // The comparison is not vacuous: both outputs are far from zero.
            #expect(try #require(result["unet_scale"]) > 0.1)
            #expect(try #require(result["adapter_scale"]) > 0.01)
            // The twin's forward passes keep every tensor on their inputs' device (the benchmark
            // runs them on CUDA): checked on PyTorch's meta device.
            #expect(result["meta_device_ok"] == 1)
        }
    }

    /// The inflated networks (docs/VIDEO.md) against the twin's `inflate()`: 2 videos × 4 frames,
    /// sparse-causal and per-frame self-attention for the U-Net, causal temporal attention in the
    /// adapter. Every parameter is perturbed, so the zero-initialised temporal layers are not the
    /// identity, and the frames differ, so sparse-causal keys matter.
    @Test(.enabled(if: peerTorchAvailable, peerTorchMissing)) func videoOutputsMatchThePyTorchTwin() throws {
        try Torch.withSeed(22) {
            let unet = try UNet(TinyConfigs.unet)
            try unet.inflate()
            let adapter = try ContextAdapter(TinyConfigs.adapter)
            try adapter.inflate()
            try randomize(unet, seed: 3)
            try randomize(adapter, seed: 4)
            let (videos, frames) = (2, 4)
            let batch = videos * frames
            let x = try Tensor.randn([batch, 3, 16, 16], generator: Generator(seed: 10))
            let t = try Tensor((0..<batch).map { Int64(120 * $0 + 7) }, shape: [batch])
            let c = try TinyConfigs.condition(batch: batch)
            let (u, uPerFrame, u2D, a, a2D) = try Torch.withNoGrad {
                (
                    try unet(x, timesteps: t, condition: c, video: VideoLayout(frames: frames)),
                    try unet(x, timesteps: t, condition: c, video: VideoLayout(frames: frames, selfAttention: .perFrame)),
                    try unet(x, timesteps: t, condition: c),
                    try adapter(x, timesteps: t, condition: c, frames: frames),
                    try adapter(x, timesteps: t, condition: c)
                )
            }
            #expect(u.shape == [batch, 3, 16, 16] && a.shape == [batch, 3, 16, 16])
            // The comparison is not vacuous: sparse-causal keys, the U-Net's temporal layers and the
            // adapter's each change the output by far more than the tolerance.
            #expect(try (u - uPerFrame).abs().max().item() > 1e-2, "sparse-causal attention changes nothing")
            #expect(try (uPerFrame - u2D).abs().max().item() > 1e-2, "the U-Net's temporal layers change nothing")
            #expect(try (a - a2D).abs().max().item() > 1e-2, "the adapter's temporal layers change nothing")

            let result = try compareWithTwin(
                unet: unet, adapter: adapter,
                inputs: [
                    "x": x, "timesteps": t, "tokens": c.tokens, "mask": c.mask.to(.uint8), "pooled": c.pooled,
                    "frames": Tensor([Int64(frames)], shape: [1]),
                ],
                outputs: ["unet": u, "unet_per_frame": uPerFrame, "adapter": a])
            let unetDiff = try #require(result["unet"]), perFrameDiff = try #require(result["unet_per_frame"])
            let adapterDiff = try #require(result["adapter"])
            func relative(_ key: String) throws -> Double {
                TestSupport.relative(try #require(result[key]), scale: try #require(result[key + "_scale"]))
            }
            #expect(try relative("unet") <= 1e-4, "video U-Net (sparse-causal) max abs diff \(unetDiff)")
            #expect(try relative("unet_per_frame") <= 1e-4, "video U-Net (per-frame) max abs diff \(perFrameDiff)")
            #expect(try relative("adapter") <= 1e-4, "video adapter max abs diff \(adapterDiff)")
            #expect(try #require(result["unet_scale"]) > 0.1)
            #expect(try #require(result["adapter_scale"]) > 0.01)
        }
    }

    @Test func adapterStartsAtZeroAndDependsOnImageTextAndTimeAfterOneStep() throws {
        try Torch.withSeed(5) {
            let adapter = try ContextAdapter(TinyConfigs.adapter)
            let g = Generator(seed: 4)
            let x = try Tensor.randn([2, 3, 16, 16], generator: g)
            let t = try Tensor([Int64(100), 700], shape: [2])
            let c = try TinyConfigs.condition(batch: 2)
            #expect(try adapter(x, timesteps: t, condition: c).abs().max().item() == 0)

            try adapter.requireGrad()
            let optimizer = try AdamW(parameters: adapter.parameters(), learningRate: 1e-2, weightDecay: 0)
            let target = try Tensor.randn([2, 3, 16, 16], generator: g)
            try adapter(x, timesteps: t, condition: c).mseLoss(target).backward()
            try optimizer.step()

            try Torch.withNoGrad {
                let base = try adapter(x, timesteps: t, condition: c)
                #expect(try base.abs().max().item() > 0)
                let otherImage = try adapter(x * 0.5 + 0.3, timesteps: t, condition: c)
                let otherTime = try adapter(x, timesteps: Tensor([Int64(10), 10], shape: [2]), condition: c)
                let otherText = try adapter(x, timesteps: t, condition: TinyConfigs.condition(batch: 2, seed: 77))
                for (what, other) in [("image", otherImage), ("timestep", otherTime), ("text", otherText)] {
                    let change = try (other - base).abs().max().item()
                    #expect(change > 1e-4, "adapter output does not depend on the \(what) (change \(change))")
                }
            }
        }
    }

    /// Configs written before `positional_embedding` existed still load (as off); with it on,
    /// every transformer has a zero-initialised `[1, H·W, C]` table, so a fresh model computes
    /// exactly what the same weights without it compute.
    @Test func positionalEmbeddingIsOptionalAndStartsAsTheIdentity() throws {
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(TinyConfigs.unet)) as! [String: Any]
        #expect(json["positional_embedding"] as? Bool == false)
        json["positional_embedding"] = nil
        let old = try JSONDecoder().decode(UNetConfig.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(old == TinyConfigs.unet)

        var config = TinyConfigs.unet
        config.positionalEmbedding = true
        try Torch.withSeed(5) {
            let with = try UNet(config)
            let tables = with.namedParameters().filter { $0.0.hasSuffix("pos_embed") }
            // Transformers at 16 (down), 8 (down), 8 (mid), 8 and 16 (up, two blocks each).
            #expect(tables.map { $0.1.shape } == [[1, 256, 16], [1, 64, 32], [1, 64, 32], [1, 64, 32], [1, 64, 32], [1, 256, 16], [1, 256, 16]])
            let without = try UNet(TinyConfigs.unet)
            var state = with.stateDict()
            for (key, _) in tables { state[key] = nil }
            try without.load(state)
            let x = try Tensor.randn([2, 3, 16, 16], generator: Generator(seed: 1))
            let t = try Tensor([Int64(10), 700], shape: [2])
            let c = try TinyConfigs.condition(batch: 2)
            let (a, b) = try Torch.withNoGrad { (try with(x, timesteps: t, condition: c), try without(x, timesteps: t, condition: c)) }
            #expect(try (a - b).abs().max().item() == 0)
            // A non-zero table changes the output: the embedding is actually applied.
            try Torch.withNoGrad { try tables[0].1.addInPlace(Tensor.ones(tables[0].1.shape)) }
            let moved = try Torch.withNoGrad { try with(x, timesteps: t, condition: c) }
            #expect(try (moved - b).abs().max().item() > 1e-3)
        }
    }

    /// Configs without `text_refiner` load as before (none); a new refiner is the identity (its
    /// output projections are zero), and once its outputs are non-zero it changes the U-Net's
    /// output through both the tokens and the pooled vector. Too many tokens is a clear error.
    @Test func textRefinerIsOptionalAndStartsAsTheIdentity() throws {
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(TinyConfigs.unet)) as! [String: Any]
        #expect(json["text_refiner"] == nil)
        var config = TinyConfigs.unet
        config.textRefiner = TextRefinerConfig(layers: 1, width: 8, heads: 2, maxTokens: 6)
        json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(config)) as! [String: Any]
        let written = try #require(json["text_refiner"] as? [String: Any])
        #expect(written["max_tokens"] as? Int == 6 && written["mlp_ratio"] as? Int == 2)
        #expect(try JSONDecoder().decode(UNetConfig.self, from: JSONSerialization.data(withJSONObject: json)) == config)
        config.textRefiner?.heads = 3
        #expect(throws: ModuleError.self) { try config.validate() }
        config.textRefiner?.heads = 2

        // Same weights apart from the refiner (copied, not seeded: other tests draw from the
        // global generator concurrently).
        let with = try UNet(config)
        let without = try UNet(TinyConfigs.unet)
        let refinerKeys = with.namedParameters().map(\.0).filter { $0.hasPrefix("text_refiner.") }
        #expect(refinerKeys.contains("text_refiner.layers.0.attention.to_q.bias"))
        var state = with.stateDict()
        for key in refinerKeys { state[key] = nil }
        try without.load(state)

        let x = try Tensor.randn([2, 3, 16, 16], generator: Generator(seed: 1))
        let t = try Tensor([Int64(10), 700], shape: [2])
        let c = try TinyConfigs.condition(batch: 2)
        let (a, b) = try Torch.withNoGrad { (try with(x, timesteps: t, condition: c), try without(x, timesteps: t, condition: c)) }
        #expect(try (a - b).abs().max().item() == 0)
        let refiner = try #require(with.textRefiner)
        for output in [refiner.tokensOut, refiner.pooledOut] {
            try Torch.withNoGrad { try output.bias!.addInPlace(Tensor.ones(output.bias!.shape) * 0.5) }
            let moved = try Torch.withNoGrad { try with(x, timesteps: t, condition: c) }
            #expect(try (moved - b).abs().max().item() > 1e-3)
            try Torch.withNoGrad { try output.bias!.zero() }
        }
        let long = try TinyConfigs.condition(batch: 2, length: 7)
        #expect(throws: ModuleError.self) { try with(x, timesteps: t, condition: long) }
    }

    @Test func loadingVerifiesEveryTensor() throws {
        let adapter = try ContextAdapter(TinyConfigs.adapter)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try ModelFolder.save(adapter, to: dir)
        let loaded = try ModelFolder.load(ContextAdapter.self, from: dir)
        #expect(loaded.config == adapter.config)
        for ((k1, t1), (k2, t2)) in zip(adapter.namedParameters(), loaded.namedParameters()) {
            #expect(k1 == k2)
            #expect(try t1.bytes() == t2.bytes())
        }

        let weights = dir.appendingPathComponent(ModelFolder.weightsName)
        let state = adapter.stateDict()
        func expectLoadError(_ mutate: (inout [String: Tensor]) throws -> Void, _ expected: ModuleError) throws {
            var s = state
            try mutate(&s)
            try saveSafeTensors(s, to: weights)
            #expect(throws: expected) { try ModelFolder.load(ContextAdapter.self, from: dir) }
        }
        try expectLoadError({ $0["blocks.1.attn2.to_k.weight"] = nil }, .missingKey("blocks.1.attn2.to_k.weight"))
        try expectLoadError({ $0["blocks.0.extra"] = try Tensor.zeros([2]) }, .unexpectedKey("blocks.0.extra"))
        try expectLoadError(
            { $0["proj_out.weight"] = try Tensor.zeros([48, 31]) },
            .shapeMismatch(key: "proj_out.weight", expected: [48, 32], found: [48, 31]))

        try Data("not json".utf8).write(to: dir.appendingPathComponent(ModelFolder.configName))
        #expect(throws: CheckpointError.self) { try ModelFolder.load(ContextAdapter.self, from: dir) }
        try FileManager.default.removeItem(at: dir.appendingPathComponent(ModelFolder.configName))
        #expect(throws: CheckpointError.missingFile(dir.appendingPathComponent(ModelFolder.configName).path)) {
            try ModelFolder.load(ContextAdapter.self, from: dir)
        }
    }

    @Test func badInputsAreClearErrors() throws {
        let unet = try UNet(TinyConfigs.unet)
        let c = try TinyConfigs.condition(batch: 2)
        let t = try Tensor([Int64(1), 2], shape: [2])
        #expect(throws: ModuleError.self) { try unet(Tensor.zeros([2, 3, 8, 8]), timesteps: t, condition: c) }
        #expect(throws: ModuleError.self) { try unet(Tensor.zeros([3, 3, 16, 16]), timesteps: t, condition: c) }
        var bad = TinyConfigs.unet
        bad.sampleSize = 15
        #expect(throws: ModuleError.self) { try UNet(bad) }
        var badAdapter = TinyConfigs.adapter
        badAdapter.width = 30
        #expect(throws: ModuleError.self) { try ContextAdapter(badAdapter) }
    }
}
