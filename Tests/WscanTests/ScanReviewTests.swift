import XCTest
@testable import WscanFormats
@testable import WscanKernels
@testable import WscanAnalysis

/// Files that run os.system when Python loads them, which an earlier scanner called clean, plus reader defects found
/// in the same review. The files are written by numpy, torch and joblib from Python; nothing is ever unpickled
/// (each payload is `os.system('true')`, and Python here only writes bytes).
final class ScanReviewTests: XCTestCase {
    let tmp = TempDir()

    func verdict(_ path: String) throws -> (worst: Finding.Severity?, findings: [Finding]) {
        let f = try PickleScanner.scanFile(path: path)
        return (PickleScanner.worst(f), f)
    }

    func assertDangerous(_ name: String, _ minimum: Finding.Severity = .critical, file: StaticString = #filePath, line: UInt = #line) throws {
        let (w, f) = try verdict(tmp.path(name))
        XCTAssertNotNil(w, "\(name): clean", file: file, line: line)
        if let w { XCTAssertGreaterThanOrEqual(w, minimum, "\(name): \(f.map { "\($0.severity) \($0.what)" })", file: file, line: line) }
    }

    func testObjectDtypesNotSpelledOAreScanned() throws {
        _ = try runPython("""
        import numpy as np, pickle, os, struct, zipfile
        d = \(pyStr(tmp.url.path))
        class Evil:
            def __reduce__(self): return (os.system, ('true',))
        a = np.zeros(2, dtype=[('x', 'f4'), ('o', 'O')]); a['o'][0] = Evil()
        np.save(d + '/struct_obj.npy', a, allow_pickle=True)
        c = np.zeros(2, dtype=[('o', 'O', (2,))]); c['o'][0, 0] = Evil()
        np.save(d + '/subarr_obj.npy', c, allow_pickle=True)
        np.save(d + '/struct_plain.npy', np.zeros(3, dtype=[('x', '<f4'), ('y', '<i2')]))
        def npy(descr, payload):
            h = ("{'descr': %r, 'fortran_order': False, 'shape': (1,), }" % descr).encode('latin1')
            h = h + b' ' * (64 - (10 + len(h) + 1) % 64) + b'\\n'
            return b'\\x93NUMPY\\x01\\x00' + struct.pack('<H', len(h)) + h + payload
        payload = pickle.dumps([Evil()], protocol=3)
        for name, descr in [('descr_O', 'O'), ('descr_object', 'object'), ('descr_O8', '|O8')]:
            open(d + '/' + name + '.npy', 'wb').write(npy(descr, payload))
        with zipfile.ZipFile(d + '/struct_obj.npz', 'w') as z: z.write(d + '/struct_obj.npy', 'weights.npy')
        """)
        for n in ["struct_obj.npy", "subarr_obj.npy", "descr_O.npy", "descr_object.npy", "descr_O8.npy", "struct_obj.npz"] {
            try assertDangerous(n)
        }
        XCTAssertNil(try verdict(tmp.path("struct_plain.npy")).worst, "a numeric structured array holds no pickle")
        // numpy's other spellings of object arrays are read as object arrays
        XCTAssertEqual(try NpyReader.mapDescr("O").0, .object)
        XCTAssertEqual(try NpyReader.mapDescr("object").0, .object)
    }

    /// Valid pickles the passive parser used to refuse before reaching the import: base-0 integer literals, a
    /// space-padded PUT index, SETITEM on a list. Written as .pkl and as .pt (scanned as possible tensor data).
    func testParserGapsDoNotHideLaterImports() throws {
        let evilTail = Array("cos\nsystem\n(S'true'\ntR.".utf8)
        let prefixes: [String: [UInt8]] = [
            "int_hex": Array("I0x10\n0".utf8), "long_hex": Array("L0x10L\n0".utf8), "put_space": Array("Np 1\n0".utf8),
            "setitem_list": [0x5D, 0x4B, 0x00, 0x61, 0x4B, 0x00, 0x4B, 0x07, 0x73, 0x30],
            "bytearray_append": [0x80, 0x05, 0x96] + [UInt8](repeating: 0, count: 8) + [0x4B, 0x07, 0x61, 0x30],
        ]
        for (k, p) in prefixes {
            tmp.write("gap_\(k).pkl", p + evilTail)
            tmp.write("gap_\(k).pt", p + evilTail)
            try assertDangerous("gap_\(k).pkl")
            try assertDangerous("gap_\(k).pt")
            // and the parser itself reads them now: the import is found by the VM, not only by the fallback walk
            let f = try verdict(tmp.path("gap_\(k).pkl")).findings
            XCTAssertTrue(f.contains { $0.what == "os.system" && !$0.detail.contains("static walk") }, "\(k): \(f)")
        }
    }

