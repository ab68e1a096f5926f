import Foundation
import WscanCatalog
import WscanAnalysis

extension ReportWriter {
    /// Forensic comparison report for a stored (or just computed) comparison.
    public func compareReport(_ r: CompareResult, nameA: String, nameB: String) {
        line("# Forensic comparison: \(Self.text(nameA)) vs \(Self.text(nameB))")
        line()
        line("Produced by \(Self.code(command)) from the catalog; every number below is also in [data.json](data.json).")
        line()
        let v = r.verdict
        line("## Verdict")
        line()
        line("**\(v.kind.replacingOccurrences(of: "_", with: " "))** — \(Self.text(v.summary)) (confidence \(Self.conf(v.confidence))).")
        line()
        for e in v.evidence { line("- " + Self.text(e)) }
        line()
        table(["", "path"], [["A", Self.code(Self.display(r.a))], ["B", Self.code(Self.display(r.b))]])
        if !r.onlyInA.isEmpty || !r.onlyInB.isEmpty {
            line("Unpaired tensors: \(r.onlyInA.count) only in A (\(r.onlyInA.prefix(5).map { Self.code($0) }.joined(separator: ", "))), " +
                 "\(r.onlyInB.count) only in B (\(r.onlyInB.prefix(5).map { Self.code($0) }.joined(separator: ", "))).")
            line()
        }
        line("## Where the models differ")
        line()
        diagram("differences", dot: Diagrams.differenceMap(title: "\(nameA) vs \(nameB)", tensors: r.tensors.map { ($0.name, $0.relativeL2, $0.identicalValues) }),
                alt: "per-block differences")
        let differing = r.tensors.filter { !$0.identicalValues }.sorted { ($0.relativeL2, $1.name) > ($1.relativeL2, $0.name) }
        line("\(r.tensors.count - differing.count) of \(r.tensors.count) paired tensors are identical" + (differing.isEmpty ? "." : ". Differing tensors, largest relative L2 first:"))
        line()
        if !differing.isEmpty { table(["tensor", "paired by", "dtypes", "cosine", "relative L2", "max |Δ|", "sign agreement", "new zeros", "Δ rank", "Δ energy top-4"],
              differing.map { e in [Self.code(e.name), e.matchedBy, e.dtypeA == e.dtypeB ? e.dtypeA : "\(e.dtypeA)→\(e.dtypeB)", String(format: "%.6f", e.cosine),
                                    Self.f(e.relativeL2), Self.f(e.maxAbsDiff), Self.f(e.signAgreement), "\(e.newZeros)",
                                    e.diff.map { "\($0.rank)/\($0.minDim)" } ?? "–", e.diff.map { Self.f($0.energyTop["4"]) } ?? "–"] },
              align: [false, false, false, true, true, true, true, true, true, true], fold: 12, foldTitle: "all differing tensors") }
        if let ind = r.independence {
            line("## Independence test")
            line()
            line("Permutation-robust matching test after Zhu et al. (2025): hidden units matched by incoming and by outgoing weights; " +
                 "combined p-value **\(Self.f(ind.pValue, 3))** (threshold \(Self.f(ind.threshold, 2))): " +
                 (ind.dependent ? "the models are **not** independent." : "consistent with independent training."))
            line()
            table(["layer", "units", "Spearman ρ", "p-value", "matched cosine"], ind.layers.map { [ Self.code($0.group), "\($0.units)", Self.f($0.spearman), Self.f($0.pValue, 3), Self.f($0.meanCosine) ] },
                  align: [false, true, true, true, true])
        }
        if let al = r.alignment {
            line("## Permutation alignment")
            line()
            let moved = al.perms.filter { !Permuter.isIdentity($0.value) }.map(\.key).sorted()
            line("Git Re-Basin weight matching (\(al.family)): \(al.sweeps) sweeps; \(moved.count) of \(al.perms.count) groups permuted; " +
                 "objective Σ⟨W_A, P W_B⟩ \(Self.f(al.objectiveBefore)) → \(Self.f(al.objectiveAfter)).")
            line()
            for n in al.notes { line("- " + Self.text(n)) }
            if !al.notes.isEmpty { line() }
        }
        if let c = r.connectivity {
            line("## Linear-mode connectivity")
            line()
            line(Self.text(c.note) + ".")
            line()
            // A missing barrier says why when the evaluator returned NaN along the path.
            func barrier(_ p: ConnectivityCurve) -> String {
                if p.barrier == nil, let at = p.nanAt { return "– (NaN at λ = \(at.map { String(format: "%.3g", $0) }.joined(separator: ", ")))" }
                return Self.f(p.barrier)
            }
            var rows: [[String]] = [["before alignment", Self.f(c.before.distance), barrier(c.before)]]
            if let a = c.after { rows.append(["after alignment", Self.f(a.distance), barrier(a)]) }
            let onLoss = c.before.loss != nil || c.before.higherIsBetter == false
            table(["path", "‖θB − θA‖", onLoss ? "loss barrier" : "barrier (metric drop)"], rows, align: [false, true, true])
            if c.before.loss != nil || c.before.metric != nil {
                var series: [(String, [Double], [Double], Bool)] = []
                if let l = c.before.loss { series.append(("loss, before", c.before.lambdas, l, true)) }
                if let l = c.after?.loss { series.append(("loss, after", c.after!.lambdas, l, false)) }
                if series.isEmpty, let m = c.before.metric { series.append(("metric, before", c.before.lambdas, m, true)); if let a = c.after?.metric { series.append(("metric, after", c.after!.lambdas, a, false)) } }
                let what = onLoss ? "loss" : "metric"
                figure("connectivity-loss", Fig.line(title: onLoss ? "Loss along the interpolation path" : "Evaluator metric along the interpolation path",
                                                     xLabel: "λ", yLabel: what, xLog: false, yLog: false,
                                                     series: series, markers: [], hlines: []), alt: "\(what) along the path")
                if let a0 = c.before.accuracy {
                    var s2: [(String, [Double], [Double], Bool)] = [("accuracy, before", c.before.lambdas, a0, true)]
                    if let a1 = c.after?.accuracy { s2.append(("accuracy, after", c.after!.lambdas, a1, false)) }
                    figure("connectivity-accuracy", Fig.line(title: "Accuracy along the interpolation path", xLabel: "λ", yLabel: "accuracy", xLog: false, yLog: false,
                                                             series: s2, markers: [], hlines: []), alt: "accuracy along the path")
                }
            }
        }
        // The run's warnings (tensors only one side has, an evaluator that could not run, NaN along a path, …).
        if let notes = r.notes, !notes.isEmpty {
            line("## Notes")
            line()
            // A note that starts with a path (B's) shows it as the rest of the report does, relative to the folder.
            for n in notes { line("- " + Self.text(Self.display(n))) }
            line()
        }
        var rr = r
        rr.a = Self.display(r.a); rr.b = Self.display(r.b)
        data["compare"] = JSONTree.from(rr)
        data["command"] = .string(command)
    }

