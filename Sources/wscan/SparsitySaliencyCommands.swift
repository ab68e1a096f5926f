import ArgumentParser
import Foundation
import WscanKernels
import WscanFormats
import WscanCatalog
import WscanAnalysis
import WscanReport

/// How an analysis measures task quality: the built-in MLP forward pass on a dataset, or an external command.
struct EvalOptions: ParsableArguments {
    @Option(help: "Dataset (.npz with x [N, d] and y [N]) for the built-in MLP evaluator.") var data: String?
    @Option(help: "Activation between the built-in evaluator's layers: relu (default), gelu or tanh.") var activation: String?
    @Option(name: .customLong("eval"), help: "External evaluator: a shell command; {ckpt} becomes the candidate .safetensors file. The last number it prints is the metric.")
    var evalCommand: String?
    @Option(help: "Seconds before the external evaluator is stopped.") var evalTimeout: Double = 600
    @Flag(help: "The external evaluator's number is a loss (lower is better).") var evalLowerIsBetter = false

    /// `source`, when given, is the checkpoint the weights come from: an external evaluator's candidate file then
    /// carries all of its tensors (integer buffers included) in their own dtypes, the evaluated ones replaced.
    func make(weights: WeightSet, passThrough: WeightSet, source: Checkpoint? = nil, trust: Bool = false) throws -> Evaluator? {
        if data != nil && evalCommand != nil { throw ValidationError("give --data or --eval, not both") }
        if activation != nil && data == nil { throw ValidationError("--activation applies to the built-in evaluator only (--data)") }
        if let cmd = evalCommand {
            guard evalTimeout > 0, evalTimeout.isFinite else { throw ValidationError("--eval-timeout must be a positive number of seconds") }
            return ExternalEvaluator(command: cmd, timeout: evalTimeout, higherIsBetter: !evalLowerIsBetter, passThrough: passThrough, source: source)
        }
        if evalLowerIsBetter { throw ValidationError("--eval-lower-is-better applies to --eval only") }
        guard let data else { return nil }
        guard let act = MLPEvaluator.Activation(rawValue: activation ?? "relu") else { throw ValidationError("--activation must be relu, gelu or tanh") }
        let ds = try Dataset.load(data, trust: trust)
        do {
            return try MLPEvaluator(weights: passThrough.merged(with: weights), x: ds.x, y: ds.y, features: ds.features, activation: act)
        } catch { throw CLIError("\(data): \(error)") }
    }
}

/// Opens a catalogued (or on-the-fly indexed) checkpoint for an analysis.
func openForAnalysis(_ ref: String, catalog: CatalogOptions, trust: Bool = false) throws -> (Catalog, CheckpointRow, Checkpoint) {
    let cat = try catalog.open()
    let row = try resolveCheckpoint(ref, catalog: cat, trust: trust)
    guard row.status == "ok" else { throw CLIError("\(row.path): \(row.error ?? row.status)") }
    return (cat, row, try CheckpointOpener.openNamed(row.path, options: .init(trust: trust)))
}

