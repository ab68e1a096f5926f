import Foundation
import GRDB
import WscanFormats
import WscanKernels
import WscanAnalysis

/// The SQLite catalog (GRDB, WAL). One transaction per checkpoint, so a kill at any moment leaves either the
/// previous or the new record of a checkpoint, never half of one.
public final class Catalog: @unchecked Sendable {
    public let path: String
    /// What SQLite opens: the path, or an immutable file: URI for a catalog the user may only read.
    let connectPath: String
    public let db: DatabasePool

    /// Opens (creating it when `create`) the catalog at `path`. An existing SQLite file that is not a wscan catalog
    /// is refused before anything is written to it (no migration, no WAL switch).
    public init(path: String, create: Bool = true) throws {
        self.path = path
        var st = stat()
        // A catalog the user may not write opens read-only: as a WAL database when SQLite can (it then sees the
        // owner's committed changes still in the -wal file, and a write in progress safely), else, with no -wal
        // content to miss, as an immutable file (no -shm needed).
        // A file it may write in a folder it may not is read-only too: SQLite could not create the -wal/-shm files.
        let readOnly = stat(path, &st) == 0 && st.st_size > 0 && (access(path, W_OK) != 0 || access(FileRef.parentPath(path).isEmpty ? "." : FileRef.parentPath(path), W_OK) != 0)
        var openPath = path
        if readOnly {
            // Through the WAL only when its -wal and -shm files already exist (a writer is, or was, at work): a reader
            // must never create them, for files it owns in the owner's folder would lock the owner out.
            var w = stat(), m = stat()
            let wal = stat(path + "-wal", &w) == 0 ? Int(w.st_size) : -1, shm = stat(path + "-shm", &m) == 0
            if !(wal >= 0 && shm && Self.opensReadOnly(path)) {
                if wal > 0 {
                    throw CatalogError.readOnly("\(path) is read-only and its write-ahead log (\(path)-wal) holds changes this user cannot apply: ask its owner to run `wscan ls --db \(path)` once")
                }
                openPath = "file:" + (path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path)
                    .replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "?", with: "%3f").replacingOccurrences(of: "#", with: "%23") + "?immutable=1"
            }
        }
        connectPath = openPath
        if stat(path, &st) != 0 || (st.st_size == 0 && !create) {
            guard create else { throw CatalogError.readOnly("no catalog at \(path) (run `wscan index PATH` first, or pass --db)") }
        } else if st.st_size > 0 {
            var ro = Configuration(); ro.readonly = true; ro.busyMode = .timeout(10)   // another wscan may be writing
            // (a file another wscan is creating this moment may not read as a database yet: a few tries)
            var tries = 0, tables: [String] = [], objects = 0
            while true {
                do {
                    let probe = try DatabaseQueue(path: openPath, configuration: ro)
                    tables = try probe.read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE type = 'table'") }
                    objects = try probe.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM sqlite_master") } ?? 0
                    try probe.close()
                    break
                } catch {
                    tries += 1
                    if tries >= 5 { throw error }
                    usleep(useconds_t(50_000 * tries))
                }
            }
            // (grdb_migrations alone: another wscan is creating the catalog this moment, its first migration to come)
            if objects > 0 && !(tables.contains("grdb_migrations") && (tables.contains("checkpoints") || tables == ["grdb_migrations"])) {
                throw CatalogError.readOnly("\(path) is an SQLite database but not a wscan catalog: refusing to change it")
            }
        }
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        // A catalog the user may read but not write (someone else's, a shared read-only copy) opens read-only for the
        // commands that only read; it must already be up to date (migrations write).
        if readOnly {
            config.readonly = true
            let pool = try DatabasePool(path: openPath, configuration: config)
            guard try pool.read({ try Self.migrator.hasCompletedMigrations($0) }) else {
                throw CatalogError.readOnly("\(path) is read-only and was made by an older wscan: open it once with write access to upgrade it")
            }
            db = pool
            return
        }
        // Two processes creating (or upgrading) one catalog at once race: one finds the file locked while the other
        // switches it to WAL, or both start a migration the other finishes ("duplicate column name"). The loser tries
        // again and finds it done.
        var attempt = 0
        var opened: DatabasePool? = nil
        while opened == nil {
            do {
                let pool = try DatabasePool(path: path, configuration: config)
                try Self.migrator.migrate(pool)
                opened = pool
            } catch {
                attempt += 1
                if attempt >= 8 { throw error }
                usleep(useconds_t(50_000 * attempt))
            }
        }
        db = opened!
    }

    /// Whether SQLite reads this WAL catalog through a read-only connection (its -wal and -shm exist and can be read).
    static func opensReadOnly(_ path: String) -> Bool {
        var ro = Configuration(); ro.readonly = true; ro.busyMode = .timeout(10)
        guard let q = try? DatabaseQueue(path: path, configuration: ro) else { return false }
        defer { try? q.close() }
        return (try? q.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM sqlite_master") }) != nil
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
            CREATE TABLE checkpoints (
              id INTEGER PRIMARY KEY,
              path TEXT NOT NULL UNIQUE,          -- file, or the shard index of a sharded model
              name TEXT NOT NULL,                 -- display name (file name, or folder of a sharded model)
              format TEXT,                        -- safetensors | safetensors-sharded | npy | npz | pytorch | gguf | pickle
              status TEXT NOT NULL,               -- ok | error | unsafe
              error TEXT,                         -- one-line reason when status != ok
              tensor_count INTEGER NOT NULL DEFAULT 0,
              param_count INTEGER NOT NULL DEFAULT 0,
              bytes INTEGER NOT NULL DEFAULT 0,   -- total size of the checkpoint's files
              dtypes TEXT,                        -- JSON {dtype: parameter count}
              metadata TEXT,                      -- JSON {key: value} from the file (safetensors __metadata__, GGUF KV)
              fingerprint TEXT,                   -- XXH3-128 over sorted (name, dtype, shape, content hash)
              safety TEXT NOT NULL DEFAULT 'not-scanned', -- clean | findings | dangerous | not-scanned
              warnings TEXT,                      -- JSON [string]
              indexed_at REAL NOT NULL            -- unix time
            );
            CREATE TABLE files (
              id INTEGER PRIMARY KEY,
              checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
              path TEXT NOT NULL,
              size INTEGER NOT NULL,
              mtime REAL NOT NULL,
              sha256 TEXT                         -- only with `wscan index --sha256`
            );
            CREATE INDEX files_ck ON files(checkpoint_id);
            CREATE TABLE tensors (
              id INTEGER PRIMARY KEY,
              checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
              name TEXT NOT NULL,
              shape TEXT NOT NULL,                -- JSON array, row-major
              ndim INTEGER NOT NULL,
              dtype TEXT NOT NULL,
              file TEXT,                          -- file holding the bytes
              offset INTEGER,                     -- byte offset in that file (NULL when compressed)
              nbytes INTEGER NOT NULL,
              layout TEXT NOT NULL DEFAULT 'C',   -- C | F | strided
              hash TEXT NOT NULL,                 -- XXH3-128 of the stored bytes
              count INTEGER NOT NULL,
              mean REAL, std REAL, min REAL, max REAL, absmax REAL, l2 REAL,
              zero_frac REAL, nan_count INTEGER, inf_count INTEGER,
              note TEXT
            );
            CREATE INDEX tensors_ck ON tensors(checkpoint_id);
            CREATE INDEX tensors_hash ON tensors(hash);
            CREATE TABLE findings (
              id INTEGER PRIMARY KEY,
              checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
              severity TEXT NOT NULL, member TEXT NOT NULL, offset INTEGER NOT NULL, what TEXT NOT NULL, detail TEXT NOT NULL
            );
            CREATE INDEX findings_ck ON findings(checkpoint_id);
            """)
        }
        m.registerMigration("v2-spectra") { db in
            try db.execute(sql: """
            CREATE TABLE spectra (
              id INTEGER PRIMARY KEY,
              checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
              tensor TEXT NOT NULL,
              shape TEXT NOT NULL,
              rows INTEGER, cols INTEGER, slices INTEGER, kind TEXT,
              method TEXT NOT NULL,              -- dgesdd | gram-dsyevd | gram-dsyevd_2stage | randomized | skipped
              skip_reason TEXT,
              frobenius REAL, spectral_norm REAL, stable_rank REAL, effective_rank REAL, numerical_rank INTEGER,
              energies TEXT, energy_ranks TEXT, utilization TEXT,  -- JSON arrays, same order
              log_norm REAL, log_spectral_norm REAL, alpha REAL, alpha_weighted REAL, log_alpha_norm REAL,
              xmin REAL, xmax REAL, ks_d REAL, num_pl_spikes INTEGER, entropy REAL,
              num_spikes INTEGER, sigma_mp REAL, mp_softrank REAL, lambda_plus REAL, rand_distance REAL, num_evals INTEGER,
              warnings TEXT,                      -- JSON array
              seconds REAL,
              singular_values BLOB,               -- float64 little-endian, descending
              metrics TEXT                        -- the full metric set as JSON
            );
            CREATE INDEX spectra_ck ON spectra(checkpoint_id);
            """)
        }
        m.registerMigration("v3-results") { db in
            try db.execute(sql: """
            CREATE TABLE results (
              id INTEGER PRIMARY KEY,
              kind TEXT NOT NULL,                 -- sparsity | saliency | compare | lineage
              checkpoint_id INTEGER REFERENCES checkpoints(id) ON DELETE CASCADE,
              other_id INTEGER REFERENCES checkpoints(id) ON DELETE CASCADE,   -- second checkpoint (compare, saliency --base)
              params TEXT NOT NULL,               -- JSON of the options that produced it
              summary TEXT,                       -- one line for listings
              data TEXT NOT NULL,                 -- JSON result (curves, tables, verdicts)
              created_at REAL NOT NULL,
              UNIQUE(kind, checkpoint_id, other_id, params)
            );
            CREATE INDEX results_ck ON results(checkpoint_id);
            """)
        }
        m.registerMigration("v4-spectra-options") { db in
            // The analysis options a stored spectrum depends on (rand_distance and its seed, conv pooling): a
            // request with other options recomputes. Rows from before have NULL and are recomputed once.
            try db.execute(sql: "ALTER TABLE spectra ADD COLUMN options TEXT")
        }
        m.registerMigration("v5-id-highwater") { db in
            // Checkpoint ids are never reused (as AUTOINCREMENT would do, which the table was not created with): a
            // `#N` in a report or a script must not come to name another checkpoint after N was pruned.
            try db.execute(sql: """
            CREATE TABLE catalog_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT INTO catalog_state (key, value) SELECT 'max_checkpoint_id', COALESCE(MAX(id), 0) FROM checkpoints;
            CREATE TRIGGER checkpoints_max_id AFTER INSERT ON checkpoints BEGIN
              UPDATE catalog_state SET value = max(value, NEW.id) WHERE key = 'max_checkpoint_id';
            END;
            """)
        }
        m.registerMigration("v6-file-inode") { db in
            // The inode next to size and mtime: a link retargeted to a file of the same size and mtime is a change.
            // Rows from before have NULL, which is not compared (they learn their inode at the next re-index).
            try db.execute(sql: "ALTER TABLE files ADD COLUMN inode INTEGER")
        }
        m.registerMigration("v7-file-ctime") { db in
            // The change time too: a file rewritten in place with its size and mtime kept is a change. NULL in older
            // rows is not compared (learnt like the inode).
            try db.execute(sql: "ALTER TABLE files ADD COLUMN ctime REAL")
        }
        return m
    }

    // MARK: writing

    public struct FileState: Sendable { public var path: String; public var size: Int; public var mtime: Double; public var sha256: String? }

    /// True when the catalog holds this checkpoint with the same files (path, size, mtime) — and SHA-256s if needed.
    public func isUpToDate(path: String, needSHA: Bool) throws -> Bool {
        var learn: [(rowid: Int64, inode: Int64, ctime: Double)] = []
        let current = try db.read { db -> Bool in
            // A checkpoint that failed is read again: the cause (a missing shard, a file being copied) may be gone.
            guard let id = try Int64.fetchOne(db, sql: "SELECT id FROM checkpoints WHERE path = ? AND status = 'ok'", arguments: [path]) else { return false }
            let rows = try Row.fetchAll(db, sql: "SELECT rowid AS rid, path, size, mtime, sha256, inode, ctime FROM files WHERE checkpoint_id = ?", arguments: [id])
            if rows.isEmpty { return false }
            for r in rows {
                let p: String = r["path"]
                guard let cur = try? FileRef.stat(p) else { return false }
                if !cur.matches(size: r["size"], mtime: r["mtime"], inode: (r["inode"] as Int64?).map { UInt64(bitPattern: $0) }, ctime: r["ctime"]) { return false }
                if (r["inode"] as Int64?) == nil || (r["ctime"] as Double?) == nil, cur.inode != 0 || cur.ctime != 0 {
                    learn.append((r["rid"], Int64(bitPattern: cur.inode), cur.ctime))
                }
                if needSHA && (r["sha256"] as String?) == nil { return false }
            }
            // A sharded model may gain shards: the caller re-reads the index if its mtime changed (covered above).
            return true
        }
        // Rows written before v6 learn their inode the first time they are found current (size and mtime are the
        // evidence then, as they were when the row was written), so later link retargets are seen. A read-only
        // catalog stays as it is.
        if current && !learn.isEmpty {
            try? db.write { db in for l in learn {
                try db.execute(sql: "UPDATE files SET inode = COALESCE(inode, ?), ctime = COALESCE(ctime, ?) WHERE rowid = ?", arguments: [l.inode, l.ctime, l.rowid])
            } }
        }
        return current
    }

    /// The name listings show: the folder for a sharded model, "folder/file" for the generic file names of
    /// Hugging Face and llama.cpp layouts (model.safetensors, pytorch_model.bin, …), else the file name.
    public static func displayName(_ path: String, format: Format?) -> String {
        let folder = (FileRef.parentPath(path) as NSString).lastPathComponent
        if format == .safetensorsSharded || path.hasSuffix(".index.json") { return folder }
        let file = (path as NSString).lastPathComponent
        let stem = file.lowercased().split(whereSeparator: { $0 == "." || $0 == "-" }).first.map(String.init) ?? ""
        let generic = ["model", "pytorch_model", "adapter_model", "consolidated", "diffusion_pytorch_model", "ggml", "tf_model", "flax_model"]
        return generic.contains(stem) && !folder.isEmpty && folder != "/" ? folder + "/" + file : file
    }

    /// Records a successfully read checkpoint, replacing any previous record, in one transaction.
    @discardableResult
    public func record(_ ck: Checkpoint, summaries: [TensorSummary], sha256: [String?]? = nil, status: String = "ok",
                       error: String? = nil) throws -> Int64 {
        var dtypes: [String: Int] = [:]
        for t in ck.tensors { dtypes[t.dtype.rawValue] = (dtypes[t.dtype.rawValue] ?? 0).addingSaturating(t.elementCount) }
        let fp = Self.fingerprint(ck, summaries)
        let safety: String
        if ck.findings.isEmpty { safety = ck.format == .pytorch || ck.format == .pickle || ck.tensors.contains { $0.dtype == .object } ? "clean" : "not-applicable" }
        else if ck.findings.contains(where: { $0.severity >= .high }) { safety = "dangerous" }
        else { safety = "findings" }
        return try db.write { db in
            // Re-indexing a path replaces its row (and, by cascade, everything derived from the old bytes) but keeps
            // its id, so `#N` references stay valid.
            let prev = try Row.fetchOne(db, sql: "SELECT id, fingerprint, status FROM checkpoints WHERE path = ?", arguments: [ck.path])
            let old: Int64? = prev?["id"]
            if let prev, let id = old, (prev["fingerprint"] as String?) == fp, (prev["status"] as String?) == status {
                // The same content again (touched, copied back, --force, --sha256 added): the record is refreshed in
                // place and what was derived from these bytes (spectra, results) stays valid and is kept.
                try db.execute(sql: "DELETE FROM files WHERE checkpoint_id = ?", arguments: [id])
                try db.execute(sql: "DELETE FROM tensors WHERE checkpoint_id = ?", arguments: [id])
                try db.execute(sql: "DELETE FROM findings WHERE checkpoint_id = ?", arguments: [id])
                try db.execute(sql: """
                    UPDATE checkpoints SET name = ?, format = ?, error = ?, tensor_count = ?, param_count = ?, bytes = ?, dtypes = ?,
                                           metadata = ?, safety = ?, warnings = ?, indexed_at = ? WHERE id = ?
                    """, arguments: [Self.displayName(ck.path, format: ck.format), ck.format.rawValue, error, ck.tensors.count,
                                     ck.parameterCount, ck.totalBytes, Self.json(dtypes), Self.json(ck.metadata), safety,
                                     Self.json(ck.warnings), Date().timeIntervalSince1970, id])
            } else {
            // New content: the old row goes, and by cascade everything derived from the old bytes; the catalog-wide
            // lineage is no longer current either.
            try db.execute(sql: "DELETE FROM checkpoints WHERE path = ?", arguments: [ck.path])
            try db.execute(sql: "DELETE FROM results WHERE kind = 'lineage'")
            try db.execute(sql: """
                INSERT INTO checkpoints (id, path, name, format, status, error, tensor_count, param_count, bytes, dtypes, metadata,
                                         fingerprint, safety, warnings, indexed_at)
                VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                """, arguments: [try old ?? Self.nextID(db), ck.path, Self.displayName(ck.path, format: ck.format), ck.format.rawValue, status, error,
                                 ck.tensors.count, ck.parameterCount, ck.totalBytes, Self.json(dtypes), Self.json(ck.metadata),
                                 fp, safety, Self.json(ck.warnings), Date().timeIntervalSince1970])
            }
            let id = old ?? db.lastInsertedRowID
            for (i, f) in ck.files.enumerated() {
                try db.execute(sql: "INSERT INTO files (checkpoint_id, path, size, mtime, sha256, inode, ctime) VALUES (?,?,?,?,?,?,?)",
                               arguments: [id, f.path, f.size, f.mtime, sha256?[i], Int64(bitPattern: f.inode), f.ctime])
            }
            let stmt = try db.makeStatement(sql: """
                INSERT INTO tensors (checkpoint_id, name, shape, ndim, dtype, file, offset, nbytes, layout, hash, count,
                                     mean, std, min, max, absmax, l2, zero_frac, nan_count, inf_count, note)
                VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                """)
            for (t, s) in zip(ck.tensors, summaries) {
                let st = s.stats
                let layout: String
                switch t.layout { case .contiguous: layout = "C"; case .fortran: layout = "F"; case .strided: layout = "strided" }
                let file = t.fileIndex < ck.files.count ? ck.files[t.fileIndex].path : nil
                let fin = (st?.finiteCount ?? 0) > 0
                let values: [DatabaseValueConvertible?] = [
                    id, t.name, Self.json(t.shape), t.shape.count, t.dtype.rawValue, file, t.fileOffset, t.byteCount, layout,
                    s.hash, t.elementCount,
                    fin ? st!.mean : nil, fin ? st!.std : nil, fin ? Double(st!.min) : nil, fin ? Double(st!.max) : nil,
                    fin ? Double(st!.absMax) : nil, st.map { $0.l2Norm }, st.map { $0.zeroFraction },
                    st?.nans, st?.infs, s.note ?? t.note,
                ]
                try stmt.execute(arguments: StatementArguments(values))
            }
            for f in ck.findings {
                try db.execute(sql: "INSERT INTO findings (checkpoint_id, severity, member, offset, what, detail) VALUES (?,?,?,?,?,?)",
                               arguments: [id, f.severity.rawValue, f.member, f.offset, f.what, f.detail])
            }
            return id
        }
    }

    /// Records a file that could not be read (status error), so `wscan ls` shows it and the next run retries
    /// only if it changed.
    /// `scanned`: its pickles were scanned (findings or none: clean), else not-scanned when there are no findings.
    public func recordFailure(path: String, format: String?, error: String, files: [FileRef], findings: [Finding] = [],
                              scanned: Bool = false, status: String = "error") throws {
        try db.write { db in
            let prev = try Row.fetchOne(db, sql: "SELECT id, status, error FROM checkpoints WHERE path = ?", arguments: [path])
            let old: Int64? = prev?["id"]
            try db.execute(sql: "DELETE FROM checkpoints WHERE path = ?", arguments: [path])
            // The lineage lists unreadable entries: it is out of date when this one is new or its record changed,
            // not when the same failure is recorded again (failed files are re-read on every run).
            if prev == nil || (prev?["status"] as String?) != status || (prev?["error"] as String?) != error {
                try db.execute(sql: "DELETE FROM results WHERE kind = 'lineage'")
            }
            try db.execute(sql: """
                INSERT INTO checkpoints (id, path, name, format, status, error, bytes, safety, indexed_at) VALUES (?,?,?,?,?,?,?,?,?)
                """, arguments: [try old ?? Self.nextID(db), path, Self.displayName(path, format: nil), format, status, error,
                                 files.reduce(0) { $0 + $1.size },
                                 findings.isEmpty ? (scanned ? "clean" : "not-scanned") : (findings.contains { $0.severity >= .high } ? "dangerous" : "findings"),
                                 Date().timeIntervalSince1970])
            let id = db.lastInsertedRowID
            for f in files {
                try db.execute(sql: "INSERT INTO files (checkpoint_id, path, size, mtime, inode, ctime) VALUES (?,?,?,?,?,?)",
                               arguments: [id, f.path, f.size, f.mtime, Int64(bitPattern: f.inode), f.ctime])
            }
            for f in findings {
                try db.execute(sql: "INSERT INTO findings (checkpoint_id, severity, member, offset, what, detail) VALUES (?,?,?,?,?,?)",
                               arguments: [id, f.severity.rawValue, f.member, f.offset, f.what, f.detail])
            }
        }
    }

    /// The id for a new checkpoint: above every id the catalog has ever given out.
    static func nextID(_ db: Database) throws -> Int64 {
        let hw = try Int64.fetchOne(db, sql: "SELECT value FROM catalog_state WHERE key = 'max_checkpoint_id'") ?? 0
        let mx = try Int64.fetchOne(db, sql: "SELECT MAX(id) FROM checkpoints") ?? 0
        return max(hw, mx) + 1
    }

    /// Throws unless every row still has the content it had when it was read: an analysis that overlapped a re-index
    /// of its checkpoint (same id, new bytes) must not store results computed from the old bytes under it.
    /// Before a result is stored: every analysed checkpoint still has the content it was analysed with, in the
    /// catalog (not re-indexed meanwhile) and on disk (its files' size, mtime, inode and change time as indexed: a file
    /// rewritten while the analysis read it, even if put back, has a new change time).
    static func checkUnchanged(_ db: Database, _ rows: [CheckpointRow]) throws {
        for r in rows {
            guard let row = try Row.fetchOne(db, sql: "SELECT fingerprint FROM checkpoints WHERE id = ?", arguments: [r.id]) else {
                throw CatalogError.readOnly("\(r.path) was removed from the catalog (index --prune?) while this analysis ran: its result was not stored")
            }
            if (row["fingerprint"] as String?) != r.fingerprint { throw CatalogError.changed(r.path) }
            for f in try Row.fetchAll(db, sql: "SELECT path, size, mtime, inode, ctime FROM files WHERE checkpoint_id = ?", arguments: [r.id]) {
                let p: String = f["path"]
                guard let cur = try? FileRef.stat(p),
                      cur.matches(size: f["size"], mtime: f["mtime"], inode: (f["inode"] as Int64?).map { UInt64(bitPattern: $0) }, ctime: f["ctime"])
                else { throw CatalogError.modified(p) }
            }
        }
    }

    /// Drops checkpoints whose files are gone (or, with `under`, only those below these folders).
    /// `except`: folders that could not be listed; entries below them are kept (their files may well exist).
    /// `covered`: paths the walk found to be no checkpoint of their own any more (shards now listed by an index, a
    /// second path to a listed file): their entries go too, so the catalog lists what a fresh index would.
    public func prune(under roots: [String], except unlisted: [String] = [], covered: [String] = []) throws -> [String] {
        let coveredKeys = Set(covered.map(PathBytes.key))
        let rows = try db.read { db in try Row.fetchAll(db, sql: "SELECT id, path FROM checkpoints") }
        var dropped: [String] = []
        for r in rows {
            let p: String = r["path"]
            // Under a root as a path (x/ holds x/a, not xx/b); gone when no longer a regular file.
            guard roots.isEmpty || roots.contains(where: { PathBytes.isUnder(p, $0) }) else { continue }
            guard !unlisted.contains(where: { PathBytes.isUnder(p, $0) && !PathBytes.equal(p, $0) }) else { continue }
            if FileRef.isGone(p) || coveredKeys.contains(PathBytes.key(p)) {
                try db.write { db in
                    try db.execute(sql: "DELETE FROM checkpoints WHERE id = ?", arguments: [r["id"] as Int64])
                    try db.execute(sql: "DELETE FROM results WHERE kind = 'lineage'")
                }
                dropped.append(p)
            }
        }
        return dropped
    }

    static func fingerprint(_ ck: Checkpoint, _ s: [TensorSummary]) -> String {
        let h = XXH3Hasher()
        let items = zip(ck.tensors, s).map { "\($0.name)\u{1}\($0.dtype.rawValue)\u{1}\($0.shape)\u{1}\($1.hash)" }.sorted()
        for it in items { var b = Array(it.utf8); b.append(0); b.withUnsafeBytes { h.update($0.baseAddress!, $0.count) } }
        return h.hex()
    }

    /// JSON as the catalog stores it: sorted keys, and ±∞ / NaN (an all-zero matrix has log_norm = −∞) as the
    /// strings "inf", "-inf", "nan", which `jsonDecoder` reads back.
    static func jsonEncoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return e
    }
    static func jsonDecoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return d
    }
    static func json<T: Encodable>(_ v: T) -> String {
        String(decoding: (try? jsonEncoder().encode(v)) ?? Data("null".utf8), as: UTF8.self)
    }
}
