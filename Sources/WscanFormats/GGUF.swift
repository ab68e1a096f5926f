import Foundation

/// Validating GGUF (v2/v3) reader: the checks llama.cpp's gguf.cpp and the `gguf` Python reader make, with
/// every length and count bounded by the bytes left in the file so hostile headers fail fast in bounded
/// memory. Tensor bytes stay in the memory map.
public enum GGUFReader {
    public static let maxStringBytes = 1 << 30
    public static let maxArrayElements = 1 << 30
    public static let maxArrayDepth = 8
    public static let maxDims = 4
    public static let defaultAlignment = 32
    /// Arrays with at most this many items are printed in full in the metadata; longer ones are summarised.
    public static let printedArrayItems = 16

    public static func read(path: String) throws -> Checkpoint {
        let storage = try Storage(mapping: path)
        let file = try FileRef.of(storage, path)
        let (tensors, meta) = try parse(storage, fileIndex: 0, storageIndex: 0)
        return Checkpoint(path: path, format: .gguf, files: [file], storages: [storage], tensors: tensors, metadata: meta)
    }

    /// GGUF metadata value types.
    enum ValueType: UInt32 {
        case u8 = 0, i8, u16, i16, u32, i32, f32, bool, string, array, u64, i64, f64

        var name: String {
            switch self {
            case .u8: "uint8"; case .i8: "int8"; case .u16: "uint16"; case .i16: "int16"; case .u32: "uint32"
            case .i32: "int32"; case .f32: "float32"; case .bool: "bool"; case .string: "string"; case .array: "array"
            case .u64: "uint64"; case .i64: "int64"; case .f64: "float64"
            }
        }

        /// Encoded size of a scalar; nil for strings and arrays.
        var size: Int? {
            switch self {
            case .u8, .i8, .bool: 1
            case .u16, .i16: 2
            case .u32, .i32, .f32: 4
            case .u64, .i64, .f64: 8
            case .string, .array: nil
            }
        }

        /// Fewest bytes one value of this type can occupy (string: u64 length; array: u32 type + u64 count).
        var minSize: Int { size ?? (self == .string ? 8 : 12) }
    }

    /// GGML tensor type ids (ggml.h `enum ggml_type`, checked against gguf-py's GGMLQuantizationType).
    static let dtypes: [UInt32: DType] = [
        0: .f32, 1: .f16, 2: .q4_0, 3: .q4_1, 6: .q5_0, 7: .q5_1, 8: .q8_0, 9: .q8_1,
        10: .q2_K, 11: .q3_K, 12: .q4_K, 13: .q5_K, 14: .q6_K, 15: .q8_K,
        24: .i8, 25: .i16, 26: .i32, 27: .i64, 28: .f64, 30: .bf16,
    ]

    /// Types wscan catalogues but cannot decode: name, elements per block, bytes per block (GGML_QUANT_SIZES).
    static let opaqueTypes: [UInt32: (name: String, elements: Int, bytes: Int)] = [
        16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
        20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
        29: ("IQ1_M", 256, 56), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
        40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
    ]

    /// Bounds-checked little-endian reader over the mapped file.
    struct Cursor {
        let buf: UnsafeRawBufferPointer
        var pos = 0
        var remaining: Int { buf.count - pos }

        mutating func need(_ n: Int, _ what: @autoclosure () -> String) throws {
            guard n >= 0, n <= remaining else {
                throw FormatError(.truncated, "file ends inside \(what()) at offset \(pos) (\(buf.count)-byte file)")
            }
        }

        mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
            try need(MemoryLayout<T>.size, what())
            let v = T(littleEndian: buf.loadUnaligned(fromByteOffset: pos, as: T.self))
            pos += MemoryLayout<T>.size
            return v
        }

        mutating func skip(_ n: Int, _ what: @autoclosure () -> String) throws {
            try need(n, what())
            pos += n
        }

