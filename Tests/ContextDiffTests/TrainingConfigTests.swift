import Foundation
import Testing

@testable import ContextDiff
import Torch

@Suite("Training configuration")
struct TrainingConfigTests {
    /// A timestep range must be ordered, and survives a JSON round trip.
    @Test func timestepRangeIsValidatedAndRoundTrips() throws {
        var config = TrainingConfig()
        config.timestepRange = [600, 300]
        #expect(throws: TrainingError.self) { try config.validate() }
        config.timestepRange = [300, 600]
        try config.validate()
        let decoded = try JSONDecoder().decode(TrainingConfig.self, from: JSONEncoder().encode(config))
        #expect(decoded.timestepRange == [300, 600])
    }

    /// A recipe names its precision (fp32 when it does not); an unknown one is refused.
    @Test func precisionIsARecipeKey() throws {
        #expect(try JSONDecoder().decode(TrainingConfig.self, from: Data("{}".utf8)).precision == .fp32)
        #expect(try JSONDecoder().decode(TrainingConfig.self, from: Data(#"{"precision": "bf16"}"#.utf8)).precision == .bf16)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(TrainingConfig.self, from: Data(#"{"precision": "fp8"}"#.utf8)) }
    }
}
