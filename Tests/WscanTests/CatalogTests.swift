import XCTest
import GRDB
@testable import WscanFormats
@testable import WscanCatalog

final class CatalogTests: XCTestCase {
    let tmp = TempDir()

    func copyCorpus() throws -> URL {
        let dst = tmp.url.appendingPathComponent("ckpts")
        try FileManager.default.copyItem(at: Paths.corpus, to: dst)
        return dst
    }

    func testIndexCorpusAndQuery() throws {
        let dir = try copyCorpus()
        let cat = try Catalog(path: tmp.path("c.db"))
        let out = try Indexer(catalog: cat, options: .init()).run(paths: [dir.path])
        XCTAssertEqual(out.filter { if case .indexed = $0 { return true }; return false }.count, 13)
        let rows = try cat.checkpoints()
        XCTAssertEqual(rows.count, 13)
        let sharded = try cat.resolve("mlp_seed1_sharded")
        XCTAssertEqual(sharded.format, "safetensors-sharded")
        XCTAssertEqual(sharded.tensorCount, 6)
        XCTAssertEqual(try cat.files(checkpoint: sharded.id).count, 3)
        // Identical tensors across formats/shards show up as duplicates.
        let d = try cat.dupes(minBytes: 1000)
        let fc1 = d.first { g in g.members.contains { $0.checkpoint == "mlp_seed0.safetensors" && $0.tensor == "fc1.weight" } }
        XCTAssertNotNil(fc1)
        XCTAssertTrue(fc1!.members.contains { $0.checkpoint == "mlp_seed0_copy.npz" })
        // Fingerprints: the sharded copy and the single-file model agree.
        XCTAssertEqual(try cat.resolve("mlp_seed1.safetensors").fingerprint, sharded.fingerprint)
        // Read-only SQL
        let q = try cat.query("SELECT COUNT(*) FROM tensors")
        XCTAssertEqual(q.rows[0][0].storage, .int64(71))
        XCTAssertThrowsError(try cat.query("DELETE FROM tensors"))
        XCTAssertEqual(try cat.query("SELECT COUNT(*) FROM tensors").rows[0][0].storage, .int64(71))
    }

    /// Generic Hugging Face / llama.cpp file names are shown with their folder (19 rows of "model.safetensors" told
    /// nothing apart); distinctive names and sharded models are unchanged.
    func testDisplayNames() {
        XCTAssertEqual(Catalog.displayName("/hf/minilm/model.safetensors", format: .safetensors), "minilm/model.safetensors")
        XCTAssertEqual(Catalog.displayName("/hf/bert/pytorch_model.bin", format: .pytorch), "bert/pytorch_model.bin")
        XCTAssertEqual(Catalog.displayName("/x/llama/ggml-model-q8_0.gguf", format: .gguf), "llama/ggml-model-q8_0.gguf")
        XCTAssertEqual(Catalog.displayName("/c/mlp_seed0.safetensors", format: .safetensors), "mlp_seed0.safetensors")
        XCTAssertEqual(Catalog.displayName("/c/big/model.safetensors.index.json", format: .safetensorsSharded), "big")
    }

    /// dupes groups by content, dtype and shape, whatever order the rows come in: the same bytes read as I32 are
    /// listed apart, and a reshaped copy is its own group with its own shape.
    func testDupesGroupsByContentDtypeAndShape() throws {
        let bytes = (0..<256).map { UInt8($0 & 0xff) } + (0..<768).map { UInt8(($0 * 7) & 0xff) }
        let db = tmp.path("d.db")
        for (dir, entries) in [("a", [SafetensorsWriter.Entry(name: "w", dtype: .f32, shape: [256], bytes: bytes)]),
                               ("b", [SafetensorsWriter.Entry(name: "w", dtype: .i32, shape: [256], bytes: bytes)]),
                               ("c", [SafetensorsWriter.Entry(name: "w", dtype: .f32, shape: [256], bytes: bytes)]),
                               ("d", [SafetensorsWriter.Entry(name: "tied", dtype: .f32, shape: [16, 16], bytes: bytes),
                                      SafetensorsWriter.Entry(name: "w", dtype: .f32, shape: [16, 16], bytes: bytes)])] {
            try SafetensorsWriter.write(entries, to: tmp.write("dup/\(dir)/\(dir).safetensors", []))
        }
        let cat = try Catalog(path: db)
        _ = try Indexer(catalog: cat, options: .init()).run(paths: [tmp.path("dup")])
        let groups = try cat.dupes(minBytes: 1)
        let f32flat = groups.first { $0.dtype == "F32" && $0.shape == [256] }
        XCTAssertEqual(f32flat?.members.map(\.checkpoint).sorted(), ["a.safetensors", "c.safetensors"])
        let square = groups.first { $0.dtype == "F32" && $0.shape == [16, 16] }
        XCTAssertEqual(square?.members.map(\.tensor).sorted(), ["tied", "w"])
        XCTAssertNil(groups.first { $0.dtype == "I32" }, "one I32 tensor is not a duplicate")
    }

