import Foundation

/// Validating safetensors reader: every check the reference implementation makes, plus duplicate names
/// and Git LFS pointer detection. Tensor bytes stay in the memory map.
public enum SafetensorsReader {
    public static let maxHeaderBytes = 100_000_000

    public static func read(path: String) throws -> Checkpoint {
        let storage = try Storage(mapping: path)
        let file = try FileRef.of(storage, path)
        let (tensors, meta) = try parse(storage, fileIndex: 0, storageIndex: 0)
        return Checkpoint(path: path, format: .safetensors, files: [file], storages: [storage], tensors: tensors, metadata: meta)
    }

    /// Parses and validates the header; returns tensors (in file order) and `__metadata__`.
    public static func parse(_ s: Storage, fileIndex: Int, storageIndex: Int) throws -> ([TensorInfo], [String: String]) {
        let buf = s.buffer
        if isLFSPointer(buf) { throw FormatError(.lfsPointer, "Git LFS pointer file, not a model (run `git lfs pull`)") }
        guard buf.count >= 8 else { throw FormatError(.truncated, "file too short for a safetensors header (\(buf.count) bytes)") }
        let n64 = buf.loadUnaligned(as: UInt64.self).littleEndian
        guard n64 <= UInt64(maxHeaderBytes) else {
            throw FormatError(.header, "header length \(n64) exceeds the \(maxHeaderBytes)-byte limit")
        }
        let n = Int(n64)
        guard n <= buf.count - 8 else {
            throw FormatError(.truncated, "header length \(n) runs past end of file (\(buf.count) bytes)")
        }
        guard n >= 2 else { throw FormatError(.header, "header length \(n) too small") }
        let hdr = UnsafeRawBufferPointer(rebasing: buf[8..<(8 + n)])
        if hdr[0] != UInt8(ascii: "{") { throw FormatError(.header, "header does not start with '{'") }
        try checkDuplicateKeys(hdr)
        let json = try parseJSONObject(hdr, what: "header")
        let dataStart = 8 + n
        let dataLen = buf.count - dataStart

        var meta: [String: String] = [:]
        var entries: [(name: String, dtype: DType, shape: [Int], begin: Int, end: Int)] = []
        for (name, value) in json {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw FormatError(.header, "__metadata__ is not an object") }
                for (k, v) in m {
                    guard let sv = v as? String else { throw FormatError(.header, "__metadata__[\(k)] is not a string") }
                    meta[k] = sv
                }
                continue
            }
            guard let e = value as? [String: Any] else { throw FormatError(.header, "entry '\(name)' is not an object") }
            guard let ds = e["dtype"] as? String else { throw FormatError(.header, "tensor '\(name)': missing dtype") }
            guard let dt = DType(rawValue: ds), dt.bits != nil else { throw FormatError(.dtype, "tensor '\(name)': unknown dtype \(ds)") }
            guard let sh = e["shape"] as? [Any] else { throw FormatError(.header, "tensor '\(name)': missing shape") }
            var shape: [Int] = []
            for d in sh {
                guard let v = jsonInt(d) else {
                    throw FormatError(.shape, "tensor '\(name)': bad dimension \(jsonLiteral(d)) (dimensions are non-negative integers)")
                }
                shape.append(v)
            }
            guard let offs = e["data_offsets"] as? [Any], offs.count == 2, let b = jsonInt(offs[0]), let en = jsonInt(offs[1]) else {
                throw FormatError(.header, "tensor '\(name)': data_offsets must be two non-negative integers")
            }
            // Other fields are ignored, as the reference library's deserializer ignores them.
            guard let count = elementCount(shape) else { throw FormatError(.shape, "tensor '\(name)': shape \(shape) overflows") }
            guard let nbytes = dt.byteCount(elements: count) else {
                throw FormatError(.shape, "tensor '\(name)': \(count) elements of \(ds) do not fill whole bytes or overflow")
            }
            guard en >= b else { throw FormatError(.layout, "tensor '\(name)': data_offsets end \(en) before begin \(b)") }
            guard en - b == nbytes else {
                throw FormatError(.layout, "tensor '\(name)': \(en - b) bytes for shape \(shape) \(ds) (needs \(nbytes))")
            }
            entries.append((name, dt, shape, b, en))
        }
        entries.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var cursor = 0
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(entries.count)
        for e in entries {
            if e.begin > cursor { throw FormatError(.layout, "gap before tensor '\(e.name)' (\(cursor)..<\(e.begin) unused)") }
            if e.begin < cursor { throw FormatError(.layout, "tensor '\(e.name)' overlaps the previous tensor") }
            if e.end > dataLen { throw FormatError(.bounds, "tensor '\(e.name)' ends at \(e.end), past the \(dataLen)-byte data buffer") }
            cursor = e.end
            tensors.append(TensorInfo(name: e.name, dtype: e.dtype, shape: e.shape, storage: storageIndex,
                                      byteOffset: dataStart + e.begin, byteCount: e.end - e.begin,
                                      fileIndex: fileIndex, fileOffset: dataStart + e.begin))
        }
        if cursor != dataLen {
            throw FormatError(.layout, "\(dataLen - cursor) trailing bytes after the last tensor")
        }
        return (tensors, meta)
    }

    static func isLFSPointer(_ b: UnsafeRawBufferPointer) -> Bool {
        let sig = Array("version https://git-lfs".utf8)
        return b.count >= sig.count && b.count < 1024 && zip(sig, b).allSatisfy { $0 == $1 }
    }

    /// JSONSerialization keeps the last of duplicate keys silently; scan the top-level object's keys ourselves.
    /// Duplicate keys in any object of the header (the reference parser, serde, refuses them all): a duplicate tensor
    /// name at the top, or a duplicate field inside an entry (`"dtype"` twice: which one is meant?).
    static func checkDuplicateKeys(_ hdr: UnsafeRawBufferPointer) throws {
        // one frame per open bracket: the keys seen when it is an object, and whether a key comes next
        var frames: [(object: Bool, keys: Set<String>, expectKey: Bool)] = []
        var lastTopKey = ""
        var i = 0
        let n = hdr.count
        while i < n {
            let c = hdr[i]
            if c == 0x22 { // string
                var j = i + 1
                var esc = false
                while j < n { let d = hdr[j]; if esc { esc = false } else if d == 0x5C { esc = true } else if d == 0x22 { break }; j += 1 }
                if let top = frames.last, top.object, top.expectKey {
                    // Compared decoded ("a" and "\u0061" are one name), and shown decoded.
                    let raw = UnsafeRawBufferPointer(rebasing: hdr[i..<min(j + 1, n)])
                    let key = (try? JSONSerialization.jsonObject(with: Data(raw), options: [.fragmentsAllowed])) as? String
                        ?? String(decoding: UnsafeRawBufferPointer(rebasing: hdr[(i + 1)..<min(j, n)]), as: UTF8.self)
                    // (inside __metadata__, a map of strings, the reference keeps the last value: so does JSONSerialization)
                    if !frames[frames.count - 1].keys.insert(key).inserted, !(frames.count == 2 && lastTopKey == "__metadata__") {
                        throw FormatError(.duplicate, frames.count == 1 ? "duplicate tensor name '\(key)'" : "entry '\(lastTopKey)': duplicate field '\(key)'")
                    }
                    if frames.count == 1 { lastTopKey = key }
                    frames[frames.count - 1].expectKey = false
                }
                i = j + 1; continue
            }
            switch c {
            case 0x7B: frames.append((true, [], true))
            case 0x5B: frames.append((false, [], false))
            case 0x7D, 0x5D: if !frames.isEmpty { frames.removeLast() }
            case 0x2C: if let top = frames.last, top.object { frames[frames.count - 1].expectKey = true }
            default: break
            }
            i += 1
        }
    }
}

