import Foundation

/// Format detection by content (magic bytes), with the file name only as a tie-breaker.
public enum FormatDetector {
    public enum Kind: String, Sendable { case safetensors, shardIndex, npy, zip, gguf, pickle, lfsPointer, unknown }

    public static func sniff(path: String) -> Kind {
        if path.hasSuffix(".safetensors.index.json") { return .shardIndex }
        guard let head = head(path) else { return .unknown }
        return sniff(head: head, name: path)
    }

    /// By content alone (a pickle named .safetensors is not a safetensors file here).
    public static func sniffContent(path: String) -> Kind {
        guard let head = head(path) else { return .unknown }
        return sniff(head: head, name: "")
    }

    /// The first 64 bytes of a regular file (nil for anything else: FIFOs, devices and folders are never opened).
    static func head(_ path: String) -> [UInt8]? {
        guard FileRef.isRegularFile(path), let fh = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? fh.close() }
        return [UInt8]((try? fh.read(upToCount: 64)) ?? Data())
    }

    /// Whether a file name ends with an extension checkpoints use.
    static func hasCheckpointExtension(_ path: String) -> Bool {
        let l = path.lowercased()
        return candidateExtensions.contains { l.hasSuffix($0) }
    }

    public static func sniff(head: [UInt8], name: String) -> Kind {
        func starts(_ s: [UInt8]) -> Bool { head.count >= s.count && Array(head.prefix(s.count)) == s }
        if starts(Array("version https://git-lfs".utf8)) { return .lfsPointer }
        if starts([0x93] + Array("NUMPY".utf8)) { return .npy }
        if starts([0x50, 0x4B, 0x03, 0x04]) || starts([0x50, 0x4B, 0x05, 0x06]) { return .zip }
        if starts(Array("GGUF".utf8)) { return .gguf }
        if head.count >= 9, head[8] == UInt8(ascii: "{") { return .safetensors }
        if head.count >= 2, head[0] == 0x80, (2...5).contains(head[1]) { return .pickle }
        let lower = name.lowercased()
        if lower.hasSuffix(".safetensors") { return .safetensors }   // let the reader report what is wrong
        if lower.hasSuffix(".npy") { return .npy }
        if lower.hasSuffix(".npz") || lower.hasSuffix(".pt") || lower.hasSuffix(".pth") || lower.hasSuffix(".ckpt") { return .zip }
        if lower.hasSuffix(".gguf") { return .gguf }
        if lower.hasSuffix(".pkl") || lower.hasSuffix(".pickle") || lower.hasSuffix(".joblib") || lower.hasSuffix(".bin") { return .pickle }
        return .unknown
    }

    static let candidateExtensions = [".safetensors", ".npy", ".npz", ".pt", ".pth", ".bin", ".ckpt", ".gguf",
                                      ".pkl", ".pickle", ".joblib", ".safetensors.index.json"]

    /// Whether a folder walk should consider this file: by name, or else by content, so a checkpoint or pickle
    /// saved under another name (`checkpoint_best.tar`, `model.pt.1`, no extension) is not passed over. A zip
    /// counts only with a torch `data.pkl` member, a safetensors header only with a plausible length.
    public static func isCandidate(_ path: String) -> Bool {
        if hasCheckpointExtension(path) { return true }
        guard let head = head(path) else { return false }
        switch sniff(head: head, name: "") {
        case .npy, .gguf: return true
        case .pickle:
            // PROTO 2–5 is two bytes any binary file may start with: also ask for an opcode that can open a pickle
            // (a value, a mark or a frame; torch's legacy magic is a LONG1). The last byte is not asked for: a
            // legacy torch file ends with raw storage, and pickle.load ignores what follows STOP.
            let openers = Set(Array("()]}cGJKMNILFSVTUXBCqh".utf8) + [0x88, 0x89, 0x8A, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x95, 0x96, 0x97])
            return head.count >= 3 && openers.contains(head[2])
        case .safetensors:
            guard let size = try? FileRef.stat(path).size, head.count >= 9 else { return false }
            let n = head.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            return n >= 2 && n <= UInt64(max(0, size - 8))
        case .zip: return isTorchZip(path)
        default: return false
        }
    }

    /// Whether a zip is laid out as torch.save writes it: `PREFIX/data.pkl` beside `PREFIX/version` (or
    /// `PREFIX/.data/version`), read from the parsed central directory.
    static func isTorchZip(_ path: String) -> Bool {
        guard let st = try? Storage(mapping: path), let z = try? ZipArchive(st) else { return false }
        let names = Set(z.entries.map(\.name))
        return names.contains { n in
            guard n == "data.pkl" || n.hasSuffix("/data.pkl") else { return false }
            let prefix = String(n.dropLast("data.pkl".count))
            return names.contains(prefix + "version") || names.contains(prefix + ".data/version")
        }
    }

    /// The catalog's format name for a file that could not be read (as `ls` names formats): a torch zip is
    /// `pytorch`, an npz `npz`, a legacy torch file (its pickle starts with torch's magic number) `pytorch-legacy`.
    public static func formatName(path: String) -> String {
        let kind = sniff(path: path)
        switch kind {
        case .shardIndex: return Format.safetensorsSharded.rawValue
        case .zip:
            if path.lowercased().hasSuffix(".npz") { return Format.npz.rawValue }
            return isTorchZip(path) ? Format.pytorch.rawValue : kind.rawValue
        case .pickle:
            let legacy = PickleFileReader.legacyMagicPrefix
            return head(path).map { $0.starts(with: legacy) } == true ? Format.pytorchLegacy.rawValue : kind.rawValue
        default: return kind.rawValue
        }
    }
}

