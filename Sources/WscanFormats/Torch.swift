import Foundation

/// PyTorch ≥1.6 zip checkpoints: `<prefix>/data.pkl` is scanned, then interpreted passively; tensors are
/// `_rebuild_tensor_v2/v3` calls over persistent-id storages `('storage', StorageType, key, location, numel)`
/// held in `<prefix>/data/<key>` (stored members are mapped zero-copy).
public enum TorchReader {
    public static let maxMetadataEntries = 10_000
    public static let maxMetadataValueChars = 256

    static let storageDTypes: [String: DType] = [
        "FloatStorage": .f32, "DoubleStorage": .f64, "HalfStorage": .f16, "BFloat16Storage": .bf16,
        "LongStorage": .i64, "IntStorage": .i32, "ShortStorage": .i16, "CharStorage": .i8, "ByteStorage": .u8,
        "BoolStorage": .bool, "ComplexFloatStorage": .c64, "ComplexDoubleStorage": .c128,
        "UInt16Storage": .u16, "UInt32Storage": .u32, "UInt64Storage": .u64,
    ]

    public static func read(path: String, archive z: ZipArchive, options: CheckpointOpener.Options) throws -> Checkpoint {
        let pkls = z.entries.filter { $0.name == "data.pkl" || $0.name.hasSuffix("/data.pkl") }
        guard let pkl = pkls.min(by: { $0.name.count < $1.name.count }) else {
            throw FormatError(.unsupported, "zip archive has no data.pkl: not a PyTorch checkpoint")
        }
        let prefix = String(pkl.name.dropLast("data.pkl".count))
        let findings = try PickleScanner.scanArchive(z, first: pkl.name)
        try refuseIfUnsafe(findings, trust: options.trust)

        let (pst, poff, _) = try z.contents(pkl)
        let pbuf = try pst.slice(poff, pst === z.storage ? pkl.size : pst.count - poff)
        let g: PickleGraph
        do { g = try PickleVM.parse(pbuf) } catch let e as FormatError {
            throw FormatError(.pickle, "\(pkl.name): \(e.message)")
        }
        var bigEndian = false
        if let bo = z.entries.first(where: { $0.name == prefix + "byteorder" }), bo.size <= 16 {
            let (s, o, _) = try z.contents(bo)
            let text = String(decoding: try s.slice(o, s === z.storage ? bo.size : s.count - o), as: UTF8.self)
            if text.hasPrefix("big") { bigEndian = true }
        }
        var b = Builder(g: g, z: z, prefix: prefix, bigEndian: bigEndian)
        try b.walk(g.root, name: "", depth: 0)
        let ck = Checkpoint(path: path, format: .pytorch, files: [try FileRef.of(z.storage, path)], storages: b.storages,
                            tensors: b.tensors, metadata: b.metadata)
        ck.findings = findings
        ck.warnings = b.warnings
        if options.trust, findings.contains(where: { $0.severity >= .high }) {
            ck.warnings.append("loaded despite dangerous pickle content (--trust); nothing was executed")
        }
        return ck
    }

    static func refuseIfUnsafe(_ findings: [Finding], trust: Bool) throws {
        let bad = findings.filter { $0.severity >= .high }
        guard !trust, let first = bad.max(by: { $0.severity < $1.severity }) else { return }
        let more = bad.count > 1 ? " (+\(bad.count - 1) more)" : ""
        throw UnsafeCheckpointError(findings: findings, message:
            "unsafe pickle: \(first.severity.rawValue) \(first.what) in \(first.member) at offset \(first.offset)\(more); tensors not loaded (use --trust to load anyway; wscan never executes pickles)")
    }

    struct Builder {
        let g: PickleGraph
        let z: ZipArchive
        let prefix: String
        let bigEndian: Bool
        var storages: [Storage]
        var tensors: [TensorInfo] = []
        var metadata: [String: String] = [:]
        var warnings: [String] = []
        var names = Set<String>()
        var budget: Int
        var members: [String: ZipArchive.Entry] = [:]
        var cache: [String: (storage: Int, base: Int, fileOffset: Int?, size: Int)] = [:]

        init(g: PickleGraph, z: ZipArchive, prefix: String, bigEndian: Bool) {
            self.g = g; self.z = z; self.prefix = prefix; self.bigEndian = bigEndian
            storages = [z.storage]
            budget = max(1000, g.nodes.count * 2)
            for e in z.entries { members[e.name] = e }
        }

