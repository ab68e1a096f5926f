import Foundation
import WscanKernels
import WscanFormats

/// Per-tensor evidence for a pair of checkpoints.
public struct TensorEvidence: Codable, Sendable {
    public var name: String
    public var nameB: String
    public var matchedBy: String            // name | shape+position
    public var shape: [Int]
    public var dtypeA: String
    public var dtypeB: String
    public var identicalBytes: Bool
    public var identicalValues: Bool
    public var cosine: Double
    public var relativeL2: Double           // ‖B − A‖ / ‖A‖
    public var maxAbsDiff: Double
    public var signAgreement: Double        // among entries where both are non-zero
    public var newZeros: Int                // B == 0 where A != 0
    public var zerosA: Int
    public var prunedFromA: Bool            // B equals A except for new zeros
    public var prunedFromB: Bool = false    // A equals B except for zeros in A (A is the pruned one)
    public var maxZeroedMagnitude: Double?  // largest |A| that B zeroed
    public var minKeptMagnitude: Double?    // smallest non-zero |A| that B kept
    public var nmPattern: String?           // e.g. "2:4" when every group of M has ≥ N zeros in B
    public var reencodedAs: String?         // "F16" / "BF16" when B is exactly A cast to that type (or A of B)
    public var diff: DiffSpectrum?          // spectrum of B − A for 2-D tensors that differ
    /// "F16"/"BF16" when B is A pruned (or low-rank updated) and then stored in that narrower type: the pruning is
    /// exact up to that rounding, and the difference's rank discounts the rounding energy.
    public var alsoReencodedAs: String? = nil
    /// Identical tensors whose values are all the same (zeros, ones): equal by initialisation, not by descent.
    public var constant: Bool = false
    /// A Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 side that is not the other side requantized: ‖quantized − requantized other‖ divided
    /// by the requantization's own error ‖requantized − other‖. Above 2 it was quantized from different weights.
    public var requantExcess: Double? = nil
    /// A Q8_0, legacy or k-quant side against a float side: of `roundingBlocks` blocks tested (32 elements sharing a
    /// scale; 16 for Q2_K, Q3_K and Q6_K), how many no rounding of the float side could have produced
    /// (GGMLQuant.unroundedBlocks). Any beyond a stray one mean B was quantized from other weights.
    public var unroundedBlocks: Int? = nil
    public var roundingBlocks: Int? = nil
    /// When a quantized copy of the float side's weights explains the blocks (the file was requantized from a
    /// Q8_0, Q5_0, … file), that copy ("Q8_0", "Q5_0 of F16"); `unroundedBlocks` then counts the failures against it,
    /// and `requantizedBlocks` how many fewer than against the weights themselves.
    public var requantizedFrom: String? = nil
    public var requantizedBlocks: Int? = nil

    /// Positions where the sides differ and one of them is NaN/±Inf (left out of cosine, L2 and max |Δ|).
    public var nonFiniteChanged: Int = 0

    /// Quantized from weights other than the float side's: more than one block, and more than 0.1% of those tested,
    /// that no rounding quantizer could have produced from them.
    public var quantizedFromOther: Bool {
        guard let bad = unroundedBlocks, let n = roundingBlocks else { return false }
        return bad >= 2 && Double(bad) > 0.001 * Double(n)
    }
}

public struct DiffSpectrum: Codable, Sendable {
    public var stableRank: Double
    public var effectiveRank: Double
    public var energyTop: [String: Double]   // "1", "4", "16" → share of ‖Δ‖² in the top-k singular directions
    public var rank: Int                     // singular values needed for 1 − 1e-6 of ‖Δ‖²
    public var minDim: Int
}

public struct Verdict: Codable, Sendable {
    public var kind: String                  // identical | subset | corrupted | reencoded | pruned | lora_merged | permuted | finetuned | independent | incomparable
    public var confidence: Double
    public var summary: String
    public var evidence: [String]
    public var details: [String: String]
}

public struct ConnectivityCurve: Codable, Sendable {
    public var lambdas: [Double]
    public var loss: [Double]?
    public var accuracy: [Double]?
    public var metric: [Double]?
    public var barrier: Double?               // max_λ L(λ) − ½(L(0) + L(1)) on the loss (or −metric)
    public var distance: Double               // ‖θ_B − θ_A‖ over interpolated tensors
    public var higherIsBetter: Bool? = nil    // the evaluator's metric direction (nil without an evaluator)
    public var nanAt: [Double]? = nil         // λ where the evaluator returned NaN (then there is no barrier)
    public var barrierOn: String? = nil       // "loss" (max L − ½(L(0)+L(1))) or "metric" (its drop, oriented by higherIsBetter)
}

