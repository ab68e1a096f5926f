/// GGML block dequantization, following llama.cpp's ggml-quants.c `dequantize_row_*` reference kernels
/// operation for operation (f16 scales widened to f32 first, products and differences in the same order, no
/// fused multiply-add), so results equal the reference (and `gguf.quants.dequantize`) bit for bit.
/// Sources may be unaligned: every multi-byte field is read with `loadUnaligned`.
public enum GGMLDequant {
    public enum Error: Swift.Error, CustomStringConvertible {
        case unsupported(String)
        public var description: String {
            switch self { case let .unsupported(t): return "no GGML dequantizer for \(t)" }
        }
    }

    /// Types `decode` handles (DType raw values).
    public static let supported: Set<String> = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"]

    /// Decodes `blocks` consecutive blocks of `type` from `src` into `dst` (32 or 256 floats per block).
    public static func decode(_ type: String, _ src: UnsafeRawPointer, blocks: Int, _ dst: UnsafeMutablePointer<Float>) throws {
        guard blocks > 0 else {
            if !supported.contains(type) { throw Error.unsupported(type) }
            return
        }
        switch type {
        case "Q4_0": q4_0(src, blocks, dst)
        case "Q4_1": q4_1(src, blocks, dst)
        case "Q5_0": q5_0(src, blocks, dst)
        case "Q5_1": q5_1(src, blocks, dst)
        case "Q8_0": q8_0(src, blocks, dst)
        case "Q2_K": q2_K(src, blocks, dst)
        case "Q3_K": q3_K(src, blocks, dst)
        case "Q4_K": q4_K(src, blocks, dst)
        case "Q5_K": q5_K(src, blocks, dst)
        case "Q6_K": q6_K(src, blocks, dst)
        case "Q8_K": q8_K(src, blocks, dst)
        default: throw Error.unsupported(type)
        }
    }

    @inline(__always)
    static func half(_ p: UnsafeRawPointer, _ off: Int) -> Float {
        Float(p.loadUnaligned(fromByteOffset: off, as: Float16.self))
    }

    @inline(__always)
    static func byte(_ p: UnsafeRawPointer, _ off: Int) -> UInt8 {
        p.load(fromByteOffset: off, as: UInt8.self)
    }

    // MARK: 32-element blocks

