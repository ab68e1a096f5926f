import ArgumentParser
import Foundation
import GRDB
import WscanKernels
import WscanFormats
import WscanCatalog
import WscanAnalysis

struct Wscan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wscan",
        abstract: "Weight-space analysis and model forensics.",
        discussion: """
        Catalog checkpoints (safetensors incl. sharded, PyTorch zip pickles, GGUF incl. quantized types, \
        NumPy .npy/.npz) in a SQLite catalog, scan pickles for unsafe imports, and analyse weights. \
        The catalog is ./wscan.db unless --db or WSCAN_DB says otherwise. \
        Exit codes: 0 success, 1 some inputs failed or were flagged, 2 usage error, 3 CPU unsupported (no AVX2/FMA/F16C), \
        4 OpenBLAS/LAPACKE missing.
        """,
        version: "0.1.0",
        subcommands: [Index.self, Ls.self, Show.self, Query.self, Dupes.self, Scan.self, Export.self, Analyze.self, Compare.self, LineageCommand.self, ReportCmd.self, KernelBench.self]
    )
}

struct CatalogOptions: ParsableArguments {
    @Option(name: .long, help: "Catalog file (default: $WSCAN_DB or ./wscan.db).")
    var db: String?

    @Flag(name: .long, help: "Machine-readable JSON output.")
    var json = false

    /// --db, else $WSCAN_DB unless empty (an empty variable counts as unset), else ./wscan.db.
    var dbPath: String { db ?? ProcessInfo.processInfo.environment["WSCAN_DB"].flatMap { $0.isEmpty ? nil : $0 } ?? "wscan.db" }

    func validate() throws {
        if let d = db, d.isEmpty { throw ValidationError("--db must name a catalog file") }
    }

    /// `create` false (listing and query commands): a missing catalog is an error, not a new empty file.
    func open(create: Bool = true) throws -> Catalog {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: dbPath, isDirectory: &isDir), isDir.boolValue {
            throw CLIError("\(dbPath) is a folder, not a catalog file (give --db FILE, e.g. \((dbPath as NSString).appendingPathComponent("wscan.db")))")
        }
        do { return try Catalog(path: dbPath, create: create) } catch let e as CatalogError { throw CLIError("\(e)") } catch {
            throw CLIError("cannot open catalog \(dbPath): \(error)")
        }
    }

    /// Refuses an output path that is the catalog itself (or its WAL/SHM files).
    func refuseCatalogAsOutput(_ out: String) throws {
        if [dbPath, dbPath + "-wal", dbPath + "-shm"].contains(where: { FileRef.samePath($0, out) }) {
            throw CLIError("\(out) is the catalog: refusing to overwrite it")
        }
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ s: String) { description = s }
}

/// Resolves a checkpoint reference: an existing path is indexed on the fly (if not already current), otherwise
/// it is looked up in the catalog by id, name or path suffix.
/// The one checkpoint file a path names: the path itself, or the single checkpoint of a folder (a sharded model's
/// index, or the one weights file beside pickled extras).
func checkpointFile(_ ref: String) throws -> String {
    var (paths, _, _, _) = CheckpointOpener.discover([ref])
    guard !paths.isEmpty else { throw CLIError("\(ref): no checkpoint found there") }
    if paths.count > 1 {
        // A model folder often holds one weights file beside pickled extras (training_args.bin, optimizer.pt).
        let weights = paths.filter { $0.hasSuffix(".safetensors") || $0.hasSuffix(".safetensors.index.json") || $0.hasSuffix(".gguf") }
        if weights.count == 1 { paths = weights } else {
            let names = paths.prefix(3).map { ($0 as NSString).lastPathComponent }.joined(separator: ", ")
            throw CLIError("\(ref) holds \(paths.count) checkpoints (\(names)\(paths.count > 3 ? ", …" : "")): name one")
        }
    }
    return paths[0]
}

