/// Dense linear assignment (rectangular allowed), by shortest augmenting paths with dual variables: the
/// Jonker–Volgenant family as described by Crouse, "On implementing 2D rectangular assignment algorithms"
/// (IEEE TAES 2016), the algorithm behind scipy.optimize.linear_sum_assignment (after an O(n²) check for the case
/// where every row's best column is its own, which is then optimal). No initialisation phase:
/// each row of the smaller side is added in turn by one Dijkstra-like search over reduced costs
/// c[i,j] − u[i] − v[j] (non-negative for every already assigned row), followed by a dual update and an
/// augmentation along the shortest path. Float64 throughout.
///
/// Semantics follow scipy: `+inf` marks a forbidden pair (when minimising; `-inf` when maximising), NaN and
/// `-inf` (`+inf` when maximising) are rejected, and a matrix without a complete assignment of the smaller side
/// is rejected as infeasible.
public enum LinearAssignment {
    public enum Error: Swift.Error, CustomStringConvertible, Equatable {
        case invalidShape(rows: Int, cols: Int, count: Int)
        case nan(row: Int, col: Int)
        case unboundedEntry(row: Int, col: Int)   // -inf when minimising, +inf when maximising
        case infeasible
        public var description: String {
            switch self {
            case let .invalidShape(r, c, n): return "cost matrix shape \(r)x\(c) does not match \(n) values"
            case let .nan(r, c): return "cost matrix contains NaN at (\(r), \(c))"
            case let .unboundedEntry(r, c): return "cost matrix contains an infinite entry of the optimising sign at (\(r), \(c))"
            case .infeasible: return "cost matrix is infeasible (no complete assignment of finite cost)"
            }
        }
    }

    /// Optimal assignment of a row-major `rows`×`cols` cost matrix. Every row (if rows ≤ cols) or every
    /// column (if rows > cols) is assigned; `rowToCol[i]` is row i's column, or −1 for a row left unassigned
    /// when rows > cols. `total` is the sum of the original costs of the assigned pairs.
    public static func solve(_ cost: UnsafePointer<Double>, rows: Int, cols: Int, maximize: Bool = false) throws -> (rowToCol: [Int], total: Double) {
        precondition(rows >= 0 && cols >= 0)
        if rows == 0 || cols == 0 { return ([Int](repeating: -1, count: rows), 0) }
        try validate(cost, rows * cols, cols: cols, maximize: maximize)
        if rows <= cols, let r = distinctBest(cost, rows: rows, cols: cols, maximize: maximize) { return r }

        // The solver wants nr ≤ nc and minimisation: transpose and/or negate into a working copy when needed.
        let transpose = rows > cols
        let nr = transpose ? cols : rows, nc = transpose ? rows : cols
        var work: UnsafeMutablePointer<Double>? = nil
        defer { work?.deallocate() }
        if transpose || maximize {
            let w = UnsafeMutablePointer<Double>.allocate(capacity: rows * cols)
            work = w
            let sign = maximize ? -1.0 : 1.0
            if transpose {
                // Blocked transpose: w[j*rows + i] = sign * cost[i*cols + j].
                let b = 32
                var i0 = 0
                while i0 < rows {
                    let i1 = Swift.min(i0 + b, rows)
                    var j0 = 0
                    while j0 < cols {
                        let j1 = Swift.min(j0 + b, cols)
                        for i in i0..<i1 { for j in j0..<j1 { w[j * rows + i] = sign * cost[i * cols + j] } }
                        j0 = j1
                    }
                    i0 = i1
                }
            } else {
                for k in 0..<(rows * cols) { w[k] = -cost[k] }
            }
        }
        let c = work.map { UnsafePointer($0) } ?? cost

        let col4row = UnsafeMutablePointer<Int>.allocate(capacity: nr)
        defer { col4row.deallocate() }
        guard shortestAugmentingPaths(c, nr: nr, nc: nc, col4row: col4row) else { throw Error.infeasible }

        var rowToCol = [Int](repeating: -1, count: rows)
        var total = 0.0
        for r in 0..<nr {
            let (i, j) = transpose ? (col4row[r], r) : (r, col4row[r])
            rowToCol[i] = j
            total += cost[i * cols + j]
        }
        return (rowToCol, total)
    }

    /// When every row's best entry (the first minimum, or maximum) is finite and in a column no other row's best is
    /// in, those entries are an optimal assignment: their sum bounds every assignment's. O(rows·cols), and the usual
    /// case when matching the units of related models (a fine-tune against its base); nil otherwise.
    static func distinctBest(_ cost: UnsafePointer<Double>, rows: Int, cols: Int, maximize: Bool) -> (rowToCol: [Int], total: Double)? {
        var rowToCol = [Int](repeating: -1, count: rows), taken = [Bool](repeating: false, count: cols)
        var total = 0.0
        for r in 0..<rows {
            let row = cost + r * cols
            var best = row[0], j = 0
            for k in 1..<cols where maximize ? row[k] > best : row[k] < best { best = row[k]; j = k }
            guard best.isFinite, !taken[j] else { return nil }
            taken[j] = true; rowToCol[r] = j; total += best
        }
        return (rowToCol, total)
    }

