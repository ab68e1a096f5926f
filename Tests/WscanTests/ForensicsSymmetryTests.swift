import XCTest

/// Verdicts a review found wrong: a sign-flipped tanh copy called independent, the independence test's two
/// matchings tied together on unrelated weights, permuted copies under other names mispaired, one NaN turning a
/// copy into a "retrained" model.
final class ForensicsSymmetryTests: XCTestCase {
    let tmp = TempDir()

    func verdict(_ a: String, _ b: String) throws -> [String: Any] {
        let r = try runWscan(["compare", tmp.path(a), tmp.path(b), "--db", tmp.path("c.db"), "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]
    }

    /// tanh is odd: negating a hidden unit's incoming row, bias and outgoing column keeps the function. The
    /// matchings pair units by |cosine| and undo the signs, so the copy is derived, and the evidence says why.
    func testSignFlippedTanhCopyIsDerived() throws {
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import save_file
        rng = np.random.default_rng(0); W = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)
        a = {"0.weight": W(256, 64), "0.bias": W(256), "2.weight": W(256, 256), "2.bias": W(256), "4.weight": W(10, 256), "4.bias": W(10)}
        s1 = np.where(rng.random(256) < .5, -1, 1).astype(np.float32); s2 = np.where(rng.random(256) < .5, -1, 1).astype(np.float32)
        b = {"0.weight": a["0.weight"] * s1[:, None], "0.bias": a["0.bias"] * s1, "2.weight": a["2.weight"] * s2[:, None] * s1[None, :],
             "2.bias": a["2.bias"] * s2, "4.weight": a["4.weight"] * s2[None, :], "4.bias": a["4.bias"]}
        save_file(a, \(pyStr(tmp.path("a.safetensors")))); save_file({k: np.ascontiguousarray(v) for k, v in b.items()}, \(pyStr(tmp.path("b.safetensors"))))
        """)
        let v = try verdict("a.safetensors", "b.safetensors")
        XCTAssertEqual(v["kind"] as? String, "finetuned", "\(v)")
        XCTAssertTrue((v["evidence"] as? [String] ?? []).contains { $0.contains("negated") }, "\(v)")
        // no unit moved: the summary counts the negated units and claims no permutation (the sign-blind alignment
        // shuffles units it cannot match)
        let summary = v["summary"] as? String ?? ""
        XCTAssertTrue(summary.contains("with their weights negated") && !summary.contains("permuted"), summary)
    }

    /// Two independently drawn Gaussian MLPs: the incoming chain reads only the layers up to a group and the
    /// outgoing chain only those after it, so the matchings agree by chance alone (ρ was 0.33–0.49, p 2e-7).
    func testIndependenceTestOnUnrelatedWeights() throws {
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import save_file
        for s in [1, 2]:
            rng = np.random.default_rng(s); W = lambda *sh: (rng.standard_normal(sh) * 0.1).astype(np.float32)
            save_file({"0.weight": W(256, 64), "0.bias": W(256), "2.weight": W(256, 256), "2.bias": W(256), "4.weight": W(10, 256), "4.bias": W(10)},
                      \(pyStr(tmp.path("r"))) + f"{s}.safetensors")
        """)
        let r = try runWscan(["compare", tmp.path("r1.safetensors"), tmp.path("r2.safetensors"), "--db", tmp.path("c.db"), "--json", "--no-align"])
        XCTAssertEqual(r.status, 0, r.err)
        let j = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual((j["verdict"] as? [String: Any])?["kind"] as? String, "independent")
        let ind = try XCTUnwrap((j["verdict"] as? [String: Any])?["details"] as? [String: String])
        XCTAssertGreaterThan(Double(ind["p_value"] ?? "") ?? 0, 1e-4, "\(ind)")
    }

