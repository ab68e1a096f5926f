import Foundation
import CWscan

/// Static safety scanner for pickles. It runs the passive `PickleVM` (nothing is imported or called) and
/// classifies every import (GLOBAL, STACK_GLOBAL resolved through the stack and memo, INST, OBJ) and every call
/// (REDUCE, NEWOBJ, BUILD) as allowed, dangerous or unknown.
public enum PickleScanner {
    public static let maxNestedDepth = 3
    public static let maxPicklesPerStream = 10_000
    public static let maxFindings = 1000

    public enum Verdict: Equatable, Sendable {
        case allowed
        case dangerous(Finding.Severity, String)
        case unknown
    }

    // MARK: classification tables

    /// Python 2 names as Python 3's unpickler maps them (`_compat_pickle`): modules, then whole names.
    static let py2Modules = ["__builtin__": "builtins", "copy_reg": "copyreg", "cPickle": "pickle", "exceptions": "builtins",
                             "thread": "_thread", "dummy_thread": "_dummy_thread", "commands": "subprocess", "Queue": "queue",
                             "SocketServer": "socketserver", "httplib": "http.client", "urllib2": "urllib.request",
                             "cStringIO": "io", "StringIO": "io", "UserDict": "collections", "UserList": "collections",
                             "UserString": "collections", "__main__": "__main__"]
    static let py2Names = ["__builtin__.reduce": "functools.reduce", "__builtin__.intern": "sys.intern",
                           "__builtin__.unichr": "builtins.chr", "__builtin__.xrange": "builtins.range",
                           "__builtin__.raw_input": "builtins.input", "__builtin__.execfile": "builtins.exec",
                           "itertools.imap": "builtins.map", "itertools.izip": "builtins.zip", "itertools.ifilter": "builtins.filter"]

    static let allowed: Set<String> = {
        var s: Set<String> = [
            "collections.OrderedDict",
            "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
            "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
            "torch._tensor._rebuild_from_type_v2",
            "torch.storage.UntypedStorage", "torch.storage.TypedStorage", "torch.UntypedStorage", "torch.TypedStorage",
            "torch.device", "torch.Size",
            "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
            // numpy's own reduce of an array at pickle protocol 5 (out-of-band buffers)
            "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
            "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.ndarray", "numpy.dtype",
            "builtins.set", "builtins.frozenset", "builtins.slice", "builtins.complex", "builtins.bytearray",
            "builtins.dict", "builtins.list", "builtins.tuple", "builtins.int", "builtins.float", "builtins.str",
            "builtins.bytes", "builtins.bool", "builtins.object", "builtins.range",
            "_codecs.encode", "copyreg._reconstructor",
            "joblib.numpy_pickle.NumpyArrayWrapper", "joblib.numpy_pickle.NDArrayWrapper",
            "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
        ]
        for st in ["Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool", "ComplexFloat",
                   "ComplexDouble", "QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4", "UInt16", "UInt32", "UInt64"] {
            s.insert("torch.\(st)Storage"); s.insert("torch.cuda.\(st)Storage")
        }
        for d in torchDTypes.keys { s.insert("torch.\(d)") }
        for l in ["strided", "sparse_coo", "sparse_csr", "contiguous_format", "channels_last", "channels_last_3d", "preserve_format"] {
            s.insert("torch.\(l)")
        }
        return s
    }()

    static let torchDTypes: [String: DType] = [
        "float32": .f32, "float": .f32, "float64": .f64, "double": .f64, "float16": .f16, "half": .f16, "bfloat16": .bf16,
        "int64": .i64, "long": .i64, "int32": .i32, "int": .i32, "int16": .i16, "short": .i16, "int8": .i8, "uint8": .u8,
        "bool": .bool, "complex64": .c64, "cfloat": .c64, "complex128": .c128, "cdouble": .c128, "uint16": .u16,
        "uint32": .u32, "uint64": .u64, "float8_e4m3fn": .f8e4m3, "float8_e5m2": .f8e5m2, "float8_e4m3fnuz": .f8e4m3fnuz,
        "float8_e5m2fnuz": .f8e5m2fnuz, "float8_e8m0fnu": .f8e8m0,
    ]

