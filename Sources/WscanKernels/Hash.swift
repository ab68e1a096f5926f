import CWscan

/// Streaming XXH3-128 content hash (libxxhash).
public final class XXH3Hasher {
    private let state: OpaquePointer
    public init() { state = wscan_xxh3_new() }
    deinit { wscan_xxh3_free(state) }
    public func update(_ p: UnsafeRawPointer, _ n: Int) { if n > 0 { wscan_xxh3_update(state, p, n) } }
    public func hex() -> String {
        var hi: UInt64 = 0, lo: UInt64 = 0
        wscan_xxh3_digest(state, &hi, &lo)
        return hex64(hi) + hex64(lo)
    }
    public static func hash(_ p: UnsafeRawPointer, _ n: Int) -> String {
        var hi: UInt64 = 0, lo: UInt64 = 0
        wscan_xxh3_128(p, n, &hi, &lo)
        return hex64(hi) + hex64(lo)
    }
}

/// Streaming SHA-256 (libcrypto): the per-file digest Hugging Face publishes.
public final class SHA256Hasher {
    private var state: OpaquePointer?
    public init() { state = wscan_sha256_new() }
    deinit { if let s = state { var o = [UInt8](repeating: 0, count: 32); wscan_sha256_final(s, &o) } }
    public func update(_ p: UnsafeRawPointer, _ n: Int) { if n > 0, let s = state { wscan_sha256_update(s, p, n) } }
    public func hex() -> String {
        var out = [UInt8](repeating: 0, count: 32)
        if let s = state { wscan_sha256_final(s, &out); state = nil }
        return out.map { b in let h = String(b, radix: 16); return b < 16 ? "0" + h : h }.joined()
    }
}

@inline(__always)
func hex64(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}

public enum Checksum {
    public static func crc32(_ p: UnsafeRawPointer, _ n: Int, seed: UInt32 = 0) -> UInt32 {
        wscan_crc32(seed, p.assumingMemoryBound(to: UInt8.self), n)
    }
    public enum InflateError: Error { case corrupt, tooLarge }
    /// Raw DEFLATE into `dst`, which must hold exactly `expected` bytes; fails if the stream is corrupt or yields a
    /// different size.
    public static func inflateRaw(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawPointer, expected: Int) throws {
        var produced = 0
        let rc = wscan_inflate_raw(src.baseAddress?.assumingMemoryBound(to: UInt8.self), src.count,
                                   dst.assumingMemoryBound(to: UInt8.self), expected, &produced)
        if rc == -2 { throw InflateError.tooLarge }
        if rc != 0 || produced != expected { throw InflateError.corrupt }
    }
}
