import Foundation
import XCTest
@testable import WscanFormats
@testable import WscanKernels

/// GGUF reader and GGML dequantization against fixtures written by scripts/make_gguf_fixtures.py with the
/// reference `gguf` package; malformed files are made by mutating the good fixture's bytes.
final class GGUFTests: XCTestCase {
    /// A GGUF audit report carries what the file's metadata says about the model, as `show` does.
    func testReportShowsGGUFMetadata() throws {
        let tmp = TempDir()
        let r = try runWscan(["report", Paths.fixtures.appendingPathComponent("gguf/all_types.gguf").path, "-o", tmp.path("rep"),
                              "--db", tmp.path("g.db")])
        XCTAssertEqual(r.status, 0, r.err)
        let md = try String(contentsOfFile: tmp.path("rep/README.md"), encoding: .utf8)
        XCTAssertTrue(md.contains("| architecture | wscantest |"), md)
        XCTAssertTrue(md.contains("| quantization | not stated (tensor types by parameters: Q4_K, Q2_K, Q3_K) |"), md)
    }

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/gguf")
    static func fixture(_ name: String) -> String { fixtures.appendingPathComponent(name).path }
    static let decodable = ["f32", "f16", "bf16", "f64", "i8", "i16", "i32", "i64", "q4_0", "q4_1", "q5_0", "q5_1",
                            "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_k"]

    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("wscan-gguf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: tmp)
    }

    // MARK: good files

    func testDequantMatchesReferenceBitForBit() throws {
        let ck = try GGUFReader.read(path: Self.fixture("all_types.gguf"))
        let ref = try SafetensorsReader.read(path: Self.fixture("all_types.ref.safetensors"))
        XCTAssertEqual(ck.format, .gguf)
        XCTAssertEqual(Set(ref.tensors.map(\.name)), Set(Self.decodable))
        for name in Self.decodable {
            let t = try XCTUnwrap(ck.tensors.first { $0.name == name }, name)
            let r = try XCTUnwrap(ref.tensors.first { $0.name == name }, name)
            XCTAssertEqual(t.shape, r.shape, name)
            XCTAssertEqual(t.dtype.rawValue.lowercased(), name, name)
            let got = try TensorData.floats(ck, t), want = try TensorData.floats(ref, r)
            XCTAssertEqual(got.count, want.count, name)
            let mismatches = zip(got, want).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
            XCTAssertTrue(mismatches.isEmpty, "\(name): \(mismatches.count) mismatches, first at \(mismatches.first.map { "\($0.offset): \($0.element.0) vs \($0.element.1)" } ?? "")")
        }
    }

    func testUnalignedSourceDecodes() throws {
        let ck = try GGUFReader.read(path: Self.fixture("all_types.gguf"))
        for t in ck.tensors where t.dtype.block != nil {
            let b = t.dtype.block!
            let raw = ck.bytes(of: t)
            let n = raw.count / b.bytes * b.elements
            let buf = UnsafeMutableRawPointer.allocate(byteCount: raw.count + 3, alignment: 16)
            defer { buf.deallocate() }
            (buf + 3).copyMemory(from: raw.baseAddress!, byteCount: raw.count)
            var a = [Float](repeating: 0, count: n), c = [Float](repeating: 0, count: n)
            try GGMLDequant.decode(t.dtype.rawValue, raw.baseAddress!, blocks: raw.count / b.bytes, &a)
            try GGMLDequant.decode(t.dtype.rawValue, buf + 3, blocks: raw.count / b.bytes, &c)
            XCTAssertEqual(a.map(\.bitPattern), c.map(\.bitPattern), t.name)
        }
        XCTAssertThrowsError(try GGMLDequant.decode("IQ4_NL", UnsafeRawPointer(bitPattern: 16)!, blocks: 1, UnsafeMutablePointer(bitPattern: 16)!))
    }

