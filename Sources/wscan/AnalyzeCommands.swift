import ArgumentParser
import Foundation
import WscanKernels
import WscanFormats
import WscanCatalog
import WscanAnalysis

struct Analyze: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run an analyzer on a checkpoint and store the results in the catalog.",
        subcommands: [SpectrumCommand.self, SparsityCommand.self, SaliencyCommand.self])
}

struct SpectrumCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spectrum",
        abstract: "Singular-value spectra: norms, stable/effective rank, utilization, WeLore, WeightWatcher metrics.",
        discussion: """
        Every 2-D weight (embeddings included) and conv kernel (kh·kw slices, pooled) is decomposed exactly in double \
        precision: dgesdd for small matrices, otherwise the eigenvalues of the Gram matrix of the smaller side \
        (dsyrk + dsyevd). A matrix whose Gram matrix would exceed --gram-memory gets a randomized method with a stated \
        error bound. The output names the method per layer. rand_distance's shuffled copy is decomposed in float32 \
        (float64 where one direction dominates its spectrum). 1-D tensors are listed as skipped with a reason. \
        Results are stored in the catalog and re-used until the checkpoint changes (--force recomputes). \
        Metrics: see README.md#spectrum-metrics.
        """)
    @OptionGroup var catalog: CatalogOptions
    @Argument(help: "Catalog id, name, or a path (indexed on the fly).") var checkpoint: String
    @Option(help: "Only tensors matching these shell globs (comma-separated).") var tensors: String?
    @Option(help: "Energy fractions for the utilization ranks (default 0.9,0.95,0.99).", transform: parseFractions) var energy: [Double] = [0.9, 0.95, 0.99]
    @Option(help: "WeLore: overall rank reduction to aim for.") var weloreReduction = 0.5
    @Option(help: "WeLore: a matrix whose own reduction ratio reaches this is a low-rank component.") var weloreMinRatio = 0.5
    @Option(help: "Seed for rand_distance's element shuffle.") var seed: UInt64 = 0
    @Flag(help: "Skip rand_distance (halves the work).") var noRandomize = false
    @Flag(help: "Conv kernels: one result per kh·kw slice (WeightWatcher's ww2x mode) instead of pooling the slices.") var convSlices = false
    @Option(help: "Memory a Gram matrix may take (e.g. 8G); larger matrices get the randomized method. Default: half the RAM.") var gramMemory: String?
    @Option(help: "Singular values the randomized method computes.") var randomizedRank = 256
    @Flag(help: "Recompute even if stored results exist.") var force = false
    @Flag(help: "List every layer, not only the first 40.") var all = false
    @Flag(help: "Load tensors from pickle files the scanner flags (still executes nothing).") var trust = false
    @Option(help: "Worker threads (BLAS threads and layers in flight); default: all cores.") var threads: Int?
    @Option(help: "Layer inputs (activations [N, in] or covariances [in, in]) named after the weights, as safetensors/npz: adds the data-driven utilized rank.")
    var activations: String?

    func run() throws {
        let cat = try catalog.open()
        let row = try resolveCheckpoint(checkpoint, catalog: cat, trust: trust)
        guard row.status == "ok" else { throw CLIError("\(row.path): \(row.error ?? row.status)") }
        if let tensors, try !cat.tensors(checkpoint: row.id).contains(where: { SpectrumRunner.globMatch(tensors, $0.name) }) {
            throw CLIError("\(row.path): no tensor matches \(tensors)")
        }
        var req = SpectrumRunner.Request()
        req.tensorGlob = tensors
        req.trust = trust
        req.options.energies = energy
        guard weloreReduction > 0, weloreReduction < 1 else { throw ValidationError("--welore-reduction must be a fraction in (0, 1)") }
        guard weloreMinRatio > 0, weloreMinRatio <= 1 else { throw ValidationError("--welore-min-ratio must be a fraction in (0, 1]") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        req.options.randomize = !noRandomize
        req.options.seed = seed
        req.options.convPerSlice = convSlices
        if let g = gramMemory {
            guard let b = Fmt.parseSize(g), b > 0 else { throw ValidationError("--gram-memory must be a size such as 512M or 8G") }
            req.options.gramMemoryLimit = b
        }
        guard randomizedRank >= 1 else { throw ValidationError("--randomized-rank must be at least 1") }
        req.options.randomizedRank = randomizedRank
        req.force = force
        req.threads = threads
        let bar = ProgressBar()
        let t0 = Date()
        let recs = try SpectrumRunner.run(catalog: cat, checkpoint: row, request: req) { d, n, name in
            bar.update(items: d, of: n, unit: "matrices", label: name)
        }
        bar.finish()
        let summary = SpectrumSummary.make(recs, energyIndex: min(1, energy.count - 1), weloreReduction: weloreReduction, weloreMinRatio: weloreMinRatio)
        let e = energy[min(1, energy.count - 1)]
        var utilization: [DataUtilization]?, utilizationFailed: [LayerFailure]?
        if let act = activations {
            let (u, f) = try dataUtilization(row: row, activations: act, energy: e, trust: trust)
            if !u.isEmpty {
                try cat.storeResult(kind: "utilization", checkpoint: row.id, params: ["activations": act, "energy": "\(e)"],
                                    summary: "\(u.count) layers with activations", data: u, analysed: [row])
            }
            utilization = u; utilizationFailed = f
        }
        // Exit 1 when a layer could not be analysed for a reason other than a deliberate skip or non-finite weights
        // (those are findings, listed with their reasons).
        let failed = recs.contains { $0.skipReason?.hasPrefix("analysis failed") == true } || !(utilizationFailed ?? []).isEmpty
        if catalog.json {
            struct Out: Encodable {
                var checkpoint: String; var energies: [Double]; var summary: SpectrumSummary; var layers: [SpectrumRecord]
                var dataUtilization: [DataUtilization]?; var dataUtilizationFailed: [LayerFailure]?
            }
            print(Fmt.json(Out(checkpoint: row.path, energies: energy, summary: summary, layers: recs, dataUtilization: utilization,
                               dataUtilizationFailed: utilizationFailed)))
            if failed { throw ExitCode(1) }
            return
        }
        SpectrumReportText.show(row: row, records: recs, summary: summary, energies: energy, all: all,
                                 seconds: Date().timeIntervalSince(t0))
        if let act = activations, let u = utilization {
            print("\ndata-driven utilization at \(energyPercent(e)) energy (inputs from \(act)):")
            if !u.isEmpty {
                print(Fmt.table(["layer", "input_rank", "utilized_rank", "data_free_rank", "utilized/min(m,n)"],
                                u.map { [$0.name, "\($0.inputRank)", "\($0.utilizedRank)", "\($0.dataFreeRank)", String(format: "%.1f%%", $0.utilizedFraction * 100)] },
                                numeric: [1, 2, 3, 4]))
            }
            for f in utilizationFailed ?? [] { print("  not measured: \(Fmt.field(f.name)): \(Fmt.field(f.reason))") }
        }
        if failed { throw ExitCode(1) }
    }
}

