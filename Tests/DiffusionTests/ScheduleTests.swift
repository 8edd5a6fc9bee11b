import Foundation
import Testing

import Diffusion

/// The parts of Fixtures/diffusers_schedulers.json (written by
/// scripts/reference/make_scheduler_references.py with diffusers 0.27.2) that the schedule tests use.
private struct ScheduleFixture: Decodable {
    struct Versions: Decodable {
        let diffusers: String
        let torch: String
    }

    struct Schedule: Decodable {
        let name: String
        let config: NoiseScheduleConfig
        let betas: [Double]
        let alphasCumprod: [Double]

        enum CodingKeys: String, CodingKey {
            case name, config, betas
            case alphasCumprod = "alphas_cumprod"
        }
    }

    struct Timesteps: Decodable {
        let scheduler: String
        let spacing: TimestepSpacing
        let stepsOffset: Int
        let numInferenceSteps: Int
        let timesteps: [Int]

        enum CodingKeys: String, CodingKey {
            case scheduler, spacing, timesteps
            case stepsOffset = "steps_offset"
            case numInferenceSteps = "num_inference_steps"
        }
    }

    let versions: Versions
    let schedules: [Schedule]
    let timesteps: [Timesteps]
    let inverseTimesteps: [Timesteps]
    let ddpmTimesteps: [Timesteps]

    enum CodingKeys: String, CodingKey {
        case versions, schedules, timesteps
        case inverseTimesteps = "inverse_timesteps"
        case ddpmTimesteps = "ddpm_timesteps"
    }

    static func load() throws -> ScheduleFixture {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/diffusers_schedulers.json")
        return try JSONDecoder().decode(ScheduleFixture.self, from: Data(contentsOf: url))
    }
}

/// Distance in units in the last place between two finite floats of the same sign.
private func ulpDistance(_ a: Float, _ b: Float) -> Int {
    if a == b { return 0 }
    return abs(Int(Int32(bitPattern: a.bitPattern)) - Int(Int32(bitPattern: b.bitPattern)))
}

/// diffusers 0.27.2's trailing spacing can return n + 1 timesteps ending in -1 (numpy float
/// `arange` length rounding); NoiseSchedule returns only the first n. Same for the inverse
/// scheduler, where the spurious -1 comes first.
private func expectedDescending(_ c: ScheduleFixture.Timesteps) -> [Int] {
    if c.timesteps.count == c.numInferenceSteps + 1, c.timesteps.last == -1 {
        return Array(c.timesteps.dropLast())
    }
    return c.timesteps
}

@Suite("Noise schedules vs diffusers")
struct ScheduleTests {
    @Test func fixtureProvenance() throws {
        let fixture = try ScheduleFixture.load()
        #expect(fixture.versions.diffusers == "0.27.2")
        #expect(fixture.schedules.count >= 4)
    }

