import XCTest
@testable import WscanFormats
@testable import WscanCatalog

final class ExportTests: XCTestCase {
    let tmp = TempDir()

    /// A deflated .npz member larger than the inflate budget (a quarter of the RAM; WSCAN_MAX_INFLATE here) is
    /// refused at once instead of exhausting memory; the same file under the budget is read.
    func testInflateBudget() throws {
        let f = tmp.path("zeros.npz")
        _ = try runPython("""
        import numpy as np
        np.savez_compressed(\(pyStr(f)), z=np.zeros(8 * 1024 * 1024 // 8))
        """)
        let db = tmp.path("z.db")
        var p = Process()
        func run(_ env: [String: String]) throws -> (Int32, String) {
            p = Process(); p.executableURL = Paths.wscanBinary; p.arguments = ["index", f, "--db", db, "--force"]
            p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
            let err = Pipe(); p.standardError = err; p.standardOutput = FileHandle.nullDevice
            try p.run(); p.waitUntilExit()
            return (p.terminationStatus, String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        }
        let small = try run(["WSCAN_MAX_INFLATE": "1000000"])
        XCTAssertEqual(small.0, 1); XCTAssertTrue(small.1.contains("more than the 1000000-byte budget"), small.1)
        XCTAssertEqual(try run([:]).0, 0, "8 MiB of zeros is a valid file")
    }

    /// NumPy string, bytes, datetime, timedelta and float128 arrays are valid files: catalogued without a decoder,
    /// with the right byte size (they were rejected as having trailing bytes).
    func testNpyOpaqueDtypesHaveTheirItemSizes() throws {
        let dir = tmp.path("npy")
        _ = try runPython("""
        import numpy as np, os
        d = \(pyStr(dir)); os.makedirs(d, exist_ok=True)
        np.save(d + "/u.npy", np.array(["abc", "defghij"], dtype="<U10"))
        np.save(d + "/s.npy", np.array([b"ab", b"c"], dtype="S3"))
        np.save(d + "/d.npy", np.array(["2020-01-01", "2021-02-03", "2022-03-04"], dtype="datetime64[D]"))
        np.save(d + "/t.npy", np.array([1, 2], dtype="timedelta64[ns]"))
        np.save(d + "/q.npy", np.array([1, 2], dtype=np.longdouble))
        """)
        for (f, bytes) in [("u", 80), ("s", 6), ("d", 24), ("t", 16), ("q", 32)] {
            let ck = try CheckpointOpener.open(dir + "/\(f).npy")
            XCTAssertEqual(ck.tensors.first?.dtype, .opaque, f)
            XCTAssertEqual(ck.tensors.first?.byteCount, bytes, f)
        }
    }

    /// An export that has to leave tensors out (no decoder for IQ4_NL) writes the rest but exits 1 and says so.
    func testIncompleteExportExitsOne() throws {
        let out = tmp.path("partial.safetensors")
        let r = try runWscan(["export", Paths.fixtures.appendingPathComponent("gguf/all_types.gguf").path, "--to", out, "--dtype", "F32",
                              "--db", tmp.path("e.db")])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("skipped iq4_nl") && r.err.contains("is incomplete: 1 tensors left out"), r.err)
        XCTAssertEqual(try CheckpointOpener.open(out).tensors.count, 19)
    }

    /// `wscan export` of a GGUF file to F32 safetensors equals the gguf package's dequantize() bit for bit.
    func testGGUFExportBitExactAgainstGGUFPackage() throws {
        let ck = try CheckpointOpener.open(Paths.fixtures.appendingPathComponent("gguf/all_types.gguf").path)
        let out = tmp.path("out.safetensors")
        let rep = try Exporter.export(ck, to: out, dtype: .F32, include: { _ in true })
        XCTAssertEqual(rep.skipped.keys.sorted(), ["iq4_nl"], "undecodable types are left out, not fatal")
        let got = try CheckpointOpener.open(out)
        let ref = try CheckpointOpener.open(Paths.fixtures.appendingPathComponent("gguf/all_types.ref.safetensors").path)
        let byName = Dictionary(uniqueKeysWithValues: got.tensors.map { ($0.name, $0) })
        XCTAssertGreaterThanOrEqual(ref.tensors.count, 19)
        for r in ref.tensors {
            guard let t = byName[r.name] else { XCTFail("missing \(r.name)"); continue }
            // Floating-point and quantized tensors become F32; integer tensors keep their type (same values).
            let src = ck.tensors.first { $0.name == r.name }!.dtype
            XCTAssertEqual(t.dtype, src.isFloatingPoint ? .f32 : src, r.name)
            XCTAssertEqual(t.shape, r.shape, r.name)
            XCTAssertEqual(try TensorData.floats(got, t).map(\.bitPattern), try TensorData.floats(ref, r).map(\.bitPattern), r.name)
        }
    }