        /// A u64-length-prefixed string; `keep: false` skips it without copying.
        /// `name`: a metadata key or tensor name, refused unless valid UTF-8 (values are decoded leniently).
        mutating func string(_ what: @autoclosure () -> String, keep: Bool = true, name: Bool = false) throws -> String {
            let n = try load(UInt64.self, what())
            guard n <= UInt64(GGUFReader.maxStringBytes) else {
                throw FormatError(.header, "\(what()) length \(n) exceeds the 1 GiB limit")
            }
            try need(Int(n), what())
            defer { pos += Int(n) }
            guard keep else { return "" }
            let bytes = UnsafeRawBufferPointer(rebasing: buf[pos..<(pos + Int(n))])
            guard name else { return String(decoding: bytes, as: UTF8.self) }
            // Names are refused like gguf-py refuses them (UnicodeDecodeError): decoded lossily, distinct names would
            // merge into one.
            guard let s = String(validating: bytes.bindMemory(to: UInt8.self), as: UTF8.self) else {
                throw FormatError(.header, "\(what()) is not valid UTF-8")
            }
            return s
        }
    }

    /// Parses and validates header, metadata and tensor infos; returns tensors in file order and the metadata as text.
    public static func parse(_ s: Storage, fileIndex: Int, storageIndex: Int) throws -> ([TensorInfo], [String: String]) {
        var c = Cursor(buf: s.buffer)
        guard c.buf.count >= 4 else { throw FormatError(.truncated, "file too short for a GGUF header (\(c.buf.count) bytes)") }
        guard Array(c.buf.prefix(4)) == Array("GGUF".utf8) else { throw FormatError(.header, "bad magic: not a GGUF file") }
        c.pos = 4
        let version = try c.load(UInt32.self, "version")
        if version == 1 { throw FormatError(.unsupported, "GGUF version 1 is not supported (only versions 2 and 3)") }
        if version & 0xFFFF == 0, [2, 3].contains(version.byteSwapped) {
            throw FormatError(.unsupported, "big-endian GGUF files are not supported")
        }
        guard version == 2 || version == 3 else { throw FormatError(.unsupported, "unsupported GGUF version \(version) (only 2 and 3)") }
        let tensorCount = try c.load(UInt64.self, "tensor count")
        let kvCount = try c.load(UInt64.self, "metadata count")
        // Each metadata entry takes at least 13 bytes (key length, type, 1-byte value), each tensor info 24.
        guard kvCount <= UInt64(c.remaining / 13) else {
            throw FormatError(.header, "metadata count \(kvCount) is impossible in a \(c.buf.count)-byte file")
        }
        guard tensorCount <= UInt64(c.remaining / 24) else {
            throw FormatError(.header, "tensor count \(tensorCount) is impossible in a \(c.buf.count)-byte file")
        }

        var meta: [String: String] = [:]
        var alignment = defaultAlignment
        for _ in 0..<Int(kvCount) {
            let key = try c.string("metadata key", name: true)
            let rawType = try c.load(UInt32.self, "type of '\(key)'")
            guard let type = ValueType(rawValue: rawType) else {
                throw FormatError(.header, "metadata '\(key)' has unknown value type \(rawType)")
            }
            let valueStart = c.pos
            let text = try value(&c, type, key: key, depth: 0, render: true)
            if meta[key] != nil { throw FormatError(.duplicate, "duplicate metadata key '\(key)'") }
            meta[key] = text
            if key == "general.alignment" {
                guard type == .u32 else { throw FormatError(.header, "general.alignment must be uint32, not \(type.name)") }
                let a = Int(UInt32(littleEndian: c.buf.loadUnaligned(fromByteOffset: valueStart, as: UInt32.self)))
                guard a > 0, a & (a - 1) == 0 else {
                    throw FormatError(.header, "general.alignment \(a) is not a nonzero power of two")
                }
                alignment = a
            }
        }

        struct Info { var name: String; var dtype: DType; var shape: [Int]; var bytes: Int; var offset: UInt64; var note: String? }
        var infos: [Info] = []
        infos.reserveCapacity(Int(tensorCount))
        var names = Set<String>()
        for i in 0..<Int(tensorCount) {
            let name = try c.string("name of tensor \(i)", name: true)
            guard names.insert(name).inserted else { throw FormatError(.duplicate, "duplicate tensor name '\(name)'") }
            let nDims = try c.load(UInt32.self, "dimension count of tensor '\(name)'")
            guard nDims <= UInt32(maxDims) else {
                throw FormatError(.shape, "tensor '\(name)' has \(nDims) dimensions (at most \(maxDims))")
            }
            var dims: [Int] = []
            for _ in 0..<Int(nDims) {
                let d = try c.load(UInt64.self, "shape of tensor '\(name)'")
                guard d <= UInt64(Int64.max) else { throw FormatError(.shape, "tensor '\(name)': dimension \(d) is negative as int64") }
                dims.append(Int(d))
            }
            let shape = Array(dims.reversed())   // ggml order is innermost first
            guard let count = elementCount(shape), count < Int(Int64.max) else {
                throw FormatError(.shape, "tensor '\(name)': element count of shape \(shape) overflows")
            }
            let typeID = try c.load(UInt32.self, "type of tensor '\(name)'")
            let dtype: DType, block: (elements: Int, bytes: Int), note: String?, typeName: String
            if let dt = dtypes[typeID] {
                dtype = dt; block = dt.block ?? (1, (dt.bits ?? 8) / 8); note = nil; typeName = dt.rawValue
            } else if let o = opaqueTypes[typeID] {
                dtype = .opaque; block = (o.elements, o.bytes); note = "GGML type \(o.name): no decoder"; typeName = o.name
            } else {
                throw FormatError(.dtype, "tensor '\(name)' has unknown GGML type id \(typeID)")
            }
            let inner = dims.first ?? 1
            guard inner % block.elements == 0 else {
                throw FormatError(.shape, "tensor '\(name)': innermost dimension \(inner) is not a multiple of the block size \(block.elements) of \(typeName)")
            }
            let (nbytes, o) = (count / block.elements).multipliedReportingOverflow(by: block.bytes)
            guard !o else { throw FormatError(.shape, "tensor '\(name)': byte size of shape \(shape) overflows") }
            let offset = try c.load(UInt64.self, "offset of tensor '\(name)'")
            infos.append(Info(name: name, dtype: dtype, shape: shape, bytes: nbytes, offset: offset, note: note))
        }

        let size = c.buf.count
        let dataStart = (c.pos + alignment - 1) / alignment * alignment
        var expected = 0
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(infos.count)
        for t in infos {
            guard t.offset <= UInt64(size), dataStart + Int(t.offset) <= size else {
                throw FormatError(.bounds, "tensor '\(t.name)': data offset \(t.offset) lies past end of file (\(size) bytes)")
            }
            let off = Int(t.offset)
            guard off % alignment == 0 else {
                throw FormatError(.layout, "tensor '\(t.name)': offset \(off) is not a multiple of the alignment \(alignment)")
            }
            guard off == expected else {
                throw FormatError(.layout, "tensor '\(t.name)' has offset \(off), expected \(expected) (tensor data must be contiguous and in order)")
            }
            let start = dataStart + off
            guard t.bytes <= size - start else {
                throw FormatError(.bounds, "tensor '\(t.name)' ends at \(start) + \(t.bytes), past end of file (\(size) bytes)")
            }
            let padded = (t.bytes + alignment - 1) / alignment * alignment   // t.bytes < size: no overflow
            expected += padded
            var ti = TensorInfo(name: t.name, dtype: t.dtype, shape: t.shape, storage: storageIndex, byteOffset: start,
                                byteCount: t.bytes, fileIndex: fileIndex, fileOffset: start)
            ti.note = t.note
            tensors.append(ti)
        }
        if meta["GGUF.version"] == nil { meta["GGUF.version"] = "\(version)" }
        return (tensors, meta)
    }

    /// Reads one metadata value; returns its text (scalars as text, short arrays printed, long ones summarised)
    /// when `render`, else skips it. Work and memory are bounded by the file size.
    static func value(_ c: inout Cursor, _ type: ValueType, key: String, depth: Int, render: Bool) throws -> String {
        func what() -> String { "metadata '\(key)'" }
        switch type {
        case .u8: let v = try c.load(UInt8.self, what()); return render ? "\(v)" : ""
        case .i8: let v = try c.load(Int8.self, what()); return render ? "\(v)" : ""
        case .u16: let v = try c.load(UInt16.self, what()); return render ? "\(v)" : ""
        case .i16: let v = try c.load(Int16.self, what()); return render ? "\(v)" : ""
        case .u32: let v = try c.load(UInt32.self, what()); return render ? "\(v)" : ""
        case .i32: let v = try c.load(Int32.self, what()); return render ? "\(v)" : ""
        case .u64: let v = try c.load(UInt64.self, what()); return render ? "\(v)" : ""
        case .i64: let v = try c.load(Int64.self, what()); return render ? "\(v)" : ""
        case .f32: let v = Float(bitPattern: try c.load(UInt32.self, what())); return render ? "\(v)" : ""
        case .f64: let v = Double(bitPattern: try c.load(UInt64.self, what())); return render ? "\(v)" : ""
        case .bool: let v = try c.load(UInt8.self, what()); return render ? (v != 0 ? "true" : "false") : ""
        case .string: return try c.string(what(), keep: render)
        case .array:
            guard depth < maxArrayDepth else { throw FormatError(.header, "\(what()): arrays nested deeper than \(maxArrayDepth)") }
            let rawType = try c.load(UInt32.self, what())
            guard let et = ValueType(rawValue: rawType) else { throw FormatError(.header, "\(what()): unknown array element type \(rawType)") }
            let n = try c.load(UInt64.self, what())
            guard n <= UInt64(maxArrayElements) else {
                throw FormatError(.header, "\(what()): array length \(n) exceeds the limit of \(maxArrayElements)")
            }
            guard n <= UInt64(c.remaining / et.minSize) else {
                throw FormatError(.truncated, "\(what()): array of \(n) \(et.name) cannot fit in the \(c.remaining) bytes left")
            }
            let count = Int(n)
            let printed = render && count <= printedArrayItems
            if !printed, let sz = et.size {
                try c.skip(count * sz, what())
            } else {
                var items: [String] = []
                for _ in 0..<count {
                    let v = try value(&c, et, key: key, depth: depth + 1, render: printed)
                    if printed { items.append(et == .string ? quoted(v) : v) }
                }
                if printed { return "[" + items.joined(separator: ", ") + "]" }
            }
            return render ? "[array of \(count) \(et.name)]" : ""
        }
    }

    static func quoted(_ s: String) -> String {
        "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
