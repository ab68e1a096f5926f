import Foundation
import WscanKernels
import WscanFormats

/// Singular-value spectra and the metrics derived from them. Pure functions of matrices: no file access.
public enum SpectrumMethod: String, Codable, Sendable {
    case gesdd = "dgesdd"                 // exact dense SVD in Double (small matrices)
    case gram = "gram-dsyevd"             // exact: eigenvalues of WᵀW (smaller side) in Double, one-stage eigensolver
    case gram2stage = "gram-dsyevd_2stage" // the same above order 1024 (Linalg.gramOneStageMax), two-stage
    case randomized = "randomized"        // top singular values with a stated bound, when the Gram matrix does not fit

    /// The Gram route's method for a smaller side of k.
    public static func gram(k: Int) -> SpectrumMethod { k > Linalg.gramOneStageMax ? .gram2stage : .gram }

    /// The short name tables show for a stored method: svd, gram or randomized.
    public static func label(_ raw: String) -> String {
        switch SpectrumMethod(rawValue: raw) {
        case .gesdd?: return "svd"
        case .gram?, .gram2stage?: return "gram"
        case .randomized?: return "randomized"
        case nil: return raw
        }
    }
}

/// An energy fraction as a percentage label, the same everywhere: 0.9 → "90%", 0.57 → "57%", 0.995 → "99.5%".
public func energyPercent(_ f: Double) -> String {
    let p = (f * 100 * 100).rounded() / 100
    return p == p.rounded() ? "\(Int(p))%" : String(format: "%g%%", p)
}

public struct SpectrumOptions: Sendable {
    public var energies: [Double] = [0.9, 0.95, 0.99]
    /// Conv kernels: pool the eigenvalues of all kh·kw slices (WeightWatcher's default) or one result per slice.
    public var convPerSlice = false
    public var randomize = true          // rand_distance against an element-shuffled copy
    public var seed: UInt64 = 0
    public var weloreThreshold: Double? = nil
    /// Bytes a Gram matrix (and its eigensolver) may take; larger matrices take the randomized method. nil: half
    /// of the physical memory.
    public var gramMemoryLimit: Int? = nil
    /// Singular values the randomized method computes.
    public var randomizedRank = 256
    /// The randomized sketch's width before clamping to min(m, n): the rank oversampled by 16 (saturating).
    public var sketchWidth: Int { randomizedRank.addingSaturating(16) }
    public init() {}

    /// Whether a rows×cols matrix is too large for the exact Gram route: its k×k float64 Gram matrix plus the
    /// eigensolver's copy, 16·k² bytes for k = min(rows, cols).
    /// Half of the physical memory: the default Gram memory limit and the spectrum runner's memory budget.
    public static var halfPhysicalMemory: Int { Int(min(ProcessInfo.processInfo.physicalMemory / 2, UInt64(Int.max))) }
    /// `gramMemoryLimit`, or its default.
    public var gramLimit: Int { gramMemoryLimit ?? Self.halfPhysicalMemory }

    public func needsRandomized(rows: Int, cols: Int) -> Bool {
        let k = min(rows, cols)
        guard k > 64 else { return false }
        let limit = gramLimit
        let (need, overflow) = (16 * k).multipliedReportingOverflow(by: k)
        return overflow || need > limit
    }
    /// The options a stored result for a rows×cols matrix depends on (energies are recomputed from stored singular
    /// values instead). The Gram limit matters only through the method it selects: a layer analysed exactly under
    /// one limit is re-used under any other limit that keeps it exact.
    /// A limit under which a rank-deficient matrix's dgesdd redo does not fit changes the result too (the Gram
    /// route's values are kept, with a warning), so it is part of the key for such shapes.
    public func storageKey(rows: Int, cols: Int) -> String {
        let k = min(rows, cols)
        return (randomize ? "rand_distance seed \(seed)" : "no rand_distance") + (convPerSlice ? ", conv per slice" : ", conv pooled")
            + (needsRandomized(rows: rows, cols: cols) ? ", randomized rank \(randomizedRank) seed \(seed)"
               : k > 64 && !SpectrumAnalyzer.denseCopyFits(rows: rows, cols: cols, limit: gramLimit) ? ", no dgesdd redo" : "")
    }
    /// The key of a tensor of this shape (conv kernels: out × in per slice).
    public func storageKey(shape: [Int]) -> String {
        shape.count >= 2 ? storageKey(rows: shape[0], cols: shape[1]) : storageKey(rows: 0, cols: 0)
    }
}