    /// Whole modules that are dangerous whatever name is imported from them.
    static let deniedModules: [(String, Finding.Severity, String)] = [
        ("os", .critical, "operating-system access (command execution, files)"),
        ("posix", .critical, "operating-system access (command execution, files)"),
        ("nt", .critical, "operating-system access (command execution, files)"),
        ("subprocess", .critical, "runs processes"), ("_posixsubprocess", .critical, "runs processes"),
        ("runpy", .critical, "runs code"), ("pty", .critical, "spawns shells"), ("commands", .critical, "runs shell commands"),
        ("pickle", .critical, "nested unpickling"), ("_pickle", .critical, "nested unpickling"),
        ("marshal", .critical, "loads code objects"), ("importlib", .critical, "imports arbitrary modules"),
        ("ctypes", .critical, "native code and memory access"), ("code", .critical, "runs code"), ("codeop", .critical, "compiles code"),
        ("dill", .critical, "nested unpickling of code"), ("cloudpickle", .critical, "nested unpickling of code"),
        ("timeit", .critical, "runs code strings"), ("numpy.f2py", .critical, "compiles and runs code"),
        ("torch.hub", .critical, "downloads and runs code"), ("cProfile", .critical, "runs code strings"),
        ("profile", .critical, "runs code strings"), ("doctest", .critical, "runs code"), ("trace", .critical, "runs code"),
        ("setuptools", .critical, "runs setup scripts"), ("distutils", .critical, "runs setup scripts"),
        ("pip", .critical, "installs and runs packages"), ("ensurepip", .critical, "installs packages"),
        ("venv", .critical, "creates environments and runs processes"),
        ("sys", .high, "interpreter state"), ("socket", .high, "network access"), ("shutil", .high, "file-system changes"),
        ("asyncio", .high, "processes and network"), ("webbrowser", .high, "opens URLs"), ("requests", .high, "network access"),
        ("urllib", .high, "network access"), ("urllib2", .high, "network access"), ("http", .high, "network access"),
        ("httplib", .high, "network access"), ("ftplib", .high, "network access"), ("smtplib", .high, "network access"),
        ("telnetlib", .high, "network access"), ("bdb", .high, "debugger"), ("pdb", .high, "debugger"),
        ("multiprocessing", .high, "processes"), ("threading", .high, "threads"), ("_thread", .high, "threads"),
        ("signal", .high, "signal handlers"), ("tempfile", .medium, "file-system access"),
        // Known command-execution gadgets in modules that look harmless.
        ("pydoc", .critical, "runs shell commands (pipepager, tempfilepager) and imports arbitrary names (locate)"),
        ("_osx_support", .critical, "runs shell commands"),
    ]

    static let deniedNames: [String: (Finding.Severity, String)] = {
        var d: [String: (Finding.Severity, String)] = [:]
        for n in ["eval", "exec", "compile", "__import__", "apply", "execfile", "getattr", "setattr", "delattr", "breakpoint"] {
            d["builtins.\(n)"] = (.critical, "runs or reaches arbitrary code")
        }
        for n in ["open", "input", "globals", "locals", "vars", "file", "reload"] { d["builtins.\(n)"] = (.high, "interpreter or file access") }
        d["functools.partial"] = (.high, "builds calls of arbitrary callables")
        d["functools.reduce"] = (.high, "calls arbitrary callables")
        for n in ["attrgetter", "itemgetter", "methodcaller"] { d["operator.\(n)"] = (.high, "reaches arbitrary attributes") }
        d["_operator.attrgetter"] = (.high, "reaches arbitrary attributes"); d["_operator.methodcaller"] = (.high, "calls arbitrary methods")
        for n in ["CodeType", "FunctionType", "LambdaType", "MethodType"] { d["types.\(n)"] = (.critical, "builds code or functions") }
        d["torch.serialization.load"] = (.critical, "nested torch.load (unpickling)")
        d["torch.load"] = (.critical, "nested torch.load (unpickling)")
        d["torch.storage._load_from_bytes"] = (.critical, "nested torch.load of embedded bytes")
        d["torch._C._import_ir_module_from_package"] = (.high, "loads TorchScript")
        d["torch.jit.load"] = (.high, "loads TorchScript")
        d["numpy.load"] = (.high, "may unpickle (allow_pickle)")
        d["numpy.testing._private.utils.runstring"] = (.critical, "runs code strings")
        d["pkgutil.resolve_name"] = (.critical, "imports arbitrary names")
        d["platform.popen"] = (.critical, "runs shell commands")
        d["io.open"] = (.high, "file access"); d["_io.open"] = (.high, "file access")
        d["io.FileIO"] = (.high, "file access"); d["_io.FileIO"] = (.high, "file access")
        d["joblib.load"] = (.critical, "nested unpickling")
        d["builtins.memoryview"] = (.medium, "raw memory views")
        d["uuid._get_command_stdout"] = (.critical, "runs a command")
        d["imaplib.IMAP4_stream"] = (.critical, "runs a command")
        d["_aix_support._read_cmd_output"] = (.critical, "runs a command")
        d["ctypes.util._findSoname_ldconfig"] = (.critical, "runs a command")
        return d
    }()

