import Foundation
import WscanKernels

/// One-shot magnitude pruning curves and essential sparsity (Jaiswal et al., "The Emergence of Essential
/// Sparsity in Large Pre-trained Models", 2023).
///
/// Thresholds come from selection, not sorting: one pass builds, per layer (in chunks of 1M elements, in
/// parallel), a 32768-bin histogram of |w| keyed by the top bits of the IEEE pattern (monotone in |w|) with
/// counts and Σw² (a C kernel: one 16-byte add per element); for every grid point the bin holding the k-th
/// smallest magnitude follows from cumulative counts, and a second, branch-free pass collects the indices of
/// only those boundary bins' elements, where selection finds the exact threshold. Ties at the threshold are broken by tensor
/// order, then element index, so exactly k = `count(s, of: n)` weights are pruned.
public enum SparsityPattern: Equatable, Sendable, CustomStringConvertible {
    case unstructured
    case nm(n: Int, m: Int)     // N zeros in every group of M consecutive weights along the input (last) axis
    public var description: String { if case let .nm(n, m) = self { return "\(n):\(m)" }; return "unstructured" }
    public static func parse(_ s: String) -> SparsityPattern? {
        if s == "unstructured" { return .unstructured }
        // Exactly two integers: "2:x:4", "2::4" or ":2:4" are refused, not read as 2:4.
        let p = s.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
        if p.count == 2, let n = p[0], let m = p[1], n > 0, m > n { return .nm(n: n, m: m) }
        return nil
    }
}

public enum SparsityScope: String, Codable, Sendable { case global, layer }

public struct SparsityPoint: Codable, Sendable {
    public var sparsity: Double                  // requested
    public var achieved: Double                  // pruned / prunable weights
    public var relativeError: Double             // ‖W − Wₚ‖_F / ‖W‖_F over all pruned tensors
    public var retainedEnergy: Double            // ‖Wₚ‖²_F / ‖W‖²_F
    public var layers: [LayerPoint]
    public var eval: EvalResult?
    public struct LayerPoint: Codable, Sendable {
        public var name: String
        public var sparsity: Double
        public var relativeError: Double
        public var retainedEnergy: Double
    }
}

public struct EssentialSparsity: Codable, Sendable {
    public var metric: String                    // accuracy / loss / retained_energy / external
    public var tolerance: Double
    public var withinTolerance: Double           // largest grid sparsity whose metric stays within tolerance of dense
    public var knee: Double?                     // Kneedle knee of the curve
    public var denseMetric: Double
}

public struct SparsityCurve: Codable, Sendable {
    public var scope: SparsityScope
    public var pattern: String
    public var prunable: Int
    public var tensors: [String]
    public var points: [SparsityPoint]
    public var essential: EssentialSparsity
    public var evaluator: String?
    public var warnings: [String]?
    /// `--write-pruned`: the file written, the sparsity it was pruned at and the share of its pruned tensors'
    /// weights that are zero (pre-existing zeros included).
    public var written: Written?
    public struct Written: Codable, Sendable {
        public var path: String; public var sparsity: Double; public var zeroFraction: Double
        public init(path: String, sparsity: Double, zeroFraction: Double) { self.path = path; self.sparsity = sparsity; self.zeroFraction = zeroFraction }
    }
}

/// What one point of a curve prunes, for an evaluator to measure: nothing (the dense model), one cut per tensor
/// (in the source's tensor order), or an N:M pattern.
public enum PruneSpec: Sendable {
    case dense
    case cuts([PruneCut])
    case nm(n: Int, m: Int)
}

/// The exact cut for one sparsity: prune |w| < value, and |w| == value up to (tensor, index) inclusive.
public struct PruneCut: Sendable {
    public var key: Int
    public var value: Float
    public var tensor: Int
    public var index: Int
    public var none: Bool      // k = 0
}

/// s·n for a fraction s the user wrote in decimal, in exact decimal arithmetic: s is taken as its shortest decimal
/// spelling (the digits Swift prints for it, which are the digits typed for any fraction of up to 15 significant
/// digits), so ⌊0.999999 · 1,000,001⌋ is 999,999 and round(0.7 · 45) is 32, where binary arithmetic gives 1,000,000
/// (after an epsilon nudge) and 31.
public enum DecimalFraction {
    public static func times(_ s: Double, _ n: Int, _ mode: NSDecimalNumber.RoundingMode) -> Int {
        guard s.isFinite, s > 0, n > 0 else { return 0 }
        guard var d = Decimal(string: "\(s)", locale: Locale(identifier: "en_US_POSIX")) else {
            return Int((s * Double(n)).rounded(mode == .down ? .down : .toNearestOrAwayFromZero))
        }
        d *= Decimal(n)
        var r = Decimal()
        NSDecimalRound(&r, &d, 0, mode)
        return NSDecimalNumber(decimal: r).intValue
    }
}

public enum Sparsity {
    /// Tensors are histogrammed in chunks of at most this many elements, so one big embedding doesn't leave a core idle.
    static let chunkElements = 1 << 20

