import Foundation
import GRDB
import WscanFormats

extension Array where Element == CheckpointRow {
    /// The rows with names told apart: a display name several of them share (`run1/ck/model.safetensors` and
    /// `run2/ck/model.safetensors` are both `ck/model.safetensors`) gets its catalog id, `ck/model.safetensors (#3)`.
    public func distinctNames() -> [CheckpointRow] {
        var count: [String: Int] = [:]
        for r in self { count[r.name, default: 0] += 1 }
        return map { r in var r = r; if count[r.name]! > 1 { r.name += " (#\(r.id))" }; return r }
    }
}

public struct CheckpointRow: Codable, Sendable {
    public var id: Int64
    public var path: String
    public var name: String
    public var format: String?
    public var status: String
    public var error: String?
    public var tensorCount: Int
    public var paramCount: Int
    public var bytes: Int
    public var dtypes: [String: Int]
    public var metadata: [String: String]
    public var fingerprint: String?
    public var safety: String
    public var warnings: [String]
    public var indexedAt: Double

    init(_ r: Row) {
        id = r["id"]; path = r["path"]; name = r["name"]; format = r["format"]; status = r["status"]; error = r["error"]
        tensorCount = r["tensor_count"]; paramCount = r["param_count"]; bytes = r["bytes"]
        dtypes = Self.decode(r["dtypes"] as String?) ?? [:]
        metadata = Self.decode(r["metadata"] as String?) ?? [:]
        fingerprint = r["fingerprint"]; safety = r["safety"]
        warnings = Self.decode(r["warnings"] as String?) ?? []
        indexedAt = r["indexed_at"]
    }

    static func decode<T: Decodable>(_ s: String?) -> T? {
        guard let s, let d = s.data(using: .utf8) else { return nil }
        return try? Catalog.jsonDecoder().decode(T.self, from: d)
    }
}

public struct TensorRow: Codable, Sendable {
    public var name: String
    public var shape: [Int]
    public var dtype: String
    public var file: String?
    public var offset: Int?
    public var nbytes: Int
    public var layout: String
    public var hash: String
    public var count: Int
    public var mean: Double?, std: Double?, min: Double?, max: Double?, absmax: Double?, l2: Double?
    public var zeroFrac: Double?
    public var nanCount: Int?, infCount: Int?
    public var note: String?

    init(_ r: Row) {
        name = r["name"]; shape = CheckpointRow.decode(r["shape"] as String?) ?? []; dtype = r["dtype"]
        file = r["file"]; offset = r["offset"]; nbytes = r["nbytes"]; layout = r["layout"]; hash = r["hash"]; count = r["count"]
        mean = r["mean"]; std = r["std"]; min = r["min"]; max = r["max"]; absmax = r["absmax"]; l2 = r["l2"]
        zeroFrac = r["zero_frac"]; nanCount = r["nan_count"]; infCount = r["inf_count"]; note = r["note"]
    }
}

public struct FindingRow: Codable, Sendable {
    public var severity: String, member: String, offset: Int, what: String, detail: String
}

public struct FileRow: Codable, Sendable {
    public var path: String, size: Int, mtime: Double, sha256: String?
}

public struct DupeGroup: Codable, Sendable {
    public var hash: String
    public var nbytes: Int
    public var dtype: String
    public var shape: [Int]
    public var members: [Member]
    public struct Member: Codable, Sendable {
        public var checkpoint: String; public var tensor: String
        /// The catalog id and path: two checkpoints may share a display name.
        public var id: Int64 = 0; public var path: String = ""
        public init(checkpoint: String, tensor: String, id: Int64 = 0, path: String = "") { self.checkpoint = checkpoint; self.tensor = tensor; self.id = id; self.path = path }
    }
}