    /// `query` says when it stopped early, keeps repeated column names apart in JSON, and explains multi-statements.
    func testQueryLimitsAndColumnNames() throws {
        let db = tmp.path("q.db")
        XCTAssertEqual(try runWscan(["index", Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, "--db", db]).status, 0)
        let r = try runWscan(["query", "with recursive c(x) as (select 1 union all select x + 1 from c limit 20) select x from c",
                              "--limit", "5", "--db", db])
        XCTAssertEqual(r.status, 0)
        XCTAssertEqual(r.out.split(separator: "\n").count, 2 + 5)
        XCTAssertTrue(r.err.contains("stopped after 5 rows"), r.err)
        let j = try runWscan(["query", "select 1 as a, 2 as a", "--json", "--db", db])
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(j.out.utf8)) as? [[String: Int]])?.first, ["a": 1, "a_2": 2])
        let m = try runWscan(["query", "select 1; select 2", "--db", db])
        XCTAssertEqual(m.status, 1); XCTAssertEqual(m.err, "wscan: SQL error: one SQL statement at a time\n")
    }

    func testIncrementalSkipReindexAndPrune() throws {
        let dir = try copyCorpus()
        let cat = try Catalog(path: tmp.path("c.db"))
        let ix = Indexer(catalog: cat, options: .init())
        _ = try ix.run(paths: [dir.path])
        let again = try ix.run(paths: [dir.path])
        XCTAssertTrue(again.allSatisfy { if case .skipped = $0 { return true }; return false }, "unchanged files must be skipped")
        // Change one file (new mtime and content): only it is re-indexed.
        let f = dir.appendingPathComponent("mlp_seed2.safetensors").path
        let before = try cat.resolve("mlp_seed2.safetensors")
        try FileManager.default.removeItem(atPath: f)
        try FileManager.default.copyItem(atPath: dir.appendingPathComponent("mlp_seed0.safetensors").path, toPath: f)
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: 10)], ofItemAtPath: f)
        let third = try ix.run(paths: [dir.path])
        XCTAssertEqual(third.filter { if case .indexed = $0 { return true }; return false }.count, 1)
        XCTAssertNotEqual(try cat.resolve("mlp_seed2.safetensors").fingerprint, before.fingerprint)
        // Remove a file and prune.
        try FileManager.default.removeItem(atPath: f)
        var opts = Indexer.Options(); opts.prune = true
        _ = try Indexer(catalog: cat, options: opts).run(paths: [dir.path])
        XCTAssertThrowsError(try cat.resolve("mlp_seed2.safetensors"))
        XCTAssertEqual(try cat.checkpoints().count, 12)
    }

    /// An id freed by --prune is never given to another checkpoint (a `#N` in a report must keep naming one model),
    /// while re-indexing a changed file keeps its id.
    func testPrunedIdsAreNotReused() throws {
        let dir = tmp.url.appendingPathComponent("ids")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (i, n) in ["mlp_seed0", "mlp_seed1", "mlp_seed2"].enumerated() {
            try FileManager.default.copyItem(at: Paths.corpus.appendingPathComponent("\(n).safetensors"), to: dir.appendingPathComponent("m\(i).safetensors"))
        }
        let cat = try Catalog(path: tmp.path("c.db"))
        _ = try Indexer(catalog: cat, options: .init()).run(paths: [dir.path])
        XCTAssertEqual(try cat.resolve("m2.safetensors").id, 3)
        try FileManager.default.removeItem(at: dir.appendingPathComponent("m2.safetensors"))
        var opts = Indexer.Options(); opts.prune = true
        _ = try Indexer(catalog: cat, options: opts).run(paths: [dir.path])
        XCTAssertEqual(try cat.checkpoints().map(\.id), [1, 2])
        try FileManager.default.copyItem(at: Paths.corpus.appendingPathComponent("mlp_seed0_copy.npz"), to: dir.appendingPathComponent("n.npz"))
        tmp.write("ids/bad.safetensors", [1, 2, 3])
        opts.force = true
        _ = try Indexer(catalog: cat, options: opts).run(paths: [dir.path])
        let ids = Dictionary(uniqueKeysWithValues: try cat.checkpoints().map { ($0.name, $0.id) })
        XCTAssertEqual(ids["m0.safetensors"], 1)        // re-indexed (--force): same id
        XCTAssertEqual(ids["m1.safetensors"], 2)
        XCTAssertEqual(Set([ids["n.npz"], ids["bad.safetensors"]]), [4, 5], "\(ids)")   // 3 stays retired
    }

    /// Indexing the same content again (--force, touch, --sha256) keeps what was derived from it; new content drops
    /// it; an analysis computed from the old content is not stored under the re-indexed record.
    func testReindexKeepsResultsOfUnchangedContentOnly() throws {
        let dir = tmp.url.appendingPathComponent("re")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let f = dir.appendingPathComponent("m.safetensors").path
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: f)
        let cat = try Catalog(path: tmp.path("c.db"))
        _ = try Indexer(catalog: cat, options: .init()).run(paths: [dir.path])
        let row = try cat.resolve(f)
        _ = try SpectrumRunner.run(catalog: cat, checkpoint: row, request: .init())
        try cat.storeResult(kind: "test", checkpoint: row.id, params: ["p": 1], summary: nil, data: [1], analysed: [row])
        func counts() throws -> [Int64] {
            [try cat.query("SELECT COUNT(*) FROM spectra").rows[0][0], try cat.query("SELECT COUNT(*) FROM results").rows[0][0]].map {
                if case let .int64(n) = $0.storage { return n }; return -1 }
        }
        let before = try counts()
        XCTAssertGreaterThan(before[0], 0)
        var opts = Indexer.Options(); opts.force = true; opts.sha256 = true
        _ = try Indexer(catalog: cat, options: opts).run(paths: [dir.path])
        XCTAssertEqual(try counts(), before, "same content: spectra and results stay")
        XCTAssertEqual(try cat.query("SELECT COUNT(*) FROM files WHERE sha256 IS NOT NULL").rows[0][0].storage, .int64(1))
        // New content under the same id: derived data goes, and a result computed from the old row is refused.
        try FileManager.default.removeItem(atPath: f)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed2.safetensors").path, toPath: f)
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: 10)], ofItemAtPath: f)
        _ = try Indexer(catalog: cat, options: .init()).run(paths: [dir.path])
        XCTAssertEqual(try cat.resolve(f).id, row.id)
        XCTAssertEqual(try counts(), [0, 0])
        XCTAssertThrowsError(try cat.storeResult(kind: "test", checkpoint: row.id, params: ["p": 1], summary: nil, data: [1], analysed: [row])) {
            XCTAssertTrue("\($0)".contains("re-indexed with new content"), "\($0)")
        }
    }

    func testBadFilesRecordedAndRunContinues() throws {
        let dir = tmp.url.appendingPathComponent("mixed")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors"), to: dir.appendingPathComponent("a.safetensors"))
        tmp.write("mixed/b.safetensors", [1, 2, 3, 4])
        tmp.write("mixed/c.safetensors", Array("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n".utf8))
        try FileManager.default.copyItem(at: Paths.corpus.appendingPathComponent("mlp_seed1.safetensors"), to: dir.appendingPathComponent("d.safetensors"))
        let cat = try Catalog(path: tmp.path("c.db"))
        let out = try Indexer(catalog: cat, options: .init()).run(paths: [dir.path])
        XCTAssertEqual(out.count, 4)
        let rows = Dictionary(uniqueKeysWithValues: try cat.checkpoints().map { ($0.name, $0) })
        XCTAssertEqual(rows["a.safetensors"]?.status, "ok")
        XCTAssertEqual(rows["d.safetensors"]?.status, "ok")
        XCTAssertEqual(rows["b.safetensors"]?.status, "error")
        XCTAssertTrue(rows["c.safetensors"]?.error?.contains("Git LFS") ?? false)
    }

    func testSHA256MatchesFoundationReference() throws {
        let dir = try copyCorpus()
        let cat = try Catalog(path: tmp.path("c.db"))
        var o = Indexer.Options(); o.sha256 = true
        _ = try Indexer(catalog: cat, options: o).run(paths: [dir.appendingPathComponent("mlp_seed0.safetensors").path])
        let f = try cat.files(checkpoint: try cat.resolve("mlp_seed0.safetensors").id)[0]
        // Reference: sha256sum from coreutils.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        p.arguments = [f.path]
        let pipe = Pipe(); p.standardOutput = pipe
        try p.run(); p.waitUntilExit()
        let ref = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: " ")[0]
        XCTAssertEqual(f.sha256, String(ref))
    }
}

