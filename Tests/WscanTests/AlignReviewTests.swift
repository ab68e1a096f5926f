import XCTest
@testable import WscanFormats
import WscanKernels
@testable import WscanAnalysis
@testable import WscanCatalog

/// Compare and alignment defects found in review: crafted shapes that crashed or corrupted memory, a p-value of 0
/// for 4 units, layer order taken from names, a lineage that trusted stale fingerprints.
final class AlignReviewTests: XCTestCase {
    let tmp = TempDir()

    /// A feed-forward bias of the wrong length (GPT-2 and BERT layouts) and a hidden layer of width 0: the comparison
    /// completes, and the odd bias is named as left out of the permutation.
    func testCraftedShapesDoNotCrashAlignment() throws {
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import save_file
        d = \(pyStr(tmp.url.path)); r = np.random.default_rng(0); f = np.float32
        g = {"h.0.mlp.c_fc.weight": r.standard_normal((8, 32)).astype(f), "h.0.mlp.c_fc.bias": r.standard_normal(16).astype(f),
             "h.0.mlp.c_proj.weight": r.standard_normal((32, 8)).astype(f)}
        save_file(g, d + "/gpt_a.safetensors"); save_file({k: v + 1 for k, v in g.items()}, d + "/gpt_b.safetensors")
        b = {"encoder.layer.0.intermediate.dense.weight": r.standard_normal((32, 8)).astype(f),
             "encoder.layer.0.intermediate.dense.bias": r.standard_normal(7).astype(f),
             "encoder.layer.0.output.dense.weight": r.standard_normal((8, 32)).astype(f)}
        save_file(b, d + "/bert_a.safetensors"); save_file({k: v * 2 for k, v in b.items()}, d + "/bert_b.safetensors")
        e = {"fc1.weight": np.zeros((0, 8), f), "fc1.bias": np.zeros(0, f), "fc2.weight": np.zeros((4, 0), f), "fc2.bias": r.standard_normal(4).astype(f)}
        save_file(e, d + "/empty_a.safetensors"); e["fc2.bias"] = e["fc2.bias"] + 1; save_file(e, d + "/empty_b.safetensors")
        """)
        let db = tmp.path("c.db")
        for (a, b) in [("gpt_a", "gpt_b"), ("bert_a", "bert_b"), ("empty_a", "empty_b")] {
            let r = try runWscan(["compare", tmp.path(a + ".safetensors"), tmp.path(b + ".safetensors"), "--db", db, "--align", "--json"])
            XCTAssertTrue(r.status == 0 || r.status == 1, "\(a): status \(r.status) \(r.err)")
            XCTAssertTrue(r.out.hasPrefix("{"), "\(a): \(r.err)")
            if a != "empty_a" { XCTAssertTrue(r.out.contains("shape does not fit permutation group"), "\(a): \(r.out.prefix(2000))") }
        }
    }

    /// Spearman's ρ between two matchings of n units: the exact null distribution for small n (ρ = 1 with 4 units is
    /// a 1-in-24 event, not p = 0), checked against an enumeration in Python.
    func testSpearmanPValueIsExactForFewUnits() throws {
        XCTAssertEqual(IndependenceTest.spearmanPValue(1, n: 4), 1.0 / 24, accuracy: 1e-15)
        let out = try runPython("""
        import itertools
        for n, rho in [(5, 0.8), (6, 0.6), (7, 1.0), (8, 0.5)]:
            lim = (1 - rho) * n * (n * n - 1) / 6 + 1e-9
            hits = total = 0
            for p in itertools.permutations(range(n)):
                total += 1; hits += sum((a - i) ** 2 for i, a in enumerate(p)) <= lim
            print(n, rho, repr(hits / total))
        """)
        for l in out.split(separator: "\n") {
            let p = l.split(separator: " ")
            XCTAssertEqual(IndependenceTest.spearmanPValue(Double(p[1])!, n: Int(p[0])!), Double(p[2])!, accuracy: 1e-15, String(l))
        }
        // above 8 units: the t approximation, never below 1/n!
        XCTAssertEqual(IndependenceTest.spearmanPValue(1, n: 10), 1 / 3628800.0, accuracy: 1e-18)
    }

    /// Square hidden layers: the order comes from what the names say (input … output) and natural numbering
    /// (layers.2 before layers.10), not from the alphabet.
    func testLayerOrderForSquareChains() throws {
        func set(_ names: [String]) -> WeightSet {
            WeightSet(names: names, shapes: Dictionary(uniqueKeysWithValues: names.map { ($0, [4, 4]) }),
                      values: Dictionary(uniqueKeysWithValues: names.map { ($0, [Float](repeating: 0.1, count: 16)) }))
        }
        let w = set(["hidden_layer.weight", "input_layer.weight", "output_layer.weight"])
        let ev = try MLPEvaluator(weights: w, x: Array(repeating: 1, count: 8), y: [0, 1], features: 4)
        XCTAssertEqual(ev.layers.map(\.weight), ["input_layer.weight", "hidden_layer.weight", "output_layer.weight"])
        let deep = set((0..<12).map { "layers.\($0).weight" }.sorted())
        let e2 = try MLPEvaluator(weights: deep, x: Array(repeating: 1, count: 8), y: [0, 1], features: 4)
        XCTAssertEqual(e2.layers.map(\.weight), (0..<12).map { "layers.\($0).weight" })
        XCTAssertEqual(PermSpecInference.infer(deep).groups.map(\.name).first, "layers.0.units")
    }

    /// A file replaced after indexing is indexed again before the lineage compares fingerprints.
    func testLineageReindexesChangedFiles() throws {
        let dir = tmp.url.appendingPathComponent("lin")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let a = dir.appendingPathComponent("a.safetensors").path, b = dir.appendingPathComponent("b.safetensors").path
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: a)
        try FileManager.default.copyItem(atPath: a, toPath: b)
        let cat = try Catalog(path: tmp.path("c.db"))
        _ = try Indexer(catalog: cat, options: .init()).run(paths: [dir.path])
        try FileManager.default.removeItem(atPath: b)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0_finetuned.safetensors").path, toPath: b)
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: 10)], ofItemAtPath: b)
        let lin = try CompareRunner.lineage(catalog: cat)
        XCTAssertEqual(lin.edges.map(\.kind), ["finetuned"], "\(lin.edges)")
        XCTAssertNil(lin.failed)
        try FileManager.default.removeItem(atPath: b)
        let again = try CompareRunner.lineage(catalog: cat)
        XCTAssertEqual(again.failed?.count, 1)
        XCTAssertTrue(again.failed?[0].contains("gone") ?? false)
    }
}

extension AlignReviewTests {
    /// B lacks one of A's biases: the evaluated path keeps A's own bias (L(0) is A's test loss from the corpus
    /// manifest), instead of silently evaluating A without it.
    func testConnectivityKeepsTensorsOnlyAHas() throws {
        let b = tmp.path("b_nobias.safetensors")
        _ = try runPython("""
        from safetensors.numpy import load_file, save_file
        t = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0_finetuned.safetensors").path)))
        del t["fc1.bias"]
        save_file(t, \(pyStr(b)))
        """)
        let m = try loadJSON(Paths.corpus.appendingPathComponent("MANIFEST.json")) as! [String: Any]
        let loss0 = ((m["models"] as! [String: Any])["mlp_seed0"] as! [String: Any])["test_loss"] as! Double
        let r = try runWscan(["compare", Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, b, "--data",
                              Paths.corpus.appendingPathComponent("digits_test.npz").path, "--grid", "3", "--no-align", "--json", "--db", tmp.path("c.db")])
        XCTAssertEqual(r.status, 0, r.err)
        let j = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        let before = (j["connectivity"] as! [String: Any])["before"] as! [String: Any]
        XCTAssertEqual((before["loss"] as! [Double])[0], loss0, accuracy: 1e-9)
    }
}

extension AlignReviewTests {
    /// The usual merge_and_unload path: a LoRA merged into a BF16 (or F16) base and saved in the same type is a
    /// LoRA, not a fine-tune; and a LoRA or a pruning saved as F16 reads the same with the arguments swapped.
    func testNarrowStoredLoRAAndPruningInEitherOrder() throws {
        _ = try runPython("""
        import torch
        from safetensors.torch import load_file, save_file
        d = \(pyStr(tmp.url.path)); torch.manual_seed(0)
        a = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        for t, name in [(torch.bfloat16, "bf16"), (torch.float16, "f16")]:
            base = {k: v.to(t) for k, v in a.items()}
            save_file(base, f"{d}/base_{name}.safetensors")
            m = dict(base); m["fc1.weight"] = (base["fc1.weight"].float() + (torch.randn(64, 4) * 0.05) @ (torch.randn(4, 64) * 0.05)).to(t)
            save_file(m, f"{d}/lora_{name}.safetensors")
        m = {k: v.clone() for k, v in a.items()}
        m["fc1.weight"] = a["fc1.weight"] + (torch.randn(64, 4) * 0.05) @ (torch.randn(4, 64) * 0.05)
        save_file({k: v.to(torch.float16) for k, v in m.items()}, f"{d}/lora_then_f16.safetensors")
        p = {k: v.clone() for k, v in a.items()}
        w = p["fc2.weight"]; w[w.abs() < w.abs().median()] = 0
        save_file({k: v.to(torch.float16) for k, v in p.items()}, f"{d}/pruned_then_f16.safetensors")
        """)
        let db = tmp.path("c.db"), base = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        func kind(_ a: String, _ b: String) throws -> String {
            let r = try runWscan(["compare", a, b, "--json", "--no-align", "--db", db])
            XCTAssertEqual(r.status, 0, r.err)
            return ((try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any])["kind"] as! String
        }
        for n in ["bf16", "f16"] { XCTAssertEqual(try kind(tmp.path("base_\(n).safetensors"), tmp.path("lora_\(n).safetensors")), "lora_merged", n) }
        XCTAssertEqual(try kind(base, tmp.path("lora_then_f16.safetensors")), "lora_merged")
        XCTAssertEqual(try kind(tmp.path("lora_then_f16.safetensors"), base), "lora_merged")
        XCTAssertEqual(try kind(base, tmp.path("pruned_then_f16.safetensors")), "pruned")
        XCTAssertEqual(try kind(tmp.path("pruned_then_f16.safetensors"), base), "pruned")
        // two independently trained models stay independent
        XCTAssertEqual(try kind(base, Paths.corpus.appendingPathComponent("mlp_seed2.safetensors").path), "independent")
    }
}

extension AlignReviewTests {
    /// Smaller verdict defects: F64 saved as F32 is a re-encoding (values compare equal only after decoding to
    /// float32); a model of zeros is not "pruned" from anything; −0 and +0 are the same value; a tensor whose name
    /// both sides have with another shape is reported as reshaped, not paired with another tensor of that shape.
    func testSmallVerdictDefects() throws {
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import load_file, save_file
        d = \(pyStr(tmp.url.path)); r = np.random.default_rng(0)
        t = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        save_file({k: v.astype(np.float64) for k, v in t.items()}, d + "/f64.safetensors")
        save_file({k: np.zeros_like(v) for k, v in t.items()}, d + "/zeros.safetensors")
        z = {k: v.copy() for k, v in t.items()}; z["fc1.bias"][:] = 0.0; save_file(z, d + "/pz.safetensors")
        z2 = {k: v.copy() for k, v in z.items()}; z2["fc1.bias"][:] = -0.0; save_file(z2, d + "/nz.safetensors")
        g = {"h.0.mlp.c_fc.weight": r.standard_normal((8, 32)).astype(np.float32), "h.0.mlp.c_proj.weight": r.standard_normal((32, 8)).astype(np.float32),
             "h.0.ln.weight": np.ones(8, np.float32)}
        save_file(g, d + "/tr_a.safetensors")
        save_file({k: np.ascontiguousarray(v.T) if v.ndim == 2 else v for k, v in g.items()}, d + "/tr_b.safetensors")
        """)
        let db = tmp.path("c.db")
        func verdict(_ a: String, _ b: String) throws -> [String: Any] {
            let r = try runWscan(["compare", a, b, "--json", "--no-align", "--db", db])
            XCTAssertEqual(r.status, 0, r.err)
            return try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        }
        func kind(_ j: [String: Any]) -> String { (j["verdict"] as! [String: Any])["kind"] as! String }
        XCTAssertEqual(kind(try verdict(tmp.path("f64.safetensors"), Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)), "reencoded")
        XCTAssertNotEqual(kind(try verdict(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, tmp.path("zeros.safetensors"))), "pruned")
        XCTAssertEqual(kind(try verdict(tmp.path("pz.safetensors"), tmp.path("nz.safetensors"))), "identical")
        // matrices stored transposed ([in, out] as GPT-2's Conv1D) pair with their [out, in] selves
        let tr = try verdict(tmp.path("tr_a.safetensors"), tmp.path("tr_b.safetensors"))
        XCTAssertEqual(kind(tr), "identical")
        XCTAssertEqual(tr["onlyInA"] as? [String], [])
        XCTAssertTrue(((tr["verdict"] as! [String: Any])["evidence"] as! [String]).contains { $0.contains("2 matrices are stored transposed") })
    }
}