func parseFractions(_ s: String) throws -> [Double] {
    // Empty entries ("0.9,,0.95") are refused, not skipped; fractions under 1e-4 would show as 0% in the tables.
    let v = s.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
    guard !v.isEmpty, v.allSatisfy({ $0 != nil && $0! >= 1e-4 && $0! <= 1 }) else {
        throw ValidationError("expected fractions in [0.0001, 1], e.g. 0.9,0.95,0.99")
    }
    return v.map { $0! }
}

enum SpectrumReportText {
    /// A metric that may be undefined (NaN, −inf: log of a zero norm) shows as "-", as the report's "–".
    static func metric(_ v: Double?) -> String { v.map { $0.isFinite ? Fmt.num($0, 3) : "-" } ?? "-" }
    /// `allFlag` names the flag that lists every layer in the command at hand (analyze: --all, show: --tensors).
    static func show(row: CheckpointRow, records: [SpectrumRecord], summary: SpectrumSummary, energies: [Double], all: Bool, allFlag: String = "--all",
                     seconds: Double?) {
        let done = records.compactMap(\.spectrum)
        print("\(row.name): \(summary.matrices) matrices analysed, \(summary.skipped) tensors skipped" +
                    (seconds.map { String(format: " (%.2f s)", $0) } ?? ""))
        let shown = all ? done : Array(done.prefix(40))
        let eh = energies.map { "r@" + energyPercent($0) }
        let rows = shown.map { s -> [String] in
            let m = s.metrics
            return [s.name, "\(s.rows)x\(s.cols)" + (s.slices > 1 ? "x\(s.slices)" : ""), SpectrumMethod.label(s.method),
                    Fmt.num(m.stableRank, 3), Fmt.num(m.effectiveRank, 3)] +
                zip(m.energyRanks, m.utilization).map { "\($0) (\(Int(($1 * 100).rounded()))%)" } +
                [metric(m.alpha), metric(m.alphaWeighted), metric(m.logNorm), metric(m.entropy),
                 metric(m.randDistance), s.warnings.isEmpty ? "" : "⚠"]
        }
        print(Fmt.table(["layer", "shape", "method", "stable_rank", "eff_rank"] + eh +
                              ["alpha", "alpha_w", "log_norm", "entropy", "rand_dist", "warn"], rows,
                              numeric: Set(3..<(5 + eh.count + 5))))
        if shown.count < done.count { print("… \(done.count - shown.count) more (use \(allFlag) or --json)") }
        let skipped = records.filter { $0.spectrum == nil }
        if !skipped.isEmpty {
            let reasons = Dictionary(grouping: skipped, by: { $0.skipReason ?? "?" })
            print("skipped: " + reasons.map { r in
                let names = r.value.prefix(3).map { Fmt.field($0.tensor) }.joined(separator: ", ") + (r.value.count > 3 ? ", …" : "")
                return "\(r.value.count) × \(Fmt.field(r.key)) (\(names))"
            }.sorted().joined(separator: "; "))
        }
        print("")
        print("summary (parameter-weighted means over \(Fmt.count(summary.parameters)) matrix parameters):")
        for k in ["stable_rank", "effective_rank", "utilization", "alpha", "alpha_weighted", "log_norm", "entropy"] {
            if let v = summary.weightedMeans[k] { print("  \(k.padding(toLength: 15, withPad: " ", startingAt: 0)) \(Fmt.num(v, 4))") }
        }
        let eidx = min(1, energies.count - 1)
        print("  most utilized   \(summary.mostUtilized.map(Fmt.field).joined(separator: ", "))  (rank for \(energyPercent(energies[eidx])) energy / min(m,n))")
        print("  least utilized  \(summary.leastUtilized.map(Fmt.field).joined(separator: ", "))")
        let wl = summary.welore
        let lrc = wl.layers.filter(\.lowRank)
        print(String(format: "  WeLore: threshold %.4f on normalized spectra gives %.1f%% overall rank reduction (target %.0f%%);",
                           wl.threshold, wl.achievedReduction * 100, wl.targetReduction * 100))
        print("          \(lrc.count) of \(wl.layers.count) matrices are low-rank components (ratio ≥ \(wl.minRatio))" +
                    (lrc.isEmpty ? "" : ": " + lrc.prefix(6).map { "\(Fmt.field($0.name)) → rank \($0.keptRank)" }.joined(separator: ", ") + (lrc.count > 6 ? ", …" : "")))
        for w in summary.alphaWarnings.prefix(10) { print("  warning: \(Fmt.field(w))") }
        if summary.alphaWarnings.count > 10 { print("  … \(summary.alphaWarnings.count - 10) more warnings") }
    }
}