/// The CLI as a user runs it: exit codes, JSON, and a SIGKILL in the middle of an index run.
final class CLITests: XCTestCase {
    let tmp = TempDir()

    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: Paths.wscanBinary.path) else {
            throw XCTSkip("wscan binary not built (swift build)")
        }
    }

    func testExitCodesAndJSON() throws {
        let db = tmp.path("c.db")
        let ok = try runWscan(["index", Paths.corpus.path, "--db", db, "--json"])
        XCTAssertEqual(ok.status, 0, ok.err)
        let j = try JSONSerialization.jsonObject(with: Data(ok.out.utf8)) as! [String: Any]
        XCTAssertEqual(j["indexed"] as? Int, 13)
        XCTAssertEqual(try runWscan(["frobnicate"]).status, 2)
        XCTAssertEqual(try runWscan(["index"]).status, 2)
        let bad = tmp.write("bad.safetensors", [9, 9, 9])
        let r = try runWscan(["index", bad, "--db", db])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("bad.safetensors") && r.err.contains("too short"), r.err)
        XCTAssertEqual(r.err.split(separator: "\n").count, 1, "one line per bad file")
        let ls = try runWscan(["ls", "--db", db, "--json"])
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(ls.out.utf8)) as! [Any]).count, 14)
        let show = try runWscan(["show", "mlp_seed0.safetensors", "--db", db, "--json"])
        let sj = try JSONSerialization.jsonObject(with: Data(show.out.utf8)) as! [String: Any]
        XCTAssertEqual((sj["tensors"] as! [Any]).count, 6)
        let q = try runWscan(["query", "--db", db, "--json", "SELECT name FROM checkpoints WHERE format = 'npz' ORDER BY name"])
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(q.out.utf8)) as! [[String: Any]]).map { $0["name"] as! String },
                       ["digits_test.npz", "mlp_seed0_activations.npz", "mlp_seed0_adam_state.npz", "mlp_seed0_copy.npz"])
        XCTAssertNotEqual(try runWscan(["query", "--db", db, "DROP TABLE tensors"]).status, 0)
        // Show accepts a path and indexes it on the fly.
        let onTheFly = try runWscan(["show", Paths.fixtures.appendingPathComponent("formats/half.npy").path, "--db", db])
        XCTAssertEqual(onTheFly.status, 0, onTheFly.err)
        XCTAssertTrue(onTheFly.out.contains("F16"))
        XCTAssertEqual(try runWscan(["index", "--help"]).status, 0)
        // `help` with a name that is no command is a usage error naming the commands there are
        XCTAssertEqual(try runWscan(["help", "analyze", "spectrum"]).status, 0)
        let bogus = try runWscan(["help", "analyze", "bogus"])
        XCTAssertEqual(bogus.status, 2)
        XCTAssertEqual(bogus.err, "wscan: 'wscan analyze' has no command 'bogus' (commands: spectrum, sparsity, saliency)\n")
        XCTAssertFalse(try runWscan(["help", "nope"]).err.contains("_bench"))
        XCTAssertEqual(try runWscan(["nope", "--help"]).status, 2)
        let flagFirst = try runWscan(["-h", "nope"])       // the flag before the name: the same usage error
        XCTAssertEqual(flagFirst.status, 2)
        XCTAssertTrue(flagFirst.err.hasPrefix("wscan: 'wscan' has no command 'nope'"), flagFirst.err)
        XCTAssertEqual(try runWscan(["--help", "analyze", "spectrum"]).status, 0)
        XCTAssertEqual(try runWscan(["analyze", "-h", "spectrum"]).status, 0)
        XCTAssertEqual(try runWscan(["help", "help"]).status, 0)
        XCTAssertEqual(try runWscan(["compare", "a.safetensors", "b.gguf", "--help"]).status, 0)   // arguments, not commands
    }

    /// Names and metadata in a checkpoint are untrusted: escape sequences in them must not reach the terminal, in
    /// tables, metadata listings or one-line errors, while JSON output keeps the exact text (escaped by JSON).
    func testControlCharactersInNamesAndMetadataNeverReachTheTerminal() throws {
        let db = tmp.path("c.db")
        let esc = "\u{1B}]0;owned\u{07}\u{1B}[31m\r\u{9B}2J"
        let file = tmp.path("evil.safetensors")
        try SafetensorsWriter.write([.init(name: "w" + esc, dtype: .f32, shape: [2], bytes: [UInt8](repeating: 0, count: 8))],
                                    metadata: ["note": "hello" + esc], to: file)
        let bad = tmp.write("bad\u{1B}[2J.safetensors", [9, 9, 9])
        // A file name and a tensor name with line breaks, and a 5000-character name: each error stays one line.
        let twoLines = tmp.write("two\nlines.safetensors", [1, 2, 3])
        let header = Array(#"{"a\nb\#(String(repeating: "x", count: 5000))":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}"#.utf8)
        var st = withUnsafeBytes(of: UInt64(header.count).littleEndian, Array.init) + header
        st += [0, 0, 0, 0]
        let badName = tmp.write("badname.safetensors", st)
        func clean(_ s: String, _ what: String) {
            XCTAssertFalse(s.unicodeScalars.contains { ($0.value < 0x20 && $0 != "\n" && $0 != "\t") || (0x7F...0x9F).contains($0.value) },
                           "\(what): \(s.debugDescription)")
        }
        let idx = try runWscan(["index", file, bad, twoLines, badName, "--db", db])
        XCTAssertEqual(idx.status, 1)
        clean(idx.out, "index stdout"); clean(idx.err, "index stderr")
        XCTAssertTrue(idx.err.contains("bad\u{FFFD}[2J.safetensors"), idx.err)
        let errLines = idx.err.split(separator: "\n")
        XCTAssertEqual(errLines.count, 3, idx.err)
        XCTAssertTrue(errLines.contains { $0.contains("two\\nlines.safetensors") }, idx.err)
        XCTAssertTrue(errLines.allSatisfy { $0.count <= 400 }, idx.err)
        let show = try runWscan(["show", "evil.safetensors", "--db", db])
        XCTAssertEqual(show.status, 0, show.err)
        clean(show.out, "show")
        XCTAssertTrue(show.out.contains("hello\u{FFFD}]0;owned\u{FFFD}"), show.out)
        XCTAssertTrue(show.out.contains("w\u{FFFD}]0;owned"), show.out)
        clean(try runWscan(["ls", "--db", db]).out, "ls")
        let json = try runWscan(["show", "evil.safetensors", "--db", db, "--json"])
        clean(json.out, "json")
        let j = try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as! [String: Any]
        XCTAssertEqual(((j["tensors"] as! [[String: Any]]).first?["name"] as? String), "w" + esc, "JSON keeps the exact name")
    }

    /// wscan writes only its own files: a listing never creates a catalog, an SQLite file that is not a catalog is
    /// left byte-identical, the catalog is never an output, and a report never goes into a folder holding someone
    /// else's README.md.
    func testNeverWritesFilesItDoesNotOwn() throws {
        let model = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        let missing = tmp.path("missing.db")
        let ls = try runWscan(["ls", "--db", missing])
        XCTAssertEqual(ls.status, 1); XCTAssertTrue(ls.err.contains("no catalog at"), ls.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: missing))
        let foreign = tmp.path("foreign.db")
        let q = try DatabaseQueue(path: foreign)
        try q.write { try $0.execute(sql: "CREATE TABLE notes (x TEXT); INSERT INTO notes VALUES ('mine')") }
        try q.close()
        let before = try Data(contentsOf: URL(fileURLWithPath: foreign))
        for args in [["query", "select 1"], ["index", model], ["ls"]] {
            let r = try runWscan(args + ["--db", foreign])
            XCTAssertEqual(r.status, 1, "\(args)"); XCTAssertTrue(r.err.contains("not a wscan catalog"), r.err)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: foreign)), before)
        let db = tmp.path("own.db")
        XCTAssertEqual(try runWscan(["index", model, "--db", db]).status, 0)
        for args in [["export", model, "--to", db], ["analyze", "sparsity", model, "--write-pruned", db + "-wal", "--at", "0.5", "--grid", "0,0.5"],
                     ["analyze", "saliency", model, "--mask-out", db]] {
            let r = try runWscan(args + ["--db", db])
            XCTAssertEqual(r.status, 1, "\(args)"); XCTAssertTrue(r.err.contains("is the catalog"), r.err)
        }
        XCTAssertEqual(try runWscan(["ls", "--db", db]).status, 0, "the catalog is intact")
        let card = tmp.path("hf/README.md")
        try "# my model card\n".write(toFile: tmp.write("hf/README.md", []), atomically: true, encoding: .utf8)
        let rep = try runWscan(["report", model, "-o", tmp.path("hf"), "--db", db])
        XCTAssertEqual(rep.status, 1); XCTAssertTrue(rep.err.contains("holds files wscan did not write"), rep.err)
        XCTAssertEqual(try String(contentsOfFile: card, encoding: .utf8), "# my model card\n")
        // export --dtype converts floating-point tensors only.
        let ints = tmp.path("ints.safetensors"), out = tmp.path("ints_f16.safetensors")
        try SafetensorsWriter.write([.init(name: "ids", dtype: .i32, shape: [3], bytes: [1, 0, 0, 0, 2, 0, 0, 0, 70, 0, 0, 0]),
                                     .init(name: "w", shape: [2], floats: [0.5, -1])], to: ints)
        XCTAssertEqual(try runWscan(["export", ints, "--to", out, "--dtype", "f16", "--db", db]).status, 0)
        let ex = try CheckpointOpener.open(out)
        XCTAssertEqual(ex.tensors.first { $0.name == "ids" }?.dtype, .i32)
        XCTAssertEqual(ex.tensors.first { $0.name == "w" }?.dtype, .f16)
    }

    /// Incremental indexing over links, FIFOs, failures and pruning: a folder walk follows links to files (a Hugging
    /// Face cache), a replaced link target is a change, a FIFO is refused at once, a failed file is read again on the
    /// next run, and --prune drops only entries under the given folder (x/ is not a prefix of xx/).
    func testIncrementalIndexWithLinksFifosFailuresAndPrune() throws {
        let src = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        let other = Paths.corpus.appendingPathComponent("mlp_seed1.safetensors").path
        let fm = FileManager.default
        let root = tmp.path("inc"), db = tmp.path("inc.db")
        for d in ["blobs", "snap", "x", "xx"] { try fm.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true) }
        try fm.copyItem(atPath: src, toPath: root + "/blobs/abc")
        try fm.createSymbolicLink(atPath: root + "/snap/model.safetensors", withDestinationPath: "../blobs/abc")
        XCTAssertEqual(mkfifo(root + "/snap/pipe.safetensors", 0o644), 0)
        let t0 = Date()
        var r = try runWscan(["index", root + "/snap", root + "/snap/pipe.safetensors", "--db", db])
        XCTAssertLessThan(Date().timeIntervalSince(t0), 20)
        XCTAssertEqual(r.status, 1); XCTAssertTrue(r.out.hasPrefix("1 indexed"), r.out); XCTAssertTrue(r.err.contains("pipe.safetensors: not a regular file"), r.err)
        try fm.removeItem(atPath: root + "/blobs/abc"); try fm.copyItem(atPath: other, toPath: root + "/blobs/abc")
        r = try runWscan(["index", root + "/snap", "--db", db])
        XCTAssertTrue(r.out.hasPrefix("1 indexed, 0 current"), "a new link target is a change: \(r.out)")
        // A failed file is read again: once fixed, it is indexed.
        let broken = tmp.write("inc/x/a.safetensors", [1, 2, 3])
        XCTAssertEqual(try runWscan(["index", root + "/x", "--db", db]).status, 1)
        XCTAssertEqual(try runWscan(["index", root + "/x", "--db", db]).status, 1, "still broken: still failed, not 'current'")
        try fm.removeItem(atPath: broken); try fm.copyItem(atPath: src, toPath: broken)
        r = try runWscan(["index", root + "/x", "--db", db])
        XCTAssertEqual(r.status, 0, r.err); XCTAssertTrue(r.out.hasPrefix("1 indexed"), r.out)
        try fm.copyItem(atPath: other, toPath: root + "/xx/b.safetensors")
        XCTAssertEqual(try runWscan(["index", root + "/xx", "--db", db]).status, 0)
        try fm.removeItem(atPath: root + "/xx/b.safetensors")
        r = try runWscan(["index", root + "/x", "--prune", "--db", db])
        XCTAssertTrue(r.out.contains("pruned 0 entries"), r.out)
        try fm.removeItem(atPath: broken); try fm.createDirectory(atPath: broken, withIntermediateDirectories: true)
        r = try runWscan(["index", root + "/xx", root + "/x", "--prune", "--db", db])
        XCTAssertTrue(r.out.contains("pruned 2 entries"), r.out)
    }

    /// A folder of 400 copies of a corpus model, so that a signal lands in the middle of an index run.
    func manyCopies(_ name: String) throws -> URL {
        let dir = tmp.url.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let src = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors")
        for i in 0..<400 { try FileManager.default.copyItem(at: src, to: dir.appendingPathComponent("m\(i).safetensors")) }
        return dir
    }

    /// Ctrl-C during an index run says so on one line and leaves a consistent catalog of the finished checkpoints.
    func testInterruptedIndexSaysSoAndKeepsFinishedWork() throws {
        let dir = try manyCopies("intr")
        let db = tmp.path("intr.db")
        let p = Process()
        p.executableURL = Paths.wscanBinary
        p.arguments = ["index", dir.path, "--db", db]
        let err = Pipe(); p.standardError = err; p.standardOutput = FileHandle.nullDevice
        try p.run()
        Thread.sleep(forTimeInterval: 0.3)
        guard p.isRunning else { throw XCTSkip("the run finished before the interrupt") }
        p.interrupt(); p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .uncaughtSignal)
        XCTAssertEqual(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
                       "wscan: interrupted; finished work is kept, the rest was not written\n")
        let q = try DatabaseQueue(path: db)
        XCTAssertEqual(try q.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") }, "ok")
        try q.close()
    }

    func testKilledIndexRunLeavesConsistentCatalog() throws {
        let dir = try manyCopies("many")
        let db = tmp.path("k.db")
        var killedMidway = false
        for delay in [0.15, 0.3, 0.6] {
            let p = Process()
            p.executableURL = Paths.wscanBinary
            p.arguments = ["index", dir.path, "--db", db]
            p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
            try p.run()
            Thread.sleep(forTimeInterval: delay)
            if p.isRunning { kill(p.processIdentifier, SIGKILL); killedMidway = true }
            p.waitUntilExit()
            // The catalog opens and is intact after each kill.
            let q = try DatabaseQueue(path: db)
            let integrity = try q.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") }
            XCTAssertEqual(integrity, "ok")
            // Every recorded checkpoint is complete: 6 tensors each.
            let partial = try q.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM checkpoints WHERE tensor_count != (SELECT COUNT(*) FROM tensors t WHERE t.checkpoint_id = checkpoints.id)") }
            XCTAssertEqual(partial, 0)
            try q.close()
        }
        XCTAssertTrue(killedMidway, "index finished before any kill; make the workload larger")
        let r = try runWscan(["index", dir.path, "--db", db, "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        let cat = try Catalog(path: db)
        XCTAssertEqual(try cat.checkpoints().count, 400)
        XCTAssertEqual(try cat.query("SELECT COUNT(*) FROM tensors").rows[0][0].storage, .int64(2400))
    }
}

/// Review findings on everyday use: stable ids, statistics of strided views, Markdown tables, lineage counts,
/// `show` on a failed file, exports that would be empty, and a folder given as the catalog.
final class UXReviewTests: XCTestCase {
    func testIdsStatsTablesAndMessages() throws {
        let tmp = TempDir(), db = tmp.path("c.db")
        for f in ["mlp_seed0.safetensors", "mlp_seed1.safetensors", "mlp_seed0_f16.safetensors"] {
            try FileManager.default.copyItem(at: Paths.corpus.appendingPathComponent(f), to: URL(fileURLWithPath: tmp.path(f)))
        }
        _ = try runPython("""
        import torch, numpy as np
        w = torch.arange(35, dtype=torch.float32)
        torch.save({"stepped": w.as_strided((2, 2), (14, 3), 9)}, \(pyStr(tmp.path("view.pt"))))
        np.save(\(pyStr(tmp.path("obj.npy"))), np.array([{"a": 1}], dtype=object), allow_pickle=True)
        open(\(pyStr(tmp.path("bad.safetensors"))), "wb").write(b"\\x10\\0\\0\\0\\0\\0\\0\\0{")
        """)
        XCTAssertEqual(try runWscan(["index", tmp.path("."), "--db", db]).status, 1, "bad.safetensors fails")
        func ids() throws -> [String: Int64] {
            try DatabaseQueue(path: db).read { db in
                Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT id, path FROM checkpoints").map { (($0["path"] as String), $0["id"] as Int64) })
            }
        }
        let before = try ids()
        XCTAssertEqual(try runWscan(["index", tmp.path("."), "--db", db, "--force"]).status, 1)
        XCTAssertEqual(try ids(), before, "re-indexing keeps each path's id, so #N references stay valid")
        // The strided view's statistics are its own four elements (9, 12, 23, 26), not its storage run's.
        let st = try DatabaseQueue(path: db).read { try Row.fetchOne($0, sql: "SELECT mean, min, max, zero_frac FROM tensors WHERE name = 'stepped'")! }
        XCTAssertEqual(st["mean"] as Double, 17.5); XCTAssertEqual(st["min"] as Double, 9); XCTAssertEqual(st["max"] as Double, 26)
        XCTAssertEqual(st["zero_frac"] as Double, 0)
        // show on a file that failed: its record on stdout (JSON), the reason on stderr, exit 1.
        let show = try runWscan(["show", tmp.path("bad.safetensors"), "--db", db, "--json"])
        XCTAssertEqual(show.status, 1)
        XCTAssertTrue(show.out.contains("\"status\" : \"error\""), show.out)
        XCTAssertEqual(show.err.split(separator: "\n").count, 1, show.err)
        // An export with nothing to write leaves no file behind.
        let ex = try runWscan(["export", tmp.path("obj.npy"), "--to", tmp.path("o.safetensors")])
        XCTAssertEqual(ex.status, 1, ex.out)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("o.safetensors")))
        // Lineage counts every pair once.
        let lin = try runWscan(["lineage", "--db", db, "--json"])
        let j = try JSONSerialization.jsonObject(with: Data(lin.out.utf8)) as! [String: Any]
        let n = (j["checkpoints"] as! [String]).count
        XCTAssertEqual((j["compared"] as! Int) + (j["identicalByFingerprint"] as! Int) + (j["skippedPairs"] as! Int) + ((j["failed"] as? [String])?.count ?? 0),
                       n * (n - 1) / 2)
        // A compare report's tables render: header and delimiter rows have the same number of cells.
        let out = tmp.path("r")
        XCTAssertEqual(try runWscan(["report", "--compare", tmp.path("mlp_seed0.safetensors"), tmp.path("mlp_seed1.safetensors"), "--db", db, "-o", out]).status, 0)
        let md = try String(contentsOfFile: out + "/README.md", encoding: .utf8).split(separator: "\n").map(String.init)
        func cells(_ l: String) -> Int { l.replacingOccurrences(of: "\\|", with: "").filter { $0 == "|" }.count }
        for (i, l) in md.enumerated() where l.hasPrefix("|---") || l.hasPrefix("|:--") {
            XCTAssertEqual(cells(md[i - 1]), cells(l), "table header: \(md[i - 1])")
        }
        let folder = try runWscan(["ls", "--db", tmp.path(".")])
        XCTAssertEqual(folder.status, 1); XCTAssertTrue(folder.err.contains("is a folder"), folder.err)
    }
}

