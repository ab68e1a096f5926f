import XCTest
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import WscanFormats
@testable import WscanAnalysis
@testable import WscanCatalog
@testable import WscanReport

/// Reports as a reader meets them: deterministic, every figure and diagram valid, every link resolving, every
/// number traceable to data.json and the catalog, long tables folded.
final class ReportContentTests: XCTestCase {
    let tmp = TempDir()

    func preparedCatalog() throws -> (Catalog, CheckpointRow, CheckpointRow) {
        let cat = try Catalog(path: tmp.path("r.db"))
        _ = try Indexer(catalog: cat, options: .init()).run(paths: [Paths.corpus.path])
        let a = try cat.resolve("mlp_seed0.safetensors"), b = try cat.resolve("mlp_seed1.safetensors")
        var req = SpectrumRunner.Request(); req.options.seed = 1
        _ = try SpectrumRunner.run(catalog: cat, checkpoint: a, request: req)
        // sparsity and saliency results, as the CLI stores them
        let w = try WeightSet.load(try CheckpointOpener.open(a.path))
        let names = w.names.filter { w.shapes[$0]!.count == 2 }
        let only = w.subset(names)
        let curve = try Sparsity.curve(only, tensors: names, scope: .global, pattern: .unstructured, evaluator: nil)
        try cat.storeResult(kind: "sparsity", checkpoint: a.id, params: ["test": "1"], summary: "s", data: curve)
        let sc = try Saliency.scores(.magnitude, weights: w, tensors: names)
        try cat.storeResult(kind: "saliency", checkpoint: a.id, params: ["test": "1"], summary: "s", data: Saliency.mask(sc, top: 0.5, source: .magnitude).result)
        var o = CompareRunner.Options(); o.align = .always
        _ = try CompareRunner.compare(catalog: cat, a: a, b: b, options: o)
        _ = try CompareRunner.lineage(catalog: cat)
        // the report reads the catalog only: make the seed0/seed1 comparison the newest stored one again
        _ = try CompareRunner.compare(catalog: cat, a: a, b: b, options: o)
        return (cat, a, b)
    }

    func writeAll(_ cat: Catalog, _ a: CheckpointRow, _ b: CheckpointRow, into root: URL) throws -> [URL] {
        let r1 = ReportWriter(catalog: cat, command: "wscan report mlp_seed0.safetensors")
        r1.heatmapProvider = { _, _ in
            let v = (0..<(64 * 64)).map { Float(($0 * 37) % 101) }
            let h = Fig.heatmap(values: v, rows: 64, cols: 64)
            return [("fc1.weight", h.png, h.legend, h.width, h.height)]
        }
        try r1.checkpointReport([a])
        _ = try r1.write(to: root.appendingPathComponent("ck").path)
        let stored = try cat.results(kind: "compare", checkpoint: a.id).first!
        let r2 = ReportWriter(catalog: cat, command: "wscan report --compare mlp_seed0.safetensors mlp_seed1.safetensors")
        r2.compareReport(try cat.decodeResult(stored, as: CompareResult.self), nameA: a.name, nameB: b.name)
        _ = try r2.write(to: root.appendingPathComponent("cmp").path)
        let r3 = ReportWriter(catalog: cat, command: "wscan report --lineage")
        r3.lineageReport(try cat.decodeResult(try cat.results(kind: "lineage").first!, as: CompareRunner.Lineage.self))
        _ = try r3.write(to: root.appendingPathComponent("lin").path)
        return ["ck", "cmp", "lin"].map { root.appendingPathComponent($0) }
    }

    func files(_ dir: URL) -> [String] {
        (FileManager.default.enumerator(atPath: dir.path)?.allObjects as? [String] ?? []).filter { !$0.hasSuffix("/") }.sorted()
            .filter { var d: ObjCBool = false; FileManager.default.fileExists(atPath: dir.appendingPathComponent($0).path, isDirectory: &d); return !d.boolValue }
    }

