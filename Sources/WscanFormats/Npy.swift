import Foundation

/// NumPy .npy reader (format versions 1.0, 2.0, 3.0). The header is a Python dict literal, parsed here by a
/// small literal parser (never evaluated). Object arrays are recorded as such; their pickle is never run.
public enum NpyReader {
    public static let maxHeaderBytes = 1 << 20

    public struct Header: Sendable {
        public var dtype: DType
        public var bigEndian: Bool
        public var fortran: Bool
        public var shape: [Int]
        public var dataOffset: Int
        public var descr: String
        public var structured = false
    }

    public static func read(path: String) throws -> Checkpoint {
        let st = try Storage(mapping: path)
        let file = try FileRef.of(st, path)
        let t = try tensor(in: st, name: (path as NSString).lastPathComponent.replacingOccurrences(of: ".npy", with: ""),
                           storageIndex: 0, fileIndex: 0, fileBase: 0)
        let ck = Checkpoint(path: path, format: .npy, files: [file], storages: [st], tensors: [t])
        if t.dtype == .object { ck.warnings.append("object array: contains a pickle, not loaded") }
        return ck
    }

    /// Validates an .npy image held in `st` and returns its tensor. `fileBase` is the storage's offset in its
    /// file when stored uncompressed (nil when inflated).
    public static func tensor(in st: Storage, name: String, storageIndex: Int, fileIndex: Int, fileBase: Int?) throws -> TensorInfo {
        let h = try parseHeader(st.buffer)
        guard let count = elementCount(h.shape) else { throw FormatError(.shape, "shape \(h.shape) overflows") }
        var nbytes: Int
        if h.dtype == .object {
            nbytes = st.count - h.dataOffset // a pickle stream follows
        } else if h.structured {
            nbytes = st.count - h.dataOffset      // the fields' sizes are not computed: the rest of the file
            if count > 0 && nbytes <= 0 { throw FormatError(.truncated, "structured array of \(count) elements with no data") }
        } else if h.dtype == .opaque {
            let itemsize = opaqueItemSize(h.descr)
            let (r, o) = count.multipliedReportingOverflow(by: itemsize)
            guard !o else { throw FormatError(.shape, "shape \(h.shape) overflows") }
            nbytes = r
        } else {
            guard let b = h.dtype.byteCount(elements: count) else { throw FormatError(.shape, "shape \(h.shape) overflows") }
            nbytes = b
        }
        let avail = st.count - h.dataOffset
        if h.dtype != .object {
            if nbytes > avail { throw FormatError(.truncated, "data needs \(nbytes) bytes, file has \(avail)") }
        }
        // numpy reads the elements the header promises and ignores what follows; so does wscan, and says so.
        let trailing = h.dtype != .object && nbytes < avail ? avail - nbytes : 0
        var t = TensorInfo(name: name, dtype: h.dtype, shape: h.shape, storage: storageIndex, byteOffset: h.dataOffset,
                           byteCount: nbytes, fileIndex: fileIndex, fileOffset: fileBase.map { $0 + h.dataOffset })
        t.layout = h.fortran && h.shape.count > 1 ? .fortran : .contiguous
        t.bigEndian = h.bigEndian
        if h.dtype == .object { t.note = "object array (pickled Python objects): not loaded" }
        if h.dtype == .opaque { t.note = h.structured ? "NumPy structured dtype: no decoder" : "NumPy dtype \(h.descr): no decoder" }
        if trailing > 0 { t.note = (t.note.map { $0 + "; " } ?? "") + "\(trailing) trailing bytes after the array data, ignored as numpy does" }
        return t
    }

    /// The header's text and where the data starts, from the magic and length fields alone (no dict parsing).
    public static func headerSpan(_ b: UnsafeRawBufferPointer) -> (text: String, dataOffset: Int)? {
        guard let (start, hlen, _) = try? headerBounds(b) else { return nil }
        return (String(decoding: UnsafeRawBufferPointer(rebasing: b[start..<(start + hlen)]), as: UTF8.self), start + hlen)
    }

