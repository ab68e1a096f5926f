#if canImport(Glibc)
import Glibc
#endif
import Foundation
import CWscan

/// A read-only view of bytes kept alive by its owner: a memory-mapped file (never written: PROT_READ,
/// MAP_PRIVATE) or a heap buffer (inflated zip members).
public final class Storage: @unchecked Sendable {
    public let base: UnsafeRawPointer?
    public let count: Int
    private let unmapLength: Int
    private let owned: UnsafeMutableRawPointer?
    /// The mapped file's path, size and mtime, from fstat on the descriptor that was mapped: what the catalog stores
    /// must describe these bytes, not a file renamed into place after they were read.
    public let mappedFile: FileRef?

    /// Maps `path` read-only. Empty files get an empty storage.
    public init(mapping path: String) throws {
        // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below as not a regular file.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw FormatError(.io, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FormatError(.io, "cannot stat") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FormatError(.io, "not a regular file") }
        let size = Int(st.st_size)
        owned = nil; keepAlive = nil
        mappedFile = FileRef(path: path, st)
        if size == 0 { base = nil; count = 0; unmapLength = 0; return }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw FormatError(.io, "mmap failed: \(String(cString: strerror(errno)))") }
        base = UnsafeRawPointer(p); count = size; unmapLength = size
        wscan_map_register(p, size, path)
    }

    public init(bytes: [UInt8]) {
        let p = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(1, bytes.count), alignment: 64)
        bytes.withUnsafeBytes { if let b = $0.baseAddress { p.copyMemory(from: b, byteCount: bytes.count) } }
        owned = p; base = UnsafeRawPointer(p); count = bytes.count; unmapLength = 0; keepAlive = nil; mappedFile = nil
    }

    private let keepAlive: Storage?

    /// Takes ownership of `count` bytes at `p` (allocated with UnsafeMutableRawPointer.allocate).
    public init(owning p: UnsafeMutableRawPointer, count: Int) {
        owned = p; base = UnsafeRawPointer(p); self.count = count; unmapLength = 0; keepAlive = nil; mappedFile = nil
    }

    /// A view of part of another storage, keeping it alive.
    public init(borrowing range: UnsafeRawBufferPointer, owner: Storage) {
        base = range.baseAddress; count = range.count; unmapLength = 0; owned = nil; keepAlive = owner; mappedFile = owner.mappedFile
    }

    deinit {
        if unmapLength > 0, let b = base { wscan_map_unregister(b); munmap(UnsafeMutableRawPointer(mutating: b), unmapLength) }
        owned?.deallocate()
    }

    public var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// The mapped file shrank while it was read (another process truncated it): the pages past the new end now
    /// read as zeros, so nothing computed from this storage can be trusted. See `MappedFiles`.
    public var shrank: Bool {
        if let k = keepAlive { return k.shrank }
        guard unmapLength > 0, let b = base else { return false }
        return wscan_map_shrank(b) != 0
    }

    /// Bounds-checked sub-range.
    public func slice(_ offset: Int, _ length: Int) throws -> UnsafeRawBufferPointer {
        guard offset >= 0, length >= 0, offset <= count, length <= count - offset else {
            throw FormatError(.bounds, "range \(offset)+\(length) outside \(count)-byte buffer")
        }
        return UnsafeRawBufferPointer(start: base.map { $0 + offset }, count: length)
    }

    /// Hint the kernel that the range will be read sequentially.
    public func adviseSequential() {
        if unmapLength > 0, let b = base { madvise(UnsafeMutableRawPointer(mutating: b), unmapLength, MADV_SEQUENTIAL) }
    }
}

/// Mapped files that shrank under wscan. Reading a page of a mapped file past its end raises SIGBUS; wscan's handler
/// (CWscan) swaps the rest of that mapping for zero pages and counts the event, so the read finishes instead of
/// killing the process. Whoever reads must then throw away what it computed: the indexer fails just that file and
/// goes on; other commands refuse to store results (Catalog) and exit 1 (the CLI).
public enum MappedFiles {
    public static let shrankReason = "the file shrank while it was being read (changed by another process); nothing recorded from it"

    /// The first file that shrank since the last `take`, if any; `take` resets the count.
    public static func shrunk(take: Bool = false) -> String? {
        var buf = [CChar](repeating: 0, count: 512)
        let n = wscan_map_shrunk(&buf, buf.count, take ? 1 : 0)
        guard n > 0 else { return nil }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension UnsafeRawBufferPointer {
    /// Maps a mapped file's pages for this range in one call (Linux MADV_POPULATE_READ) instead of one fault per
    /// page when it is first read; a no-op where the kernel lacks it or the memory is not a mapping.
    public func prefault() {
        guard let b = baseAddress, count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = Int(bitPattern: b) & ~(page - 1)
        let end = Int(bitPattern: b) + count
        _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, 22 /* MADV_POPULATE_READ, Linux 5.14 */)
    }
}

public struct FormatError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        case io, truncated, header, json, bounds, layout, dtype, shape, duplicate, lfsPointer, unsupported, unsafe, zip, pickle, dataset
    }
    public let kind: Kind
    public let message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String { message }
}

