import XCTest
@testable import WscanReport

/// Names in reports and lineage: checkpoints sharing a display name stay apart; control characters never reach a
/// file a terminal may show; chart labels stay distinct; the command line is quoted for the shell.
final class ReportNamesTests: XCTestCase {
    let tmp = TempDir()

    /// run1/ck/model.safetensors and run2/ck/model.safetensors are both "ck/model.safetensors": the lineage edge
    /// joins two nodes (it was a self-loop) and the audit's data.json keeps both.
    func testSameDisplayNamesStayApart() throws {
        let fm = FileManager.default
        for (run, file) in [("run1", "mlp_seed0.safetensors"), ("run2", "mlp_seed0_f16.safetensors")] {
            try fm.createDirectory(atPath: tmp.path("\(run)/ck"), withIntermediateDirectories: true)
            try fm.copyItem(atPath: Paths.corpus.appendingPathComponent(file).path, toPath: tmp.path("\(run)/ck/model.safetensors"))
        }
        let db = tmp.path("c.db")
        XCTAssertEqual(try runWscan(["index", tmp.path("run1"), tmp.path("run2"), "--db", db]).status, 0)
        let r = try runWscan(["lineage", "--db", db, "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        let lin = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        let names = lin["checkpoints"] as! [String]
        XCTAssertEqual(Set(names).count, 2, "\(names)")
        let edge = try XCTUnwrap((lin["edges"] as? [[String: Any]])?.first)
        XCTAssertNotEqual(edge["a"] as? String, edge["b"] as? String)
        XCTAssertEqual(edge["kind"] as? String, "reencoded")
        XCTAssertEqual(try runWscan(["report", "--lineage", "--db", db, "-o", tmp.path("lr")]).status, 0)
        let dot = try String(contentsOfFile: tmp.path("lr/diagrams/lineage.dot"), encoding: .utf8)
        XCTAssertTrue(dot.contains("c0 -- c1") || dot.contains("c0 -> c1"), dot)
        let t = text(try runWscan(["lineage", "--db", db]))
        XCTAssertTrue(t.contains("2 checkpoints, 1 pairs"), t)
        let a = try runWscan(["report", tmp.path("run1/ck/model.safetensors"), tmp.path("run2/ck/model.safetensors"), "--db", db, "-o", tmp.path("ar")])
        XCTAssertEqual(a.status, 0, a.err)
        let data = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: tmp.path("ar/data.json")))) as! [String: Any]
        XCTAssertEqual((data["checkpoints"] as? [String: Any])?.count, 2)
        // the shared name alone is ambiguous: a usage error (exit 2) naming both paths
        let amb = try runWscan(["show", "ck/model.safetensors", "--db", db])
        XCTAssertEqual(amb.status, 2, amb.err)
        XCTAssertTrue(amb.err.contains("matches 2 checkpoints") && amb.err.contains("run1") && amb.err.contains("run2"), amb.err)
    }
    func text(_ r: (status: Int32, out: String, err: String)) -> String { r.out + r.err }

    /// A tensor name holding an OSC title sequence and a colour escape: the report's README.md holds neither ESC
    /// nor BEL; the "Produced by" command quotes a `#id` argument.
    func testReportNeutralisesControlCharactersAndQuotesTheCommand() throws {
        let f = tmp.path("esc.safetensors"), db = tmp.path("e.db")
        _ = try runPython("""
        import numpy as np
        from safetensors.numpy import save_file
        save_file({"\\x1b]0;pwned\\x07\\x1b[31mred.weight": np.ones((4, 4), np.float32)}, \(pyStr(f)))
        """)
        XCTAssertEqual(try runWscan(["index", f, "--db", db]).status, 0)
        let r = try runWscan(["report", "#1", "--db", db, "-o", tmp.path("er")])
        XCTAssertEqual(r.status, 0, r.err)
        let md = try Data(contentsOf: URL(fileURLWithPath: tmp.path("er/README.md")))
        XCTAssertFalse(md.contains(0x1B)); XCTAssertFalse(md.contains(0x07))
        let s = String(decoding: md, as: UTF8.self)
        XCTAssertTrue(s.contains("red.weight") && s.contains("\u{FFFD}"), s)
        XCTAssertTrue(s.contains("wscan report '#1' -o"), s)
    }

    /// Long names that differ only in the middle (the layer index) keep distinct chart labels.
    func testChartLabelsStayDistinct() {
        let names = (0..<4).map { "model.layers.\($0).self_attn." + String(repeating: "x", count: 80) + ".weight" }
        let shown = SVG.fittedLabels(names, maxWidth: 160, size: 11)
        XCTAssertEqual(Set(shown).count, 4, "\(shown)")
        for s in shown { XCTAssertLessThanOrEqual(SVG.textWidth(s, size: 11), 160.5, s) }
        XCTAssertEqual(SVG.fittedLabels(["fc1.weight", "fc2.weight"], maxWidth: 160, size: 11), ["fc1.weight", "fc2.weight"])
        // two varying positions (layer and expert), 48 × 64 names: every label distinct
        let moe = (0..<48).flatMap { l in (0..<64).map { "model.decoder.layers.\(l).block_sparse_moe.experts.\($0).feed_forward_network.down_projection.weight" } }
        let m = SVG.fittedLabels(moe, maxWidth: 230, size: 11)
        XCTAssertEqual(Set(m).count, moe.count, "\(m.prefix(4))")
        for s in m { XCTAssertLessThanOrEqual(SVG.textWidth(s, size: 11), 230.5, s) }
    }
}