    /// Callables whose bytes/str arguments are pickles to be scanned recursively.
    static let nestedLoaders: Set<String> = [
        "pickle.loads", "pickle.load", "_pickle.loads", "_pickle.load", "dill.loads", "cloudpickle.loads",
        "torch.load", "torch.serialization.load", "torch.storage._load_from_bytes", "joblib.load", "numpy.load",
    ]

    static func normalize(_ module: String) -> String { py2Modules[module] ?? module }
    /// The module name the passive parser gives a STACK_GLOBAL whose operands are not literal strings.
    public static let computedModule = "<computed>"

    public static func classify(module: String, name: String) -> Verdict {
        if module == computedModule {
            return .dangerous(.high, "import whose module or name is computed at load time (\(name)); it cannot be verified statically")
        }
        if let mapped = py2Names["\(module).\(name)"], let dot = mapped.lastIndex(of: ".") {
            return classify(module: String(mapped[..<dot]), name: String(mapped[mapped.index(after: dot)...]))
        }
        let m = normalize(module)
        let full = "\(m).\(name)"
        if let (sev, why) = deniedNames[full] { return .dangerous(sev, why) }
        for (dm, sev, why) in deniedModules where m == dm || m.hasPrefix(dm + ".") { return .dangerous(sev, why) }
        if allowed.contains(full) { return .allowed }
        // Protocol 4 resolves a dotted name attribute by attribute, so `torch` + `serialization.os.system` reaches
        // os.system through a module that imported os. Every window of up to 6 parts of the path (the longest denied
        // path has 5) is checked as if it were the import, at any depth and prefixes included (`builtins` +
        // `exec.__call__` is exec); a dotted name that is not allowed is at least high.
        if name.contains(".") {
            let parts = full.split(separator: ".").map(String.init)
            var worst = Verdict.dangerous(.high, "dotted name: attribute traversal from \(m) can reach other modules")
            for i in 0..<max(0, parts.count - 1) {
                for j in (i + 1)..<min(parts.count, i + 7) {
                    let v = classify(module: parts[i..<j].joined(separator: "."), name: parts[j])
                    if case let .dangerous(sev, why) = v, case let .dangerous(w, _) = worst, sev > w {
                        worst = .dangerous(sev, why + " (reached through \(full))")
                    }
                }
            }
            return worst
        }
        if m == "numpy.dtypes", name.hasSuffix("DType") { return .allowed }
        if m == "builtins" { return .dangerous(.medium, "builtin not on the allow list") }
        if name.hasPrefix("__") && name != "__newobj__" && name != "__newobj_ex__" {
            return .dangerous(.medium, "dunder attribute import")
        }
        return .unknown
    }

    // MARK: byte-level helpers

    static let textStartOps: Set<UInt8> = Set("(c}])NILFSVKJMUTXGi".utf8)

    /// Whether bytes at `at` plausibly start a pickle: PROTO 2–5, or a common protocol-0/1 first opcode.
    public static func looksLikePickle(_ b: UnsafeRawBufferPointer, at: Int = 0, strictOnly: Bool = false) -> Bool {
        guard at < b.count else { return false }
        if b[at] == 0x80 { return at + 1 < b.count && (2...5).contains(b[at + 1]) }
        if strictOnly { return false }
        return textStartOps.contains(b[at]) && b.count - at >= 2
    }

    /// Every opcode of protocols 0–5.
    static let opcodes: Set<UInt8> = Set("(.012FIJKLMNPQRSTUVXabcdeghijlopqrstu}])GBC".utf8).union(0x80...0x98)
    static func isOpcode(_ b: UInt8) -> Bool { opcodes.contains(b) }

    static func bytesOf(_ g: PickleGraph, _ i: Int) -> [UInt8]? {
        switch g.nodes[i] {
        case let .bytes(v): return v
        case let .string(s):
            var out: [UInt8] = []
            for u in s.unicodeScalars { guard u.value < 256 else { return nil }; out.append(UInt8(u.value)) }
            return out
        default: return nil
        }
    }

    // MARK: scanning

    public static func scan(_ bytes: UnsafeRawBufferPointer, member: String) -> [Finding] {
        scan(bytes, member: member, nested: 0, strong: true)
    }

