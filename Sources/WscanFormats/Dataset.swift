import Foundation

/// A labelled dataset for the built-in evaluator: an .npz (or any checkpoint format) holding `x` [N, d] and
/// `y` [N] of class indices. Every problem is a one-line error naming the file.
public struct Dataset: Sendable {
    public let x: [Float]
    public let y: [Int]
    public let features: Int

    public static func load(_ path: String, trust: Bool = false) throws -> Dataset {
        func fail(_ what: String) -> FormatError { FormatError(.dataset, "\(path): \(what)") }
        let ck: Checkpoint
        do { ck = try CheckpointOpener.open(path, options: .init(trust: trust)) } catch { throw fail("\(error)") }
        guard let xt = ck.tensors.first(where: { $0.name == "x" }), let yt = ck.tensors.first(where: { $0.name == "y" }) else {
            throw fail("a dataset needs arrays named x and y")
        }
        guard xt.shape.count == 2, yt.shape.count == 1, xt.shape[0] == yt.shape[0] else {
            throw fail("x must be [N, d] and y [N] (got x \(xt.shape), y \(yt.shape))")
        }
        guard xt.shape[0] > 0, xt.shape[1] > 0 else { throw fail("the dataset is empty (x is \(xt.shape))") }
        let yf: [Float], x: [Float]
        do { yf = try TensorData.floats(ck, yt); x = try TensorData.floats(ck, xt) } catch { throw fail("\(error)") }
        var y = [Int](repeating: 0, count: yf.count)
        for (i, v) in yf.enumerated() {
            guard v.isFinite, v >= 0, v == v.rounded(), v < 16_777_216 else {
                throw fail("label y[\(i)] = \(v) is not a class index (a whole number ≥ 0)")
            }
            y[i] = Int(v)
        }
        if let i = x.firstIndex(where: { !$0.isFinite }) {
            throw fail("x[\(i / xt.shape[1]), \(i % xt.shape[1])] is \(x[i]); inputs must be finite")
        }
        return Dataset(x: x, y: y, features: xt.shape[1])
    }
}