/// Catalog review fixes reproduced through the CLI and the reader API.
final class CatalogReviewTests: XCTestCase {
    let tmp = TempDir()

    /// The size and mtime stored for a file are those of the bytes that were mapped and read, even when another file
    /// is renamed into place afterwards (before: the new file's stat was stored with the old content, "current" forever).
    func testFileStateComesFromTheMappedDescriptor() throws {
        let p = tmp.path("m.safetensors")
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: p)
        let st = try Storage(mapping: p)
        let size = st.count
        tmp.write("other", [1, 2, 3])
        XCTAssertEqual(rename(tmp.path("other"), p), 0)
        let f = try FileRef.of(st, p)
        XCTAssertEqual(f.size, size)
        XCTAssertNotEqual(try FileRef.stat(p).size, size)
    }

    func testReadOnlyCommandsDoNotCreateCatalogsAndPruneOfAGoneFolderSucceeds() throws {
        let db = tmp.path("typo.db")
        let r = try runWscan(["show", "#1", "--db", db])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("no catalog"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: db))
        XCTAssertEqual(try runWscan(["lineage", "--db", db]).status, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: db))
        // index a folder, delete it, prune it: success, and the entry is gone
        let c = tmp.path("c.db")
        try FileManager.default.createDirectory(atPath: tmp.path("d/sub"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: tmp.path("d/sub/m.safetensors"))
        XCTAssertEqual(try runWscan(["index", tmp.path("d"), "--db", c]).status, 0)
        try FileManager.default.removeItem(atPath: tmp.path("d/sub"))
        let p = try runWscan(["index", tmp.path("d/sub"), "--prune", "--db", c])
        XCTAssertEqual(p.status, 0, p.out + p.err)
        XCTAssertTrue(p.out.contains("pruned 1 entries"), p.out)
        // REAL values are printed exactly (timestamps were rounded to 6 digits)
        let q = try runWscan(["query", "SELECT 1795960000.125 AS t", "--db", c])
        XCTAssertTrue(q.out.contains("1795960000.125"), q.out)
    }
}

