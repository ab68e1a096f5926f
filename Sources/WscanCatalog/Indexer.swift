import Foundation
import WscanFormats
import WscanKernels
import WscanAnalysis

/// Catalogs checkpoints: discover, skip unchanged, read + validate, summarise in parallel, record in one
/// transaction per checkpoint. A bad file is recorded with its reason and never stops the run.
public final class Indexer {
    public struct Options: Sendable {
        public var sha256 = false
        public var force = false
        public var prune = false
        public var trust = false
        public init() {}
        public init(trust: Bool) { self.trust = trust }
    }

    public enum Outcome: Sendable {
        case indexed(path: String, tensors: Int, bytes: Int)
        case skipped(path: String)
        case failed(path: String, reason: String)
    }

    public struct Progress: Sendable {
        public var filesDone: Int, filesTotal: Int, bytesDone: Int, bytesTotal: Int, current: String
    }

    public let catalog: Catalog
    public let options: Options
    public var onProgress: (@Sendable (Progress) -> Void)?
    public var onOutcome: ((Outcome) -> Void)?
    /// Catalog entries `--prune` dropped in the last run: their files are gone, or they are now part of another entry
    /// (a shard of a listed sharded model, a second path to a listed file).
    public private(set) var pruned: [String] = []
    public private(set) var prunedCovered = 0

    public init(catalog: Catalog, options: Options) { self.catalog = catalog; self.options = options }

    public func run(paths: [String]) throws -> [Outcome] {
        let listed = Set(((try? catalog.checkpoints()) ?? []).map { PathBytes.key($0.path) })
        let (cks, missing, unreadable, covered) = CheckpointOpener.discover(paths, keep: { listed.contains(PathBytes.key($0)) })
        // With --prune a root that is gone is the point (its entries are dropped below), not a failure.
        let reportMissing = options.prune ? [] : missing
        var outcomes: [Outcome] = reportMissing.map { .failed(path: $0, reason: "no such file or folder") }
        reportMissing.forEach { onOutcome?(.failed(path: $0, reason: "no such file or folder")) }
        // A folder that cannot be listed is a failure, not an empty folder; and --prune must not take its entries
        // for gone files.
        for u in unreadable { outcomes.append(.failed(path: u.path, reason: u.reason)); onOutcome?(.failed(path: u.path, reason: u.reason)) }
        let unlisted = unreadable.map(\.path)
        let sizes = cks.map { (try? FileRef.stat($0).size) ?? 0 }
        let bytesTotal = sizes.reduce(0, +)
        let done = ProgressState()
        for (i, p) in cks.enumerated() {
            let o = indexOne(p, progress: { b in
                let d = done.add(b)
                self.onProgress?(Progress(filesDone: i, filesTotal: cks.count, bytesDone: d, bytesTotal: bytesTotal, current: p))
            })
            done.set(sizes[0...i].reduce(0, +))
            onProgress?(Progress(filesDone: i + 1, filesTotal: cks.count, bytesDone: done.value, bytesTotal: bytesTotal, current: p))
            outcomes.append(o)
            onOutcome?(o)
        }
        if options.prune {
            let roots = paths.map { FileRef.absolute($0) }
            let coveredKeys = Set(covered.map(PathBytes.key))
            pruned = try catalog.prune(under: roots, except: unlisted, covered: covered)
            prunedCovered = pruned.filter { coveredKeys.contains(PathBytes.key($0)) }.count
        }
        return outcomes
    }

    /// Indexes one checkpoint path (already discovered). Returns what happened.
    public func indexOne(_ path: String, progress: (@Sendable (Int) -> Void)? = nil) -> Outcome {
        do {
            if !options.force, try catalog.isUpToDate(path: path, needSHA: options.sha256) { return .skipped(path: path) }
        } catch { /* treat as not indexed */ }
        let ck: Checkpoint
        // A file truncated by another process while it is read: SIGBUS is turned into zero pages and counted
        // (MappedFiles). Files are indexed one at a time, so a count taken after this file is this file's.
        _ = MappedFiles.shrunk(take: true)
        do {
            ck = try CheckpointOpener.open(path, options: .init(trust: options.trust))
        } catch {
            if MappedFiles.shrunk(take: true) != nil { return .failed(path: path, reason: MappedFiles.shrankReason) }
            let reason = (error as? FormatError)?.message ?? "\(error)"
            let files = [(try? FileRef.stat(path)) ?? FileRef(path: path, size: 0, mtime: 0)]
            var findings = (error as? UnsafeCheckpointError)?.findings ?? []
            // A file wscan cannot read may still be one Python loads (numpy accepts dtypes wscan refuses; a pickle
            // the passive parser rejects may run): its pickles are scanned all the same.
            // (A pickle-bearing format whose scan ran and found nothing is recorded clean, as a readable one is.)
            let format = FormatDetector.formatName(path: path)
            var scannedClean = false
            if findings.isEmpty, let scanned = try? PickleScanner.scanFile(path: path) {
                findings = scanned.filter { $0.severity > .info }
                scannedClean = findings.isEmpty && ["pytorch", "pytorch-legacy", "pickle"].contains(format)
            }
            let status = findings.contains(where: { $0.severity >= .high }) || error is UnsafeCheckpointError ? "unsafe" : "error"
            try? catalog.recordFailure(path: path, format: format, error: reason,
                                       files: files, findings: findings, scanned: scannedClean, status: status)
            return .failed(path: path, reason: reason)
        }
        for s in ck.storages { s.adviseSequential() }
        let summaries = Summarizer.summarizeAll(ck, progress: progress)
        var shas: [String?]? = nil
        if options.sha256 {
            shas = ck.files.map { f in
                guard let st = try? Storage(mapping: f.path), let b = st.base else { return nil }
                let h = SHA256Hasher()
                var off = 0
                while off < st.count { let n = min(1 << 24, st.count - off); h.update(b + off, n); off += n }
                return h.hex()
            }
        }
        // Nothing is recorded from a file that changed under us; its old record (if any) stays, and the next run
        // sees the new size and indexes it again.
        if MappedFiles.shrunk(take: true) != nil { return .failed(path: path, reason: MappedFiles.shrankReason) }
        do {
            try catalog.record(ck, summaries: summaries, sha256: shas)
        } catch {
            return .failed(path: path, reason: "catalog write failed: \(error)")
        }
        return .indexed(path: path, tensors: ck.tensors.count, bytes: ck.totalBytes)
    }
}

final class ProgressState: @unchecked Sendable {
    private var v = 0
    private let lock = NSLock()
    func add(_ b: Int) -> Int { lock.lock(); defer { lock.unlock() }; v += b; return v }
    func set(_ b: Int) { lock.lock(); v = b; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return v }
}