/// Sharded safetensors: `*.safetensors.index.json` maps tensor names to shard files in the same folder.
public enum ShardedSafetensorsReader {
    public static func read(indexPath: String) throws -> Checkpoint {
        let idxStorage = try Storage(mapping: indexPath)
        guard idxStorage.count <= 100_000_000 else { throw FormatError(.header, "index file larger than 100 MB") }
        let json = try parseJSONObject(idxStorage.buffer, what: "shard index")
        guard let wm = json["weight_map"] as? [String: Any] else { throw FormatError(.header, "shard index has no weight_map") }
        guard !wm.isEmpty else { throw FormatError(.header, "shard index lists no tensors (empty weight_map)") }
        var weightMap: [String: String] = [:]
        for (k, v) in wm {
            guard let f = v as? String else { throw FormatError(.header, "weight_map[\(k)] is not a string") }
            guard !f.contains("/"), !f.hasPrefix("."), !f.isEmpty else { throw FormatError(.unsafe, "weight_map[\(k)] names a file outside the folder: \(f)") }
            weightMap[k] = f
        }
        let dir = FileRef.parentPath(indexPath)
        let shardNames = Array(Set(weightMap.values)).sorted()
        var files = [try FileRef.stat(indexPath)]
        var storages: [Storage] = []
        var tensors: [TensorInfo] = []
        var meta: [String: String] = [:]
        if let m = json["metadata"] as? [String: Any] { for (k, v) in m { meta[k] = "\(v)" } }
        var seen = Set<String>()
        for (si, shard) in shardNames.enumerated() {
            let p = (dir as NSString).appendingPathComponent(shard)
            let st: Storage
            do { st = try Storage(mapping: p) } catch let e as FormatError { throw FormatError(e.kind, "shard \(shard): \(e.message)") }
            let fi = files.count
            files.append(try FileRef.of(st, p))
            storages.append(st)
            let ts: [TensorInfo]
            do { (ts, _) = try SafetensorsReader.parse(st, fileIndex: fi, storageIndex: si) }
            catch let e as FormatError { throw FormatError(e.kind, "shard \(shard): \(e.message)") }
            for t in ts {
                guard weightMap[t.name] == shard else {
                    throw FormatError(.layout, "shard \(shard) holds '\(t.name)', which the index maps to \(weightMap[t.name] ?? "no shard")")
                }
                guard seen.insert(t.name).inserted else { throw FormatError(.duplicate, "tensor '\(t.name)' appears in two shards") }
                tensors.append(t)
            }
        }
        let missing = Set(weightMap.keys).subtracting(seen)
        if let m = missing.sorted().first { throw FormatError(.layout, "index maps '\(m)' to \(weightMap[m]!), which lacks it (\(missing.count) missing)") }
        return Checkpoint(path: indexPath, format: .safetensorsSharded, files: files, storages: storages, tensors: tensors, metadata: meta)
    }

    /// Shard files an index claims, as absolute paths (so a folder walk doesn't index them twice).
    public static func claimedShards(indexPath: String) -> [String] {
        guard let st = try? Storage(mapping: indexPath), st.count <= 100_000_000,
              let json = try? parseJSONObject(st.buffer, what: "index"),
              let wm = json["weight_map"] as? [String: Any] else { return [] }
        // Only real safetensors shards are claimed (read as part of the sharded model, not on their own): an index
        // naming a pickle, itself or anything else hides nothing from a folder walk.
        let dir = FileRef.parentPath(indexPath)
        return Set(wm.values.compactMap { $0 as? String }).filter { !$0.contains("/") && $0.hasSuffix(".safetensors") }
            .map { (dir as NSString).appendingPathComponent($0) }
            .filter { $0 != indexPath && FormatDetector.sniff(path: $0) == .safetensors }
    }
}