public struct Connectivity: Codable, Sendable {
    public var evaluator: String?
    public var before: ConnectivityCurve
    public var after: ConnectivityCurve?
    public var note: String
    public init(evaluator: String?, before: ConnectivityCurve, after: ConnectivityCurve?, note: String) {
        self.evaluator = evaluator; self.before = before; self.after = after; self.note = note
    }
}

public struct CompareResult: Codable, Sendable {
    public var a: String
    public var b: String
    public var tensors: [TensorEvidence]
    public var onlyInA: [String]
    public var onlyInB: [String]
    public var verdict: Verdict
    public var independence: IndependenceTest?
    public var alignment: AlignmentResult?
    public var aligned: [TensorEvidence]?     // evidence after alignment (permuted copies)
    public var connectivity: Connectivity?
    /// About files written along the way (--write-aligned): tensors whose dtype could not be kept exactly.
    public var notes: [String]? = nil

    public init(a: String, b: String, tensors: [TensorEvidence], onlyInA: [String], onlyInB: [String], verdict: Verdict,
                independence: IndependenceTest?, alignment: AlignmentResult?, aligned: [TensorEvidence]?, connectivity: Connectivity?) {
        self.a = a; self.b = b; self.tensors = tensors; self.onlyInA = onlyInA; self.onlyInB = onlyInB; self.verdict = verdict
        self.independence = independence; self.alignment = alignment; self.aligned = aligned; self.connectivity = connectivity
    }
}

public enum Comparator {
    /// How a pair is matched when B holds the matrix transposed (B's values are compared transposed back): by name,
    /// or by position among the tensors whose names differ.
    public static let transposedMatch = "name+transposed"
    public static let transposedByPosition = "shape+position+transposed"
    public static let transposedByValues = "shape+values+transposed"
    public static func isTransposed(_ how: String) -> Bool { how.hasSuffix("+transposed") }

    /// Whether B (square, same name and shape) is A's transpose rather than A: it differs from A, its transpose is
    /// close to A (cosine ≥ 0.9 on a strided sample), clearly closer than B itself.
    public static func looksTransposed(_ a: [Float], _ b: [Float], side n: Int) -> Bool {
        guard a.count == n * n, b.count == n * n, n > 1, a != b else { return false }
        var d = 0.0, dt = 0.0, x2 = 0.0, y2 = 0.0
        let step = max(1, (n * n) / 65536)
        var k = 0
        while k < n * n {
            let x = Double(a[k]), y = Double(b[k]), yt = Double(b[(k % n) * n + k / n])
            if x.isFinite && y.isFinite && yt.isFinite { d += x * y; dt += x * yt; x2 += x * x; y2 += y * y }
            k += step
        }
        guard x2 > 0, y2 > 0 else { return false }
        let c = d / (x2 * y2).squareRoot(), ct = dt / (x2 * y2).squareRoot()
        return ct >= 0.9 && ct > c + 0.1
    }

    public static func transpose(_ v: [Float], rows: Int, cols: Int) -> [Float] {
        var o = [Float](repeating: 0, count: v.count)
        for r in 0..<rows { for c in 0..<cols { o[c * rows + r] = v[r * cols + c] } }
        return o
    }

