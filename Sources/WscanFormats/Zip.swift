import Foundation
import WscanKernels

/// Read-only ZIP archive reader (central directory, ZIP64) over a memory map. Stored members are returned
/// zero-copy; deflated ones are inflated into a buffer whose size the archive must state truthfully.
public struct ZipArchive {
    public struct Entry: Sendable {
        public var name: String
        public var method: UInt16
        public var flags: UInt16
        public var crc: UInt32
        public var compressedSize: Int
        public var size: Int
        public var localHeaderOffset: Int
        public var dataOffset: Int   // validated start of the member's data in the archive
    }

    public static let maxEntries = 1_000_000
    public let storage: Storage
    public private(set) var entries: [Entry] = []

    public init(_ storage: Storage) throws {
        self.storage = storage
        let b = storage.buffer
        let n = b.count
        guard n >= 22 else { throw FormatError(.zip, "too short for a zip archive") }
        // Find the end-of-central-directory record in the last 64 KiB + 22 bytes.
        var eocd = -1
        var i = n - 22
        let lowest = max(0, n - 22 - 65535)
        while i >= lowest {
            if b.loadUnaligned(fromByteOffset: i, as: UInt32.self) == 0x0605_4b50 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw FormatError(.zip, "not a zip archive (no end-of-central-directory record)") }
        var count = Int(b.loadUnaligned(fromByteOffset: eocd + 10, as: UInt16.self))
        var cdSize = Int(b.loadUnaligned(fromByteOffset: eocd + 12, as: UInt32.self))
        var cdOffset = Int(b.loadUnaligned(fromByteOffset: eocd + 16, as: UInt32.self))
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            // ZIP64 locator just before the EOCD.
            let loc = eocd - 20
            guard loc >= 0, b.loadUnaligned(fromByteOffset: loc, as: UInt32.self) == 0x0706_4b50 else {
                throw FormatError(.zip, "ZIP64 locator missing")
            }
            let z64 = b.loadUnaligned(fromByteOffset: loc + 8, as: UInt64.self)
            guard n >= 56, z64 <= UInt64(n - 56), b.loadUnaligned(fromByteOffset: Int(z64), as: UInt32.self) == 0x0606_4b50 else {
                throw FormatError(.zip, "ZIP64 end record out of range")
            }
            let z = Int(z64)
            let c64 = b.loadUnaligned(fromByteOffset: z + 32, as: UInt64.self)
            let s64 = b.loadUnaligned(fromByteOffset: z + 40, as: UInt64.self)
            let o64 = b.loadUnaligned(fromByteOffset: z + 48, as: UInt64.self)
            guard c64 <= UInt64(Self.maxEntries), s64 <= UInt64(n), o64 <= UInt64(n) else { throw FormatError(.zip, "ZIP64 directory out of range") }
            count = Int(c64); cdSize = Int(s64); cdOffset = Int(o64)
        }
        guard count <= Self.maxEntries else { throw FormatError(.zip, "too many entries (\(count))") }
        guard cdOffset <= n, cdSize <= n - cdOffset else { throw FormatError(.zip, "central directory out of range") }
        var p = cdOffset
        let end = cdOffset + cdSize
        var names = Set<String>()
        for _ in 0..<count {
            guard p + 46 <= end else { throw FormatError(.zip, "central directory truncated") }
            guard b.loadUnaligned(fromByteOffset: p, as: UInt32.self) == 0x0201_4b50 else { throw FormatError(.zip, "bad central directory entry") }
            let flags = b.loadUnaligned(fromByteOffset: p + 8, as: UInt16.self)
            let method = b.loadUnaligned(fromByteOffset: p + 10, as: UInt16.self)
            let crc = b.loadUnaligned(fromByteOffset: p + 16, as: UInt32.self)
            var csize = Int(b.loadUnaligned(fromByteOffset: p + 20, as: UInt32.self))
            var usize = Int(b.loadUnaligned(fromByteOffset: p + 24, as: UInt32.self))
            let nameLen = Int(b.loadUnaligned(fromByteOffset: p + 28, as: UInt16.self))
            let extraLen = Int(b.loadUnaligned(fromByteOffset: p + 30, as: UInt16.self))
            let commentLen = Int(b.loadUnaligned(fromByteOffset: p + 32, as: UInt16.self))
            var lho = Int(b.loadUnaligned(fromByteOffset: p + 42, as: UInt32.self))
            guard p + 46 + nameLen + extraLen + commentLen <= end else { throw FormatError(.zip, "central directory entry overruns") }
            let name = Self.memberName(UnsafeRawBufferPointer(rebasing: b[(p + 46)..<(p + 46 + nameLen)]), utf8: flags & 0x800 != 0)
            // ZIP64 extra field
            var x = p + 46 + nameLen
            let xend = x + extraLen
            while x + 4 <= xend {
                let id = b.loadUnaligned(fromByteOffset: x, as: UInt16.self)
                let sz = Int(b.loadUnaligned(fromByteOffset: x + 2, as: UInt16.self))
                guard x + 4 + sz <= xend else { break }
                if id == 1 {
                    var q = x + 4
                    func next() -> Int? {
                        guard q + 8 <= x + 4 + sz else { return nil }
                        let v = b.loadUnaligned(fromByteOffset: q, as: UInt64.self); q += 8
                        return v > UInt64(Int.max / 2) ? nil : Int(v)
                    }
                    if usize == 0xFFFF_FFFF { guard let v = next() else { throw FormatError(.zip, "bad ZIP64 field") }; usize = v }
                    if csize == 0xFFFF_FFFF { guard let v = next() else { throw FormatError(.zip, "bad ZIP64 field") }; csize = v }
                    if lho == 0xFFFF_FFFF { guard let v = next() else { throw FormatError(.zip, "bad ZIP64 field") }; lho = v }
                }
                x += 4 + sz
            }
            p += 46 + nameLen + extraLen + commentLen
            guard lho <= n - 30, b.loadUnaligned(fromByteOffset: lho, as: UInt32.self) == 0x0403_4b50 else {
                throw FormatError(.zip, "member '\(name)': local header out of range")
            }
            let lnl = Int(b.loadUnaligned(fromByteOffset: lho + 26, as: UInt16.self))
            let lxl = Int(b.loadUnaligned(fromByteOffset: lho + 28, as: UInt16.self))
            let data = lho + 30 + lnl + lxl
            guard data <= n, csize <= n - data else { throw FormatError(.zip, "member '\(name)': data runs past end of archive") }
            guard names.insert(name).inserted else { throw FormatError(.zip, "duplicate member '\(name)'") }
            entries.append(Entry(name: name, method: method, flags: flags, crc: crc, compressedSize: csize, size: usize,
                                 localHeaderOffset: lho, dataOffset: data))
        }
    }

    /// A member's name as Python's zipfile (and so numpy) reads it: UTF-8 when the entry's flag bit 11 says so,
    /// else code page 437, the ZIP format's original encoding.
    static func memberName(_ bytes: UnsafeRawBufferPointer, utf8: Bool) -> String {
        if utf8 || bytes.allSatisfy({ $0 < 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
        var s = ""
        for c in bytes { if c < 0x80 { s.unicodeScalars.append(Unicode.Scalar(c)) } else { s.append(cp437[Int(c) - 0x80]) } }
        return s
    }
    static let cp437 = Array("ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{A0}")

    /// The bytes of a member. Stored: a zero-copy slice (size must equal the compressed size). Deflated:
    /// inflated, size and CRC verified, bounded by the deflate ratio limit.
    static let inflateBudget: Int = {
        if let v = ProcessInfo.processInfo.environment["WSCAN_MAX_INFLATE"], let n = Int(v), n > 0 { return n }
        return Int(ProcessInfo.processInfo.physicalMemory / 4)
    }()

    /// `verifyStored`: check a stored member's CRC too (as numpy.load does; torch.load does not, and its stored
    /// members are the weights, read in full anyway for their hashes).
    public func contents(_ e: Entry, verifyStored: Bool = false) throws -> (storage: Storage, offset: Int, fileOffset: Int?) {
        if e.flags & 1 != 0 { throw FormatError(.zip, "member '\(e.name)' is encrypted") }
        switch e.method {
        case 0:
            guard e.size == e.compressedSize else {
                throw FormatError(.zip, "stored member '\(e.name)' claims \(e.size) bytes but holds \(e.compressedSize)")
            }
            if verifyStored, e.size > 0 {
                let data = try storage.slice(e.dataOffset, e.size)
                guard Checksum.crc32(data.baseAddress!, e.size) == e.crc else { throw FormatError(.zip, "member '\(e.name)' fails its CRC check") }
            }
            return (storage, e.dataOffset, e.dataOffset)
        case 8:
            // DEFLATE expands at most ~1032:1; a larger claim is a lie or a bomb.
            let (lim, o) = e.compressedSize.multipliedReportingOverflow(by: 1032)
            guard o || e.size <= lim + 1024 else {
                throw FormatError(.zip, "deflated member '\(e.name)' claims an impossible size \(e.size)")
            }
            // A member is inflated into memory once: one that would take more than the budget (a quarter of the RAM,
            // or WSCAN_MAX_INFLATE bytes) is refused instead of exhausting memory (a decompression bomb, or an array
            // too large to read this way).
            if e.size > Self.inflateBudget {
                throw FormatError(.zip, "deflated member '\(e.name)' would inflate \(e.compressedSize) bytes to \(e.size) (\(e.size / Swift.max(1, e.compressedSize)):1), more than the \(Self.inflateBudget)-byte budget (a quarter of the RAM; WSCAN_MAX_INFLATE): refused")
            }
            let src = try storage.slice(e.dataOffset, e.compressedSize)
            let p = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(1, e.size), alignment: 64)
            let st = Storage(owning: p, count: e.size)          // frees p on every path
            do { try Checksum.inflateRaw(src, into: p, expected: e.size) } catch {
                throw FormatError(.zip, "deflated member '\(e.name)' does not inflate to its stated \(e.size) bytes")
            }
            let crc = Checksum.crc32(p, e.size)
            guard e.size == 0 || crc == e.crc else { throw FormatError(.zip, "member '\(e.name)' fails its CRC check") }
            return (st, 0, nil)
        default:
            throw FormatError(.unsupported, "member '\(e.name)' uses compression method \(e.method)")
        }
    }
}

