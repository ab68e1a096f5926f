import Foundation
import WscanKernels

/// Which tensor axes a hidden-unit permutation acts on. `blockSize` > 1 permutes blocks (attention heads).
public struct PermGroup: Codable, Sendable {
    public var name: String
    public var size: Int
    public var blockSize: Int
    public var members: [Member]
    /// For the independence test: the matrix whose rows are the units, and the one whose columns are.
    public var inTensor: String?
    public var outTensor: String?
    public var kind: String            // mlp | ffn | heads
    public struct Member: Codable, Sendable {
        public var tensor: String; public var axis: Int
        public init(tensor: String, axis: Int) { self.tensor = tensor; self.axis = axis }
    }
}

public struct PermSpec: Codable, Sendable {
    public var family: String
    public var groups: [PermGroup]
    public var notes: [String]
}

/// Infers the permutation symmetries of an architecture from tensor names and shapes: plain MLP chains and the
/// feed-forward units (and, for BERT, attention heads) of BERT / GPT-2 / Llama-style transformer blocks.
/// The residual stream is left unpermuted.
public enum PermSpecInference {
    public static func infer(_ w: WeightSet, numHeads: Int? = nil) -> PermSpec {
        validated(inferNames(w, numHeads: numHeads), [w])
    }

    /// The spec from names and shapes alone (`w` may hold no values); `validated` checks it once values are decoded.
    public static func inferFromShapes(_ w: WeightSet, numHeads: Int? = nil) -> PermSpec { inferNames(w, numHeads: numHeads) }

    /// The spec with every member checked against the weights (of A, and of B when aligning): its extent along the
    /// permuted axis must be `size · blockSize` and its value count its shape's. A crafted bias of the wrong length
    /// is left out with a note instead of being read out of bounds; a group left with no matrix, or of size 0, goes.
    public static func validated(_ spec: PermSpec, _ sets: [WeightSet]) -> PermSpec {
        var out = spec
        var notes = spec.notes
        out.groups = spec.groups.compactMap { g -> PermGroup? in
            guard g.size > 0, g.blockSize > 0 else { notes.append("\(g.name): empty permutation group left out"); return nil }
            var ok = g
            ok.members = g.members.filter { m in
                for w in sets {
                    guard let s = w.shapes[m.tensor], let v = w.values[m.tensor], m.axis < s.count,
                          s[m.axis] == g.size * g.blockSize, let n = checkedCount(s), n == v.count else {
                        notes.append("\(m.tensor): shape does not fit permutation group \(g.name) (\(g.size) units): left out")
                        return false
                    }
                }
                return true
            }
            let kept = Set(ok.members.map(\.tensor))
            if let t = ok.inTensor, !kept.contains(t) { ok.inTensor = nil }
            if let t = ok.outTensor, !kept.contains(t) { ok.outTensor = nil }
            guard ok.members.contains(where: { m in sets.first?.shapes[m.tensor].map { $0.count >= 2 } ?? false }) else {
                notes.append("\(g.name): no matrix left in the group: not permuted")
                return nil
            }
            return ok
        }
        out.notes = notes
        return out
    }

    /// Product of a shape, nil on a negative dimension or overflow.
    static func checkedCount(_ s: [Int]) -> Int? {
        var n = 1
        for d in s { guard d >= 0 else { return nil }; let (p, o) = n.multipliedReportingOverflow(by: d); if o { return nil }; n = p }
        return n
    }

