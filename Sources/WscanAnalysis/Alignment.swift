import Foundation
import WscanKernels

/// Git Re-Basin weight matching (Ainsworth et al., 2023): for each permutation group in random order, solve the
/// linear assignment that maximises Σ over its tensors ⟨W_A, P W̃_B⟩ (other groups' permutations applied),
/// until a full sweep improves nothing. Similarities by float32 GEMM; assignments by wscan's own solver in float64.
public struct AlignmentResult: Codable, Sendable {
    public var family: String
    public var perms: [String: [Int]]        // group → for each index of A, the index of B it matches
    public var sweeps: Int
    public var identity: Bool                // every permutation is the identity
    public var objectiveBefore: Double
    public var objectiveAfter: Double
    public var notes: [String]
}

public enum Alignment {
    /// Rows of the unit-major view of tensor `t` for a group: [size, block · rest].
    static func unitMatrix(_ v: [Float], shape: [Int], axis: Int, size: Int, block: Int) -> [Float] {
        let dim = shape.count > axis ? shape[axis] : 1
        let outer = shape[..<min(axis, shape.count)].reduce(1, *)
        let inner = shape.count > axis ? shape[(axis + 1)...].reduce(1, *) : 1
        let rowLen = block * inner * outer
        var out = [Float](repeating: 0, count: size * rowLen)
        // PermSpecInference.validated has checked this; checked again because release builds drop preconditions.
        guard dim == size * block, v.count == outer * dim * inner else { return out }
        for u in 0..<size {
            var c = u * rowLen
            for o in 0..<outer {
                for k in 0..<block {
                    let base = (o * dim + u * block + k) * inner
                    for j in 0..<inner { out[c] = v[base + j]; c += 1 }
                }
            }
        }
        return out
    }

    /// Similarity matrix C[i, j] = Σ_members ⟨A unit i, B unit j⟩ for one group, by float32 GEMM (a 1B model's MLP
    /// group is 3 × 5632² × 2048 multiply-adds; float halves their time), returned in Double for the assignment.
    static func cost(_ g: PermGroup, a: WeightSet, b: WeightSet) -> [Double] {
        var c = [Float](repeating: 0, count: g.size * g.size)
        guard g.size > 0 else { return [] }
        for m in g.members {
            guard let va = a.values[m.tensor], let vb = b.values[m.tensor], let s = a.shapes[m.tensor], b.shapes[m.tensor] == s else { continue }
            let ma = unitMatrix(va, shape: s, axis: m.axis, size: g.size, block: g.blockSize)
            let mb = unitMatrix(vb, shape: s, axis: m.axis, size: g.size, block: g.blockSize)
            let k = ma.count / g.size
            ma.withUnsafeBufferPointer { pa in mb.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                Linalg.gemm(pa.baseAddress!, pb.baseAddress!, pc.baseAddress!, m: g.size, n: g.size, k: k, transB: true, beta: 1)
            } } }
        }
        return c.map(Double.init)
    }

    /// Groups named in `fixed` keep the identity and are not solved (the caller knows their units are in place).
    public static func weightMatching(_ a: WeightSet, _ b: WeightSet, spec spec0: PermSpec, seed: UInt64 = 0, maxSweeps: Int = 100,
                                      fixed: Set<String> = []) throws -> AlignmentResult {
        let spec = PermSpecInference.validated(spec0, [a, b])
        var perms: [String: [Int]] = [:]
        for g in spec.groups { perms[g.name] = Array(0..<g.size) }
        var rng = SplitMix64(seed: seed)
        func objective() -> Double {
            let pb = Permuter.applyAll(b, spec: spec, perms: perms)
            var s = 0.0
            var seen = Set<String>()
            for g in spec.groups { for m in g.members where seen.insert(m.tensor).inserted {
                guard let x = a.values[m.tensor], let y = pb.values[m.tensor], x.count == y.count else { continue }
                for i in x.indices { s += Double(x[i]) * Double(y[i]) }
            } }
            return s
        }
        let before = objective()
        var sweeps = 0
        while sweeps < maxSweeps {
            sweeps += 1
            var improved = false
            var order = Array(spec.groups.indices)
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            for gi in order where !fixed.contains(spec.groups[gi].name) {
                let g = spec.groups[gi]
                let others = Permuter.applyAll(b, spec: spec, perms: perms, except: g.name)
                let c = cost(g, a: a, b: others)
                let (assign, total) = try LinearAssignment.solve(c, rows: g.size, cols: g.size, maximize: true)
                let cur = perms[g.name]!
                var old = 0.0
                for i in 0..<g.size { old += c[i * g.size + cur[i]] }
                // (similarities come from a float32 GEMM: a gain below its rounding is a tie, not an improvement)
                if total > old + 1e-6 * max(1, abs(old)) { perms[g.name] = assign; improved = true }
            }
            if !improved { break }
        }
        let after = objective()
        let kept = spec.groups.filter { fixed.contains($0.name) }.count
        return AlignmentResult(family: spec.family, perms: perms, sweeps: sweeps,
                               identity: perms.values.allSatisfy(Permuter.isIdentity),
                               objectiveBefore: before, objectiveAfter: after,
                               notes: spec.notes + (kept > 0 ? ["\(kept) feed-forward groups kept in place without an assignment: the independence test matched every unit to itself both ways"] : []))
    }
}

