import XCTest
#if canImport(Glibc)
import Glibc
#endif
@testable import WscanFormats
@testable import WscanAnalysis
@testable import WscanCatalog

/// A checkpoint truncated by another process while wscan has it mapped: the read past the new end raises SIGBUS.
/// wscan must not die: the indexer fails that file with a one-line reason and goes on; nothing computed from the
/// zero pages that replace the lost ones is stored.
final class ShrinkTests: XCTestCase {
    let tmp = TempDir()

    /// 16 F32 tensors of 64K elements (4 MiB of data), all ones, as a real safetensors file.
    func bigFile(_ name: String) -> String {
        let n = 16, elems = 1 << 16
        var header = "{", data: [UInt8] = []
        for t in 0..<n {
            header += "\(t == 0 ? "" : ",")\"t\(t)\":{\"dtype\":\"F32\",\"shape\":[256,256],\"data_offsets\":[\(t * elems * 4),\((t + 1) * elems * 4)]}"
        }
        header += "}"
        let one: [UInt8] = [0x00, 0x00, 0x80, 0x3F]
        data.reserveCapacity(n * elems * 4)
        for _ in 0..<(n * elems) { data += one }
        return tmp.write(name, safetensorsBytes(header: header, data: data))
    }

    override func setUp() { _ = MappedFiles.shrunk(take: true) }
    override func tearDown() { _ = MappedFiles.shrunk(take: true) }

    func testReadingATruncatedMappingFlagsItInsteadOfCrashing() throws {
        let path = bigFile("a.safetensors")
        let ck = try CheckpointOpener.open(path)
        XCTAssertFalse(ck.storages[0].shrank)
        XCTAssertNil(MappedFiles.shrunk())
        XCTAssertEqual(truncate(path, 4096), 0)
        let s = Summarizer.summarizeAll(ck)          // reads every tensor: all but the first page are gone
        XCTAssertEqual(s.count, 16)
        XCTAssertTrue(ck.storages[0].shrank)
        XCTAssertEqual(MappedFiles.shrunk(), path)
        // While the event is pending, analysis results are refused by the catalog.
        let cat = try Catalog(path: tmp.path("c.db"))
        XCTAssertThrowsError(try cat.storeResult(kind: "test", checkpoint: nil, params: ["a": 1], summary: nil, data: [1])) { e in
            XCTAssertTrue("\(e)".contains("shrank while it was being read"), "\(e)")
            XCTAssertTrue("\(e)".contains(path), "\(e)")
        }
        XCTAssertEqual(MappedFiles.shrunk(take: true), path)
        XCTAssertNil(MappedFiles.shrunk())
        XCTAssertNoThrow(try cat.storeResult(kind: "test", checkpoint: nil, params: ["a": 1], summary: nil, data: [1]))
    }

    func testIndexRunFailsTheShrunkFileAndGoesOn() throws {
        let a = bigFile("dir/a.safetensors"), b = bigFile("dir/b.safetensors")
        let cat = try Catalog(path: tmp.path("c.db"))
        let ix = Indexer(catalog: cat, options: .init())
        let cut = Once()
        // Truncate `a` from "another process" as soon as the indexer reports its first bytes of it.
        ix.onProgress = { p in if p.current == a, p.bytesDone > 0, cut.first() { _ = truncate(a, 4096) } }
        let out = try ix.run(paths: [tmp.path("dir")])
        XCTAssertEqual(out.count, 2)
        guard case let .failed(path, reason) = out[0] else { return XCTFail("\(out[0])") }
        XCTAssertEqual(path, a)
        XCTAssertTrue(reason.contains("shrank while it was being read"), reason)
        guard case .indexed(let pb, 16, _) = out[1] else { return XCTFail("\(out[1])") }
        XCTAssertEqual(pb, b)
        // Nothing was recorded for a; b's statistics are right (all ones).
        XCTAssertEqual(try cat.checkpoints().map(\.path), [b])
        let mean = try cat.query("SELECT MIN(mean), MAX(mean) FROM tensors").rows[0]
        XCTAssertEqual(mean[0].storage, .double(1)); XCTAssertEqual(mean[1].storage, .double(1))
        XCTAssertNil(MappedFiles.shrunk())
        // The next run sees the truncated file as it now is: a one-line format error, recorded as failed.
        let again = try Indexer(catalog: cat, options: .init()).run(paths: [tmp.path("dir")])
        guard case let .failed(_, r2) = again[0] else { return XCTFail("\(again[0])") }
        XCTAssertFalse(r2.contains("shrank"), r2)
    }
}

final class Once: @unchecked Sendable {
    private let lock = NSLock(); private var done = false
    func first() -> Bool { lock.lock(); defer { lock.unlock() }; if done { return false }; done = true; return true }
}