    static func inferNames(_ w: WeightSet, numHeads: Int? = nil) -> PermSpec {
        let names = Set(w.names)
        func shape(_ n: String) -> [Int]? { w.shapes[n] }
        var groups: [PermGroup] = []
        var notes: [String] = []
        // BERT: encoder.layer.L.intermediate.dense / output.dense / attention.self.{query,key,value} / attention.output.dense
        let bertBlocks = Set(w.names.compactMap { n -> String? in
            guard let r = n.range(of: ".intermediate.dense.weight"), n.hasSuffix(".intermediate.dense.weight") else { return nil }
            return String(n[..<r.lowerBound])
        }).sorted { naturalLess($0, $1) }
        if !bertBlocks.isEmpty {
            for b in bertBlocks {
                let inW = "\(b).intermediate.dense.weight", outW = "\(b).output.dense.weight"
                guard let si = shape(inW), let so = shape(outW), si.count == 2, so.count == 2, so[1] == si[0] else { continue }
                var m = [PermGroup.Member(tensor: inW, axis: 0), .init(tensor: outW, axis: 1)]
                if names.contains("\(b).intermediate.dense.bias") { m.append(.init(tensor: "\(b).intermediate.dense.bias", axis: 0)) }
                groups.append(PermGroup(name: "\(b).ffn", size: si[0], blockSize: 1, members: m, inTensor: inW, outTensor: outW, kind: "ffn"))
                let q = "\(b).attention.self.query.weight", k = "\(b).attention.self.key.weight", v = "\(b).attention.self.value.weight"
                let o = "\(b).attention.output.dense.weight"
                if let sq = shape(q), let heads = numHeads, heads > 0, sq.count == 2, sq[0] % heads == 0,
                   shape(k) == sq, shape(v) == sq, shape(o)?.count == 2, shape(o)![1] == sq[0] {
                    var hm: [PermGroup.Member] = [q, k, v].map { .init(tensor: $0, axis: 0) }
                    for t in [q, k, v] { let bias = String(t.dropLast(6)) + "bias"; if names.contains(bias) { hm.append(.init(tensor: bias, axis: 0)) } }
                    hm.append(.init(tensor: o, axis: 1))
                    groups.append(PermGroup(name: "\(b).heads", size: heads, blockSize: sq[0] / heads, members: hm, inTensor: nil, outTensor: nil, kind: "heads"))
                }
            }
            if numHeads == nil { notes.append("attention heads not permuted: the head count is unknown (config.json num_attention_heads)") }
            return PermSpec(family: "bert", groups: groups, notes: notes)
        }
        /// Gated feed-forward blocks: units are the rows of up (and gate) and the columns of down, `[out, in]` layout.
        /// Biases of the unit-producing projections (Llama has none; Qwen-style variants may) move with the units.
        func gatedFFN(_ ups: [String], up upS: String, gate gateS: String, down downS: String, group: String) {
            for up in ups {
                let b = String(up.dropLast(upS.count + ".weight".count))
                let gate = "\(b)\(gateS).weight", down = "\(b)\(downS).weight"
                guard let su = shape(up), let sd = shape(down), su.count == 2, sd.count == 2, sd[1] == su[0] else { continue }
                var m = [PermGroup.Member(tensor: up, axis: 0), .init(tensor: down, axis: 1)]
                if shape(gate) == su { m.append(.init(tensor: gate, axis: 0)) }
                for bias in ["\(b)\(upS).bias", "\(b)\(gateS).bias"] where shape(bias) == [su[0]] { m.append(.init(tensor: bias, axis: 0)) }
                groups.append(PermGroup(name: b + group, size: su[0], blockSize: 1, members: m, inTensor: shape(gate) == su ? gate : up, outTensor: down, kind: "ffn"))
            }
        }
        // Llama: *.mlp.gate_proj / up_proj / down_proj
        let llama = w.names.filter { $0.hasSuffix(".mlp.up_proj.weight") }.sorted { naturalLess($0, $1) }
        if !llama.isEmpty {
            gatedFFN(llama, up: ".mlp.up_proj", gate: ".mlp.gate_proj", down: ".mlp.down_proj", group: ".mlp")
            notes.append("attention heads not permuted for Llama-style blocks (grouped-query attention and RoPE)")
            return PermSpec(family: "llama", groups: groups, notes: notes)
        }
        // llama.cpp's GGUF names (any architecture it converts): blk.N.ffn_gate / ffn_up / ffn_down, in the same
        // [out, in] layout as Hugging Face's Llama (GGUF's reversed dimensions are read back in that order).
        let cpp = w.names.filter { $0.hasPrefix("blk.") && $0.hasSuffix(".ffn_up.weight") }.sorted { naturalLess($0, $1) }
        if !cpp.isEmpty {
            gatedFFN(cpp, up: ".ffn_up", gate: ".ffn_gate", down: ".ffn_down", group: ".ffn")
            notes.append("llama.cpp names: feed-forward units only (attention heads not permuted)")
            return PermSpec(family: "llama.cpp", groups: groups, notes: notes)
        }
        // GPT-2 (Conv1D weights stored [in, out]): *.mlp.c_fc / c_proj
        let gpt = w.names.filter { $0.hasSuffix(".mlp.c_fc.weight") }.sorted { naturalLess($0, $1) }
        if !gpt.isEmpty {
            for fc in gpt {
                let b = String(fc.dropLast(".mlp.c_fc.weight".count))
                let proj = "\(b).mlp.c_proj.weight"
                guard let sf = shape(fc), let sp = shape(proj), sf.count == 2, sp.count == 2, sp[0] == sf[1] else { continue }
                var m = [PermGroup.Member(tensor: fc, axis: 1), .init(tensor: proj, axis: 0)]
                if names.contains("\(b).mlp.c_fc.bias") { m.append(.init(tensor: "\(b).mlp.c_fc.bias", axis: 0)) }
                groups.append(PermGroup(name: "\(b).mlp", size: sf[1], blockSize: 1, members: m, inTensor: nil, outTensor: nil, kind: "ffn"))
            }
            notes.append("GPT-2: feed-forward units only (fused c_attn heads not permuted); independence test needs row-major in/out matrices")
            return PermSpec(family: "gpt2", groups: groups, notes: notes)
        }
        // Other transformer blocks (DistilBERT ffn.lin1/lin2, OPT/BART/Whisper fc1/fc2 beside self_attn): their
        // feed-forward units only. A chain through them would permute the residual stream.
        let attention = w.names.contains { $0.contains("attn") || $0.contains("attention") }
        let ffnPairs: [(String, String)] = [(".ffn.lin1.weight", ".ffn.lin2.weight"), (".fc1.weight", ".fc2.weight")]
        for (upS, downS) in ffnPairs where attention {
            let ups = w.names.filter { $0.hasSuffix(upS) }.sorted { naturalLess($0, $1) }
            guard !ups.isEmpty else { continue }
            for up in ups {
                let b = String(up.dropLast(upS.count)), down = b + downS
                guard let su = shape(up), let sd = shape(down), su.count == 2, sd.count == 2, sd[1] == su[0] else { continue }
                var m = [PermGroup.Member(tensor: up, axis: 0), .init(tensor: down, axis: 1)]
                let bias = String(up.dropLast(6)) + "bias"
                if shape(bias) == [su[0]] { m.append(.init(tensor: bias, axis: 0)) }
                // A norm between the two (timm's mlp.norm, torchscale's ffn_layernorm) works on the hidden units: it
                // moves with them. Only vectors of the feed-forward module itself, and not fc2's bias: when fc1/fc2
                // sit directly in the layer (OPT) the layer's other vectors (attention biases, its norms) may have the
                // hidden width too and stay.
                let module = upS.hasPrefix(".ffn.") ? b + ".ffn" : b
                let ownModule = upS.hasPrefix(".ffn.") || ["mlp", "ffn", "feed_forward", "feedforward"].contains { b.hasSuffix($0) }
                let downBias = String(down.dropLast(6)) + "bias"
                if ownModule {
                    for n in w.names where n.hasPrefix(module + ".") && n != bias && n != downBias && shape(n) == [su[0]] { m.append(.init(tensor: n, axis: 0)) }
                }
                groups.append(PermGroup(name: "\(b).ffn", size: su[0], blockSize: 1, members: m, inTensor: up, outTensor: down, kind: "ffn"))
            }
            if !groups.isEmpty {
                notes.append("transformer blocks (\(upS.dropFirst().dropLast(7))/\(downS.dropFirst().dropLast(7))): feed-forward units only; attention heads and the residual stream are not permuted")
                return PermSpec(family: "transformer-ffn", groups: groups, notes: notes)
            }
        }
        // Plain MLP chain: P.weight [out, in] (+ P.bias [out]) linked by out == next in.
        var lin: [(w: String, b: String?, out: Int, inn: Int)] = []
        for n in w.names.sorted(by: LayerOrder.less) where n.hasSuffix("weight") {
            guard let s = shape(n), s.count == 2 else { continue }
            let b = String(n.dropLast(6)) + "bias"
            lin.append((n, shape(b) == [s[0]] ? b : nil, s[0], s[1]))
        }
        // Order by following dimensions from a layer whose input no other layer produces.
        var chain: [(w: String, b: String?, out: Int, inn: Int)] = []
        if let start = lin.first(where: { l in !lin.contains { $0.out == l.inn && $0.w != l.w } }) ?? lin.first {
            var cur = start
            chain.append(cur)
            while let next = lin.first(where: { $0.inn == cur.out && !chain.map(\.w).contains($0.w) }) { chain.append(next); cur = next }
        }
        if chain.count >= 2 {
            // Only a plain chain: matrices off it (attention, a second head, residual blocks) may share the hidden
            // axes, and permuting the chain alone would change the function.
            guard chain.count == lin.count else {
                return PermSpec(family: "unknown", groups: [], notes: ["\(lin.count - chain.count) of \(lin.count) matrices are off the linear chain (not a plain MLP): no permutation inferred"])
            }
            // Per-unit vectors that are not a chain layer's bias (BatchNorm/LayerNorm weight, bias, running stats)
            // must move with their units: each goes to the one hidden layer of its length, or, when several have
            // it, the layer its name points to (bn1 ↔ fc1, Sequential index k ↔ the linear layer just before).
            // Only a vector whose name ties it to a hidden layer moves; one before the first layer (an input norm),
            // after the last, or whose name says nothing stays where it is.
            let chainVectors = Set(chain.compactMap(\.b))
            var extra: [Int: [String]] = [:]
            var unplaced: [String] = []
            for n in w.names.sorted(by: naturalLess) where !chainVectors.contains(n) {
                guard let s = shape(n), s.count == 1, (0..<(chain.count - 1)).contains(where: { chain[$0].out == s[0] }) else { continue }
                if case let .layer(k)? = ownerByName(n, chain.map(\.w)) {
                    if k < chain.count - 1, chain[k].out == s[0] { extra[k, default: []].append(n) }
                } else if ownerByName(n, chain.map(\.w)) == nil { unplaced.append(n) }
            }
            if !unplaced.isEmpty {
                notes.append("\(unplaced.count) per-unit vectors not moved with any layer (their names do not tie them to one): " + unplaced.prefix(4).joined(separator: ", "))
            }
            for i in 0..<(chain.count - 1) {
                let l = chain[i], nx = chain[i + 1]
                var m = [PermGroup.Member(tensor: l.w, axis: 0), .init(tensor: nx.w, axis: 1)]
                if let b = l.b { m.append(.init(tensor: b, axis: 0)) }
                for v in extra[i] ?? [] { m.append(.init(tensor: v, axis: 0)) }
                groups.append(PermGroup(name: "\(l.w.dropLast(7)).units", size: l.out, blockSize: 1, members: m, inTensor: l.w, outTensor: nx.w, kind: "mlp"))
            }
            return PermSpec(family: "mlp", groups: groups, notes: notes)
        }
        return PermSpec(family: "unknown", groups: [], notes: ["no permutation symmetry recognised from tensor names"])
    }