extension AlignReviewTests {
    /// Inside numbered blocks, `fc_out` is the block's second layer, not the network's output.
    func testLayerRolesApplyOutsideNumberedBlocksOnly() throws {
        let names = ["head.weight", "blocks.1.fc_out.weight", "blocks.0.fc_out.weight", "embed.weight", "blocks.0.fc_in.weight", "blocks.1.fc_in.weight"]
        XCTAssertEqual(names.sorted(by: LayerOrder.less),
                       ["embed.weight", "blocks.0.fc_in.weight", "blocks.0.fc_out.weight", "blocks.1.fc_in.weight", "blocks.1.fc_out.weight", "head.weight"])
    }

    /// An MLP with BatchNorm and LayerNorm between its layers, permuted: the norm parameters move with their units,
    /// so the copy is recognised and the aligned file computes B's function (checked by torch).
    func testNormLayersMoveWithTheirUnits() throws {
        _ = try runPython("""
        import torch, torch.nn as nn
        from safetensors.torch import save_file
        torch.manual_seed(0)
        def net(): return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 12), nn.LayerNorm(12), nn.ReLU(), nn.Linear(12, 3))
        a = net(); a[1].running_mean.uniform_(-1, 1); a[1].running_var.uniform_(0.5, 2); a[1].weight.data.uniform_(0.5, 2); a[4].weight.data.uniform_(0.5, 2)
        sd = {k: v.clone() for k, v in a.state_dict().items() if v.dtype.is_floating_point}
        save_file(sd, \(pyStr(tmp.path("bn_a.safetensors"))))
        p1, p2 = torch.randperm(16), torch.randperm(12); b = dict(sd)
        b["0.weight"], b["0.bias"] = sd["0.weight"][p1], sd["0.bias"][p1]
        for k in ["1.weight", "1.bias", "1.running_mean", "1.running_var"]: b[k] = sd[k][p1]
        b["3.weight"], b["3.bias"] = sd["3.weight"][p2][:, p1], sd["3.bias"][p2]
        for k in ["4.weight", "4.bias"]: b[k] = sd[k][p2]
        b["6.weight"] = sd["6.weight"][:, p2]
        save_file({k: v.contiguous() for k, v in b.items()}, \(pyStr(tmp.path("bn_b.safetensors"))))
        """)
        let r = try runWscan(["compare", tmp.path("bn_a.safetensors"), tmp.path("bn_b.safetensors"), "--write-aligned", tmp.path("bn_al.safetensors"),
                              "--json", "--db", tmp.path("c.db")])
        XCTAssertEqual(r.status, 0, r.err)
        let j = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual((j["verdict"] as! [String: Any])["kind"] as? String, "permuted")
        let out = try runPython("""
        import torch, torch.nn as nn
        from safetensors.torch import load_file
        def net(): return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 12), nn.LayerNorm(12), nn.ReLU(), nn.Linear(12, 3))
        x = torch.randn(64, 8); o = []
        for n in ["bn_b", "bn_al"]:
            m = net(); m.load_state_dict(load_file(\(pyStr(tmp.url.path)) + "/" + n + ".safetensors"), strict=False); m.eval()
            with torch.no_grad(): o.append(m(x))
        print(float((o[0] - o[1]).abs().max()))
        """)
        XCTAssertLessThan(Double(out.trimmingCharacters(in: .whitespacesAndNewlines))!, 1e-5)
    }
}

