import Foundation
import WscanKernels
import WscanFormats

/// The model-level verdict from per-tensor evidence, the independence test and (when run) the alignment.
/// Rules, in order (each documented in README.md#compare):
///  1. identical — every paired tensor has identical values (and no unpaired tensors);
///  2. reencoded — every tensor identical or exactly the other rounded to one type (F16/BF16), or a quantized
///     type whose relative error is small (< 10%) with a full-rank difference;
///  3. pruned — every tensor identical or equal to A except for new zeros, which fall on A's smallest magnitudes;
///  4. lora_merged — every tensor identical or differing by a low-rank matrix (1 − 10⁻⁶ of ‖Δ‖² in r ≤ min(m,n)/4
///     directions); the estimated rank is the largest such r;
///  5. permuted — after Git Re-Basin alignment every tensor coincides (relative L2 < 1e-6);
///  6. finetuned — the independence test rejects independence (p < 1e-6): a fine-tune or a shared ancestor
///     (after alignment when a permutation was also applied);
///  7. independent — otherwise.
public enum Forensics {
    public static let quantizedErrorBound = 0.10

    /// A quantized side whose every tested block is a rounding of the float side's weights (or of one quantized copy
    /// of them), with an error no more than twice the writers' own requantization or twice the type's error bound.
    /// Beyond the bound the error itself must be explained, because a rounding may take any scale and offset: 1.5·W,
    /// rows scaled by [0.5, 2], rows zeroed, or a shifted tensor pass every block (a review found 1.5·W as Q8_0 read as
    /// "same weights re-encoded" at 50% error when the error went unchecked). Within twice the bound: heavy-tailed
    /// weights requantized from Q8_0 lose 12% under Q4_K, and imatrix-weighted Q6_K on outlier rows 5.4%.
    static func provenRounding(_ e: TensorEvidence) -> Bool {
        (e.roundingBlocks ?? 0) > 0 && e.unroundedBlocks == 0
            && ((e.requantExcess ?? .infinity) <= 2 || e.relativeL2 < 2 * errorBound(e.dtypeA, e.dtypeB))
    }

    /// Two IEEE float types (F64, F32, F16, BF16): converters round between them deterministically (the roundings
    /// `Comparator.reencoding` tries), so only an exact rounding (`reencodedAs`) is a re-encoding; anything else changed.
    static func floatPair(_ e: TensorEvidence) -> Bool {
        let floats: Set<String> = ["F64", "F32", "F16", "BF16"]
        return floats.contains(e.dtypeA) && floats.contains(e.dtypeB)
    }

    /// The largest relative L2 error a re-encoding into the narrower of two types can explain.
    static func errorBound(_ a: String, _ b: String) -> Double {
        func bound(_ t: String) -> Double {
            switch t {
            case "F32", "F64": return 0
            case "F16": return 1e-3
            case "BF16": return 8e-3
            case "Q8_0", "Q8_1", "Q8_K", "Q6_K": return 0.03
            case "Q5_0", "Q5_1", "Q5_K", "Q4_0", "Q4_1", "Q4_K": return quantizedErrorBound
            case "Q3_K", "Q2_K": return 0.35
            default: return t.hasPrefix("F8") ? 0.1 : 0
            }
        }
        return max(bound(a), bound(b))
    }

