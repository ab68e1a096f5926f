import XCTest
@testable import WscanAnalysis
@testable import WscanFormats

final class PickleTests: XCTestCase {
    func scanFile(_ name: String) throws -> [Finding] { try PickleScanner.scanFile(path: torchFixture(name)) }

    func assertFlagged(_ name: String, _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let f = try scanFile(name)
        XCTAssertTrue(f.contains { $0.what == what && $0.severity >= .high }, "\(name): \(f)", file: file, line: line)
    }

    func parse(_ bytes: [UInt8]) throws -> PickleGraph { try bytes.withUnsafeBytes { try PickleVM.parse($0) } }

    // MARK: malicious

    func testOsSystem() throws { try assertFlagged("evil_os_system.pkl", "posix.system") }
    func testOsSystemProtocol0() throws { try assertFlagged("evil_os_system_p0.pkl", "posix.system") }
    func testEval() throws { try assertFlagged("evil_eval.pkl", "builtins.eval") }
    func testExec() throws { try assertFlagged("evil_exec.pkl", "builtins.exec") }
    func testPopen() throws { try assertFlagged("evil_popen.pkl", "subprocess.Popen") }
    func testRunpy() throws { try assertFlagged("evil_runpy.pkl", "runpy._run_code") }
    func testWebbrowser() throws { try assertFlagged("evil_webbrowser.pkl", "webbrowser.open") }
    func testSocket() throws { try assertFlagged("evil_socket.pkl", "socket.create_connection") }

    func testCallIsReported() throws {
        let f = try scanFile("evil_os_system.pkl")
        XCTAssertTrue(f.contains { $0.detail.contains("called by REDUCE") }, "\(f)")
        XCTAssertTrue(f.contains { $0.severity == .critical })
    }

    // MARK: evasions

    func testStackGlobalThroughMemo() throws { try assertFlagged("evil_stack_global_memo.pkl", "posix.system") }
    func testConcatenatedPickles() throws {
        try assertFlagged("evil_concat.pkl", "posix.system")
        let f = try scanFile("evil_concat.pkl")
        XCTAssertTrue(f.contains { $0.what == "posix.system" && $0.offset > 10 })
    }
    func testMisleadingNpyExtension() throws {
        try assertFlagged("evil_pickle.npy", "posix.system")
        XCTAssertThrowsError(try CheckpointOpener.open(torchFixture("evil_pickle.npy"))) { XCTAssertTrue($0 is UnsafeCheckpointError, "\($0)") }
    }
    func testMisleadingSafetensorsExtension() throws {
        try assertFlagged("evil_pickle.safetensors", "builtins.eval")
        XCTAssertThrowsError(try CheckpointOpener.open(torchFixture("evil_pickle.safetensors"))) { XCTAssertTrue($0 is UnsafeCheckpointError, "\($0)") }
    }
    func testMissingProtoMagic() throws { try assertFlagged("evil_no_proto.bin", "posix.system") }
    /// torch.load unpickles data.pkl whatever its first opcode: a data.pkl (and a bare .pkl) without PROTO, starting
    /// with SHORT_BINUNICODE or NEWTRUE, is scanned and refused; a member name with a line break cannot forge a
    /// "CLEAN" line in `wscan scan` output.
    func testDataPklWithoutProtoAndForgedOutputLines() throws {
        let tmp = TempDir()
        let dir = tmp.path("bypass")
        _ = try runPython("""
        import torch, zipfile, io, os
        os.makedirs(\(pyStr(dir)), exist_ok=True)
        b = io.BytesIO(); torch.save({"w": torch.zeros(2)}, b)
        payloads = {"noproto": b"\\x8c\\x05posix\\x8c\\x06system\\x93\\x8c\\x04true\\x85R.",
                    "newtrue": b"\\x880cposix\\nsystem\\n(S'true'\\ntR."}
        for name, pk in payloads.items():
            zin = zipfile.ZipFile(io.BytesIO(b.getvalue()))
            with zipfile.ZipFile(os.path.join(\(pyStr(dir)), name + ".pt"), "w", zipfile.ZIP_STORED) as z:
                for it in zin.infolist():
                    data = pk if it.filename.endswith("data.pkl") else zin.read(it.filename)
                    z.writestr(it, data)
            open(os.path.join(\(pyStr(dir)), name + ".pkl"), "wb").write(pk)
        with zipfile.ZipFile(os.path.join(\(pyStr(dir)), "forge.pt"), "w") as z:
            z.writestr("x\\nCLEAN      forged.pt\\n.pkl", payloads["noproto"])
        """)
        let r = try runWscan(["scan", dir])
        XCTAssertEqual(r.status, 1, r.out)
        for name in ["noproto.pt", "newtrue.pt", "noproto.pkl", "newtrue.pkl", "forge.pt"] {
            XCTAssertTrue(r.out.contains("DANGEROUS  \(dir)/\(name)"), "\(name): \(r.out)")
        }
        XCTAssertFalse(r.out.split(separator: "\n").contains { $0.hasPrefix("CLEAN") }, r.out)
        let idx = try runWscan(["index", dir, "--db", tmp.path("b.db")])
        XCTAssertEqual(idx.status, 1)
        XCTAssertEqual(idx.err.split(separator: "\n").filter { $0.contains("unsafe pickle") }.count, 5, idx.err)
    }