    /// `strong`: the caller believes these bytes are a pickle (report malformation); otherwise malformed
    /// streams without imports are treated as non-pickle data and ignored.
    static func scan(_ bytes: UnsafeRawBufferPointer, member: String, nested: Int, strong: Bool) -> [Finding] {
        var findings: [Finding] = []
        var start = 0
        var index = 0
        while start < bytes.count, index < maxPicklesPerStream {
            if index > 0 {
                // Several pickles in one stream: keep going while what follows STOP is an opcode. Any opcode can
                // open a pickle (a data pickle prefixed with NEWTRUE POP loads), so the next one is not required
                // to look like a usual first opcode.
                guard isOpcode(bytes[start]) else { break }
            }
            let vm = PickleVM(bytes, start: start, recordEvents: true)
            var failure: Error? = nil
            do { try vm.run() } catch { failure = error }
            let g = vm.graph
            let hadEvents = !g.events.isEmpty
            if index > 0, hadEvents {
                findings.append(Finding(severity: .info, member: member, offset: start, what: "concatenated pickle",
                                        detail: "pickle #\(index + 1) starts after STOP of the previous one"))
            }
            findings += classify(g, bytes: bytes, member: member, nested: nested)
            if let failure {
                let msg = (failure as? FormatError)?.message ?? "\(failure)"
                if vm.limitExceeded {
                    // Bytes nobody claims to be a pickle that hit a limit before any import are most likely data.
                    findings.append(Finding(severity: strong || hadEvents ? .high : .info, member: member, offset: start, what: "analysis limit",
                                            detail: "pickle exceeds analysis limits (\(msg)); its imports cannot all be verified"))
                    findings += staticWalk(bytes, from: vm.offset, member: member)
                } else {
                    if (index == 0 && strong) || hadEvents {
                        findings.append(Finding(severity: strong ? .medium : .low, member: member, offset: start, what: "malformed pickle",
                                                detail: msg))
                    }
                    // Python may accept what the passive parser refused (or a crafted stream hides its imports past
                    // the point of refusal): the rest of the stream is walked opcode by opcode for imports. Bytes not
                    // known to be a pickle (tensor data) only report imports that are named and rated medium or worse.
                    // Only imports count: the refusal itself is already reported above, and bytes after it that are
                    // no opcode say nothing more.
                    let strongHere = (index == 0 && strong) || hadEvents
                    findings += staticWalk(bytes, from: vm.offset, member: member).filter {
                        $0.detail.contains("imported by") && (strongHere || $0.severity >= .medium) || (strongHere && $0.what == "STACK_GLOBAL")
                    }
                }
                break
            }
            index += 1
            guard g.end > start else { break }
            start = g.end
            if index == maxPicklesPerStream, start < bytes.count, looksLikePickle(bytes, at: start) {
                findings.append(Finding(severity: .high, member: member, offset: start, what: "analysis limit",
                                        detail: "more than \(maxPicklesPerStream) concatenated pickles; the rest was not scanned"))
            }
        }
        if findings.count > maxFindings {
            let dropped = findings.count - maxFindings
            findings.sort { $0.severity > $1.severity }
            findings.removeLast(dropped)
            findings.append(Finding(severity: .info, member: member, offset: 0, what: "findings truncated",
                                    detail: "\(dropped) less severe findings omitted"))
        }
        return findings
    }

    static func finding(_ v: Verdict, member: String, offset: Int, what: String, detail: String) -> Finding? {
        switch v {
        case .allowed: return nil
        case let .dangerous(sev, why): return Finding(severity: sev, member: member, offset: offset, what: what, detail: "\(why); \(detail)")
        case .unknown: return Finding(severity: .low, member: member, offset: offset, what: what, detail: "not on the allow list; \(detail)")
        }
    }

