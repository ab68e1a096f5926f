import XCTest
@testable import WscanKernels
@testable import WscanFormats
@testable import WscanAnalysis
@testable import WscanCatalog

final class SparsityTests: XCTestCase {
    let tmp = TempDir()

    func manifest() throws -> [String: Any] { try loadJSON(Paths.corpus.appendingPathComponent("MANIFEST.json")) as! [String: Any] }

    func load(_ file: String) throws -> (WeightSet, [String], MLPEvaluator) {
        let ck = try CheckpointOpener.open(Paths.corpus.appendingPathComponent(file).path)
        let w = try WeightSet.load(ck)
        let data = try Dataset.load(Paths.corpus.appendingPathComponent("digits_test.npz").path)
        let ev = try MLPEvaluator(weights: w, x: data.x, y: data.y, features: data.features)
        return (w, w.names.filter { w.shapes[$0]!.count == 2 }, ev)
    }

    /// The built-in evaluator reproduces the accuracy (and loss) the corpus script recorded with numpy.
    func testDenseAccuracyEqualsCorpusRecord() throws {
        let models = try manifest()["models"] as! [String: [String: Any]]
        for name in ["mlp_seed0", "mlp_seed1", "mlp_seed2", "mlp_seed0_finetuned", "mlp_seed0_pruned50", "mlp_seed0_lora4"] {
            let (w, _, ev) = try load(models[name]!["file"] as! String)
            let r = try ev.evaluate(w)
            XCTAssertEqual(r.accuracy!, models[name]!["test_accuracy"] as! Double, accuracy: 1e-12, name)  // same count of 360
            XCTAssertEqual(r.loss!, models[name]!["test_loss"] as! Double, accuracy: 1e-5, name)
        }
    }

    /// Curves are monotone where they must be, hit the requested sparsity, and the reported essential sparsity
    /// is what the curve says (recomputed here independently).
    func testCurveMonotoneAndEssentialConsistent() throws {
        let (w, tensors, ev) = try load("mlp_seed0.safetensors")
        let total = tensors.reduce(0) { $0 + w.values[$1]!.count }
        for scope in [SparsityScope.global, .layer] {
            let c = try Sparsity.curve(w, tensors: tensors, scope: scope, pattern: .unstructured, tolerance: 0.01, evaluator: ev)
            XCTAssertEqual(c.points.first?.eval?.accuracy, 0.975)
            for (a, b) in zip(c.points, c.points.dropFirst()) {
                XCTAssertLessThanOrEqual(b.retainedEnergy, a.retainedEnergy + 1e-12, "retained energy must not grow with sparsity")
                XCTAssertGreaterThanOrEqual(b.relativeError, a.relativeError - 1e-12)
                XCTAssertGreaterThanOrEqual(b.achieved, a.achieved)
            }
            for p in c.points {
                if scope == .global { XCTAssertEqual(p.achieved, Double(Sparsity.count(p.sparsity, of: total)) / Double(total), accuracy: 1e-12) }
                else { for l in p.layers { let n = w.values[l.name]!.count; XCTAssertEqual(l.sparsity, Double(Sparsity.count(p.sparsity, of: n)) / Double(n), accuracy: 1e-12) } }
                // energy bookkeeping from histograms equals a direct computation
                let pw = try Sparsity.pruned(w, tensors: tensors, scope: scope, pattern: .unstructured, sparsity: p.sparsity)
                var kept = 0.0, all = 0.0
                for t in tensors { for (a, b) in zip(w.values[t]!, pw.values[t]!) { all += Double(a) * Double(a); kept += Double(b) * Double(b) } }
                XCTAssertEqual(p.retainedEnergy, kept / all, accuracy: 1e-9)
            }
            // Essential sparsity (1): the largest sparsity before the first point that drops more than 1% below dense.
            let dense = c.points[0].eval!.accuracy!
            var expect = 0.0
            for p in c.points { if p.eval!.accuracy! >= dense - 0.01 * dense { expect = p.sparsity } else { break } }
            XCTAssertEqual(c.essential.withinTolerance, expect)
            // (2) the knee maximises normalised accuracy + normalised sparsity − 1.
            let xs = c.points.map(\.sparsity), ys = c.points.map { $0.eval!.accuracy! }
            let (x0, x1, y0, y1) = (xs.min()!, xs.max()!, ys.min()!, ys.max()!)
            let d = zip(xs, ys).map { ($1 - y0) / (y1 - y0) + ($0 - x0) / (x1 - x0) - 1 }
            XCTAssertEqual(c.essential.knee, xs[d.firstIndex(of: d.max()!)!])
        }
    }

    /// The two-pass histogram/selection engine against a full sort, on 2.6M values spread over several 1M-element
    /// chunks, with heavy ties (many exact repeats), zeros, negatives and subnormals: exactly ⌊s·N⌋ weights pruned,
    /// the threshold equals the sorted k-th |w|, and per-tensor pruned energy matches a direct sum.
    func testCutsMatchFullSortAcrossChunks() throws {
        var rng = SplitMix64(seed: 7)
        func draw(_ n: Int) -> [Float] {
            (0..<n).map { i in
                switch i % 7 {
                case 0: return Float([0.5, -0.25, 0.125][Int(rng.next() % 3)])          // repeated values: ties
                case 1: return i % 49 == 1 ? 0 : Float(bitPattern: UInt32(rng.next() % 0x7FFFFF))   // zeros, subnormals
                default: return Float(Double(Int64(bitPattern: rng.next()) % 1_000_000) / 1e6)
                }
            }
        }
        // b's length is not a multiple of 16: the vector loops' scalar tails count too.
        let values = [draw(1_300_000), draw(249_999), draw(1_050_000)]
        let w = WeightSet(names: ["a", "b", "c"], shapes: ["a": [1300, 1000], "b": [3, 83_333], "c": [1050, 1000]],
                          values: ["a": values[0], "b": values[1], "c": values[2]])
        let sorted = values.flatMap { $0.map(abs) }.sorted()
        let total = sorted.count
        let grid = [0.0, 0.05, 0.3, 1.0 / 7, 0.5, 0.9, 0.99]
        let cuts = try Sparsity.cuts(values, sparsities: grid)
        // The scalar collection loop (machines without AVX-512) finds the same cuts.
        MagnitudeKernel.useAVX512(false)
        let scalarCuts = try Sparsity.cuts(values, sparsities: grid)
        MagnitudeKernel.useAVX512(true)
        for (a, b) in zip(cuts, scalarCuts) { XCTAssertEqual([a.value], [b.value]); XCTAssertEqual(a.tensor, b.tensor); XCTAssertEqual(a.index, b.index) }
        let curve = try Sparsity.curve(w, tensors: ["a", "b", "c"], scope: .global, pattern: .unstructured, grid: grid, refine: false)
        for (si, s) in grid.enumerated() {
            let k = Sparsity.count(s, of: total)
            if k == 0 { XCTAssertTrue(cuts[si].none); continue }
            XCTAssertEqual(cuts[si].value, sorted[k - 1], "threshold at \(s)")
            var pruned = 0
            var energy = [Double](repeating: 0, count: 3)
            for (ti, v) in values.enumerated() {
                for i in v.indices where Sparsity.pruned(v[i], tensor: ti, index: i, cuts[si]) { pruned += 1; energy[ti] += Double(v[i]) * Double(v[i]) }
            }
            XCTAssertEqual(pruned, k, "exactly k pruned at \(s)")
            let p = curve.points.first { $0.sparsity == s }!
            XCTAssertEqual(p.achieved, Double(k) / Double(total), accuracy: 1e-15)
            for (ti, l) in p.layers.enumerated() {
                let all = values[ti].reduce(0.0) { $0 + Double($1) * Double($1) }
                XCTAssertEqual(1 - l.retainedEnergy, energy[ti] / all, accuracy: 1e-7, "layer \(l.name) at \(s)")
            }
        }
    }

