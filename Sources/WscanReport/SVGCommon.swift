import Foundation

/// Helpers shared by the SVG charts: XML escaping, fixed-precision number formatting (locale-free, so output is
/// byte-identical across runs and machines), text-width estimates and the default palette.
public enum SVG {
    /// Okabe–Ito colour-blind-safe categorical palette, ordered so the low-contrast yellow comes last.
    public static let palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]

    static let font = "Helvetica, Arial, sans-serif"

    /// Escapes text for XML character data and attribute values (`& < > " '`). Characters XML 1.0 forbids
    /// (C0 controls other than tab/newline/CR, U+FFFE, U+FFFF) become U+FFFD.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for u in s.unicodeScalars {
            switch u {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default:
                let v = u.value
                if (v < 0x20 && v != 0x09 && v != 0x0A && v != 0x0D) || v == 0xFFFE || v == 0xFFFF {
                    out += "\u{FFFD}"
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out
    }

    /// A coordinate with at most two decimals, trailing zeros trimmed ("12.5", "3", "-0.25").
    /// Non-finite values print as 0; magnitudes are clamped to ±1e6 (coordinates never need more).
    public static func num(_ v: Double) -> String { fixed(v, decimals: 2, trim: true) }

    /// Fixed-point formatting without Foundation/locale: `decimals` ≤ 9, |v| clamped to 1e9.
    static func fixed(_ v: Double, decimals: Int, trim: Bool) -> String {
        guard v.isFinite else { return "0" }
        let d = max(0, min(9, decimals))
        var p: Int64 = 1
        for _ in 0..<d { p *= 10 }
        let clamped = max(-1e9, min(1e9, v))
        let scaled = (clamped * Double(p)).rounded(.toNearestOrAwayFromZero)
        if scaled == 0 { return d == 0 || trim ? "0" : "0." + String(repeating: "0", count: d) }
        let neg = scaled < 0
        let a = Int64(abs(scaled))
        let ip = a / p, fp = a % p
        var s = neg ? "-" : ""
        s += String(ip)
        if d > 0 {
            var f = String(fp)
            f = String(repeating: "0", count: d - f.count) + f
            if trim { while f.hasSuffix("0") { f.removeLast() } }
            if !f.isEmpty { s += "." + f }
        }
        return s
    }

    /// Scientific notation "2.5e-4" with `decimals` mantissa decimals (trailing zeros trimmed).
    static func scientific(_ v: Double, decimals: Int) -> String {
        guard v.isFinite else { return v.isNaN ? "NaN" : (v > 0 ? "inf" : "-inf") }
        if v == 0 { return "0" }
        var e = Int(floor(log10(abs(v))))
        var m = v / pow(10, Double(e))
        // Rounding the mantissa may carry into the next decade (9.96 -> 10.0).
        var q: Double = 1
        for _ in 0..<max(0, min(9, decimals)) { q *= 10 }
        if (abs(m) * q).rounded(.toNearestOrAwayFromZero) >= 10 * q { e += 1; m = v / pow(10, Double(e)) }
        return fixed(m, decimals: decimals, trim: true) + "e" + String(e)
    }

    /// A value for people: three significant digits, scientific outside [1e-3, 1e5).
    public static func value(_ v: Double) -> String {
        guard v.isFinite else { return v.isNaN ? "n/a" : (v > 0 ? "inf" : "-inf") }
        if v == 0 { return "0" }
        let a = abs(v)
        if a >= 1e5 || a < 1e-3 { return scientific(v, decimals: 2) }
        let mag = Int(floor(log10(a)))
        return fixed(v, decimals: max(0, 2 - mag), trim: true)
    }

    /// Label for a tick on a linear axis with spacing `step` (1-2-5 steps), precise enough to tell ticks apart.
    static func tickLabel(_ v: Double, step: Double, scale: Double) -> String {
        let stepMag = Int(floor(log10(step) + 1e-9))
        let sci = scale >= 1e6 || scale < 1e-3
        if abs(v) < step * 1e-9 { return sci ? "0" : fixed(0, decimals: max(0, -stepMag), trim: false) }
        if sci {
            let e = Int(floor(log10(abs(v))))
            return scientific(v, decimals: max(0, e - stepMag))
        }
        return fixed(v, decimals: max(0, -stepMag), trim: false)
    }

    /// Approximate rendered width of `s` in a sans-serif font of `size` px (no font metrics available).
    public static func textWidth(_ s: String, size: Double) -> Double {
        var w = 0.0
        for u in s.unicodeScalars {
            switch u.value {
            case 0x20, 0x2E, 0x2C, 0x3A, 0x3B, 0x49, 0x69, 0x6A, 0x6C, 0x7C, 0x27, 0x21: w += 0.3
            case 0x4D, 0x57, 0x6D, 0x77: w += 0.85
            case 0x41...0x5A: w += 0.68
            case 0x1100...0xFFFF where u.properties.isIdeographic: w += 1.0
            default: w += 0.57
            }
        }
        return w * size
    }

    /// Keeps the end of `s` (the distinctive suffix of a layer name), prefixing "…", to fit `maxWidth` px.
    public static func truncateLeft(_ s: String, maxWidth: Double, size: Double) -> String {
        if textWidth(s, size: size) <= maxWidth { return s }
        // the longest suffix within the budget, widths summed once (a 40,000-character name took 54 s re-measured)
        let chars = Array(s), budget = maxWidth - textWidth("…", size: size)
        var start = chars.count, w = 0.0
        while start > 0 { let c = textWidth(String(chars[start - 1]), size: size); if w + c > budget { break }; w += c; start -= 1 }
        return "…" + String(chars[start...])
    }

    /// Keeps the parts of `s` around the positions `ps` (where it differs from names that would read alike) and its
    /// end, "…" between: "…layers.12.b…erts.5…_proj.weight", to fit `maxWidth` px.
    static func truncateAround(_ s: String, _ ps: [Int], maxWidth: Double, size: Double) -> String {
        if textWidth(s, size: size) <= maxWidth { return s }
        let chars = Array(s)
        var context = 8
        while true {
            // windows [p − context, p + 3), merged when they touch
            var spans: [(Int, Int)] = []
            for p in Set(ps).sorted() {
                let a = max(0, p - context), b = min(chars.count, p + 3)
                if let last = spans.last, a <= last.1 { spans[spans.count - 1].1 = max(last.1, b) } else { spans.append((a, b)) }
            }
            var head = ""
            var at = 0
            for (a, b) in spans { head += (a > at ? "…" : "") + String(chars[a..<b]); at = b }
            if at >= chars.count { if textWidth(head, size: size) <= maxWidth || context == 0 { return head } ; context -= 1; continue }
            let budget = maxWidth - textWidth(head + "…", size: size)
            if budget < 0 && context > 0 { context -= 1; continue }
            var j = chars.count, w = 0.0
            while j > at { let c = textWidth(String(chars[j - 1]), size: size); if w + c > budget { break }; w += c; j -= 1 }
            return head + "…" + String(chars[j...])
        }
    }

    /// Labels fitted to `maxWidth` px: each keeps its end (the distinctive suffix of a layer name); names that would
    /// then read alike (long names differing in the middle: a layer index, an expert index) keep where their group
    /// starts to differ, where each differs from its closest sibling, and the end. Sorting makes it O(n log n).
    public static func fittedLabels(_ names: [String], maxWidth: Double, size: Double) -> [String] {
        var shown = names.map { truncateLeft($0, maxWidth: maxWidth, size: size) }
        let groups = Dictionary(grouping: names.indices, by: { shown[$0] }).values.filter { g in Set(g.map { names[$0] }).count > 1 }
        func lcp(_ x: [Character], _ y: [Character]) -> Int {
            var q = 0
            while q < min(x.count, y.count), x[q] == y[q] { q += 1 }
            return q
        }
        for g in groups {
            let cs = Set(g.map { names[$0] }).map { Array($0) }.sorted { $0.lexicographicallyPrecedes($1) }
            let first = lcp(cs.first!, cs.last!)          // the whole group's common prefix
            var label: [String: String] = [:]
            for (k, c) in cs.enumerated() {
                let near = max(k > 0 ? lcp(cs[k - 1], c) : 0, k + 1 < cs.count ? lcp(c, cs[k + 1]) : 0)
                label[String(c)] = truncateAround(String(c), [first, near], maxWidth: maxWidth, size: size)
            }
            for i in g { shown[i] = label[names[i]]! }
        }
        return shown
    }

    /// Keeps the start of `s`, suffixing "…", to fit `maxWidth` px (titles).
    static func truncateRight(_ s: String, maxWidth: Double, size: Double) -> String {
        if textWidth(s, size: size) <= maxWidth { return s }
        let chars = Array(s), budget = maxWidth - textWidth("…", size: size)
        var end = 0, w = 0.0
        while end < chars.count { let c = textWidth(String(chars[end]), size: size); if w + c > budget { break }; w += c; end += 1 }
        return String(chars[..<end]) + "…"
    }

    /// `<svg …>` root with a white background, `<title>` and the default font.
    static func open(width: Int, height: Int, title: String) -> String {
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\""
        s += " role=\"img\" aria-label=\"\(escape(title))\" font-family=\"\(font)\">\n"
        s += "<title>\(escape(title))</title>\n"
        s += "<rect x=\"0\" y=\"0\" width=\"\(width)\" height=\"\(height)\" fill=\"#ffffff\"/>\n"
        return s
    }

    /// Attributes giving text a white outline so it stays readable over lines and bars.
    static let halo = " stroke=\"#ffffff\" stroke-width=\"3\" stroke-linejoin=\"round\" paint-order=\"stroke\""

    static func text(_ s: String, x: Double, y: Double, size: Double, anchor: String = "start", weight: String? = nil,
                     fill: String = "#222222", rotate: Double? = nil, extra: String = "") -> String {
        var t = "<text x=\"\(num(x))\" y=\"\(num(y))\" font-size=\"\(num(size))\""
        if anchor != "start" { t += " text-anchor=\"\(anchor)\"" }
        if let weight { t += " font-weight=\"\(weight)\"" }
        if fill != "#222222" { t += " fill=\"\(escape(fill))\"" } else { t += " fill=\"#222222\"" }
        if let rotate { t += " transform=\"rotate(\(num(rotate)) \(num(x)) \(num(y)))\"" }
        t += extra
        return t + ">" + escape(s) + "</text>\n"
    }

    static func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String, width: Double = 1,
                     dash: String? = nil) -> String {
        var t = "<line x1=\"\(num(x1))\" y1=\"\(num(y1))\" x2=\"\(num(x2))\" y2=\"\(num(y2))\" stroke=\"\(escape(stroke))\""
        if width != 1 { t += " stroke-width=\"\(num(width))\"" }
        if let dash { t += " stroke-dasharray=\"\(dash)\"" }
        return t + "/>\n"
    }

    /// "10^k" as SVG text content: 10 with a raised exponent.
    static func powerOfTen(_ k: Int, size: Double) -> String {
        "10<tspan dy=\"\(num(-size * 0.45))\" font-size=\"\(num(size * 0.75))\">\(k)</tspan>"
    }
}

