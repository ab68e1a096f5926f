import Foundation
import WscanFormats
import WscanKernels
import WscanAnalysis
#if canImport(Glibc)
import Glibc
#endif

/// Runs the spectrum analysis over a catalogued checkpoint and stores the results; re-uses stored results
/// until the checkpoint changes (re-indexing replaces the checkpoint row, and its spectra with it).
public enum SpectrumRunner {
    public struct Request: Sendable {
        public var tensorGlob: String?
        public var options = SpectrumOptions()
        public var force = false
        public var threads: Int?
        /// Bytes the matrices analysed in parallel may hold at once (estimated); nil: half the physical memory.
        public var memoryBudget: Int?
        /// Load tensors from pickle files the scanner flags (--trust; still executes nothing).
        public var trust = false
        public init() {}
    }

    public static func globMatch(_ pattern: String?, _ name: String) -> Bool {
        guard let p = pattern, !p.isEmpty else { return true }
        return p.split(separator: ",").contains { fnmatch(String($0), name, 0) == 0 }
    }

    /// Whether a stored record belongs to tensor `name`: its own record, or one of its per-slice records `name[…]`.
    static func belongs(_ record: String, to name: String) -> Bool {
        record == name || (record.hasPrefix(name + "[") && record.hasSuffix("]"))
    }