    /// Randomised against brute force: 150 small weight sets (0–4 tensors of 0–3000 values mixing ties, zeros,
    /// subnormals, negatives, NaN and ±Inf), random grids, both scopes. The pruned set must be exactly the first k
    /// of the order (|w| with NaN as +∞, tensor, index), k = min(count(s, n), finite), and the energies must match.
    func testCutsAgainstBruteForceOnRandomInputs() throws {
        var rng = SplitMix64(seed: 2026)
        func r(_ n: UInt64) -> Int { Int(rng.next() % n) }
        for trial in 0..<150 {
            let nt = r(5)
            var w = WeightSet()
            for t in 0..<nt {
                let n = [0, 1, 7, 64, 513, 3000][r(6)]
                let v: [Float] = (0..<n).map { _ in
                    switch r(10) {
                    case 0: return [0.5, -0.5, 0.25][r(3)]
                    case 1: return r(2) == 0 ? 0 : -0.0
                    case 2: return Float(bitPattern: UInt32(r(0x7FFFFF) + 1))
                    case 3: return r(20) == 0 ? [Float.nan, .infinity, -.infinity][r(3)] : 1e-3
                    default: return Float(Double(r(2_000_001)) / 1e6 - 1)
                    }
                }
                w.names.append("t\(t)"); w.shapes["t\(t)"] = [1, n]; w.values["t\(t)"] = v
            }
            let grid = (0..<(1 + r(5))).map { _ in Double(r(1000)) / 1000 }
            for scope in [SparsityScope.global, .layer] {
                for s in grid {
                    let pw = try Sparsity.pruned(w, tensors: w.names, scope: scope, pattern: .unstructured, sparsity: s)
                    let groups: [[Int]] = scope == .global ? [Array(w.names.indices)] : w.names.indices.map { [$0] }
                    for g in groups {
                        var order: [(Float, Int, Int)] = []
                        for t in g { for (i, x) in w.values[w.names[t]]!.enumerated() { order.append((x.isNaN ? .infinity : abs(x), t, i)) } }
                        order.sort { ($0.0, $0.1, $0.2) < ($1.0, $1.1, $1.2) }
                        let finite = order.filter { $0.0.isFinite }.count
                        let k = min(Sparsity.count(s, of: order.count), finite)
                        var expect = Set<Int>()
                        for e in order.prefix(k) { expect.insert(e.1 << 32 | e.2) }
                        for t in g {
                            let a = w.values[w.names[t]]!, b = pw.values[w.names[t]]!
                            for i in a.indices {
                                let zeroed = b[i] == 0 && a[i] != 0
                                if a[i] != 0 || a[i].isNaN {
                                    XCTAssertEqual(zeroed, expect.contains(t << 32 | i), "trial \(trial) \(scope) s=\(s) t\(t)[\(i)]=\(a[i])")
                                }
                            }
                        }
                    }
                }
                // Nothing finite to prune: a one-line error instead of a curve of dense points.
                if !w.names.contains(where: { w.values[$0]!.contains { $0.isFinite } }) {
                    XCTAssertThrowsError(try Sparsity.curve(w, tensors: w.names, scope: scope, pattern: .unstructured, grid: grid, refine: false))
                    continue
                }
                let c = try Sparsity.curve(w, tensors: w.names, scope: scope, pattern: .unstructured, grid: grid, refine: false)
                for p in c.points {
                    let pw = try Sparsity.pruned(w, tensors: w.names, scope: scope, pattern: .unstructured, sparsity: p.sparsity)
                    var all = 0.0, cut = 0.0
                    for n in w.names { for (x, y) in zip(w.values[n]!, pw.values[n]!) where x.isFinite {
                        all += Double(x) * Double(x); cut += Double(x - y) * Double(x - y) } }
                    XCTAssertEqual(p.retainedEnergy, all > 0 ? 1 - cut / all : 1, accuracy: 1e-7, "trial \(trial) \(scope) s=\(p.sparsity)")
                }
            }
        }
    }