    func testComputedStackGlobalAndGadgetsAreHigh() throws {
        func s(_ x: String) -> [UInt8] { [0x8C, UInt8(x.utf8.count)] + Array(x.utf8) }
        // builtins.str(b'os', 'latin1') as the module of a STACK_GLOBAL
        let computed: [UInt8] = [0x80, 0x04] + s("builtins") + s("str") + [0x93, 0x43, 0x02] + Array("os".utf8) + s("latin1") + [0x86, 0x52]
            + s("system") + [0x93] + s("true") + [0x85, 0x52, 0x2E]
        tmp.write("computed.pkl", computed)
        try assertDangerous("computed.pkl", .high)
        for (m, n) in [("pydoc", "pipepager"), ("uuid", "_get_command_stdout"), ("imaplib", "IMAP4_stream"), ("_osx_support", "_read_output"),
                       ("__builtin__", "reduce"), ("thread", "start_new_thread")] {
            tmp.write("g_\(n).pkl", Array("c\(m)\n\(n)\n(S'true'\ntR.".utf8))
            try assertDangerous("g_\(n).pkl", .high)
        }
    }

    /// A legacy torch file whose data pickle is prefixed with NEWTRUE POP (torch.load accepts it).
    func testLegacyTorchChainIsFollowedPastUnusualFirstOpcodes() throws {
        _ = try runPython("""
        import torch, os, io, pickletools
        d = \(pyStr(tmp.url.path))
        class R:
            def __reduce__(self): return (os.system, ('true',))
        torch.save({'w': torch.randn(3, 4), 'evil': R()}, d + '/legacy.pt', _use_new_zipfile_serialization=False)
        b = open(d + '/legacy.pt', 'rb').read()
        f = io.BytesIO(b); starts = []
        for i in range(4):
            starts.append(f.tell())
            for op, arg, p in pickletools.genops(f):
                if op.name == 'STOP': break
        open(d + '/hidden.pt', 'wb').write(b[:starts[3]] + b'\\x880' + b[starts[3]:])
        """)
        try assertDangerous("legacy.pt")
        try assertDangerous("hidden.pt")
    }

    func testJoblibArraysAndCompressedPickles() throws {
        _ = try runPython("""
        import joblib, numpy as np, os, zipfile, pickle
        d = \(pyStr(tmp.url.path))
        class R:
            def __reduce__(self): return (os.system, ('true',))
        joblib.dump({'a': np.array(['A\\u2e75BC'], dtype='U4'), 'evil': R()}, d + '/unicode.joblib')
        joblib.dump({'a': np.array(['abcd'], dtype='U4')}, d + '/unicode_clean.joblib')
        joblib.dump({'a': np.zeros(3, dtype=[('x', '<f4'), ('y', '<i8')]), 'evil': R()}, d + '/struct.joblib')
        joblib.dump({'w': np.ones(3), 'evil': R()}, d + '/zlib.joblib', compress=3)
        joblib.dump({'w': np.ones(3), 'evil': R()}, d + '/gz.pkl.gz')
        joblib.dump({'w': np.ones(3), 'evil': R()}, d + '/xz.joblib', compress=('lzma', 3))
        np.save(d + '/obj.npy', np.array([R(), 1], dtype=object), allow_pickle=True)
        with zipfile.ZipFile(d + '/obj_lzma.npz', 'w', zipfile.ZIP_LZMA) as z: z.write(d + '/obj.npy', 'a.npy')
        """)
        for n in ["unicode.joblib", "struct.joblib", "zlib.joblib", "gz.pkl.gz"] { try assertDangerous(n) }
        try assertDangerous("xz.joblib", .high)         // cannot be inflated here: cannot be verified
        try assertDangerous("obj_lzma.npz", .medium)   // numpy unpickles it only with allow_pickle=True
        let clean = try verdict(tmp.path("unicode_clean.joblib"))
        XCTAssertFalse(clean.findings.contains { $0.what == "malformed pickle" }, "\(clean.findings)")
    }

