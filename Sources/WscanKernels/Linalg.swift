import CWscan

public enum LinalgError: Error, CustomStringConvertible {
    case lapack(String, Int32)
    /// The matrix holds NaN or ±Inf; LAPACK is not called (it would fail and print its own messages).
    case nonFinite
    public var description: String {
        switch self {
        case let .lapack(f, info): return "\(f) failed (info=\(info))"
        case .nonFinite: return "the matrix holds NaN or ±Inf values: no decomposition"
        }
    }

    static func check(_ info: Int32, _ what: String) throws {
        if info == WSCAN_NONFINITE { throw LinalgError.nonFinite }
        if info != 0 { throw LinalgError.lapack(info == -1000 ? "gram (out of memory)" : what, info) }
    }
}

/// Thin wrappers over OpenBLAS/LAPACKE. Matrices are row-major and contiguous.
public enum Linalg {
    /// Singular values (descending) of an m×n Float matrix; `a` is consumed.
    public static func singularValues(_ a: inout [Float], m: Int, n: Int) throws -> [Float] {
        guard a.allSatisfy({ $0.isFinite }) else { throw LinalgError.nonFinite }
        var s = [Float](repeating: 0, count: Swift.min(m, n))
        let info = a.withUnsafeMutableBufferPointer { ap in
            s.withUnsafeMutableBufferPointer { sp in wscan_sgesdd_values(Int32(m), Int32(n), ap.baseAddress, sp.baseAddress) }
        }
        if info != 0 { throw LinalgError.lapack("sgesdd", info) }
        return s
    }

    public static func singularValues(_ a: inout [Double], m: Int, n: Int) throws -> [Double] {
        guard a.allSatisfy({ $0.isFinite }) else { throw LinalgError.nonFinite }
        var s = [Double](repeating: 0, count: Swift.min(m, n))
        let info = a.withUnsafeMutableBufferPointer { ap in
            s.withUnsafeMutableBufferPointer { sp in wscan_dgesdd_values(Int32(m), Int32(n), ap.baseAddress, sp.baseAddress) }
        }
        if info != 0 { throw LinalgError.lapack("dgesdd", info) }
        return s
    }

    /// The largest Gram order solved by the one-stage eigensolver (the C side's choice).
    public static let gramOneStageMax = Int(WSCAN_GRAM_ONE_STAGE_MAX)

    /// Eigenvalues (descending) of the Gram matrix of an m×n row-major Float matrix in Double precision
    /// (dsyrk, then dsyevd, or dsyevd_2stage above order `gramOneStageMax`): the squared singular values. Tiny
    /// negative round-off is clamped to 0.
    public static func gramEigenvalues(_ a: UnsafePointer<Float>, m: Int, n: Int) throws -> [Double] {
        var w = [Double](repeating: 0, count: Swift.min(m, n))
        let info = w.withUnsafeMutableBufferPointer { wscan_gram_eigvals(Int32(m), Int32(n), a, $0.baseAddress) }
        try LinalgError.check(info, Swift.min(m, n) > gramOneStageMax ? "dsyevd_2stage" : "dsyevd")
        return w.reversed().map { Swift.max(0, $0) }
    }

    /// Eigenvalues (descending, clamped at 0) of AᵀA or AAᵀ computed in float32 throughout (ssyrk + ssyevd): half
    /// the float64 route's work, each value good to about 1e-6·λ₁ rather than 1e-4 relative.
    public static func gramEigenvaluesSingle(_ a: UnsafePointer<Float>, m: Int, n: Int) throws -> [Double] {
        var w = [Double](repeating: 0, count: Swift.min(m, n))
        let info = w.withUnsafeMutableBufferPointer { wscan_gram_eigvals_single(Int32(m), Int32(n), a, $0.baseAddress) }
        try LinalgError.check(info, "ssyevd")
        return w.reversed().map { Swift.max(0, $0) }
    }

    public static func gramEigenvalues(_ a: UnsafePointer<Double>, m: Int, n: Int) throws -> [Double] {
        var w = [Double](repeating: 0, count: Swift.min(m, n))
        let info = w.withUnsafeMutableBufferPointer { wscan_gram_eigvals_d(Int32(m), Int32(n), a, $0.baseAddress) }
        try LinalgError.check(info, Swift.min(m, n) > gramOneStageMax ? "dsyevd_2stage" : "dsyevd")
        return w.reversed().map { Swift.max(0, $0) }
    }

    /// Eigenvalues (ascending) of a symmetric n×n matrix; `a` is consumed.
    public static func symmetricEigenvalues(_ a: inout [Double], n: Int) throws -> [Double] {
        guard a.allSatisfy({ $0.isFinite }) else { throw LinalgError.nonFinite }
        var w = [Double](repeating: 0, count: n)
        let info = a.withUnsafeMutableBufferPointer { ap in
            w.withUnsafeMutableBufferPointer { wp in wscan_dsyevd_values(Int32(n), ap.baseAddress, wp.baseAddress) }
        }
        if info != 0 { throw LinalgError.lapack("dsyevd", info) }
        return w
    }

    /// Eigen-decomposition of a symmetric n×n matrix: eigenvalues descending and the matching eigenvectors,
    /// vectors[j] being the unit eigenvector of values[j].
    public static func symmetricEigen(_ a: [Double], n: Int) throws -> (values: [Double], vectors: [[Double]]) {
        guard a.allSatisfy({ $0.isFinite }) else { throw LinalgError.nonFinite }
        var m = a
        var w = [Double](repeating: 0, count: n)
        let info = m.withUnsafeMutableBufferPointer { mp in w.withUnsafeMutableBufferPointer { wscan_dsyevd_vectors(Int32(n), mp.baseAddress, $0.baseAddress) } }
        if info != 0 { throw LinalgError.lapack("dsyevd", info) }
        var vals: [Double] = [], vecs: [[Double]] = []
        for j in stride(from: n - 1, through: 0, by: -1) { vals.append(w[j]); vecs.append(Array(m[(j * n)..<((j + 1) * n)])) }
        return (vals, vecs)
    }

    /// C = op(A) · op(B) in Float. A is m×k after op, B k×n after op.
    public static func gemm(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
                            m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false,
                            alpha: Float = 1, beta: Float = 0) {
        let lda = transA ? m : k, ldb = transB ? k : n
        wscan_sgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(n))
    }

    public static func gemm(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ c: UnsafeMutablePointer<Double>,
                            m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false,
                            alpha: Double = 1, beta: Double = 0) {
        let lda = transA ? m : k, ldb = transB ? k : n
        wscan_dgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(n))
    }
}