        func err(_ name: String, _ m: String) -> FormatError { FormatError(.pickle, "tensor '\(name)': \(m)") }

        func join(_ a: String, _ b: String) -> String { a.isEmpty ? b : a + "." + b }

        func keyName(_ k: Int) -> String {
            switch g.nodes[k] {
            case let .string(s): return s
            case let .int(v): return String(v)
            default: return g.describe(k)
            }
        }

        func calleeName(_ i: Int) -> String? {
            guard case let .call(_, c, _) = g.nodes[i], let gl = g.global(g.unwrapBuild(c)) else { return nil }
            return "\(gl.module).\(gl.name)"
        }

        mutating func walk(_ i: Int, name: String, depth: Int) throws {
            budget -= 1
            guard budget > 0 else { throw FormatError(.pickle, "object graph too large to walk (shared references?)") }
            guard depth < 200 else { throw FormatError(.pickle, "object nesting deeper than 200 at '\(name)'") }
            switch g.nodes[i] {
            case let .call(_, _, args):
                let callee = calleeName(i) ?? ""
                switch callee {
                case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v3":
                    try tensor(args, name: name, v3: callee.hasSuffix("v3"))
                    return
                case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
                    guard let a = g.tuple(args), let first = a.first else { throw err(name, "parameter without data") }
                    try walk(first, name: name, depth: depth + 1)
                    return
                case "torch._tensor._rebuild_from_type_v2":
                    guard let a = g.tuple(args), a.count >= 3 else { throw err(name, "bad _rebuild_from_type_v2 arguments") }
                    let fn = g.global(g.unwrapBuild(a[0])).map { "\($0.module).\($0.name)" } ?? ""
                    if fn.hasPrefix("torch._utils._rebuild_tensor") { try tensor(a[2], name: name, v3: fn.hasSuffix("v3")); return }
                    try walk(a[2], name: name, depth: depth + 1)
                    return
                case "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_sparse_csr_tensor",
                     "torch._utils._rebuild_meta_tensor_no_storage", "torch._utils._rebuild_wrapper_subclass",
                     "torch._utils._rebuild_nested_tensor", "torch._utils._rebuild_device_tensor_from_numpy",
                     "torch._utils._rebuild_xla_tensor", "torch._utils._rebuild_mlc_tensor", "torch._utils._rebuild_tensor_from_numpy":
                    // Tensors wscan does not decode (quantized, sparse, meta, nested, …): named, never silently dropped.
                    let kind = callee.dropFirst("torch._utils._rebuild_".count).replacingOccurrences(of: "_", with: " ")
                    warnings.append("\(name.isEmpty ? "(root)" : name): \(kind) (\(callee)) not loaded: wscan reads dense strided tensors only")
                    return
                default:
                    try walkItems(i, name: name, depth: depth)
                }
            case let .build(_, state):
                let inner = g.unwrapBuild(i)
                if case .call = g.nodes[inner], let c = calleeName(inner), c.hasPrefix("torch._utils._rebuild") || c.hasPrefix("torch._tensor") {
                    try walk(inner, name: name, depth: depth + 1)
                    return
                }
                try walkItems(i, name: name, depth: depth)
                if calleeName(inner) != "collections.OrderedDict", g.dictItems(state) != nil {
                    try walk(state, name: name, depth: depth + 1)
                }
            case .dict, .list, .tuple:
                try walkItems(i, name: name, depth: depth)
            case .none, .bool, .int, .bigInt, .float, .string:
                guard metadata.count < maxMetadataEntries else { return }
                var v = g.describe(i)
                if case let .string(s) = g.nodes[i] { v = s }
                guard v.count <= maxMetadataValueChars else { return }
                metadata[name.isEmpty ? "value" : name] = v
            default:
                break
            }
        }

        mutating func walkItems(_ i: Int, name: String, depth: Int) throws {
            if let items = g.dictItems(i) {
                for (k, v) in items { try walk(v, name: join(name, keyName(k)), depth: depth + 1) }
            }
            let base = g.unwrapBuild(i)
            switch g.nodes[base] {
            case .list, .tuple:
                if let items = g.sequenceItems(base) {
                    for (n, v) in items.enumerated() { try walk(v, name: join(name, String(n)), depth: depth + 1) }
                }
            default:
                if let l = g.objectList[base] {
                    for (n, v) in g.lists[l].enumerated() { try walk(v, name: join(name, String(n)), depth: depth + 1) }
                }
            }
        }

