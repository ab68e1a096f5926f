import Foundation
import XCTest
@testable import WscanFormats
@testable import WscanAnalysis

/// The streaming paths (chunks decoded from the mapped file as a pass needs them) against the in-memory ones on
/// real files: the same floats, bit for bit, and the same curves.
final class StreamingTests: XCTestCase {
    let tmp = TempDir()

    /// Files of every reader and layout: F32/F16 safetensors, sharded, npy in C and Fortran order, big-endian,
    /// half, NaN/Inf, a deflated npz, GGUF with every quantized type, a torch zip checkpoint.
    var files: [String] {
        var f = ["mlp_seed0.safetensors", "mlp_seed0_f16.safetensors", "mlp_seed0_copy.npz", "mlp_seed1_sharded/model.safetensors.index.json"].map { Paths.corpus.appendingPathComponent($0).path }
        f += ["formats/fortran_f64.npy", "formats/c_order_f32.npy", "formats/bigendian_f4.npy", "formats/half.npy", "formats/nan_inf_f32.npy",
              "formats/deflated.npz", "gguf/all_types.gguf", "torch/model.pt", "torch/state.pt"].map { Paths.fixtures.appendingPathComponent($0).path }
        return f
    }

    /// Every chunk of every floating-point tensor equals the whole-tensor decode, at the chunk size the passes use
    /// and at a smaller one that splits quantization blocks' runs and rows.
    func assertSameFloats(_ path: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let ck = try CheckpointOpener.open(path)
        let w = try WeightSet.load(ck)
        let src = try CheckpointSource(ck, tensors: w.names)
        XCTAssertFalse(w.names.isEmpty, path, file: file, line: line)
        for (t, name) in w.names.enumerated() {
            let want = w.values[name]!
            XCTAssertEqual(src.counts[t], want.count, "\(path): \(name)", file: file, line: line)
            XCTAssertEqual(try src.tensor(t).map(\.bitPattern), want.map(\.bitPattern), "\(path): \(name)", file: file, line: line)
            for step in [Sparsity.chunkElements, 512] {
                var got: [Float] = []
                var s = 0
                while s < want.count {
                    let n = min(step, want.count - s)
                    try src.withChunk(t, start: s, count: n) { got += UnsafeBufferPointer(start: $0, count: n) }
                    s += n
                }
                XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), "\(path): \(name) in chunks of \(step)", file: file, line: line)
            }
        }
    }

    func testChunksEqualWholeTensorDecodes() throws {
        for f in files { try assertSameFloats(f) }
    }

    /// Tensors larger than one chunk, with a partial last chunk: BF16, and F32 lying at an odd offset in the file
    /// (decoded into scratch instead of read in place).
    func testMultiChunkBF16AndUnalignedF32() throws {
        var rng = SystemRandomNumberGenerator()
        let n = Sparsity.chunkElements * 2 + 777
        let v = (0..<n).map { _ in Float.random(in: -1...1, using: &rng) * (Bool.random(using: &rng) ? 1 : 1e-3) }
        let bf = v.flatMap { x -> [UInt8] in let h = Exporter.bf16RoundNearestEven(x); return [UInt8(h & 0xFF), UInt8(h >> 8)] }
        let p = tmp.path("big.safetensors")
        try SafetensorsWriter.write([.init(name: "a_odd", dtype: .u8, shape: [3], bytes: [1, 2, 3]),
                                     .init(name: "b_f32", shape: [n], floats: v),
                                     .init(name: "c_bf16", dtype: .bf16, shape: [7, n / 7], bytes: Array(bf.prefix(n / 7 * 7 * 2)))], to: p)
        try assertSameFloats(p)
        let ck = try CheckpointOpener.open(p)
        let t = ck.tensors.first { $0.name == "b_f32" }!
        XCTAssertNotEqual(Int(bitPattern: ck.bytes(of: t).baseAddress!) % 4, 0, "the F32 tensor should lie unaligned in the mapped file")
    }

    /// The streaming curve equals the in-memory one, point for point and layer for layer, globally and per
    /// layer, unstructured and 2:4.
    func testStreamingCurveEqualsInMemoryCurve() throws {
        var paths = [Paths.corpus.appendingPathComponent("mlp_seed0_f16.safetensors").path, Paths.fixtures.appendingPathComponent("gguf/all_types.gguf").path]
        if FileManager.default.fileExists(atPath: Paths.minilm.path) { paths.append(Paths.minilm.path) }
        let enc = JSONEncoder(); enc.outputFormatting = .sortedKeys
        for path in paths {
            let ck = try CheckpointOpener.open(path)
            let w = try WeightSet.load(ck)
            let names = w.names.filter { (w.shapes[$0]?.count ?? 0) >= 2 }
            let src = try CheckpointSource(ck, tensors: names)
            let big = path == Paths.minilm.path          // MiniLM (22.7M weights, many chunks): two of the four runs
            for scope in [SparsityScope.global, .layer] {
                for pattern in [SparsityPattern.unstructured, .nm(n: 2, m: 4)] where !big || (scope == .global) == (pattern == .unstructured) {
                    let grid = [0, 0.3, 0.5, 0.9]
                    let a = try Sparsity.curve(w, tensors: names, scope: scope, pattern: pattern, grid: grid)
                    let b = try Sparsity.curve(src, scope: scope, pattern: pattern, grid: grid)
                    XCTAssertGreaterThan(a.points.count, 1)
                    XCTAssertEqual(String(decoding: try enc.encode(a), as: UTF8.self), String(decoding: try enc.encode(b), as: UTF8.self),
                                   "\(path) \(scope) \(pattern)")
                }
                // The cuts the pruned file is written with.
                let c = try Sparsity.cuts(src, scope: scope, sparsity: 0.5)
                let pw = try Sparsity.pruned(w, tensors: names, scope: scope, pattern: .unstructured, sparsity: 0.5)
                for (ti, n) in names.enumerated() {
                    var v = w.values[n]!
                    Sparsity.apply(c[ti], to: &v, tensor: ti)
                    XCTAssertEqual(v.map(\.bitPattern), pw.values[n]!.map(\.bitPattern), "\(path) \(n)")
                }
            }
        }
    }
}
