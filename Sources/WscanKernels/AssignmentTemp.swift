// Temporary shortest-augmenting-path solver so that main builds while the tuned solver lands (to be replaced).
public enum LinearAssignment {
    public enum Failure: Error { case invalid(String) }
    public static func solve(_ cost: [Double], rows: Int, cols: Int, maximize: Bool = false) throws -> (rowToCol: [Int], total: Double) {
        precondition(rows <= cols)
        let n = rows, m = cols
        let inf = Double.infinity
        var u = [Double](repeating: 0, count: n + 1), v = [Double](repeating: 0, count: m + 1)
        var p = [Int](repeating: 0, count: m + 1), way = [Int](repeating: 0, count: m + 1)
        func a(_ i: Int, _ j: Int) -> Double { let c = cost[(i - 1) * m + (j - 1)]; return maximize ? -c : c }
        for i in 1...max(1, n) where n > 0 {
            p[0] = i
            var j0 = 0
            var minv = [Double](repeating: inf, count: m + 1)
            var used = [Bool](repeating: false, count: m + 1)
            repeat {
                used[j0] = true
                let i0 = p[j0]
                var delta = inf, j1 = 0
                for j in 1...m where !used[j] {
                    let cur = a(i0, j) - u[i0] - v[j]
                    if cur < minv[j] { minv[j] = cur; way[j] = j0 }
                    if minv[j] < delta { delta = minv[j]; j1 = j }
                }
                for j in 0...m { if used[j] { u[p[j]] += delta; v[j] -= delta } else { minv[j] -= delta } }
                j0 = j1
            } while p[j0] != 0
            repeat { let j1 = way[j0]; p[j0] = p[j1]; j0 = j1 } while j0 != 0
        }
        var r2c = [Int](repeating: -1, count: n)
        for j in 1...m where p[j] != 0 { r2c[p[j] - 1] = j - 1 }
        var total = 0.0
        for i in 0..<n { total += cost[i * m + r2c[i]] }
        return (r2c, total)
    }
}