    /// Torch checkpoints exported to safetensors equal what torch loads (non-contiguous views, shared storage, F16/BF16).
    func testTorchExportBitExact() throws {
        let ck = try CheckpointOpener.open(torchFixture("state.pt"))
        let out = tmp.path("state.safetensors")
        let rep = try Exporter.export(ck, to: out, dtype: .keep, include: { _ in true })
        XCTAssertEqual(Set(rep.converted.keys), ["transposed", "stepped"], "strided views are materialised")
        let got = try CheckpointOpener.open(out)
        let ref = try NpzReader.read(path: torchFixture("state.ref.npz"))
        let byName = Dictionary(uniqueKeysWithValues: got.tensors.map { ($0.name, $0) })
        XCTAssertEqual(byName["bf16"]?.dtype, .bf16, "keep keeps BF16")
        for r in ref.tensors {
            let t = try XCTUnwrap(byName[r.name], r.name)
            XCTAssertEqual(try TensorData.floats(got, t).map(\.bitPattern), try TensorData.floats(ref, r).map(\.bitPattern), r.name)
        }
    }

    func testBF16ConversionRoundsToNearestEven() {
        XCTAssertEqual(Exporter.bf16RoundNearestEven(1.0), 0x3F80)
        XCTAssertEqual(Exporter.bf16RoundNearestEven(Float(bitPattern: 0x3F80_8000)), 0x3F80)  // tie → even
        XCTAssertEqual(Exporter.bf16RoundNearestEven(Float(bitPattern: 0x3F81_8000)), 0x3F82)  // tie → even (up)
        XCTAssertEqual(Exporter.bf16RoundNearestEven(Float(bitPattern: 0x3F80_8001)), 0x3F81)
    }

    func testExportRefusesToOverwriteInput() throws {
        let src = tmp.path("m.safetensors")
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: src)
        let before = try Data(contentsOf: URL(fileURLWithPath: src))
        let ck = try CheckpointOpener.open(src)
        assertFormatError(.unsafe, "refusing") { try Exporter.export(ck, to: src, dtype: .F16, include: { _ in true }) }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: src)), before)
    }
}

final class ScanIndexTests: XCTestCase {
    let tmp = TempDir()

    func testObjectArraysInNpyAndMisnamedFilesAreScanned() throws {
        assertNoThrowOrUnsafe(torchFixture("evil_pickle.npy"))
        XCTAssertTrue(try PickleScanner.scanFile(path: torchFixture("evil_pickle.safetensors")).contains { $0.severity >= .high })
        XCTAssertTrue(try PickleScanner.scanFile(path: torchFixture("objarr.npy")).allSatisfy { $0.severity < .medium })
    }

    func assertNoThrowOrUnsafe(_ p: String) {
        do { _ = try CheckpointOpener.open(p); XCTFail("a dangerous object array must not load") }
        catch let e as UnsafeCheckpointError { XCTAssertTrue(e.findings.contains { $0.severity >= .high }) }
        catch { XCTFail("\(error)") }
    }

    func testIndexRecordsFindingsAndKeepsGoing() throws {
        let dir = tmp.url.appendingPathComponent("mixed")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for f in ["model.pt", "evil_os_system.pkl", "evil_member_gitkeep.pt", "data.joblib"] {
            try FileManager.default.copyItem(atPath: torchFixture(f), toPath: dir.appendingPathComponent(f).path)
        }
        let cat = try Catalog(path: tmp.path("c.db"))
        _ = try Indexer(catalog: cat, options: .init()).run(paths: [dir.path])
        let rows = Dictionary(uniqueKeysWithValues: try cat.checkpoints().map { ($0.name, $0) })
        XCTAssertEqual(rows["mixed/model.pt"]?.status, "ok", "a generic file name is shown with its folder")
        XCTAssertGreaterThan(rows["mixed/model.pt"]?.tensorCount ?? 0, 0)
        XCTAssertEqual(rows["evil_os_system.pkl"]?.status, "unsafe")
        XCTAssertEqual(rows["evil_os_system.pkl"]?.safety, "dangerous")
        XCTAssertEqual(rows["evil_member_gitkeep.pt"]?.status, "unsafe")
        XCTAssertEqual(rows["evil_member_gitkeep.pt"]?.tensorCount, 0, "tensors of a dangerous file are not loaded")
        let f = try cat.findings(checkpoint: rows["evil_os_system.pkl"]!.id)
        XCTAssertTrue(f.contains { $0.what == "posix.system" && ($0.severity == "critical" || $0.severity == "high") })
        // With --trust the tensors are read (and still nothing runs).
        var o = Indexer.Options(); o.trust = true; o.force = true
        _ = try Indexer(catalog: cat, options: o).run(paths: [dir.appendingPathComponent("evil_member_gitkeep.pt").path])
        XCTAssertEqual(try cat.resolve("evil_member_gitkeep.pt").safety, "dangerous")
    }