extension AlignReviewTests {
    /// llama.cpp's converter permutes the rows of q/k projections (grouped-query k with head_count_kv): the GGUF
    /// of a Llama is a re-encoding of it, not a fine-tune.
    func testLlamaCppGGUFOfALlamaIsAReencoding() throws {
        _ = try runPython("""
        import numpy as np, gguf
        from safetensors.numpy import save_file
        d = \(pyStr(tmp.url.path)); r = np.random.default_rng(0); H, KV = 4, 2
        hf = {"model.embed_tokens.weight": r.standard_normal((32, 16)), "model.norm.weight": np.ones(16), "lm_head.weight": r.standard_normal((32, 16))}
        for l in range(2):
            p = f"model.layers.{l}."
            hf.update({p + "self_attn.q_proj.weight": r.standard_normal((16, 16)), p + "self_attn.k_proj.weight": r.standard_normal((8, 16)),
                       p + "self_attn.v_proj.weight": r.standard_normal((8, 16)), p + "self_attn.o_proj.weight": r.standard_normal((16, 16)),
                       p + "mlp.gate_proj.weight": r.standard_normal((24, 16)), p + "mlp.up_proj.weight": r.standard_normal((24, 16)),
                       p + "mlp.down_proj.weight": r.standard_normal((16, 24)), p + "input_layernorm.weight": np.ones(16), p + "post_attention_layernorm.weight": np.ones(16)})
        hf = {k: v.astype(np.float32) for k, v in hf.items()}
        save_file(hf, d + "/hf.safetensors")
        def permute(w, n): return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        top = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight", "model.norm.weight": "output_norm.weight"}
        sub = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
        w = gguf.GGUFWriter(d + "/model.gguf", "llama"); w.add_head_count(H); w.add_head_count_kv(KV)
        for k, v in hf.items():
            if k in top: n = top[k]
            else: n = f"blk.{k.split('.')[2]}.{sub['.'.join(k.split('.')[3:-1])]}.weight"
            if k.endswith("q_proj.weight"): v = permute(v, H)
            if k.endswith("k_proj.weight"): v = permute(v, KV)
            w.add_tensor(n, v.astype(np.float16) if v.ndim == 2 else v)
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        """)
        let r = try runWscan(["compare", tmp.path("hf.safetensors"), tmp.path("model.gguf"), "--json", "--db", tmp.path("c.db")])
        XCTAssertEqual(r.status, 0, r.err)
        let j = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual((j["verdict"] as! [String: Any])["kind"] as? String, "reencoded", "\(j["verdict"] ?? "")")
        XCTAssertTrue(((j["notes"] as? [String]) ?? []).contains { $0.contains("Hugging Face order") })
    }
}