    /// torch views: a 1.8 KB file describing a 16 GiB broadcast is catalogued without expanding it, and views that
    /// read some stored elements twice get the statistics of their own elements.
    func testTorchBroadcastAndOverlappingViews() throws {
        _ = try runPython("""
        import torch
        d = \(pyStr(tmp.url.path))
        x = torch.tensor([1., 2., 100., 200.])
        torch.save({'expand_slice': x[:2].expand(2, 2), 'overlap': x.as_strided((2, 2), (1, 1)), 't': torch.arange(6.).reshape(2, 3).t(),
                    'bomb': torch.zeros(1).expand(2**16, 2**16)}, d + '/views.pt')
        """)
        let ck = try CheckpointOpener.open(tmp.path("views.pt"))
        let s = Dictionary(uniqueKeysWithValues: zip(ck.tensors.map(\.name), Summarizer.summarizeAll(ck)))
        XCTAssertEqual(s["expand_slice"]?.stats?.mean ?? 0, 1.5, accuracy: 1e-12)
        XCTAssertEqual(s["expand_slice"]?.stats?.max, 2)
        XCTAssertEqual(s["overlap"]?.stats?.mean ?? 0, (1 + 2 + 2 + 100) / 4.0, accuracy: 1e-12)
        XCTAssertEqual(s["t"]?.stats?.mean ?? 0, 2.5, accuracy: 1e-12)   // a transpose reads its run once
        XCTAssertNil(s["bomb"]?.stats)
        XCTAssertTrue(s["bomb"]?.note?.contains("not expanded") ?? false, "\(String(describing: s["bomb"]?.note))")
    }

    /// Squares of values near 1e-22 underflow in Float: std and L2 against numpy's float64.
    func testStatisticsOfTinyValues() throws {
        let out = try runPython("""
        import numpy as np
        from safetensors.numpy import save_file
        rng = np.random.default_rng(0)
        t = {f's{e}': (10.0 ** -e * np.abs(rng.standard_normal(4096))).astype(np.float32) for e in (10, 20, 22, 25)}
        save_file(t, \(pyStr(tmp.path("tiny.safetensors"))))
        for k in sorted(t): a = t[k].astype(np.float64); print(k, repr(float(a.std())), repr(float(np.sqrt((a * a).sum()))))
        """)
        let ck = try CheckpointOpener.open(tmp.path("tiny.safetensors"))
        let s = Dictionary(uniqueKeysWithValues: zip(ck.tensors.map(\.name), Summarizer.summarizeAll(ck)))
        for l in out.split(separator: "\n") {
            let p = l.split(separator: " "), std = Double(p[1])!, l2 = Double(p[2])!
            let st = try XCTUnwrap(s[String(p[0])]?.stats)
            XCTAssertEqual(st.std, std, accuracy: std * 1e-6, "\(p[0])")
            XCTAssertEqual(st.l2Norm, l2, accuracy: l2 * 1e-6, "\(p[0])")
        }
    }
}

/// Regressions found in a review of the scanner changes: a protocol-0 pickle taken for zlib (a bypass), and benign
/// files (GGUF, safetensors, structured arrays, compressed text, large compressed joblib dumps) flagged.
final class ScanRegressionTests: XCTestCase {
    let tmp = TempDir()

    func worst(_ name: String) throws -> Finding.Severity? { PickleScanner.worst(try PickleScanner.scanFile(path: tmp.path(name))) }

    func testProtocolZeroPickleIsNotTakenForZlib() throws {
        // "(S" is 0x28 0x53: a valid zlib header check, but not a zlib stream
        for n in ["model.bin", "weights.pt", "checkpoint"] {
            tmp.write(n, Array("(S'x'\n01cos\nsystem\n(S'echo pwned'\ntR.".utf8))
            XCTAssertEqual(try worst(n), .critical, n)
        }
    }

