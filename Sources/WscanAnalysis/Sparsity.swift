import Foundation
import WscanKernels

/// One-shot magnitude pruning curves and essential sparsity (Jaiswal et al., "The Emergence of Essential
/// Sparsity in Large Pre-trained Models", 2023).
///
/// Thresholds come from selection, not sorting: one pass builds, per layer, a 32768-bin histogram of |w| keyed
/// by the top bits of the IEEE pattern (monotone in |w|) with counts and Σw²; for every grid point the bin
/// holding the k-th smallest magnitude follows from cumulative counts, and a second pass collects only the
/// elements of those boundary bins, which are ordered exactly. Ties at the threshold are broken by tensor
/// order, then element index, so exactly k weights are pruned.
public enum SparsityPattern: Equatable, Sendable, CustomStringConvertible {
    case unstructured
    case nm(n: Int, m: Int)     // N zeros in every group of M consecutive weights along the input (last) axis
    public var description: String { if case let .nm(n, m) = self { return "\(n):\(m)" }; return "unstructured" }
    public static func parse(_ s: String) -> SparsityPattern? {
        if s == "unstructured" { return .unstructured }
        let p = s.split(separator: ":").compactMap { Int($0) }
        if p.count == 2, p[0] > 0, p[1] > p[0] { return .nm(n: p[0], m: p[1]) }
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
}

/// The exact cut for one sparsity: prune |w| < value, and |w| == value up to (tensor, index) inclusive.
public struct PruneCut: Sendable {
    public var key: Int
    public var value: Float
    public var tensor: Int
    public var index: Int
    public var none: Bool      // k = 0
}

public enum Sparsity {
    static let bins = 1 << 15
    @inline(__always) static func key(_ x: Float) -> Int { Int((x.bitPattern & 0x7FFF_FFFF) >> 16) }

    public struct Hist {
        public var count: [Int]; public var sumsq: [Double]; public var n: Int; public var energy: Double
        /// Prefix sums: cumCount[b] = Σ count[0..<b] (and the same for Σw²), for O(1) "everything below bin b".
        var cumCount: [Int] = []; var cumEnergy: [Double] = []
        mutating func finish() {
            cumCount = [Int](repeating: 0, count: count.count + 1); cumEnergy = [Double](repeating: 0, count: count.count + 1)
            for b in 0..<count.count { cumCount[b + 1] = cumCount[b] + count[b]; cumEnergy[b + 1] = cumEnergy[b] + sumsq[b] }
        }
    }

    public static func histogram(_ v: [Float]) -> Hist {
        var c = [Int](repeating: 0, count: bins), s = [Double](repeating: 0, count: bins)
        var e = 0.0
        v.withUnsafeBufferPointer { p in
            c.withUnsafeMutableBufferPointer { cp in s.withUnsafeMutableBufferPointer { sp in
                for x in p {
                    let k = key(x)
                    cp[k] &+= 1
                    let d = Double(x) * Double(x)
                    sp[k] += d
                    e += d
                }
            } }
        }
        var h = Hist(count: c, sumsq: s, n: v.count, energy: e)
        h.finish()
        return h
    }

    /// A cut plus what it takes out of the boundary bin, per tensor: (count, Σw²).
    struct CutResult { var cut: PruneCut; var boundary: [Int: (count: Int, energy: Double)] }

    /// Cuts for each sparsity over `values` taken together (global) — call once per layer for layer scope.
    static func cuts(_ values: [[Float]], hists: [Hist], tensorIDs: [Int], sparsities: [Double]) -> [PruneCut] {
        cutResults(values, hists: hists, tensorIDs: tensorIDs, sparsities: sparsities).map(\.cut)
    }

