import CWscan

/// Element decoders: raw little-endian buffers to Float. Each handles `n` elements; the source may be
/// unaligned. Built for x86-64-v3 so that F16 conversion uses F16C and the loops vectorise.
public enum Decode {
    /// bfloat16 of a float rounded to nearest, ties to even (NaN stays a quiet NaN), as its 16-bit pattern.
    @inlinable public static func bf16RoundNearestEven(_ x: Float) -> UInt16 {
        let u = x.bitPattern
        if x.isNaN { return UInt16(u >> 16) | 0x40 }
        return UInt16((u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16)
    }

    @inlinable
    public static func f32(_ src: UnsafeRawPointer, _ n: Int, _ dst: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: n * 4)
    }

    @inlinable
    public static func bf16(_ src: UnsafeRawPointer, _ n: Int, _ dst: UnsafeMutablePointer<Float>) {
        let d = UnsafeMutableRawPointer(dst).assumingMemoryBound(to: UInt32.self)
        var i = 0
        while i + 16 <= n {
            let v = src.loadUnaligned(fromByteOffset: i * 2, as: SIMD16<UInt16>.self)
            let w = SIMD16<UInt32>(truncatingIfNeeded: v) &<< 16
            UnsafeMutableRawPointer(d + i).storeBytes(of: w, as: SIMD16<UInt32>.self)
            i += 16
        }
        while i < n { d[i] = UInt32(src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16; i += 1 }
    }

    /// F16 through F16C (vcvtph2ps) in C: Swift's Float16 conversion is done in software on Linux.
    @inlinable
    public static func f16(_ src: UnsafeRawPointer, _ n: Int, _ dst: UnsafeMutablePointer<Float>) {
        wscan_f16_to_f32(src, dst, n)
    }

    @inlinable
    public static func f64(_ src: UnsafeRawPointer, _ n: Int, _ dst: UnsafeMutablePointer<Float>) {
        for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
    }

    @inlinable
    public static func integer<T: BinaryInteger>(_ type: T.Type, _ src: UnsafeRawPointer, _ n: Int, _ dst: UnsafeMutablePointer<Float>) {
        let sz = MemoryLayout<T>.size
        for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: i * sz, as: T.self)) }
    }

    @inlinable
    public static func bool(_ src: UnsafeRawPointer, _ n: Int, _ dst: UnsafeMutablePointer<Float>) {
        let b = src.assumingMemoryBound(to: UInt8.self)
        for i in 0..<n { dst[i] = b[i] != 0 ? 1 : 0 }
    }

    /// One byte per element through a 256-entry table (all FP8 variants).
    @inlinable
    public static func lut8(_ table: UnsafePointer<Float>, _ src: UnsafeRawPointer, _ n: Int, _ dst: UnsafeMutablePointer<Float>) {
        let b = src.assumingMemoryBound(to: UInt8.self)
        for i in 0..<n { dst[i] = table[Int(b[i])] }
    }

    /// Two 4-bit codes per byte, low nibble first, through a 16-entry table (F4 = float4_e2m1).
    @inlinable
    public static func lut4(_ table: UnsafePointer<Float>, _ src: UnsafeRawPointer, _ n: Int, _ dst: UnsafeMutablePointer<Float>) {
        let b = src.assumingMemoryBound(to: UInt8.self)
        for i in 0..<n {
            let byte = b[i >> 1]
            dst[i] = table[Int((i & 1) == 0 ? byte & 0xF : byte >> 4)]
        }
    }

    /// Byte-swap `n` elements of `size` bytes from src into dst (big-endian NumPy arrays).
    public static func byteSwap(_ src: UnsafeRawPointer, _ n: Int, size: Int, _ dst: UnsafeMutableRawPointer) {
        let s = src.assumingMemoryBound(to: UInt8.self), d = dst.assumingMemoryBound(to: UInt8.self)
        for i in 0..<n { for k in 0..<size { d[i * size + k] = s[i * size + size - 1 - k] } }
    }
}

/// Small-float formats described by exponent/mantissa widths (OCP FP8/FP6/FP4 and the FNUZ variants).
public struct MiniFloat: Sendable {
    public let expBits: Int, manBits: Int, bias: Int
    public let hasInf: Bool          // IEEE-like (E5M2): all-ones exponent is Inf/NaN
    public let nanAllOnes: Bool      // E4M3FN: only S.1111.111 is NaN
    public let fnuz: Bool            // FNUZ: 0x80 is NaN, no negative zero, no Inf
    public let unsignedExpOnly: Bool // E8M0: 8-bit exponent, no sign, no mantissa, 0xFF NaN

    public static let e4m3fn = MiniFloat(expBits: 4, manBits: 3, bias: 7, hasInf: false, nanAllOnes: true, fnuz: false, unsignedExpOnly: false)
    public static let e5m2 = MiniFloat(expBits: 5, manBits: 2, bias: 15, hasInf: true, nanAllOnes: false, fnuz: false, unsignedExpOnly: false)
    public static let e4m3fnuz = MiniFloat(expBits: 4, manBits: 3, bias: 8, hasInf: false, nanAllOnes: false, fnuz: true, unsignedExpOnly: false)
    public static let e5m2fnuz = MiniFloat(expBits: 5, manBits: 2, bias: 16, hasInf: false, nanAllOnes: false, fnuz: true, unsignedExpOnly: false)
    public static let e8m0 = MiniFloat(expBits: 8, manBits: 0, bias: 127, hasInf: false, nanAllOnes: false, fnuz: false, unsignedExpOnly: true)
    public static let e2m1 = MiniFloat(expBits: 2, manBits: 1, bias: 1, hasInf: false, nanAllOnes: false, fnuz: false, unsignedExpOnly: false)
    public static let e2m3 = MiniFloat(expBits: 2, manBits: 3, bias: 1, hasInf: false, nanAllOnes: false, fnuz: false, unsignedExpOnly: false)
    public static let e3m2 = MiniFloat(expBits: 3, manBits: 2, bias: 3, hasInf: false, nanAllOnes: false, fnuz: false, unsignedExpOnly: false)

    public func value(_ code: Int) -> Float {
        if unsignedExpOnly {
            if code == 0xFF { return .nan }
            return Float(sign: .plus, exponent: code - bias, significand: 1)
        }
        let total = 1 + expBits + manBits
        let signBit = (code >> (total - 1)) & 1
        let e = (code >> manBits) & ((1 << expBits) - 1)
        let m = code & ((1 << manBits) - 1)
        if fnuz && code == (1 << (total - 1)) { return .nan }
        let maxE = (1 << expBits) - 1
        if hasInf && e == maxE { return m == 0 ? (signBit == 1 ? -.infinity : .infinity) : .nan }
        if nanAllOnes && e == maxE && m == (1 << manBits) - 1 { return .nan }
        var v: Float
        if e == 0 { v = Float(m) / Float(1 << manBits) * Float(sign: .plus, exponent: 1 - bias, significand: 1) }
        else { v = (1 + Float(m) / Float(1 << manBits)) * Float(sign: .plus, exponent: e - bias, significand: 1) }
        return signBit == 1 ? -v : v
    }

    public func table() -> [Float] {
        let bits = unsignedExpOnly ? 8 : 1 + expBits + manBits
        return (0..<(1 << bits)).map(value)
    }
}
