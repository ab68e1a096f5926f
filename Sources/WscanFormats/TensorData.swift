import WscanKernels

/// Decoding of tensor bytes to Float, chunk by chunk (streaming statistics) or whole (analyses).
public enum TensorData {
    public static let chunkElements = 1 << 16

    /// Decodes `n` elements of `dtype` from `src` (element index `first` of the tensor's byte run) to `dst`.
    /// Sub-byte types need `first` even (F4 packs two per byte); block types need whole blocks.
    public static func decode(_ dtype: DType, _ src: UnsafeRawPointer, _ n: Int, _ dst: UnsafeMutablePointer<Float>) throws {
        switch dtype {
        case .f32: Decode.f32(src, n, dst)
        case .bf16: Decode.bf16(src, n, dst)
        case .f16: Decode.f16(src, n, dst)
        case .f64: Decode.f64(src, n, dst)
        case .bool: Decode.bool(src, n, dst)
        case .u8: Decode.integer(UInt8.self, src, n, dst)
        case .i8: Decode.integer(Int8.self, src, n, dst)
        case .i16: Decode.integer(Int16.self, src, n, dst)
        case .u16: Decode.integer(UInt16.self, src, n, dst)
        case .i32: Decode.integer(Int32.self, src, n, dst)
        case .u32: Decode.integer(UInt32.self, src, n, dst)
        case .i64: Decode.integer(Int64.self, src, n, dst)
        case .u64: Decode.integer(UInt64.self, src, n, dst)
        case .c64: Decode.f32(src, n * 2, dst) // interleaved (re, im): caller sizes dst for 2n
        case .c128: Decode.f64(src, n * 2, dst)
        case .f8e4m3: MiniFloatTables.e4m3.withUnsafeBufferPointer { Decode.lut8($0.baseAddress!, src, n, dst) }
        case .f8e5m2: MiniFloatTables.e5m2.withUnsafeBufferPointer { Decode.lut8($0.baseAddress!, src, n, dst) }
        case .f8e4m3fnuz: MiniFloatTables.e4m3fnuz.withUnsafeBufferPointer { Decode.lut8($0.baseAddress!, src, n, dst) }
        case .f8e5m2fnuz: MiniFloatTables.e5m2fnuz.withUnsafeBufferPointer { Decode.lut8($0.baseAddress!, src, n, dst) }
        case .f8e8m0: MiniFloatTables.e8m0.withUnsafeBufferPointer { Decode.lut8($0.baseAddress!, src, n, dst) }
        case .f4: MiniFloatTables.e2m1.withUnsafeBufferPointer { Decode.lut4($0.baseAddress!, src, n, dst) }
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K:
            guard let b = dtype.block, n % b.elements == 0 else { throw FormatError(.dtype, "partial block") }
            try GGMLDequant.decode(dtype.rawValue, src, blocks: n / b.elements, dst)
        default:
            throw FormatError(.unsupported, "no decoder for \(dtype.rawValue)")
        }
    }

    /// Elements decoded per stored element (complex types yield two floats).
    public static func lanes(_ d: DType) -> Int { d == .c64 || d == .c128 ? 2 : 1 }

    /// Streams a tensor's stored elements (in storage order) as Float chunks. Byte-swaps big-endian data.
    public static func forEachChunk(_ ck: Checkpoint, _ t: TensorInfo, chunk: Int = chunkElements,
                                    _ body: (UnsafeBufferPointer<Float>) throws -> Void) throws {
        let lanes = lanes(t.dtype)
        var buf: UnsafeMutablePointer<Float>?
        defer { buf?.deallocate() }
        try storedRuns(ck, t, chunk: chunk) { src, i, n, step in
            if buf == nil { buf = .allocate(capacity: step * lanes) }
            try decode(t.dtype, src, n, buf!)
            try body(UnsafeBufferPointer(start: buf, count: n * lanes))
        }
    }