extension CatalogReviewTests {
    /// A folder that cannot be listed is a failure with its reason, not an empty folder, and --prune keeps the
    /// entries below it. Run as an unprivileged user (root reads everything); skipped where that is not possible.
    func testUnlistableFolderIsReportedAndNotPruned() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            throw XCTSkip("needs root and setpriv to run wscan as an unprivileged user")
        }
        let root = tmp.path("perm")
        try FileManager.default.createDirectory(atPath: root + "/ok", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/locked", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: root + "/ok/a.safetensors")
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed1.safetensors").path, toPath: root + "/locked/b.safetensors")
        let bin = tmp.path("wscan")
        try FileManager.default.copyItem(atPath: Paths.wscanBinary.path, toPath: bin)
        for p in [tmp.url.path, root, root + "/ok", root + "/locked", root + "/ok/a.safetensors", root + "/locked/b.safetensors", bin] {
            XCTAssertEqual(chmod(p, 0o777), 0)
        }
        let db = root + "/c.db"
        let setpriv = URL(fileURLWithPath: "/usr/bin/setpriv")
        let asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups", bin]
        XCTAssertEqual(try runProcess(setpriv, asNobody + ["index", root, "--db", db]).status, 0)   // both indexed
        XCTAssertEqual(chmod(root + "/locked", 0o000), 0)
        defer { _ = chmod(root + "/locked", 0o755) }
        let r = try runProcess(setpriv, asNobody + ["index", root, "--prune", "--db", db])
        XCTAssertEqual(r.status, 1, r.out + r.err)
        XCTAssertTrue(r.err.contains("locked: cannot list folder: Permission denied"), r.err)
        XCTAssertTrue(r.out.contains("pruned 0 entries") || !r.out.contains("pruned 1"), r.out)
        XCTAssertEqual(try Catalog(path: db).checkpoints().count, 2, "b's entry is kept: its folder could not be listed")
    }
}

extension CatalogReviewTests {
    func testQueryStopsAfterItsTimeout() throws {
        let db = tmp.path("c.db")
        _ = try Catalog(path: db)
        let t0 = Date()
        let r = try runWscan(["query", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", "--timeout", "0.5", "--db", db])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("stopped after 0.5 s"), r.err)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 30)
    }
}

extension CatalogReviewTests {
    /// A catalog the user may read but not write opens read-only (as an immutable file) for the reading commands.
    func testReadOnlyCatalogServesReadingCommands() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            throw XCTSkip("needs root and setpriv to run wscan as an unprivileged user")
        }
        let dir = tmp.path("ro")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let model = dir + "/m.safetensors", db = dir + "/c.db", bin = tmp.path("wscan")
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: model)
        try FileManager.default.copyItem(atPath: Paths.wscanBinary.path, toPath: bin)
        XCTAssertEqual(try runWscan(["index", dir, "--db", db]).status, 0)
        for (p, m) in [(tmp.url.path, 0o755), (dir, 0o755), (model, 0o644), (db, 0o444), (bin, 0o755)] { XCTAssertEqual(chmod(p, mode_t(m)), 0) }
        let setpriv = URL(fileURLWithPath: "/usr/bin/setpriv")
        let asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups", bin]
        let ls = try runProcess(setpriv, asNobody + ["ls", "--db", db])
        XCTAssertEqual(ls.status, 0, ls.err)
        XCTAssertTrue(ls.out.contains("m.safetensors"), ls.out)
        let q = try runProcess(setpriv, asNobody + ["query", "SELECT COUNT(*) AS n FROM tensors", "--json", "--db", db])
        XCTAssertEqual(q.status, 0, q.err)
        XCTAssertTrue(q.out.contains("\"n\" : 6") || q.out.contains("\"n\": 6"), q.out)
        XCTAssertEqual(try runProcess(setpriv, asNobody + ["show", "#1", "--db", db]).status, 0)
        let w = try runProcess(setpriv, asNobody + ["analyze", "spectrum", "#1", "--db", db])
        XCTAssertEqual(w.status, 1, "writing to a read-only catalog fails with a message")
        XCTAssertFalse(w.err.isEmpty)
        // The owner indexes a second model while holding the catalog open, so the change stays in the -wal file
        // (SQLite folds it back only when the last connection closes): a reader must see it (an immutable open
        // reads the main file alone and saw one checkpoint).
        XCTAssertEqual(chmod(db, 0o644), 0)
        let owner = try Catalog(path: db)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed1.safetensors").path, toPath: dir + "/n.safetensors")
        XCTAssertEqual(chmod(dir + "/n.safetensors", 0o644), 0)
        XCTAssertEqual(try runWscan(["index", dir, "--db", db]).status, 0)
        var walSize = stat()
        XCTAssertEqual(stat(db + "-wal", &walSize), 0); XCTAssertGreaterThan(walSize.st_size, 0, "the premise: changes in the WAL")
        for f in [db + "-wal", db + "-shm"] { _ = chmod(f, 0o644) }
        let q2 = try runProcess(setpriv, asNobody + ["query", "SELECT COUNT(*) AS n FROM checkpoints", "--json", "--db", db])
        XCTAssertEqual(q2.status, 0, q2.err)
        XCTAssertTrue(q2.out.contains("\"n\" : 2") || q2.out.contains("\"n\": 2"), q2.out)
        withExtendedLifetime(owner) {}
    }
}