    /// Clean files stay clean: safetensors files (not pickles whatever their first byte), the corpus, and torch.save
    /// dumps with many storages, some of whose random first bytes look like text opcodes.
    func testCleanFilesAreNotFlagged() throws {
        let tmp = TempDir()
        let dir = tmp.path("clean")
        _ = try runPython("""
        import torch, os
        os.makedirs(\(pyStr(dir)), exist_ok=True)
        for seed in range(5):
            torch.manual_seed(seed)
            m = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(60)])
            torch.save(m.state_dict(), os.path.join(\(pyStr(dir)), f"seq{seed}.pt"))
        """)
        for d in [dir, Paths.corpus.path] {
            let r = try runWscan(["scan", d])
            XCTAssertEqual(r.status, 0, r.out)
            XCTAssertFalse(r.out.contains("SUSPICIOUS") || r.out.contains("DANGEROUS"), r.out)
        }
        XCTAssertEqual(try runWscan(["index", dir, "--db", tmp.path("c.db")]).status, 0)
    }

    /// Imports that download or run code (torch.hub.load, cProfile.run, doctest.debug_script,
    /// setuptools.sandbox.run_setup) are critical, not merely suspicious.
    func testCodeRunningImportsAreCritical() throws {
        let tmp = TempDir()
        for (m, n) in [("torch.hub", "load"), ("cProfile", "run"), ("doctest", "debug_script"), ("setuptools.sandbox", "run_setup")] {
            // GLOBAL module\nname\n, an argument tuple, REDUCE, STOP (protocol 0 text; nothing here runs it).
            let bytes = Array("c\(m)\n\(n)\n(S'x'\ntR.".utf8)
            let path = tmp.write("\(m).\(n).pkl", bytes)
            let f = try PickleScanner.scanFile(path: path)
            XCTAssertEqual(PickleScanner.worst(f), .critical, "\(m).\(n): \(f)")
        }
    }

    func testNestedPickleLoads() throws {
        let f = try scanFile("evil_nested_loads.pkl")
        XCTAssertTrue(f.contains { $0.what == "_pickle.loads" && $0.severity >= .high }, "\(f)")
        XCTAssertTrue(f.contains { $0.what == "posix.system" && $0.member.contains("embedded") }, "\(f)")
    }
    func testMisleadingZipMemberName() throws {
        let f = try scanFile("evil_member_gitkeep.pt")
        XCTAssertTrue(f.contains { $0.what == "posix.system" && $0.severity >= .high })
    }

    // MARK: benign

    func testTorchCheckpointsScanClean() throws {
        for n in ["state.pt", "model.pt", "small.pt"] {
            let f = try scanFile(n)
            XCTAssertTrue(f.allSatisfy { $0.severity < .medium }, "\(n): \(f)")
        }
    }
    func testNumpyObjectArrayClean() throws {
        let f = try scanFile("objarr.npy")
        XCTAssertTrue(f.allSatisfy { $0.severity < .medium }, "\(f)")
    }
    func testJoblibClean() throws {
        let p = torchFixture("data.joblib")
        guard FileManager.default.fileExists(atPath: p) else { throw XCTSkip("joblib fixture not generated") }
        let f = try scanFile("data.joblib")
        XCTAssertTrue(f.isEmpty, "\(f)")
        let ck = try CheckpointOpener.open(p)
        XCTAssertEqual(ck.format, .pickle)
        XCTAssertEqual(ck.tensors.count, 0)
    }
    func testLegacyTorchScanClean() throws {
        let f = try scanFile("legacy.pt")
        XCTAssertTrue(f.allSatisfy { $0.severity < .medium }, "\(f)")
    }