extension AlignReviewTests {
    /// Q8_0 written by the gguf package from A is an exact requantization of A; a Q8_0 of A with a LoRA merged
    /// first is not a re-encoding of A (its change was under Q8_0's error bound and passed for one).
    func testQ8_0RequantizationIsChecked() throws {
        _ = try runPython("""
        import numpy as np, gguf
        from gguf.quants import quantize
        from safetensors.numpy import load_file
        d = \(pyStr(tmp.url.path)); r = np.random.default_rng(0)
        a = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        def write(t, path):
            w = gguf.GGUFWriter(path, "mlp")
            for k, v in t.items():
                if v.ndim == 2 and v.shape[1] % 32 == 0:
                    w.add_tensor(k, quantize(v, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
                else: w.add_tensor(k, v)
            w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        write(a, d + "/q8.gguf")
        b = dict(a); b["fc1.weight"] = (a["fc1.weight"] + 0.2 * r.standard_normal((64, 8)) @ r.standard_normal((8, 64)) / 8).astype(np.float32)
        write(b, d + "/lora_q8.gguf")
        """)
        let a = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        func verdict(_ b: String) throws -> [String: Any] {
            let r = try runWscan(["compare", a, tmp.path(b), "--json", "--no-align", "--db", tmp.path("c.db")])
            XCTAssertEqual(r.status, 0, r.err)
            return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]
        }
        let q8 = try verdict("q8.gguf")
        XCTAssertEqual(q8["kind"] as? String, "reencoded", "\(q8)")
        let lora = try verdict("lora_q8.gguf")
        XCTAssertNotEqual(lora["kind"] as? String, "reencoded", "\(lora)")
        XCTAssertNotEqual(lora["kind"] as? String, "independent", "\(lora)")
    }
}