    /// One tensor's |w| histogram over its populated keys [lo, lo + count.count): counts and Σw² per bin, with
    /// prefix sums for O(1) "everything below bin b".
    public struct Hist: Sendable {
        public var lo: Int
        public var count: [Int]
        public var sumsq: [Double]
        public var n: Int
        public var energy: Double
        var cumCount: [Int] = [0]
        var cumEnergy: [Double] = [0]

        init(lo: Int, count: [Int], sumsq: [Double]) {
            self.lo = lo; self.count = count; self.sumsq = sumsq
            cumCount = [Int](repeating: 0, count: count.count + 1); cumEnergy = [Double](repeating: 0, count: count.count + 1)
            for b in 0..<count.count { cumCount[b + 1] = cumCount[b] + count[b]; cumEnergy[b + 1] = cumEnergy[b] + sumsq[b] }
            n = cumCount[count.count]; energy = cumEnergy[count.count]
        }
        /// ±Inf and NaN weights: ranked above every finite magnitude (never pruned) and left out of the energy.
        public var nonFinite: Int { n - countBelow(MagnitudeKernel.nonFiniteKey) }
        /// Elements (and their Σw²) in bins below `key`.
        @inline(__always) func countBelow(_ key: Int) -> Int { cumCount[min(max(key - lo, 0), count.count)] }
        @inline(__always) func energyBelow(_ key: Int) -> Double { cumEnergy[min(max(key - lo, 0), count.count)] }
    }

    struct Chunk { let tensor: Int; let start: Int; let count: Int }

    /// At most about this many chunks: each keeps its histogram between the passes (tens of KB), so a model
    /// beyond 8.6G weights gets larger chunks (multiples of `chunkElements`) instead of more of them.
    nonisolated(unsafe) static var maxChunks = 8192

    static func chunks(_ counts: [Int]) -> [Chunk] {
        let total = counts.reduce(0, +)
        let size = max(chunkElements, (total / maxChunks + chunkElements - 1) / chunkElements * chunkElements)
        var out: [Chunk] = []
        for (t, n) in counts.enumerated() {
            var s = 0
            repeat { let c = min(size, n - s); out.append(Chunk(tensor: t, start: s, count: c)); s += c } while s < n
        }
        return out
    }

    /// Runs `body` for every index on all cores; the first error any call throws is rethrown.
    static func parallel(_ n: Int, _ body: (Int) throws -> Void) throws {
        let failure = UnsafeSendableBox<Error?>([nil])
        DispatchQueue.concurrentPerform(iterations: n) { i in
            if failure.get(0) != nil { return }
            do { try body(i) } catch { failure.set(0, error) }
        }
        if let e = failure.array[0] { throw e }
    }

    /// Pass 1 over the weights: per-chunk histograms (kept for the boundary counts), merged per tensor by `hists`.
    struct Tables {
        let chunks: [Chunk]
        let chunksOf: [[Int]]                  // chunk indices of each tensor, in order
        let tab: [MagnitudeKernel.Histogram]
        init(_ src: TensorSource) throws {
            let chunks = Sparsity.chunks(src.counts)
            var of = [[Int]](repeating: [], count: src.counts.count)
            for (ci, c) in chunks.enumerated() { of[c.tensor].append(ci) }
            chunksOf = of
            let box = UnsafeSendableBox([MagnitudeKernel.Histogram?](repeating: nil, count: chunks.count))
            try parallel(chunks.count) { ci in
                let c = chunks[ci]
                box.set(ci, try src.withChunk(c.tensor, start: c.start, count: c.count) { MagnitudeKernel.histogram($0, c.count) })
            }
            self.chunks = chunks
            tab = box.array.map { $0! }
        }
        func count(_ ci: Int, _ key: Int) -> Int { tab[ci].count(key) }

        func hists() -> [Hist] {
            let box = UnsafeSendableBox([Hist?](repeating: nil, count: chunksOf.count))
            DispatchQueue.concurrentPerform(iterations: chunksOf.count) { t in
                let full = chunksOf[t].filter { tab[$0].hi >= tab[$0].lo }
                let l = full.map { tab[$0].lo }.min() ?? 0, h = full.map { tab[$0].hi }.max() ?? -1
                var cnt = [Int](repeating: 0, count: h - l + 1), sq = [Double](repeating: 0, count: h - l + 1)
                for ci in full {
                    let t = tab[ci]
                    t.pairs.withUnsafeBufferPointer { p in
                        for k in t.lo...t.hi { cnt[k - l] += Int(p[2 * (k - t.lo)]); sq[k - l] += p[2 * (k - t.lo) + 1] }
                    }
                }
                box.set(t, Hist(lo: l, count: cnt, sumsq: sq))
            }
            return box.array.map { $0! }
        }
    }

    /// Per-tensor histograms of |w| (pass 1 alone; the benchmark times it).
    public static func histograms(_ values: [[Float]]) throws -> [Hist] { try Tables(ArraySource(values)).hists() }