    // MARK: malformed

    func assertThrowsQuickly(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let st = try Storage(mapping: torchFixture(name))
        let t0 = Date()
        XCTAssertThrowsError(try PickleVM.parse(st.buffer), file: file, line: line) { e in
            guard let f = e as? FormatError else { return XCTFail("\(e)", file: file, line: line) }
            XCTAssertEqual(f.kind, .pickle, file: file, line: line)
            XCTAssertFalse(f.message.contains("\n"), file: file, line: line)
            XCTAssertTrue(f.message.contains("offset"), f.message, file: file, line: line)
        }
        XCTAssertThrowsError(try CheckpointOpener.open(torchFixture(name)), file: file, line: line)
        _ = try scanFile(name) // the scanner reports, never crashes
        XCTAssertLessThan(Date().timeIntervalSince(t0), 5, file: file, line: line)
    }

    func testTruncated() throws { try assertThrowsQuickly("bad_truncated.pkl") }
    func testBadOpcode() throws { try assertThrowsQuickly("bad_opcode.pkl") }
    func testRecursionBomb() throws {
        try assertThrowsQuickly("bad_recursion_bomb.pkl")
        XCTAssertTrue(try scanFile("bad_recursion_bomb.pkl").contains { $0.what == "analysis limit" })
    }
    func testMemoMissing() throws { try assertThrowsQuickly("bad_memo_missing.pkl") }
    func testMemoHugeIndex() throws { try assertThrowsQuickly("bad_memo_huge.pkl") }
    func testHugeUnicodeLength() throws { try assertThrowsQuickly("bad_huge_unicode.pkl") }
    func testStackUnderflow() throws { try assertThrowsQuickly("bad_underflow.pkl") }

    func testMarkRecursionBomb() throws {
        let bytes: [UInt8] = [0x80, 2] + [UInt8](repeating: 0x28, count: 100_000) + [UInt8](repeating: 0x6C, count: 100_000) + [0x2E]
        XCTAssertThrowsError(try parse(bytes))
    }

    // MARK: VM values

    func testValues() throws {
        // {'a': [1, -2, 3.5, None, True], 'b': (b'xy', 'é'), 'big': 2**70} protocol 2 and protocol 0
        let g = try parse([0x80, 0x02, 0x7D, 0x71, 0x00, 0x28, 0x58, 0x01, 0, 0, 0, 0x61, 0x5D, 0x28, 0x4B, 0x01,
                           0x4A, 0xFE, 0xFF, 0xFF, 0xFF, 0x47, 0x40, 0x0C, 0, 0, 0, 0, 0, 0, 0x4E, 0x88, 0x65,
                           0x58, 0x03, 0, 0, 0, 0x62, 0x69, 0x67, 0x8A, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x75, 0x2E])
        guard let items = g.dictItems(g.root) else { return XCTFail() }
        XCTAssertEqual(items.count, 2)
        XCTAssertEqual(g.describe(items[0].value), "[1, -2, 3.5, None, True]")
        XCTAssertEqual(g.describe(items[1].value), "0x400000000000000000")
        let p0 = try parse(Array("(lp0\nI1\naL-5L\naF2.5\naS'a\\nb'\naVx\\u00e9\na.".utf8))
        XCTAssertEqual(p0.describe(p0.root), "[1, -5, 2.5, 'a\nb', 'xé']")
    }
}

