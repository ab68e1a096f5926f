import XCTest
@testable import WscanKernels
@testable import WscanAnalysis
import WscanFormats

/// A quantized side compared with a float side: quantized from those weights (by any rounding quantizer), or from
/// weights changed first (a LoRA merged, then quantized), even when the change is far below the type's own error.
final class QuantizedChangeTests: XCTestCase {
    let tmp = TempDir()

    /// The block test itself: the writers' own requantization passes for every type; the same blocks with one code
    /// moved by one step (a rounding no scale gives) fail; so do weights changed by 1% before quantizing.
    func testRoundingTestOnRequantizedBlocks() throws {
        var rng = SplitMix64(seed: 3)
        let x = (0..<(64 * 32)).map { _ in Float(Int64(bitPattern: rng.next() % 2001) - 1000) / 997 }
        for t in ["Q4_0", "Q4_1", "Q5_0", "Q5_1"] {
            let q = try XCTUnwrap(GGMLQuant.legacyRoundTrip(t, x))
            XCTAssertEqual(GGMLQuant.unroundedBlocks(t, quantized: q, source: x)?.unrounded, 0, t)
            // x changed by ~1% of its size before quantizing
            let y = x.enumerated().map { $0.element + 0.01 * Float(($0.offset * 7919) % 13 - 6) / 6 }
            let qy = try XCTUnwrap(GGMLQuant.legacyRoundTrip(t, y))
            let r = try XCTUnwrap(GGMLQuant.unroundedBlocks(t, quantized: qy, source: x))
            XCTAssertEqual(r.checked, 64, t)
            XCTAssertGreaterThan(r.unrounded, 8, t)
        }
        for reciprocal in [false, true] {
            let q = GGMLQuant.q8_0RoundTrip(x, reciprocal: reciprocal)
            XCTAssertEqual(GGMLQuant.unroundedBlocks("Q8_0", quantized: q, source: x)?.unrounded, 0)
        }
        // Q4_0: swap two codes of one block (the values stay on the grid; no scale orders them that way)
        var q = try XCTUnwrap(GGMLQuant.legacyRoundTrip("Q4_0", x))
        let (i, j) = (0..<32).lazy.flatMap { i in (0..<32).lazy.map { (i, $0) } }.first { x[$0.0] < x[$0.1] && q[$0.0] < q[$0.1] }!
        q.swapAt(i, j)
        XCTAssertEqual(GGMLQuant.unroundedBlocks("Q4_0", quantized: q, source: x)?.unrounded, 1)
        XCTAssertNil(GGMLQuant.unroundedBlocks("IQ4_NL", quantized: q, source: x))    // a non-linear grid: not tested
        // an offset far larger than the step (10 + 1e-3·noise): y = k·d + m rounds in float32 by more than 1e-4 step
        let off = x.map { 10 + 1e-3 * $0 }
        for t in ["Q4_1", "Q5_1"] {
            let q1 = try XCTUnwrap(GGMLQuant.legacyRoundTrip(t, off))
            XCTAssertEqual(GGMLQuant.unroundedBlocks(t, quantized: q1, source: off)?.unrounded, 0, t)
        }
    }