    @Test func alphasCumprodMatchDiffusers() throws {
        let fixture = try ScheduleFixture.load()
        for ref in fixture.schedules {
            let schedule = try NoiseSchedule(ref.config)
            #expect(schedule.alphasCumprod.count == ref.alphasCumprod.count, "\(ref.name)")
            #expect(schedule.betas.count == ref.betas.count, "\(ref.name)")
            guard schedule.alphasCumprod.count == ref.alphasCumprod.count,
                schedule.betas.count == ref.betas.count
            else { continue }

            var maxRel = 0.0
            var maxUlp = 0
            var mismatches = 0
            for (t, (mine, theirs)) in zip(schedule.alphasCumprod, ref.alphasCumprod).enumerated() {
                let expected = Float(theirs)
                if expected == 0 {
                    #expect(mine == 0, "\(ref.name): alphas_cumprod[\(t)] = \(mine), diffusers 0")
                    continue
                }
                maxRel = max(maxRel, abs(Double(mine) - theirs) / abs(theirs))
                maxUlp = max(maxUlp, ulpDistance(mine, expected))
                if mine != expected { mismatches += 1 }
            }
            #expect(
                maxRel <= 1e-6,
                "\(ref.name): max relative error \(maxRel), max \(maxUlp) ulp, \(mismatches) entries differ")

            var betaUlp = 0
            for (mine, theirs) in zip(schedule.betas, ref.betas) {
                betaUlp = max(betaUlp, ulpDistance(mine, Float(theirs)))
            }
            #expect(betaUlp <= 1, "\(ref.name): betas differ by up to \(betaUlp) ulp")
        }
    }

    @Test func ddimTimestepsMatchDiffusers() throws {
        let fixture = try ScheduleFixture.load()
        let schedule = try NoiseSchedule(NoiseScheduleConfig())
        #expect(fixture.timesteps.count >= 3 * 2 * 4)
        for c in fixture.timesteps {
            let label = "\(c.spacing.rawValue) offset \(c.stepsOffset) n \(c.numInferenceSteps)"
            if let bad = c.timesteps.first(where: { $0 >= 1000 }) {
                // leading, n == T, steps_offset 1: diffusers yields timestep 1000 and fails later.
                #expect(throws: ScheduleError.timestepOutOfRange(timestep: bad, trainTimesteps: 1000), "\(label)") {
                    try schedule.timesteps(
                        inferenceSteps: c.numInferenceSteps, spacing: c.spacing, stepsOffset: c.stepsOffset)
                }
                continue
            }
            let mine = try schedule.timesteps(
                inferenceSteps: c.numInferenceSteps, spacing: c.spacing, stepsOffset: c.stepsOffset)
            #expect(mine == expectedDescending(c), "\(label)")
            #expect(mine.count == c.numInferenceSteps, "\(label)")
        }
    }

    @Test func inverseTimestepsAreAscendingDDIMTimesteps() throws {
        let fixture = try ScheduleFixture.load()
        let schedule = try NoiseSchedule(NoiseScheduleConfig())
        for c in fixture.inverseTimesteps {
            let label = "inverse \(c.spacing.rawValue) offset \(c.stepsOffset) n \(c.numInferenceSteps)"
            var expected = c.timesteps
            if expected.count == c.numInferenceSteps + 1, expected.first == -1 { expected.removeFirst() }
            let mine = try schedule.timesteps(
                inferenceSteps: c.numInferenceSteps, spacing: c.spacing, stepsOffset: c.stepsOffset)
            #expect(Array(mine.reversed()) == expected, "\(label)")
        }
    }

    @Test func ddpmTimestepsMatchDiffusers() throws {
        let fixture = try ScheduleFixture.load()
        let schedule = try NoiseSchedule(NoiseScheduleConfig())
        #expect(fixture.ddpmTimesteps.count == 2)
        for c in fixture.ddpmTimesteps {
            let mine = try schedule.timesteps(
                inferenceSteps: c.numInferenceSteps, spacing: c.spacing, stepsOffset: c.stepsOffset)
            #expect(mine == c.timesteps, "DDPM n \(c.numInferenceSteps)")
        }
    }

    @Test func alphaBarIndexing() throws {
        let schedule = try NoiseSchedule(NoiseScheduleConfig(betaSchedule: .scaledLinear, betaStart: 0.00085, betaEnd: 0.012))
        #expect(schedule.alphaBar(-1) == 1)
        #expect(schedule.alphaBar(0) == schedule.alphasCumprod[0])
        #expect(schedule.alphaBar(999) == schedule.alphasCumprod[999])
        #expect(schedule.alphas == schedule.betas.map { 1 - $0 })
        let zeroSNR = try NoiseSchedule(NoiseScheduleConfig(rescaleZeroTerminalSNR: true))
        #expect(zeroSNR.alphaBar(999) == 0)
    }

    @Test func invalidStepCountsThrow() throws {
        let schedule = try NoiseSchedule(NoiseScheduleConfig())
        for spacing in TimestepSpacing.allCases {
            #expect(throws: ScheduleError.nonPositiveInferenceSteps(0)) {
                try schedule.timesteps(inferenceSteps: 0, spacing: spacing)
            }
            #expect(throws: ScheduleError.nonPositiveInferenceSteps(-3)) {
                try schedule.timesteps(inferenceSteps: -3, spacing: spacing)
            }
            #expect(throws: ScheduleError.tooManyInferenceSteps(requested: 1001, trainTimesteps: 1000)) {
                try schedule.timesteps(inferenceSteps: 1001, spacing: spacing)
            }
            #expect(throws: ScheduleError.negativeStepsOffset(-1)) {
                try schedule.timesteps(inferenceSteps: 10, spacing: spacing, stepsOffset: -1)
            }
        }
        #expect(throws: ScheduleError.timestepOutOfRange(timestep: 1000, trainTimesteps: 1000)) {
            try schedule.timesteps(inferenceSteps: 1000, spacing: .leading, stepsOffset: 1)
        }
        #expect(try schedule.timesteps(inferenceSteps: 1000, spacing: .leading) == Array((0..<1000).reversed()))
    }

    @Test func invalidConfigsThrow() {
        #expect(throws: ScheduleError.nonPositiveTrainTimesteps(0)) {
            try NoiseSchedule(NoiseScheduleConfig(trainTimesteps: 0))
        }
        #expect(throws: ScheduleError.nonPositiveTrainTimesteps(-5)) {
            try NoiseSchedule(NoiseScheduleConfig(trainTimesteps: -5))
        }
        let badRanges: [(Double, Double)] = [
            (0, 0.02), (-0.001, 0.02), (0.02, 0.02), (0.02, 0.01), (0.0001, 1), (0.0001, 1.5), (.nan, 0.02),
            (0.0001, .infinity),
        ]
        for schedule in [BetaSchedule.linear, .scaledLinear] {
            for (start, end) in badRanges {
                #expect(throws: ScheduleError.self, "\(schedule) \(start) \(end)") {
                    try NoiseSchedule(NoiseScheduleConfig(betaSchedule: schedule, betaStart: start, betaEnd: end))
                }
                do {
                    _ = try NoiseSchedule(NoiseScheduleConfig(betaSchedule: schedule, betaStart: start, betaEnd: end))
                } catch {
                    guard case .invalidBetaRange = error else {
                        Issue.record("expected invalidBetaRange, got \(error)")
                        continue
                    }
                    #expect(!error.description.isEmpty)
                }
            }
        }
        // The cosine schedule ignores beta_start / beta_end, as in diffusers.
        #expect(throws: Never.self) {
            try NoiseSchedule(NoiseScheduleConfig(betaSchedule: .cosine, betaStart: 0, betaEnd: 5))
        }
        // Zero-SNR rescaling of a single-step schedule divides by zero.
        #expect(throws: ScheduleError.self) {
            try NoiseSchedule(NoiseScheduleConfig(trainTimesteps: 1, rescaleZeroTerminalSNR: true))
        }
    }

    @Test func configUsesDiffusersKeys() throws {
        let json = """
            {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false,
             "steps_offset": 1, "trained_betas": null, "clip_sample": false}
            """
        let config = try JSONDecoder().decode(NoiseScheduleConfig.self, from: Data(json.utf8))
        #expect(
            config
                == NoiseScheduleConfig(
                    trainTimesteps: 1000, betaSchedule: .scaledLinear, betaStart: 0.00085, betaEnd: 0.012,
                    rescaleZeroTerminalSNR: false))

        let encoded = try JSONEncoder().encode(NoiseScheduleConfig(betaSchedule: .cosine, rescaleZeroTerminalSNR: true))
        let object = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        #expect(
            Set(object.keys)
                == ["num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "rescale_betas_zero_snr"])
        #expect(object["beta_schedule"] as? String == "squaredcos_cap_v2")
        #expect(try JSONDecoder().decode(NoiseScheduleConfig.self, from: encoded).rescaleZeroTerminalSNR)
        #expect(try JSONDecoder().decode(NoiseScheduleConfig.self, from: Data("{}".utf8)) == NoiseScheduleConfig())
    }
}
