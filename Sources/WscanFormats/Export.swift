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
    public static func export(_ ck: Checkpoint, to out: String, dtype: TargetDType, include: (TensorInfo) -> Bool,
                              metadata: [String: String] = [:]) throws -> Report {
        try ck.refuseToOverwrite(out)
        var entries: [SafetensorsWriter.Entry] = []
        var converted: [String: String] = [:]
        var skipped: [String: String] = [:]
        var names = Set<String>()
        for t in ck.tensors where include(t) {
            guard names.insert(t.name).inserted else { continue }
            guard t.dtype != .object, t.dtype.decodable || (dtype == .keep && safetensorsTypes.contains(t.dtype)) else {
                skipped[t.name] = t.note ?? "no decoder for \(t.dtype.rawValue)"
                continue
            }
            let keepRaw = dtype == .keep && safetensorsTypes.contains(t.dtype) && t.layout == .contiguous && !t.bigEndian
                && t.dtype.byteCount(elements: t.elementCount) == t.byteCount
            if keepRaw {
                entries.append(.init(name: t.name, dtype: t.dtype, shape: t.shape, bytes: Array(ck.bytes(of: t))))
                continue
            }
            let v = try TensorData.floats(ck, t)
            let target: TargetDType = dtype == .keep ? .F32 : dtype
            if dtype == .keep { converted[t.name] = "\(t.dtype.rawValue)→F32" }
            if t.dtype == .c64 || t.dtype == .c128 { throw FormatError(.unsupported, "complex tensor '\(t.name)' can only be kept as C64") }
            switch target {
            case .F32, .keep: entries.append(.init(name: t.name, shape: t.shape, floats: v))
            case .F16:
                var b = [UInt8](); b.reserveCapacity(v.count * 2)
                for x in v { let h = Float16(x).bitPattern; b.append(UInt8(h & 0xFF)); b.append(UInt8(h >> 8)) }
                entries.append(.init(name: t.name, dtype: .f16, shape: t.shape, bytes: b))
            case .BF16:
                var b = [UInt8](); b.reserveCapacity(v.count * 2)
                for x in v { let h = bf16RoundNearestEven(x); b.append(UInt8(h & 0xFF)); b.append(UInt8(h >> 8)) }
                entries.append(.init(name: t.name, dtype: .bf16, shape: t.shape, bytes: b))
            }
        }
        try SafetensorsWriter.write(entries, metadata: metadata, to: out)
        return Report(tensors: entries.count, bytes: entries.reduce(0) { $0 + $1.bytes.count }, converted: converted, skipped: skipped)
    }

    /// Float → bfloat16 with round-to-nearest-even (NaN kept quiet), as torch does.
    public static func bf16RoundNearestEven(_ x: Float) -> UInt16 {
        let u = x.bitPattern
        if x.isNaN { return UInt16(u >> 16) | 0x40 }
        let rounding = 0x7FFF + ((u >> 16) & 1)
        return UInt16((u &+ rounding) >> 16)
    }
}
