import XCTest
@testable import WscanFormats
@testable import WscanAnalysis
@testable import WscanCatalog

final class CompareTests: XCTestCase {
    let tmp = TempDir()

    /// Tensors whose names differ (Hugging Face vs llama.cpp) and whose order differs are paired by their values
    /// within each shape, not by position: a GGUF copy in another order is identical, its F16 version re-encoded.
    func testRenamedReorderedTensorsPairByValues() throws {
        let st = tmp.path("hf.safetensors"), g32 = tmp.path("cpp32.gguf"), g16 = tmp.path("cpp16.gguf")
        _ = try runPython("""
        import numpy as np, gguf
        from safetensors.numpy import save_file
        rng = np.random.default_rng(5)
        t = {f"layer.{n}.weight": rng.standard_normal((8, 32)).astype(np.float32) for n in ["query", "key", "value", "output"]}
        save_file(t, \(pyStr(st)))
        for path, dt in [(\(pyStr(g32)), np.float32), (\(pyStr(g16)), np.float16)]:
            w = gguf.GGUFWriter(path, "bert")
            for i, n in enumerate(["output", "value", "key", "query"]):       # reversed order, other names
                w.add_tensor(f"blk.0.t{i}.weight", t[f"layer.{n}.weight"].astype(dt))
            w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        """)
        for (file, kind) in [(g32, "identical"), (g16, "reencoded")] {
            let r = try runWscan(["compare", st, file, "--db", tmp.path("rn.db"), "--json"])
            XCTAssertEqual(r.status, 0, r.err)
            let v = (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]
            XCTAssertEqual(v["kind"] as? String, kind, "\(file): \(v)")
        }
    }

    /// Two steps in a row: a LoRA-merged or pruned model then saved in F16/BF16 is still recognised (the pruning is
    /// exact up to the rounding, the difference's rank discounts the rounding energy); noise saved in F16 is not.
    func testDerivedThenStoredNarrower() throws {
        let dir = tmp.path("narrow")
        _ = try runPython("""
        import numpy as np, os, torch
        from safetensors.torch import load_file, save_file
        d = \(pyStr(dir)); os.makedirs(d, exist_ok=True)
        c = \(pyStr(Paths.corpus.path))
        for name in ["mlp_seed0_lora4", "mlp_seed0_pruned50"]:
            t = load_file(f"{c}/{name}.safetensors")
            for dt, tag in [(torch.float16, "f16"), (torch.bfloat16, "bf16")]:
                save_file({k: v.to(dt) for k, v in t.items()}, f"{d}/{name}_{tag}.safetensors")
        """)
        let base = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        for (file, kind, stored) in [("mlp_seed0_lora4_f16", "lora_merged", "F16"), ("mlp_seed0_lora4_bf16", "lora_merged", "BF16"),
                                     ("mlp_seed0_pruned50_f16", "pruned", "F16"), ("mlp_seed0_pruned50_bf16", "pruned", "BF16")] {
            let r = try runWscan(["compare", base, dir + "/\(file).safetensors", "--db", tmp.path("nw.db"), "--json"])
            XCTAssertEqual(r.status, 0, r.err)
            let v = (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]
            XCTAssertEqual(v["kind"] as? String, kind, "\(file): \(v)")
            XCTAssertTrue((v["summary"] as? String ?? "").hasSuffix("then stored as \(stored)"), "\(file): \(v)")
        }
    }