public enum CatalogError: Error, CustomStringConvertible {
    case notFound(String), ambiguous(String, [String]), readOnly(String), shrunk(String), changed(String), modified(String)
    public var description: String {
        switch self {
        case let .notFound(s): return "no checkpoint matches '\(s)' in the catalog (index it first, or pass a path)"
        case let .ambiguous(s, c): return "'\(s)' matches \(c.count) checkpoints: \(c.prefix(5).joined(separator: ", "))\(c.count > 5 ? " and \(c.count - 5) more" : ""); name one by path or id"
        case let .readOnly(s): return s
        case let .shrunk(p): return "\(p): \(MappedFiles.shrankReason)"
        case let .changed(p): return "\(p) was re-indexed with new content while this analysis ran: its result was not stored; run it again"
        case let .modified(p): return "\(p) changed on disk while this analysis ran (written by another process): its result was not stored; run it again"
        }
    }
}

extension Catalog {
    public func checkpoints() throws -> [CheckpointRow] {
        try db.read { db in try Row.fetchAll(db, sql: "SELECT * FROM checkpoints ORDER BY name, path").map(CheckpointRow.init) }
    }

    public func checkpoint(id: Int64) throws -> CheckpointRow? {
        try db.read { db in try Row.fetchOne(db, sql: "SELECT * FROM checkpoints WHERE id = ?", arguments: [id]).map(CheckpointRow.init) }
    }

    /// Resolves a user's reference: a catalog id (`#3` or `3`), an exact path, a display name, or a unique path suffix.
    public func resolve(_ ref: String) throws -> CheckpointRow {
        let all = try checkpoints()
        let idText = ref.hasPrefix("#") ? String(ref.dropFirst()) : ref
        if let id = Int64(idText), let r = all.first(where: { $0.id == id }) { return r }
        let abs = FileRef.absolute(ref)
        if let r = all.first(where: { PathBytes.equal($0.path, abs) || PathBytes.equal($0.path, ref) }) { return r }
        let byName = all.filter { PathBytes.equal($0.name, ref) }
        if byName.count == 1 { return byName[0] }
        if byName.count > 1 { throw CatalogError.ambiguous(ref, byName.map(\.path)) }
        let bySuffix = all.filter { $0.path.utf8.reversed().starts(with: ("/" + ref).utf8.reversed()) }
        if bySuffix.count == 1 { return bySuffix[0] }
        if bySuffix.count > 1 { throw CatalogError.ambiguous(ref, bySuffix.map(\.path)) }
        throw CatalogError.notFound(ref)
    }

    public func tensors(checkpoint id: Int64) throws -> [TensorRow] {
        try db.read { db in try Row.fetchAll(db, sql: "SELECT * FROM tensors WHERE checkpoint_id = ? ORDER BY id", arguments: [id]).map(TensorRow.init) }
    }

