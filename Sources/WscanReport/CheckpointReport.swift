import Foundation
import WscanCatalog
import WscanAnalysis
import WscanFormats

extension ReportWriter {
    /// The audit of one or more checkpoints.
    /// The analysis's warnings under its table (each already escaped), at most 20 with the count of the rest.
    func warningList(_ items: [String]) {
        guard !items.isEmpty else { return }
        line("**Warnings** (\(items.count)):")
        line()
        for w in items.prefix(20) { line("- " + w) }
        if items.count > 20 { line("- … \(items.count - 20) more in data.json") }
        line()
    }

    public func checkpointReport(_ rows: [CheckpointRow]) throws {
        let rows = rows.distinctNames()
        let title = rows.count == 1 ? rows[0].name : "\(rows.count) checkpoints"
        line("# Audit report: \(rows.count == 1 ? Self.text(title) : title)")
        line()
        line("Produced by \(Self.code(command)) from the catalog; every number below is also in [data.json](data.json).")
        line()
        var perCk: [String: JSONTree] = [:]
        if rows.count > 1 {
            line("## Contents")
            for r in rows { line("- [\(Self.text(r.name))](#\(Self.anchor(r.name)))") }
            line()
        }
        for r in rows { perCk[r.name] = try section(r, multi: rows.count > 1) }
        data["checkpoints"] = .object(perCk)
        data["command"] = .string(command)
        glossary()
    }

