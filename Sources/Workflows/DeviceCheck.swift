import ContextDiff
import Foundation
import NN
import Torch

/// Checks that a device computes what the CPU computes (`contextdiff check-device`): the same
/// weights on both, the same inputs, and every result compared as max |device − CPU| / max |CPU|.
///
/// - networks: a U-Net (with a layout prior, as the shipped model has) and r_φ, one forward pass;
/// - samplers: DDIM, DDPM and DPM-Solver++ with guidance and r_φ, `samplerSteps` steps each, from
///   the same seed (the noise is drawn on the CPU generator either way);
/// - training: `trainingSteps` steps of the real ``Trainer`` from the same initial weights and
///   seed, the loss curves compared step by step.
///
/// Needs no text encoder: conditions are random token states with padding, as the benchmark's.
/// On `cpu` against `cpu` every figure is 0 (the check of the check).
public struct DeviceCheck: Sendable {
    public var device: Device
    /// Largest relative difference that passes, for one forward pass of a network.
    public var tolerance = 1e-4
    /// Largest relative difference of a sampler's result that passes: `samplerSteps` guided steps
    /// (w = 3) amplify the networks' rounding differences (on an H200 against this CPU, 2e-6 per
    /// forward pass became 0.8–2.5e-4 after 10 steps; a real slip, such as a timestep table or r_φ
    /// left out on one side, is of order 1e-1).
    public var samplerTolerance = 1e-3
    /// Largest relative difference of a loss that passes (it compounds over the steps).
    public var trainingTolerance = 1e-3
    public var samplerSteps = 10
    public var trainingSteps = 10
    public var batch = 4

    public init(device: Device) { self.device = device }

    /// One comparison. (A non-finite difference needs an encoder with a non-conforming float
    /// strategy, as `check-device --json-output` uses.)
    public struct Figure: Sendable, Codable, Equatable {
        public var name: String
        public var relativeDifference: Double
        public var tolerance: Double
        public var passed: Bool

        public init(name: String, relativeDifference: Double, tolerance: Double) {
            self.name = name
            self.relativeDifference = relativeDifference
            self.tolerance = tolerance
            passed = relativeDifference <= tolerance
        }

        enum CodingKeys: String, CodingKey {
            case name, tolerance, passed
            case relativeDifference = "relative_difference"
        }
    }

    /// What the check found.
    public struct Report: Sendable, Codable {
        public var device: String
        public var libtorch: String
        public var figures: [Figure]
        /// Seconds per training step on each side (after each side's first, warm-up step).
        public var trainingStepSeconds: [String: Double]
        /// The loss curves, CPU and device.
        public var losses: [String: [Double]]
        public var passed: Bool

        public init(device: String, libtorch: String, figures: [Figure], trainingStepSeconds: [String: Double], losses: [String: [Double]]) {
            self.device = device
            self.libtorch = libtorch
            self.figures = figures
            self.trainingStepSeconds = trainingStepSeconds
            self.losses = losses
            passed = figures.allSatisfy(\.passed)
        }

        enum CodingKeys: String, CodingKey {
            case device, libtorch, figures, losses, passed
            case trainingStepSeconds = "training_step_seconds"
        }
    }

    /// max |a − b| / max |b| (0 when both are 0; infinity for a shape mismatch or a non-finite value).
    public static func relativeDifference(_ a: Tensor, _ b: Tensor) throws -> Double {
        guard a.shape == b.shape else { return .infinity }
        return try Torch.withNoGrad {
            let (x, y) = (try a.to(.cpu).to(.float64), try b.to(.cpu).to(.float64))
            let diff = try (x - y).abs().max().item()
            let scale = try y.abs().max().item()
            guard diff.isFinite, scale.isFinite else { return .infinity }
            return diff == 0 ? 0 : diff / Swift.max(scale, .leastNormalMagnitude)
        }
    }

