import XCTest
import Foundation
@testable import WscanFormats
@testable import WscanCatalog
@testable import WscanReport

/// Report defects found in review, each reproduced through the CLI on real files.
final class ReportReviewTests: XCTestCase {
    let tmp = TempDir()

    func copy(_ name: String, to dst: String) throws -> String {
        let p = tmp.path(dst)
        try FileManager.default.createDirectory(atPath: FileRef.parentPath(p), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent(name).path, toPath: p)
        return p
    }
    func wscan(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try runWscan(args, cwd: tmp.url) }
    func readme(_ dir: String) throws -> String { try String(contentsOfFile: tmp.path(dir + "/README.md"), encoding: .utf8) }

    /// Several checkpoints in one report: each section's key findings sit in that section, and heat maps of
    /// tensors with the same name (or names that slug alike) do not overwrite each other.
    func testMultiReportSectionsAndHeatMapsStayApart() throws {
        let db = tmp.path("c.db")
        let a = try copy("mlp_seed0.safetensors", to: "m/a.safetensors"), b = try copy("mlp_seed1.safetensors", to: "m/b.safetensors")
        for p in [a, b] {
            XCTAssertLessThanOrEqual(try wscan(["analyze", "spectrum", p, "--db", db]).status, 1)
            XCTAssertEqual(try wscan(["analyze", "saliency", p, "--db", db]).status, 0)
        }
        let r = try wscan(["report", a, b, "--db", db, "-o", "multi", "--max-maps", "3"])
        XCTAssertEqual(r.status, 0, r.err)
        let md = try readme("multi")
        let lines = md.components(separatedBy: "\n")
        let hA = lines.firstIndex { $0 == "## a.safetensors" }!, hB = lines.firstIndex { $0 == "## b.safetensors" }!
        let kf = lines.indices.filter { lines[$0] == "**Key findings**" }
        XCTAssertFalse(kf.isEmpty)
        for k in kf { XCTAssertTrue((hA < k && k < hB) || k > hB, "key findings at line \(k) outside a section") }
        XCTAssertEqual(kf.filter { $0 > hB }.count, 1, "b's findings belong under b")
        // Every linked heat map exists, and the two checkpoints' maps are different files.
        let maps = lines.flatMap { l in l.components(separatedBy: "](figures/").dropFirst().map { String($0.prefix { $0 != ")" }) } }.filter { $0.hasPrefix("heat-") && $0.hasSuffix(".png") }
        XCTAssertEqual(maps.count, 6)
        XCTAssertEqual(Set(maps).count, 6, "\(maps)")
        for m in maps { XCTAssertTrue(FileManager.default.fileExists(atPath: tmp.path("multi/figures/" + m))) }
        // The contents list links the headings GitHub makes (punctuation dropped).
        XCTAssertTrue(md.contains("- [a.safetensors](#asafetensors)"), md)
    }

    /// Names from a checkpoint cannot inject HTML or break Markdown; suggested commands quote them for the shell;
    /// the provenance line keeps `-o` and drops only `--db X`.
    func testNamesAreEscapedAndCommandsQuoted() throws {
        let db = tmp.path("audit")
        let evil = try copy("mlp_seed0.safetensors", to: "odd/<img src=x onerror=alert(1)> `x`.safetensors")
        let r = try wscan(["report", evil, "--db", db, "-o", "audit-report"])
        XCTAssertEqual(r.status, 0, r.err)
        let md = try readme("audit-report")
        // outside code spans, every "<" is escaped
        let plain = md.replacingOccurrences(of: "(`+)[^`]*(?:`(?!\\1)[^`]*)*?\\1", with: "", options: .regularExpression)
        XCTAssertNil(plain.range(of: "(?<!\\\\)<img", options: .regularExpression), plain)
        XCTAssertTrue(md.contains("\\<img src=x onerror=alert(1)\\> \\`x\\`.safetensors"), md)
        // the command line as given, quoted for the shell (it could not be pasted back before)
        XCTAssertTrue(md.contains("Produced by ``wscan report '\(evil)' -o audit-report``"), md.components(separatedBy: "\n").prefix(4).joined(separator: "\n"))
        // the suggested command is single-quoted, inside a code span fenced past the name's backticks
        XCTAssertTrue(md.contains("``wscan analyze sparsity 'odd/<img src=x onerror=alert(1)> `x`.safetensors'``"), md)   // relative to the working folder
    }