/// A matrix (or, for conv kernels, the stack of kh·kw slices) pulled out of a tensor.
public struct WeightMatrix: Sendable {
    public var name: String
    public var shape: [Int]
    public var rows: Int, cols: Int
    public var slices: [[Float]]   // each rows×cols, row-major
    public var kind: String        // linear | embedding | conv
}

public enum MatrixExtractor {
    /// Why a tensor is not analysed, or nil when it is a matrix (2-D) or a conv kernel (3-D/4-D with small spatial dims).
    public static func skipReason(name: String, shape: [Int], dtype: DType) -> String? {
        if !dtype.isFloatingPoint { return "not a floating-point tensor (\(dtype.rawValue))" }
        switch shape.count {
        case 0, 1: return "\(shape.count)-D tensor (bias, norm or scalar): no spectrum"
        case 2:
            // A 1×n matrix has one singular value (its norm); an empty one has none.
            if shape.contains(0) { return "empty matrix \(shape): no spectrum" }
            return nil
        case 3, 4:
            // PyTorch conv layout (out, in, k…), kernel sides up to 11 (AlexNet's first layer); other 3-D/4-D
            // tensors (stacked matrices, image-like buffers) are not conv kernels.
            if shape.contains(0) { return "empty tensor \(shape): no spectrum" }
            let k = Array(shape.dropFirst(2))
            guard k.allSatisfy({ $0 >= 1 && $0 <= 11 }) else { return "\(shape.count)-D tensor with kernel dims \(k) > 11: not treated as a conv kernel" }
            if shape[1] == 1 { return "depthwise conv kernel (1 input channel): each slice is a vector, no spectrum" }
            if shape[0] < 2 { return "conv kernel with 1 output channel: each slice is a vector, no spectrum" }
            return nil
        default: return "\(shape.count)-D tensor: no spectrum"
        }
    }

    public static func kind(name: String, shape: [Int]) -> String {
        if shape.count > 2 { return "conv" }
        let l = name.lowercased()
        if l.contains("embed") || l.contains("wte") || l.contains("wpe") || l.contains("tok_embeddings") { return "embedding" }
        return "linear"
    }

    /// Builds the matrix (or conv slices) from decoded row-major values.
    public static func matrix(name: String, shape: [Int], values: [Float]) -> WeightMatrix {
        if shape.count == 2 {
            return WeightMatrix(name: name, shape: shape, rows: shape[0], cols: shape[1], slices: [values], kind: kind(name: name, shape: shape))
        }
        // (out, in, k1[, k2]) → kh·kw slices W[:, :, i, j], each out×in.
        let out = shape[0], inn = shape[1]
        let spatial = shape.dropFirst(2).reduce(1, *)
        var slices = [[Float]](repeating: [Float](repeating: 0, count: out * inn), count: spatial)
        for o in 0..<out {
            for i in 0..<inn {
                let base = (o * inn + i) * spatial
                for s in 0..<spatial { slices[s][o * inn + i] = values[base + s] }
            }
        }
        return WeightMatrix(name: name, shape: shape, rows: out, cols: inn, slices: slices, kind: "conv")
    }

