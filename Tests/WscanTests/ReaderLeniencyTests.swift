import XCTest
@testable import WscanFormats
@testable import WscanCatalog

/// Files numpy, safetensors and gguf-py read (or refuse) that wscan read differently: each is read (or refused)
/// as the reference reads it.
final class ReaderLeniencyTests: XCTestCase {
    let tmp = TempDir()

    func show(_ path: String) throws -> (status: Int32, json: [String: Any]?, err: String) {
        let r = try runWscan(["show", path, "--db", tmp.path("c.db"), "--json"])
        return (r.status, try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any], r.err)
    }
    func tensors(_ j: [String: Any]?) -> [String: [String: Any]] {
        Dictionary(uniqueKeysWithValues: ((j?["tensors"] as? [[String: Any]]) ?? []).map { ($0["name"] as! String, $0) })
    }

    /// ZIP member names without the UTF-8 flag are code page 437 (numpy reads `\x81.npy` as "ü"); two such names
    /// were both decoded to U+FFFD and refused as duplicates.
    func testCP437MemberNames() throws {
        let f = tmp.path("cp437.npz")
        let out = try runPython("""
        import io, zipfile, numpy as np
        def npy(a): b = io.BytesIO(); np.save(b, a); return b.getvalue()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("x.npy", npy(np.arange(3, dtype=np.float32))); z.writestr("y.npy", npy(np.ones(4, np.float32)))
        open(\(pyStr(f)), "wb").write(buf.getvalue().replace(b"x.npy", b"\\x81.npy").replace(b"y.npy", b"\\x82.npy"))
        print(",".join(sorted(np.load(\(pyStr(f))).files)))
        """)
        XCTAssertEqual(out.trimmingCharacters(in: .whitespacesAndNewlines), "é,ü")
        let r = try show(f)
        XCTAssertEqual(r.status, 0, r.err)
        let t = tensors(r.json)
        XCTAssertEqual(Set(t.keys), ["ü", "é"])
        XCTAssertEqual(t["ü"]?["mean"] as? Double, 1.0)
    }

    /// A structured member is catalogued without a decoder (as string members are), not a reason to refuse the
    /// whole archive; a stored member whose CRC fails is refused, as numpy.load refuses it.
    func testStructuredMemberAndStoredCRC() throws {
        let (good, bad) = (tmp.path("s.npz"), tmp.path("crc.npz"))
        _ = try runPython("""
        import numpy as np
        np.savez(\(pyStr(good)), w=np.arange(6, dtype=np.float32), s=np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")]),
                 o=np.zeros(2, dtype=[("O", "<f4"), ("object", "<i4")]))
        np.savez(\(pyStr(bad)), x=np.full(64, 5.5, np.float32))
        b = bytearray(open(\(pyStr(bad)), "rb").read())
        i = b.index(np.full(4, 5.5, np.float32).tobytes()); b[i + 1] ^= 0x10
        open(\(pyStr(bad)), "wb").write(bytes(b))
        try:
            np.load(\(pyStr(bad)))["x"]; raise SystemExit("numpy read it")
        except Exception as e:
            assert "CRC" in str(e), e
        """)
        let r = try show(good)
        XCTAssertEqual(r.status, 0, r.err)
        let t = tensors(r.json)
        XCTAssertEqual(t["w"]?["mean"] as? Double, 2.5)
        XCTAssertEqual(t["s"]?["dtype"] as? String, "OPAQUE")
        XCTAssertEqual(t["o"]?["dtype"] as? String, "OPAQUE", "fields named 'O' and 'object' hold numbers, not objects")
        let c = try show(bad)
        XCTAssertEqual(c.status, 1)
        XCTAssertTrue(c.err.contains("CRC"), c.err)
    }

    /// A structured .npy whose data is missing (header only) is refused as truncated, not catalogued as an empty
    /// OPAQUE array (the fields' sizes are not computed, so the rest of the file is its data).
    func testStructuredNpyWithoutData() throws {
        let f = tmp.path("struct_trunc.npy")
        _ = try runPython("""
        import numpy as np
        np.save(\(pyStr(f)), np.zeros(1000, dtype=[("a", "<f4"), ("b", "<i4")]))
        b = open(\(pyStr(f)), "rb").read()
        n = 10 + int.from_bytes(b[8:10], "little")
        open(\(pyStr(f)), "wb").write(b[:n])
        """)
        let r = try show(f)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("struct_trunc.npy") && r.err.contains("no data"), r.err)
    }

    /// numpy ignores bytes after the array data; safetensors ignores per-tensor fields it does not know.
    func testTrailingBytesAndExtraFieldsAsTheReference() throws {
        let (n, s) = (tmp.path("long.npy"), tmp.path("extra.safetensors"))
        _ = try runPython("""
        import numpy as np, json, struct
        from safetensors.numpy import load_file
        np.save(\(pyStr(n)), np.arange(5, dtype=np.float32))
        open(\(pyStr(n)), "ab").write(b"\\0\\0\\0\\0")
        assert np.load(\(pyStr(n))).sum() == 10
        h = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "extra": 1}}).encode()
        open(\(pyStr(s)), "wb").write(struct.pack("<Q", len(h)) + h + np.array([1, 3], np.float32).tobytes())
        assert load_file(\(pyStr(s)))["a"].sum() == 4
        """)
        let a = try show(n)
        XCTAssertEqual(a.status, 0, a.err)
        XCTAssertEqual(tensors(a.json)["long"]?["mean"] as? Double, 2.0)
        let b = try show(s)
        XCTAssertEqual(b.status, 0, b.err)
        XCTAssertEqual(tensors(b.json)["a"]?["mean"] as? Double, 2.0)
    }

    /// numpy pickles an array at protocol 5 through numpy._core.numeric._frombuffer: clean, not "unknown import".
    func testProtocol5NumpyPickleIsClean() throws {
        let f = tmp.path("p5.pkl")
        _ = try runPython("""
        import pickle, numpy as np
        open(\(pyStr(f)), "wb").write(pickle.dumps({"w": np.ones((4, 4), np.float32)}, protocol=5))
        """)
        let r = try runWscan(["scan", f])
        XCTAssertEqual(r.status, 0, r.out + r.err)
        XCTAssertTrue(r.out.contains("CLEAN"), r.out)
    }

    /// GGUF tensor names that are not UTF-8 are refused with that reason (gguf-py refuses them too), not merged
    /// into one U+FFFD name and refused as duplicates.
    func testNonUTF8GGUFNamesRefusedAsSuch() throws {
        let f = tmp.path("names.gguf")
        _ = try runPython("""
        import numpy as np, gguf
        w = gguf.GGUFWriter(\(pyStr(f)), "llama")
        w.add_tensor("AAAA", np.ones(4, np.float32)); w.add_tensor("BBBB", np.zeros(4, np.float32))
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        b = open(\(pyStr(f)), "rb").read().replace(b"AAAA", b"\\xffAAA").replace(b"BBBB", b"\\xfeBBB")
        open(\(pyStr(f)), "wb").write(b)
        """)
        let r = try show(f)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("name of tensor 0 is not valid UTF-8"), r.err)
    }
}