struct SparsityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sparsity",
        abstract: "Essential-sparsity curve: one-shot magnitude pruning over a sparsity grid.",
        discussion: """
        Prunes every ≥2-D floating-point weight (or those matching --tensors) by magnitude, globally or per layer, \
        unstructured or N:M (N zeros in each group of M along the input axis), at each grid point (default 0–95% in \
        steps of 5% and 99%, then 6 more points around the knee). Reports the relative Frobenius error and retained \
        energy per layer and overall, and the evaluator's metric when --data or --eval is given. \
        Essential sparsity: (1) the largest sparsity whose metric stays within --tolerance (relative) of dense — \
        accuracy with an evaluator, retained energy without; (2) the Kneedle knee of the same curve.
        """)
    @OptionGroup var catalog: CatalogOptions
    @OptionGroup var eval: EvalOptions
    @Argument(help: "Catalog id, name, or a path.") var checkpoint: String
    @Option(help: "global or layer") var scope: String = "global"
    @Option(help: "unstructured, or N:M such as 2:4 or 4:8") var pattern: String = "unstructured"
    @Option(help: "Sparsity grid (comma-separated fractions).", transform: parseGrid) var grid: [Double]?
    @Option(help: "Relative tolerance for the essential sparsity.") var tolerance: Double = 0.01
    @Option(help: "Only tensors matching these shell globs (comma-separated).") var tensors: String?
    @Option(help: "Also write the pruned checkpoint at --at to this .safetensors file.") var writePruned: String?
    @Option(help: "Sparsity for --write-pruned (default: the essential sparsity within tolerance).") var at: Double?
    @Flag(help: "Do not add refinement points around the knee.") var noRefine = false
    @Flag(help: "Load tensors from pickle files the scanner flags (still executes nothing).") var trust = false

    func run() throws {
        guard let sc = SparsityScope(rawValue: scope) else { throw ValidationError("--scope must be global or layer") }
        guard let pat = SparsityPattern.parse(pattern) else { throw ValidationError("--pattern must be unstructured or N:M (e.g. 2:4)") }
        let pattern = pat.description              // the canonical spelling ("02:4" is 2:4) is what is stored and written
        guard tolerance >= 0, tolerance < 1 else { throw ValidationError("--tolerance must be a fraction in [0, 1)") }
        if let at, !(at >= 0 && at < 1) { throw ValidationError("--at must be a sparsity in [0, 1)") }
        if at != nil && writePruned == nil { throw ValidationError("--at needs --write-pruned") }
        if case .nm = pat {
            if grid != nil || at != nil { throw ValidationError("--grid and --at do not apply to an N:M pattern (its sparsity is N/M)") }
            if sc == .layer { printErr("wscan: warning: --scope layer does not apply to an N:M pattern (every group of M is pruned alike)") }
        }
        let (cat, row, ck) = try openForAnalysis(checkpoint, catalog: catalog, trust: trust)
        let floats = firstByName(ck.tensors.filter { $0.dtype.isFloatingPoint && $0.dtype.decodable })
        let allNames = Set(floats.map(\.name))
        // Model weights only: optimizer state stored beside them (Adam's moments) is not pruned, nor evaluated.
        // Tied tensors (one storage under two names: an embedding and its output head) are one parameter: pruned
        // once, and the alias written (and evaluated) as its primary; a glob that selects one member selects the group.
        let (prunable, tied) = tiedSelection(ck, floats.filter { $0.shape.count >= 2 && !Saliency.isOptimizerState($0.name, among: allNames) }.map(\.name),
                                             selected: { SpectrumRunner.globMatch(tensors, $0) })
        guard !prunable.isEmpty else { throw CLIError("no ≥2-D floating-point weights to prune\(tensors.map { " matching \($0)" } ?? "")") }
        if !tied.isEmpty { printErr("wscan: warning: " + tiedNote(tied)) }
        try WeightSet.refuseNarrowing(ck, names: prunable)
        let g = grid ?? Sparsity.defaultGrid()
        // Without an evaluator nothing needs the model in memory: the passes decode chunks from the mapped file as
        // they go, so a model larger than memory can be analysed. An evaluator measures pruned copies of it.
        let src: TensorSource
        var evaluator: Evaluator?
        var curve: SparsityCurve
        if eval.data != nil {
            // The built-in evaluator runs the model, so it is loaded (with --eval as well, make() refuses both).
            let all = try WeightSet.load(ck)
            let w = all.subset(prunable)
            let rest = all.subset(all.names.filter { !prunable.contains($0) && !Saliency.isOptimizerState($0, among: allNames) })
            evaluator = try eval.make(weights: w, passThrough: rest, source: ck, trust: trust)
            let curveEval: Evaluator? = evaluator.map { ev in PassThroughEvaluator(inner: ev, rest: rest, aliases: tied) }
            curve = try Sparsity.curve(w, tensors: prunable, scope: sc, pattern: pat, grid: g, tolerance: tolerance,
                                       evaluator: curveEval, refine: !noRefine)
            src = ArraySource(w, tensors: prunable)
        } else {
            // The option checks, and the external evaluator when --eval is given.
            let ext = try eval.make(weights: WeightSet(), passThrough: WeightSet(), source: ck, trust: trust) as? ExternalEvaluator
            evaluator = ext
            let s = try CheckpointSource(ck, tensors: prunable)
            src = s
            // An external command gets each candidate written tensor by tensor from the mapped checkpoint: every
            // tensor in its own dtype, the pruned ones replaced. Each point writes a candidate and runs the command
            // (minutes for a large model): a bar on a terminal.
            let bar = ProgressBar(), done = UnsafeSendableBox([0])
            let planned = pat == .unstructured ? Set(g + [0]).count + (noRefine ? 0 : 6) : 2
            defer { bar.finish() }
            let evaluate: ((PruneSpec) throws -> EvalResult)? = ext.map { ev in { spec in
                try refuseIfChanged(ck)             // an evaluator that writes over the model would shift every read
                let k = done.get(0)
                bar.update(items: k, of: max(planned, k + 1), unit: "points", label: "evaluating with \(ev.command)")
                defer { done.set(0, k + 1) }
                return try ev.evaluate(writingCandidate: { file in
                    _ = try Exporter.export(ck, to: file, dtype: .keep, include: { _ in true }, replacingLazily: prunedLazily(s, spec, aliases: tied),
                                            metadata: ["written_by": "wscan evaluator"])
                })
            } }
            curve = try Sparsity.curve(s, scope: sc, pattern: pat, grid: g, tolerance: tolerance, evaluate: evaluate,
                                       evaluatorName: ext?.description, refine: !noRefine)
        }
        try refuseIfChanged(ck)
        struct Params: Encodable { var scope: String; var pattern: String; var grid: [Double]; var tolerance: Double; var tensors: String?; var evaluator: String? }
        let e = curve.essential
        let summary = String(format: "essential sparsity %.1f%% (within %@ of dense %@), knee %@", e.withinTolerance * 100, Fmt.percent(tolerance) as NSString,
                             e.metric as NSString, (e.knee.map { String(format: "%.1f%%", $0 * 100) } ?? "none") as NSString)
        try cat.storeResult(kind: "sparsity", checkpoint: row.id,
                            params: Params(scope: scope, pattern: pattern, grid: g, tolerance: tolerance, tensors: tensors, evaluator: evaluator?.description),
                            summary: summary, data: curve, analysed: [row])
        var written: (path: String, achieved: Double)?
        if let out = writePruned {
            try catalog.refuseCatalogAsOutput(out)
            let s = pat == .unstructured ? (at ?? e.withinTolerance) : pat.sparsityValue
            let spec: PruneSpec
            if case let .nm(n, m) = pat { spec = .nm(n: n, m: m) } else { spec = .cuts(try Sparsity.cuts(src, scope: sc, sparsity: s)) }
            // Each pruned tensor is made when the writer reaches it; its zeros are counted on the way.
            let zeros = UnsafeSendableBox([Int](repeating: 0, count: prunable.count))
            // Every tensor of the checkpoint, in its own dtype, with the pruned ones replaced.
            let lazy = prunedLazily(src, spec, aliases: tied) { t, v in zeros.set(t, v.reduce(0) { $0 + ($1 == 0 ? 1 : 0) }) }
            let rep = try Exporter.export(ck, to: out, dtype: .keep, include: { _ in true }, replacingLazily: lazy,
                                          metadata: ["pruned_by": "wscan", "sparsity": "\(s)", "scope": scope, "pattern": pattern])
            // tensors copied as they are: their zeros as written (an F64 below float32's range is not one)
            for (t, name) in src.names.enumerated() where lazy[name] == nil {
                if let ti = ck.tensors.first(where: { $0.name == name }), ti.dtype == .f64, ti.layout == .contiguous, !ti.bigEndian {
                    let raw = ck.bytes(of: ti)
                    zeros.set(t, (0..<(raw.count / 8)).reduce(0) { $0 + (raw.loadUnaligned(fromByteOffset: $1 * 8, as: UInt64.self) << 1 == 0 ? 1 : 0) })
                } else { zeros.set(t, try src.tensor(t).reduce(0) { $0 + ($1 == 0 ? 1 : 0) }) }
            }
            for (t, c) in rep.converted.sorted(by: { $0.key < $1.key }) { printErr("wscan: warning: \(out): \(t) written as \(c)") }
            for (t, why) in rep.skipped.sorted(by: { $0.key < $1.key }) { printErr("wscan: warning: \(out): \(t) left out (\(why))") }
            let n = src.counts.reduce(0, +)
            written = (out, n > 0 ? Double(zeros.array.reduce(0, +)) / Double(n) : 0)
            curve.written = .init(path: out, sparsity: s, zeroFraction: written!.achieved)
        }
        if writePruned != nil { try refuseIfChanged(ck) }
        for w in curve.warnings ?? [] { printErr("wscan: warning: \(w)") }
        if catalog.json { print(Fmt.json(curve)); return }
        print("\(row.name): \(pattern) \(scope) magnitude pruning of \(prunable.count) tensors (\(Fmt.count(curve.prunable)) weights)")
        if let ev = evaluator { print("evaluator: \(ev.description)") } else { print("no evaluator (--data or --eval): data-free metrics only") }
        let rows = curve.points.map { p -> [String] in
            var r = [String(format: "%.1f%%", p.sparsity * 100), String(format: "%.2f%%", p.achieved * 100),
                     String(format: "%.4f", p.relativeError), String(format: "%.4f", p.retainedEnergy)]
            if let ev = p.eval {
                r.append(ev.loss.map { String(format: "%.4f", $0) } ?? "-")
                r.append(ev.accuracy.map { String(format: "%.4f", $0) } ?? String(format: "%.5g", ev.metric))
            }
            return r
        }
        var head = ["sparsity", "achieved", "rel_error", "retained_energy"]
        if evaluator != nil { head += ["loss", evaluator is MLPEvaluator ? "accuracy" : "metric"] }
        print(Fmt.table(head, rows, numeric: Set(0..<head.count)))
        print(summary)
        if let w = written { print("wrote pruned checkpoint \(w.path): \(String(format: "%.2f%%", w.achieved * 100)) of the pruned tensors' weights are zero") }
    }
}