    /// NaN and ±Inf weights are never pruned, stay out of the energy sums and are reported; the pruned copy
    /// written at an extreme sparsity keeps them (read back by numpy).
    func testNonFiniteWeightsAreNeverPrunedAndReported() throws {
        var v = (0..<1000).map { Float($0 % 97) / 97 - 0.5 }
        v[10] = .nan; v[20] = .infinity; v[30] = -.infinity
        let w = WeightSet(names: ["w"], shapes: ["w": [40, 25]], values: ["w": v])
        let c = try Sparsity.curve(w, tensors: ["w"], scope: .global, pattern: .unstructured, grid: [0, 0.5, 0.999], refine: false)
        XCTAssertEqual(c.warnings?.count, 1)
        XCTAssertTrue(c.warnings?.first?.contains("3 NaN/±Inf") ?? false, "\(c.warnings ?? [])")
        let finiteEnergy = v.filter(\.isFinite).reduce(0.0) { $0 + Double($1) * Double($1) }
        for p in c.points {
            XCTAssertTrue(p.retainedEnergy.isFinite && p.relativeError.isFinite)
            let k = min(997, Sparsity.count(p.sparsity, of: 1000))
            XCTAssertEqual(p.achieved, Double(k) / 1000, accuracy: 1e-12, "capped at the finite weights")
            let kept = try Sparsity.pruned(w, tensors: ["w"], scope: .global, pattern: .unstructured, sparsity: p.sparsity).values["w"]!
            XCTAssertTrue(kept[10].isNaN); XCTAssertEqual(kept[20], .infinity); XCTAssertEqual(kept[30], -.infinity)
            let e = kept.filter(\.isFinite).reduce(0.0) { $0 + Double($1) * Double($1) }
            XCTAssertEqual(p.retainedEnergy, e / finiteEnergy, accuracy: 1e-7)
        }
        let file = tmp.path("nonfinite.safetensors")
        let p = try Sparsity.pruned(w, tensors: ["w"], scope: .global, pattern: .unstructured, sparsity: 0.999)
        try SafetensorsWriter.write(p.entries(), to: file)
        let out = try runPython("""
            import numpy as np
            from safetensors.numpy import load_file
            w = load_file('\(file)')['w']
            print(int(np.isnan(w).sum()), int(np.isinf(w).sum()), int(np.count_nonzero(w)))
            """)
        XCTAssertEqual(out.trimmingCharacters(in: .whitespacesAndNewlines), "1 2 3")
    }

    func testDataFreeCurveUsesRetainedEnergy() throws {
        let (w, tensors, _) = try load("mlp_seed1.safetensors")
        let c = try Sparsity.curve(w, tensors: tensors, scope: .global, pattern: .unstructured, tolerance: 0.01, evaluator: nil)
        XCTAssertEqual(c.essential.metric, "retained_energy")
        XCTAssertNotNil(c.essential.knee)
        let firstBelow = c.points.first { $0.retainedEnergy < 0.99 }!
        XCTAssertLessThan(c.essential.withinTolerance, firstBelow.sparsity)
    }

    /// The pruned checkpoint, read back by numpy, has exactly the requested sparsity per scope and pattern.
    func testPrunedCheckpointReadBackByNumpy() throws {
        guard FileManager.default.isExecutableFile(atPath: Paths.wscanBinary.path) else { throw XCTSkip("binary not built") }
        let db = tmp.path("c.db")
        let cases: [(args: [String], check: String)] = [
            (["--scope", "global", "--at", "0.3", "--grid", "0,0.5"], "z = sum(int((v == 0).sum()) for v in W.values()); n = sum(v.size for v in W.values()); assert z == int(0.3 * n * (1 + 1e-12)), (z, n)"),
            (["--scope", "layer", "--at", "0.7", "--grid", "0,0.5"], "assert all(int((v == 0).sum()) == int(0.7 * v.size * (1 + 1e-12)) for v in W.values()), [(int((v==0).sum()), v.size) for v in W.values()]"),
            (["--pattern", "2:4"], "assert all(((v.reshape(-1, 4) == 0).sum(axis=1) == 2).all() for v in W.values())"),
            (["--pattern", "4:8"], "assert all(((v.reshape(-1, 8) == 0).sum(axis=1) == 4).all() for v in W.values())"),
        ]
        for (i, c) in cases.enumerated() {
            let out = tmp.path("p\(i).safetensors")
            let r = try runWscan(["analyze", "sparsity", Paths.corpus.appendingPathComponent("mlp_seed2.safetensors").path, "--db", db,
                                  "--write-pruned", out, "--no-refine"] + c.args)
            XCTAssertEqual(r.status, 0, r.err)
            let py = """
            from safetensors.numpy import load_file
            a = load_file('\(out)')
            W = {k: v for k, v in a.items() if v.ndim == 2}
            orig = load_file('\(Paths.corpus.appendingPathComponent("mlp_seed2.safetensors").path)')
            assert len(W) == 3 and all((v == orig[k]).all() for k, v in a.items() if v.ndim == 1), 'biases untouched'
            assert all(((v == 0) | (v == orig[k])).all() for k, v in W.items()), 'weights only zeroed'
            \(c.check)
            print('ok')
            """
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", "-c", py]
            let pipe = Pipe(), err = Pipe()
            p.standardOutput = pipe; p.standardError = err
            try p.run(); p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0, "\(c.args): " + String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        }
    }

    /// A written pruned checkpoint keeps every tensor of the source in its own dtype (integer buffers, F16, BF16,
    /// F64); N:M groups run along the input axis of linear and convolution weights (ASP's layout), and tensors
    /// whose input axis is not a multiple of M stay dense with a warning naming them.
    func testPrunedCheckpointKeepsEveryTensorAndDtypeAndConvNM() throws {
        let src = tmp.path("mixed.safetensors")
        _ = try runPython("""
        import torch
        from safetensors.torch import save_file
        g = torch.Generator().manual_seed(3)
        t = {"conv.weight": torch.randn(8, 16, 3, 3, generator=g).half(),       # input axis 16: prunable
             "odd.weight": torch.randn(6, 6, generator=g).to(torch.bfloat16),    # input axis 6: dense under 4:8
             "fc.weight": torch.randn(5, 8, generator=g).double(),
             "fc.bias": torch.randn(5, generator=g),
             "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
             "pos_ids": torch.arange(12, dtype=torch.int64).reshape(1, 12)}
        save_file(t, \(pyStr(src)))
        """)
        let db = tmp.path("m.db")
        for (i, args) in [["--pattern", "4:8"], ["--at", "0.6"]].enumerated() {
            let out = tmp.path("mixed_p\(i).safetensors")
            let r = try runWscan(["analyze", "sparsity", src, "--db", db, "--write-pruned", out, "--no-refine"] + (i == 1 ? ["--grid", "0,0.5"] : []) + args)
            XCTAssertEqual(r.status, 0, r.err)
            if i == 0 { XCTAssertTrue(r.err.contains("leaves 1 tensors dense") && r.err.contains("odd.weight"), r.err) }
            let check = i == 0 ? """
            c = b["conv.weight"].float()
            assert ((c.permute(0, 2, 3, 1).reshape(-1, 8) == 0).sum(1) == 4).all(), 'conv 4:8 along input channels'
            assert ((b["fc.weight"].reshape(-1, 8) == 0).sum(1) == 4).all()
            assert torch.equal(b["odd.weight"], a["odd.weight"]), 'indivisible input axis left dense'
            """ : """
            W = [b[k].double() for k in ("conv.weight", "odd.weight", "fc.weight")]
            z = sum(int((v == 0).sum()) for v in W); n = sum(v.numel() for v in W)
            assert z == int(0.6 * n * (1 + 1e-12)), (z, n)
            """
            _ = try runPython("""
            import torch
            from safetensors.torch import load_file
            a = load_file(\(pyStr(src))); b = load_file(\(pyStr(out)))
            assert set(a) == set(b), set(a) ^ set(b)
            assert all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape for k in a), [(k, a[k].dtype, b[k].dtype) for k in a]
            for k in ("fc.bias", "bn.num_batches_tracked", "pos_ids"): assert torch.equal(a[k], b[k]), k
            for k in ("conv.weight", "odd.weight", "fc.weight"):
                assert ((b[k] == 0) | (b[k] == a[k])).all(), k + ': weights only zeroed, unpruned ones bit-exact'
            \(check)
            """)
        }
    }