    /// A cut plus what it takes out of the boundary bin, per tensor: (count, Σw²).
    struct CutResult { var cut: PruneCut; var boundary: [Int: (count: Int, energy: Double)] }

    /// Exact cuts. `groups` lists tensor indices pruned together: one group of every tensor for global scope,
    /// one group per tensor for layer scope. Returns, per group, one result per sparsity.
    ///
    /// Pass 1 (histograms) gives, for each sparsity, the bin holding the k-th smallest |w| of the group; pass 2
    /// collects just those bins' elements, and a radix selection on the low 16 bits inside each bin gives the
    /// exact value. Ties at the threshold go in scan order (group order, then index).
    /// How many of n weights sparsity s prunes: ⌊s·n⌋ for s as the decimal it is written as (DecimalFraction): 0.29
    /// of 100 is 29, although 0.29·100 is 28.999999999999996 in binary, and 0.999999 of 1,000,001 is 999,999.
    public static func count(_ s: Double, of n: Int) -> Int { min(n, max(0, DecimalFraction.times(s, n, .down))) }

    /// `counts`, when given, are exact numbers to prune per sparsity slot (one group only), instead of fractions.
    static func cutResults(_ src: TensorSource, tables: Tables, hists: [Hist], groups: [[Int]], sparsities: [Double],
                           counts: [Int]? = nil) throws -> [[CutResult]] {
        let chunks = tables.chunks, chunksOf = tables.chunksOf
        // Boundary bins per group, and each chunk's slot map.
        struct Want { var k: Int; var bin: Int; var below: Int }
        var wants = [[Want]](), slotBins = [[Int]](), slotKeys = [[UInt32]]()
        var groupOf = [Int](repeating: -1, count: src.counts.count)
        var slotOf = [[Int16]]()
        for (g, members) in groups.enumerated() {
            for t in members { groupOf[t] = g }
            let lo = members.map { hists[$0].lo }.min() ?? 0
            let hi = members.map { hists[$0].lo + hists[$0].count.count }.max() ?? 0
            var cum = [Int](repeating: 0, count: max(0, hi - lo) + 1)     // cum[b - lo] = Σ count below bin b
            for t in members { let h = hists[t]; for i in 0..<h.count.count { cum[h.lo + i - lo + 1] += h.count[i] } }
            for i in cum.indices.dropFirst() { cum[i] += cum[i - 1] }
            let total = cum.last ?? 0
            let finite = cum[min(max(MagnitudeKernel.nonFiniteKey - lo, 0), cum.count - 1)]   // Inf/NaN are never pruned
            var ws: [Want] = [], bset = Set<Int>()
            for (si, s) in sparsities.enumerated() {
                let k = min(finite, max(0, counts?[si] ?? count(s, of: total)))
                if k == 0 { ws.append(Want(k: 0, bin: -1, below: 0)); continue }
                var a = lo, b = hi - 1                       // smallest bin whose cumulative count reaches k
                while a < b { let mid = (a + b) / 2; if cum[mid + 1 - lo] >= k { b = mid } else { a = mid + 1 } }
                ws.append(Want(k: k, bin: a, below: cum[a - lo])); bset.insert(a)
            }
            let sb = bset.sorted()
            var so = [Int16](repeating: -1, count: MagnitudeKernel.bins)
            for (i, b) in sb.enumerated() { so[b] = Int16(i) }
            wants.append(ws); slotBins.append(sb); slotKeys.append(sb.map { UInt32($0) }); slotOf.append(so)
        }
        // Groups whose bins each hold one value (BF16 and narrower data) need no pass 2: the cut is the r-th
        // member of the boundary bin in scan order, found from the per-chunk counts and one chunk's scan.
        let exact = groups.map { $0.allSatisfy { src.exactBins($0) } }
        // Pass 2: per chunk, its elements in its group's boundary bins (|x| bits and index), split by bin.
        let lists = UnsafeSendableBox([MagnitudeKernel.Members](repeating: .empty, count: chunks.count))
        try parallel(chunks.count) { ci in
            let c = chunks[ci], g = groupOf[c.tensor]
            guard g >= 0, !exact[g], !slotBins[g].isEmpty else { return }
            let counts = slotBins[g].map { tables.count(ci, $0) }
            guard counts.contains(where: { $0 > 0 }) else { return }
            let m = try src.withChunk(c.tensor, start: c.start, count: c.count) { p in
                slotOf[g].withUnsafeBufferPointer { MagnitudeKernel.collect(p, c.count, slotOf: $0.baseAddress!, keys: slotKeys[g], counts: counts) }
            }
            guard let m else { throw SparsityError("\(src.label(c.tensor)) changed between the two passes (rewritten while it was read)") }
            lists.set(ci, m)
        }
        let L = lists.array
        // Selection inside each boundary bin, per (group, sparsity), in parallel.
        let jobs = groups.indices.flatMap { g in sparsities.indices.map { (g, $0) } }
        let out = UnsafeSendableBox([CutResult?](repeating: nil, count: jobs.count))
        try parallel(jobs.count) { j in
            let (g, si) = jobs[j]
            let w = wants[g][si]
            if w.k == 0 { out.set(j, CutResult(cut: PruneCut(key: -1, value: 0, tensor: -1, index: -1, none: true), boundary: [:])); return }
            if exact[g] { out.set(j, try exactCut(src, tables: tables, group: groups[g], bin: w.bin, take: w.k - w.below)); return }
            let slot = Int(slotOf[g][w.bin]), r = w.k - w.below          // take r (≥ 1) from the boundary bin
            var vals: [UInt32] = []                                       // the bin's |x| bits in scan order
            for t in groups[g] { for ci in chunksOf[t] where L[ci].offsets.count > slot + 1 {
                vals += L[ci].bits[L[ci].offsets[slot]..<L[ci].offsets[slot + 1]]
            } }
            let tb = MagnitudeKernel.select(vals, r - 1)
            var less = 0
            for v in vals where v < tb { less += 1 }
            var needEqual = r - less
            var taken: [Int: (count: Int, energy: Double)] = [:]
            var last = (tensor: -1, index: -1)
            for t in groups[g] {
                var c = 0, e = 0.0
                for ci in chunksOf[t] where L[ci].offsets.count > slot + 1 {
                    let m = L[ci]
                    for p in m.offsets[slot]..<m.offsets[slot + 1] {
                        let v = m.bits[p]
                        var take = v < tb
                        if v == tb && needEqual > 0 { take = true; needEqual -= 1; last = (t, chunks[ci].start + Int(m.index[p])) }
                        if take { let f = Double(Float(bitPattern: v)); c += 1; e += f * f }
                    }
                }
                if c > 0 { taken[t] = (c, e) }
            }
            out.set(j, CutResult(cut: PruneCut(key: w.bin, value: Float(bitPattern: tb), tensor: last.tensor, index: last.index, none: false),
                                 boundary: taken))
        }
        let flat = out.array.map { $0! }
        return groups.indices.map { g in Array(flat[(g * sparsities.count)..<((g + 1) * sparsities.count)]) }
    }

