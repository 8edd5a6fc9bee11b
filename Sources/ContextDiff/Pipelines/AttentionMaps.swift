import NN
import Torch

/// The cross-attention maps of a text-to-image sampling run (paper App. A): for every step, the
/// attention each caption token receives from every pixel, averaged over heads and over the
/// U-Net's cross-attention layers (each layer's map resized to the image size), for the
/// conditional rows of the guided batch.
public struct AttentionMaps {
    /// The timesteps of the steps recorded, in sampling order.
    public var timesteps: [Int]
    /// `[steps, B, T, H, W]` (float32): step, image, caption token, pixel. Each pixel's maps
    /// over the tokens sum to 1 (averaged softmax weights), before padding tokens are dropped.
    public var maps: Tensor
    /// The generated images `[B, 3, H, W]` in [-1, 1].
    public var images: Tensor

    /// The maps of the tokens `positions` summed (a word of several word pieces), for image `b`:
    /// `[steps, H, W]`.
    public func word(_ positions: [Int], image b: Int) throws -> Tensor {
        let index = try Tensor(positions.map(Int64.init), shape: [positions.count])
        return try maps.select(dim: 1, b).indexSelect(dim: 1, index).sum(dims: [1])
    }
}

/// Records cross-attention weights while a sampler runs (an ``AttentionController`` that
/// changes nothing); ``finishStep(timestep:)`` closes a step's sum.
public final class AttentionMapRecorder: AttentionController {
    let batch: Int
    let guided: Bool
    let size: Int
    private var current: Tensor?
    private var sites = 0
    private(set) var steps: [Tensor] = []
    private(set) var timesteps: [Int] = []

    /// - Parameters:
    ///   - batch: the images generated (the conditional rows).
    ///   - guided: whether the U-Net sees the doubled batch (unconditional rows first).
    ///   - size: the image side the maps are resized to.
    public init(batch: Int, guided: Bool, size: Int) {
        self.batch = batch
        self.guided = guided
        self.size = size
    }

    public func process(_ weights: Tensor, site: AttentionSite) throws -> Tensor {
        guard site.kind == .crossAttention else { return weights }
        let s = weights.shape  // [rows·heads, queries, keys]
        let rows = guided ? 2 * batch : batch
        guard s.count == 3, s[0] % rows == 0, s[1] == site.resolution * site.resolution else {
            throw ModuleError.invalidInput("attention maps: weights \(s) for \(rows) rows at \(site.resolution)²")
        }
        let heads = s[0] / rows
        var w = try weights.detached().to(.float32).reshaped([rows, heads, s[1], s[2]]).mean(dims: [1])  // [rows, Q, K]
        if guided { w = try w.slice(dim: 0, batch, 2 * batch) }
        let map = try w.transposed(1, 2).reshaped([batch, s[2], site.resolution, site.resolution])
            .interpolate(size: (size, size), mode: .nearest)
        current = try current.map { try $0 + map } ?? map
        sites += 1
        return weights
    }

    /// Closes the maps of one step (averaged over the layers it saw).
    public func finishStep(timestep: Int) throws {
        guard let current, sites > 0 else { return }
        steps.append(try current / Double(sites))
        timesteps.append(timestep)
        self.current = nil
        sites = 0
    }

    /// The maps of every finished step.
    public func maps(images: Tensor) throws -> AttentionMaps {
        guard !steps.isEmpty else { throw ModuleError.invalidInput("attention maps: no step recorded (does the U-Net have cross-attention?)") }
        return AttentionMaps(timesteps: timesteps, maps: try Tensor.stack(steps), images: images)
    }
}

extension TextToImagePipeline {
    /// Generates one image per prompt (the first of `options.imagesPerPrompt` is ignored: one)
    /// and records its cross-attention maps at every step.
    public func attentionMaps(prompts: [String], options: GenerationOptions, progress: ProgressHandler? = nil) throws -> AttentionMaps {
        var options = options
        options.imagesPerPrompt = 1
        try options.validate(trainTimesteps: model.schedule.config.trainTimesteps)
        guard !prompts.isEmpty, prompts.allSatisfy({ !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }) else {
            throw PipelineError.emptyPrompt
        }
        model.train(false)
        return try Torch.withInferenceMode {
            let conditional = try condition(for: prompts).condition
            let unconditional = try condition(for: [options.negativePrompt ?? ""]).condition.repeated(prompts.count)
            let recorder = AttentionMapRecorder(batch: prompts.count, guided: options.guidance != 1, size: model.unet.config.sampleSize)
            let timesteps = try sampler(for: options).timesteps
            var failure: (any Error)?
            let images: Tensor
            do {
                images = try Self.sample(
                    model: model, conditional: conditional, unconditional: unconditional, options: options, attention: recorder
                ) { p in
                    do { try recorder.finishStep(timestep: timesteps[p.completed - 1]) } catch {
                        failure = error
                        return false
                    }
                    return progress?(p) ?? true
                }
            } catch {
                throw failure ?? error
            }
            return try recorder.maps(images: images)
        }
    }
}