/// Data-driven utilization of every weight that has activations. A layer that cannot be measured (NaN in the
/// weight or its activations, a wrong shape, a covariance that is not one) is listed with its reason; the others
/// are still measured.
func dataUtilization(row: CheckpointRow, activations: String, energy: Double, trust: Bool = false) throws -> (layers: [DataUtilization], failed: [LayerFailure]) {
    let ck = try CheckpointOpener.openNamed(row.path, options: .init(trust: trust))
    var failed: [LayerFailure] = []
    let out: [DataUtilization] = try withInput(activations, trust: trust) { acts in
        try ck.tensors.filter { $0.shape.count == 2 && $0.dtype.isFloatingPoint && $0.dtype.decodable }.compactMap { t in
            let base = t.name.hasSuffix(".weight") ? String(t.name.dropLast(7)) : t.name
            guard let a = acts.tensors.first(where: { [t.name, base, base + ".input"].contains($0.name) }) else { return nil }
            let weight: [Float]
            do { weight = try TensorData.floats(ck, t) } catch { throw CLIError("\(row.path): \(error)") }
            let inputs: [Float]
            do { inputs = try TensorData.floats(acts, a) } catch { throw CLIError("\(activations): \(error)") }
            do {
                return try DataDrivenUtilization.analyze(name: t.name, weight: weight, out: t.shape[0], inn: t.shape[1],
                                                         inputs: inputs, inputShape: a.shape, energy: energy)
            } catch let e as DataUtilizationError {
                failed.append(LayerFailure(name: t.name, reason: "\(e.inWeight ? row.path : activations): \(e)"))
                return nil
            } catch {
                // finite weights and inputs whose product overflows float32 (weights near 3e38): this layer only
                failed.append(LayerFailure(name: t.name, reason: "\(row.path): the weight projected on the inputs' subspace cannot be decomposed (\(error))"))
                return nil
            }
        }
    }
    if out.isEmpty && failed.isEmpty {
        throw CLIError("\(activations) has no activations named after this checkpoint's weights (NAME, NAME without .weight, or NAME.input)")
    }
    return (out, failed)
}

struct LayerFailure: Codable { var name: String; var reason: String }
