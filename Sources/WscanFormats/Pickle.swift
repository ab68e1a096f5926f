import Foundation

/// Passive pickle virtual machine (protocols 0–5). It builds a symbolic value graph and NEVER imports, calls or
/// executes anything: globals become `.global` nodes, REDUCE/NEWOBJ/INST/OBJ become `.call` nodes, BUILD becomes a
/// `.build` node. Values live in a flat arena (indices, not nested Swift values), so neither construction nor
/// destruction recurses; consumers walk the graph with their own depth bounds (cycles are possible: a list can
/// be appended to itself through the memo).
public struct PickleLimits: Sendable {
    public var maxStack = 1 << 20
    public var maxMemo = 1 << 20          // memo entries, and the largest memo index accepted
    public var maxContainerItems = 1 << 22
    public var maxNodes = 1 << 22
    public var maxDepth = 1000            // nesting depth of containers and calls, tracked at construction
    public var maxStringBytes = 1 << 29
    public var maxBigIntBytes = 1 << 12
    public var maxLineBytes = 1 << 16     // protocol-0 text lines (GLOBAL, INT, FLOAT, ...); STRING/UNICODE use maxStringBytes
    public init() {}
    public static let `default` = PickleLimits()
}

public enum PickleCallKind: String, Sendable { case reduce, newobj, newobjEx = "newobj_ex", inst, obj }

public enum PickleNode: Sendable {
    case none
    case bool(Bool)
    case int(Int)
    case bigInt([UInt8])                 // little-endian two's complement, beyond Int64
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case list(Int)                       // index into PickleGraph.lists (mutable)
    case tuple([Int])
    case dict(Int)                       // index into PickleGraph.dicts (mutable, insertion order)
    case set(Int)                        // index into PickleGraph.lists
    case frozenset([Int])
    case global(module: String, name: String)
    case call(PickleCallKind, callable: Int, args: Int)   // NEWOBJ_EX: args is a tuple (args, kwargs)
    case build(object: Int, state: Int)
    case persistentID(Int)
    case buffer(readonly: Bool)          // out-of-band buffer (protocol 5), recorded only
    case ext(Int)                        // extension-registry code (EXT1/2/4)
    case mark                            // never stored in a finished graph
}

/// Something the scanner wants to know about, with the byte offset of its opcode.
public struct PickleEvent: Sendable {
    public enum Kind: Sendable {
        case importGlobal(opcode: String)   // node is the .global
        case call(PickleCallKind)           // node is the .call
        case build                          // node is the .build
        case ext(Int)
        case buffer
        case persistentID
    }
    public var kind: Kind
    public var offset: Int
    public var node: Int
}

public struct PickleGraph: Sendable {
    public var nodes: [PickleNode] = []
    public var lists: [[Int]] = []
    public var dicts: [[(key: Int, value: Int)]] = []
    /// Items added by APPEND(S)/SETITEM(S) to objects that are not plain lists/dicts (OrderedDict(), custom classes).
    public var objectList: [Int: Int] = [:]     // node -> lists index
    public var objectDict: [Int: Int] = [:]     // node -> dicts index
    public var events: [PickleEvent] = []
    public var root: Int = -1
    public var start = 0
    public var end = 0                          // offset just past STOP
    public var proto = 0

    public subscript(_ i: Int) -> PickleNode { nodes[i] }

    /// Follows BUILD nodes to the object they update.
    public func unwrapBuild(_ i: Int) -> Int {
        var j = i, n = 0
        while case let .build(o, _) = nodes[j], n < 64 { j = o; n += 1 }
        return j
    }

    /// Key/value pairs of a dict node, or SETITEMS applied to an object (through BUILD wrappers).
    public func dictItems(_ i: Int) -> [(key: Int, value: Int)]? {
        var out: [(key: Int, value: Int)] = []
        var found = false
        var j = i, n = 0
        while n < 64 {
            if case let .dict(d) = nodes[j] { out += dicts[d]; found = true }
            if let d = objectDict[j] { out += dicts[d]; found = true }
            if case let .build(o, _) = nodes[j] { j = o; n += 1 } else { break }
        }
        return found ? out : nil
    }