    /// `untested`, when given, says why no independence test ran although the architecture has one (a memory budget):
    /// the similarity fallback then says so instead of blaming the architecture.
    public static func verdict(tensors t: [TensorEvidence], onlyA: [String], onlyB: [String], independence: IndependenceTest?,
                               aligned: [TensorEvidence]?, alignment: AlignmentResult?, untested: String? = nil) -> Verdict {
        let params = t.reduce(0) { $0 + ($1.shape.reduce(1, *)) }
        func weighted(_ f: (TensorEvidence) -> Double) -> Double {
            var s = 0.0, w = 0.0
            for e in t { let n = Double(e.shape.reduce(1, *)); let v = f(e); if v.isFinite { s += v * n; w += n } }
            return w > 0 ? s / w : .nan
        }
        let meanCos = weighted { $0.cosine }
        var evidence = [String(format: "%d tensor%@ paired (%d parameters), parameter-weighted cosine %.6f", t.count, t.count == 1 ? "" : "s", params, meanCos)]
        if !onlyA.isEmpty || !onlyB.isEmpty { evidence.append("\(onlyA.count) tensors only in A, \(onlyB.count) only in B") }
        let byValue = t.filter { $0.matchedBy.hasPrefix("shape+values") }.count, byPosition = t.filter { $0.matchedBy.hasPrefix("shape+position") }.count
        if byValue + byPosition > 0 {
            evidence.append("\(byValue + byPosition) tensors with other names paired by shape: \(byValue) by value, \(byPosition) by position")
        }
        let transposed = t.filter { Comparator.isTransposed($0.matchedBy) }.count
        if transposed > 0 {
            evidence.append("\(transposed) \(transposed == 1 ? "matrix is" : "matrices are") stored transposed on one side ([in, out] against [out, in], as GPT-2's Conv1D and nn.Linear store them): compared in A's layout")
        }
        let reshaped = Set(onlyA).intersection(onlyB).sorted()
        if !reshaped.isEmpty {
            evidence.append("\(reshaped.count) tensors have the same name but another shape: \(reshaped.prefix(6).joined(separator: ", "))\(reshaped.count > 6 ? ", …" : "")")
        }
        // Tensors both hold unchanged that carry information (≥ 2-D, not constant like a zero-initialised bias).
        let shared = t.filter { $0.identicalValues && $0.shape.count >= 2 && !$0.constant }
        let sharedParams = shared.reduce(0) { $0 + $1.shape.reduce(1, *) }
        if !shared.isEmpty && t.contains(where: { !$0.identicalValues }) {
            evidence.append(String(format: "%d bit-identical non-constant matrices (%.1f%% of the paired parameters): ", shared.count, 100 * Double(sharedParams) / Double(max(1, params)))
                            + shared.prefix(6).map(\.name).joined(separator: ", ") + (shared.count > 6 ? ", …" : ""))
        }
        if let ind = independence {
            evidence.append(String(format: "independence test: p = %.3g over %d layers (Spearman ρ %@)", ind.pValue, ind.layers.count,
                                   ind.layers.map { String(format: "%.2f", $0.spearman) }.joined(separator: ", ")))
            let flipped = ind.layers.reduce(0) { $0 + ($1.flipped ?? 0) }
            if flipped > 0, ind.dependent {     // (between unrelated models a few units coincide by chance)
                evidence.append("\(flipped) hidden units are matched with all their weights negated: the same units under an odd activation such as tanh (a sign flip hides nothing there)")
            }
        }
        guard !t.isEmpty else {
            let why = onlyA.isEmpty && onlyB.isEmpty ? "neither side holds a floating-point tensor: no weights to compare"
                : onlyA.isEmpty || onlyB.isEmpty ? "one side holds no floating-point tensor: no weights to compare"
                : "no tensors could be paired (different architectures)"
            return Verdict(kind: "incomparable", confidence: 1, summary: why, evidence: evidence, details: [:])
        }
        let sameSet = onlyA.isEmpty && onlyB.isEmpty
        let differing = t.filter { !$0.identicalValues }
        // 1. identical (values compared as decoded, in float32: F64 beside F32 or F16 beside F32 is a re-encoding)
        let retyped = t.filter { $0.dtypeA != $0.dtypeB }
        if differing.isEmpty && sameSet && !retyped.isEmpty {
            let types = Set(retyped.map { "\($0.dtypeA)→\($0.dtypeB)" }).sorted()
            return Verdict(kind: "reencoded", confidence: 0.9,
                           summary: "same values as far as float32 shows, stored as another type (\(types.joined(separator: ", ")))",
                           evidence: evidence + ["all \(t.count) tensors have identical values after decoding to float32; \(retyped.count) changed type"],
                           details: ["dtype": types.joined(separator: ",")])
        }
        if differing.isEmpty && sameSet {
            let bytes = t.allSatisfy(\.identicalBytes)
            return Verdict(kind: "identical", confidence: 1,
                           summary: bytes ? "identical: every tensor has the same bytes" : "identical values in a different container or layout",
                           evidence: evidence + ["all \(t.count) tensors have identical values"], details: ["bytes": bytes ? "identical" : "differ"])
        }
        // 1a. the same weights but for NaN/±Inf written over some of them (a corrupted or poisoned copy)
        // (also when stored in another type: every finite value within that type's rounding or quantization)
        let corruptedTensor = { (e: TensorEvidence) in
            e.nonFiniteChanged > 0 && (e.relativeL2 == 0 || (e.dtypeA != e.dtypeB && e.relativeL2 < errorBound(e.dtypeA, e.dtypeB)))
        }
        let cleanRetyped = { (e: TensorEvidence) in e.nonFiniteChanged == 0 && e.reencodedAs != nil }
        if !differing.isEmpty, sameSet, differing.contains(where: corruptedTensor), differing.allSatisfy({ corruptedTensor($0) || cleanRetyped($0) }) {
            let n = differing.reduce(0) { $0 + $1.nonFiniteChanged }
            let bad = differing.filter(corruptedTensor)
            let types = Set(differing.filter { $0.dtypeA != $0.dtypeB }.map { $0.dtypeB }).sorted()
            return Verdict(kind: "corrupted", confidence: 0.99,
                           summary: "the same weights\(types.isEmpty ? "" : " (stored as \(types.joined(separator: "/")))") except \(n) value\(n == 1 ? "" : "s") that \(n == 1 ? "is" : "are") NaN/±Inf on one side only, in \(bad.count) of \(t.count) tensors: a corrupted copy",
                           evidence: evidence + bad.prefix(8).map { "\($0.name): \($0.nonFiniteChanged) NaN/±Inf values where the other side differs; every finite value " + ($0.relativeL2 == 0 ? "equal" : String(format: "within %@'s rounding (relative L2 %.2e)", $0.dtypeB as NSString, $0.relativeL2)) },
                           details: ["non_finite": "\(n)", "tensors": bad.map(\.name).joined(separator: ",")])
        }
        // 1b. one holds a subset of the other's tensors, unchanged (an extracted part, or a model with extra heads)
        if differing.isEmpty && (onlyA.isEmpty || onlyB.isEmpty) {
            let which = onlyB.isEmpty ? "B holds \(t.count) of A's tensors unchanged; A has \(onlyA.count) more"
                : "A holds \(t.count) of B's tensors unchanged; B has \(onlyB.count) more"
            return Verdict(kind: "subset", confidence: 1, summary: which,
                           evidence: evidence + ["all \(t.count) paired tensors have identical values"], details: [:])
        }
        // 2. re-encoded / quantized
        // A quantized copy may drop heads (a GGUF conversion leaves the pooler out), and a tiny tensor quantized by
        // a coarse type may exceed the bound on its own: at most 1% of the differing parameters may lie outside it,
        // within twice the bound.
        let reenc = differing.compactMap(\.reencodedAs)
        let quantizedTensor = { (e: TensorEvidence, slack: Double) -> Bool in
            // Every block a rounding of A's weights (by whatever quantizer) and the error of a requantization's size:
            // proven, however large the type's error is on these weights (heavy tails). Otherwise within the type's
            // bound, and a measured requantization decides; without one the difference must be noise-like (full rank).
            e.reencodedAs == nil && e.dtypeA != e.dtypeB && e.nonFiniteChanged == 0 && !floatPair(e)
                && (provenRounding(e) || (e.relativeL2 < slack * errorBound(e.dtypeA, e.dtypeB)
                && (e.requantExcess.map { $0 <= 2 } ?? (e.diff.map { Double($0.rank) > 0.5 * Double($0.minDim) } ?? true))
                && !e.quantizedFromOther))
        }
        let quantized = differing.filter { quantizedTensor($0, 1) }
        let loose = differing.filter { $0.reencodedAs == nil && !quantizedTensor($0, 1) && quantizedTensor($0, 2) }
        let diffParams = differing.reduce(0) { $0 + $1.shape.reduce(1, *) }
        let looseParams = loose.reduce(0) { $0 + $1.shape.reduce(1, *) }
        let subsetOnly = onlyA.isEmpty || onlyB.isEmpty
        if subsetOnly, reenc.count + quantized.count + loose.count == differing.count, Double(looseParams) <= 0.01 * Double(max(1, diffParams)) {
            // (an exact requantization "Q8_0" beside "F32→Q8_0" ones is named once, as the arrow)
            let arrows = Set((quantized + loose).map { "\($0.dtypeA)→\($0.dtypeB)" })
            let types = arrows.union(reenc.map { $0.components(separatedBy: " ").first! }.filter { t in !arrows.contains { $0.hasSuffix("→" + t) } })
            let worst = differing.map(\.relativeL2).max() ?? 0
            var ev = evidence
            if !reenc.isEmpty {
                let exactTypes = Set(reenc.map { $0.components(separatedBy: " ").first! }).sorted().joined(separator: "/")
                ev.append("\(reenc.count) tensors are exactly the other rounded to \(exactTypes)")
            }
            ev.append(String(format: "largest relative L2 error %.2e", worst))
            if !quantized.isEmpty { ev.append("\(quantized.count + loose.count) tensors quantized: small full-rank error") }
            let requantized = (quantized + loose).filter { $0.requantizedFrom != nil }
            if !requantized.isEmpty {
                let from = Set(requantized.compactMap(\.requantizedFrom)).sorted().joined(separator: ", ")
                ev.append("\(requantized.count) of them are roundings of a quantized copy of the other's weights (\(from)) rather than of the weights themselves: requantized from that type (llama-quantize --allow-requantize)")
            }
            if !loose.isEmpty { ev.append("\(loose.count) small tensors (\(looseParams) parameters) exceed the type's error bound by up to 2×") }
            let extra = onlyA.count + onlyB.count
            return Verdict(kind: "reencoded", confidence: quantized.isEmpty && loose.isEmpty && extra == 0 ? 1 : 0.9,
                           summary: "same weights re-encoded as \(types.sorted().joined(separator: ", "))"
                               + (extra > 0 ? "; \(extra) tensors exist on one side only" : ""),
                           evidence: ev, details: ["dtype": types.sorted().joined(separator: ",")])
        }
        // 2b. quantized from changed weights: every differing tensor is a re-encoding or within its type's error, and
        // some quantized ones hold blocks that no rounding of the float side's weights gives. A change smaller than
        // the quantization error (a LoRA of 1% of ‖W‖ under Q4_0's 9%) shows there and nowhere else.
        // (When the change stands out of the quantization noise as low-rank, rule 4 names it instead.)
        let fromOther = differing.filter(\.quantizedFromOther)
        let lowRank = { (e: TensorEvidence) in e.diff.map { Double($0.rank) <= Double($0.minDim) / 4 } ?? false }
        if !fromOther.isEmpty, subsetOnly, !differing.filter({ $0.reencodedAs == nil }).allSatisfy(lowRank),
           differing.allSatisfy({ $0.reencodedAs != nil || ($0.dtypeA != $0.dtypeB
                && ($0.relativeL2 < 2 * errorBound($0.dtypeA, $0.dtypeB) || ($0.requantExcess ?? .infinity) <= 2)) }) {
            // float type → quantized type, whichever side is the quantized one
            let types = Set(fromOther.map { $0.dtypeA.hasPrefix("Q") ? "\($0.dtypeB)→\($0.dtypeA), A quantized" : "\($0.dtypeA)→\($0.dtypeB)" })
                .sorted().joined(separator: ", ")
            let bad = fromOther.reduce(0) { $0 + $1.unroundedBlocks! }, tested = fromOther.reduce(0) { $0 + $1.roundingBlocks! }
            var ev = evidence
            ev.append(String(format: "%d of %d tensors have blocks (the elements sharing a scale) that no rounding of the other side's weights gives: %d of %d tested (%.2f%%); a rounding quantizer (llama.cpp's, with or without an importance matrix, or gguf-py's) leaves none",
                             fromOther.count, differing.count, bad, tested, 100 * Double(bad) / Double(max(1, tested))))
            for e in fromOther.sorted(by: { Double($0.unroundedBlocks!) / Double($0.roundingBlocks!) > Double($1.unroundedBlocks!) / Double($1.roundingBlocks!) }).prefix(5) {
                ev.append(String(format: "%@: %d of %d blocks not a rounding; relative L2 %.2e (within the type's error)", e.name as NSString,
                                 e.unroundedBlocks!, e.roundingBlocks!, e.relativeL2))
            }
            ev.append("an error-compensating quantizer (GPTQ, AWQ) also codes blocks that are not roundings, and so does requantizing from a k-quant copy (llama-quantize --allow-requantize from a Q6_K or Q5_K file; from Q8_0 and the legacy types it is recognised): from those, this is no evidence of a change")
            return Verdict(kind: "finetuned", confidence: 0.95,
                           summary: "changed, then quantized (\(types)): the quantized side's codes are not a rounding of the other's weights in "
                               + String(format: "%.2f%%", 100 * Double(bad) / Double(max(1, tested))) + " of the blocks tested; "
                               + "the change is within the quantization error, so what it was (a fine-tune, a merged LoRA) and its rank cannot be told",
                           evidence: ev,
                           details: ["quantized": types, "unrounded_blocks": "\(bad)", "tested_blocks": "\(tested)",
                                     "tensors": fromOther.map(\.name).joined(separator: ",")])
        }
        // Tensors that only changed storage type (exact rounding, e.g. biases saved as F16 alongside pruned or
        // LoRA-merged weights) do not stand in the way of rules 3 and 4.
        let changed = differing.filter { $0.reencodedAs == nil }
        // Storage types one side was rounded to: B's (", then stored as F16", the usual order: the change, then a
        // narrower save) or A's (A is the narrow copy of the weights B changed).
        let roundedTo = differing.compactMap { e in e.reencodedAs.map { (type: String($0.prefix { $0 != " " }), isA: String($0.prefix { $0 != " " }) == e.dtypeA) } }
        let storedAs = Set(roundedTo.filter { !$0.isA }.map(\.type) + differing.compactMap(\.alsoReencodedAs)).sorted()
        let aStoredAs = Set(roundedTo.filter(\.isA).map(\.type)).sorted()
        let storedNote = (storedAs.isEmpty ? "" : ", then stored as \(storedAs.joined(separator: "/"))")
            + (aStoredAs.isEmpty ? "" : " (A is stored as \(aStoredAs.joined(separator: "/")))")
        // 3. pruned
        // (Some weight must be kept: a model of zeros is "pruned" from anything and says nothing.)
        if sameSet, !changed.isEmpty, changed.allSatisfy(\.prunedFromA), changed.contains(where: { $0.minKeptMagnitude != nil }) {
            let differing = changed
            let newZeros = differing.reduce(0) { $0 + $1.newZeros }
            let prunable = differing.reduce(0) { $0 + $1.shape.reduce(1, *) }
            let maxZeroed = differing.compactMap(\.maxZeroedMagnitude).max() ?? 0
            let minKept = differing.compactMap(\.minKeptMagnitude).min() ?? .infinity
            let global = maxZeroed <= minKept
            let perLayer = differing.allSatisfy { ($0.maxZeroedMagnitude ?? 0) <= ($0.minKeptMagnitude ?? .infinity) }
            let patterns = Set(differing.compactMap(\.nmPattern))
            let pattern = patterns.count == 1 && differing.allSatisfy { $0.nmPattern != nil } ? patterns.first! : "unstructured"
            let scope = pattern != "unstructured" ? "N:M" : global ? "global magnitude" : perLayer ? "per-layer magnitude" : "not magnitude-ordered"
            let sparsity = Double(newZeros + differing.reduce(0) { $0 + $1.zerosA }) / Double(max(1, prunable))
            return Verdict(kind: "pruned", confidence: global || perLayer || pattern != "unstructured" ? 0.99 : 0.8,
                           summary: String(format: "pruned derivative: %.1f%% of the pruned tensors' weights are zero (%@, %@)", sparsity * 100,
                                           pattern as NSString, scope as NSString) + storedNote,
                           evidence: evidence + ["\(differing.count) tensors equal A except \(newZeros) new zeros",
                                                 minKept.isFinite ? String(format: "largest zeroed |w| %.4g vs smallest kept %.4g", maxZeroed, minKept)
                                                     : String(format: "largest zeroed |w| %.4g; no non-zero weight kept", maxZeroed)],
                           details: ["sparsity": String(format: "%.4f", sparsity), "pattern": pattern, "scope": scope,
                                     "tensors": differing.map(\.name).joined(separator: ",")])
        }
        // 3b. A is the pruned one
        if sameSet, !changed.isEmpty, changed.allSatisfy(\.prunedFromB), changed.contains(where: { $0.zerosA < $0.shape.reduce(1, *) }) {
            let differing = changed   // tensors that only changed storage type (A's biases stored as F16) do not count
            let size = differing.reduce(0) { $0 + $1.shape.reduce(1, *) }
            let zeros = differing.reduce(0) { $0 + $1.zerosA }
            let sparsity = Double(zeros) / Double(max(1, size))
            return Verdict(kind: "pruned", confidence: 0.95,
                           summary: String(format: "pruned derivative: A is B with weights zeroed; %.1f%% of those %d tensors' weights are zero in A",
                                           sparsity * 100, differing.count),
                           evidence: evidence + ["\(differing.count) tensors of A equal B except for zeros: \(zeros) of their \(size) weights are zero in A"],
                           details: ["direction": "A pruned from B", "tensors": differing.map(\.name).joined(separator: ",")])
        }
        // 4. merged LoRA
        // (1-D tensors changed beside them, biases trained with the adapter, and tensors on one side only, an added
        // head, do not stand in the way: the summary names them.)
        let changedMatrices = changed.filter { $0.shape.count == 2 }, changedVectors = changed.filter { $0.shape.count <= 1 }
        if sameSet || subsetOnly, !changedMatrices.isEmpty, changedMatrices.count + changedVectors.count == changed.count,
           changedMatrices.allSatisfy(lowRank) {
            let differing = changedMatrices
            let rank = differing.map { $0.diff!.rank }.max() ?? 0
            let extras = (changedVectors.isEmpty ? "" : "; \(changedVectors.count) bias or norm vector\(changedVectors.count == 1 ? "" : "s") changed too")
                + (sameSet ? "" : "; \(onlyA.count + onlyB.count) tensor\(onlyA.count + onlyB.count == 1 ? " exists" : "s exist") on one side only")
            let quantTypes = Set(fromOther.map(\.dtypeB).filter { $0.hasPrefix("Q") } + fromOther.map(\.dtypeA).filter { $0.hasPrefix("Q") })
                .subtracting(storedAs).subtracting(aStoredAs).sorted()
            let quantNote = quantTypes.isEmpty ? "" : ", then quantized as \(quantTypes.joined(separator: "/"))"
            return Verdict(kind: "lora_merged", confidence: 0.95,
                           summary: "low-rank update merged (estimated rank \(rank)) into \(differing.count) of \(t.count) tensors" + storedNote + quantNote + extras,
                           evidence: evidence + differing.map { String(format: "%@: Δ has rank %d of %d (%.6f of its energy in the top 4)", $0.name as NSString,
                                                                       $0.diff!.rank, $0.diff!.minDim, $0.diff!.energyTop["4"] ?? 0) },
                           details: ["rank": "\(rank)", "modules": differing.map(\.name).joined(separator: ",")])
        }
        // 5. permuted copy: after alignment the models coincide (or are a direct derivative of each other)
        if let al = aligned, let alignment, !alignment.identity {
            let moved = alignment.perms.filter { !Permuter.isIdentity($0.value) }.map(\.key).sorted()
            let inner = verdict(tensors: al, onlyA: onlyA, onlyB: onlyB, independence: nil, aligned: nil, alignment: nil)
            if ["identical", "subset", "corrupted", "reencoded", "pruned", "lora_merged"].contains(inner.kind) {
                let worst = al.map(\.relativeL2).max() ?? .infinity
                var details = inner.details
                details["groups"] = moved.joined(separator: ",")
                details["then"] = inner.kind
                return Verdict(kind: "permuted", confidence: min(0.99, inner.confidence),
                               summary: "permuted copy: after aligning \(moved.count) permutation groups the models " +
                                   (inner.kind == "identical" ? "coincide" : "are related directly (\(inner.summary))"),
                               evidence: evidence + [String(format: "after Git Re-Basin alignment the largest relative L2 difference is %.2e", worst),
                                                     "permuted groups: \(moved.joined(separator: ", "))"] + inner.evidence.dropFirst().map { "after alignment: " + $0 },
                               details: details)
            }
            // Without an independence test, the aligned models' similarity is the evidence: a fine-tune whose hidden
            // units were permuted is close only after alignment (GPT-2 names, which the test does not read).
            if independence == nil, inner.kind == "finetuned" {
                return Verdict(kind: "finetuned", confidence: inner.confidence,
                               summary: "closely related after aligning \(moved.count) permutation groups, with hidden units permuted: " + inner.summary,
                               evidence: evidence + ["permuted groups: \(moved.joined(separator: ", "))"] + inner.evidence.dropFirst().map { "after alignment: " + $0 },
                               details: inner.details.merging(["groups": moved.joined(separator: ",")]) { a, _ in a })
            }
        }
        // 5b. partly shared: weight matrices identical to the bit on both sides (not constant ones, which two
        // independent initialisations can share) cannot come from independent training. A replaced or re-initialised
        // head, layers fine-tuned while the rest stayed frozen, or tensors whose shape changed. They must hold at
        // least 10% of the paired parameters: fixed buffers that independent models also share (a causal mask, a
        // sinusoidal position table) are small next to the weights.
        if !shared.isEmpty, Double(sharedParams) >= 0.1 * Double(params) {
            let changedNames = (differing.map(\.name) + Array(Set(onlyA).union(onlyB)).sorted())
            let listed = changedNames.prefix(6).joined(separator: ", ") + (changedNames.count > 6 ? ", …" : "")
            return Verdict(kind: "finetuned", confidence: 0.99,
                           summary: "derived from the other: \(shared.count) weight matrices (\(sharedParams) parameters) are identical; "
                               + "\(changedNames.count) tensors changed or exist on one side only (\(listed)): replaced or retrained layers, the rest frozen",
                           evidence: evidence,
                           details: ["shared": shared.map(\.name).joined(separator: ","), "changed": changedNames.joined(separator: ","),
                                     "cosine": String(format: "%.6f", meanCos)])
        }
        // 6./7. fine-tuned or independent, by the independence test (and similarity as supporting evidence)
        if let ind = independence {
            if ind.dependent {
                var ev = evidence
                var summary = "fine-tuned from the other, or both from a shared ancestor"
                if let al = aligned, let alignment, !alignment.identity {
                    let c = al.reduce(0.0) { $0 + $1.cosine * Double($1.shape.reduce(1, *)) } / Double(max(1, params))
                    ev.append(String(format: "after alignment the parameter-weighted cosine is %.4f (before %.4f)", c, meanCos))
                    // Said only when the test's own matchings moved units: the sign-blind alignment also shuffles
                    // units whose weights were negated in place (a tanh sign flip, a negated model).
                    if ind.layers.contains(where: { ($0.moved ?? 1) > 0 }) { summary += ", with hidden units permuted" }
                }
                let flipped = ind.layers.reduce(0) { $0 + ($1.flipped ?? 0) }
                if flipped > 0 { summary += ", \(flipped) hidden unit\(flipped == 1 ? "" : "s") with \(flipped == 1 ? "its" : "their") weights negated" }
                return Verdict(kind: "finetuned", confidence: min(0.999, 1 - ind.pValue), summary: summary, evidence: ev,
                               details: ["p_value": String(format: "%.3g", ind.pValue), "cosine": String(format: "%.6f", meanCos)])
            }
            let why = ind.pValue < ind.threshold
                ? String(format: "independent: the two unit matchings agree on few units (median Spearman ρ %.2f < %.1f), as shared features of independently trained networks do (p = %.3g)", ind.medianSpearman, IndependenceTest.minimumAgreement, ind.pValue)
                : shared.isEmpty ? String(format: "independent: no evidence of a shared origin (p = %.3g)", ind.pValue)
                : String(format: "independent by the independence test (p = %.3g), though %d small matrices are bit-identical (below the 10%% of parameters that would make the pair derived)", ind.pValue, shared.count)
            // A high p only means something when the test could have seen a shared origin: with few units even a copy
            // can fail to reach the threshold. Confidence grows with p and with the units matched (64 or more: full).
            let units = ind.layers.reduce(0) { $0 + $1.units }
            let power = min(1, Double(units) / 64)
            return Verdict(kind: "independent", confidence: 0.5 + (min(0.99, max(0.5, ind.pValue * 10)) - 0.5) * power,
                           summary: why, evidence: evidence,
                           details: ["p_value": String(format: "%.3g", ind.pValue), "cosine": String(format: "%.6f", meanCos)])
        }
        // No test possible (no MLP structure, or none within a memory budget): fall back to similarity.
        if meanCos > 0.9 {
            return Verdict(kind: "finetuned", confidence: 0.6, summary: "closely related (cosine > 0.9); " + (untested.map { "no independence test: \($0)" } ?? "no independence test for this architecture"),
                           evidence: evidence, details: ["cosine": String(format: "%.6f", meanCos)])
        }
        if let why = untested {
            return Verdict(kind: "independent", confidence: 0.3,
                           summary: "no shared structure found element by element; no independence test: \(why). A copy with its hidden units permuted would read the same",
                           evidence: evidence, details: ["cosine": String(format: "%.6f", meanCos)])
        }
        return Verdict(kind: "independent", confidence: 0.5, summary: "no shared structure found; no independence test for this architecture",
                       evidence: evidence, details: ["cosine": String(format: "%.6f", meanCos)])
    }

