import Foundation
import WscanFormats
import WscanKernels
import WscanAnalysis

/// Orchestrates `wscan compare` and `wscan lineage`: opens both checkpoints, gathers evidence, runs the
/// independence test and (when needed or asked) the alignment and connectivity, and stores the result.
public enum CompareRunner {
    public struct Options: Sendable {
        public var align: AlignMode = .auto
        public var evaluator: Evaluator? = nil
        public var grid = 25
        public var seed: UInt64 = 0
        public var writeAligned: String? = nil
        public var connectivity = true
        /// Bytes the decoded weights of both sides may take (nil: half the RAM). Above it the comparison is bounded:
        /// tensor pairs one at a time, the independence test on the feed-forward groups that fit, no alignment and
        /// no connectivity (see `boundedCompare`).
        public var memoryBudget: Int? = nil
        /// Load tensors from pickle files the scanner flags (--trust; still executes nothing).
        public var trust = false
        public init() {}
    }
    public enum AlignMode: String, Sendable { case auto, always, never }

    /// Reads num_attention_heads from a config.json beside the checkpoint, if there is one.
    public static func headCount(near path: String) -> Int? {
        let p = (FileRef.parentPath(path) as NSString).appendingPathComponent("config.json")
        guard let d = FileManager.default.contents(atPath: p), d.count < 10_000_000,
              let j = try? JSONSerialization.jsonObject(with: d) as? [String: Any] else { return nil }
        return (j["num_attention_heads"] as? Int) ?? (j["n_head"] as? Int)
    }

    /// Architectures whose q/k rows convert_hf_to_gguf.py permutes (LlamaModel.permute and its subclasses).
    static let ropePermuted: Set<String> = ["llama", "mistral", "mixtral", "granite", "granitemoe", "deci", "plamo"]

    /// The head count the converter permuted a GGUF tensor's rows with (head_count for attn_q, head_count_kv for
    /// attn_k), or nil for any other tensor or architecture.
    static func ropeHeads(_ ck: Checkpoint, _ t: TensorInfo) -> Int? {
        guard let arch = ck.metadata["general.architecture"], ropePermuted.contains(arch), t.shape.count == 2 else { return nil }
        let isQ = t.name.hasSuffix(".attn_q.weight"), isK = t.name.hasSuffix(".attn_k.weight")
        guard isQ || isK, let hq = ck.metadata["\(arch).attention.head_count"].flatMap({ Int($0) }), hq > 0 else { return nil }
        let h = isK ? (ck.metadata["\(arch).attention.head_count_kv"].flatMap { Int($0) } ?? hq) : hq
        guard h > 0, t.shape[0] % (2 * h) == 0 else { return nil }
        return h
    }

    /// Undoes LlamaModel.permute: w.reshape(h, 2, rows/h/2, cols).swapaxes(1, 2) — GGUF row (g, i, j) is HF row (g, j, i).
    static func unpermuteRope(_ v: [Float], shape: [Int], heads h: Int) -> [Float] {
        let rows = shape[0], cols = shape[1], half = rows / h / 2
        guard v.count == rows * cols else { return v }
        var out = [Float](repeating: 0, count: v.count)
        for g in 0..<h { for i in 0..<half { for j in 0..<2 {
            let src = (g * 2 * half + i * 2 + j) * cols, dst = (g * 2 * half + j * half + i) * cols
            for c in 0..<cols { out[dst + c] = v[src + c] }
        } } }
        return out
    }

    /// Stores a comparison under the options it depends on.
    static func storeResult(_ result: CompareResult, catalog: Catalog, a rowA: CheckpointRow, b rowB: CheckpointRow, options: Options) throws {
        struct P: Encodable { var align: String; var evaluator: String?; var grid: Int; var seed: UInt64 }
        try catalog.storeResult(kind: "compare", checkpoint: rowA.id, other: rowB.id,
                                params: P(align: options.align.rawValue, evaluator: options.evaluator?.description, grid: options.grid, seed: options.seed),
                                summary: "\(result.verdict.kind): \(result.verdict.summary)", data: result, analysed: [rowA, rowB])
    }

    /// Why `what` cannot run within the memory budget.
    public static func overBudget(_ what: String, need: Int, budget: Int) -> String {
        "\(what) needs both models in memory: their decoded weights would take \(sizePair(need, budget)) (--memory raises it)"
    }

    /// "8.20 GiB, over the memory budget of 3.00 GiB", in bytes where the two would print alike.
    static func sizePair(_ need: Int, _ budget: Int) -> String {
        let (n, b) = ByteSize.format(need) == ByteSize.format(budget) ? ("\(need) bytes", "\(budget) bytes") : (ByteSize.format(need), ByteSize.format(budget))
        return "\(n), over the memory budget of \(b)"
    }

    /// The bytes a comparison of A and B would decode (their paired floating-point tensors), from the headers.
    public static func decodedNeed(a: CheckpointRow, b: CheckpointRow, trust: Bool = false) throws -> Int {
        let ckA = try CheckpointOpener.openNamed(a.path, options: .init(trust: trust)), ckB = try CheckpointOpener.openNamed(b.path, options: .init(trust: trust))
        let f = { (c: Checkpoint) in c.tensors.filter { $0.dtype.isFloatingPoint && $0.dtype.decodable } }
        return decodedBytes(Comparator.matchTensors(f(ckA), f(ckB)).pairs)
    }