    /// A conv kernel as one matrix per kh·kw slice, named `name[i,j]` (`name[k]` for 1-D kernels), for per-slice
    /// analysis (WeightWatcher's ww2x mode).
    public static func perSlice(_ m: WeightMatrix) -> [WeightMatrix] {
        guard m.slices.count > 1 || m.shape.count > 2 else { return [m] }
        let kw = m.shape.count == 4 ? m.shape[3] : 1
        return m.slices.enumerated().map { s, v in
            let label = m.shape.count == 4 ? "\(s / kw),\(s % kw)" : "\(s)"
            return WeightMatrix(name: "\(m.name)[\(label)]", shape: [m.rows, m.cols], rows: m.rows, cols: m.cols, slices: [v], kind: "conv")
        }
    }
}

public struct SpectrumMetrics: Codable, Sendable {
    // Norms and ranks
    public var frobeniusNorm: Double
    public var spectralNorm: Double
    public var stableRank: Double              // Σσ² / σ²max
    public var effectiveRank: Double           // Roy–Vetterli: exp(H(σ/Σσ))
    public var numericalRank: Int              // σ > σmax · max(m,n) · ε(float32)
    public var energyRanks: [Int]              // smallest k holding each requested energy fraction of Σσ²
    public var utilization: [Double]           // energyRanks / min(m,n)
    // WeightWatcher set (eigenvalues λ = σ²)
    public var logNorm: Double                 // log10 Σλ
    public var logSpectralNorm: Double         // log10 λmax
    public var alpha: Double?                  // power-law exponent (Clauset et al.)
    public var alphaWeighted: Double?          // α · log10 λmax
    public var logAlphaNorm: Double?           // log10 Σ λ^α
    public var xmin: Double?
    public var xmax: Double?
    public var ksDistance: Double?             // D of the best fit
    public var numPlSpikes: Int?               // eigenvalues ≥ xmin
    public var entropy: Double                 // matrix entropy
    public var numSpikes: Int?                 // eigenvalues above the Marchenko–Pastur bulk edge
    public var sigmaMP: Double?
    public var mpSoftrank: Double?             // λ+ / λmax
    public var lambdaPlus: Double?
    public var randDistance: Double?           // Jensen–Shannon distance to the ESD of an element-shuffled W
    public var numEvals: Int
}

public struct MatrixSpectrum: Codable, Sendable {
    public var name: String
    public var shape: [Int]
    public var rows: Int
    public var cols: Int
    public var slices: Int
    public var kind: String
    public var method: String
    public var singularValues: [Double]        // descending; pooled over slices for conv kernels
    public var metrics: SpectrumMetrics
    public var warnings: [String]
    public var seconds: Double

    public init(name: String, shape: [Int], rows: Int, cols: Int, slices: Int, kind: String, method: String,
                singularValues: [Double], metrics: SpectrumMetrics, warnings: [String], seconds: Double) {
        self.name = name; self.shape = shape; self.rows = rows; self.cols = cols; self.slices = slices; self.kind = kind
        self.method = method; self.singularValues = singularValues; self.metrics = metrics; self.warnings = warnings; self.seconds = seconds
    }
}

/// A matrix the analysis leaves out for a stated reason (not a failure).
public struct SpectrumSkip: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// A matrix holding NaN or ±Inf has no spectrum; LAPACK would reject it or return garbage.
public struct NonFiniteMatrix: Error, CustomStringConvertible {
    public var nan: Int, inf: Int
    public var description: String { "\(nan) NaN and \(inf) ±Inf values: no spectrum" }
}

public enum SpectrumAnalyzer {
    /// Singular values (descending) of a rows×cols row-major matrix, exact, in Double.
    ///
    /// The Gram route squares the condition number: an eigenvalue of WᵀW is exact to about ε₆₄·σ₁², so σᵢ is
    /// exact to 1e-4 relative only while σᵢ/σ₁ ≳ 1e-5. A matrix with more than 1% of its values below that (low
    /// rank: a LoRA delta) is decomposed again by dgesdd in Double when its Double copy fits in `denseLimit` bytes.
    public static func singularValues(_ a: [Float], rows: Int, cols: Int, denseLimit: Int? = nil) throws -> (values: [Double], method: SpectrumMethod) {
        let r = try decompose(a, rows: rows, cols: cols, denseLimit: denseLimit)
        return (r.values, r.method)
    }