/// How a tensor's elements sit in its storage.
public enum Layout: Sendable, Equatable {
    case contiguous                 // row-major
    case fortran                    // column-major (NumPy fortran_order)
    case strided([Int], offset: Int) // element strides and storage offset in elements (PyTorch views)
}

public struct TensorInfo: Sendable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public var storage: Int          // index into Checkpoint.storages
    public var byteOffset: Int       // start within the storage
    public var byteCount: Int        // bytes spanned in the storage
    public var fileIndex: Int        // index into Checkpoint.files
    public var fileOffset: Int?      // absolute offset in that file when the bytes are stored uncompressed
    public var layout: Layout = .contiguous
    public var bigEndian = false
    public var note: String? = nil   // e.g. why it cannot be decoded

    public init(name: String, dtype: DType, shape: [Int], storage: Int, byteOffset: Int, byteCount: Int,
                fileIndex: Int, fileOffset: Int?) {
        self.name = name; self.dtype = dtype; self.shape = shape; self.storage = storage
        self.byteOffset = byteOffset; self.byteCount = byteCount; self.fileIndex = fileIndex; self.fileOffset = fileOffset
    }

    public var elementCount: Int { WscanFormats.elementCount(shape) ?? 0 }
}

public enum Format: String, Sendable, Codable {
    case safetensors, safetensorsSharded = "safetensors-sharded", npy, npz, pytorch, pytorchLegacy = "pytorch-legacy"
    case gguf, pickle
}

public struct FileRef: Sendable {
    public var path: String
    public var size: Int
    public var mtime: Double
    /// The inode of the file (links followed), 0 when unknown: a link retargeted to another file of the same size
    /// and mtime, or a file replaced by a copy made with `cp -p`, is a different inode.
    public var inode: UInt64
    /// The inode's change time, 0 when unknown. Every write sets it and no one can set it back, so a file rewritten in
    /// place with its size and mtime kept (`touch -r`, or within one mtime tick) still shows a change; a chmod or a
    /// rename sets it too (then the catalog re-reads unchanged bytes and keeps what was derived from them).
    public var ctime: Double
    public init(path: String, size: Int, mtime: Double, inode: UInt64 = 0, ctime: Double = 0) {
        self.path = path; self.size = size; self.mtime = mtime; self.inode = inode; self.ctime = ctime
    }
    /// From stat(2)'s fields (times with their nanoseconds).
    init(path: String, _ st: stat) {
        func seconds(_ t: timespec) -> Double { Double(t.tv_sec) + Double(t.tv_nsec) / 1e9 }
        self.init(path: path, size: Int(st.st_size), mtime: seconds(st.st_mtim), inode: UInt64(st.st_ino), ctime: seconds(st.st_ctim))
    }

    /// Whether the file, in this (current) state, is still the one recorded: the same size and mtime, and the same
    /// inode and change time where both sides know them (0 or nil: not recorded, as in older catalog rows).
    public func matches(size: Int, mtime: Double, inode: UInt64?, ctime: Double?) -> Bool {
        size == self.size && mtime == self.mtime
            && (inode ?? 0 == 0 || self.inode == 0 || inode == self.inode)
            && (ctime ?? 0 == 0 || self.ctime == 0 || ctime == self.ctime)
    }

    /// The file as it was when `storage` mapped it (else as it is now).
    public static func of(_ storage: Storage, _ path: String) throws -> FileRef {
        if let f = storage.mappedFile, PathBytes.equal(f.path, path) { return f }
        return try stat(path)
    }

    /// Size, modification time (with nanoseconds) and inode of the file itself: symbolic links are followed (a
    /// Hugging Face cache is links into blobs/), so replacing a link's target is a change.
    public static func stat(_ path: String) throws -> FileRef {
        guard let st = statFollowing(path) else { throw FormatError(.io, "\(path): \(String(cString: strerror(errno)))") }
        return FileRef(path: path, st)
    }
}

/// stat(2), following links, or nil with errno set.
private func statFollowing(_ path: String) -> stat? {
    var st = stat()
    return stat(path, &st) == 0 ? st : nil
}

/// stat(2), following links: whether the path is a regular file, or nil with errno set.
private func followIsRegular(_ path: String) -> Bool? { statFollowing(path).map { ($0.st_mode & S_IFMT) == S_IFREG } }

