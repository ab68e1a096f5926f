import Foundation
import WscanFormats
import WscanKernels

/// Decoded tensors of a checkpoint, in checkpoint order: what analyzers work on (they never open files).
public struct WeightSet: Sendable {
    public var names: [String]
    public var shapes: [String: [Int]]
    public var values: [String: [Float]]

    public init(names: [String] = [], shapes: [String: [Int]] = [:], values: [String: [Float]] = [:]) {
        self.names = names; self.shapes = shapes; self.values = values
    }

    /// Decodes every floating-point tensor of `ck` (optionally filtered) into Float.
    /// Throws if one of the named tensors is F64 (or C128) holding finite values beyond float32's range: analyses
    /// whose numbers that would change (they read as ±Inf) refuse it by name.
    public static func refuseNarrowing(_ ck: Checkpoint, names: [String]) throws {
        let wanted = Set(names)
        for t in ck.tensors where wanted.contains(t.name) {
            if let d = try TensorData.f64Overflow(ck, t) {
                throw FormatError(.unsupported, "\(ck.path): tensor '\(t.name)' (\(t.dtype.rawValue)) holds \(d), beyond float32's range: this analysis works in float32 and would take it for ±Inf")
            }
        }
    }

    public static func load(_ ck: Checkpoint, where include: (TensorInfo) -> Bool = { _ in true }) throws -> WeightSet {
        var w = WeightSet()
        for t in ck.tensors where t.dtype.isFloatingPoint && t.dtype.decodable && include(t) {
            w.names.append(t.name)
            w.shapes[t.name] = t.shape
            w.values[t.name] = try TensorData.floats(ck, t)
        }
        return w
    }

    public var parameterCount: Int { values.values.reduce(0) { $0 + $1.count } }

    /// The named tensors only, in the given order.
    public func subset(_ keep: [String]) -> WeightSet {
        var out = WeightSet()
        for n in keep where values[n] != nil { out.names.append(n); out.shapes[n] = shapes[n]; out.values[n] = values[n] }
        return out
    }

    /// These tensors with `other`'s added (and replacing same-named ones).
    public func merged(with other: WeightSet) -> WeightSet {
        var m = self
        for n in other.names {
            if m.values[n] == nil { m.names.append(n) }
            m.shapes[n] = other.shapes[n]; m.values[n] = other.values[n]
        }
        return m
    }

    public func entries() -> [SafetensorsWriter.Entry] {
        names.map { SafetensorsWriter.Entry(name: $0, shape: shapes[$0]!, floats: values[$0]!) }
    }
}

public struct EvalResult: Codable, Sendable, Equatable {
    public var loss: Double?
    public var accuracy: Double?
    /// The value curves and tolerances use: accuracy when known, else the external command's number.
    public var metric: Double
    public var metricName: String
    public var higherIsBetter: Bool

    public init(loss: Double?, accuracy: Double?, metric: Double, metricName: String, higherIsBetter: Bool) {
        self.loss = loss; self.accuracy = accuracy; self.metric = metric; self.metricName = metricName; self.higherIsBetter = higherIsBetter
    }
}

public protocol Evaluator: Sendable {
    var description: String { get }
    func evaluate(_ w: WeightSet) throws -> EvalResult
}

public struct EvaluatorError: Error, CustomStringConvertible {
    public let description: String
    public init(_ s: String) { description = s }
}

/// The order of linear layers when shapes alone do not fix it (square hidden layers): names that say input come
/// first and names that say output last, the rest in natural order (`layers.2` before `layers.10`).
public enum LayerOrder {
    static let firstWords: Set<String> = ["input", "inp", "first", "embed", "embedding", "stem"]
    static let lastWords: Set<String> = ["output", "out", "head", "classifier", "final", "last", "logits", "fc_out"]
    static func role(_ name: String) -> Int {
        // The words that name the layer's place in the network: the path before any block number (`stem` in
        // `stem.0.weight`, `blocks` in `blocks.0.fc_out.weight`), without the parameter's own name. Inside `blocks.0`
        // an `fc_out` is the block's own second layer, not the network's output.
        let parts = Array(name.split(separator: ".").dropLast())
        let outer = parts.prefix { !$0.allSatisfy(\.isNumber) }
        let words = Set(outer.joined(separator: ".").lowercased().split { !$0.isLetter && !$0.isNumber }.map { w in String(w.prefix { $0.isLetter }) })
        if !words.isDisjoint(with: firstWords) { return 0 }
        if !words.isDisjoint(with: lastWords) { return 2 }
        return 1
    }
    public static func less(_ a: String, _ b: String) -> Bool {
        let ra = role(a), rb = role(b)
        if ra != rb { return ra < rb }
        return PermSpecInference.naturalLess(a, b)
    }
}

/// Built-in evaluator: a forward pass of an MLP classifier (a chain of linear layers with an activation
/// between them), recognised from tensor names and shapes, on a dataset x (N×d), y (N) of class indices.
/// Computed in Double so that accuracies match a float64 NumPy reference exactly.
public struct MLPEvaluator: Evaluator {
    public enum Activation: String, Sendable, CaseIterable { case relu, gelu, tanh }
    public let layers: [(weight: String, bias: String?)]
    public let x: [Double]
    public let y: [Int]
    public let n: Int, d: Int
    public let activation: Activation