    /// The cut that takes the first `r` (≥ 1) members, in scan order, of a bin whose members all have the bin's
    /// one value: the tensors before the r-th member give all of theirs, and one chunk is scanned for its index.
    static func exactCut(_ src: TensorSource, tables: Tables, group: [Int], bin: Int, take r: Int) throws -> CutResult {
        let value = Float(bitPattern: UInt32(bin) << 16), sq = Double(value) * Double(value)
        var need = r
        var taken: [Int: (count: Int, energy: Double)] = [:]
        for t in group {
            let inT = tables.chunksOf[t].reduce(0) { $0 + tables.count($1, bin) }
            guard inT > 0 else { continue }
            if inT < need { taken[t] = (inT, Double(inT) * sq); need -= inT; continue }
            taken[t] = (need, Double(need) * sq)
            for ci in tables.chunksOf[t] {
                let c = tables.count(ci, bin)
                if c < need { need -= c; continue }
                let chunk = tables.chunks[ci], want = need
                let at = try src.withChunk(t, start: chunk.start, count: chunk.count) { p -> Int in
                    var seen = 0
                    for i in 0..<chunk.count where MagnitudeKernel.key(p[i]) == bin {
                        seen += 1
                        if seen == want { return i }
                    }
                    return -1
                }
                guard at >= 0 else { throw SparsityError("\(src.label(t)) changed between the two passes (rewritten while it was read)") }
                return CutResult(cut: PruneCut(key: bin, value: value, tensor: t, index: chunk.start + at, none: false), boundary: taken)
            }
        }
        throw SparsityError("\(group.count == 1 ? src.label(group[0]) : "a tensor of the model") changed between the two passes (rewritten while it was read)")
    }

    /// Global cuts over `values` taken together, one per sparsity.
    public static func cuts(_ values: [[Float]], sparsities: [Double]) throws -> [PruneCut] {
        try globalCuts(ArraySource(values), sparsities, counts: nil)
    }

    /// Global cuts that prune exactly `counts[i]` of the source's floats (the smallest magnitudes; NaN/±Inf never).
    public static func cuts(_ src: TensorSource, counts: [Int]) throws -> [PruneCut] {
        try globalCuts(src, counts.map { _ in 0 }, counts: counts)
    }

    static func globalCuts(_ src: TensorSource, _ sparsities: [Double], counts: [Int]?) throws -> [PruneCut] {
        let tables = try Tables(src)
        return try cutResults(src, tables: tables, hists: tables.hists(), groups: [Array(src.counts.indices)],
                              sparsities: sparsities, counts: counts)[0].map(\.cut)
    }

    /// The cut each tensor of `src` gets at one sparsity (global: one cut shared by all; layer: each its own).
    public static func cuts(_ src: TensorSource, scope: SparsityScope, sparsity: Double) throws -> [PruneCut] {
        let tables = try Tables(src)
        let n = src.counts.count
        let groups = scope == .global ? [Array(0..<n)] : (0..<n).map { [$0] }
        let rs = try cutResults(src, tables: tables, hists: tables.hists(), groups: groups, sparsities: [sparsity])
        return (0..<n).map { rs[scope == .global ? 0 : $0][0].cut }
    }