    /// block_q4_0 { f16 d; u8 qs[16] }: y[j] = ((qs[j] & 15) - 8) * d, y[j+16] = ((qs[j] >> 4) - 8) * d.
    static func q4_0(_ src: UnsafeRawPointer, _ nb: Int, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<nb {
            let b = src + i * 18, o = y + i * 32
            let d = half(b, 0)
            let q = SIMD16<Int32>(truncatingIfNeeded: b.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt8>.self))
            let lo = (q & 0x0F) &- 8
            let hi = (q &>> 4) &- 8
            store(SIMD16<Float>(lo) * d, o)
            store(SIMD16<Float>(hi) * d, o + 16)
        }
    }

    /// block_q4_1 { f16 d; f16 m; u8 qs[16] }: y = q * d + m.
    static func q4_1(_ src: UnsafeRawPointer, _ nb: Int, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<nb {
            let b = src + i * 20, o = y + i * 32
            let d = half(b, 0), m = half(b, 2)
            let q = SIMD16<Int32>(truncatingIfNeeded: b.loadUnaligned(fromByteOffset: 4, as: SIMD16<UInt8>.self))
            let lo = SIMD16<Float>(q & 0x0F)
            let hi = SIMD16<Float>(q &>> 4)
            store(lo * d + m, o)
            store(hi * d + m, o + 16)
        }
    }

    /// block_q5_0 { f16 d; u8 qh[4]; u8 qs[16] }: fifth bit j of element j from the little-endian u32 qh.
    static func q5_0(_ src: UnsafeRawPointer, _ nb: Int, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<nb {
            let b = src + i * 22, o = y + i * 32
            let d = half(b, 0)
            let qh = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
            for j in 0..<16 {
                let q = byte(b, 6 + j)
                let xh0 = Int32(truncatingIfNeeded: ((qh >> UInt32(j)) << 4) & 0x10)
                let xh1 = Int32(truncatingIfNeeded: (qh >> UInt32(j + 12)) & 0x10)
                let x0 = (Int32(q & 0x0F) | xh0) - 16
                let x1 = (Int32(q >> 4) | xh1) - 16
                o[j] = Float(x0) * d
                o[j + 16] = Float(x1) * d
            }
        }
    }

    /// block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16] }: y = q * d + m.
    static func q5_1(_ src: UnsafeRawPointer, _ nb: Int, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<nb {
            let b = src + i * 24, o = y + i * 32
            let d = half(b, 0), m = half(b, 2)
            let qh = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            for j in 0..<16 {
                let q = byte(b, 8 + j)
                let xh0 = Int32(truncatingIfNeeded: ((qh >> UInt32(j)) << 4) & 0x10)
                let xh1 = Int32(truncatingIfNeeded: (qh >> UInt32(j + 12)) & 0x10)
                let x0 = Int32(q & 0x0F) | xh0
                let x1 = Int32(q >> 4) | xh1
                o[j] = Float(x0) * d + m
                o[j + 16] = Float(x1) * d + m
            }
        }
    }

    /// block_q8_0 { f16 d; i8 qs[32] }: y = qs * d.
    static func q8_0(_ src: UnsafeRawPointer, _ nb: Int, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<nb {
            let b = src + i * 34, o = y + i * 32
            let d = half(b, 0)
            let q = b.loadUnaligned(fromByteOffset: 2, as: SIMD32<Int8>.self)
            let lo = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.lowHalf))
            let hi = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.highHalf))
            store(lo * d, o)
            store(hi * d, o + 16)
        }
    }

    @inline(__always)
    static func store(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
    }

    // MARK: 256-element k-quants

    /// block_q2_K { u8 scales[16]; u8 qs[64]; f16 d; f16 dmin }.
    static func q2_K(_ src: UnsafeRawPointer, _ nb: Int, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<nb {
            let b = src + i * 84
            var o = y + i * 256
            let d = half(b, 80), dmin = half(b, 82)
            var isc = 0
            for n in stride(from: 0, to: 256, by: 128) {
                let q = 16 + n / 4
                var shift: UInt8 = 0
                for _ in 0..<4 {
                    for half16 in 0..<2 {
                        let sc = byte(b, isc); isc += 1
                        let dl = d * Float(sc & 0x0F), ml = dmin * Float(sc >> 4)
                        for l in 0..<16 {
                            o[l] = dl * Float((byte(b, q + half16 * 16 + l) >> shift) & 3) - ml
                        }
                        o += 16
                    }
                    shift += 2
                }
            }
        }
    }

    /// block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d }.
    static func q3_K(_ src: UnsafeRawPointer, _ nb: Int, _ y: UnsafeMutablePointer<Float>) {
        var scales = [Int32](repeating: 0, count: 16)
        for i in 0..<nb {
            let b = src + i * 110
            var o = y + i * 256
            let dAll = half(b, 108)
            for k in 0..<16 {
                let lo = (byte(b, 96 + (k & 7)) >> UInt8(4 * (k >> 3))) & 0x0F
                let hi = (byte(b, 96 + 8 + (k & 3)) >> UInt8(2 * (k >> 2))) & 0x03
                scales[k] = Int32(Int8(bitPattern: lo | (hi << 4))) - 32
            }
            var isc = 0
            var m: UInt8 = 1
            for n in stride(from: 0, to: 256, by: 128) {
                let q = 32 + n / 4
                var shift: UInt8 = 0
                for _ in 0..<4 {
                    for half16 in 0..<2 {
                        let dl = dAll * Float(scales[isc]); isc += 1
                        for l in 0..<16 {
                            let ql = Int32((byte(b, q + half16 * 16 + l) >> shift) & 3)
                            let h: Int32 = (byte(b, half16 * 16 + l) & m) != 0 ? 0 : 4
                            o[l] = dl * Float(ql - h)
                        }
                        o += 16
                    }
                    shift += 2
                    m <<= 1
                }
            }
        }
    }

    /// 6-bit scale and min `j` of the 12-byte packed k-quant scales (get_scale_min_k4).
    @inline(__always)
    static func scaleMin(_ j: Int, _ s: UnsafeRawPointer) -> (UInt8, UInt8) {
        if j < 4 { return (byte(s, j) & 63, byte(s, j + 4) & 63) }
        return ((byte(s, j + 4) & 0x0F) | ((byte(s, j - 4) >> 6) << 4), (byte(s, j + 4) >> 4) | ((byte(s, j) >> 6) << 4))
    }

    /// block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }.
    static func q4_K(_ src: UnsafeRawPointer, _ nb: Int, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<nb {
            let b = src + i * 144
            let o = y + i * 256
            let d = half(b, 0), dmin = half(b, 2)
            let sc = b + 4
            for g in 0..<4 {
                let (s1, m1i) = scaleMin(2 * g, sc)
                let (s2, m2i) = scaleMin(2 * g + 1, sc)
                let d1 = d * Float(s1), m1 = dmin * Float(m1i)
                let d2 = d * Float(s2), m2 = dmin * Float(m2i)
                let out = o + 64 * g
                for h in 0..<2 {
                    let q = SIMD16<Int32>(truncatingIfNeeded: b.loadUnaligned(fromByteOffset: 16 + 32 * g + 16 * h, as: SIMD16<UInt8>.self))
                    store(d1 * SIMD16<Float>(q & 0x0F) - m1, out + 16 * h)
                    store(d2 * SIMD16<Float>(q &>> 4) - m2, out + 32 + 16 * h)
                }
            }
        }
    }

    /// block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }.
    static func q5_K(_ src: UnsafeRawPointer, _ nb: Int, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<nb {
            let b = src + i * 176
            var o = y + i * 256
            let d = half(b, 0), dmin = half(b, 2)
            let sc = b + 4
            var u1: UInt8 = 1, u2: UInt8 = 2
            for g in 0..<4 {
                let (s1, m1i) = scaleMin(2 * g, sc)
                let (s2, m2i) = scaleMin(2 * g + 1, sc)
                let d1 = d * Float(s1), m1 = dmin * Float(m1i)
                let d2 = d * Float(s2), m2 = dmin * Float(m2i)
                let ql = 48 + 32 * g
                for l in 0..<32 {
                    let h = byte(b, 16 + l)
                    o[l] = d1 * Float(Int32(byte(b, ql + l) & 0x0F) + ((h & u1) != 0 ? 16 : 0)) - m1
                }
                o += 32
                for l in 0..<32 {
                    let h = byte(b, 16 + l)
                    o[l] = d2 * Float(Int32(byte(b, ql + l) >> 4) + ((h & u2) != 0 ? 16 : 0)) - m2
                }
                o += 32
                u1 <<= 2; u2 <<= 2
            }
        }
    }

    /// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }: y = d * scale * q.
    static func q6_K(_ src: UnsafeRawPointer, _ nb: Int, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<nb {
            let b = src + i * 210
            let d = half(b, 208)
            for n in 0..<2 {
                let o = y + i * 256 + 128 * n
                let ql = 64 * n, qh = 128 + 32 * n, sc = 192 + 8 * n
                for l in 0..<32 {
                    let isc = l / 16
                    let h = byte(b, qh + l)
                    let a = byte(b, ql + l), c = byte(b, ql + l + 32)
                    let q1 = Int32(Int8(bitPattern: (a & 0x0F) | ((h & 3) << 4))) - 32
                    let q2 = Int32(Int8(bitPattern: (c & 0x0F) | (((h >> 2) & 3) << 4))) - 32
                    let q3 = Int32(Int8(bitPattern: (a >> 4) | (((h >> 4) & 3) << 4))) - 32
                    let q4 = Int32(Int8(bitPattern: (c >> 4) | (((h >> 6) & 3) << 4))) - 32
                    o[l] = d * Float(Int8(bitPattern: byte(b, sc + isc))) * Float(q1)
                    o[l + 32] = d * Float(Int8(bitPattern: byte(b, sc + isc + 2))) * Float(q2)
                    o[l + 64] = d * Float(Int8(bitPattern: byte(b, sc + isc + 4))) * Float(q3)
                    o[l + 96] = d * Float(Int8(bitPattern: byte(b, sc + isc + 6))) * Float(q4)
                }
            }
        }
    }

    /// block_q8_K { f32 d; i8 qs[256]; i16 bsums[16] }: y = d * qs.
    static func q8_K(_ src: UnsafeRawPointer, _ nb: Int, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<nb {
            let b = src + i * 292
            let o = y + i * 256
            let d = Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
            for k in 0..<16 {
                let q = b.loadUnaligned(fromByteOffset: 4 + 16 * k, as: SIMD16<Int8>.self)
                store(d * SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q)), o + 16 * k)
            }
        }
    }
}