/// Independence test after Zhu et al. (ICML 2025), in its permutation-robust form: for every feed-forward
/// hidden layer, match B's units to A's twice — by cosine similarity of the incoming weights (rows of the
/// up-projection, after undoing the previous layer's matching) and of the outgoing weights (columns of the
/// down-projection, after undoing the next layer's) — each by a linear assignment. Derived models give the same
/// matching both ways (Spearman ρ ≈ 1); the one-sided Spearman p-values are combined with Fisher's method.
/// A hidden-unit permutation moves both matchings together, so it cannot hide a derived model.
public struct IndependenceTest: Codable, Sendable {
    public var layers: [Layer]
    public var pValue: Double
    public var statistic: Double      // Fisher's −2 Σ ln p
    public var dependent: Bool        // pValue < threshold and the matchings agree on most units
    public var threshold: Double
    public var medianSpearman: Double
    public struct Layer: Codable, Sendable {
        public var group: String
        public var units: Int
        public var spearman: Double
        public var pValue: Double
        public var meanCosine: Double  // of the incoming-weight matching (|cosine|)
        /// Units both matchings pair with opposite signs (their weights negated: the same function under tanh).
        public var flipped: Int? = nil
        /// Units the incoming matching pairs with another index (0: the units kept their places).
        public var moved: Int? = nil
    }

    public static let defaultThreshold = 1e-6
    /// Independently trained networks may learn similar features, so their two matchings can agree a little, and
    /// with many units that alone gives tiny p-values. Dependence therefore also needs the matchings to agree on
    /// most units: median ρ at least this.
    public static let minimumAgreement = 0.8

    /// The groups the test reads: MLP and feed-forward units with an incoming and an outgoing matrix.
    public static func eligible(_ spec: PermSpec) -> [PermGroup] {
        spec.groups.filter { ($0.kind == "mlp" || $0.kind == "ffn") && $0.inTensor != nil && $0.outTensor != nil && $0.blockSize == 1 }
    }

    /// Whether groups of these unit counts can reach `threshold` at all: every unit matched to itself both ways
    /// (ρ = 1 in each) gives Fisher's combination of the smallest p-values Spearman allows (1/n! each). One group of 8
    /// units cannot (1/8! = 2.5e-5): a test on it would call any pair independent.
    public static func canReject(units: [Int], threshold: Double = defaultThreshold) -> Bool {
        guard !units.isEmpty else { return false }
        // every group counts, as in `run` (a group of 2 units or fewer has p = 1 whatever its matchings)
        let x = -2 * units.reduce(0) { $0 + log(max(spearmanPValue(1, n: $1), 1e-300)) }
        return chiSquareSurvivalEven(x, dof: 2 * units.count) < threshold
    }