extension AlignReviewTests {
    /// Second review: a full BF16 fine-tune with small steps is not a LoRA; a model of zeros as A is not "pruned";
    /// an input BatchNorm (before the first layer) is not permuted with the hidden units; `stem.0` comes first.
    func testSecondReviewVerdicts() throws {
        _ = try runPython("""
        import torch, torch.nn as nn, numpy as np
        from safetensors.torch import save_file
        d = \(pyStr(tmp.url.path)); torch.manual_seed(0)
        base = {f"l{i}.weight": torch.randn(192, 192) * 0.05 for i in range(3)}
        save_file({k: v.to(torch.bfloat16) for k, v in base.items()}, d + "/base.safetensors")
        ft = {k: (v + torch.randn_like(v) * 0.05 * 0.004) for k, v in base.items()}
        save_file({k: v.to(torch.bfloat16) for k, v in ft.items()}, d + "/ft.safetensors")
        net = nn.Sequential(nn.BatchNorm1d(16), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
        net[0].running_mean.uniform_(-1, 1); net[0].weight.data.uniform_(0.5, 2)
        sd = {k: v.clone() for k, v in net.state_dict().items() if v.dtype.is_floating_point}
        save_file(sd, d + "/inbn_a.safetensors")
        p = torch.randperm(16); b = dict(sd)
        b["1.weight"], b["1.bias"], b["3.weight"] = sd["1.weight"][p], sd["1.bias"][p], sd["3.weight"][:, p]
        save_file({k: v.contiguous() for k, v in b.items()}, d + "/inbn_b.safetensors")
        """)
        let db = tmp.path("c.db")
        func kind(_ a: String, _ b: String) throws -> String {
            let r = try runWscan(["compare", a, b, "--json", "--db", db])
            XCTAssertEqual(r.status, 0, r.err)
            return ((try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any])["kind"] as! String
        }
        XCTAssertEqual(try kind(tmp.path("base.safetensors"), tmp.path("ft.safetensors")), "finetuned")
        XCTAssertEqual(try kind(tmp.path("ft.safetensors"), tmp.path("base.safetensors")), "finetuned")
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import load_file, save_file
        t = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        save_file({k: np.zeros_like(v) for k, v in t.items()}, \(pyStr(tmp.path("zeros.safetensors"))))
        """)
        XCTAssertNotEqual(try kind(tmp.path("zeros.safetensors"), Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path), "pruned")
        XCTAssertEqual(try kind(tmp.path("inbn_a.safetensors"), tmp.path("inbn_b.safetensors")), "permuted")
        XCTAssertEqual(["mid.weight", "head.weight", "stem.0.weight"].sorted(by: LayerOrder.less), ["stem.0.weight", "mid.weight", "head.weight"])
    }
}

extension AlignReviewTests {
    /// Q4_0, Q4_1, Q5_0 and Q5_1 requantized by wscan equal gguf-py's quantize → dequantize to the bit (random
    /// blocks, blocks of zeros, ties for the largest magnitude, constant blocks); a GGUF of A in those types is an
    /// exact re-encoding of A, and one quantized from A with a LoRA merged is not.
    func testLegacyQuantRequantizationMatchesGGUFPy() throws {
        let ref = tmp.path("legacy.npz")
        _ = try runPython("""
        import numpy as np, gguf
        from gguf.quants import quantize, dequantize
        from safetensors.numpy import load_file
        r = np.random.default_rng(7)
        x = (r.standard_normal((16, 256)) * np.exp(r.uniform(-8, 2, (16, 1)))).astype(np.float32)
        x[1, :64] = 0; x[2, 32:64] = 0.25; x[3, 5] = 3.0; x[3, 9] = -3.0; x[4, :32] = -1.5
        out = {"x": x}
        for t in ["Q4_0", "Q4_1", "Q5_0", "Q5_1"]:
            q = getattr(gguf.GGMLQuantizationType, t)
            out[t] = dequantize(quantize(x, q), q).astype(np.float32)
        np.savez(\(pyStr(ref)), **out)
        d = \(pyStr(tmp.url.path)); rr = np.random.default_rng(0)
        a = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        def write(t, path, qt):
            w = gguf.GGUFWriter(path, "mlp")
            for k, v in t.items():
                if v.ndim == 2 and v.shape[1] % 32 == 0: w.add_tensor(k, quantize(v, qt), raw_dtype=qt)
                else: w.add_tensor(k, v)
            w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        b = dict(a); b["fc1.weight"] = (a["fc1.weight"] + 0.2 * rr.standard_normal((64, 8)) @ rr.standard_normal((8, 64)) / 8).astype(np.float32)
        for t in ["Q4_0", "Q5_1"]:
            write(a, d + "/" + t + ".gguf", getattr(gguf.GGMLQuantizationType, t))
            write(b, d + "/lora_" + t + ".gguf", getattr(gguf.GGMLQuantizationType, t))
        """)
        let ck = try CheckpointOpener.open(ref)
        let w = try WeightSet.load(ck)
        let x = w.values["x"]!
        for t in ["Q4_0", "Q4_1", "Q5_0", "Q5_1"] {
            let mine = try XCTUnwrap(GGMLQuant.legacyRoundTrip(t, x))
            let theirs = w.values[t]!
            let off = zip(mine, theirs).filter { $0.bitPattern != $1.bitPattern }.count
            XCTAssertEqual(off, 0, "\(t): \(off) of \(x.count) values differ from gguf-py")
        }
        XCTAssertNil(GGMLQuant.legacyRoundTrip("Q4_0", [Float](repeating: .nan, count: 32)))
        let a = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        func verdict(_ b: String) throws -> (kind: String, notes: String) {
            let r = try runWscan(["compare", a, tmp.path(b), "--json", "--no-align", "--db", tmp.path("c.db")])
            XCTAssertEqual(r.status, 0, r.err)
            return ((try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]).reduce(into: ("", "")) {
                if $1.key == "kind" { $0.kind = $1.value as! String } else { $0.notes += "\($1.value)" }
            }
        }
        for t in ["Q4_0", "Q5_1"] {
            XCTAssertEqual(try verdict(t + ".gguf").kind, "reencoded", t)
            let lora = try verdict("lora_" + t + ".gguf")
            XCTAssertNotEqual(lora.kind, "reencoded", "\(t): \(lora)")
            XCTAssertNotEqual(lora.kind, "independent", "\(t): \(lora)")
        }
    }
}

extension AlignReviewTests {
    /// Writes nobias.safetensors (mlp_seed0 without its biases) into the test folder, then runs `more` with `a`
    /// (mlp_seed0's tensors), `d` (the folder), `np`, `load_file` and `save_file` at hand.
    func seed0Variants(_ more: String) throws {
        let d = tmp.url.path, corpus = Paths.corpus.path
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import load_file, save_file
        d = \(pyStr(d))
        a = load_file(\(pyStr(corpus + "/mlp_seed0.safetensors")))
        save_file({k: v for k, v in a.items() if not k.endswith("bias")}, d + "/nobias.safetensors")
        """ + "\n" + more)
    }

    /// Connectivity review: the built-in evaluator refuses what it would ignore (normalization layers); biases only
    /// B has are zero on A's side, so the path ends at B; NaN along the path leaves no barrier (on A it is an error);
    /// an evaluator failing on the aligned path costs that barrier only; a hanging evaluator on A runs once; quoted
    /// {ckpt} works; --write-aligned excludes --no-align; an F16 copy against its pruned F32 version reads as pruned.
    func testConnectivityReview() throws {
        let d = tmp.url.path, corpus = Paths.corpus.path, data = corpus + "/digits_test.npz", db = tmp.path("c.db")
        try seed0Variants("""
        bn = dict(a); bn["bn1.weight"] = np.ones(64, np.float32); bn["bn1.bias"] = np.zeros(64, np.float32)
        bn["bn1.running_mean"] = np.ones(64, np.float32); bn["bn1.running_var"] = np.ones(64, np.float32)
        save_file(bn, "\(d)/bn.safetensors")
        """)
        let ev = { (name: String, body: String) in
            let p = self.tmp.path(name)
            try! ("#!/bin/sh\n" + body + "\n").write(toFile: p, atomically: true, encoding: .utf8)
            chmod(p, 0o755)
            return p
        }
        let nanmid = ev("nanmid.sh", "n=$(cat \(d)/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > \(d)/count; if [ $n -eq 3 ]; then echo nan; else echo 0.5; fi")
        let nanAll = ev("nan.sh", "echo NaN")
        let failAfter = ev("failn.sh", "n=$(cat \(d)/count2 2>/dev/null || echo 0); n=$((n+1)); echo $n > \(d)/count2; if [ $n -ge 6 ]; then echo boom >&2; exit 1; fi; echo 0.9")
        let hang = ev("hang.sh", "echo start >> \(d)/hlog; sleep 30")
        let quoted = ev("quoted.sh", "test -f \"$1\" && echo 0.75")
        func run(_ args: [String]) throws -> (status: Int32, json: [String: Any]?, err: String) {
            let r = try runWscan(args + ["--json", "--db", db])
            return (r.status, try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any], r.err)
        }
        let seed0 = corpus + "/mlp_seed0.safetensors", seed1 = corpus + "/mlp_seed1.safetensors"

        let bnRun = try run(["compare", tmp.path("bn.safetensors"), seed1, "--data", data, "--no-align"])
        XCTAssertEqual(bnRun.status, 1); XCTAssertTrue(bnRun.err.contains("not a plain MLP"), bnRun.err)

        let nb = try run(["compare", tmp.path("nobias.safetensors"), seed1, "--data", data, "--no-align"])
        XCTAssertEqual(nb.status, 0, nb.err)
        let before = (nb.json!["connectivity"] as! [String: Any])["before"] as! [String: Any]
        let models = (try loadJSON(Paths.corpus.appendingPathComponent("MANIFEST.json")) as! [String: Any])["models"] as! [String: [String: Any]]
        XCTAssertEqual((before["loss"] as! [Double]).last!, models["mlp_seed1"]!["test_loss"] as! Double, accuracy: 1e-5, "λ = 1 is B")
        XCTAssertTrue((nb.json!["notes"] as! [String]).contains { $0.contains("biases only B has") })
        XCTAssertEqual(before["barrierOn"] as? String, "loss", "the built-in evaluator's barrier is on the loss, whatever higherIsBetter says of accuracy")

        let nm = try run(["compare", seed0, seed1, "--eval", nanmid + " {ckpt}", "--grid", "5", "--no-align"])
        XCTAssertEqual(nm.status, 0, nm.err)
        let nmBefore = (nm.json!["connectivity"] as! [String: Any])["before"] as! [String: Any]
        XCTAssertNil(nmBefore["barrier"]); XCTAssertEqual(nmBefore["nanAt"] as? [Double], [0.5], "the third call: λ = 0, 0.25, 0.5")
        let na = try run(["compare", seed0, seed1, "--eval", nanAll + " {ckpt}", "--grid", "3", "--no-align"])
        XCTAssertEqual(na.status, 0, "NaN on A is the checkpoint's state, reported without a barrier"); XCTAssertTrue(((na.json?["notes"] as? [String]) ?? []).contains { $0.contains("NaN on A's own weights") }, "\(na.json ?? [:])")

        let fa = try run(["compare", seed0, corpus + "/mlp_seed0_permuted.safetensors", "--eval", failAfter + " {ckpt}", "--grid", "5", "--align"])
        XCTAssertEqual(fa.status, 0, fa.err)
        XCTAssertTrue((fa.json!["notes"] as! [String]).contains { $0.contains("cannot run on the aligned path") }, "\(fa.json!["notes"] ?? "")")

        let t0 = Date()
        XCTAssertEqual(try run(["compare", seed0, seed1, "--eval", hang + " {ckpt}", "--eval-timeout", "1", "--grid", "3"]).status, 1)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 15)
        XCTAssertEqual(try String(contentsOfFile: d + "/hlog", encoding: .utf8).split(separator: "\n").count, 1, "A is evaluated once")

        for form in ["\"{ckpt}\"", "'{ckpt}'", "{ckpt}"] {
            let q = try run(["compare", seed0, seed1, "--eval", quoted + " " + form, "--grid", "3", "--no-align"])
            XCTAssertEqual(q.status, 0, "\(form): \(q.err)")
        }
        // The candidate's path needs no quoting anywhere: every form hands over the same path.
        XCTAssertEqual(ExternalEvaluator.substitute("x \"{ckpt}\" '{ckpt}' {ckpt}", path: "/t/ab.st"), "x \"/t/ab.st\" '/t/ab.st' /t/ab.st")
        XCTAssertEqual(ExternalEvaluator.substitute("x", path: "/t/ab"), "x /t/ab")
        XCTAssertFalse(ExternalEvaluator.shellInert("/tmp/a b")); XCTAssertFalse(ExternalEvaluator.shellInert("/tmp/it's"))
        XCTAssertTrue(ExternalEvaluator.shellInert("/tmp/wscan-eval-0F3A-77/candidate.safetensors"))
        for form in ["sh -c \"\(quoted) \\\"{ckpt}\\\"\"", "sh -c '\(quoted) \"{ckpt}\"'"] {
            let q = try run(["compare", seed0, seed1, "--eval", form, "--grid", "3", "--no-align"])
            XCTAssertEqual(q.status, 0, "\(form): \(q.err)")
        }
        // A TMPDIR with a space: the candidate goes to /tmp instead, and still arrives whole.
        let spaced = tmp.path("tmp dir")
        try FileManager.default.createDirectory(atPath: spaced, withIntermediateDirectories: true)
        setenv("TMPDIR", spaced, 1)
        let sp = try run(["compare", seed0, seed1, "--eval", quoted + " {ckpt}", "--grid", "3", "--no-align"])
        unsetenv("TMPDIR")
        XCTAssertEqual(sp.status, 0, sp.err)
        XCTAssertEqual(try runWscan(["compare", seed0, seed1, "--no-align", "--write-aligned", tmp.path("w.safetensors"), "--db", db]).status, 2)
        let pr = try run(["compare", corpus + "/mlp_seed0_f16.safetensors", corpus + "/mlp_seed0_pruned50.safetensors"])
        XCTAssertEqual((pr.json!["verdict"] as! [String: Any])["kind"] as? String, "pruned")
    }
}