    /// Whether cut `c` prunes x, element `index` of tensor number `tensor` (NaN ranks above every magnitude: never).
    @inline(__always) static func pruned(_ x: Float, tensor: Int, index: Int, _ c: PruneCut) -> Bool {
        let (value, ties) = bounds(c, tensor: tensor)
        return prunedBit(x, index, value, ties) != 0
    }

    /// Applies a cut (or an N:M pattern) to a copy of the weights.
    public static func prune(_ w: WeightSet, tensors: [String], cut: [String: PruneCut]? = nil, pattern: SparsityPattern = .unstructured) -> WeightSet {
        var out = w
        for (ti, name) in tensors.enumerated() {
            guard var v = out.values[name] else { continue }
            switch pattern {
            case .unstructured:
                guard let c = cut?[name] else { continue }
                apply(c, to: &v, tensor: ti)
            case let .nm(n, m):
                guard let s = w.shapes[name], nmPrunable(s, m: m) else { continue }
                pruneNM(&v, shape: s, n: n, m: m)
            }
            out.values[name] = v
        }
        return out
    }

    /// A copy of the weights pruned as `spec` says (`tensors` in the order the spec's cuts are).
    public static func pruned(_ w: WeightSet, tensors: [String], _ spec: PruneSpec) -> WeightSet {
        switch spec {
        case .dense: return w
        case let .cuts(c): return prune(w, tensors: tensors, cut: Dictionary(uniqueKeysWithValues: zip(tensors, c)))
        case let .nm(n, m): return prune(w, tensors: tensors, pattern: .nm(n: n, m: m))
        }
    }

    /// Prunes tensor number `t` (of shape `shape`) as `spec` says.
    public static func apply(_ spec: PruneSpec, to v: inout [Float], tensor t: Int, shape: [Int]) {
        switch spec {
        case .dense: break
        case let .cuts(c): apply(c[t], to: &v, tensor: t)
        case let .nm(n, m): if nmPrunable(shape, m: m) { pruneNM(&v, shape: shape, n: n, m: m) }
        }
    }

    /// Zeroes the weights of tensor number `tensor` that cut `c` prunes.
    public static func apply(_ c: PruneCut, to v: inout [Float], tensor ti: Int) {
        let (value, ties) = bounds(c, tensor: ti)
        v.withUnsafeMutableBufferPointer { p in
            for i in p.indices { p[i] = prunedBit(p[i], i, value, ties) != 0 ? 0 : p[i] }
        }
    }

    /// `pruned` for a whole tensor at a time: x at index i is pruned iff `prunedBit(x, i, value, ties)` is 1.
    /// `ties` is the last index whose |x| == value is pruned (−1: none, Int.max: all).
    @inline(__always) public static func bounds(_ c: PruneCut, tensor t: Int) -> (value: Float, ties: Int) {
        if c.none { return (-.infinity, -1) }
        return (c.value, t < c.tensor ? Int.max : t == c.tensor ? c.index : -1)
    }
    /// 1 when pruned, else 0, computed without a branch (pruned weights lie anywhere: a predictor would miss half).
    @inline(__always) public static func prunedBit(_ x: Float, _ i: Int, _ value: Float, _ ties: Int) -> Int {
        let a = abs(x)                              // NaN compares false both ways: never pruned
        let below = a < value ? 1 : 0, equal = a == value ? 1 : 0, early = i <= ties ? 1 : 0
        return below | (equal & early)
    }

    /// N zeros in every group of M consecutive input channels (axis 1) at a fixed output row and kernel position,
    /// as NVIDIA's ASP lays out 2:4 for linear and convolution weights. The shape must be `nmPrunable`.
    public static func pruneNM(_ v: inout [Float], shape s: [Int], n: Int, m: Int) {
        var pruned: [Int] = []
        pruned.reserveCapacity(v.count / m * n)
        forEachNMPruned(v, shape: s, n: n, m: m) { pruned.append($0) }
        for i in pruned { v[i] = 0 }
    }

    /// Calls `body` with the index of every weight an N:M pattern prunes: in each group, the N smallest
    /// magnitudes (NaN ranked above ±Inf above every finite value), ties to the lower index.
    static func forEachNMPruned(_ v: [Float], shape s: [Int], n: Int, m: Int, _ body: (Int) -> Void) {
        let cin = s[1], inner = s.dropFirst(2).reduce(1, *)
        var idx = [Int](repeating: 0, count: m), mag = [UInt32](repeating: 0, count: m)
        v.withUnsafeBufferPointer { p in
            for o in 0..<s[0] {
                for r in 0..<inner {
                    var c = 0
                    while c < cin {
                        // insertion sort of the group by (magnitude, index): M is small (4 or 8)
                        for j in 0..<m {
                            let i = (o * cin + c + j) * inner + r, a = nmKey(p[i])
                            var k = j
                            while k > 0 && (mag[k - 1] > a || (mag[k - 1] == a && idx[k - 1] > i)) { mag[k] = mag[k - 1]; idx[k] = idx[k - 1]; k -= 1 }
                            mag[k] = a; idx[k] = i
                        }
                        for j in 0..<n { body(idx[j]) }
                        c += m
                    }
                }
            }
        }
    }