extension CatalogReviewTests {
    /// File names are bytes on Linux. "café" in NFC and in NFD are two files (Swift's String == calls them equal);
    /// a checkpoint whose name is not UTF-8 is reported, not silently skipped; `--prune` of one twin's folder does
    /// not reach the other's.
    func testUnicodeTwinsAndNonUTF8NamesAreTwoFilesAndAReportedFailure() throws {
        let root = tmp.path("names"), db = tmp.path("names.db")
        let nfc = "caf\u{E9}", nfd = "cafe\u{301}"
        XCTAssertEqual(nfc, nfd, "the premise: Swift compares by canonical equivalence")
        for d in [nfc, nfd] { try FileManager.default.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true) }
        let src = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        let other = Paths.corpus.appendingPathComponent("mlp_seed1.safetensors").path
        try FileManager.default.copyItem(atPath: src, toPath: root + "/\(nfc)/\(nfc).safetensors")
        try FileManager.default.copyItem(atPath: other, toPath: root + "/\(nfd)/\(nfd).safetensors")
        // A file and a folder whose names hold the byte 0xFF, made with the raw bytes.
        func rawPath(_ name: [UInt8]) -> [CChar] { (Array((root + "/").utf8) + name + [0]).map { CChar(bitPattern: $0) } }
        let data = try Data(contentsOf: URL(fileURLWithPath: src))
        let fd = open(rawPath(Array("bad".utf8) + [0xFF] + Array(".safetensors".utf8)), O_WRONLY | O_CREAT, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        _ = data.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }; close(fd)
        XCTAssertEqual(mkdir(rawPath([0xFE, 0x41]), 0o755), 0)
        let r = try runWscan(["index", root, "--db", db])
        XCTAssertEqual(r.status, 1, "a file that cannot be indexed is a failure: \(r.out) \(r.err)")
        XCTAssertTrue(r.out.hasPrefix("2 indexed"), r.out)
        XCTAssertTrue(r.err.contains("bad\\xff.safetensors: file name is not valid UTF-8"), r.err)
        XCTAssertTrue(r.err.contains("\\xfeA: folder name is not valid UTF-8"), r.err)
        let cat = try Catalog(path: db)
        let paths = try cat.checkpoints().map { Array($0.path.utf8) }
        XCTAssertEqual(Set(paths), Set([root + "/\(nfc)/\(nfc).safetensors", root + "/\(nfd)/\(nfd).safetensors"].map { Array($0.utf8) }))
        // Each twin resolves to its own entry, by exact path.
        let a = try cat.resolve(root + "/\(nfc)/\(nfc).safetensors"), b = try cat.resolve(root + "/\(nfd)/\(nfd).safetensors")
        XCTAssertNotEqual(a.id, b.id)
        XCTAssertTrue(PathBytes.equal(b.path, root + "/\(nfd)/\(nfd).safetensors"))
        // The NFD folder's file goes; pruning the NFC folder keeps its entry (it is not under that folder).
        try FileManager.default.removeItem(atPath: root + "/\(nfd)/\(nfd).safetensors")
        XCTAssertTrue(try runWscan(["index", root + "/" + nfc, "--prune", "--db", db]).out.contains("pruned 0 entries"))
        XCTAssertEqual(try cat.checkpoints().count, 2)
        XCTAssertTrue(try runWscan(["index", root + "/" + nfd, "--prune", "--db", db]).out.contains("pruned 1 entries"))
        XCTAssertEqual(try cat.checkpoints().map { Array($0.path.utf8) }, [Array((root + "/\(nfc)/\(nfc).safetensors").utf8)])
    }

    /// A link retargeted to another file with the same size and mtime is a change (the inode differs).
    func testRetargetedLinkWithSameSizeAndMtimeIsReindexed() throws {
        let root = tmp.path("retarget"), db = tmp.path("retarget.db"), store = tmp.path("retarget-store")
        for d in [root, store] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        let a = store + "/a", b = store + "/b"
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: a)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed1.safetensors").path, toPath: b)
        let when = Date(timeIntervalSince1970: 1_600_000_000)
        for p in [a, b] { try FileManager.default.setAttributes([.modificationDate: when], ofItemAtPath: p) }
        XCTAssertEqual(try FileRef.stat(a).size, try FileRef.stat(b).size, "the premise: same size")
        XCTAssertEqual(try FileRef.stat(a).mtime, try FileRef.stat(b).mtime, "the premise: same mtime")
        let link = root + "/m.safetensors"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: a)
        XCTAssertTrue(try runWscan(["index", root, "--db", db]).out.hasPrefix("1 indexed"))
        let before = try Catalog(path: db).resolve(link).fingerprint
        XCTAssertTrue(try runWscan(["index", root, "--db", db]).out.hasPrefix("0 indexed, 1 current"))
        try FileManager.default.removeItem(atPath: link)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: b)
        let r = try runWscan(["index", root, "--db", db])
        XCTAssertTrue(r.out.hasPrefix("1 indexed, 0 current"), "the link now names another file: \(r.out)")
        XCTAssertNotEqual(try Catalog(path: db).resolve(link).fingerprint, before)
    }
}

extension CatalogReviewTests {
    /// A file rewritten in place with its size and mtime put back (`touch -r`, or a rewrite within one mtime tick) is
    /// a change: the inode's change time differs. It is indexed again, and a stored spectrum is not re-used.
    func testRewriteKeepingSizeAndMtimeIsReindexed() throws {
        let root = tmp.path("ctime"), db = tmp.path("ctime.db")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let f = root + "/m.safetensors"
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: f)
        XCTAssertEqual(try runWscan(["index", root, "--db", db]).status, 0)
        let spec1 = try runWscan(["analyze", "spectrum", f, "--db", db, "--tensors", "fc1.weight", "--no-randomize", "--json"])
        XCTAssertEqual(spec1.status, 0, spec1.err)
        let before = try FileRef.stat(f), fp = try Catalog(path: db).resolve(f).fingerprint
        var st = stat()
        XCTAssertEqual(stat(f, &st), 0)
        // the same bytes but the last weight's sign bit (in the data, past the header), size and mtime kept
        var data = try Data(contentsOf: URL(fileURLWithPath: f))
        data[data.count - 1] ^= 0x80
        let h = FileHandle(forWritingAtPath: f)!
        h.write(data); h.closeFile()
        var times = [st.st_atim, st.st_mtim]                // touch -r: the exact mtime back
        XCTAssertEqual(utimensat(AT_FDCWD, f, &times, 0), 0)
        XCTAssertEqual(try FileRef.stat(f).size, before.size); XCTAssertEqual(try FileRef.stat(f).mtime, before.mtime)
        XCTAssertFalse(try Catalog(path: db).isUpToDate(path: f, needSHA: false))
        let r = try runWscan(["index", root, "--db", db])
        XCTAssertTrue(r.out.hasPrefix("1 indexed"), r.out)
        XCTAssertNotEqual(try Catalog(path: db).resolve(f).fingerprint, fp)
        // unchanged since: current again
        XCTAssertTrue(try runWscan(["index", root, "--db", db]).out.hasPrefix("0 indexed, 1 current"))
    }
}

