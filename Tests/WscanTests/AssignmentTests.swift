import Foundation
import XCTest
@testable import WscanKernels
import WscanAnalysis

/// LinearAssignment against scipy.optimize.linear_sum_assignment (fixtures from scripts/make_lap_fixtures.py),
/// brute force on small matrices, input rejection, and a planted permutation.
final class AssignmentTests: XCTestCase {
    struct Fixture {
        let name: String, rows: Int, cols: Int, cost: [Double]
        let minTotal: Double, maxTotal: Double?
    }

    func fixtures() throws -> [Fixture] {
        let dir = Paths.fixtures.appendingPathComponent("lap")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".json") }.sorted()
        return try files.map { f in
            let d = try loadJSON(dir.appendingPathComponent(f)) as! [String: Any]
            let rows = (d["rows"] as! NSNumber).intValue, cols = (d["cols"] as! NSNumber).intValue
            var cost: [Double]
            if let b64 = d["cost_u8_b64"] as? String {
                cost = Data(base64Encoded: b64)!.map { Double($0) }
            } else {
                cost = (d["cost"] as! [Any]).map { v in
                    if let s = v as? String { XCTAssertEqual(s, "inf"); return .infinity }
                    return (v as! NSNumber).doubleValue
                }
            }
            XCTAssertEqual(cost.count, rows * cols, f)
            let mn = d["min"] as! [String: Any]
            let mx = d["max"] as? [String: Any]
            return Fixture(name: d["name"] as! String, rows: rows, cols: cols, cost: cost,
                           minTotal: (mn["total"] as! NSNumber).doubleValue, maxTotal: (mx?["total"] as? NSNumber)?.doubleValue)
        }
    }

    /// Checks that `rowToCol` assigns min(rows, cols) rows to distinct columns, and that `total` is their cost sum.
    func checkValid(_ r: (rowToCol: [Int], total: Double), _ cost: [Double], rows: Int, cols: Int, _ label: String,
                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.rowToCol.count, rows, label, file: file, line: line)
        var used = Set<Int>()
        var sum = 0.0
        for (i, j) in r.rowToCol.enumerated() where j >= 0 {
            XCTAssertLessThan(j, cols, label, file: file, line: line)
            XCTAssertTrue(used.insert(j).inserted, "\(label): column \(j) assigned twice", file: file, line: line)
            sum += cost[i * cols + j]
        }
        XCTAssertEqual(used.count, min(rows, cols), "\(label): not every row of the smaller side assigned", file: file, line: line)
        XCTAssertEqual(sum, r.total, accuracy: 1e-12 * max(1, abs(sum)), label, file: file, line: line)
    }

    func assertRelEqual(_ a: Double, _ b: Double, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a, b, accuracy: 1e-9 * max(1, abs(b)), label, file: file, line: line)
    }

    func testFixturesMatchScipy() throws {
        let fx = try fixtures()
        XCTAssertGreaterThanOrEqual(fx.count, 9)
        for f in fx {
            let rmin = try LinearAssignment.solve(f.cost, rows: f.rows, cols: f.cols)
            checkValid(rmin, f.cost, rows: f.rows, cols: f.cols, "\(f.name) min")
            assertRelEqual(rmin.total, f.minTotal, "\(f.name) min")
            if let mt = f.maxTotal {
                let rmax = try LinearAssignment.solve(f.cost, rows: f.rows, cols: f.cols, maximize: true)
                checkValid(rmax, f.cost, rows: f.rows, cols: f.cols, "\(f.name) max")
                assertRelEqual(rmax.total, mt, "\(f.name) max")
            } else {
                // +inf entries are unbounded when maximising.
                XCTAssertThrowsError(try LinearAssignment.solve(f.cost, rows: f.rows, cols: f.cols, maximize: true), f.name)
            }
            // The pointer entry point gives the same total.
            let rp = try f.cost.withUnsafeBufferPointer { try LinearAssignment.solve($0.baseAddress!, rows: f.rows, cols: f.cols) }
            XCTAssertEqual(rp.total, rmin.total, f.name)
        }
    }

    /// Exhaustive optimum over all injections of the smaller side (n ≤ 7).
    func bruteForce(_ c: [Double], rows: Int, cols: Int, maximize: Bool) -> Double {
        let tall = rows > cols
        let small = min(rows, cols), big = max(rows, cols)
        func at(_ s: Int, _ b: Int) -> Double { tall ? c[b * cols + s] : c[s * cols + b] }
        var best = maximize ? -Double.infinity : .infinity
        var used = [Bool](repeating: false, count: big)
        func rec(_ s: Int, _ acc: Double) {
            if s == small { best = maximize ? max(best, acc) : min(best, acc); return }
            for b in 0..<big where !used[b] {
                used[b] = true; rec(s + 1, acc + at(s, b)); used[b] = false
            }
        }
        rec(0, 0)
        return best
    }

    func testBruteForceSmall() throws {
        var rng = SplitMix64(seed: 11)
        var cases = 0
        for trial in 0..<300 {
            let rows = Int.random(in: 1...7, using: &rng), cols = Int.random(in: 1...7, using: &rng)
            let kind = trial % 3
            let c: [Double] = (0..<(rows * cols)).map { _ in
                switch kind {
                case 0: return Double.random(in: 0..<1, using: &rng)
                case 1: return Double(Int.random(in: 0...3, using: &rng))            // ties
                default: return Double.random(in: -100...100, using: &rng)           // negative costs
                }
            }
            for maximize in [false, true] {
                let r = try LinearAssignment.solve(c, rows: rows, cols: cols, maximize: maximize)
                let label = "trial \(trial) \(rows)x\(cols) max=\(maximize)"
                checkValid(r, c, rows: rows, cols: cols, label)
                assertRelEqual(r.total, bruteForce(c, rows: rows, cols: cols, maximize: maximize), label)
                cases += 1
            }
        }
        XCTAssertEqual(cases, 600)
    }

    /// The O(n²) path: when every row's best column is its own (units of related models), those columns are the
    /// answer, equal in total to the full solver's on the same matrix with one conflict added.
    func testDistinctBestColumnsAreOptimal() throws {
        var rng = SplitMix64(seed: 5)
        let n = 300
        let perm = Array(0..<n).shuffled(using: &rng)
        var c = (0..<(n * n)).map { _ in Double.random(in: -1..<1, using: &rng) }
        for i in 0..<n { c[i * n + perm[i]] = 2 + Double.random(in: 0..<1, using: &rng) }
        let r = try LinearAssignment.solve(c, rows: n, cols: n, maximize: true)
        XCTAssertEqual(r.rowToCol, perm)
        var want = 0.0
        for i in 0..<n { want += c[i * n + perm[i]] }
        XCTAssertEqual(r.total, want)
        // minimising the negated matrix: the same answer
        XCTAssertEqual(try LinearAssignment.solve(c.map { -$0 }, rows: n, cols: n).rowToCol, perm)
        // row 0's best moved into row 1's column: the rows conflict, and the full solver still finds the optimum
        // (brute force on a small copy below agrees)
        c[0 * n + perm[1]] = 10
        let full = try LinearAssignment.solve(c, rows: n, cols: n, maximize: true)
        checkValid(full, c, rows: n, cols: n, "conflict")
        let small = [3.0, 5, 1, 4, 2, 0, 1, 0, 2]          // rows 0 and 1 both best in column 1
        let rs = try LinearAssignment.solve(small, rows: 3, cols: 3, maximize: true)
        assertRelEqual(rs.total, bruteForce(small, rows: 3, cols: 3, maximize: true), "small conflict")
    }

    func testRejectsNaNAndUnboundedEntries() {
        var c = [Double](repeating: 1, count: 12)
        c[7] = .nan
        XCTAssertThrowsError(try LinearAssignment.solve(c, rows: 3, cols: 4)) { e in
            XCTAssertEqual(e as? LinearAssignment.Error, .nan(row: 1, col: 3))
        }
        XCTAssertThrowsError(try LinearAssignment.solve(c, rows: 3, cols: 4, maximize: true))
        XCTAssertThrowsError(try LinearAssignment.solve(c, rows: 4, cols: 3))
        c[7] = -.infinity
        XCTAssertThrowsError(try LinearAssignment.solve(c, rows: 3, cols: 4)) { e in
            XCTAssertEqual(e as? LinearAssignment.Error, .unboundedEntry(row: 1, col: 3))
        }
        // -inf is a forbidden pair when maximising, +inf when minimising.
        XCTAssertNoThrow(try LinearAssignment.solve(c, rows: 3, cols: 4, maximize: true))
        c[7] = .infinity
        XCTAssertNoThrow(try LinearAssignment.solve(c, rows: 3, cols: 4))
        XCTAssertThrowsError(try LinearAssignment.solve(c, rows: 3, cols: 4, maximize: true))
        // Shape mismatch.
        XCTAssertThrowsError(try LinearAssignment.solve(c, rows: 5, cols: 4))
    }

    func testInfeasibleThrows() {
        // Row 1 can only take column 0, which row 0 also needs.
        let inf = Double.infinity
        let c: [Double] = [1, inf, inf,
                           2, inf, inf]
        XCTAssertThrowsError(try LinearAssignment.solve(c, rows: 2, cols: 3)) { e in
            XCTAssertEqual(e as? LinearAssignment.Error, .infeasible)
        }
        XCTAssertThrowsError(try LinearAssignment.solve([inf, inf, inf, inf], rows: 2, cols: 2))
        // Forbidden pairs that still leave a complete assignment.
        let ok = try? LinearAssignment.solve([inf, 1, 2, inf], rows: 2, cols: 2)
        XCTAssertEqual(ok?.rowToCol, [1, 0])
        XCTAssertEqual(ok?.total, 3)
    }

    func testEmptyAndDegenerate() throws {
        let e = try LinearAssignment.solve([], rows: 0, cols: 5)
        XCTAssertEqual(e.rowToCol, []); XCTAssertEqual(e.total, 0)
        let z = try LinearAssignment.solve([], rows: 3, cols: 0)
        XCTAssertEqual(z.rowToCol, [-1, -1, -1])
        let one = try LinearAssignment.solve([5, 2, 7], rows: 1, cols: 3)
        XCTAssertEqual(one.rowToCol, [1]); XCTAssertEqual(one.total, 2)
        let col = try LinearAssignment.solve([5, 2, 7], rows: 3, cols: 1, maximize: true)
        XCTAssertEqual(col.rowToCol, [-1, -1, 0]); XCTAssertEqual(col.total, 7)
    }

    /// cost = −(A·Bᵀ) with B a row permutation of A (unit-norm Gaussian rows): the permutation is the unique optimum.
    func testPlantedPermutation512() throws {
        let n = 512, d = 64
        var rng = SplitMix64(seed: 5)
        func gauss() -> Double {
            let u1 = Double.random(in: Double.ulpOfOne..<1, using: &rng), u2 = Double.random(in: 0..<1, using: &rng)
            return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * .pi * u2)
        }
        var a = [Double](repeating: 0, count: n * d)
        for i in 0..<n {
            var s = 0.0
            for k in 0..<d { a[i * d + k] = gauss(); s += a[i * d + k] * a[i * d + k] }
            let inv = 1 / s.squareRoot()
            for k in 0..<d { a[i * d + k] *= inv }
        }
        var perm = Array(0..<n)
        perm.shuffle(using: &rng)
        // B[j] = A[perm[j]], so column j matches row perm[j].
        var b = [Double](repeating: 0, count: n * d)
        for j in 0..<n { for k in 0..<d { b[j * d + k] = a[perm[j] * d + k] } }
        var cost = [Double](repeating: 0, count: n * n)
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in cost.withUnsafeMutableBufferPointer { cp in
            Linalg.gemm(ap.baseAddress!, bp.baseAddress!, cp.baseAddress!, m: n, n: n, k: d, transB: true)
        } } }
        for k in cost.indices { cost[k] = -cost[k] }
        var expected = [Int](repeating: -1, count: n)
        for j in 0..<n { expected[perm[j]] = j }

        let r = try LinearAssignment.solve(cost, rows: n, cols: n)
        XCTAssertEqual(r.rowToCol, expected)
        XCTAssertEqual(r.total, -Double(n), accuracy: 1e-9 * Double(n))
        // Same recovery when maximising A·Bᵀ, and on the transposed (column-side) problem.
        let neg = cost.map { -$0 }
        XCTAssertEqual(try LinearAssignment.solve(neg, rows: n, cols: n, maximize: true).rowToCol, expected)
        var t = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { t[j * n + i] = cost[i * n + j] } }
        XCTAssertEqual(try LinearAssignment.solve(t, rows: n, cols: n).rowToCol, perm)
    }

    /// Rectangular problems of moderate size agree whichever side is longer (the solver transposes tall inputs).
    func testTallEqualsWideTransposed() throws {
        var rng = SplitMix64(seed: 9)
        let rows = 90, cols = 140
        let c = (0..<(rows * cols)).map { _ in Double.random(in: -5..<5, using: &rng) }
        var t = [Double](repeating: 0, count: rows * cols)
        for i in 0..<rows { for j in 0..<cols { t[j * rows + i] = c[i * cols + j] } }
        for maximize in [false, true] {
            let w = try LinearAssignment.solve(c, rows: rows, cols: cols, maximize: maximize)
            let h = try LinearAssignment.solve(t, rows: cols, cols: rows, maximize: maximize)
            checkValid(h, t, rows: cols, cols: rows, "tall max=\(maximize)")
            assertRelEqual(h.total, w.total, "tall vs wide max=\(maximize)")
        }
    }
}
