import Foundation
import WscanFormats

/// Human-readable output helpers.
enum Fmt {
    static func bytes(_ n: Int) -> String { ByteSize.format(n) }

    /// "512M", "8G", "1.5GiB", "4096" (bytes) → bytes; binary multiples.
    static func parseSize(_ s: String) -> Int? { ByteSize.parse(s) }

    /// A fraction as a percentage with the digits it has: 0.01 → "1%", 0.005 → "0.5%", 1e-9 → "1e-07%".
    static func percent(_ f: Double) -> String { String(format: "%.4g%%", f * 100) }

    static func count(_ n: Int) -> String { CountFormat.format(n) }

    static func num(_ v: Double?, _ digits: Int = 4) -> String {
        guard let v else { return "-" }
        if v.isNaN { return "nan" }
        if v == 0 { return "0" }
        if abs(v) >= 1e5 || abs(v) < 1e-3 { return String(format: "%.\(digits - 1)e", v) }
        return String(format: "%.\(digits)g", v)
    }

    /// Plain-text table with right-aligned numeric columns.
    /// An untrusted value (a name, path, metadata value, finding) for a one-line field: line breaks and tabs are
    /// shown as `\n`, `\r`, `\t`, so a crafted name cannot start a fake line of output.
    static func field(_ s: String) -> String {
        guard s.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\t" || $0 == "\r\n" }) else { return s }
        return s.replacingOccurrences(of: "\r\n", with: "\\r\\n").replacingOccurrences(of: "\n", with: "\\n")
            .replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\t", with: "\\t")
    }

    static func table(_ header: [String], _ rawRows: [[String]], numeric: Set<Int> = []) -> String {
        let rows = rawRows.map { $0.map(field) }
        var w = header.map { $0.count }
        for r in rows { for (i, c) in r.enumerated() where i < w.count { w[i] = max(w[i], c.count) } }
        func line(_ r: [String]) -> String {
            r.enumerated().map { i, c in
                let pad = String(repeating: " ", count: max(0, w[i] - c.count))
                return numeric.contains(i) ? pad + c : c + pad
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        var out = [line(header), w.map { String(repeating: "-", count: $0) }.joined(separator: "  ")]
        out += rows.map(line)
        return out.joined(separator: "\n")
    }

    static func json<T: Encodable>(_ v: T) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let text = String(decoding: (try? e.encode(v)) ?? Data(), as: UTF8.self)
        // JSONEncoder escapes C0 controls but writes DEL and C1 controls raw; escape them too (they can only occur
        // inside strings), so JSON output is both exact and safe for a terminal.
        guard text.utf8.contains(where: { $0 == 0x7F || $0 == 0xC2 }) else { return text }
        var out = ""
        for u in text.unicodeScalars {
            if (0x7F...0x9F).contains(u.value) { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
        return out
    }
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
final class ProgressBar: @unchecked Sendable {
    let enabled: Bool
    let start = Date()
    private var last = Date.distantPast
    private let lock = NSLock()

    init() { enabled = isatty(2) != 0 && ProcessInfo.processInfo.environment["WSCAN_NO_PROGRESS"] == nil }

    func update(files: Int, of totalFiles: Int, bytes: Int, of totalBytes: Int, label: String) {
        draw(done: bytes, of: totalBytes) { frac, el in
            let rate = el > 0 ? Double(bytes) / el : 0
            let eta = rate > 0 ? Double(totalBytes - bytes) / rate : 0
            let name = Terminal.safe((label as NSString).lastPathComponent)
            let short = name.count > 28 ? "…" + name.suffix(27) : name
            return String(format: "%3.0f%% %d/%d files  %@/%@  %@/s  ETA %@  %@", frac * 100, files, totalFiles,
                          Fmt.bytes(bytes), Fmt.bytes(totalBytes), Fmt.bytes(Int(rate)), Self.dur(eta), short)
        }
    }

    /// Progress over countable items (matrices, pairs): a count and an ETA, no byte figures.
    func update(items done: Int, of total: Int, unit: String, label: String) {
        draw(done: done, of: total) { frac, el in
            let eta = done > 0 ? el / Double(done) * Double(total - done) : .infinity
            let name = Terminal.safe(label)
            let short = name.count > 40 ? "…" + name.suffix(39) : name
            return String(format: "%3.0f%% %d/%d %@  ETA %@  %@", frac * 100, done, total, unit, Self.dur(eta), short)
        }
    }

    /// One redraw (at most every 0.1 s, and at the end): the bar, then `text(fraction, elapsed seconds)`.
    private func draw(done: Int, of total: Int, _ text: (Double, Double) -> String) {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        let now = Date()
        guard now.timeIntervalSince(last) > 0.1 || done >= total else { return }
        last = now
        let frac = total > 0 ? min(1, Double(done) / Double(total)) : 0
        let width = 24, fill = Int(frac * Double(width))
        let bar = String(repeating: "█", count: fill) + String(repeating: "░", count: width - fill)
        FileHandle.standardError.write(Data(("\r\u{1B}[2K" + bar + " " + text(frac, now.timeIntervalSince(start))).utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
    }

    static func dur(_ s: Double) -> String {
        if !s.isFinite { return "?" }
        let t = Int(s.rounded())
        return t >= 3600 ? "\(t / 3600)h\(t % 3600 / 60)m" : t >= 60 ? "\(t / 60)m\(t % 60)s" : "\(t)s"
    }
}

/// Untrusted text (checkpoint and tensor names, metadata, details of a malformed file) reaches the terminal only
/// through `print` and `printErr` below. C0 controls other than newline and tab, DEL and C1 controls become U+FFFD,
/// so a crafted checkpoint cannot send escape sequences to the user's terminal. JSON output passes unchanged
/// (`Fmt.json` escapes every control character).
enum Terminal {
    static let diagnosticLimit = 400

    /// Line breaks and tabs escaped, and cut to `limit` characters with an ellipsis in the middle: a diagnostic is
    /// "path: reason", and the reason must survive a long path.
    static func oneLine(_ s: String, limit: Int = diagnosticLimit) -> String {
        let t = Fmt.field(s)
        guard t.count > limit else { return t }
        let head = limit * 3 / 8
        return String(t.prefix(head)) + "…" + String(t.suffix(limit - head - 1))
    }

    static func safe(_ s: String) -> String { UntrustedText.visible(s) }
}

/// Shadows Swift's `print` for the whole CLI: everything written to standard output goes through `Terminal.safe`.
func print(_ items: Any..., separator: String = " ", terminator: String = "\n") {
    Swift.print(Terminal.safe(items.map { "\($0)" }.joined(separator: separator)), terminator: terminator)
}

/// A diagnostic on standard error: one line (newlines and tabs inside, e.g. from a crafted tensor name, are shown as
/// `\n` and `\t`), at most `Terminal.diagnosticLimit` characters, terminal-safe. `multiline` keeps line breaks
/// (usage text).
func printErr(_ s: String, multiline: Bool = false) {
    let line = multiline ? s : Terminal.oneLine(s)
    fflush(stdout)                                  // keep the order output and diagnostics were produced in
    FileHandle.standardError.write(Data((Terminal.safe(line) + "\n").utf8))
}
