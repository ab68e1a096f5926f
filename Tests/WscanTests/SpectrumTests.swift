import XCTest
import GRDB
@testable import WscanCatalog
@testable import WscanFormats
@testable import WscanAnalysis
@testable import WscanKernels

/// Spectra and WeightWatcher metrics against references made by scripts/make_spectrum_fixtures.py:
/// numpy.linalg.svd (float64) and WeightWatcher 0.7.7's own analyze() output.
final class SpectrumTests: XCTestCase {
    func spectra(_ path: String) throws -> [String: MatrixSpectrum] {
        let ck = try CheckpointOpener.open(path)
        var out: [String: MatrixSpectrum] = [:]
        var opts = SpectrumOptions(); opts.randomize = false
        for t in ck.tensors where MatrixExtractor.skipReason(name: t.name, shape: t.shape, dtype: t.dtype) == nil {
            let m = MatrixExtractor.matrix(name: t.name, shape: t.shape, values: try TensorData.floats(ck, t))
            out[t.name] = try SpectrumAnalyzer.analyze(m, options: opts)
        }
        return out
    }

    /// Singular values within 1e-4 relative over the top 99% of each spectrum.
    func checkSVD(fixture: String, files: [String: URL]) throws {
        let ref = try loadJSON(Paths.fixtures.appendingPathComponent(fixture)) as! [String: Any]
        let refFiles = ref["files"] as! [String: [String: Any]]
        var checked = 0
        for (file, url) in files {
            guard let tensors = refFiles[file] else { XCTFail("no reference for \(file)"); continue }
            let ours = try spectra(url.path)
            for (name, r) in tensors {
                let rsv = (r as! [String: Any])["sv"] as! [Double]
                guard let s = ours[name] else { XCTFail("\(file):\(name) not analysed"); continue }
                XCTAssertEqual(s.singularValues.count, rsv.count, name)
                let top = Int((Double(rsv.count) * 0.99).rounded(.down))
                for i in 0..<max(1, top) {
                    XCTAssertEqual(s.singularValues[i], rsv[i], accuracy: 1e-4 * rsv[i], "\(file):\(name) σ[\(i)] (\(s.method))")
                }
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 0)
    }

    func testSingularValuesMatchNumpyOnCorpus() throws {
        var files: [String: URL] = [:]
        for f in ["mlp_seed0.safetensors", "mlp_seed0_f16.safetensors", "mlp_seed0_lora4.safetensors", "mlp_seed0_pruned50.safetensors",
                  "mlp_seed0_permuted.safetensors", "mlp_seed1.safetensors", "mlp_seed2.safetensors"] {
            files[f] = Paths.corpus.appendingPathComponent(f)
        }
        try checkSVD(fixture: "svd_corpus.json", files: files)
    }

    func testSingularValuesMatchNumpyOnMiniLM() throws {
        guard FileManager.default.fileExists(atPath: Paths.minilm.path) else { throw XCTSkip("MiniLM not fetched (make minilm)") }
        try checkSVD(fixture: "svd_minilm.json", files: ["model.safetensors": Paths.minilm])
    }

    /// rand_distance as defined, every shuffled copy decomposed in float64 (the reference for the float32 route).
    func float64RandDistance(_ w: WeightMatrix, sv: [Double], seed: UInt64) throws -> Double {
        var rng = SplitMix64(seed: seed)
        var rev: [Double] = []
        for s in w.slices {
            var sh = s
            for i in stride(from: sh.count - 1, to: 0, by: -1) { sh.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            rev += try SpectrumAnalyzer.singularValues(sh, rows: w.rows, cols: w.cols).values.map { $0 * $0 }
        }
        return ESDDistance.jensenShannon(sv.map { $0 * $0 }, rev)
    }

    /// rand_distance's shuffled copy is decomposed in float32 (half the work). Against the float64 route on the same
    /// shuffled copies: within 1e-7 on every corpus and MiniLM matrix, and within 1e-6 on matrices made to be hard
    /// for float32: a pooled conv kernel whose slices differ in scale, a constant matrix, a mean 100σ from 0,
    /// unsigned 4-bit codes, five huge outliers, F16-subnormal-sized weights; scaling by 2^±100 changes nothing.
    func testShuffledCopyInFloat32KeepsRandDistance() throws {
        var mats: [(String, WeightMatrix, Double)] = []
        var files = [Paths.corpus.appendingPathComponent("mlp_seed0.safetensors")]
        if FileManager.default.fileExists(atPath: Paths.minilm.path) { files.append(Paths.minilm) }
        for f in files {
            let ck = try CheckpointOpener.open(f.path)
            // (MiniLM's 30522×384 word embedding left out: its float64 reference alone takes seconds in a debug build)
            for t in ck.tensors where t.shape.count == 2 && t.elementCount <= 1 << 21 && MatrixExtractor.skipReason(name: t.name, shape: t.shape, dtype: t.dtype) == nil {
                mats.append(("\(f.lastPathComponent):\(t.name)", MatrixExtractor.matrix(name: t.name, shape: t.shape, values: try TensorData.floats(ck, t)), 1e-7))
            }
        }
        var rng = SplitMix64(seed: 42)
        func gauss() -> Float {
            let u = max(Double(rng.next() >> 11) / 9007199254740992, 1e-300), v = Double(rng.next() >> 11) / 9007199254740992
            return Float((-2 * log(u)).squareRoot() * cos(2 * Double.pi * v))
        }
        func matrix(_ name: String, _ shape: [Int], _ f: (Int) -> Float) -> WeightMatrix {
            MatrixExtractor.matrix(name: name, shape: shape, values: (0..<shape.reduce(1, *)).map(f))
        }
        let hard: [WeightMatrix] = [
            matrix("conv", [96, 80, 3, 3]) { i in gauss() * Float(1 + i % 9) },       // slice s scaled by 1 + s
            matrix("const", [200, 150]) { _ in 0.5 },
            matrix("offset", [300, 200]) { _ in 100 + gauss() },
            matrix("uint4", [256, 300]) { _ in Float(rng.next() % 16) },
            matrix("outliers", [256, 256]) { i in i % 13109 == 7 ? 1e3 : 1e-6 * gauss() },
            matrix("f16small", [300, 400]) { _ in Float(Float16(gauss() * 2e-5)) },
            matrix("gauss", [300, 400]) { _ in gauss() * 0.02 },
        ]
        mats += hard.map { ($0.name, $0, 1e-6) }
        var worst = 0.0
        for (name, w, tol) in mats {
            var sv: [Double] = []
            for s in w.slices { sv += try SpectrumAnalyzer.singularValues(s, rows: w.rows, cols: w.cols).values }
            sv.sort(by: >)
            let d = try SpectrumAnalyzer.randDistance(w, sv: sv, seed: 3), ref = try float64RandDistance(w, sv: sv, seed: 3)
            XCTAssertEqual(d, ref, accuracy: tol, name)
            if d.isFinite { worst = max(worst, abs(d - ref)) }
            if min(w.rows, w.cols) > 64, w.slices.count == 1, tol == 1e-7 {
                for e in [100, -100] {
                    let p = Float(sign: .plus, exponent: e, significand: 1)
                    var big = w; big.slices = w.slices.map { $0.map { $0 * p } }
                    XCTAssertEqual(try SpectrumAnalyzer.randDistance(big, sv: sv, seed: 3), d, accuracy: 1e-12, "\(name) scaled by 2^\(e)")
                }
            }
        }
        XCTAssertGreaterThan(mats.count, 10)
        print("rand_distance, float32 shuffled copy vs float64: worst |Δ| \(worst) over \(mats.count) matrices")
    }

    /// WeightWatcher's default metrics: alpha within max(0.05, 2%), the others within 0.1%.
    func checkWW(_ layers: [[String: Any]], ours: [String: MatrixSpectrum], context: String) {
        for r in layers {
            let tensor = (r["tensor"] as? String) ?? ((r["name"] as! String) + ".weight")
            guard let s = ours[tensor] else { XCTFail("\(context): \(tensor) not analysed"); continue }
            let m = s.metrics
            let ctx = "\(context):\(tensor)"
            func close(_ a: Double?, _ key: String, rel: Double = 1e-3) {
                guard let b = r[key] as? Double else { return }
                guard let a else { XCTFail("\(ctx): \(key) missing (WW \(b))"); return }
                XCTAssertEqual(a, b, accuracy: rel * max(abs(b), 1e-12), "\(ctx): \(key)")
            }
            if let wa = r["alpha"] as? Double, let a = m.alpha {
                XCTAssertEqual(a, wa, accuracy: max(0.05, 0.02 * abs(wa)), "\(ctx): alpha")
            } else { XCTFail("\(ctx): alpha missing") }
            close(m.stableRank, "stable_rank")
            close(m.logNorm, "log_norm")
            close(m.logSpectralNorm, "log_spectral_norm")
            close(m.entropy, "entropy")
            close(m.alphaWeighted, "alpha_weighted", rel: 0.03)
            close(m.xmin, "xmin", rel: 1e-3)
            close(m.ksDistance, "D", rel: 1e-2)
            if let n = r["num_pl_spikes"] as? Int { XCTAssertEqual(m.numPlSpikes, n, "\(ctx): num_pl_spikes") }
        }
    }

    func testWeightWatcherMetricsOnMiniLM() throws {
        guard FileManager.default.fileExists(atPath: Paths.minilm.path) else { throw XCTSkip("MiniLM not fetched (make minilm)") }
        let ref = try loadJSON(Paths.fixtures.appendingPathComponent("ww_minilm.json")) as! [String: Any]
        let layers = ref["layers"] as! [[String: Any]]
        XCTAssertEqual(layers.count, 39)
        let ours = try spectra(Paths.minilm.path)
        checkWW(layers, ours: ours, context: "MiniLM")
        // The MP fit (WeightWatcher's analyze(mp_fit=True), not a default): sigma_mp and mp_softrank within 1%.
        let mp = (ref["mp_fit_nondefault"] as! [String: Any])["layers"] as! [[String: Any]]
        var within = 0
        for r in mp {
            guard let s = ours[r["tensor"] as! String], let sig = r["sigma_mp"] as? Double else { continue }
            XCTAssertEqual(s.metrics.sigmaMP ?? -1, sig, accuracy: 0.01 * sig, "\(r["tensor"]!): sigma_mp")
            XCTAssertEqual(s.metrics.mpSoftrank ?? -1, r["mp_softrank"] as! Double, accuracy: 0.01 * (r["mp_softrank"] as! Double) + 1e-4,
                           "\(r["tensor"]!): mp_softrank")
            if let ns = r["num_spikes"] as? Double, abs(Double(s.metrics.numSpikes ?? -1) - ns) <= max(1, 0.02 * ns) { within += 1 }
        }
        XCTAssertEqual(within, mp.count, "num_spikes within max(1, 2%) of WeightWatcher on every layer")
    }

    func testWeightWatcherMetricsOnCorpus() throws {
        let ref = try loadJSON(Paths.fixtures.appendingPathComponent("ww_corpus.json")) as! [String: Any]
        let files = ref["files"] as! [String: [String: Any]]
        for (file, r) in files where !file.hasSuffix("/") {
            checkWW(r["layers"] as! [[String: Any]], ours: try spectra(Paths.corpus.appendingPathComponent(file).path), context: file)
        }
    }

    /// Repeated top eigenvalues (a duplicated top value, two identical blocks, two values forty times each): tails of
    /// equal eigenvalues have no power law and are not candidates, so α is WeightWatcher's finite fit (it was ∞ or
    /// ~1e15 from rounding noise, with D = 0 from a NaN, and an "alpha > 6" warning).
    func testRepeatedEigenvaluesFitLikeWeightWatcher() throws {
        let ref = try loadJSON(Paths.fixtures.appendingPathComponent("ww_degenerate.json")) as! [String: Any]
        let layers = ref["layers"] as! [[String: Any]]
        XCTAssertEqual(layers.count, 3)
        let ours = try spectra(Paths.fixtures.appendingPathComponent("spectrum_degenerate.safetensors").path)
        checkWW(layers, ours: ours, context: "degenerate")
        for (name, s) in ours {
            XCTAssertTrue(s.metrics.alpha.map { $0.isFinite && $0 < 6 } ?? false, "\(name): alpha \(String(describing: s.metrics.alpha))")
            XCTAssertFalse(s.warnings.contains { $0.contains("alpha > 6") }, "\(name): \(s.warnings)")
        }
        // all eigenvalues equal (identities, small-N and large-N paths): no power law, α missing and no α warning
        var o = SpectrumOptions(); o.randomize = false
        for n in [12, 64] {
            let eye = (0..<(n * n)).map { $0 % (n + 1) == 0 ? Float(2) : 0 }
            let s = try SpectrumAnalyzer.analyze(MatrixExtractor.matrix(name: "eye", shape: [n, n], values: eye), options: o)
            XCTAssertNil(s.metrics.alpha, "\(n)"); XCTAssertFalse(s.warnings.contains { $0.contains("alpha") }, "\(s.warnings)")
        }
    }

    /// The randomized route: a rank near Int.max is clamped, not an overflow trap (in the analyzer and the runner's
    /// planning); weights near 1e37 or subnormal are scaled by a power of two instead of overflowing float32 products
    /// ("holds NaN or ±Inf") or losing bits; an exactly low-rank matrix's energy ranks are not called lower bounds.
    func testRandomizedRouteEdgeCases() throws {
        var rng = SplitMix64(seed: 21)
        func gauss() -> Float { Float(Double(Int64(bitPattern: rng.next() % 2001) - 1000) / 1000) }
        let (m, n) = (150, 100)
        let base = (0..<(m * n)).map { _ in gauss() }
        var d = base.map(Double.init)
        let ref = try Linalg.singularValues(&d, m: m, n: n)
        var o = SpectrumOptions(); o.randomize = false; o.gramMemoryLimit = 1
        for scale: Float in [1, 1e37, 1e-41] {
            let s = try SpectrumAnalyzer.analyze(MatrixExtractor.matrix(name: "w", shape: [m, n], values: base.map { $0 * scale }), options: o)
            XCTAssertEqual(s.method, SpectrumMethod.randomized.rawValue)
            // values within float32 rounding of the scaled inputs (subnormals keep ~14 bits at 1e-41)
            let tol = scale < 1e-30 ? 1e-3 : 1e-5
            for i in 0..<90 { XCTAssertEqual(s.singularValues[i] / Double(scale), ref[i], accuracy: tol * ref[i], "scale \(scale) σ\(i)") }
        }
        o.randomizedRank = Int.max - 5
        let s = try SpectrumAnalyzer.analyze(MatrixExtractor.matrix(name: "w", shape: [m, n], values: base), options: o)
        XCTAssertEqual(s.singularValues.count, n)
        XCTAssertGreaterThan(SpectrumRunner.estimatedBytes([m, n], options: o), 0)
        XCTAssertGreaterThan(SpectrumRunner.cost([m, n], options: o), 0)
        // rank 1 exactly: every value of its spectrum is found, the ranks are exact
        o.randomizedRank = 8; o.energies = [0.5, 0.99, 1]
        let u = (0..<m).map { _ in gauss() }, v = (0..<n).map { _ in gauss() }
        let r1 = try SpectrumAnalyzer.analyze(MatrixExtractor.matrix(name: "w", shape: [m, n], values: u.flatMap { x in v.map { x * $0 } }), options: o)
        XCTAssertFalse(r1.warnings.contains { $0.hasPrefix(SpectrumAnalyzer.lowerBoundWarning) }, "\(r1.warnings)")
        // full rank with 8 values: 99% of the energy needs more, and the warning says so
        let full = try SpectrumAnalyzer.analyze(MatrixExtractor.matrix(name: "w", shape: [m, n], values: base), options: o)
        XCTAssertTrue(full.warnings.contains { $0.hasPrefix(SpectrumAnalyzer.lowerBoundWarning) }, "\(full.warnings)")
    }

    /// The method names what ran: one-stage dsyevd up to order 1024, two-stage above; pooled conv slices that took
    /// different routes are counted in a warning; a rank-deficient matrix whose dgesdd redo does not fit the Gram
    /// memory limit keeps the Gram values with a warning, and such a limit is part of the stored result's key.
    func testMethodNamesWhatRan() throws {
        var rng = SplitMix64(seed: 33)
        func u() -> Float { Float(Double(Int64(bitPattern: rng.next() % 2001) - 1000) / 1000) }
        var o = SpectrumOptions(); o.randomize = false
        for (m, n, want) in [(200, 150, SpectrumMethod.gram), (1030, 1025, .gram2stage)] {
            let s = try SpectrumAnalyzer.analyze(MatrixExtractor.matrix(name: "w", shape: [m, n], values: (0..<(m * n)).map { _ in u() }), options: o)
            XCTAssertEqual(s.method, want.rawValue, "\(m)x\(n)")
        }
        // a (100, 80, 1, 2) kernel: slice [0,0] full rank, slice [0,1] rank 3 (dgesdd redo)
        let (out, inp) = (100, 80)
        let a = (0..<(out * 3)).map { _ in u() }, b = (0..<(3 * inp)).map { _ in u() }
        var k = [Float](repeating: 0, count: out * inp * 2)
        for i in 0..<out { for j in 0..<inp {
            k[(i * inp + j) * 2] = u()
            k[(i * inp + j) * 2 + 1] = (0..<3).reduce(0) { $0 + a[i * 3 + $1] * b[$1 * inp + j] }
        } }
        let conv = try SpectrumAnalyzer.analyze(MatrixExtractor.matrix(name: "c", shape: [out, inp, 1, 2], values: k), options: o)
        XCTAssertEqual(conv.method, SpectrumMethod.gram.rawValue)
        XCTAssertTrue(conv.warnings.contains("pooled slices decomposed by dgesdd (1) and gram-dsyevd (1)"), "\(conv.warnings)")
        // rank 10, 400×150: Gram 360 KB fits a 500 KB limit, the float64 copy (720 KB) does not
        let (m, n) = (400, 150)
        let p = (0..<(m * 10)).map { _ in u() }, q = (0..<(10 * n)).map { _ in u() }
        let low = (0..<(m * n)).map { e in (0..<10).reduce(Float(0)) { $0 + p[(e / n) * 10 + $1] * q[$1 * n + e % n] } }
        let exact = try SpectrumAnalyzer.analyze(MatrixExtractor.matrix(name: "w", shape: [m, n], values: low), options: o)
        XCTAssertEqual(exact.method, SpectrumMethod.gesdd.rawValue)
        var tight = o; tight.gramMemoryLimit = 500_000
        let kept = try SpectrumAnalyzer.analyze(MatrixExtractor.matrix(name: "w", shape: [m, n], values: low), options: tight)
        XCTAssertEqual(kept.method, SpectrumMethod.gram.rawValue)
        XCTAssertTrue(kept.warnings.contains { $0.contains("rank-deficient") && $0.contains("--gram-memory") }, "\(kept.warnings)")
        XCTAssertNotEqual(tight.storageKey(rows: m, cols: n), o.storageKey(rows: m, cols: n), "a limit that refuses the redo is not re-used by default runs")
        var roomy = o; roomy.gramMemoryLimit = 100_000_000
        XCTAssertEqual(roomy.storageKey(rows: m, cols: n), o.storageKey(rows: m, cols: n), "a limit that changes nothing keeps the key")
    }

    /// --energy refuses empty entries and fractions too small to label; the "more layers" hint names the flag of
    /// the command at hand (show lists every layer with --tensors: it has no --all).
    func testSpectrumCLIFractionsAndHint() throws {
        let dir = TempDir()
        let file = dir.path("many.safetensors"), db = dir.path("s.db")
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import save_file
        r = np.random.default_rng(0)
        save_file({f"l{i:02d}.weight": r.standard_normal((12, 10)).astype(np.float32) for i in range(45)}, "\(file)")
        """)
        for bad in ["0.9,,0.95", "0.9,", "1e-300", "0"] {
            let r = try runWscan(["analyze", "spectrum", file, "--db", db, "--energy", bad])
            XCTAssertEqual(r.status, 2, "--energy \(bad): \(r.err)")
        }
        let a = try runWscan(["analyze", "spectrum", file, "--db", db, "--energy", "0.5,0.9"])
        XCTAssertEqual(a.status, 0, a.err)
        XCTAssertTrue(a.out.contains("5 more (use --all or --json)"), a.out)
        let s = try runWscan(["show", file, "--db", db, "--spectrum"])
        XCTAssertEqual(s.status, 0, s.err)
        XCTAssertTrue(s.out.contains("5 more (use --tensors or --json)"), s.out)
        let all = try runWscan(["show", file, "--db", db, "--spectrum", "--tensors"])
        XCTAssertTrue(all.out.contains("l44.weight"), all.out)
        // F64 weights are read as float32, and the layer says so
        let f64 = dir.path("f64.safetensors")
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import save_file
        save_file({"d.weight": np.random.default_rng(1).standard_normal((100, 80))}, "\(f64)")
        """)
        let d = try runWscan(["analyze", "spectrum", f64, "--db", db])
        XCTAssertTrue(d.out.contains("F64 weights analysed at float32 precision"), d.out)
    }

    func testPermutedCopyHasIdenticalSpectra() throws {
        let a = try spectra(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)
        let b = try spectra(Paths.corpus.appendingPathComponent("mlp_seed0_permuted.safetensors").path)
        for (name, s) in a {
            for (x, y) in zip(s.singularValues, b[name]!.singularValues) { XCTAssertEqual(x, y, accuracy: 1e-9 * max(1, x), name) }
        }
    }

    func testGramAndDenseSVDAgree() throws {
        var rng = SplitMix64(seed: 7)
        for (m, n) in [(300, 120), (120, 300), (257, 257)] {
            let a = (0..<(m * n)).map { _ in Float(Int64(bitPattern: rng.next() % 2001) - 1000) / 1000 }
            var d = a.map(Double.init)
            let ref = try Linalg.singularValues(&d, m: m, n: n)
            let (g, method) = try SpectrumAnalyzer.singularValues(a, rows: m, cols: n)
            XCTAssertEqual(method, .gram)
            for i in 0..<Int(Double(ref.count) * 0.99) { XCTAssertEqual(g[i], ref[i], accuracy: 1e-6 * ref[i]) }
        }
    }

    func testConvKernelSlicesArePooled() throws {
        // A (4, 3, 2, 2) kernel: 4 slices of 4×3, eigenvalues pooled.
        let shape = [4, 3, 2, 2]
        let v = (0..<48).map { Float(sin(Double($0) * 0.7)) }
        XCTAssertNil(MatrixExtractor.skipReason(name: "conv.weight", shape: shape, dtype: .f32))
        let m = MatrixExtractor.matrix(name: "conv.weight", shape: shape, values: v)
        XCTAssertEqual(m.slices.count, 4)
        XCTAssertEqual(m.slices[1][1 * 3 + 2], v[(1 * 3 + 2) * 4 + 1])   // W[1, 2, 0, 1]
        var opts = SpectrumOptions(); opts.randomize = false
        let s = try SpectrumAnalyzer.analyze(m, options: opts)
        XCTAssertEqual(s.singularValues.count, 12)
        var pooled: [Double] = []
        for sl in m.slices { var d = sl.map(Double.init); pooled += try Linalg.singularValues(&d, m: 4, n: 3) }
        for (a, b) in zip(s.singularValues, pooled.sorted(by: >)) { XCTAssertEqual(a, b, accuracy: 1e-9) }
    }

    /// A matrix with NaN/±Inf is skipped with the count (LAPACK never sees it); an all-zero matrix (log_norm −∞)
    /// is stored and read back from the catalog on the next run instead of turning "unreadable".
    func testNonFiniteSkippedAndInfiniteMetricsSurviveTheCatalog() throws {
        let tmp = TempDir()
        let file = tmp.path("odd.safetensors")
        var bad = [Float](repeating: 0.5, count: 64 * 32); bad[5] = .nan; bad[9] = .infinity
        try SafetensorsWriter.write([
            .init(name: "bad", dtype: .f32, shape: [64, 32], bytes: bad.withUnsafeBytes { Array($0) }),
            .init(name: "zero", dtype: .f32, shape: [16, 16], bytes: [UInt8](repeating: 0, count: 16 * 16 * 4)),
        ], to: file)
        let db = tmp.path("c.db")
        for run in 0..<2 {
            let r = try runWscan(["analyze", "spectrum", file, "--db", db, "--json"])
            XCTAssertEqual(r.status, 0, r.err)
            let j = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
            let recs = j["layers"] as? [[String: Any]] ?? []
            let byName = Dictionary(recs.map { ($0["tensor"] as! String, $0) }, uniquingKeysWith: { a, _ in a })
            XCTAssertEqual(byName["bad"]?["skipReason"] as? String, "1 NaN and 1 ±Inf values: no spectrum", "run \(run)")
            XCTAssertNil(byName["zero"]?["skipReason"], "run \(run): \(byName["zero"] ?? [:])")
            let m = ((byName["zero"]?["spectrum"] as? [String: Any])?["metrics"] as? [String: Any]) ?? [:]
            XCTAssertEqual(m["logNorm"] as? String, "-inf", "run \(run)")
        }
        // A row an older wscan stored with undecodable metrics is analysed again, not shown as skipped.
        let q = try DatabaseQueue(path: db)
        try q.write { try $0.execute(sql: "UPDATE spectra SET metrics = 'null' WHERE tensor = 'zero'") }
        let r = try runWscan(["analyze", "spectrum", file, "--db", db, "--json"])
        XCTAssertFalse(r.out.contains(SpectrumRecord.unreadable), r.out)
        let after: String? = try q.read { try String.fetchOne($0, sql: "SELECT metrics FROM spectra WHERE tensor = 'zero'") }
        XCTAssertNotEqual(after, "null")
    }

    func testRankMetricsOnKnownSpectrum() {
        // σ = 4, 2, 1, 1 (λ = 16, 4, 1, 1): stable rank 22/16, 90% energy needs rank 2 (20/22 = 0.909).
        let m = SpectrumAnalyzer.computeMetrics([4, 2, 1, 1], rows: 4, cols: 4, energies: [0.5, 0.9, 0.99])
        XCTAssertEqual(m.stableRank, 22.0 / 16.0, accuracy: 1e-12)
        XCTAssertEqual(m.energyRanks, [1, 2, 4])
        XCTAssertEqual(m.utilization, [0.25, 0.5, 1.0])
        let p = [4.0, 2, 1, 1].map { $0 / 8 }
        XCTAssertEqual(m.effectiveRank, exp(-p.reduce(0) { $0 + $1 * log($1) }), accuracy: 1e-12)
        XCTAssertEqual(m.numericalRank, 4)
    }

    func testWeLoreThresholdHitsTarget() {
        let spectra: [(String, [Double])] = [("a", (0..<100).map { exp(-Double($0) / 5) }), ("b", (0..<50).map { 1 - Double($0) / 50 })]
        let r = WeLore.classify(spectra, targetReduction: 0.5, minRatio: 0.5)
        XCTAssertEqual(r.achievedReduction, 0.5, accuracy: 0.01)
        XCTAssertTrue(r.layers[0].lowRank, "a decaying spectrum is low-rank")
        XCTAssertFalse(r.layers[1].lowRank, "a flat spectrum is not")
        XCTAssertEqual(r.layers[0].prunableRanks + r.layers[1].prunableRanks, 75)
    }

    func testPowerLawFitRecoversExponent() {
        // Deterministic Pareto sample with α = 2.5: x = (1 − u)^(−1/(α−1)).
        var rng = SplitMix64(seed: 3)
        let xs = (0..<4000).map { _ -> Double in let u = Double(rng.next() >> 11) / Double(1 << 53); return pow(1 - u, -1 / 1.5) }
        let fit = PowerLawFit.fit(xs)!
        XCTAssertEqual(fit.alpha, 2.5, accuracy: 0.1)
        XCTAssertLessThan(fit.D, 0.05)
    }

    /// A matrix whose Gram matrix exceeds the memory allowed gets the randomized method: every computed σ̂ᵢ and the
    /// stated bound bracket the exact σᵢ (Gram route, itself checked against numpy), the dominant values are
    /// accurate, and norms use the exact ‖W‖_F.
    func testRandomizedMethodBracketsExactSpectrum() throws {
        var rng = SplitMix64(seed: 21)
        func g() -> Float { Float(Double(rng.next() >> 11) / Double(1 << 53) - 0.5) * 3.4641 }   // unit variance
        let m = 1500, n = 900, r = 60
        let u = (0..<(m * r)).map { _ in g() }, v = (0..<(r * n)).map { _ in g() }
        var a = [Float](repeating: 0, count: m * n)
        for i in 0..<m { for k in 0..<r { let s = u[i * r + k] * Float(pow(0.93, Double(k))); for j in 0..<n { a[i * n + j] += s * v[k * n + j] } } }
        for i in a.indices { a[i] += 0.05 * g() }
        let exact = try SpectrumAnalyzer.singularValues(a, rows: m, cols: n).values
        var opts = SpectrumOptions(); opts.randomize = false; opts.gramMemoryLimit = 1 << 20; opts.randomizedRank = 48
        XCTAssertTrue(opts.needsRandomized(rows: m, cols: n))
        let sp = try SpectrumAnalyzer.analyze(WeightMatrix(name: "w", shape: [m, n], rows: m, cols: n, slices: [a], kind: "linear"), options: opts)
        XCTAssertEqual(sp.method, "randomized")
        XCTAssertEqual(sp.singularValues.count, 48)
        let e = try RandomizedSpectrum.compute(a, rows: m, cols: n, rank: 48).residual
        for (i, est) in sp.singularValues.enumerated() {
            XCTAssertGreaterThanOrEqual(exact[i], est * (1 - 1e-5), "σ[\(i)] lower bound")
            XCTAssertLessThanOrEqual(exact[i], (est * est + e * e).squareRoot() * (1 + 1e-5), "σ[\(i)] upper bound")
            if i < 16 { XCTAssertEqual(est, exact[i], accuracy: 1e-4 * exact[i], "σ[\(i)]") }
        }
        let fro = exact.reduce(0) { $0 + $1 * $1 }.squareRoot()
        XCTAssertEqual(sp.metrics.frobeniusNorm, fro, accuracy: 1e-5 * fro)
        XCTAssertEqual(sp.metrics.stableRank, fro * fro / (exact[0] * exact[0]), accuracy: 1e-4 * sp.metrics.stableRank)
        XCTAssertTrue(sp.warnings.first?.hasPrefix("randomized: top 48") ?? false, "\(sp.warnings)")
        XCTAssertNil(sp.metrics.randDistance)
    }

    /// The bounded candidate scan picks exactly the xmin (first on ties), α and D of the full O(n²) scan, on
    /// Pareto, Marchenko–Pastur-like, tied and small-N spectra.
    func testBoundedKSScanEqualsFullScan() {
        var rng = SplitMix64(seed: 11)
        func u() -> Double { Double(rng.next() >> 11) / Double(1 << 53) }
        var sets: [[Double]] = []
        for n in [9, 19, 20, 64, 300, 1500] {
            sets.append((0..<n).map { _ in pow(1 - u(), -1 / (0.5 + 3 * u())) })                    // heavy tails
            sets.append((0..<n).map { _ in let x = 4 * u(); return x * x + 1e-3 })                    // bulk-like
            sets.append((0..<n).map { _ in Double(Int(u() * 6) + 1) })                               // many ties
        }
        for evals in sets {
            guard let fit = PowerLawFit.fit(evals) else { continue }
            let data = evals.filter { $0 > PowerLawFit.evalsThreshold }.sorted(), N = data.count
            let logs = data.map { log($0) }
            var suffix = [Double](repeating: 0, count: N + 1)          // summed as fit() sums, so α is bit-identical
            for i in stride(from: N - 1, through: 0, by: -1) { suffix[i] = suffix[i + 1] + logs[i] }
            var best = -1, bestD = Double.infinity, bestA = 0.0
            for i in 0..<(N - 1) {
                let tail = Double(N - i), s = suffix[i] - tail * logs[i]
                if N < PowerLawFit.smallN {
                    guard N - i >= 8, s > 1e-12 else { continue }
                    let a = 1 + (tail - 1) / s
                    guard a > 1 else { continue }
                    let d = PowerLawFit.ks(logs, from: i, alpha: a)
                    if d < bestD { bestD = d; best = i; bestA = a }
                } else {
                    guard s > 1e-12 else { continue }          // a tail of equal values: no candidate
                    let a = 1 + tail / s
                    guard a > 1 else { continue }
                    let d = PowerLawFit.ks(logs, from: i, alpha: a)
                    if d < bestD { bestD = d; best = i; bestA = a }
                }
            }
            guard best >= 0 else { continue }
            XCTAssertEqual(fit.xmin, data[best], "n=\(evals.count)")
            XCTAssertEqual(fit.alpha, bestA, "n=\(evals.count)")
            XCTAssertEqual(fit.D, bestD, "n=\(evals.count)")
        }
    }
}

final class UtilizationTests: XCTestCase {
    /// A finite weight whose projection overflows float32 (3e38) is one layer not measured, named with its file;
    /// the other layers are still measured (the whole run stopped, blaming the activations file).
    func testOverflowingLayerIsOneFailure() throws {
        let dir = TempDir(), w = dir.path("hw.safetensors"), x = dir.path("hx.npz")
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import save_file
        W = np.full((3, 4), 3e38, np.float32); W[1] *= -0.5; W[2, 0] = 1e38; r = np.random.default_rng(1)
        save_file({"a.weight": r.standard_normal((5, 4)).astype(np.float32), "h.weight": W}, "\(w)")
        np.savez("\(x)", h=r.standard_normal((20, 4)).astype(np.float32), a=r.standard_normal((20, 4)).astype(np.float32))
        """)
        let r = try runWscan(["analyze", "spectrum", w, "--db", dir.path("u.db"), "--activations", x])
        XCTAssertEqual(r.status, 1, r.err)
        XCTAssertTrue(r.out.contains("a.weight"), r.out)
        XCTAssertTrue((r.out + r.err).contains("not measured: h.weight: \(w)"), r.out + r.err)
    }

    /// Data-driven utilized rank equals the numpy reference recorded by corpus/make_corpus.py.
    func testDataDrivenUtilizationMatchesNumpy() throws {
        let m = try loadJSON(Paths.corpus.appendingPathComponent("MANIFEST.json")) as! [String: Any]
        let ref = (m["activations"] as! [String: Any])["layers"] as! [String: [String: Int]]
        let ck = try CheckpointOpener.open(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)
        let acts = try CheckpointOpener.open(Paths.corpus.appendingPathComponent("mlp_seed0_activations.npz").path)
        for (name, r) in ref {
            let t = ck.tensors.first { $0.name == name }!, a = acts.tensors.first { $0.name == name }!
            let u = try DataDrivenUtilization.analyze(name: name, weight: try TensorData.floats(ck, t), out: t.shape[0], inn: t.shape[1],
                                                      inputs: try TensorData.floats(acts, a), inputShape: a.shape, energy: 0.95)
            XCTAssertEqual(u.inputRank, r["input_rank"], name)
            XCTAssertEqual(u.utilizedRank, r["utilized_rank"], name)
            XCTAssertEqual(u.dataFreeRank, r["data_free_rank"], name)
            XCTAssertLessThanOrEqual(u.utilizedRank, u.dataFreeRank)
        }
    }

    /// Conv kernels through the CLI: pooled by default, one record per kh·kw slice with --conv-slices (singular
    /// values against numpy per slice), 11×11 kernels analysed, depthwise kernels skipped with their own reason;
    /// stored spectra are re-used only for the same rand_distance/seed/conv options.
    func testConvSlicesCLIAndOptionAwareReuse() throws {
        let tmp = TempDir()
        let ck = tmp.path("conv.safetensors"), ref = tmp.path("conv_ref.json"), db = tmp.path("c.db")
        _ = try runPython("""
        import torch, numpy as np, json
        from safetensors.torch import save_file
        g = torch.Generator().manual_seed(1)
        t = {"c1.weight": torch.randn(8, 3, 3, 3, generator=g), "big.weight": torch.randn(16, 3, 11, 11, generator=g),
             "dw.weight": torch.randn(8, 1, 3, 3, generator=g), "fc.weight": torch.randn(10, 12, generator=g)}
        save_file(t, \(pyStr(ck)))
        w = t["c1.weight"].double().numpy()
        json.dump({f"c1.weight[{i},{j}]": np.linalg.svd(w[:, :, i, j], compute_uv=False).tolist() for i in range(3) for j in range(3)},
                  open(\(pyStr(ref)), "w"))
        """)
        func run(_ extra: [String]) throws -> [[String: Any]] {
            let r = try runWscan(["analyze", "spectrum", ck, "--db", db, "--json"] + extra)
            XCTAssertEqual(r.status, 0, r.err)
            return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["layers"] as! [[String: Any]]
        }
        func byName(_ l: [[String: Any]]) -> [String: [String: Any]] { Dictionary(uniqueKeysWithValues: l.map { ($0["tensor"] as! String, $0) }) }
        func randDistance(_ l: [String: Any]) -> Double? { ((l["spectrum"] as? [String: Any])?["metrics"] as? [String: Any])?["randDistance"] as? Double }
        let pooled = byName(try run(["--no-randomize"]))
        XCTAssertEqual(Set(pooled.keys), ["c1.weight", "big.weight", "dw.weight", "fc.weight"])
        XCTAssertTrue((pooled["dw.weight"]!["skipReason"] as! String).contains("depthwise"))
        XCTAssertNil(pooled["big.weight"]!["skipReason"])
        XCTAssertEqual(((pooled["c1.weight"]!["spectrum"] as! [String: Any])["singularValues"] as! [Double]).count, 27)
        XCTAssertNil(randDistance(pooled["fc.weight"]!))
        // Same options: re-used. Other options: recomputed (rand_distance appears; another seed gives another value).
        let again = byName(try run([]))
        let r0 = randDistance(again["fc.weight"]!)
        XCTAssertNotNil(r0, "a run with rand_distance must not re-use spectra stored without it")
        let r7 = randDistance(byName(try run(["--seed", "7"]))["fc.weight"]!)
        XCTAssertNotNil(r7); XCTAssertNotEqual(r0, r7)
        XCTAssertEqual(randDistance(byName(try run(["--seed", "7"]))["fc.weight"]!), r7)
        let slices = byName(try run(["--conv-slices"]))
        let refSV = try loadJSON(URL(fileURLWithPath: ref)) as! [String: [Double]]
        XCTAssertEqual(slices.keys.filter { $0.hasPrefix("c1.weight[") }.count, 9)
        XCTAssertEqual(slices.keys.filter { $0.hasPrefix("big.weight[") }.count, 121)
        for (name, sv) in refSV {
            let ours = (slices[name]?["spectrum"] as? [String: Any])?["singularValues"] as? [Double] ?? []
            XCTAssertEqual(ours.count, sv.count, name)
            for (a, b) in zip(ours, sv) { XCTAssertEqual(a, b, accuracy: 1e-9 * max(1, b), name) }
        }
        // The catalog now holds the per-slice records, not the pooled ones, and `show --spectrum` lists them.
        let show = try runWscan(["show", ck, "--spectrum", "--db", db, "--json"])
        XCTAssertEqual(show.status, 0, show.err)
        XCTAssertTrue(show.out.contains("c1.weight[2,2]") && !show.out.contains("\"c1.weight\""), String(show.out.prefix(300)))
    }

    /// Activations: zero inputs use no input dimension; a square non-symmetric array is N samples, not a covariance;
    /// bad shapes and NaN are clear errors naming the layer.
    func testDataDrivenUtilizationEdgeCases() throws {
        let w: [Float] = (0..<12).map { Float($0 % 5) - 2 }          // 3×4
        let zero = try DataDrivenUtilization.analyze(name: "l", weight: w, out: 3, inn: 4, inputs: [Float](repeating: 0, count: 40),
                                                     inputShape: [10, 4], energy: 0.95)
        XCTAssertEqual(zero.inputRank, 0); XCTAssertEqual(zero.utilizedRank, 0)
        // 4 samples of a rank-1 input: as activations the input rank is 1 (as a "covariance" it would not be symmetric).
        let x: [Float] = [1, 2, 3, 4, 2, 4, 6, 8, -1, -2, -3, -4, 3, 6, 9, 12]
        XCTAssertEqual(try DataDrivenUtilization.analyze(name: "l", weight: w, out: 3, inn: 4, inputs: x, inputShape: [4, 4], energy: 0.95).inputRank, 1)
        XCTAssertThrowsError(try DataDrivenUtilization.analyze(name: "l", weight: w, out: 3, inn: 4, inputs: [1, 2, 3], inputShape: [3], energy: 0.9)) {
            XCTAssertEqual("\($0)", "activations for l must be [N, 4] or [4, 4], got [3]")
        }
        XCTAssertThrowsError(try DataDrivenUtilization.analyze(name: "l", weight: w, out: 3, inn: 4, inputs: [1, .nan, 3, 4], inputShape: [1, 4], energy: 0.9)) {
            XCTAssertTrue("\($0)".contains("nan at [0, 1]"), "\($0)")
        }
    }
}

/// Review findings on the spectrum command: catalog references to changed files, low-rank accuracy, re-use keys,
/// randomized layers after an `--energy` change, mixed stored energies, odd shapes and per-layer activation failures.
final class SpectrumCLITests: XCTestCase {
    func json(_ r: (status: Int32, out: String, err: String)) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
    }
    func layers(_ j: [String: Any]) -> [String: [String: Any]] {
        Dictionary(uniqueKeysWithValues: (j["layers"] as! [[String: Any]]).map { ($0["tensor"] as! String, $0) })
    }
    func metrics(_ l: [String: Any]?) -> [String: Any] { ((l?["spectrum"] as? [String: Any])?["metrics"] as? [String: Any]) ?? [:] }

    func testCatalogReferenceToChangedFileIsReindexed() throws {
        let tmp = TempDir()
        let m = tmp.path("m.safetensors"), db = tmp.path("c.db")
        let corpus = Paths.corpus
        try FileManager.default.copyItem(at: corpus.appendingPathComponent("mlp_seed0.safetensors"), to: URL(fileURLWithPath: m))
        let a = try runWscan(["analyze", "spectrum", m, "--db", db, "--json", "--no-randomize"])
        XCTAssertEqual(a.status, 0, a.err)
        try FileManager.default.removeItem(atPath: m)
        try FileManager.default.copyItem(at: corpus.appendingPathComponent("mlp_seed1.safetensors"), to: URL(fileURLWithPath: m))
        let byId = try runWscan(["analyze", "spectrum", "#1", "--db", db, "--json", "--no-randomize"])
        XCTAssertEqual(byId.status, 0, byId.err)
        let fresh = try runWscan(["analyze", "spectrum", corpus.appendingPathComponent("mlp_seed1.safetensors").path, "--db", tmp.path("d.db"), "--json", "--no-randomize"])
        let sr = { (r: (status: Int32, out: String, err: String)) in self.metrics(try! self.layers(self.json(r))["fc3.weight"])["stableRank"] as? Double }
        XCTAssertNotEqual(sr(a), sr(fresh))
        XCTAssertEqual(sr(byId), sr(fresh), "a reference by id must not return the spectra of the file's old contents")
    }

    func testLowRankAccuracyReuseKeysAndOddShapes() throws {
        let tmp = TempDir()
        let ck = tmp.path("odd.safetensors"), ref = tmp.path("ref.json"), db = tmp.path("c.db")
        _ = try runPython("""
        import numpy as np, json
        from safetensors.numpy import save_file
        r = np.random.default_rng(3)
        t = {"lora.weight": (r.standard_normal((256, 16)) @ r.standard_normal((16, 256))).astype(np.float32),
             "big.weight": (r.standard_normal((300, 200)) * 0.01).astype(np.float32),
             "row.weight": r.standard_normal((1, 50)).astype(np.float32),
             "zero.weight": np.zeros((80, 70), np.float32),
             "emptyconv.weight": np.zeros((4, 0, 3, 3), np.float32)}
        save_file(t, \(pyStr(ck)))
        sv = {k: np.linalg.svd(t[k].astype(np.float64), compute_uv=False).tolist() for k in ["lora.weight", "row.weight", "big.weight"]}
        e = np.array(sv["big.weight"]) ** 2
        sv["big_rank_10"] = [float(np.searchsorted(np.cumsum(e), 0.1 * e.sum()) + 1)]
        json.dump(sv, open(\(pyStr(ref)), "w"))
        """)
        let refSV = try loadJSON(URL(fileURLWithPath: ref)) as! [String: [Double]]
        let r = try runWscan(["analyze", "spectrum", ck, "--db", db, "--json", "--no-randomize"])
        XCTAssertEqual(r.status, 0, r.err)
        let l = layers(try json(r))
        // Rank 16: the numerically-zero tail is exact only through dgesdd (the Gram route was 3× off there).
        let lora = (l["lora.weight"]!["spectrum"] as! [String: Any])
        XCTAssertEqual(lora["method"] as? String, "dgesdd")
        let sv = lora["singularValues"] as! [Double], rsv = refSV["lora.weight"]!
        for i in 0..<Int(Double(rsv.count) * 0.99) { XCTAssertEqual(sv[i], rsv[i], accuracy: 1e-4 * rsv[i], "σ[\(i)]") }
        XCTAssertEqual(metrics(l["lora.weight"])["numericalRank"] as? Int, 16)
        let row = (l["row.weight"]!["spectrum"] as! [String: Any])["singularValues"] as! [Double]
        XCTAssertEqual(row.count, 1, "a 1×n matrix has one singular value, its norm")
        XCTAssertEqual(row[0], refSV["row.weight"]![0], accuracy: 1e-12 * row[0])
        XCTAssertEqual(metrics(l["zero.weight"])["effectiveRank"] as? Double, 0)
        XCTAssertTrue((l["emptyconv.weight"]!["skipReason"] as! String).hasPrefix("empty tensor"))
        // A --gram-memory that changes no layer's method re-uses the stored rows; one that randomizes a layer does not.
        func ids() throws -> [Int64] { try DatabaseQueue(path: db).read { try Int64.fetchAll($0, sql: "SELECT id FROM spectra ORDER BY id") } }
        let before = try ids()
        XCTAssertEqual(try runWscan(["analyze", "spectrum", ck, "--db", db, "--no-randomize", "--gram-memory", "8G"]).status, 0)
        XCTAssertEqual(try ids(), before, "re-used")
        // big.weight randomized (its Gram matrix, 16·200² bytes, exceeds 100K): the table says so, and an --energy
        // change on re-use gives what a fresh run gives (ranks against the exact ‖W‖²_F).
        let rz = try runWscan(["analyze", "spectrum", ck, "--db", db, "--no-randomize", "--gram-memory", "100K", "--randomized-rank", "40", "--tensors", "big*"])
        XCTAssertEqual(rz.status, 0, rz.err)
        XCTAssertTrue(rz.out.contains("randomized"), rz.out)
        let reused = try runWscan(["analyze", "spectrum", ck, "--db", db, "--no-randomize", "--gram-memory", "100K", "--randomized-rank", "40",
                                   "--tensors", "big*", "--energy", "0.1", "--json"])
        let forced = try runWscan(["analyze", "spectrum", ck, "--db", db, "--no-randomize", "--gram-memory", "100K", "--randomized-rank", "40",
                                   "--tensors", "big*", "--energy", "0.1", "--json", "--force"])
        XCTAssertEqual(metrics(layers(try json(reused))["big.weight"])["energyRanks"] as? [Int], metrics(layers(try json(forced))["big.weight"])["energyRanks"] as? [Int])
        XCTAssertEqual(metrics(layers(try json(forced))["big.weight"])["energyRanks"] as? [Int], [Int(refSV["big_rank_10"]![0])],
                       "numpy's count of top values holding 10% of ‖W‖²_F")
        // The catalog now holds big.weight at 10% and the rest at 90/95/99%: show puts all on the common set.
        let show = try runWscan(["show", ck, "--db", db, "--spectrum", "--json"])
        let shown = try json(show)
        for (_, rec) in layers(shown) where rec["spectrum"] != nil {
            XCTAssertEqual(rec["energies"] as? [Double], [0.9, 0.95, 0.99])
            XCTAssertEqual((metrics(rec)["energyRanks"] as? [Int])?.count, 3)
        }
    }

    func testActivationFailuresArePerLayer() throws {
        let tmp = TempDir()
        let ck = tmp.path("w.safetensors"), acts = tmp.path("a.npz"), db = tmp.path("c.db")
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import save_file
        r = np.random.default_rng(1)
        a = r.standard_normal((12, 10)).astype(np.float32); a[2, 3] = np.nan
        save_file({"fc1.weight": a, "fc2.weight": r.standard_normal((6, 12)).astype(np.float32),
                   "fc3.weight": r.standard_normal((4, 6)).astype(np.float32)}, \(pyStr(ck)))
        c = np.cov(r.standard_normal((50, 6)).T)
        np.savez(\(pyStr(acts)), **{"fc1": r.standard_normal((40, 10)).astype(np.float32),
                                    "fc2": r.standard_normal((40, 12)).astype(np.float32), "fc3": -c})
        """)
        let r = try runWscan(["analyze", "spectrum", ck, "--db", db, "--activations", acts, "--json", "--no-randomize"])
        XCTAssertEqual(r.status, 1, "layers that could not be measured: exit 1")
        let j = try json(r)
        XCTAssertEqual((j["dataUtilization"] as! [[String: Any]]).map { $0["name"] as! String }, ["fc2.weight"])
        XCTAssertNotNil((j["dataUtilization"] as! [[String: Any]])[0]["utilizedFraction"] as? Double)
        let failed = Dictionary(uniqueKeysWithValues: (j["dataUtilizationFailed"] as! [[String: Any]]).map { ($0["name"] as! String, $0["reason"] as! String) })
        XCTAssertTrue(failed["fc1.weight"]!.hasPrefix(ck) && failed["fc1.weight"]!.contains("nan at [2, 3]"), failed["fc1.weight"]!)
        XCTAssertTrue(failed["fc3.weight"]!.hasPrefix(acts) && failed["fc3.weight"]!.contains("not positive semi-definite"), failed["fc3.weight"]!)
        XCTAssertEqual(layers(j).count, 3, "the data-free spectra are all still reported")
    }
    /// How a run spreads its matrices: large ones (min dimension ≥ 1024) one per core with single-threaded BLAS
    /// when there are at least two and none dominates, a lone large one first with all cores' BLAS.
    func testSchedulePutsComparableLargeMatricesOnSeparateCores() {
        var o = SpectrumOptions()
        let budget = 1 << 40
        // MiniLM-like: nothing large; every matrix in the parallel part, the most work first.
        let mini = [[384, 384], [1536, 384], [30522, 384], [384, 1536]]
        var p = SpectrumRunner.schedule(mini, cores: 2, options: o, budget: budget)
        XCTAssertEqual(p.sequential, [])
        XCTAssertEqual(p.parallel, [2, 1, 3, 0], "largest Gram product first; equal work keeps checkpoint order")
        // A 1.1B-parameter model's layer: five large matrices of comparable work, all in parallel.
        let layer = [[2048, 2048], [256, 2048], [256, 2048], [2048, 2048], [5632, 2048], [5632, 2048], [2048, 5632]]
        p = SpectrumRunner.schedule(layer, cores: 2, options: o, budget: budget)
        XCTAssertEqual(p.sequential, [])
        XCTAssertEqual(Set(p.parallel), Set(0..<7))
        XCTAssertEqual(Array(p.parallel.prefix(3)), [4, 5, 6])
        // A lone large matrix beside small ones runs first, with every core's BLAS.
        p = SpectrumRunner.schedule([[4096, 4096], [384, 384], [512, 128]], cores: 2, options: o, budget: budget)
        XCTAssertEqual(p.sequential, [0]); XCTAssertEqual(p.parallel, [1, 2])
        // Two large ones, one of them more work than everything else together: both one at a time.
        p = SpectrumRunner.schedule([[1024, 1024], [8192, 8192], [64, 64]], cores: 2, options: o, budget: budget)
        XCTAssertEqual(p.sequential, [1, 0]); XCTAssertEqual(p.parallel, [2])
        // A large matrix that is less than a core's share of the work shares the pool with the rest.
        p = SpectrumRunner.schedule([[2048, 2048]] + Array(repeating: [4096, 512], count: 20), cores: 2, options: o, budget: budget)
        XCTAssertEqual(p.sequential, []); XCTAssertEqual(p.parallel.first, 0)
        // Sixteen cores and two large matrices: each would get one core while fourteen wait; both run with all.
        p = SpectrumRunner.schedule([[4096, 4096], [4096, 4096], [384, 384]], cores: 16, options: o, budget: budget)
        XCTAssertEqual(p.sequential, [0, 1]); XCTAssertEqual(p.parallel, [2])
        // A broadcast view claiming 2⁶¹ elements saturates the estimate instead of trapping.
        XCTAssertEqual(SpectrumRunner.estimatedBytes([1 << 30, 1 << 31], options: o), Int.max)
        // One core: a single queue.
        p = SpectrumRunner.schedule(layer, cores: 1, options: o, budget: budget)
        XCTAssertEqual(p.sequential, []); XCTAssertEqual(p.parallel.count, 7)
        // The memory estimate: float32 values, the shuffled copy, the Gram matrix with its solver, the panel, dgesdd's copy.
        let up = SpectrumRunner.estimatedBytes([5632, 2048], options: o)
        XCTAssertEqual(up, 4 * 5632 * 2048 * 2 + 16 * 2048 * 2048 + 8 * 2048 * 256 + 8 * 5632 * 2048)
        // A matrix over a core's share of the memory budget runs alone, with every core's BLAS; the rest in parallel
        // then hold at most the budget.
        p = SpectrumRunner.schedule(layer, cores: 2, options: o, budget: 2 * up - 2)
        XCTAssertEqual(p.sequential, [4, 5, 6]); XCTAssertEqual(p.parallel, [0, 3, 1, 2])
        XCTAssertLessThanOrEqual(2 * p.parallel.map { SpectrumRunner.estimatedBytes(layer[$0], options: o) }.max()!, 2 * up - 2)
        o.randomize = false
        XCTAssertEqual(SpectrumRunner.estimatedBytes([300, 200, 3, 3], options: o), 4 * 300 * 200 * 9 * 2 + 16 * 200 * 200 + 8 * 200 * (131072 / 200) + 8 * 300 * 200)
    }