/// Quantization as the reference writers do it (gguf-py, llama.cpp's quantize_row_*_ref), to test whether a quantized
/// tensor is exactly another tensor requantized.
public enum GGMLQuant {
    /// The legacy 32-element types gguf-py can also write (Q4_0, Q4_1, Q5_0, Q5_1), requantized as gguf-py's
    /// `quantize_blocks` and llama.cpp's quantize_row_*_ref do, in float32: symmetric types take d = x[argmax|x|] / −L
    /// (L = 8 or 16; the first such element on ties), q = trunc(x · (1/d) + L + 0.5) clipped to [0, 2L − 1],
    /// y = (q − L) · f16(d); the _1 types take d = (max − min) / (2^bits − 1), q = trunc((x − min) · (1/d) + 0.5)
    /// clipped, y = q · f16(d) + f16(min). Returns the dequantized values, the same float operations as the
    /// decoders above, or nil when a block holds NaN/±Inf.
    public static func legacyRoundTrip(_ type: String, _ x: [Float]) -> [Float]? {
        guard type != "Q8_0", let (bits, offset) = blockLayout(type) else { return nil }
        let qmax = Float((1 << bits) - 1), L = Float(1 << (bits - 1))
        var out = [Float](repeating: 0, count: x.count)
        var b = 0
        while b + 32 <= x.count {
            let blk = x[b..<(b + 32)]
            guard blk.allSatisfy(\.isFinite) else { return nil }
            if offset {
                let mx = blk.max()!, mn = blk.min()!
                let d = (mx - mn) / qmax
                let id: Float = d == 0 ? 0 : 1 / d
                let dh = Float(Float16(d)), mh = Float(Float16(mn))
                for i in b..<(b + 32) {
                    let q = min(qmax, max(0, ((x[i] - mn) * id + 0.5).rounded(.towardZero)))
                    out[i] = q * dh + mh
                }
            } else {
                var amax: Float = 0, signed: Float = 0
                for v in blk where abs(v) > amax { amax = abs(v); signed = v }
                let d = signed / -L
                let id: Float = d == 0 ? 0 : 1 / d
                let dh = Float(Float16(d))
                for i in b..<(b + 32) {
                    let q = min(qmax, max(0, (x[i] * id + (L + 0.5)).rounded(.towardZero)))
                    out[i] = (q - L) * dh
                }
            }
            b += 32
        }
        return out
    }