    func section(_ r: CheckpointRow, multi: Bool) throws -> JSONTree {
        let h = multi ? "##" : "#"
        let sectionStart = md.count
        if multi { line("## \(Self.text(r.name))"); line() }
        let tensors = try catalog.tensors(checkpoint: r.id)
        let findings = try catalog.findings(checkpoint: r.id)
        let spectra = try catalog.spectra(checkpoint: r.id)
        let sparsity = try catalog.results(kind: "sparsity", checkpoint: r.id).filter { $0.checkpointID == r.id }
        let saliency = try catalog.results(kind: "saliency", checkpoint: r.id).filter { $0.checkpointID == r.id }
        let compares = try catalog.results(kind: "compare", checkpoint: r.id)
        var out: [String: JSONTree] = [:]

        // Summary
        var keyFindings: [String] = []
        line("\(h)# Summary")
        line()
        let dt = r.dtypes.sorted { ($0.value, $1.key) > ($1.value, $0.key) }
        table(["property", "value"], [
            ["file", Self.code(Self.display(r.path))], ["format", r.format ?? "?"], ["status", r.status + (r.error.map { ": " + Self.text($0) } ?? "")],
            ["tensors", "\(r.tensorCount)"], [term("parameters"), "\(Self.count(r.paramCount)) (\(r.paramCount))"],
            ["size on disk", Self.bytes(r.bytes)],
            ["dtype mix", dt.map { "\($0.key) \(Self.pct(Double($0.value) / Double(max(1, r.paramCount))))" }.joined(separator: ", ")],
            [term("safety"), r.safety], ["content fingerprint", "`\(r.fingerprint ?? "–")`"],
        ] + (r.format == "gguf" ? r.ggufFacts().map { [Self.text($0.0), Self.text($0.1)] } : []))     // checkpoint strings
        var summary: [String: JSONTree] = ["path": .string(Self.display(r.path)), "format": .string(r.format ?? ""), "status": .string(r.status),
                                           "tensors": .int(r.tensorCount), "parameters": .int(r.paramCount), "bytes": .int(r.bytes),
                                           "dtypes": .object(r.dtypes.mapValues { .int($0) }), "safety": .string(r.safety),
                                           "fingerprint": .string(r.fingerprint ?? "")]
        if r.format == "gguf" { summary["gguf"] = .object(Dictionary(r.ggufFacts().map { ($0.0, JSONTree.string($0.1)) }, uniquingKeysWith: { a, _ in a })) }
        out["summary"] = .object(summary)
        if r.safety == "dangerous" { keyFindings.append("**Unsafe pickle**: \(findings.filter { $0.severity == "critical" || $0.severity == "high" }.count) dangerous imports; tensors were not loaded.") }
        let nonfinite = tensors.filter { ($0.nanCount ?? 0) + ($0.infCount ?? 0) > 0 }
        if !nonfinite.isEmpty { keyFindings.append("\(nonfinite.count) tensors contain NaN or Inf values.") }

        // Findings
        if !findings.isEmpty {
            line("\(h)# Safety findings")
            line()
            table(["severity", "member", "offset", "import / call", "detail"], findings.map { [$0.severity, Self.code($0.member), "\($0.offset)", Self.code($0.what), Self.text($0.detail)] },
                  align: [false, false, true, false, false])
            out["findings"] = .array(findings.map { .object(["severity": .string($0.severity), "member": .string($0.member), "offset": .int($0.offset), "what": .string($0.what)]) })
        }

        // A file that could not be read (or was refused as unsafe) has its record and findings, nothing more.
        if r.status != "ok" {
            line("\(h)# Tensors")
            line()
            line("Not read: \(Self.text(r.error ?? r.status)). No tensor statistics or analyses exist for this file" +
                 (r.status == "unsafe" ? " (wscan does not load a pickle with dangerous imports; see the findings above)." : "."))
            line()
            if r.safety != "dangerous" { keyFindings.append("Not readable: \(Self.text(r.error ?? r.status)).") }
            insertKeyFindings(keyFindings, h: h, from: sectionStart)
            out["key_findings"] = .array(keyFindings.prefix(3).map { .string($0) })
            return .object(out)
        }

        // Tensors
        line("\(h)# Tensors")
        line()
        let ordered = tensors.sorted { $0.nbytes != $1.nbytes ? $0.nbytes > $1.nbytes : $0.name < $1.name }
        table(["tensor", "shape", "dtype", "size", "mean", "std", term("abs max"), "zeros", "NaN/Inf"],
              ordered.map { t in [ Self.code(t.name), t.shape.map(String.init).joined(separator: "×"), t.dtype, Self.bytes(t.nbytes), Self.f(t.mean), Self.f(t.std),
                                   Self.f(t.absmax), Self.pct(t.zeroFrac), "\((t.nanCount ?? 0) + (t.infCount ?? 0))"] },
              align: [false, false, false, true, true, true, true, true, true], fold: 12, foldTitle: "all tensors, largest first")
        out["tensors"] = .array(ordered.map { t in .object(["name": .string(t.name), "shape": .array(t.shape.map { .int($0) }), "dtype": .string(t.dtype),
                                                           "nbytes": .int(t.nbytes), "mean": .double(t.mean ?? .nan), "std": .double(t.std ?? .nan),
                                                           "absmax": .double(t.absmax ?? .nan), "zero_frac": .double(t.zeroFrac ?? .nan), "hash": .string(t.hash),
                                                           "nan_count": .int(t.nanCount ?? 0), "inf_count": .int(t.infCount ?? 0)]) })

        // Architecture
        if tensors.count > 1 {
            line("\(h)# Architecture")
            line()
            let alphaBy = Dictionary(spectra.compactMap { s in s.spectrum?.metrics.alpha.map { (s.tensor, $0) } }, uniquingKeysWith: { a, _ in a })
            line("Module tree from tensor names; repeated blocks are collapsed with their count." +
                 (alphaBy.isEmpty ? "" : " Boxes are coloured by the mean \(term("alpha")) of their matrices (green 2–6, orange outside)."))
            line()
            diagram("architecture-\(Self.slug(r.name))", dot: Diagrams.architecture(name: r.name, tensors: tensors.map { ($0.name, $0.shape, $0.count) }, metric: alphaBy),
                    alt: "architecture of \(r.name)")
        }

        // Spectrum
        line("\(h)# Spectrum and low-rank utilization")
        line()
        let done = spectra.compactMap(\.spectrum)
        if done.isEmpty && !spectra.isEmpty {
            let reasons = Dictionary(grouping: spectra.compactMap(\.skipReason), by: { $0 }).map { ($0.key, $0.value.count) }.sorted { ($0.1, $1.0) > ($1.1, $0.0) }
            line("Analysed, but no tensor is a matrix that could be decomposed (\(spectra.count) skipped): " +
                 reasons.prefix(4).map { "\($0.1)× \(Self.text($0.0))" }.joined(separator: "; ") + (reasons.count > 4 ? "; …" : "") + ".")
            line()
        } else if done.isEmpty {
            line("Not analysed yet. Run \(Self.code("wscan analyze spectrum " + Self.shell(Self.display(r.path)))) to add singular-value spectra, ranks, utilization and WeightWatcher metrics.")
            line()
        } else {
            let energies = spectra.first { $0.spectrum != nil }!.energies
            let ei = min(1, energies.count - 1)
            let summary = SpectrumSummary.make(spectra, energyIndex: ei, weloreReduction: 0.5, weloreMinRatio: 0.5)
            let skippedWhy = Dictionary(grouping: spectra.compactMap(\.skipReason), by: { $0 }).map { ($0.key, $0.value.count) }.sorted { ($0.1, $1.0) > ($1.1, $0.0) }
            let skippedText = skippedWhy.isEmpty ? "" : " (\(spectra.count - done.count) tensors skipped: " +
                skippedWhy.prefix(3).map { "\($0.1)× \(Self.text($0.0))" }.joined(separator: "; ") + (skippedWhy.count > 3 ? "; …" : "") + ")"
            line("\(done.count) matrices analysed\(skippedText). " +
                 "Parameter-weighted means: \(term("stable rank")) \(Self.f(summary.weightedMeans["stable_rank"])), " +
                 "\(term("alpha")) \(Self.f(summary.weightedMeans["alpha"])), \(term("utilization")) at \(energyPercent(energies[ei])) energy " +
                 "\(Self.pct(summary.weightedMeans["utilization"]))" +
                 (summary.partial.map { " (\($0.count) randomized matrices left out of the utilization mean and WeLore: their ranks are lower bounds, marked ≥)" } ?? "") + ".")
            line()
            let outside = done.filter { s in s.metrics.alpha.map { $0 < 2 || $0 > 6 } ?? false }
            if let e = outside.first {
                keyFindings.append("\(outside.count) of \(done.count) matrices have \(term("alpha")) outside [2, 6] (e.g. \(Self.code(e.name)): α = \(Self.f(e.metrics.alpha, 3))).")
            }
            figure("alpha-\(Self.slug(r.name))", Fig.bars(title: "Power-law exponent α per matrix", labels: done.map(\.name),
                                                        values: done.map { $0.metrics.alpha ?? .nan }, valueLabel: "alpha",
                                                        refLines: [(2, "2"), (6, "6")]), alt: "alpha per layer")
            figure("utilization-\(Self.slug(r.name))", Fig.bars(title: "Rank utilization at \(energyPercent(energies[ei])) energy", labels: done.map(\.name),
                                                              values: done.map { $0.metrics.utilization.indices.contains(ei) ? $0.metrics.utilization[ei] : .nan },
                                                              valueLabel: "rank / min(m, n)", refLines: []), alt: "utilization per layer")
            // At most 12 lines stay readable: the largest matrices, in tensor order.
            let shown = Set(done.enumerated().sorted { ($0.element.rows * $0.element.cols * $0.element.slices, -$0.offset) > ($1.element.rows * $1.element.cols * $1.element.slices, -$1.offset) }
                .prefix(12).map(\.offset))
            let sv = done.enumerated().filter { shown.contains($0.offset) }.map(\.element).map { s -> (String, [Double], [Double]) in
                let n = s.singularValues.count, mx = s.singularValues.first ?? 1
                return (s.name, (0..<n).map { Double($0 + 1) / Double(n) }, s.singularValues.map { mx > 0 ? $0 / mx : 0 })
            }
            figure("spectra-\(Self.slug(r.name))", Fig.line(title: "Normalised singular values σ/σmax" + (done.count > 12 ? " (the 12 largest of \(done.count) matrices)" : ""), xLabel: "rank / min(m, n)", yLabel: "σ / σmax",
                                                           xLog: false, yLog: true, series: sv.enumerated().map { ($0.element.0, $0.element.1, $0.element.2, $0.offset >= SVG.palette.count) }, markers: [], hlines: []),
                   alt: "singular value spectra")
            // ESD of the matrices with the smallest and largest alpha
            let fitted = done.filter { $0.metrics.alpha != nil }.sorted { ($0.metrics.alpha!, $0.name) < ($1.metrics.alpha!, $1.name) }
            let extremes = [fitted.first, fitted.last].compactMap({ $0 }).reduce(into: [MatrixSpectrum]()) { acc, x in
                if !acc.contains(where: { $0.name == x.name }) { acc.append(x) }
            }
            for s in extremes {
                figure("esd-\(Self.slug(s.name))", Fig.esd(eigenvalues: s.singularValues.map { $0 * $0 }, alpha: s.metrics.alpha!, xmin: s.metrics.xmin ?? 0,
                                                         title: "ESD of \(s.name) (α = \(Self.f(s.metrics.alpha, 3)))"),
                       alt: "empirical spectral density of \(s.name)")
            }
            let rowsT = done.map { s -> [String] in
                let m = s.metrics
                // A randomized rank that reaches the computed values is a lower bound.
                func lb(_ rank: Int) -> String { s.method == SpectrumMethod.randomized.rawValue && rank >= s.singularValues.count ? "≥" : "" }
                return [Self.code(s.name), "\(s.rows)×\(s.cols)" + (s.slices > 1 ? "×\(s.slices)" : ""), SpectrumMethod.label(s.method),
                        Self.f(m.stableRank), Self.f(m.effectiveRank), m.energyRanks.indices.contains(ei) ? lb(m.energyRanks[ei]) + "\(m.energyRanks[ei])" : "–",
                        m.utilization.indices.contains(ei) ? lb(m.energyRanks.indices.contains(ei) ? m.energyRanks[ei] : 0) + Self.pct(m.utilization[ei]) : "–",
                        Self.f(m.alpha, 3), Self.f(m.alphaWeighted, 3), m.logNorm.isFinite ? Self.f(m.logNorm, 3) : "–",
                        m.entropy >= 0 ? Self.f(m.entropy, 3) : "–", s.warnings.isEmpty ? "" : "⚠"]   // −1: undefined (rank ≤ 1)
            }
            table(["matrix", "shape", "method", term("stable rank"), term("effective rank"), "rank@\(energyPercent(energies[ei]))", term("utilization"),
                   term("alpha"), "α weighted", "log norm", term("entropy"), ""], rowsT,
                  align: [false, false, false, true, true, true, true, true, true, true, true, false], fold: 12, foldTitle: "all matrices")
            warningList(done.flatMap { s in s.warnings.map { "\(Self.code(s.name)): \(Self.text($0))" } })
            let lrc = summary.welore.layers.filter(\.lowRank)
            line("**Low-rank candidates** (\(term("WeLore")), threshold \(Self.f(summary.welore.threshold)) on normalised spectra for a " +
                 "\(Self.pct(summary.welore.targetReduction)) overall rank reduction, the report's fixed setting; " +
                 "`analyze spectrum --welore-reduction` changes only that command's own summary): \(lrc.count) of \(summary.welore.layers.count) matrices.")
            line()
            if !lrc.isEmpty {
                table(["matrix", "rank", "kept rank", "reduction"], lrc.map { [Self.code($0.name), "\($0.rank)", "\($0.keptRank)", Self.pct($0.reductionRatio)] },
                      align: [false, true, true, true], fold: 10, foldTitle: "all low-rank candidates")
                keyFindings.append("\(lrc.count) matrices are low-rank candidates (WeLore); e.g. \(Self.code(lrc[0].name)) keeps rank \(lrc[0].keptRank) of \(lrc[0].rank).")
            }
            out["spectrum"] = .object([
                "weighted_means": .object(summary.weightedMeans.mapValues { .double($0) }), "energies": .array(energies.map { .double($0) }),
                "matrices": .array(done.map { s in .object(["name": .string(s.name), "method": .string(s.method), "stable_rank": .double(s.metrics.stableRank),
                                                            "effective_rank": .double(s.metrics.effectiveRank), "alpha": .double(s.metrics.alpha ?? .nan),
                                                            "alpha_weighted": .double(s.metrics.alphaWeighted ?? .nan), "log_norm": .double(s.metrics.logNorm),
                                                            "entropy": .double(s.metrics.entropy), "utilization": .array(s.metrics.utilization.map { .double($0) }),
                                                            "energy_ranks": .array(s.metrics.energyRanks.map { .int($0) }),
                                                            "warnings": .array(s.warnings.map { .string($0) })]) }),
                "welore": JSONTree.from(summary.welore)])
        }

        // Sparsity
        line("\(h)# Essential sparsity")
        line()
        if let res = sparsity.first, let curve = try? catalog.decodeResult(res, as: SparsityCurve.self) {
            let e = curve.essential
            line("One-shot \(curve.pattern) \(curve.scope.rawValue) magnitude pruning of \(curve.tensors.count) tensors (\(Self.count(curve.prunable)) weights)" +
                 (curve.evaluator.map { ", evaluated by \($0)" } ?? ", data-free (no evaluator)") + ". " +
                 "\(term("Essential sparsity")): **\(Self.pct(e.withinTolerance))** within \(Self.pct(e.tolerance)) of dense \(e.metric); knee at \(Self.pct(e.knee)).")
            line()
            keyFindings.append("Essential sparsity \(Self.pct(e.withinTolerance)) (\(e.metric) within \(Self.pct(e.tolerance)) of dense); knee at \(Self.pct(e.knee)).")
            let xs = curve.points.map(\.sparsity)
            var series: [(String, [Double], [Double], Bool)] = [("retained energy", xs, curve.points.map(\.retainedEnergy), false)]
            if curve.points.first?.eval?.accuracy != nil { series.append(("accuracy", xs, curve.points.map { $0.eval?.accuracy ?? .nan }, false)) }
            else if curve.points.first?.eval != nil { series.append(("metric", xs, curve.points.map { $0.eval?.metric ?? .nan }, false)) }
            var markers: [(Double, String)] = [(e.withinTolerance, "essential \(Self.pct(e.withinTolerance))")]
            if let k = e.knee { markers.append((k, "knee \(Self.pct(k))")) }
            figure("sparsity-\(Self.slug(r.name))", Fig.line(title: "Magnitude pruning curve", xLabel: "sparsity", yLabel: "retained energy / accuracy",
                                                            xLog: false, yLog: false, series: series, markers: markers, hlines: []), alt: "sparsity curve")
            table(["sparsity", "achieved", "relative error", "retained energy", "loss", "accuracy / metric"],
                  curve.points.map { p in [Self.pct(p.sparsity), Self.pct(p.achieved), Self.f(p.relativeError), Self.f(p.retainedEnergy),
                                           Self.f(p.eval?.loss), p.eval.map { Self.f($0.accuracy ?? $0.metric) } ?? "–"] },
                  align: [true, true, true, true, true, true], fold: 12, foldTitle: "all points")
            warningList((curve.warnings ?? []).map { Self.text($0) })
            out["sparsity"] = JSONTree.from(curve)
        } else {
            line("Not analysed yet. Run \(Self.code("wscan analyze sparsity " + Self.shell(Self.display(r.path)))) (add `--data D.npz` or `--eval CMD` for task quality).")
            line()
        }

        // Saliency
        line("\(h)# Weight saliency")
        line()
        if let res = saliency.first, let s = try? catalog.decodeResult(res, as: SaliencyResult.self) {
            line("Source **\(s.source.rawValue)**, top \(Self.pct(s.top)) salient: \(s.kept) of \(s.total) weights (threshold \(Self.f(s.threshold))).")
            line()
            let layers = s.layers.sorted { ($0.massShare, $1.name) > ($1.massShare, $0.name) }
            figure("saliency-\(Self.slug(r.name))", Fig.bars(title: "Share of salient weights per tensor (\(s.source.rawValue))", labels: s.layers.map(\.name),
                                                            values: s.layers.map(\.share), valueLabel: "salient share", refLines: [(s.top, "global top")]),
                   alt: "salient share per tensor")
            table(["tensor", "weights", "salient", "mass share", "top-1% mass"], layers.map { [Self.code($0.name), "\($0.count)", Self.pct($0.share), Self.pct($0.massShare), Self.pct($0.top1Concentration)] },
                  align: [false, true, true, true, true], fold: 12, foldTitle: "all tensors")
            warningList((s.warnings ?? []).map { Self.text($0) })
            if let mapsDir = heatmapProvider?(r, s) {
                for (name, png, legend, w, hgt) in mapsDir {
                    // Unique across the whole report: two checkpoints (or `dup.a` and `dup_a`) must not share a file.
                    let f = unique("heat-\(Self.slug(name))", in: "figures", ext: "png")
                    files["figures/\(f).png"] = Data(png)
                    files["figures/\(f)-legend.svg"] = Data(legend.utf8)
                    line("**\(Self.code(name))** (map \(w) px wide × \(hgt) px high, block max of |w|): ![saliency map of \(Self.alt(name))](figures/\(f).png) ![scale](figures/\(f)-legend.svg)")
                    line()
                }
            }
            out["saliency"] = JSONTree.from(s)
        } else {
            line("Not analysed yet. Run \(Self.code("wscan analyze saliency " + Self.shell(Self.display(r.path)) + " --source magnitude|delta|fisher|grad")).")
            line()
        }

        // Comparisons
        if !compares.isEmpty {
            line("\(h)# Comparisons")
            line()
            var seen = Set<String>()
            var rowsC: [[String]] = []
            var arr: [JSONTree] = []
            for c in compares {
                guard let cr = try? catalog.decodeResult(c, as: CompareResult.self) else { continue }
                let other = cr.a == r.path ? cr.b : cr.a
                guard seen.insert(other).inserted else { continue }
                // The other file changed on disk since it was indexed: the verdict describes bytes that are gone.
                let stale = FileRef.isRegularFile(other) && !((try? catalog.isUpToDate(path: other, needSHA: false)) ?? true)
                let role = cr.a == r.path ? "A" : "B"
                rowsC.append([Self.code(Catalog.displayName(other, format: nil)), role, cr.verdict.kind + (stale ? " (stale: the other file changed since; run compare again)" : ""),
                              Self.conf(cr.verdict.confidence), cr.independence.map { Self.f($0.pValue, 3) } ?? "–", Self.text(cr.verdict.summary)])
                var o: [String: JSONTree] = ["other": .string(Self.display(other)), "role": .string(role), "verdict": .string(cr.verdict.kind),
                                             "confidence": .double(cr.verdict.confidence), "summary": .string(cr.verdict.summary), "stale": .bool(stale)]
                if let p = cr.independence?.pValue { o["independence_p"] = .double(p) }
                arr.append(.object(o))
            }
            rowsC.sort { $0[0] < $1[0] }
            line("\"this is\" says whether this checkpoint was A or B of the comparison (the summary speaks of A and B).")
            line()
            table(["other checkpoint", "this is", "verdict", "confidence", "independence p", "summary"], rowsC, align: [false, false, false, true, true, false])
            out["comparisons"] = .array(arr)
        }

        insertKeyFindings(keyFindings, h: h, from: sectionStart)
        out["key_findings"] = .array(keyFindings.prefix(3).map { .string($0) })
        return .object(out)
    }