    func testExternalEvaluatorMatchesBuiltIn() throws {
        let (w, tensors, ev) = try load("mlp_seed0.safetensors")
        let script = tmp.path("eval.py")
        try """
        import sys, numpy as np
        from safetensors.numpy import load_file
        p = load_file(sys.argv[1]); d = np.load(sys.argv[2])
        h = d["x"].astype(np.float64)
        for i, n in enumerate(["fc1", "fc2", "fc3"]):
            h = h @ p[n + ".weight"].astype(np.float64).T + p[n + ".bias"]
            if i < 2: h = np.maximum(h, 0)
        print("accuracy:", float((h.argmax(1) == d["y"]).mean()))
        """.write(toFile: script, atomically: true, encoding: .utf8)
        let rest = w.subset(w.names.filter { !tensors.contains($0) })
        let ext = ExternalEvaluator(command: "python3 \(script) {ckpt} \(Paths.corpus.appendingPathComponent("digits_test.npz").path)", passThrough: rest)
        let only = w.subset(tensors)
        let pruned = try Sparsity.pruned(only, tensors: tensors, scope: .global, pattern: .unstructured, sparsity: 0.6)
        XCTAssertEqual(try ext.evaluate(pruned).metric, try ev.evaluate(rest.merged(with: pruned)).accuracy)
        XCTAssertThrowsError(try ExternalEvaluator(command: "exit 3").evaluate(only)) { XCTAssertTrue("\($0)".contains("status 3")) }
        XCTAssertThrowsError(try ExternalEvaluator(command: "echo none # {ckpt}").evaluate(only)) { XCTAssertTrue("\($0)".contains("no number")) }
        XCTAssertThrowsError(try ExternalEvaluator(command: "sleep 5 # {ckpt}", timeout: 0.3).evaluate(only)) { XCTAssertTrue("\($0)".contains("timed out")) }
        XCTAssertEqual(ExternalEvaluator.lastNumber("loss 1.5 then ppl=3.25e1\n"), 32.5)
    }