    /// Whether `withRange` reads this tensor: a contiguous run of a real (not complex) type holding at least its
    /// elements. Other layouts are gathered whole by `floats`.
    public static func rangeReadable(_ t: TensorInfo) -> Bool {
        t.layout == .contiguous && t.dtype.decodable && lanes(t.dtype) == 1 && storedElements(t) >= t.elementCount
    }

    /// Elements [start, start + count) of a `rangeReadable` tensor, as floats handed to `body`. `start` must begin a block
    /// (a multiple of 256 suits every type). A little-endian F32 run aligned for Float is handed over as it lies
    /// in the mapped file (`body` gets that pointer, no copy); otherwise it is decoded into `scratch` (at least
    /// `count` floats) and `body` gets that.
    public static func withRange<R>(_ ck: Checkpoint, _ t: TensorInfo, start: Int, count: Int, scratch: UnsafeMutablePointer<Float>,
                                    _ body: (UnsafePointer<Float>) throws -> R) throws -> R {
        guard rangeReadable(t) else { throw FormatError(.layout, "tensor '\(t.name)' cannot be read by range") }
        guard start >= 0, count >= 0, start <= t.elementCount - count else {
            throw FormatError(.bounds, "tensor '\(t.name)': elements \(start)..<\(start + count) outside its \(t.elementCount)")
        }
        if let b = t.dtype.block, start % b.elements != 0 { throw FormatError(.layout, "tensor '\(t.name)': range starts inside a block") }
        if t.dtype == .f4 && start % 2 != 0 { throw FormatError(.layout, "tensor '\(t.name)': range starts inside a byte") }
        let raw = ck.bytes(of: t)
        guard let base = raw.baseAddress, count > 0 else { return try body(scratch) }
        let src = base + byteOffset(t.dtype, element: start)
        if t.dtype == .f32 && !t.bigEndian && Int(bitPattern: src) % MemoryLayout<Float>.alignment == 0 {
            return try body(src.assumingMemoryBound(to: Float.self))
        }
        if t.bigEndian, let bits = t.dtype.bits {
            let swapped = UnsafeMutableRawPointer.allocate(byteCount: count * bits / 8, alignment: 64)
            defer { swapped.deallocate() }
            Decode.byteSwap(src, count, size: bits / 8, swapped)
            try decode(t.dtype, swapped, count, scratch)
        } else {
            try decode(t.dtype, src, count, scratch)
        }
        return try body(scratch)
    }

    /// For F64 and C128 tensors: the first finite value float32 cannot hold (|x| beyond 3.4e38, which decodes to ±Inf),
    /// or nil. Analyses that work in float32 refuse such a tensor instead of taking it for infinite.
    public static func f64Overflow(_ ck: Checkpoint, _ t: TensorInfo) throws -> Double? {
        guard t.dtype == .f64 || t.dtype == .c128 else { return nil }
        var found: Double?
        try storedRuns(ck, t, chunk: chunkElements) { src, _, n, _ in
            guard found == nil else { return }
            for j in 0..<(n * lanes(t.dtype)) {
                let d = src.loadUnaligned(fromByteOffset: j * 8, as: Double.self)
                if d.isFinite && abs(d) > Double(Float.greatestFiniteMagnitude) { found = d; return }
            }
        }
        return found
    }