    /// One tensor saved alone from a model is a subset of it, not a fine-tune.
    func testSubsetVerdict() throws {
        let f = tmp.path("w.npy")
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import load_file
        np.save(\(pyStr(f)), load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))["fc2.weight"])
        """)
        let r = try runWscan(["compare", Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, f, "--db", tmp.path("s.db"), "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        let v = (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]
        XCTAssertEqual(v["kind"] as? String, "subset", "\(v)")
    }

    /// A copy with one NaN and one Inf is still compared (it failed with "cost matrix contains NaN"): the
    /// permutation analyses read them as 0 and say so.
    func testNonFiniteWeightsDoNotStopACompare() throws {
        let f = tmp.path("nan.safetensors")
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import load_file, save_file
        a = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0_permuted.safetensors").path)))
        a["fc1.weight"][0, 0] = np.nan; a["fc1.weight"][1, 1] = np.inf
        save_file(a, \(pyStr(f)))
        """)
        for extra in [[], ["--align"]] {
            let r = try runWscan(["compare", Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, f, "--db", tmp.path("n.db")] + extra)
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertTrue(r.err.contains("B fc1.weight: 2 NaN/±Inf weights read as 0"), r.err)
        }
    }

    func manifest() throws -> [String: Any] { try loadJSON(Paths.corpus.appendingPathComponent("MANIFEST.json")) as! [String: Any] }

    func catalogWithCorpus() throws -> Catalog {
        let cat = try Catalog(path: tmp.path("c.db"))
        _ = try Indexer(catalog: cat, options: .init()).run(paths: [Paths.corpus.path])
        return cat
    }

    func evaluator() throws -> MLPEvaluator {
        let data = try CheckpointOpener.open(Paths.corpus.appendingPathComponent("digits_test.npz").path)
        let x = try TensorData.floats(data, data.tensors.first { $0.name == "x" }!)
        let y = try TensorData.floats(data, data.tensors.first { $0.name == "y" }!).map { Int($0) }
        let w = try WeightSet.load(try CheckpointOpener.open(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path))
        return try MLPEvaluator(weights: w, x: x, y: y, features: 64)
    }

    /// Every relationship the corpus script planted is recovered with the right verdict.
    func testManifestRelationshipsRecovered() throws {
        let cat = try catalogWithCorpus()
        let m = try manifest()
        let models = m["models"] as! [String: [String: Any]]
        for rel in m["relationships"] as! [[String: Any]] {
            let a = try cat.resolve(models[rel["a"] as! String]!["file"] as! String)
            let bFile = models[rel["b"] as! String]!["file"] as! String
            let b = try cat.resolve(bFile.hasSuffix("index.json") ? (bFile as NSString).deletingLastPathComponent.components(separatedBy: "/").last! : bFile)
            var o = CompareRunner.Options(); o.connectivity = false
            let r = try CompareRunner.compare(catalog: cat, a: a, b: b, options: o)
            let expected = rel["relation"] as! String
            XCTAssertEqual(r.verdict.kind, expected, "\(a.name) vs \(b.name): \(r.verdict.summary)")
            switch expected {
            case "lora_merged":
                XCTAssertEqual(r.verdict.details["rank"], "4")
                XCTAssertEqual(r.verdict.details["modules"], "fc1.weight,fc2.weight")
            case "pruned":
                XCTAssertEqual(Double(r.verdict.details["sparsity"]!)!, 0.5, accuracy: 0.001)
                XCTAssertEqual(r.verdict.details["scope"], "global magnitude")
            case "reencoded": XCTAssertEqual(r.verdict.details["dtype"], "F16")
            default: break
            }
            if let p = r.independence?.pValue {
                if expected == "independent" { XCTAssertGreaterThan(p, 1e-3, "\(b.name): unrelated seeds must not look dependent") }
                else { XCTAssertLessThan(p, 1e-12, "\(b.name): related models must be dependent") }
            }
        }
    }

    /// Over the memory budget, compare judges pairs one at a time: the same per-tensor evidence and independence test
    /// (the MLP chain fits just under a budget one byte short of both models), the same verdicts, except that a
    /// permuted copy, which the alignment would undo, is a derivative whose units a note says are permuted.
    func testBoundedCompareMatchesFullComparison() throws {
        let cat = try catalogWithCorpus()
        let m = try manifest()
        let models = m["models"] as! [String: [String: Any]]
        let enc = JSONEncoder()
        enc.outputFormatting = .sortedKeys
        var kinds = Set<String>()
        for rel in m["relationships"] as! [[String: Any]] {
            let a = try cat.resolve(models[rel["a"] as! String]!["file"] as! String)
            let bFile = models[rel["b"] as! String]!["file"] as! String
            let b = try cat.resolve(bFile.hasSuffix("index.json") ? (bFile as NSString).deletingLastPathComponent.components(separatedBy: "/").last! : bFile)
            var o = CompareRunner.Options(); o.connectivity = false
            let full = try CompareRunner.compare(catalog: cat, a: a, b: b, options: o, store: false)
            let need = full.tensors.reduce(0) { $0 + 8 * $1.shape.reduce(1, *) }
            o.memoryBudget = need - 1
            let r = try CompareRunner.compare(catalog: cat, a: a, b: b, options: o, store: false)
            let what = "\(a.name) vs \(b.name)"
            XCTAssertTrue((r.notes ?? []).contains { $0.hasPrefix("bounded memory:") }, what)
            XCTAssertNil(r.alignment, what); XCTAssertNil(r.connectivity, what)
            XCTAssertEqual(try enc.encode(r.tensors), try enc.encode(full.tensors), "\(what): per-tensor evidence")
            XCTAssertEqual(r.independence?.pValue, full.independence?.pValue, what)
            if full.verdict.kind == "permuted" {
                XCTAssertEqual(r.verdict.kind, "finetuned", what)
                XCTAssertTrue((r.notes ?? []).contains { $0.contains("permuted relative to A's") }, "\(what): \(r.notes ?? [])")
            } else {
                XCTAssertEqual(r.verdict.kind, full.verdict.kind, "\(what): \(r.verdict.summary)")
            }
            kinds.insert(full.verdict.kind)
        }
        XCTAssertTrue(kinds.isSuperset(of: ["finetuned", "permuted", "independent", "pruned", "lora_merged", "reencoded"]), "\(kinds)")
        // No group fits: no independence test; the verdict falls back to similarity, and a note says why.
        var o = CompareRunner.Options(); o.connectivity = false; o.memoryBudget = 1
        let seed0 = try cat.resolve("mlp_seed0.safetensors")
        for (other, kind) in [("mlp_seed0_finetuned.safetensors", "finetuned"), ("mlp_seed1.safetensors", "independent")] {
            let r = try CompareRunner.compare(catalog: cat, a: seed0, b: try cat.resolve(other), options: o, store: false)
            XCTAssertNil(r.independence)
            XCTAssertEqual(r.verdict.kind, kind, r.verdict.summary)
            XCTAssertTrue((r.notes ?? []).contains { $0.contains("no feed-forward group fits the memory budget") }, "\(r.notes ?? [])")
        }
        // Without a test, a permuted copy looks unrelated element by element: the verdict says why there is no test
        // and that a permutation would read the same, at low confidence.
        let perm = try CompareRunner.compare(catalog: cat, a: seed0, b: try cat.resolve("mlp_seed0_permuted.safetensors"), options: o, store: false)
        XCTAssertEqual(perm.verdict.kind, "independent")
        XCTAssertLessThan(perm.verdict.confidence, 0.5)
        XCTAssertTrue(perm.verdict.summary.contains("memory budget") && perm.verdict.summary.contains("permuted"), perm.verdict.summary)
        // A test that cannot reach the threshold (one group of 8 units: p ≥ 1/8!) is not run.
        XCTAssertFalse(IndependenceTest.canReject(units: [8]))
        XCTAssertTrue(IndependenceTest.canReject(units: [8, 8, 8]))
        XCTAssertTrue(IndependenceTest.canReject(units: [64]))
        XCTAssertFalse(IndependenceTest.canReject(units: [2, 1]))
        // What needs both models at once is refused, not attempted.
        let b = try cat.resolve("mlp_seed0_permuted.safetensors")
        for set in [{ (o: inout CompareRunner.Options) in o.align = .always }, { $0.writeAligned = self.tmp.path("w.safetensors") },
                    { $0.connectivity = true; $0.evaluator = try? self.evaluator() }] {
            var o2 = o
            set(&o2)
            XCTAssertThrowsError(try CompareRunner.compare(catalog: cat, a: seed0, b: b, options: o2, store: false)) {
                XCTAssertTrue("\($0)".contains("needs both models in memory") && "\($0)".contains("--memory"), "\($0)")
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("w.safetensors")))
    }

    /// Fisher's combination in log space: the χ² survival against mpmath's regularized upper incomplete gamma
    /// (values computed with mpmath 1.3, relative 1e-9); 100 layers at the p-value floor give ~0, not 1 (the terms
    /// overflowed from 96 layers on, and a deep fine-tune read independent at confidence 0.99). A test whose layers
    /// cannot reach the threshold is no test: two layers of 10 and 2 units give at best 4.4e-6.
    func testChiSquareSurvivalAndTestPower() {
        for (x, dof, want) in [(10.0, 4, 0.0404276819945128), (100.0, 20, 1.25960845916609e-12), (50.0, 2, 1.3887943864964e-11),
                               (0.5, 6, 0.997838503310237)] {
            XCTAssertEqual(IndependenceTest.chiSquareSurvivalEven(x, dof: dof), want, accuracy: 1e-9 * want, "x \(x) dof \(dof)")
        }
        XCTAssertEqual(IndependenceTest.chiSquareSurvivalEven(138_155, dof: 200), 0, "1.4e-29677 underflows to 0, never 1")
        XCTAssertEqual(IndependenceTest.chiSquareSurvivalEven(0, dof: 8), 1)
        XCTAssertFalse(IndependenceTest.canReject(units: [10, 2]))
        XCTAssertTrue(IndependenceTest.canReject(units: Array(repeating: 256, count: 100)))
    }

    /// GPT-2 names (Conv1D layout) have no independence test: a fine-tune whose feed-forward units were permuted is
    /// judged on the aligned models, as a derivative with its units permuted, not as independent.
    func testPermutedFineTuneWithoutTestIsRelatedAfterAlignment() throws {
        let a = tmp.path("g_a.safetensors"), b = tmp.path("g_pft.safetensors"), db = tmp.path("g.db")
        _ = try runPython("""
        import torch
        from safetensors.torch import save_file
        g = torch.Generator().manual_seed(0)
        r = lambda *s: torch.randn(*s, generator=g) * 0.05
        d = 64; A = {"transformer.wte.weight": r(100, d), "transformer.wpe.weight": r(32, d)}
        for i in range(3):
            p = f"transformer.h.{i}."
            A[p+"attn.c_attn.weight"] = r(d, 3*d); A[p+"attn.c_attn.bias"] = r(3*d)
            A[p+"attn.c_proj.weight"] = r(d, d); A[p+"attn.c_proj.bias"] = r(d)
            A[p+"mlp.c_fc.weight"] = r(d, 4*d); A[p+"mlp.c_fc.bias"] = r(4*d)
            A[p+"mlp.c_proj.weight"] = r(4*d, d); A[p+"mlp.c_proj.bias"] = r(d)
            A[p+"ln_1.weight"] = torch.ones(d); A[p+"ln_2.weight"] = torch.ones(d)
        save_file(A, "\(a)")
        P = {k: v + 0.005 * torch.randn(v.shape, generator=g) for k, v in A.items()}
        for i in range(3):
            p = f"transformer.h.{i}.mlp."; perm = torch.randperm(4*d, generator=g)
            P[p+"c_fc.weight"] = P[p+"c_fc.weight"][:, perm].contiguous(); P[p+"c_fc.bias"] = P[p+"c_fc.bias"][perm].contiguous()
            P[p+"c_proj.weight"] = P[p+"c_proj.weight"][perm].contiguous()
        save_file(P, "\(b)")
        """)
        let v = try compareVerdict(a, b, db: db)
        XCTAssertEqual(v["kind"] as? String, "finetuned", "\(v)")
        XCTAssertTrue((v["summary"] as? String ?? "").contains("hidden units permuted"), "\(v)")
    }

    /// Bounded, when the groups that fit are read but give the test nothing (all-zero hidden layers match any way):
    /// no test, and the verdict says the layers are why, not the architecture.
    func testBoundedUninformativeLayersSayWhy() throws {
        let a = tmp.path("z_a.safetensors"), b = tmp.path("z_b.safetensors"), db = tmp.path("z.db")
        _ = try runPython("""
        import numpy as np; from safetensors.numpy import save_file
        r = np.random.default_rng(0)
        A = {"fc1.weight": np.zeros((64, 64), np.float32), "fc2.weight": np.zeros((32, 64), np.float32),
             "fc3.weight": r.standard_normal((10, 32)).astype(np.float32), "fc3.bias": r.standard_normal(10).astype(np.float32)}
        save_file(A, "\(a)"); save_file({k: v + 0.01 * r.standard_normal(v.shape).astype(np.float32) if k.startswith("fc3") else v for k, v in A.items()}, "\(b)")
        """)
        let cat = try Catalog(path: db)
        for p in [a, b] { XCTAssertEqual(try runWscan(["index", p, "--db", db]).status, 0) }
        var o = CompareRunner.Options(); o.connectivity = false
        let full = try CompareRunner.compare(catalog: cat, a: try cat.resolve(a), b: try cat.resolve(b), options: o, store: false)
        o.memoryBudget = full.tensors.reduce(0) { $0 + 8 * $1.shape.reduce(1, *) } - 1
        let r = try CompareRunner.compare(catalog: cat, a: try cat.resolve(a), b: try cat.resolve(b), options: o, store: false)
        XCTAssertNil(r.independence)
        XCTAssertTrue(r.verdict.summary.contains("too few or too narrow"), r.verdict.summary)
        XCTAssertTrue(full.verdict.summary.contains("too few or too narrow"), full.verdict.summary)
    }

    /// The CLI: --memory takes a size; a bounded run says so on stderr; --align over the budget is exit 1, one line.
    func testCompareMemoryOption() throws {
        let db = tmp.path("mem.db")
        let a = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, b = Paths.corpus.appendingPathComponent("mlp_seed0_finetuned.safetensors").path
        let ok = try runWscan(["compare", a, b, "--db", db, "--memory", "1K", "--json"])
        XCTAssertEqual(ok.status, 0, ok.err)
        let j = try JSONSerialization.jsonObject(with: Data(ok.out.utf8)) as! [String: Any]
        XCTAssertTrue((j["notes"] as? [String] ?? []).contains { $0.contains("bounded memory") })
        let bad = try runWscan(["compare", a, b, "--db", db, "--memory", "lots"])
        XCTAssertEqual(bad.status, 2, bad.err)
        let refused = try runWscan(["compare", a, b, "--db", db, "--memory", "1K", "--align"])
        XCTAssertEqual(refused.status, 1, refused.err)
        XCTAssertTrue(refused.err.contains("--align needs both models in memory"), refused.err)
        XCTAssertEqual(refused.err.split(separator: "\n").count, 1, refused.err)
    }

    /// The planted permutation is recovered exactly and the aligned copy computes the same function.
    func testPlantedPermutationRecoveredOnCorpus() throws {
        let cat = try catalogWithCorpus()
        let m = try manifest()
        let rel = (m["relationships"] as! [[String: Any]]).first { $0["relation"] as? String == "permuted" }!
        let planted = rel["perm"] as! [String: [Int]]
        var o = CompareRunner.Options(); o.connectivity = false; o.align = .always
        let out = tmp.path("aligned.safetensors")
        o.writeAligned = out
        let r = try CompareRunner.compare(catalog: cat, a: try cat.resolve("mlp_seed0.safetensors"), b: try cat.resolve("mlp_seed0_permuted.safetensors"), options: o)
        // B row i = A row P[i]  ⇒  A row j matches B row P⁻¹[j]
        for (layer, key) in [("fc1", "fc1.units"), ("fc2", "fc2.units")] {
            let p = planted[layer]!
            var inv = [Int](repeating: 0, count: p.count)
            for (i, v) in p.enumerated() { inv[v] = i }
            XCTAssertEqual(r.alignment?.perms[key], inv, layer)
        }
        let ev = try evaluator()
        let orig = try WeightSet.load(try CheckpointOpener.open(Paths.corpus.appendingPathComponent("mlp_seed0_permuted.safetensors").path))
        let aligned = try WeightSet.load(try CheckpointOpener.open(out))
        let base = try WeightSet.load(try CheckpointOpener.open(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path))
        let la = try ev.logits(aligned), lo = try ev.logits(orig)
        for (x, y) in zip(la, lo) { XCTAssertEqual(x, y, accuracy: 1e-9 * max(1, abs(y))) }
        for n in base.names { XCTAssertEqual(aligned.values[n]!, base.values[n]!, n) }
    }

    /// Two seeds: the loss barrier after alignment is well below the barrier before, and the before-curve equals
    /// the numpy reference the corpus script recorded.
    func testBarrierDropsAfterAlignment() throws {
        let cat = try catalogWithCorpus()
        let ref = (try manifest())["connectivity"] as! [String: Any]
        var o = CompareRunner.Options(); o.align = .always; o.evaluator = try evaluator()
        let r = try CompareRunner.compare(catalog: cat, a: try cat.resolve("mlp_seed0.safetensors"), b: try cat.resolve("mlp_seed1.safetensors"), options: o)
        let c = try XCTUnwrap(r.connectivity)
        let before = try XCTUnwrap(c.before.barrier), after = try XCTUnwrap(c.after?.barrier)
        XCTAssertEqual(before, ref["barrier_before"] as! Double, accuracy: 1e-6)
        for (x, y) in zip(c.before.loss!, ref["loss_before"] as! [Double]) { XCTAssertEqual(x, y, accuracy: 1e-6) }
        XCTAssertLessThan(after, 0.5 * before, "alignment must lower the barrier")
        XCTAssertLessThan(after, 3 * (ref["barrier_after"] as! Double) + 0.05, "close to the scipy-based reference")
    }

    /// A planted permutation of MiniLM's feed-forward units and attention heads is recovered exactly.
    func testPlantedPermutationRecoveredOnMiniLM() throws {
        guard FileManager.default.fileExists(atPath: Paths.minilm.path) else { throw XCTSkip("MiniLM not fetched (make minilm)") }
        let ck = try CheckpointOpener.open(Paths.minilm.path)
        let w = try WeightSet.load(ck)
        let spec = PermSpecInference.infer(w, numHeads: 12)
        XCTAssertEqual(spec.family, "bert")
        XCTAssertEqual(spec.groups.filter { $0.kind == "ffn" }.count, 6)
        XCTAssertEqual(spec.groups.filter { $0.kind == "heads" }.count, 6)
        var rng = SplitMix64(seed: 11)
        var planted: [String: [Int]] = [:]
        for g in spec.groups {
            var p = Array(0..<g.size)
            for i in stride(from: p.count - 1, to: 0, by: -1) { p.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            planted[g.name] = p
        }
        let permuted = Permuter.applyAll(w, spec: spec, perms: planted)
        let dir = tmp.url.appendingPathComponent("minilm-permuted")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var entries = permuted.entries()
        for t in ck.tensors where !t.dtype.isFloatingPoint { entries.append(.init(name: t.name, dtype: t.dtype, shape: t.shape, bytes: Array(ck.bytes(of: t)))) }
        try SafetensorsWriter.write(entries, to: dir.appendingPathComponent("model.safetensors").path)
        try FileManager.default.copyItem(at: Paths.minilm.deletingLastPathComponent().appendingPathComponent("config.json"), to: dir.appendingPathComponent("config.json"))
        let cat = try Catalog(path: tmp.path("m.db"))
        _ = try Indexer(catalog: cat, options: .init()).run(paths: [Paths.minilm.path, dir.appendingPathComponent("model.safetensors").path])
        var o = CompareRunner.Options(); o.connectivity = false; o.align = .always
        o.writeAligned = tmp.path("aligned.safetensors")
        let rows = try cat.checkpoints()
        let a = rows.first { $0.path == Paths.minilm.standardizedFileURL.path }!, b = rows.first { $0.path != a.path }!
        let r = try CompareRunner.compare(catalog: cat, a: a, b: b, options: o)
        XCTAssertEqual(r.verdict.kind, "permuted", r.verdict.summary)
        // A index i ↔ B index planted⁻¹[i]
        for (g, p) in planted {
            var inv = [Int](repeating: 0, count: p.count)
            for (i, v) in p.enumerated() { inv[v] = i }
            XCTAssertEqual(r.alignment?.perms[g], inv, g)
        }
        let back = try WeightSet.load(try CheckpointOpener.open(o.writeAligned!))
        for n in w.names { XCTAssertEqual(back.values[n]!, w.values[n]!, n) }
        XCTAssertLessThan(r.independence!.pValue, 1e-12)
    }

    func testSpearmanAndFisher() {
        XCTAssertEqual(IndependenceTest.spearman([0, 1, 2, 3], [0, 1, 2, 3]), 1)
        XCTAssertEqual(IndependenceTest.spearman([0, 1, 2, 3], [3, 2, 1, 0]), -1)
        // scipy.stats.spearmanr(range(10), [1,0,3,2,5,4,7,6,9,8], alternative="greater"): ρ = 0.939394, p = 2.7420264992568343e-05
        let rho = IndependenceTest.spearman(Array(0..<10), [1, 0, 3, 2, 5, 4, 7, 6, 9, 8])
        XCTAssertEqual(rho, 0.93939393939, accuracy: 1e-9)
        XCTAssertEqual(IndependenceTest.spearmanPValue(rho, n: 10), 2.7420264992568343e-05, accuracy: 1e-15)
        XCTAssertEqual(IndependenceTest.spearmanPValue(0, n: 50), 0.5, accuracy: 1e-12)
        // χ² survival, 4 dof at x = 9.4877: 0.05
        XCTAssertEqual(IndependenceTest.chiSquareSurvivalEven(9.487729, dof: 4), 0.05, accuracy: 1e-6)
    }

    func testRenamedTensorsPairByShapeAndPosition() throws {
        let a = try CheckpointOpener.open(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)
        var renamed = a.tensors
        for i in renamed.indices { renamed[i].name = "layers.\(i).param" }
        let (pairs, onlyA, onlyB) = Comparator.matchTensors(a.tensors, renamed)
        XCTAssertEqual(pairs.count, 6)
        XCTAssertTrue(pairs.allSatisfy { $0.2 == "shape+position" && $0.0.shape == $0.1.shape })
        XCTAssertTrue(onlyA.isEmpty && onlyB.isEmpty)
    }
}

