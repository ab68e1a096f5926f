import CWscan

/// A PNG encoder (8-bit truecolour, non-interlaced): signature, IHDR, IDAT (zlib stream from zlib's `compress2`,
/// split into chunks of at most 1 MiB), IEND, each chunk with its CRC-32 (zlib's `crc32`). Rows are filtered
/// adaptively: per row the filter (None, Sub, Up, Average, Paeth) with the smallest sum of absolute signed bytes,
/// the heuristic libpng uses. Output is deterministic for given pixels.
public enum PNGEncoder {
    /// `pixels`: width × height × 3 bytes, row-major, top row first.
    public static func rgb(width: Int, height: Int, pixels: [UInt8]) -> [UInt8] {
        encode(width: width, height: height, channels: 3, pixels: pixels)
    }

    /// `pixels`: width × height × 4 bytes (non-premultiplied alpha), row-major, top row first.
    public static func rgba(width: Int, height: Int, pixels: [UInt8]) -> [UInt8] {
        encode(width: width, height: height, channels: 4, pixels: pixels)
    }

    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    static func encode(width: Int, height: Int, channels: Int, pixels: [UInt8], level: Int32 = 9) -> [UInt8] {
        precondition(width > 0 && height > 0 && width <= 0x7fff_ffff && height <= 0x7fff_ffff,
                     "PNG dimensions must be in 1...2^31-1 (got \(width)x\(height))")
        let (rowBytes, o1) = width.multipliedReportingOverflow(by: channels)
        let (total, o2) = rowBytes.multipliedReportingOverflow(by: height)
        precondition(!o1 && !o2 && pixels.count == total,
                     "PNG: expected \(width)x\(height)x\(channels) bytes, got \(pixels.count)")
        var out = signature
        var ihdr = [UInt8]()
        be32(&ihdr, UInt32(width)); be32(&ihdr, UInt32(height))
        ihdr += [8, channels == 4 ? 6 : 2, 0, 0, 0]   // bit depth, colour type, compression, filter, interlace
        chunk(&out, "IHDR", ihdr)
        let filtered = filterRows(pixels, rowBytes: rowBytes, height: height, bpp: channels)
        let z = deflate(filtered, level: level)
        let maxChunk = 1 << 20
        var i = 0
        repeat {
            let j = min(z.count, i + maxChunk)
            chunk(&out, "IDAT", z[i..<j])
            i = j
        } while i < z.count
        chunk(&out, "IEND", [])
        return out
    }

    static func be32(_ a: inout [UInt8], _ v: UInt32) {
        a += [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    }

    static func chunk<C: Collection>(_ out: inout [UInt8], _ type: String, _ data: C) where C.Element == UInt8 {
        be32(&out, UInt32(data.count))
        let body = Array(type.utf8) + data
        out += body
        let crc = body.withUnsafeBufferPointer { wscan_crc32(0, $0.baseAddress, $0.count) }
        be32(&out, crc)
    }

    /// zlib-format (RFC 1950) compression via CWscan.
    static func deflate(_ data: [UInt8], level: Int32) -> [UInt8] {
        var outPtr: UnsafeMutablePointer<UInt8>? = nil
        var outLen = 0
        let rc = data.withUnsafeBufferPointer { wscan_deflate_zlib($0.baseAddress, $0.count, &outPtr, &outLen, level) }
        precondition(rc == 0 && outPtr != nil, "zlib compress2 failed (\(rc))")
        defer { wscan_free(outPtr) }
        return Array(UnsafeBufferPointer(start: outPtr, count: outLen))
    }

    /// Each row prefixed with its filter type byte.
    static func filterRows(_ px: [UInt8], rowBytes: Int, height: Int, bpp: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: (rowBytes + 1) * height)
        var cand = [[UInt8]](repeating: [UInt8](repeating: 0, count: rowBytes), count: 5)
        px.withUnsafeBufferPointer { p in
            for r in 0..<height {
                let row = r * rowBytes, prev = (r - 1) * rowBytes
                for i in 0..<rowBytes {
                    let x = p[row + i]
                    let a = i >= bpp ? p[row + i - bpp] : 0
                    let b = r > 0 ? p[prev + i] : 0
                    let c = (r > 0 && i >= bpp) ? p[prev + i - bpp] : 0
                    cand[0][i] = x
                    cand[1][i] = x &- a
                    cand[2][i] = x &- b
                    cand[3][i] = x &- UInt8((Int(a) + Int(b)) / 2)
                    cand[4][i] = x &- paeth(a, b, c)
                }
                var best = 0, bestScore = Int.max
                for f in 0..<5 {
                    var s = 0
                    for v in cand[f] { s += v < 128 ? Int(v) : 256 - Int(v) }
                    if s < bestScore { bestScore = s; best = f }
                }
                let o = r * (rowBytes + 1)
                out[o] = UInt8(best)
                for i in 0..<rowBytes { out[o + 1 + i] = cand[best][i] }
            }
        }
        return out
    }

    @inline(__always) static func paeth(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> UInt8 {
        let p = Int(a) + Int(b) - Int(c)
        let pa = abs(p - Int(a)), pb = abs(p - Int(b)), pc = abs(p - Int(c))
        if pa <= pb && pa <= pc { return a }
        return pb <= pc ? b : c
    }
}