    /// Items of a list/tuple node, or APPENDS applied to an object.
    public func sequenceItems(_ i: Int) -> [Int]? {
        switch nodes[i] {
        case let .tuple(t): return t
        case let .list(l): return lists[l]
        case let .frozenset(t): return t
        case let .set(l): return lists[l]
        default:
            if let l = objectList[unwrapBuild(i)] { return lists[l] }
            return nil
        }
    }

    public func string(_ i: Int) -> String? { if case let .string(s) = nodes[i] { return s }; return nil }
    public func int(_ i: Int) -> Int? {
        switch nodes[i] { case let .int(v): return v; case let .bool(b): return b ? 1 : 0; default: return nil }
    }
    public func tuple(_ i: Int) -> [Int]? {
        switch nodes[i] { case let .tuple(t): return t; case let .list(l): return lists[l]; default: return nil }
    }
    public func global(_ i: Int) -> (module: String, name: String)? {
        if case let .global(m, n) = nodes[i] { return (m, n) }; return nil
    }
}

/// The machine. `run` parses one pickle (up to and including STOP) starting at `start`.
public final class PickleVM {
    public private(set) var g = PickleGraph()
    let b: UnsafeRawBufferPointer
    let limits: PickleLimits
    var pos: Int
    var stack: [Int] = []
    var marks: [Int] = []
    var memo: [Int: Int] = [:]
    var depth: [Int32] = []
    let record: Bool
    var opStart = 0
    /// Set when the error was a resource limit rather than a malformed stream.
    public private(set) var limitExceeded = false

    public init(_ bytes: UnsafeRawBufferPointer, start: Int = 0, limits: PickleLimits = .default, recordEvents: Bool = false) {
        b = bytes; pos = start; self.limits = limits; record = recordEvents
        g.start = start
    }

    /// Parses one pickle from `bytes` and returns its graph (root = the value STOP returns).
    public static func parse(_ bytes: UnsafeRawBufferPointer, start: Int = 0, limits: PickleLimits = .default) throws -> PickleGraph {
        let vm = PickleVM(bytes, start: start, limits: limits)
        try vm.run()
        return vm.g
    }

    public var graph: PickleGraph { g }
    public var offset: Int { pos }

    // MARK: errors and input

    func fail(_ m: String) -> FormatError { FormatError(.pickle, "\(m) at offset \(opStart)") }
    func limit(_ m: String) -> FormatError { limitExceeded = true; return FormatError(.pickle, "\(m) at offset \(opStart)") }