    public var description: String {
        "built-in MLP (\(layers.map(\.weight).joined(separator: " → ")), \(activation.rawValue)) on \(n) samples"
    }

    public init(weights w: WeightSet, x: [Float], y: [Int], features d: Int, activation: Activation = .relu) throws {
        guard d > 0, x.count % d == 0, x.count / d == y.count, !y.isEmpty else { throw EvaluatorError("dataset: x must be N×d with N labels") }
        self.n = y.count; self.d = d; self.activation = activation
        self.x = x.map(Double.init); self.y = y
        // Linear layers: 2-D "P.weight" [out, in] with an optional 1-D "P.bias" [out].
        var lin: [(w: String, b: String?, out: Int, inn: Int)] = []
        let names = Set(w.names)
        for name in w.names.sorted(by: LayerOrder.less) where name.hasSuffix("weight") && !Saliency.isOptimizerState(name, among: names) {
            guard let s = w.shapes[name], s.count == 2 else { continue }
            let prefix = String(name.dropLast("weight".count))
            let b = prefix + "bias"
            lin.append((name, w.shapes[b] == [s[0]] ? b : nil, s[0], s[1]))
        }
        var chain: [(String, String?)] = []
        var used = Set<String>()
        var dim = d
        while let next = lin.first(where: { $0.inn == dim && !used.contains($0.w) }) {
            chain.append((next.w, next.b)); used.insert(next.w); dim = next.out
        }
        guard !chain.isEmpty else { throw EvaluatorError("no linear layer takes the dataset's \(d) features") }
        guard chain.count == lin.count else {
            throw EvaluatorError("not a plain MLP: \(lin.count - chain.count) linear layers are not on the chain from \(d) features")
        }
        // Every other floating tensor would be left out of the forward pass (a BatchNorm or LayerNorm, an embedding):
        // the numbers would be those of another model. Optimizer state stored beside the weights is not the model.
        let onChain = Set(chain.flatMap { [$0.0] + ($0.1.map { [$0] } ?? []) })
        let ignored = w.names.filter { !onChain.contains($0) && !Saliency.isOptimizerState($0, among: names) }
        guard ignored.isEmpty else {
            throw EvaluatorError("not a plain MLP: the built-in evaluator runs chains of linear layers and would ignore \(ignored.count) tensors (\(ignored.prefix(4).joined(separator: ", "))\(ignored.count > 4 ? ", …" : "")), e.g. normalization layers; evaluate with --eval CMD instead")
        }
        guard (y.min() ?? 0) >= 0 else { throw EvaluatorError("labels must be class indices ≥ 0 (found \(y.min()!))") }
        guard dim > (y.max() ?? 0) else { throw EvaluatorError("output has \(dim) classes but labels go up to \(y.max()!)") }
        layers = chain
    }

    public func logits(_ w: WeightSet) throws -> [Double] {
        var h = x
        var width = d
        for (li, (wn, bn)) in layers.enumerated() {
            guard let s = w.shapes[wn], let wv = w.values[wn], s.count == 2, s[1] == width else {
                throw EvaluatorError("weights lack \(wn) with \(width) inputs")
            }
            let out = s[0]
            let wd = wv.map(Double.init)
            var z = [Double](repeating: 0, count: n * out)
            // The layer's bias, also when the weights evaluated have one the model it was built from lacked (the
            // end of a connectivity path towards a model with biases).
            let other = String(wn.dropLast("weight".count)) + "bias"
            let biasName = bn ?? (w.shapes[other] == [out] ? other : nil)
            if let biasName, let b = w.values[biasName] { for r in 0..<n { for c in 0..<out { z[r * out + c] = Double(b[c]) } } }
            h.withUnsafeBufferPointer { hp in wd.withUnsafeBufferPointer { wp in z.withUnsafeMutableBufferPointer { zp in
                Linalg.gemm(hp.baseAddress!, wp.baseAddress!, zp.baseAddress!, m: n, n: out, k: width, transB: true, beta: 1)
            } } }
            if li < layers.count - 1 {
                switch activation {
                case .relu: for i in z.indices where z[i] < 0 { z[i] = 0 }
                case .tanh: for i in z.indices { z[i] = Foundation.tanh(z[i]) }
                case .gelu: for i in z.indices { let v = z[i]; z[i] = 0.5 * v * (1 + erf(v / 2.0.squareRoot())) }
                }
            }
            h = z; width = out
        }
        return h
    }

    public func evaluate(_ w: WeightSet) throws -> EvalResult {
        let z = try logits(w)
        let k = z.count / n
        var loss = 0.0, correct = 0
        for r in 0..<n {
            let row = z[(r * k)..<((r + 1) * k)]
            let m = row.max()!
            let lse = m + log(row.reduce(0) { $0 + exp($1 - m) })
            loss += lse - row[r * k + y[r]]
            var arg = 0
            for c in 1..<k where z[r * k + c] > z[r * k + arg] { arg = c }
            if arg == y[r] { correct += 1 }
        }
        let acc = Double(correct) / Double(n)
        return EvalResult(loss: loss / Double(n), accuracy: acc, metric: acc, metricName: "accuracy", higherIsBetter: true)
    }
}