extension AlignReviewTests {
    /// Third review: a bias only B has moves with its layer's units on the aligned path (λ = 1 is B there too) and
    /// in --write-aligned; tensors paired under other names are not "only B"; NaN on A is an error with the built-in
    /// evaluator too; optimizer state beside the weights (SGD momentum, Adam by prefix) is not a layer; the
    /// report carries the run's notes.
    func testConnectivityThirdReview() throws {
        let d = tmp.url.path, corpus = Paths.corpus.path, data = corpus + "/digits_test.npz", db = tmp.path("c.db")
        try seed0Variants("""
        save_file({{"fc1": "0", "fc2": "2", "fc3": "4"}[k.split(".")[0]] + "." + k.split(".")[1]: v for k, v in a.items()}, "\(d)/seq.safetensors")
        n = dict(a); n["fc1.weight"] = n["fc1.weight"].copy(); n["fc1.weight"][0, 0] = np.nan
        save_file(n, "\(d)/nan.safetensors")
        m = dict(a); m["fc1.weight.momentum_buffer"] = np.zeros_like(a["fc1.weight"]); m["exp_avg_sq.fc2.weight"] = np.ones_like(a["fc2.weight"])
        save_file(m, "\(d)/momentum.safetensors")
        """)
        let models = (try loadJSON(Paths.corpus.appendingPathComponent("MANIFEST.json")) as! [String: Any])["models"] as! [String: [String: Any]]
        let bLoss = models["mlp_seed1"]!["test_loss"] as! Double
        let seed1 = corpus + "/mlp_seed1.safetensors"
        let r = try runWscan(["compare", tmp.path("nobias.safetensors"), seed1, "--data", data, "--align", "--grid", "3", "--json", "--db", db,
                              "--write-aligned", tmp.path("aligned.safetensors")])
        XCTAssertEqual(r.status, 0, r.err)
        let conn = (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["connectivity"] as! [String: Any]
        XCTAssertEqual(((conn["after"] as! [String: Any])["loss"] as! [Double]).last!, bLoss, accuracy: 1e-5, "λ = 1 after alignment is B")
        // The aligned file computes B's function: same loss under the built-in evaluator.
        let data2 = try Dataset.load(data)
        let aligned = try WeightSet.load(try CheckpointOpener.open(tmp.path("aligned.safetensors")))
        let ev = try MLPEvaluator(weights: aligned, x: data2.x, y: data2.y, features: data2.features)
        XCTAssertEqual(try ev.evaluate(aligned).loss!, bLoss, accuracy: 1e-5)

        let seq = try runWscan(["compare", tmp.path("seq.safetensors"), seed1, "--data", data, "--no-align", "--grid", "3", "--db", db])
        XCTAssertEqual(seq.status, 0, seq.err)
        XCTAssertFalse(seq.err.contains("only B has"), seq.err)

        // NaN weights in A: the comparison still reports, without a barrier; a sparsity curve has nothing to hold on to.
        let nanA = try runWscan(["compare", tmp.path("nan.safetensors"), seed1, "--data", data, "--no-align", "--grid", "3", "--db", db])
        XCTAssertEqual(nanA.status, 0, nanA.err); XCTAssertTrue(nanA.err.contains("returned NaN on A's own weights: no barrier"), nanA.err)
        let nanS = try runWscan(["analyze", "sparsity", tmp.path("nan.safetensors"), "--data", data, "--grid", "0,0.5", "--no-refine", "--db", db])
        XCTAssertEqual(nanS.status, 1); XCTAssertTrue(nanS.err.contains("NaN on the dense model"), nanS.err)
        // A layer named like optimizer state is still a layer.
        XCTAssertFalse(Saliency.isOptimizerState("momentum_buffer.weight")); XCTAssertTrue(Saliency.isOptimizerState("fc1.weight.momentum_buffer"))

        let mo = try runWscan(["analyze", "sparsity", tmp.path("momentum.safetensors"), "--data", data, "--grid", "0,0.5", "--no-refine", "--db", db])
        XCTAssertEqual(mo.status, 0, mo.err)

        let rep = try runWscan(["report", "--compare", tmp.path("nobias.safetensors"), seed1, "-o", tmp.path("rep"), "--db", db])
        XCTAssertEqual(rep.status, 0, rep.err)
        let md = try String(contentsOfFile: tmp.path("rep") + "/README.md", encoding: .utf8)
        XCTAssertTrue(md.contains("## Notes"), md)
    }
}

extension AlignReviewTests {
    /// Fourth review: in an OPT-style block whose feed-forward width equals the model's, fc2's bias and the block's
    /// other vectors of that length are not feed-forward units (only a norm of the module itself is).
    func testSquareFeedForwardGroupHoldsOnlyItsOwnVectors() {
        var w = WeightSet()
        for (n, s) in [("blk.0.fc1.weight", [8, 8]), ("blk.0.fc1.bias", [8]), ("blk.0.fc2.weight", [8, 8]), ("blk.0.fc2.bias", [8]),
                       ("blk.0.self_attn.v_proj.weight", [8, 8]), ("blk.0.self_attn.v_proj.bias", [8]), ("blk.0.mlp_ln.weight", [8])] {
            w.names.append(n); w.shapes[n] = s; w.values[n] = [Float](repeating: 1, count: s.reduce(1, *))
        }
        let spec = PermSpecInference.infer(w)
        XCTAssertEqual(spec.family, "transformer-ffn")
        let members = Set(spec.groups.flatMap { $0.members.map(\.tensor) })
        XCTAssertEqual(members, ["blk.0.fc1.weight", "blk.0.fc1.bias", "blk.0.fc2.weight"])
    }
}

extension AlignReviewTests {
    /// Fifth review: a feed-forward module's own norm of the hidden width moves with its units whatever its name
    /// (torchscale's ffn_layernorm), fc2's bias does not; Llama-style up/gate biases join their group; SGD state
    /// stored as `momentum_buffer.<param>` is optimizer state.
    func testFeedForwardModuleVectorsAndOptimizerPrefixes() {
        func set(_ t: [(String, [Int])]) -> WeightSet {
            var w = WeightSet()
            for (n, s) in t { w.names.append(n); w.shapes[n] = s; w.values[n] = [Float](repeating: 1, count: s.reduce(1, *)) }
            return w
        }
        let timm = PermSpecInference.infer(set([("blocks.0.attn.qkv.weight", [24, 8]), ("blocks.0.mlp.fc1.weight", [16, 8]), ("blocks.0.mlp.fc1.bias", [16]),
                                                ("blocks.0.mlp.ffn_layernorm.weight", [16]), ("blocks.0.mlp.fc2.weight", [8, 16]), ("blocks.0.mlp.fc2.bias", [8])]))
        XCTAssertEqual(Set(timm.groups.flatMap { $0.members.map(\.tensor) }),
                       ["blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias", "blocks.0.mlp.ffn_layernorm.weight", "blocks.0.mlp.fc2.weight"])
        let llama = PermSpecInference.infer(set([("model.layers.0.mlp.up_proj.weight", [16, 8]), ("model.layers.0.mlp.up_proj.bias", [16]),
                                                 ("model.layers.0.mlp.gate_proj.weight", [16, 8]), ("model.layers.0.mlp.gate_proj.bias", [16]),
                                                 ("model.layers.0.mlp.down_proj.weight", [8, 16]), ("model.layers.0.mlp.down_proj.bias", [8])]))
        XCTAssertEqual(Set(llama.groups.flatMap { $0.members.map(\.tensor) }).subtracting(["model.layers.0.mlp.down_proj.weight"]),
                       ["model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.bias", "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.gate_proj.bias"])
        XCTAssertTrue(Saliency.isOptimizerState("momentum_buffer.fc1.weight", among: ["fc1.weight", "momentum_buffer.fc1.weight"]))
        XCTAssertFalse(Saliency.isOptimizerState("momentum_buffer.weight"))
        XCTAssertFalse(Saliency.isOptimizerState("momentum_buffer.0.weight", among: ["fc1.weight", "momentum_buffer.0.weight"]), "a module called momentum_buffer")
    }