    /// Runs every comparison; `notes` gets one line per stage.
    public func run(notes: (String) -> Void = { _ in }) throws -> Report {
        try Torch.checkAvailable(device)
        var figures: [Figure] = []
        var (cpuModel, deviceModel) = try Self.twinModels(layoutPrior: true)
        try deviceModel.to(device)
        let g = Generator(seed: 11)
        let config = cpuModel.unet.config
        let tokens = 8
        let condition = try Self.randomCondition(batch: batch, tokens: tokens, width: config.contextDim, generator: g)
        let unconditional = try Self.randomCondition(batch: batch, tokens: tokens, width: config.contextDim, generator: g)

        notes("networks: one forward pass of the U-Net (with its layout prior) and r_φ on cpu and \(device)…")
        let x = try Tensor.randn([batch, config.inChannels, config.sampleSize, config.sampleSize], generator: g)
        let timesteps = try Tensor((0..<batch).map { Int64(100 + 250 * $0) }, shape: [batch])
        try Torch.withInferenceMode {
            let u = try cpuModel.unet(x, timesteps: timesteps, condition: condition)
            let ud = try Torch.withDefaultDevice(device) {
                try deviceModel.unet(x.to(device), timesteps: timesteps.to(device), condition: condition.to(device))
            }
            figures.append(Figure(name: "unet_forward", relativeDifference: try Self.relativeDifference(ud, u), tolerance: tolerance))
            if let a = cpuModel.adapter, let ad = deviceModel.adapter {
                let r = try a(x, timesteps: timesteps, condition: condition)
                let rd = try Torch.withDefaultDevice(device) {
                    try ad(x.to(device), timesteps: timesteps.to(device), condition: condition.to(device))
                }
                figures.append(Figure(name: "adapter_forward", relativeDifference: try Self.relativeDifference(rd, r), tolerance: tolerance))
            }
        }

        for sampler in [SamplerKind.ddim, .ddpm, .dpmpp] {
            notes("sampler \(sampler.rawValue): \(samplerSteps) guided steps with r_φ on cpu and \(device)…")
            var options = GenerationOptions()
            options.sampler = sampler
            options.steps = samplerSteps
            options.guidance = 3
            options.seed = 5
            let a = try TextToImagePipeline.sample(model: cpuModel, conditional: condition, unconditional: unconditional, options: options)
            let b = try TextToImagePipeline.sample(model: deviceModel, conditional: condition, unconditional: unconditional, options: options)
            figures.append(Figure(name: "sampler_\(sampler.rawValue)", relativeDifference: try Self.relativeDifference(b, a), tolerance: samplerTolerance))
        }

        notes("training: \(trainingSteps) steps of the trainer on cpu and \(device) from the same weights and seed…")
        (cpuModel, deviceModel) = try Self.twinModels(layoutPrior: false)
        try deviceModel.to(device)
        let work = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("contextdiff-device-check-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: work) }
        var losses: [String: [Double]] = [:], seconds: [String: Double] = [:]
        for (name, model) in [("cpu", cpuModel), (device.description, deviceModel)] {
            let (data, captions) = try Self.trainingData(model: model, count: 8 * batch, tokens: tokens)
            var training = TrainingConfig()
            training.batchSize = batch
            training.steps = trainingSteps
            training.warmupSteps = 2
            training.checkpointEvery = trainingSteps + 1
            training.seed = 3
            let trainer = try Trainer(
                model: model, config: training, data: data, captions: captions,
                runDirectory: work.appendingPathComponent(name.replacingOccurrences(of: ":", with: "-")))
            var curve: [Double] = [], times: [Double] = []
            let clock = ContinuousClock()
            for _ in 0..<trainingSteps {
                var loss = 0.0
                let d = try clock.measure { loss = try trainer.trainStep() }
                curve.append(loss)
                times.append(Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
            }
            losses[name] = curve
            let timed = times.count > 1 ? Array(times.dropFirst()) : times
            seconds[name] = timed.reduce(0, +) / Double(timed.count)
        }
        let a = losses["cpu"] ?? [], b = losses[device.description] ?? []
        let worst = zip(a, b).map { abs($0 - $1) / Swift.max(abs($0), .leastNormalMagnitude) }.max() ?? .infinity
        figures.append(Figure(name: "training_losses", relativeDifference: a.count == b.count ? worst : .infinity, tolerance: trainingTolerance))
        return Report(device: device.description, libtorch: Torch.libtorchVersion, figures: figures, trainingStepSeconds: seconds, losses: losses)
    }

    /// Two models with the same weights (a small U-Net with r_φ, drawn from a fixed seed), both on the CPU.
    static func twinModels(layoutPrior: Bool) throws -> (ContextDiffModel, ContextDiffModel) {
        var unetConfig = UNetConfig.shapesDefault
        if layoutPrior {
            var prior = LayoutPriorConfig()
            prior.mixtureComponents = 4  // sampling then draws each seed's layout
            unetConfig.layoutPrior = prior
        }
        func make() throws -> ContextDiffModel {
            let (unet, adapter) = try Torch.withSeed(0) { (try UNet(unetConfig), try ContextAdapter(.shapesDefault)) }
            // r_φ's last layer starts at zero; give it weights so that the comparison sees it.
            try Torch.withNoGrad {
                try adapter.projOut.weight.copy(from: Tensor.randn(adapter.projOut.weight.shape, generator: Generator(seed: 7)) * 0.05)
            }
            return ContextDiffModel(unet: unet, adapter: adapter, schedule: try NoiseSchedule(NoiseScheduleConfig()), textEncoder: TextEncoderSpec())
        }
        return (try make(), try make())
    }

    /// Random token states with a padded tail, like encoded captions.
    static func randomCondition(batch: Int, tokens: Int, width: Int, generator g: Generator) throws -> Condition {
        let lengths = try Tensor.randint(2, tokens + 1, shape: [batch], generator: g).scalars(as: Int64.self)
        let mask = try Tensor((0..<batch).flatMap { r in (0..<tokens).map { $0 < Int(lengths[r]) } }, shape: [batch, tokens])
        return try Condition(
            tokens: Tensor.randn([batch, tokens, width], generator: g), mask: mask, pooled: Tensor.randn([batch, width], generator: g))
    }

    /// Random images with captions "row r" naming rows of a random caption table.
    static func trainingData(model: ContextDiffModel, count: Int, tokens: Int) throws -> (InMemoryImageSource, CaptionTable) {
        let g = Generator(seed: 13)
        let c = model.unet.config
        let captionCount = 6
        let table = try randomCondition(batch: captionCount + 1, tokens: tokens, width: c.contextDim, generator: g)
        let pixels = try Tensor.rand([count, c.inChannels, c.sampleSize, c.sampleSize], generator: g) * 2 - 1
        let source = try InMemoryImageSource(pixels: pixels, captions: (0..<count).map { "row \($0 % captionCount)" })
        let captions = try CaptionTable(captions: source.captions) { texts in
            let rows = texts.map { Int64($0.isEmpty ? captionCount : Int($0.dropFirst(4))!) }
            return try table.selecting(Tensor(rows, shape: [rows.count]))
        }
        return (source, captions)
    }
}
