/// Streaming per-tensor statistics. Data is processed in L1-resident blocks of `blockElements` floats:
/// pass 1 gets the block's sum, min, max, zero count and a non-finite flag; pass 2 the block's squared
/// deviations from its own mean. Blocks merge in Double with Chan's parallel formula, so variance does not
/// cancel catastrophically (LayerNorm weights: mean ≫ spread) and precision does not degrade with size.
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

    public mutating func merge(_ o: TensorStats) {
        addMoments(n: o.finiteCount, mean: o.mean, m2: o.m2)
        count += o.count
        if o.min < min { min = o.min }
        if o.max > max { max = o.max }
        zeros += o.zeros; nans += o.nans; infs += o.infs
    }
}

public enum StatsKernel {
    public static let blockElements = 2048

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
        var s = V(repeating: 0)
        var mn = V(repeating: .infinity), mx = V(repeating: -.infinity)
        var z = SIMD16<Int32>(repeating: 0)
        let zero = V(repeating: 0)
        let vec = n / 16
        let raw = UnsafeRawPointer(p)
        for k in 0..<vec {
            let x = raw.loadUnaligned(fromByteOffset: k * 64, as: V.self)
            s += x
            mn.replace(with: x, where: x .< mn)
            mx.replace(with: x, where: x .> mx)
            z &+= SIMD16<Int32>(repeating: 0).replacing(with: 1, where: x .== zero)
        }
        // NaN and ±Inf never enter min/max but always poison the sum: a non-finite block sum sends the
        // block down the scalar path, which counts and excludes them.
        var fs = Double(s.sum())
        if !fs.isFinite || vec == 0 {
            scalar(p, n, &st)
            return
        }
        var fmn = mn.min(), fmx = mx.max()
        var fz = Int(z.wrappedSum())
        for k in (vec * 16)..<n {
            let x = p[k]
            if !x.isFinite { scalar(p, n, &st); return }
            fs += Double(x)
            if x < fmn { fmn = x }
            if x > fmx { fmx = x }
            if x == 0 { fz += 1 }
        }
        // Pass 2 over the L1-resident block: deviations from the block mean.
        let mb = Float(fs / Double(n))
        let mv = V(repeating: mb)
        var d1 = V(repeating: 0), d2 = V(repeating: 0)
        for k in 0..<vec {
            let d = raw.loadUnaligned(fromByteOffset: k * 64, as: V.self) - mv
            d1 += d
            d2 += d * d
        }
        var sd = Double(d1.sum()), sd2 = Double(d2.sum())
        for k in (vec * 16)..<n { let d = Double(p[k] - mb); sd += d; sd2 += d * d }
        let nd = Double(n)
        st.addMoments(n: n, mean: Double(mb) + sd / nd, m2: sd2 - sd * sd / nd)
        st.count += n
        if fmn < st.min { st.min = fmn }
        if fmx > st.max { st.max = fmx }
        st.zeros += fz
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

    /// BF16 statistics without a round trip through memory: each block is widened into an L1 buffer.
    public static func accumulateBF16(_ src: UnsafeRawPointer, _ n: Int, into stats: inout TensorStats) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: blockElements) { buf in
            let b = buf.baseAddress!
            var i = 0
            while i < n {
                let len = Swift.min(blockElements, n - i)
                Decode.bf16(src + i * 2, len, b)
                block(UnsafePointer(b), len, &stats)
                i += len
            }
        }
    }
}