final class PickleFuzzTests: XCTestCase {
    /// Random byte mutations of real fixtures: the VM and scanner must fail cleanly, never crash or hang.
    func testMutationsNeverCrash() throws {
        var seed: UInt64 = 0x9E3779B97F4A7C15
        func next() -> UInt64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
        let names = ["evil_os_system.pkl", "evil_nested_loads.pkl", "data.joblib", "objarr.npy", "evil_os_system_p0.pkl", "legacy.pt"]
        let t0 = Date()
        for n in names {
            let st = try Storage(mapping: torchFixture(n))
            let orig = Array(st.buffer)
            for _ in 0..<400 {
                var b = orig
                for _ in 0..<(1 + Int(next() % 4)) {
                    let k = Int(next() % UInt64(b.count))
                    b[k] = UInt8(truncatingIfNeeded: next())
                }
                if next() % 5 == 0 { b.removeLast(Int(next() % UInt64(b.count))) }
                b.withUnsafeBytes { raw in
                    _ = try? PickleVM.parse(raw)
                    _ = PickleScanner.scan(raw, member: n)
                }
            }
        }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 30)
    }

    func testTorchDataPklMutations() throws {
        // Corrupt the data.pkl of a real checkpoint in place (same length) and open it: errors only.
        let path = torchFixture("state.pt")
        let orig = try Data(contentsOf: URL(fileURLWithPath: path))
        guard let r = orig.range(of: Data("data.pkl".utf8)) else { return XCTFail() }
        let start = r.upperBound   // local header name ends here; data follows (no extra field for torch's first entry?)
        var seed: UInt64 = 12345
        func next() -> UInt64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
        let tmp = NSTemporaryDirectory() + "wscan-fuzz-\(getpid()).pt"
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        for _ in 0..<150 {
            var d = orig
            let k = start + Int(next() % 300)
            d[k] = UInt8(truncatingIfNeeded: next())
            try d.write(to: URL(fileURLWithPath: tmp))
            if let ck = try? CheckpointOpener.open(tmp) {
                for t in ck.tensors { _ = try? TensorData.floats(ck, t) }
            }
        }
    }
}

/// Inputs the fuzzer (`make fuzz`) found crashing a reader, kept as regression cases: each must be refused with a
/// FormatError naming the problem, never crash.
final class FuzzRegressionTests: XCTestCase {
    func testFuzzerFindingsAreRefusedCleanly() throws {
        let dir = Paths.fixtures.appendingPathComponent("fuzz")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        XCTAssertFalse(files.isEmpty)
        let expected = ["zip64_locator_in_tiny_file.pt": "ZIP64 end record out of range"]
        for f in files {
            XCTAssertThrowsError(try CheckpointOpener.open(dir.appendingPathComponent(f).path), f) { e in
                XCTAssertTrue(e is FormatError, "\(f): \(e)")
                if let want = expected[f] { XCTAssertTrue("\(e)".contains(want), "\(f): \(e)") }
            }
        }
    }
}

/// Review findings on discovery, pickles, hashes and validation: nothing a folder holds is passed over, dotted
/// pickle names are classified at every tail, views hash with their layout, and odd headers are refused.
final class DiscoveryReviewTests: XCTestCase {
    func testFolderWalksFindEveryPickleAndDottedNamesAreCritical() throws {
        let tmp = TempDir(), root = tmp.path("m")
        _ = try runPython("""
        import os, pickle, json, torch
        root = \(pyStr(root)); os.makedirs(root + "/s4"); os.makedirs(root + "/noext"); os.makedirs(root + "/real")
        class E:
            def __reduce__(self): return (os.system, ("true",))
        open(root + "/s4/evil.bin", "wb").write(pickle.dumps(E(), protocol=2))
        json.dump({"weight_map": {"a": "evil.bin", "b": "model.safetensors.index.json"}}, open(root + "/s4/model.safetensors.index.json", "w"))
        open(root + "/noext/evil", "wb").write(pickle.dumps(E(), protocol=4))
        torch.save({"w": torch.zeros(2)}, root + "/noext/checkpoint_best.tar")
        # protocol 4: STACK_GLOBAL "torch" "serialization.os.system" (reaches os.system through torch.serialization)
        p = b"\\x80\\x04\\x8c\\x05torch\\x94\\x8c\\x17serialization.os.system\\x94\\x93\\x8c\\x04true\\x85R."
        open(root + "/real/dotted.pkl", "wb").write(p)
        os.symlink(root + "/real", root + "/../link")
        """)
        let r = try runWscan(["scan", root, "--json"])
        XCTAssertEqual(r.status, 1)
        for f in ["s4/evil.bin", "noext/evil", "noext/checkpoint_best.tar", "real/dotted.pkl"] {
            XCTAssertTrue(r.out.contains(root + "/" + f), "\(f) was not scanned: \(r.out.prefix(600))")
        }
        let dotted = try runWscan(["scan", tmp.path("link")])       // a folder given as a link is walked
        XCTAssertEqual(dotted.status, 1, dotted.out)
        XCTAssertTrue(dotted.out.contains("[critical]") && dotted.out.contains("serialization.os.system"), dotted.out)
    }