extension CatalogReviewTests {
    /// What a fresh index lists, `--prune` leaves: shards an index file now claims and a second path to a listed
    /// file lose their own entries; the file itself wins over a link to it; hard links are one file; a `..` after a
    /// linked folder is resolved where the kernel resolves it; dangling links, paths past PATH_MAX and an empty
    /// weight_map are reported.
    func testPruneReconcilesWithTheWalkAndPathsNameTheFileTheKernelOpens() throws {
        let fm = FileManager.default
        let root = tmp.path("recon"), db = tmp.path("recon.db")
        let shardSrc = Paths.corpus.appendingPathComponent("mlp_seed1_sharded").path
        try fm.createDirectory(atPath: root + "/m", withIntermediateDirectories: true)
        for s in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] { try fm.copyItem(atPath: shardSrc + "/" + s, toPath: root + "/m/" + s) }
        try fm.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: root + "/real.safetensors")
        XCTAssertEqual(try runWscan(["index", root, "--db", db]).status, 0)
        XCTAssertEqual(try Catalog(path: db).checkpoints().count, 3, "two shards on their own, and real")
        try fm.copyItem(atPath: shardSrc + "/model.safetensors.index.json", toPath: root + "/m/model.safetensors.index.json")
        try fm.createSymbolicLink(atPath: root + "/alias.safetensors", withDestinationPath: "real.safetensors")
        XCTAssertEqual(link(root + "/real.safetensors", root + "/zhard.safetensors"), 0)     // equals sort by bytes
        try fm.createSymbolicLink(atPath: root + "/gone.safetensors", withDestinationPath: "nowhere.safetensors")
        let r = try runWscan(["index", root, "--prune", "--db", db])
        XCTAssertEqual(r.status, 1, "the dangling link is a failure: \(r.out) \(r.err)")
        XCTAssertTrue(r.err.contains("gone.safetensors: link to nothing: No such file or directory"), r.err)
        XCTAssertTrue(r.out.contains("pruned 2 entries"), r.out)
        let paths = try Catalog(path: db).checkpoints().map(\.path).sorted()
        XCTAssertEqual(paths, [root + "/m/model.safetensors.index.json", root + "/real.safetensors"],
                       "one entry per file: the sharded model, and real (not its link, not its hard link)")

        // `..` after a linked folder: the file beside the link's target, as open(2) resolves it.
        try fm.createDirectory(atPath: root + "/elsewhere/sub", withIntermediateDirectories: true)
        try fm.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed2.safetensors").path, toPath: root + "/elsewhere/x.safetensors")
        try fm.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: root + "/x.safetensors")
        try fm.createSymbolicLink(atPath: root + "/link", withDestinationPath: "elsewhere/sub")
        XCTAssertEqual(try runWscan(["index", "link/../x.safetensors", "--db", db], cwd: URL(fileURLWithPath: root)).status, 0)
        XCTAssertTrue(try Catalog(path: db).checkpoints().contains { $0.path == root + "/elsewhere/x.safetensors" })
        XCTAssertEqual(FileRef.absolute(root + "/link/../x.safetensors"), root + "/elsewhere/x.safetensors")
        XCTAssertEqual(FileRef.absolute(root + "/./m//real.safetensors"), root + "/m/real.safetensors")

        // A checkpoint whose path is longer than PATH_MAX (its folders within it): named, not skipped in silence.
        var deep = tmp.path("deepdir")
        try fm.createDirectory(atPath: deep, withIntermediateDirectories: true)
        let top = deep
        XCTAssertEqual(chdir(deep), 0)
        defer { _ = chdir("/") }
        while deep.utf8.count < 3900 {
            let seg = String(repeating: "d", count: min(250, 3950 - deep.utf8.count))
            XCTAssertEqual(mkdir(seg, 0o755), 0); XCTAssertEqual(chdir(seg), 0); deep += "/" + seg
        }
        let long = String(repeating: "f", count: 228) + ".safetensors"
        XCTAssertGreaterThan(deep.utf8.count + 1 + long.utf8.count, Int(PATH_MAX))
        XCTAssertEqual(link(Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, long), 0)
        let d = try runWscan(["index", top, "--db", tmp.path("deep.db")])
        XCTAssertEqual(d.status, 1, d.out)
        XCTAssertTrue(d.err.contains("path is longer than PATH_MAX") || d.err.contains("cannot list folder: File name too long"), d.err)

        // An index that lists nothing is an error, not an empty model.
        let e = tmp.path("emptyidx")
        try fm.createDirectory(atPath: e, withIntermediateDirectories: true)
        try Data(#"{"metadata": {}, "weight_map": {}}"#.utf8).write(to: URL(fileURLWithPath: e + "/w.safetensors.index.json"))
        let ei = try runWscan(["index", e, "--db", tmp.path("e.db")])
        XCTAssertEqual(ei.status, 1); XCTAssertTrue(ei.err.contains("empty weight_map"), ei.err)
    }

    /// A folder the user may list but not search (r--) is reported, and `--prune` keeps its entries; an entry whose
    /// file cannot be examined is not "gone".
    func testUnsearchableFolderIsReportedAndItsEntriesKept() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            throw XCTSkip("needs root and setpriv to run wscan as an unprivileged user")
        }
        let root = tmp.path("rx")
        try FileManager.default.createDirectory(atPath: root + "/noexec", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: root + "/noexec/a.safetensors")
        let bin = tmp.path("wscan-rx")
        try FileManager.default.copyItem(atPath: Paths.wscanBinary.path, toPath: bin)
        for p in [tmp.url.path, root, root + "/noexec", root + "/noexec/a.safetensors", bin] { XCTAssertEqual(chmod(p, 0o777), 0) }
        let db = root + "/c.db"
        let setpriv = URL(fileURLWithPath: "/usr/bin/setpriv")
        let asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups", bin]
        XCTAssertEqual(try runProcess(setpriv, asNobody + ["index", root, "--db", db]).status, 0)
        XCTAssertEqual(chmod(root + "/noexec", 0o444), 0)
        defer { _ = chmod(root + "/noexec", 0o755) }
        let r = try runProcess(setpriv, asNobody + ["index", root, "--prune", "--db", db])
        XCTAssertEqual(r.status, 1, r.out + r.err)
        XCTAssertTrue(r.err.contains("noexec: cannot open the files of folder: Permission denied"), r.err)
        XCTAssertTrue(r.out.contains("pruned 0 entries"), r.out)
        XCTAssertEqual(try Catalog(path: db).checkpoints().count, 1)
    }
}