    /// The k-quants, quantized by llama.cpp itself (scripts/make_kquant_fixtures.py: ggml_quantize_chunk from the
    /// libggml llama-cpp-python ships): its reference quantizers, its importance-matrix searches and F16-first
    /// quantizing are roundings (every sub-block passes, whatever the error: Q2_K's is 30%); a rank-4 update of 0.3%
    /// of ‖W‖ before Q4_K or Q6_K, or dense noise of 0.5% before Q5_K, all far under each type's own error, is
    /// "changed, then quantized". A file requantized from a Q8_0 copy (Q4_K, and legacy Q5_0) is a re-encoding that
    /// says so. Either argument order reads the same.
    func testKQuantsFromLlamaCpp() throws {
        let dir = Paths.fixtures.appendingPathComponent("kquant")
        let manifest = try XCTUnwrap(loadJSON(dir.appendingPathComponent("MANIFEST.json")) as? [String: [String: Any]])
        XCTAssertEqual(manifest.count, 20)
        let a = dir.appendingPathComponent("a.safetensors").path
        for (file, m) in manifest.sorted(by: { $0.key < $1.key }) {
            let type = try XCTUnwrap(m["type"] as? String), expect = try XCTUnwrap(m["expect"] as? String)
            let b = dir.appendingPathComponent(file).path
            for (x, y) in file.hasSuffix("imatrix.gguf") ? [(a, b), (b, a)] : [(a, b)] {
                let r = try runWscan(["compare", x, y, "--db", tmp.path("k.db"), "--json"])
                XCTAssertEqual(r.status, 0, r.err)
                let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
                let v = try XCTUnwrap(json["verdict"] as? [String: Any]), tensors = try XCTUnwrap(json["tensors"] as? [[String: Any]])
                XCTAssertEqual(tensors.count, 2, file)
                let bad = tensors.map { $0["unroundedBlocks"] as? Int ?? -1 }, tested = tensors.map { $0["roundingBlocks"] as? Int ?? 0 }
                // 16-element sub-blocks for Q2_K, Q3_K and Q6_K, 32 for Q4_K and Q5_K
                let sub = ["Q2_K", "Q3_K", "Q6_K"].contains(type) ? 16 : 32
                XCTAssertEqual(tested.reduce(0, +), (32 * 512 + 16 * 256) / sub, file)
                let viaQ8 = tensors.map { $0["requantizedBlocks"] as? Int ?? 0 }
                if expect.hasPrefix("rounding") {
                    XCTAssertEqual(v["kind"] as? String, "reencoded", "\(file): \(v)")
                    XCTAssertEqual(bad, [0, 0], file)
                    let requantized = (v["evidence"] as? [String] ?? []).contains { $0.contains("(Q8_0) rather than") }
                    if expect == "rounding via Q8_0" {
                        XCTAssertGreaterThan(viaQ8.reduce(0, +), 0, "\(file): \(viaQ8)")
                        XCTAssertTrue(requantized, "\(file): \(v)")
                    } else {
                        XCTAssertEqual(viaQ8, [0, 0], file)
                        XCTAssertFalse(requantized, "\(file): \(v)")
                    }
                    let arrow = x == a ? "F32→\(type)" : "\(type)→F32"
                    XCTAssertTrue((v["summary"] as? String ?? "").contains(arrow), "\(file): \(v)")
                } else {
                    XCTAssertEqual(v["kind"] as? String, "finetuned", "\(file): \(v)")
                    XCTAssertTrue((v["summary"] as? String ?? "").hasPrefix("changed, then quantized (F32→\(type))"), "\(file): \(v)")
                    XCTAssertGreaterThanOrEqual(bad.reduce(0, +), 4, file)
                }
            }
        }
        // Two codes of a real Q6_K sub-block swapped (the values stay on the sub-block's grid), the pair two or more
        // steps apart and in the opposite order to their weights: no scale codes them so. That sub-block fails and no
        // other does.
        let ck = try CheckpointOpener.open(dir.appendingPathComponent("Q6_K.gguf").path)
        let ref = try CheckpointOpener.open(a)
        let t = try XCTUnwrap(ck.tensors.first { $0.name == "blk.0.ffn_up.weight" })
        var q = try TensorData.floats(ck, t)
        let x = try TensorData.floats(ref, try XCTUnwrap(ref.tensors.first { $0.name == t.name }))
        XCTAssertEqual(GGMLQuant.unroundedBlocks("Q6_K", quantized: q, source: x)?.unrounded, 0)
        let base = 5 * 16, values = Set(q[base..<(base + 16)]).sorted()
        let step = zip(values.dropFirst(), values).map { $0 - $1 }.min()!      // a multiple of the grid's step
        var pair: (Int, Int)? = nil
        for i in base..<(base + 16) {
            for j in base..<(base + 16) where pair == nil && x[i] < x[j] && q[j] - q[i] >= 2 * step { pair = (i, j) }
        }
        let (i, j) = try XCTUnwrap(pair)
        q.swapAt(i, j)
        XCTAssertEqual(GGMLQuant.unroundedBlocks("Q6_K", quantized: q, source: x)?.unrounded, 1)
        XCTAssertEqual(GGMLQuant.unroundedBlocks("Q6_K", quantized: q, source: x)?.checked, 1024)
    }