    /// Pairs tensors by name (a matrix stored transposed too), then by shape and position among the rest; says
    /// which was used.
    public static func matchTensors(_ a: [TensorInfo], _ b: [TensorInfo]) -> (pairs: [(TensorInfo, TensorInfo, String)], onlyA: [String], onlyB: [String]) {
        var pairs: [(TensorInfo, TensorInfo, String)] = []
        let bByName = Dictionary(b.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
        var usedB = Set<String>()
        var restA: [TensorInfo] = []
        for t in a {
            if let u = bByName[t.name], u.shape == t.shape { pairs.append((t, u, "name")); usedB.insert(u.name) }
            // One side stores the matrix transposed ([in, out], as GPT-2's Conv1D; [out, in], as nn.Linear): the
            // caller compares B transposed back.
            else if let u = bByName[t.name], t.shape.count == 2, u.shape == [t.shape[1], t.shape[0]] {
                pairs.append((t, u, Self.transposedMatch)); usedB.insert(u.name)
            } else { restA.append(t) }
        }
        // A name both sides have, with another shape, is a reshaped tensor: it is reported as such on both sides,
        // never paired by shape with some other tensor.
        let aNames = Set(a.map(\.name))
        var restB = b.filter { !usedB.contains($0.name) && !aNames.contains($0.name) }
        let reshapedB = b.filter { !usedB.contains($0.name) && aNames.contains($0.name) }.map(\.name)
        var unmatchedA: [String] = []
        // by position in the natural order of each side's names (h.2 before h.10), the same shape first, else the
        // transposed one (a renamed export that also changed the layout)
        restB.sort { PermSpecInference.naturalLess($0.name, $1.name) }
        var pending: [TensorInfo] = []
        for t in restA.sorted(by: { PermSpecInference.naturalLess($0.name, $1.name) }) {
            if bByName[t.name] == nil, let k = restB.firstIndex(where: { $0.shape == t.shape }) { pairs.append((t, restB[k], "shape+position")); restB.remove(at: k) }
            else if bByName[t.name] == nil, t.shape.count == 2 { pending.append(t) }
            else { unmatchedA.append(t.name) }
        }
        for t in pending {
            if let k = restB.firstIndex(where: { $0.shape == [t.shape[1], t.shape[0]] }) { pairs.append((t, restB[k], transposedByPosition)); restB.remove(at: k) }
            else { unmatchedA.append(t.name) }
        }
        return (pairs, unmatchedA, restB.map(\.name) + reshapedB)
    }

    /// Tensors that `matchTensors` paired by shape and position (names differ, e.g. Hugging Face vs llama.cpp, and
    /// so may the order) are re-paired within each shape by their values, the most similar first (cosine on a
    /// strided sample of at most ~8192 elements); those pairs are marked "shape+values".
    public static func repairByValues(_ pairs: inout [(TensorInfo, TensorInfo, String)],
                                      valuesA: (TensorInfo) throws -> [Float], valuesB: (TensorInfo) throws -> [Float]) rethrows {
        // Groups of one shape and its transpose: a renamed export may also store matrices transposed (GPT-2's Conv1D
        // [in, out] converted to [out, in]), and then c_fc [64, 256] meets ffn_down [64, 256] and ffn_up [256, 64].
        let positional = pairs.indices.filter { pairs[$0].2 == "shape+position" || pairs[$0].2 == transposedByPosition }
        let groups = Dictionary(grouping: positional, by: { i -> [Int] in let s = pairs[i].0.shape; return s.count == 2 ? s.sorted() : s })
        for (_, idx) in groups where idx.count > 1 || pairs[idx[0]].2 == transposedByPosition {
            let ta = idx.map { pairs[$0].0 }, tb = idx.map { pairs[$0].1 }
            // Every tensor is decoded once and only its sample is kept (a group of one shape can be most of a model).
            // A's sample: elements 0, step, 2·step, … of each; B's: the same positions read in each A shape's layout
            // (transposed when B's shape is that shape transposed, not for square ones, whose transposition the
            // caller checks).
            let shapesA = Array(Set(ta.map(\.shape))).sorted { $0.lexicographicallyPrecedes($1) }
            func positions(_ s: [Int], count n: Int) -> (step: Int, cols: Int, rows: Int) {
                let cols = s.count == 2 ? s[1] : 1
                return (max(1, n / 8192), cols, n / max(1, cols))
            }
            var sa: [[Float]] = [], na: [Int] = []
            for t in ta {
                let v = try valuesA(t), (step, _, _) = positions(t.shape, count: v.count)
                sa.append(stride(from: 0, to: v.count, by: step).map { v[$0] }); na.append(v.count)
            }
            var sb: [[[Int]: [Float]]] = []      // per B tensor, per A shape it can be read in: its sample
            for t in tb {
                let v = try valuesB(t)
                var out: [[Int]: [Float]] = [:]
                for s in shapesA {
                    guard let n = ta.indices.first(where: { ta[$0].shape == s }).map({ na[$0] }), v.count == n else { continue }
                    let flip = s.count == 2 && t.shape == [s[1], s[0]] && s[0] != s[1]
                    guard flip || t.shape == s else { continue }
                    let (step, cols, rows) = positions(s, count: n)
                    out[s] = stride(from: 0, to: n, by: step).map { k in v[flip ? (k % cols) * rows + k / cols : k] }
                }
                sb.append(out)
            }
            var sims: [(Double, Int, Int)] = []
            for i in ta.indices { for j in tb.indices {
                guard let y = sb[j][ta[i].shape], y.count == sa[i].count else { continue }
                var d = 0.0, x2 = 0.0, y2 = 0.0
                for (xf, yf) in zip(sa[i], y) {
                    let x = Double(xf), y = Double(yf)
                    if x.isFinite && y.isFinite { d += x * y; x2 += x * x; y2 += y * y }
                }
                sims.append((x2 > 0 && y2 > 0 ? d / (x2 * y2).squareRoot() : (x2 == y2 ? 1 : 0), i, j))
            } }
            // Only a clear likeness re-pairs (a copy, a re-encoding, a fine-tune: cosine ≥ 0.5). Weights whose units
            // were permuted look unrelated element by element, as two different tensors do: those keep their order.
            var usedA = Set<Int>(), usedB = Set<Int>()
            for (c, i, j) in sims.sorted(by: { ($0.0, -$0.1, -$0.2) > ($1.0, -$1.1, -$1.2) }) where c >= 0.5 && !usedA.contains(i) && !usedB.contains(j) {
                usedA.insert(i); usedB.insert(j)
                pairs[idx[i]] = (ta[i], tb[j], tb[j].shape == ta[i].shape ? "shape+values" : transposedByValues)
            }
            // The rest in natural order on each side (`h.2` before `h.10`, `blk_02` before `blk_10`, whatever the
            // files' order), the same shape first; in a group of one shape and its transpose every pair fits.
            var restA = ta.indices.filter { !usedA.contains($0) }.sorted { PermSpecInference.naturalLess(ta[$0].name, ta[$1].name) }
            var restB = tb.indices.filter { !usedB.contains($0) }.sorted { PermSpecInference.naturalLess(tb[$0].name, tb[$1].name) }
            let slots = restA.map { idx[$0] }.sorted()          // the leftover pairs' places in `pairs`
            var order: [(Int, Int)] = []
            for i in restA { if let k = restB.firstIndex(where: { tb[$0].shape == ta[i].shape }) { order.append((i, restB.remove(at: k))) } }
            restA.removeAll { i in order.contains { $0.0 == i } }
            for (i, j) in zip(restA, restB) { order.append((i, j)) }
            for (k, (i, j)) in order.enumerated() {
                pairs[slots[k]] = (ta[i], tb[j], tb[j].shape == ta[i].shape ? "shape+position" : transposedByPosition)
            }
        }
    }

    public static func evidence(name: String, nameB: String, matchedBy: String, shape: [Int], dtypeA: DType, dtypeB: DType,
                                hashA: String?, hashB: String?, a: [Float], b: [Float]) throws -> TensorEvidence {
        var dot = 0.0, na = 0.0, nb = 0.0, nd = 0.0, maxd = 0.0
        var signSame = 0, signBoth = 0, newZeros = 0, zerosA = 0
        var pruned = true, identical = true, prunedB = true, zerosNewInA = 0
        var maxZeroed = -1.0, minKept = Double.infinity
        var nonFinite = 0, infAsFinite = 0
        for i in a.indices {
            let x = Double(a[i]), y = Double(b[i])
            // A NaN/±Inf on either side stays out of the sums (one NaN made the cosine 0 and the L2 NaN); where the
            // two sides differ there, it is counted.
            guard x.isFinite && y.isFinite else {
                if !(a[i] == b[i] || (a[i].isNaN && b[i].isNaN)) {
                    identical = false; pruned = false; prunedB = false
                    // ±Inf on one side, a same-signed finite value of at least 1e4 on the other (an additive mask's
                    // −inf exported as finfo.min or −1e4): the same buffer written another way, not a corruption
                    let (inf, fin) = x.isInfinite ? (x, y) : (y, x)
                    if inf.isInfinite && fin.isFinite && (inf > 0) == (fin > 0) && abs(fin) >= 1e4 { infAsFinite += 1 } else { nonFinite += 1 }
                }
                continue
            }
            dot += x * y; na += x * x; nb += y * y
            let d = y - x
            nd += d * d
            if abs(d) > maxd { maxd = abs(d) }
            if !(a[i] == b[i] || (a[i].isNaN && b[i].isNaN)) { identical = false }   // −0 and +0 are the same value
            if x == 0 { zerosA += 1 }
            if x != 0 && y != 0 { signBoth += 1; if (x > 0) == (y > 0) { signSame += 1 } }
            if y == 0 && x != 0 { newZeros += 1; maxZeroed = max(maxZeroed, abs(x)) }
            else if y != x { pruned = false }
            else if x != 0 { minKept = min(minKept, abs(x)) }
            if x == 0 && y != 0 { zerosNewInA += 1 } else if x != y { prunedB = false }
        }
        var ev = TensorEvidence(
            name: name, nameB: nameB, matchedBy: matchedBy, shape: shape, dtypeA: dtypeA.rawValue, dtypeB: dtypeB.rawValue,
            identicalBytes: hashA != nil && hashA == hashB && dtypeA == dtypeB, identicalValues: identical,
            cosine: na > 0 && nb > 0 ? dot / (na.squareRoot() * nb.squareRoot()) : (na == nb ? 1 : 0),
            relativeL2: na > 0 ? (nd / na).squareRoot() : (nd > 0 ? .infinity : 0), maxAbsDiff: maxd,
            signAgreement: signBoth > 0 ? Double(signSame) / Double(signBoth) : 1, newZeros: newZeros, zerosA: zerosA,
            prunedFromA: pruned && newZeros > 0, maxZeroedMagnitude: maxZeroed >= 0 ? maxZeroed : nil,
            minKeptMagnitude: minKept.isFinite ? minKept : nil, nmPattern: nil, reencodedAs: nil, diff: nil)
        ev.prunedFromB = prunedB && zerosNewInA > 0
        ev.nonFiniteChanged = nonFinite
        // only infinities written as large finite values, every other value equal: that re-encoding
        if !identical, nonFinite == 0, infAsFinite > 0, nd == 0 { ev.reencodedAs = "±Inf→finite (\(infAsFinite) values)" }
        if identical, let f = a.first { ev.constant = a.allSatisfy { $0.bitPattern == f.bitPattern } }
        // B stored in a narrower float type than A: compare against A rounded to it.
        let narrow = rounding(from: dtypeA, to: dtypeB)
        var requantized: [Float]? = nil, requantSource: [Float]? = nil   // the closest requantization and its source
        if !identical {
            ev.reencodedAs = reencoding(a, b, dtypeA: dtypeA, dtypeB: dtypeB) ?? ev.reencodedAs
            // A Q8_0 (or legacy Q4/Q5) side against a float side: requantize the float side as the writers do. Bit-equal is a proven
            // re-encoding; far from it (more than twice the requantization's own error) was quantized from other
            // weights (a LoRA merged before quantizing hides under the type's error bound otherwise).
            let floats: Set<DType> = [.f32, .f16, .bf16, .f64]
            let requantizable: Set<DType> = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1]
            // The k-quants are not requantized (their scales come from searches with no reference to check a port
            // against), but their final codes are roundings with the stored scales, so the block test applies.
            let blockTested = requantizable.union([.q2_K, .q3_K, .q4_K, .q5_K, .q6_K])
            if ev.reencodedAs == nil, (blockTested.contains(dtypeB) && floats.contains(dtypeA)) || (blockTested.contains(dtypeA) && floats.contains(dtypeB)),
               let last = shape.last, last % 32 == 0 {
                let (src, qv, qt) = blockTested.contains(dtypeB) ? (a, b, dtypeB) : (b, a, dtypeA)
                var best = Double.infinity, own = 0.0, exact = false
                // Q8_0: gguf-py divided by d before it multiplied by 1/d as llama.cpp does; both are tried.
                let candidates = qt == .q8_0 ? [GGMLQuant.q8_0RoundTrip(src, reciprocal: false), GGMLQuant.q8_0RoundTrip(src, reciprocal: true)]
                                             : [GGMLQuant.legacyRoundTrip(qt.rawValue, src)].compactMap { $0 }
                for rq in candidates {
                    if zip(rq, qv).allSatisfy({ $0.bitPattern == $1.bitPattern || ($0 == 0 && $1 == 0) }) { exact = true; break }
                    var e = 0.0, r = 0.0
                    for i in rq.indices { let d1 = Double(rq[i]) - Double(src[i]), d2 = Double(qv[i]) - Double(rq[i]); e += d1 * d1; r += d2 * d2 }
                    if r < best { best = r; own = e; requantized = rq; requantSource = src }
                }
                if exact { ev.reencodedAs = "\(qt.rawValue) (exact requantization)" }
                else {
                    if own > 0 { ev.requantExcess = (best / own).squareRoot() }
                    // Not this writer's requantization: another tool's (an importance-matrix search) still rounds A's
                    // weights; a change merged before quantizing does not, however small.
                    let srcType = blockTested.contains(dtypeB) ? dtypeA : dtypeB
                    let bits: Int? = srcType == .bf16 ? 7 : srcType == .f16 ? 10 : nil
                    // (a file requantized from a Q8_0 or legacy copy, `llama-quantize --allow-requantize`, rounds that copy)
                    if let r = GGMLQuant.unroundedBlocks(qt.rawValue, quantized: qv, source: src, sourceBits: bits, requantized: true) {
                        ev.roundingBlocks = r.checked; ev.unroundedBlocks = r.unrounded
                        ev.requantizedFrom = r.via; ev.requantizedBlocks = r.via == nil ? nil : r.viaBlocks
                    }
                }
            }
            // Pruning with a narrower save on one side, in the four ways it shows: B pruned then stored narrower; A
            // pruned in full precision against a narrow copy of the unpruned weights (B); and both mirrored.
            func markPrunedB(_ m: ZeroedRounded) {
                ev.prunedFromA = true; ev.newZeros = m.zeros; ev.maxZeroedMagnitude = m.maxZeroed; ev.minKeptMagnitude = m.minKept
            }
            if let r = narrow, ev.reencodedAs == nil, !ev.prunedFromA {
                if let m = zeroedOrRounded(zeroed: b, other: a, roundZeroedSide: false, r) {          // B = round(A) but for zeros
                    markPrunedB(m); ev.alsoReencodedAs = dtypeB.rawValue
                } else if zeroedOrRounded(zeroed: a, other: b, roundZeroedSide: true, r) != nil {  // round(A) = B but for A's zeros
                    ev.prunedFromB = true
                }
            }
            if let r = rounding(from: dtypeB, to: dtypeA), ev.reencodedAs == nil, !ev.prunedFromA, !ev.prunedFromB {
                if zeroedOrRounded(zeroed: a, other: b, roundZeroedSide: false, r) != nil {          // A = round(B) but for zeros
                    ev.prunedFromB = true
                } else if let m = zeroedOrRounded(zeroed: b, other: a, roundZeroedSide: true, r) {  // round(B) = A but for B's zeros
                    markPrunedB(m)
                }
            }
            // A tensor B zeroed entirely fits every N:M pattern trivially: no pattern is claimed for it.
            if ev.prunedFromA, let last = shape.last, b.contains(where: { $0 != 0 }) {
                for (n, m) in [(2, 4), (4, 8), (1, 4), (1, 2)] where last % m == 0 && a.count % m == 0 {
                    var ok = true
                    var g = 0
                    while g < b.count && ok { var z = 0; for j in 0..<m where b[g + j] == 0 { z += 1 }; if z < n { ok = false }; g += m }
                    if ok { ev.nmPattern = "\(n):\(m)"; break }
                }
            }
            if shape.count == 2, shape[0] >= 2, shape[1] >= 2, !ev.prunedFromA, !ev.prunedFromB, ev.reencodedAs == nil {
                var d = [Float](repeating: 0, count: a.count)
                for i in a.indices { d[i] = b[i] - a[i] }
                // A difference with NaN/±Inf (non-finite weights on either side) has no spectrum: no rank evidence.
                if d.allSatisfy({ $0.isFinite }) {
                    let (sv, _) = try SpectrumAnalyzer.singularValues(d, rows: shape[0], cols: shape[1])
                    // Rounding to a narrower type adds full-rank noise: its energy (A's own rounding, twice over
                    // for the update's) is discounted before counting the rank that holds the difference.
                    // The noise's energy per row and column too: it bounds the noise's largest singular value.
                    var profile = NoiseProfile(rows: shape[0], cols: shape[1])
                    let narrowA = narrow == nil ? rounding(from: dtypeB, to: dtypeA) : nil    // A the narrow side
                    if let r = narrow { for (i, x) in a.enumerated() { let e = Double(r(x)) - Double(x); profile.add(i, e * e) } }
                    // the arguments swapped (A = the update stored narrow, B = the wide original): B's own rounding
                    // to A's type measures the same noise
                    else if let r = narrowA { for (i, x) in b.enumerated() { let e = Double(r(x)) - Double(x); profile.add(i, e * e) } }
                    else if let (t, v) = [(dtypeB, b), (dtypeA, a)].first(where: { $0.0 == .bf16 || $0.0 == .f16 }) {
                        // A side stored narrow after the update (a LoRA merged into a BF16 base and saved as BF16, or
                        // A is the narrow one): its rounding is uniform within half an ulp, variance ulp²/12 with
                        // ulp ≤ |x|·2^−p (p = 7 for BF16, 10 for F16).
                        let k = pow(2, -2 * (t == .bf16 ? 7.0 : 10.0)) / 12
                        for (i, x) in v.enumerated() where x.isFinite { profile.add(i, Double(x) * Double(x) * k) }
                    } else if let rq = requantized, let src = requantSource {
                        // a quantized side: the requantization's own error, as measured
                        for i in rq.indices { let e = Double(rq[i]) - Double(src[i]); profile.add(i, e * e) }
                    }
                    var noise = profile.total
                    // An estimated (not measured) rounding noise is discounted only when it is small next to Δ: a
                    // change of the order of the rounding itself (a short BF16 fine-tune) is not a low-rank update.
                    if narrow == nil, narrowA == nil, ev.requantExcess == nil {
                        let total = sv.reduce(0) { $0 + $1 * $1 }
                        if 4 * noise > 0.25 * total { noise = 0 }
                    }
                    ev.diff = diffSpectrum(sv, minDim: min(shape[0], shape[1]), noiseEnergy: 4 * noise,
                                           noise: noise > 0 ? profile : nil)
                    if narrow != nil, noise > 0, let dd = ev.diff, Double(dd.rank) <= Double(dd.minDim) / 4 { ev.alsoReencodedAs = dtypeB.rawValue }
                }
            }
        }
        return ev
    }