    /// Convenience overload over a row-major array of `rows * cols` values.
    public static func solve(_ cost: [Double], rows: Int, cols: Int, maximize: Bool = false) throws -> (rowToCol: [Int], total: Double) {
        guard rows >= 0, cols >= 0, rows * cols == cost.count else { throw Error.invalidShape(rows: rows, cols: cols, count: cost.count) }
        return try cost.withUnsafeBufferPointer { p in
            guard let base = p.baseAddress else { return ([Int](repeating: -1, count: rows), 0) }
            return try solve(base, rows: rows, cols: cols, maximize: maximize)
        }
    }

    /// Rejects NaN and infinities of the optimising sign. A vectorised pass flags a suspicious block; the
    /// scalar re-scan only runs to locate the offending entry.
    static func validate(_ p: UnsafePointer<Double>, _ n: Int, cols: Int, maximize: Bool) throws {
        typealias V = SIMD4<Double>
        let bad: Double = maximize ? .infinity : -.infinity
        let badV = V(repeating: bad)
        var flagged = false
        let raw = UnsafeRawPointer(p)
        var k = 0
        while k + 4 <= n {
            let x = raw.loadUnaligned(fromByteOffset: k * 8, as: V.self)
            // x != x catches NaN; x == bad catches the forbidden infinity.
            if any((x .!= x) .| (x .== badV)) { flagged = true; break }
            k += 4
        }
        if !flagged { while k < n { if p[k].isNaN || p[k] == bad { flagged = true; break }; k += 1 } }
        guard flagged else { return }
        for k in 0..<n {
            if p[k].isNaN { throw Error.nan(row: k / cols, col: k % cols) }
            if p[k] == bad { throw Error.unboundedEntry(row: k / cols, col: k % cols) }
        }
    }

    /// Core solver for nr ≤ nc, minimisation. Writes the column of each row into `col4row`; returns false
    /// if some row cannot be assigned at finite cost.
    ///
    /// Layout: the columns not yet reached by the current search live in `rem[0..<left]`; reached columns are
    /// swapped to the tail, so `rem[left..<nc]` is exactly the set of scanned columns. The per-column search
    /// state (v, shortest-path cost, predecessor row, unassigned flag) is kept in the same position order as
    /// `rem`, so the hot loop (`scan`, 4-wide) streams through contiguous arrays and only gathers the cost row. Each search restarts from the identity order, so the cost row (usually not in
    /// cache) is read nearly sequentially and the hardware prefetcher keeps up; swap-removal only perturbs
    /// it slightly.
    static func shortestAugmentingPaths(_ cost: UnsafePointer<Double>, nr: Int, nc: Int, col4row: UnsafeMutablePointer<Int>) -> Bool {
        let u = UnsafeMutablePointer<Double>.allocate(capacity: nr)
        let row4col = UnsafeMutablePointer<Int>.allocate(capacity: nc)
        let rem = UnsafeMutablePointer<Int>.allocate(capacity: nc)
        let v = UnsafeMutablePointer<Double>.allocate(capacity: nc)      // column duals
        let vP = UnsafeMutablePointer<Double>.allocate(capacity: nc)     // v by position
        let dP = UnsafeMutablePointer<Double>.allocate(capacity: nc)     // shortest path cost by position
        let pP = UnsafeMutablePointer<Int64>.allocate(capacity: nc)      // predecessor row by position
        let fP = UnsafeMutablePointer<Int64>.allocate(capacity: nc)      // column unassigned (−1) or not (0), by position
        let path = UnsafeMutablePointer<Int>.allocate(capacity: nc)      // predecessor row by column (scattered)
        defer {
            v.deallocate(); u.deallocate(); row4col.deallocate(); rem.deallocate()
            vP.deallocate(); dP.deallocate(); pP.deallocate(); fP.deallocate(); path.deallocate()
        }
        u.initialize(repeating: 0, count: nr)
        col4row.initialize(repeating: -1, count: nr)
        row4col.initialize(repeating: -1, count: nc)
        v.initialize(repeating: 0, count: nc)
        vP.initialize(repeating: 0, count: nc)
        dP.initialize(repeating: 0, count: nc)
        pP.initialize(repeating: 0, count: nc)
        fP.initialize(repeating: 0, count: nc)
        rem.initialize(repeating: 0, count: nc)

        for cur in 0..<nr {
            for k in 0..<nc { rem[k] = k; fP[k] = row4col[k] < 0 ? -1 : 0 }
            vP.update(from: v, count: nc)
            dP.update(repeating: .infinity, count: nc)
            var left = nc
            var minVal = 0.0
            var i = cur
            var sink = -1
            while sink < 0 {
                let (lowest, best) = scan(cost + i * nc, minVal - u[i], Int64(i), left, rem, vP, dP, pP, fP)
                if !(lowest < .infinity) { return false }
                minVal = lowest
                let j = rem[best]
                left -= 1
                if best != left {
                    swap(rem, best, left); swap(vP, best, left); swap(dP, best, left); swap(pP, best, left); swap(fP, best, left)
                }
                if row4col[j] < 0 { sink = j } else { i = row4col[j] }
            }

            // Dual update over the scanned rows and columns (the sink's term is zero: its cost is minVal).
            u[cur] += minVal
            for k in left..<nc {
                let j = rem[k]
                let delta = minVal - dP[k]
                if j != sink { u[row4col[j]] += delta }
                v[j] -= delta
                path[j] = Int(pP[k])
            }
            // Augment along the predecessor chain back to `cur`.
            var j = sink
            while true {
                let r = path[j]
                row4col[j] = r
                let prev = col4row[r]
                col4row[r] = j
                if r == cur { break }
                j = prev
            }
        }
        return true
    }

