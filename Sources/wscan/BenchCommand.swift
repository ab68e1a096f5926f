import ArgumentParser
import Foundation
import WscanKernels
import WscanFormats

/// Kernel micro-benchmarks used by `make bench` (hidden from --help).
struct KernelBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_bench", abstract: "Kernel micro-benchmarks (for make bench).",
                                                    shouldDisplay: false)
    @Option(help: "Elements per kernel run.") var elements = 1 << 26
    @Argument(help: "Which: stats, bf16, f16, hash") var which: [String] = ["stats", "bf16", "f16", "hash"]

    func run() throws {
        let n = elements
        var rng = SystemRandomNumberGenerator()
        let f = (0..<n).map { _ in Float.random(in: -1...1, using: &rng) }
        let bf = f.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
        let h = f.map { Float16($0) }
        func time(_ label: String, bytes: Int, _ body: () -> Void) {
            body()
            var best = Double.infinity
            for _ in 0..<3 { let t0 = DispatchTime.now().uptimeNanoseconds; body(); best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
            print(String(format: "%-24@ %8.2f Gelem/s  %8.2f GB/s", label as NSString, Double(n) / best / 1e9, Double(bytes) / best / 1e9))
        }
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: 4096)
        defer { buf.deallocate() }
        for w in which {
            switch w {
            case "stats":
                time("stats f32", bytes: n * 4) { var s = TensorStats(); f.withUnsafeBufferPointer { StatsKernel.accumulate($0.baseAddress!, n, into: &s) }; blackHole(s.mean) }
            case "bf16":
                time("decode bf16", bytes: n * 2) { bf.withUnsafeBytes { p in var i = 0; while i < n { Decode.bf16(p.baseAddress! + i * 2, 4096, buf); i += 4096 } }; blackHole(buf[0]) }
                time("stats bf16 (fused)", bytes: n * 2) { var s = TensorStats(); bf.withUnsafeBytes { StatsKernel.accumulateBF16($0.baseAddress!, n, into: &s) }; blackHole(s.mean) }
            case "f16":
                time("decode f16", bytes: n * 2) { h.withUnsafeBytes { p in var i = 0; while i < n { Decode.f16(p.baseAddress! + i * 2, 4096, buf); i += 4096 } }; blackHole(buf[0]) }
            case "hash":
                time("xxh3-128", bytes: n * 4) { f.withUnsafeBytes { blackHole(XXH3Hasher.hash($0.baseAddress!, $0.count)) } }
            default: throw ValidationError("unknown benchmark \(w)")
            }
        }
    }
}

@inline(never) func blackHole<T>(_ x: T) { withExtendedLifetime(x) {} }