    struct ZeroedRounded { var zeros: Int; var maxZeroed: Double; var minKept: Double? }

    /// Whether `zeroed` is `other` with some weights set to zero, up to rounding with `r` (applied to `zeroed` when
    /// `roundZeroedSide`, else to `other`): the new zeros (at least one), the largest |other| zeroed and the
    /// smallest kept non-zero magnitude (of the wide side), or nil.
    static func zeroedOrRounded(zeroed z: [Float], other o: [Float], roundZeroedSide: Bool, _ r: (Float) -> Float) -> ZeroedRounded? {
        var zeros = 0, maxZ = -1.0, minK = Double.infinity
        for i in z.indices {
            let x = z[i], y = o[i]
            if x == 0 && y != 0 { zeros += 1; maxZ = max(maxZ, Double(abs(y))); continue }
            let same = roundZeroedSide ? r(x).bitPattern == y.bitPattern : r(y).bitPattern == x.bitPattern
            guard same || (x.isNaN && y.isNaN) else { return nil }
            let kept = roundZeroedSide ? x : y
            if kept != 0 { minK = min(minK, Double(abs(kept))) }
        }
        return zeros > 0 ? ZeroedRounded(zeros: zeros, maxZeroed: maxZ, minKept: minK.isFinite ? minK : nil) : nil
    }

