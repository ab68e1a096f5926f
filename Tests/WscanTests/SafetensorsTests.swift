import XCTest
@testable import WscanFormats

/// Every malformed-input class the validating reader must reject, each with its reason.
final class SafetensorsMalformedTests: XCTestCase {
    let tmp = TempDir()
    let f32x4 = [UInt8](repeating: 0, count: 16)

    func read(_ bytes: [UInt8], _ name: String = "t.safetensors") throws -> Checkpoint {
        try CheckpointOpener.open(tmp.write(name, bytes))
    }

    func testWellFormedReads() throws {
        let ck = try read(safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"k":"v"}}"#, data: f32x4))
        XCTAssertEqual(ck.tensors.count, 1)
        XCTAssertEqual(ck.tensors[0].shape, [2, 2])
        XCTAssertEqual(ck.metadata["k"], "v")
    }

    func testPaddedHeaderAccepted() throws {
        let ck = try read(safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}    "#, data: f32x4))
        XCTAssertEqual(ck.tensors[0].elementCount, 4)
    }

    func testTruncatedFile() {
        assertFormatError(.truncated, "too short") { try self.read([1, 2, 3]) }
    }

    func testHeaderLengthPastEOF() {
        assertFormatError(.truncated, "past end of file") {
            try self.read(safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: f32x4, headerLength: 5000))
        }
    }

    func testHeaderOverCap() {
        assertFormatError(.header, "limit") {
            try self.read(safetensorsBytes(header: "{}", data: [], headerLength: 200_000_000))
        }
    }

    func testNonUTF8Header() {
        var b = safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: f32x4)
        b[10] = 0xFF
        assertFormatError(.json, "UTF-8") { try self.read(b) }
    }

    func testInvalidJSON() {
        assertFormatError(.json, "not valid JSON") { try self.read(safetensorsBytes(header: #"{"a": {"dtype": "F32",,}"#, data: [])) }
    }

    func testDeepNestingRejected() {
        let deep = "{\"__metadata__\":" + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000) + "}"
        assertFormatError(.json, "nests deeper") { try self.read(safetensorsBytes(header: deep, data: [])) }
    }

    func testOverlappingOffsets() {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        assertFormatError(.layout, "overlaps") { try self.read(safetensorsBytes(header: h, data: [UInt8](repeating: 0, count: 12))) }
    }

    func testGappedOffsets() {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}"#
        assertFormatError(.layout, "gap") { try self.read(safetensorsBytes(header: h, data: f32x4)) }
    }

    func testFirstTensorNotAtZero() {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#
        assertFormatError(.layout, "gap") { try self.read(safetensorsBytes(header: h, data: f32x4)) }
    }

    func testOutOfRangeOffsets() {
        let h = #"{"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}"#
        assertFormatError(.bounds, "past") { try self.read(safetensorsBytes(header: h, data: f32x4)) }
    }

    func testByteSizeNotMatchingShape() {
        let h = #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#
        assertFormatError(.layout, "needs 12") { try self.read(safetensorsBytes(header: h, data: f32x4)) }
    }

    func testShapeOverflow() {
        let h = #"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#
        assertFormatError(.shape, "overflows") { try self.read(safetensorsBytes(header: h, data: f32x4)) }
    }

    func testNegativeDimension() {
        let h = #"{"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#
        assertFormatError(.shape, "bad dimension") { try self.read(safetensorsBytes(header: h, data: f32x4)) }
    }

    func testUnknownDtype() {
        let h = #"{"a":{"dtype":"F7","shape":[4],"data_offsets":[0,16]}}"#
        assertFormatError(.dtype, "unknown dtype F7") { try self.read(safetensorsBytes(header: h, data: f32x4)) }
    }

    func testSubByteDtypeMustFillBytes() {
        let h = #"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#
        assertFormatError(.shape, "whole bytes") { try self.read(safetensorsBytes(header: h, data: [0, 0])) }
    }

    func testTrailingBytes() {
        let h = #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
        assertFormatError(.layout, "trailing") { try self.read(safetensorsBytes(header: h, data: f32x4 + [1, 2, 3])) }
    }

    func testDuplicateNames() {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#
        assertFormatError(.duplicate, "'a'") { try self.read(safetensorsBytes(header: h, data: f32x4)) }
        // a field twice inside an entry is refused too, as the reference parser refuses it ("duplicate field `dtype`");
        // a key twice in __metadata__ (a map) keeps the last value there, and here
        let f = #"{"a":{"dtype":"F32","dtype":"I32","shape":[4],"data_offsets":[0,16]}}"#
        assertFormatError(.duplicate, "duplicate field 'dtype'") { try self.read(safetensorsBytes(header: f, data: f32x4)) }
        let m = #"{"__metadata__":{"x":"1","x":"2"},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
        XCTAssertEqual(try read(safetensorsBytes(header: m, data: f32x4)).tensors.count, 1)
    }

    func testLFSPointer() {
        let ptr = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n"
        assertFormatError(.lfsPointer, "Git LFS pointer") { try self.read(Array(ptr.utf8), "model.safetensors") }
    }

    func testMetadataMustBeStrings() {
        let h = #"{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
        assertFormatError(.header, "not a string") { try self.read(safetensorsBytes(header: h, data: f32x4)) }
    }

    func testFractionalOffsetRejected() {
        let h = #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16.5]}}"#
        assertFormatError(.header, "data_offsets") { try self.read(safetensorsBytes(header: h, data: f32x4)) }
    }

    func testEveryDtypeSizeAccepted() throws {
        for d in DType.allCases where d.bits != nil {
            let n = 8
            let nb = d.byteCount(elements: n)!
            let h = "{\"a\":{\"dtype\":\"\(d.rawValue)\",\"shape\":[\(n)],\"data_offsets\":[0,\(nb)]}}"
            if d == .c128 { continue } // not a safetensors dtype
            let ck = try read(safetensorsBytes(header: h, data: [UInt8](repeating: 0, count: nb)), "d\(d.rawValue).safetensors")
            XCTAssertEqual(ck.tensors[0].byteCount, nb, d.rawValue)
        }
    }

    func testShardedIndexValidation() throws {
        let good = safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: f32x4)
        tmp.write("m/s1.safetensors", good)
        tmp.write("m/s2.safetensors", safetensorsBytes(header: #"{"b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: f32x4))
        let idx = tmp.write("m/model.safetensors.index.json", Array(#"{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}"#.utf8))
        let ck = try CheckpointOpener.open(idx)
        XCTAssertEqual(ck.format, .safetensorsSharded)
        XCTAssertEqual(Set(ck.tensors.map(\.name)), ["a", "b"])
        XCTAssertEqual(ck.files.count, 3)
        // The index claims a tensor its shard lacks.
        let bad = tmp.write("n/model.safetensors.index.json", Array(#"{"weight_map":{"a":"s1.safetensors","zz":"s1.safetensors"}}"#.utf8))
        tmp.write("n/s1.safetensors", good)
        assertFormatError(.layout, "lacks it") { try CheckpointOpener.open(bad) }
        // Path traversal in a shard name.
        let trav = tmp.write("o/model.safetensors.index.json", Array(#"{"weight_map":{"a":"../m/s1.safetensors"}}"#.utf8))
        assertFormatError(.unsafe, "outside the folder") { try CheckpointOpener.open(trav) }
        // A walk over the folder yields the index, not the shards.
        let found = CheckpointOpener.discover([tmp.url.appendingPathComponent("m").path]).checkpoints
        XCTAssertEqual(found.map { ($0 as NSString).lastPathComponent }, ["model.safetensors.index.json"])
    }
}

final class NumpyMalformedTests: XCTestCase {
    let tmp = TempDir()

    func npy(_ header: String, data: [UInt8], version: UInt8 = 1) -> [UInt8] {
        var h = Array(header.utf8)
        let pre = version == 1 ? 10 : 12
        while (pre + h.count + 1) % 64 != 0 { h.append(0x20) }
        h.append(0x0A)
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version, 0]
        if version == 1 { out += [UInt8(h.count & 0xFF), UInt8(h.count >> 8)] }
        else { out += [UInt8(h.count & 0xFF), UInt8((h.count >> 8) & 0xFF), 0, 0] }
        return out + h + data
    }

    func testGoodNpy() throws {
        let ck = try CheckpointOpener.open(tmp.write("a.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", data: [UInt8](repeating: 0, count: 16))))
        XCTAssertEqual(ck.tensors[0].shape, [2, 2])
    }

    func testBadMagic() {
        var b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data: [UInt8](repeating: 0, count: 16))
        b[1] = UInt8(ascii: "X")
        assertFormatError(.header, "magic") { try NpyReader.read(path: self.tmp.write("a.npy", b)) }
    }

    func testBadHeaderLiteral() {
        assertFormatError(.header, "header literal") {
            try CheckpointOpener.open(self.tmp.write("a.npy", self.npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), __import__('os')}", data: [])))
        }
    }

    func testMissingKey() {
        assertFormatError(.header, "shape") {
            try CheckpointOpener.open(self.tmp.write("a.npy", self.npy("{'descr': '<f4', 'fortran_order': False}", data: [])))
        }
    }

    func testUnknownDescr() {
        assertFormatError(.dtype, "unknown NumPy dtype") {
            try CheckpointOpener.open(self.tmp.write("a.npy", self.npy("{'descr': '<q7', 'fortran_order': False, 'shape': (4,), }", data: [])))
        }
    }

    func testTruncatedData() {
        assertFormatError(.truncated, "needs 16") {
            try CheckpointOpener.open(self.tmp.write("a.npy", self.npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data: [0, 0, 0])))
        }
    }

    func testHeaderLengthPastEOF() {
        var b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data: [])
        b[8] = 0xFF; b[9] = 0x7F
        assertFormatError(.truncated, "past end") { try CheckpointOpener.open(self.tmp.write("a.npy", b)) }
    }

    func testShapeOverflow() {
        assertFormatError(.shape, "overflows") {
            try CheckpointOpener.open(self.tmp.write("a.npy", self.npy("{'descr': '<f8', 'fortran_order': False, 'shape': (9223372036854775807, 4), }", data: [])))
        }
    }

    func testNpzMemberLyingAboutSize() throws {
        // Take a real deflated npz written by numpy and make one member claim a larger uncompressed size.
        var b = [UInt8](try Data(contentsOf: Paths.fixtures.appendingPathComponent("formats/deflated.npz")))
        // Patch the first central-directory entry's uncompressed size (offset 24 within the entry).
        let sig: [UInt8] = [0x50, 0x4B, 0x01, 0x02]
        let cd = (0..<(b.count - 4)).first { Array(b[$0..<($0 + 4)]) == sig }!
        let old = Int(b[cd + 24]) | Int(b[cd + 25]) << 8 | Int(b[cd + 26]) << 16 | Int(b[cd + 27]) << 24
        let lie = old + 4096
        for k in 0..<4 { b[cd + 24 + k] = UInt8((lie >> (8 * k)) & 0xFF) }
        assertFormatError(.zip, "does not inflate to its stated") { try CheckpointOpener.open(self.tmp.write("lie.npz", b)) }
        // A stored member whose sizes disagree.
        var s = [UInt8](try Data(contentsOf: Paths.fixtures.appendingPathComponent("formats/stored.npz")))
        let cd2 = (0..<(s.count - 4)).first { Array(s[$0..<($0 + 4)]) == sig }!
        s[cd2 + 24] &+= 8
        assertFormatError(.zip, "claims") { try CheckpointOpener.open(self.tmp.write("lie2.npz", s)) }
    }

    func testNpzTruncated() throws {
        let b = [UInt8](try Data(contentsOf: Paths.fixtures.appendingPathComponent("formats/deflated.npz")))
        assertFormatError(.zip) { try CheckpointOpener.open(self.tmp.write("cut.npz", Array(b.prefix(b.count / 2)))) }
    }

    func testObjectArrayRecordedNotLoaded() throws {
        let ck = try CheckpointOpener.open(Paths.fixtures.appendingPathComponent("formats/object_array.npy").path)
        XCTAssertEqual(ck.tensors[0].dtype, .object)
        XCTAssertFalse(ck.tensors[0].dtype.decodable)
        XCTAssertTrue(ck.warnings.joined().contains("pickle"))
    }

    func testFormatDetectedByContentNotExtension() throws {
        let src = try Data(contentsOf: Paths.fixtures.appendingPathComponent("formats/c_order_f32.npy"))
        let p = tmp.write("misnamed.safetensors", [UInt8](src))
        let ck = try CheckpointOpener.open(p)
        XCTAssertEqual(ck.format, .npy)
    }
}
