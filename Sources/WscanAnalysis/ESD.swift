import Foundation

/// Distances between empirical spectral densities.
public enum ESDDistance {
    /// WeightWatcher's rand_distance: Jensen–Shannon distance (natural log) between the two eigenvalue
    /// vectors, each normalised to sum 1 as scipy.stats.entropy does, paired in descending order.
    public static func jensenShannon(_ a: [Double], _ b: [Double]) -> Double {
        let n = min(a.count, b.count)
        guard n > 0 else { return .nan }
        let p0 = Array(a.sorted(by: >).prefix(n)), q0 = Array(b.sorted(by: >).prefix(n))
        let sp = p0.reduce(0, +), sq = q0.reduce(0, +)
        guard sp > 0, sq > 0 else { return .nan }
        var kl1 = 0.0, kl2 = 0.0
        for i in 0..<n {
            let p = p0[i] / sp, q = q0[i] / sq, m = (p + q) / 2
            if p > 0 { kl1 += p * log(p / m) }
            if q > 0 { kl2 += q * log(q / m) }
        }
        return ((kl1 + kl2) / 2).squareRoot()
    }
}

/// Marchenko–Pastur bulk fit of an ESD, WeightWatcher's `mp_fit` procedure: rescale the eigenvalues to mean 1,
/// estimate the density with a linear-kernel KDE (bandwidth 0.1) on 1000 points, fit σ by a 195-point grid over
/// [0.05, 2)·σ₀ (σ₀ from λmax) minimising the squared residual to the MP density (the quarter-circle law on √λ when
/// Q = 1), polished by Nelder–Mead; spikes are eigenvalues above the bulk edge plus the Tracy–Widom margin.
public struct MarchenkoPastur: Codable, Sendable {
    public var sigma: Double          // fitted σ on the rescaled axis
    public var lambdaPlus: Double     // bulk edge in the original eigenvalue units
    public var numSpikes: Int
    public var softrank: Double       // bulk edge / λmax (rescaled axis; may exceed 1)
    public var q: Double

    public static func fit(_ evals: [Double], rows: Int, cols: Int) -> MarchenkoPastur? {
        let N = max(rows, cols), M = min(rows, cols)
        guard M > 0, evals.count >= 2 else { return nil }
        let Q = Double(N) / Double(M)
        let total = evals.reduce(0, +)
        guard total > 0 else { return nil }
        let scale2 = Double(evals.count) / total
        let x = evals.map { $0 * scale2 }
        let lmax = x.max()!
        let inv = 1 / Q.squareRoot()
        let s0 = (lmax / ((1 + inv) * (1 + inv))).squareRoot()
        let fitData = Q == 1 ? x.map { $0.squareRoot() } : x
        // KDE (sklearn's linear kernel, normalised): (1/(n·h)) Σ max(0, 1 − |t − xᵢ|/h)
        let bw = 0.1
        let top = fitData.max()! + 0.5
        var xde = [Double](repeating: 0, count: 1000), yde = [Double](repeating: 0, count: 1000)
        let sorted = fitData.sorted()
        for i in 0..<1000 {
            let t = top * Double(i) / 999
            xde[i] = t
            // only points within the bandwidth contribute
            var lo = 0, hi = sorted.count
            while lo < hi { let mid = (lo + hi) / 2; if sorted[mid] < t - bw { lo = mid + 1 } else { hi = mid } }
            var acc = 0.0
            var j = lo
            while j < sorted.count, sorted[j] <= t + bw { acc += max(0, 1 - abs(t - sorted[j]) / bw); j += 1 }
            yde[i] = acc / (Double(sorted.count) * bw)
        }
        var gx: [Double] = [], gy: [Double] = []
        for i in 0..<1000 where yde[i] > 0.01 { gx.append(xde[i]); gy.append(yde[i]) }
        guard !gy.isEmpty else { return nil }
        let peakX = gx[gy.firstIndex(of: gy.max()!)!]
        let maxX = gx.max()!
        func objective(_ sigma: Double) -> Double {
            var r = 0.0
            if Q == 1 {
                for (t, y) in zip(gx, gy) {
                    var v = (1 / (Double.pi * sigma * sigma)) * (4 - t * t).squareRoot()
                    if v.isNaN { v = 0 }
                    r += (v - y) * (v - y)
                }
                return r
            }
            let b = pow(sigma * (1 + inv), 2), a = pow(sigma * (1 - inv), 2)
            if b < peakX || b > maxX || a > peakX { return 1000 * 1000 * Double(gy.count) }
            let y = 1 / Q
            for (t, yy) in zip(gx, gy) {
                var v = (1 / (2 * Double.pi * sigma * sigma * t * y)) * ((b - t) * (t - a)).squareRoot()
                if v.isNaN { v = 0 } else if v == .infinity { v = .greatestFiniteMagnitude }
                r += (v - yy) * (v - yy)
            }
            return r
        }
        // scipy.optimize.brute over slice(0.05 s0, 2 s0, 0.01 s0), then fmin from the best grid point.
        var best = 0.05 * s0, bestF = Double.infinity
        var k = 0
        while true {
            let s = 0.05 * s0 + Double(k) * 0.01 * s0
            if s >= 2.0 * s0 - 1e-12 * s0 { break }
            let f = objective(s)
            if f < bestF { bestF = f; best = s }
            k += 1
        }
        let s1 = NelderMead1D.minimize(objective, from: best)
        let bulkMax = pow(s1 * (1 + inv), 2)
        let tw = inv * pow(bulkMax, 2.0 / 3.0) * pow(Double(M), -2.0 / 3.0)
        let spikes = x.filter { $0 > bulkMax + tw.squareRoot() }.count
        return MarchenkoPastur(sigma: s1, lambdaPlus: bulkMax / scale2, numSpikes: spikes, softrank: bulkMax / lmax, q: Q)
    }
}

/// scipy.optimize.fmin (Nelder–Mead) in one dimension with its defaults: initial step 5%, xtol = ftol = 1e-4.
enum NelderMead1D {
    static func minimize(_ f: (Double) -> Double, from x0: Double) -> Double {
        var s = [x0, x0 != 0 ? x0 * 1.05 : 0.00025]
        var fs = s.map(f)
        for _ in 0..<200 {
            if fs[1] < fs[0] { s.swapAt(0, 1); fs.swapAt(0, 1) }
            if abs(s[1] - s[0]) <= 1e-4 && abs(fs[1] - fs[0]) <= 1e-4 { break }
            let xr = 2 * s[0] - s[1]; let fr = f(xr)
            if fr < fs[0] {
                let xe = 3 * s[0] - 2 * s[1]; let fe = f(xe)
                if fe < fr { s[1] = xe; fs[1] = fe } else { s[1] = xr; fs[1] = fr }
            } else if fr < fs[1] {
                // reflected point worse than best but better than worst: outside contraction
                let xc = 1.5 * s[0] - 0.5 * s[1]; let fc = f(xc)
                if fc <= fr { s[1] = xc; fs[1] = fc } else { s[1] = s[0] + 0.5 * (s[1] - s[0]); fs[1] = f(s[1]) }
            } else {
                let xcc = 0.5 * (s[0] + s[1]); let fcc = f(xcc)
                if fcc < fs[1] { s[1] = xcc; fs[1] = fcc } else { s[1] = s[0] + 0.5 * (s[1] - s[0]); fs[1] = f(s[1]) }
            }
        }
        return fs[0] <= fs[1] ? s[0] : s[1]
    }
}
