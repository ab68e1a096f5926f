import XCTest
@testable import WscanKernels
@testable import WscanFormats
@testable import WscanAnalysis

/// Defects a review found in `analyze sparsity` and `analyze saliency`, each on files written by numpy/safetensors.
final class SparsityReviewTests: XCTestCase {
    let tmp = TempDir()

    /// ⌊s·N⌋ and round(top·N) on the decimal the user wrote, not on its binary approximation (nor nudged by an epsilon).
    func testCountsUseTheDecimalFraction() throws {
        XCTAssertEqual(Sparsity.count(0.999999, of: 1_000_001), 999_999, "⌊999,999.999999⌋ (an epsilon nudge gave 1,000,000)")
        XCTAssertEqual(Sparsity.count(0.29, of: 100), 29, "0.29·100 is 28.999999999999996 in binary")
        XCTAssertEqual(Sparsity.count(0.5, of: 7), 3)
        XCTAssertEqual(Sparsity.count(1e-7, of: 30_000_000), 3)
        XCTAssertEqual(Sparsity.count(0, of: 10), 0)
        XCTAssertEqual(DecimalFraction.times(0.7, 45, .plain), 32, "31.5 rounds up; 0.7·45 is 31.499999999999996 in binary")
        XCTAssertEqual(DecimalFraction.times(0.5, 45, .plain), 23)
        XCTAssertEqual(DecimalFraction.times(0.333, 1_000_000_000_000, .down), 333_000_000_000)
        XCTAssertEqual(Sparsity.defaultGrid().prefix(20).map { "\($0)" }, (0..<20).map { "\(Double("0.\(String(format: "%02d", $0 * 5))")!)" })
        // Saliency keeps round(0.7 · 45) = 32.
        let scores = WeightSet(names: ["w"], shapes: ["w": [5, 9]], values: ["w": (0..<45).map { Float($0) }])
        let r = try Saliency.mask(scores, top: 0.7, source: .magnitude).result
        XCTAssertEqual(r.kept, 32)
    }

    /// The one-pass AVX-512 histogram (range found in the same pass, one table) equals the two-pass one to the bit:
    /// zeros, subnormals, ±Inf, NaN, huge values, lengths off the 16/64-element blocks and past a sub-chunk.
    func testOnePassHistogramEqualsTwoPass() throws {
        guard StatsKernel.hasAVX512 else { throw XCTSkip("no AVX-512 on this CPU: only the two-pass kernel runs") }
        var rng = SplitMix64(seed: 11)
        for n in [1, 15, 17, 63, 65, 1000, (1 << 18) + 37, 700_001] {
            var x = (0..<n).map { _ in Float.random(in: -1...1, using: &rng) * Float(pow(2.0, Double(Int.random(in: -40...40, using: &rng)))) }
            for i in stride(from: 0, to: n, by: 97) { x[i] = Float(bitPattern: UInt32.random(in: 1..<0x7FFFFF, using: &rng)) }   // subnormals
            for i in stride(from: 5, to: n, by: 211) { x[i] = [0, -0.0, .infinity, -.infinity, .nan, 3e38][i % 6] }
            let one = x.withUnsafeBufferPointer { MagnitudeKernel.histogram($0.baseAddress!, n) }
            MagnitudeKernel.useAVX512(false)
            let two = x.withUnsafeBufferPointer { MagnitudeKernel.histogram($0.baseAddress!, n) }
            MagnitudeKernel.useAVX512(true)
            XCTAssertEqual(one.lo, two.lo, "n \(n)"); XCTAssertEqual(one.hi, two.hi, "n \(n)")
            XCTAssertEqual(one.pairs.map(\.bitPattern), two.pairs.map(\.bitPattern), "n \(n)")
            // And the sums are the squares: every finite element's w² within 2⁻²⁶ relative, subnormals included.
            let exact = x.reduce(0.0) { $0 + ($1.isFinite ? Double($1) * Double($1) : 0) }
            let got = stride(from: 1, to: one.pairs.count, by: 2).reduce(0.0) { $0 + one.pairs[$1] }
            // (2⁻²⁶ relative per normal element; a subnormal's square to 2⁻²⁷⁸ absolute)
            XCTAssertEqual(got, exact, accuracy: exact * 1e-7 + Double(n) * 0x1p-278, "n \(n)")
        }
    }