    /// A Llama-style model whose feed-forward units were permuted, saved under llama.cpp names: the permuted gate
    /// and up projections look unrelated element by element, so they keep their order (value pairing took gate for
    /// up), and the copy reads as permuted.
    func testRenamedPermutedCopyKeepsItsPairs() throws {
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import save_file
        rng = np.random.default_rng(0); W = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)
        D, F = 64, 256
        l = {"model.embed_tokens.weight": W(100, D), "model.norm.weight": np.ones(D, np.float32), "lm_head.weight": W(100, D)}
        for i in range(2):
            p = f"model.layers.{i}."
            for n in "qkvo": l[p + f"self_attn.{n}_proj.weight"] = W(D, D)
            l[p + "mlp.gate_proj.weight"] = W(F, D); l[p + "mlp.up_proj.weight"] = W(F, D); l[p + "mlp.down_proj.weight"] = W(D, F)
            l[p + "input_layernorm.weight"] = np.ones(D, np.float32); l[p + "post_attention_layernorm.weight"] = np.ones(D, np.float32)
        g = {"token_embd.weight": l["model.embed_tokens.weight"], "output_norm.weight": l["model.norm.weight"], "output.weight": l["lm_head.weight"]}
        for i in range(2):
            p = f"model.layers.{i}."; q = f"blk.{i}."; pm = rng.permutation(F)
            for n, m in zip("qkvo", ["attn_q", "attn_k", "attn_v", "attn_output"]): g[q + m + ".weight"] = l[p + f"self_attn.{n}_proj.weight"]
            g[q + "ffn_gate.weight"] = l[p + "mlp.gate_proj.weight"][pm]; g[q + "ffn_up.weight"] = l[p + "mlp.up_proj.weight"][pm]
            g[q + "ffn_down.weight"] = np.ascontiguousarray(l[p + "mlp.down_proj.weight"][:, pm])
            g[q + "attn_norm.weight"] = l[p + "input_layernorm.weight"]; g[q + "ffn_norm.weight"] = l[p + "post_attention_layernorm.weight"]
        save_file(l, \(pyStr(tmp.path("la.safetensors")))); save_file(g, \(pyStr(tmp.path("lb.safetensors"))))
        """)
        let v = try verdict("la.safetensors", "lb.safetensors")
        XCTAssertEqual(v["kind"] as? String, "permuted", "\(v)")
    }

    /// A checkpoint exported with its matrices transposed ([in, out], as GPT-2's Conv1D stores them) is the same
    /// model (it was "independent": the non-square matrices went unpaired); a square one alone too (it was a
    /// "retrained layer").
    func testTransposedExportsAreTheSameModel() throws {
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import load_file, save_file
        rng = np.random.default_rng(4); W = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)
        a = {"0.weight": W(128, 64), "0.bias": W(128), "2.weight": W(128, 128), "2.bias": W(128), "4.weight": W(10, 128), "4.bias": W(10)}
        save_file(a, \(pyStr(tmp.path("ta.safetensors"))))
        save_file({k: np.ascontiguousarray(v.T) if v.ndim == 2 else v for k, v in a.items()}, \(pyStr(tmp.path("tall.safetensors"))))
        save_file({k: np.ascontiguousarray(v.T) if k == "2.weight" else v for k, v in a.items()}, \(pyStr(tmp.path("tsq.safetensors"))))
        """)
        for f in ["tall.safetensors", "tsq.safetensors"] {
            let v = try verdict("ta.safetensors", f)
            XCTAssertEqual(v["kind"] as? String, "identical", "\(f): \(v)")
            XCTAssertTrue((v["evidence"] as? [String] ?? []).contains { $0.contains("stored transposed") }, "\(v)")
        }
    }

    /// A LoRA merged with its bias trained too, or beside an added tensor, is still a merged LoRA (it was "finetuned:
    /// replaced or retrained layers").
    func testLoRAWithBiasOrExtraTensor() throws {
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import load_file, save_file
        a = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        save_file(a, \(pyStr(tmp.path("a.safetensors"))))
        rng = np.random.default_rng(2)
        b = dict(a); b["fc1.weight"] = (a["fc1.weight"] + 0.05 * rng.standard_normal((64, 2)) @ rng.standard_normal((2, 64))).astype(np.float32)
        c = dict(b); c["fc1.bias"] = (a["fc1.bias"] + 0.01).astype(np.float32)
        save_file(c, \(pyStr(tmp.path("bias.safetensors"))))
        d = dict(b); d["head.extra"] = np.ones(7, np.float32)
        save_file(d, \(pyStr(tmp.path("extra.safetensors"))))
        """)
        for (f, note) in [("bias.safetensors", "1 bias or norm vector changed too"), ("extra.safetensors", "1 tensor exists on one side only")] {
            let v = try verdict("a.safetensors", f)
            XCTAssertEqual(v["kind"] as? String, "lora_merged", "\(f): \(v)")
            XCTAssertEqual((v["details"] as? [String: String])?["rank"], "2", "\(f): \(v)")
            XCTAssertTrue((v["summary"] as? String ?? "").hasSuffix(note), "\(f): \(v)")
        }
    }

    /// Review cases of false accusations: an additive mask's −inf exported as finfo.min is a re-encoding, not a
    /// corruption; a full-rank fine-tune saved as BF16 is no merged LoRA; a permuted copy renamed h.N → blk_NN
    /// pairs in natural order (h.10 took blk_02).
    func testMaskInfinitiesFullRankBF16AndNaturalOrder() throws {
        _ = try runPython("""
        import numpy as np, torch; from safetensors.numpy import load_file, save_file
        from safetensors.torch import save_file as save_t
        rng = np.random.default_rng(9)
        a = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        mask = np.triu(np.full((32, 32), -np.inf, np.float32), 1)
        save_file({**a, "attn.mask": mask}, \(pyStr(tmp.path("m_a.safetensors"))))
        save_file({**a, "attn.mask": np.where(np.isinf(mask), np.finfo(np.float32).min, 0).astype(np.float32)}, \(pyStr(tmp.path("m_b.safetensors"))))
        w = (rng.standard_normal((256, 256)) * 0.05).astype(np.float32)
        save_file({"fc.weight": w}, \(pyStr(tmp.path("f_a.safetensors"))))
        noise = np.linalg.norm(torch.from_numpy(w).bfloat16().float().numpy() - w)
        d = rng.standard_normal((256, 256)); d *= 2 * noise / np.linalg.norm(d)
        save_t({"fc.weight": torch.from_numpy((w + d).astype(np.float32)).bfloat16()}, \(pyStr(tmp.path("f_b.safetensors"))))
        W = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)
        m = {f"h.{i}.weight": W(32, 32) for i in range(12)}
        save_file(m, \(pyStr(tmp.path("p_a.safetensors"))))
        p = [rng.permutation(32) for _ in range(12)]
        b = {}
        for i in range(12):
            x = m[f"h.{i}.weight"][p[i]]
            if i > 0: x = x[:, p[i - 1]]
            b[f"blk_{i:02d}.weight"] = np.ascontiguousarray(x)
        save_file(b, \(pyStr(tmp.path("p_b.safetensors"))))
        """)
        XCTAssertEqual(try verdict("m_a.safetensors", "m_b.safetensors")["kind"] as? String, "reencoded")
        XCTAssertEqual(try verdict("f_a.safetensors", "f_b.safetensors")["kind"] as? String, "finetuned")
        let r = try runWscan(["compare", tmp.path("p_a.safetensors"), tmp.path("p_b.safetensors"), "--db", tmp.path("c.db"), "--json"])
        let j = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        let pairs = (j["tensors"] as! [[String: Any]]).map { "\($0["name"]!)→\($0["nameB"]!)" }
        XCTAssertTrue(pairs.contains("h.10.weight→blk_10.weight") && pairs.contains("h.2.weight→blk_02.weight"), "\(pairs)")
    }

    /// Legitimate conversions a review found accused of a change: torch's BF16 of a model holding NaN, F64 rounded
    /// straight to F16, the chains F32→BF16→F16 and F32→F16→BF16, F16 with subnormals flushed to zero, a GGUF that
    /// stores a Conv1D ([in, out]) matrix as [out, in] and quantizes it, and a Q8_0 made from a truncated BF16 copy.
    func testConversionsThatAreReencodings() throws {
        _ = try runPython("""
        import numpy as np, torch, gguf
        from safetensors.numpy import save_file
        from safetensors.torch import save_file as save_t
        d = \(pyStr(tmp.url.path)); rng = np.random.default_rng(3)
        w64 = {"fc1.weight": rng.standard_normal((96, 64)) * 0.05, "fc2.weight": rng.standard_normal((32, 96)) * 0.05}
        w64["fc2.weight"][0, :8] = 3e-6                      # float16 subnormals
        w = {k: v.astype(np.float32) for k, v in w64.items()}
        save_file(w, d + "/a.safetensors"); save_file(w64, d + "/a64.safetensors")
        n = {k: v.copy() for k, v in w.items()}; n["fc1.weight"][1, 2] = np.nan
        save_file(n, d + "/an.safetensors")
        save_t({k: torch.from_numpy(v).bfloat16() for k, v in n.items()}, d + "/an_bf16.safetensors")
        save_file({k: v.astype(np.float16) for k, v in w64.items()}, d + "/f64_f16.safetensors")
        save_t({k: torch.from_numpy(v).bfloat16().half() for k, v in w.items()}, d + "/bf16_f16.safetensors")
        save_t({k: torch.from_numpy(v).half().bfloat16() for k, v in w.items()}, d + "/f16_bf16.safetensors")
        def ftz(v):
            h = v.astype(np.float16); h[np.abs(h) < 2.0 ** -14] = 0; return h
        save_file({k: ftz(v) for k, v in w.items()}, d + "/ftz.safetensors")
        save_file({k: np.ascontiguousarray(v.T) for k, v in w.items()}, d + "/conv1d.safetensors")
        T = gguf.GGMLQuantizationType
        g = gguf.GGUFWriter(d + "/q8.gguf", "gpt2")
        for k, v in w.items(): g.add_tensor(k, gguf.quants.quantize(v, T.Q8_0), raw_dtype=T.Q8_0)
        g.write_header_to_file(); g.write_kv_data_to_file(); g.write_tensors_to_file(); g.close()
        g = gguf.GGUFWriter(d + "/q8_trunc.gguf", "gpt2")
        for k, v in w.items():
            t = (v.view(np.uint32) & 0xffff0000).view(np.float32)
            g.add_tensor(k, gguf.quants.quantize(t, T.Q8_0), raw_dtype=T.Q8_0)
        g.write_header_to_file(); g.write_kv_data_to_file(); g.write_tensors_to_file(); g.close()
        """)
        for (a, b) in [("an", "an_bf16"), ("a64", "f64_f16"), ("a", "bf16_f16"), ("a", "f16_bf16"), ("a", "ftz")] {
            let v = try verdict(a + ".safetensors", b + ".safetensors")
            XCTAssertEqual(v["kind"] as? String, "reencoded", "\(a) ~ \(b): \(v)")
        }
        for (a, b) in [("conv1d.safetensors", "q8.gguf"), ("a.safetensors", "q8_trunc.gguf")] {
            let v = try verdict(a, b)
            XCTAssertEqual(v["kind"] as? String, "reencoded", "\(a) ~ \(b): \(v)")
        }
    }

    /// F64 rounded straight to F16 reads as a re-encoding in both argument orders, while every weight nudged by one
    /// F16 ulp (the "either neighbour" rule let that pass) is a change; and a GPT-2 export converted the way llama.cpp
    /// does (renamed, Conv1D matrices transposed, c_fc's shape equal to ffn_down's) pairs each matrix with its own.
    func testF64TiesAndRenamedTransposedGPT2() throws {
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import save_file
        d = \(pyStr(tmp.url.path)); rng = np.random.default_rng(8)
        w = {"l1.weight": rng.standard_normal((96, 64)) * 0.05, "l2.weight": rng.standard_normal((32, 96)) * 0.05}
        save_file(w, d + "/a64.safetensors")
        h = {k: v.astype(np.float16) for k, v in w.items()}
        save_file(h, d + "/b16.safetensors")
        nudged = {k: np.where(rng.random(v.shape) < .5, np.nextafter(v, np.float16(np.inf)), np.nextafter(v, np.float16(-np.inf))).astype(np.float16) for k, v in h.items()}
        save_file(nudged, d + "/nudged16.safetensors")
        D, F = 32, 128
        g = {"wte.weight": rng.standard_normal((50, D)).astype(np.float32)}
        for i in range(2):
            g[f"h.{i}.attn.c_attn.weight"] = rng.standard_normal((D, 3 * D)).astype(np.float32)
            g[f"h.{i}.attn.c_proj.weight"] = rng.standard_normal((D, D)).astype(np.float32)
            g[f"h.{i}.mlp.c_fc.weight"] = rng.standard_normal((D, F)).astype(np.float32)
            g[f"h.{i}.mlp.c_proj.weight"] = rng.standard_normal((F, D)).astype(np.float32)
        save_file(g, d + "/gpt2.safetensors")
        names = {"attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
        c = {"token_embd.weight": g["wte.weight"]}
        for i in range(2):
            for k, v in names.items(): c[f"blk.{i}.{v}.weight"] = np.ascontiguousarray(g[f"h.{i}.{k}.weight"].T)
        save_file(c, d + "/gguf_like.safetensors")
        """)
        for (a, b) in [("a64", "b16"), ("b16", "a64"), ("gpt2", "gguf_like")] {
            let v = try verdict(a + ".safetensors", b + ".safetensors")
            XCTAssertTrue(["reencoded", "identical"].contains(v["kind"] as? String ?? ""), "\(a) ~ \(b): \(v)")
        }
        XCTAssertEqual(try verdict("a64.safetensors", "nudged16.safetensors")["kind"] as? String == "reencoded", false)
    }

    /// One NaN written over a weight: the same weights but for that value, not a retrained layer (the cosine was 0).
    func testOneNaNIsACorruptedCopy() throws {
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import load_file, save_file
        a = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        save_file(a, \(pyStr(tmp.path("a.safetensors"))))
        a["fc1.weight"][3, 5] = np.nan
        save_file(a, \(pyStr(tmp.path("nan.safetensors"))))
        """)
        let v = try verdict("a.safetensors", "nan.safetensors")
        XCTAssertEqual(v["kind"] as? String, "corrupted", "\(v)")
        XCTAssertEqual((v["details"] as? [String: String])?["non_finite"], "1")
        // the same corruption in an F16 copy: corrupted, not a re-encoding that absorbs the NaN
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import load_file, save_file
        a = load_file(\(pyStr(tmp.path("a.safetensors"))))
        b = {k: v.astype(np.float16) for k, v in a.items()}; b["fc2.weight"][0, 0] = np.inf
        save_file(b, \(pyStr(tmp.path("nan16.safetensors"))))
        """)
        let w = try verdict("a.safetensors", "nan16.safetensors")
        XCTAssertEqual(w["kind"] as? String, "corrupted", "\(w)")
        XCTAssertTrue((w["summary"] as? String ?? "").contains("stored as F16"), "\(w)")
    }
}