    /// A Hugging Face cache holds each file as a content-named blob and as a named link into it: one checkpoint,
    /// under the link's name.
    func testHuggingFaceCacheIsIndexedOnce() throws {
        let tmp = TempDir(), db = tmp.path("c.db")
        let blobs = tmp.path("hub/models--x/blobs"), snap = tmp.path("hub/models--x/snapshots/r1")
        try FileManager.default.createDirectory(atPath: blobs, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: snap, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: blobs + "/abc123")
        try FileManager.default.createSymbolicLink(atPath: snap + "/model.safetensors", withDestinationPath: "../../blobs/abc123")
        XCTAssertEqual(try runWscan(["index", tmp.path("hub"), "--db", db]).status, 0)
        let q = try runWscan(["query", "SELECT path FROM checkpoints", "--db", db, "--json"])
        XCTAssertEqual(q.status, 0, q.err)
        XCTAssertTrue(q.out.contains("snapshots/r1/model.safetensors") && !q.out.contains("blobs/abc123"), q.out)
    }

    func testViewsHashWithTheirLayoutAndOddHeadersAreRefused() throws {
        let tmp = TempDir(), db = tmp.path("c.db")
        _ = try runPython("""
        import torch, numpy as np, json, struct, zipfile
        d = \(pyStr(tmp.path("")))
        w = torch.arange(1024, dtype=torch.float32).reshape(32, 32)
        torch.save({"w": w, "wt": w.t()}, d + "/tr.pt")
        def st(name, header):
            h = json.dumps(header).encode() if not isinstance(header, bytes) else header
            open(d + "/" + name, "wb").write(struct.pack("<Q", len(h)) + h + b"\\0" * 8)
        st("booldim.safetensors", {"a": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}})
        st("floatoff.safetensors", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8.0]}})
        st("dupesc.safetensors", b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\\\\u0061":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}')
        st("nul.safetensors", {"a\\u0000b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a\\u0000c": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})
        import io
        with zipfile.ZipFile(d + "/odd.npz", "w") as z:
            for name in ["x.npy", "noext", "a/b/c"]:
                b = io.BytesIO(); np.save(b, np.arange(6, dtype=np.float32)); z.writestr(name, b.getvalue())
        """)
        XCTAssertEqual(try runWscan(["index", tmp.path("tr.pt"), "--db", db]).status, 0)
        let dupes = try runWscan(["dupes", "--db", db, "--min-bytes", "1"])
        XCTAssertFalse(dupes.out.contains("wt"), "a matrix and its transpose share storage bytes, not content: \(dupes.out)")
        for (f, why) in [("booldim", "bad dimension true"), ("floatoff", "data_offsets must be two non-negative integers"),
                         ("dupesc", "duplicate tensor name 'a'"), ("nul", "contains a NUL character")] {
            let r = try runWscan(["show", tmp.path(f + ".safetensors"), "--db", db])
            XCTAssertEqual(r.status, 1, f); XCTAssertTrue(r.err.contains(why), "\(f): \(r.err)")
        }
        let npz = try runWscan(["show", tmp.path("odd.npz"), "--db", db, "--tensors", "--json"])
        XCTAssertEqual(npz.status, 0, npz.err)
        let names = ((try JSONSerialization.jsonObject(with: Data(npz.out.utf8)) as! [String: Any])["tensors"] as! [[String: Any]]).map { $0["name"] as! String }
        XCTAssertEqual(Set(names), ["x", "noext", "a/b/c"], "numpy.load's names")
    }
}

