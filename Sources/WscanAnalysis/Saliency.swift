import Foundation
import WscanKernels

/// Weight saliency (SalUn, Fan et al. 2024, and data-free relatives): a non-negative score per weight, a global
/// top-fraction mask, and per-layer summaries. Ties at the mask threshold are broken by tensor order then
/// element index (earlier counts as less salient), so the mask keeps exactly round(top · N) weights.
public enum SaliencySource: String, CaseIterable, Codable, Sendable {
    case magnitude      // |w|
    case delta          // |w − w_base|
    case fisher         // Adam's exp_avg_sq (a diagonal Fisher proxy)
    case grad           // |g| of a user-supplied gradient (SalUn's forgetting-loss gradient)
    case wgrad          // |w · g|
}

public struct SaliencyLayer: Codable, Sendable {
    public var name: String
    public var count: Int
    public var salient: Int
    public var share: Double             // salient / count
    public var massShare: Double         // this layer's share of the total saliency mass
    public var top1Concentration: Double // share of the layer's saliency mass held by its top 1% weights
    public var meanScore: Double
}

public struct SaliencyResult: Codable, Sendable {
    public var source: SaliencySource
    public var top: Double
    public var total: Int
    public var kept: Int
    public var threshold: Double          // the smallest kept score
    public var layers: [SaliencyLayer]
    /// Tensors with NaN/±Inf scores: those weights rank above every finite score (always salient) and stay out of
    /// the mass sums.
    public var warnings: [String]? = nil
}

public enum Saliency {
    /// Whether a tensor name is optimizer state (Adam's moments, a torch optimizer state dict), not a model weight.
    /// Optimizer state stored beside the weights (torch's names: Adam/AMSGrad, SGD momentum, RMSprop, Adadelta).
    /// `among`: the checkpoint's tensor names; with them, `<key>.<param>` (SGD state keyed before the parameter's name)
    /// is optimizer state when `<param>` is one of them (`momentum_buffer.fc1.weight` beside `fc1.weight`, while a
    /// module called `momentum_buffer` with a child `0` is a layer).
    public static func isOptimizerState(_ name: String, among names: Set<String> = []) -> Bool {
        if name.hasPrefix("optimizer.") || name.contains("exp_avg") { return true }
        // `<param>.momentum_buffer` and the like (the key last: a layer called `momentum_buffer` has a `.weight` after
        // it), or `<key>.<param>` when what follows is a tensor of the checkpoint (`among`).
        let parts = name.split(separator: ".")
        guard parts.count > 1 else { return false }
        let keys: Set<Substring> = ["momentum_buffer", "square_avg", "acc_delta"]
        return keys.contains(parts.last!) || (keys.contains(parts.first!) && names.contains(parts.dropFirst().joined(separator: ".")))
    }

    /// Adam's second moments for `params`, found by name (`exp_avg_sq.<name>`, `<name>.exp_avg_sq`, with or without
    /// a leading `model.`) or, for a torch optimizer state dict (`optimizer.state.<i>.exp_avg_sq`), by order: the
    /// optimizer numbers the parameters it was given, which are the model's parameters without its buffers, and
    /// frozen parameters may be missing. So state i is matched to the next model tensor of the same shape, after
    /// dropping known buffers (BatchNorm's running statistics); every state entry must find one, and a parameter is
    /// never paired with a state of another shape. Matching by order needs the model's tensors in registration
    /// order, which a torch checkpoint keeps and safetensors (sorted by name) does not: `modelInParameterOrder`
    /// false refuses it.
    public static func fisherState(_ s: WeightSet, model: WeightSet, params: [String], modelInParameterOrder: Bool = true) throws -> WeightSet {
        var frozen: [String] = []
        return try fisherState(s, model: model, params: params, modelInParameterOrder: modelInParameterOrder, frozen: &frozen)
    }

