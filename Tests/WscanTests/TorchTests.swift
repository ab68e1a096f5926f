import XCTest
@testable import WscanFormats

func torchFixture(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/torch/\(name)").path
}

final class TorchTests: XCTestCase {
    /// Every tensor of `ref` (a float32 .npz written from torch) equals the checkpoint's tensor bit for bit.
    func compare(_ ck: Checkpoint, _ refName: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try NpzReader.read(path: torchFixture(refName))
        XCTAssertFalse(ref.tensors.isEmpty)
        let byName = Dictionary(uniqueKeysWithValues: ck.tensors.map { ($0.name, $0) })
        for r in ref.tensors {
            guard let t = byName[r.name] else { XCTFail("missing tensor \(r.name)", file: file, line: line); continue }
            XCTAssertEqual(t.shape, r.shape, r.name, file: file, line: line)
            let a = try TensorData.floats(ck, t), b = try TensorData.floats(ref, r)
            XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), r.name, file: file, line: line)
        }
    }

    func testStateDictValuesBitExact() throws {
        let ck = try CheckpointOpener.open(torchFixture("state.pt"))
        XCTAssertEqual(ck.format, .pytorch)
        XCTAssertTrue(ck.findings.allSatisfy { $0.severity < .medium }, "\(ck.findings)")
        let t = Dictionary(uniqueKeysWithValues: ck.tensors.map { ($0.name, $0) })
        XCTAssertEqual(t["f16"]?.dtype, .f16)
        XCTAssertEqual(t["bf16"]?.dtype, .bf16)
        XCTAssertEqual(t["i64"]?.dtype, .i64)
        XCTAssertEqual(t["f32"]?.layout, .contiguous)
        XCTAssertEqual(t["scalar"]?.shape, [])
        try compare(ck, "state.ref.npz")
    }

    func testNonContiguousViews() throws {
        let ck = try CheckpointOpener.open(torchFixture("state.pt"))
        let t = Dictionary(uniqueKeysWithValues: ck.tensors.map { ($0.name, $0) })
        XCTAssertEqual(t["transposed"]?.layout, .strided([1, 6], offset: 0))
        XCTAssertEqual(t["transposed"]?.shape, [6, 4])
        XCTAssertEqual(t["stepped"]?.layout, .strided([14, 3], offset: 9))
        XCTAssertEqual(try TensorData.floats(ck, t["stepped"]!), [9, 12, 23, 26])
    }

    func testSharedStorage() throws {
        let ck = try CheckpointOpener.open(torchFixture("state.pt"))
        let t = Dictionary(uniqueKeysWithValues: ck.tensors.map { ($0.name, $0) })
        let a = try XCTUnwrap(t["shared_a"]), b = try XCTUnwrap(t["shared_b"])
        XCTAssertEqual(a.storage, b.storage)
        XCTAssertEqual(b.byteOffset - a.byteOffset, 2 * 4)   // shared[2] starts two floats later
        XCTAssertEqual(Array(try TensorData.floats(ck, a)[2...3]), Array(try TensorData.floats(ck, b)[0...1]))
    }

    func testModelAndOptimizerDottedNames() throws {
        let ck = try CheckpointOpener.open(torchFixture("model.pt"))
        let names = Set(ck.tensors.map(\.name))
        for n in ["model.fc1.weight", "model.fc1.bias", "model.fc2.weight", "optimizer.state.0.exp_avg",
                  "optimizer.state.0.exp_avg_sq", "optimizer.state.3.exp_avg_sq", "optimizer.state.0.step"] {
            XCTAssertTrue(names.contains(n), "missing \(n) in \(names.sorted())")
        }
        XCTAssertEqual(ck.metadata["epoch"], "2")
        XCTAssertEqual(ck.metadata["note"], "wscan fixture")
        XCTAssertEqual(ck.metadata["optimizer.param_groups.0.lr"], "0.01")
        try compare(ck, "model.ref.npz")
    }

    func testMaliciousDataPklRefusedUnlessTrusted() throws {
        XCTAssertThrowsError(try CheckpointOpener.open(torchFixture("evil_datapkl.pt"))) { e in
            guard let u = e as? UnsafeCheckpointError else { return XCTFail("\(e)") }
            XCTAssertTrue(u.findings.contains { $0.what == "posix.system" && $0.severity >= .high })
        }
    }

    func testMaliciousMemberNamedGitkeep() throws {
        XCTAssertThrowsError(try CheckpointOpener.open(torchFixture("evil_member_gitkeep.pt"))) { e in
            guard let u = e as? UnsafeCheckpointError else { return XCTFail("\(e)") }
            XCTAssertTrue(u.findings.contains { $0.what == "posix.system" && $0.member.hasSuffix(".gitkeep") })
        }
        // With --trust the tensors load (nothing is executed) and the findings stay attached.
        let ck = try CheckpointOpener.open(torchFixture("evil_member_gitkeep.pt"), options: .init(trust: true))
        XCTAssertEqual(ck.tensors.map(\.name), ["w"])
        XCTAssertEqual(try TensorData.floats(ck, ck.tensors[0]), [0, 1, 2, 3])
        XCTAssertTrue(ck.findings.contains { $0.severity == .critical })
    }

    func testMaliciousMemberNamedLikeStorage() throws {
        let f = try PickleScanner.scanFile(path: torchFixture("evil_member_data.pt"))
        XCTAssertTrue(f.contains { $0.what == "posix.system" && $0.member.hasSuffix("data/7") && $0.severity >= .high }, "\(f)")
        XCTAssertThrowsError(try CheckpointOpener.open(torchFixture("evil_member_data.pt")))
    }

    func testSmallBenignCheckpoint() throws {
        let ck = try CheckpointOpener.open(torchFixture("small.pt"))
        XCTAssertEqual(try TensorData.floats(ck, ck.tensors[0]), [0, 1, 2, 3])
        XCTAssertNotNil(ck.tensors[0].fileOffset)
    }

    func testViewOutsideStorageRejected() {
        XCTAssertThrowsError(try CheckpointOpener.open(torchFixture("bad_view_oob.pt"))) { e in
            guard let f = e as? FormatError else { return XCTFail("\(e)") }
            XCTAssertTrue(f.message.contains("reads element 4 of a 4-element storage"), f.message)
        }
    }

    func testLegacyRefused() {
        XCTAssertThrowsError(try CheckpointOpener.open(torchFixture("legacy.pt"))) { e in
            guard let f = e as? FormatError else { return XCTFail("\(e)") }
            XCTAssertEqual(f.kind, .unsupported)
            XCTAssertTrue(f.message.contains("legacy (pre-1.6) PyTorch format"))
        }
    }
}
