// swift-tools-version:6.0
// libFuzzer harness for wscan's checkpoint readers: `make fuzz` (see README, "Fuzzing").
import PackageDescription

let package = Package(
    name: "wscan-fuzz",
    dependencies: [.package(name: "wscan", path: "..")],
    targets: [
        .executableTarget(
            name: "FuzzReaders",
            dependencies: [.product(name: "WscanFormats", package: "wscan")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ],
    swiftLanguageModes: [.v5]
)