    /// Weights the float32 analysis cannot hold are refused (F64 beyond float32's range read as ±Inf); subnormal
    /// float32 weights carry their energy (they counted 0, so an all-subnormal layer kept "retained 1.0" at 90%).
    func testF64BeyondFloat32IsRefusedAndSubnormalsCarryEnergy() throws {
        let big = tmp.path("f64big.safetensors"), sub = tmp.path("subnormal.safetensors")
        let out = try runPython("""
        import numpy as np, json
        from safetensors.numpy import save_file
        save_file({"w": np.array([[1e39, 1.0], [2.0, 3.0]], dtype=np.float64)}, "\(big)")
        save_file({"fc.weight": np.ones((4, 4), np.float32), "fill": np.array(np.finfo(np.float64).min)}, "\(big)-scalar.safetensors")
        rng = np.random.default_rng(3)
        w = (rng.uniform(1e-41, 1e-39, size=(10, 10)) * rng.choice([-1, 1], size=(10, 10))).astype(np.float32)
        save_file({"w": w, "v": rng.standard_normal((8, 8)).astype(np.float32)}, "\(sub)")
        a = np.abs(w.astype(np.float64)).ravel(); order = np.argsort(a, kind="stable")
        res = {}
        for s in (0.5, 0.9):
            k = int(s * a.size); e = (a[order[:k]] ** 2).sum() / (a ** 2).sum()
            res[str(s)] = [float(np.sqrt(e)), float(1 - e)]
        print(json.dumps(res))
        """)
        let ref = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: [Double]]
        let db = tmp.path("c.db")
        let r = try runWscan(["analyze", "sparsity", big, "--grid", "0.5", "--no-refine", "--db", db])
        XCTAssertEqual(r.status, 1, r.out)
        XCTAssertTrue(r.err.contains("beyond float32's range"), r.err)
        let s = try runWscan(["analyze", "saliency", big, "--db", db])
        XCTAssertEqual(s.status, 1); XCTAssertTrue(s.err.contains("beyond float32's range"), s.err)
        // Only the analysed tensors are checked: an F64 scalar beside them is no reason to refuse.
        XCTAssertEqual(try runWscan(["analyze", "sparsity", big + "-scalar.safetensors", "--grid", "0.5", "--no-refine", "--db", db]).status, 0)

