import Foundation
import Torch

@testable import Diffusion

/// diffusers' scheduler-test fixtures (tests/schedulers/test_schedulers.py) and the sampler part
/// of Fixtures/diffusers_schedulers.json (scripts/reference/make_scheduler_references.py).
enum SamplerFixture {
    /// `dummy_sample_deter`: `torch.arange(768).reshape(3,8,8,4) / 768` permuted to (4,3,8,8).
    /// Kept as the permuted (non-contiguous) view, as in Python, so that libtorch walks memory in
    /// the same order (float32 sums then match too).
    static func dummySample() throws -> Tensor {
        try (Tensor.arange(0, 768, dtype: .float32) / 768).reshaped([3, 8, 8, 4]).permuted([3, 0, 1, 2])
    }

    /// `dummy_model(x, t) = x * t / (t + 1)` with t a float32 tensor.
    static func dummyModel(_ x: Tensor, _ t: Int) throws -> Tensor {
        let tf = Float(t)
        return try x * Double(tf) / Double(tf + 1)
    }

    /// `((arange(768) % 7 - 3) / 4)` reshaped (4,3,8,8), float32.
    static func deterministicNoise() throws -> Tensor {
        let values = (0..<768).map { Float($0 % 7 - 3) / 4 }
        return try Tensor(values, shape: [4, 3, 8, 8])
    }

    struct Config: Decodable {
        let numTrainTimesteps: Int
        let betaSchedule: String
        let betaStart: Double
        let betaEnd: Double
        let clipSample: Bool
        let predictionType: String?
        let setAlphaToOne: Bool?
        let stepsOffset: Int?
        let timestepSpacing: String?

        enum CodingKeys: String, CodingKey {
            case numTrainTimesteps = "num_train_timesteps"
            case betaSchedule = "beta_schedule"
            case betaStart = "beta_start"
            case betaEnd = "beta_end"
            case clipSample = "clip_sample"
            case predictionType = "prediction_type"
            case setAlphaToOne = "set_alpha_to_one"
            case stepsOffset = "steps_offset"
            case timestepSpacing = "timestep_spacing"
        }

        func schedule() throws -> NoiseSchedule {
            try NoiseSchedule(
                NoiseScheduleConfig(
                    trainTimesteps: numTrainTimesteps, betaSchedule: BetaSchedule(parsing: betaSchedule),
                    betaStart: betaStart, betaEnd: betaEnd))
        }
        var prediction: PredictionTarget {
            get throws { try predictionType.map { try PredictionTarget(parsing: $0) } ?? .epsilon }
        }
        var spacing: TimestepSpacing {
            get throws { try timestepSpacing.map { try TimestepSpacing(parsing: $0) } ?? .leading }
        }
        var processing: X0Processing { clipSample ? .clip(range: 1) : .none }
    }

    struct LoopStep: Decodable {
        let t: Int
        let prevT: Int?
        let sourceT: Int?
        let alphaProdT: Double?
        let alphaProdTPrev: Double?
        let alphaProdSource: Double?
        let alphaProdTarget: Double?
        let predOriginalAbsSum: Double
        let prevSampleAbsSum: Double

        enum CodingKeys: String, CodingKey {
            case t
            case prevT = "prev_t"
            case sourceT = "source_t"
            case alphaProdT = "alpha_prod_t"
            case alphaProdTPrev = "alpha_prod_t_prev"
            case alphaProdSource = "alpha_prod_source"
            case alphaProdTarget = "alpha_prod_target"
            case predOriginalAbsSum = "pred_original_abs_sum"
            case prevSampleAbsSum = "prev_sample_abs_sum"
        }
    }

    struct Loop: Decodable {
        let name: String
        let scheduler: String
        let config: Config
        let numInferenceSteps: Int
        let eta: Double?
        let timesteps: [Int]
        let steps: [LoopStep]
        let finalSample: [Double]
        let absSum: Double
        let absMean: Double
        let varianceNoise: String?

        enum CodingKeys: String, CodingKey {
            case name, scheduler, config, eta, timesteps, steps
            case numInferenceSteps = "num_inference_steps"
            case finalSample = "final_sample"
            case absSum = "abs_sum"
            case absMean = "abs_mean"
            case varianceNoise = "variance_noise"
        }
    }

    struct DDPMVariance: Decodable {
        let varianceType: String
        let numInferenceSteps: Int?
        let t: Int
        let prevT: Int
        let variance: Double

        enum CodingKeys: String, CodingKey {
            case t, variance
            case varianceType = "variance_type"
            case numInferenceSteps = "num_inference_steps"
            case prevT = "prev_t"
        }
    }

    struct DDPMStep: Decodable {
        let varianceType: String
        let predictionType: String
        let t: Int
        let prevT: Int
        let prevSample: [Double]
        let predOriginalSample: [Double]
        let prevSampleAbsSum: Double

        enum CodingKeys: String, CodingKey {
            case t
            case varianceType = "variance_type"
            case predictionType = "prediction_type"
            case prevT = "prev_t"
            case prevSample = "prev_sample"
            case predOriginalSample = "pred_original_sample"
            case prevSampleAbsSum = "prev_sample_abs_sum"
        }
    }

    struct DDPM: Decodable {
        let config: Config
        let variances: [DDPMVariance]
        let stepsZeroNoise: [DDPMStep]

        enum CodingKeys: String, CodingKey {
            case config, variances
            case stepsZeroNoise = "steps_zero_noise"
        }
    }

    struct File: Decodable {
        let ddimLoops: [Loop]
        let ddimInverseLoops: [Loop]
        let ddpm: DDPM

        enum CodingKeys: String, CodingKey {
            case ddimLoops = "ddim_loops"
            case ddimInverseLoops = "ddim_inverse_loops"
            case ddpm
        }
    }

    static func load() throws -> File {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/diffusers_schedulers.json")
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: url))
    }
}

/// `|a − b| / |b|`, or `|a − b|` when `b` is 0.
func relativeError(_ a: Double, _ b: Double) -> Double {
    b == 0 ? Swift.abs(a - b) : Swift.abs(a - b) / Swift.abs(b)
}

/// `torch.sum(torch.abs(x)).item()`, the float32 reduction diffusers' tests check.
func absSum(_ x: Tensor) throws -> Double { try x.abs().sum().item() }

/// Elementwise comparison of a float32 tensor with fixture values (exact float32 values as Doubles).
func compareFloat32(_ x: Tensor, _ expected: [Double]) throws -> (maxAbs: Double, differing: Int) {
    let mine = try x.contiguous().scalars(as: Float.self)
    precondition(mine.count == expected.count)
    var maxAbs = 0.0
    var differing = 0
    for (m, e) in zip(mine, expected) {
        if m != Float(e) || m.isNaN { differing += 1 }
        maxAbs = Swift.max(maxAbs, Swift.abs(Double(m) - e))
    }
    return (maxAbs, differing)
}

/// Byte-for-byte equality of two tensors (shape, dtype and every bit, so −0 ≠ +0).
func bitwiseEqual(_ a: Tensor, _ b: Tensor) throws -> Bool {
    guard a.shape == b.shape, a.dtype == b.dtype else { return false }
    return try a.contiguous().bytes() == b.contiguous().bytes()
}