    /// Rounding of a wide float type (F32/F64) to a narrower one (F16, BF16 round-to-nearest-even), nil otherwise.
    static func rounding(from wide: DType, to narrow: DType) -> ((Float) -> Float)? {
        guard wide == .f32 || wide == .f64 else { return nil }
        switch narrow {
        case .f16: return { Float(Float16($0)) }
        case .bf16: return { Float(bitPattern: UInt32(Decode.bf16RoundNearestEven($0)) << 16) }
        default: return nil
        }
    }

    /// Energy of a full-rank noise matrix (rounding or quantization error) per row and per column.
    struct NoiseProfile {
        var rows: [Double], cols: [Double], total = 0.0
        let width: Int
        init(rows m: Int, cols n: Int) { rows = [Double](repeating: 0, count: m); cols = [Double](repeating: 0, count: n); width = n }
        mutating func add(_ i: Int, _ e: Double) { rows[i / width] += e; cols[i % width] += e; total += e }
        /// A bound on the noise's largest singular value: for independent entries ‖N‖ ≲ max row norm + max column
        /// norm (Bandeira–van Handel; the Marchenko–Pastur edge σ(√m + √n) when the entries are alike), with 10%
        /// to spare.
        var edge: Double { 1.1 * ((rows.max() ?? 0).squareRoot() + (cols.max() ?? 0).squareRoot()) }
    }