    public static func run(_ a: WeightSet, _ b: WeightSet, spec: PermSpec, threshold: Double = defaultThreshold) throws -> IndependenceTest? {
        let groups = eligible(spec)
        guard !groups.isEmpty else { return nil }
        // Pass 1: incoming matchings, in order, each after undoing the previous group's matching on its columns.
        var inPerm: [String: [Int]] = [:], inSign: [String: [Float]] = [:]
        var meanCos: [String: Double] = [:]
        var aligned = b
        for g in groups {
            let t = g.inTensor!
            guard let va = a.values[t], let vb = aligned.values[t], let s = a.shapes[t], s.count == 2 else { continue }
            let (p, sg, mc, informative) = try match(va, vb, rows: s[0], cols: s[1])
            if informative { inPerm[g.name] = p; inSign[g.name] = sg; meanCos[g.name] = mc }
            // undo this layer's permutation (and sign flips) on the tensors downstream (its out-tensor's columns)
            for m in g.members where m.tensor != t && m.axis == 1 {
                if let v = aligned.values[m.tensor], let sh = aligned.shapes[m.tensor] {
                    aligned.values[m.tensor] = flip(Permuter.apply(v, shape: sh, axis: 1, perm: p, block: 1), shape: sh, axis: 1, signs: sg)
                }
            }
        }
        // Pass 2: outgoing matchings on columns, backwards from the output, each with its rows (the next group's
        // units) aligned by the next group's outgoing matching. The two chains share no weights: the incoming one
        // reads the layers up to the group, the outgoing one the layers after it. (Aligning the rows by the next
        // group's incoming matching instead, itself found after undoing this group's incoming matching, tied the two
        // matchings together: independent Gaussian layers agreed at Spearman ρ ≈ 0.3–0.5.)
        var outPerm: [String: [Int]] = [:], outSign: [String: [Float]] = [:]
        var found: [String: Layer] = [:]
        for g in groups.reversed() {
            let t = g.outTensor!
            guard let va = a.values[t], var vb = b.values[t], let s = a.shapes[t], s.count == 2 else { continue }
            if let next = groups.first(where: { $0.inTensor == t }), let pn = outPerm[next.name], let sn = outSign[next.name] {
                vb = flip(Permuter.apply(vb, shape: s, axis: 0, perm: pn, block: 1), shape: s, axis: 0, signs: sn)
            }
            let ta = Comparator.transpose(va, rows: s[0], cols: s[1]), tb = Comparator.transpose(vb, rows: s[0], cols: s[1])
            let (pout, sout, _, informative) = try match(ta, tb, rows: s[1], cols: s[0])
            // Equal similarities everywhere (all-zero or all-NaN weights) match every unit to itself: no evidence.
            guard informative else { continue }
            outPerm[g.name] = pout; outSign[g.name] = sout
            guard let pin = inPerm[g.name], let sin = inSign[g.name] else { continue }
            let rho = spearman(pin, pout)
            // units matched with opposite signs both ways: sign-flipped copies (a symmetry of odd activations, tanh)
            let flipped = (0..<pin.count).filter { sin[$0] < 0 && pin[$0] == pout[$0] && sout[$0] < 0 }.count
            found[g.name] = Layer(group: g.name, units: pin.count, spearman: rho, pValue: spearmanPValue(rho, n: pin.count),
                                  meanCosine: meanCos[g.name] ?? 0, flipped: flipped > 0 ? flipped : nil,
                                  moved: pin.enumerated().filter { $0.offset != $0.element }.count)
        }
        let layers = groups.compactMap { found[$0.name] }
        // Layers too few or too narrow for any agreement to reach the threshold (one layer of 8 units: p ≥ 1/8!) make
        // no test: a "consistent with independent" from them would call a fine-tune independent.
        guard !layers.isEmpty, canReject(units: layers.map(\.units), threshold: threshold) else { return nil }
        let x = -2 * layers.reduce(0) { $0 + log(max($1.pValue, 1e-300)) }
        let p = chiSquareSurvivalEven(x, dof: 2 * layers.count)
        let rhos = layers.map(\.spearman).sorted()
        let median = rhos.count % 2 == 1 ? rhos[rhos.count / 2] : (rhos[rhos.count / 2 - 1] + rhos[rhos.count / 2]) / 2
        return IndependenceTest(layers: layers, pValue: p, statistic: x, dependent: p < threshold && median >= minimumAgreement,
                                threshold: threshold, medianSpearman: median)
    }

