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

/// Marchenko–Pastur bulk fit of an ESD.
public struct MarchenkoPastur: Sendable {
    public var sigma: Double
    public var lambdaPlus: Double
    public var numSpikes: Int
    public var softrank: Double

    public static func fit(_ evals: [Double], rows: Int, cols: Int) -> MarchenkoPastur? {
        nil // filled in below once the WeightWatcher reference is pinned down
    }
}