        func ints(_ i: Int, _ name: String, _ what: String) throws -> [Int] {
            guard let t = g.tuple(i) else { throw err(name, "\(what) is not a tuple") }
            guard t.count <= 64 else { throw err(name, "more than 64 dimensions") }
            return try t.map { guard let v = g.int($0) else { throw err(name, "\(what) holds a non-integer") }; return v }
        }

        mutating func tensor(_ argsNode: Int, name rawName: String, v3: Bool) throws {
            var name = rawName.isEmpty ? "tensor" : rawName
            guard let a = g.tuple(argsNode), a.count >= 4 else { throw err(name, "rebuild call needs (storage, offset, size, stride)") }
            guard case let .persistentID(pidNode) = g.nodes[a[0]], let pid = g.tuple(pidNode), pid.count >= 5,
                  g.string(pid[0]) == "storage" else { throw err(name, "storage is not a ('storage', type, key, location, numel) persistent id") }
            guard let st = g.global(g.unwrapBuild(pid[1])) else { throw err(name, "storage type is not a global") }
            let key: String
            if let s = g.string(pid[2]) { key = s } else if let v = g.int(pid[2]) { key = String(v) } else { throw err(name, "bad storage key") }
            guard let numel = g.int(pid[4]), numel >= 0 else { throw err(name, "bad storage size") }
            var dtype: DType
            var untyped = false
            if st.name == "UntypedStorage" || st.name == "TypedStorage" {
                untyped = true
                dtype = .u8
            } else if let d = storageDTypes[st.name], st.module == "torch" || st.module == "torch.cuda" {
                dtype = d
            } else {
                warnings.append("\(name): storage type \(st.module).\(st.name) not supported; skipped")
                return
            }
            if v3, a.count >= 7, let dg = g.global(g.unwrapBuild(a[6])), dg.module == "torch" {
                guard let d = PickleScanner.torchDTypes[dg.name] else {
                    warnings.append("\(name): dtype torch.\(dg.name) not supported; skipped"); return
                }
                dtype = d
            } else if pid.count >= 6, let dg = g.global(g.unwrapBuild(pid[5])), dg.module == "torch", let d = PickleScanner.torchDTypes[dg.name] {
                dtype = d
            }
            guard let bits = dtype.bits, bits % 8 == 0 else { throw err(name, "dtype \(dtype.rawValue) has no whole-byte size") }
            let itemsize = bits / 8
            // numel counts bytes for untyped storages.
            var storageElems = numel
            if untyped {
                guard numel % itemsize == 0 else { throw err(name, "untyped storage of \(numel) bytes is not a whole number of \(dtype.rawValue)") }
                storageElems = numel / itemsize
            }
            guard let offset = g.int(a[1]), offset >= 0 else { throw err(name, "bad storage offset") }
            let size = try ints(a[2], name, "size")
            let stride = try ints(a[3], name, "stride")
            guard size.count == stride.count else { throw err(name, "size and stride differ in length") }
            guard size.allSatisfy({ $0 >= 0 }), stride.allSatisfy({ $0 >= 0 }) else { throw err(name, "negative size or stride") }
            guard let count = elementCount(size) else { throw err(name, "shape \(size) overflows") }

            // Storage member.
            let memberName = prefix + "data/" + key
            let loc: (storage: Int, base: Int, fileOffset: Int?, size: Int)
            if let c = cache[key] { loc = c } else {
                guard let e = members[memberName] else { throw err(name, "storage member '\(memberName)' is missing") }
                let (s, off, foff) = try z.contents(e)
                let si: Int
                if s === z.storage { si = 0 } else { si = storages.count; storages.append(s) }
                loc = (si, off, foff, e.size)
                cache[key] = loc
            }
            let (needBytes, o1) = storageElems.multipliedReportingOverflow(by: itemsize)
            guard !o1, needBytes <= loc.size else {
                throw err(name, "storage \(key) claims \(storageElems) × \(itemsize) bytes but its member holds \(loc.size)")
            }
            // The view must stay inside the storage.
            if count > 0 {
                var maxIndex = offset
                for (d, s) in zip(size, stride) {
                    let (m, o2) = (d - 1).multipliedReportingOverflow(by: s)
                    let (r, o3) = maxIndex.addingReportingOverflow(m)
                    guard !o2, !o3 else { throw err(name, "view extent overflows") }
                    maxIndex = r
                }
                guard maxIndex < storageElems else {
                    throw err(name, "view (offset \(offset), size \(size), stride \(stride)) reads element \(maxIndex) of a \(storageElems)-element storage")
                }
            } else {
                guard offset <= storageElems else { throw err(name, "storage offset \(offset) beyond a \(storageElems)-element storage") }
            }
            var contiguous = true
            var expect = 1
            for k in stride.indices.reversed() {
                if size[k] != 1 && stride[k] != expect { contiguous = false; break }
                // overflow-checked: an empty view (a 0 in front) may have huge sizes behind it
                let (e, o) = expect.multipliedReportingOverflow(by: max(size[k], 1))
                if o { contiguous = count == 0; break }
                expect = e
            }
            if names.contains(name) {
                var n = 2
                while names.contains("\(name)#\(n)") { n += 1 }
                warnings.append("duplicate tensor name '\(name)' renamed '\(name)#\(n)'")
                name = "\(name)#\(n)"
            }
            names.insert(name)
            var t: TensorInfo
            if contiguous || count == 0 {
                let byteOff = loc.base + offset * itemsize
                t = TensorInfo(name: name, dtype: dtype, shape: size, storage: loc.storage, byteOffset: byteOff,
                               byteCount: count * itemsize, fileIndex: 0, fileOffset: loc.fileOffset.map { $0 + offset * itemsize })
            } else {
                t = TensorInfo(name: name, dtype: dtype, shape: size, storage: loc.storage, byteOffset: loc.base,
                               byteCount: needBytes, fileIndex: 0, fileOffset: loc.fileOffset)
                // a size-1 dimension's stride is never stepped: 0 (a hostile Int.max there overflowed the gather)
                t.layout = .strided(zip(size, stride).map { $0 == 1 ? 0 : $1 }, offset: offset)
            }
            t.bigEndian = bigEndian && itemsize > 1
            tensors.append(t)
        }
    }
}

