/// Streaming per-tensor statistics. All accumulation of sums is done in Float SIMD lanes over blocks
/// of at most `blockElements` values and flushed into Double, so precision does not degrade with size.
/// NaN and ±Inf values are counted and excluded from every other statistic.
public struct TensorStats: Sendable, Equatable {
    public var count: Int = 0          // all elements, NaN/Inf included
    public var finiteCount: Int = 0
    public var sum: Double = 0
    public var sumSquares: Double = 0
    public var min: Float = .infinity
    public var max: Float = -.infinity
    public var zeros: Int = 0
    public var nans: Int = 0
    public var infs: Int = 0

    public init() {}

    public var mean: Double { finiteCount > 0 ? sum / Double(finiteCount) : .nan }
    /// Population standard deviation (numpy's default ddof=0).
    public var std: Double {
        guard finiteCount > 0 else { return .nan }
        let m = mean
        return (Swift.max(0, sumSquares / Double(finiteCount) - m * m)).squareRoot()
    }
    public var absMax: Float { finiteCount > 0 ? Swift.max(Swift.abs(min), Swift.abs(max)) : .nan }
    public var l2Norm: Double { sumSquares.squareRoot() }
    public var zeroFraction: Double { count > 0 ? Double(zeros) / Double(count) : 0 }

    public mutating func merge(_ o: TensorStats) {
        count += o.count; finiteCount += o.finiteCount; sum += o.sum; sumSquares += o.sumSquares
        if o.min < min { min = o.min }
        if o.max > max { max = o.max }
        zeros += o.zeros; nans += o.nans; infs += o.infs
    }
}

public enum StatsKernel {
    public static let blockElements = 4096

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
        var s = V(repeating: 0), s2 = V(repeating: 0)
        var mn = V(repeating: .infinity), mx = V(repeating: -.infinity)
        var z = SIMD16<Int32>(repeating: 0)
        var bad = SIMDMask<SIMD16<Int32>>(repeating: false)
        let zero = V(repeating: 0)
        let vec = n / 16
        let raw = UnsafeRawPointer(p)
        for k in 0..<vec {
            let x = raw.loadUnaligned(fromByteOffset: k * 64, as: V.self)
            s += x
            s2 += x * x
            mn.replace(with: x, where: x .< mn)
            mx.replace(with: x, where: x .> mx)
            z &+= SIMD16<Int32>(repeating: 0).replacing(with: 1, where: x .== zero)
            bad .|= .!((x - x) .== zero)
        }
        if any(bad) {
            // Rare path: this block holds NaN or Inf; redo it scalar so they are excluded.
            scalar(p, n, &st)
            return
        }
        var fs = Double(s.sum()), fs2 = Double(s2.sum())
        var fmn = mn.min(), fmx = mx.max()
        var fz = Int(z.wrappedSum())
        var finite = vec * 16
        for k in (vec * 16)..<n {
            let x = p[k]
            if !(abs(x) < .infinity) {
                if x.isNaN { st.nans += 1 } else { st.infs += 1 }
                continue
            }
            finite += 1
            fs += Double(x); fs2 += Double(x) * Double(x)
            if x < fmn { fmn = x }
            if x > fmx { fmx = x }
            if x == 0 { fz += 1 }
        }
        st.count += n; st.finiteCount += finite
        st.sum += fs; st.sumSquares += fs2
        if fmn < st.min { st.min = fmn }
        if fmx > st.max { st.max = fmx }
        st.zeros += fz
    }

    @usableFromInline
    static func scalar(_ p: UnsafePointer<Float>, _ n: Int, _ st: inout TensorStats) {
        var fs = 0.0, fs2 = 0.0
        for k in 0..<n {
            let x = p[k]
            st.count += 1
            if x.isNaN { st.nans += 1; continue }
            if x.isInfinite { st.infs += 1; continue }
            st.finiteCount += 1
            fs += Double(x); fs2 += Double(x) * Double(x)
            if x < st.min { st.min = x }
            if x > st.max { st.max = x }
            if x == 0 { st.zeros += 1 }
        }
        st.sum += fs; st.sumSquares += fs2
    }
}