    /// Rows of B matched to rows of A by |cosine similarity| (maximised: a unit whose weights all changed sign is
    /// the same unit in a network with an odd activation such as tanh); returns perm (A row i ↔ B row perm[i]), the
    /// sign of each matched cosine, the mean matched |cosine|, and whether the similarities differ at all (a
    /// constant matrix makes any matching optimal).
    static func match(_ a: [Float], _ b: [Float], rows: Int, cols: Int) throws -> ([Int], [Float], Double, Bool) {
        // Unit rows (normalised in Double), their cosines by one float32 GEMM: a cosine needs no more precision to
        // rank units, and float halves the time and memory of the n×n matrix (5632² for a 1B model's MLP).
        func normed(_ v: [Float]) -> [Float] {
            var d = v
            for r in 0..<rows {
                var n = 0.0
                for c in 0..<cols { n += Double(d[r * cols + c]) * Double(d[r * cols + c]) }
                let inv = n > 0 ? 1 / n.squareRoot() : 0
                for c in 0..<cols { d[r * cols + c] = Float(Double(d[r * cols + c]) * inv) }
            }
            return d
        }
        let na = normed(a), nb = normed(b)
        var c = [Float](repeating: 0, count: rows * rows)
        na.withUnsafeBufferPointer { pa in nb.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
            Linalg.gemm(pa.baseAddress!, pb.baseAddress!, pc.baseAddress!, m: rows, n: rows, k: cols, transB: true)
        } } }
        var lo = Float.infinity, hi = -Float.infinity
        for v in c { lo = min(lo, v); hi = max(hi, v) }
        // (an all-zero layer gives exact zeros; equal unit rows give cosines equal up to float32 rounding)
        let informative = hi - lo > 1e-5
        func signs(_ p: [Int]) -> [Float] { (0..<rows).map { c[$0 * rows + p[$0]] < 0 ? -1 : 1 } }
        // (LinearAssignment takes the usual case, every row's best column its own, in O(n²))
        if rows > greedyAbove, let g = greedyMatch(c, n: rows) { return (g.perm, signs(g.perm), g.total / Double(rows), informative) }
        let (p, t) = try LinearAssignment.solve(c.map { Double(abs($0)) }, rows: rows, cols: rows, maximize: true)
        return (p, signs(p), t / Double(rows), informative)
    }

    /// Above this many units the matching is greedy rather than optimal: the O(n³) assignment took 6.5 s per
    /// matching of 5632 unrelated units (a 1B model's feed-forward layer; 44 of them per compare). The test stays
    /// valid, since its two matchings still read disjoint weights, and between related models every row's best
    /// column is its own, where greedy and optimal agree.
    static let greedyAbove = 2048

    /// Rows matched to columns by |similarity|, best pairs first: every row takes its best free column; a column
    /// wanted by several rows goes to the one that wants it most, and the others look again among the free columns.
    /// O(n²) per round, a few rounds. nil when a similarity is NaN.
    static func greedyMatch(_ c: [Float], n: Int) -> (perm: [Int], total: Double)? {
        if c.contains(where: \.isNaN) { return nil }
        var perm = [Int](repeating: -1, count: n), owner = [Int](repeating: -1, count: n)
        var open = Array(0..<n)
        while !open.isEmpty {
            // each open row's best free column
            var want = [Int](repeating: -1, count: open.count), val = [Float](repeating: -1, count: open.count)
            for (k, r) in open.enumerated() {
                var best: Float = -1, j = -1
                let row = r * n
                for col in 0..<n where owner[col] < 0 { let v = abs(c[row + col]); if v > best { best = v; j = col } }
                want[k] = j; val[k] = best
            }
            // each wanted column to its strongest claimant (lowest row on ties)
            var claim = [Int: Int]()
            for k in open.indices {
                let j = want[k]
                if let o = claim[j], val[o] > val[k] || (val[o] == val[k] && open[o] < open[k]) { continue }
                claim[j] = k
            }
            for (j, k) in claim { perm[open[k]] = j; owner[j] = open[k] }
            open = open.filter { perm[$0] < 0 }
        }
        var total = 0.0
        for r in 0..<n { total += Double(abs(c[r * n + perm[r]])) }
        return (perm, total)
    }

    /// Multiplies slice i along `axis` (0: rows, 1: columns of a 2-D tensor) by signs[i].
    static func flip(_ v: [Float], shape: [Int], axis: Int, signs: [Float]) -> [Float] {
        guard shape.count == 2, signs.contains(-1) else { return v }
        var o = v
        let cols = shape[1]
        for i in o.indices { let s = signs[axis == 0 ? i / cols : i % cols]; if s < 0 { o[i] = -o[i] } }
        return o
    }


    /// Spearman's ρ between two permutations of 0..<n (they are their own ranks).
    public static func spearman(_ x: [Int], _ y: [Int]) -> Double {
        let n = Double(x.count)
        guard n > 1 else { return 0 }
        var d2 = 0.0
        for (a, b) in zip(x, y) { let d = Double(a - b); d2 += d * d }
        return 1 - 6 * d2 / (n * (n * n - 1))
    }

    /// One-sided p-value P(ρ ≥ observed) under independence: exact (all n! permutations) up to n = 8, else the t
    /// approximation with n − 2 degrees of freedom, never below 1/n! (the chance of the identity itself: with 4
    /// units, ρ = 1 happens one time in 24).
    public static func spearmanPValue(_ rho: Double, n: Int) -> Double {
        guard n > 2 else { return 1 }
        if n <= 8 { return exactSpearmanPValue(rho, n: n) }
        let floor = exp(-lgamma(Double(n) + 1))
        if rho >= 1 { return floor }
        return max(floor, tApproxSpearman(rho, n: n))
    }

    /// P(ρ ≥ observed) by enumerating the n! permutations (Heap's algorithm): ρ ≥ r ⇔ Σd² ≤ (1 − r)·n(n²−1)/6.
    static func exactSpearmanPValue(_ rho: Double, n: Int) -> Double {
        let limit = (1 - rho) * Double(n * (n * n - 1)) / 6 + 1e-9
        var p = Array(0..<n), c = [Int](repeating: 0, count: n)
        func d2() -> Double { var s = 0; for i in 0..<n { s += (p[i] - i) * (p[i] - i) }; return Double(s) }
        var hits = d2() <= limit ? 1 : 0, total = 1
        var i = 0
        while i < n {
            if c[i] < i {
                if i % 2 == 0 { p.swapAt(0, i) } else { p.swapAt(c[i], i) }
                total += 1
                if d2() <= limit { hits += 1 }
                c[i] += 1; i = 0
            } else { c[i] = 0; i += 1 }
        }
        return Double(hits) / Double(total)
    }

    static func tApproxSpearman(_ rho: Double, n: Int) -> Double {
        let df = Double(n - 2)
        let t = rho * (df / max(1e-300, 1 - rho * rho)).squareRoot()
        let x = df / (df + t * t)
        let tail = 0.5 * SpecialFunctions.regularizedIncompleteBeta(x, a: df / 2, b: 0.5)
        return t >= 0 ? tail : 1 - tail
    }

    /// Survival function of χ² with an even number of degrees of freedom (Fisher's method): e^{−x/2} Σ_{i<k} (x/2)^i / i!.
    /// In log space (log-sum-exp of the terms' logarithms): with many layers the terms (x/2)^i/i! overflow a Double
    /// (96 layers at p = 1e-300 each gave inf, and p = 1 for a fine-tune).
    public static func chiSquareSurvivalEven(_ x: Double, dof: Int) -> Double {
        let k = max(1, dof / 2)
        let h = x / 2
        guard h > 0 else { return 1 }
        let lh = log(h)
        var logs = [Double](repeating: 0, count: k)          // log of (x/2)^i / i!
        for i in 1..<max(1, k) { logs[i] = logs[i - 1] + lh - log(Double(i)) }
        let top = logs.max()!
        let sum = logs.reduce(0) { $0 + exp($1 - top) }
        return min(1, exp(-h + top + log(sum)))
    }
}