    func testBenignFilesStayClean() throws {
        _ = try runPython("""
        import numpy as np, gzip, io, tarfile, joblib, gguf
        from safetensors.numpy import save_file
        d = \(pyStr(tmp.url.path)); r = np.random.default_rng(0)
        for i in range(8): save_file({"w": r.standard_normal((64, 64)).astype(np.float32)}, f"{d}/st_{i}.safetensors")
        w = gguf.GGUFWriter(f"{d}/m.gguf", "llama"); w.add_tensor("t", r.standard_normal((8, 32)).astype(np.float32))
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        np.save(f"{d}/struct_chem.npy", np.zeros(4, dtype=[('H', 'i4'), ('C', 'i4'), ('N', 'i4'), ('O', 'i4')]))
        np.save(f"{d}/struct_named_object.npy", np.zeros(2, dtype=[('object', 'f8'), ('x', 'S8')]))
        np.savez(f"{d}/recs.npz", a=np.zeros(3, dtype=[('name', 'S8'), ('v', 'f8')]))
        open(f"{d}/table.csv.gz", "wb").write(gzip.compress(b"a,b\\n1,2\\n" * 1000))
        with tarfile.open(f"{d}/src.tar.gz", "w:gz") as t:
            data = b"print('hi')\\n"; ti = tarfile.TarInfo("src/main.py"); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
        joblib.dump({"zeros": np.zeros((2000, 2000))}, f"{d}/big_zeros.joblib", compress=3)
        """)
        for n in (0..<8).map({ "st_\($0).safetensors" }) + ["m.gguf", "struct_chem.npy", "struct_named_object.npy", "recs.npz",
                                                            "table.csv.gz", "src.tar.gz", "big_zeros.joblib"] {
            XCTAssertNil(try worst(n), n)
        }
    }
}

/// Reader findings: torch tensors wscan cannot decode are named; one complex tensor does not sink an export;
/// dupes tells same-named checkpoints apart.
final class FormatReviewTests: XCTestCase {
    let tmp = TempDir()

    func testUndecodedTorchTensorsAreNamedAndComplexExportIsPartial() throws {
        _ = try runPython("""
        import torch, numpy as np
        d = \(pyStr(tmp.url.path))
        q = torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8)
        torch.save({"w": torch.randn(2, 2), "q": q, "sp": torch.randn(3, 3).to_sparse()}, d + "/special.pt")
        np.savez(d + "/mixed.npz", w=np.ones((3, 3), np.float32), c=np.array([1j], np.complex128))
        """)
        let ck = try CheckpointOpener.open(tmp.path("special.pt"), options: .init(trust: true))
        XCTAssertEqual(ck.tensors.map(\.name), ["w"])
        XCTAssertTrue(ck.warnings.contains { $0.hasPrefix("q: qtensor") }, "\(ck.warnings)")
        XCTAssertTrue(ck.warnings.contains { $0.hasPrefix("sp: sparse tensor") }, "\(ck.warnings)")
        let out = tmp.path("o.safetensors")
        let r = try runWscan(["export", tmp.path("mixed.npz"), "--to", out, "--dtype", "keep", "--db", tmp.path("c.db")])
        XCTAssertEqual(r.status, 1, "incomplete export: exit 1")
        XCTAssertTrue(r.err.contains("c: C128"), r.err)
        XCTAssertEqual(try CheckpointOpener.open(out).tensors.map(\.name), ["w"])
    }

    func testDupesNameCheckpointsById() throws {
        for d in ["x", "y"] {
            try FileManager.default.createDirectory(atPath: tmp.path(d), withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: tmp.path("\(d)/mlp.safetensors"))
        }
        let db = tmp.path("c.db")
        XCTAssertEqual(try runWscan(["index", tmp.path("x"), tmp.path("y"), "--db", db]).status, 0)
        let r = try runWscan(["dupes", "--json", "--db", db])
        let g = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [[String: Any]]
        let paths = Set((g[0]["members"] as! [[String: Any]]).map { $0["path"] as! String })
        XCTAssertEqual(paths, [tmp.path("x/mlp.safetensors"), tmp.path("y/mlp.safetensors")])
        let text = try runWscan(["dupes", "--db", db]).out
        XCTAssertTrue(text.contains("#1 mlp.safetensors") && text.contains("#2 mlp.safetensors"), text)
    }
}

/// Second review of the scanner and statistics changes.
final class ScanSecondReviewTests: XCTestCase {
    let tmp = TempDir()

    func worst(_ name: String) throws -> Finding.Severity? { PickleScanner.worst(try PickleScanner.scanFile(path: tmp.path(name))) }