    /// The stored byte runs of at most `chunk` elements (whole quantisation blocks), byte-swapped to little-endian
    /// where needed: body(source, first element, element count, step).
    static func storedRuns(_ ck: Checkpoint, _ t: TensorInfo, chunk: Int,
                           _ body: (UnsafeRawPointer, Int, Int, Int) throws -> Void) throws {
        guard t.dtype.decodable else { throw FormatError(.unsupported, t.note ?? "no decoder for \(t.dtype.rawValue)") }
        let raw = ck.bytes(of: t)
        guard let base = raw.baseAddress else { return }
        let total = storedElements(t)
        let lanes = lanes(t.dtype)
        var step = chunk
        if let b = t.dtype.block { step = max(b.elements, (chunk / b.elements) * b.elements) }
        if t.dtype == .f4 { step = (chunk / 2) * 2 }
        let swapBuf: UnsafeMutableRawPointer? = t.bigEndian ? .allocate(byteCount: step * (t.dtype.bits ?? 8) / 8, alignment: 64) : nil
        defer { swapBuf?.deallocate() }
        var i = 0
        while i < total {
            let n = min(step, total - i)
            let off = byteOffset(t.dtype, element: i)
            var src = base + off
            if let sb = swapBuf, let bits = t.dtype.bits {
                let size = t.dtype == .c64 ? 4 : t.dtype == .c128 ? 8 : bits / 8
                Decode.byteSwap(src, n * lanes, size: size, sb)
                src = UnsafeRawPointer(sb)
            }
            try body(src, i, n, step)
            i += n
        }
    }

    static func byteOffset(_ d: DType, element i: Int) -> Int {
        if let b = d.block { return (i / b.elements) * b.bytes }
        return i * (d.bits ?? 8) / 8
    }

    /// Number of elements physically stored in the tensor's byte run.
    public static func storedElements(_ t: TensorInfo) -> Int {
        if let b = t.dtype.block { return t.byteCount / b.bytes * b.elements }
        guard let bits = t.dtype.bits, bits > 0 else { return 0 }
        return t.byteCount * 8 / bits
    }

    /// The whole tensor as row-major Float (Fortran and strided layouts gathered into C order).
    /// Whether a strided view reads each stored element exactly once (a transpose or permutation of the whole
    /// run): then the stored run's statistics are the view's. Broadcasts (stride 0), overlaps, slices and steps
    /// are not.
    public static func isPermutation(shape: [Int], strides: [Int], offset: Int, stored: Int) -> Bool {
        guard offset == 0, shape.count == strides.count, let n = elementCount(shape), n == stored else { return false }
        if n <= 1 { return true }
        var dims = zip(shape, strides).filter { $0.0 != 1 }.sorted { $0.1 < $1.1 }
        var expect = 1
        for (size, stride) in dims { guard stride == expect else { return false }; expect *= size }
        dims.removeAll()
        return expect == n
    }

    /// Views larger than this many times their stored elements (broadcasts, overlapping strides) and larger than
    /// `maxExpandedElements` are not materialised: a 1.8 KB file can describe zeros(1).expand(65536, 65536), 16 GiB
    /// as floats. An ordinary broadcast mask (ones(1).expand(2048, 1024), 8 MB) is expanded.
    public static let maxViewExpansion = 16
    public static let maxExpandedElements = 1 << 28

    /// Why a strided view is not materialised (see `maxViewExpansion`), or nil.
    public static func unexpandable(_ t: TensorInfo) -> String? {
        if case .strided = t.layout, t.elementCount > max(maxExpandedElements, maxViewExpansion * max(1, storedElements(t))) {
            return "tensor '\(t.name)' is a view of \(t.elementCount) elements over \(storedElements(t)) stored (a broadcast or overlapping strides): not expanded"
        }
        return nil
    }

    public static func floats(_ ck: Checkpoint, _ t: TensorInfo) throws -> [Float] {
        let n = t.elementCount * lanes(t.dtype)
        let ln = lanes(t.dtype)
        if let why = unexpandable(t) { throw FormatError(.bounds, why) }
        // Decoded straight into the result (no staging buffer), the source pre-faulted in one call.
        ck.bytes(of: t).prefault()
        var stored = try [Float](unsafeUninitializedCapacity: storedElements(t) * ln) { dst, count in
            try storedRuns(ck, t, chunk: chunkElements) { src, i, k, _ in try decode(t.dtype, src, k, dst.baseAddress! + i * ln) }
            count = dst.count
        }
        switch t.layout {
        case .contiguous:
            guard stored.count >= n else { throw FormatError(.bounds, "tensor '\(t.name)' has fewer elements than its shape") }
            if stored.count > n { stored.removeLast(stored.count - n) }
            return stored
        case .fortran:
            return try gather(stored, shape: t.shape, strides: fortranStrides(t.shape), offset: 0, lanes: ln)
        case let .strided(strides, offset):
            return try gather(stored, shape: t.shape, strides: strides, offset: offset, lanes: ln)
        }
    }