/// Regressions a review of the day's changes found: each was reproduced before its fix.
final class DayReviewRegressionTests: XCTestCase {
    func testOddInputsNeitherTrapNorFailWalks() throws {
        let tmp = TempDir(), db = tmp.path("c.db"), walk = tmp.path("walk")
        _ = try runPython("""
        import os, zipfile, pickle, io, numpy as np
        w = \(pyStr(walk)); os.makedirs(w)
        open(w + "/dots", "wb").write(b"\\x80\\x02ctorch\\n.\\n.")             # GLOBAL torch + "." (a name of dots)
        with zipfile.ZipFile(w + "/logs.zip", "w") as z: z.writestr("run/metadata.pkl", pickle.dumps({"a": 1}))
        b = io.BytesIO(); np.save(b, np.arange(4, dtype=np.float32))
        with zipfile.ZipFile(w + "/odd.npz", "w") as z:
            z.writestr("x", b.getvalue())                                       # a one-character member name
            z.writestr("w.npy", b.getvalue())
            z.writestr(zipfile.ZipInfo("notes.txt"), b"hello" * 100, compress_type=zipfile.ZIP_BZIP2)
        """)
        let scan = try runWscan(["scan", walk + "/dots"])
        XCTAssertEqual(scan.status, 1, scan.out + scan.err)                   // flagged, not a trap (132)
        XCTAssertTrue(scan.out.contains("dotted name"), scan.out)
        let ix = try runWscan(["index", walk, "--db", db, "-v"])
        XCTAssertFalse(ix.out.contains("logs.zip") || ix.err.contains("logs.zip"), "a zip that is not a torch checkpoint is not a candidate")
        XCTAssertTrue(ix.out.contains("odd.npz"), ix.out + ix.err)
        let show = try runWscan(["show", walk + "/odd.npz", "--db", db, "--tensors"])
        XCTAssertEqual(show.status, 0, show.err)
        XCTAssertTrue(show.out.contains("notes.txt is not an .npy array; skipped"), show.out)
    }