    func testScanCLIExitCodes() throws {
        guard FileManager.default.isExecutableFile(atPath: Paths.wscanBinary.path) else { throw XCTSkip("binary not built") }
        XCTAssertEqual(try runWscan(["scan", torchFixture("model.pt")]).status, 0)
        let bad = try runWscan(["scan", torchFixture("evil_eval.pkl"), "--json"])
        XCTAssertEqual(bad.status, 1)
        let j = try JSONSerialization.jsonObject(with: Data(bad.out.utf8)) as! [[String: Any]]
        XCTAssertEqual(j[0]["verdict"] as? String, "dangerous")
        XCTAssertEqual(try runWscan(["scan", tmp.path("nope.pt")]).status, 2)
        // "clean" says what it rests on: a data-only format, or bytes scanned as a possible pickle
        let junk = tmp.path("notes.txt")
        try Data("just some text\n".utf8).write(to: URL(fileURLWithPath: junk))
        let st = Paths.repo.appendingPathComponent("corpus/mlp_seed0.safetensors").path
        let r = try runWscan(["scan", st, junk, torchFixture("model.pt"), "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        let notes = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]])
        XCTAssertEqual(notes.map { $0["verdict"] as? String }, ["clean", "clean", "clean"])
        XCTAssertEqual(notes[0]["note"] as? String, "safetensors: tensors and metadata only, nothing to unpickle")
        XCTAssertTrue((notes[1]["note"] as? String ?? "").hasPrefix("not a checkpoint format wscan recognises"), "\(notes[1])")
        XCTAssertNil(notes[2]["note"])       // a torch zip: its pickle was scanned
        let text = try runWscan(["scan", st])
        XCTAssertTrue(text.out.contains("CLEAN      \(st)  (safetensors: tensors and metadata only, nothing to unpickle)"), text.out)
    }
}

extension ExportTests {
    /// `export --dtype keep` keeps views and big-endian arrays of types safetensors has in those types (an I64
    /// transpose went through Float: 16777217 read 16777216; an F64 1e300 became inf); the values read back by torch
    /// and numpy equal the originals exactly.
    func testViewsAndBigEndianKeepTheirType() throws {
        let dir = TempDir(), pt = dir.path("v.pt"), npy = dir.path("be.npy"), f = dir.path("f.npy"), db = dir.path("e.db")
        _ = try runPython("""
        import torch, numpy as np
        torch.save({"ids_t": torch.tensor([[16777217, 2**40 + 1], [123456789, -3]]).t(),
                    "d_t": torch.tensor([[1.0000000001, 2.], [3., 1e300]], dtype=torch.float64).t(),
                    "h_t": torch.tensor([[1.5, 2.], [3., 65504.]], dtype=torch.float16).t()}, "\(pt)")
        np.save("\(npy)", np.array([16777217, 2**53 + 1], ">i8"))
        np.save("\(f)", np.asfortranarray(np.array([[1.0000000001, 2.], [3., 1e300]])))
        """)
        for (src, name) in [(pt, "v"), (npy, "be"), (f, "f")] {
            let out = dir.path(name + ".safetensors")
            let r = try runWscan(["export", src, "--db", db, "--to", out, "--dtype", "keep"])
            XCTAssertEqual(r.status, 0, r.err)
        }
        let check = try runPython("""
        import torch, numpy as np
        from safetensors.numpy import load_file
        v = load_file("\(dir.path("v.safetensors"))"); ref = torch.load("\(pt)")
        ok = all(v[k].dtype == ref[k].numpy().dtype and np.array_equal(v[k], ref[k].numpy()) for k in ref)
        be = load_file("\(dir.path("be.safetensors"))"); fb = load_file("\(dir.path("f.safetensors"))")
        ok = ok and be[list(be)[0]].dtype == np.int64 and list(be[list(be)[0]]) == [16777217, 2**53 + 1]
        ok = ok and np.array_equal(fb[list(fb)[0]], np.load("\(f)"))
        print(ok)
        """)
        XCTAssertEqual(check.trimmingCharacters(in: .whitespacesAndNewlines), "True")
        // a little-endian C64 view is kept too; an F64 view pruned keeps the doubles it does not prune
        let c = dir.path("c.npz"), t = dir.path("t.pt")
        _ = try runPython("""
        import numpy as np, torch
        a = (np.arange(6) + 1j * np.arange(6)).astype("<c8").reshape(2, 3)
        np.savez("\(c)", cF=np.asfortranarray(a))
        torch.manual_seed(0); torch.save({"fc.weight": torch.randn(6, 8, dtype=torch.float64).t()}, "\(t)")
        """)
        XCTAssertEqual(try runWscan(["export", c, "--db", db, "--to", dir.path("c.safetensors")]).status, 0)
        let p = dir.path("t.pruned.safetensors")
        XCTAssertEqual(try runWscan(["analyze", "sparsity", t, "--db", db, "--grid", "0,0.5", "--no-refine", "--write-pruned", p, "--at", "0.5"]).status, 0)
        let back = try runPython("""
        import numpy as np, torch
        from safetensors.numpy import load_file
        c = load_file("\(dir.path("c.safetensors"))")["cF"]; ref = np.load("\(c)")["cF"]
        w = load_file("\(p)")["fc.weight"]; src = torch.load("\(t)")["fc.weight"].numpy()
        kept = w != 0
        print(c.dtype == np.complex64 and np.array_equal(c, ref), int(kept.sum()), bool(np.array_equal(w[kept], src[kept])))
        """)
        XCTAssertEqual(back.trimmingCharacters(in: .whitespacesAndNewlines), "True 24 True")
    }
}

