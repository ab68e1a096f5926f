import Foundation
import WscanKernels

/// Top singular values of a matrix too large for its Gram matrix to fit in memory, by a randomized range finder
/// (Halko, Martinsson & Tropp 2011, algorithm 4.4: Gaussian test matrix, power iterations with
/// re-orthonormalisation) followed by the exact SVD of the small projection B = QᵀA.
///
/// Error bound, stated with every result: Q has orthonormal columns, so the σᵢ(B) interlace those of A and
///   σᵢ(B) ≤ σᵢ(A) ≤ √(σᵢ(B)² + E²),  E² = ‖A‖²_F − ‖B‖²_F = ‖A − QQᵀA‖²_F,
/// both norms computed in float64 from the data (up to float32 rounding of the products with A).
public struct RandomizedSpectrum: Sendable {
    public var values: [Double]        // σᵢ(B), descending: lower bounds of the top singular values of A
    public var residual: Double        // E
    public var frobeniusSquared: Double   // ‖A‖²_F, exact
    public var rank: Int               // columns of Q
    public var note: String {
        String(format: "randomized: top %d of the singular values, each σᵢ within [σ̂ᵢ, √(σ̂ᵢ² + E²)], E = ‖A − QQᵀA‖_F = %.4g (%.2g of ‖A‖_F)",
               values.count, residual, frobeniusSquared > 0 ? residual / frobeniusSquared.squareRoot() : 0)
    }

    /// A is rows×cols row-major. `rank` singular values are sought (oversampled by 16), with `powerIterations`.
    public static func compute(_ a: [Float], rows: Int, cols: Int, rank: Int = 256, powerIterations: Int = 2,
                               seed: UInt64 = 0) throws -> RandomizedSpectrum {
        // The float32 products overflow for weights near 1e37 (A·Ω sums cols of them) and lose bits on subnormal ones:
        // outside [2⁻³², 2³²] the matrix is scaled by a power of two (exact) and the results scaled back.
        let big = a.reduce(Float(0)) { Swift.max($0, $1.magnitude) }
        if big.isFinite, big > 0, big > 0x1p32 || big < 0x1p-32 {
            let e = Int(big.exponent), s = Double(sign: .plus, exponent: -e, significand: 1)
            let r = try compute(a.map { Float(Double($0) * s) }, rows: rows, cols: cols, rank: rank, powerIterations: powerIterations, seed: seed)
            let back = Double(sign: .plus, exponent: e, significand: 1)
            return RandomizedSpectrum(values: r.values.map { $0 * back }, residual: r.residual * back,
                                      frobeniusSquared: r.frobeniusSquared * back * back, rank: r.rank)
        }
        let l = Swift.min(Swift.min(rows, cols), rank.addingSaturating(16))
        var rng = SplitMix64(seed: seed ^ 0x5EED)
        func gaussian() -> Float {                 // Box–Muller
            let u1 = Double(rng.next() >> 11 | 1) / Double(1 << 53), u2 = Double(rng.next() >> 11) / Double(1 << 53)
            return Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
        }
        var omega = (0..<(cols * l)).map { _ in gaussian() }              // cols × l
        var y = [Float](repeating: 0, count: rows * l)                    // rows × l
        a.withUnsafeBufferPointer { ap in omega.withUnsafeBufferPointer { op in y.withUnsafeMutableBufferPointer { yp in
            Linalg.gemm(ap.baseAddress!, op.baseAddress!, yp.baseAddress!, m: rows, n: l, k: cols)
        } } }
        for _ in 0..<powerIterations {
            try orthonormalize(&y, rows: rows, cols: l)
            // Z = Aᵀ Q (cols × l), orthonormalised, then Y = A Z.
            a.withUnsafeBufferPointer { ap in y.withUnsafeBufferPointer { yp in omega.withUnsafeMutableBufferPointer { zp in
                Linalg.gemm(ap.baseAddress!, yp.baseAddress!, zp.baseAddress!, m: cols, n: l, k: rows, transA: true)
            } } }
            try orthonormalize(&omega, rows: cols, cols: l)
            a.withUnsafeBufferPointer { ap in omega.withUnsafeBufferPointer { zp in y.withUnsafeMutableBufferPointer { yp in
                Linalg.gemm(ap.baseAddress!, zp.baseAddress!, yp.baseAddress!, m: rows, n: l, k: cols)
            } } }
        }
        let q = try orthonormalize(&y, rows: rows, cols: l)
        // B = Qᵀ A (l × cols; the l − q dropped columns of Q are zero, so are their rows), in float64 for its SVD.
        var b32 = [Float](repeating: 0, count: l * cols)
        a.withUnsafeBufferPointer { ap in y.withUnsafeBufferPointer { yp in b32.withUnsafeMutableBufferPointer { bp in
            Linalg.gemm(yp.baseAddress!, ap.baseAddress!, bp.baseAddress!, m: l, n: cols, k: rows, transA: true)
        } } }
        var b = b32.map(Double.init)
        let fb = b.reduce(0) { $0 + $1 * $1 }
        let sv = Array(try Linalg.singularValues(&b, m: l, n: cols).prefix(Swift.min(q, rank)))
        let fa = a.reduce(0.0) { $0 + Double($1) * Double($1) }
        return RandomizedSpectrum(values: sv, residual: Swift.max(0, fa - fb).squareRoot(), frobeniusSquared: fa, rank: q)
    }

    /// Orthonormalises the columns of the rows×cols row-major matrix in place (two passes of Q = Y·V·Λ^(−1/2) from
    /// the eigen-decomposition YᵀY = VΛVᵀ, in float64, dropping directions with λ < 1e-10·λmax) and returns how many
    /// columns are kept; those come first, the rest are zeroed.
    @discardableResult
    static func orthonormalize(_ y: inout [Float], rows: Int, cols: Int) throws -> Int {
        var kept = cols
        for _ in 0..<2 {
            let yd = y.map(Double.init)
            var g = [Double](repeating: 0, count: cols * cols)
            yd.withUnsafeBufferPointer { yp in g.withUnsafeMutableBufferPointer { gp in
                Linalg.gemm(yp.baseAddress!, yp.baseAddress!, gp.baseAddress!, m: cols, n: cols, k: rows, transA: true)
            } }
            let (vals, vecs) = try Linalg.symmetricEigen(g, n: cols)
            let lmax = vals.first ?? 0
            let keep = vals.indices.filter { lmax > 0 && vals[$0] > 1e-10 * lmax }
            kept = keep.count
            // T (cols × cols): column j = v_j / √λ_j for the kept directions, zero otherwise.
            var t = [Double](repeating: 0, count: cols * cols)
            for (j, e) in keep.enumerated() { let s = 1 / vals[e].squareRoot(); for i in 0..<cols { t[i * cols + j] = vecs[e][i] * s } }
            var out = [Double](repeating: 0, count: rows * cols)
            yd.withUnsafeBufferPointer { yp in t.withUnsafeBufferPointer { tp in out.withUnsafeMutableBufferPointer { op in
                Linalg.gemm(yp.baseAddress!, tp.baseAddress!, op.baseAddress!, m: rows, n: cols, k: cols)
            } } }
            y = out.map(Float.init)
        }
        return kept
    }
}
