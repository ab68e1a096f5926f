import CWscan
#if canImport(Glibc)
import Glibc
#endif
/// Streaming per-tensor statistics. Data is processed in one pass over L1-resident blocks of `blockElements`
/// floats: sums of x − c and (x − c)² around c, the running mean (for the first block, the mean of its first
/// values), plus min, max and zero count. Blocks merge in Double with Chan's parallel formula, so variance does
/// not cancel catastrophically (LayerNorm weights: mean ≫ spread) and precision does not degrade with size.
/// NaN and ±Inf values are counted and excluded from every other statistic.
public struct TensorStats: Sendable, Equatable {
    public var count: Int = 0          // all elements, NaN/Inf included
    public var finiteCount: Int = 0
    public var mean: Double = .nan     // over finite values
    public var m2: Double = 0          // Σ (x − mean)² over finite values
    public var min: Float = .infinity
    public var max: Float = -.infinity
    public var zeros: Int = 0
    public var nans: Int = 0
    public var infs: Int = 0

    public init() {}

    public var sum: Double { finiteCount > 0 ? mean * Double(finiteCount) : 0 }
    public var sumSquares: Double { finiteCount > 0 ? m2 + Double(finiteCount) * mean * mean : 0 }
    /// Population standard deviation (numpy's default ddof=0).
    public var std: Double { finiteCount > 0 ? (Swift.max(0, m2) / Double(finiteCount)).squareRoot() : .nan }
    public var absMax: Float { finiteCount > 0 ? Swift.max(Swift.abs(min), Swift.abs(max)) : .nan }
    public var l2Norm: Double { sumSquares.squareRoot() }
    public var zeroFraction: Double { count > 0 ? Double(zeros) / Double(count) : 0 }

    /// Adds a group of `n` finite values with mean `mb` and squared deviations `m2b` (Chan et al.).
    @inlinable
    public mutating func addMoments(n: Int, mean mb: Double, m2 m2b: Double) {
        guard n > 0 else { return }
        if finiteCount == 0 { finiteCount = n; mean = mb; m2 = m2b; return }
        let na = Double(finiteCount), nb = Double(n), nt = na + nb
        let delta = mb - mean
        mean += delta * nb / nt
        m2 += m2b + delta * delta * na * nb / nt
        finiteCount += n
    }
}

public enum StatsKernel {
    public static let blockElements = 1024

    /// Accumulates statistics of `n` floats into `stats`.
    @inlinable
    public static func accumulate(_ p: UnsafePointer<Float>, _ n: Int, into stats: inout TensorStats) {
        var i = 0
        while i < n {
            let len = Swift.min(blockElements, n - i)
            block(p + i, len, &stats)
            i += len
        }
    }

    @inlinable
    static func block(_ p: UnsafePointer<Float>, _ n: Int, _ st: inout TensorStats) {
        typealias V = SIMD16<Float>
        let vec = n / 16
        if vec == 0 { scalar(p, n, &st); return }
        var shift: Float = st.finiteCount > 0 ? Float(st.mean) : firstMean(n) { p[$0] }
        if !shift.isFinite { shift = 0 }
        let kv = V(repeating: shift)
        var s1 = V(repeating: 0), s2 = V(repeating: 0)
        var mn = V(repeating: .infinity), mx = V(repeating: -.infinity)
        var z = SIMD16<Int32>(repeating: 0)
        let zero = V(repeating: 0)
        let raw = UnsafeRawPointer(p)
        for k in 0..<vec {
            let x = raw.loadUnaligned(fromByteOffset: k * 64, as: V.self)
            let d = x - kv
            s1 += d
            s2 += d * d
            mn.replace(with: x, where: x .< mn)
            mx.replace(with: x, where: x .> mx)
            z &+= SIMD16<Int32>(repeating: 0).replacing(with: 1, where: x .== zero)
        }
        var f1 = Double(s1.sum()), f2 = Double(s2.sum())
        if !f1.isFinite || !f2.isFinite { scalar(p, n, &st); return }
        var fmn = mn.min(), fmx = mx.max()
        var fz = Int(z.wrappedSum())
        for k in (vec * 16)..<n {
            let x = p[k]
            if !x.isFinite { scalar(p, n, &st); return }
            let d = Double(x - shift)
            f1 += d; f2 += d * d
            if x < fmn { fmn = x }
            if x > fmx { fmx = x }
            if x == 0 { fz += 1 }
        }
        if tiny(fmn, fmx) { tinyBlock(p, n, &st, min: fmn, max: fmx); return }
        commit(&st, n: n, shift: shift, s1: f1, s2: f2, min: fmn, max: fmx, zeros: fz)
    }