    /// As above; parameters with no state at all while others have theirs are frozen ones (fine-tuning with frozen
    /// embeddings is the common case): they get a zero score (ranked below every trained weight) and are listed in `frozen`. When no
    /// parameter has a state, or the order matching failed, a missing state is an error.
    public static func fisherState(_ s: WeightSet, model: WeightSet, params: [String], modelInParameterOrder: Bool = true,
                                   frozen: inout [String]) throws -> WeightSet {
        let keys = try fisherKeys(state: TensorNames(s.names, s.shapes), model: TensorNames(model.names, model.shapes), params: params,
                                  modelInParameterOrder: modelInParameterOrder, frozen: &frozen)
        var out = WeightSet()
        for n in params {
            out.names.append(n); out.shapes[n] = model.shapes[n]
            out.values[n] = keys[n].map { s.values[$0]! } ?? [Float](repeating: 0, count: model.values[n]!.count)
        }
        return out
    }

    /// Names and shapes of a set of tensors, without their values.
    public struct TensorNames: Sendable {
        public var names: [String]
        public var shapes: [String: [Int]]
        public init(_ names: [String], _ shapes: [String: [Int]]) { self.names = names; self.shapes = shapes }
    }

    /// The matching `fisherState` does, on names and shapes alone: each parameter's exp_avg_sq tensor in `state`;
    /// frozen parameters (listed in `frozen`) have none.
    public static func fisherKeys(state s: TensorNames, model: TensorNames, params: [String], modelInParameterOrder: Bool = true,
                                  frozen: inout [String]) throws -> [String: String] {
        let buffers: Set<String> = ["running_mean", "running_var", "num_batches_tracked"]
        let modelNames = Set(model.names)
        let modelParams = model.names.filter { n in
            !isOptimizerState(n, among: modelNames) && !buffers.contains(String(n.split(separator: ".").last ?? ""))
        }
        var byOrder: [String: String] = [:], orderProblem: String?
        let states = s.names.compactMap { n -> (Int, String)? in
            let parts = n.split(separator: ".")
            guard parts.count == 4, parts[0] == "optimizer", parts[1] == "state", parts[3] == "exp_avg_sq", let i = Int(parts[2]) else { return nil }
            return (i, n)
        }.sorted { $0.0 < $1.0 }
        var p = 0
        if !modelInParameterOrder && !states.isEmpty {
            orderProblem = "the state is numbered in parameter order, which the model file does not keep (e.g. safetensors sorts names); use the torch checkpoint, or states named exp_avg_sq.<name>"
        }
        var leftmost: [Int] = []
        for (i, key) in states where orderProblem == nil {
            let shape = s.shapes[key]
            while p < modelParams.count && model.shapes[modelParams[p]] != shape { p += 1 }
            guard p < modelParams.count else {
                orderProblem = "optimizer.state.\(i).exp_avg_sq (shape \(shape ?? [])) matches no remaining model parameter in order"
                byOrder = [:]; leftmost = []; break
            }
            byOrder[modelParams[p]] = key; leftmost.append(p); p += 1
        }
        // Matching by order skips a frozen parameter only by its shape, so the states may fit the parameters in more
        // than one way. The earliest fit (above) and the latest fit (from the end) agree on every state whose
        // parameter is certain; where they differ, any parameter of that shape between the two could own it, and
        // such parameters are refused rather than guessed (over the whole model, not only the selection).
        var ambiguous = Set<String>()
        if leftmost.count == states.count && !states.isEmpty {
            var q = modelParams.count - 1
            for (i, (_, key)) in states.enumerated().reversed() {
                let shape = s.shapes[key]
                while q >= 0 && model.shapes[modelParams[q]] != shape { q -= 1 }
                guard q >= 0 else { break }
                if q != leftmost[i] {
                    for r in leftmost[i]...q where model.shapes[modelParams[r]] == shape { ambiguous.insert(modelParams[r]) }
                }
                q -= 1
            }
        }
        var out: [String: String] = [:]
        var missing: [(String, String)] = []
        let stateNames = Set(s.names)
        for n in params {
            let stripped = n.hasPrefix("model.") ? String(n.dropFirst(6)) : n
            let candidates = ["exp_avg_sq.\(n)", "\(n).exp_avg_sq", "exp_avg_sq.\(stripped)", "\(stripped).exp_avg_sq"]
            var found = candidates.first { stateNames.contains($0) }
            let byName = found != nil
            if found == nil, let key = byOrder[n], stateNames.contains(key) { found = key }
            if !byName, ambiguous.contains(n) {
                throw EvaluatorError("cannot tell which parameters of shape \(model.shapes[n] ?? []) were frozen: the optimizer state is numbered in parameter order, and '\(n)' could own a state or be frozen; save the states under parameter names (exp_avg_sq.<name>) to score it")
            }
            guard let key = found else {
                missing.append((n, "no exp_avg_sq for '\(n)' (looked for \(candidates[0]) and optimizer.state.<i>.exp_avg_sq\(orderProblem.map { ": " + $0 } ?? ""))"))
                continue
            }
            guard s.shapes[key] == model.shapes[n] else {
                throw EvaluatorError("\(key) has shape \(s.shapes[key] ?? []), '\(n)' has shape \(model.shapes[n] ?? [])")
            }
            out[n] = key
        }
        if let first = missing.first {
            if out.isEmpty || orderProblem != nil { throw EvaluatorError(first.1) }
            frozen += missing.map(\.0)
        }
        return out
    }