    /// Which of `layers` (weight names) a per-unit vector belongs to, from its name: the same trailing number in the
    /// module name (`bn1.weight` ↔ `fc1.weight`), or in an nn.Sequential the linear layer with the largest index
    /// below the vector's (`net.1.running_mean` ↔ `net.0.weight`) under the same parent. nil when undecided.
    enum Owner: Equatable { case layer(Int), outside }
    /// Which of `layers` (the chain's weight names, in order) a per-unit vector belongs to, from its name, or
    /// `.outside` (before the first layer), or nil when the name does not say:
    /// - nn.Sequential (`net.1.running_mean`): the linear layer with the largest index below it under the same parent;
    /// - a block holding one linear layer (`layers.3.bn` ↔ `layers.3.fc`);
    /// - the same trailing number in the module name (`bn1` ↔ `fc1`).
    static func ownerByName(_ vector: String, _ layers: [String]) -> Owner? {
        func parts(_ n: String) -> [Substring] { n.split(separator: ".") }
        func trailingNumber(_ s: Substring) -> Int? { let d = s.reversed().prefix { $0.isNumber }; return d.isEmpty ? nil : Int(String(d.reversed())) }
        let vp = parts(vector)
        guard vp.count >= 2 else { return nil }
        let vModule = vp[vp.count - 2], vParent = vp.dropLast(2)
        if let vi = Int(vModule) {
            var best: (Int, Int)? = nil, siblings = false
            for (k, l) in layers.enumerated() {
                let lp = parts(l)
                guard lp.count >= 2, lp.dropLast(2) == vParent, let li = Int(lp[lp.count - 2]) else { continue }
                siblings = true
                if li < vi, best == nil || li > best!.1 { best = (k, li) }
            }
            if let best { return .layer(best.0) }
            return siblings ? .outside : nil
        }
        let inBlock = layers.indices.filter { parts(layers[$0]).dropLast(2) == vParent && !vParent.isEmpty }
        if inBlock.count == 1 { return .layer(inBlock[0]) }
        guard let vn = trailingNumber(vModule) else { return nil }
        let hits = layers.indices.filter { k in
            let lp = parts(layers[k]); return lp.count >= 2 && lp.dropLast(2) == vParent && trailingNumber(lp[lp.count - 2]) == vn
        }
        return hits.count == 1 ? .layer(hits[0]) : nil
    }

