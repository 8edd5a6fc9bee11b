import Foundation
import Testing

@testable import ContextDiff

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
}