    public struct CompareError: Error, CustomStringConvertible {
        public let description: String
        init(_ s: String) { description = s }
    }

    /// Bytes the decoded float32 values of both sides of `pairs` take (saturating).
    static func decodedBytes(_ pairs: [(TensorInfo, TensorInfo, String)]) -> Int {
        pairs.reduce(0) { $0.addingSaturating($1.0.elementCount.addingSaturating($1.1.elementCount).multipliedSaturating(by: 4)) }
    }

    /// NaN/±Inf weights have no place in a similarity: the permutation analyses see them as 0, and a note says so.
    static func finite(_ w: WeightSet, _ side: String) -> (WeightSet, [String]) {
        var out = w, notes: [String] = []
        for n in w.names {
            let v = w.values[n]!
            let bad = v.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
            guard bad > 0 else { continue }
            out.values[n] = v.map { $0.isFinite ? $0 : 0 }
            notes.append("\(side) \(n): \(bad) NaN/±Inf weights read as 0 for the permutation analyses")
        }
        return (out, notes)
    }

    /// One pair's values in A's layout: B stored transposed is transposed back (a square one when its transpose is
    /// what matches A, and then `how` says so), and a llama.cpp GGUF side's q/k rows are put back in Hugging Face
    /// order when the other side is not GGUF (`rope` names that side).
    static func decodePair(_ ta: TensorInfo, _ tb: TensorInfo, how: String, ckA: Checkpoint, ckB: Checkpoint,
                           valuesA: (TensorInfo) throws -> [Float], valuesB: (TensorInfo) throws -> [Float]) throws
        -> (a: [Float], b: [Float], how: String, rope: String?) {
        var va = try valuesA(ta), vb = try valuesB(tb), how = how, rope: String? = nil
        if Comparator.isTransposed(how) { vb = Comparator.transpose(vb, rows: tb.shape[0], cols: tb.shape[1]) }
        else if how == "name" || how == "shape+position", ta.shape.count == 2, ta.shape[0] == ta.shape[1], Comparator.looksTransposed(va, vb, side: ta.shape[0]) {
            vb = Comparator.transpose(vb, rows: ta.shape[0], cols: ta.shape[1])
            how = how == "name" ? Comparator.transposedMatch : Comparator.transposedByPosition
        }
        // Only against a Hugging Face layout (q_proj/k_proj names): a GGUF exported to safetensors keeps its order.
        func hf(_ n: String) -> Bool { n.hasSuffix("q_proj.weight") || n.hasSuffix("k_proj.weight") }
        if ckA.format == .gguf, ckB.format != .gguf, hf(tb.name), let h = ropeHeads(ckA, ta) { va = unpermuteRope(va, shape: ta.shape, heads: h); rope = "A" }
        if ckB.format == .gguf, ckA.format != .gguf, hf(ta.name), let h = ropeHeads(ckB, tb) { vb = unpermuteRope(vb, shape: tb.shape, heads: h); rope = "B" }
        return (va, vb, how, rope)
    }

    static func ropeNote(_ side: String) -> String {
        "\(side) is a llama.cpp GGUF: its q/k projection rows were put back in Hugging Face order (the converter permutes them for RoPE)"
    }

    /// Why an architecture with an independence test got none: the layers that were read cannot reach the threshold.
    static func narrowLayers(_ eligible: Int) -> String {
        "its feed-forward layers (\(eligible)) are too few or too narrow for it to reach p < \(IndependenceTest.defaultThreshold)"
    }

    /// The evidence of one pair (values in A's layout, as `decodePair` gives them).
    static func pairEvidence(_ ta: TensorInfo, _ tb: TensorInfo, how: String, a va0: [Float], b vb0: [Float],
                             hashA: String?, hashB: String?) throws -> TensorEvidence {
        var shape = ta.shape, va = va0, vb = vb0
        // A quantized B stored transposed: judged in B's own layout, where its blocks of 32 run (the difference's
        // spectrum and the other measures do not depend on the layout)
        if Comparator.isTransposed(how), tb.dtype.block != nil, shape.count == 2 {
            va = Comparator.transpose(va, rows: shape[0], cols: shape[1]); vb = Comparator.transpose(vb, rows: shape[0], cols: shape[1])
            shape = [shape[1], shape[0]]
        }
        var e = try Comparator.evidence(name: ta.name, nameB: tb.name, matchedBy: how, shape: shape, dtypeA: ta.dtype, dtypeB: tb.dtype,
                                        hashA: hashA, hashB: hashB, a: va, b: vb)
        e.shape = ta.shape
        return e
    }