    /// `noiseEnergy`: energy discounted before counting the rank that holds 1 − 1e-6 of ‖Δ‖². `noise`: the
    /// rounding/quantization noise Δ carries, when known: the rank is then the number of singular values above the
    /// noise's edge, provided the energy below it is what the noise explains (a full-rank change of the noise's own
    /// size, such as a short fine-tune stored narrow, is not); a low-rank update loses none of its directions to the
    /// discount that way.
    static func diffSpectrum(_ sv: [Double], minDim: Int, noiseEnergy: Double = 0, noise: NoiseProfile? = nil) -> DiffSpectrum {
        let ev = sv.map { $0 * $0 }
        let total = ev.reduce(0, +)
        var top: [String: Double] = [:]
        for k in [1, 4, 16] { top["\(k)"] = total > 0 ? ev.prefix(k).reduce(0, +) / total : 0 }
        var acc = 0.0, r = 0
        let target = total - max(1e-6 * total, min(noiseEnergy, 0.5 * total))     // never discount more than half
        for e in ev { if total > 0 && acc >= target { break }; acc += e; r += 1 }
        if let noise, noise.total > 0 {
            let edge = noise.edge
            let above = sv.prefix { $0 > edge }.count
            let tail = ev.dropFirst(above).reduce(0, +)
            // (A full-rank change of the noise's own size also lifts the top of the bulk over the edge, and leaves
            // more below it than the noise explains: 1.2–1.5 times its energy, where a low-rank one leaves ≈ 1.)
            if above > 0, tail <= 1.15 * noise.total { r = above }
            // Noise taking the discount to its cap leaves the energy count meaningless: it would count the
            // directions holding half of the noise. Without directions standing out of it, no rank is evidenced.
            else if noiseEnergy >= 0.5 * total { r = sv.count }
        }
        let l1 = sv.reduce(0, +)
        var h = 0.0
        if l1 > 0 { for s in sv where s > 0 { let p = s / l1; h -= p * log(p) } }
        return DiffSpectrum(stableRank: ev.first.map { $0 > 0 ? total / $0 : 0 } ?? 0, effectiveRank: exp(h),
                            energyTop: top, rank: total > 0 ? r : 0, minDim: minDim)
    }