/// File paths compared as the kernel compares them, byte for byte. Swift's `==` on String is Unicode canonical
/// equivalence: "café" spelled with U+00E9 (NFC) and with "e" + U+0301 (NFD) are equal Strings, and equal keys of a
/// Set or Dictionary, but two different files on Linux.
public enum PathBytes {
    public static func equal(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }
    /// A Set / Dictionary key that keeps canonically equivalent spellings apart.
    public static func key(_ p: String) -> [UInt8] { Array(p.utf8) }
    /// Byte order (the order `ls` gives in the C locale); a total order, unlike String's `<` on twins.
    public static func less(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
    /// Whether `p` is `root` or below it, as a path: x/ holds x/a, not xx/b.
    public static func isUnder(_ p: String, _ root: String) -> Bool {
        if equal(p, root) { return true }
        var r = Array(root.utf8)
        if r.last != UInt8(ascii: "/") { r.append(UInt8(ascii: "/")) }
        return p.utf8.starts(with: r)
    }
    /// A name that is not UTF-8, for messages: printable ASCII kept, every other byte as \xNN.
    public static func escaped(_ bytes: [UInt8]) -> String {
        bytes.map { (0x20..<0x7f).contains($0) && $0 != UInt8(ascii: "\\") ? String(UnicodeScalar($0)) : String(format: "\\x%02x", $0) }.joined()
    }
}

extension FileRef {
    /// The absolute form of a path the user typed, naming the file the kernel opens. `.` and repeated slashes go;
    /// a `..` is resolved against the real folder before it (realpath): `link/../x` is x beside the link's target,
    /// which a string edit (`standardizedFileURL`) turned into x beside the link. The last component stays as
    /// typed, so a link to a file keeps its own name.
    public static func absolute(_ path: String) -> String {
        let lexical = URL(fileURLWithPath: path).standardizedFileURL.path
        let raw = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        let parts = raw.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard let last = parts.lastIndex(of: "..") else { return lexical }
        guard let r = realpath("/" + parts[...last].joined(separator: "/"), nil) else { return lexical }
        defer { free(r) }
        var out = String(cString: r)
        for c in parts[(last + 1)...] where c != "." {
            if c == ".." { out = parentPath(out) } else { out += (out.hasSuffix("/") ? "" : "/") + c }
        }
        return out
    }

    /// Whether a catalogued file is gone: no such file (or a path through a non-folder), or no longer a regular
    /// file. A file that cannot be examined (permission, link loop, I/O error) is not gone.
    public static func isGone(_ path: String) -> Bool {
        if let st = statFollowing(path) { return (st.st_mode & S_IFMT) != S_IFREG }
        return errno == ENOENT || errno == ENOTDIR
    }

    /// A key for "the same file": device and inode (hard links and links to one file share it), else the bytes of
    /// the path with links resolved.
    public static func identity(_ path: String) -> [UInt8] {
        if let st = statFollowing(path) { return [0] + Array("\(st.st_dev):\(st.st_ino)".utf8) }
        return PathBytes.key(URL(fileURLWithPath: path).resolvingSymlinksInPath().path)
    }

    /// Whether two paths name the same file once links, `.` and `..` are resolved (an output must not be an input).
    public static func samePath(_ a: String, _ b: String) -> Bool {
        func real(_ p: String) -> String { URL(fileURLWithPath: p).resolvingSymlinksInPath().standardizedFileURL.path }
        return PathBytes.equal(real(a), real(b))
    }

    /// Whether `path` (links followed) is a regular file. Only those are ever opened: opening a FIFO for reading
    /// would block forever, and devices and sockets are not checkpoints.
    public static func isRegularFile(_ path: String) -> Bool { followIsRegular(path) == true }

    /// The folder part of a path ("a/b" → "a", "/x" → "/", "x" → ""), by string operations: Foundation's
    /// `NSString.deletingLastPathComponent` traps on a one-character name such as a zip member "x" (Swift 6.3.1,
    /// Linux), and names here come from untrusted files.
    public static func parentPath(_ path: String) -> String {
        var p = Substring(path)
        while p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
        guard let i = p.lastIndex(of: "/") else { return "" }
        if i == p.startIndex { return "/" }
        var d = p[..<i]
        while d.count > 1 && d.hasSuffix("/") { d = d.dropLast() }
        return String(d)
    }