    public func files(checkpoint id: Int64) throws -> [FileRow] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT path, size, mtime, sha256 FROM files WHERE checkpoint_id = ? ORDER BY id", arguments: [id])
                .map { FileRow(path: $0["path"], size: $0["size"], mtime: $0["mtime"], sha256: $0["sha256"]) }
        }
    }

    public func findings(checkpoint id: Int64) throws -> [FindingRow] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM findings WHERE checkpoint_id = ? ORDER BY offset", arguments: [id])
                .map { FindingRow(severity: $0["severity"], member: $0["member"], offset: $0["offset"], what: $0["what"], detail: $0["detail"]) }
        }
    }

    /// Read-only SQL: runs on a connection opened read-only, so no statement can change the catalog.
    /// `timeout`: seconds before the statement is interrupted (a recursive CTE can run for ever); nil waits.
    public func query(_ sql: String, limit: Int = 100_000, timeout: Double? = nil) throws -> (columns: [String], rows: [[DatabaseValue]]) {
        var config = Configuration()
        config.readonly = true
        let q = try DatabaseQueue(path: connectPath, configuration: config)
        if let timeout { DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [weak q] in q?.interrupt() } }
        return try q.read { db in
            let stmt = try db.makeStatement(sql: sql)
            let cols = stmt.columnNames
            var rows: [[DatabaseValue]] = []
            let cursor = try Row.fetchCursor(stmt)
            while let r = try cursor.next() {
                rows.append(r.databaseValues.map { $0 })
                if rows.count >= limit { break }
            }
            return (cols, rows)
        }
    }

    /// Tensors whose stored bytes hash identically across two or more places (within or across checkpoints).
    public func dupes(minBytes: Int = 1) throws -> [DupeGroup] {
        try db.read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT t.hash, t.nbytes, t.dtype, t.shape, t.name, c.name AS ck, c.path AS ckpath, c.id AS ckid
                FROM tensors t JOIN checkpoints c ON c.id = t.checkpoint_id
                WHERE t.nbytes >= ? AND t.hash IN (SELECT hash FROM tensors WHERE nbytes >= ? GROUP BY hash HAVING COUNT(*) > 1)
                ORDER BY t.nbytes DESC, t.hash, c.name, t.name
                """, arguments: [minBytes, minBytes])
            // One group per identical content, dtype and shape (the same bytes read as another dtype or shape are
            // listed apart), in first-seen order of the size-sorted rows.
            var groups: [DupeGroup] = []
            var index: [String: Int] = [:]
            for r in rows {
                let h: String = r["hash"], dt: String = r["dtype"], shape: String = r["shape"] ?? ""
                let key = h + "\u{1}" + dt + "\u{1}" + shape
                let m = DupeGroup.Member(checkpoint: r["ck"], tensor: r["name"], id: r["ckid"], path: r["ckpath"])
                if let g = index[key] { groups[g].members.append(m); continue }
                index[key] = groups.count
                groups.append(DupeGroup(hash: h, nbytes: r["nbytes"], dtype: dt, shape: CheckpointRow.decode(shape) ?? [], members: [m]))
            }
            return groups.filter { $0.members.count > 1 }
        }
    }
}

extension CheckpointRow {
    /// What a GGUF file's metadata says about the model (architecture, context, size, tokenizer, quantization), as
    /// (property, value) pairs for `show` and reports.
    public func ggufFacts() -> [(String, String)] {
        let m = metadata
        let arch = m["general.architecture"] ?? "?"
        var out = [("architecture", arch + (m["general.name"].map { "  (\($0))" } ?? ""))]
        if let c = m["\(arch).context_length"] { out.append(("context", "\(c) tokens")) }
        if let e = m["\(arch).embedding_length"] { out.append(("embedding", e + (m["\(arch).block_count"].map { ", \($0) blocks" } ?? ""))) }
        if let t = m["tokenizer.ggml.tokens"] {
            let n = t.hasPrefix("[array of ") ? String(t.dropFirst(10).prefix { $0.isNumber }) : String(t.split(separator: ",").count)
            out.append(("tokenizer", "\(m["tokenizer.ggml.model"] ?? "?"), \(n) tokens"))
        }
        let fileTypes = [0: "ALL_F32", 1: "MOSTLY_F16", 2: "MOSTLY_Q4_0", 3: "MOSTLY_Q4_1", 7: "MOSTLY_Q8_0", 8: "MOSTLY_Q5_0", 9: "MOSTLY_Q5_1",
                         10: "MOSTLY_Q2_K", 11: "MOSTLY_Q3_K_S", 12: "MOSTLY_Q3_K_M", 13: "MOSTLY_Q3_K_L", 14: "MOSTLY_Q4_K_S", 15: "MOSTLY_Q4_K_M",
                         16: "MOSTLY_Q5_K_S", 17: "MOSTLY_Q5_K_M", 18: "MOSTLY_Q6_K", 32: "MOSTLY_BF16"]
        let quant = m["general.file_type"].flatMap { Int($0) }.map { fileTypes[$0] ?? "file_type \($0)" }
        let mix = dtypes.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(3).map(\.key).joined(separator: ", ")
        out.append(("quantization", "\(quant ?? "not stated") (tensor types by parameters: \(mix))"))
        return out
    }
}
