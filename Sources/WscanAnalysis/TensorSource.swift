import Foundation
import WscanFormats

/// The tensors a streaming analysis passes over, read a chunk at a time: from arrays already in memory, or
/// decoded on demand from an open checkpoint, so that a pass over a model holds a few chunks per core rather
/// than the model as float32 (a 7B-parameter model is 28 GB of floats).
public protocol TensorSource: Sendable {
    var names: [String] { get }
    var shapes: [[Int]] { get }
    /// Floats per tensor.
    var counts: [Int] { get }
    /// `body` gets floats [start, start + count) of tensor `t`, row-major. `start` is a multiple of 256.
    func withChunk<R>(_ t: Int, start: Int, count: Int, _ body: (UnsafePointer<Float>) throws -> R) throws -> R
    /// One whole tensor, row-major.
    func tensor(_ t: Int) throws -> [Float]
    /// Whether every float tensor `t` yields has its low 16 bits zero (BF16, FP8 and FP4 data), so that each
    /// |w| histogram bin holds a single value and an exact cut needs no second look at the bin's members.
    func exactBins(_ t: Int) -> Bool
    /// Tensor `t` as an error message names it (with its file when it comes from one).
    func label(_ t: Int) -> String
}

extension TensorSource {
    public func exactBins(_ t: Int) -> Bool { false }
    public func label(_ t: Int) -> String { "tensor '\(names[t])'" }
}

/// Arrays in memory (the weights of a `WeightSet`).
public struct ArraySource: TensorSource {
    public let names: [String]
    public let shapes: [[Int]]
    let values: [[Float]]
    let exact: Bool
    public var counts: [Int] { values.map(\.count) }

    /// `exact`: the caller knows every value has its low 16 bits zero (see `exactBins`).
    public init(_ values: [[Float]], names: [String]? = nil, shapes: [[Int]]? = nil, exact: Bool = false) {
        self.values = values; self.exact = exact
        self.names = names ?? values.indices.map { "\($0)" }
        self.shapes = shapes ?? values.map { [$0.count] }
    }
    public init(_ w: WeightSet, tensors: [String]) {
        self.init(tensors.map { w.values[$0]! }, names: tensors, shapes: tensors.map { w.shapes[$0] ?? [w.values[$0]!.count] })
    }
    public func withChunk<R>(_ t: Int, start: Int, count: Int, _ body: (UnsafePointer<Float>) throws -> R) throws -> R {
        try values[t].withUnsafeBufferPointer { try body($0.baseAddress! + start) }
    }
    public func tensor(_ t: Int) throws -> [Float] { values[t] }
    public func exactBins(_ t: Int) -> Bool { exact }
}

/// Tensors decoded from an open checkpoint when a chunk is asked for: contiguous runs are decoded chunk by chunk
/// from the mapped file (little-endian F32 is read in place); the rare tensors stored in another layout (Fortran
/// order, strided views, complex types) are gathered once, when the source is made, and held.
public final class CheckpointSource: TensorSource, @unchecked Sendable {
    public let names: [String]
    public let shapes: [[Int]]
    public let counts: [Int]
    let ck: Checkpoint
    let infos: [TensorInfo]
    let held: [[Float]?]

    /// The named tensors of `ck` (each must be a decodable floating-point tensor).
    public init(_ ck: Checkpoint, tensors: [String]) throws {
        var byName: [String: TensorInfo] = [:]
        for t in ck.tensors where byName[t.name] == nil { byName[t.name] = t }
        var infos: [TensorInfo] = [], held: [[Float]?] = []
        for n in tensors {
            guard let t = byName[n], t.dtype.isFloatingPoint, t.dtype.decodable else {
                throw FormatError(.unsupported, "tensor '\(n)' is not a floating-point tensor wscan decodes")
            }
            infos.append(t)
            do { held.append(TensorData.rangeReadable(t) ? nil : try TensorData.floats(ck, t)) } catch let e as FormatError {
                throw FormatError(e.kind, "\(ck.path): \(e.message)")
            }
        }
        self.ck = ck; self.infos = infos; self.held = held
        names = tensors
        shapes = infos.map(\.shape)
        counts = zip(infos, held).map { $1?.count ?? $0.elementCount }
    }

    public func withChunk<R>(_ t: Int, start: Int, count: Int, _ body: (UnsafePointer<Float>) throws -> R) throws -> R {
        if let h = held[t] { return try h.withUnsafeBufferPointer { try body($0.baseAddress! + start) } }
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, count))
        defer { scratch.deallocate() }
        return try TensorData.withRange(ck, infos[t], start: start, count: count, scratch: scratch, body)
    }

    public func tensor(_ t: Int) throws -> [Float] {
        if let h = held[t] { return h }
        return try TensorData.floats(ck, infos[t])
    }

    /// Types whose every value is a float with 16 or more trailing zero bits.
    static let narrowTypes: Set<DType> = [.bf16, .f8e4m3, .f8e5m2, .f8e4m3fnuz, .f8e5m2fnuz, .f8e8m0, .f4]
    public func exactBins(_ t: Int) -> Bool { Self.narrowTypes.contains(infos[t].dtype) }
    public func label(_ t: Int) -> String {
        let f = infos[t].fileIndex
        return "\(f >= 0 && f < ck.files.count ? ck.files[f].path : ck.path): tensor '\(names[t])'"
    }
}