    func testMetadataShapesAndOpaqueTypes() throws {
        let ck = try CheckpointOpener.open(Self.fixture("all_types.gguf"))
        XCTAssertEqual(ck.format, .gguf)
        let m = ck.metadata
        XCTAssertEqual(m["general.architecture"], "wscantest")
        XCTAssertEqual(m["test.u8"], "200")
        XCTAssertEqual(m["test.i8"], "-100")
        XCTAssertEqual(m["test.u16"], "60000")
        XCTAssertEqual(m["test.i16"], "-30000")
        XCTAssertEqual(m["test.u32"], "4000000000")
        XCTAssertEqual(m["test.i32"], "-2000000000")
        XCTAssertEqual(m["test.f32"], "0.5")
        XCTAssertEqual(m["test.bool"], "true")
        XCTAssertEqual(m["test.string"], "hello GGUF")
        XCTAssertEqual(m["test.u64"], "18000000000000000000")
        XCTAssertEqual(m["test.i64"], "-9000000000000000000")
        XCTAssertEqual(m["test.f64"], "2.25")
        XCTAssertEqual(m["test.array_i32"], "[1, -2, 3]")
        XCTAssertEqual(m["test.array_u8"], "[1, 2, 255]")
        XCTAssertEqual(m["test.array_str"], "[\"a\", \"bc\"]")
        XCTAssertEqual(m["test.array_bool"], "[true, false]")
        XCTAssertEqual(m["test.array_f32"], "[0.25, -1.5]")
        XCTAssertEqual(m["test.array_u64"], "[1, 2]")
        XCTAssertEqual(m["test.array_f64"], "[0.5]")
        XCTAssertEqual(m["test.nested"], "[[1, 2], [3, 4, 5]]")
        XCTAssertEqual(m["test.nested3"], "[[[\"x\"]], [[\"y\", \"z\"]]]")
        XCTAssertEqual(m["tokenizer.ggml.tokens"], "[array of 40 string]")
        XCTAssertEqual(m["GGUF.version"], "3")

        XCTAssertEqual(ck.tensors.count, 20)
        XCTAssertEqual(ck.tensors.map(\.name).prefix(3), ["f32", "f16", "f64"])
        func t(_ n: String) -> TensorInfo { ck.tensors.first { $0.name == n }! }
        XCTAssertEqual(t("f32").shape, [3, 5])
        XCTAssertEqual(t("f16").shape, [2, 3, 7])
        XCTAssertEqual(t("i64").shape, [2, 2, 2, 2])
        XCTAssertEqual(t("q8_0").shape, [2, 3, 64])
        XCTAssertEqual(t("q8_0").byteCount, 6 * 2 * 34)
        XCTAssertEqual(t("q4_k").shape, [3, 256])
        XCTAssertEqual(t("q4_k").byteCount, 3 * 144)
        let iq = t("iq4_nl")
        XCTAssertEqual(iq.dtype, .opaque)
        XCTAssertEqual(iq.shape, [2, 64])
        XCTAssertEqual(iq.byteCount, 2 * 2 * 18)
        XCTAssertEqual(iq.note, "GGML type IQ4_NL: no decoder")
        XCTAssertThrowsError(try TensorData.floats(ck, iq))
        for x in ck.tensors {
            XCTAssertEqual(x.storage, 0); XCTAssertEqual(x.fileIndex, 0)
            XCTAssertEqual(x.fileOffset, x.byteOffset)
            XCTAssertEqual(x.byteOffset % 32, 0, x.name)
            XCTAssertLessThanOrEqual(x.byteOffset + x.byteCount, ck.files[0].size)
        }
    }

    func testCustomAlignment() throws {
        let ck = try GGUFReader.read(path: Self.fixture("align64.gguf"))
        XCTAssertEqual(ck.metadata["general.alignment"], "64")
        XCTAssertEqual(ck.tensors.map(\.name), ["a", "b"])
        for t in ck.tensors { XCTAssertEqual(t.byteOffset % 64, 0) }
        XCTAssertEqual(try TensorData.floats(ck, ck.tensors[0]), (0..<10).map(Float.init))
        XCTAssertEqual(ck.tensors[1].shape, [2, 3])
        XCTAssertEqual(try TensorData.floats(ck, ck.tensors[1]), (0..<6).map(Float.init))
    }

    func testVersion2Accepted() throws {
        var b = try good()
        put32(&b, 4, 2)
        let ck = try read(b)
        XCTAssertEqual(ck.metadata["GGUF.version"], "2")
        XCTAssertEqual(ck.tensors.count, 20)
    }

    // MARK: malformed files

    func testTruncatedEverywhereFailsCleanly() throws {
        let b = try good()
        let ck = try GGUFReader.read(path: Self.fixture("all_types.gguf"))
        let dataEnd = ck.tensors.map { $0.byteOffset + $0.byteCount }.max()!
        let headerEnd = ck.tensors.map(\.byteOffset).min()!
        // Every cut inside the header and a sample inside the data section must throw, never crash.
        for n in Array(0..<headerEnd) + Array(stride(from: headerEnd, to: dataEnd, by: 7)) {
            XCTAssertThrowsError(try GGUFReader.parse(Storage(bytes: Array(b.prefix(n))), fileIndex: 0, storageIndex: 0), "cut at \(n)") {
                XCTAssertTrue($0 is FormatError, "cut at \(n): \($0)")
            }
        }
        try expect(Array(b.prefix(600)), .truncated, "file ends inside")
        try expect(Array(b.prefix(dataEnd - 1)), .bounds, "past end of file")
        try expect([], .truncated, "too short")
    }

