import ArgumentParser
import Foundation
import WscanFormats
import WscanCatalog
import WscanAnalysis

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "What is the relationship between two checkpoints? Evidence, verdict, independence test, alignment, connectivity.",
        discussion: """
        Verdicts: identical, corrupted (the same weights but for NaN/±Inf written over some), reencoded \
        (dtype/quantization), pruned (sparsity, pattern), lora_merged (rank, modules), \
        permuted (coincide after alignment), finetuned (fine-tune or shared ancestor), subset (the shared tensors are \
        unchanged, one side has more), independent, incomparable (no \
        floating-point tensors could be paired: different architectures). \
        Tensors pair by name (a matrix stored transposed too), else by shape: by value where the likeness is clear, else by position in natural name order. Alignment is Git Re-Basin weight matching over the \
        permutation symmetries inferred from the architecture (MLP chains; BERT/GPT-2/Llama and llama.cpp GGUF feed-forward units; \
        BERT attention heads when config.json gives num_attention_heads). By default it runs when the models are \
        neither identical nor a direct derivative. With --data or --eval, linear-mode connectivity gives loss and \
        accuracy along θ(λ) = (1−λ)θA + λθB before and after alignment, and the barrier. \
        Two models whose decoded weights exceed --memory are compared in bounded memory (see --memory). \
        Exit status: 0 (the verdict is reported, whatever it is), 2 usage, 1 unreadable input or a requested analysis \
        that does not fit --memory.
        """)
    @OptionGroup var catalog: CatalogOptions
    @OptionGroup var eval: EvalOptions
    @Argument(help: "Checkpoint A (catalog id, name, or path).") var a: String
    @Argument(help: "Checkpoint B.") var b: String
    @Flag(help: "Always run the permutation alignment.") var align = false
    @Flag(help: "Never run the permutation alignment.") var noAlign = false
    @Option(help: "Write B permuted into A's basis to this .safetensors file (implies --align).") var writeAligned: String?
    @Option(help: "Points on the interpolation path.") var grid: Int = 25
    @Option(help: "Seed for the order of the alignment sweeps.") var seed: UInt64 = 0
    @Flag(help: "Print every tensor's evidence.") var tensors = false
    @Flag(help: "Load tensors from pickle files the scanner flags (still executes nothing).") var trust = false
    @Option(help: ArgumentHelp("Memory the decoded weights of both checkpoints may take (e.g. 16G; default: half the RAM).",
                               discussion: "Above it the comparison is bounded: tensor pairs are judged one per core at a time, the independence test runs on the feed-forward layers that fit, and there is no alignment or connectivity (asking for them is an error)."))
    var memory: String?

    func run() throws {
        if align && noAlign { throw ValidationError("--align and --no-align exclude each other") }
        if writeAligned != nil && noAlign { throw ValidationError("--write-aligned aligns B first: it excludes --no-align") }
        guard grid >= 3 else { throw ValidationError("--grid must be at least 3") }
        let cat = try catalog.open()
        let ra = try resolveCheckpoint(a, catalog: cat, trust: trust), rb = try resolveCheckpoint(b, catalog: cat, trust: trust)
        for r in [ra, rb] where r.status != "ok" { throw CLIError("\(r.path): \(r.error ?? r.status)") }
        var o = CompareRunner.Options()
        o.align = (align || writeAligned != nil) ? .always : noAlign ? .never : .auto
        if let w = writeAligned { try catalog.refuseCatalogAsOutput(w) }
        o.grid = grid; o.seed = seed; o.writeAligned = writeAligned; o.trust = trust
        if let m = memory {
            guard let b = Fmt.parseSize(m), b > 0 else { throw ValidationError("--memory must be a size such as 512M or 16G") }
            o.memoryBudget = b
        }
        if eval.data != nil || eval.evalCommand != nil {
            // The evaluator holds A: refuse before loading it when the path could not run anyway.
            let need = try CompareRunner.decodedNeed(a: ra, b: rb, trust: trust), budget = o.memoryBudget ?? SpectrumOptions.halfPhysicalMemory
            if need > budget { throw CLIError(CompareRunner.overBudget("the connectivity path (--data/--eval)", need: need, budget: budget)) }
            // The candidate an external command gets is A's checkpoint (integer buffers and unpaired tensors in their
            // own dtypes) with the interpolated tensors replaced.
            let ckA = try CheckpointOpener.openNamed(ra.path, options: .init(trust: trust))
            o.evaluator = try eval.make(weights: try WeightSet.load(ckA), passThrough: WeightSet(), source: ckA, trust: trust)
        }
        let r = try CompareRunner.compare(catalog: cat, a: ra, b: rb, options: o)
        if catalog.json { print(Fmt.json(r)); return }
        CompareText.show(r, nameA: ra.name, nameB: rb.name, allTensors: tensors)
        if let w = writeAligned { print("wrote B aligned to A: \(w)") }
        for n in r.notes ?? [] { printErr("wscan: warning: \(n)") }
    }
}