    func testFixedBuffersDoNotMakeIndependentModelsDerived() throws {
        let tmp = TempDir(), db = tmp.path("c.db")
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import load_file, save_file
        for s in ["0", "1"]:
            t = load_file(\(pyStr(Paths.corpus.path)) + "/mlp_seed" + s + ".safetensors")
            t["causal_mask"] = np.tril(np.ones((16, 16), np.float32))
            save_file(t, \(pyStr(tmp.path(""))) + "/m" + s + ".safetensors")
        """)
        let r = try runWscan(["compare", tmp.path("m0.safetensors"), tmp.path("m1.safetensors"), "--db", db, "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        let v = (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]
        XCTAssertEqual(v["kind"] as? String, "independent", "a shared fixed buffer (4% of the parameters) is no evidence of descent")
        XCTAssertTrue((v["evidence"] as! [String]).contains { $0.contains("bit-identical non-constant matrices") && $0.contains("causal_mask") },
                      "the shared matrix is still reported: \(v["evidence"]!)")
        XCTAssertTrue((v["summary"] as! String).contains("bit-identical"), "\(v["summary"]!)")
        let bad = try runWscan(["compare", tmp.path("m0.safetensors"), tmp.path("m1.safetensors"), "--db", db, "--eval", "exit 3"])
        XCTAssertEqual(bad.status, 1, "an evaluator that fails on A itself is an error")
    }

    func testExportTakesAFolderAsOtherCommandsDo() throws {
        let tmp = TempDir()
        let r = try runWscan(["export", Paths.corpus.appendingPathComponent("mlp_seed1_sharded").path, "--to", tmp.path("o.safetensors"), "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        let j = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(j["tensors"] as? Int, 6); XCTAssertEqual(j["output"] as? String, tmp.path("o.safetensors"))
    }

    func testLastReviewFindings() throws {
        let tmp = TempDir(), db = tmp.path("c.db"), walk = tmp.path("walk")
        _ = try runPython("""
        import os, io, zipfile, numpy as np, json
        from safetensors.numpy import load_file, save_file
        w = \(pyStr(walk)); os.makedirs(w)
        open(w + "/ex1.pkl", "wb").write(b"\\x80\\x04\\x8c\\x08builtins\\x94\\x8c\\x0dexec.__call__\\x94\\x93.")
        open(w + "/r.dat", "wb").write(b"\\x80\\x04" + bytes(range(1, 199)))        # binary that starts like a pickle
        import torch, pickle
        torch.save({"w": torch.zeros(3)}, w + "/legacy_noext", _use_new_zipfile_serialization=False)  # ends with raw storage
        open(w + "/float_p2", "wb").write(pickle.dumps(1.5, protocol=2) + b"\\n")      # opens with G, trailing byte
        deep = ".".join(["serialization", "torch"] * 9 + ["serialization", "os", "system"])
        open(w + "/deep.pkl", "wb").write(b"\\x80\\x04\\x8c\\x05torch\\x94\\x8c" + bytes([len(deep)]) + deep.encode() + b"\\x94\\x93.")
        def npy(a):
            f = io.BytesIO(); np.save(f, a); return f.getvalue()
        with zipfile.ZipFile(w + "/dup.npz", "w") as z:
            z.writestr("a.npy", npy(np.ones(3, np.float32))); z.writestr("a", npy(np.zeros(3, np.float32)))
        np.savez(\(pyStr(tmp.path("obj.npz"))), a=np.array([{"x": 1}], dtype=object))
        open(\(pyStr(tmp.path("precious.safetensors"))), "w").write("precious")
        # a Hugging Face cache with a sharded model: index and shards are links into content-named blobs
        t = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        hub = \(pyStr(tmp.path("hub"))); os.makedirs(hub + "/blobs"); os.makedirs(hub + "/snapshots/r1")
        names = sorted(t); parts = [names[:3], names[3:]]; wm = {}
        for i, ns in enumerate(parts):
            save_file({n: t[n] for n in ns}, hub + "/blobs/shard%d" % i)
            f = "model-%05d-of-00002.safetensors" % (i + 1)
            os.symlink("../../blobs/shard%d" % i, hub + "/snapshots/r1/" + f)
            wm.update({n: f for n in ns})
        json.dump({"weight_map": wm}, open(hub + "/blobs/index", "w"))
        os.symlink("../../blobs/index", hub + "/snapshots/r1/model.safetensors.index.json")
        """)
        let scan = try runWscan(["scan", walk + "/ex1.pkl"])
        XCTAssertTrue(scan.out.contains("[critical]"), "builtins + exec.__call__ is exec: \(scan.out)")
        let walked = try runWscan(["scan", walk])
        for f in ["legacy_noext", "float_p2", "deep.pkl", "ex1.pkl"] { XCTAssertTrue(walked.out.contains(walk + "/" + f), "\(f) not scanned: \(walked.out)") }
        XCTAssertTrue(walked.out.contains("[critical] deep.pkl"), "a deep dotted name reaching os.system: \(walked.out)")
        let ix = try runWscan(["index", walk, "--db", db, "-v"])
        XCTAssertFalse((ix.out + ix.err).contains("r.dat"), "a binary file is not a pickle because of its first two bytes")
        let dup = try runWscan(["show", walk + "/dup.npz", "--db", db, "--tensors", "--json"])
        let t = ((try JSONSerialization.jsonObject(with: Data(dup.out.utf8)) as! [String: Any])["tensors"] as! [[String: Any]])
        XCTAssertEqual(t.count, 1); XCTAssertEqual(t[0]["mean"] as? Double, 0, "numpy.load returns the member named exactly 'a'")
        let ex = try runWscan(["export", tmp.path("obj.npz"), "--to", tmp.path("precious.safetensors"), "--trust"])
        XCTAssertEqual(ex.status, 1)
        XCTAssertEqual(try String(contentsOfFile: tmp.path("precious.safetensors"), encoding: .utf8), "precious", "a refused export writes nothing")
        let hub = try runWscan(["index", tmp.path("hub"), "--db", tmp.path("h.db"), "--json"])
        let q = try runWscan(["query", "SELECT path FROM checkpoints", "--db", tmp.path("h.db")])
        XCTAssertEqual(hub.status, 0, hub.err)
        XCTAssertEqual(q.out.split(separator: "\n").filter { $0.contains("/tmp") || $0.contains("/") }.count, 1, "one sharded model, not its blobs: \(q.out)")
    }

    func testOneZeroRowKeepsTheGramRoute() throws {
        var w = [Float](repeating: 0, count: 300 * 200)
        var rng = SplitMix64(seed: 9)
        for i in w.indices where i % 200 != 0 { w[i] = Float(Int64(bitPattern: rng.next() % 2001) - 1000) / 1000 }   // column 0 stays zero: rank 199
        let (sv, method) = try SpectrumAnalyzer.singularValues(w, rows: 300, cols: 200)
        XCTAssertEqual(method, .gram, "one value at the floor is below the top 99%: no second decomposition")
        XCTAssertEqual(sv.count, 200)
    }
}