    /// Returns records for the selected tensors (stored or freshly computed), in checkpoint order. A conv kernel
    /// analysed per slice gives one record per slice.
    public static func run(catalog: Catalog, checkpoint row: CheckpointRow, request: Request,
                           progress: ((Int, Int, String) -> Void)? = nil) throws -> [SpectrumRecord] {
        let stored = try catalog.spectra(checkpoint: row.id)
        let tensors = try catalog.tensors(checkpoint: row.id).filter { globMatch(request.tensorGlob, $0.name) }
        var storedFor: [String: [SpectrumRecord]] = [:]
        let names = Set(tensors.map(\.name))
        for r in stored {
            let base = r.tensor.firstIndex(of: "[").map { String(r.tensor[..<$0]) } ?? r.tensor
            for n in [r.tensor, base] where names.contains(n) && belongs(r.tensor, to: n) { storedFor[n, default: []].append(r); break }
        }
        let reusable = tensors.allSatisfy { t in
            guard let rs = storedFor[t.name], !rs.isEmpty else { return false }
            let key = request.options.storageKey(shape: t.shape)
            return rs.allSatisfy { $0.options == key && $0.skipReason != SpectrumRecord.unreadable }
        }
        if !request.force, !tensors.isEmpty, reusable {
            // Re-use: energy ranks are recomputed from the stored singular values if other energies are asked for.
            return tensors.flatMap { t in
                storedFor[t.name]!.map { stored in
                    var r = stored
                    if r.energies != request.options.energies { r = SpectrumRunner.withEnergies(r, request.options.energies) }
                    return r
                }
            }
        }
        let ck = try CheckpointOpener.openNamed(row.path, options: .init(trust: request.trust))
        let selected = ck.tensors.filter { globMatch(request.tensorGlob, $0.name) }
        let energies = request.options.energies
        func skipped(_ t: TensorInfo, _ why: String) -> [SpectrumRecord] {
            [SpectrumRecord(tensor: t.name, shape: t.shape, skipReason: why, spectrum: nil, energies: energies,
                            options: request.options.storageKey(shape: t.shape))]
        }
        var results = [[SpectrumRecord]?](repeating: nil, count: selected.count)
        var jobs: [Int] = []
        for (i, t) in selected.enumerated() {
            if let why = MatrixExtractor.skipReason(name: t.name, shape: t.shape, dtype: t.dtype) {
                results[i] = skipped(t, why)
            } else if !t.dtype.decodable {
                results[i] = skipped(t, "no decoder for \(t.dtype.rawValue)")
            } else if let why = TensorData.unexpandable(t) {
                results[i] = skipped(t, "analysis failed: \(FormatError(.bounds, why))")
            } else { jobs.append(i) }
        }
        let cores = max(1, request.threads ?? ProcessInfo.processInfo.activeProcessorCount)
        let plan = schedule(jobs.map { selected[$0].shape }, decoded: jobs.map { TensorData.storedElements(selected[$0]) },
                            cores: cores, options: request.options,
                            budget: request.memoryBudget ?? SpectrumOptions.halfPhysicalMemory)
        let lock = NSLock()
        var done = 0
        func work(_ i: Int) {
            let t = selected[i]
            var out: [SpectrumRecord]
            do {
                let values = try TensorData.floats(ck, t)
                let m = MatrixExtractor.matrix(name: t.name, shape: t.shape, values: values)
                let parts = request.options.convPerSlice && t.shape.count > 2 ? MatrixExtractor.perSlice(m) : [m]
                let key = request.options.storageKey(shape: t.shape)
                out = []
                for p in parts {
                    do {
                        var s = try SpectrumAnalyzer.analyze(p, options: request.options)
                        // Every analysis reads weights as float32: an F64 matrix's values carry float32 rounding, which
                        // moves σᵢ by about 6e-8·σ₁ (relative: 6e-8·σ₁/σᵢ).
                        if t.dtype == .f64 { s.warnings.append("F64 weights analysed at float32 precision: values below ~1e-3·σ₁ keep fewer than 4 digits") }
                        out.append(SpectrumRecord(tensor: p.name, shape: p.shape, skipReason: nil, spectrum: s, energies: energies, options: key))
                    } catch {
                        let why = error is NonFiniteMatrix || error is SpectrumSkip ? "\(error)" : "analysis failed: \(error)"
                        out.append(SpectrumRecord(tensor: p.name, shape: p.shape, skipReason: why, spectrum: nil, energies: energies, options: key))
                    }
                }
            } catch {
                out = skipped(t, "analysis failed: \(error)")
            }
            lock.lock(); results[i] = out; done += 1; let d = done; lock.unlock()
            progress?(d, jobs.count, t.name)
        }
        // The plan's sequential part: one matrix at a time with multi-threaded BLAS. Its parallel part: `cores`
        // workers, single-threaded BLAS each, taking the matrices largest first. Each of those fits in a core's share
        // of the memory budget, so the matrices in flight together stay within it.
        let priorThreads = CPU.blasThreads
        defer { CPU.setBLASThreads(priorThreads) }
        CPU.setBLASThreads(cores)
        for j in plan.sequential { work(jobs[j]) }
        CPU.setBLASThreads(1)
        let next = NSLock(); var k = 0
        DispatchQueue.concurrentPerform(iterations: min(cores, max(1, plan.parallel.count))) { _ in
            while true {
                next.lock(); let j = k; k += 1; next.unlock()
                if j >= plan.parallel.count { break }
                work(jobs[plan.parallel[j]])
            }
        }
        CPU.setBLASThreads(priorThreads)
        let out = results.flatMap { $0! }
        // Merge with the results stored now (read in the write transaction) for tensors outside the selection
        // (per-slice records included), in the checkpoint's order, then store.
        let orderIndex = Dictionary(ck.tensors.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        func position(_ r: SpectrumRecord) -> Int {
            orderIndex[r.tensor] ?? r.tensor.firstIndex(of: "[").flatMap { orderIndex[String(r.tensor[..<$0])] } ?? .max
        }
        try catalog.storeSpectra(checkpoint: row.id, out, analysed: [row]) { current in
            let merged = current.filter { s in !selected.contains { belongs(s.tensor, to: $0.name) } } + out
            return merged.enumerated().sorted { (position($0.element), $0.offset) < (position($1.element), $1.offset) }.map(\.element)
        }
        return out
    }
}

extension SpectrumRunner {
    /// How the matrices of one run are spread over the cores (indices into the shapes given).
    public struct Plan: Equatable, Sendable {
        /// Analysed one at a time, each with all cores' BLAS threads.
        public var sequential: [Int]
        /// Analysed in parallel, one matrix per core with single-threaded BLAS, in this order (largest first).
        public var parallel: [Int]
    }