    @inline(__always) func need(_ n: Int) throws {
        guard n >= 0, n <= b.count - pos else { throw fail("truncated stream (needs \(n) more bytes)") }
    }
    func u8() throws -> Int { try need(1); defer { pos += 1 }; return Int(b[pos]) }
    func u16() throws -> Int { try need(2); defer { pos += 2 }; return Int(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: pos, as: UInt16.self))) }
    func u32() throws -> Int { try need(4); defer { pos += 4 }; return Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: pos, as: UInt32.self))) }
    func i32() throws -> Int { try need(4); defer { pos += 4 }; return Int(Int32(littleEndian: b.loadUnaligned(fromByteOffset: pos, as: Int32.self))) }
    func u64() throws -> UInt64 { try need(8); defer { pos += 8 }; return UInt64(littleEndian: b.loadUnaligned(fromByteOffset: pos, as: UInt64.self)) }
    func raw(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n <= limits.maxStringBytes else { throw limit("string of \(n) bytes over the limit") }
        try need(n)
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: b[pos..<(pos + n)])
    }
    func line(max: Int? = nil) throws -> UnsafeRawBufferPointer {
        let cap = max ?? limits.maxLineBytes
        var j = pos
        while j < b.count, b[j] != 0x0A {
            j += 1
            if j - pos > cap { throw limit("text line longer than \(cap) bytes") }
        }
        guard j < b.count else { throw fail("truncated stream (unterminated line)") }
        let r = UnsafeRawBufferPointer(rebasing: b[pos..<j])
        pos = j + 1
        return r
    }
    func lineString(max: Int? = nil) throws -> String { String(decoding: try line(max: max), as: UTF8.self) }

    // MARK: arena

    func add(_ n: PickleNode, depth d: Int32 = 0) throws -> Int {
        guard g.nodes.count < limits.maxNodes else { throw limit("more than \(limits.maxNodes) values") }
        guard Int(d) <= limits.maxDepth else { throw limit("nesting deeper than \(limits.maxDepth)") }
        g.nodes.append(n); depth.append(d)
        return g.nodes.count - 1
    }
    func childDepth(_ items: [Int]) -> Int32 {
        var m: Int32 = 0
        for i in items where depth[i] > m { m = depth[i] }
        return m + 1
    }
    func push(_ i: Int) throws {
        guard stack.count < limits.maxStack else { throw limit("stack deeper than \(limits.maxStack)") }
        stack.append(i)
    }
    func pushNew(_ n: PickleNode, depth d: Int32 = 0) throws { try push(try add(n, depth: d)) }
    func pop() throws -> Int {
        guard let top = stack.last, stack.count > (marks.last ?? 0) else { throw fail("stack underflow") }
        stack.removeLast()
        return top
    }
    func top() throws -> Int {
        guard let t = stack.last, stack.count > (marks.last ?? 0) else { throw fail("stack underflow") }
        return t
    }
    func popMark() throws -> [Int] {
        guard let m = marks.popLast() else { throw fail("no MARK on the stack") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }
    func event(_ k: PickleEvent.Kind, _ node: Int) {
        if record { g.events.append(PickleEvent(kind: k, offset: opStart, node: node)) }
    }
    func memoPut(_ key: Int) throws {
        guard key >= 0, key < limits.maxMemo else { throw limit("memo index \(key) over the limit") }
        guard let t = stack.last, stack.count > (marks.last ?? 0) else { throw fail("memo put with empty stack") }
        if memo[key] == nil, memo.count >= limits.maxMemo { throw limit("more than \(limits.maxMemo) memo entries") }
        memo[key] = t
    }
    func memoGet(_ key: Int) throws {
        guard let v = memo[key] else { throw fail("memo key \(key) missing") }
        try push(v)
    }

    func appendItems(to target: Int, _ items: [Int]) throws {
        let li: Int
        switch g.nodes[target] {
        case let .list(l): li = l
        case let .set(l): li = l
        case .bytes, .buffer: return   // bytearray.append(int): nothing to keep
        case .tuple, .dict, .frozenset, .none, .bool, .int, .bigInt, .float, .string, .mark, .persistentID:
            throw fail("APPEND to a non-list value")
        default:
            if let l = g.objectList[target] { li = l } else { li = g.lists.count; g.lists.append([]); g.objectList[target] = li }
        }
        guard g.lists[li].count + items.count <= limits.maxContainerItems else { throw limit("container over \(limits.maxContainerItems) items") }
        g.lists[li].append(contentsOf: items)
        let d = childDepth(items)
        if d > depth[target] {
            guard Int(d) <= limits.maxDepth else { throw limit("nesting deeper than \(limits.maxDepth)") }
            depth[target] = d
        }
    }

    func setItems(on target: Int, _ kv: [Int]) throws {
        guard kv.count % 2 == 0 else { throw fail("SETITEMS with an odd number of items") }
        let di: Int
        switch g.nodes[target] {
        case let .dict(d): di = d
        case let .list(l):
            // list[k] = v is valid Python: the values stay reachable (kept as elements) for the scanner.
            var k = 1
            while k < kv.count { g.lists[l].append(kv[k]); k += 2 }
            return
        case .tuple, .set, .frozenset, .none, .bool, .int, .bigInt, .float, .string, .bytes, .mark, .persistentID, .buffer:
            throw fail("SETITEM on a non-dict value")
        default:
            if let d = g.objectDict[target] { di = d } else { di = g.dicts.count; g.dicts.append([]); g.objectDict[target] = di }
        }
        guard g.dicts[di].count + kv.count / 2 <= limits.maxContainerItems else { throw limit("container over \(limits.maxContainerItems) items") }
        var k = 0
        while k < kv.count { g.dicts[di].append((kv[k], kv[k + 1])); k += 2 }
        let d = childDepth(kv)
        if d > depth[target] {
            guard Int(d) <= limits.maxDepth else { throw limit("nesting deeper than \(limits.maxDepth)") }
            depth[target] = d
        }
    }

    func makeGlobal(_ module: String, _ name: String, opcode: String) throws -> Int {
        let n = try add(.global(module: module, name: name))
        event(.importGlobal(opcode: opcode), n)
        return n
    }

    func makeCall(_ kind: PickleCallKind, _ callable: Int, _ args: Int) throws -> Int {
        let n = try add(.call(kind, callable: callable, args: args), depth: childDepth([callable, args]))
        event(.call(kind), n)
        return n
    }

    // MARK: run

    public func run() throws {
        while true {
            opStart = pos
            let op = try u8()
            switch op {
            case 0x80: // PROTO
                let v = try u8()
                guard v <= 5 else { throw fail("unsupported protocol \(v)") }
                g.proto = v
            case 0x95: // FRAME
                let n = try u64()
                guard n <= UInt64(b.count - pos) else { throw fail("FRAME of \(n) bytes runs past the end") }
            case 0x2E: // STOP
                let r = try pop()
                g.root = r; g.end = pos
                return
            case 0x28: // MARK
                guard marks.count < limits.maxStack else { throw limit("too many MARKs") }
                marks.append(stack.count)
            case 0x30: // POP
                if let m = marks.last, m == stack.count { marks.removeLast() } else { _ = try pop() }
            case 0x31: _ = try popMark() // POP_MARK
            case 0x32: try push(try top()) // DUP
            case 0x4E: try pushNew(.none)
            case 0x88: try pushNew(.bool(true))
            case 0x89: try pushNew(.bool(false))
            case 0x4B: try pushNew(.int(try u8()))        // BININT1
            case 0x4D: try pushNew(.int(try u16()))       // BININT2
            case 0x4A: try pushNew(.int(try i32()))       // BININT
            case 0x8A: try pushNew(try long(try u8()))    // LONG1
            case 0x8B: // LONG4
                let n = try i32()
                guard n >= 0 else { throw fail("negative LONG4 length") }
                try pushNew(try long(n))
            case 0x49: // INT
                let s = try lineString()
                if s == "00" { try pushNew(.bool(false)) } else if s == "01" { try pushNew(.bool(true)) }
                else { try pushNew(try decimal(s)) }
            case 0x4C: // LONG
                var s = try lineString()
                if s.hasSuffix("L") { s.removeLast() }
                try pushNew(try decimal(s))
            case 0x46: // FLOAT
                let s = try lineString().trimmingCharacters(in: .whitespaces)
                guard let d = Double(s) ?? pyFloat(s) else { throw fail("bad FLOAT literal") }
                try pushNew(.float(d))
            case 0x47: // BINFLOAT (big-endian)
                let v = try u64()
                try pushNew(.float(Double(bitPattern: v.byteSwapped)))  // u64() read it little-endian
            case 0x53: // STRING (repr, quoted)
                let l = try line(max: limits.maxStringBytes)
                try pushNew(.string(try unrepr(l)))
            case 0x54: // BINSTRING
                let n = try i32()
                guard n >= 0 else { throw fail("negative BINSTRING length") }
                try pushNew(.string(latin1(try raw(n))))
            case 0x55: try pushNew(.string(latin1(try raw(try u8())))) // SHORT_BINSTRING
            case 0x56: // UNICODE (raw-unicode-escape)
                let l = try line(max: limits.maxStringBytes)
                try pushNew(.string(rawUnicodeEscape(l)))
            case 0x58: try pushNew(.string(utf8(try raw(try u32())))) // BINUNICODE
            case 0x8C: try pushNew(.string(utf8(try raw(try u8())))) // SHORT_BINUNICODE
            case 0x8D: try pushNew(.string(utf8(try raw(try len64())))) // BINUNICODE8
            case 0x42: try pushNew(.bytes(Array(try raw(try u32())))) // BINBYTES
            case 0x43: try pushNew(.bytes(Array(try raw(try u8())))) // SHORT_BINBYTES
            case 0x8E: try pushNew(.bytes(Array(try raw(try len64())))) // BINBYTES8
            case 0x96: try pushNew(.bytes(Array(try raw(try len64())))) // BYTEARRAY8
            case 0x97: // NEXT_BUFFER
                let n = try add(.buffer(readonly: false))
                event(.buffer, n); try push(n)
            case 0x98: _ = try top() // READONLY_BUFFER: no-op on the top value
            case 0x29: try pushNew(.tuple([])) // EMPTY_TUPLE
            case 0x74: let items = try popMark(); try pushNew(.tuple(items), depth: childDepth(items)) // TUPLE
            case 0x85: let a = try pop(); try pushNew(.tuple([a]), depth: childDepth([a]))
            case 0x86: let b2 = try pop(); let a = try pop(); try pushNew(.tuple([a, b2]), depth: childDepth([a, b2]))
            case 0x87:
                let c = try pop(); let b2 = try pop(); let a = try pop()
                try pushNew(.tuple([a, b2, c]), depth: childDepth([a, b2, c]))
            case 0x5D: // EMPTY_LIST
                g.lists.append([]); try pushNew(.list(g.lists.count - 1))
            case 0x6C: // LIST
                let items = try popMark()
                g.lists.append(items); try pushNew(.list(g.lists.count - 1), depth: childDepth(items))
            case 0x7D: // EMPTY_DICT
                g.dicts.append([]); try pushNew(.dict(g.dicts.count - 1))
            case 0x64: // DICT
                let items = try popMark()
                g.dicts.append([]); let n = try add(.dict(g.dicts.count - 1))
                try setItems(on: n, items); try push(n)
            case 0x8F: // EMPTY_SET
                g.lists.append([]); try pushNew(.set(g.lists.count - 1))
            case 0x91: let items = try popMark(); try pushNew(.frozenset(items), depth: childDepth(items)) // FROZENSET
            case 0x61: let v = try pop(); try appendItems(to: try top(), [v]) // APPEND
            case 0x65: let items = try popMark(); try appendItems(to: try top(), items) // APPENDS
            case 0x90: // ADDITEMS
                let items = try popMark(); let t = try top()
                guard case .set = g.nodes[t] else { throw fail("ADDITEMS on a non-set value") }
                try appendItems(to: t, items)
            case 0x73: let v = try pop(); let k = try pop(); try setItems(on: try top(), [k, v]) // SETITEM
            case 0x75: let items = try popMark(); try setItems(on: try top(), items) // SETITEMS
            case 0x70: // PUT
                guard let k = Int(try lineString().trimmingCharacters(in: .whitespaces)) else { throw fail("bad PUT index") }
                try memoPut(k)
            case 0x71: try memoPut(try u8())      // BINPUT
            case 0x72: try memoPut(try u32())     // LONG_BINPUT
            case 0x94: try memoPut(memo.count)   // MEMOIZE
            case 0x67: // GET
                guard let k = Int(try lineString().trimmingCharacters(in: .whitespaces)) else { throw fail("bad GET index") }
                try memoGet(k)
            case 0x68: try memoGet(try u8())      // BINGET
            case 0x6A: try memoGet(try u32())     // LONG_BINGET
            case 0x63: // GLOBAL
                let m = try lineString(); let n = try lineString()
                try push(try makeGlobal(m, n, opcode: "GLOBAL"))
            case 0x93: // STACK_GLOBAL
                let n = try pop(); let m = try pop()
                if let ms = g.string(m), let ns = g.string(n) {
                    try push(try makeGlobal(ms, ns, opcode: "STACK_GLOBAL"))
                } else {
                    // Python accepts any str the pickle computes (builtins.str(b'os', 'latin1')): an import nobody can
                    // name in advance, reported as such.
                    try push(try makeGlobal(PickleScanner.computedModule, "\(g.describe(m)) . \(g.describe(n))", opcode: "STACK_GLOBAL"))
                }
            case 0x82, 0x83, 0x84: // EXT1/2/4
                let code = op == 0x82 ? try u8() : op == 0x83 ? try u16() : try i32()
                let n = try add(.ext(code)); event(.ext(code), n); try push(n)
            case 0x52: // REDUCE
                let args = try pop(); let f = try pop()
                try push(try makeCall(.reduce, f, args))
            case 0x81: // NEWOBJ
                let args = try pop(); let cls = try pop()
                try push(try makeCall(.newobj, cls, args))
            case 0x92: // NEWOBJ_EX
                let kw = try pop(); let args = try pop(); let cls = try pop()
                let t = try add(.tuple([args, kw]), depth: childDepth([args, kw]))
                try push(try makeCall(.newobjEx, cls, t))
            case 0x69: // INST
                let m = try lineString(); let n = try lineString()
                let items = try popMark()
                let gl = try makeGlobal(m, n, opcode: "INST")
                let t = try add(.tuple(items), depth: childDepth(items))
                try push(try makeCall(.inst, gl, t))
            case 0x6F: // OBJ
                var items = try popMark()
                guard !items.isEmpty else { throw fail("OBJ without a class") }
                let cls = items.removeFirst()
                let t = try add(.tuple(items), depth: childDepth(items))
                try push(try makeCall(.obj, cls, t))
            case 0x62: // BUILD
                let state = try pop()
                let obj = try top()
                // Keep the object's identity (memo references) by moving its old value to a fresh node.
                let moved = try add(g.nodes[obj], depth: depth[obj])
                if let l = g.objectList.removeValue(forKey: obj) { g.objectList[moved] = l }
                if let d = g.objectDict.removeValue(forKey: obj) { g.objectDict[moved] = d }
                g.nodes[obj] = .build(object: moved, state: state)
                let d = max(depth[obj], childDepth([moved, state]))
                guard Int(d) <= limits.maxDepth else { throw limit("nesting deeper than \(limits.maxDepth)") }
                depth[obj] = d
                event(.build, obj)
                try skipJoblibArray(moved, state)
            case 0x50: // PERSID
                let s = try add(.string(try lineString()))
                let n = try add(.persistentID(s), depth: 1); event(.persistentID, n); try push(n)
            case 0x51: // BINPERSID
                let v = try pop()
                let n = try add(.persistentID(v), depth: childDepth([v])); event(.persistentID, n); try push(n)
            default:
                throw fail(String(format: "unknown opcode 0x%02x", op))
            }
        }
    }

    func len64() throws -> Int {
        let n = try u64()
        guard n <= UInt64(Int.max) else { throw fail("length \(n) too large") }
        return Int(n)
    }

    // MARK: numbers and strings

    func long(_ n: Int) throws -> PickleNode {
        guard n <= limits.maxBigIntBytes else { throw limit("integer of \(n) bytes over the limit") }
        let r = try raw(n)
        if n == 0 { return .int(0) }
        if n <= 8 {
            var v: UInt64 = 0
            for k in 0..<n { v |= UInt64(r[k]) << (8 * UInt64(k)) }
            if n < 8, r[n - 1] & 0x80 != 0 { v |= ~UInt64(0) << (8 * UInt64(n)) }
            return .int(Int(Int64(bitPattern: v)))
        }
        // Fits if the extra bytes are pure sign extension.
        let sign: UInt8 = r[7] & 0x80 != 0 ? 0xFF : 0
        if r[8..<n].allSatisfy({ $0 == sign }) {
            var v: UInt64 = 0
            for k in 0..<8 { v |= UInt64(r[k]) << (8 * UInt64(k)) }
            return .int(Int(Int64(bitPattern: v)))
        }
        return .bigInt(Array(r))
    }

    func decimal(_ s0: String) throws -> PickleNode {
        // Python's int(s, 0), as INT and LONG read their text: surrounding spaces, `_` between digits, 0x/0o/0b.
        var s = s0.trimmingCharacters(in: .whitespaces)
        if s.contains("_") { s = s.replacingOccurrences(of: "_", with: "") }
        if let v = Int(s) { return .int(v) }
        do {
            var body = Substring(s), neg = false
            if body.hasPrefix("-") { neg = true; body = body.dropFirst() } else if body.hasPrefix("+") { body = body.dropFirst() }
            let radix = [("0x", 16), ("0X", 16), ("0o", 8), ("0O", 8), ("0b", 2), ("0B", 2)].first { body.hasPrefix($0.0) }
            if let (p, r) = radix {
                guard let v = UInt64(body.dropFirst(p.count), radix: r) else { throw limit("integer literal out of range") }
                guard v <= UInt64(Int.max) else { throw limit("integer literal out of range") }
                return .int(neg ? -Int(v) : Int(v))
            }
        }
        var digits = Substring(s)
        var neg = false
        if digits.hasPrefix("-") { neg = true; digits = digits.dropFirst() } else if digits.hasPrefix("+") { digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { throw fail("bad integer literal") }
        guard digits.count <= limits.maxBigIntBytes * 3 else { throw limit("integer literal too long") }
        // magnitude in little-endian base 256
        var mag: [UInt8] = [0]
        for ch in digits.utf8 {
            var carry = Int(ch - 48)
            for k in 0..<mag.count { let v = Int(mag[k]) * 10 + carry; mag[k] = UInt8(v & 0xFF); carry = v >> 8 }
            while carry > 0 { mag.append(UInt8(carry & 0xFF)); carry >>= 8 }
        }
        mag.append(0) // sign byte
        if neg { // two's complement
            var carry = 1
            for k in 0..<mag.count { let v = Int(~mag[k]) + carry; mag[k] = UInt8(v & 0xFF); carry = v >> 8 }
        }
        return .bigInt(mag)
    }

    func pyFloat(_ s: String) -> Double? {
        switch s.lowercased() { case "inf": return .infinity; case "-inf": return -.infinity; case "nan": return .nan; default: return nil }
    }

    func utf8(_ r: UnsafeRawBufferPointer) -> String { String(decoding: r, as: UTF8.self) }
    func latin1(_ r: UnsafeRawBufferPointer) -> String {
        if r.allSatisfy({ $0 < 0x80 }) { return String(decoding: r, as: UTF8.self) }
        var s = String.UnicodeScalarView()
        for c in r { s.append(Unicode.Scalar(c)) }
        return String(s)
    }

    /// Protocol-0 STRING: a quoted Python 2 repr with backslash escapes.
    func unrepr(_ l: UnsafeRawBufferPointer) throws -> String {
        var a = Array(l)
        while let last = a.last, last == 0x0D || last == 0x20 { a.removeLast() }
        guard a.count >= 2, a[0] == a[a.count - 1], a[0] == 0x27 || a[0] == 0x22 else { throw fail("STRING is not quoted") }
        let body = a[1..<(a.count - 1)]
        var out: [UInt8] = []
        out.reserveCapacity(body.count)
        var i = body.startIndex
        func hexv(_ c: UInt8) -> Int? {
            switch c { case 48...57: return Int(c) - 48; case 65...70: return Int(c) - 55; case 97...102: return Int(c) - 87; default: return nil }
        }
        while i < body.endIndex {
            let c = body[i]; i += 1
            guard c == 0x5C, i < body.endIndex else { out.append(c); continue }
            let e = body[i]; i += 1
            switch e {
            case 0x6E: out.append(0x0A); case 0x72: out.append(0x0D); case 0x74: out.append(0x09)
            case 0x61: out.append(7); case 0x62: out.append(8); case 0x66: out.append(12); case 0x76: out.append(11)
            case 0x0A: break
            case 0x78:
                guard i + 1 < body.endIndex, let h = hexv(body[i]), let l2 = hexv(body[i + 1]) else { throw fail("bad \\x escape in STRING") }
                out.append(UInt8(h * 16 + l2)); i += 2
            case 48...55:
                var v = Int(e) - 48; var k = 0
                while k < 2, i < body.endIndex, (48...55).contains(body[i]) { v = v * 8 + Int(body[i]) - 48; i += 1; k += 1 }
                out.append(UInt8(v & 0xFF))
            default: out.append(e)
            }
        }
        return out.withUnsafeBytes { latin1($0) }
    }

    /// Protocol-0 UNICODE: raw-unicode-escape (\uXXXX and \UXXXXXXXX, other bytes latin-1).
    func rawUnicodeEscape(_ l: UnsafeRawBufferPointer) -> String {
        var s = String.UnicodeScalarView()
        var i = 0
        let a = Array(l)
        while i < a.count {
            if a[i] == 0x5C, i + 1 < a.count, a[i + 1] == 0x75 || a[i + 1] == 0x55 {
                let w = a[i + 1] == 0x75 ? 4 : 8
                if i + 2 + w <= a.count, let v = UInt32(String(decoding: a[(i + 2)..<(i + 2 + w)], as: UTF8.self), radix: 16) {
                    s.append(Unicode.Scalar(v) ?? "\u{FFFD}"); i += 2 + w; continue
                }
            }
            s.append(Unicode.Scalar(a[i])); i += 1
        }
        return String(s)
    }

    // MARK: joblib

    /// joblib writes a NumpyArrayWrapper's array bytes straight into the stream after its BUILD; skip them.
    func skipJoblibArray(_ obj: Int, _ state: Int) throws {
        guard case let .call(_, callable, _) = g.nodes[obj], let gl = g.global(callable),
              gl.name == "NumpyArrayWrapper", gl.module.hasSuffix("numpy_pickle"),
              let items = g.dictItems(state) else { return }
        var shape: [Int] = [], itemsize = 0, mmap = false, objectDtype = false
        for (k, v) in items {
            switch g.string(k) {
            case "shape":
                guard let t = g.tuple(v) else { throw fail("joblib array without a shape") }
                for d in t { guard let x = g.int(d), x >= 0 else { throw fail("bad joblib shape") }; shape.append(x) }
            case "allow_mmap": mmap = g.int(v) == 1
            case "dtype":
                let base = g.unwrapBuild(v)
                if case let .call(_, _, a) = g.nodes[base], let t = g.tuple(a), let first = t.first, let s = g.string(first) {
                    if s.contains("O") { objectDtype = true }
                    // numpy.dtype.__reduce__ gives ('U4', …) for 4 characters of 4 bytes: the digits are not always bytes.
                    let code = s.drop { "<>|=".contains($0) }
                    let digits = Int(code.filter { $0.isNumber }) ?? 0
                    itemsize = code.first == "U" ? digits.multipliedSaturating(by: 4) : digits   // (hostile sizes)
                    if s.hasPrefix("b") || s == "?" || s.hasPrefix("|b") { itemsize = max(itemsize, 1) }
                }
                // The BUILD state (version, byte order, subarray, names, fields, elsize, alignment, flags): elsize is
                // the item size of structured and flexible dtypes; flag 1 (NPY_ITEM_REFCOUNT) means the dtype holds
                // objects anywhere (a structured field, a sub-array), which joblib writes as a nested pickle.
                if case let .build(_, st) = g.nodes[v], let state = g.tuple(st) {
                    if state.count > 5, let el = g.int(state[5]), el > 0 { itemsize = el }
                    if state.count > 7, let flags = g.int(state[7]), flags & 1 != 0 { objectDtype = true }   // NPY_ITEM_REFCOUNT
                }
            default: break
            }
        }
        if objectDtype {
            // The array follows as a nested pickle: parse it passively and continue after its STOP.
            let sub = PickleVM(b, start: pos, limits: limits, recordEvents: record)
            do { try sub.run() } catch { throw fail("joblib object array: \(error)") }
            if record {
                for e in sub.g.events { // re-home the nested imports so the scanner sees them
                    guard case .importGlobal = e.kind, case let .global(m, n) = sub.g.nodes[e.node] else { continue }
                    let k = try add(.global(module: m, name: n))
                    g.events.append(PickleEvent(kind: e.kind, offset: e.offset, node: k))
                }
            }
            pos = sub.pos
            return
        }
        guard itemsize > 0, let n = elementCount(shape) else { throw fail("joblib array with an unknown dtype") }
        if mmap { let pad = try u8(); try need(pad); pos += pad }
        let (bytes, o) = n.multipliedReportingOverflow(by: itemsize)
        guard !o else { throw fail("joblib array size overflows") }
        try need(bytes)
        pos += bytes
    }
}

extension PickleGraph {
    /// Short printable description of a node (bounded length and depth), for metadata and findings.
    public func describe(_ i: Int, depth: Int = 0) -> String {
        guard i >= 0, i < nodes.count else { return "?" }
        if depth > 4 { return "…" }
        func seq(_ items: [Int], _ open: String, _ close: String) -> String {
            let parts = items.prefix(8).map { describe($0, depth: depth + 1) }
            return open + parts.joined(separator: ", ") + (items.count > 8 ? ", …" : "") + close
        }
        switch nodes[i] {
        case .none: return "None"
        case let .bool(v): return v ? "True" : "False"
        case let .int(v): return String(v)
        case let .bigInt(v): return "0x" + v.reversed().map { String(format: "%02x", $0) }.joined()
        case let .float(v): return String(v)
        case let .string(s): return s.count > 80 ? "'\(s.prefix(80))…'" : "'\(s)'"
        case let .bytes(v): return "b<\(v.count) bytes>"
        case let .list(l): return seq(lists[l], "[", "]")
        case let .tuple(t): return seq(t, "(", ")")
        case let .dict(d): return "{\(dicts[d].count) items}"
        case let .set(l): return seq(lists[l], "{", "}")
        case let .frozenset(t): return seq(t, "frozenset({", "})")
        case let .global(m, n): return "\(m).\(n)"
        case let .call(_, c, a): return describe(c, depth: depth + 1) + describe(a, depth: depth + 1)
        case let .build(o, _): return describe(o, depth: depth + 1)
        case let .persistentID(p): return "persid" + describe(p, depth: depth + 1)
        case .buffer: return "<buffer>"
        case let .ext(c): return "<ext \(c)>"
        case .mark: return "<mark>"
        }
    }
}