    /// The comparison of two models whose decoded weights would not fit the memory budget: pairs are decoded and
    /// judged one per core at a time; the independence test runs on the first feed-forward groups whose tensors fit
    /// the budget (in a transformer each block's group stands alone, so a prefix of the blocks is a smaller test of
    /// the same question); the alignment (which needs every group at once) and the connectivity path are not run,
    /// and notes say so. Asking for them explicitly (--align, --write-aligned, an evaluator) is an error.
    static func boundedCompare(catalog: Catalog, a rowA: CheckpointRow, b rowB: CheckpointRow, ckA: Checkpoint, ckB: Checkpoint,
                               pairs pairs0: [(TensorInfo, TensorInfo, String)], onlyA: [String], onlyB: [String],
                               hashA: [String: String], hashB: [String: String], options: Options, need: Int, budget: Int,
                               store: Bool) throws -> CompareResult {
        if options.align == .always || options.writeAligned != nil || (options.connectivity && options.evaluator != nil) {
            let what = options.writeAligned != nil ? "--write-aligned" : options.align == .always ? "--align" : "the connectivity path (--data/--eval)"
            throw CompareError(overBudget(what, need: need, budget: budget))
        }
        let sizes = "the decoded weights of both would take \(sizePair(need, budget))"
        var pairs = pairs0
        let fetchA: (TensorInfo) throws -> [Float] = { try TensorData.floats(ckA, $0) }
        let fetchB: (TensorInfo) throws -> [Float] = { try TensorData.floats(ckB, $0) }
        CPU.setBLASThreads(1)
        defer { CPU.setBLASThreads(ProcessInfo.processInfo.activeProcessorCount) }
        let out = UnsafeSendableBox([(TensorEvidence, String, String?)?](repeating: nil, count: pairs.count))
        let errors = UnsafeSendableBox([Error?](repeating: nil, count: 1))
        DispatchQueue.concurrentPerform(iterations: pairs.count) { i in
            if errors.get(0) != nil { return }
            let (ta, tb, how) = pairs[i]
            do {
                let d = try decodePair(ta, tb, how: how, ckA: ckA, ckB: ckB, valuesA: fetchA, valuesB: fetchB)
                out.set(i, (try pairEvidence(ta, tb, how: d.how, a: d.a, b: d.b, hashA: hashA[ta.name], hashB: hashB[tb.name]), d.how, d.rope))
            } catch { errors.set(0, error) }
        }
        if let e = errors.array[0] { throw e }
        let done = out.array.map { $0! }
        for i in pairs.indices { pairs[i].2 = done[i].1 }
        let ev = done.map(\.0)
        var notes = ["bounded memory: \(sizes) (--memory), so tensor pairs were compared one at a time, without the permutation alignment or the connectivity path"]
        if let side = done.compactMap(\.2).first { notes.append(ropeNote(side)) }
        // The independence test on a prefix of its groups, decoded together.
        let shapes = WeightSet(names: pairs.map(\.0.name), shapes: Dictionary(pairs.map { ($0.0.name, $0.0.shape) }, uniquingKeysWith: { x, _ in x }), values: [:])
        let inferred = PermSpecInference.inferFromShapes(shapes, numHeads: headCount(near: rowA.path) ?? headCount(near: rowB.path))
        let eligible = IndependenceTest.eligible(inferred)
        let index = Dictionary(pairs.indices.map { (pairs[$0].0.name, $0) }, uniquingKeysWith: { x, _ in x })
        // Groups chained through a matrix (an MLP: fc2 holds fc1's units in its columns and fc2's in its rows) are
        // only tested together, since the outgoing matching of one needs the next one's rows aligned: whole chains
        // are taken, in order, while they fit. A transformer block's feed-forward group stands alone.
        var chain = Array(eligible.indices)
        func root(_ i: Int) -> Int { var i = i; while chain[i] != i { i = chain[i] }; return i }
        for (i, g) in eligible.enumerated() {
            if let j = eligible.firstIndex(where: { $0.inTensor == g.outTensor }) { let a = root(i), b = root(j); chain[max(a, b)] = min(a, b) }
        }
        var chosen: [PermGroup] = [], members: [String] = [], bytes = 0
        for r in eligible.indices where root(r) == r {
            let gs = eligible.indices.filter { root($0) == r }.map { eligible[$0] }
            let new = Set(gs.flatMap { $0.members.map(\.tensor) }).subtracting(members).filter { index[$0] != nil }.sorted()
            let more = decodedBytes(new.map { pairs[index[$0]!] })
            guard more <= budget - bytes else { break }
            chosen += gs; members += new; bytes += more
        }
        var ind: IndependenceTest? = nil, untested: String? = nil
        if !chosen.isEmpty, !IndependenceTest.canReject(units: chosen.map(\.size)) {
            untested = "the feed-forward groups that fit the memory budget (\(chosen.map { "\($0.size)" }.joined(separator: ", ")) units) are too few for it to reach p < \(IndependenceTest.defaultThreshold) (--memory)"
            notes.append("no independence test: " + untested!)
        } else if !chosen.isEmpty {
            var sa = WeightSet(), sb = WeightSet()
            for n in members {
                let (ta, tb, how) = pairs[index[n]!]
                let d = try decodePair(ta, tb, how: how, ckA: ckA, ckB: ckB, valuesA: fetchA, valuesB: fetchB)
                sa.names.append(n); sa.shapes[n] = ta.shape; sa.values[n] = d.a
                sb.names.append(n); sb.shapes[n] = ta.shape; sb.values[n] = d.b
            }
            var prefix = inferred
            prefix.groups = chosen
            let spec = PermSpecInference.validated(prefix, [sa, sb])
            let (fa, na) = finite(sa, "A"), (fb, nb) = finite(sb, "B")
            notes += na + nb
            ind = try IndependenceTest.run(fa, fb, spec: spec)
            // (the layers read may still be uninformative or too narrow: then no test, and the verdict says why)
            if ind == nil { untested = narrowLayers(chosen.count) + " (within the memory budget, --memory)"; notes.append("no independence test: " + untested!) }
            if chosen.count < eligible.count {
                notes.append("the independence test ran on the first \(chosen.count) of \(eligible.count) feed-forward groups (those whose tensors fit the memory budget, whole chains at a time)")
            }
            let moved = (ind?.layers ?? []).reduce(0) { $0 + ($1.moved ?? 0) }
            if ind?.dependent == true, moved > 0 {
                notes.append("the independence test's matchings move \(moved) hidden units: B's units are permuted relative to A's (not undone here: the alignment was not run)")
            }
        } else if !eligible.isEmpty {
            untested = "no feed-forward group fits the memory budget (--memory)"
            notes.append(untested! + ": no independence test")
        }
        let verdict = Forensics.verdict(tensors: ev, onlyA: onlyA, onlyB: onlyB, independence: ind, aligned: nil, alignment: nil, untested: untested)
        var result = CompareResult(a: rowA.path, b: rowB.path, tensors: ev, onlyInA: onlyA, onlyInB: onlyB, verdict: verdict,
                                   independence: ind, alignment: nil, aligned: nil, connectivity: nil)
        result.notes = notes
        if store { try storeResult(result, catalog: catalog, a: rowA, b: rowB, options: options) }
        return result
    }