    /// Where the header text starts, its length and the format major version, from the magic and length fields.
    static func headerBounds(_ b: UnsafeRawBufferPointer) throws -> (start: Int, length: Int, major: UInt8) {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard b.count >= 10 else { throw FormatError(.truncated, "file too short for an .npy header") }
        guard zip(magic, b).allSatisfy({ $0 == $1 }) else { throw FormatError(.header, "missing \\x93NUMPY magic") }
        let major = b[6]
        var hlen: Int, start: Int
        switch major {
        case 1: hlen = Int(b.loadUnaligned(fromByteOffset: 8, as: UInt16.self).littleEndian); start = 10
        case 2, 3:
            guard b.count >= 12 else { throw FormatError(.truncated, "file too short for an .npy v\(major) header") }
            hlen = Int(b.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian); start = 12
        default: throw FormatError(.header, "unsupported .npy version \(major).\(b[7])")
        }
        guard hlen <= maxHeaderBytes else { throw FormatError(.header, "header length \(hlen) over the limit") }
        guard hlen <= b.count - start else { throw FormatError(.truncated, "header length \(hlen) runs past end of file") }
        return (start, hlen, major)
    }

    /// Whether a header's descr holds Python objects anywhere numpy looks for them: 'O', '|O8', 'object' (any
    /// spelling the literal allows: u'|O', '|' 'O', '|\x4f'), a structured field's type, a sub-array's base type,
    /// nested. nil when the header cannot be parsed.
    public static func descrHoldsObject(_ header: String) -> Bool? {
        var p = PyLiteralParser(Array(header.unicodeScalars))
        guard let v = try? p.parse(), case let .dict(d) = v, let descr = d["descr"] else { return nil }
        func holds(_ v: PyLiteralParser.Value, depth: Int) -> Bool {
            guard depth < 16 else { return true }
            switch v {
            case let .str(s): return isObjectType(s)
            case let .list(fields):   // [(name, type[, shape]), …]; a name may be (title, name)
                return fields.contains { f in if case let .tuple(t) = f, t.count >= 2 { return holds(t[1], depth: depth + 1) }; return false }
            case let .tuple(t):       // (base type, shape): a sub-array
                return t.first.map { holds($0, depth: depth + 1) } ?? false
            default: return false
            }
        }
        return holds(descr, depth: 0)
    }

    static func isObjectType(_ s: String) -> Bool {
        var c = Substring(s)
        if let f = c.first, "<>|=".contains(f) { c = c.dropFirst() }
        return c == "object" || (c.first == "O" && c.dropFirst().allSatisfy(\.isNumber))
    }

    public static func parseHeader(_ b: UnsafeRawBufferPointer) throws -> Header {
        let (start, hlen, major) = try headerBounds(b)
        let bytes = UnsafeRawBufferPointer(rebasing: b[start..<(start + hlen)])
        let text: String
        if major == 3 {
            guard let s = String(validating: bytes.bindMemory(to: UInt8.self), as: UTF8.self) else { throw FormatError(.header, "header is not UTF-8") }
            text = s
        } else {
            guard bytes.allSatisfy({ $0 < 0x80 }) else { throw FormatError(.header, "header is not ASCII") }
            text = String(decoding: bytes, as: UTF8.self)
        }
        var p = PyLiteralParser(Array(text.unicodeScalars))
        guard case let .dict(d) = try p.parse() else { throw FormatError(.header, "header is not a dict") }
        let descr: String
        var structured = false
        switch d["descr"] {
        case let .str(v)?: descr = v
        case .list?:
            // A structured dtype ([('a', '<f4'), ('b', '<i4')]): catalogued without a decoder; one with an object
            // field type anywhere (not a field *named* 'O') is pickled, as numpy saves it.
            let objects = descrHoldsObject(text) ?? true
            descr = objects ? "O" : ""
            structured = !objects
        case .some: throw FormatError(.header, "'descr' is neither a dtype string nor a list of fields")
        case nil: throw FormatError(.header, "header lacks 'descr'")
        }
        guard case let .bool(fortran)? = d["fortran_order"] else { throw FormatError(.header, "header lacks 'fortran_order'") }
        guard case let .tuple(dims)? = d["shape"] else { throw FormatError(.header, "header lacks a 'shape' tuple") }
        var shape: [Int] = []
        for x in dims {
            guard case let .int(v) = x, v >= 0 else { throw FormatError(.shape, "bad dimension in shape") }
            shape.append(v)
        }
        guard shape.count <= 64 else { throw FormatError(.shape, "more than 64 dimensions") }
        let (dt, be) = structured ? (DType.opaque, false) : try mapDescr(descr)
        return Header(dtype: dt, bigEndian: be, fortran: fortran, shape: shape, dataOffset: start + hlen, descr: descr, structured: structured)
    }