    /// A fine-tune without a permutation: the feed-forward groups whose units the independence test found in place
    /// both ways are kept without an assignment when the alignment runs by default (a 1B model's went from 54 s to
    /// 2 s), and --align solves them, with the same (identity) result.
    func testAutoAlignmentKeepsUnitsTheIndependenceTestFoundInPlace() throws {
        let a = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        let b = Paths.corpus.appendingPathComponent("mlp_seed0_finetuned.safetensors").path
        func alignment(_ mode: String) throws -> [String: Any] {
            let r = try runWscan(["compare", a, b] + (mode == "always" ? ["--align"] : []) + ["--db", FileManager.default.temporaryDirectory
                .appendingPathComponent("wscan-keep-\(getpid()).db").path, "--json"])
            XCTAssertEqual(r.status, 0, r.err)
            let j = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
            XCTAssertEqual((j["verdict"] as? [String: Any])?["kind"] as? String, "finetuned")
            return try XCTUnwrap(j["alignment"] as? [String: Any])
        }
        let auto = try alignment("auto"), always = try alignment("always")
        XCTAssertEqual(auto["identity"] as? Bool, true)
        XCTAssertEqual(always["identity"] as? Bool, true)
        XCTAssertTrue((auto["notes"] as? [String] ?? []).contains { $0.hasPrefix("2 feed-forward groups kept in place") }, "\(auto)")
        XCTAssertFalse((always["notes"] as? [String] ?? []).contains { $0.contains("kept in place") }, "\(always)")
    }


