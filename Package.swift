// swift-tools-version: 6.0
import Foundation
import PackageDescription

// Which libtorch the C shim compiles and links against. Unset (the default, CI): Debian's
// libtorch 1.13 from /usr. `CONTEXTDIFF_LIBTORCH=/path/to/torch` (a folder holding `include/`
// and `lib/`, as `scripts/setup-libtorch.sh` makes from a PyPI torch 2.x wheel, or an installed
// `site-packages/torch`): those headers, and only libtorch_cpu and libc10 linked, so the binary
// runs without CUDA; `--device cuda` loads libtorch_cuda from the same folder at run time.
// Build such a tree in its own build folder: `swift build --build-path .build-torch2`.
let libtorch = ProcessInfo.processInfo.environment["CONTEXTDIFF_LIBTORCH"].flatMap { $0.isEmpty ? nil : $0 }
// oneDNN's own headers (Debian's libdnnl-dev, installed by scripts/setup.sh): the shim then calls
// the libdnnl that Debian's libtorch links for Winograd convolutions (Sources/CTorch/winograd.cpp).
// Not with another libtorch: PyPI's torch carries its own oneDNN inside libtorch_cpu.
let onednn = libtorch == nil && FileManager.default.fileExists(atPath: "/usr/include/oneapi/dnnl/dnnl.hpp")
let torchCxxSettings: [CXXSetting] =
    [.define("USE_C10D_GLOO")] + (onednn ? [.define("CONTEXTDIFF_ONEDNN")] : [])
    + (libtorch.map { root in
        [.unsafeFlags(["-I\(root)/include", "-I\(root)/include/torch/csrc/api/include"])]
    } ?? [])
let torchLinkerSettings: [LinkerSetting] =
    libtorch.map { root in
        [
            .unsafeFlags(["-L\(root)/lib", "-Xlinker", "-rpath", "-Xlinker", "\(root)/lib"]),
            .linkedLibrary("torch_cpu"), .linkedLibrary("c10"), .linkedLibrary("dl"),
        ]
    } ?? ([.linkedLibrary("torch"), .linkedLibrary("torch_cpu"), .linkedLibrary("c10")]
        + (onednn ? [.linkedLibrary("dnnl")] : []))

let package = Package(
    name: "ContextDiff",
    products: [
        .library(name: "Core", targets: ["Core"]),
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "Torch", targets: ["Torch"]),
        .library(name: "NN", targets: ["NN"]),
        .library(name: "TextEncoders", targets: ["TextEncoders"]),
        .library(name: "Diffusion", targets: ["Diffusion"]),
        .library(name: "ContextDiff", targets: ["ContextDiff"]),
        .library(name: "Evaluation", targets: ["Evaluation"]),
        .library(name: "Workflows", targets: ["Workflows"]),
        .library(name: "Studio", targets: ["Studio"]),
        .executable(name: "contextdiff", targets: ["contextdiff"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.20.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.20.0"),
    ],
    targets: [
        // C ABI over libtorch: every entry point catches every C++ exception.
        .target(
            name: "CTorch",
            cxxSettings: torchCxxSettings,
            linkerSettings: torchLinkerSettings
        ),
        // The layers, bottom up (docs/ARCHITECTURE.md says what each owns and may import).
        .target(name: "Core"),  // Foundation only: the progress shape
        .target(name: "SafeTensors"),  // Foundation only
        .target(name: "Torch", dependencies: ["CTorch", "Core", "SafeTensors"]),
        .target(name: "NN", dependencies: ["Torch"]),
        .target(name: "TextEncoders", dependencies: ["Torch", "NN"]),
        .target(name: "Diffusion", dependencies: ["Torch"]),
        .target(name: "ContextDiff", dependencies: ["Torch", "NN", "TextEncoders", "Diffusion"]),
        // Tiny C wrapper over libpng/libjpeg: setjmp/longjmp error handling, status codes, never aborts.
        .target(name: "CImageIO", linkerSettings: [.linkedLibrary("png"), .linkedLibrary("jpeg")]),
        .target(name: "Datasets", dependencies: ["Torch", "CImageIO"]),
        .target(name: "Evaluation", dependencies: ["Torch", "NN", "Datasets", "ContextDiff"]),
        // What the commands do, as library calls: training runs from recipes, reports, experiments.
        .target(name: "Workflows", dependencies: ["Torch", "NN", "ContextDiff", "Datasets", "Evaluation"]),
        // The local web app (`contextdiff serve`): a job queue over a loaded model, the run history
        // in SQLite, a JSON API and the page, embedded in the binary.
        .target(
            name: "Studio",
            dependencies: [
                "Core", "Torch", "ContextDiff", "Datasets", "Evaluation", "Workflows",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [
                .embedInCode("Assets/index.html"), .embedInCode("Assets/studio.js"), .embedInCode("Assets/studio.css"),
                .embedInCode("Assets/openapi.yaml"),
            ]
        ),
        // Seeded fuzzing of every file loader (`contextdiff fuzz`, and a slice in the tests).
        .target(name: "Fuzzing", dependencies: ["Torch", "NN", "ContextDiff", "Datasets"]),
        .target(name: "TestSupport", dependencies: ["Torch", "NN"], path: "Tests/TestSupport"),
        .executableTarget(
            name: "contextdiff",
            dependencies: [
                "Torch", "NN", "ContextDiff", "Datasets", "Evaluation", "Fuzzing", "Workflows", "Studio",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "TorchTests", dependencies: ["Torch", "TestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "DiffusionTests", dependencies: ["Diffusion", "TestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "NNTests", dependencies: ["NN", "TestSupport"]),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "contextdiff", "Torch", "Datasets", "TestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .testTarget(name: "ContextDiffTests", dependencies: ["ContextDiff", "TestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "TestSupport"]),
        .testTarget(name: "FuzzingTests", dependencies: ["Fuzzing", "TestSupport"]),
        .testTarget(name: "EvaluationTests", dependencies: ["Evaluation", "TestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "WorkflowsTests", dependencies: ["Workflows", "TestSupport"]),
        .testTarget(
            name: "StudioTests",
            dependencies: ["Studio", "TestSupport", .product(name: "HummingbirdTesting", package: "hummingbird")]
        ),
    ],
    cxxLanguageStandard: .cxx17
)