    static func cutResults(_ values: [[Float]], hists: [Hist], tensorIDs: [Int], sparsities: [Double]) -> [CutResult] {
        let total = hists.reduce(0) { $0 + $1.n }
        var cum = [Int](repeating: 0, count: bins + 1)
        for h in hists { for b in 0...bins { cum[b] += h.cumCount[b] } }
        var want: [(k: Int, bin: Int)] = []
        var boundary = Set<Int>()
        for s in sparsities {
            let k = min(total, max(0, Int((s * Double(total)).rounded(.down))))
            if k == 0 { want.append((0, -1)); continue }
            var lo = 0, hi = bins - 1
            while lo < hi { let mid = (lo + hi) / 2; if cum[mid + 1] >= k { hi = mid } else { lo = mid + 1 } }
            want.append((k, lo)); boundary.insert(lo)
        }
        // Second pass (parallel over tensors): the boundary bins' elements, in scan order (tensor, then index).
        var isB = [Bool](repeating: false, count: bins)
        for b in boundary { isB[b] = true }
        let perTensor = UnsafeSendableBox([[(Float, Int32)]](repeating: [], count: values.count))
        if !boundary.isEmpty {
            DispatchQueue.concurrentPerform(iterations: values.count) { ti in
                var found: [(Float, Int32)] = []
                values[ti].withUnsafeBufferPointer { p in
                    isB.withUnsafeBufferPointer { ib in
                        for i in 0..<p.count { let x = p[i]; if ib[key(x)] { found.append((abs(x), Int32(i))) } }
                    }
                }
                perTensor.set(ti, found)
            }
        }
        // Per boundary bin: values and owners in scan order, which is the tie order.
        var binVals: [Int: [Float]] = [:], binOwner: [Int: [(tensor: Int, index: Int)]] = [:]
        for b in boundary { binVals[b] = []; binOwner[b] = [] }
        for (ti, list) in perTensor.array.enumerated() {
            for (v, i) in list { let b = key(v); binVals[b]!.append(v); binOwner[b]!.append((tensorIDs[ti], Int(i))) }
        }
        return want.map { w in
            if w.k == 0 { return CutResult(cut: PruneCut(key: -1, value: 0, tensor: -1, index: -1, none: true), boundary: [:]) }
            let r = w.k - cum[w.bin]          // how many to take inside the boundary bin (≥ 1)
            let vals = binVals[w.bin]!, owners = binOwner[w.bin]!
            // The r-th smallest value by selection (no sort), then ties taken in scan order.
            var scratch = vals
            let t = quickselect(&scratch, r - 1)
            var less = 0
            for v in vals where v < t { less += 1 }
            var needEqual = r - less
            var taken: [Int: (count: Int, energy: Double)] = [:]
            var last = (tensor: -1, index: -1)
            for (v, o) in zip(vals, owners) {
                var take = v < t
                if v == t && needEqual > 0 { take = true; needEqual -= 1; last = o }
                if take { let c = taken[o.tensor] ?? (0, 0); taken[o.tensor] = (c.count + 1, c.energy + Double(v) * Double(v)) }
            }
            return CutResult(cut: PruneCut(key: w.bin, value: t, tensor: last.tensor, index: last.index, none: false), boundary: taken)
        }
    }

    /// k-th smallest (0-based) by Hoare's selection with median-of-three pivots; reorders `a`.
    static func quickselect(_ a: inout [Float], _ k: Int) -> Float {
        var lo = 0, hi = a.count - 1
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if a[mid] < a[lo] { a.swapAt(mid, lo) }
            if a[hi] < a[lo] { a.swapAt(hi, lo) }
            if a[hi] < a[mid] { a.swapAt(hi, mid) }
            let pivot = a[mid]
            var i = lo, j = hi
            while i <= j {
                while a[i] < pivot { i += 1 }
                while a[j] > pivot { j -= 1 }
                if i <= j { a.swapAt(i, j); i += 1; j -= 1 }
            }
            if k <= j { hi = j } else if k >= i { lo = i } else { return a[k] }
        }
        return a[k]
    }

    @inline(__always) static func pruned(_ x: Float, tensor: Int, index: Int, _ c: PruneCut) -> Bool {
        if c.none { return false }
        let a = abs(x)
        if a < c.value { return true }
        if a > c.value { return false }
        return (tensor, index) <= (c.tensor, c.index)
    }

    /// Applies a cut (or an N:M pattern) to a copy of the weights.
    public static func prune(_ w: WeightSet, tensors: [String], cut: [String: PruneCut]? = nil, pattern: SparsityPattern = .unstructured) -> WeightSet {
        var out = w
        for (ti, name) in tensors.enumerated() {
            guard var v = out.values[name] else { continue }
            switch pattern {
            case .unstructured:
                guard let c = cut?[name] else { continue }
                for i in v.indices where pruned(v[i], tensor: ti, index: i, c) { v[i] = 0 }
            case let .nm(n, m):
                guard let last = w.shapes[name]?.last, last % m == 0 else { continue }
                var idx = [Int](repeating: 0, count: m)
                var g = 0
                while g + m <= v.count {
                    for j in 0..<m { idx[j] = g + j }
                    idx.sort { (abs(v[$0]), $0) < (abs(v[$1]), $1) }
                    for j in 0..<n { v[idx[j]] = 0 }
                    g += m
                }
            }
            out.values[name] = v
        }
        return out
    }