    static func classify(_ g: PickleGraph, bytes: UnsafeRawBufferPointer, member: String, nested: Int) -> [Finding] {
        var out: [Finding] = []
        var visited = Set<Int>()   // nodes already searched for embedded pickles (shared args are searched once)
        // Which calls use each global node.
        var callsOf: [Int: [(PickleCallKind, Int)]] = [:]
        for e in g.events {
            if case let .call(kind) = e.kind, e.node >= 0, case let .call(_, c, _) = g.nodes[e.node] {
                callsOf[g.unwrapBuild(c), default: []].append((kind, e.offset))
            }
        }
        for e in g.events {
            switch e.kind {
            case let .importGlobal(opcode):
                guard e.node >= 0, case let .global(m, n) = g.nodes[e.node] else { continue }
                var detail = "imported by \(opcode)"
                if let calls = callsOf[e.node], let first = calls.first {
                    detail += "; called by \(first.0.rawValue.uppercased()) at offset \(first.1)"
                    if calls.count > 1 { detail += " (+\(calls.count - 1) more)" }
                }
                if nested > 0 { detail += "; inside embedded pickle bytes" }
                if let f = finding(classify(module: m, name: n), member: member, offset: e.offset, what: "\(m).\(n)", detail: detail) {
                    out.append(f)
                }
            case let .call(kind):
                guard e.node >= 0, case let .call(_, c, args) = g.nodes[e.node] else { continue }
                let callee = g.unwrapBuild(c)
                var calleeName: String? = nil
                switch g.nodes[callee] {
                case let .global(m, n): calleeName = "\(normalize(m)).\(n)"
                case .ext: break // reported by its EXT event
                default:
                    out.append(Finding(severity: .medium, member: member, offset: e.offset, what: "indirect call",
                                       detail: "\(kind.rawValue.uppercased()) calls a computed value (\(g.describe(callee))), not an imported name"))
                }
                // Embedded pickles passed to calls: scan recursively (loaders always, anything else when it starts with PROTO).
                if nested < maxNestedDepth {
                    let isLoader = calleeName.map { nestedLoaders.contains($0) } ?? false
                    for (k, blob) in embeddedBlobs(g, args, depth: 0, visited: &visited) {
                        let ok = blob.withUnsafeBytes { looksLikePickle($0, strictOnly: !isLoader) }
                        guard ok else { continue }
                        let sub = blob.withUnsafeBytes {
                            scan($0, member: "\(member)[embedded@\(e.offset)#\(k)]", nested: nested + 1, strong: isLoader)
                        }
                        out += sub
                    }
                }
            case let .ext(code):
                out.append(Finding(severity: .medium, member: member, offset: e.offset, what: "extension code \(code)",
                                   detail: "EXT opcode imports through the copyreg extension registry; not resolvable statically"))
            case .buffer:
                out.append(Finding(severity: .info, member: member, offset: e.offset, what: "out-of-band buffer",
                                   detail: "NEXT_BUFFER (protocol 5) refers to data outside the pickle"))
            case .build, .persistentID:
                break
            }
        }
        return out
    }

    /// bytes/str values among a call's arguments (a few levels into tuples, lists and nested calls).
    static func embeddedBlobs(_ g: PickleGraph, _ i: Int, depth: Int, visited: inout Set<Int>) -> [(Int, [UInt8])] {
        guard depth < 4, visited.insert(i).inserted else { return [] }
        var out: [(Int, [UInt8])] = []
        switch g.nodes[i] {
        case .bytes, .string:
            if let b = bytesOf(g, i), b.count >= 2 { out.append((i, b)) }
        case let .tuple(items):
            for x in items.prefix(16) { out += embeddedBlobs(g, x, depth: depth + 1, visited: &visited) }
        case let .list(l):
            for x in g.lists[l].prefix(16) { out += embeddedBlobs(g, x, depth: depth + 1, visited: &visited) }
        case let .call(_, _, a):
            out += embeddedBlobs(g, a, depth: depth + 1, visited: &visited)
        default: break
        }
        return out
    }