    /// Estimated peak memory of analysing a matrix of this shape, `decoded` elements read (a strided view decodes
    /// its whole storage): the float32 values (a conv kernel's slices are copied out too), the element-shuffled
    /// slice rand_distance decomposes, and either the randomized method's working set or the float64 Gram matrix
    /// with its eigensolver (16·k², the bound `--gram-memory` is held to), the float64 panel it is built from and,
    /// where a rank-deficient matrix may take it, the float64 copy dgesdd decomposes. Saturates instead of
    /// overflowing (a broadcast view can claim 2⁶¹ elements).
    static func estimatedBytes(_ shape: [Int], decoded: Int = 0, options: SpectrumOptions) -> Int {
        func mul(_ a: Int, _ b: Int) -> Int { let (r, o) = a.multipliedReportingOverflow(by: b); return o ? .max : r }
        func add(_ a: Int, _ b: Int) -> Int { let (r, o) = a.addingReportingOverflow(b); return o ? .max : r }
        let elems = shape.reduce(1) { mul($0, max($1, 0)) }
        let rows = max(shape.first ?? 0, 0), cols = max(shape.count > 1 ? shape[1] : 0, 0)
        let k = min(rows, cols), slice = mul(rows, cols)
        var b = mul(4, max(elems, decoded))
        if shape.count > 2 { b = add(b, mul(4, elems)) }
        if options.randomize { b = add(b, mul(4, slice)) }
        if options.needsRandomized(rows: rows, cols: cols) {
            let l = min(k, options.sketchWidth)
            b = add(b, mul(l, add(mul(20, rows), mul(12, cols))))
        } else if k > 0 {
            b = add(b, add(mul(16, mul(k, k)), mul(8 * k, max(256, 131072 / k))))
            if k > 64 && SpectrumAnalyzer.denseCopyFits(rows: rows, cols: cols, limit: options.gramLimit) { b = add(b, mul(8, slice)) }
        }
        return b
    }

    /// The work of a matrix's decomposition, for ordering: the Gram product (max·k²) and the eigensolve (k³), per
    /// slice; the randomized method's products (about six passes of max·k·l).
    static func cost(_ shape: [Int], options: SpectrumOptions) -> Double {
        let rows = Double(max(shape.first ?? 0, 0)), cols = Double(max(shape.count > 1 ? shape[1] : 0, 0))
        let slices = shape.dropFirst(2).reduce(1.0) { $0 * Double(max($1, 1)) }
        let k = min(rows, cols), m = max(rows, cols)
        if options.needsRandomized(rows: Int(rows), cols: Int(cols)) { return 6 * m * k * min(k, Double(options.sketchWidth)) }
        return slices * (m * k * k + k * k * k)
    }