enum CompareText {
    static func show(_ r: CompareResult, nameA: String, nameB: String, allTensors: Bool) {
        let v = r.verdict
        print("A: \(nameA)\nB: \(nameB)\n")
        print("verdict: \(v.kind.uppercased())  (confidence \(String(format: "%.2f", v.confidence)))")
        print("  \(v.summary)")
        for e in v.evidence { print("  - \(e)") }
        if let ind = r.independence {
            print("\nindependence test (Zhu et al. 2025, permutation-robust matching): p = \(String(format: "%.3g", ind.pValue))" +
                        (ind.dependent ? "  → not independent" : "  → consistent with independent training"))
            print(Fmt.table(["layer", "units", "spearman", "p", "matched cosine"],
                                  ind.layers.map { [$0.group, "\($0.units)", String(format: "%.3f", $0.spearman), String(format: "%.3g", $0.pValue),
                                                    String(format: "%.3f", $0.meanCosine)] }, numeric: [1, 2, 3, 4]))
        }
        if let al = r.alignment {
            let moved = al.perms.filter { !Permuter.isIdentity($0.value) }.count
            print("\nalignment (Git Re-Basin weight matching, \(al.family)): \(al.sweeps) sweeps, \(moved) of \(al.perms.count) groups permuted, " +
                        String(format: "objective %.4g → %.4g", al.objectiveBefore, al.objectiveAfter))
            for n in al.notes { print("  note: \(n)") }
        }
        let shown = allTensors ? r.tensors : Array(r.tensors.filter { !$0.identicalValues }.prefix(12))
        if !shown.isEmpty {
            print("")
            print(Fmt.table(["tensor", "match", "dtypes", "cosine", "rel_L2", "max_diff", "sign_agree", "new_zeros", "Δ rank", "Δ top-4"],
                                  shown.map { e in
                                      [e.name, e.matchedBy == "name" ? "name" : e.matchedBy == Comparator.transposedMatch ? "name, transposed"
                                          : "\(e.matchedBy)→\(e.nameB)", e.dtypeA == e.dtypeB ? e.dtypeA : "\(e.dtypeA)→\(e.dtypeB)",
                                       String(format: "%.6f", e.cosine), Fmt.num(e.relativeL2), Fmt.num(e.maxAbsDiff), String(format: "%.4f", e.signAgreement),
                                       "\(e.newZeros)", e.diff.map { "\($0.rank)/\($0.minDim)" } ?? "-",
                                       e.diff.map { String(format: "%.4f", $0.energyTop["4"] ?? 0) } ?? "-"]
                                  }, numeric: [3, 4, 5, 6, 7]))
            let identical = r.tensors.filter(\.identicalValues).count
            if !allTensors { print("(\(identical) of \(r.tensors.count) tensors identical; --tensors lists all)") }
        }
        if let c = r.connectivity {
            print("\nlinear-mode connectivity: \(c.note)")
            func line(_ label: String, _ k: ConnectivityCurve) {
                var s = "  \(label): ‖θB − θA‖ = \(Fmt.num(k.distance))"
                if let b = k.barrier { s += String(format: ", barrier %.4f", b) }
                if let l = k.loss { s += String(format: ", loss at λ=0.5 %.4f", l[l.count / 2]) }
                if let a = k.accuracy { s += String(format: ", accuracy at λ=0.5 %.4f (min %.4f)", a[a.count / 2], a.min() ?? 0) }
                print(s)
            }
            line("before alignment", c.before)
            if let a = c.after { line("after alignment ", a) }
        }
    }
}

struct LineageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lineage",
        abstract: "Relationships among everything in the catalog (pairwise verdicts, pruned by fingerprints).",
        discussion: """
        Only checkpoints with the same tensor shapes are compared; equal content fingerprints are identical without \
        decoding. Independent pairs are left out of the listing unless --all. Results are stored for `wscan report --lineage`.
        """)
    @OptionGroup var catalog: CatalogOptions
    @Flag(help: "Also list independent pairs.") var all = false
    @Flag(help: "Load tensors from pickle files the scanner flags (still executes nothing).") var trust = false

    func run() throws {
        let cat = try catalog.open(create: false)
        let bar = ProgressBar()
        let lin = try CompareRunner.lineage(catalog: cat, includeIndependent: all, trust: trust) { k, n in bar.update(items: k, of: n, unit: "pairs", label: "") }
        bar.finish()
        // A checkpoint that could not be read (gone, changed, unreadable) is a failed input: exit 1.
        if catalog.json { print(Fmt.json(lin)); if !(lin.failed ?? []).isEmpty { throw ExitCode(1) }; return }
        let fp = lin.fingerprintPairs, np = lin.uncomparedPairs ?? (lin.failed ?? []).count, nc = (lin.failed ?? []).count - np
        print("\(lin.checkpoints.count) checkpoints, \(lin.pairs) pairs: \(lin.compared) compared, "
              + "\(fp) identical by content fingerprint, \(lin.skippedPairs) skipped (different shapes)" + (np > 0 ? ", \(np) not compared" : "")
              + (nc > 0 ? "; \(nc) checkpoint\(nc == 1 ? "" : "s") could not be read" : ""))
        print(Fmt.table(["A", "B", "relationship", "confidence", "summary"],
                              lin.edges.map { [$0.a, $0.b, $0.kind, String(format: "%.2f", $0.confidence),
                                               $0.summary.count > 90 ? String($0.summary.prefix(89)) + "…" : $0.summary] }, numeric: [3]))
        for f in lin.failed ?? [] { printErr("wscan: warning: not compared: \(f)") }
        // entries indexed with an error (unreadable, unsafe): named, as the JSON lists them
        if let nr = lin.notRead, !nr.isEmpty {
            printErr("wscan: note: \(nr.count) catalog entr\(nr.count == 1 ? "y" : "ies") left out (not readable): \(nr.prefix(8).joined(separator: ", "))\(nr.count > 8 ? ", …" : "")")
        }
        if !(lin.failed ?? []).isEmpty { throw ExitCode(1) }
    }
}
