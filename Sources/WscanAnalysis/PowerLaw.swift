import Foundation

/// Power-law fit of an eigenvalue tail by Clauset, Shalizi & Newman's method, as WeightWatcher 0.7.7's
/// default `WWFit` does it: eigenvalues > 1e-5, every eigenvalue but the largest a candidate xmin,
/// α = 1 + n / Σ ln(x/xmin) over the tail, KS distance D = max |F_fit − F_emp| with F_emp = k/n, and
/// the xmin with the smallest D kept (first on ties). Below 20 eigenvalues WeightWatcher switches to its
/// small-N variant (bias-corrected α, objective D − 0.868/√n, tails of at least 8), reproduced too.
/// Cost: sorting is O(n log n) and suffix sums make each α O(1). Each D is O(tail) in the worst case, but the
/// candidates are scanned with the best D so far as a bound: a candidate's scan stops as soon as one point
/// reaches it (a coarse pass over every 16th point first, so a poor candidate is usually dropped after
/// tail/16 points). The minimum and its first-on-ties choice are exactly those of the full O(n²) scan (a
/// test compares both on random and real spectra); the typical cost is a few tail/16 scans per candidate.
public struct PowerLawFit: Sendable {
    public var alpha: Double
    public var xmin: Double
    public var xmax: Double
    public var D: Double
    public var sigma: Double
    public var numTail: Int

    public static let evalsThreshold = 1e-5
    public static let smallN = 20
    public static let minEvals = 8

    public static func fit(_ evals: [Double], threshold: Double = evalsThreshold) -> PowerLawFit? {
        let data = evals.filter { $0 > threshold }.sorted()
        let N = data.count
        // Fewer than 8 eigenvalues (WeightWatcher skips matrices with a side under 8) give no meaningful tail.
        guard N >= minEvals else { return nil }
        let logs = data.map { log($0) }
        var suffix = [Double](repeating: 0, count: N + 1)
        for i in stride(from: N - 1, through: 0, by: -1) { suffix[i] = suffix[i + 1] + logs[i] }
        var alphas = [Double](repeating: 0, count: N - 1)
        var Ds = [Double](repeating: 1, count: N - 1)
        var best = 0
        var sigmas = [Double](repeating: 0, count: N - 1)
        var bound = Double.infinity        // the smallest D so far: a candidate reaching it cannot win (first on ties)
        if N < smallN {
            // WeightWatcher's small-N path: bias-corrected α on tails of ≥ 8; its J objective is computed but
            // WWFit.__init__ then selects by argmin D anyway — reproduced as it behaves, not as it reads.
            var anyJ = false
            for i in 0..<(N - 1) {
                let nInt = N - i
                if nInt < 8 { continue }
                let n = Double(nInt)
                let s = suffix[i] - n * logs[i]
                if s <= 1e-12 { continue }
                let a = 1 + (n - 1) / s
                alphas[i] = a
                if a <= 1 { continue }
                Ds[i] = ks(logs, from: i, alpha: a, bound: bound)
                if Ds[i] < bound { bound = Ds[i] }
                anyJ = true
            }
            for i in 0..<(N - 1) { sigmas[i] = (alphas[i] - 1) / Double(N - i).squareRoot() }
            if !anyJ {
                let n = Double(N)
                let s = suffix[0] - n * logs[0]
                if s <= 1e-12 { return nil }               // every eigenvalue equal: no power law (α missing)
                alphas[0] = 1 + (n - 1) / s
                Ds[0] = ks(logs, from: 0, alpha: alphas[0])
            }
        } else {
            for i in 0..<(N - 1) {
                let n = Double(N - i)
                let s = suffix[i] - n * logs[i]
                // A tail of equal eigenvalues (to rounding: two identical blocks, a repeated top value) has no
                // power law: α = 1 + n/s is ∞, or ~1e15 from rounding noise, and its D is then NaN or an accident of
                // that noise. Such tails are not candidates, as on the small-N path (WeightWatcher's large-N path fits
                // them, and which xmin wins then depends on the noise).
                if s <= 1e-12 { Ds[i] = .infinity; continue }
                let a = 1 + n / s
                alphas[i] = a
                if a > 1 { Ds[i] = ks(logs, from: i, alpha: a, bound: bound); if Ds[i] < bound { bound = Ds[i] } }
                sigmas[i] = (a - 1) / Double(N - i).squareRoot()
            }
            // Every tail degenerate (all eigenvalues equal: an identity, an orthogonal matrix): no power law, α missing.
            if !Ds.contains(where: { $0.isFinite }) { return nil }
        }
        for i in 1..<max(1, N - 1) where Ds[i] < Ds[best] { best = i }
        let a = alphas[best]
        return PowerLawFit(alpha: a, xmin: data[best], xmax: data[N - 1], D: Ds[best],
                           sigma: sigmas[best], numTail: evals.filter { $0 >= data[best] }.count)
    }

    /// max_k |1 − (x_k/xmin)^(1−α) − k/n| over the tail starting at `from` (logs ascending), or any value ≥ `bound`
    /// as soon as the maximum is known to reach it.
    @inline(__always)
    static func ks(_ logs: [Double], from i: Int, alpha a: Double, bound: Double = .infinity) -> Double {
        let n = logs.count - i
        let inv = 1 / Double(n)
        let l0 = logs[i]
        var d = 0.0
        logs.withUnsafeBufferPointer { p in
            @inline(__always) func at(_ k: Int) -> Double { abs(1 - exp((1 - a) * (p[i + k] - l0)) - Double(k) * inv) }
            if n > 64 {
                var k = 15
                while k < n { let v = at(k); if v > d { d = v; if d >= bound { return } }; k += 16 }
            }
            for k in 0..<n {
                let v = at(k)
                if v > d { d = v; if d >= bound { return } }
            }
        }
        return d
    }
}

/// WeightWatcher's matrix entropy: −Σ p ln p / ln(rank), p = σ²/Σσ² + 1e-10, rank = numerical rank with
/// tolerance σmax · max(m, n) · ε(float64).
public enum MatrixEntropy {
    public static let epsilon = 1e-10
    public static func entropy(_ sv: [Double], rows: Int, cols: Int, eps: Double = Double.ulpOfOne) -> Double {
        guard let smax = sv.max(), smax > 0 else { return -1 }
        let tol = smax * Double(max(rows, cols)) * eps
        let r = sv.filter { $0 > tol }.count
        // Normalised by ln r, the entropy is undefined for rank 1 (WeightWatcher divides by ln(1 + 1e-10) and
        // reports ~1e10·H); such matrices get -1, as all-zero ones do.
        guard r > 1 else { return -1 }
        let rank = Double(r) + epsilon
        let ev = sv.map { $0 * $0 }
        let total = ev.reduce(0, +)
        var h = 0.0
        for e in ev { let p = e / total + epsilon; h -= p * log(p) }
        return h / log(rank)
    }
}