    /// A finite block whose largest |x| is below 2^-50: scaled by the power of two that brings it near 1 (exact,
    /// subnormals included), summed by the vector path, and the moments scaled back in Double.
    @usableFromInline
    static func tinyBlock(_ p: UnsafePointer<Float>, _ n: Int, _ st: inout TensorStats, min mn: Float, max mx: Float) {
        let a = Swift.max(-mn, mx)
        let e = -Int(a.exponent)            // up to 149 for subnormals: applied in two steps, each a finite power of 2
        let s1 = Float(sign: .plus, exponent: Swift.min(e, 100), significand: 1)
        let s2 = Float(sign: .plus, exponent: e - Swift.min(e, 100), significand: 1)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { buf in
            for i in 0..<n { buf[i] = (p[i] * s1) * s2 }
            var t = TensorStats()
            block(UnsafePointer(buf.baseAddress!), n, &t)
            let inv = Double(sign: .plus, exponent: -e, significand: 1)
            st.addMoments(n: t.finiteCount, mean: t.mean * inv, m2: t.m2 * inv * inv)
            st.count += t.count
            st.zeros += t.zeros
            if mn < st.min { st.min = mn }
            if mx > st.max { st.max = mx }
        }
    }

    /// A BF16 block of tiny values: widened, then `tinyBlock`.
    static func tinyBF16(_ base: UnsafeRawPointer, _ len: Int, _ st: inout TensorStats, min mn: Float, max mx: Float) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: len) { buf in
            Decode.bf16(base, len, buf.baseAddress!)
            tinyBlock(UnsafePointer(buf.baseAddress!), len, &st, min: mn, max: mx)
        }
    }

    /// A block whose values are all below 2^-50 in magnitude (but not all zero): their squares (< 2^-100) lose bits
    /// or underflow in Float (Adam's exp_avg_sq holds values near 1e-22, squares near 1e-44), so it goes through the
    /// Double path instead.
    @inlinable
    static func tiny(_ mn: Float, _ mx: Float) -> Bool {
        let a = Swift.max(-mn, mx)
        return a < 0x1p-50 && a > 0
    }

    /// Folds one block of n finite values into `st`: their sums of (x − shift) and (x − shift)², extremes, zeros.
    @inlinable
    static func commit(_ st: inout TensorStats, n: Int, shift: Float, s1: Double, s2: Double, min mn: Float, max mx: Float, zeros: Int) {
        let nd = Double(n)
        st.addMoments(n: n, mean: Double(shift) + s1 / nd, m2: Swift.max(0, s2 - s1 * s1 / nd))
        st.count += n
        if mn < st.min { st.min = mn }
        if mx > st.max { st.max = mx }
        st.zeros += zeros
    }

    /// BF16 element k (a BF16 value is the top half of a Float).
    @inline(__always)
    static func bf16(_ base: UnsafeRawPointer, _ k: Int) -> Float {
        Float(bitPattern: UInt32(base.loadUnaligned(fromByteOffset: k * 2, as: UInt16.self)) << 16)
    }

    /// A BF16 block with NaN/±Inf in it, through the exact scalar path.
    static func scalarBF16(_ base: UnsafeRawPointer, _ len: Int, _ st: inout TensorStats) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: len) { buf in
            Decode.bf16(base, len, buf.baseAddress!)
            scalar(buf.baseAddress!, len, &st)
        }
    }

    @usableFromInline
    static func scalar(_ p: UnsafePointer<Float>, _ n: Int, _ st: inout TensorStats) {
        // Welford in Double over the finite values of this block.
        var cnt = 0, mean = 0.0, m2 = 0.0
        for k in 0..<n {
            let x = p[k]
            st.count += 1
            if x.isNaN { st.nans += 1; continue }
            if x.isInfinite { st.infs += 1; continue }
            cnt += 1
            let xd = Double(x)
            let delta = xd - mean
            mean += delta / Double(cnt)
            m2 += delta * (xd - mean)
            if x < st.min { st.min = x }
            if x > st.max { st.max = x }
            if x == 0 { st.zeros += 1 }
        }
        st.addMoments(n: cnt, mean: mean, m2: m2)
    }

    /// BF16 statistics with the widening done in registers (a BF16 value is the top half of a Float). The loop is
    /// `block`'s, written out again because a shared generic version with a load closure runs 40% slower.
    public static func accumulateBF16(_ src: UnsafeRawPointer, _ n: Int, into st: inout TensorStats) {
        if hasAVX512 { accumulateBF16AVX512(src, n, into: &st) } else { accumulateBF16Portable(src, n, into: &st) }
    }

    /// The AVX2 (Swift) BF16 kernel, used where AVX-512 is missing.
    static func accumulateBF16Portable(_ src: UnsafeRawPointer, _ n: Int, into st: inout TensorStats) {
        typealias V = SIMD16<Float>
        var i = 0
        while i < n {
            let len = Swift.min(blockElements, n - i)
            let base = src + i * 2
            i += len
            let vec = len / 16
            @inline(__always) func at(_ k: Int) -> Float { bf16(base, k) }
            if vec == 0 { scalarBF16(base, len, &st); continue }
            var shift: Float = st.finiteCount > 0 ? Float(st.mean) : firstMean(len, at)
            if !shift.isFinite { shift = 0 }
            let kv = V(repeating: shift)
            var s1 = V(repeating: 0), s2 = V(repeating: 0)
            var mn = V(repeating: .infinity), mx = V(repeating: -.infinity)
            var z = SIMD16<Int32>(repeating: 0)
            let zero = V(repeating: 0)
            for k in 0..<vec {
                let v = base.loadUnaligned(fromByteOffset: k * 32, as: SIMD16<UInt16>.self)
                let x = unsafeBitCast(SIMD16<UInt32>(truncatingIfNeeded: v) &<< 16, to: V.self)
                let d = x - kv
                s1 += d
                s2 += d * d
                mn.replace(with: x, where: x .< mn)
                mx.replace(with: x, where: x .> mx)
                z &+= SIMD16<Int32>(repeating: 0).replacing(with: 1, where: x .== zero)
            }
            var f1 = Double(s1.sum()), f2 = Double(s2.sum())
            if !f1.isFinite || !f2.isFinite { scalarBF16(base, len, &st); continue }
            var fmn = mn.min(), fmx = mx.max()
            var fz = Int(z.wrappedSum())
            var bad = false
            for k in (vec * 16)..<len {
                let x = at(k)
                if !x.isFinite { bad = true; break }
                let d = Double(x - shift)
                f1 += d; f2 += d * d
                if x < fmn { fmn = x }
                if x > fmx { fmx = x }
                if x == 0 { fz += 1 }
            }
            if bad { scalarBF16(base, len, &st); continue }
            if tiny(fmn, fmx) { tinyBF16(base, len, &st, min: fmn, max: fmx); continue }
            commit(&st, n: len, shift: shift, s1: f1, s2: f2, min: fmn, max: fmx, zeros: fz)
        }
    }

    /// Shift for a tensor's first block: the mean of its first (up to 256) finite values, so that the block's
    /// sums of (x − shift)² stay small next to their variance.
    @inline(__always) @usableFromInline
    static func firstMean(_ n: Int, _ at: (Int) -> Float) -> Float {
        var s = 0.0, c = 0
        for k in 0..<Swift.min(n, 256) { let x = at(k); if x.isFinite { s += Double(x); c += 1 } }
        return c > 0 ? Float(s / Double(c)) : 0
    }

    public static let hasAVX512 = wscan_cpu_has_avx512() != 0 && getenv("WSCAN_NO_AVX512") == nil

    /// The same one-pass block statistics through the AVX-512 kernel in CWscan (chosen at run time).
    static func accumulateBF16AVX512(_ src: UnsafeRawPointer, _ n: Int, into st: inout TensorStats) {
        var i = 0
        var out = wscan_block_stats()
        while i < n {
            let len = Swift.min(blockElements, n - i)
            let base = src + i * 2
            i += len
            var shift: Float = st.finiteCount > 0 ? Float(st.mean) : firstMean(len) { bf16(base, $0) }
            if !shift.isFinite { shift = 0 }
            wscan_bf16_block_stats_avx512(base, len, shift, &out)
            if out.nonfinite != 0 { scalarBF16(base, len, &st); continue }
            if tiny(out.mn, out.mx) { tinyBF16(base, len, &st, min: out.mn, max: out.mx); continue }
            commit(&st, n: len, shift: shift, s1: out.s1, s2: out.s2, min: out.mn, max: out.mx, zeros: Int(out.zeros))
        }
    }
}