    /// Q8_0: per block of 32, d = max|x| / 127 in float32, q = round-half-away(x / d) (gguf-py) or round(x · (1/d))
    /// (llama.cpp's quantize_row_q8_0_ref), d stored as float16. Returns the dequantized values.
    public static func q8_0RoundTrip(_ x: [Float], reciprocal: Bool) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        var b = 0
        while b + 32 <= x.count {
            var amax: Float = 0
            for i in b..<(b + 32) { amax = max(amax, abs(x[i])) }
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            let dh = Float(Float16(d))
            for i in b..<(b + 32) {
                let q: Float = d == 0 ? 0 : (reciprocal ? (x[i] * id) : (x[i] / d)).rounded(.toNearestOrAwayFromZero)
                out[i] = dh * q
            }
            b += 32
        }
        return out
    }

    /// How many 32-element blocks of a legacy-quantized tensor no rounding quantizer could have produced from `x`.
    ///
    /// Every quantizer llama.cpp and gguf-py use for these types (the reference ones, and the importance-matrix
    /// searches that try several scales) codes a block as q = clamp(round(a·x + c)) for one scale a > 0 per block
    /// (and, for the _1 types, one offset c; c = 0 for the symmetric ones), whatever scale they finally store. So a
    /// block is a rounding of x when some a (and c) satisfies q − ½ ≤ a·x + c ≤ q + ½ for every element (one-sided at
    /// the block's lowest and highest code, which may be clamped): a linear feasibility test, exact in one unknown
    /// and, for two, by eliminating c over all pairs (Fourier–Motzkin). The codes are read back from the dequantized
    /// values `q`: they are integer multiples of the block's step (plus an offset), and taking the largest step that
    /// makes them integers can only loosen the test, never reject a true rounding. A block also passes when x
    /// rounded to float16 or bfloat16 (to nearest, or truncated) does (a conversion through a narrower type before quantizing), and, when x is
    /// itself stored narrow (`sourceBits`: 7 for BF16, 10 for F16), when some wider values rounding to x do (the
    /// quantizer read the wide original).
    ///
    /// Weights changed before quantizing (a merged LoRA) fail in proportion to the change: with Q4_0, an update of
    /// 0.3% of ‖W‖ fails in 4–6% of the blocks, one of 1% in a quarter, although both hide under the type's own 9%
    /// error. An error-compensating quantizer (GPTQ) fails too: its codes are not roundings. Blocks holding NaN/±Inf
    /// are skipped; at most `maxBlocks` blocks, evenly spaced, are tested. nil for other types or mismatched sizes.
    ///
    /// With `requantized`, the tensor may instead have been quantized from a quantized copy of x (`llama-quantize
    /// --allow-requantize` from a Q8_0, Q5_0, … file): when some copy explains the tensor (all but a stray block), the
    /// tensor is judged by it and `via` names it ("Q8_0", or "Q5_0 of F16" when x went through a narrower float
    /// first). The copies tried are x's round trips through Q8_0 (gguf-py's and llama.cpp's rounding) and Q4_0, Q4_1,
    /// Q5_0, Q5_1, each from x as it is, rounded to F16, or to BF16 (nearest, truncated), of those types with at least
    /// four times this type's steps per block (Q8_0 for every type; the 5-bit ones for Q2_K and Q3_K; the 4-bit ones
    /// for Q2_K). One hypothesis per tensor, not the best of all per block: a round trip moves weights by about as
    /// much as a small change does, and 24 of them tried block by block would excuse a change's blocks by chance.
    /// The hypothesis is chosen on up to 512 of the blocks that fail directly (it must pass most of them), then
    /// tested on every block.
    public static func unroundedBlocks(_ quantizedType: String, quantized q: [Float], source x: [Float], sourceBits: Int? = nil,
                                       requantized: Bool = false, maxBlocks: Int = 1 << 16)
        -> (checked: Int, unrounded: Int, via: String?, viaBlocks: Int)? {
        guard let (codes, offset, n) = roundingLayout(quantizedType) else { return nil }
        guard q.count == x.count, x.count >= n else { return nil }
        let blocks = x.count / n
        let stride = max(1, (blocks + maxBlocks - 1) / maxBlocks)
        var k = [Double](repeating: 0, count: n), lo = k, hi = k
        func bf16(_ v: Float) -> Float { Float(bitPattern: UInt32(Decode.bf16RoundNearestEven(v)) << 16) }
        func narrowed(_ v: Float, _ variant: Int) -> Float {
            let n = variant == 0 ? v : variant == 1 ? Float(Float16(v)) : variant == 2 ? bf16(v) : Float(bitPattern: v.bitPattern & 0xffff_0000)
            return n.isFinite ? n : v          // beyond float16's range: as is
        }
        /// Whether block b (codes in k) is a rounding of x (copy == nil: directly, through a narrower float, or from
        /// wider values rounding to x) or of one intermediate copy of x.
        func passes(_ b: Int, copy: (type: String, reciprocal: Bool, variant: Int)?) -> Bool {
            if let c = copy {
                // the 32-element block of the intermediate type holding this one (the types' blocks nest in 32)
                let b32 = b / 32 * 32
                guard b32 + 32 <= x.count else { return false }
                let src = (b32..<(b32 + 32)).map { narrowed(x[$0], c.variant) }
                guard let rt = c.type == "Q8_0" ? q8_0RoundTrip(src, reciprocal: c.reciprocal) : legacyRoundTrip(c.type, src) else { return false }
                for i in 0..<n { lo[i] = Double(rt[b - b32 + i]); hi[i] = lo[i] }
                return offset ? feasibleAffine(lo, hi, k) : feasibleScale(lo, hi, k)
            }
            for variant in 0..<(sourceBits == nil ? 4 : 7) {
                for i in 0..<n {
                    let v = x[b + i]
                    if variant >= 4 {
                        // the wide values that round to v in the narrow type (half an ulp either side; below float16's
                        // normal range its step is fixed at 2⁻²⁴), and (5, 6) those rounded to float16 / bfloat16 in
                        // turn (the quantizer read another narrow copy of the wide original)
                        let p = sourceBits!
                        let e = p == 10 ? max(v.exponent, -14) : v.exponent
                        let h = v == 0 && p != 10 ? 0 : Double(Float(sign: .plus, exponent: e - p - 1, significand: 1))
                        var l = Float(Double(v) - h), u = Float(Double(v) + h)
                        if variant == 5 { l = Float(Float16(l)); u = Float(Float16(u)) }
                        if variant == 6 { l = bf16(l); u = bf16(u) }
                        lo[i] = Double(l.isFinite ? l : v); hi[i] = Double(u.isFinite ? u : v)
                    } else {
                        // as is; through float16; through bfloat16 rounded to nearest, or truncated
                        lo[i] = Double(narrowed(v, variant)); hi[i] = lo[i]
                    }
                }
                if offset ? feasibleAffine(lo, hi, k) : feasibleScale(lo, hi, k) { return true }
            }
            return false
        }
        /// An all-zero block of a one-scale type (Q8_0, legacy) where x is not: the scale a block stores is its
        /// largest magnitude over the code range (or its range), which float16 keeps above zero unless x is within
        /// 127 × float16's smallest step of zero (the codes are all zero then). The feasibility test alone takes scale 0
        /// for any block, and so missed rows zeroed before quantizing. (A k-quant sub-block's 6- or 8-bit scale
        /// may round to zero beside larger ones in its super-block: not tested there.)
        let oneScale = blockLayout(quantizedType) != nil
        func zeroed(_ b: Int) -> Bool {
            guard oneScale else { return false }
            var amax: Float = 0
            for i in 0..<n { if q[b + i] != 0 { return false }; amax = max(amax, abs(x[b + i])) }
            return Float(Float16(amax / 127)) > 0
        }
        /// The tested blocks (evenly spaced, NaN/±Inf skipped) that fail, or, with `limit`, nil once more than limit do.
        func failing(_ copy: (type: String, reciprocal: Bool, variant: Int)?, among: [Int]? = nil, limit: Int = .max) -> (checked: Int, bad: [Int])? {
            var checked = 0, bad: [Int] = []
            let list = among ?? Array(Swift.stride(from: 0, to: blocks, by: stride))
            for blk in list {
                let b = blk * n
                var finite = true
                for i in 0..<n where !(x[b + i].isFinite && q[b + i].isFinite) { finite = false; break }
                guard finite else { continue }
                checked += 1
                if !(blockCodes(q, b, n, codes: codes, offset: offset, into: &k) && !zeroed(b) && passes(b, copy: copy)) {
                    bad.append(blk)
                    if bad.count > limit { return nil }
                }
            }
            return (checked, bad)
        }
        let direct = failing(nil)!
        guard requantized, direct.bad.count >= 2 else { return (direct.checked, direct.bad.count, nil, 0) }
        let sample = direct.bad.count <= 512 ? direct.bad
            : (0..<512).map { direct.bad[$0 * direct.bad.count / 512] }
        var best: (copy: (type: String, reciprocal: Bool, variant: Int), bad: Int)? = nil
        // Only copies at least four times finer than this type: on a coarser grid, or one that nests in this type's
        // (Q5_0's step is half Q4_0's), the copy's values sit at rounding ties, any code beside them passes, and the
        // test loses its power (a 0.5% LoRA before Q4_0 passed as "requantized from Q5_0").
        for type in ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"] where roundingLayout(type)!.codes - 1 >= 4 * (codes - 1) {
            for reciprocal in type == "Q8_0" ? [false, true] : [false] {
                for variant in 0..<4 {
                    let c = (type: type, reciprocal: reciprocal, variant: variant)
                    if let r = failing(c, among: sample, limit: min(best?.bad ?? .max, sample.count / 2)), r.bad.count < (best?.bad ?? .max) {
                        best = (c, r.bad.count)
                    }
                }
            }
        }
        // adopted only when it explains the tensor (at most one failing block, or 0.1%: TensorEvidence's threshold);
        // one that merely fails fewer blocks excuses none
        guard let h = best, let all = failing(h.copy), all.bad.count < direct.bad.count,
              all.bad.count < 2 || Double(all.bad.count) <= 0.001 * Double(all.checked) else {
            return (direct.checked, direct.bad.count, nil, 0)
        }
        let name = h.copy.type + ["", " of F16", " of BF16", " of BF16 (truncated)"][h.copy.variant]
        return (direct.checked, all.bad.count, name, direct.bad.count - all.bad.count)
    }

    /// The rounding test's view of a type: the number of codes (a bound on the steps a block spans), whether a block
    /// has an offset, and the elements sharing one scale. The k-quants' final codes are roundings too: llama.cpp's
    /// quantize_row_q{2..6}_K (reference and importance-matrix alike) search the sub-block scales (and mins), store
    /// them quantized, and then code every element as nearest_int((x + m)/d) (Q2_K, Q4_K, Q5_K: 16, 32 and 32 elements
    /// per sub-block, codes from 0) or nearest_int(x/d) (Q3_K, Q6_K: 16 elements, codes −4…3 and −32…31) with the
    /// stored d and m, clamped to the code range.
    static func roundingLayout(_ type: String) -> (codes: Int, offset: Bool, block: Int)? {
        switch type {
        case "Q8_0": return (255, false, 32)        // codes −127…127
        case "Q2_K": return (4, true, 16)
        case "Q3_K": return (8, false, 16)
        case "Q4_K": return (16, true, 32)
        case "Q5_K": return (32, true, 32)
        case "Q6_K": return (64, false, 16)
        default: return blockLayout(type).map { (1 << $0.bits, $0.offset, 32) }
        }
    }

    /// Bits per code and whether a block has an offset (the _1 types), for the 32-element types with one scale.
    static func blockLayout(_ type: String) -> (bits: Int, offset: Bool)? {
        switch type {
        case "Q4_0": return (4, false)
        case "Q5_0": return (5, false)
        case "Q8_0": return (8, false)
        case "Q4_1": return (4, true)
        case "Q5_1": return (5, true)
        default: return nil
        }
    }

    /// The codes of one block from its dequantized values: symmetric types y = k·s (k integer, s > 0 the largest step
    /// that makes every y/s an integer within the code range), offset types y = k·s + m (k from 0, up to float32
    /// rounding of the sum). False when no step fits (the values are not a quantized block).
    static func blockCodes(_ q: [Float], _ b: Int, _ n: Int, codes: Int, offset: Bool, into k: inout [Double]) -> Bool {
        var lo = Double.infinity, hi = -Double.infinity, amax = 0.0
        for i in 0..<n { let y = Double(q[b + i]); lo = min(lo, y); hi = max(hi, y); amax = max(amax, abs(y)) }
        let range = offset ? hi - lo : amax
        if range == 0 { for i in 0..<n { k[i] = 0 }; return true }
        // y = k·s + m rounds in float32 to within half an ulp of |y|: in steps, |y|/s·2⁻²⁴, large when the offset
        // dwarfs the step (10 + 1e-3·noise)
        let tol = offset ? max(1e-4, 8 * max(abs(lo), abs(hi)) / (range / Double(codes - 1)) * 0x1p-24) : 1e-6
        for steps in 1..<codes {
            let s = range / Double(steps)
            var all = true
            for i in 0..<n {
                let t = (offset ? Double(q[b + i]) - lo : Double(q[b + i])) / s
                let r = t.rounded()
                if abs(t - r) > tol { all = false; break }
                k[i] = r
            }
            if all { return true }
        }
        return false
    }

    /// The rounding interval of each code: [k − ½, k + ½] with room for float32 arithmetic, unbounded outward at the
    /// lowest and highest code (clamped values).
    static func codeBounds(_ k: [Double]) -> (lo: [Double], hi: [Double]) {
        let kHi = k.max()!, kLo = k.min()!
        var l = [Double](repeating: 0, count: k.count), h = l
        for i in k.indices {
            let slack = 0x1p-20 * (abs(k[i]) + 1)
            l[i] = k[i] == kLo ? -Double.infinity : k[i] - 0.5 - slack
            h[i] = k[i] == kHi ? Double.infinity : k[i] + 0.5 + slack
        }
        return (l, h)
    }

    /// Some a ≥ 0 and xᵢ' in [xlᵢ, xhᵢ] with a·xᵢ' within code kᵢ's interval for every element: a·xl ≤ h and
    /// a·xh ≥ l, each a bound on a.
    static func feasibleScale(_ xl: [Double], _ xh: [Double], _ k: [Double]) -> Bool {
        let (l, h) = codeBounds(k)
        var aMin = 0.0, aMax = Double.infinity
        for i in k.indices {
            if h[i] < .infinity {
                if xl[i] > 0 { aMax = min(aMax, h[i] / xl[i]) } else if xl[i] < 0 { aMin = max(aMin, h[i] / xl[i]) } else if h[i] < 0 { return false }
            }
            if l[i] > -.infinity {
                if xh[i] > 0 { aMin = max(aMin, l[i] / xh[i]) } else if xh[i] < 0 { aMax = min(aMax, l[i] / xh[i]) } else if l[i] > 0 { return false }
            }
        }
        return aMin <= aMax
    }

    /// Some a ≥ 0, c and xᵢ' in [xlᵢ, xhᵢ] with a·xᵢ' + c within code kᵢ's interval for every element: c eliminated,
    /// a·(xlᵢ − xhⱼ) ≤ hᵢ − lⱼ for every pair.
    static func feasibleAffine(_ xl: [Double], _ xh: [Double], _ k: [Double]) -> Bool {
        let (l, h) = codeBounds(k)
        var aMin = 0.0, aMax = Double.infinity
        for i in k.indices where h[i] < .infinity {
            for j in k.indices where j != i && l[j] > -.infinity {
                let d = xl[i] - xh[j], r = h[i] - l[j]
                if d > 0 { aMax = min(aMax, r / d) } else if d < 0 { aMin = max(aMin, r / d) } else if r < 0 { return false }
            }
            if aMin > aMax { return false }
        }
        return aMin <= aMax
    }
}