    /// A rounding may take any scale and offset, so weights scaled (whole tensors, or row by row), zeroed row by row or
    /// shifted before quantizing pass every block; only their error, beyond twice the type's bound, shows it (found by
    /// review: 1.5·W as Q8_0 read as "same weights re-encoded" at 50% error). The plain copy stays a re-encoding.
    func testScaledOrShiftedWeightsAreNotRoundings() throws {
        let d = tmp.path("s")
        _ = try runPython("""
        import numpy as np, gguf, os
        from safetensors.numpy import load_file
        d = \(pyStr(d)); os.makedirs(d, exist_ok=True)
        A = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        T = gguf.GGMLQuantizationType
        rng = np.random.default_rng(0)
        def write(name, qt, f):
            w = gguf.GGUFWriter(f"{d}/{name}", "mlp")
            for k, v in A.items():
                if v.ndim == 2 and v.shape[-1] % 32 == 0: w.add_tensor(k, gguf.quants.quantize(f(v).astype(np.float32), qt), raw_dtype=qt)
                else: w.add_tensor(k, v)
            w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        write("plain.gguf", T.Q8_0, lambda v: v)
        write("scaled.gguf", T.Q8_0, lambda v: v * 1.5)
        write("rows.gguf", T.Q8_0, lambda v: v * rng.uniform(0.5, 2.0, size=(v.shape[0], 1)))
        write("q4_scaled.gguf", T.Q4_0, lambda v: v * 1.5)
        write("q4_1_shift.gguf", T.Q4_1, lambda v: v + 0.05)
        write("zero_rows.gguf", T.Q8_0, lambda v: v * (np.arange(v.shape[0])[:, None] % 2))
        write("two_zero_rows.gguf", T.Q4_0, lambda v: v * (np.arange(v.shape[0])[:, None] >= 2))
        """)
        let a = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        for (f, reencoded) in [("plain.gguf", true), ("scaled.gguf", false), ("rows.gguf", false), ("q4_scaled.gguf", false), ("q4_1_shift.gguf", false), ("zero_rows.gguf", false)] {
            let r = try runWscan(["compare", a, d + "/" + f, "--db", tmp.path("s.db"), "--json"])
            XCTAssertEqual(r.status, 0, r.err)
            let j = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
            let v = try XCTUnwrap(j["verdict"] as? [String: Any]), tensors = try XCTUnwrap(j["tensors"] as? [[String: Any]])
            XCTAssertEqual(v["kind"] as? String == "reencoded", reencoded, "\(f): \(v)")
            // (the plain copy is gguf-py's exact requantization: proven without the block test)
            guard !reencoded else { continue }
            if f.hasSuffix("zero_rows.gguf") {
                // under Q4_0's error, but an all-zero block where A's weights give a non-zero float16 scale is no
                // rounding: two rows of every tensor, their blocks (64 inputs: 2 per row) fail
                let bad = tensors.compactMap { $0["unroundedBlocks"] as? Int }
                XCTAssertTrue(bad.allSatisfy { $0 >= 2 }, "\(bad)")
                if f == "two_zero_rows.gguf" { XCTAssertEqual(v["kind"] as? String, "lora_merged", "\(v)") }
                continue
            }
            let quantized = tensors.filter { $0["roundingBlocks"] != nil }
            XCTAssertEqual(quantized.count, 3, f)
            // every block passes the rounding test; only the error, above twice the bound, tells
            XCTAssertTrue(quantized.allSatisfy { $0["unroundedBlocks"] as? Int == 0 }, f)
            XCTAssertTrue(quantized.contains { ($0["relativeL2"] as? Double ?? 0) > 0.2 }, f)
        }
    }