    /// Scores per tensor, in memory (the same formulas as `ScoreSource`). `base`, `stat` (exp_avg_sq) and `grad`
    /// must carry the same names and shapes.
    public static func scores(_ source: SaliencySource, weights w: WeightSet, tensors: [String], base: WeightSet? = nil,
                              stat: WeightSet? = nil, grad: WeightSet? = nil) throws -> WeightSet {
        let names = tensors.filter { w.values[$0] != nil }
        let (other, what): (WeightSet?, String) = switch source {
        case .magnitude: (nil, "")
        case .delta: (base, "--base")
        case .fisher: (stat, "optimizer state (exp_avg_sq)")
        case .grad, .wgrad: (grad, "--grads")
        }
        if source != .magnitude {
            for n in names {
                guard let other, let o = other.values[n] else { throw EvaluatorError("\(what) has no tensor '\(n)'") }
                guard o.count == w.values[n]!.count, other.shapes[n] == w.shapes[n] else {
                    throw EvaluatorError("\(what) tensor '\(n)' has shape \(other.shapes[n] ?? []) not \(w.shapes[n] ?? [])")
                }
            }
        }
        let src = try ScoreSource(source, weights: ArraySource(w, tensors: names), other: other.map { ArraySource($0, tensors: names) })
        var out = WeightSet()
        for (t, n) in names.enumerated() { out.names.append(n); out.shapes[n] = w.shapes[n]; out.values[n] = try src.tensor(t) }
        return out
    }

    /// Global top-fraction mask (1 = salient) and per-layer table, for scores in memory.
    public static func mask(_ scores: WeightSet, top: Double, source: SaliencySource) throws -> (mask: [String: [UInt8]], result: SaliencyResult) {
        let src = ArraySource(scores, tensors: scores.names)
        let (cut, result) = try select(src, top: top, source: source)
        var masks: [String: [UInt8]] = [:]
        for (t, n) in scores.names.enumerated() { masks[n] = maskBytes(try src.tensor(t), tensor: t, cut) }
        return (masks, result)
    }

