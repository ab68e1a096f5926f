import ArgumentParser
import Foundation
import WscanFormats
import WscanCatalog
import WscanAnalysis
import WscanReport

struct ReportCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write an audit report: README.md, figures/ (SVG, PNG), diagrams/ (DOT + SVG), data.json.",
        discussion: """
        Forms:
          wscan report CKPT...         audit of checkpoints (every stored analysis)
          wscan report --compare A B   forensic comparison (stored, or run now)
          wscan report --lineage       relationships among the catalog's checkpoints (stored, or run now)

        Output is deterministic: two runs on the same catalog give byte-identical files. The default folder is \
        reports/SLUG, SLUG being the checkpoint's name in lower case with other characters as "-" (reports/audit for \
        several checkpoints, reports/compare-A-vs-B, reports/lineage).
        """)
    @OptionGroup var catalog: CatalogOptions
    @Argument(help: "Checkpoints (catalog ids, names or paths).") var checkpoints: [String] = []
    @Flag(help: "Forensic comparison of exactly two checkpoints.") var compare = false
    @Flag(help: "Relationships among the catalog's checkpoints (pairwise verdicts).") var lineage = false
    @Option(name: .shortAndLong, help: "Output folder (default: reports/SLUG, see above).") var output: String?
    @Option(help: "Heat maps for at most this many tensors in the saliency section.") var maxMaps: Int = 4

    func validate() throws {
        if compare && lineage { throw ValidationError("--compare and --lineage exclude each other") }
        if compare && checkpoints.count != 2 { throw ValidationError("--compare needs exactly two checkpoints") }
        if !compare && !lineage && checkpoints.isEmpty { throw ValidationError("give checkpoints, --compare A B, or --lineage") }
        if lineage && !checkpoints.isEmpty { throw ValidationError("--lineage covers the whole catalog: it takes no checkpoints") }
        if maxMaps < 0 { throw ValidationError("--max-maps must be 0 or more") }
    }

    func run() throws {
        if let o = output, o.isEmpty { throw ValidationError("--output must name a folder") }
        // A report reads the catalog: one that does not exist is an error, not a new empty catalog.
        let cat = try catalog.open(create: checkpoints.contains { FileManager.default.fileExists(atPath: $0) })
        // The command line as given, without the catalog's location (`--db X`, `--db=X`): reports must not depend on it.
        var args: [String] = [], skipNext = false
        for a in CommandLine.arguments.dropFirst() {
            if skipNext { skipNext = false; continue }
            if a == "--db" { skipNext = true; continue }
            if a.hasPrefix("--db=") { continue }
            args.append(a)
        }
        // Quoted for the shell as the report's suggested commands are (options as they are: `-o`, `--grid=0,0.5`).
        func word(_ a: String) -> String {
            let body = String(a.drop { $0 == "-" })
            return a.hasPrefix("-") && !body.isEmpty && ReportWriter.shell(body) == body ? a : ReportWriter.shell(a)
        }
        let w = ReportWriter(catalog: cat, command: (["wscan"] + args.map(word)).joined(separator: " "))
        let dir: String
        var failedInputs: [String] = []
        if lineage {
            // A stored lineage with failures (a file gone, unreadable) is computed again: the file may be back.
            let stored = try cat.results(kind: "lineage").first.flatMap { try? cat.decodeResult($0, as: CompareRunner.Lineage.self) }
                .flatMap { ($0.failed ?? []).isEmpty ? $0 : nil }
            let lin = try stored ?? CompareRunner.lineage(catalog: cat)
            w.lineageReport(lin)
            failedInputs = lin.failed ?? []
            dir = output ?? "reports/lineage"
        } else if compare {
            let a = try resolveCheckpoint(checkpoints[0], catalog: cat), b = try resolveCheckpoint(checkpoints[1], catalog: cat)
            // Prefer the richest stored comparison (one with a connectivity curve), newest first.
            let candidates = try cat.results(kind: "compare", checkpoint: a.id).filter { $0.checkpointID == a.id && $0.otherID == b.id }
                .compactMap { try? cat.decodeResult($0, as: CompareResult.self) }
            let stored = candidates.first { $0.connectivity?.before.loss != nil || $0.connectivity?.before.metric != nil } ?? candidates.first
            let r = try stored ?? CompareRunner.compare(catalog: cat, a: a, b: b, options: .init())
            w.compareReport(r, nameA: a.name, nameB: b.name)
            dir = output ?? "reports/compare-\(ReportWriter.slugName(a.name))-vs-\(ReportWriter.slugName(b.name))"
        } else {
            var seen = Set<Int64>()     // a checkpoint named twice (by path and by id) is reported once
            let rows = try checkpoints.map { try resolveCheckpoint($0, catalog: cat, allowFailed: true) }.filter { seen.insert($0.id).inserted }   // an unsafe file is reported too
            w.heatmapProvider = { row, result in heatmaps(row: row, result: result, catalog: cat, max: maxMaps) }
            try w.checkpointReport(rows)
            dir = output ?? "reports/\(rows.count == 1 ? ReportWriter.slugName(rows[0].name) : "audit")"
        }
        let written = try w.write(to: dir)
        if catalog.json {
            struct Out: Encodable { var folder: String; var files: [String] }
            print(Fmt.json(Out(folder: dir, files: written)))
        } else {
            print("wrote \(dir)/README.md and \(written.count - 1) more files")
        }
        // Checkpoints the lineage could not read are named in the report and here; they make the exit status 1.
        for f in failedInputs { printErr("wscan: warning: not compared: \(f)") }
        if !failedInputs.isEmpty { throw ExitCode(1) }
    }
}

/// Saliency heat maps for the report: the scores of the stored source recomputed from the weights.
func heatmaps(row: CheckpointRow, result: SaliencyResult, catalog: Catalog, max: Int) -> [(String, [UInt8], String, Int, Int)] {
    guard max > 0, result.source == .magnitude else { return [] }   // other sources need inputs the report does not have
    let names = result.layers.sorted { ($0.massShare, $1.name) > ($1.massShare, $0.name) }.prefix(max).map(\.name)
    // only the tensors drawn are decoded (not every matrix of the model)
    let wanted = Set(names)
    guard let ck = try? CheckpointOpener.open(row.path), let w = try? WeightSet.load(ck, where: { $0.shape.count == 2 && wanted.contains($0.name) }) else { return [] }
    return names.compactMap { n -> (String, [UInt8], String, Int, Int)? in
        guard let v = w.values[n], let s = w.shapes[n] else { return nil }
        let h = Fig.heatmap(values: v.map { abs($0) }, rows: s[0], cols: s[1])
        return (n, h.png, h.legend, h.width, h.height)
    }
}