    /// Above 2048 units the independence test matches greedily (best pairs first): a permutation always; between
    /// related units (every row's best column its own) the optimal matching itself; on unrelated similarities a total
    /// below the optimum but near it.
    func testGreedyMatchingIsAPermutationAndExactWhenRowsAgree() throws {
        var rng = SplitMix64(seed: 9)
        let n = 300
        let perm = Array(0..<n).shuffled(using: &rng)
        var c = (0..<(n * n)).map { _ in Float.random(in: -0.2..<0.2, using: &rng) }
        for i in 0..<n { c[i * n + perm[i]] = (i % 2 == 0 ? 1 : -1) * Float.random(in: 0.6..<1, using: &rng) }   // signs ignored
        XCTAssertEqual(IndependenceTest.greedyMatch(c, n: n)?.perm, perm)
        // unrelated: a permutation, within a few percent of the optimal total
        let r = (0..<(n * n)).map { _ in Float.random(in: -1..<1, using: &rng) }
        let g = try XCTUnwrap(IndependenceTest.greedyMatch(r, n: n))
        XCTAssertEqual(Set(g.perm), Set(0..<n))
        let opt = try LinearAssignment.solve(r.map { Double(abs($0)) }, rows: n, cols: n, maximize: true)
        XCTAssertLessThanOrEqual(g.total, opt.total + 1e-9)
        XCTAssertGreaterThan(g.total, 0.9 * opt.total)
        var nan = r; nan[5] = .nan
        XCTAssertNil(IndependenceTest.greedyMatch(nan, n: n))
    }

}

extension AlignReviewTests {
    /// llama.cpp's GGUF names (blk.N.ffn_gate/ffn_up/ffn_down) carry the feed-forward permutation groups: two GGUF
    /// files, the second a fine-tune with its units permuted, are a derivative with permuted units, and a permuted
    /// copy is a permuted copy (there was no permutation analysis between two GGUF files).
    func testGGUFNamesHavePermutationGroups() throws {
        _ = try runPython("""
        import numpy as np, gguf
        d = \(pyStr(tmp.url.path)); r = np.random.default_rng(1)
        A = {"token_embd.weight": r.standard_normal((32, 16)), "output_norm.weight": np.ones(16)}
        for l in range(3):
            A.update({f"blk.{l}.ffn_gate.weight": r.standard_normal((64, 16)), f"blk.{l}.ffn_up.weight": r.standard_normal((64, 16)),
                      f"blk.{l}.ffn_down.weight": r.standard_normal((16, 64)), f"blk.{l}.attn_norm.weight": np.ones(16)})
        def write(path, W):
            w = gguf.GGUFWriter(path, "llama")
            for k, v in W.items(): w.add_tensor(k, v.astype(np.float32))
            w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        P = dict(A)
        for l in range(3):
            p = r.permutation(64)
            for k in ("ffn_gate", "ffn_up"): P[f"blk.{l}.{k}.weight"] = A[f"blk.{l}.{k}.weight"][p]
            P[f"blk.{l}.ffn_down.weight"] = A[f"blk.{l}.ffn_down.weight"][:, p]
        F = {k: v + 0.05 * r.standard_normal(v.shape) for k, v in P.items()}
        write(d + "/a.gguf", A); write(d + "/perm.gguf", P); write(d + "/permft.gguf", F)
        """)
        for (b, kind) in [("perm.gguf", "permuted"), ("permft.gguf", "finetuned")] {
            let v = try compareVerdict(tmp.path("a.gguf"), tmp.path(b), db: tmp.path("g.db"))
            XCTAssertEqual(v["kind"] as? String, kind, "\(b): \(v)")
            if kind == "finetuned" { XCTAssertTrue((v["summary"] as? String ?? "").contains("hidden units permuted"), "\(v)") }
        }
    }
}