    /// Key findings go first: after the section's summary table (searched from the section's own start).
    func insertKeyFindings(_ keyFindings: [String], h: String, from sectionStart: Int) {
        guard !keyFindings.isEmpty,
              let idx = md[sectionStart...].firstIndex(where: { $0.hasPrefix("\(h)# Tensors") || $0.hasPrefix("\(h)# Safety findings") }) else { return }
        var block = ["**Key findings**", ""]
        for k in keyFindings.prefix(3) { block.append("1. " + k) }
        block.append("")
        md.insert(contentsOf: block, at: idx)
    }

    func glossary() {
        line("## Glossary")
        line()
        let defs: [String: String] = [
            "parameters": "number of scalar weights (elements of all tensors).",
            "safety": "pickle scan verdict: clean, findings (unknown imports), dangerous (code execution), not-applicable (no pickle).",
            "abs max": "largest |w| over finite values.",
            "stable rank": "Σσ² / σ²max of the matrix.",
            "effective rank": "exp of the entropy of σ/Σσ (Roy & Vetterli).",
            "utilization": "smallest rank holding the stated fraction of Σσ², divided by min(m, n).",
            "alpha": "power-law exponent of the eigenvalue tail λ = σ² (Clauset's method, as WeightWatcher); 2–6 is typical of well-trained layers.",
            "entropy": "WeightWatcher's matrix entropy −Σp ln p / ln(rank), p = λ/Σλ.",
            "WeLore": "low-rank classification: a matrix whose normalised spectrum has many ranks below the global threshold is a low-rank candidate.",
            "Essential sparsity": "the largest one-shot magnitude-pruning sparsity whose metric stays within the tolerance of the dense model.",
        ]
        for k in defs.keys.sorted() where glossaryUsed.contains(k) { line("- **\(k)**: \(defs[k]!)") }
        line()
    }

    /// Heat maps for the saliency section: (tensor, png, legend svg, width, height), supplied by the caller that can read weights.
    public typealias HeatmapProvider = (CheckpointRow, SaliencyResult) -> [(String, [UInt8], String, Int, Int)]
}