/// `trust`: a file indexed on the fly (new, or changed since) loads the tensors of a pickle the scanner flags.
func resolveCheckpoint(_ ref: String, catalog: Catalog, allowFailed: Bool = false, trust: Bool = false) throws -> CheckpointRow {
    if FileManager.default.fileExists(atPath: ref) {
        let p = try checkpointFile(ref)
        // A FIFO, a device or a socket is no checkpoint: said without leaving a record in the catalog.
        do { try FileRef.requireRegularFile(p) } catch let e as FormatError { throw CLIError("\(p): \(e.message)") }
        let ix = Indexer(catalog: catalog, options: .init(trust: trust))
        if case let .failed(path, reason) = ix.indexOne(p) {
            // `show` reports a file that failed (its status and error are in the catalog); the analyses refuse it.
            if allowFailed, let row = try? catalog.resolve(p) { return row }
            throw CLIError("\(path): \(reason)")
        }
        return try catalog.resolve(p)
    }
    do {
        let row = try catalog.resolve(ref)
        // A catalog reference (#id, name, suffix) to a file that changed since it was indexed is indexed again
        // first, as a path would be: stored results must never outlive the bytes they describe. A file that is
        // gone keeps its catalog entry (show still works; reading it fails with its own one-line error).
        if FileRef.isRegularFile(row.path), !(try catalog.isUpToDate(path: row.path, needSHA: false)) {
            let ix = Indexer(catalog: catalog, options: .init(trust: trust))
            if case let .failed(path, reason) = ix.indexOne(row.path) {
                if allowFailed, let again = try? catalog.resolve(row.path) { return again }
                throw CLIError("\(path): \(reason)")
            }
            return try catalog.resolve(row.path)
        }
        return row
    } catch CatalogError.notFound {
        // A reference that looks like a path is reported as a missing file, not as a catalog lookup.
        if ref.contains("/") || FormatDetector.isCandidate(ref) {
            throw CLIError("\(ref): no such file or directory, and no catalog entry matches it")
        }
        throw CatalogError.notFound(ref)
    }
}

/// Opens an input file given on the command line (--grads, --state, --activations, …): every failure, including
/// a decoding error later in `body`, is one line naming the file.
func withInput<T>(_ path: String, trust: Bool = false, _ body: (Checkpoint) throws -> T) throws -> T {
    do { return try body(try CheckpointOpener.open(path, options: .init(trust: trust))) } catch let e as CLIError { throw e } catch {
        throw CLIError("\(path): \(error)")
    }
}

struct Index: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Catalog every checkpoint under these folders (recursively) or files.",
        discussion: """
        Unchanged files (same size, mtime, inode and change time) are skipped; changed ones are re-indexed. Each checkpoint is written \
        in one transaction, so an interrupted run leaves a consistent catalog and the next run completes it. \
        A file that cannot be read gets a one-line error and is recorded with its reason; the others continue. \
        Exit status: 0 when every checkpoint was indexed or current, 1 when some failed.
        """)

    @OptionGroup var catalog: CatalogOptions
    @Argument(help: "Files or folders to index.") var paths: [String]
    @Flag(help: "Also compute each file's SHA-256 (what Hugging Face publishes per file).") var sha256 = false
    @Flag(help: "Re-index even unchanged files.") var force = false
    @Flag(help: "Drop catalog entries under these paths whose files are gone.") var prune = false
    @Flag(help: "Load tensors from pickle files the scanner flags (still executes nothing).") var trust = false
    @Flag(name: .shortAndLong, help: "List every checkpoint, not only failures.") var verbose = false

    func validate() throws { if paths.isEmpty { throw ValidationError("give at least one file or folder") } }

    func run() throws {
        let cat = try catalog.open()
        var opts = Indexer.Options()
        opts.sha256 = sha256; opts.force = force; opts.prune = prune; opts.trust = trust
        let ix = Indexer(catalog: cat, options: opts)
        let bar = ProgressBar()
        ix.onProgress = { p in bar.update(files: p.filesDone, of: p.filesTotal, bytes: p.bytesDone, of: p.bytesTotal, label: p.current) }
        let json = catalog.json, verbose = verbose
        ix.onOutcome = { o in
            guard !json else { return }
            switch o {
            case let .failed(path, reason): bar.finish(); printErr("wscan: \(path): \(reason)")
            case let .indexed(path, n, b): if verbose { bar.finish(); print("indexed  \(Fmt.field(path))  (\(n) tensors, \(Fmt.bytes(b)))") }
            case let .skipped(path): if verbose { bar.finish(); print("current  \(Fmt.field(path))") }
            }
        }
        let t0 = Date()
        let outcomes = try ix.run(paths: paths)
        bar.finish()
        let secs = Date().timeIntervalSince(t0)
        var nIdx = 0, nSkip = 0, nFail = 0, bytes = 0
        for o in outcomes {
            switch o {
            case let .indexed(_, _, b): nIdx += 1; bytes += b
            case .skipped: nSkip += 1
            case .failed: nFail += 1
            }
        }
        if catalog.json {
            struct R: Encodable {
                var indexed: Int; var current: Int; var failed: Int; var bytes: Int; var seconds: Double; var failures: [[String: String]]
                var pruned: [String]
            }
            let fails: [[String: String]] = outcomes.compactMap { if case let .failed(p, r) = $0 { return ["path": p, "reason": r] }; return nil }
            print(Fmt.json(R(indexed: nIdx, current: nSkip, failed: nFail, bytes: bytes, seconds: secs, failures: fails, pruned: ix.pruned)))
        } else {
            let rate = secs > 0 ? Fmt.bytes(Int(Double(bytes) / secs)) + "/s" : ""
            print("\(nIdx) indexed, \(nSkip) current, \(nFail) failed — \(Fmt.bytes(bytes)) in \(String(format: "%.2f", secs)) s \(rate) → \(catalog.dbPath)")
            if prune {
                let why = ix.prunedCovered == 0 ? "whose files are gone"
                    : ix.prunedCovered == ix.pruned.count ? "now part of another entry (shards of a sharded model, or a second path to one file)"
                    : "(\(ix.pruned.count - ix.prunedCovered) whose files are gone, \(ix.prunedCovered) now part of another entry)"
                print("pruned \(ix.pruned.count) entries \(why)" + (ix.pruned.isEmpty ? "" : ": " + ix.pruned.prefix(5).map(Fmt.field).joined(separator: ", ") + (ix.pruned.count > 5 ? ", …" : "")))
            }
        }
        if nFail > 0 { throw ExitCode(1) }
    }
}