    func testBadMagic() throws {
        var b = try good()
        b[0] = UInt8(ascii: "X")
        try expect(b, .header, "magic")
    }

    func testVersion1Refused() throws {
        var b = try good()
        put32(&b, 4, 1)
        try expect(b, .unsupported, "version 1")
        put32(&b, 4, 7)
        try expect(b, .unsupported, "version 7")
    }

    func testHugeCounts() throws {
        var b = try good()
        put64(&b, 8, 1 << 60)
        try expect(b, .header, "tensor count")
        b = try good()
        put64(&b, 8, UInt64.max)
        try expect(b, .header, "tensor count")
        b = try good()
        put64(&b, 16, 1 << 62)
        try expect(b, .header, "metadata count")
    }

    func testHugeStringLength() throws {
        var b = try good()
        let v = try key(b, "test.string") + 4
        put64(&b, v, 1 << 40)
        try expect(b, .header, "1 GiB")
        put64(&b, v, 1 << 29)
        try expect(b, .truncated, "file ends inside")
        b = try good()
        put64(&b, 24, UInt64.max)   // first key's length
        try expect(b, .header, "1 GiB")
    }

    func testHugeArrayLength() throws {
        var b = try good()
        let n = try key(b, "tokenizer.ggml.tokens") + 8
        put64(&b, n, 1 << 40)
        try expect(b, .header, "array length")
        put64(&b, n, 1 << 28)
        try expect(b, .truncated, "cannot fit")
        b = try good()
        let m = try key(b, "test.array_u8") + 8
        put64(&b, m, 1 << 30)
        try expect(b, .truncated, "cannot fit")
    }

    func testNestedArrayBomb() throws {
        // One metadata value: arrays nested 1000 deep, each claiming one element.
        var h = header(tensors: 0, kvs: 1)
        appendString(&h, "bomb")
        append32(&h, 9)
        for _ in 0..<1000 { append32(&h, 9); append64(&h, 1) }
        try expect(h, .header, "nested deeper than 8")
        // Nine levels is one too many; eight is fine.
        for (depth, ok) in [(8, true), (9, false)] {
            var g = header(tensors: 0, kvs: 1)
            appendString(&g, "deep")
            append32(&g, 9)
            for _ in 0..<(depth - 1) { append32(&g, 9); append64(&g, 1) }
            append32(&g, 4); append64(&g, 1); append32(&g, 7)
            if ok { XCTAssertEqual(try read(g).metadata["deep"], "[[[[[[[[7]]]]]]]]") } else { try expect(g, .header, "nested deeper") }
        }
        // A wide array of empty arrays is bounded by the file size.
        var w = header(tensors: 0, kvs: 1)
        appendString(&w, "wide")
        append32(&w, 9); append32(&w, 9); append64(&w, 1 << 29)
        try expect(w, .truncated, "cannot fit")
    }

    func testDuplicateKey() throws {
        var b = try good()
        let k = try key(b, "test.i16") - 2  // "test.i16" → "test.i32"
        b[k] = UInt8(ascii: "3"); b[k + 1] = UInt8(ascii: "2")
        try expect(b, .duplicate, "duplicate metadata key 'test.i32'")
    }

    func testDuplicateTensorName() throws {
        var b = try good()
        let e = try tensorName(b, "q4_0")
        b[e - 3] = UInt8(ascii: "5")   // q4_0 → q5_0
        try expect(b, .duplicate, "duplicate tensor name 'q5_0'")
    }

    func testTooManyDims() throws {
        var b = try good()
        let e = try tensorName(b, "f32")
        put32(&b, e, 5)
        try expect(b, .shape, "5 dimensions")
    }

    func testMisalignedAndNonContiguousOffsets() throws {
        var b = try good()
        let off = try tensorOffset(b, "f16")
        let v = get64(b, off)
        put64(&b, off, v + 1)
        try expect(b, .layout, "not a multiple of the alignment 32")
        put64(&b, off, v + 32)
        try expect(b, .layout, "expected \(v)")
        put64(&b, off, 0)
        try expect(b, .layout, "expected \(v)")
    }

    func testOffsetPastEOF() throws {
        var b = try good()
        let off = try tensorOffset(b, "iq4_nl")
        put64(&b, off, 1 << 40)
        try expect(b, .bounds, "past end of file")
        put64(&b, off, UInt64.max - 31)
        try expect(b, .bounds, "past end of file")
    }