    /// The global top fraction of the scores `src` yields: the cut below which scores are not salient (exactly
    /// round(top · N) weights stay above it, ties to later tensors and elements) and the per-layer table. The
    /// scores are streamed: two passes find the cut, a third takes one tensor per core for the table.
    public static func select(_ src: TensorSource, top: Double, source: SaliencySource) throws -> (cut: PruneCut, result: SaliencyResult) {
        let tensors = src.names
        let total = src.counts.reduce(0, +)
        let keep = DecimalFraction.times(top, total, .plain)        // round half up, on the decimal top
        // The (total − keep) least salient, found by selection, are masked out.
        var cut = try Sparsity.cuts(src, counts: [total - keep])[0]
        if total - keep <= 0 { cut.none = true }
        struct Row { var salient = 0, mass = 0.0, nonFinite = 0, minKept = Double.infinity, topMass = 0.0 }
        let rows = UnsafeSendableBox([Row](repeating: Row(), count: tensors.count))
        try Sparsity.parallel(tensors.count) { t in
            let v = try src.tensor(t)
            var r = Row()
            let (value, ties) = Sparsity.bounds(cut, tensor: t)
            let k = v.withUnsafeBufferPointer { MagnitudeKernel.keepStats($0.baseAddress!, $0.count, value: value, ties: ties) }
            r.mass = k.mass; r.nonFinite = k.nonFinite; r.salient = k.kept; r.minKept = Double(k.minKept)
            r.topMass = try topMass(r.nonFinite == 0 ? v : v.filter(\.isFinite), k: max(1, v.count / 100), exact: src.exactBins(t))
            rows.set(t, r)
        }
        let totalMass = rows.array.reduce(0.0) { $0 + $1.mass }
        var minKept = Double.infinity
        var layers: [SaliencyLayer] = [], warnings: [String] = []
        for (t, n) in tensors.enumerated() {
            let r = rows.array[t], count = src.counts[t]
            minKept = min(minKept, r.minKept)
            if r.nonFinite > 0 { warnings.append("\(n): \(r.nonFinite) NaN/±Inf scores, marked salient and left out of the mass sums") }
            layers.append(SaliencyLayer(name: n, count: count, salient: r.salient, share: count == 0 ? 0 : Double(r.salient) / Double(count),
                                        massShare: totalMass > 0 ? r.mass / totalMass : 0, top1Concentration: r.mass > 0 ? r.topMass / r.mass : 0,
                                        meanScore: count == 0 ? 0 : r.mass / Double(count)))
        }
        let kept = layers.reduce(0) { $0 + $1.salient }
        if keep == 0 { warnings.append("top \(top) of \(total) weights rounds to 0: the mask keeps no weight") }
        if kept > keep { warnings.append("\(kept) weights are salient, more than round(top·N) = \(keep): every NaN/±Inf score is salient and there are more of them") }
        return (cut, SaliencyResult(source: source, top: top, total: total, kept: kept, threshold: minKept.isFinite ? minKept : 0, layers: layers,
                                    warnings: warnings.isEmpty ? nil : warnings))
    }

    /// One tensor's mask (1 = salient) under the cut `select` found; `tensor` is its index in the scored source.
    public static func maskBytes(_ v: [Float], tensor t: Int, _ cut: PruneCut) -> [UInt8] {
        let (value, ties) = Sparsity.bounds(cut, tensor: t)
        return [UInt8](unsafeUninitializedCapacity: v.count) { m, done in
            _ = v.withUnsafeBufferPointer { MagnitudeKernel.keepStats($0.baseAddress!, $0.count, value: value, ties: ties, mask: m.baseAddress) }
            done = v.count
        }
    }

    /// The sum of the k largest of `finite` (all of them when there are fewer), by selection rather than a sort.
    static func topMass(_ finite: [Float], k: Int, exact: Bool = false) throws -> Double {
        guard finite.count > k else { return finite.reduce(0.0) { $0 + Double($1) } }
        let c = try Sparsity.cuts(ArraySource([finite], exact: exact), counts: [finite.count - k])[0]
        let (value, ties) = Sparsity.bounds(c, tensor: 0)
        return finite.withUnsafeBufferPointer { MagnitudeKernel.keepStats($0.baseAddress!, $0.count, value: value, ties: ties).keptMass }
    }
}