/// Bare pickles and legacy (pre-1.6) PyTorch files: scanned, never unpickled into tensors.
public enum PickleFileReader {
    static let legacyMagic = "0x1950a86a20f9469cfc6c"
    /// The same number as a legacy file's pickle starts with it: PROTO 2, then LONG1 of 10 little-endian bytes.
    static let legacyMagicPrefix: [UInt8] = {
        let hex = Array(legacyMagic.dropFirst(2))
        let le = stride(from: hex.count, to: 0, by: -2).map { UInt8(String(hex[($0 - 2)..<$0]), radix: 16)! }
        return [0x80, 0x02, 0x8A, UInt8(le.count)] + le
    }()

    public static func read(path: String, options: CheckpointOpener.Options) throws -> Checkpoint {
        let st = try Storage(mapping: path)
        let name = (path as NSString).lastPathComponent
        let findings = PickleScanner.scanBlob(st.buffer, member: name, nameSaysPickle: true)
        try TorchReader.refuseIfUnsafe(findings, trust: options.trust)
        let g: PickleGraph
        do { g = try PickleVM.parse(st.buffer) } catch let e as FormatError {
            // the caller names the file; content that does not even open like a pickle (no PROTO) is said to be so
            let proto = st.buffer.count >= 2 && st.buffer[0] == 0x80 && (2...5).contains(st.buffer[1])
            throw FormatError(.pickle, proto ? e.message : "not a recognised checkpoint (no known magic; as a pickle: \(e.message))")
        }
        if g.root >= 0, g.describe(g.root) == legacyMagic {
            throw FormatError(.unsupported, "legacy (pre-1.6) PyTorch format: re-save with torch.save(..., _use_new_zipfile_serialization=True)")
        }
        let ck = Checkpoint(path: path, format: .pickle, files: [try FileRef.of(st, path)], storages: [st], tensors: [])
        ck.findings = findings
        ck.warnings = ["bare pickle: no tensors loaded (wscan never executes pickles)"]
        return ck
    }
}