    /// `singularValues`, and the warning when a rank-deficient matrix's dgesdd redo does not fit in `denseLimit`.
    static func decompose(_ a: [Float], rows: Int, cols: Int, denseLimit: Int?) throws -> (values: [Double], method: SpectrumMethod, warning: String?) {
        let k = min(rows, cols)
        func dense() throws -> [Double] { var d = a.map(Double.init); return try Linalg.singularValues(&d, m: rows, n: cols) }
        if k <= 64 { return (try dense(), .gesdd, nil) }
        let ev = try a.withUnsafeBufferPointer { try Linalg.gramEigenvalues($0.baseAddress!, m: rows, n: cols) }
        // Only when such values reach into the top 99% (the accuracy promised): one zero row, a dead neuron, leaves a
        // single value at the floor, which the Gram route gets right to within ~1e-8·σ₁ and no metric notices.
        if let top = ev.first, top > 0, case let low = ev.filter({ $0 < top * 1e-10 }).count, low > k / 100 {
            let limit = denseLimit ?? SpectrumOptions.halfPhysicalMemory
            if denseCopyFits(rows: rows, cols: cols, limit: limit) { return (try dense(), .gesdd, nil) }
            return (ev.map { $0.squareRoot() }, .gram(k: k),
                    "\(low) singular values below 1e-5·σ₁ (rank-deficient): the Gram route gives them only to ~1e-8·σ₁ absolute, and the dgesdd redo that would make them exact needs a \(rows)×\(cols) float64 copy, over the Gram memory limit (--gram-memory)")
        }
        return (ev.map { $0.squareRoot() }, .gram(k: k), nil)
    }

    /// Whether a rank-deficient rows×cols matrix is decomposed again by dgesdd: its float64 copy (with dgesdd's
    /// work) fits in `limit`.
    public static func denseCopyFits(rows: Int, cols: Int, limit: Int) -> Bool {
        let (n, overflow) = rows.multipliedReportingOverflow(by: cols)
        return !overflow && n <= limit / 12
    }

    static func alphaWarnings(_ alpha: Double?) -> [String] {
        guard let a = alpha else { return [] }
        if a < 2 { return [String(format: "alpha %.2f < 2: possibly over-trained (very heavy-tailed)", a)] }
        if a > 6 { return [String(format: "alpha %.2f > 6: possibly under-trained (little correlation)", a)] }
        return []
    }

    /// The warning of a randomized result whose energy ranks reach past its computed values.
    public static let lowerBoundWarning = "some energy fractions need more than the top"
    public static func lowerBoundNote(_ n: Int) -> String { "\(lowerBoundWarning) \(n) values: their ranks are lower bounds" }
    /// Whether a randomized spectrum's energy ranks are lower bounds: some fraction is not reached within its values,
    /// and they miss energy: more than 1e-6 of it, above the float32 products' rounding (an exactly low-rank matrix,
    /// whose values are all of its spectrum, misses ~1e-8).
    public static func ranksAreLowerBounds(_ sv: [Double], energyRanks: [Int], totalEnergy: Double) -> Bool {
        energyRanks.contains(sv.count) && totalEnergy - sv.reduce(0) { $0 + $1 * $1 } > 1e-6 * totalEnergy
    }