    /// The tensor's elements in their own dtype, row-major and little-endian: a view gathered, big-endian bytes
    /// swapped. For fixed-width types (not blocks, not sub-byte): lossless, unlike going through Float.
    public static func rowMajorBytes(_ ck: Checkpoint, _ t: TensorInfo) throws -> [UInt8] {
        guard let bits = t.dtype.bits, bits >= 8, bits % 8 == 0, t.dtype.block == nil else {
            throw FormatError(.unsupported, "\(t.dtype.rawValue) is not a whole-byte type")
        }
        if let why = unexpandable(t) { throw FormatError(.bounds, why) }
        let size = bits / 8, n = elementCount(t.shape) ?? 0, raw = ck.bytes(of: t)
        let swap = t.bigEndian && size > 1
        if t.layout == .contiguous && !swap {          // already row-major and little-endian
            guard raw.count >= n * size else { throw FormatError(.bounds, "tensor '\(t.name)' has fewer elements than its shape") }
            return Array(raw.prefix(n * size))
        }
        let (strides, offset): ([Int], Int)
        switch t.layout {
        case .contiguous: strides = rowMajorStrides(t.shape); offset = 0
        case .fortran: strides = fortranStrides(t.shape); offset = 0
        case let .strided(s, o): strides = s; offset = o
        }
        var out = [UInt8](repeating: 0, count: n * size)
        try out.withUnsafeMutableBytes { o in
            try walk(shape: t.shape, strides: strides, offset: offset, count: n) { k, pos in
                guard pos >= 0, pos < raw.count / size else { throw FormatError(.bounds, "tensor '\(t.name)' reads outside its storage") }
                for b in 0..<size { o[k * size + b] = raw[pos * size + (swap ? size - 1 - b : b)] }
            }
        }
        return out
    }

    /// Element strides of a row-major (C order) and a column-major (Fortran order) array.
    static func rowMajorStrides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        for k in stride(from: shape.count - 2, through: 0, by: -1) { s[k] = s[k + 1] * shape[k + 1] }
        return s
    }
    static func fortranStrides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        for k in 1..<max(1, shape.count) { s[k] = s[k - 1] * shape[k - 1] }
        return s
    }

    /// Calls `body(k, pos)` for the `count` elements of a view in row-major order: k the output index, pos the
    /// element's position in the storage (offset plus Σ index·stride, stepped without multiplying).
    static func walk(shape: [Int], strides: [Int], offset: Int, count n: Int, _ body: (Int, Int) throws -> Void) rethrows {
        var idx = [Int](repeating: 0, count: shape.count), pos = offset
        for k in 0..<n {
            try body(k, pos)
            var d = shape.count - 1
            while d >= 0 {
                idx[d] += 1; pos += strides[d]
                if idx[d] < shape[d] { break }
                pos -= strides[d] * shape[d]; idx[d] = 0; d -= 1
            }
        }
    }

    static func gather(_ src: [Float], shape: [Int], strides: [Int], offset: Int, lanes: Int) throws -> [Float] {
        let n = elementCount(shape) ?? 0
        var out = [Float](repeating: 0, count: n * lanes)
        if n == 0 { return out }
        try walk(shape: shape, strides: strides, offset: offset, count: n) { k, pos in
            guard pos >= 0, (pos + 1) * lanes <= src.count else { throw FormatError(.bounds, "strided view reads outside its storage") }
            for l in 0..<lanes { out[k * lanes + l] = src[pos * lanes + l] }
        }
        return out
    }
}
