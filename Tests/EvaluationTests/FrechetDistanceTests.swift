import Foundation
import Testing
import Torch
@testable import Evaluation

/// Fixtures/frechet.json holds feature sets and their Fréchet distance computed by
/// pytorch-fid's formula with scipy.linalg.sqrtm (scripts/reference/make_frechet_fixture.py:
/// `/tmp/fvenv/bin/python scripts/reference/make_frechet_fixture.py`).
@Suite("Fréchet distance")
struct FrechetDistanceTests {
    struct Fixture: Decodable {
        struct Case: Decodable {
            var name: String
            var a: [[Double]]
            var b: [[Double]]
            var fd: Double
        }
        var generator: String
        var cases: [Case]
    }

    static func fixture() throws -> Fixture {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/frechet.json")
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }

    static func tensor(_ rows: [[Double]]) throws -> Tensor {
        try Tensor(rows.flatMap { $0 }, shape: [rows.count, rows[0].count])
    }

    @Test func agreesWithPytorchFIDAndScipy() throws {
        let fixture = try Self.fixture()
        #expect(fixture.cases.count >= 3)
        for c in fixture.cases {
            let fd = try FrechetDistance.distance(Self.tensor(c.a), Self.tensor(c.b))
            let relative = abs(fd - c.fd) / abs(c.fd)
            #expect(relative < 1e-6, "\(c.name): \(fd) vs scipy \(c.fd) (relative error \(relative))")
        }
    }

    @Test func distanceOfASetToItselfIsZeroAndTheDistanceIsSymmetric() throws {
        let fixture = try Self.fixture()
        for c in fixture.cases {
            let a = try Self.tensor(c.a), b = try Self.tensor(c.b)
            let trace = try GaussianStatistics(features: a).covariance.to(.float64)
            let scale = try (trace * Tensor.eye(trace.shape[0], dtype: .float64)).sum().item()
            #expect(abs(try FrechetDistance.distance(a, a)) < 1e-9 * scale, "\(c.name): FD(a, a)")
            let ab = try FrechetDistance.distance(a, b), ba = try FrechetDistance.distance(b, a)
            #expect(abs(ab - ba) <= 1e-9 * abs(ab), "\(c.name): FD(a, b) = \(ab), FD(b, a) = \(ba)")
        }
    }

    @Test func meanShiftOfIdenticalCovariancesIsTheSquaredDistance() throws {
        let g = Generator(seed: 3)
        let a = try Tensor.randn([50, 8], dtype: .float64, generator: g)
        let shift = try Tensor([0.5, -1, 0, 2, 0, 0, 1, 0.25] as [Double])
        let fd = try FrechetDistance.distance(a, a + shift)
        #expect(abs(fd - (0.25 + 1 + 4 + 1 + 0.0625)) < 1e-9)
    }

    @Test func fewerVectorsThanDimensionsStaysFinite() throws {
        // Singular covariances (N < D): sqrtm needs pytorch-fid's eps offset; eigh does not.
        let g = Generator(seed: 4)
        let a = try Tensor.randn([6, 32], dtype: .float64, generator: g)
        let b = try Tensor.randn([9, 32], dtype: .float64, generator: g) + 1
        let fd = try FrechetDistance.distance(a, b)
        #expect(fd.isFinite && fd > 0)
        // Zero eigenvalues come back as ±1e-16 and their square roots as 1e-8: the self-distance
        // is zero to about √ε of the covariance's trace.
        let self_ = try FrechetDistance.distance(a, a)
        #expect(abs(self_) < 1e-5 * 32, "FD(a, a) = \(self_)")
    }
}