    /// Multi-threaded BLAS speeds up the Gram product and the first stage of the eigensolver; the bulge chasing,
    /// dsterf, the decoding and the shuffle stay on one core. So matrices go to the parallel part, one per core,
    /// except (largest first) a large one (min(rows, cols) ≥ 1024) that is at least a core's share of the work
    /// still to place (there one core would finish long after the others: a 4096² matrix beside small layers),
    /// and any matrix over a core's share of the memory budget (so the parallel part never holds more than the
    /// budget). Those run first, one at a time, with every core's BLAS. Measured on a 1.1B-parameter checkpoint's
    /// layer (two cores): 9.9 s one at a time with two BLAS threads, 5.2–5.8 s two at a time.
    public static func schedule(_ shapes: [[Int]], decoded: [Int]? = nil, cores: Int, options: SpectrumOptions, budget: Int) -> Plan {
        let costs = shapes.map { cost($0, options: options) }
        let order = shapes.indices.sorted { (costs[$0], -$0) > (costs[$1], -$1) }
        let bytes = shapes.indices.map { estimatedBytes(shapes[$0], decoded: decoded?[$0] ?? 0, options: options) }
        let isBig = { (i: Int) in shapes[i].count >= 2 && min(shapes[i][0], shapes[i][1]) >= 1024 }
        let share = budget / max(cores, 1)
        var left = costs.reduce(0, +)
        var sequential: [Int] = [], parallel: [Int] = []
        for i in order {
            if bytes[i] > share || (cores >= 2 && isBig(i) && costs[i] * Double(cores) >= left) {
                sequential.append(i); left -= costs[i]
            } else { parallel.append(i) }
        }
        return Plan(sequential: sequential, parallel: parallel)
    }
    /// A stored record with its energy ranks recomputed for other energy fractions from its singular values. A
    /// randomized record knows only its top values: the exact ‖W‖²_F (its Frobenius norm) is the total, and ranks
    /// the top values cannot reach are lower bounds, as its warning then says.
    public static func withEnergies(_ record: SpectrumRecord, _ energies: [Double]) -> SpectrumRecord {
        var r = record
        r.energies = energies
        guard var s = r.spectrum else { return r }
        let randomized = s.method == SpectrumMethod.randomized.rawValue
        let fresh = SpectrumAnalyzer.computeMetrics(s.singularValues, rows: s.rows, cols: s.cols, slices: s.slices, energies: energies,
                                                    totalEnergy: randomized ? s.metrics.frobeniusNorm * s.metrics.frobeniusNorm : nil)
        s.metrics.energyRanks = fresh.energyRanks; s.metrics.utilization = fresh.utilization
        if randomized {
            s.warnings.removeAll { $0.hasPrefix(SpectrumAnalyzer.lowerBoundWarning) }
            if SpectrumAnalyzer.ranksAreLowerBounds(s.singularValues, energyRanks: fresh.energyRanks, totalEnergy: s.metrics.frobeniusNorm * s.metrics.frobeniusNorm) { s.warnings.append(SpectrumAnalyzer.lowerBoundNote(s.singularValues.count)) }
        }
        r.spectrum = s
        return r
    }
}

/// Model-level summary of a spectrum analysis.
public struct SpectrumSummary: Codable, Sendable {
    public var matrices: Int
    public var skipped: Int
    public var parameters: Int
    public var weightedMeans: [String: Double]     // parameter-weighted means of the main metrics
    public var mostUtilized: [String]
    public var leastUtilized: [String]
    public var alphaWarnings: [String]
    public var welore: WeLoreResult
    /// Matrices analysed by the randomized method: their energy ranks and utilization are lower bounds and their
    /// spectra partial, so they are left out of the utilization mean, the most/least utilized lists and WeLore.
    public var partial: [String]? = nil

    public static func make(_ records: [SpectrumRecord], energyIndex: Int, weloreReduction: Double, weloreMinRatio: Double) -> SpectrumSummary {
        let done = records.compactMap(\.spectrum)
        let params = done.map { Double($0.rows * $0.cols * $0.slices) }
        let total = params.reduce(0, +)
        func wmean(_ f: (MatrixSpectrum) -> Double?) -> Double? {
            var s = 0.0, w = 0.0
            for (m, p) in zip(done, params) { if let v = f(m), v.isFinite { s += v * p; w += p } }
            return w > 0 ? s / w : nil
        }
        var means: [String: Double] = [:]
        means["stable_rank"] = wmean { $0.metrics.stableRank }
        means["effective_rank"] = wmean { $0.metrics.effectiveRank }
        let partial = done.filter { $0.method == SpectrumMethod.randomized.rawValue }.map(\.name)
        let isPartial = Set(partial)
        means["utilization"] = wmean { !isPartial.contains($0.name) && $0.metrics.utilization.indices.contains(energyIndex) ? $0.metrics.utilization[energyIndex] : nil }
        means["alpha"] = wmean { $0.metrics.alpha }
        means["alpha_weighted"] = wmean { $0.metrics.alphaWeighted }
        means["log_norm"] = wmean { $0.metrics.logNorm }
        means["entropy"] = wmean { $0.metrics.entropy }
        let byUtil = done.filter { !isPartial.contains($0.name) && $0.metrics.utilization.indices.contains(energyIndex) }
            .sorted { $0.metrics.utilization[energyIndex] > $1.metrics.utilization[energyIndex] }
        let wl = WeLore.classify(done.filter { !isPartial.contains($0.name) }.map { ($0.name, $0.singularValues) }, targetReduction: weloreReduction, minRatio: weloreMinRatio)
        return SpectrumSummary(matrices: done.count, skipped: records.count - done.count, parameters: Int(total),
                               weightedMeans: means.compactMapValues { $0 },
                               mostUtilized: byUtil.prefix(3).map(\.name), leastUtilized: byUtil.suffix(3).reversed().map(\.name),
                               alphaWarnings: done.flatMap { m in m.warnings.map { "\(m.name): \($0)" } }, welore: wl,
                               partial: partial.isEmpty ? nil : partial)
    }
}