struct Ls: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "One line per catalogued checkpoint.")
    @OptionGroup var catalog: CatalogOptions

    func run() throws {
        let cat = try catalog.open(create: false)
        let rows = try cat.checkpoints()
        if catalog.json { print(Fmt.json(rows)); return }
        if rows.isEmpty { print("catalog \(catalog.dbPath) is empty — run `wscan index PATH`"); return }
        let table = rows.map { r -> [String] in
            let dt = r.dtypes.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map(\.key).joined(separator: ",")
            let err = r.error ?? ""
            let status = r.status == "ok" ? (r.safety == "dangerous" || r.safety == "findings" ? r.safety : "ok")
                : err.hasPrefix(r.status) ? err : "\(r.status): \(err)"      // "unsafe pickle: …" already says unsafe
            return ["#\(r.id)", r.name, r.format ?? "?", Fmt.count(r.paramCount), dt, Fmt.bytes(r.bytes), status.count > 70 ? String(status.prefix(69)) + "…" : status]
        }
        print(Fmt.table(["id", "name", "format", "params", "dtypes", "size", "status"], table, numeric: [3, 5]))
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "One checkpoint: metadata, files, and its tensor table with statistics.")
    @OptionGroup var catalog: CatalogOptions
    @Argument(help: "Catalog id, name, or a path (indexed on the fly).") var checkpoint: String
    @Flag(help: "Print the full tensor table.") var tensors = false
    @Flag(help: "Print the stored per-layer spectrum table (run `wscan analyze spectrum` first).") var spectrum = false

    func run() throws {
        // A catalog reference needs an existing catalog (no empty file is made for a typo in --db); a path is indexed.
        let cat = try catalog.open(create: FileManager.default.fileExists(atPath: checkpoint))
        let r = try resolveCheckpoint(checkpoint, catalog: cat, allowFailed: true)
        if r.status != "ok" && spectrum { throw CLIError("\(r.path): \(r.error ?? r.status)") }
        try show(r, cat)
        // A checkpoint that could not be read is shown (status, error, findings), then named on stderr: exit 1.
        if r.status != "ok" {
            printErr("wscan: \(Fmt.field(r.path)): \(Fmt.field(r.error ?? r.status))")
            throw ExitCode(1)
        }
    }

    func show(_ r: CheckpointRow, _ cat: Catalog) throws {
        let ts = try cat.tensors(checkpoint: r.id)
        let files = try cat.files(checkpoint: r.id)
        let findings = try cat.findings(checkpoint: r.id)
        if spectrum {
            let recs = try cat.spectra(checkpoint: r.id)
            if recs.isEmpty { throw CLIError("no stored spectra for \(r.name): run `wscan analyze spectrum \(r.name)`") }
            let energies = recs.first { $0.spectrum != nil }?.energies ?? [0.9, 0.95, 0.99]
            let summary = SpectrumSummary.make(recs, energyIndex: min(1, energies.count - 1), weloreReduction: 0.5, weloreMinRatio: 0.5)
            if catalog.json {
                struct Out: Encodable { var checkpoint: String; var summary: SpectrumSummary; var layers: [SpectrumRecord] }
                print(Fmt.json(Out(checkpoint: r.path, summary: summary, layers: recs)))
            } else {
                SpectrumReportText.show(row: r, records: recs, summary: summary, energies: energies, all: tensors, allFlag: "--tensors", seconds: nil)
            }
            return
        }
        if catalog.json {
            struct Out: Encodable { var checkpoint: CheckpointRow; var files: [FileRow]; var tensors: [TensorRow]; var findings: [FindingRow] }
            print(Fmt.json(Out(checkpoint: r, files: files, tensors: ts, findings: findings)))
            return
        }
        print("\(Fmt.field(r.name))  (#\(r.id))")
        print("  path      \(Fmt.field(r.path))")
        print("  format    \(r.format ?? "?")    status \(r.status)\(r.error.map { ": " + Fmt.field($0) } ?? "")")
        print("  tensors   \(r.tensorCount)    parameters \(Fmt.count(r.paramCount)) (\(r.paramCount))    size \(Fmt.bytes(r.bytes))")
        if !r.dtypes.isEmpty {
            print("  dtypes    " + r.dtypes.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { "\($0.key) \(Fmt.count($0.value))" }.joined(separator: ", "))
        }
        print("  safety    \(r.safety)")
        if r.format == "gguf" { for line in ggufSummary(r) { print("  " + line) } }
        if let fp = r.fingerprint { print("  fingerprint \(fp)") }
        if !r.metadata.isEmpty {
            print("  metadata")
            for (k, v) in r.metadata.sorted(by: { $0.key < $1.key }) { print(Fmt.field("    \(k): \(v.count > 100 ? String(v.prefix(100)) + "…" : v)")) }
        }
        if files.count > 0 {
            print("  files")
            for f in files { print("    \(Fmt.field(f.path))  \(Fmt.bytes(f.size))\(f.sha256.map { "  sha256 " + $0 } ?? "")") }
        }
        for w in r.warnings { print("  warning: \(Fmt.field(w))") }
        if !findings.isEmpty {
            print("  safety findings")
            for f in findings { print(Fmt.field("    [\(f.severity)] \(f.member)@\(f.offset)  \(f.what)  \(f.detail)")) }
        }
        guard !ts.isEmpty else { return }
        let shown = tensors ? ts : Array(ts.prefix(20))
        print("")
        let rows = shown.map { t in
            [t.name, "[" + t.shape.map(String.init).joined(separator: ",") + "]", t.dtype, Fmt.bytes(t.nbytes),
             Fmt.num(t.mean), Fmt.num(t.std), Fmt.num(t.min), Fmt.num(t.max), Fmt.num(t.l2),
             t.zeroFrac.map { String(format: "%.1f%%", $0 * 100) } ?? "-",
             (t.nanCount ?? 0) + (t.infCount ?? 0) > 0 ? "\(t.nanCount ?? 0)/\(t.infCount ?? 0)" : "", t.note ?? ""]
        }
        print(Fmt.table(["tensor", "shape", "dtype", "size", "mean", "std", "min", "max", "l2", "zeros", "nan/inf", "note"],
                        rows, numeric: [3, 4, 5, 6, 7, 8, 9]))
        if shown.count < ts.count { print("… \(ts.count - shown.count) more tensors (use --tensors)") }
    }
}

