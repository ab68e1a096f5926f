import Foundation
import WscanKernels

/// Data-driven utilization (after "Revealing the Utilized Rank of Subspaces of Learning"): a layer only ever sees
/// inputs from a subspace; project the weight onto the input subspace that holds a chosen fraction of the input
/// energy and measure the rank the projected weight needs for the same fraction of its own energy.
public struct DataUtilization: Codable, Sendable {
    public var name: String
    public var energy: Double
    public var inputRank: Int          // dimensions of the input subspace holding `energy` of the input energy
    public var utilizedRank: Int       // rank of W·P_k holding `energy` of its energy
    public var dataFreeRank: Int       // rank of W holding `energy` of its energy
    public var minDim: Int
    public var utilizedFraction: Double { Double(utilizedRank) / Double(max(1, minDim)) }

    enum CodingKeys: String, CodingKey { case name, energy, inputRank, utilizedRank, dataFreeRank, minDim, utilizedFraction }
    public init(name: String, energy: Double, inputRank: Int, utilizedRank: Int, dataFreeRank: Int, minDim: Int) {
        self.name = name; self.energy = energy; self.inputRank = inputRank; self.utilizedRank = utilizedRank
        self.dataFreeRank = dataFreeRank; self.minDim = minDim
    }
    public init(from d: Decoder) throws {
        let c = try d.container(keyedBy: CodingKeys.self)
        self.init(name: try c.decode(String.self, forKey: .name), energy: try c.decode(Double.self, forKey: .energy),
                  inputRank: try c.decode(Int.self, forKey: .inputRank), utilizedRank: try c.decode(Int.self, forKey: .utilizedRank),
                  dataFreeRank: try c.decode(Int.self, forKey: .dataFreeRank), minDim: try c.decode(Int.self, forKey: .minDim))
    }
    public func encode(to e: Encoder) throws {
        var c = e.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name); try c.encode(energy, forKey: .energy); try c.encode(inputRank, forKey: .inputRank)
        try c.encode(utilizedRank, forKey: .utilizedRank); try c.encode(dataFreeRank, forKey: .dataFreeRank)
        try c.encode(minDim, forKey: .minDim); try c.encode(utilizedFraction, forKey: .utilizedFraction)
    }
}

public enum DataDrivenUtilization {
    /// `weight` is [out, in] row-major; `inputs` is either activations X [N, in] or a covariance [in, in]. An
    /// [in, in] array is taken as a covariance when it is symmetric (to 1e-6 of its largest entry), otherwise as
    /// `in` samples of activations. All-zero inputs use no input dimension: input and utilized rank 0.
    public static func analyze(name: String, weight: [Float], out: Int, inn: Int, inputs: [Float], inputShape: [Int],
                               energy: Double) throws -> DataUtilization {
        guard inputShape.count == 2, inputShape[1] == inn, inputShape[0] > 0 else {
            throw DataUtilizationError("activations for \(name) must be [N, \(inn)] or [\(inn), \(inn)], got \(inputShape)")
        }
        if let i = weight.firstIndex(where: { !$0.isFinite }) {
            throw DataUtilizationError("the weight holds \(weight[i]) at [\(i / inn), \(i % inn)]", inWeight: true)
        }
        if let i = inputs.firstIndex(where: { !$0.isFinite }) {
            throw DataUtilizationError("activations for \(name) hold \(inputs[i]) at [\(i / inn), \(i % inn)]; they must be finite")
        }
        // Covariance C = XᵀX / N (or given).
        var c = [Double](repeating: 0, count: inn * inn)
        if inputShape == [inn, inn] && isSymmetric(inputs, inn) {
            c = inputs.map(Double.init)
        } else {
            let n = inputShape[0]
            let x = inputs.map(Double.init)
            x.withUnsafeBufferPointer { xp in c.withUnsafeMutableBufferPointer { cp in
                Linalg.gemm(xp.baseAddress!, xp.baseAddress!, cp.baseAddress!, m: inn, n: inn, k: n, transA: true, alpha: 1 / Double(max(1, n)))
            } }
        }
        let (vals, vecs) = try Linalg.symmetricEigen(c, n: inn)
        // A covariance is positive semi-definite; round-off may leave eigenvalues a little below zero, no more.
        if let low = vals.last, let high = vals.first, low < -1e-6 * max(high, 0) - Double.leastNormalMagnitude {
            throw DataUtilizationError(String(format: "the covariance given for %@ is not positive semi-definite (smallest eigenvalue %.3g, largest %.3g)",
                                              name, low, high))
        }
        let total = vals.reduce(0) { $0 + max(0, $1) }
        var acc = 0.0, k = 0
        if total > 0 { for v in vals { if acc >= energy * total { break }; acc += max(0, v); k += 1 } }
        // W · U_k (out × k): its singular values are those of W restricted to the input subspace.
        var proj = [Float](repeating: 0, count: out * k)
        for r in 0..<out {
            for j in 0..<k {
                var s = 0.0
                let u = vecs[j]
                for i in 0..<inn { s += Double(weight[r * inn + i]) * u[i] }
                proj[r * k + j] = Float(s)
            }
        }
        let svP = k > 0 ? try SpectrumAnalyzer.singularValues(proj, rows: out, cols: k).values : []
        let svW = try SpectrumAnalyzer.singularValues(weight, rows: out, cols: inn).values
        func rank(_ sv: [Double]) -> Int {
            let e = sv.map { $0 * $0 }, t = e.reduce(0, +)
            var a = 0.0, r = 0
            if t > 0 { for x in e { if a >= energy * t { break }; a += x; r += 1 } }
            return r
        }
        return DataUtilization(name: name, energy: energy, inputRank: k, utilizedRank: rank(svP), dataFreeRank: rank(svW), minDim: min(out, inn))
    }
}

extension DataDrivenUtilization {
    static func isSymmetric(_ a: [Float], _ n: Int) -> Bool {
        let scale = a.reduce(Float(0)) { max($0, abs($1)) }
        for i in 0..<n { for j in (i + 1)..<n where abs(a[i * n + j] - a[j * n + i]) > 1e-6 * scale { return false } }
        return true
    }
}

public struct DataUtilizationError: Error, CustomStringConvertible {
    public let description: String
    /// The weight is at fault (non-finite), not the activations.
    public let inWeight: Bool
    public init(_ s: String, inWeight: Bool = false) { description = s; self.inWeight = inWeight }
}