    /// An N:M ordering key: |x|'s bit pattern (monotone in |x|, −0 = +0), every NaN one key above +Inf.
    @inline(__always) static func nmKey(_ x: Float) -> UInt32 { x.isNaN ? 0x7F80_0001 : x.bitPattern & 0x7FFF_FFFF }

    /// Whether an N:M pattern can prune a tensor of this shape: its input axis (axis 1) is a multiple of M.
    static func nmPrunable(_ shape: [Int], m: Int) -> Bool { shape.count >= 2 && !shape.contains(0) && shape[1] % m == 0 }

    /// A copy of the weights pruned to `sparsity` (unstructured, global or per layer) or to an N:M pattern.
    public static func pruned(_ w: WeightSet, tensors: [String], scope: SparsityScope, pattern: SparsityPattern, sparsity: Double) throws -> WeightSet {
        if case .nm = pattern { return prune(w, tensors: tensors, pattern: pattern) }
        let c = try cuts(ArraySource(w, tensors: tensors), scope: scope, sparsity: sparsity)
        return prune(w, tensors: tensors, cut: Dictionary(uniqueKeysWithValues: zip(tensors, c)))
    }

    /// 0, 5%, …, 95% (each the Double nearest its decimal: i/20, not i·0.05) and 99%.
    public static func defaultGrid() -> [Double] { (0..<20).map { Double($0) / 20 } + [0.99] }

    /// The curve. `tensors` are the prunable tensors (by default every ≥2-D weight). With an evaluator every point
    /// is a pruned copy of `w` that the evaluator measures.
    public static func curve(_ w: WeightSet, tensors: [String], scope: SparsityScope, pattern: SparsityPattern,
                             grid: [Double] = defaultGrid(), tolerance: Double = 0.01, evaluator: Evaluator? = nil,
                             refine: Bool = true) throws -> SparsityCurve {
        let src = ArraySource(w, tensors: tensors)
        return try curve(src, scope: scope, pattern: pattern, grid: grid, tolerance: tolerance,
                         evaluate: evaluator.map { ev in { spec in try ev.evaluate(pruned(w, tensors: tensors, spec)) } },
                         evaluatorName: evaluator?.description, refine: refine)
    }