    /// Bytes per element of the dtypes catalogued without a decoder: `S10`/`V16` (n bytes), `U10` (4 bytes per
    /// character), `M8[D]`/`m8[ns]` datetimes and timedeltas (8), `f16` (float128, 16).
    static func opaqueItemSize(_ descr: String) -> Int {
        var code = Substring(descr)
        if let f = code.first, "<>|=".contains(f) { code = code.dropFirst() }
        guard let kind = code.first else { return 0 }
        let digits = code.dropFirst().prefix { $0.isNumber }
        let n = Int(digits) ?? 0
        switch kind {
        case "U": return n.multipliedSaturating(by: 4)      // a hostile 'U4611686018427387904' trapped
        case "M", "m": return n > 0 ? n : 8
        default: return n      // S, V, f (f16 → 16)
        }
    }

    static func mapDescr(_ s: String) throws -> (DType, Bool) {
        // numpy reads 'O', 'object', 'O8' and '|O' alike: Python objects (a pickle follows the header).
        if isObjectType(s) { return (.object, false) }
        guard s.count >= 2 else { throw FormatError(.dtype, "bad descr '\(s)'") }
        var chars = Array(s)
        var order: Character = "="
        if "<>|=".contains(chars[0]) { order = chars.removeFirst() }
        let code = String(chars)
        let be = order == ">"
        let table: [String: DType] = [
            "b1": .bool, "?": .bool, "u1": .u8, "i1": .i8, "u2": .u16, "i2": .i16, "u4": .u32, "i4": .i32,
            "u8": .u64, "i8": .i64, "f2": .f16, "f4": .f32, "f8": .f64, "c8": .c64, "c16": .c128, "O": .object,
        ]
        if let d = table[code] { return (d, be && (d.bits ?? 8) > 8) }
        if code.hasPrefix("V") || code.hasPrefix("S") || code.hasPrefix("U") || code.hasPrefix("f16") || code.hasPrefix("M") || code.hasPrefix("m") {
            return (.opaque, false)
        }
        throw FormatError(.dtype, "unknown NumPy dtype '\(s)'")
    }
}

/// Python literal subset used by .npy headers: dicts, tuples, lists, strings, ints, True/False/None.
struct PyLiteralParser {
    indirect enum Value { case dict([String: Value]), tuple([Value]), list([Value]), str(String), int(Int), bool(Bool), none }
    let s: [Unicode.Scalar]
    var i = 0
    var depth = 0
    init(_ s: [Unicode.Scalar]) { self.s = s }

    mutating func ws() { while i < s.count, s[i] == " " || s[i] == "\n" || s[i] == "\t" || s[i] == "\r" { i += 1 } }
    func err(_ m: String) -> FormatError { FormatError(.header, "header literal: \(m) at \(i)") }

    mutating func parse() throws -> Value {
        let v = try value()
        ws()
        guard i == s.count else { throw err("trailing characters") }
        return v
    }

