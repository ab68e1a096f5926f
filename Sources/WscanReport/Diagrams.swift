import Foundation

/// Graphviz sources for reports (rendered in-process through libgvc).
public enum Diagrams {
    /// A numbered path component (`layer.3`): ASCII digits only, so `Int` parses it.
    static func isIndex(_ p: String) -> Bool { !p.isEmpty && p.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } && Int(p) != nil }

    /// Label text: Graphviz.escape (backslashes, quotes, `&`, control characters); a newline is a line break.
    static func esc(_ s: String) -> String { Graphviz.escape(s) }

    /// Module tree from dotted tensor names. Numbered siblings with the same structure collapse into one node
    /// "layer.{0..5} ×6". Leaves are tensors with their shapes; boxes may be coloured by a per-tensor metric.
    public static func architecture(name: String, tensors: [(String, [Int], Int)], metric: [String: Double]) -> String {
        final class Node { var children: [String: Node] = [:]; var order: [String] = []; var tensors: [(String, [Int], Int, String)] = []; var members: [String] = [] }
        let root = Node()
        for (full, shape, count) in tensors {
            var parts = full.split(separator: ".").map(String.init)
            let leaf = parts.popLast() ?? full                 // a crafted name may be "" or all dots
            // collapse numeric path components: encoder.layer.3.x → encoder.layer.#.x
            var node = root
            for p in parts {
                let key = isIndex(p) ? "#" : p
                if node.children[key] == nil { node.children[key] = Node(); node.order.append(key) }
                node = node.children[key]!
            }
            // collapsed blocks repeat their tensors: keep one entry per (name, shape), metrics from all
            if !node.tensors.contains(where: { $0.0 == leaf && $0.1 == shape }) { node.tensors.append((leaf, shape, count, full)) }
            node.members.append(full)
        }
        // How many distinct indices each collapsed "#" stands for, per parent path.
        var repeats: [String: Set<String>] = [:]
        for (full, _, _) in tensors {
            let parts = full.split(separator: ".").map(String.init)
            var path: [String] = []
            for p in parts.dropLast() {
                if isIndex(p) { repeats[path.joined(separator: "."), default: []].insert(p); path.append("#") } else { path.append(p) }
            }
        }
        var lines = ["digraph architecture {", "  graph [rankdir=LR, fontname=\"Helvetica\", fontsize=11, label=\"\(esc(name))\", labelloc=t];",
                     "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#f4f4f4\", fontname=\"Helvetica\", fontsize=10];",
                     "  edge [color=\"#888888\"];"]
        var counter = 0
        func emit(_ node: Node, path: [String], parentID: String?) {
            for key in node.order {
                let child = node.children[key]!
                counter += 1
                let id = "n\(counter)"
                let p = path.joined(separator: ".")
                var label = key
                if key == "#", let r = repeats[p] {
                    let nums = r.compactMap { Int($0) }.sorted()
                    label = nums.count > 1 ? "{\(nums.first!)..\(nums.last!)} ×\(nums.count)" : "\(nums.first ?? 0)"
                }
                let leaves = child.tensors.filter { $0.1.count >= 2 }
                let params = child.tensors.reduce(0) { $0 + $1.2 }
                var fill = "#f4f4f4"
                let vals = child.members.compactMap { metric[$0] } + childMetricValues(child, metric)
                if !vals.isEmpty {
                    let m = vals.reduce(0, +) / Double(vals.count)
                    fill = (2...6).contains(m) ? "#c7e9c0" : "#fdd0a2"
                    label += String(format: "\nα̅ %.2f", m)
                }
                if !leaves.isEmpty || params > 0 {
                    label += "\n" + child.tensors.sorted { $0.0 < $1.0 }.prefix(6).map { "\($0.0) \($0.1.map(String.init).joined(separator: "×"))" }.joined(separator: "\n")
                    if child.tensors.count > 6 { label += "\n… \(child.tensors.count - 6) more" }
                }
                lines.append("  \(id) [label=\"\(esc(label))\", fillcolor=\"\(fill)\"];")
                if let parentID { lines.append("  \(parentID) -> \(id);") }
                emit(child, path: path + [key], parentID: id)
            }
        }
        func childMetricValues(_ n: Node, _ metric: [String: Double]) -> [Double] {
            var out: [Double] = []
            for key in n.order { let c = n.children[key]!; out += c.members.compactMap { metric[$0] } + childMetricValues(c, metric) }
            return out
        }
        lines.append("  root [label=\"\(esc(name))\", shape=folder];")
        emit(root, path: [], parentID: "root")
        if !root.tensors.isEmpty {
            var label = root.tensors.sorted { $0.0 < $1.0 }.prefix(8).map { "\($0.0) \($0.1.map(String.init).joined(separator: "×"))" }.joined(separator: "\n")
            if root.tensors.count > 8 { label += "\n… \(root.tensors.count - 8) more" }
            lines.append("  top [label=\"\(esc(label))\"];")
            lines.append("  root -> top;")
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    /// Checkpoints as nodes, relationships as labelled edges.
    public static func lineage(nodes: [String], edges: [(String, String, String, Double)]) -> String {
        var l = ["digraph lineage {", "  graph [rankdir=LR, fontname=\"Helvetica\"];",
                 "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#eef3fb\", fontname=\"Helvetica\", fontsize=10];",
                 "  edge [fontname=\"Helvetica\", fontsize=9];"]
        let linked = Set(edges.flatMap { [$0.0, $0.1] })
        for (i, n) in nodes.enumerated() where linked.contains(n) { l.append("  c\(i) [label=\"\(esc(n))\"];") }
        let idx = Dictionary(nodes.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let colors = ["identical": "#1b7837", "corrupted": "#b2182b", "reencoded": "#5aae61", "pruned": "#762a83", "lora_merged": "#9970ab", "permuted": "#e08214",
                      "finetuned": "#2166ac", "independent": "#bbbbbb"]
        for (a, b, kind, conf) in edges {
            guard let ia = idx[a], let ib = idx[b] else { continue }
            // No arrowhead: the pair's order is the catalog's, not who derives from whom (the table's summary says).
            l.append("  c\(ia) -> c\(ib) [label=\"\(esc(kind)) \(String(format: "%.3f", conf))\", color=\"\(colors[kind] ?? "#444444")\", dir=none" +
                     (kind == "independent" ? ", style=dashed" : "") + "];")
        }
        l.append("}")
        return l.joined(separator: "\n") + "\n"
    }

    /// Per-block map of where two models differ: blocks coloured by the largest relative L2 among their tensors.
    public static func differenceMap(title: String, tensors: [(String, Double, Bool)]) -> String {
        var blocks: [String: (max: Double, n: Int, identical: Int)] = [:]
        var order: [String] = []
        for (name, rel, ident) in tensors {
            var parts = name.split(separator: ".").map(String.init)
            if parts.count > 1 { parts.removeLast() }
            if parts.count > 3 { parts = Array(parts.prefix(3)) }
            let key = parts.joined(separator: ".")
            if blocks[key] == nil { order.append(key) }
            let b = blocks[key] ?? (0, 0, 0)
            blocks[key] = (max(b.max, rel.isFinite ? rel : 1), b.n + 1, b.identical + (ident ? 1 : 0))
        }
        var l = ["digraph differences {", "  graph [rankdir=TB, fontname=\"Helvetica\", label=\"\(esc(title))\", labelloc=t];",
                 "  node [shape=box, style=filled, fontname=\"Helvetica\", fontsize=10];"]
        for (i, k) in order.enumerated() {
            let b = blocks[k]!
            let mean = b.max
            let color = b.identical == b.n ? "#e0e0e0" : mean < 1e-3 ? "#d9f0d3" : mean < 0.05 ? "#a6dba0" : mean < 0.3 ? "#fdb863" : "#e66101"
            l.append("  b\(i) [label=\"\(esc(k + "\nmax rel. L2 " + String(format: "%.2e", mean) + "\n\(b.identical)/\(b.n) identical"))\", fillcolor=\"\(color)\"];")
            if i > 0 { l.append("  b\(i - 1) -> b\(i) [style=invis];") }
        }
        l.append("}")
        return l.joined(separator: "\n") + "\n"
    }
}
