import Foundation
import GRDB
import WscanFormats
import WscanAnalysis

/// A stored spectrum row: analysed (`spectrum` set) or skipped with a reason.
public struct SpectrumRecord: Codable, Sendable {
    public var tensor: String
    public var shape: [Int]
    public var skipReason: String?
    public var spectrum: MatrixSpectrum?
    public var energies: [Double]
    /// `SpectrumOptions.storageKey` of the run that produced it (nil: stored by a wscan that did not record it).
    public var options: String? = nil
    /// The skip reason of a stored row whose metrics no longer decode (written by an older wscan): it is analysed again.
    public static let unreadable = "stored metrics unreadable"
}

extension Catalog {
    /// Replaces the checkpoint's stored spectra in one transaction.
    /// `merge`, when given, makes the rows to store from those stored now, inside the write transaction: two runs on
    /// one checkpoint (different --tensors) each keep the other's rows instead of writing back what they read first.
    public func storeSpectra(checkpoint id: Int64, _ records: [SpectrumRecord], analysed: [CheckpointRow] = [],
                             merge: (([SpectrumRecord]) -> [SpectrumRecord])? = nil) throws {
        if let f = MappedFiles.shrunk() { throw CatalogError.shrunk(f) }   // computed from zero pages
        try db.write { db in
            try Self.checkUnchanged(db, analysed)
            let final = try merge.map { $0(try Self.decodeSpectra(db, id)) } ?? records
            try db.execute(sql: "DELETE FROM spectra WHERE checkpoint_id = ?", arguments: [id])
            for r in final {
                guard let s = r.spectrum else {
                    try db.execute(sql: "INSERT INTO spectra (checkpoint_id, tensor, shape, method, skip_reason, options) VALUES (?,?,?,?,?,?)",
                                   arguments: [id, r.tensor, Self.json(r.shape), "skipped", r.skipReason, r.options])
                    continue
                }
                let m = s.metrics
                let blob = s.singularValues.withUnsafeBufferPointer { Data(buffer: $0) }
                let values: [DatabaseValueConvertible?] = [
                    id, s.name, Self.json(s.shape), s.rows, s.cols, s.slices, s.kind, s.method,
                    m.frobeniusNorm, m.spectralNorm, m.stableRank, m.effectiveRank, m.numericalRank,
                    Self.json(r.energies), Self.json(m.energyRanks), Self.json(m.utilization),
                    m.logNorm, m.logSpectralNorm, m.alpha, m.alphaWeighted, m.logAlphaNorm, m.xmin, m.xmax, m.ksDistance,
                    m.numPlSpikes, m.entropy, m.numSpikes, m.sigmaMP, m.mpSoftrank, m.lambdaPlus, m.randDistance, m.numEvals,
                    Self.json(s.warnings), s.seconds, blob, Self.json(m), r.options,
                ]
                try db.execute(sql: """
                    INSERT INTO spectra (checkpoint_id, tensor, shape, rows, cols, slices, kind, method,
                      frobenius, spectral_norm, stable_rank, effective_rank, numerical_rank, energies, energy_ranks, utilization,
                      log_norm, log_spectral_norm, alpha, alpha_weighted, log_alpha_norm, xmin, xmax, ks_d, num_pl_spikes, entropy,
                      num_spikes, sigma_mp, mp_softrank, lambda_plus, rand_distance, num_evals, warnings, seconds, singular_values, metrics,
                      options)
                    VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                    """, arguments: StatementArguments(values))
            }
        }
    }

    /// The stored records, all with one set of energy fractions: a run over some tensors with other `--energy`
    /// values leaves records with different sets, and tables have one column per fraction. The most common set
    /// wins; the others' ranks are recomputed from their singular values.
    public func spectra(checkpoint id: Int64) throws -> [SpectrumRecord] {
        let recs = try storedSpectra(checkpoint: id)
        var counts: [[Double]: Int] = [:]
        for r in recs where r.spectrum != nil { counts[r.energies, default: 0] += 1 }
        guard counts.count > 1, let top = counts.values.max(),
              let target = recs.first(where: { $0.spectrum != nil && counts[$0.energies] == top })?.energies else { return recs }
        return recs.map { $0.energies == target ? $0 : SpectrumRunner.withEnergies($0, target) }
    }

    /// Stored spectra of a checkpoint (empty when never analysed), in stored order, as stored.
    func storedSpectra(checkpoint id: Int64) throws -> [SpectrumRecord] {
        try db.read { db in try Self.decodeSpectra(db, id) }
    }

    static func decodeSpectra(_ db: Database, _ id: Int64) throws -> [SpectrumRecord] {
            try Row.fetchAll(db, sql: "SELECT * FROM spectra WHERE checkpoint_id = ? ORDER BY id", arguments: [id]).map { r in
                let shape: [Int] = CheckpointRow.decode(r["shape"] as String?) ?? []
                let energies: [Double] = CheckpointRow.decode(r["energies"] as String?) ?? []
                let options: String? = r["options"]
                if (r["method"] as String) == "skipped" {
                    return SpectrumRecord(tensor: r["tensor"], shape: shape, skipReason: r["skip_reason"], spectrum: nil, energies: energies,
                                          options: options)
                }
                let blob: Data = r["singular_values"] ?? Data()
                let sv: [Double] = blob.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
                guard let m: SpectrumMetrics = CheckpointRow.decode(r["metrics"] as String?) else {
                    return SpectrumRecord(tensor: r["tensor"], shape: shape, skipReason: SpectrumRecord.unreadable, spectrum: nil, energies: energies,
                                          options: options)
                }
                let s = MatrixSpectrum(name: r["tensor"], shape: shape, rows: r["rows"], cols: r["cols"], slices: r["slices"],
                                       kind: r["kind"], method: r["method"], singularValues: sv, metrics: m,
                                       warnings: CheckpointRow.decode(r["warnings"] as String?) ?? [], seconds: r["seconds"])
                return SpectrumRecord(tensor: r["tensor"], shape: shape, skipReason: nil, spectrum: s, energies: energies, options: options)
            }
    }
}