struct Query: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run read-only SQL over the catalog.",
        discussion: """
        Tables: checkpoints(id, path, name, format, status, error, tensor_count, param_count, bytes, dtypes, metadata, \
        fingerprint, safety, warnings, indexed_at), files(checkpoint_id, path, size, mtime, sha256, inode, ctime), \
        tensors(checkpoint_id, name, shape, ndim, dtype, file, offset, nbytes, layout, hash, count, mean, std, min, max, \
        absmax, l2, zero_frac, nan_count, inf_count, note), findings(checkpoint_id, severity, member, offset, what, detail); \
        analysis results in spectra (one row per matrix), results (sparsity, saliency, compare, lineage: JSON) and \
        catalog_state. See README.md for the full schema. The connection is read-only.
        """)
    @OptionGroup var catalog: CatalogOptions
    @Argument(help: "A SQL statement.") var sql: String
    @Option(help: "Print at most this many rows (a note says when rows were left out).") var limit: Int = 100_000
    @Option(help: "Stop the statement after this many seconds (0: no limit).") var timeout: Double = 60

    func run() throws {
        guard limit >= 1 else { throw ValidationError("--limit must be at least 1") }
        guard timeout >= 0, timeout.isFinite else { throw ValidationError("--timeout must be 0 or a positive number of seconds") }
        let cat = try catalog.open(create: false)
        let res: (columns: [String], rows: [[DatabaseValue]])
        do { res = try cat.query(sql, limit: limit == .max ? limit : limit + 1, timeout: timeout > 0 ? timeout : nil) } catch let e as DatabaseError {
            if e.resultCode == .SQLITE_INTERRUPT { throw CLIError("SQL statement stopped after \(Fmt.num(timeout, 3)) s (--timeout; 0 waits)") }
            let msg = e.message ?? "\(e)"
            throw CLIError("SQL error: " + (msg.contains("Multiple statements") ? "one SQL statement at a time" : msg))
        }
        let truncated = res.rows.count > limit
        let shown = Array(res.rows.prefix(limit))
        if truncated { printErr("wscan: note: stopped after \(limit) rows (use --limit to see more)") }
        if res.columns.isEmpty { return }                          // a statement without result columns
        // JSON keys must be unique: a repeated column name gets _2, _3, … (SELECT 1 AS a, 2 AS a).
        var keys: [String] = [], taken = Set<String>()
        for c in res.columns {
            var k = c, n = 1
            while taken.contains(k) || (k != c && res.columns.contains(k)) { n += 1; k = "\(c)_\(n)" }
            taken.insert(k); keys.append(k)
        }
        if catalog.json {
            let objs: [[String: JSONValue]] = shown.map { r in
                var o: [String: JSONValue] = [:]
                for (c, v) in zip(keys, r) { o[c] = JSONValue(v) }
                return o
            }
            print(Fmt.json(objs))
            return
        }
        let rows = shown.map { $0.map { v -> String in
            switch v.storage {
            case .null: return "NULL"
            case let .int64(i): return String(i)
            case let .double(d): return "\(d)"   // shortest exact form: timestamps and sizes keep every digit
            case let .string(s): return s
            case let .blob(b): return "<\(b.count) bytes>"
            }
        } }
        print(Fmt.table(res.columns, rows))
    }
}