    /// A gzip or zlib pickle that breaks off (bad checksum, truncated) has already run what inflated before the break.
    func testBrokenCompressedPicklesAreScannedUpToTheBreak() throws {
        _ = try runPython("""
        import gzip, zlib, pickle, os
        d = \(pyStr(tmp.url.path))
        p = b"\\x80\\x04\\x95\\x1b\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x8c\\x05posix\\x94\\x8c\\x06system\\x94\\x93\\x94\\x8c\\x04true\\x94\\x85\\x94R\\x94."
        g = bytearray(gzip.compress(p)); g[-8] ^= 0xFF; open(d + "/badcrc.pkl.gz", "wb").write(bytes(g))
        z = zlib.compress(p + bytes(range(256)) * 64); open(d + "/trunc.joblib", "wb").write(z[:len(z) - 200])
        """)
        XCTAssertEqual(try worst("badcrc.pkl.gz"), .critical)
        XCTAssertEqual(try worst("trunc.joblib"), .critical)
    }

    /// numpy reads a descr through ast.literal_eval: every spelling of an object dtype is one.
    func testObjectDtypeSpellings() throws {
        let payload: [UInt8] = [0x80, 0x04] + [0x8C, 0x05] + Array("posix".utf8) + [0x8C, 0x06] + Array("system".utf8) + [0x93, 0x8C, 0x04] + Array("true".utf8) + [0x85, 0x52, 0x2E]
        func npy(_ descr: String) -> [UInt8] {
            var h = Array("{'descr': \(descr), 'fortran_order': False, 'shape': (1,), }".utf8)
            while (10 + h.count + 1) % 64 != 0 { h.append(0x20) }
            h.append(0x0A)
            return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(h.count & 0xFF), UInt8(h.count >> 8)] + h + payload
        }
        for (i, d) in ["u'|O'", "'|' 'O'", "'|\\x4f'", "('O', (1,))", "[('a', ('O', (1,)))]", "('|O')", "[('O', '<f4'), ('x', 'O')]"].enumerated() {
            tmp.write("o\(i).npy", npy(d))
            XCTAssertEqual(try worst("o\(i).npy"), .critical, d)
        }
        tmp.write("plain.npy", npy("[('O', '<f4'), ('object', '<i4')]"))
        XCTAssertNil(try worst("plain.npy"), "fields named O/object are not object types")
    }

    /// Statistics of blocks whose values are all subnormal, or zeros mixed with subnormals.
    func testSubnormalBlocks() throws {
        let out = try runPython("""
        import numpy as np
        from safetensors.numpy import save_file
        r = np.random.default_rng(0)
        t = {"sub": (np.abs(r.standard_normal(4096)) * 1e-40).astype(np.float32), "mix": np.zeros(4096, np.float32)}
        t["mix"][::40] = 3e-42
        save_file(t, \(pyStr(tmp.path("s.safetensors"))))
        for k in sorted(t): a = t[k].astype(np.float64); print(k, repr(float(a.mean())), repr(float(a.std())), repr(float((a == 0).mean())))
        """)
        let ck = try CheckpointOpener.open(tmp.path("s.safetensors"))
        let s = Dictionary(uniqueKeysWithValues: zip(ck.tensors.map(\.name), Summarizer.summarizeAll(ck)))
        for l in out.split(separator: "\n") {
            let p = l.split(separator: " ")
            let st = try XCTUnwrap(s[String(p[0])]?.stats)
            XCTAssertEqual(st.nans + st.infs, 0)
            XCTAssertEqual(st.mean, Double(p[1])!, accuracy: abs(Double(p[1])!) * 1e-5, String(p[0]))
            XCTAssertEqual(st.std, Double(p[2])!, accuracy: Double(p[2])! * 1e-5, String(p[0]))
            XCTAssertEqual(st.zeroFraction, Double(p[3])!, accuracy: 1e-12, String(p[0]))
        }
    }
}