    /// Throws the reason `path` cannot be opened as a checkpoint: "no such file or directory", "not a regular file".
    public static func requireRegularFile(_ path: String) throws {
        guard let regular = followIsRegular(path) else { throw FormatError(.io, String(cString: strerror(errno)).lowercased()) }
        guard regular else { throw FormatError(.io, "not a regular file") }
    }
}

/// Safety finding from a pickle scan (or any other check that flags a file).
public struct Finding: Sendable, Codable, Equatable {
    public enum Severity: String, Sendable, Codable, Comparable {
        case info, low, medium, high, critical
        var rank: Int { switch self { case .info: 0; case .low: 1; case .medium: 2; case .high: 3; case .critical: 4 } }
        public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
    }
    public var severity: Severity
    public var member: String       // file or zip member
    public var offset: Int          // byte offset of the opcode within the pickle
    public var what: String         // module.name or description
    public var detail: String
    public init(severity: Severity, member: String, offset: Int, what: String, detail: String) {
        self.severity = severity; self.member = member; self.offset = offset; self.what = what; self.detail = detail
    }
}

/// A checkpoint read from one or more files: tensors over storages, never copied unless inflated.
extension Checkpoint {
    /// Tied tensors among `names`: a name whose tensor reads the very elements of an earlier one (the same storage,
    /// offset, dtype, shape and layout: a PyTorch state dict's tied embedding and output head), mapped to that
    /// earlier name. They are one parameter: analysed once, written alike.
    public func tiedAliases(_ names: [String]) -> [String: String] {
        struct Place: Hashable { var storage, file, offset, bytes: Int; var dtype: String; var shape: [Int]; var layout: String; var bigEndian: Bool }
        let byName = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [String: String] = [:], seen: [Place: String] = [:]
        for n in names {
            guard let t = byName[n], t.elementCount > 0 else { continue }
            let p = Place(storage: t.storage, file: t.fileIndex, offset: t.byteOffset, bytes: t.byteCount, dtype: t.dtype.rawValue,
                          shape: t.shape, layout: "\(t.layout)", bigEndian: t.bigEndian)
            if let first = seen[p] { out[n] = first } else { seen[p] = n }
        }
        return out
    }
}

public final class Checkpoint: @unchecked Sendable {
    public let path: String          // the path the user names (a file, or the shard index)
    public let format: Format
    public var files: [FileRef]
    public var storages: [Storage]
    public var tensors: [TensorInfo]
    public var metadata: [String: String]
    public var findings: [Finding] = []
    public var warnings: [String] = []

    public init(path: String, format: Format, files: [FileRef], storages: [Storage], tensors: [TensorInfo],
                metadata: [String: String] = [:]) {
        self.path = path; self.format = format; self.files = files; self.storages = storages
        self.tensors = tensors; self.metadata = metadata
    }

    /// The first of the checkpoint's files whose size, modification time, inode or change time is no longer what it was when it
    /// was opened (rewritten or replaced since), or nil. An analysis that reads the mapped file more than once
    /// checks this before it reports.
    public func changedFile() -> String? {
        for f in files {
            guard let cur = try? FileRef.stat(f.path) else { return f.path }
            if !cur.matches(size: f.size, mtime: f.mtime, inode: f.inode, ctime: f.ctime) { return f.path }
        }
        return nil
    }

    public func bytes(of t: TensorInfo) -> UnsafeRawBufferPointer {
        let s = storages[t.storage]
        return UnsafeRawBufferPointer(start: s.base.map { $0 + t.byteOffset }, count: t.byteCount)
    }

    /// Saturating: two broadcast views of 2^62 elements each (a few bytes in a .pt) are no overflow trap.
    public var parameterCount: Int { tensors.reduce(0) { $0.addingSaturating($1.elementCount) } }

    /// wscan never writes to a checkpoint's own files: throws when `out` (after resolving links) is one of them.
    public func refuseToOverwrite(_ out: String) throws {
        if files.contains(where: { FileRef.samePath($0.path, out) }) {
            throw FormatError(.unsafe, "refusing to overwrite the input file \(out)")
        }
    }
    public var totalBytes: Int { files.reduce(0) { $0 + $1.size } }
}

/// A checkpoint the scanner judged dangerous; its tensors are not loaded without --trust.
public struct UnsafeCheckpointError: Error, CustomStringConvertible {
    public var findings: [Finding]
    public var message: String
    public init(findings: [Finding], message: String) { self.findings = findings; self.message = message }
    public var description: String { message }
}


extension Int {
    /// self + x, or Int.max / Int.min where that overflows (counts from untrusted headers).
    public func addingSaturating(_ x: Int) -> Int {
        let (r, o) = addingReportingOverflow(x)
        return o ? (x > 0 ? .max : .min) : r
    }
    /// self · x for non-negative operands, or Int.max where that overflows.
    public func multipliedSaturating(by x: Int) -> Int {
        let (r, o) = multipliedReportingOverflow(by: x)
        return o ? .max : r
    }
}
