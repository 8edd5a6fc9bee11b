import Foundation
import Testing
import Torch

@testable import Fuzzing

/// A seeded slice of `contextdiff fuzz` (docs/RELIABILITY.md has the full run): every mutated
/// file is accepted or rejected with one of the project's typed errors, fast, without a rise in
/// peak memory beyond the bound.
@Suite("Fuzzing: every loader rejects hostile files with typed errors", .serialized)
struct FuzzingTests {
    static func scratch() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("cd-fuzz-\(UUID().uuidString)")
    }

    /// In this process other suites run concurrently, so the peak-memory bound is checked where
    /// the fuzzer has a process of its own (EndToEndTests' `fuzzCommandHoldsTheMemoryBound`).
    @Test func seededSliceOfEveryFormatPasses() throws {
        var limits = FuzzLimits()
        limits.memoryBoundBytes = .max
        let fuzzer = try Fuzzer(seed: 20261203, scratch: Self.scratch(), limits: limits)
        var plan: [FuzzFormat: Int] = [:]
        for format in FuzzFormat.allCases { plan[format] = format == .video ? 20 : 80 }
        let report = try fuzzer.run(cases: plan)
        #expect(report.failures.isEmpty, "\(report.failures)")
        #expect(report.totalCases == plan.values.reduce(0, +))
        for format in FuzzFormat.allCases {
            let counts = try #require(report.counts[format])
            // The mutations reach the loaders' checks: most cases are rejected, some still load.
            #expect(counts.rejected > counts.cases / 4, "\(format): \(counts.rejected) of \(counts.cases) rejected")
            #expect(counts.accepted + counts.rejected == counts.cases)
        }
    }

    @Test func casesAreReproducibleFromTheSeed() throws {
        let a = try Fuzzer(seed: 7, scratch: Self.scratch()), b = try Fuzzer(seed: 7, scratch: Self.scratch())
        let c = try Fuzzer(seed: 8, scratch: Self.scratch())
        for format in [FuzzFormat.safetensors, .png, .modelFolder, .metadata] {
            for index in [0, 5, 17] {
                #expect(try a.caseInput(format, index: index).bytes == b.caseInput(format, index: index).bytes)
            }
            #expect(try (0..<8).contains { try a.caseInput(format, index: $0).bytes != c.caseInput(format, index: $0).bytes })
        }
    }

    /// The untyped-error check is not vacuous: an error of a foreign type counts as a failure.
    @Test func foreignErrorsAreNotTyped() {
        struct Foreign: Error {}
        #expect(Fuzzer.typedErrorName(Foreign()) == nil)
        #expect(Fuzzer.typedErrorName(CocoaError(.fileReadCorruptFile)) == nil)
        #expect(Fuzzer.typedErrorName(TorchError.invalidArgument("x")) == "TorchError")
    }
}