enum JSONValue: Encodable {
    case null, int(Int64), double(Double), string(String)
    init(_ v: DatabaseValue) {
        switch v.storage {
        case .null: self = .null
        case let .int64(i): self = .int(i)
        case let .double(d): self = .double(d)
        case let .string(s): self = .string(s)
        case let .blob(b): self = .string(b.base64EncodedString())
        }
    }
    func encode(to e: Encoder) throws {
        var c = e.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case let .int(i): try c.encode(i)
        case let .double(d): try c.encode(d)
        case let .string(s): try c.encode(s)
        }
    }
}

struct Dupes: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Tensors with identical content across checkpoints (shared or copied weights).")
    @OptionGroup var catalog: CatalogOptions
    @Option(help: "Ignore tensors smaller than this many bytes.") var minBytes: Int = 1024

    func run() throws {
        let cat = try catalog.open(create: false)
        let groups = try cat.dupes(minBytes: minBytes)
        if catalog.json { print(Fmt.json(groups)); return }
        if groups.isEmpty { print("no duplicated tensors of at least \(Fmt.bytes(minBytes))"); return }
        var wasted = 0
        for g in groups {
            wasted += g.nbytes * (g.members.count - 1)
            print("\(g.hash.prefix(16))  \(g.dtype) [\(g.shape.map(String.init).joined(separator: ","))]  \(Fmt.bytes(g.nbytes)) × \(g.members.count)")
            for m in g.members { print(Fmt.field("    #\(m.id) \(m.checkpoint): \(m.tensor)")) }
        }
        // "stored more than once" counts catalogue entries: tied weights saved once, or hard links, count too.
        print("\(groups.count) groups; \(Fmt.bytes(wasted)) in the extra copies (counted per catalogued tensor)")
    }
}

/// The few GGUF metadata facts people look for first.
func ggufSummary(_ r: CheckpointRow) -> [String] {
    r.ggufFacts().map { k, v in k.padding(toLength: max(11, k.count), withPad: " ", startingAt: 0) + " " + v }
}