/// Axis tick placement.
public enum Ticks {
    /// A "nice" spacing (1, 2 or 5 × 10^k) giving roughly `target` intervals over `range`.
    public static func niceStep(_ range: Double, target: Int = 6) -> Double {
        guard range.isFinite, range > 0 else { return 1 }
        let rough = range / Double(max(1, target))
        let mag = pow(10, floor(log10(rough)))
        let n = rough / mag
        let f: Double = n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10
        return f * mag
    }

    /// Ticks for a linear axis. With `expand` the bounds grow outward to multiples of the step; otherwise ticks are
    /// the multiples of the step inside [lo, hi]. A degenerate range is widened around its value.
    public static func linear(lo: Double, hi: Double, target: Int = 6, expand: Bool = true)
        -> (lo: Double, hi: Double, step: Double, values: [Double]) {
        var lo = lo, hi = hi
        if !(lo.isFinite && hi.isFinite) { lo = 0; hi = 1 }
        if lo > hi { swap(&lo, &hi) }
        if hi - lo <= max(abs(lo), abs(hi)) * 1e-12 {
            let d = lo == 0 ? 1 : abs(lo) * 0.1
            lo -= d; hi += d
        }
        let step = niceStep(hi - lo, target: target)
        let tol = step * 1e-9
        let first = expand ? floor((lo + tol) / step) : ceil((lo - tol) / step)
        let last = expand ? ceil((hi - tol) / step) : floor((hi + tol) / step)
        var values: [Double] = []
        if last >= first {
            for i in 0...Int(last - first) {
                var v = (first + Double(i)) * step
                if abs(v) < tol { v = 0 }
                values.append(v)
            }
        }
        if expand { lo = first * step; hi = last * step }
        return (lo, hi, step, values)
    }