    public static func analyze(_ w: WeightMatrix, options: SpectrumOptions = SpectrumOptions()) throws -> MatrixSpectrum {
        let t0 = Date()
        var nan = 0, inf = 0
        for s in w.slices { for x in s where !x.isFinite { if x.isNaN { nan += 1 } else { inf += 1 } } }
        if nan + inf > 0 { throw NonFiniteMatrix(nan: nan, inf: inf) }
        var sv: [Double] = []
        var method = SpectrumMethod.gesdd
        var warnings: [String] = []
        if w.slices.count > 1 && options.needsRandomized(rows: w.rows, cols: w.cols) {
            throw SpectrumSkip("the pooled slices' Gram matrices exceed the Gram memory limit; --conv-slices analyses each slice (randomized)")
        }
        if w.slices.count == 1 && options.needsRandomized(rows: w.rows, cols: w.cols) {
            // Too large for the exact Gram route in the memory allowed: the top singular values with their bound;
            // norms and energy fractions use the exact ‖W‖²_F, the other metrics only the computed part.
            let r = try RandomizedSpectrum.compute(w.slices[0], rows: w.rows, cols: w.cols, rank: options.randomizedRank, seed: options.seed)
            var metrics = computeMetrics(r.values, rows: w.rows, cols: w.cols, energies: options.energies, totalEnergy: r.frobeniusSquared)
            warnings.append(r.note)
            warnings.append("alpha, entropy, effective rank and the MP fit use the top \(r.values.count) values only; no rand_distance")
            if ranksAreLowerBounds(r.values, energyRanks: metrics.energyRanks, totalEnergy: r.frobeniusSquared) { warnings.append(lowerBoundNote(r.values.count)) }
            metrics.randDistance = nil
            warnings += alphaWarnings(metrics.alpha)
            return MatrixSpectrum(name: w.name, shape: w.shape, rows: w.rows, cols: w.cols, slices: 1, kind: w.kind,
                                  method: SpectrumMethod.randomized.rawValue, singularValues: r.values, metrics: metrics,
                                  warnings: warnings, seconds: Date().timeIntervalSince(t0))
        }
        var methods: [SpectrumMethod: Int] = [:]
        for s in w.slices {
            let d = try decompose(s, rows: w.rows, cols: w.cols, denseLimit: options.gramMemoryLimit)
            sv += d.values; methods[d.method, default: 0] += 1
            // once per layer (the first such slice's counts)
            if let note = d.warning, !warnings.contains(where: { $0.hasPrefix("some slices: ") }) { warnings.append(w.slices.count > 1 ? "some slices: " + note : note) }
        }
        // Pooled slices may take different routes (a rank-deficient slice goes to dgesdd): the Gram route is named
        // when any slice took it, and a warning counts the slices per method.
        method = methods[.gram2stage] != nil ? .gram2stage : methods[.gram] != nil ? .gram : .gesdd
        if methods.count > 1 {
            warnings.append("pooled slices decomposed by " + methods.sorted { $0.key.rawValue < $1.key.rawValue }
                .map { "\($0.key.rawValue) (\($0.value))" }.joined(separator: " and "))
        }
        if w.slices.count > 1 { sv.sort(by: >) }
        var metrics = computeMetrics(sv, rows: w.rows, cols: w.cols, slices: w.slices.count, energies: options.energies)
        if options.randomize {
            metrics.randDistance = try randDistance(w, sv: sv, seed: options.seed)
        }
        warnings += alphaWarnings(metrics.alpha)
        return MatrixSpectrum(name: w.name, shape: w.shape, rows: w.rows, cols: w.cols, slices: w.slices.count, kind: w.kind,
                              method: method.rawValue, singularValues: sv, metrics: metrics, warnings: warnings,
                              seconds: Date().timeIntervalSince(t0))
    }

