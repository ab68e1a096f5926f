import Foundation
import WscanCatalog
import WscanAnalysis
import WscanFormats

/// Audit reports: a folder with README.md (the report), figures/*.svg|png, diagrams/*.dot + rendered *.svg, and
/// data.json holding every number the report shows. Output is deterministic: no timestamps, sorted keys, fixed
/// number formats, so two runs on the same catalog give byte-identical files.
public final class ReportWriter {
    public let catalog: Catalog
    public let command: String
    var md: [String] = []
    var files: [String: Data] = [:]
    var data: [String: JSONTree] = [:]
    var glossaryUsed = Set<String>()
    /// Supplies saliency heat maps (the caller can read weights; the report itself reads only the catalog).
    public var heatmapProvider: HeatmapProvider?

    public init(catalog: Catalog, command: String) { self.catalog = catalog; self.command = command }

    // MARK: output

    /// Writes the folder. Existing files of earlier reports in it are replaced; nothing else is touched. A folder
    /// that is not empty and does not hold an earlier wscan report (its README.md says "Produced by `wscan") is
    /// refused: README.md, data.json, figures/ and diagrams/ there may be someone else's.
    public func write(to dir: String) throws -> [String] {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: dir, isDirectory: &isDir) {
            guard isDir.boolValue else { throw ReportError("\(dir) exists and is not a folder") }
            let contents = (try? fm.contentsOfDirectory(atPath: dir)) ?? []
            let readme = (dir as NSString).appendingPathComponent("README.md")
            let ours = (try? String(contentsOfFile: readme, encoding: .utf8))?.range(of: "Produced by `+ ?wscan", options: .regularExpression) != nil
            if !contents.isEmpty && !ours {
                throw ReportError("\(dir) holds files wscan did not write: refusing to write a report there (use a new or empty folder)")
            }
        }
        do { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            let why = mkdir(dir, 0o755) != 0 ? String(cString: strerror(errno)) : Self.reason(error)   // errno says why
            throw ReportError("cannot create \(dir): \(why)")
        }
        // The earlier report's figures and diagrams (the files its README.md links) are removed, so none is left
        // over; anything else in those folders is someone else's and stays.
        if let old = try? String(contentsOfFile: (dir as NSString).appendingPathComponent("README.md"), encoding: .utf8) {
            for rel in Self.linkedFiles(old) { try? fm.removeItem(atPath: (dir as NSString).appendingPathComponent(rel)) }
            for sub in ["figures", "diagrams"] {
                let p = (dir as NSString).appendingPathComponent(sub)
                if (try? fm.contentsOfDirectory(atPath: p))?.isEmpty == true { try? fm.removeItem(atPath: p) }
            }
        }
        // Figures computed from a checkpoint that shrank while it was read (zero pages) are not written.
        if let f = MappedFiles.shrunk() { throw ReportError("not writing \(dir): \(f): \(MappedFiles.shrankReason)") }
        // A README that marks the folder as a wscan report goes first, so a run interrupted before the real README
        // (written last) leaves a folder the next run recognises and writes over, not one it must refuse.
        do {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try Data("# Report being written\n\nProduced by `wscan`: this report was interrupted while it was written; run the command again.\n".utf8)
                .write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("README.md")))
        } catch { throw ReportError("cannot write README.md in \(dir): \(Self.reason(error))") }
        var all = files
        all["README.md"] = Data((md.joined(separator: "\n") + "\n").utf8)
        all["data.json"] = Data(JSONTree.object(data).rendered().utf8)
        // Figures and data first, README.md last: a failure never leaves a README linking files that are not there.
        for (rel, content) in all.sorted(by: { ($0.key == "README.md" ? 1 : 0, $0.key) < ($1.key == "README.md" ? 1 : 0, $1.key) }) {
            let p = (dir as NSString).appendingPathComponent(rel)
            do {
                try fm.createDirectory(atPath: FileRef.parentPath(p), withIntermediateDirectories: true)
                try content.write(to: URL(fileURLWithPath: p))
            } catch { throw ReportError("cannot write \(rel) in \(dir): \(Self.reason(error))") }
        }
        return all.keys.sorted()
    }

    /// Files under figures/ and diagrams/ a report's Markdown links to (plain names: no "..", no sub-folders).
    /// Only the links wscan writes count, whole lines as `figure` and `diagram` make them, with its own file names
    /// (slugs ending .svg, .png or .dot): a name from a checkpoint that spells "](figures/notes.txt)" somewhere in a
    /// table or an alt text does not make a re-run delete the user's file.
    static func linkedFiles(_ markdown: String) -> Set<String> {
        let file = "(figures|diagrams)/[A-Za-z0-9._-]+\\.(svg|png|dot)"
        let patterns = ["^!\\[[^\\]]*\\]\\((\(file))\\)$",                                   // ![alt](figures/x.svg)
                        "^\\*\\(diagram could not be rendered; source: \\[[^\\]]*\\]\\((\(file))\\)\\)\\*$",
                        "^<sub>Graphviz source: \\[[^\\]]*\\]\\((\(file))\\)</sub>$",
                        "^\\*\\*.*: !\\[saliency map of [^\\]]*\\]\\((\(file))\\) !\\[scale\\]\\((\(file))\\)$"]   // heat maps
        let res = patterns.map { try! NSRegularExpression(pattern: $0) }
        var out = Set<String>()
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: true) {
            let l = String(line), ns = l as NSString
            for re in res {
                guard let m = re.firstMatch(in: l, range: NSRange(location: 0, length: ns.length)) else { continue }
                for g in 1..<m.numberOfRanges where m.range(at: g).location != NSNotFound {
                    let rel = ns.substring(with: m.range(at: g))
                    if (rel.hasPrefix("figures/") || rel.hasPrefix("diagrams/")) && !rel.contains("..") { out.insert(rel) }
                }
            }
        }
        return out
    }

    /// The POSIX reason behind a Foundation file error ("Permission denied", "File name too long"), not its domain dump.
    public static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let u = ns.userInfo[NSUnderlyingErrorKey] as? NSError, u.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(u.code))) }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        return ns.localizedDescription
    }

    func line(_ s: String = "") { md.append(s) }

    // MARK: text from checkpoints (names, paths, reasons) in Markdown: nothing in it may start markup or HTML

    /// Control characters other than line breaks and tabs (C0, DEL, C1: escape sequences that would retitle or
    /// recolour a terminal showing the file) as U+FFFD, as the command line shows them.
    static func visible(_ s: String) -> String { UntrustedText.visible(s, keeping: ["\n", "\r", "\t"]) }

    /// Inline text: Markdown punctuation and HTML are backslash-escaped, line breaks become spaces.
    static func text(_ s: String) -> String {
        var o = ""
        let cs = Array(visible(s))
        for (i, c) in cs.enumerated() {
            // An underscore between letters or digits cannot start emphasis (GFM): left as is, so `mlp_seed0` reads plainly.
            if c == "_", i > 0, i + 1 < cs.count, cs[i - 1].isLetter || cs[i - 1].isNumber, cs[i + 1].isLetter || cs[i + 1].isNumber { o.append(c); continue }
            switch c {
            case "\\", "`", "*", "_", "[", "]", "<", ">", "~", "&": o.append("\\"); o.append(c)   // "|": table() escapes it
            case "\n", "\r", "\r\n", "\t": o.append(" ")
            default: o.append(c)
            }
        }
        return o
    }
    /// A code span that holds any text: fenced by one more backtick than the longest run inside, line breaks shown as ⏎.
    static func code(_ s: String) -> String {
        let t = visible(s).replacingOccurrences(of: "\r\n", with: "⏎").replacingOccurrences(of: "\n", with: "⏎").replacingOccurrences(of: "\r", with: "⏎")
        var run = 0, longest = 0
        for c in t { if c == "`" { run += 1; longest = max(longest, run) } else { run = 0 } }
        let fence = String(repeating: "`", count: longest + 1)
        let pad = t.hasPrefix("`") || t.hasSuffix("`") || t.hasPrefix(" ") ? " " : ""
        return fence + pad + t + pad + fence
    }
    /// Image alt text: brackets and backslashes escaped, one line.
    static func alt(_ s: String) -> String {
        var o = ""
        for c in visible(s) {
            switch c {
            case "\\", "[", "]", "<", ">", "&", "`": o.append("\\"); o.append(c)
            case "\n", "\r", "\r\n", "\t": o.append(" ")
            default: o.append(c)
            }
        }
        return o
    }
    /// A word for a shell command line: as is when made of safe characters, else single-quoted.
    public static func shell(_ s: String) -> String {
        let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/#:=+,@%-")
        // (A word starting with "#" would start a comment: a catalog id like #3 is quoted.)
        if !s.isEmpty && s.allSatisfy({ safe.contains($0) }) && !s.hasPrefix("-") && !s.hasPrefix("#") { return s }
        return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
    /// The id GitHub gives a heading: lower case, punctuation other than "-" and "_" dropped, spaces as "-".
    static func anchor(_ heading: String) -> String {
        String(heading.lowercased().compactMap { c -> Character? in
            if c == " " { return "-" }
            if c.isLetter || c.isNumber || c == "-" || c == "_" { return c }
            return nil
        })
    }
    /// A file name not yet taken under `folder` (two names may slug alike).
    func unique(_ name: String, in folder: String, ext: String) -> String {
        var n = name, k = 2
        while files["\(folder)/\(n).\(ext)"] != nil { n = "\(name)-\(k)"; k += 1 }
        return n
    }
    func figure(_ name: String, _ svg: String, alt: String) {
        let name = unique(name, in: "figures", ext: "svg")
        files["figures/\(name).svg"] = Data(svg.utf8)
        line("![\(Self.alt(alt))](figures/\(name).svg)")
        line()
    }
    func diagram(_ name: String, dot: String, alt: String) {
        let name = unique(name, in: "diagrams", ext: "dot")
        files["diagrams/\(name).dot"] = Data(dot.utf8)
        if let svg = try? Fig.dot(dot) {
            files["diagrams/\(name).svg"] = Data(svg.utf8)
            line("![\(Self.alt(alt))](diagrams/\(name).svg)")
        } else {
            line("*(diagram could not be rendered; source: [diagrams/\(name).dot](diagrams/\(name).dot))*")
        }
        line()
        line("<sub>Graphviz source: [diagrams/\(name).dot](diagrams/\(name).dot)</sub>")
        line()
    }
    func term(_ t: String) -> String { glossaryUsed.insert(t); return "[\(t)](#glossary)" }

    /// A table; above `fold` rows the first `fold` are shown and the full table is folded below.
    func table(_ header: [String], _ rows: [[String]], align: [Bool]? = nil, fold: Int = 15, foldTitle: String = "full table") {
        func render(_ rs: [[String]]) {
            line("| " + header.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |")
            line("|" + header.indices.map { (align?[$0] ?? false) ? "---:" : "---" }.joined(separator: "|") + "|")
            for r in rs { line("| " + r.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |") }
            line()
        }
        if rows.count <= fold + 5 { render(rows); return }
        render(Array(rows.prefix(fold)))
        line("<details><summary>\(foldTitle) (\(rows.count) rows)</summary>")
        line()
        render(rows)
        line("</details>")
        line()
    }

    // MARK: number formats (the same strings go into README.md; data.json keeps the exact values)

    /// Paths under the working directory are shown relative to it, so that reports do not depend on where the
    /// repository is checked out.
    static func display(_ path: String) -> String {
        let cwd = FileManager.default.currentDirectoryPath
        return path.hasPrefix(cwd + "/") ? String(path.dropFirst(cwd.count + 1)) : path
    }

    static func f(_ v: Double?, _ digits: Int = 4) -> String {
        guard let v else { return "–" }
        if !v.isFinite { return v.isNaN ? "nan" : (v > 0 ? "inf" : "-inf") }
        if v == 0 { return "0" }
        if abs(v) >= 1e5 || abs(v) < 1e-3 { return String(format: "%.\(digits - 1)e", v) }
        return String(format: "%.\(digits)g", v)
    }
    /// A verdict confidence: three decimals, so 0.999 is not shown as 1.
    static func conf(_ v: Double) -> String { String(format: "%.3f", v) }
    static func pct(_ v: Double?) -> String { v.map { String(format: "%.1f%%", $0 * 100) } ?? "–" }
    static func bytes(_ n: Int) -> String {
        let u = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n), i = 0
        while v >= 1024 && i < 4 { v /= 1024; i += 1 }
        return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, u[i])
    }
    static func count(_ n: Int) -> String { CountFormat.format(n) }
    public static func slugName(_ s: String) -> String { slug(s.replacingOccurrences(of: ".safetensors", with: "").replacingOccurrences(of: ".npz", with: "")) }
    /// Lower-case letters and digits, other characters as "-"; a long name (tensor names can run to hundreds of
    /// bytes) is cut and ends with a hash of the whole, so a file name stays well under the 255-byte limit.
    static func slug(_ s: String) -> String {
        bounded(String(s.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }).replacingOccurrences(of: "--", with: "-"),
                of: s, above: 120, keep: 100)
    }

    /// `stem` as is while it has at most `above` UTF-8 bytes; longer, its first `keep` bytes (whole characters)
    /// and an FNV-1a hash of `original`, so distinct long names stay distinct.
    public static func bounded(_ stem: String, of original: String, above: Int, keep: Int) -> String {
        guard stem.utf8.count > above else { return stem }
        var h: UInt64 = 0xcbf29ce484222325
        for b in original.utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        var cut = ""
        for c in stem { if cut.utf8.count + String(c).utf8.count > keep { break }; cut.append(c) }
        return cut + "-" + String(h, radix: 16)
    }
}

public struct ReportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ s: String) { description = s }
}