    /// The curve over tensors read from `src` as the passes need them: memory holds the histograms, the boundary
    /// bins' members and (for N:M) one tensor per core, not the model. `evaluate`, when given, measures the model
    /// a spec prunes (e.g. by writing it for an external command tensor by tensor); `evaluatorName` describes it.
    public static func curve(_ src: TensorSource, scope: SparsityScope, pattern: SparsityPattern, grid: [Double] = defaultGrid(),
                             tolerance: Double = 0.01, evaluate: ((PruneSpec) throws -> EvalResult)? = nil, evaluatorName: String? = nil,
                             refine: Bool = true) throws -> SparsityCurve {
        let tensors = src.names
        var warnings: [String] = []
        if case let .nm(_, m) = pattern {
            let skip = tensors.indices.filter { !nmPrunable(src.shapes[$0], m: m) }.map { tensors[$0] }
            if skip.count == tensors.count {
                throw SparsityError("\(pattern) needs an input axis (axis 1) that is a multiple of \(m); no tensor has one (\(skip.prefix(3).joined(separator: ", "))\(skip.count > 3 ? ", …" : ""))")
            }
            if !skip.isEmpty {
                warnings.append("\(pattern) leaves \(skip.count) tensors dense (input axis not a multiple of \(m)): \(skip.prefix(8).joined(separator: ", "))\(skip.count > 8 ? ", …" : "")")
            }
        }
        let tables = try Tables(src)
        let H = tables.hists()
        let totalEnergy = H.reduce(0) { $0 + $1.energy }
        let prunable = src.counts.reduce(0, +)
        // Nothing finite to prune (all NaN/±Inf, or empty tensors): every point would be the dense model.
        if prunable == H.reduce(0, { $0 + $1.nonFinite }) {
            throw SparsityError(prunable == 0 ? "the selected tensors hold no weights" : "every selected weight is NaN or ±Inf: nothing can be pruned")
        }

        func evalPoints(_ sparsities: [Double]) throws -> [SparsityPoint] {
            if case let .nm(nz, m) = pattern {
                // N:M has one sparsity: report it next to the dense model it is measured against.
                let dense = SparsityPoint(sparsity: 0, achieved: 0, relativeError: 0, retainedEnergy: 1,
                                          layers: tensors.map { .init(name: $0, sparsity: 0, relativeError: 0, retainedEnergy: 1) },
                                          eval: try evaluate?(.dense))
                return [dense, try nmPoint(src, n: nz, m: m, totalEnergy: totalEnergy, evaluate: evaluate)]
            }
            // per sparsity: the cut for each tensor and what it takes from each tensor's boundary bin
            var perTensor = [[PruneCut]](repeating: [], count: sparsities.count)
            var taken: [[Int: (count: Int, energy: Double)]] = Array(repeating: [:], count: sparsities.count)
            let groups = scope == .global ? [Array(tensors.indices)] : tensors.indices.map { [$0] }
            let rs = try cutResults(src, tables: tables, hists: H, groups: groups, sparsities: sparsities)
            for ti in tensors.indices {
                for (si, c) in rs[scope == .global ? 0 : ti].enumerated() {
                    perTensor[si].append(c.cut)
                    if let t = c.boundary[ti] { taken[si][ti] = t }
                }
            }
            return try sparsities.enumerated().map { si, s in
                try pointFromCuts(s, tensors: tensors, hists: H, cuts: perTensor[si], taken: taken[si], totalEnergy: totalEnergy,
                                  evaluate: evaluate.map { e in { try e(.cuts(perTensor[si])) } })
            }
        }

        // The dense model (0%) is always measured: it is what "within tolerance of dense" compares against.
        var points = try evalPoints(pattern == .unstructured ? Array(Set(grid + [0])).sorted() : [])
        // An evaluator that returns NaN on the dense model (NaN weights), or an infinite metric (every tolerance
        // around it is infinite: each point would be "within"), gives no metric to hold a curve against.
        if let e = points.first(where: { $0.sparsity == 0 })?.eval, !e.metric.isFinite || (e.loss?.isNaN ?? false) {
            let what = e.metric.isNaN || (e.loss?.isNaN ?? false) ? "NaN on the dense model (are there NaN weights?)" : "\(e.metric) on the dense model"
            throw SparsityError("the evaluator returns \(what): no essential sparsity can be measured against it")
        }
        var ess = essential(points, tolerance: tolerance)
        if refine, pattern == .unstructured, let knee = ess.knee, let i = points.firstIndex(where: { $0.sparsity == knee }) {
            var extra: [Double] = []
            if i > 0 { extra += [0.25, 0.5, 0.75].map { points[i - 1].sparsity + (knee - points[i - 1].sparsity) * $0 } }
            if i + 1 < points.count { extra += [0.25, 0.5, 0.75].map { knee + (points[i + 1].sparsity - knee) * $0 } }
            points += try evalPoints(extra)
            points.sort { $0.sparsity < $1.sparsity }
            ess = essential(points, tolerance: tolerance)
        }
        for (ti, n) in tensors.enumerated() where H[ti].nonFinite > 0 {
            if case let .nm(nz, m) = pattern {
                warnings.append("\(n): \(H[ti].nonFinite) NaN/±Inf weights, ranked above every finite magnitude (pruned only in a group of \(m) holding more than \(m - nz) of them)")
            } else {
                warnings.append("\(n): \(H[ti].nonFinite) NaN/±Inf weights, ranked above every finite magnitude (never pruned) and left out of the energy sums")
            }
        }
        return SparsityCurve(scope: scope, pattern: pattern.description, prunable: prunable, tensors: tensors, points: points,
                             essential: ess, evaluator: evaluatorName, warnings: warnings.isEmpty ? nil : warnings)
    }

    static func pointFromCuts(_ s: Double, tensors: [String], hists: [Hist], cuts: [PruneCut],
                              taken: [Int: (count: Int, energy: Double)], totalEnergy: Double, evaluate: (() throws -> EvalResult)?) throws -> SparsityPoint {
        var layers: [SparsityPoint.LayerPoint] = []
        var prunedCount = 0, prunedEnergy = 0.0
        for (ti, n) in tensors.enumerated() {
            let h = hists[ti], c = cuts[ti]
            var pc = 0, pe = 0.0
            if !c.none {
                pc += h.countBelow(c.key); pe += h.energyBelow(c.key)
                // Inside the boundary bin: exact, from the ordered boundary members.
                if let t = taken[ti] { pc += t.count; pe += t.energy }
            }
            prunedCount += pc; prunedEnergy += pe
            let f = prunedFraction(pe, of: h.energy)
            layers.append(.init(name: n, sparsity: h.n > 0 ? Double(pc) / Double(h.n) : 0, relativeError: f.squareRoot(), retainedEnergy: 1 - f))
        }
        let total = hists.reduce(0) { $0 + $1.n }
        let e = try evaluate?()
        let f = prunedFraction(prunedEnergy, of: totalEnergy)
        return SparsityPoint(sparsity: s, achieved: total > 0 ? Double(prunedCount) / Double(total) : 0,
                             relativeError: f.squareRoot(), retainedEnergy: 1 - f, layers: layers, eval: e)
    }

    /// Share of the energy pruned, kept in [0, 1]: the boundary members' exact w² and the kernel's w² rounded to
    /// 2⁻²⁶ may disagree in the last bits when everything is pruned.
    static func prunedFraction(_ pruned: Double, of total: Double) -> Double { total > 0 ? min(1, max(0, pruned / total)) : 0 }