    /// After the VM gave up on a limit, walk the remaining opcodes without building values and classify the
    /// imports that can be read statically (GLOBAL/INST text, STACK_GLOBAL from the last two string literals).
    static func staticWalk(_ b: UnsafeRawBufferPointer, from: Int, member: String) -> [Finding] {
        var out: [Finding] = []
        var p = from
        var strings: [String] = []
        var memoStrings: [Int: String] = [:]
        var memoCount = 0
        func line() -> String? {
            var j = p
            while j < b.count, b[j] != 0x0A { j += 1 }
            guard j < b.count else { return nil }
            defer { p = j + 1 }
            return String(decoding: UnsafeRawBufferPointer(rebasing: b[p..<j]), as: UTF8.self)
        }
        func le(_ n: Int) -> Int? {
            guard p + n <= b.count else { return nil }
            var v = 0
            for k in 0..<n { v |= Int(b[p + k]) << (8 * k) }
            p += n
            return v
        }
        func str(_ n: Int?) -> String? {
            guard let n, n >= 0, n <= b.count - p else { return nil }
            defer { p += n }
            return String(decoding: UnsafeRawBufferPointer(rebasing: b[p..<(p + n)]), as: UTF8.self)
        }
        var steps = 0
        while p < b.count, steps < 50_000_000 {
            steps += 1
            let at = p
            let op = b[p]; p += 1
            switch op {
            case 0x63, 0x69: // GLOBAL / INST
                guard let m = line(), let n = line() else { return out }
                if let f = finding(classify(module: m, name: n), member: member, offset: at, what: "\(m).\(n)",
                                   detail: "imported by \(op == 0x63 ? "GLOBAL" : "INST") (found by static walk)") { out.append(f) }
            case 0x93:
                if strings.count >= 2 {
                    let m = strings[strings.count - 2], n = strings[strings.count - 1]
                    if let f = finding(classify(module: m, name: n), member: member, offset: at, what: "\(m).\(n)",
                                       detail: "imported by STACK_GLOBAL (found by static walk)") { out.append(f) }
                } else {
                    out.append(Finding(severity: .high, member: member, offset: at, what: "STACK_GLOBAL",
                                       detail: "import not resolvable statically"))
                }
            case 0x8C: guard let s = str(le(1)) else { return out }; strings.append(s)
            case 0x58: guard let s = str(le(4)) else { return out }; strings.append(s)
            case 0x8D: guard let s = str(le(8)) else { return out }; strings.append(s)
            case 0x55: guard let s = str(le(1)) else { return out }; strings.append(s)
            case 0x54: guard let s = str(le(4)) else { return out }; strings.append(s)
            case 0x94: if let s = strings.last { memoStrings[memoCount] = s }; memoCount += 1
            case 0x71: guard let k = le(1) else { return out }; if let s = strings.last { memoStrings[k] = s }
            case 0x72: guard let k = le(4) else { return out }; if let s = strings.last { memoStrings[k] = s }
            case 0x68: guard let k = le(1) else { return out }; if let s = memoStrings[k] { strings.append(s) }
            case 0x6A: guard let k = le(4) else { return out }; if let s = memoStrings[k] { strings.append(s) }
            case 0x2E: return out
            default:
                guard let n = argLength(op, b, p) else {
                    out.append(Finding(severity: .medium, member: member, offset: at, what: "unknown opcode",
                                       detail: String(format: "opcode 0x%02x not part of any pickle protocol", op)))
                    return out
                }
                if n < 0 { guard line() != nil else { return out } } else {
                    guard n <= b.count - p else { return out }
                    p += n
                }
            }
            if strings.count > 64 { strings.removeFirst(strings.count - 2) }
        }
        return out
    }

    /// Byte length of an opcode's argument (-1: newline-terminated text), nil for unknown opcodes.
    static func argLength(_ op: UInt8, _ b: UnsafeRawBufferPointer, _ p: Int) -> Int? {
        func le(_ n: Int) -> Int? {
            guard p + n <= b.count else { return nil }
            var v = 0
            for k in 0..<n { v |= Int(b[p + k]) << (8 * k) }
            return v
        }
        /// The header plus the length it announces; a length no file can hold (an 8-byte one past Int.max − 8, or
        /// one with the sign bit set) becomes Int.max, which the caller reads as "runs past the end".
        func sized(_ header: Int, _ n: Int) -> Int? { le(n).map { $0 < 0 || $0 > Int.max - header ? Int.max : header + $0 } }
        switch op {
        case 0x28, 0x2E, 0x30, 0x31, 0x32, 0x4E, 0x88, 0x89, 0x29, 0x74, 0x85, 0x86, 0x87, 0x5D, 0x6C, 0x7D, 0x64, 0x8F,
             0x91, 0x61, 0x65, 0x90, 0x73, 0x75, 0x94, 0x93, 0x52, 0x81, 0x92, 0x6F, 0x62, 0x51, 0x97, 0x98: return 0
        case 0x80, 0x4B, 0x71, 0x68, 0x82, 0x43, 0x55, 0x8C: return op == 0x43 || op == 0x55 || op == 0x8C ? sized(1, 1) : 1
        case 0x4D, 0x83: return 2
        case 0x4A, 0x72, 0x6A, 0x84: return 4
        case 0x47, 0x95: return 8
        case 0x8A: return sized(1, 1)
        case 0x8B, 0x54, 0x58, 0x42: return sized(4, 4)
        case 0x8D, 0x8E, 0x96: return sized(8, 8)
        case 0x49, 0x4C, 0x46, 0x53, 0x56, 0x70, 0x67, 0x50: return -1
        default: return nil
        }
    }

    // MARK: files