/// An analysis that streams reads its files more than once: one rewritten or replaced meanwhile (an evaluator that
/// writes over the model, a training run saving into it) would give a result mixed from two versions.
func refuseIfChanged(_ ck: Checkpoint) throws {
    if let f = ck.changedFile() { throw CLIError("\(f): changed while it was being read (rewritten by another process?); nothing recorded") }
}

/// For the file writer: each tensor of `src`, pruned as `spec` says, made when the writer reaches it (`seen` gets
/// it first).
/// The tensors to analyse among `names` and the tied aliases that go with them: a selected name stands for its whole
/// tied group, analysed under the group's first name (its primary), the other members following it.
func tiedSelection(_ ck: Checkpoint, _ names: [String], selected: (String) -> Bool) -> (primaries: [String], aliases: [String: String]) {
    let all = ck.tiedAliases(names)
    let chosen = Set(names.filter(selected).map { all[$0] ?? $0 })
    let primaries = names.filter { all[$0] == nil && chosen.contains($0) }
    return (primaries, all.filter { chosen.contains($0.value) })
}

/// Tied tensors as a warning: "2 tied tensors (…) share storage with another and go with it: head.weight = emb.weight".
func tiedNote(_ tied: [String: String]) -> String {
    let pairs = tied.sorted { $0.key < $1.key }
    let one = tied.count == 1
    return "\(tied.count) tied tensor\(one ? "" : "s") share\(one ? "s" : "") storage with another and go\(one ? "es" : "") with it (one parameter): "
        + pairs.prefix(6).map { "\($0.key) = \($0.value)" }.joined(separator: ", ") + (pairs.count > 6 ? ", …" : "")
}