    /// The N:M point, one tensor per core at a time. Achieved sparsity as for unstructured pruning: the share of
    /// weights the pattern selects (N of every M in the tensors that take it), not the zeros the model may already
    /// hold. Errors and energies leave NaN/±Inf weights out, as the histogram path does.
    static func nmPoint(_ src: TensorSource, n nz: Int, m: Int, totalEnergy: Double,
                        evaluate: ((PruneSpec) throws -> EvalResult)?) throws -> SparsityPoint {
        let tensors = src.names
        let box = UnsafeSendableBox([(layer: SparsityPoint.LayerPoint, selected: Int, pe: Double)?](repeating: nil, count: tensors.count))
        try parallel(tensors.count) { t in
            let shape = src.shapes[t], count = src.counts[t]
            guard nmPrunable(shape, m: m) else {
                box.set(t, (.init(name: tensors[t], sparsity: 0, relativeError: 0, retainedEnergy: 1), 0, 0)); return
            }
            let a = try src.tensor(t)
            var le = 0.0, lt = 0.0
            forEachNMPruned(a, shape: shape, n: nz, m: m) { i in if a[i].isFinite { le += Double(a[i]) * Double(a[i]) } }
            for x in a where x.isFinite { lt += Double(x) * Double(x) }
            let sel = count / m * nz
            box.set(t, (.init(name: tensors[t], sparsity: Double(sel) / Double(max(1, count)), relativeError: lt > 0 ? (le / lt).squareRoot() : 0,
                              retainedEnergy: lt > 0 ? 1 - le / lt : 1), sel, le))
        }
        let rows = box.array.map { $0! }
        let n = src.counts.reduce(0, +), selected = rows.reduce(0) { $0 + $1.selected }, pe = rows.reduce(0) { $0 + $1.pe }
        let e = try evaluate?(.nm(n: nz, m: m))
        return SparsityPoint(sparsity: Double(nz) / Double(m), achieved: Double(selected) / Double(max(1, n)),
                             relativeError: totalEnergy > 0 ? (pe / totalEnergy).squareRoot() : 0,
                             retainedEnergy: totalEnergy > 0 ? 1 - pe / totalEnergy : 1, layers: rows.map(\.layer), eval: e)
    }

    /// Essential sparsity two ways: (1) the largest grid sparsity whose metric stays within `tolerance` (relative)
    /// of dense; (2) the Kneedle knee (Satopää et al., 2011) of the metric curve.
    public static func essential(_ points: [SparsityPoint], tolerance: Double) -> EssentialSparsity {
        let pts = points.sorted { $0.sparsity < $1.sparsity }
        let useEval = pts.first?.eval != nil
        let metricName = useEval ? (pts[0].eval!.metricName) : "retained_energy"
        let higher = useEval ? pts[0].eval!.higherIsBetter : true
        let ys = pts.map { useEval ? $0.eval!.metric : $0.retainedEnergy }
        let dense = ys.first ?? 0
        var within = 0.0
        for (p, y) in zip(pts, ys) {
            let ok = higher ? y >= dense - tolerance * abs(dense) : y <= dense + tolerance * abs(dense)
            if ok { within = p.sparsity } else { break }
        }
        let knee = Kneedle.knee(x: pts.map(\.sparsity), y: ys, decreasing: higher)
        return EssentialSparsity(metric: metricName, tolerance: tolerance, withinTolerance: within, knee: knee, denseMetric: dense)
    }
}

extension SparsityPattern {
    public var sparsityValue: Double { if case let .nm(n, m) = self { return Double(n) / Double(m) }; return 0 }
}

/// Kneedle: normalise x and y to [0, 1]; for a curve that stays high then falls (decreasing, concave) the knee
/// maximises y_n + x_n − 1 (distance above the chord); for one that stays low then rises (a loss), x_n − y_n.
public struct SparsityError: Error, CustomStringConvertible {
    public let description: String
    public init(_ s: String) { description = s }
}

public enum Kneedle {
    public static func knee(x: [Double], y: [Double], decreasing: Bool) -> Double? {
        guard x.count >= 3, let x0 = x.min(), let x1 = x.max(), let y0 = y.min(), let y1 = y.max(), x1 > x0, y1 > y0 else { return nil }
        var best = -Double.infinity, at: Double? = nil
        for (xi, yi) in zip(x, y) {
            let xn = (xi - x0) / (x1 - x0), yn = (yi - y0) / (y1 - y0)
            let d = decreasing ? yn + xn - 1 : xn - yn
            if d > best { best = d; at = xi }
        }
        return best > 0 ? at : nil
    }
}

/// An array filled in by concurrent workers, one index each.
public final class UnsafeSendableBox<T>: @unchecked Sendable {
    public private(set) var array: [T]
    let lock = NSLock()
    public init(_ a: [T]) { array = a }
    public func set(_ i: Int, _ v: T) { lock.lock(); array[i] = v; lock.unlock() }
    public func get(_ i: Int) -> T { lock.lock(); defer { lock.unlock() }; return array[i] }
}