    /// Scans a file: bare pickle(s), zip archives (every member whose bytes look like a pickle, whatever its
    /// name), and .npy/.npz object arrays.
    public static func scanFile(path: String) throws -> [Finding] {
        let st = try Storage(mapping: path)
        let b = st.buffer
        let name = (path as NSString).lastPathComponent
        if b.count >= 4, b[0] == 0x50, b[1] == 0x4B, b[2] == 0x03 || b[2] == 0x05 {
            return try scanArchive(try ZipArchive(st))
        }
        let lower = name.lowercased()
        let named = pickleExtensions.contains { lower.hasSuffix($0) } || [".pkl.", ".pickle.", ".joblib."].contains { lower.contains($0) }
        if let kind = compression(b), let f = scanCompressed(b, kind: kind, member: name, nameSaysPickle: named) { return f }
        if b.count >= 2, !looksLikePickle(b), !(b[0] == 0x93 && b[1] == 0x4E), argLength(b[0], b, 1) != nil {
            // Any opcode can start a pickle, and numpy.load / legacy torch.load fall back to unpickling files
            // whose magic they don't recognise: scan, reporting only what imports.
            return scan(b, member: name, nested: 0, strong: false)
        }
        return scanBlob(b, member: name, nameSaysPickle: pickleExtensions.contains { name.lowercased().hasSuffix($0) })
    }

    /// Compressed pickles: joblib's `compress=` (zlib, gzip, bz2, lzma, xz) and `.pkl.gz`. Their loaders decompress
    /// and unpickle, so the bytes on disk say nothing: zlib and gzip are inflated (up to `maxInflated`) and scanned;
    /// the others, and streams past the limit, cannot be verified.
    static let maxInflated = 512 << 20
    static func compression(_ b: UnsafeRawBufferPointer) -> String? {
        guard b.count >= 6 else { return nil }
        if b[0] == 0x1F, b[1] == 0x8B, b[2] == 0x08 { return "gzip" }
        // zlib with a 32 KiB window (0x78), as joblib and zlib.compress write; other 0x?8 headers are ordinary
        // bytes far more often ("(S" opens a protocol-0 pickle).
        if b[0] == 0x78, (Int(b[0]) << 8 | Int(b[1])) % 31 == 0, b[1] & 0x20 == 0 { return "zlib" }
        if b[0] == 0xFD, b[1] == 0x37, b[2] == 0x7A, b[3] == 0x58, b[4] == 0x5A, b[5] == 0x00 { return "xz" }
        if b[0] == 0x42, b[1] == 0x5A, b[2] == 0x68, (0x31...0x39).contains(b[3]) { return "bz2" }
        if b[0] == 0x5D, b[1] == 0x00, b[2] == 0x00 { return "lzma" }
        return nil
    }

    /// nil when the bytes are not a stream of that kind after all (the caller scans them as they are).
    static func scanCompressed(_ b: UnsafeRawBufferPointer, kind: String, member: String, nameSaysPickle: Bool) -> [Finding]? {
        let cannot = nameSaysPickle ? Finding.Severity.high : .medium
        if kind == "gzip" || kind == "zlib" {
            // Up to 256× the compressed size (at least 16 MiB, at most 512 MiB): a compression bomb stops there.
            let cap = min(maxInflated, max(16 << 20, b.count.multipliedReportingOverflow(by: 256).overflow ? maxInflated : b.count * 256))
            guard let out = malloc(cap) else {
                return [Finding(severity: cannot, member: member, offset: 0, what: "compressed pickle",
                                detail: "\(kind) stream: no memory to inflate \(cap >> 20) MiB; its pickle cannot be verified")]
            }
            defer { free(out) }
            var n = 0
            let rc = wscan_inflate_auto(b.baseAddress!.assumingMemoryBound(to: UInt8.self), b.count, out.assumingMemoryBound(to: UInt8.self), cap, &n)
            let inflated = UnsafeRawBufferPointer(start: out, count: min(n, cap))
            // A compressed file that is not a pickle (table.csv.gz) is not one for anybody.
            if rc != 0 && n == 0 && !nameSaysPickle { return nil }    // not a \(kind) stream after all: bytes that start alike
            guard nameSaysPickle || inflated.first.map(isOpcode) == true else { return [] }
            // What inflated is scanned even when the stream breaks off or runs past the cap: a loader unpickles as
            // it inflates, so the imports before the break have run by the time it notices. joblib.load inflates
            // any file by its magic, so unnamed content is scanned too, for its imports only unless it opens with
            // PROTO.
            let strong = nameSaysPickle || looksLikePickle(inflated, strictOnly: true)
            var f = n > 0 ? scan(inflated, member: member + " (\(kind)-inflated)", nested: 0, strong: strong) : []
            if rc == -2 {
                f.append(Finding(severity: cannot, member: member, offset: 0, what: "compressed pickle",
                                 detail: "\(kind) stream inflates past \(cap >> 20) MiB: the rest of its pickle cannot be verified"))
            } else if rc != 0 {
                f.append(Finding(severity: cannot, member: member, offset: 0, what: "compressed pickle",
                                 detail: "\(kind) stream that breaks off after \(n) bytes (bad data or checksum): the rest cannot be verified"))
            }
            return f
        }
        guard nameSaysPickle else { return nil }
        return [Finding(severity: cannot, member: member, offset: 0, what: "compressed pickle",
                        detail: "\(kind)-compressed: a loader that decompresses (joblib) unpickles it; wscan cannot verify what it imports")]
    }

