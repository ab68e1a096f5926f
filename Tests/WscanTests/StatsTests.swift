import XCTest
@testable import WscanFormats
@testable import WscanKernels
@testable import WscanAnalysis

/// wscan's statistics against numpy's (float64 reference computed by scripts/make_reference_fixtures.py).
/// Tolerance: mean within 1e-6·(|mean|+std), std and L2 within 1e-6 relative (float accumulation of
/// 4096-element blocks into double), min/max/zero/NaN/Inf counts exact.
final class StatsReferenceTests: XCTestCase {
    func compare(file: String, base: URL, reference: [String: Any], line: UInt = #line) throws {
        let ck = try CheckpointOpener.open(base.appendingPathComponent(file).path)
        let sums = Summarizer.summarizeAll(ck)
        XCTAssertEqual(Set(ck.tensors.map(\.name)), Set(reference.keys), file)
        for (t, s) in zip(ck.tensors, sums) {
            guard let ref = reference[t.name] as? [String: Any] else { XCTFail("\(file): no reference for \(t.name)"); continue }
            guard let st = s.stats else { XCTFail("\(file):\(t.name): no statistics (\(s.note ?? ""))"); continue }
            let ctx = "\(file):\(t.name)"
            if t.dtype != .c64 { XCTAssertEqual(st.count, ref["count"] as? Int, ctx) }
            XCTAssertEqual(st.zeros, ref["zeros"] as? Int, ctx)
            XCTAssertEqual(st.nans, ref["nans"] as? Int, ctx)
            XCTAssertEqual(st.infs, ref["infs"] as? Int, ctx)
            guard let rmean = ref["mean"] as? Double, let rstd = ref["std"] as? Double else {
                XCTAssertEqual(st.finiteCount, 0, ctx); continue
            }
            let scale = abs(rmean) + rstd + 1e-30
            XCTAssertEqual(st.mean, rmean, accuracy: 1e-6 * scale, ctx)
            XCTAssertEqual(st.std, rstd, accuracy: 1e-6 * max(rstd, 1e-30) + 1e-9 * scale, ctx)
            // min/max are exact for types Float represents exactly (1e-12 absorbs JSON decimal round-tripping);
            // wider types (F64, I32/U32, I64/U64) are decoded to Float, so their extremes carry float32 rounding.
            let wide: Set<DType> = [.f64, .c128, .i32, .u32, .i64, .u64]
            let rtol = wide.contains(t.dtype) ? 6e-8 : 1e-12
            XCTAssertEqual(Double(st.min), ref["min"] as! Double, accuracy: rtol * abs(ref["min"] as! Double), ctx)
            XCTAssertEqual(Double(st.max), ref["max"] as! Double, accuracy: rtol * abs(ref["max"] as! Double), ctx)
            let rl2 = ref["l2"] as! Double
            XCTAssertEqual(st.l2Norm, rl2, accuracy: 1e-6 * rl2 + 1e-30, ctx)
        }
    }

    func testFormatsFixtureMatchesNumpy() throws {
        let ref = try loadJSON(Paths.fixtures.appendingPathComponent("stats_formats.json")) as! [String: [String: Any]]
        XCTAssertGreaterThan(ref.count, 10)
        for (file, r) in ref.sorted(by: { $0.key < $1.key }) {
            try compare(file: file, base: Paths.fixtures.appendingPathComponent("formats"), reference: r)
        }
    }

    func testCorpusMatchesNumpy() throws {
        let ref = try loadJSON(Paths.fixtures.appendingPathComponent("stats_corpus.json")) as! [String: [String: Any]]
        XCTAssertGreaterThanOrEqual(ref.count, 13)
        for (file, r) in ref.sorted(by: { $0.key < $1.key }) { try compare(file: file, base: Paths.corpus, reference: r) }
    }

    func testMiniLMMatchesNumpy() throws {
        guard FileManager.default.fileExists(atPath: Paths.minilm.path) else {
            throw XCTSkip("MiniLM not fetched (run `make minilm`): .cache/minilm/model.safetensors missing")
        }
        let ref = try loadJSON(Paths.fixtures.appendingPathComponent("stats_minilm.json")) as! [String: [String: Any]]
        try compare(file: "model.safetensors", base: Paths.minilm.deletingLastPathComponent(), reference: ref["model.safetensors"] as! [String: Any])
    }

    func testFortranOrderGatheredToRowMajor() throws {
        let ck = try CheckpointOpener.open(Paths.fixtures.appendingPathComponent("formats/fortran_f64.npy").path)
        let t = ck.tensors[0]
        XCTAssertEqual(t.layout, .fortran)
        let v = try TensorData.floats(ck, t)
        // Element [i,j,k] of a Fortran array sits at i + 13*j + 91*k in storage.
        var stored: [Float] = []
        try TensorData.forEachChunk(ck, t) { stored.append(contentsOf: $0) }
        for (i, j, k) in [(0, 0, 0), (12, 6, 2), (3, 4, 1), (7, 0, 2)] {
            XCTAssertEqual(v[i * 21 + j * 3 + k], stored[i + 13 * j + 91 * k])
        }
    }