    func testBadAlignment() throws {
        var b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.fixture("align64.gguf"))))
        let v = try key(b, "general.alignment") + 4
        for bad: UInt32 in [0, 48, 3] {
            put32(&b, v, bad)
            try expect(b, .header, "power of two")
        }
        put32(&b, v - 4, 10)   // type uint64
        try expect(b, .header, "must be uint32")
    }

    func testElementCountOverflow() throws {
        var b = try good()
        let e = try tensorName(b, "f32")
        put64(&b, e + 4, 1 << 40)
        put64(&b, e + 12, 1 << 40)
        try expect(b, .shape, "overflows")
        put64(&b, e + 4, UInt64.max)
        try expect(b, .shape, "negative")
    }

    func testInnermostDimNotMultipleOfBlock() throws {
        var b = try good()
        let e = try tensorName(b, "q4_0")
        XCTAssertEqual(get64(b, e + 4), 64)
        put64(&b, e + 4, 48)
        try expect(b, .shape, "not a multiple of the block size 32 of Q4_0")
        b = try good()
        let k = try tensorName(b, "q6_k")
        put64(&b, k + 4, 128)
        try expect(b, .shape, "block size 256 of Q6_K")
        b = try good()
        let o = try tensorName(b, "iq4_nl")
        put64(&b, o + 4, 16)
        try expect(b, .shape, "block size 32 of IQ4_NL")
    }

    func testUnknownTypeAndValueType() throws {
        var b = try good()
        let e = try tensorName(b, "f32")
        put32(&b, e + 4 + 16, 4)   // removed Q4_2
        try expect(b, .dtype, "unknown GGML type id 4")
        b = try good()
        let k = try key(b, "test.u8")
        put32(&b, k, 13)
        try expect(b, .header, "unknown value type 13")
    }

    // MARK: helpers

    func good() throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.fixture("all_types.gguf")))) }

    func read(_ b: [UInt8]) throws -> Checkpoint {
        let url = tmp.appendingPathComponent("t\(UUID().uuidString).gguf")
        try Data(b).write(to: url)
        return try GGUFReader.read(path: url.path)
    }

    /// Writes `b` to a temp file, reads it, and checks it fails quickly with a FormatError of `kind` whose message holds `text`.
    func expect(_ b: [UInt8], _ kind: FormatError.Kind, _ text: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let start = Date()
        do {
            _ = try read(b)
            XCTFail("no error (expected \(kind): \(text))", file: file, line: line)
        } catch let e as FormatError {
            XCTAssertEqual(e.kind, kind, e.message, file: file, line: line)
            XCTAssertTrue(e.message.contains(text), "'\(e.message)' lacks '\(text)'", file: file, line: line)
            XCTAssertFalse(e.message.contains("\n"), file: file, line: line)
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 1.0, file: file, line: line)
    }

    func find(_ b: [UInt8], _ pattern: [UInt8]) -> Int? {
        guard pattern.count <= b.count else { return nil }
        outer: for i in 0...(b.count - pattern.count) {
            for (k, p) in pattern.enumerated() where b[i + k] != p { continue outer }
            return i
        }
        return nil
    }

    func lengthPrefixed(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        append64(&out, UInt64(s.utf8.count))
        return out + Array(s.utf8)
    }

    /// Offset just past a metadata key (where its u32 value type sits).
    func key(_ b: [UInt8], _ k: String) throws -> Int {
        let p = lengthPrefixed(k)
        return try XCTUnwrap(find(b, p), "key \(k)") + p.count
    }

    /// Offset just past a tensor info's name (where n_dims sits).
    func tensorName(_ b: [UInt8], _ n: String) throws -> Int { try key(b, n) }

    func tensorOffset(_ b: [UInt8], _ n: String) throws -> Int {
        let e = try tensorName(b, n)
        return e + 4 + 8 * Int(get32(b, e)) + 4
    }

    func get32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * $1) } }
    func get64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * $1) } }
    func put32(_ b: inout [UInt8], _ at: Int, _ v: UInt32) { for k in 0..<4 { b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) } }
    func put64(_ b: inout [UInt8], _ at: Int, _ v: UInt64) { for k in 0..<8 { b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) } }
    func append32(_ b: inout [UInt8], _ v: UInt32) { for k in 0..<4 { b.append(UInt8(truncatingIfNeeded: v >> (8 * k))) } }
    func append64(_ b: inout [UInt8], _ v: UInt64) { for k in 0..<8 { b.append(UInt8(truncatingIfNeeded: v >> (8 * k))) } }
    func appendString(_ b: inout [UInt8], _ s: String) { b += lengthPrefixed(s) }

    func header(tensors: UInt64, kvs: UInt64) -> [UInt8] {
        var h = Array("GGUF".utf8)
        append32(&h, 3); append64(&h, tensors); append64(&h, kvs)
        return h
    }
}