/// Review findings on compare, lineage and reports: shared frozen matrices are never "independent", a reshaped
/// tensor is no subset, a permuted copy with an extra head is still a permuted copy, an evaluator that cannot run
/// costs only the barrier, a failed lineage input exits 1, and long tensor names do not break reports.
final class CompareReviewTests: XCTestCase {
    func testVerdictsOnPartlySharedModels() throws {
        let tmp = TempDir(), db = tmp.path("c.db")
        let a = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import load_file, save_file
        t = load_file(\(pyStr(a)))
        r = np.random.default_rng(5)
        h = dict(t); h["fc3.weight"] = (r.standard_normal(t["fc3.weight"].shape) * 0.1).astype(np.float32); h["fc3.bias"] = np.zeros_like(t["fc3.bias"])
        save_file(h, \(pyStr(tmp.path("head.safetensors"))))
        x = dict(t); x["fc2.weight"] = np.ascontiguousarray(t["fc2.weight"].T)
        save_file(x, \(pyStr(tmp.path("reshaped.safetensors"))))
        p = r.permutation(t["fc1.weight"].shape[0]); e = dict(t)
        e["fc1.weight"] = t["fc1.weight"][p]; e["fc1.bias"] = t["fc1.bias"][p]; e["fc2.weight"] = np.ascontiguousarray(t["fc2.weight"][:, p])
        e["extra.weight"] = r.standard_normal((4, 4)).astype(np.float32)
        save_file(e, \(pyStr(tmp.path("perm_extra.safetensors"))))
        s = {k: v for k, v in t.items() if not k.startswith("fc3")}
        save_file(s, \(pyStr(tmp.path("subset.safetensors"))))
        """)
        func verdict(_ b: String, _ extra: [String] = []) throws -> (kind: String, evidence: [String], json: [String: Any]) {
            let r = try runWscan(["compare", a, tmp.path(b), "--db", db, "--json"] + extra)
            XCTAssertEqual(r.status, 0, r.err)
            let j = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
            let v = j["verdict"] as! [String: Any]
            return (v["kind"] as! String, v["evidence"] as! [String], j)
        }
        let head = try verdict("head.safetensors")
        XCTAssertEqual(head.kind, "finetuned", "a replaced head over frozen layers is derived, not independent")
        XCTAssertTrue(head.evidence.contains { $0.contains("bit-identical") && $0.contains("fc1.weight") }, "\(head.evidence)")
        let reshaped = try verdict("reshaped.safetensors")
        // fc2 stored transposed: paired with itself, compared in A's layout
        XCTAssertEqual(reshaped.kind, "identical")
        XCTAssertTrue(reshaped.evidence.contains { $0.contains("1 matrix is stored transposed") }, "\(reshaped.evidence)")
        XCTAssertEqual(try verdict("perm_extra.safetensors").kind, "permuted")
        // The built-in evaluator needs fc3, which the subset lacks: the path keeps A's fc3 and a note says the λ = 1
        // end is not B alone.
        let sub = try verdict("subset.safetensors", ["--data", Paths.corpus.appendingPathComponent("digits_test.npz").path])
        XCTAssertEqual(sub.kind, "subset")
        XCTAssertTrue(((sub.json["notes"] as? [String]) ?? []).contains { $0.contains("only A has (fc3") }, "\(sub.json["notes"] ?? "")")
    }

    func testLineageWithAMissingFileExitsOne() throws {
        let tmp = TempDir(), db = tmp.path("c.db")
        for f in ["mlp_seed0.safetensors", "mlp_seed0_f16.safetensors"] {
            try FileManager.default.copyItem(at: Paths.corpus.appendingPathComponent(f), to: URL(fileURLWithPath: tmp.path(f)))
        }
        XCTAssertEqual(try runWscan(["index", tmp.path("."), "--db", db]).status, 0)
        try FileManager.default.removeItem(atPath: tmp.path("mlp_seed0_f16.safetensors"))
        let r = try runWscan(["lineage", "--db", db])
        XCTAssertEqual(r.status, 1, r.out + r.err)
        XCTAssertTrue(r.err.contains("not compared") && r.err.contains("mlp_seed0_f16.safetensors"), r.err)
    }

    func testReportWithVeryLongTensorNames() throws {
        let tmp = TempDir(), db = tmp.path("c.db"), ck = tmp.path("long.safetensors"), out = tmp.path("r")
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import save_file
        r = np.random.default_rng(0)
        save_file({"ünï/" + "x" * 300 + "/fc.weight": r.standard_normal((40, 30)).astype(np.float32),
                   "ünï/" + "x" * 300 + "/fc2.weight": r.standard_normal((40, 30)).astype(np.float32)}, \(pyStr(ck)))
        """)
        for args in [["analyze", "spectrum", ck], ["analyze", "sparsity", ck, "--grid", "0,0.5", "--no-refine"], ["analyze", "saliency", ck]] {
            let r = try runWscan(args + ["--db", db]); XCTAssertEqual(r.status, 0, r.err)
        }
        let r = try runWscan(["report", ck, "--db", db, "-o", out])
        XCTAssertEqual(r.status, 0, r.err)
        let md = try String(contentsOfFile: out + "/README.md", encoding: .utf8)
        let links = md.components(separatedBy: "](").dropFirst().map { String($0.prefix { $0 != ")" }) }.filter { !$0.hasPrefix("http") && !$0.hasPrefix("#") }
        XCTAssertFalse(links.isEmpty)
        for l in links {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + l), "README links \(l), which was not written")
            XCTAssertLessThan((l as NSString).lastPathComponent.utf8.count, 160, l)
        }
    }
}
