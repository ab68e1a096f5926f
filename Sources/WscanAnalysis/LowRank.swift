import Foundation

/// WeLore-style low-rank classification (Jaiswal et al., 2024): each matrix's singular values are normalised
/// to [0, 1] by min/max; ranks whose normalised value falls below a threshold are prunable. One global
/// threshold is chosen so that the prunable ranks over all matrices reach the requested overall reduction;
/// a matrix whose own reduction ratio (prunable ranks / min(m, n)) reaches `minRatio` is a low-rank component.
public struct WeLoreResult: Codable, Sendable {
    public var threshold: Double
    public var targetReduction: Double
    public var achievedReduction: Double
    public var minRatio: Double
    public var layers: [Layer]
    public struct Layer: Codable, Sendable {
        public var name: String
        public var rank: Int
        public var prunableRanks: Int
        public var reductionRatio: Double
        public var lowRank: Bool
        public var keptRank: Int { rank - prunableRanks }
    }
}

public enum WeLore {
    public static func normalized(_ sv: [Double]) -> [Double] {
        guard let mx = sv.max(), let mn = sv.min(), mx > mn else { return sv.map { _ in 1 } }
        return sv.map { ($0 - mn) / (mx - mn) }
    }

    public static func classify(_ spectra: [(name: String, sv: [Double])], targetReduction: Double = 0.5,
                                minRatio: Double = 0.5) -> WeLoreResult {
        let norms = spectra.map { normalized($0.sv) }
        let all = norms.flatMap { $0 }.sorted()
        let total = all.count
        var thr = 0.0
        if total > 0 {
            let k = min(total - 1, max(0, Int((targetReduction * Double(total)).rounded()) - 1))
            thr = targetReduction <= 0 ? -1 : (k + 1 < total ? (all[k] + all[k + 1]) / 2 : all[k] + 1e-12)
        }
        var pruned = 0
        var layers: [WeLoreResult.Layer] = []
        for (s, nv) in zip(spectra, norms) {
            let p = nv.filter { $0 < thr }.count
            pruned += p
            let r = nv.isEmpty ? 0 : Double(p) / Double(nv.count)
            layers.append(.init(name: s.name, rank: nv.count, prunableRanks: p, reductionRatio: r, lowRank: r >= minRatio))
        }
        return WeLoreResult(threshold: thr, targetReduction: targetReduction,
                            achievedReduction: total > 0 ? Double(pruned) / Double(total) : 0, minRatio: minRatio, layers: layers)
    }
}