    /// A copy of the weights pruned to `sparsity` (unstructured, global or per layer) or to an N:M pattern.
    public static func pruned(_ w: WeightSet, tensors: [String], scope: SparsityScope, pattern: SparsityPattern, sparsity: Double) -> WeightSet {
        if case .nm = pattern { return prune(w, tensors: tensors, pattern: pattern) }
        let values = tensors.map { w.values[$0]! }
        var cut: [String: PruneCut] = [:]
        switch scope {
        case .global:
            let c = cuts(values, hists: values.map(histogram), tensorIDs: Array(values.indices), sparsities: [sparsity])[0]
            for n in tensors { cut[n] = c }
        case .layer:
            for (ti, n) in tensors.enumerated() {
                cut[n] = cuts([values[ti]], hists: [histogram(values[ti])], tensorIDs: [ti], sparsities: [sparsity])[0]
            }
        }
        return prune(w, tensors: tensors, cut: cut)
    }

    public static func defaultGrid() -> [Double] { (0..<20).map { Double($0) * 0.05 } + [0.99] }

    /// The curve. `tensors` are the prunable tensors (by default every ≥2-D weight).
    public static func curve(_ w: WeightSet, tensors: [String], scope: SparsityScope, pattern: SparsityPattern,
                             grid: [Double] = defaultGrid(), tolerance: Double = 0.01, evaluator: Evaluator? = nil,
                             refine: Bool = true) throws -> SparsityCurve {
        let values = tensors.map { w.values[$0]! }
        var hists = [Hist?](repeating: nil, count: values.count)
        let hp = UnsafeSendableBox(hists)
        DispatchQueue.concurrentPerform(iterations: values.count) { i in hp.set(i, histogram(values[i])) }
        hists = hp.array
        let H = hists.map { $0! }
        let totalEnergy = H.reduce(0) { $0 + $1.energy }
        let prunable = values.reduce(0) { $0 + $1.count }

        func evalPoints(_ sparsities: [Double]) throws -> [SparsityPoint] {
            if case .nm = pattern {
                // N:M has one sparsity: report it next to the dense model it is measured against.
                let pw = prune(w, tensors: tensors, pattern: pattern)
                return [try point(0, w: w, pw: w, tensors: tensors, totalEnergy: totalEnergy, evaluator: evaluator),
                        try point(pattern.sparsityValue, w: w, pw: pw, tensors: tensors, totalEnergy: totalEnergy, evaluator: evaluator)]
            }
            // per sparsity: the cut for each tensor and what it takes from each tensor's boundary bin
            var perTensor: [[String: PruneCut]] = Array(repeating: [:], count: sparsities.count)
            var taken: [[Int: (count: Int, energy: Double)]] = Array(repeating: [:], count: sparsities.count)
            switch scope {
            case .global:
                let cs = cutResults(values, hists: H, tensorIDs: Array(values.indices), sparsities: sparsities)
                for (si, c) in cs.enumerated() { for n in tensors { perTensor[si][n] = c.cut }; taken[si] = c.boundary }
            case .layer:
                for (ti, n) in tensors.enumerated() {
                    let cs = cutResults([values[ti]], hists: [H[ti]], tensorIDs: [ti], sparsities: sparsities)
                    for (si, c) in cs.enumerated() { perTensor[si][n] = c.cut; if let t = c.boundary[ti] { taken[si][ti] = t } }
                }
            }
            return try sparsities.enumerated().map { si, s in
                try pointFromCuts(s, w: w, tensors: tensors, hists: H, cuts: perTensor[si], taken: taken[si], totalEnergy: totalEnergy, evaluator: evaluator)
            }
        }

        var points = try evalPoints(pattern == .unstructured ? grid.sorted() : [])
        var ess = essential(points, tolerance: tolerance, evaluator: evaluator)
        if refine, pattern == .unstructured, let knee = ess.knee, let i = points.firstIndex(where: { $0.sparsity == knee }) {
            var extra: [Double] = []
            if i > 0 { extra += [0.25, 0.5, 0.75].map { points[i - 1].sparsity + (knee - points[i - 1].sparsity) * $0 } }
            if i + 1 < points.count { extra += [0.25, 0.5, 0.75].map { knee + (points[i + 1].sparsity - knee) * $0 } }
            points += try evalPoints(extra)
            points.sort { $0.sparsity < $1.sparsity }
            ess = essential(points, tolerance: tolerance, evaluator: evaluator)
        }
        return SparsityCurve(scope: scope, pattern: pattern.description, prunable: prunable, tensors: tensors, points: points,
                             essential: ess, evaluator: evaluator?.description)
    }