extension ScanSecondReviewTests {
    /// Third review: escapes the header parser did not model, headers it cannot parse followed by a protocol-0 pickle,
    /// and gzip files of several members (an empty first one) were clean.
    func testThirdReviewScannerGaps() throws {
        let p0 = Array("cposix\nsystem\n(S'true'\ntR.".utf8)
        func npy(_ header: String) -> [UInt8] {
            var h = Array(header.utf8)
            while (10 + h.count + 1) % 64 != 0 { h.append(0x20) }
            h.append(0x0A)
            return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(h.count & 0xFF), UInt8(h.count >> 8)] + h + p0
        }
        let headers = ["{'descr': '|\\117', 'fortran_order': False, 'shape': (1,), }",
                       "{'descr': '|\\N{LATIN CAPITAL LETTER O}', 'fortran_order': False, 'shape': (1,), }",
                       "{'descr': '|\\\nO', 'fortran_order': False, 'shape': (1,), }",
                       "{'descr': '|O', 'fortran_order': False, 'shape': (0x1,), }",
                       "{'descr': '|O', 'fortran_order': False, 'shape': (1_0,), }"]
        for (i, h) in headers.enumerated() {
            tmp.write("h\(i).npy", npy(h))
            XCTAssertGreaterThanOrEqual(try worst("h\(i).npy") ?? .info, .high, h)
        }
        _ = try runPython("""
        import gzip
        p = b"cposix\\nsystem\\n(S'true'\\ntR."
        open(\(pyStr(tmp.path("empty1.pkl.gz"))), "wb").write(gzip.compress(b"") + gzip.compress(p))
        open(\(pyStr(tmp.path("split.pkl.gz"))), "wb").write(gzip.compress(p[:10]) + gzip.compress(p[10:]))
        """)
        XCTAssertEqual(try worst("empty1.pkl.gz"), .critical)
        XCTAssertEqual(try worst("split.pkl.gz"), .critical)
    }
}