    func testStatsKernelMatchesScalarOnEdgeCases() {
        // Lengths around the SIMD width and block size, with NaN/Inf in various blocks.
        for n in [0, 1, 15, 16, 17, 4095, 4096, 4097, 10_000] {
            var a = (0..<n).map { Float(sin(Double($0)) * 3) }
            if n > 20 { a[3] = .nan; a[n - 1] = .infinity; a[n / 2] = 0 }
            var fast = TensorStats()
            StatsKernel.accumulate(a, n, into: &fast)
            var slow = TensorStats()
            StatsKernel.scalar(a, n, &slow)
            XCTAssertEqual(fast.count, slow.count)
            XCTAssertEqual(fast.nans, slow.nans)
            XCTAssertEqual(fast.infs, slow.infs)
            XCTAssertEqual(fast.zeros, slow.zeros)
            XCTAssertEqual(fast.min, slow.min)
            XCTAssertEqual(fast.max, slow.max)
            XCTAssertEqual(fast.sum, slow.sum, accuracy: 1e-3)
        }
    }

    func testLargeSumDoesNotSaturate() {
        // A single Float accumulator stops growing at 2^24; blocks flushed into Double must not.
        let n = 1 << 25
        let a = [Float](repeating: 1, count: n)
        var s = TensorStats()
        StatsKernel.accumulate(a, n, into: &s)
        XCTAssertEqual(s.sum, Double(n))
        XCTAssertEqual(s.mean, 1)
        XCTAssertEqual(s.std, 0, accuracy: 1e-12)
    }

    func testMiniFloatTablesMatchKnownValues() {
        let e4 = MiniFloat.e4m3fn
        XCTAssertEqual(e4.value(0x7E), 448)          // max normal
        XCTAssertTrue(e4.value(0x7F).isNaN)
        XCTAssertEqual(e4.value(0x01), 1.0 / 512)    // min subnormal 2^-9
        let e5 = MiniFloat.e5m2
        XCTAssertEqual(e5.value(0x7B), 57344)
        XCTAssertEqual(e5.value(0x7C), .infinity)
        XCTAssertTrue(MiniFloat.e4m3fnuz.value(0x80).isNaN)
        XCTAssertEqual(MiniFloat.e2m1.value(0x7), 6)
        XCTAssertEqual(MiniFloat.e8m0.value(127), 1)
    }

    func testContentHashStableAndDistinguishing() throws {
        let a = try CheckpointOpener.open(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)
        let b = try CheckpointOpener.open(Paths.corpus.appendingPathComponent("mlp_seed0_copy.npz").path)
        let ha = Dictionary(uniqueKeysWithValues: zip(a.tensors.map(\.name), Summarizer.summarizeAll(a).map(\.hash)))
        let hb = Dictionary(uniqueKeysWithValues: zip(b.tensors.map(\.name), Summarizer.summarizeAll(b).map(\.hash)))
        XCTAssertEqual(ha, hb, "same float32 bytes in .safetensors and .npz must hash equally")
        let c = try CheckpointOpener.open(Paths.corpus.appendingPathComponent("mlp_seed0_finetuned.safetensors").path)
        let hc = Summarizer.summarizeAll(c).map(\.hash)
        XCTAssertNotEqual(ha["fc1.weight"], Dictionary(uniqueKeysWithValues: zip(c.tensors.map(\.name), hc))["fc1.weight"])
    }

    /// The AVX-512 BF16 kernel (chosen at run time) and the portable Swift kernel agree, NaN/Inf blocks included.
    func testBF16KernelsAgree() throws {
        var rng = SplitMix64(seed: 9)
        for n in [5, 16, 2047, 2048, 2049, 70_000] {
            var raw = (0..<n).map { _ in UInt16(truncatingIfNeeded: (Float(Int64(bitPattern: rng.next() % 2000) - 1000) / 300).bitPattern >> 16) }
            if n > 100 { raw[7] = 0x7FC0; raw[n - 3] = 0x7F80; raw[n / 2] = 0 }   // NaN, +Inf, zero
            var a = TensorStats(), b = TensorStats(), c = TensorStats()
            raw.withUnsafeBytes { p in
                StatsKernel.accumulateBF16Portable(p.baseAddress!, n, into: &a)
                if StatsKernel.hasAVX512 { StatsKernel.accumulateBF16AVX512(p.baseAddress!, n, into: &b) } else { b = a }
            }
            let f = raw.map { Float(bitPattern: UInt32($0) << 16) }
            StatsKernel.scalar(f, n, &c)
            for s in [a, b] {
                XCTAssertEqual(s.count, c.count); XCTAssertEqual(s.nans, c.nans); XCTAssertEqual(s.infs, c.infs)
                XCTAssertEqual(s.zeros, c.zeros); XCTAssertEqual(s.min, c.min); XCTAssertEqual(s.max, c.max)
                XCTAssertEqual(s.mean, c.mean, accuracy: 1e-6 * (abs(c.mean) + c.std))
                XCTAssertEqual(s.std, c.std, accuracy: 1e-6 * c.std)
            }
        }
    }
}