    /// "layer.10" after "layer.9".
    public static func naturalLess(_ a: String, _ b: String) -> Bool {
        a.compare(b, options: [.numeric]) == .orderedAscending
    }
}

/// Applying permutations to tensors (row-major, any rank; `axis` 0 or 1).
public enum Permuter {
    /// out[..., i, ...] = t[..., perm[i], ...] along `axis`, in blocks of `block` consecutive indices.
    public static func apply(_ t: [Float], shape: [Int], axis: Int, perm: [Int], block: Int) -> [Float] {
        guard axis < shape.count else { return t }
        let outer = shape[..<axis].reduce(1, *)
        let dim = shape[axis]
        let inner = shape[(axis + 1)...].reduce(1, *)
        // Checked always (release builds drop preconditions): a mismatch leaves the tensor as it is.
        guard dim == perm.count * block, t.count == outer * dim * inner, perm.allSatisfy({ $0 >= 0 && $0 < perm.count }) else { return t }
        var out = [Float](repeating: 0, count: t.count)
        t.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for o in 0..<outer {
                    for i in 0..<perm.count {
                        for k in 0..<block {
                            let from = ((o * dim) + perm[i] * block + k) * inner
                            let to = ((o * dim) + i * block + k) * inner
                            (dst.baseAddress! + to).update(from: src.baseAddress! + from, count: inner)
                        }
                    }
                }
            }
        }
        return out
    }

    public static func applyAll(_ w: WeightSet, spec: PermSpec, perms: [String: [Int]], except: String? = nil) -> WeightSet {
        var out = w
        for g in spec.groups where g.name != except {
            guard let p = perms[g.name], !isIdentity(p) else { continue }
            for m in g.members {
                guard let v = out.values[m.tensor], let s = out.shapes[m.tensor] else { continue }
                out.values[m.tensor] = apply(v, shape: s, axis: m.axis, perm: p, block: g.blockSize)
            }
        }
        return out
    }

    public static func isIdentity(_ p: [Int]) -> Bool { p.enumerated().allSatisfy { $0.offset == $0.element } }
}