public enum NpzReader {
    public static func read(path: String) throws -> Checkpoint {
        let st = try Storage(mapping: path)
        let zipf = try ZipArchive(st)
        var storages = [st]
        var tensors: [TensorInfo] = []
        var warnings: [String] = []
        var seen: [String: (index: Int, exact: Bool)] = [:]
        for e in zipf.entries where !e.name.hasSuffix("/") {
            // numpy.load names a member after its file name without ".npy", and loads any member holding an
            // array, whatever its name (`a/b/c`, `y.txt`): so does wscan, by the NPY magic.
            let isNpy = e.name.hasSuffix(".npy")
            // A member under another name counts only if it can be read and starts with the NPY magic; one that
            // cannot be read (another compression, a bad stream) is skipped with a warning, as before.
            let got: (storage: Storage, offset: Int, fileOffset: Int?)
            if isNpy { got = try zipf.contents(e, verifyStored: true) } else {
                guard let g = try? zipf.contents(e, verifyStored: true) else { warnings.append("member \(e.name) is not an .npy array; skipped"); continue }
                got = g
            }
            let (s, off, foff) = got
            let sub = try s.slice(off, s === st ? e.size : s.count)
            let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
            if !isNpy, !(sub.count >= 6 && zip(sub.prefix(6), magic).allSatisfy { $0 == $1 }) {
                warnings.append("member \(e.name) is not an .npy array; skipped"); continue
            }
            let si: Int
            if s === st { si = 0 } else { si = storages.count; storages.append(s) }
            let view = Storage(borrowing: sub, owner: s)
            let name = isNpy ? String(e.name.dropLast(4)) : e.name
            // Two members with one array name (`a.npy` and `a`): numpy.load(...)["a"] returns the member named
            // exactly `a`, so that one wins; any other repeat is skipped.
            let replace: Int?
            if let (k, exact) = seen[name] {
                guard !isNpy, !exact else {
                    warnings.append("member \(e.name) has the same array name as another member ('\(name)'); skipped"); continue
                }
                warnings.append("member \(name).npy is shadowed by member \(name) (as in numpy.load); skipped")
                replace = k
            } else { replace = nil }
            do {
                var t = try NpyReader.tensor(in: view, name: name, storageIndex: si, fileIndex: 0, fileBase: foff)
                t.byteOffset += off
                if let k = replace { tensors[k] = t } else { tensors.append(t) }
                seen[name] = (replace ?? tensors.count - 1, !isNpy)
            } catch let err as FormatError {
                throw FormatError(err.kind, "member \(e.name): \(err.message)")
            }
        }
        let ck = Checkpoint(path: path, format: .npz, files: [try FileRef.of(st, path)], storages: storages, tensors: tensors)
        ck.warnings = warnings + tensors.filter { $0.dtype == .object }.map { "\($0.name): object array (pickle) not loaded" }
        return ck
    }
}