/// The pruned tensors the writer asks for, made when it reaches them; `aliases` (tied names) get their primary's.
func prunedLazily(_ src: TensorSource, _ spec: PruneSpec, aliases: [String: String] = [:],
                  seen: @escaping @Sendable (Int, [Float]) -> Void = { _, _ in }) -> [String: @Sendable () throws -> [Float]] {
    var lazy: [String: @Sendable () throws -> [Float]] = [:]
    for (t, name) in src.names.enumerated() {
        // A tensor the spec leaves alone is not replaced: the writer copies its bytes (an F64 tensor keeps every
        // double, even those below float32's range, which the float32 analysis sees as 0).
        if case .dense = spec { continue }
        if case let .cuts(c) = spec, c[t].none { continue }
        let shape = src.shapes[t]
        lazy[name] = {
            var v = try src.tensor(t)
            Sparsity.apply(spec, to: &v, tensor: t, shape: shape)
            seen(t, v)
            return v
        }
    }
    for (alias, primary) in aliases where lazy[primary] != nil {
        guard let t = src.names.firstIndex(of: primary) else { continue }
        let shape = src.shapes[t]
        lazy[alias] = { var v = try src.tensor(t); Sparsity.apply(spec, to: &v, tensor: t, shape: shape); return v }
    }
    return lazy
}