    public static func compare(catalog: Catalog, a rowA: CheckpointRow, b rowB: CheckpointRow, options: Options,
                               store: Bool = true) throws -> CompareResult {
        let ckA = try CheckpointOpener.openNamed(rowA.path, options: .init(trust: options.trust))
        let ckB = try CheckpointOpener.openNamed(rowB.path, options: .init(trust: options.trust))
        let hashA = Dictionary(try catalog.tensors(checkpoint: rowA.id).map { ($0.name, $0.hash) }, uniquingKeysWith: { x, _ in x })
        let hashB = Dictionary(try catalog.tensors(checkpoint: rowB.id).map { ($0.name, $0.hash) }, uniquingKeysWith: { x, _ in x })
        let floatA = ckA.tensors.filter { $0.dtype.isFloatingPoint && $0.dtype.decodable }
        let floatB = ckB.tensors.filter { $0.dtype.isFloatingPoint && $0.dtype.decodable }
        let matched = Comparator.matchTensors(floatA, floatB)
        var pairs = matched.pairs
        let onlyA = matched.onlyA, onlyB = matched.onlyB
        // Re-pairing (below) keeps the tensors it pairs: the total is known now, and a bounded comparison keeps none.
        let need = decodedBytes(pairs)
        let budget = options.memoryBudget ?? SpectrumOptions.halfPhysicalMemory
        let bounded = need > budget
        var decodedA: [String: [Float]] = [:], decodedB: [String: [Float]] = [:]
        func valuesA(_ t: TensorInfo) throws -> [Float] {
            if let v = decodedA[t.name] { return v }
            let v = try TensorData.floats(ckA, t); if !bounded { decodedA[t.name] = v }; return v
        }
        func valuesB(_ t: TensorInfo) throws -> [Float] {
            if let v = decodedB[t.name] { return v }
            let v = try TensorData.floats(ckB, t); if !bounded { decodedB[t.name] = v }; return v
        }
        // Tensors paired by shape alone (other names, in another order) are re-paired by their values.
        try Comparator.repairByValues(&pairs, valuesA: valuesA, valuesB: valuesB)
        // Decode (B's tensors under A's names so that architecture rules apply to both). llama.cpp's converter
        // reorders the rows of Llama-style q/k projections for its RoPE layout: a GGUF side is put back in
        // Hugging Face order when the other side is not GGUF, so that a conversion reads as a re-encoding.
        if bounded {
            return try boundedCompare(catalog: catalog, a: rowA, b: rowB, ckA: ckA, ckB: ckB, pairs: pairs, onlyA: onlyA, onlyB: onlyB,
                                      hashA: hashA, hashB: hashB, options: options, need: need, budget: budget, store: store)
        }
        var wa = WeightSet(), wb = WeightSet()
        var ropeNote: String? = nil
        for (i, (ta, tb, how)) in pairs.enumerated() {
            let d = try decodePair(ta, tb, how: how, ckA: ckA, ckB: ckB, valuesA: valuesA, valuesB: valuesB)
            pairs[i].2 = d.how
            if let r = d.rope { ropeNote = r }
            wa.names.append(ta.name); wa.shapes[ta.name] = ta.shape; wa.values[ta.name] = d.a
            wb.names.append(ta.name); wb.shapes[ta.name] = ta.shape; wb.values[ta.name] = d.b
        }
        decodedA = [:]; decodedB = [:]
        /// Evidence of B against A (`a`: A in another basis, when given).
        func evidence(_ b: WeightSet, a: WeightSet? = nil) throws -> [TensorEvidence] {
            let wa = a ?? wa
            let out = UnsafeSendableBox([TensorEvidence?](repeating: nil, count: pairs.count))
            let errors = UnsafeSendableBox([Error?](repeating: nil, count: 1))
            DispatchQueue.concurrentPerform(iterations: pairs.count) { i in
                let (ta, tb, how) = pairs[i]
                do {
                    out.set(i, try pairEvidence(ta, tb, how: how, a: wa.values[ta.name]!, b: b.values[ta.name]!, hashA: hashA[ta.name], hashB: hashB[tb.name]))
                } catch { errors.set(0, error) }
            }
            if let e = errors.array[0] { throw e }
            return out.array.map { $0! }
        }
        CPU.setBLASThreads(1)
        defer { CPU.setBLASThreads(ProcessInfo.processInfo.activeProcessorCount) }
        let ev = try evidence(wb)
        // Checked against both sides: a member whose shape does not fit its group in A or B is left out (with a note).
        let inferred = PermSpecInference.infer(wa, numHeads: headCount(near: rowA.path) ?? headCount(near: rowB.path))
        let spec = PermSpecInference.validated(inferred, [wa, wb])
        CPU.setBLASThreads(ProcessInfo.processInfo.activeProcessorCount)
        // NaN/±Inf weights have no place in a similarity: the permutation analyses see them as 0, and say so.
        var notes: [String] = []
        if let side = ropeNote { notes.append(Self.ropeNote(side)) }
        let (fa, na) = finite(wa, "A"), (fb, nb) = finite(wb, "B")
        notes += na + nb
        let ind = try IndependenceTest.run(fa, fb, spec: spec)
        // An architecture with a test that gave none: its layers are too narrow (or uninformative) to reach the threshold.
        let eligibleCount = IndependenceTest.eligible(spec).count
        let untested: String? = ind == nil && eligibleCount > 0 ? narrowLayers(eligibleCount) : nil
        var alignment: AlignmentResult? = nil, alignedEv: [TensorEvidence]? = nil, wbAligned: WeightSet? = nil
        let quick = Forensics.verdict(tensors: ev, onlyA: onlyA, onlyB: onlyB, independence: ind, aligned: nil, alignment: nil, untested: untested)
        let wantAlign = options.align == .always ||
            (options.align == .auto && !spec.groups.isEmpty && ["finetuned", "independent"].contains(quick.kind))
        if options.align == .always && spec.groups.isEmpty {
            // wa holds the tensors paired with B only: when B lacks or reshapes some of A's, say so rather than
            // blame A's architecture.
            let why = !onlyA.isEmpty || !onlyB.isEmpty
                ? "A and B pair only \(pairs.count) tensors of the same shape (\(onlyA.count) only in A, \(onlyB.count) only in B): no permutation symmetry spans them"
                : PermSpecInference.validated(inferred, [wa]).groups.isEmpty
                ? "no permutation symmetry recognised in A's architecture (MLP chains, transformer feed-forward units and heads are)"
                : "A's permutation groups do not fit B's tensors"
            notes.append(why + ": alignment skipped" + (options.writeAligned != nil ? "; --write-aligned holds B unpermuted" : ""))
        }
        if wantAlign, !spec.groups.isEmpty {
            // Feed-forward groups whose units the independence test found in place both ways (a fine-tune without a
            // permutation) need no assignment: on a 1B model that is most of the alignment's time. --align always
            // solves every group.
            let inPlace = options.align == .auto && ind?.dependent == true
                ? Set((ind?.layers ?? []).filter { $0.moved == 0 && $0.spearman >= 1 }.map(\.group)) : []
            let al = try Alignment.weightMatching(fa, fb, spec: spec, seed: options.seed, fixed: inPlace)
            alignment = al
            if !al.identity {
                let moved = Permuter.applyAll(wb, spec: spec, perms: al.perms)
                wbAligned = moved
                CPU.setBLASThreads(1)
                // Judged with A moved into B's basis (the inverse permutations) rather than B into A's: B keeps its
                // own layout, so a quantized B keeps its blocks of 32 for the requantization and the rounding test
                // (a permuted Q4_0 copy read as a fine-tune); every other measure is the same either way.
                let inverse = al.perms.mapValues { p -> [Int] in var q = p; for (i, j) in p.enumerated() { q[j] = i }; return q }
                alignedEv = try evidence(wb, a: Permuter.applyAll(wa, spec: spec, perms: inverse))
                CPU.setBLASThreads(ProcessInfo.processInfo.activeProcessorCount)
            }
        }
        let verdict = Forensics.verdict(tensors: ev, onlyA: onlyA, onlyB: onlyB, independence: ind, aligned: alignedEv, alignment: alignment, untested: untested)
        /// B's 1-D `….bias` tensors that A lacks (under any dtype), on layers whose `….weight` is paired and has an
        /// axis of the bias's length: (B's name, A's name of the weight, values).
        /// (Decoded once: the connectivity path and --write-aligned both use them.)
        var bOnlyCache: [(String, String, [Float])]? = nil
        func bOnlyBiases() throws -> [(String, String, [Float])] {
            if let c = bOnlyCache { return c }
            let byB = Dictionary(pairs.map { ($0.1.name, $0.0.name) }, uniquingKeysWith: { x, _ in x })
            let namesA = Set(ckA.tensors.map(\.name))
            let found = try onlyB.compactMap { nameB -> (String, String, [Float])? in
                guard nameB.hasSuffix(".bias") || nameB == "bias", let t = ckB.tensors.first(where: { $0.name == nameB }), t.shape.count == 1,
                      let weightA = byB[String(nameB.dropLast(4)) + "weight"], weightA.hasSuffix("weight"),
                      !namesA.contains(String(weightA.dropLast("weight".count)) + "bias"),
                      wa.shapes[weightA]?.contains(t.shape[0]) == true else { return nil }
                return (nameB, weightA, try valuesB(t))
            }
            bOnlyCache = found
            return found
        }
        /// Where a bias sits in the aligned basis: it moves with its layer's output units, so it joins every group
        /// that permutes its weight along the output axis (0 for torch's [out, in] layout, 1 for GPT-2's Conv1D
        /// [in, out]), heads in their blocks; a layer whose outputs are not permuted (a projection back into the
        /// residual stream) keeps its bias. nil when the output axis does not have the bias's length.
        func alignedBias(_ n: String, weightA: String, _ values: [Float]) -> [Float]? {
            guard let al = alignment else { return values }
            guard let ws = wa.shapes[weightA] else { return nil }
            let outAxis = spec.family == "gpt2" && ws.count == 2 ? 1 : 0      // GPT-2's Conv1D matrices; its LayerNorms are 1-D
            guard ws.count > outAxis, ws[outAxis] == values.count else { return nil }
            var spec2 = spec
            for gi in spec2.groups.indices where spec2.groups[gi].members.contains(where: { $0.tensor == weightA && $0.axis == outAxis }) {
                spec2.groups[gi].members.append(PermGroup.Member(tensor: n, axis: 0))
            }
            return Permuter.applyAll(WeightSet(names: [n], shapes: [n: [values.count]], values: [n: values]), spec: spec2, perms: al.perms).values[n]!
        }
        var conn: Connectivity? = nil
        if options.connectivity, !pairs.isEmpty, verdict.kind != "identical" {
            // An evaluator that cannot run on these weights (B lacks a layer it needs) costs the barrier, not the
            // comparison: the path is still measured and a note says why there is no barrier.
            var evaluator = options.evaluator, failure: String?
            var before: ConnectivityCurve
            // The evaluated model is A with its paired tensors interpolated: tensors only A has (a bias B lacks)
            // stay A's own instead of being dropped.
            var wa = wa, wbPath = wb, wbAlignedPath = wbAligned
            if evaluator != nil {
                let all = try WeightSet.load(ckA, where: { wa.values[$0.name] == nil })   // only what is not decoded yet
                let kept = all.names
                for n in kept { wa.names.append(n); wa.shapes[n] = all.shapes[n]; wa.values[n] = all.values[n] }
                if !kept.isEmpty {
                    notes.append("\(kept.count) tensors only A has (\(kept.prefix(4).joined(separator: ", "))\(kept.count > 4 ? ", …" : "")) keep A's values along the path: the λ = 1 end is B's shared weights with them, not B alone")
                }
                // Tensors only B has: a bias A's layer lacks is a zero bias on A's side (the same function), so the
                // path ends at B; anything else B alone has is not on the path, and a note says the end is not B.
                // (By pairs: B's names may differ from A's when tensors were paired by shape and position.)
                var zeroed: [String] = [], left: [String] = []
                for (nameB, weightA, values) in try bOnlyBiases() {
                    let n = String(weightA.dropLast("weight".count)) + "bias"
                    let aligned = wbAlignedPath == nil ? values : alignedBias(n, weightA: weightA, values)
                    guard wa.values[n] == nil, let aligned else { left.append(nameB); continue }
                    zeroed.append(nameB)
                    wa.names.append(n); wa.shapes[n] = [values.count]; wa.values[n] = [Float](repeating: 0, count: values.count)
                    wbPath.names.append(n); wbPath.shapes[n] = [values.count]; wbPath.values[n] = values
                    if wbAlignedPath != nil { wbAlignedPath!.names.append(n); wbAlignedPath!.shapes[n] = [values.count]; wbAlignedPath!.values[n] = aligned }
                }
                let zeroedSet = Set(zeroed), namesB = Set(ckB.tensors.map(\.name))
                left += onlyB.filter { !zeroedSet.contains($0) && !Saliency.isOptimizerState($0, among: namesB) && !left.contains($0) }
                if !zeroed.isEmpty { notes.append("\(zeroed.count) biases only B has (\(zeroed.prefix(4).joined(separator: ", "))\(zeroed.count > 4 ? ", …" : "")) are zero on A's side of the path (A's layers have none)") }
                if !left.isEmpty { notes.append("\(left.count) tensors only B has (\(left.prefix(4).joined(separator: ", "))\(left.count > 4 ? ", …" : "")) are not on the path: its λ = 1 end is not B") }
            }
            var first: EvalResult? = nil
            do {
                first = try evaluator.map { try $0.evaluate(wa) }
                before = try Forensics.connectivity(wa, wbPath, evaluator: evaluator, grid: options.grid, first: first)
            } catch {
                // An external command that fails on A's own weights (λ = 0) is broken, not merely unable to run on
                // this pair: an error. NaN on A (or a failure on weights that hold NaN/±Inf) is the checkpoint's state,
                // which a comparison still reports: no barrier, with a note.
                let onA = first == nil || (error as? Forensics.PathError)?.lambda == 0
                let nan = first.map { $0.metric.isNaN || ($0.loss?.isNaN ?? false) } ?? false
                let aNonFinite = wa.values.values.contains { $0.contains { !$0.isFinite } }
                if onA && !nan && !aNonFinite && options.evaluator is ExternalEvaluator { throw EvaluatorError("on A's own weights: \(error)") }
                failure = "\(error)"; evaluator = nil
                before = try Forensics.connectivity(wa, wbPath, evaluator: nil, grid: options.grid)
                notes.append(nan ? "the evaluator returned NaN on A's own weights: no barrier"
                             : onA ? "the evaluator cannot run on A's own weights, which hold NaN/±Inf (\(error)): no barrier"
                             : "\(rowB.path): the evaluator cannot run on the interpolated weights (\(error)): no barrier")
            }
            var after: ConnectivityCurve? = nil
            if let wal = wbAlignedPath {
                do { after = try Forensics.connectivity(wa, wal, evaluator: evaluator, grid: options.grid, first: first) } catch {
                    after = try Forensics.connectivity(wa, wal, evaluator: nil, grid: options.grid)
                    notes.append("the evaluator cannot run on the aligned path (\(error)): no barrier after alignment")
                }
            }
            for (what, c) in [("", before), (" after alignment", after)] {
                if let at = c?.nanAt { notes.append("the evaluator returned NaN at λ = \(at.map { String(format: "%.3g", $0) }.joined(separator: ", "))\(what): the model breaks there, no barrier") }
            }
            let barrierText = before.loss != nil || before.higherIsBetter == false ? "barrier = max L(λ) − ½(L(0)+L(1))"
                : "barrier = ½(M(0)+M(1)) − min M(λ), the drop of the evaluator's metric M (higher is better)"
            conn = Connectivity(evaluator: options.evaluator?.description, before: before, after: after,
                                note: failure.map { "the evaluator could not run (\($0)): weight-space path only, no barrier" }
                                    ?? (options.evaluator == nil ? "no evaluator (--data or --eval): weight-space path only, no loss barrier"
                                    : "θ(λ) = (1−λ)θA + λθB on \(options.grid) points; \(barrierText)"))
        }
        var writeNotes: [String] = []
        if let out = options.writeAligned {
            try ckA.refuseToOverwrite(out)
            try ckB.refuseToOverwrite(out)
            // B in A's basis, under B's own names; tensors outside the permutation spec are copied as they are.
            let src = wbAligned ?? wb
            // Every other tensor of B (integer buffers included) is copied in its own dtype.
            var replace: [String: [Float]] = [:]
            for (ta, tb, how) in pairs {
                // back in B's own layout where B stores the matrix transposed
                replace[tb.name] = Comparator.isTransposed(how) ? Comparator.transpose(src.values[ta.name]!, rows: ta.shape[0], cols: ta.shape[1])
                    : src.values[ta.name]!
            }
            // A bias only B has moves with its layer's units (else the file would not compute B's function).
            if wbAligned != nil {
                var unsure: [String] = []
                for (nameB, weightA, values) in try bOnlyBiases() {
                    if let v = alignedBias(String(weightA.dropLast("weight".count)) + "bias", weightA: weightA, values) { replace[nameB] = v } else { unsure.append(nameB) }
                }
                if !unsure.isEmpty { notes.append("\(out): \(unsure.count) biases only B has (\(unsure.prefix(4).joined(separator: ", "))) are copied unpermuted: their layers' role in the permutation is not known") }
            }
            let rep = try Exporter.export(ckB, to: out, dtype: .keep, include: { _ in true }, replacing: replace,
                                          metadata: ["aligned_to": rowA.path, "written_by": "wscan compare --write-aligned"])
            writeNotes = rep.converted.sorted { $0.key < $1.key }.map { "\(out): \($0.key) written as \($0.value)" }
                + rep.skipped.sorted { $0.key < $1.key }.map { "\(out): \($0.key) left out (\($0.value))" }
        }
        var result = CompareResult(a: rowA.path, b: rowB.path, tensors: ev, onlyInA: onlyA, onlyInB: onlyB, verdict: verdict,
                                   independence: ind, alignment: alignment, aligned: alignedEv, connectivity: conn)
        if !(notes + writeNotes).isEmpty { result.notes = notes + writeNotes }
        if store { try storeResult(result, catalog: catalog, a: rowA, b: rowB, options: options) }
        return result
    }

