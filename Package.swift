// swift-tools-version:6.0
import PackageDescription

// Kernels are compiled for x86-64-v3 (Haswell: AVX2, FMA, F16C) in release builds; the CLI checks the
// CPU at start-up and refuses clearly on a machine without these features (see WscanKernels/CPU.swift).
let kernelFlags: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-target-cpu", "haswell"], .when(configuration: .release)),
    .unsafeFlags(["-target-cpu", "haswell"], .when(configuration: .debug)),
]

let package = Package(
    name: "wscan",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "wscan", targets: ["wscan"]),
        // For the fuzz harness in fuzz/ (a separate package, built with libFuzzer and ASan).
        .library(name: "WscanFormats", targets: ["WscanFormats"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
    ],
    targets: [
        // C shims over system libraries: xxHash, OpenBLAS/LAPACKE, zlib, libcrypto (SHA-256), Graphviz.
        .target(
            name: "CWscan",
            path: "Sources/CWscan",
            cSettings: [.unsafeFlags(["-I/usr/include/graphviz", "-I/usr/include/x86_64-linux-gnu", "-O2"])],
            linkerSettings: [
                .linkedLibrary("xxhash"), .linkedLibrary("dl"),   // OpenBLAS/LAPACKE are dlopen'ed on first use
                .linkedLibrary("z"), .linkedLibrary("crypto"), .linkedLibrary("gvc"), .linkedLibrary("cgraph"),
            ]
        ),
        .target(name: "WscanKernels", dependencies: ["CWscan"], swiftSettings: kernelFlags),
        .target(name: "WscanFormats", dependencies: ["WscanKernels", "CWscan"]),
        .target(name: "WscanAnalysis", dependencies: ["WscanKernels", "WscanFormats"], swiftSettings: kernelFlags),
        .target(name: "WscanCatalog", dependencies: [
            "CWscan", "WscanFormats", "WscanKernels", "WscanAnalysis", .product(name: "GRDB", package: "GRDB.swift"),
        ]),
        .target(name: "WscanReport", dependencies: ["WscanCatalog", "WscanAnalysis", "WscanFormats", "CWscan"]),
        .executableTarget(name: "wscan", dependencies: [
            "WscanKernels", "WscanFormats", "WscanAnalysis", "WscanCatalog", "WscanReport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "WscanTests", dependencies: [
            "WscanKernels", "WscanFormats", "WscanAnalysis", "WscanCatalog", "WscanReport",
            .product(name: "GRDB", package: "GRDB.swift"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
