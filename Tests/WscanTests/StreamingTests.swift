import Foundation
import XCTest
@testable import WscanFormats
import WscanKernels
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

    /// Streamed scores (ScoreSource over the mapped files) equal the in-memory ones for every source, and the
    /// streamed selection gives the same mask and table.
    func testStreamingSaliencyEqualsInMemory() throws {
        let corpus = Paths.corpus
        let ck = try CheckpointOpener.open(corpus.appendingPathComponent("mlp_seed0.safetensors").path)
        let base = try CheckpointOpener.open(corpus.appendingPathComponent("mlp_seed0_finetuned.safetensors").path)
        let stateCk = try CheckpointOpener.open(corpus.appendingPathComponent("mlp_seed0_adam_state.npz").path)
        let params = ["fc1.weight", "fc2.weight", "fc3.weight"]
        let w = try WeightSet.load(ck), b = try WeightSet.load(base), st = try WeightSet.load(stateCk)
        var stat = WeightSet()
        for n in params { stat.names.append(n); stat.shapes[n] = w.shapes[n]; stat.values[n] = st.values["exp_avg_sq.\(n)"] }
        let model = try CheckpointSource(ck, tensors: params)
        let other: [SaliencySource: (TensorSource, [Int?]?)] = [
            .delta: (try CheckpointSource(base, tensors: params), nil),
            .grad: (try CheckpointSource(base, tensors: params), nil),          // the fine-tuned weights stand in for a gradient
            .wgrad: (try CheckpointSource(base, tensors: params), nil),
            // fc2 has no state here: a frozen parameter scores 0
            .fisher: (try CheckpointSource(stateCk, tensors: ["exp_avg_sq.fc1.weight", "exp_avg_sq.fc3.weight"]), [0, nil, 1]),
        ]
        for kind in SaliencySource.allCases {
            var statK = stat
            if kind == .fisher { statK.values["fc2.weight"] = [Float](repeating: 0, count: w.values["fc2.weight"]!.count) }
            let memory = try Saliency.scores(kind, weights: w, tensors: params, base: b, stat: statK, grad: b)
            let o = other[kind]
            let streamed = try ScoreSource(kind, weights: model, other: o?.0, otherIndex: o?.1)
            for (t, n) in params.enumerated() {
                XCTAssertEqual(try streamed.tensor(t).map(\.bitPattern), memory.values[n]!.map(\.bitPattern), "\(kind) \(n)")
            }
            let (mask, r1) = try Saliency.mask(memory, top: 0.3, source: kind)
            let (cut, r2) = try Saliency.select(streamed, top: 0.3, source: kind)
            let enc = JSONEncoder(); enc.outputFormatting = .sortedKeys
            XCTAssertEqual(String(decoding: try enc.encode(r1), as: UTF8.self), String(decoding: try enc.encode(r2), as: UTF8.self), "\(kind)")
            var kept = 0
            for (t, n) in params.enumerated() {
                let m = Saliency.maskBytes(try streamed.tensor(t), tensor: t, cut)
                XCTAssertEqual(m, mask[n]!, "\(kind) \(n)")
                kept += m.reduce(0) { $0 + Int($1) }
            }
            XCTAssertEqual(kept, Int((0.3 * Double(r2.total)).rounded()), "\(kind): exactly round(top·N) kept")
        }
        // A scored tensor whose aligned tensor has another shape is refused.
        XCTAssertThrowsError(try ScoreSource(.delta, weights: model, other: try CheckpointSource(base, tensors: ["fc2.weight", "fc1.weight", "fc3.weight"])))
    }

    /// The per-layer top-1% concentration (found by selection) equals the sum of the largest 1% by a full sort.
    func testTopOnePercentConcentrationMatchesSort() throws {
        var rng = SystemRandomNumberGenerator()
        for n in [1, 99, 100, 1000, 54321] {
            // heavy-tailed scores with ties and NaN/Inf, which stay out of the mass
            var v = (0..<n).map { _ in Float(Int.random(in: 0..<50, using: &rng)) * Float.random(in: 0...1, using: &rng) * (Bool.random(using: &rng) ? 1 : 100) }
            if n > 10 { v[3] = .nan; v[7] = .infinity; v[8] = v[9] }
            let k = max(1, n / 100)
            let want = v.filter(\.isFinite).sorted(by: >).prefix(k).reduce(0.0) { $0 + Double($1) }
            let got = try Saliency.topMass(v.filter(\.isFinite), k: k)
            XCTAssertEqual(got, want, accuracy: 1e-9 * max(1, want), "n = \(n)")
            let r = try Saliency.select(ArraySource([v], names: ["w"], shapes: [[n]]), top: 0.5, source: .magnitude).result
            let mass = v.filter(\.isFinite).reduce(0.0) { $0 + Double($1) }
            XCTAssertEqual(r.layers[0].top1Concentration, mass > 0 ? want / mass : 0, accuracy: 1e-9)
        }
    }

    /// BF16 data: each histogram bin holds one value, so the cut skips the second pass (CheckpointSource says
    /// so); it must equal the collecting path's cut, to the element, and give the same counts and energies.
    func testSingleValuedBinsGiveTheCollectingPathsCuts() throws {
        var rng = SystemRandomNumberGenerator()
        // Three tensors, one over two chunks; heavy ties (few distinct BF16 values), zeros, a NaN and an Inf.
        let sizes = [Sparsity.chunkElements + 4099, 3000, 70_001]
        var entries: [SafetensorsWriter.Entry] = []
        for (i, n) in sizes.enumerated() {
            var v = (0..<n).map { _ in Float(Int.random(in: -40...40, using: &rng)) * 0.0625 * (Bool.random(using: &rng) ? 1 : 1.0 / 1024) }
            if i == 1 { v[5] = .nan; v[6] = -.infinity }
            let b = v.flatMap { x -> [UInt8] in let h = Exporter.bf16RoundNearestEven(x); return [UInt8(h & 0xFF), UInt8(h >> 8)] }
            entries.append(.init(name: "t\(i)", dtype: .bf16, shape: [n / 7, 7], bytes: Array(b.prefix(n / 7 * 7 * 2))))
        }
        let p = tmp.path("bf16.safetensors")
        try SafetensorsWriter.write(entries, to: p)
        let ck = try CheckpointOpener.open(p)
        let src = try CheckpointSource(ck, tensors: ["t0", "t1", "t2"])
        XCTAssertTrue((0..<3).allSatisfy { src.exactBins($0) })
        let mem = ArraySource(try (0..<3).map { try src.tensor($0) }, names: src.names, shapes: src.shapes)
        XCTAssertFalse(mem.exactBins(0))
        for scope in [SparsityScope.global, .layer] {
            for s in [0.001, 0.25, 0.5, 0.77, 0.99] {
                let a = try Sparsity.cuts(src, scope: scope, sparsity: s), b = try Sparsity.cuts(mem, scope: scope, sparsity: s)
                for t in 0..<3 {
                    XCTAssertEqual([a[t].key, a[t].tensor, a[t].index], [b[t].key, b[t].tensor, b[t].index], "\(scope) \(s) t\(t)")
                    XCTAssertEqual(a[t].value, b[t].value)
                    XCTAssertEqual(a[t].none, b[t].none)
                }
            }
            let ca = try Sparsity.curve(src, scope: scope, pattern: .unstructured, grid: [0, 0.3, 0.6, 0.95])
            let cb = try Sparsity.curve(mem, scope: scope, pattern: .unstructured, grid: [0, 0.3, 0.6, 0.95])
            XCTAssertEqual(ca.points.count, cb.points.count)
            for (x, y) in zip(ca.points, cb.points) {
                XCTAssertEqual(x.achieved, y.achieved)
                XCTAssertEqual(x.relativeError, y.relativeError, accuracy: 1e-12)
                for (lx, ly) in zip(x.layers, y.layers) {
                    XCTAssertEqual(lx.sparsity, ly.sparsity)
                    XCTAssertEqual(lx.retainedEnergy, ly.retainedEnergy, accuracy: 1e-12)
                }
            }
        }
        // Magnitude saliency of BF16 weights takes the same shortcut and keeps the same weights.
        let scored = try ScoreSource(.magnitude, weights: src)
        XCTAssertTrue(scored.exactBins(0))
        let (c1, r1) = try Saliency.select(scored, top: 0.3, source: .magnitude)
        let (c2, r2) = try Saliency.select(ScoreSource(.magnitude, weights: mem), top: 0.3, source: .magnitude)
        XCTAssertEqual([c1.key, c1.tensor, c1.index], [c2.key, c2.tensor, c2.index])
        XCTAssertEqual(r1.kept, r2.kept)
        XCTAssertEqual(r1.layers.map(\.salient), r2.layers.map(\.salient))
        for (x, y) in zip(r1.layers, r2.layers) { XCTAssertEqual(x.top1Concentration, y.top1Concentration, accuracy: 1e-12) }
    }

    /// The cut-statistics kernel behind saliency tables and masks: its AVX2 loop and its scalar loop agree with
    /// the element-by-element definition (`Sparsity.pruned`), for ties cut at every lane of a vector, NaN, ±Inf,
    /// negative and zero values, no cut, and lengths that leave a tail.
    func testKeepStatsKernelMatchesDefinition() throws {
        var rng = SystemRandomNumberGenerator()
        for n in [0, 1, 7, 8, 9, 31, 1000, 4099] {
            var v = (0..<n).map { _ in Float(Int.random(in: -6...6, using: &rng)) * 0.25 }     // many ties
            if n > 20 { v[2] = .nan; v[11] = .infinity; v[17] = -.infinity; v[19] = -0.0 }
            var cuts = [PruneCut(key: 0, value: 0, tensor: 0, index: 0, none: true)]
            for value: Float in [0, 0.5, 1, 1.25, 2] {
                for index in [-1, 0, 3, 7, 8, 12, n / 2, n - 1, n + 5] {
                    for tensor in [0, 1, 2] { cuts.append(PruneCut(key: 0, value: value, tensor: tensor, index: index, none: false)) }
                }
            }
            for c in cuts {
                var want = MagnitudeKernel.KeepStats()
                var wantMask = [UInt8](repeating: 0, count: n)
                for (i, x) in v.enumerated() {
                    let pruned = Sparsity.pruned(x, tensor: 1, index: i, c)
                    if x.isFinite { want.mass += Double(x) } else { want.nonFinite += 1 }
                    if !pruned { want.kept += 1; wantMask[i] = 1; if x.isFinite { want.keptMass += Double(x); want.minKept = min(want.minKept, x) } }
                }
                let (value, ties) = Sparsity.bounds(c, tensor: 1)
                for avx in [true, false] {
                    MagnitudeKernel.keepUseAVX2(avx)
                    defer { MagnitudeKernel.keepUseAVX2(true) }
                    var mask = [UInt8](repeating: 7, count: n)
                    let got = v.withUnsafeBufferPointer { p in mask.withUnsafeMutableBufferPointer { m in
                        MagnitudeKernel.keepStats(p.baseAddress ?? UnsafePointer(bitPattern: 64)!, n, value: value, ties: ties, mask: m.baseAddress) } }
                    let what = "n \(n) cut \(c) avx2 \(avx)"
                    XCTAssertEqual(mask, wantMask, what)
                    XCTAssertEqual(got.kept, want.kept, what)
                    XCTAssertEqual(got.nonFinite, want.nonFinite, what)
                    XCTAssertEqual(got.minKept, want.minKept, what)
                    XCTAssertEqual(got.mass, want.mass, accuracy: 1e-9, what)
                    XCTAssertEqual(got.keptMass, want.keptMass, accuracy: 1e-9, what)
                }
            }
        }
    }

    /// `--eval` streams: each candidate is written tensor by tensor from the mapped checkpoint. A numpy evaluator
    /// of the corpus MLP then reports, at every point of the curve (unstructured, per layer, and 2:4), exactly the
    /// accuracy the built-in evaluator (`--data`, the model in memory) measures, and the candidate holds every
    /// tensor of the checkpoint.
    func testStreamedExternalEvaluatorMatchesBuiltIn() throws {
        let script = tmp.path("eval.py")
        try """
        import sys, numpy as np
        from safetensors.numpy import load_file
        p = load_file(sys.argv[1]); d = np.load(sys.argv[2])
        assert sorted(p) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight", "fc3.bias", "fc3.weight"], sorted(p)
        h = d["x"].astype(np.float32)
        for i, n in enumerate(["fc1", "fc2", "fc3"]):
            h = h @ p[n + ".weight"].T + p[n + ".bias"]
            if i < 2: h = np.maximum(h, 0)
        print("accuracy:", float((h.argmax(1) == d["y"]).mean()))
        """.write(toFile: script, atomically: true, encoding: .utf8)
        let model = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        let data = Paths.corpus.appendingPathComponent("digits_test.npz").path
        for extra in [["--scope", "global"], ["--scope", "layer"], ["--pattern", "2:4"]] {
            let grid = extra.contains("2:4") ? [] : ["--grid", "0,0.3,0.6,0.9", "--no-refine"]
            func curve(_ eval: [String]) throws -> [[String: Any]] {
                let r = try runWscan(["analyze", "sparsity", model, "--db", tmp.path("e.db"), "--json"] + extra + grid + eval)
                XCTAssertEqual(r.status, 0, r.err)
                let j = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
                return j["points"] as! [[String: Any]]
            }
            let ext = try curve(["--eval", "python3 \(script) {ckpt} \(data)"])
            let builtIn = try curve(["--data", data])
            XCTAssertEqual(ext.count, builtIn.count, "\(extra)")
            XCTAssertGreaterThanOrEqual(ext.count, 2)
            for (a, b) in zip(ext, builtIn) {
                let ea = a["eval"] as! [String: Any], eb = b["eval"] as! [String: Any]
                XCTAssertEqual(ea["metric"] as? Double, eb["accuracy"] as? Double, "\(extra) at \(a["sparsity"]!)")
                XCTAssertEqual(a["achieved"] as? Double, b["achieved"] as? Double)
            }
        }
    }

    /// Pass 2 reads the file again: when its data changed since pass 1 counted a bin's members, the collection
    /// writes no more than the room it was given and reports the mismatch instead of running past its buffers.
    func testCollectionBoundedWhenDataChangedBetweenPasses() {
        let x = (0..<5000).map { Float($0 % 50) * 0.5 }          // keys of 1.0 and 2.0: 100 members each
        let keys = [UInt32(MagnitudeKernel.key(1.0)), UInt32(MagnitudeKernel.key(2.0))]
        var slotOf = [Int16](repeating: -1, count: MagnitudeKernel.bins)
        slotOf[Int(keys[0])] = 0; slotOf[Int(keys[1])] = 1
        for avx in [true, false] {
            MagnitudeKernel.useAVX512(avx)
            defer { MagnitudeKernel.useAVX512(true) }
            let ok = x.withUnsafeBufferPointer { MagnitudeKernel.collect($0.baseAddress!, x.count, slotOf: slotOf, keys: keys, counts: [100, 100]) }
            XCTAssertEqual(ok?.bits.count, 200)
            XCTAssertEqual(ok?.index.prefix(3).map { Int($0) }, [2, 52, 102])
            for wrong in [[10, 100], [100, 0], [0, 0], [101, 100]] {
                let m = x.withUnsafeBufferPointer { MagnitudeKernel.collect($0.baseAddress!, x.count, slotOf: slotOf, keys: keys, counts: wrong) }
                XCTAssertNil(m, "counts \(wrong), AVX-512 \(avx)")
            }
        }
    }

    /// N:M ranks NaN above ±Inf above every finite magnitude, ties to the lower index.
    func testNMRanksNaNAboveInf() {
        var v: [Float] = [.nan, .infinity, -.infinity, 0.1,   0.66, 0.96, .nan, .infinity]
        Sparsity.pruneNM(&v, shape: [1, 8], n: 2, m: 4)
        XCTAssertTrue(v[0].isNaN)
        XCTAssertEqual(Array(v[1...3]), [0, -.infinity, 0])
        var w: [Float] = [0.66, 0.96, .nan, .infinity]
        Sparsity.pruneNM(&w, shape: [1, 4], n: 3, m: 4)
        XCTAssertTrue(w[2].isNaN, "3:4 keeps the NaN, the largest")
        XCTAssertEqual([w[0], w[1], w[3]], [0, 0, 0])
    }

    /// A streamed analysis reads its file more than once: an evaluator that writes over the model (here it only
    /// touches it) makes the run fail with a one-line error instead of reporting a curve mixed from two versions.
    func testSourceChangedDuringEvaluationIsRefused() throws {
        let m = tmp.path("m.safetensors")
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: m)
        let db = tmp.path("c.db")
        let ok = try runWscan(["analyze", "sparsity", m, "--db", db, "--grid", "0,0.5", "--no-refine", "--eval", "echo 0.5 # {ckpt}"])
        XCTAssertEqual(ok.status, 0, ok.err)
        let r = try runWscan(["analyze", "sparsity", m, "--db", db, "--grid", "0,0.5", "--no-refine", "--eval", "touch -d '2001-01-01' \(m); echo 0.5 # {ckpt}"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("\(m): changed while it was being read"), r.err)
        XCTAssertEqual(r.err.split(separator: "\n").count, 1, r.err)
    }

    /// A model with more weights than `maxChunks` chunks of 1M gets larger chunks (the per-chunk histograms stay
    /// bounded in number); cuts and curves are the same whatever the chunk size, on both the collecting (F32) and
    /// the single-valued-bin (BF16) paths.
    func testLargerChunksGiveTheSameCuts() throws {
        var rng = SystemRandomNumberGenerator()
        let n = Sparsity.chunkElements * 3 + 1234
        let v = (0..<n).map { _ in Float(Int.random(in: -300...300, using: &rng)) / 256 }
        let bf = v.flatMap { x -> [UInt8] in let h = Exporter.bf16RoundNearestEven(x); return [UInt8(h & 0xFF), UInt8(h >> 8)] }
        let p = tmp.path("chunks.safetensors")
        try SafetensorsWriter.write([.init(name: "a", shape: [n], floats: v), .init(name: "b", dtype: .bf16, shape: [n], bytes: bf),
                                     .init(name: "c", shape: [1000], floats: Array(v.prefix(1000)))], to: p)
        let ck = try CheckpointOpener.open(p)
        for names in [["a", "c"], ["b"]] {
            let src = try CheckpointSource(ck, tensors: names)
            let saved = Sparsity.maxChunks
            defer { Sparsity.maxChunks = saved }
            var results: [[String]] = []
            for maxChunks in [saved, 2] {
                Sparsity.maxChunks = maxChunks
                let sizes = Set(Sparsity.chunks(src.counts).map(\.count))
                if maxChunks == 2 { XCTAssertTrue(sizes.contains(Sparsity.chunkElements * 2), "\(sizes)") }
                var r: [String] = []
                for scope in [SparsityScope.global, .layer] {
                    for s in [0.1, 0.5, 0.93] {
                        r += try Sparsity.cuts(src, scope: scope, sparsity: s).map { "\($0.key) \($0.value) \($0.tensor) \($0.index) \($0.none)" }
                    }
                }
                let c = try Sparsity.curve(src, scope: .global, pattern: .unstructured, grid: [0, 0.4, 0.8])
                r += c.points.map { "\($0.achieved) \($0.layers.map(\.sparsity))" }
                results.append(r)
            }
            XCTAssertEqual(results[0], results[1], "\(names)")
        }
    }

    /// Range reads check what they are asked for: past the tensor's end, a negative start, a start inside a
    /// quantization block, and a layout that cannot be read by range are errors, not reads out of bounds.
    func testRangeReadsRefuseBadRanges() throws {
        let gguf = try CheckpointOpener.open(Paths.fixtures.appendingPathComponent("gguf/all_types.gguf").path)
        let q = try XCTUnwrap(gguf.tensors.first { $0.dtype.block != nil && TensorData.rangeReadable($0) })
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: q.elementCount + 64)
        defer { scratch.deallocate() }
        let ok = try TensorData.withRange(gguf, q, start: 0, count: q.elementCount, scratch: scratch) { Array(UnsafeBufferPointer(start: $0, count: q.elementCount)) }
        XCTAssertEqual(ok.map(\.bitPattern), try TensorData.floats(gguf, q).map(\.bitPattern))
        for (start, count) in [(1, q.dtype.block!.elements), (0, q.elementCount + 1), (-q.dtype.block!.elements, 1), (q.elementCount, 1)] {
            XCTAssertThrowsError(try TensorData.withRange(gguf, q, start: start, count: count, scratch: scratch) { _ in 0 }, "\(start) + \(count)")
        }
        let npy = try CheckpointOpener.open(Paths.fixtures.appendingPathComponent("formats/fortran_f64.npy").path)
        let f = npy.tensors[0]
        XCTAssertFalse(TensorData.rangeReadable(f))
        XCTAssertThrowsError(try TensorData.withRange(npy, f, start: 0, count: 1, scratch: scratch) { _ in 0 })
    }
}