    /// Why a path has no barrier: the evaluator failed (or returned NaN) at λ.
    public struct PathError: Error, CustomStringConvertible {
        public var lambda: Double
        public var reason: String
        public var description: String { reason }
    }

    /// Linear-mode connectivity: evaluate θ(λ) = (1−λ)θA + λθB on a grid. Without an evaluator, only the path's length.
    /// `first`: the evaluator's result on A (λ = 0) when already known (the aligned path starts where the first one
    /// did). An evaluator failure is a PathError naming λ; a NaN result at λ = 0 is one too, and a NaN further along
    /// leaves the curve without a barrier (`nanAt`).
    public static func connectivity(_ a: WeightSet, _ b: WeightSet, evaluator: Evaluator?, grid: Int = 25, first: EvalResult? = nil) throws -> ConnectivityCurve {
        let names = a.names.filter { b.values[$0] != nil && a.shapes[$0] == b.shapes[$0] }
        var dist = 0.0
        // (over the weights finite on both sides, as the evidence measures them)
        for n in names { for (x, y) in zip(a.values[n]!, b.values[n]!) { let d = Double(y) - Double(x); if d.isFinite { dist += d * d } } }
        let lambdas = (0..<grid).map { Double($0) / Double(grid - 1) }
        guard let evaluator else { return ConnectivityCurve(lambdas: lambdas, loss: nil, accuracy: nil, metric: nil, barrier: nil, distance: dist.squareRoot()) }
        var loss: [Double] = [], acc: [Double] = [], metric: [Double] = [], higherBetter = true
        var nanAt: [Double] = []
        for l in lambdas {
            let r: EvalResult
            if l == 0, let first { r = first } else {
                var w = a
                for n in names {
                    let x = a.values[n]!, y = b.values[n]!
                    w.values[n] = zip(x, y).map { Float((1 - l) * Double($0) + l * Double($1)) }
                }
                do { r = try evaluator.evaluate(w) } catch { throw PathError(lambda: l, reason: "\(error)") }
            }
            if r.metric.isNaN || (r.loss?.isNaN ?? false) {
                if l == 0 { throw PathError(lambda: 0, reason: "the evaluator returned NaN on A's own weights (λ = 0)") }
                nanAt.append(l)
            }
            if let v = r.loss { loss.append(v) }
            if let v = r.accuracy { acc.append(v) }
            metric.append(r.metric); higherBetter = r.higherIsBetter
        }
        // The barrier is taken on the loss when the evaluator reports one, else on the metric oriented so that
        // lower is better. A NaN along the path (the model broke there) leaves no barrier to state.
        let curve = loss.count == lambdas.count ? loss : (higherBetter ? metric.map { -$0 } : metric)
        let barrier = nanAt.isEmpty ? (curve.max() ?? 0) - 0.5 * (curve.first! + curve.last!) : nil
        var c = ConnectivityCurve(lambdas: lambdas, loss: loss.isEmpty ? nil : loss, accuracy: acc.isEmpty ? nil : acc,
                                  metric: metric, barrier: barrier, distance: dist.squareRoot(), higherIsBetter: higherBetter)
        c.nanAt = nanAt.isEmpty ? nil : nanAt
        c.barrierOn = loss.count == lambdas.count ? "loss" : "metric"
        return c
    }
}
