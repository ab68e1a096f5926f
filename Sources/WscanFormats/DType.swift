import WscanKernels

/// Element types of every format wscan reads. Raw values are the safetensors spellings where one exists.
public enum DType: String, Sendable, CaseIterable, Codable {
    case bool = "BOOL", u8 = "U8", i8 = "I8", i16 = "I16", u16 = "U16", i32 = "I32", u32 = "U32"
    case i64 = "I64", u64 = "U64", f16 = "F16", bf16 = "BF16", f32 = "F32", f64 = "F64", c64 = "C64"
    case c128 = "C128"
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2", f8e8m0 = "F8_E8M0"
    case f8e4m3fnuz = "F8_E4M3FNUZ", f8e5m2fnuz = "F8_E5M2FNUZ"
    case f6e2m3 = "F6_E2M3", f6e3m2 = "F6_E3M2", f4 = "F4"
    // GGML block-quantized types (GGUF)
    case q4_0 = "Q4_0", q4_1 = "Q4_1", q5_0 = "Q5_0", q5_1 = "Q5_1", q8_0 = "Q8_0", q8_1 = "Q8_1"
    case q2_K = "Q2_K", q3_K = "Q3_K", q4_K = "Q4_K", q5_K = "Q5_K", q6_K = "Q6_K", q8_K = "Q8_K"
    /// Opaque element type wscan can catalogue but not decode (GGUF IQ*/TQ*/MXFP4, NumPy structured, …).
    case opaque = "OPAQUE"
    /// NumPy object array (pickled Python objects): never unpickled.
    case object = "OBJECT"

    /// Size in bits of one element, or nil for block-quantized / opaque types.
    public var bits: Int? {
        switch self {
        case .bool, .u8, .i8, .f8e4m3, .f8e5m2, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz: return 8
        case .i16, .u16, .f16, .bf16: return 16
        case .i32, .u32, .f32: return 32
        case .i64, .u64, .f64, .c64: return 64
        case .c128: return 128
        case .f6e2m3, .f6e3m2: return 6
        case .f4: return 4
        default: return nil
        }
    }

    /// (elements per block, bytes per block) for GGML quantized types.
    public var block: (elements: Int, bytes: Int)? {
        switch self {
        case .q4_0: return (32, 18); case .q4_1: return (32, 20); case .q5_0: return (32, 22)
        case .q5_1: return (32, 24); case .q8_0: return (32, 34); case .q8_1: return (32, 36)
        case .q2_K: return (256, 84); case .q3_K: return (256, 110); case .q4_K: return (256, 144)
        case .q5_K: return (256, 176); case .q6_K: return (256, 210); case .q8_K: return (256, 292)
        default: return nil
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .f16, .bf16, .f32, .f64, .f8e4m3, .f8e5m2, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz, .f6e2m3, .f6e3m2, .f4: return true
        default: return block != nil
        }
    }

    /// Exact byte count for `count` elements, nil on overflow or when the count doesn't fill whole bytes/blocks.
    public func byteCount(elements count: Int) -> Int? {
        if let b = block {
            guard count % b.elements == 0 else { return nil }
            let (r, o) = (count / b.elements).multipliedReportingOverflow(by: b.bytes)
            return o ? nil : r
        }
        guard let bits else { return nil }
        let (t, o) = count.multipliedReportingOverflow(by: bits)
        guard !o, t % 8 == 0 else { return nil }
        return t / 8
    }

    /// Whether wscan can decode this type to Float for statistics.
    public var decodable: Bool {
        switch self {
        case .opaque, .object, .f6e2m3, .f6e3m2, .q8_1: return false
        default: return true
        }
    }
}

/// Element count of a shape with overflow checking (nil on overflow or a negative dimension).
public func elementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (r, o) = n.multipliedReportingOverflow(by: d)
        if o { return nil }
        n = r
    }
    return n
}

/// Lookup tables for byte-coded float formats, built once.
enum MiniFloatTables {
    static let e4m3 = MiniFloat.e4m3fn.table()
    static let e5m2 = MiniFloat.e5m2.table()
    static let e4m3fnuz = MiniFloat.e4m3fnuz.table()
    static let e5m2fnuz = MiniFloat.e5m2fnuz.table()
    static let e8m0 = MiniFloat.e8m0.table()
    static let e2m1 = MiniFloat.e2m1.table()
}
