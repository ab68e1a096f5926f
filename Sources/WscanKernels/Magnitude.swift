import CWscan
#if canImport(Glibc)
import Glibc
#endif

/// Streaming kernels behind exact magnitude-pruning thresholds (see WscanAnalysis/Sparsity.swift).
public enum MagnitudeKernel {
    /// Bins of the |x| key: the IEEE-754 pattern without the sign, top 15 bits (monotone in |x|).
    public static let bins = Int(WSCAN_MAG_BINS)
    @inline(__always) public static func key(_ x: Float) -> Int { Int((x.bitPattern & 0x7FFF_FFFF) >> 16) }
    /// Keys from here up hold ±Inf and NaN (exponent all ones).
    public static let nonFiniteKey = 0x7F80

    /// Per-key (count, Σx²) of |x| over the populated keys: `pairs[2·(key − lo)]` and `pairs[2·(key − lo) + 1]`.
    /// Counts are exact; each x² is rounded to 2⁻²⁶ relative in the kernel (a subnormal's to 2⁻²⁷⁸ absolute; Inf and NaN count 0).
    public struct Histogram: Sendable {
        public var lo: Int, hi: Int          // hi < lo when empty
        public var pairs: [Double]
        @inline(__always) public func count(_ key: Int) -> Int { key >= lo && key <= hi ? Int(pairs[2 * (key - lo)]) : 0 }
    }

    public static func histogram(_ x: UnsafePointer<Float>, _ n: Int) -> Histogram {
        guard n > 0 else { return Histogram(lo: 0, hi: -1, pairs: []) }
        var lo: UInt32 = 0, hi: UInt32 = 0
        // One pass on AVX-512 (range and table together); else the range first, then the table.
        let fused = wscan_mag_hist_fused(x, n, &lo, &hi)
        precondition(fused != -1, "out of memory")
        if fused == 0 {
            guard hi >= lo else { return Histogram(lo: 0, hi: -1, pairs: []) }
            var pairs = [Double](repeating: 0, count: 2 * Int(hi - lo + 1))
            pairs.withUnsafeMutableBufferPointer { wscan_mag_take($0.baseAddress!, lo, hi) }
            return Histogram(lo: Int(lo), hi: Int(hi), pairs: pairs)
        }
        wscan_mag_range(x, n, &lo, &hi)
        var pairs = [Double](repeating: 0, count: 2 * Int(hi - lo + 1))
        let rc = pairs.withUnsafeMutableBufferPointer { wscan_mag_hist(x, n, $0.baseAddress!, lo, hi) }
        precondition(rc == 0, "out of memory")
        return Histogram(lo: Int(lo), hi: Int(hi), pairs: pairs)
    }

    /// Elements of chosen bins, per slot in scan order: `bits[offsets[s]..<offsets[s + 1]]` are their |x| bit
    /// patterns (ordered like |x|) and `index[...]` their positions.
    public struct Members: Sendable {
        public var offsets: [Int]
        public var bits: [UInt32]
        public var index: [UInt32]
        public static let empty = Members(offsets: [0], bits: [], index: [])
    }

    /// Collects the elements whose key k has `slotOf[k] >= 0` (`keys` lists those keys); `counts[s]` is slot s's
    /// size from the histogram of the same elements. nil when the elements no longer give those counts (the data
    /// changed since the histogram was made: a file rewritten while it was read); nothing is written beyond them.
    public static func collect(_ x: UnsafePointer<Float>, _ n: Int, slotOf: UnsafePointer<Int16>, keys: [UInt32], counts: [Int]) -> Members? {
        var offsets = [0]
        for c in counts { offsets.append(offsets.last! + c) }
        let total = offsets.last!
        var bits = [UInt32](repeating: 0, count: total), index = [UInt32](repeating: 0, count: total)
        var pos = [Int](repeating: 0, count: counts.count)
        bits.withUnsafeMutableBufferPointer { b in index.withUnsafeMutableBufferPointer { ix in
            let vp = offsets.dropLast().map { Optional(b.baseAddress! + $0) }
            let ip = offsets.dropLast().map { Optional(ix.baseAddress! + $0) }
            wscan_mag_collect(x, n, slotOf, keys, keys.count, vp, ip, &pos, counts)
        } }
        guard pos == counts else { return nil }
        return Members(offsets: offsets, bits: bits, index: index)
    }

    /// One tensor under a magnitude cut (see `wscan_keep_stats`): x[i] is pruned iff |x[i]| < value, or |x[i]| ==
    /// value and i <= ties; NaN never.
    public struct KeepStats: Sendable {
        public var mass = 0.0, keptMass = 0.0
        public var nonFinite = 0, kept = 0
        public var minKept = Float.infinity
        public init() {}
    }

    /// Sums and counts of a tensor under a cut, and its keep mask (1 = kept) when `mask` is given.
    public static func keepStats(_ x: UnsafePointer<Float>, _ n: Int, value: Float, ties: Int, mask: UnsafeMutablePointer<UInt8>? = nil) -> KeepStats {
        var s = KeepStats()
        var nf: Int64 = 0, k: Int64 = 0
        wscan_keep_stats(x, n, value, Int64(ties), &s.mass, &s.keptMass, &nf, &k, &s.minKept, mask)
        s.nonFinite = Int(nf); s.kept = Int(k)
        return s
    }

    /// Tests: false forces `keepStats`' scalar loop.
    public static func keepUseAVX2(_ on: Bool) { wscan_keep_use_avx2(on ? 1 : 0) }

    /// Tests: false forces the scalar collection loop (the AVX-512 prefilter is the default where available).
    public static func useAVX512(_ on: Bool) { wscan_mag_use_avx512(on ? 1 : 0) }

    /// The r-th smallest (0-based) of non-empty values that share their top 16 bits (one histogram bin).
    public static func select(_ v: [UInt32], _ r: Int) -> UInt32 {
        precondition(r >= 0 && r < v.count)
        var scratch = [UInt32](repeating: 0, count: v.count)
        return v.withUnsafeBufferPointer { p in scratch.withUnsafeMutableBufferPointer { wscan_select_low16(p.baseAddress!, v.count, r, $0.baseAddress!) } }
    }
}