    public struct LineageEdge: Codable, Sendable {
        public var a: String
        public var b: String
        public var kind: String
        public var confidence: Double
        public var summary: String
        public var how: String      // fingerprint | compare
    }

    public struct Lineage: Codable, Sendable {
        public var checkpoints: [String]
        public var edges: [LineageEdge]
        public var skippedPairs: Int   // different architectures, pruned by shape signature
        public var compared: Int
        /// Pairs declared identical by their content fingerprints, without decoding (not in `compared`).
        public var identicalByFingerprint: Int?
        /// Pairs that could not be compared ("a ↔ b: reason"); the others are still linked.
        public var failed: [String]? = nil
        /// Catalog entries left out because they could not be read (status error or unsafe).
        public var notRead: [String]? = nil
        /// Pairs whose comparison failed (among `failed`, whose other entries are checkpoints that could not be read).
        public var uncomparedPairs: Int? = nil
        /// Every pair of the readable checkpoints (stored, so that JSON readers have it).
        public var pairCount: Int? = nil
        public var pairs: Int { pairCount ?? (compared + fingerprintPairs + skippedPairs + (uncomparedPairs ?? (failed ?? []).count)) }
        /// Identical-by-fingerprint pairs (counted from the edges for lineages stored before the count was).
        public var fingerprintPairs: Int { identicalByFingerprint ?? edges.filter { $0.how == "fingerprint" }.count }
    }

