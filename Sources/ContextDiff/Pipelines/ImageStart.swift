import Diffusion
import Torch

/// A picture to start from instead of pure noise: img2img (SDEdit, Meng et al. 2022) and
/// inpainting, for ContextDiff and its baseline alike.
///
/// - img2img: the image is taken down the **contextualized** forward process (Eq. 3:
///   `x_t = √ᾱ_t·x0 + k_t·r_φ(x0, c, t) + √(1−ᾱ_t)·ε`) to the level where the loop starts, and
///   the sampler runs the remaining steps. `strength` says how far: of `n` steps the last
///   `⌊n·strength⌋` run (diffusers' `strength`); 1 starts from pure noise.
/// - inpainting (a `mask`): after every step the kept region (mask 0) is replaced by the image
///   taken down Eq. 3 to the level the sample has reached, with the same noise throughout (as
///   diffusers' inpainting pipelines do for a U-Net without mask channels); after the last step,
///   by the image itself, so the kept pixels come back unchanged.
public struct ImageStart {
    /// `[1 or B, 3, H, W]` in [-1, 1], the model's size.
    public var image: Tensor
    /// In (0, 1]: the share of the steps that run.
    public var strength: Double
    /// `[1 or B, 1, H, W]`, 1 where to repaint and 0 where to keep (values between blend);
    /// nil for img2img.
    public var mask: Tensor?

    public init(image: Tensor, strength: Double = 1, mask: Tensor? = nil) {
        self.image = image
        self.strength = strength
        self.mask = mask
    }

    /// A `[1, 1, size, size]` mask that is 1 on every pixel whose centre lies in `box`
    /// (`[x0, y0, x1, y1]` in fractions of the side), 0 elsewhere.
    public static func boxMask(_ box: [Double], size: Int) throws -> Tensor {
        guard box.count == 4, box.allSatisfy({ $0.isFinite && (0...1).contains($0) }), box[0] < box[2], box[1] < box[3] else {
            throw PipelineError.invalidOption("mask box must be x0,y0,x1,y1 in [0, 1] with x0 < x1 and y0 < y1, got \(box)")
        }
        var values = [Float](repeating: 0, count: size * size)
        for y in 0..<size {
            for x in 0..<size {
                let (cx, cy) = ((Double(x) + 0.5) / Double(size), (Double(y) + 0.5) / Double(size))
                if cx >= box[0], cx <= box[2], cy >= box[1], cy <= box[3] { values[y * size + x] = 1 }
            }
        }
        return try Tensor(values, shape: [1, 1, size, size])
    }

    /// Throws a message naming the first part that does not fit a batch of `batch` images of
    /// `channels`×`size`×`size`.
    public func validate(batch: Int, channels: Int, size: Int) throws {
        guard strength.isFinite, strength > 0, strength <= 1 else {
            throw PipelineError.invalidOption("strength must be in (0, 1], got \(strength)")
        }
        let s = image.shape
        guard s.count == 4, s[0] == 1 || s[0] == batch, s[1] == channels, s[2] == size, s[3] == size else {
            throw PipelineError.invalidOption(
                "init image must be [1 or \(batch), \(channels), \(size), \(size)] (the model's size), got \(s)")
        }
        if let mask {
            let m = mask.shape
            guard m.count == 4, m[0] == 1 || m[0] == batch, m[1] == 1, m[2] == size, m[3] == size else {
                throw PipelineError.invalidOption("mask must be [1 or \(batch), 1, \(size), \(size)], got \(m)")
            }
        }
    }

    /// The index of the first step of `steps` that runs (diffusers: `n − ⌊n·strength⌋`); throws
    /// when the strength is so small that no step would run.
    public func firstStep(of steps: Int) throws -> Int {
        let running = min(Int(Double(steps) * strength), steps)
        guard running >= 1 else {
            throw PipelineError.invalidOption("strength \(strength) runs no step of \(steps); raise strength or steps")
        }
        return steps - running
    }

    /// The loop's start and, for inpainting, the constraint that puts the kept region back:
    /// `noise` is the seeded x_T (its batch), `context` r_φ with the condition bound (nil for the
    /// baseline or without context).
    func begin(
        sampler: any DiffusionSampler, noise: Tensor, context: (any ContextBias)?
    ) throws -> (sample: Tensor, firstStep: Int, constraint: SampleConstraint?) {
        let batch = noise.shape[0]
        let device = try noise.device
        let image = try self.image.to(device).to(noise.dtype).expanded(noise.shape).contiguous()
        let mask = try self.mask.map { try $0.to(device).to(noise.dtype).expanded([batch, 1, noise.shape[2], noise.shape[3]]).contiguous() }
        let process = ContextualDiffusion(schedule: sampler.schedule)
        func forward(_ t: Int) throws -> Tensor {
            try process.marginal(x0: image, timestep: t, noise: noise, context: context?.context(x0: image, timestep: t))
        }
        let timesteps = sampler.timesteps
        let first = try firstStep(of: timesteps.count)
        let sample = strength >= 1 ? noise : try forward(timesteps[first])
        guard let mask else { return (sample, first, nil) }
        let keep = try -mask + 1
        let constraint: SampleConstraint = { x, next in
            let known = try next.map(forward) ?? image
            return try x * mask + known * keep
        }
        return (sample, first, constraint)
    }
}