    func testReportsAreDeterministicValidAndLinked() throws {
        let (cat, a, b) = try preparedCatalog()
        let run1 = try writeAll(cat, a, b, into: tmp.url.appendingPathComponent("one"))
        let run2 = try writeAll(cat, a, b, into: tmp.url.appendingPathComponent("two"))
        for (d1, d2) in zip(run1, run2) {
            XCTAssertEqual(files(d1), files(d2))
            for f in files(d1) {
                XCTAssertEqual(try Data(contentsOf: d1.appendingPathComponent(f)), try Data(contentsOf: d2.appendingPathComponent(f)), "\(d1.lastPathComponent)/\(f) differs between runs")
            }
            let fs = files(d1)
            XCTAssertTrue(fs.contains("README.md") && fs.contains("data.json"))
            // every SVG parses as XML
            for f in fs where f.hasSuffix(".svg") {
                let p = XMLParser(data: try Data(contentsOf: d1.appendingPathComponent(f)))
                XCTAssertTrue(p.parse(), "\(f): \(p.parserError.map { "\($0)" } ?? "")")
            }
            // every .dot renders
            for f in fs where f.hasSuffix(".dot") {
                XCTAssertNoThrow(try Graphviz.svg(dot: String(contentsOf: d1.appendingPathComponent(f), encoding: .utf8)), f)
                XCTAssertTrue(fs.contains(String(f.dropLast(4)) + ".svg"), "\(f) has its rendered SVG")
            }
            // every relative link in the Markdown resolves
            let md = try String(contentsOf: d1.appendingPathComponent("README.md"), encoding: .utf8)
            let re = try NSRegularExpression(pattern: "\\]\\(([^)#\\s]+)\\)")
            var links = 0
            for m in re.matches(in: md, range: NSRange(md.startIndex..., in: md)) {
                let target = String(md[Range(m.range(at: 1), in: md)!])
                if target.hasPrefix("http") { continue }
                links += 1
                XCTAssertTrue(FileManager.default.fileExists(atPath: d1.appendingPathComponent(target).path), "\(d1.lastPathComponent): broken link \(target)")
            }
            XCTAssertGreaterThan(links, 0)
            // data.json is valid JSON
            XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(contentsOf: d1.appendingPathComponent("data.json"))))
        }
        // PNGs decode with a standard decoder (PIL)
        let pngs = files(run1[0]).filter { $0.hasSuffix(".png") }
        XCTAssertFalse(pngs.isEmpty)
        for f in pngs {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", "-c", "import sys; from PIL import Image; im = Image.open(sys.argv[1]); im.load(); print(im.size)", run1[0].appendingPathComponent(f).path]
            p.standardOutput = FileHandle.nullDevice
            try p.run(); p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0, "\(f) does not decode with PIL")
        }
    }

    /// A sample of numbers in README.md equals data.json and the catalog.
    func testNumbersMatchDataJSONAndCatalog() throws {
        let (cat, a, b) = try preparedCatalog()
        let dirs = try writeAll(cat, a, b, into: tmp.url.appendingPathComponent("n"))
        let md = try String(contentsOf: dirs[0].appendingPathComponent("README.md"), encoding: .utf8)
        let data = try JSONSerialization.jsonObject(with: Data(contentsOf: dirs[0].appendingPathComponent("data.json"))) as! [String: Any]
        let ck = (data["checkpoints"] as! [String: Any])[a.name] as! [String: Any]
        let summary = ck["summary"] as! [String: Any]
        XCTAssertEqual(summary["parameters"] as? Int, a.paramCount)
        XCTAssertTrue(md.contains("(\(a.paramCount))"), "README shows the parameter count")
        // essential sparsity: catalog → data.json → README
        let stored = try cat.decodeResult(try cat.results(kind: "sparsity", checkpoint: a.id).first!, as: SparsityCurve.self)
        let ess = ((ck["sparsity"] as! [String: Any])["essential"] as! [String: Any])["withinTolerance"] as! Double
        XCTAssertEqual(ess, stored.essential.withinTolerance)
        XCTAssertTrue(md.contains("**\(ReportWriter.pct(ess))**"))
        // a spectrum metric: catalog → data.json → README table
        let spec = try cat.spectra(checkpoint: a.id).compactMap(\.spectrum).first { $0.name == "fc1.weight" }!
        let mats = (ck["spectrum"] as! [String: Any])["matrices"] as! [[String: Any]]
        let fc1 = mats.first { $0["name"] as? String == "fc1.weight" }!
        XCTAssertEqual(fc1["stable_rank"] as! Double, spec.metrics.stableRank, accuracy: 1e-12)
        XCTAssertTrue(md.contains("| `fc1.weight` | 64×64 | svd | \(ReportWriter.f(spec.metrics.stableRank)) |"))
        // the compare report's verdict
        let cmd = try String(contentsOf: dirs[1].appendingPathComponent("README.md"), encoding: .utf8)
        let cd = try JSONSerialization.jsonObject(with: Data(contentsOf: dirs[1].appendingPathComponent("data.json"))) as! [String: Any]
        let verdict = ((cd["compare"] as! [String: Any])["verdict"] as! [String: Any])["kind"] as! String
        XCTAssertEqual(verdict, "independent")
        XCTAssertTrue(cmd.contains("**independent**"))
    }

    /// A 120-layer model still reads well: long tables are summarised and the full table folded below.
    func testLongModelTablesFold() throws {
        var entries: [SafetensorsWriter.Entry] = []
        var rng = SplitMix64(seed: 2)
        for i in 0..<120 {
            let v = (0..<(16 * 12)).map { _ in Float(Int(rng.next() % 2001) - 1000) / 1000 }
            entries.append(.init(name: "blocks.\(i).proj.weight", shape: [16, 12], floats: v))
        }
        let path = tmp.path("deep.safetensors")
        try SafetensorsWriter.write(entries, to: path)
        let cat = try Catalog(path: tmp.path("d.db"))
        _ = try Indexer(catalog: cat, options: .init()).run(paths: [path])
        let row = try cat.resolve("deep.safetensors")
        _ = try SpectrumRunner.run(catalog: cat, checkpoint: row, request: .init())
        let w = ReportWriter(catalog: cat, command: "wscan report deep.safetensors")
        try w.checkpointReport([row])
        let out = tmp.url.appendingPathComponent("deep")
        _ = try w.write(to: out.path)
        let md = try String(contentsOf: out.appendingPathComponent("README.md"), encoding: .utf8)
        XCTAssertTrue(md.contains("<details><summary>all matrices (120 rows)</summary>"))
        // The visible part of the matrix table is short.
        let section = md.components(separatedBy: "## Spectrum and low-rank utilization")[1].components(separatedBy: "<details>")[0]
        XCTAssertLessThanOrEqual(section.components(separatedBy: "\n| `blocks.").count - 1, 15)
        // The architecture diagram collapses the 120 blocks into one node.
        let dot = try String(contentsOf: out.appendingPathComponent("diagrams/architecture-deep-safetensors.dot"), encoding: .utf8)
        XCTAssertTrue(dot.contains("{0..119} ×120"))
    }
}