    mutating func value() throws -> Value {
        ws()
        guard i < s.count else { throw err("unexpected end") }
        let c = s[i]
        switch c {
        case "{":
            depth += 1; defer { depth -= 1 }
            guard depth < 16 else { throw err("too deep") }
            i += 1
            var d: [String: Value] = [:]
            while true {
                ws()
                if i < s.count, s[i] == "}" { i += 1; return .dict(d) }
                guard case let .str(k) = try value() else { throw err("dict key must be a string") }
                ws()
                guard i < s.count, s[i] == ":" else { throw err("expected ':'") }
                i += 1
                if d[k] != nil { throw err("duplicate key '\(k)'") }
                d[k] = try value()
                ws()
                if i < s.count, s[i] == "," { i += 1; continue }
                if i < s.count, s[i] == "}" { i += 1; return .dict(d) }
                throw err("expected ',' or '}'")
            }
        case "(", "[":
            depth += 1; defer { depth -= 1 }
            guard depth < 16 else { throw err("too deep") }
            let close: Unicode.Scalar = c == "(" ? ")" : "]"
            i += 1
            var items: [Value] = [], comma = false
            func done() -> Value {
                if close == "]" { return .list(items) }
                // ('|O') is a parenthesised value, ('|O',) a tuple
                return items.count == 1 && !comma ? items[0] : .tuple(items)
            }
            while true {
                ws()
                if i < s.count, s[i] == close { i += 1; return done() }
                items.append(try value())
                guard items.count <= 64 else { throw err("too many items") }
                ws()
                if i < s.count, s[i] == "," { i += 1; comma = true; continue }
                if i < s.count, s[i] == close { i += 1; return done() }
                throw err("expected ',' or '\(close)'")
            }
        case "'", "\"", "u", "U", "b", "B", "r", "R":
            // Python string literals as numpy's header (ast.literal_eval) reads them: u/b/r prefixes, escapes
            // (\xHH, \uXXXX, \n, …), and adjacent literals concatenated ('|' 'O' is '|O').
            var out = ""
            var any = false
            while true {
                ws()
                var raw = false
                var j = i
                while j < s.count, j - i < 2, "uUbBrR".unicodeScalars.contains(s[j]) { if s[j] == "r" || s[j] == "R" { raw = true }; j += 1 }
                guard j < s.count, s[j] == "'" || s[j] == "\"" else { break }
                let q = s[j]; i = j + 1
                while i < s.count, s[i] != q {
                    if s[i] == "\\" && !raw {
                        i += 1; guard i < s.count else { break }
                        let e = s[i]
                        func hex(_ n: Int) throws -> Unicode.Scalar {
                            guard i + n < s.count, let v = UInt32(String(String.UnicodeScalarView(s[(i + 1)...(i + n)])), radix: 16),
                                  let u = Unicode.Scalar(v) else { throw err("bad escape") }
                            i += n; return u
                        }
                        switch e {
                        case "x": out.unicodeScalars.append(try hex(2))
                        case "u": out.unicodeScalars.append(try hex(4))
                        case "U": out.unicodeScalars.append(try hex(8))
                        case "n": out += "\n"; case "t": out += "\t"; case "r": out += "\r"
                        case "\\", "'", "\"": out.unicodeScalars.append(e)
                        case "\n": break                                  // line continuation
                        case "0"..."7":                                    // octal: up to three digits
                            var v: UInt32 = 0, k = 0
                            while k < 3, i < s.count, ("0"..."7").contains(s[i]) { v = v * 8 + (s[i].value - 48); i += 1; k += 1 }
                            guard let u = Unicode.Scalar(v) else { throw err("bad escape") }
                            out.unicodeScalars.append(u); continue
                        default:
                            // \N{name}, \a, \b, … or an unknown escape: what Python makes of it is not modelled here,
                            // so the literal is refused (a caller that must be safe treats that as unknown).
                            throw err("unsupported escape '\\\(e)'")
                        }
                        i += 1; continue
                    }
                    out.unicodeScalars.append(s[i]); i += 1
                }
                guard i < s.count else { throw err("unterminated string") }
                i += 1; any = true
            }
            guard any else { throw err("unexpected character '\(c)'") }
            return .str(out)
        default:
            if c == "-" || ("0"..."9").contains(c) {
                var j = i
                if s[j] == "-" { j += 1 }
                while j < s.count, ("0"..."9").contains(s[j]) { j += 1 }
                if j < s.count, s[j] == "L" { j += 1 }
                let txt = String(String.UnicodeScalarView(s[i..<j])).replacingOccurrences(of: "L", with: "")
                guard let v = Int(txt) else { throw err("integer out of range") }
                i = j
                return .int(v)
            }
            for (w, v) in [("True", Value.bool(true)), ("False", .bool(false)), ("None", .none)] {
                let ws = Array(w.unicodeScalars)
                if i + ws.count <= s.count, Array(s[i..<(i + ws.count)]) == ws { i += ws.count; return v }
            }
            throw err("unexpected character '\(c)'")
        }
    }
}
