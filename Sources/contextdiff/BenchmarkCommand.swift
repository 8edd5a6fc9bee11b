import ArgumentParser
import ContextDiff
import Foundation
import NN
import Torch

/// Times the networks' training step and sampling step on synthetic inputs.
struct BenchmarkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "benchmark",
        abstract: "Time a ContextDiff training step (U-Net + adapter, forward + backward + AdamW)."
    )

    @Option(help: "Batch size.") var batch = 32
    @Option(help: "Image size.") var size = 32
    @Option(help: "U-Net base channels.") var base = 32
    @Option(help: "U-Net channel multipliers, comma separated.") var multipliers = "1,2,2"
    @Option(help: "Residual blocks per level.") var layers = 1
    @Option(help: "Adapter width (0 disables the adapter).") var adapterWidth = 64
    @Option(help: "Timed steps.") var steps = 5
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount

    func run() throws {
        Torch.numThreads = threads
        Torch.manualSeed(0)
        var config = UNetConfig()
        config.sampleSize = size
        config.baseChannels = base
        config.channelMultipliers = multipliers.split(separator: ",").compactMap { Int($0) }
        config.layersPerBlock = layers
        config.attentionResolutions = [size / 4]
        config.crossAttentionResolutions = [size / 2, size / 4]
        let unet = try UNet(config)
        var adapter: ContextAdapter?
        if adapterWidth > 0 {
            var a = ContextAdapterConfig()
            a.sampleSize = size
            a.width = adapterWidth
            a.depth = 1
            adapter = try ContextAdapter(a)
        }
        let params = unet.parameters() + (adapter?.parameters() ?? [])
        for p in params { try p.requiringGrad() }
        let optimizer = try AdamW(parameters: params, learningRate: 1e-4)
        let g = Generator(seed: 0)
        let x = try Tensor.randn([batch, 3, size, size], generator: g)
        let t = try Tensor.randint(0, 1000, shape: [batch], generator: g)
        let c = try TextCondition(
            tokens: Tensor.randn([batch, 12, 384], generator: g), mask: Tensor.ones([batch, 12], dtype: .bool),
            pooled: Tensor.randn([batch, 384], generator: g))
        print("U-Net parameters: \(unet.parameterCount), adapter: \(adapter?.parameterCount ?? 0)")
        let clock = ContinuousClock()
        var times: [Double] = []
        for i in 0..<(steps + 1) {
            let d = try clock.measure {
                var xt = x
                if let adapter { xt = try x + adapter(x, timesteps: t, condition: c) * 0.1 }
                let loss = try unet(xt, timesteps: t, condition: c).mseLoss(x)
                try optimizer.zeroGrad()
                try loss.backward()
                try optimizer.step()
            }
            if i > 0 { times.append(Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18) }
        }
        let mean = times.reduce(0, +) / Double(times.count)
        print(String(format: "training step: %.3f s, %.1f images/s", mean, Double(batch) / mean))
    }
}