extension AlignReviewTests {
    /// A BF16 copy against the Q8_0 of the F32 original is a re-encoding (the measured requantization decides).
    func testBF16AgainstQ8_0OfF32() throws {
        _ = try runPython("""
        import numpy as np, gguf, torch
        from gguf.quants import quantize
        from safetensors.numpy import load_file
        from safetensors.torch import save_file
        a = load_file(\(pyStr(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path)))
        save_file({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in a.items()}, \(pyStr(tmp.path("bf16.safetensors"))))
        w = gguf.GGUFWriter(\(pyStr(tmp.path("q8.gguf"))), "mlp")
        for k, v in a.items():
            if v.ndim == 2 and v.shape[1] % 32 == 0: w.add_tensor(k, quantize(v, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else: w.add_tensor(k, v)
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        """)
        let r = try runWscan(["compare", tmp.path("bf16.safetensors"), tmp.path("q8.gguf"), "--json", "--no-align", "--db", tmp.path("c.db")])
        XCTAssertEqual(r.status, 0, r.err)
        let v = (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["verdict"] as! [String: Any]
        XCTAssertEqual(v["kind"] as? String, "reencoded", "\(v)")
    }
}

extension ScanSecondReviewTests {
    /// Fourth review: zero padding between gzip members is skipped (an empty member, zeros, then the pickle), trailing
    /// bytes after a complete member end the stream quietly, and an unparseable npy header's data is scanned from
    /// any opening opcode.
    func testGzipPaddingAndAnyOpcodeFallback() throws {
        _ = try runPython("""
        import gzip, zlib
        d = \(pyStr(tmp.url.path))
        evil = b"cposix\\nsystem\\n(S'true'\\ntR."
        benign = b"\\x80\\x04\\x95\\x09\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x8c\\x05hello\\x94."
        for n in ["ep.gz", "ep.bin", "ep.pkl.gz"]: open(d + "/" + n, "wb").write(gzip.compress(b"") + b"\\0" * 8 + gzip.compress(evil))
        open(d + "/pad.pkl.gz", "wb").write(gzip.compress(benign) + b"\\0" * 512)
        open(d + "/garb.pkl.gz", "wb").write(gzip.compress(benign) + b"GARBAGE!")
        open(d + "/zpad.joblib", "wb").write(zlib.compress(benign) + b"\\0" * 16)
        """)
        for n in ["ep.gz", "ep.bin", "ep.pkl.gz"] { XCTAssertEqual(try worst(n), .critical, n) }
        for n in ["pad.pkl.gz", "garb.pkl.gz", "zpad.joblib"] { XCTAssertNil(try worst(n), n) }
        // header numpy reads as '|O' (\N{...} is not modelled), data opening with NEWTRUE POP
        var h = Array("{'descr': '|\\N{LATIN CAPITAL LETTER O}', 'fortran_order': False, 'shape': (1,), }".utf8)
        while (10 + h.count + 1) % 64 != 0 { h.append(0x20) }
        h.append(0x0A)
        tmp.write("b88.npy", [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(h.count & 0xFF), UInt8(h.count >> 8)] + h + [0x88, 0x30] + Array("cposix\nsystem\n(S'true'\ntR.".utf8))
        XCTAssertEqual(try worst("b88.npy"), .critical)
    }
}

extension ScanReviewTests {
    /// Found by the fuzzer: an 8-byte length near Int.max after a pickle the parser refuses trapped on "8 + length"
    /// in the static walk (arithmetic overflow, the process died). Such a length now runs past the end: the walk stops.
    func testHugeEightByteLengthEndsTheStaticWalk() throws {
        // The fuzzer's input: its first byte picked the file name (.bin), the rest is the file.
        let bytes = Array([UInt8](Data(base64Encoded: "fp9JMwqW/v///////39JMwKAAmNpeC4Klo0zCjJJzS4uhYY=")!).dropFirst())
        let findings = bytes.withUnsafeBytes { PickleScanner.scanBlob($0, member: "crash.pkl", nameSaysPickle: true) }
        XCTAssertFalse(findings.isEmpty, "an unparseable pickle is reported, not passed as clean")
        for n in [UInt64(Int.max), UInt64(Int.max) - 3, UInt64.max] {           // BINBYTES8 / SHORT_BINUNICODE8-sized lengths
            var b: [UInt8] = [0x80, 0x04, 0x96]
            withUnsafeBytes(of: n.littleEndian) { b += $0 }
            _ = b.withUnsafeBytes { PickleScanner.scanBlob($0, member: "len.pkl", nameSaysPickle: true) }
        }
    }
}

extension ScanReviewTests {
    /// A checkpoint the scanner flags is analysed and compared with --trust, as `index` and `export` take it (the
    /// refusal said "use --trust" to commands that had no such option); nothing in it runs either way.
    func testFlaggedCheckpointIsAnalysedWithTrust() throws {
        let dir = TempDir(), pt = dir.path("dang.pt"), db = dir.path("d.db")
        _ = try runPython("""
        import torch, os
        torch.manual_seed(0)
        torch.save({"fc1.weight": torch.randn(16, 16), "fc2.weight": torch.randn(4, 16), "hook": os.getcwd}, "\(pt)")
        """)
        XCTAssertLessThanOrEqual(try runWscan(["index", pt, "--db", db, "--trust"]).status, 1)
        let no = try runWscan(["analyze", "spectrum", pt, "--db", db])
        XCTAssertEqual(no.status, 1, no.err)
        XCTAssertTrue(no.err.contains("--trust"), no.err)
        for args in [["analyze", "spectrum"], ["analyze", "sparsity"], ["analyze", "saliency"]] {
            let r = try runWscan(args + [pt, "--db", db, "--trust"])
            XCTAssertEqual(r.status, 0, "\(args): \(r.err)")
            // not indexed beforehand: the file indexed on the fly is trusted too
            let fresh = try runWscan(args + [pt, "--db", dir.path("fresh-\(args[1]).db"), "--trust"])
            XCTAssertEqual(fresh.status, 0, "\(args), fresh catalog: \(fresh.err)")
        }
        let c = try runWscan(["compare", pt, pt, "--db", db, "--trust"])
        XCTAssertEqual(c.status, 0, c.err)
        XCTAssertTrue(c.out.contains("IDENTICAL"), c.out)
        XCTAssertEqual(try runWscan(["compare", pt, pt, "--db", dir.path("fresh-c.db"), "--trust"]).status, 0)
        XCTAssertEqual(try runWscan(["lineage", "--db", db, "--trust"]).status, 0)
        // a flagged activations file is read with --trust too
        let acts = dir.path("acts.pt")
        _ = try runPython("""
        import torch, os
        torch.save({"fc1.weight": torch.randn(40, 16), "hook": os.getcwd}, "\(acts)")
        """)
        let a = try runWscan(["analyze", "spectrum", pt, "--db", db, "--trust", "--activations", acts])
        XCTAssertEqual(a.status, 0, a.err)
    }
}