/// Saliency scores computed chunk by chunk from the tensors they come from: the model's weights (magnitude,
/// delta, wgrad) and the tensor of another file aligned with each (the base for delta, the gradient for grad and
/// wgrad, Adam's exp_avg_sq for fisher). A scored tensor without one (a frozen parameter under fisher) scores 0.
public struct ScoreSource: TensorSource {
    public let names: [String]
    public let shapes: [[Int]]
    public let counts: [Int]
    let kind: SaliencySource
    let weights: TensorSource
    let other: TensorSource?
    let otherIndex: [Int?]

    /// `otherIndex[t]`: the tensor of `other` aligned with `weights`' tensor t (same shape), or nil (score 0;
    /// fisher only).
    public init(_ kind: SaliencySource, weights: TensorSource, other: TensorSource? = nil, otherIndex: [Int?]? = nil) throws {
        self.kind = kind; self.weights = weights; self.other = other
        names = weights.names; shapes = weights.shapes; counts = weights.counts
        let idx = otherIndex ?? (other == nil ? weights.names.map { _ in nil } : Array(weights.names.indices))
        self.otherIndex = idx
        guard idx.count == names.count else { throw EvaluatorError("scores need one aligned tensor per weight") }
        for (t, oi) in idx.enumerated() {
            guard let oi else {
                if kind != .magnitude && kind != .fisher { throw EvaluatorError("no tensor aligned with '\(names[t])' to score it") }
                continue
            }
            guard let o = other, o.shapes[oi] == shapes[t], o.counts[oi] == counts[t] else {
                throw EvaluatorError("tensor aligned with '\(names[t])' has shape \(other?.shapes[oi] ?? []), not \(shapes[t])")
            }
        }
    }

    public func label(_ t: Int) -> String { weights.label(t) }

    /// |x| of a value with 16 trailing zero bits has them too: magnitude, grad and fisher scores of BF16 data.
    public func exactBins(_ t: Int) -> Bool {
        switch kind {
        case .magnitude: return weights.exactBins(t)
        case .grad, .fisher: return otherIndex[t].map { other!.exactBins($0) } ?? true
        case .delta, .wgrad: return false
        }
    }

    public func withChunk<R>(_ t: Int, start: Int, count: Int, _ body: (UnsafePointer<Float>) throws -> R) throws -> R {
        let out = UnsafeMutablePointer<Float>.allocate(capacity: max(1, count))
        defer { out.deallocate() }
        try fill(t, start: start, count: count, out)
        return try body(out)
    }

    public func tensor(_ t: Int) throws -> [Float] {
        let n = counts[t]
        return try [Float](unsafeUninitializedCapacity: n) { buf, done in
            var s = 0
            while s < n {                        // a chunk at a time, so the sources' scratch stays small
                let k = min(Sparsity.chunkElements, n - s)
                try fill(t, start: s, count: k, buf.baseAddress! + s)
                s += k
            }
            done = n
        }
    }

    func fill(_ t: Int, start: Int, count n: Int, _ out: UnsafeMutablePointer<Float>) throws {
        func withOther(_ body: (UnsafePointer<Float>) throws -> Void) throws {
            try other!.withChunk(otherIndex[t]!, start: start, count: n, body)
        }
        switch kind {
        case .magnitude: try weights.withChunk(t, start: start, count: n) { w in for i in 0..<n { out[i] = abs(w[i]) } }
        case .delta: try weights.withChunk(t, start: start, count: n) { w in try withOther { b in for i in 0..<n { out[i] = abs(w[i] - b[i]) } } }
        case .fisher:
            if otherIndex[t] == nil { out.initialize(repeating: 0, count: n); return }
            try withOther { s in for i in 0..<n { out[i] = abs(s[i]) } }
        case .grad: try withOther { g in for i in 0..<n { out[i] = abs(g[i]) } }
        case .wgrad: try weights.withChunk(t, start: start, count: n) { w in try withOther { g in for i in 0..<n { out[i] = abs(w[i] * g[i]) } } }
        }
    }
}
