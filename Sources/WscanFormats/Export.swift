import Foundation
import WscanKernels

/// Converts any readable checkpoint into one safetensors file.
public enum Exporter {
    public enum TargetDType: String, CaseIterable, Sendable { case keep, F32, F16, BF16 }

    public struct Report: Codable, Sendable {
        public var tensors: Int
        public var bytes: Int
        public var converted: [String: String]   // tensor → "from→to" when `keep` could not keep the type
        public var skipped: [String: String]     // tensor → why it was left out (no decoder, object array)
    }

    static let safetensorsTypes: Set<DType> = [.bool, .u8, .i8, .i16, .u16, .i32, .u32, .i64, .u64, .f16, .bf16, .f32, .f64, .c64,
                                               .f8e4m3, .f8e5m2, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz, .f4]

    /// Writes `ck`'s tensors (filtered by `include`) to `out`. Refuses to overwrite any of the checkpoint's own files.
    /// `replacing` gives new values (row-major, same shape) for some tensors, e.g. pruned or permuted weights;
    /// `replacingLazily` gives them as closures called while the file is written, one tensor at a time, so exporting
    /// a pruned large model holds one tensor, not the model (tensors kept as they are go from the mapped file to
    /// the output without a copy). With
    /// `keep` they are written in the tensor's own dtype: F16, BF16 and F32 hold every value that came from them
    /// exactly; an F64 tensor keeps its original value wherever the (non-zero) replacement equals it rounded to float32
    /// (so pruning an F64 tensor changes only the pruned elements, which become exact zeros); any other dtype becomes F32 (listed in `converted`).
    public static func export(_ ck: Checkpoint, to out: String, dtype: TargetDType, include: (TensorInfo) -> Bool,
                              replacing: [String: [Float]] = [:],
                              replacingLazily: [String: @Sendable () throws -> [Float]] = [:],
                              adding: [SafetensorsWriter.Entry] = [],
                              metadata: [String: String] = [:]) throws -> Report {
        try ck.refuseToOverwrite(out)
        var entries: [SafetensorsWriter.Entry] = []
        let notes = Notes()                         // filled in while writing (F64 values rounded)
        var converted: [String: String] = [:]
        var skipped: [String: String] = [:]
        var names = Set<String>()
        for t in ck.tensors where include(t) {
            guard names.insert(t.name).inserted else { continue }
            guard t.dtype != .object, t.dtype.decodable || (dtype == .keep && safetensorsTypes.contains(t.dtype)) else {
                skipped[t.name] = t.note ?? "no decoder for \(t.dtype.rawValue)"
                continue
            }
            // Only floating-point tensors are converted to a target dtype; integer and bool tensors keep theirs.
            let keepRaw = (dtype == .keep || !t.dtype.isFloatingPoint) && safetensorsTypes.contains(t.dtype) && t.layout == .contiguous
                && !t.bigEndian && t.dtype.byteCount(elements: t.elementCount) == t.byteCount
            let eager = replacing[t.name]
            if eager != nil || replacingLazily[t.name] != nil {
                let lazy = replacingLazily[t.name]
                let values: @Sendable () throws -> [Float] = {
                    let r = try eager ?? lazy!()
                    guard r.count == t.elementCount else { throw FormatError(.shape, "replacement for '\(t.name)' has \(r.count) values, the tensor \(t.elementCount)") }
                    return r
                }
                if let r = eager, r.count != t.elementCount { _ = try values() }     // fails now, before any file is written
                let n = t.elementCount
                switch (dtype, t.dtype) {
                case (.keep, .f32): entries.append(floatEntry(t.name, t.shape, n, values))
                case (.keep, .f16): entries.append(lazyEntry(t.name, .f16, t.shape, n) { try $0(f16Bytes(values())) })
                case (.keep, .bf16): entries.append(lazyEntry(t.name, .bf16, t.shape, n) { try $0(bf16Bytes(values())) })
                case (.keep, .f64):
                    entries.append(lazyEntry(t.name, .f64, t.shape, n) { sink in
                        let r = try values()
                        // The original doubles in row-major order (a view gathered, big-endian swapped).
                        let rowMajor = try? TensorData.rowMajorBytes(ck, t)
                        let old: [Double]? = rowMajor.flatMap { b in b.count >= r.count * 8
                            ? b.withUnsafeBytes { raw in (0..<r.count).map { Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self))) } } : nil }
                        var b = [UInt8](repeating: 0, count: r.count * 8)
                        var rounded = 0                       // non-zero values that could not be given their double back
                        var under = 0                         // non-zero doubles below float32's range written as 0
                        b.withUnsafeMutableBytes { p in
                            for i in r.indices {
                                var v = Double(r[i])
                                if let o = old?[i], r[i] != 0, Float(o) == r[i] || (r[i].isNaN && o.isNaN) { v = o }
                                else if r[i] != 0 && Double(r[i]) != old?[i] { rounded += 1 }
                                else if r[i] == 0, let o = old?[i], o != 0, Float(o) == 0 { under += 1 }
                                p.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: i * 8, as: UInt64.self)
                            }
                        }
                        // A zero in the replacement is a pruned weight, or a kept one the float32 values cannot tell
                        // from zero (|w| < 1.4e-45): those are written as 0 and counted.
                        let parts = (rounded > 0 ? ["\(rounded) of \(r.count) values at float32 precision (moved or changed values)"] : [])
                            + (under > 0 ? ["\(under) values below float32's range (|w| < 1.4e-45, zero to the float32 analysis) written as 0"] : [])
                        if !parts.isEmpty { notes.set(t.name, "F64 with " + parts.joined(separator: "; ")) }
                        try sink(b)
                    })
                case (.keep, _), (.F32, _):
                    if dtype == .keep { converted[t.name] = t.dtype == .f32 ? "F32 view made contiguous" : "\(t.dtype.rawValue)→F32" }
                    entries.append(floatEntry(t.name, t.shape, n, values))
                case (.F16, _): entries.append(lazyEntry(t.name, .f16, t.shape, n) { try $0(f16Bytes(values())) })
                case (.BF16, _): entries.append(lazyEntry(t.name, .bf16, t.shape, n) { try $0(bf16Bytes(values())) })
                }
                continue
            }
            if keepRaw {
                // Straight from the mapped file to the output.
                entries.append(.init(name: t.name, dtype: t.dtype, shape: t.shape, byteCount: t.byteCount) { sink in try sink(ck.bytes(of: t)) })
                continue
            }
            // Complex tensors other than little-endian C64 (C128, big-endian C64) have no safetensors type wscan
            // writes: left out and named, the other tensors written.
            // (a little-endian C64 view is gathered below like any type safetensors has; byte-swapping would exchange
            // a big-endian one's real and imaginary parts)
            if t.dtype == .c128 || (t.dtype == .c64 && t.bigEndian) {
                skipped[t.name] = "\(t.dtype.rawValue)\(t.bigEndian ? " big-endian" : ""): only little-endian C64 is kept (no complex conversion)"
                continue
            }
            if let why = TensorData.unexpandable(t) { skipped[t.name] = why; continue }     // a broadcast view too large to expand
            // A view or big-endian array of a type safetensors has, kept in that type (an I64 view went through
            // Float: 16777217 read 16777216; F64 1e300 became inf): its elements gathered, bytes swapped to little-endian.
            if dtype == .keep || !t.dtype.isFloatingPoint, safetensorsTypes.contains(t.dtype), let bits = t.dtype.bits, bits >= 8,
               bits % 8 == 0, t.dtype.block == nil {
                var how: [String] = []
                if t.layout != .contiguous { how.append("view made contiguous") }
                if t.bigEndian { how.append("big-endian, written little-endian") }
                converted[t.name] = "\(t.dtype.rawValue) " + how.joined(separator: "; ")
                entries.append(lazyEntry(t.name, t.dtype, t.shape, t.elementCount) { try $0(TensorData.rowMajorBytes(ck, t)) })
                continue
            }
            let target: TargetDType = dtype == .keep || !t.dtype.isFloatingPoint ? .F32 : dtype
            if dtype == .keep || !t.dtype.isFloatingPoint {
                converted[t.name] = t.dtype == .f32 && !t.bigEndian ? "F32 view made contiguous" : "\(t.dtype.rawValue)\(t.bigEndian ? " big-endian" : "")→F32"
            }
            let n = t.elementCount
            switch target {
            case .F32, .keep: entries.append(floatEntry(t.name, t.shape, n) { try TensorData.floats(ck, t) })
            case .F16: entries.append(lazyEntry(t.name, .f16, t.shape, n) { try $0(f16Bytes(TensorData.floats(ck, t))) })
            case .BF16: entries.append(lazyEntry(t.name, .bf16, t.shape, n) { try $0(bf16Bytes(TensorData.floats(ck, t))) })
            }
        }
        // Nothing to write: no file is written (one that is already at `out` stays as it was).
        // Tensors the checkpoint lacks (a zero bias an evaluated path gives A), after its own.
        for e in adding where !entries.contains(where: { $0.name == e.name }) { entries.append(e) }
        if entries.isEmpty && !skipped.isEmpty {
            let why = skipped.sorted { $0.key < $1.key }.prefix(3).map { "\($0.key): \($0.value)" }.joined(separator: "; ")
            throw FormatError(.unsupported, "no tensor can be exported (\(why)\(skipped.count > 3 ? "; …" : ""))")
        }
        try SafetensorsWriter.write(entries, metadata: metadata, to: out)
        converted.merge(notes.all) { _, new in new }
        return Report(tensors: entries.count, bytes: entries.reduce(0) { $0 + $1.byteCount }, converted: converted, skipped: skipped)
    }

    /// Conversion notes recorded by lazy entries while the file is written (the writer calls them in turn).
    final class Notes: @unchecked Sendable {
        private var d: [String: String] = [:]
        private let lock = NSLock()
        func set(_ k: String, _ v: String) { lock.lock(); d[k] = v; lock.unlock() }
        var all: [String: String] { lock.lock(); defer { lock.unlock() }; return d }
    }

    /// An entry of `n` elements of `dtype` whose bytes `make` hands to the writer's sink when it gets to it.
    static func lazyEntry(_ name: String, _ dtype: DType, _ shape: [Int], _ n: Int,
                          _ make: @escaping @Sendable (_ sink: ([UInt8]) throws -> Void) throws -> Void) -> SafetensorsWriter.Entry {
        SafetensorsWriter.Entry(name: name, dtype: dtype, shape: shape, byteCount: dtype.byteCount(elements: n) ?? -1) { sink in
            try make { bytes in try bytes.withUnsafeBytes { try sink($0) } }
        }
    }

    /// An F32 entry whose floats go to the writer as they are (no byte copy).
    static func floatEntry(_ name: String, _ shape: [Int], _ n: Int,
                           _ values: @escaping @Sendable () throws -> [Float]) -> SafetensorsWriter.Entry {
        SafetensorsWriter.Entry(name: name, dtype: .f32, shape: shape, byteCount: n * 4) { sink in try values().withUnsafeBytes { try sink($0) } }
    }

    static func f16Bytes(_ v: [Float]) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: v.count * 2) { b, done in
            let out = UnsafeMutableRawPointer(b.baseAddress!)
            for (i, x) in v.enumerated() { out.storeBytes(of: Float16(x).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
            done = v.count * 2
        }
    }

    static func bf16Bytes(_ v: [Float]) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: v.count * 2) { b, done in
            let out = UnsafeMutableRawPointer(b.baseAddress!)
            for (i, x) in v.enumerated() { out.storeBytes(of: bf16RoundNearestEven(x).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
            done = v.count * 2
        }
    }

    /// Float → bfloat16 with round-to-nearest-even (NaN kept quiet), as torch does.
    public static func bf16RoundNearestEven(_ x: Float) -> UInt16 { Decode.bf16RoundNearestEven(x) }
}