/// Hands the evaluator the pruned tensors together with the ones pruning leaves alone (biases, norms).
struct PassThroughEvaluator: Evaluator {
    let inner: Evaluator
    let rest: WeightSet
    var aliases: [String: String] = [:]         // tied names: evaluated with their primary's (pruned) values
    var description: String { inner.description }
    func evaluate(_ w: WeightSet) throws -> EvalResult {
        var m = rest.merged(with: w)
        for (alias, primary) in aliases { if let v = w.values[primary] { m.values[alias] = v } }
        return try inner.evaluate(m)
    }
}

func parseGrid(_ s: String) throws -> [Double] {
    let v = s.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
    guard !v.isEmpty, v.allSatisfy({ $0 != nil && $0! >= 0 && $0! < 1 }) else { throw ValidationError("grid values must be fractions in [0, 1)") }
    return v.map { $0! }
}

struct SaliencyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "saliency",
        abstract: "Weight-saliency map and mask (SalUn and data-free relatives).",
        discussion: """
        Sources: magnitude |w|; delta |w − w_base| (--base); fisher: Adam's exp_avg_sq found in the checkpoint \
        (optimizer.state.<i>.exp_avg_sq, exp_avg_sq.<name> or <name>.exp_avg_sq) or in --state FILE; grad |g| and \
        wgrad |w·g| from --grads FILE (same tensor names, e.g. SalUn's forgetting-loss gradient). \
        The global top fraction (--top, SalUn's default 0.5) is salient; ties at the threshold go to later tensors and \
        elements, so exactly round(top·N) weights are kept. --mask-out writes a U8 safetensors mask with the same names.
        """)
    @OptionGroup var catalog: CatalogOptions
    @Argument(help: "Catalog id, name, or a path.") var checkpoint: String
    @Option(help: "magnitude, delta, fisher, grad or wgrad") var source: String = "magnitude"
    @Option(help: "Base checkpoint for --source delta.") var base: String?
    @Option(help: "Gradient file for --source grad/wgrad.") var grads: String?
    @Option(help: "Optimizer state file for --source fisher (when the checkpoint does not carry it).") var state: String?
    @Option(help: "Fraction of weights that are salient.") var top: Double = 0.5
    @Option(help: "Write the mask (U8, 1 = salient) as safetensors.") var maskOut: String?
    @Option(help: "Write per-layer heat maps (PNG) into this folder.") var maps: String?
    @Option(help: "How a heat-map pixel summarises its block of weights: max (default) or mean; with --maps.") var mapReduce: String?
    @Option(help: "Only tensors matching these shell globs.") var tensors: String?
    @Flag(help: "Load tensors from pickle files the scanner flags (still executes nothing).") var trust = false

    func run() throws {
        guard let src = SaliencySource(rawValue: source) else { throw ValidationError("--source must be one of \(SaliencySource.allCases.map(\.rawValue).joined(separator: ", "))") }
        guard top > 0, top <= 1 else { throw ValidationError("--top must be in (0, 1]") }
        if base != nil && src != .delta { throw ValidationError("--base applies to --source delta only") }
        if grads != nil && src != .grad && src != .wgrad { throw ValidationError("--grads applies to --source grad or wgrad only") }
        if state != nil && src != .fisher { throw ValidationError("--state applies to --source fisher only") }
        guard ["max", "mean"].contains(mapReduce ?? "max") else { throw ValidationError("--map-reduce must be max or mean") }
        if mapReduce != nil && maps == nil { throw ValidationError("--map-reduce applies to --maps only") }
        let (cat, row, ck) = try openForAnalysis(checkpoint, catalog: catalog, trust: trust)
        // Scores are computed chunk by chunk from the mapped files as each pass needs them: nothing holds a model.
        let floats = firstByName(ck.tensors.filter { $0.dtype.isFloatingPoint && $0.dtype.decodable })
        let allNames = Set(floats.map(\.name))
        // Parameters: ≥2-D floating tensors that are not optimizer state.
        // Tied tensors are one parameter: scored once; the mask holds the alias too, equal to its primary's.
        let tiedAll = ck.tiedAliases(floats.map(\.name))
        let (params, tied) = tiedSelection(ck, floats.filter { $0.shape.count >= 2 && !Saliency.isOptimizerState($0.name, among: allNames) }.map(\.name),
                                           selected: { SpectrumRunner.globMatch(tensors, $0) })
        guard !params.isEmpty else { throw CLIError("no ≥2-D weights to score") }
        if !tied.isEmpty { printErr("wscan: warning: " + tiedNote(tied)) }
        try WeightSet.refuseNarrowing(ck, names: params)
        let model = try CheckpointSource(ck, tensors: params)
        var other: TensorSource?, otherIndex: [Int?]?, frozen: [String] = []
        var otherID: Int64?
        var inputs = ck.files.map(\.path)          // --mask-out must not replace any of them
        var inputCheckpoints = [ck]                 // read more than once: checked for changes before reporting
        switch src {
        case .delta:
            guard let base else { throw ValidationError("--source delta needs --base CKPT") }
            let (_, brow, bck) = try openForAnalysis(base, catalog: catalog, trust: trust)
            otherID = brow.id; inputs += bck.files.map(\.path); inputCheckpoints.append(bck)
            other = try aligned(bck, to: model, path: brow.path, what: "--base")
        case .grad, .wgrad:
            guard let grads else { throw ValidationError("--source \(source) needs --grads FILE") }
            other = try withInput(grads, trust: trust) { c in inputs += c.files.map(\.path); inputCheckpoints.append(c); return try aligned(c, to: model, path: grads, what: "--grads") }
        case .fisher:
            let sck = try state.map { try withInput($0, trust: trust) { c in inputs += c.files.map(\.path); inputCheckpoints.append(c); return c } } ?? ck
            let stateTensors = firstByName(sck.tensors.filter { $0.dtype.isFloatingPoint && $0.dtype.decodable })
            let names = { (ts: [TensorInfo]) in Saliency.TensorNames(ts.map(\.name), Dictionary(uniqueKeysWithValues: ts.map { ($0.name, $0.shape) })) }
            do {
                // tied aliases have no optimizer state of their own (model.parameters() yields a tied tensor once)
                let keys = try Saliency.fisherKeys(state: names(stateTensors), model: names(floats.filter { tiedAll[$0.name] == nil }), params: params,
                                                   modelInParameterOrder: [.pytorch, .pytorchLegacy, .pickle].contains(ck.format), frozen: &frozen)
                let used = params.compactMap { keys[$0] }
                try WeightSet.refuseNarrowing(sck, names: used)
                other = try CheckpointSource(sck, tensors: used)
                var k = 0
                otherIndex = params.map { p in keys[p].map { _ in defer { k += 1 }; return k } }
            } catch let e as CLIError { throw e } catch {
                throw CLIError("\(state ?? row.path): \(error)")
            }
        case .magnitude: break
        }
        if let out = maskOut, let clash = inputs.first(where: { FileRef.samePath($0, out) }) {
            throw CLIError("refusing to overwrite the input file \(clash) with the mask")
        }
        guard model.counts.contains(where: { $0 > 0 }) else {
            throw CLIError("the selected tensors hold no weights (\(params.prefix(3).joined(separator: ", "))\(params.count > 3 ? ", …" : ""))")
        }
        let scores = try ScoreSource(src, weights: model, other: other, otherIndex: otherIndex)
        let selected = try Saliency.select(scores, top: top, source: src)
        let cut = selected.cut
        var result = selected.result
        if !frozen.isEmpty {
            result.warnings = (result.warnings ?? []) + ["\(frozen.count) tensors have no optimizer state (frozen in training): score 0, ranked below every trained weight: "
                + frozen.prefix(6).joined(separator: ", ") + (frozen.count > 6 ? ", …" : "")]
        }
        for w in result.warnings ?? [] { printErr("wscan: warning: \(w)") }
        for c in inputCheckpoints { try refuseIfChanged(c) }
        struct Params: Encodable { var source: String; var top: Double; var base: String?; var grads: String?; var tensors: String? }
        try cat.storeResult(kind: "saliency", checkpoint: row.id, other: otherID,
                            params: Params(source: source, top: top, base: base, grads: grads, tensors: tensors),
                            summary: "\(source) saliency, top \(Fmt.percent(top)): \(result.kept) of \(result.total) weights",
                            data: result, analysed: [row])
        if let out = maskOut {
            try ck.refuseToOverwrite(out)
            try catalog.refuseCatalogAsOutput(out)
            // Each tensor's mask is made when the writer reaches it (a bar on a terminal: a large model takes a while).
            let bar = ProgressBar(), done = UnsafeSendableBox([0])
            let named = params.indices.map { ($0, params[$0]) }
                + tied.sorted { $0.key < $1.key }.compactMap { alias, primary in params.firstIndex(of: primary).map { ($0, alias) } }
            let entries = named.map { t, name in
                SafetensorsWriter.Entry(name: name, dtype: .u8, shape: scores.shapes[t], byteCount: scores.counts[t]) { sink in
                    let k = done.get(0); done.set(0, k + 1)
                    bar.update(items: k, of: named.count, unit: "tensors", label: "mask \(name)")
                    try Saliency.maskBytes(scores.tensor(t), tensor: t, cut).withUnsafeBytes { try sink($0) }
                }
            }
            defer { bar.finish() }
            try SafetensorsWriter.write(entries, metadata: ["saliency_source": source, "top": "\(top)", "written_by": "wscan"], to: out)
            if let f = inputCheckpoints.lazy.compactMap({ $0.changedFile() }).first {
                unlink(out)                         // made from a file that changed while it was read
                throw CLIError("\(f): changed while the mask was written (rewritten by another process?); mask removed")
            }
        }
        var mapFiles: [String] = []
        if let dir = maps {
            let bar = ProgressBar()
            defer { bar.finish() }
            mapFiles = try SaliencyMaps.write(scores: scores, to: dir, reduce: mapReduce ?? "max") { k, n, name in
                bar.update(items: k, of: n, unit: "maps", label: name)
            }
        }
        if catalog.json {
            struct Out: Encodable { var checkpoint: String; var result: SaliencyResult; var mask: String?; var maps: [String] }
            print(Fmt.json(Out(checkpoint: row.path, result: result, mask: maskOut, maps: mapFiles)))
            return
        }
        print("\(row.name): \(source) saliency over \(params.count) tensors; top \(Fmt.percent(top)) = \(result.kept) of \(result.total) weights (threshold \(result.kept > 0 ? Fmt.num(result.threshold) : "none"))")
        let rows = result.layers.map { l in
            [l.name, "\(l.count)", String(format: "%.1f%%", l.share * 100), String(format: "%.1f%%", l.massShare * 100),
             String(format: "%.1f%%", l.top1Concentration * 100), Fmt.num(l.meanScore)]
        }
        print(Fmt.table(["tensor", "weights", "salient", "mass_share", "top1%_mass", "mean_score"], rows, numeric: [1, 2, 3, 4, 5]))
        if let m = maskOut { print("wrote mask \(m)") }
        if !mapFiles.isEmpty { print("wrote \(mapFiles.count) heat maps to \(maps!)") }
    }

    /// The tensors of `other` (from `path`, given as `what`) named as the scored ones, each of the same shape, as a
    /// source read chunk by chunk. Errors name the file.
    func aligned(_ other: Checkpoint, to w: CheckpointSource, path: String, what: String) throws -> TensorSource {
        let byName = Dictionary(firstByName(other.tensors).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for (t, n) in w.names.enumerated() {
            guard let o = byName[n] else { throw CLIError("\(path) (\(what)): no tensor '\(n)' (it needs one for every scored weight)") }
            guard o.dtype.isFloatingPoint && o.dtype.decodable else {
                throw CLIError("\(path) (\(what)): tensor '\(n)' is \(o.dtype.rawValue), not a floating-point type wscan can score")
            }
            guard o.shape == w.shapes[t] else { throw CLIError("\(path) (\(what)): tensor '\(n)' has shape \(o.shape), the checkpoint's has \(w.shapes[t])") }
        }
        try WeightSet.refuseNarrowing(other, names: w.names)
        return try CheckpointSource(other, tensors: w.names)
    }
}