extension CatalogReviewTests {
    /// Second review: a hard link made later does not displace the entry the catalog has (nor its analyses); rows
    /// from before v6 learn their inode when found current; names are matched as bytes.
    func testHardLinkKeepsTheCataloguedPathAndInodesAreLearned() throws {
        let root = tmp.path("hl"), db = tmp.path("hl.db")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: root + "/model.safetensors")
        XCTAssertEqual(try runWscan(["index", root, "--db", db]).status, 0)
        let id = try Catalog(path: db).resolve(root + "/model.safetensors").id
        XCTAssertEqual(link(root + "/model.safetensors", root + "/a-backup.safetensors"), 0)    // sorts first
        let r = try runWscan(["index", root, "--prune", "--db", db])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("pruned 0 entries"), r.out)
        XCTAssertEqual(try Catalog(path: db).checkpoints().map(\.path), [root + "/model.safetensors"])
        XCTAssertEqual(try Catalog(path: db).resolve(root + "/model.safetensors").id, id)

        // A row written before v6 has no inode: the next run that finds it current records it.
        let cat = try Catalog(path: db)
        try cat.db.write { try $0.execute(sql: "UPDATE files SET inode = NULL") }
        XCTAssertTrue(try runWscan(["index", root, "--db", db]).out.hasPrefix("0 indexed, 1 current"))
        let inodes = try cat.db.read { try Int64?.fetchAll($0, sql: "SELECT inode FROM files") }
        XCTAssertEqual(inodes, [Int64(bitPattern: try FileRef.stat(root + "/model.safetensors").inode)])
    }

    /// A reader without write access never creates the catalog's -wal/-shm files (in a folder it may write, files
    /// it owns would lock the owner out).
    func testReadOnlyReaderCreatesNoSideFiles() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            throw XCTSkip("needs root and setpriv to run wscan as an unprivileged user")
        }
        let dir = tmp.path("sticky"), db = dir + "/c.db", bin = tmp.path("wscan-st")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Paths.wscanBinary.path, toPath: bin)
        XCTAssertEqual(try runWscan(["index", Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, "--db", db]).status, 0)
        for (p, m) in [(tmp.url.path, 0o755), (dir, 0o1777), (db, 0o644), (bin, 0o755)] { XCTAssertEqual(chmod(p, mode_t(m)), 0) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: db + "-wal"), "the premise: the owner closed the catalog")
        let r = try runProcess(URL(fileURLWithPath: "/usr/bin/setpriv"), ["--reuid=65534", "--regid=65534", "--clear-groups", bin, "ls", "--db", db])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: db + "-wal"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: db + "-shm"))
        XCTAssertEqual(try runWscan(["ls", "--db", db]).status, 0, "the owner still writes")
    }
}

extension CatalogReviewTests {
    /// Twelfth-session review of the CLI's conventions: a catalog the user may write in a folder they may not opens
    /// read-only (SQLite could not make its -wal there); arguments that are not UTF-8 are refused (they named another
    /// file); an empty $WSCAN_DB is unset and an empty --db a usage error; sizes take their unit after rounding;
    /// --map-reduce needs --maps; lineage names the entries it left out.
    func testCatalogPathsAndArgumentConventions() throws {
        let dir = tmp.path("conv"), db = dir + "/c.db"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let mlp = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path
        XCTAssertEqual(try runWscan(["index", mlp, "--db", db]).status, 0)
        if getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") {
            let bin = tmp.path("wscan-conv")
            try FileManager.default.copyItem(atPath: Paths.wscanBinary.path, toPath: bin)
            XCTAssertEqual(chown(db, 65534, 65534), 0)
            for (p, m) in [(tmp.url.path, 0o755), (dir, 0o755), (db, 0o644), (bin, 0o755)] { XCTAssertEqual(chmod(p, mode_t(m)), 0) }
            let r = try runProcess(URL(fileURLWithPath: "/usr/bin/setpriv"), ["--reuid=65534", "--regid=65534", "--clear-groups", bin, "ls", "--db", db])
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertTrue(r.out.contains("mlp_seed0"), r.out)
            XCTAssertEqual(chown(db, 0, 0), 0)
        }
        // a path with a byte that is not UTF-8: refused, nothing created
        let bad = runProcessBytes(Paths.wscanBinary.path, ["index", mlp, "--db"], lastArgBytes: Array((dir + "/y").utf8) + [0xFE] + Array(".db".utf8))
        XCTAssertEqual(bad, 2)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("y") }, [])
        XCTAssertEqual(try runWscan(["ls", "--db", ""]).status, 2)
        let p = Process()
        p.executableURL = Paths.wscanBinary; p.arguments = ["index", mlp]; p.currentDirectoryURL = URL(fileURLWithPath: dir)
        p.environment = ["WSCAN_DB": "", "PATH": "/usr/bin:/bin"]
        p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
        try p.run(); p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/wscan.db"), "an empty WSCAN_DB means ./wscan.db")
        XCTAssertEqual(ByteSize.format(1_048_480), "1.00 MiB")
        XCTAssertEqual(ByteSize.format(1023), "1023 B")
        XCTAssertEqual(ByteSize.format(10_480), "10.2 KiB")
        XCTAssertEqual(ByteSize.parse("0x10"), nil); XCTAssertEqual(ByteSize.parse("1BB"), nil); XCTAssertEqual(ByteSize.parse("16GiB"), 16 << 30)
        XCTAssertEqual(try runWscan(["analyze", "saliency", mlp, "--db", db, "--map-reduce", "mean"]).status, 2)
        // lineage names an entry indexed with an error
        try "not a checkpoint".write(toFile: dir + "/broken.safetensors", atomically: true, encoding: .utf8)
        _ = try runWscan(["index", dir + "/broken.safetensors", "--db", db])
        let lin = try runWscan(["lineage", "--db", db])
        XCTAssertTrue(lin.err.contains("left out (not readable): broken.safetensors"), lin.err)
    }
}

/// Runs `exe args… last` where the last argument is raw bytes (not necessarily UTF-8); returns the exit status.
func runProcessBytes(_ exe: String, _ args: [String], lastArgBytes: [UInt8]) -> Int32 {
    var argv: [UnsafeMutablePointer<CChar>?] = ([exe] + args).map { strdup($0) }
    let last = malloc(lastArgBytes.count + 1)!.assumingMemoryBound(to: CChar.self)      // freed with the others
    for (i, b) in lastArgBytes.enumerated() { last[i] = CChar(bitPattern: b) }
    last[lastArgBytes.count] = 0
    argv.append(last); argv.append(nil)
    defer { for a in argv { free(a) } }
    var pid: pid_t = 0
    guard posix_spawn(&pid, exe, nil, nil, argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return (status >> 8) & 0xff
}

extension CatalogReviewTests {
    /// Concurrency review: a result computed while its checkpoint was rewritten (even if put back: the change time
    /// moves) is not stored; two processes creating one catalog at once both succeed (they raced on the WAL switch
    /// and on the migrations); a report folder left by an interrupted run (its stub README first) is written over.
    func testChangedDuringAnalysisAndRaces() throws {
        let dir = tmp.path("race"), db = dir + "/c.db", f = dir + "/m.safetensors"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, toPath: f)
        XCTAssertEqual(try runWscan(["index", f, "--db", db]).status, 0)
        let cat = try Catalog(path: db)
        let row = try cat.resolve(f)
        struct P: Encodable { var k = 1 }
        XCTAssertNoThrow(try cat.storeResult(kind: "test", checkpoint: row.id, params: P(), summary: "s", data: P(), analysed: [row]))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: f))
        try bytes.write(to: URL(fileURLWithPath: f))                 // the same bytes written again: a new change time
        XCTAssertThrowsError(try cat.storeResult(kind: "test", checkpoint: row.id, params: P(), summary: "s", data: P(), analysed: [row])) {
            XCTAssertTrue("\($0)".contains("changed on disk while this analysis ran"), "\($0)")
        }
        let mlp0 = Paths.corpus.appendingPathComponent("mlp_seed0.safetensors").path, mlp1 = Paths.corpus.appendingPathComponent("mlp_seed1.safetensors").path
        for i in 0..<4 {
            let d = dir + "/r\(i).db"
            let p = Process(); p.executableURL = Paths.wscanBinary; p.arguments = ["index", mlp0, "--db", d]
            p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
            try p.run()
            let r = try runWscan(["index", mlp1, "--db", d])
            p.waitUntilExit()
            XCTAssertEqual(r.status, 0, "race \(i): \(r.err)")
            XCTAssertEqual(p.terminationStatus, 0, "race \(i)")
        }
        let out = dir + "/rep"
        try FileManager.default.createDirectory(atPath: out + "/figures", withIntermediateDirectories: true)
        try "# Report being written\n\nProduced by `wscan`: this report was interrupted while it was written; run the command again.\n"
            .write(toFile: out + "/README.md", atomically: true, encoding: .utf8)
        try "{}".write(toFile: out + "/data.json", atomically: true, encoding: .utf8)
        let rep = try runWscan(["report", f, "--db", db, "-o", out])
        XCTAssertEqual(rep.status, 0, rep.err)
        XCTAssertTrue(try String(contentsOfFile: out + "/README.md", encoding: .utf8).hasPrefix("# Audit report"))
    }
}