    public func lineageReport(_ l: CompareRunner.Lineage) {
        line("# Lineage of the catalog")
        line()
        line("Produced by \(Self.code(command)); every number below is also in [data.json](data.json).")
        line()
        let fp = l.fingerprintPairs, np = l.uncomparedPairs ?? (l.failed ?? []).count, nc = (l.failed ?? []).count - np
        line("\(l.checkpoints.count) checkpoints, \(l.pairs) pairs: \(l.compared) compared, \(fp) identical by content fingerprint (not decoded), "
             + "\(l.skippedPairs) skipped because their tensor shapes differ" + (np > 0 ? ", \(np) could not be compared" : "")
             + (nc > 0 ? "; \(nc) checkpoint\(nc == 1 ? "" : "s") could not be read" : "") + ". " +
             "Edges show the verdict and its confidence (no arrowheads: the table's summary says which side is derived); independent pairs are omitted.")
        line()
        if l.checkpoints.isEmpty {
            line("The catalog holds no readable checkpoint with tensors: nothing to relate. Index some with `wscan index PATH`.")
            line()
        }
        let edges = l.edges.filter { $0.kind != "independent" }.sorted { ($0.a, $0.b) < ($1.a, $1.b) }
        let linked = Set(edges.flatMap { [$0.a, $0.b] })
        let failed = l.failed ?? []
        // A checkpoint whose comparisons failed is not "without relationship": we could not tell.
        let inFailure = Set(l.checkpoints.filter { n in failed.contains { $0.hasPrefix(n + " ↔ ") || $0.contains(" ↔ " + n + ":") } })
        let alone = l.checkpoints.filter { !linked.contains($0) && !inFailure.contains($0) }.sorted()
        if !alone.isEmpty { line("Without any relationship found: \(alone.map { Self.code($0) }.joined(separator: ", ")).") ; line() }
        if !failed.isEmpty {
            line("Pairs that could not be compared (their relationship is unknown):")
            line()
            for f in failed.sorted().prefix(20) { line("- " + Self.text(f)) }
            if failed.count > 20 { line("- … and \(failed.count - 20) more (all in data.json)") }
            line()
        }
        if let n = l.notRead, !n.isEmpty {
            line("Not part of the lineage: \(n.count) catalog entries that could not be read or were refused as unsafe (" +
                 n.sorted().prefix(8).map { Self.code($0) }.joined(separator: ", ") + (n.count > 8 ? ", …" : "") + ").")
            line()
        }
        diagram("lineage", dot: Diagrams.lineage(nodes: l.checkpoints.sorted(), edges: edges.map { ($0.a, $0.b, $0.kind, $0.confidence) }), alt: "relationship graph")
        table(["A", "B", "relationship", "confidence", "how", "summary"], edges.map { [Self.code($0.a), Self.code($0.b), $0.kind, Self.conf($0.confidence), $0.how, Self.text($0.summary)] },
              align: [false, false, false, true, false, false], fold: 20, foldTitle: "all relationships")
        data["lineage"] = JSONTree.from(l)
        data["command"] = .string(command)
    }
}