    /// Labels that are not class indices (negative, NaN, fractional, beyond the output) and missing or unreadable
    /// input files are one-line errors naming the file, never a crash.
    func testBadDatasetsAndInputFilesAreOneLineErrors() throws {
        let dir = tmp.path("data")
        _ = try runPython("""
        import numpy as np, os
        d = np.load(\(pyStr(Paths.corpus.appendingPathComponent("digits_test.npz").path))); x, y = d["x"], d["y"]
        os.makedirs(\(pyStr(dir)), exist_ok=True)
        np.savez(\(pyStr(dir)) + "/neg.npz", x=x, y=y - 5)
        f = y.astype(np.float32); f[3] = np.nan; np.savez(\(pyStr(dir)) + "/nan.npz", x=x, y=f)
        np.savez(\(pyStr(dir)) + "/frac.npz", x=x, y=y + 0.5)
        np.savez(\(pyStr(dir)) + "/big.npz", x=x, y=y + 20)
        np.savez(\(pyStr(dir)) + "/xnan.npz", x=np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), y=y)
        np.savez(\(pyStr(dir)) + "/noy.npz", x=x)
        """)
        let model = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, db = tmp.path("bad.db")
        let cases: [(String, String)] = [("neg", "y[2] = -4.0 is not a class index"), ("nan", "y[3] = nan is not a class index"),
                                         ("frac", "y[0] = 5.5 is not a class index"), ("big", "labels go up to 29"),
                                         ("xnan", "x[0, 7] is nan"), ("noy", "needs arrays named x and y"), ("missing", "no such file")]
        for (name, what) in cases {
            let f = dir + "/" + name + ".npz"
            let r = try runWscan(["analyze", "sparsity", model, "--db", db, "--data", f, "--grid", "0,0.5", "--no-refine"])
            XCTAssertEqual(r.status, 1, name)
            let lines = r.err.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, r.err)
            XCTAssertTrue(r.err.hasPrefix("wscan: \(f): ") && r.err.contains(what), r.err)
        }
        let g = try runWscan(["analyze", "saliency", model, "--db", db, "--source", "grad", "--grads", dir + "/none.safetensors"])
        XCTAssertEqual(g.status, 1)
        XCTAssertEqual(g.err, "wscan: \(dir)/none.safetensors: no such file or directory\n")
        let s = try runWscan(["analyze", "spectrum", dir + "/none.safetensors", "--db", db])
        XCTAssertEqual(s.status, 1)
        XCTAssertTrue(s.err.hasPrefix("wscan: \(dir)/none.safetensors: no such file or directory"), s.err)
    }

    func testEvaluatorNumberIsAWholeWord() {
        XCTAssertEqual(ExternalEvaluator.lastNumber("acc 0.97 (top5)\n"), 0.97)
        // thousands grouped by commas are one number (it read 234.5); other commas still separate
        XCTAssertEqual(ExternalEvaluator.lastNumber("perplexity: 1,234.5\n"), 1234.5)
        XCTAssertEqual(ExternalEvaluator.lastNumber("tokens=12,345,678 ppl=-1,000.25e0\n"), -1000.25)
        XCTAssertEqual(ExternalEvaluator.lastNumber("scores 3,4\n"), 4)
        XCTAssertEqual(ExternalEvaluator.lastNumber("0.5\nevaluated /tmp/wscan-eval-4419-12/candidate.safetensors\n"), 0.5)
        XCTAssertEqual(ExternalEvaluator.lastNumber("accuracy: 91.5%,"), 91.5)
        XCTAssertEqual(ExternalEvaluator.lastNumber("loss=-2e-3\n\n"), -0.002)
        XCTAssertEqual(ExternalEvaluator.lastNumber("[0.25]"), 0.25)
        XCTAssertEqual(ExternalEvaluator.lastNumber("ppl inf"), .infinity)
        XCTAssertEqual(ExternalEvaluator.lastNumber("Accuracy is 0.97."), 0.97)
        XCTAssertEqual(ExternalEvaluator.lastNumber("\u{1B}[32m0.97\u{1B}[0m\n"), 0.97)
        // No whole-number word: the last number inside a word (Python reprs).
        XCTAssertEqual(ExternalEvaluator.lastNumber("tensor(0.9700)"), 0.97)
        XCTAssertEqual(ExternalEvaluator.lastNumber("{'acc': np.float64(0.97)}"), 0.97)
        XCTAssertNil(ExternalEvaluator.lastNumber("no digits here"))
        XCTAssertNil(ExternalEvaluator.lastNumber(""))
    }

    /// SIGTERM to wscan while an evaluator runs: the evaluator's group dies with it and the candidate folder (a copy
    /// of the weights) is removed.
    func testInterruptedEvaluationLeavesNothingBehind() throws {
        let scratch = tmp.path("tmpdir")
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let marker = "wscan-sigterm-\(UUID().uuidString.prefix(8))"
        let p = Process()
        p.executableURL = Paths.wscanBinary
        p.arguments = ["analyze", "sparsity", Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, "--db", tmp.path("t.db"),
                       "--grid", "0,0.5", "--no-refine", "--eval", "python3 -c 'import time; time.sleep(30)' \(marker) {ckpt}"]
        p.environment = ProcessInfo.processInfo.environment.merging(["TMPDIR": scratch]) { $1 }
        p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
        try p.run()
        var started = false
        for _ in 0..<100 where !started {           // wait until the candidate exists and the evaluator runs
            Thread.sleep(forTimeInterval: 0.05)
            started = ((try? FileManager.default.contentsOfDirectory(atPath: scratch)) ?? []).contains { $0.hasPrefix("wscan-eval-") }
        }
        XCTAssertTrue(started)
        Thread.sleep(forTimeInterval: 0.3)
        p.terminate(); p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .uncaughtSignal)
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch).filter { $0.hasPrefix("wscan-eval-") }, [])
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.filter { Int($0) != nil } ?? []
        XCTAssertFalse(pids.contains { FileManager.default.contents(atPath: "/proc/\($0)/cmdline").map { String(decoding: $0, as: UTF8.self).contains(marker) } ?? false },
                       "the evaluator must die with wscan")
    }

    /// The exit status is read even when wscan starts with SIGCHLD ignored, and a descendant that leaves the
    /// process group (setsid) and keeps the output pipe open cannot stretch --eval-timeout.
    func testEvaluatorStatusWithSIGCHLDIgnoredAndDetachedChildren() throws {
        let model = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, db = tmp.path("sig.db")
        let args = ["analyze", "sparsity", model, "--db", db, "--grid", "0,0.5", "--no-refine"]
        let ign = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", """
            import os, signal, sys
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)
            os.execv(sys.argv[1], sys.argv[1:])
            """, Paths.wscanBinary.path] + args + ["--eval", "echo 0.5; exit 3 # {ckpt}"])
        XCTAssertEqual(ign.status, 1, ign.out)
        XCTAssertTrue(ign.err.contains("exited with status 3"), ign.err)
        let t0 = Date()
        let r = try runWscan(args + ["--eval", "setsid sleep 20 & echo 0.9 # {ckpt}", "--eval-timeout", "3"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 12, "a detached child holding the pipe must not stretch the run")
        _ = try? runProcess(URL(fileURLWithPath: "/usr/bin/pkill"), ["-f", "^sleep 20$"])
    }

    /// A timed-out command dies with everything it started, and so does whatever a finished command left running
    /// in the background (it would otherwise outlive the candidate file and hold the output pipe open).
    func testEvaluatorKillsItsWholeProcessGroup() throws {
        let only = try load("mlp_seed0.safetensors").0
        let marker = "wscan-eval-test-\(UUID().uuidString.prefix(8))"
        let sleeper = "python3 -c 'import time; time.sleep(30)' \(marker)"
        func alive() -> Bool {                     // a live process whose command line carries the marker
            let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.filter { Int($0) != nil } ?? []
            return pids.contains { pid in
                guard let d = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                      let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                      !stat.contains(") Z ") else { return false }
                return String(decoding: d, as: UTF8.self).contains(marker)
            }
        }
        let bg = Process()                          // the check itself finds a live marked process
        bg.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        bg.arguments = ["python3", "-c", "import time; time.sleep(30)", marker]
        try bg.run(); Thread.sleep(forTimeInterval: 0.3)
        XCTAssertTrue(alive()); bg.terminate(); bg.waitUntilExit()
        let t0 = Date()
        XCTAssertThrowsError(try ExternalEvaluator(command: "\(sleeper) & \(sleeper); echo 1 # {ckpt}",
                                                   timeout: 0.5).evaluate(only)) { XCTAssertTrue("\($0)".contains("timed out after 0.5 s"), "\($0)") }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10)
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertFalse(alive(), "the timed-out command's children must be killed")
        let r = try ExternalEvaluator(command: "\(sleeper) & echo 0.75 # {ckpt}", timeout: 20).evaluate(only)
        XCTAssertEqual(r.metric, 0.75)
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertFalse(alive(), "a background child left by the command must be killed")
    }
}


final class SaliencyTests: XCTestCase {
    let tmp = TempDir()
    func weights(_ f: String) throws -> WeightSet { try WeightSet.load(try CheckpointOpener.open(Paths.corpus.appendingPathComponent(f).path)) }

    func testTopFractionKeepsExactlyThatFractionWithTies() throws {
        // Many ties: all scores equal except a few.
        var s = WeightSet()
        s.names = ["a", "b"]; s.shapes = ["a": [10, 10], "b": [5, 10]]
        s.values = ["a": [Float](repeating: 1, count: 100), "b": (0..<50).map { $0 < 5 ? 9 : 1 }]
        for top in [0.1, 0.25, 0.5, 0.9] {
            let (m, r) = try Saliency.mask(s, top: top, source: .magnitude)
            let kept = m.values.reduce(0) { $0 + $1.reduce(0) { $0 + Int($1) } }
            XCTAssertEqual(kept, Int((top * 150).rounded()), "top \(top)")
            XCTAssertEqual(r.kept, kept)
            XCTAssertTrue(m["b"]!.prefix(5).allSatisfy { $0 == 1 }, "the largest scores are always kept")
        }
        // A size where the prune fraction does not survive a round trip through floating point: (2999 − 951) / 2999
        // times 2999 is just below 2048, which once kept one weight too many.
        var u = WeightSet()
        u.names = ["u"]; u.shapes = ["u": [2999, 1]]; u.values = ["u": (0..<2999).map { Float($0 % 1000) }]
        let top = 951.0 / 2999.0
        XCTAssertEqual(u.values["u"]!.count - Int((top * 2999).rounded()), 2048)
        XCTAssertEqual(try Saliency.mask(u, top: top, source: .magnitude).result.kept, 951)
        // Sparsity fractions count the way people read them.
        XCTAssertEqual(Sparsity.count(0.29, of: 100), 29)
        XCTAssertEqual(Sparsity.count(0.3, of: 1000), 300)
        XCTAssertEqual(Sparsity.count(1, of: 7), 7)
        // Ties are resolved toward later tensors/elements.
        let (m, _) = try Saliency.mask(s, top: 0.1, source: .magnitude)
        XCTAssertEqual(m["a"]!.reduce(0) { $0 + Int($1) }, 0)
        XCTAssertEqual(Array(m["b"]!.suffix(10)), [UInt8](repeating: 1, count: 10))
    }

    /// Delta saliency against the base puts every salient weight where the corpus script changed the model:
    /// the rank-4 LoRA touched fc1 and fc2 only.
    /// The corpus "fine-tuned" pair (150 Adam steps on digits 0–4, every weight moved): the delta mask written by
    /// the CLI marks exactly the weights numpy ranks in the top half by |w_ft − w_base|, and no others.
    func testDeltaSaliencyOnFineTunedPairMatchesNumpy() throws {
        let mask = tmp.path("ft_mask.safetensors")
        let r = try runWscan(["analyze", "saliency", Paths.corpus.appendingPathComponent("mlp_seed0_finetuned.safetensors").path,
                              "--source", "delta", "--base", Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path,
                              "--db", tmp.path("ft.db"), "--mask-out", mask])
        XCTAssertEqual(r.status, 0, r.err)
        let out = try runPython("""
        import numpy as np
        from safetensors.numpy import load_file
        a = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        b = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0_finetuned.safetensors").path)))
        m = load_file(\(pyStr(mask)))
        names = sorted(k for k in b if b[k].ndim == 2)
        assert sorted(m) == names, sorted(m)
        d = np.concatenate([np.abs(b[k].astype(np.float64) - a[k]).ravel() for k in names])
        keep = int(round(0.5 * d.size)); thr = np.sort(d)[::-1][keep - 1]
        assert (d > 0).sum() > keep and thr > 0, 'the fine-tune moved more than half of the weights'
        for k in names:
            dk = np.abs(b[k].astype(np.float64) - a[k]); mk = m[k]
            assert mk.dtype == np.uint8 and mk.shape == b[k].shape
            assert (mk[dk > thr] == 1).all() and (mk[dk < thr] == 0).all(), k
            assert (mk[dk == 0] == 0).all(), k + ': a weight the fine-tune left alone is never salient'
        print(sum(int(m[k].sum()) for k in names), keep)
        """)
        let parts = out.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        XCTAssertEqual(parts.count, 2, out)
        XCTAssertEqual(parts.first, parts.last, "exactly round(0.5·N) salient weights")
    }

    func testDeltaSaliencyLocatesTheLoRA() throws {
        let a = try weights("mlp_seed0.safetensors"), b = try weights("mlp_seed0_lora4.safetensors")
        let names = b.names.filter { b.shapes[$0]!.count == 2 }
        let sc = try Saliency.scores(.delta, weights: b, tensors: names, base: a)
        let (m, r) = try Saliency.mask(sc, top: 0.5, source: .delta)
        XCTAssertEqual(m["fc3.weight"]!.reduce(0) { $0 + Int($1) }, 0, "fc3 was not changed")
        XCTAssertEqual(r.layers.first { $0.name == "fc3.weight" }!.massShare, 0)
        XCTAssertGreaterThan(r.layers.first { $0.name == "fc1.weight" }!.salient, 0)
    }

    /// `wscan analyze saliency --mask-out --maps`: the mask keeps exactly the top fraction and the heat maps are
    /// PNGs a standard decoder reads, at the documented size (one pixel per weight up to 256 a side).
    func testSaliencyCLIWritesMaskAndHeatMaps() throws {
        guard FileManager.default.isExecutableFile(atPath: Paths.wscanBinary.path) else { throw XCTSkip("binary not built") }
        let tmp = TempDir()
        let r = try runWscan(["analyze", "saliency", Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, "--db", tmp.path("c.db"),
                              "--top", "0.25", "--mask-out", tmp.path("mask.safetensors"), "--maps", tmp.path("maps")])
        XCTAssertEqual(r.status, 0, r.err)
        let mask = try CheckpointOpener.open(tmp.path("mask.safetensors"))
        XCTAssertTrue(mask.tensors.allSatisfy { $0.dtype == .u8 })
        let kept = try mask.tensors.reduce(0) { $0 + Int(try TensorData.floats(mask, $1).reduce(0, +)) }
        XCTAssertEqual(kept, Int((0.25 * 6464).rounded()))
        // Map sizes (README): 64×64 as is, 32×64 as is, 10×32 enlarged ×4 to 40×128; then the colour bar and labels.
        for (name, w, h) in [("fc1.weight", 64, 64), ("fc2.weight", 64, 32), ("fc3.weight", 128, 40)] {
            let png = tmp.path("maps/\(name).png")
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", "-c", "import sys; from PIL import Image; im = Image.open(sys.argv[1]); im.load(); print(im.size[0], im.size[1])", png]
            let out = Pipe(); p.standardOutput = out
            try p.run(); p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0, "\(png) does not decode")
            let size = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                .split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
            XCTAssertEqual(size.count, 2)
            XCTAssertEqual(size.last, max(h, 24), name)
            let label = (size.first ?? 0) - w - 22                      // 6 px per character of the longer label
            XCTAssertTrue(label >= 6 && label <= 60 && label % 6 == 0, "\(name): \(size)")
            XCTAssertTrue(FileManager.default.fileExists(atPath: tmp.path("maps/\(name).legend.svg")))
        }
    }

    /// A torch {model, optimizer} checkpoint: optimizer.state.<i> numbers the parameters without the model's buffers
    /// (BatchNorm running statistics sit between them), and a frozen layer has no state at all.
    func testFisherFromTorchOptimizerStateWithBuffers() throws {
        let ck = tmp.path("bn_adam.pt"), ref = tmp.path("bn_ref.npz")
        _ = try runPython("""
        import torch, numpy as np
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 4),
                                torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
        for p in m[4].parameters(): p.requires_grad_(False)                 # frozen: not given to the optimizer
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(3):
            opt.zero_grad(); m(torch.randn(16, 6)).pow(2).sum().backward(); opt.step()
        torch.save({"model": m.state_dict(), "optimizer": opt.state_dict()}, \(pyStr(ck)))
        names = [n for n, p in m.named_parameters() if p.requires_grad]
        np.savez(\(pyStr(ref)), **{"model." + n: opt.state[p]["exp_avg_sq"].numpy() for n, p in m.named_parameters() if p.requires_grad})
        """)
        let all = try WeightSet.load(try CheckpointOpener.open(ck))
        let expected = try WeightSet.load(try CheckpointOpener.open(ref))
        // Layers 3 and 4 share the shape [4, 4] and only one of them has a state, and the [4]-shaped biases and
        // BatchNorm weights can be fitted to the states in several ways too: from the order alone, only layers 0 and 5
        // are certain (the earliest and the latest fit agree on them). Those match the reference; the rest are refused.
        let params = ["model.0.weight", "model.5.weight"]
        let st = try Saliency.fisherState(all, model: all, params: params)
        for n in params { XCTAssertEqual(st.values[n], expected.values[n], n) }
        for n in ["model.3.weight", "model.1.weight"] {
            XCTAssertThrowsError(try Saliency.fisherState(all, model: all, params: [n])) {
                XCTAssertTrue("\($0)".contains("cannot tell which parameters of shape") && "\($0)".contains(n), "\($0)")
            }
        }
        XCTAssertThrowsError(try Saliency.fisherState(all, model: all, params: ["model.4.weight"])) {
            XCTAssertTrue("\($0)".contains("cannot tell which parameters of shape [4, 4] were frozen"), "\($0)")
        }
        // A model file that does not keep registration order (safetensors sorts names: 10.weight before 2.weight)
        // cannot be matched to optimizer.state.<i> by order.
        XCTAssertThrowsError(try Saliency.fisherState(all, model: all, params: params, modelInParameterOrder: false)) {
            XCTAssertTrue("\($0)".contains("parameter order"), "\($0)")
        }
        let r = try runWscan(["analyze", "saliency", ck, "--db", tmp.path("f.db"), "--source", "fisher", "--tensors", "model.0.*,model.5.*", "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        // Without --tensors the frozen layer 4 is included. It shares its shape with the trained layer 3, so which of
        // the two was frozen cannot be told from the state's order: refused, not guessed, also when only one of
        // them is selected.
        for sel in [[], ["--tensors", "model.3.*"], ["--tensors", "model.4.*"]] {
            let amb = try runWscan(["analyze", "saliency", ck, "--db", tmp.path("f.db"), "--source", "fisher"] + sel)
            XCTAssertEqual(amb.status, 1); XCTAssertTrue(amb.err.contains("cannot tell which parameters"), amb.err)
        }
        // A frozen layer of a shape no trained layer has: no state, score 0, never salient, and a warning says so.
        let ck2 = tmp.path("frozen_unique.pt")
        _ = try runPython("""
        import torch
        torch.manual_seed(1)
        m = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        for p in m[0].parameters(): p.requires_grad_(False)
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(3):
            opt.zero_grad(); m(torch.randn(8, 6)).pow(2).sum().backward(); opt.step()
        torch.save({"model": m.state_dict(), "optimizer": opt.state_dict()}, \(pyStr(ck2)))
        """)
        let all2 = try runWscan(["analyze", "saliency", ck2, "--db", tmp.path("f.db"), "--source", "fisher", "--json"])
        XCTAssertEqual(all2.status, 0, all2.err)
        XCTAssertTrue(all2.err.contains("no optimizer state (frozen in training)") && all2.err.contains("model.0.weight"), all2.err)
        let layers = ((try JSONSerialization.jsonObject(with: Data(all2.out.utf8)) as! [String: Any])["result"] as! [String: Any])["layers"] as! [[String: Any]]
        // top 50% of 45 weights: all 15 trained weights first, then 8 of the frozen layer's zeros by the tie rule.
        let share = Dictionary(uniqueKeysWithValues: layers.map { ($0["name"] as! String, $0["share"] as! Double) })
        XCTAssertEqual(share["model.2.weight"], 1, "trained weights rank above every frozen one")
        XCTAssertEqual(share["model.0.weight"]!, 8.0 / 30, accuracy: 1e-12)
    }

    func testFisherFromAdamState() throws {
        let w = try weights("mlp_seed0.safetensors")
        let st = try weights("mlp_seed0_adam_state.npz")
        var stat = WeightSet()
        for n in ["fc1.weight", "fc2.weight"] { stat.names.append(n); stat.shapes[n] = w.shapes[n]; stat.values[n] = st.values["exp_avg_sq.\(n)"] }
        let sc = try Saliency.scores(.fisher, weights: w, tensors: ["fc1.weight", "fc2.weight"], stat: stat)
        XCTAssertEqual(sc.values["fc1.weight"]!, st.values["exp_avg_sq.fc1.weight"]!.map { abs($0) })
        XCTAssertThrowsError(try Saliency.scores(.grad, weights: w, tensors: ["fc1.weight"], grad: nil))
    }
}

/// Review findings on sparsity and saliency: optimizer state, the dense reference, N:M achieved sparsity, the
/// evaluator's own path, shape checks on Fisher state, heat-map file names, and messages that name the file.
final class SparsitySaliencyCLITests: XCTestCase {
    let tmp = TempDir()
    let corpus = Paths.corpus
    func json(_ r: (status: Int32, out: String, err: String)) throws -> [String: Any] {
        XCTAssertEqual(r.status, 0, r.err)
        return try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
    }

    func testOptimizerStateIsNotPrunedAndDenseIsAlwaysMeasured() throws {
        let ck = tmp.path("with_state.safetensors"), db = tmp.path("c.db")
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import load_file, save_file
        t = load_file(\(pyStr(corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        s = np.load(\(pyStr(corpus.appendingPathComponent("mlp_seed0_adam_state.npz").path)))
        t.update({k: s[k] for k in s.files})
        save_file(t, \(pyStr(ck)))
        """)
        let data = corpus.appendingPathComponent("digits_test.npz").path
        let j = try json(try runWscan(["analyze", "sparsity", ck, "--db", db, "--grid", "0.5,0.6", "--no-refine", "--data", data, "--json"]))
        XCTAssertEqual(Set(j["tensors"] as! [String]), ["fc1.weight", "fc2.weight", "fc3.weight"])
        let points = j["points"] as! [[String: Any]]
        XCTAssertEqual(points.map { $0["sparsity"] as! Double }, [0, 0.5, 0.6], "the dense point is added to a grid without 0")
        let dense = ((points[0]["eval"] as! [String: Any])["accuracy"] as! Double)
        let m = try loadJSON(corpus.appendingPathComponent("MANIFEST.json")) as! [String: Any]
        let recorded = ((m["models"] as! [String: [String: Any]])["mlp_seed0"]!["test_accuracy"] as! Double)
        XCTAssertEqual(dense, recorded, accuracy: 1e-12)
        XCTAssertEqual((j["essential"] as! [String: Any])["denseMetric"] as! Double, dense)
    }

    func testNMAchievedCountsTheCutAndWrittenIsInJSON() throws {
        let db = tmp.path("c.db"), out = tmp.path("p.safetensors")
        let j = try json(try runWscan(["analyze", "sparsity", corpus.appendingPathComponent("mlp_seed0_pruned50.safetensors").path,
                                       "--pattern", "2:4", "--db", db, "--json", "--write-pruned", out]))
        let achieved = (j["points"] as! [[String: Any]]).map { $0["achieved"] as! Double }
        XCTAssertEqual(achieved, [0, 0.5], "as for unstructured pruning: the share the cut selects, not the zeros already there")
        let written = j["written"] as! [String: Any]
        XCTAssertEqual(written["path"] as? String, out); XCTAssertEqual(written["sparsity"] as? Double, 0.5)
        XCTAssertGreaterThan(written["zeroFraction"] as! Double, 0.5, "the model's own zeros are still zeros")
        let nan = tmp.path("nan.safetensors")
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import save_file
        save_file({"w": np.full((4, 4), np.nan, np.float32)}, \(pyStr(nan)))
        """)
        let r = try runWscan(["analyze", "sparsity", nan, "--db", db])
        XCTAssertEqual(r.status, 1); XCTAssertTrue(r.err.contains("nothing can be pruned"), r.err)
    }

    func testEvaluatorNeverReadsItsCandidatePath() throws {
        let db = tmp.path("c.db")
        let r = try runWscan(["analyze", "sparsity", corpus.appendingPathComponent("mlp_seed0.safetensors").path, "--db", db,
                              "--grid", "0,0.5", "--no-refine", "--eval", "echo evaluating {ckpt} done"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("printed no number"), r.err)
        let r2 = try runWscan(["analyze", "sparsity", corpus.appendingPathComponent("mlp_seed0.safetensors").path, "--db", db,
                               "--grid", "0,0.5", "--no-refine", "--eval", "echo loaded"])      // path appended
        XCTAssertEqual(r2.status, 1); XCTAssertTrue(r2.err.contains("printed no number"), r2.err)
    }

    func testSaliencyShapesNamesAndMessages() throws {
        let db = tmp.path("c.db"), model = corpus.appendingPathComponent("mlp_seed0.safetensors").path
        let st = tmp.path("state_T.npz"), gi = tmp.path("g_int.safetensors"), ramp = tmp.path("ramp.safetensors")
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import load_file, save_file
        s = dict(np.load(\(pyStr(corpus.appendingPathComponent("mlp_seed0_adam_state.npz").path))))
        s["exp_avg_sq.fc2.weight"] = np.ascontiguousarray(s["exp_avg_sq.fc2.weight"].T)
        np.savez(\(pyStr(st)), **s)
        t = load_file(\(pyStr(model)))
        save_file({k: (v * 100).astype(np.int32) if k == "fc1.weight" else v for k, v in t.items()}, \(pyStr(gi)))
        r = np.arange(64, dtype=np.float32).reshape(8, 8)
        save_file({"dir/a": r, "dir_a": r + 1, "Dir_A": r + 2}, \(pyStr(ramp)))
        """)
        let f = try runWscan(["analyze", "saliency", model, "--source", "fisher", "--state", st, "--db", db])
        XCTAssertEqual(f.status, 1); XCTAssertTrue(f.err.contains("has shape [64, 32]") && f.err.contains(st), f.err)
        let g = try runWscan(["analyze", "saliency", model, "--source", "grad", "--grads", gi, "--db", db])
        XCTAssertEqual(g.status, 1); XCTAssertTrue(g.err.hasPrefix("wscan: \(gi)") && g.err.contains("is I32"), g.err)
        let maps = tmp.path("maps")
        let j = try json(try runWscan(["analyze", "saliency", ramp, "--maps", maps, "--db", db, "--json"]))
        let files = j["maps"] as! [String]
        XCTAssertEqual(files.count, 3); XCTAssertEqual(Set(files).count, 3, "one file per tensor, never overwritten")
        for p in files { XCTAssertTrue(FileManager.default.fileExists(atPath: p), p) }
        let notDir = tmp.write("afile", [1])
        let m = try runWscan(["analyze", "saliency", ramp, "--maps", notDir, "--db", db])
        XCTAssertEqual(m.status, 1); XCTAssertEqual(m.err.split(separator: "\n").count, 1); XCTAssertTrue(m.err.contains("not a folder"), m.err)
        let w = try runWscan(["analyze", "sparsity", model, "--db", db, "--write-pruned", tmp.path("nodir/x.safetensors")])
        XCTAssertEqual(w.status, 1); XCTAssertTrue(w.err.contains("no such file or directory"), w.err)
    }
}