    /// A pickle refused as unsafe has a report: its record, findings and the key finding.
    func testUnsafeCheckpointIsReported() throws {
        let db = tmp.path("c.db")
        let p = tmp.path("evil.pkl")
        try FileManager.default.copyItem(atPath: Paths.fixtures.appendingPathComponent("torch/evil_concat.pkl").path, toPath: p)
        let r = try wscan(["report", p, "--db", db, "-o", "evil"])
        XCTAssertEqual(r.status, 0, r.err)
        let md = try readme("evil")
        XCTAssertTrue(md.contains("**Unsafe pickle**"), md)
        XCTAssertTrue(md.contains("# Safety findings"), md)
        XCTAssertTrue(md.contains("Not read:"), md)
        // by catalog reference too (the file is unchanged but its record failed)
        XCTAssertEqual(try wscan(["report", "evil.pkl", "--db", db, "-o", "evil2"]).status, 0)
        XCTAssertEqual(try wscan(["show", "evil.pkl", "--db", db]).status, 1)
    }

    /// Writing a report again into its folder replaces the report's files and leaves other files alone.
    func testRewriteKeepsFilesTheReportDidNotWrite() throws {
        let db = tmp.path("c.db")
        let a = try copy("mlp_seed0.safetensors", to: "a.safetensors")
        XCTAssertLessThanOrEqual(try wscan(["analyze", "spectrum", a, "--db", db]).status, 1)
        XCTAssertEqual(try wscan(["report", a, "--db", db, "-o", "rep"]).status, 0)
        let mine = tmp.path("rep/figures/mine.txt")
        try "keep me".write(toFile: mine, atomically: true, encoding: .utf8)
        let stale = tmp.path("rep/figures/alpha-a-safetensors.svg")
        XCTAssertTrue(FileManager.default.fileExists(atPath: stale))
        // the second report has no spectrum figures: the first one's must be gone
        _ = try Catalog(path: db).query("SELECT 1")
        let cat = try Catalog(path: db)
        try cat.db.write { try $0.execute(sql: "DELETE FROM spectra") }
        XCTAssertEqual(try wscan(["report", a, "--db", db, "-o", "rep"]).status, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: mine))
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
    }

    /// The stored lineage goes when the catalog changes; the report recomputes it with the new checkpoint.
    func testLineageIsRecomputedAfterTheCatalogChanges() throws {
        let db = tmp.path("c.db")
        _ = try copy("mlp_seed0.safetensors", to: "l/a.safetensors"); _ = try copy("mlp_seed0_finetuned.safetensors", to: "l/b.safetensors")
        XCTAssertEqual(try wscan(["index", tmp.path("l"), "--db", db]).status, 0)
        XCTAssertEqual(try wscan(["report", "--lineage", "--db", db, "-o", "lin1"]).status, 0)
        XCTAssertTrue(try readme("lin1").contains("2 checkpoints"))
        _ = try copy("mlp_seed0_pruned50.safetensors", to: "l/c.safetensors")
        XCTAssertEqual(try wscan(["index", tmp.path("l"), "--db", db]).status, 0)
        XCTAssertEqual(try wscan(["report", "--lineage", "--db", db, "-o", "lin2"]).status, 0)
        let md = try readme("lin2")
        XCTAssertTrue(md.contains("3 checkpoints"), md)
        XCTAssertTrue(md.contains("`c.safetensors`"), md)
        XCTAssertFalse(try String(contentsOfFile: tmp.path("lin2/diagrams/lineage.dot"), encoding: .utf8).contains("->") &&
                       !(try String(contentsOfFile: tmp.path("lin2/diagrams/lineage.dot"), encoding: .utf8).contains("dir=none")))
    }

    /// A stored comparison whose other file changed on disk is marked stale in the checkpoint's report.
    func testStaleComparisonIsMarked() throws {
        let db = tmp.path("c.db")
        let a = try copy("mlp_seed0.safetensors", to: "s/a.safetensors"), d = try copy("mlp_seed0_lora4.safetensors", to: "s/d.safetensors")
        XCTAssertEqual(try wscan(["compare", a, d, "--db", db]).status, 0)
        try FileManager.default.removeItem(atPath: d)
        try FileManager.default.copyItem(atPath: Paths.corpus.appendingPathComponent("mlp_seed2.safetensors").path, toPath: d)
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: 5)], ofItemAtPath: d)
        XCTAssertEqual(try wscan(["report", a, "--db", db, "-o", "st"]).status, 0)
        let md = try readme("st")
        XCTAssertTrue(md.contains("lora_merged (stale: the other file changed since; run compare again)"), md)
        XCTAssertTrue(md.contains("| `d.safetensors` | A |"), md)
    }

    /// Twelfth-session review: GGUF metadata is escaped like every checkpoint string; a tensor name spelling a link
    /// does not make a re-run delete the user's files; warnings reach the README; a checkpoint named twice is one
    /// section; a missing catalog is not created; an empty --output is a usage error; long labels are cut in one pass.
    func testMetadataEscapedFilesKeptWarningsShownAndArguments() throws {
        let db = tmp.path("r12.db"), g = tmp.path("meta.gguf"), st = tmp.path("inject.safetensors")
        _ = try runPython("""
        import numpy as np, gguf
        from safetensors.numpy import save_file
        w = gguf.GGUFWriter("\(g)", "llama<img src=x onerror=alert(1)>")
        w.add_name("evil | col\\n\\n# Injected heading\\n![t](http://evil.example/t.png) <script>alert(2)</script>")
        w.add_tensor("blk.0.ffn_up.weight", np.ones((8, 16), np.float32))
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        save_file({"](figures/notes.txt)": np.ones((4, 4), np.float32), "](figures/x.svg)": np.ones((4, 4), np.float32),
                   "b.weight": np.full((4, 4), np.nan, np.float32)}, "\(st)")
        """)
        XCTAssertEqual(try wscan(["index", g, st, "--db", db]).status, 0)
        var r = try wscan(["report", g, "--db", db, "-o", "meta"])
        XCTAssertEqual(r.status, 0, r.err)
        let md = try readme("meta")
        // every < and ] from the metadata escaped (a backslash before it), no line of its own
        XCTAssertNil(md.range(of: "(?<!\\\\)<(img|script)", options: .regularExpression), md)
        XCTAssertNil(md.range(of: "(?<!\\\\)\\]\\(http", options: .regularExpression), md)
        XCTAssertFalse(md.split(separator: "\n").contains { $0.hasPrefix("# Injected") }, md)
        // crafted names, then user files in figures/: a re-run removes only what the report wrote
        XCTAssertLessThanOrEqual(try wscan(["analyze", "saliency", st, "--db", db]).status, 1)
        r = try wscan(["report", st, "--db", db, "-o", "inj"])
        XCTAssertEqual(r.status, 0, r.err)
        for f in ["notes.txt", "x.svg"] { try "mine".write(toFile: tmp.path("inj/figures/" + f), atomically: true, encoding: .utf8) }
        r = try wscan(["report", st, st, "--db", db, "-o", "inj"])
        XCTAssertEqual(r.status, 0, r.err)
        for f in ["notes.txt", "x.svg"] { XCTAssertEqual(try String(contentsOfFile: tmp.path("inj/figures/" + f), encoding: .utf8), "mine", f) }
        // named twice: one section; the saliency warning (NaN scores) is in the README
        let inj = try readme("inj")
        XCTAssertEqual(inj.split(separator: "\n").filter { $0.hasPrefix("#") && $0.contains("inject.safetensors") }.count, 1, inj)
        XCTAssertTrue(inj.contains("**Warnings**") && inj.contains("NaN"), inj)
        // a catalog that does not exist is not created; an empty --output is a usage error
        r = try wscan(["report", "--lineage", "--db", tmp.path("none.db"), "-o", "lin"])
        XCTAssertEqual(r.status, 1, r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("none.db")))
        XCTAssertEqual(try wscan(["report", st, "--db", db, "-o", ""]).status, 2)
        // a 40,000-character label is cut to its end in one pass
        let long = String(repeating: "L", count: 40_000) + ".weight"
        let cut = SVG.truncateLeft(long, maxWidth: 120, size: 11)
        XCTAssertTrue(cut.hasPrefix("…") && cut.hasSuffix(".weight") && SVG.textWidth(cut, size: 11) <= 120, cut)
        XCTAssertEqual(SVG.truncateRight(long, maxWidth: 120, size: 11).last, "…")
    }
}
