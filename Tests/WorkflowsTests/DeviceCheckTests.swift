import Foundation
import Testing
import Torch
@testable import Workflows

/// The device notion on a machine with or without CUDA: a missing GPU is a typed error at once,
/// and the check that compares a device with the CPU finds a difference when there is one.
@Suite("Devices: CUDA asked for where there is none, and the device check")
struct DeviceCheckTests {
    /// Whether this machine has a usable CUDA (then the "absent" expectations do not apply).
    static let hasCUDA = (try? Torch.cudaDeviceCount()).map { $0 > 0 } ?? false

    @Test func cudaWithoutCUDAIsATypedErrorSayingWhy() throws {
        try #require(!Self.hasCUDA, "this machine has CUDA")
        do {
            try Torch.checkAvailable(.cuda(0))
            Issue.record("cuda:0 accepted without CUDA")
        } catch let TorchError.deviceUnavailable(message) {
            #expect(message.contains("CUDA is not available"), "\(message)")
        }
        // Creating a tensor there fails the same way, and the thread's default stays the CPU.
        #expect(throws: TorchError.self) { try Torch.withDefaultDevice(.cuda(0)) { try Tensor.zeros([2]) } }
        #expect(Torch.defaultDevice == .cpu)
        // CPU and meta are always there.
        try Torch.checkAvailable(.cpu)
        try Torch.checkAvailable(.meta)
        #expect(!Torch.libtorchVersion.isEmpty && Torch.libtorchVersion.split(separator: ".").count == 3)
    }

    @Test func relativeDifferenceSeesAPerturbationAtItsSize() throws {
        let a = try Tensor([1, -2, 4, 0.5] as [Float], shape: [4])
        #expect(try DeviceCheck.relativeDifference(a, a) == 0)
        let b = try Tensor([1, -2, 4.0004, 0.5] as [Float], shape: [4])
        let d = try DeviceCheck.relativeDifference(b, a)
        #expect(abs(d - 1e-4) < 1e-6, "\(d)")
        #expect(try DeviceCheck.relativeDifference(a, Tensor.zeros([5])) == .infinity)
        #expect(try DeviceCheck.relativeDifference(Tensor([Float.nan, 0, 0, 0], shape: [4]), a) == .infinity)
    }

    /// The CPU against itself: every comparison runs (networks, three samplers, training) and
    /// every figure is at rounding level: the two sides really are the same weights, inputs and
    /// draws. (Alone it reads exactly 0; tests running beside it in this process may change
    /// libtorch's thread count between the two sides, which reorders a reduction's float sums:
    /// 3e-5 was seen. Different weights or draws differ by order 1.)
    @Test func theCPUAgainstItselfAgreesExactly() throws {
        var check = DeviceCheck(device: .cpu)
        check.samplerSteps = 3
        check.trainingSteps = 3
        check.batch = 2
        let report = try check.run()
        #expect(report.figures.map(\.name) == [
            "unet_forward", "adapter_forward", "sampler_ddim", "sampler_ddpm", "sampler_dpmpp", "training_losses",
        ])
        for f in report.figures { #expect(f.relativeDifference <= 1e-4, "\(f.name): \(f.relativeDifference)") }
        #expect(report.passed)
        #expect(report.losses["cpu"]?.count == 3 && report.losses["cpu"]!.allSatisfy { $0.isFinite && $0 > 0 })
        let decoded = try JSONDecoder().decode(DeviceCheck.Report.self, from: JSONEncoder().encode(report))
        #expect(decoded.figures == report.figures)
    }
}