    /// One relaxation sweep from row `row` over positions 0..<left: d[k] = min(d[k], (c[row, rem[k]] + shift) − vP[k])
    /// with shift = minVal − u[row], recording the predecessor row where d improves, and the position of the
    /// smallest d (on exact ties an unassigned column wins: it ends the search). Four lanes at a time with
    /// selects instead of branches; the cost row is gathered through `rem`.
    @inline(__always)
    static func scan(_ row: UnsafePointer<Double>, _ shift: Double, _ i: Int64, _ left: Int, _ rem: UnsafePointer<Int>,
                     _ vP: UnsafePointer<Double>, _ dP: UnsafeMutablePointer<Double>, _ pP: UnsafeMutablePointer<Int64>,
                     _ fP: UnsafePointer<Int64>) -> (Double, Int) {
        typealias V = SIMD4<Double>
        typealias I = SIMD4<Int64>
        let shiftV = V(repeating: shift), iV = I(repeating: i)
        var lowV = V(repeating: .infinity)
        var lowFree = SIMDMask<I>(repeating: false)
        let zero = I(repeating: 0)
        var idxV = I(repeating: -1)
        var kV = I(0, 1, 2, 3)
        let four = I(repeating: 4)
        let vR = UnsafeRawPointer(vP), fR = UnsafeRawPointer(fP)
        let dR = UnsafeMutableRawPointer(dP), pR = UnsafeMutableRawPointer(pP)
        var k = 0
        while k + 4 <= left {
            let c = V(row[rem[k]], row[rem[k + 1]], row[rem[k + 2]], row[rem[k + 3]])
            let r = (c + shiftV) - vR.loadUnaligned(fromByteOffset: k * 8, as: V.self)
            var d = dR.loadUnaligned(fromByteOffset: k * 8, as: V.self)
            let m = r .< d
            d.replace(with: r, where: m)
            dR.storeBytes(of: d, toByteOffset: k * 8, as: V.self)
            var p = pR.loadUnaligned(fromByteOffset: k * 8, as: I.self)
            p.replace(with: iV, where: m)
            pR.storeBytes(of: p, toByteOffset: k * 8, as: I.self)
            let free = fR.loadUnaligned(fromByteOffset: k * 8, as: I.self) .!= zero
            let better = (d .< lowV) .| ((d .== lowV) .& free .& .!lowFree)
            lowV.replace(with: d, where: better)
            lowFree = (better .& free) .| (.!better .& lowFree)
            idxV.replace(with: kV, where: better)
            kV &+= four
            k += 4
        }
        var lowest = Double.infinity, best = -1, bestFree = false
        for l in 0..<4 where idxV[l] >= 0 {
            let f = lowFree[l]
            if lowV[l] < lowest || (lowV[l] == lowest && (f && !bestFree || f == bestFree && Int(idxV[l]) < best)) {
                lowest = lowV[l]; best = Int(idxV[l]); bestFree = f
            }
        }
        while k < left {
            let r = (row[rem[k]] + shift) - vP[k]
            var d = dP[k]
            if r < d { d = r; dP[k] = r; pP[k] = i }
            let f = fP[k] != 0
            if d < lowest || (d == lowest && f && !bestFree) { lowest = d; best = k; bestFree = f }
            k += 1
        }
        return (lowest, best)
    }

    @inline(__always)
    static func swap<T>(_ p: UnsafeMutablePointer<T>, _ a: Int, _ b: Int) {
        let t = p[a]; p[a] = p[b]; p[b] = t
    }
}