    /// GGUF files written by gguf-py: A quantized by gguf-py and by an importance-style search that stores the
    /// least-squares scale (as llama.cpp's make_qx_quants does) are re-encodings; A with a rank-4 update of 0.5% of
    /// ‖W‖ merged before Q4_0 (hidden under Q4_0's ~9% error) is a changed copy; a 5% update before Q5_1 is a
    /// merged LoRA of rank 4.
    func testQuantizedFromChangedWeights() throws {
        let d = tmp.path("q")
        _ = try runPython("""
        import numpy as np, gguf, os
        from safetensors.numpy import save_file
        d = \(pyStr(d)); os.makedirs(d, exist_ok=True)
        Q, T = gguf.quants, gguf.GGMLQuantizationType
        rng = np.random.default_rng(7)
        names = [f"layers.{i}.weight" for i in range(3)]
        A = {n: (rng.standard_t(4, (96, 256)) * 0.02).astype(np.float32) for n in names}
        save_file(A, f"{d}/a.safetensors")
        def lora(w, rank, size):
            l = rng.standard_normal((w.shape[0], rank)) @ rng.standard_normal((rank, w.shape[1]))
            return (w + l * (size * np.linalg.norm(w) / np.linalg.norm(l))).astype(np.float32)
        def q4_0_search(x):
            out = bytearray()
            for b in x.reshape(-1, 32):
                mx = b[np.argmax(np.abs(b))]; best = None
                for f in np.linspace(0.85, 1.15, 13):
                    if mx == 0: break
                    l = np.clip(np.rint(-8 * f / mx * b), -8, 7)
                    s = (l * b).sum() / (l * l).sum()
                    e = ((s * l - b) ** 2).sum()
                    if best is None or e < best[0]: best = (e, s, l)
                s, l = (0.0, np.zeros(32)) if best is None else best[1:]
                q = (l + 8).astype(np.uint8)
                out += np.float16(s).tobytes() + bytes((q[:16] | (q[16:] << 4)).astype(np.uint8))
            return np.frombuffer(bytes(out), dtype=np.uint8).reshape(x.shape[0], -1)
        def write(path, qt, f):
            w = gguf.GGUFWriter(path, "llama")
            for n in names: w.add_tensor(n, f(A[n]), raw_dtype=qt)
            w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        write(f"{d}/q4.gguf", T.Q4_0, lambda a: Q.quantize(a, T.Q4_0))
        write(f"{d}/q4_f16.gguf", T.Q4_0, lambda a: Q.quantize(a.astype(np.float16).astype(np.float32), T.Q4_0))
        write(f"{d}/q4_search.gguf", T.Q4_0, q4_0_search)
        write(f"{d}/q4_lora_small.gguf", T.Q4_0, lambda a: Q.quantize(lora(a, 4, 0.005), T.Q4_0))
        write(f"{d}/q51_lora.gguf", T.Q5_1, lambda a: Q.quantize(lora(a, 4, 0.05), T.Q5_1))
        """)
        func verdict(_ f: String) throws -> [String: Any] {
            let r = try runWscan(["compare", d + "/a.safetensors", d + "/" + f, "--db", tmp.path("c.db"), "--json"])
            XCTAssertEqual(r.status, 0, r.err)
            return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]
        }
        for f in ["q4.gguf", "q4_f16.gguf", "q4_search.gguf"] {
            let v = try verdict(f)
            XCTAssertEqual(v["kind"] as? String, "reencoded", "\(f): \(v)")
        }
        let small = try verdict("q4_lora_small.gguf")
        XCTAssertEqual(small["kind"] as? String, "finetuned", "\(small)")
        XCTAssertTrue((small["summary"] as? String ?? "").hasPrefix("changed, then quantized (F32→Q4_0)"), "\(small)")
        let details = try XCTUnwrap(small["details"] as? [String: String])
        XCTAssertGreaterThan(Double(details["unrounded_blocks"] ?? "") ?? 0, 0.01 * (Double(details["tested_blocks"] ?? "") ?? .infinity))
        let big = try verdict("q51_lora.gguf")
        XCTAssertEqual(big["kind"] as? String, "lora_merged", "\(big)")
        XCTAssertEqual((big["details"] as? [String: String])?["rank"], "4", "\(big)")
        XCTAssertTrue((big["summary"] as? String ?? "").contains("Q5_1"), "\(big)")
    }

    /// A permuted copy quantized to Q4_0: after alignment A is moved into B's basis, so B keeps its blocks and the
    /// rounding test proves the re-encoding (it read as "fine-tuned, with hidden units permuted": B moved into A's
    /// basis scrambled the blocks, and the error size, just over Q4's bound, decided).
    func testPermutedQuantizedCopy() throws {
        let d = tmp.path("p")
        _ = try runPython("""
        import numpy as np, gguf, os
        from safetensors.numpy import save_file
        d = \(pyStr(d)); os.makedirs(d, exist_ok=True)
        rng = np.random.default_rng(12); T = gguf.GGMLQuantizationType
        a = {"0.weight": (rng.standard_t(4, (128, 64)) * 0.05).astype(np.float32), "0.bias": (rng.standard_normal(128) * 0.05).astype(np.float32),
             "2.weight": (rng.standard_t(4, (64, 128)) * 0.05).astype(np.float32), "2.bias": (rng.standard_normal(64) * 0.05).astype(np.float32),
             "4.weight": (rng.standard_t(4, (10, 64)) * 0.05).astype(np.float32), "4.bias": (rng.standard_normal(10) * 0.05).astype(np.float32)}
        save_file(a, f"{d}/a.safetensors")
        p1, p2 = rng.permutation(128), rng.permutation(64)
        b = {"0.weight": a["0.weight"][p1], "0.bias": a["0.bias"][p1], "2.weight": a["2.weight"][p2][:, p1], "2.bias": a["2.bias"][p2],
             "4.weight": a["4.weight"][:, p2], "4.bias": a["4.bias"]}
        w = gguf.GGUFWriter(f"{d}/b.gguf", "mlp")
        for k, v in b.items():
            v = np.ascontiguousarray(v)
            if v.ndim == 2: w.add_tensor(k, gguf.quants.quantize(v, T.Q4_0), raw_dtype=T.Q4_0)
            else: w.add_tensor(k, v)
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        """)
        let r = try runWscan(["compare", d + "/a.safetensors", d + "/b.gguf", "--db", tmp.path("p.db"), "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        let v = (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]
        XCTAssertEqual(v["kind"] as? String, "permuted", "\(v)")
        XCTAssertTrue((v["summary"] as? String ?? "").contains("re-encoded as Q4_0"), "\(v)")
    }

    /// The rank of a LoRA merged and then stored as BF16/F16 is counted above the rounding noise's edge: all of its
    /// directions, not fewer (a rank-16 update of 0.5% of ‖W‖ stored as BF16 read as rank 8).
    func testLoRARankAboveRoundingNoise() throws {
        let d = tmp.path("n")
        _ = try runPython("""
        import numpy as np, torch, os
        from safetensors.torch import save_file
        d = \(pyStr(d)); os.makedirs(d, exist_ok=True)
        g = torch.Generator().manual_seed(11)
        A = {f"l{i}.weight": torch.randn(128, 256, generator=g) * 0.03 for i in range(2)}
        save_file(A, f"{d}/a.safetensors")
        for rank, size, dt, tag in [(16, 0.005, torch.bfloat16, "r16_bf16"), (4, 0.005, torch.bfloat16, "r4_bf16"), (16, 0.002, torch.float16, "r16_f16")]:
            B = dict(A)
            l = torch.randn(128, rank, generator=g) @ torch.randn(rank, 256, generator=g)
            B["l0.weight"] = A["l0.weight"] + l * (size * A["l0.weight"].norm() / l.norm())
            save_file({k: v.to(dt).contiguous() for k, v in B.items()}, f"{d}/{tag}.safetensors")
        """)
        for (f, rank) in [("r16_bf16", "16"), ("r4_bf16", "4"), ("r16_f16", "16")] {
            let r = try runWscan(["compare", d + "/a.safetensors", d + "/\(f).safetensors", "--db", tmp.path("n.db"), "--json"])
            XCTAssertEqual(r.status, 0, r.err)
            let v = (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]
            XCTAssertEqual(v["kind"] as? String, "lora_merged", "\(f): \(v)")
            XCTAssertEqual((v["details"] as? [String: String])?["rank"], rank, "\(f): \(v)")
            // the arguments swapped (the narrow update first): B's rounding to A's type measures the noise
            let s = try runWscan(["compare", d + "/\(f).safetensors", d + "/a.safetensors", "--db", tmp.path("n.db"), "--json"])
            let w = (try JSONSerialization.jsonObject(with: Data(s.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]
            XCTAssertEqual(w["kind"] as? String, "lora_merged", "\(f) first: \(w)")
            XCTAssertEqual((w["details"] as? [String: String])?["rank"], rank, "\(f) first: \(w)")
        }
    }
}