    /// A broadcast view claiming 2⁶¹ elements (22 KB on disk) is skipped with its reason before any planning; the
    /// other matrices of the file are analysed, and the run exits 1 (some input failed) instead of trapping.
    func testHugeBroadcastViewIsSkippedNotPlanned() throws {
        let tmp = TempDir()
        let pt = tmp.path("views.pt")
        _ = try runPython("""
        import torch
        torch.manual_seed(0)
        torch.save({'x.weight': torch.zeros(1).expand(2**30, 2**31), 'small.weight': torch.randn(64, 80)}, \(pyStr(pt)))
        """)
        let r = try runWscan(["analyze", "spectrum", pt, "--db", tmp.path("c.db"), "--json"])
        XCTAssertEqual(r.status, 1, r.err)
        let l = layers(try json(r))
        XCTAssertTrue((l["x.weight"]?["skipReason"] as? String)?.contains("not expanded") ?? false, "\(String(describing: l["x.weight"]))")
        XCTAssertNotNil(l["small.weight"]?["spectrum"], "the other matrix is analysed")
    }

    /// Large matrices analysed in parallel (k = 1060: the two-stage eigensolver, two at once) give what they give
    /// one at a time (a memory budget of one byte sends every matrix to the sequential part), and agree with numpy.
    func testParallelLargeMatricesMatchSerialAndNumpy() throws {
        let tmp = TempDir()
        let ck = tmp.path("big.safetensors"), ref = tmp.path("ref.json")
        _ = try runPython("""
        import numpy as np, json
        from safetensors.numpy import save_file
        r = np.random.default_rng(11)
        t = {f"l{i}.weight": (r.standard_normal((1100 + 40 * i, 1060)) * (0.02 + 0.01 * i)).astype(np.float32) for i in range(3)}
        t["s.weight"] = r.standard_normal((96, 200)).astype(np.float32)
        save_file(t, \(pyStr(ck)))
        json.dump({k: np.linalg.svd(v.astype(np.float64), compute_uv=False).tolist() for k, v in t.items()}, open(\(pyStr(ref)), "w"))
        """)
        let refSV = try loadJSON(URL(fileURLWithPath: ref)) as! [String: [Double]]
        func run(_ budget: Int?) throws -> [String: MatrixSpectrum] {
            let cat = try Catalog(path: tmp.path("c\(budget ?? 0).db"))
            _ = try Indexer(catalog: cat, options: .init()).run(paths: [ck])
            let row = try cat.resolve(ck)
            var req = SpectrumRunner.Request(); req.threads = 2; req.memoryBudget = budget
            let recs = try SpectrumRunner.run(catalog: cat, checkpoint: row, request: req)
            return Dictionary(uniqueKeysWithValues: recs.compactMap { r in r.spectrum.map { (r.tensor, $0) } })
        }
        XCTAssertEqual(SpectrumRunner.schedule([[1100, 1060], [1140, 1060], [1180, 1060], [96, 200]], cores: 2,
                                               options: SpectrumOptions(), budget: 1 << 40).sequential, [], "the large ones go in parallel")
        let par = try run(nil), ser = try run(1)
        XCTAssertEqual(Set(par.keys), Set(refSV.keys))
        for (name, rsv) in refSV {
            let a = par[name]!, b = ser[name]!
            XCTAssertEqual(a.singularValues.count, rsv.count, name)
            for i in 0..<Int(Double(rsv.count) * 0.99) {
                XCTAssertEqual(a.singularValues[i], rsv[i], accuracy: 1e-4 * rsv[i], "\(name) σ[\(i)]")
                XCTAssertEqual(a.singularValues[i], b.singularValues[i], accuracy: 1e-9 * rsv[i], "\(name) σ[\(i)] parallel vs serial")
            }
            XCTAssertEqual(a.metrics.randDistance!, b.metrics.randDistance!, accuracy: 1e-7, name)   // float32 copy
            XCTAssertEqual(a.metrics.alpha ?? -1, b.metrics.alpha ?? -1, accuracy: 1e-9, name)
        }
    }
}