    /// File and member names whose loaders unpickle them whatever their first byte.
    static let pickleExtensions = [".pkl", ".pickle", ".joblib"]

    /// Members torch.load never unpickles (tensor storages, TorchScript source, text records): scanned only when
    /// they start with a PROTO opcode, so random tensor bytes are not read as a malformed pickle.
    static func isDataMember(_ name: String) -> Bool {
        let last = (name as NSString).lastPathComponent
        let parent = (FileRef.parentPath(name) as NSString).lastPathComponent
        if parent == "data", !last.isEmpty, last.allSatisfy(\.isNumber) { return true }
        return [".py", ".json", ".txt"].contains { last.hasSuffix($0) } || ["version", "byteorder", "serialization_id"].contains(last)
    }

    /// Scans every member of a zip archive.
    public static func scanArchive(_ z: ZipArchive, first: String? = nil) throws -> [Finding] {
        var out: [Finding] = []
        var entries = z.entries.filter { !$0.name.hasSuffix("/") }
        if let first, let k = entries.firstIndex(where: { $0.name == first }) { entries.insert(entries.remove(at: k), at: 0) }
        for e in entries {
            let c: (storage: Storage, offset: Int, fileOffset: Int?)
            do { c = try z.contents(e) } catch {
                // A member its loader unpickles (data.pkl, *.pkl, an .npy that may hold objects) that wscan cannot
                // read (bz2 or lzma in a zip, a damaged stream) cannot be verified.
                // (numpy.load unpickles an .npy member only with allow_pickle=True: medium.)
                let l = e.name.lowercased()
                let unpickled = pickleExtensions.contains { l.hasSuffix($0) } || l.hasSuffix("/data.pkl")
                let npy = l.hasSuffix(".npy")
                out.append(Finding(severity: unpickled ? .high : npy ? .medium : .low, member: e.name, offset: 0, what: "unreadable member",
                                   detail: "\(error)" + (unpickled || npy ? "; its loader may unpickle it: cannot be verified" : "")))
                continue
            }
            guard let slice = try? c.storage.slice(c.offset, c.storage === z.storage ? e.size : c.storage.count - c.offset) else { continue }
            let named = pickleExtensions.contains { e.name.lowercased().hasSuffix($0) }
            if !named, isDataMember(e.name), !looksLikePickle(slice, strictOnly: true) { continue }
            out += scanBlob(slice, member: e.name, nameSaysPickle: named)
        }
        return out
    }

    static func scanBlob(_ b: UnsafeRawBufferPointer, member: String, nameSaysPickle: Bool) -> [Finding] {
        if b.count >= 6, b[0] == 0x93, b[1] == 0x4E, b[2] == 0x55, b[3] == 0x4D, b[4] == 0x50, b[5] == 0x59 {
            // .npy: only arrays whose dtype holds objects carry a pickle, and numpy.load(allow_pickle=True) unpickles
            // every such dtype: 'O', 'object', '|O8', a structured dtype with an object field, a sub-array of objects.
            // The header text is read even where wscan's reader refuses the dtype.
            guard let span = NpyReader.headerSpan(b), span.dataOffset < b.count else { return [] }
            let payload = UnsafeRawBufferPointer(rebasing: b[span.dataOffset...])
            switch NpyReader.descrHoldsObject(span.text) {
            case true?: return scan(payload, member: member, nested: 0, strong: true)
            case false?: return []    // numpy unpickles only dtypes that hold objects
            case nil:
                // A header wscan cannot parse, which numpy might: the data is scanned for what it imports (any
                // protocol; a malformation alone is not reported, since the data may well be numbers).
                return payload.first.map(isOpcode) == true ? scan(payload, member: member, nested: 0, strong: false) : []   // any opcode can open a pickle
            }
        }
        // A member or file named as a pickle (data.pkl, *.pkl) is unpickled by its loader whatever its first
        // opcode (torch.load reads a data.pkl without PROTO): always scanned. Other bytes (tensor data) are scanned
        // when they start like a pickle.
        if nameSaysPickle || looksLikePickle(b) { return scan(b, member: member, nested: 0, strong: nameSaysPickle) }
        return []
    }

    /// The worst severity among findings (nil when there are none).
    public static func worst(_ f: [Finding]) -> Finding.Severity? { f.map(\.severity).max() }
}