    /// `totalEnergy`, when given, is the exact Σσ² (‖W‖²_F) of a spectrum known only in part (randomized method).
    public static func computeMetrics(_ sv: [Double], rows: Int, cols: Int, slices: Int = 1, energies: [Double],
                                      totalEnergy: Double? = nil) -> SpectrumMetrics {
        let k = min(rows, cols)
        let evals = sv.map { $0 * $0 }
        let total = totalEnergy ?? evals.reduce(0, +)
        let smax = sv.first ?? 0
        let lmax = smax * smax
        let l1 = sv.reduce(0, +)
        var h = 0.0
        if l1 > 0 { for s in sv where s > 0 { let p = s / l1; h -= p * log(p) } }
        let tol = smax * Double(max(rows, cols)) * Double(Float.ulpOfOne)
        let nrank = sv.filter { $0 > tol }.count
        var eranks: [Int] = []
        for e in energies {
            var acc = 0.0, r = 0
            for v in evals { if acc >= e * total && r > 0 { break }; acc += v; r += 1 }
            eranks.append(total > 0 ? r : 0)
        }
        let util = eranks.map { Double($0) / Double(k * slices) }
        let fit = PowerLawFit.fit(evals)
        let mp = MarchenkoPastur.fit(evals, rows: rows, cols: cols)
        return SpectrumMetrics(
            frobeniusNorm: total.squareRoot(), spectralNorm: smax,
            stableRank: lmax > 0 ? total / lmax : 0, effectiveRank: l1 > 0 ? exp(h) : 0, numericalRank: nrank,
            energyRanks: eranks, utilization: util,
            logNorm: log10(total), logSpectralNorm: log10(lmax),
            alpha: fit?.alpha, alphaWeighted: fit.map { $0.alpha * log10(lmax) },
            logAlphaNorm: fit.map { a in log10(evals.reduce(0) { $0 + pow($1, a.alpha) }) },
            xmin: fit?.xmin, xmax: fit?.xmax, ksDistance: fit?.D, numPlSpikes: fit?.numTail,
            entropy: MatrixEntropy.entropy(sv, rows: rows, cols: cols),
            numSpikes: mp?.numSpikes, sigmaMP: mp?.sigma, mpSoftrank: mp?.softrank, lambdaPlus: mp?.lambdaPlus,
            randDistance: nil, numEvals: evals.count)
    }

    /// Jensen–Shannon distance between the ESD of W and of W with its elements shuffled (seeded).
    static func randDistance(_ w: WeightMatrix, sv: [Double], seed: UInt64) throws -> Double {
        var rng = SplitMix64(seed: seed)
        // One power-of-two scale for every slice (a shuffle within a slice keeps the slice's largest element), so
        // the pooled eigenvalues of a conv kernel stay on one scale.
        var amax: Float = 0
        for s in w.slices { for x in s { amax = max(amax, abs(x)) } }
        let scale: Float? = amax.isNormal ? Float(sign: .plus, exponent: -amax.exponent, significand: 1) : nil
        var rev: [Double] = []
        for s in w.slices {
            var sh = s
            for i in stride(from: sh.count - 1, to: 0, by: -1) { sh.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            rev += try shuffledEigenvalues(&sh, rows: w.rows, cols: w.cols, scale: scale)
        }
        return ESDDistance.jensenShannon(sv.map { $0 * $0 }, rev)
    }

    /// The eigenvalues of a shuffled copy's Gram matrix, times scale² (`scale`, a power of two that brings the
    /// tensor's largest element near 1, is applied to the copy first; nil: no scaling, float64 only). They only
    /// shape a distribution for the distance, so float32 throughout is enough (ssyrk + ssyevd, half the float64
    /// route's work) while float32's rounding noise, about 1e-7·λ₁ on every eigenvalue, is small beside the
    /// spectrum's bulk. It is not when one direction holds much of the energy (a constant or near-constant
    /// matrix, a mean far from 0 such as unsigned codes, a few huge outliers: the shuffled copy then has a spike
    /// over a bulk 1e-4 of its size, and the noise reaches the distance), so a spectrum whose λ₁ is over 5% of
    /// Σλ is computed again in float64, as are small matrices (min side ≤ 64).
    static func shuffledEigenvalues(_ sh: inout [Float], rows: Int, cols: Int, scale: Float?) throws -> [Double] {
        let k = min(rows, cols)
        if let scale { for i in sh.indices { sh[i] *= scale } }
        if k > 64, scale != nil,
           let ev = try? sh.withUnsafeBufferPointer({ try Linalg.gramEigenvaluesSingle($0.baseAddress!, m: rows, n: cols) }) {
            let total = ev.reduce(0, +)
            if total > 0, ev[0] <= 0.05 * total { return ev }
        }
        return try singularValues(sh, rows: rows, cols: cols).values.map { $0 * $0 }
    }
}

public struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