    /// Ticks for a log10 axis. With `expand` the bounds grow to whole decades. `major` are labelled decades (every
    /// `labelEvery`-th decade when the span is wide); `minor` are 2…9 × 10^k (when the span is at most 8 decades)
    /// and unlabelled decades. If fewer than two decades fall inside a fixed range, 2× and 5× ticks are labelled too.
    public static func log(lo: Double, hi: Double, expand: Bool = true)
        -> (lo: Double, hi: Double, major: [Double], minor: [Double]) {
        var lo = lo, hi = hi
        if !(lo.isFinite && lo > 0) { lo = 1 }
        if !(hi.isFinite && hi > 0) { hi = lo * 10 }
        if lo > hi { swap(&lo, &hi) }
        var kLo = Int(floor(log10(lo) + 1e-9)), kHi = Int(ceil(log10(hi) - 1e-9))
        if kHi <= kLo { kHi = kLo + 1 }
        if expand { lo = pow(10, Double(kLo)); hi = pow(10, Double(kHi)) }
        let span = kHi - kLo
        let every = max(1, Int((Double(span) / 8).rounded(.up)))
        let inRange = { (v: Double) in v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9) }
        var major: [Double] = [], minor: [Double] = []
        for k in kLo...kHi {
            let d = pow(10, Double(k))
            if inRange(d) { if k % every == 0 { major.append(d) } else { minor.append(d) } }
            if span <= 8 && k < kHi {
                for m in 2...9 { let v = Double(m) * d; if inRange(v) { minor.append(v) } }
            }
        }
        if major.count < 2 {
            let extra = minor.filter { v in
                let m = (v / pow(10, floor(log10(v) + 1e-9))).rounded()
                return m == 2 || m == 5
            }
            major = (major + extra).sorted()
            minor = minor.filter { !extra.contains($0) }
        }
        return (lo, hi, major, minor)
    }

    /// True when `v` is an exact power of ten (as produced by `log`).
    public static func isDecade(_ v: Double) -> Bool {
        guard v > 0, v.isFinite else { return false }
        let k = (log10(v)).rounded()
        return v == pow(10, k)
    }
}