    /// "F16"/"BF16" (with how, e.g. "BF16 (truncated)") when one side is exactly the other rounded to that type by
    /// one of the deterministic roundings converters use; nil otherwise.
    static func reencoding(_ a: [Float], _ b: [Float], dtypeA: DType, dtypeB: DType) -> String? {
        func f16(_ v: Float) -> Float { Float(Float16(v)) }
        func bf16(_ v: Float) -> Float { Float(bitPattern: UInt32(Decode.bf16RoundNearestEven(v)) << 16) }
        func bf16t(_ v: Float) -> Float { v.isNaN ? v : Float(bitPattern: v.bitPattern & 0xffff_0000) }
        // A converter that flushes float16 subnormals to zero (below 2⁻¹⁴)
        func f16ftz(_ v: Float) -> Float { let h = f16(v); return abs(h) < 0x1p-14 ? (h.sign == .minus ? -0.0 : 0) : h }
        func same(_ x: Float, _ y: Float) -> Bool { x.bitPattern == y.bitPattern || (x.isNaN && y.isNaN) || (x == 0 && y == 0) }
        func all(_ x: [Float], _ y: [Float], _ r: (Float) -> Float) -> Bool { zip(x, y).allSatisfy { same(r($0), $1) } }
        /// The deterministic ways a float tensor becomes `t`: to nearest even, BF16 by truncation, float16 with
        /// subnormals flushed, and the two-step chains through the other narrow type (an F16 file made from the BF16
        /// release).
        func roundings(to t: DType) -> [(String, (Float) -> Float)] {
            switch t {
            case .f16: return [("", f16), (" (subnormals flushed to zero)", f16ftz), (" (through BF16)", { f16(bf16($0)) })]
            case .bf16: return [("", bf16), (" (truncated)", bf16t), (" (through F16)", { bf16(f16($0)) })]
            default: return []
            }
        }
        func roundsTo(_ x: [Float], _ y: [Float], _ t: DType) -> String? {
            for (how, r) in roundings(to: t) where all(x, y, r) { return t.rawValue + how }
            return nil
        }
        if dtypeA != dtypeB {
            if let how = roundsTo(a, b, dtypeB) { return how }
            if let how = roundsTo(b, a, dtypeA) { return how }
            // F64 rounded straight to F16/BF16 (either argument order): decoded here through F32, a double rounding
            // that differs from the direct one only where the F32 value falls exactly halfway between two values of
            // the narrow type; there the other neighbour is accepted, nowhere else (a ±1-ulp edit stays a change).
            for (wide, narrow, wt, t) in [(a, b, dtypeA, dtypeB), (b, a, dtypeB, dtypeA)] where wt == .f64 && (t == .f16 || t == .bf16) {
                let r: (Float) -> Float = t == .f16 ? f16 : bf16
                let ok = zip(wide, narrow).allSatisfy { x, y in
                    let n = r(x)
                    if same(n, y) { return true }
                    guard x.isFinite, y.isFinite, n.isFinite else { return false }
                    let up = t == .f16 ? Float(Float16(n).nextUp) : Float(bitPattern: n.bitPattern &+ 0x10000)
                    let dn = t == .f16 ? Float(Float16(n).nextDown) : Float(bitPattern: n.bitPattern &- 0x10000)
                    return (y == up || y == dn) && 2 * Double(x) == Double(n) + Double(y)
                }
                if ok { return t.rawValue + " (rounded from F64)" }
            }
            if dtypeB.block != nil || dtypeA.block != nil { return nil }   // quantized: judged from the error size
        }
        for t in [DType.f16, .bf16] { if let how = roundsTo(a, b, t) { return "\(how) (values, stored as \(dtypeB.rawValue))" } }
        return nil
    }
}
