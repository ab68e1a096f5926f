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
            let ours = (try? String(contentsOfFile: readme, encoding: .utf8))?.contains("Produced by `wscan") ?? false
            if !contents.isEmpty && !ours {
                throw ReportError("\(dir) holds files wscan did not write: refusing to write a report there (use a new or empty folder)")
            }
        }
        do { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            let why = mkdir(dir, 0o755) != 0 ? String(cString: strerror(errno)) : Self.reason(error)   // errno says why
            throw ReportError("cannot create \(dir): \(why)")
        }
        for sub in ["figures", "diagrams"] {
            let p = (dir as NSString).appendingPathComponent(sub)
            if fm.fileExists(atPath: p) { try fm.removeItem(atPath: p) }
        }
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

    /// The POSIX reason behind a Foundation file error ("Permission denied", "File name too long"), not its domain dump.
    public static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let u = ns.userInfo[NSUnderlyingErrorKey] as? NSError, u.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(u.code))) }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        return ns.localizedDescription
    }

    func line(_ s: String = "") { md.append(s) }
    /// A file name not yet taken under `folder` (two names may slug alike).
    func unique(_ name: String, in folder: String, ext: String) -> String {
        var n = name, k = 2
        while files["\(folder)/\(n).\(ext)"] != nil { n = "\(name)-\(k)"; k += 1 }
        return n
    }
    func figure(_ name: String, _ svg: String, alt: String) {
        let name = unique(name, in: "figures", ext: "svg")
        files["figures/\(name).svg"] = Data(svg.utf8)
        line("![\(alt)](figures/\(name).svg)")
        line()
    }
    func diagram(_ name: String, dot: String, alt: String) {
        let name = unique(name, in: "diagrams", ext: "dot")
        files["diagrams/\(name).dot"] = Data(dot.utf8)
        if let svg = try? Fig.dot(dot) {
            files["diagrams/\(name).svg"] = Data(svg.utf8)
            line("![\(alt)](diagrams/\(name).svg)")
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
    static func pct(_ v: Double?) -> String { v.map { String(format: "%.1f%%", $0 * 100) } ?? "–" }
    static func bytes(_ n: Int) -> String {
        let u = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n), i = 0
        while v >= 1024 && i < 4 { v /= 1024; i += 1 }
        return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, u[i])
    }
    static func count(_ n: Int) -> String {
        let d = Double(n)
        if d >= 1e9 { return String(format: "%.2fB", d / 1e9) }
        if d >= 1e6 { return String(format: "%.2fM", d / 1e6) }
        if d >= 1e4 { return String(format: "%.1fK", d / 1e3) }
        return "\(n)"
    }
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