    static func pointFromCuts(_ s: Double, w: WeightSet, tensors: [String], hists: [Hist], cuts: [String: PruneCut],
                              taken: [Int: (count: Int, energy: Double)], totalEnergy: Double, evaluator: Evaluator?) throws -> SparsityPoint {
        var layers: [SparsityPoint.LayerPoint] = []
        var prunedCount = 0, prunedEnergy = 0.0
        for (ti, n) in tensors.enumerated() {
            let h = hists[ti], c = cuts[n]!
            var pc = 0, pe = 0.0
            if !c.none {
                pc += h.cumCount[c.key]; pe += h.cumEnergy[c.key]
                // Inside the boundary bin: exact, from the ordered boundary members.
                if let t = taken[ti] { pc += t.count; pe += t.energy }
            }
            prunedCount += pc; prunedEnergy += pe
            layers.append(.init(name: n, sparsity: h.n > 0 ? Double(pc) / Double(h.n) : 0,
                                relativeError: h.energy > 0 ? (pe / h.energy).squareRoot() : 0,
                                retainedEnergy: h.energy > 0 ? 1 - pe / h.energy : 1))
        }
        let total = hists.reduce(0) { $0 + $1.n }
        var e: EvalResult? = nil
        if let evaluator { e = try evaluator.evaluate(prune(w, tensors: tensors, cut: cuts)) }
        return SparsityPoint(sparsity: s, achieved: total > 0 ? Double(prunedCount) / Double(total) : 0,
                             relativeError: totalEnergy > 0 ? (prunedEnergy / totalEnergy).squareRoot() : 0,
                             retainedEnergy: totalEnergy > 0 ? 1 - prunedEnergy / totalEnergy : 1, layers: layers, eval: e)
    }

    static func point(_ s: Double, w: WeightSet, pw: WeightSet, tensors: [String], totalEnergy: Double, evaluator: Evaluator?) throws -> SparsityPoint {
        var layers: [SparsityPoint.LayerPoint] = []
        var zeros = 0, n = 0, pe = 0.0
        for t in tensors {
            let a = w.values[t]!, b = pw.values[t]!
            var le = 0.0, lt = 0.0, lz = 0
            for i in a.indices {
                let d = Double(a[i]) - Double(b[i]); le += d * d; lt += Double(a[i]) * Double(a[i])
                if b[i] == 0 { lz += 1 }
            }
            zeros += lz; n += a.count; pe += le
            layers.append(.init(name: t, sparsity: Double(lz) / Double(max(1, a.count)), relativeError: lt > 0 ? (le / lt).squareRoot() : 0,
                                retainedEnergy: lt > 0 ? 1 - le / lt : 1))
        }
        let e = try evaluator?.evaluate(pw)
        return SparsityPoint(sparsity: s, achieved: Double(zeros) / Double(max(1, n)),
                             relativeError: totalEnergy > 0 ? (pe / totalEnergy).squareRoot() : 0,
                             retainedEnergy: totalEnergy > 0 ? 1 - pe / totalEnergy : 1, layers: layers, eval: e)
    }

    /// Essential sparsity two ways: (1) the largest grid sparsity whose metric stays within `tolerance` (relative)
    /// of dense; (2) the Kneedle knee (Satopää et al., 2011) of the metric curve.
    public static func essential(_ points: [SparsityPoint], tolerance: Double, evaluator: Evaluator?) -> EssentialSparsity {
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
    var sparsityValue: Double { if case let .nm(n, m) = self { return Double(n) / Double(m) }; return 0 }
}

/// Kneedle: normalise x and y to [0, 1]; for a curve that stays high then falls (decreasing, concave) the knee
/// maximises y_n + x_n − 1 (distance above the chord); for one that stays low then rises (a loss), x_n − y_n.
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
}