public enum SpecialFunctions {
    /// I_x(a, b) by Lentz's continued fraction (Numerical Recipes' betacf), with the symmetry for convergence.
    public static func regularizedIncompleteBeta(_ x: Double, a: Double, b: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        let lg: Double = lgamma(a + b) - lgamma(a) - lgamma(b)
        let lx: Double = a * log(x) + b * log(1 - x)
        let lbeta = lg + lx
        if x < (a + 1) / (a + b + 2) { return exp(lbeta) * betacf(x, a, b) / a }
        return 1 - exp(lbeta) * betacf(1 - x, b, a) / b
    }

    static func betacf(_ x: Double, _ a: Double, _ b: Double) -> Double {
        let tiny = 1e-300
        let qab = a + b, qap = a + 1, qam = a - 1
        var c = 1.0, d = 1 - qab * x / qap
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var h = d
        for m in 1...300 {
            let m2 = Double(2 * m), md = Double(m)
            var aa = md * (b - md) * x / ((qam + m2) * (a + m2))
            d = 1 + aa * d; if abs(d) < tiny { d = tiny }
            c = 1 + aa / c; if abs(c) < tiny { c = tiny }
            d = 1 / d; h *= d * c
            aa = -(a + md) * (qab + md) * x / ((a + m2) * (qap + m2))
            d = 1 + aa * d; if abs(d) < tiny { d = tiny }
            c = 1 + aa / c; if abs(c) < tiny { c = tiny }
            d = 1 / d
            let del = d * c
            h *= del
            if abs(del - 1) < 1e-15 { break }
        }
        return h
    }
}