extension ReaderLeniencyTests {
    /// Twelfth-session review: small hostile files that trapped the process (overflow) are read or refused, one line
    /// each, and the good file beside them is indexed: an empty torch view with huge sizes behind a 0, a stride of
    /// Int.max on a size-1 axis, two broadcast views totalling 2^63 elements, a joblib wrapper and a .npy with a
    /// 'U' dtype of 2^62+ characters. Big-endian bytes equal to little-endian ones are other values: other hashes.
    func testOverflowingHeadersDoNotTrap() throws {
        let dir = TempDir(), d = dir.path("h"), db = dir.path("h.db")
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        _ = try runPython("""
        import pickle, zipfile, collections, torch, io, struct, numpy as np
        class FakeStorage:
            def __init__(s, key, numel, typ=torch.FloatStorage): s.key = key; s.numel = numel; s.typ = typ
        class R:
            def __init__(s, *a): s.a = a
            def __reduce__(s): return (torch._utils._rebuild_tensor_v2, s.a)
        class P(pickle.Pickler):
            def persistent_id(self, o): return ("storage", o.typ, o.key, "cpu", o.numel) if isinstance(o, FakeStorage) else None
        def tzip(path, obj, storages):
            b = io.BytesIO(); P(b, protocol=2).dump(obj)
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("archive/data.pkl", b.getvalue()); z.writestr("archive/version", "3\\n")
                for k, v in storages.items(): z.writestr("archive/data/" + k, v)
        OD = collections.OrderedDict; d = "\(d)"
        tzip(d + "/zero_overflow.pt", {"a": R(FakeStorage("0", 4), 0, (0, 2**40, 2**40), (0, 2**40, 1), False, OD())}, {"0": b"\\0" * 16})
        tzip(d + "/stride_max.pt", {"a": R(FakeStorage("0", 4), 0, (2, 1), (2, 2**63 - 1), False, OD())}, {"0": b"\\0" * 16})
        s = FakeStorage("0", 1)
        tzip(d + "/bcast2.pt", {"a": R(s, 0, (2**31, 2**31), (0, 0), False, OD()), "b": R(s, 0, (2**31, 2**31), (0, 0), False, OD())}, {"0": b"\\0" * 4})
        X = lambda t: b"X" + struct.pack("<I", len(t)) + t.encode()
        open(d + "/jl.pkl", "wb").write(b"\\x80\\x02cjoblib.numpy_pickle\\nNumpyArrayWrapper\\n)\\x81}" + X("dtype") + b"cnumpy\\ndtype\\n"
                                     + X("U9223372036854775807") + b"\\x85Rsb.")
        h = "{'descr': '<U4611686018427387904', 'fortran_order': False, 'shape': (1,), }"
        h = h + " " * (64 - (10 + len(h) + 1) % 64) + "\\n"
        open(d + "/hugeU.npy", "wb").write(b"\\x93NUMPY\\x01\\x00" + struct.pack("<H", len(h)) + h.encode())
        np.save(d + "/ok.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
        a = np.random.default_rng(0).standard_normal((8, 8)).astype("<f4")
        np.savez(d + "/le.npz", w=a); np.savez(d + "/be.npz", w=np.frombuffer(a.tobytes(), ">f4").reshape(8, 8))
        """)
        let r = try runWscan(["index", d, "--db", db, "--json"])
        XCTAssertTrue(r.status == 0 || r.status == 1, "\(r.status): \(r.err)")
        XCTAssertFalse(r.err.contains("Fatal error") || r.err.contains("overflow"), r.err)
        let cat = try Catalog(path: db)
        let rows = try cat.checkpoints()
        XCTAssertEqual(rows.count, 8, rows.map(\.path).joined(separator: ", "))
        XCTAssertEqual(rows.first { $0.path.hasSuffix("ok.npy") }?.status, "ok")
        // stride Int.max on a size-1 axis: the view [2, 1] reads elements 0 and 2
        let st = try CheckpointOpener.open(d + "/stride_max.pt")
        XCTAssertEqual(try TensorData.floats(st, st.tensors[0]).count, 2)
        let sc = try runWscan(["scan", d + "/jl.pkl"])
        XCTAssertTrue(sc.status == 0 || sc.status == 1, sc.err)
        XCTAssertFalse(sc.err.contains("Fatal error"), sc.err)
        let le = rows.first { $0.path.hasSuffix("le.npz") }!, be = rows.first { $0.path.hasSuffix("be.npz") }!
        XCTAssertNotEqual(le.fingerprint, be.fingerprint, "big-endian bytes are other values")
    }
}