    /// Pairwise relationships among the catalog's checkpoints. Cheap fingerprints first: checkpoints whose
    /// float-tensor shapes differ are not compared; equal content fingerprints are identical without decoding.
    public static func lineage(catalog: Catalog, includeIndependent: Bool = false, trust: Bool = false, progress: ((Int, Int) -> Void)? = nil) throws -> Lineage {
        // Fingerprints describe the bytes as indexed: a file changed since is indexed again first (else an edited
        // copy would still be "identical"), and one that is gone or now unreadable is a failed input.
        var failed: [String] = []
        var gone = Set<Int64>()
        for r in try catalog.checkpoints() where r.status == "ok" {
            guard !((try? catalog.isUpToDate(path: r.path, needSHA: false)) ?? false) else { continue }
            guard FileRef.isRegularFile(r.path) else { failed.append("\(r.name): its file is gone since it was indexed"); gone.insert(r.id); continue }
            if case let .failed(_, reason) = Indexer(catalog: catalog, options: .init(trust: trust)).indexOne(r.path) {
                failed.append("\(r.name): changed since it was indexed, and now unreadable: \(reason)")
            }
        }
        let rows = try catalog.checkpoints().filter { $0.status == "ok" && $0.tensorCount > 0 && !gone.contains($0.id) }.distinctNames()
        var signature: [Int64: String] = [:]
        for r in rows {
            let ts = try catalog.tensors(checkpoint: r.id).filter { ["F16", "BF16", "F32", "F64"].contains($0.dtype) || $0.dtype.hasPrefix("Q") || $0.dtype.hasPrefix("F8") }
            signature[r.id] = ts.map { $0.shape.map(String.init).joined(separator: "x") }.sorted().joined(separator: ";")
        }
        var edges: [LineageEdge] = []
        var skipped = 0, compared = 0, byFingerprint = 0, failedPairs = 0
        var pairs: [(CheckpointRow, CheckpointRow)] = []
        for i in 0..<rows.count { for j in (i + 1)..<max(i + 1, rows.count) {
            if signature[rows[i].id] != signature[rows[j].id] || signature[rows[i].id]!.isEmpty { skipped += 1; continue }
            pairs.append((rows[i], rows[j]))
        } }
        for (k, (a, b)) in pairs.enumerated() {
            progress?(k, pairs.count)
            if a.fingerprint != nil && a.fingerprint == b.fingerprint {
                edges.append(LineageEdge(a: a.name, b: b.name, kind: "identical", confidence: 1, summary: "same content fingerprint", how: "fingerprint"))
                byFingerprint += 1
                continue
            }
            var o = Options(); o.connectivity = false; o.trust = trust
            let r: CompareResult
            do { r = try compare(catalog: catalog, a: a, b: b, options: o, store: true) } catch {
                failed.append("\(a.name) ↔ \(b.name): \(error)")
                failedPairs += 1
                continue
            }
            compared += 1
            if r.verdict.kind != "independent" || includeIndependent {
                edges.append(LineageEdge(a: a.name, b: b.name, kind: r.verdict.kind, confidence: r.verdict.confidence, summary: r.verdict.summary, how: "compare"))
            }
        }
        var lin = Lineage(checkpoints: rows.map(\.name), edges: edges, skippedPairs: skipped, compared: compared,
                          failed: failed.isEmpty ? nil : failed)
        lin.identicalByFingerprint = byFingerprint
        lin.uncomparedPairs = failedPairs
        lin.pairCount = rows.count * (rows.count - 1) / 2
        let notRead = try catalog.checkpoints().filter { $0.status != "ok" }.map(\.name)
        if !notRead.isEmpty { lin.notRead = notRead }
        // Stored only if the catalog still holds what was compared: a checkpoint indexed (or changed) meanwhile by
        // another process would be missing from a lineage that its own indexing had just invalidated.
        let now = try catalog.checkpoints().filter { $0.status == "ok" && $0.tensorCount > 0 && !gone.contains($0.id) }.map { "\($0.id):\($0.fingerprint ?? "")" }
        if Set(now) == Set(rows.map { "\($0.id):\($0.fingerprint ?? "")" }) {
            try catalog.storeResult(kind: "lineage", checkpoint: nil, params: ["scope": "catalog"], summary: "\(edges.count) relationships", data: lin)
        }
        return lin
    }
}