        let j = try runWscan(["analyze", "sparsity", sub, "--scope", "layer", "--grid", "0.5,0.9", "--no-refine", "--json", "--db", db])
        XCTAssertEqual(j.status, 0, j.err)
        let curve = try JSONSerialization.jsonObject(with: Data(j.out.utf8)) as! [String: Any]
        for p in curve["points"] as! [[String: Any]] {
            let sp = p["sparsity"] as! Double
            guard sp > 0 else { continue }
            let layer = (p["layers"] as! [[String: Any]]).first { $0["name"] as! String == "w" }!
            let want = ref["\(sp)"]!
            XCTAssertEqual(layer["relativeError"] as! Double, want[0], accuracy: 1e-6 * max(1, want[0]), "\(sp)")
            XCTAssertEqual(layer["retainedEnergy"] as! Double, want[1], accuracy: 1e-6, "\(sp)")
            XCTAssertLessThan(layer["retainedEnergy"] as! Double, 0.99, "subnormal weights have energy")
        }
    }

    /// `--mask-out` never replaces an input; an N:M pattern with no prunable tensor (a [4, 0] one qualified) and a
    /// saliency of nothing are errors; tolerances and fractions print with their digits; an empty grid item is refused.
    func testOutputsInputsAndMessages() throws {
        let model = tmp.path("m.safetensors"), base = tmp.path("b.safetensors"), empty = tmp.path("e.safetensors"), nan = tmp.path("nan.safetensors")
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import save_file
        rng = np.random.default_rng(1)
        b = rng.standard_normal((6, 8)).astype(np.float32)
        save_file({"w": b}, "\(base)")
        save_file({"w": b + 0.01 * rng.standard_normal((6, 8)).astype(np.float32)}, "\(model)")
        save_file({"w": np.zeros((4, 0), np.float32), "v": rng.standard_normal((4, 6)).astype(np.float32)}, "\(empty)")
        x = rng.standard_normal((2, 8)).astype(np.float32); x[0, 1:4] = np.nan
        save_file({"w": x}, "\(nan)")
        """)
        let db = tmp.path("c.db")
        let before = try Data(contentsOf: URL(fileURLWithPath: base))
        let r = try runWscan(["analyze", "saliency", model, "--source", "delta", "--base", base, "--mask-out", base, "--db", db])
        XCTAssertEqual(r.status, 1); XCTAssertTrue(r.err.contains("refusing to overwrite the input file"), r.err)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: base)), before, "the base is untouched")

        let nm = try runWscan(["analyze", "sparsity", empty, "--tensors", "w", "--pattern", "2:4", "--db", db])
        XCTAssertEqual(nm.status, 1, nm.out); XCTAssertTrue(nm.err.contains("multiple of 4"), nm.err)
        let se = try runWscan(["analyze", "saliency", empty, "--tensors", "w", "--db", db])
        XCTAssertEqual(se.status, 1, se.out); XCTAssertTrue(se.err.contains("hold no weights"), se.err)

        let nw = try runWscan(["analyze", "sparsity", nan, "--pattern", "2:4", "--db", db])
        XCTAssertEqual(nw.status, 0, nw.err)
        XCTAssertTrue(nw.err.contains("pruned only in a group of 4 holding more than 2 of them"), nw.err)
        XCTAssertFalse(nw.err.contains("never pruned"), nw.err)

        let t = try runWscan(["analyze", "sparsity", model, "--tolerance", "0.005", "--grid", "0,0.5", "--no-refine", "--db", db])
        XCTAssertTrue(t.out.contains("within 0.5% of dense"), t.out)
        let tiny = try runWscan(["analyze", "saliency", model, "--top", "1e-9", "--db", db])
        XCTAssertTrue(tiny.out.contains("top 1e-07% = 0 of 48 weights (threshold none)"), tiny.out)
        XCTAssertTrue(tiny.err.contains("keeps no weight"), tiny.err)
        XCTAssertEqual(try runWscan(["analyze", "sparsity", model, "--grid", "0.5,,0.6", "--db", db]).status, 2, "a usage error")
    }

    /// Review, twelfth session: (1) an F64 tensor at sparsity 0 is written bit-identical (a double below float32's
    /// range was written as 0), and pruning says when such values are written as 0; (2) tied tensors (one storage, two
    /// names) are one parameter: pruned once and written equal, masked alike; (3) a malformed --pattern is refused;
    /// (4) an infinite dense metric from the evaluator is refused (every point was "within tolerance").
    func testF64TiedPatternAndInfiniteMetric() throws {
        let f64 = tmp.path("f64.safetensors"), tied = tmp.path("tied.pt"), db = tmp.path("r.db")
        _ = try runPython("""
        import torch; from safetensors.torch import save_file
        g = torch.Generator().manual_seed(0)
        w = torch.randn(4, 4, dtype=torch.float64, generator=g); w[0, 0] = 1e-100; w[1, 1] = -3e-60
        save_file({"w.weight": w}, "\(f64)")
        a = torch.randn(8, 8, generator=g)
        torch.save({"emb.weight": a, "head.weight": a, "mid.weight": torch.randn(8, 8, generator=g)}, "\(tied)")
        """)
        let p0 = tmp.path("p0.safetensors"), p25 = tmp.path("p25.safetensors")
        var r = try runWscan(["analyze", "sparsity", f64, "--db", db, "--grid", "0.5", "--no-refine", "--write-pruned", p0, "--at", "0"])
        XCTAssertEqual(r.status, 0, r.err)
        r = try runWscan(["analyze", "sparsity", f64, "--db", db, "--grid", "0.5", "--no-refine", "--write-pruned", p25, "--at", "0.25"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("2 values below float32's range"), r.err)
        let out = try runPython("""
        from safetensors.numpy import load_file
        a = load_file("\(f64)")["w.weight"]; b = load_file("\(p0)")["w.weight"]; c = load_file("\(p25)")["w.weight"]
        print(a.tobytes() == b.tobytes(), int((c == 0).sum()), int(((c != a) & (c != 0)).sum()))
        """)
        XCTAssertEqual(out.trimmingCharacters(in: .whitespacesAndNewlines), "True 4 0", "bit-identical at 0; ⌊0.25·16⌋ zeros, nothing else changed")
        // tied: 128 unique weights; ⌊0.34·128⌋ = 43 zeros over emb+mid, head equal to emb
        let tp = tmp.path("tied_p.safetensors"), tm = tmp.path("tied_m.safetensors")
        r = try runWscan(["analyze", "sparsity", tied, "--db", db, "--grid", "0.5", "--no-refine", "--write-pruned", tp, "--at", "0.34", "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("head.weight = emb.weight"), r.err)
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["prunable"] as? Int, 128)
        r = try runWscan(["analyze", "saliency", tied, "--db", db, "--mask-out", tm])
        XCTAssertEqual(r.status, 0, r.err)
        let t = try runPython("""
        from safetensors.numpy import load_file
        d = load_file("\(tp)"); m = load_file("\(tm)")
        print(int((d["emb.weight"] == 0).sum() + (d["mid.weight"] == 0).sum()), bool((d["emb.weight"] == d["head.weight"]).all()),
              int(m["emb.weight"].sum() + m["mid.weight"].sum()), bool((m["emb.weight"] == m["head.weight"]).all()))
        """)
        XCTAssertEqual(t.trimmingCharacters(in: .whitespacesAndNewlines), "43 True 64 True")
        // a glob that names one member of a tied group selects the group: both written pruned, equal
        let tg = tmp.path("tied_g.safetensors")
        r = try runWscan(["analyze", "sparsity", tied, "--db", db, "--tensors", "head*", "--grid", "0.5", "--no-refine", "--write-pruned", tg, "--at", "0.5"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("head.weight = emb.weight"), r.err)
        let g = try runPython("""
        from safetensors.numpy import load_file
        d = load_file("\(tg)"); print(int((d["emb.weight"] == 0).sum()), bool((d["emb.weight"] == d["head.weight"]).all()), int((d["mid.weight"] == 0).sum()))
        """)
        XCTAssertEqual(g.trimmingCharacters(in: .whitespacesAndNewlines), "32 True 0")
        // Fisher saliency of a model with a tied layer: Adam keeps one state per parameter (model.parameters() yields
        // the tied one once), so the states map to the untied names in order
        let fisher = tmp.path("fisher_tied.pt"), fm = tmp.path("fisher_m.safetensors")
        _ = try runPython("""
        import torch
        torch.manual_seed(0)
        L = lambda i, o: torch.nn.Linear(i, o, bias=False)
        l0, l1, l2, l3, l4 = L(64, 32), L(32, 32), L(32, 32), L(32, 32), L(32, 10)
        l2.weight = l1.weight
        m = torch.nn.Sequential(l0, l1, l2, l3, l4)
        opt = torch.optim.Adam(m.parameters(), 1e-2)
        x, y = torch.randn(50, 64), torch.randint(0, 10, (50,))
        for _ in range(5):
            opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
        torch.save({"model": m.state_dict(), "optimizer": opt.state_dict()}, "\(fisher)")
        """)
        r = try runWscan(["analyze", "saliency", fisher, "--db", db, "--source", "fisher", "--mask-out", fm])
        XCTAssertEqual(r.status, 0, r.err)
        let f = try runPython("""
        from safetensors.numpy import load_file
        m = load_file("\(fm)"); print(sorted(m), bool((m["model.1.weight"] == m["model.2.weight"]).all()))
        """)
        XCTAssertEqual(f.trimmingCharacters(in: .whitespacesAndNewlines), "['model.0.weight', 'model.1.weight', 'model.2.weight', 'model.3.weight', 'model.4.weight'] True")
        // an F64 copied as it is (at 0) has the zeros it is written with: none
        r = try runWscan(["analyze", "sparsity", f64, "--db", db, "--grid", "0.5", "--no-refine", "--write-pruned", tmp.path("p0b.safetensors"), "--at", "0", "--json"])
        let written = (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["written"] as! [String: Any]
        XCTAssertEqual(written["zeroFraction"] as? Double, 0)
        let mlp = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        for bad in ["2:x:4", "2::4", ":2:4", "2:4:"] {
            let b = try runWscan(["analyze", "sparsity", mlp, "--db", db, "--pattern", bad])
            XCTAssertEqual(b.status, 2, "\(bad): \(b.err)")
        }
        let script = tmp.path("inf.sh")
        try "#!/bin/sh\necho -inf\n".write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        let e = try runWscan(["analyze", "sparsity", mlp, "--db", db, "--grid", "0.5", "--no-refine", "--eval", "\(script) {ckpt}"])
        XCTAssertEqual(e.status, 1, e.err)
        XCTAssertTrue(e.err.contains("-inf on the dense model"), e.err)
    }
}
