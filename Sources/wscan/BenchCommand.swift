import ArgumentParser
import Foundation
import WscanKernels
import WscanFormats
import WscanAnalysis

/// Kernel micro-benchmarks used by `make bench` (hidden from --help).
struct KernelBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_bench", abstract: "Kernel micro-benchmarks (for make bench).",
                                                    shouldDisplay: false)
    @Option(help: "Elements per kernel run.") var elements = 1 << 26
    @Option(help: "Matrix size for svd (and lap: side of the square cost matrix).") var size = 4096
    @Option(help: "Checkpoint for the sparsity benchmark; raw little-endian float64 size×size cost matrix for lap.") var file: String?
    @Argument(help: "Which: stats, bf16, f16, hash (also svd, svd-small, dequant, sparsity, lap)") var which: [String] = ["stats", "bf16", "f16", "hash"]

    func run() throws {
        let n = elements
        var rng = SystemRandomNumberGenerator()
        // Inputs are made only for the cases that use them.
        let needData = !Set(which).isDisjoint(with: ["stats", "bf16", "f16", "hash"])
        let f = needData ? (0..<n).map { _ in Float.random(in: -1...1, using: &rng) } : []
        let bf = needData ? f.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) } : []
        let h = needData ? f.map { Float16($0) } : []
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
            case "svd":
                // Singular values of a random size×size Float matrix: Gram+dsyevd_2stage vs sgesdd, one run each.
                let m = size
                var a = (0..<(m * m)).map { _ in Float.random(in: -1...1, using: &rng) }
                var t0 = DispatchTime.now().uptimeNanoseconds
                let g = try a.withUnsafeBufferPointer { try Linalg.gramEigenvalues($0.baseAddress!, m: m, n: m) }
                let tg = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                t0 = DispatchTime.now().uptimeNanoseconds
                let sv = try Linalg.singularValues(&a, m: m, n: m)
                let ts = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                let k = Int(Double(m) * 0.99)
                var worst = 0.0
                for i in 0..<k { worst = max(worst, abs(g[i].squareRoot() - Double(sv[i])) / Double(sv[i])) }
                print(String(format: "svd %dx%d  gram+syevd_2stage %.3f s  sgesdd %.3f s  max rel diff (top 99%%) %.2e  BLAS core %@ threads %d",
                             m, m, tg, ts, worst, CPU.blasCore as NSString, CPU.blasThreads))
            case "svd-small":
                for (m, n) in [(384, 384), (1536, 384), (384, 1536), (2048, 512)] {
                    let a = (0..<(m * n)).map { _ in Float.random(in: -1...1, using: &rng) }
                    var t0 = DispatchTime.now().uptimeNanoseconds
                    for _ in 0..<5 { _ = try a.withUnsafeBufferPointer { try Linalg.gramEigenvalues($0.baseAddress!, m: m, n: n) } }
                    let tg = Double(DispatchTime.now().uptimeNanoseconds - t0) / 5e9
                    t0 = DispatchTime.now().uptimeNanoseconds
                    for _ in 0..<5 { var d = a.map(Double.init); _ = try Linalg.singularValues(&d, m: m, n: n) }
                    let td = Double(DispatchTime.now().uptimeNanoseconds - t0) / 5e9
                    t0 = DispatchTime.now().uptimeNanoseconds
                    for _ in 0..<5 {
                        let k = min(m, n)
                        var g = [Double](repeating: 0, count: k * k)
                        let d = a.map(Double.init)
                        d.withUnsafeBufferPointer { dp in g.withUnsafeMutableBufferPointer { gp in
                            if n <= m { Linalg.gemm(dp.baseAddress!, dp.baseAddress!, gp.baseAddress!, m: n, n: n, k: m, transA: true) }
                            else { Linalg.gemm(dp.baseAddress!, dp.baseAddress!, gp.baseAddress!, m: m, n: m, k: n, transB: true) } } }
                        _ = try Linalg.symmetricEigenvalues(&g, n: k)
                    }
                    let t1 = Double(DispatchTime.now().uptimeNanoseconds - t0) / 5e9
                    print(String(format: "%5dx%-5d gram+2stage %.4f s   dgesdd %.4f s   gemm+dsyevd %.4f s", m, n, tg, td, t1))
                }
            case "dequant":
                // Output floats per second for Q8_0 and Q4_K against a plain F32 read of the same element count.
                let nb = n / 256 * 256
                let f32 = (0..<nb).map { _ in Float.random(in: -1...1, using: &rng) }
                let out = UnsafeMutablePointer<Float>.allocate(capacity: nb)
                defer { out.deallocate() }
                func rate(_ body: () throws -> Void) rethrows -> Double {
                    try body()
                    var best = Double.infinity
                    for _ in 0..<3 { let t0 = DispatchTime.now().uptimeNanoseconds; try body(); best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
                    return Double(nb) / best
                }
                let plain = rate { f32.withUnsafeBytes { Decode.f32($0.baseAddress!, nb, out) }; blackHole(out[0]) }
                for (type, blockElems, blockBytes, scaleOffsets) in [("Q8_0", 32, 34, [0]), ("Q4_K", 256, 144, [0, 2])] {
                    let blocks = nb / blockElems
                    var raw = [UInt8](repeating: 0, count: blocks * blockBytes)
                    for i in raw.indices { raw[i] = UInt8.random(in: 0...255, using: &rng) }
                    for b in 0..<blocks { for o in scaleOffsets {   // finite f16 scales
                        let h = Float16(Float.random(in: 0.001...0.05, using: &rng)).bitPattern
                        raw[b * blockBytes + o] = UInt8(h & 0xFF); raw[b * blockBytes + o + 1] = UInt8(h >> 8) } }
                    let r = try rate { try raw.withUnsafeBytes { try GGMLDequant.decode(type, $0.baseAddress!, blocks: blocks, out) }; blackHole(out[0]) }
                    print(String(format: "dequant %-5@ %7.2f Gfloat/s   plain F32 read %7.2f Gfloat/s   ratio %.2f", type as NSString, r / 1e9, plain / 1e9, r / plain))
                }
            case "sparsity":
                // A 20-point data-free global sparsity curve against one statistics pass over the same decoded weights.
                guard let file else { throw ValidationError("--file CHECKPOINT is required") }
                let ck = try CheckpointOpener.open(file)
                let all = try WeightSet.load(ck)
                let names = all.names.filter { (all.shapes[$0]?.count ?? 0) >= 2 }
                let w = all.subset(names)
                let total = names.reduce(0) { $0 + w.values[$1]!.count }
                func best(_ body: () throws -> Void) rethrows -> Double {
                    try body()
                    var b = Double.infinity
                    for _ in 0..<5 { let t0 = DispatchTime.now().uptimeNanoseconds; try body(); b = min(b, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
                    return b
                }
                let ts = best {
                    DispatchQueue.concurrentPerform(iterations: names.count) { i in
                        var st = TensorStats()
                        w.values[names[i]]!.withUnsafeBufferPointer { StatsKernel.accumulate($0.baseAddress!, $0.count, into: &st) }
                        blackHole(st.mean)
                    }
                }
                let vals = names.map { w.values[$0]! }
                let th = try best { blackHole(try Sparsity.histograms(vals).count) }
                print(String(format: "  histogram pass alone %.1f ms", th * 1000))
                let grid = (0..<20).map { Double($0) * 0.05 }
                var c: SparsityCurve?
                let tc = try best { c = try Sparsity.curve(w, tensors: names, scope: .global, pattern: .unstructured, grid: grid, evaluator: nil, refine: false) }
                print(String(format: "sparsity curve (20 points, global, data-free) on %@ matrix weights: %.1f ms; one statistics pass %.1f ms; ratio %.2f (goal <= 3); knee %@",
                             Fmt.count(total) as NSString, tc * 1000, ts * 1000, tc / ts, (c?.essential.knee.map { String(format: "%.0f%%", $0 * 100) } ?? "-") as NSString))
            case "lap":
                // Dense linear assignment on a size×size float64 cost matrix read from --file (so the Python
                // reference solves the identical input): best of 3, then the optimal total.
                guard let file else { throw ValidationError("--file COSTS.f64 is required") }
                let m = size
                let data = try Data(contentsOf: URL(fileURLWithPath: file))
                guard data.count == m * m * 8 else { throw ValidationError("\(file): \(data.count) bytes, expected \(m)x\(m) float64") }
                let cost = data.withUnsafeBytes { raw in (0..<(m * m)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) } }
                var best = Double.infinity
                var total = Double.nan
                for _ in 0..<3 {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    let r = try cost.withUnsafeBufferPointer { try LinearAssignment.solve($0.baseAddress!, rows: m, cols: m) }
                    best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                    total = r.total
                }
                print(String(format: "lap %d seconds %.6f total %.17g", m, best, total))
            case "hash":
                time("xxh3-128", bytes: n * 4) { f.withUnsafeBytes { blackHole(XXH3Hasher.hash($0.baseAddress!, $0.count)) } }
            default: throw ValidationError("unknown benchmark \(w)")
            }
        }
    }
}

@inline(never) func blackHole<T>(_ x: T) { withExtendedLifetime(x) {} }
