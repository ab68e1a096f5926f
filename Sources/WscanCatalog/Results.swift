import Foundation
import GRDB
import WscanFormats

/// Generic stored analysis results (sparsity curves, saliency tables, comparisons, lineage) as JSON.
public struct StoredResult: Sendable {
    public var kind: String
    public var checkpointID: Int64?
    public var otherID: Int64?
    public var params: String
    public var summary: String?
    public var data: Data
    public var createdAt: Double
}

extension Catalog {
    /// `analysed`: the catalog rows the result was computed from; it is stored only if they still hold that content.
    public func storeResult<T: Encodable, P: Encodable>(kind: String, checkpoint: Int64?, other: Int64? = nil, params: P,
                                                        summary: String?, data: T, analysed: [CheckpointRow] = []) throws {
        if let f = MappedFiles.shrunk() { throw CatalogError.shrunk(f) }   // computed from zero pages
        let p = Self.json(params)
        let d = String(decoding: try Self.jsonEncoder().encode(data), as: UTF8.self)
        try db.write { db in
            try Self.checkUnchanged(db, analysed)
            try db.execute(sql: "DELETE FROM results WHERE kind = ? AND checkpoint_id IS ? AND other_id IS ? AND params = ?",
                           arguments: [kind, checkpoint, other, p])
            try db.execute(sql: "INSERT INTO results (kind, checkpoint_id, other_id, params, summary, data, created_at) VALUES (?,?,?,?,?,?,?)",
                           arguments: [kind, checkpoint, other, p, summary, d, Date().timeIntervalSince1970])
        }
    }

    /// Stored results of a kind, newest first; optionally for one checkpoint (as first or second member).
    public func results(kind: String, checkpoint: Int64? = nil) throws -> [StoredResult] {
        try db.read { db in
            let rows: [Row]
            if let c = checkpoint {
                rows = try Row.fetchAll(db, sql: "SELECT * FROM results WHERE kind = ? AND (checkpoint_id = ? OR other_id = ?) ORDER BY created_at DESC, id DESC",
                                        arguments: [kind, c, c])
            } else {
                rows = try Row.fetchAll(db, sql: "SELECT * FROM results WHERE kind = ? ORDER BY created_at DESC, id DESC", arguments: [kind])
            }
            return rows.map { r in
                StoredResult(kind: r["kind"], checkpointID: r["checkpoint_id"], otherID: r["other_id"], params: r["params"],
                             summary: r["summary"], data: Data((r["data"] as String).utf8), createdAt: r["created_at"])
            }
        }
    }

    public func decodeResult<T: Decodable>(_ r: StoredResult, as: T.Type) throws -> T {
        try Self.jsonDecoder().decode(T.self, from: r.data)
    }
}