/// Hooks for readers implemented by later layers of this module (PyTorch, GGUF, pickle scanning).
public enum CheckpointOpener {
    public struct Options: Sendable {
        public var trust = false
        public init(trust: Bool = false) { self.trust = trust }
    }

    public static func open(_ path: String, options: Options = Options()) throws -> Checkpoint {
        let ck = try openUnchecked(path, options: options)
        // A NUL inside a name would be cut short by every C string on its way (SQLite among them), so two tensors
        // could end up under one wrong name: refuse the file instead.
        if let t = ck.tensors.first(where: { $0.name.utf8.contains(0) }) {
            throw FormatError(.header, "tensor name '\(t.name.replacingOccurrences(of: "\u{0}", with: "\\0"))' contains a NUL character")
        }
        return ck
    }

    /// `open`, with the file named in any format error: for commands that open a catalogued checkpoint, whose
    /// errors would otherwise not say which file failed.
    public static func openNamed(_ path: String, options: Options = Options()) throws -> Checkpoint {
        do { return try open(path, options: options) } catch let e as FormatError where !e.message.contains(path) {
            throw FormatError(e.kind, "\(path): \(e.message)")
        }
    }

    static func openUnchecked(_ path: String, options: Options) throws -> Checkpoint {
        try FileRef.requireRegularFile(path)
        // A file we may not read is said to be so (not "unrecognised format" from an empty sniff).
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw FormatError(.io, "cannot open: \(String(cString: strerror(errno)))") }
        close(fd)
        switch FormatDetector.sniff(path: path) {
        case .lfsPointer: throw FormatError(.lfsPointer, "Git LFS pointer file, not a model (run `git lfs pull`)")
        case .shardIndex: return try ShardedSafetensorsReader.read(indexPath: path)
        case .safetensors: return try SafetensorsReader.read(path: path)
        case .npy:
            let ck = try NpyReader.read(path: path)
            if ck.tensors.contains(where: { $0.dtype == .object }) { try attachScan(ck, PickleScanner.scanFile(path: path), options) }
            return ck
        case .zip: return try openZip(path, options: options)
        case .gguf: return try GGUFReader.read(path: path)
        case .pickle: return try PickleFileReader.read(path: path, options: options)
        case .unknown: throw FormatError(.unsupported, "unrecognised file format")
        }
    }

    static func openZip(_ path: String, options: Options) throws -> Checkpoint {
        let st = try Storage(mapping: path)
        let z = try ZipArchive(st)
        if z.entries.contains(where: { $0.name.hasSuffix("data.pkl") || $0.name.hasSuffix("/version") || $0.name == "version" }) {
            return try TorchReader.read(path: path, archive: z, options: options)
        }
        // Not a torch archive: still scan every member that looks like a pickle (object arrays, misnamed members).
        let findings = try PickleScanner.scanArchive(z)
        try TorchReader.refuseIfUnsafe(findings, trust: options.trust)
        let ck = try NpzReader.read(path: path)
        ck.findings = findings
        return ck
    }

    static func attachScan(_ ck: Checkpoint, _ findings: [Finding], _ options: Options) throws {
        try TorchReader.refuseIfUnsafe(findings, trust: options.trust)
        ck.findings = findings
    }

    /// The candidate files below a folder, by readdir(3): hidden entries are skipped (and hidden folders not entered),
    /// links to regular files count (Hugging Face caches link snapshots into blobs/), links to folders are not
    /// followed (no cycles), and FIFOs, devices and sockets are never opened. File names on Linux are bytes:
    /// a folder or a checkpoint-named file whose name is not UTF-8 (wscan keeps paths as text) is reported in
    /// `unreadable` instead of vanishing from the walk, as it did with FileManager's enumerator.
    static func walk(_ walked: String, shown: String, unreadable: inout [(path: String, reason: String)]) -> [String] {
        func join(_ dir: String, _ name: String) -> String { dir.hasSuffix("/") ? dir + name : dir + "/" + name }
        var found: [String] = []
        var stack: [(real: String, shown: String)] = [(walked, shown)]
        while let (dir, sdir) = stack.popLast() {
            guard let d = opendir(dir) else {
                unreadable.append((sdir, "cannot list folder: \(String(cString: strerror(errno)))")); continue
            }
            // Listable but not searchable (mode r--): the names come back but none of the files can be opened.
            if access(dir, X_OK) != 0 {
                unreadable.append((sdir, "cannot open the files of folder: \(String(cString: strerror(errno)))")); closedir(d); continue
            }
            while let e = readdir(d) {
                let bytes: [UInt8] = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix(while: { $0 != 0 })) }
                if bytes.first == UInt8(ascii: ".") { continue }          // ".", "..", and hidden entries
                var type = Int32(e.pointee.d_type)
                if type == Int32(DT_UNKNOWN) {
                    var st = stat()
                    let ok = (Array(dir.utf8) + [UInt8(ascii: "/")] + bytes + [0]).withUnsafeBufferPointer { p in
                        p.withMemoryRebound(to: CChar.self) { lstat($0.baseAddress!, &st) == 0 }
                    }
                    let fmt = ok ? st.st_mode & S_IFMT : 0
                    type = fmt == S_IFDIR ? Int32(DT_DIR) : fmt == S_IFREG ? Int32(DT_REG) : fmt == S_IFLNK ? Int32(DT_LNK) : Int32(DT_UNKNOWN)
                }
                guard let name = String(validating: bytes, as: UTF8.self) else {
                    let display = join(sdir, PathBytes.escaped(bytes))
                    if type == Int32(DT_DIR) {
                        unreadable.append((display, "folder name is not valid UTF-8 (wscan keeps paths as text): not walked; rename it"))
                    } else if FormatDetector.hasCheckpointExtension(PathBytes.escaped(bytes)) {
                        unreadable.append((display, "file name is not valid UTF-8 (wscan keeps paths as text): not indexed; rename it"))
                    }
                    continue
                }
                let real = join(dir, name), full = join(sdir, name)
                if type == Int32(DT_DIR) { stack.append((real, full)); continue }
                guard type == Int32(DT_REG) || type == Int32(DT_LNK) else { continue }
                if full.utf8.count >= Int(PATH_MAX) || real.utf8.count >= Int(PATH_MAX) {
                    if FormatDetector.hasCheckpointExtension(name) {
                        unreadable.append((full, "path is longer than PATH_MAX (\(PATH_MAX) bytes): the system cannot open it"))
                    }
                    continue
                }
                if type == Int32(DT_LNK) {
                    var st = stat()
                    if stat(full, &st) != 0 {
                        // A dangling link named like a checkpoint (an unfinished download, a moved blob) is worth a line.
                        if FormatDetector.hasCheckpointExtension(name) { unreadable.append((full, "link to nothing: \(String(cString: strerror(errno)))")) }
                        continue
                    }
                    guard (st.st_mode & S_IFMT) == S_IFREG else { continue }
                }
                if FormatDetector.isCandidate(full) { found.append(full) }
            }
            closedir(d)
        }
        return found
    }

    /// Expands paths (files or folders, recursively) into checkpoint paths: shard indexes replace the shards they claim.
    /// `unreadable`: folders met in a walk that cannot be listed (permissions), with the reason: said, not skipped.
    /// `covered`: files the walk met that are not checkpoints of their own (shards of a listed sharded model, a second
    /// path to a listed file); `index --prune` drops catalog entries left under those paths.
    /// `keep`: paths the caller already lists (the catalog's): between two paths to one file, one of them is kept.
    public static func discover(_ paths: [String], keep: (String) -> Bool = { _ in false }) -> (checkpoints: [String], missing: [String], unreadable: [(path: String, reason: String)], covered: [String]) {
        var files: [String] = [], missing: [String] = []
        var unreadable: [(path: String, reason: String)] = []
        let fm = FileManager.default
        for p in paths {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: p, isDirectory: &isDir) else { missing.append(p); continue }
            let abs = FileRef.absolute(p)
            if isDir.boolValue {
                // A folder given by a link is walked through its target (links met inside the walk are not
                // followed: no cycles), and its files keep the path the user gave (an unlistable root is reported by walk).
                let walked = URL(fileURLWithPath: abs).resolvingSymlinksInPath().path
                files += walk(walked, shown: abs, unreadable: &unreadable).sorted(by: PathBytes.less)
            } else {
                files.append(abs)
            }
        }
        // Shards are claimed by their real paths: in a Hugging Face cache the index names links, and the shards'
        // content-named blobs are found too. Paths are keyed by their bytes (PathBytes): NFC and NFD twins are two files.
        // One entry per file, by device and inode (FileRef.identity): a file reached twice (a hard link, a link)
        // is indexed once.
        let ids = files.map(FileRef.identity)
        var claimed = Set<[UInt8]>()
        for f in files where f.hasSuffix(".safetensors.index.json") {
            claimed.formUnion(ShardedSafetensorsReader.claimedShards(indexPath: f).map(FileRef.identity))
        }
        // A Hugging Face cache holds each file twice, as a content-named blob (no extension, found by content) and as
        // a named link into it (snapshots/REV/model.safetensors): the named path wins; between two named paths, the
        // one the caller already lists (its catalog entry and stored analyses stay), then the file itself over a
        // link to it, then the first in byte order.
        func rank(_ p: String) -> Int {
            var st = stat()
            let link = lstat(p, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
            return (FormatDetector.hasCheckpointExtension(p) ? 4 : 0) + (keep(p) ? 2 : 0) + (link ? 0 : 1)
        }
        var best: [[UInt8]: (path: String, rank: Int)] = [:]
        for (f, r) in zip(files, ids) where !claimed.contains(r) {
            let k = rank(f)
            if let b = best[r], b.rank >= k { continue }
            best[r] = (f, k)
        }
        var seen = Set<[UInt8]>(), out: [String] = [], covered: [String] = []
        for (f, r) in zip(files, ids) {
            if let b = best[r], PathBytes.equal(b.path, f) {
                if seen.insert(PathBytes.key(f)).inserted { out.append(f) }
            } else {
                covered.append(f)
            }
        }
        return (out, missing, unreadable, covered)
    }
}