/// The first tensor of each name (a later one of the same name is ignored, as everywhere else).
func firstByName(_ ts: [TensorInfo]) -> [TensorInfo] {
    var seen = Set<String>()
    return ts.filter { seen.insert($0.name).inserted }
}

/// Per-layer saliency heat maps: one PNG each (viridis, block max or mean, at most 256 px a side, its colour scale
/// drawn beside it; see Heatmap.renderWithLegend), plus the same scale as an SVG colour bar with its label.
enum SaliencyMaps {
    static func write(scores: TensorSource, to dir: String, reduce: String,
                      progress: (Int, Int, String) -> Void = { _, _, _ in }) throws -> [String] {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), !isDir.boolValue {
            throw CLIError("\(dir): exists and is not a folder (--maps needs a folder)")
        }
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            throw CLIError("\(dir): cannot create the folder: \(ReportWriter.reason(error))")
        }
        var out: [String] = [], used = Set<String>()
        for (t, n) in scores.names.enumerated() {           // one tensor's scores at a time
            progress(t, scores.names.count, n)
            let s = scores.shapes[t]
            guard s.count >= 2 else { continue }
            let v = try scores.tensor(t)
            let rows = s[0], cols = s.dropFirst().reduce(1, *)
            let h = Heatmap.renderWithLegend(values: v, rows: rows, cols: cols, maxSide: 256, reduce: reduce == "mean" ? .mean : .max, absolute: true)
            let base = (dir as NSString).appendingPathComponent(fileStem(n, used: &used))
            let legend = Heatmap.legendSVG(vmin: h.vmin, vmax: h.vmax, label: "score (block \(reduce))", height: max(64, h.mapHeight))
            for (path, bytes) in [(base + ".png", Data(h.png)), (base + ".legend.svg", Data(legend.utf8))] {
                do { try bytes.write(to: URL(fileURLWithPath: path)) } catch { throw CLIError("cannot write \(path): \(ReportWriter.reason(error))") }
            }
            out.append(base + ".png")
        }
        return out
    }

    /// A file name for a tensor: "/" becomes "_", names too long for a file system are cut (with a hash of the
    /// whole name), and a name that would repeat another's (`a/b` and `a_b`) gets "-2", "-3", ….
    static func fileStem(_ name: String, used: inout Set<String>) -> String {
        var stem = name.replacingOccurrences(of: "/", with: "_")
        if stem.hasPrefix(".") { stem = "_" + stem }
        stem = ReportWriter.bounded(stem, of: name, above: 200, keep: 180)
        var candidate = stem, k = 2
        while used.contains(candidate.lowercased()) { candidate = "\(stem)-\(k)"; k += 1 }
        used.insert(candidate.lowercased())
        return candidate
    }
}
