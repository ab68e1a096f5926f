import Foundation

// Deterministic SVG charts written by wscan itself (no plotting runtime). Same input -> byte-identical output:
// no timestamps, no random ids, coordinates with at most two decimals, locale-free number formatting.

/// One data series of a `LineChart`.
public struct ChartSeries: Sendable {
    public enum Style: Sendable { case line, points, linePoints, step }
    public var name: String
    public var x: [Double]
    public var y: [Double]
    public var style: Style
    /// CSS colour; nil picks the next Okabe–Ito colour (`SVG.palette`) by series index.
    public var color: String?
    public var dashed: Bool

    public init(name: String, x: [Double], y: [Double], style: Style = .line, color: String? = nil, dashed: Bool = false) {
        self.name = name; self.x = x; self.y = y; self.style = style; self.color = color; self.dashed = dashed
    }
    /// y against 1, 2, 3, … (rank plots).
    public init(name: String, y: [Double], style: Style = .line, color: String? = nil, dashed: Bool = false) {
        self.init(name: name, x: (0..<y.count).map { Double($0 + 1) }, y: y, style: style, color: color, dashed: dashed)
    }
}

/// A vertical dashed line with a label (a knee, an xmin).
public struct ChartMarker: Sendable {
    public var x: Double
    public var label: String
    public var color: String?
    public init(x: Double, label: String, color: String? = nil) { self.x = x; self.label = label; self.color = color }
}

/// A horizontal dashed reference line with an optional label (a threshold, an expected value).
public struct ChartHLine: Sendable {
    public var y: Double
    public var label: String
    public var color: String?
    public init(y: Double, label: String = "", color: String? = nil) { self.y = y; self.label = label; self.color = color }
}

/// A line / scatter / step chart with linear or log10 axes.
///
/// Points with a non-finite coordinate, or a non-positive one on a log axis, are skipped and break the line there.
/// When no series has a drawable point the chart says "no data".
public struct LineChart: Sendable {
    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var xLog: Bool
    public var yLog: Bool
    public var series: [ChartSeries]
    public var markers: [ChartMarker]
    public var hlines: [ChartHLine]
    public var width: Int
    public var height: Int
    /// Fixed axis ranges; nil fits the data (rounded out to nice ticks, or whole decades on log axes).
    public var xRange: ClosedRange<Double>?
    public var yRange: ClosedRange<Double>?

    public init(title: String, xLabel: String = "", yLabel: String = "", xLog: Bool = false, yLog: Bool = false,
                series: [ChartSeries] = [], markers: [ChartMarker] = [], hlines: [ChartHLine] = [],
                width: Int = 760, height: Int = 420, xRange: ClosedRange<Double>? = nil, yRange: ClosedRange<Double>? = nil) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel; self.xLog = xLog; self.yLog = yLog
        self.series = series; self.markers = markers; self.hlines = hlines
        self.width = width; self.height = height; self.xRange = xRange; self.yRange = yRange
    }

    /// Colour of series `i`.
    func color(_ i: Int) -> String { series[i].color ?? SVG.palette[i % SVG.palette.count] }

    private func valid(_ v: Double, log: Bool) -> Bool { v.isFinite && (!log || v > 0) }

    /// Drawable runs of each series (split where a point is skipped).
    private func runs(_ s: ChartSeries) -> [[(Double, Double)]] {
        var out: [[(Double, Double)]] = [], cur: [(Double, Double)] = []
        for i in 0..<min(s.x.count, s.y.count) {
            let x = s.x[i], y = s.y[i]
            if valid(x, log: xLog) && valid(y, log: yLog) { cur.append((x, y)) }
            else if !cur.isEmpty {
                // A step holds its value up to the next x even when the next y cannot be drawn (an empty bin).
                if s.style == .step, valid(x, log: xLog) { cur.append((x, cur[cur.count - 1].1)) }
                out.append(cur); cur = []
            }
        }
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    struct Axis {
        var lo: Double, hi: Double, log: Bool
        var major: [Double], minor: [Double], step: Double
        func t(_ v: Double) -> Double {
            if log { let a = Foundation.log10(lo), b = Foundation.log10(hi); return (Foundation.log10(v) - a) / (b - a) }
            return (v - lo) / (hi - lo)
        }
        func label(_ v: Double) -> (markup: String, width: Double) {
            if log && Ticks.isDecade(v) {
                let k = Int(Foundation.log10(v).rounded())
                return (SVG.powerOfTen(k, size: 11), SVG.textWidth("10", size: 11) + SVG.textWidth(String(k), size: 8.25))
            }
            let s = log ? SVG.value(v) : SVG.tickLabel(v, step: step, scale: max(abs(lo), abs(hi)))
            return (SVG.escape(s), SVG.textWidth(s, size: 11))
        }
    }

    static func makeAxis(values: [Double], fixed: ClosedRange<Double>?, log: Bool, target: Int) -> Axis {
        if log {
            let lo = fixed?.lowerBound ?? values.min() ?? 1, hi = fixed?.upperBound ?? values.max() ?? 10
            var t = Ticks.log(lo: lo, hi: hi, expand: fixed == nil)
            if t.hi <= t.lo { t.hi = t.lo * 10 }
            return Axis(lo: t.lo, hi: t.hi, log: true, major: t.major, minor: t.minor, step: 1)
        }
        let lo = fixed?.lowerBound ?? values.min() ?? 0, hi = fixed?.upperBound ?? values.max() ?? 1
        let t = Ticks.linear(lo: lo, hi: hi, target: target, expand: fixed == nil)
        var a = Axis(lo: t.lo, hi: t.hi, log: false, major: t.values, minor: [], step: t.step)
        if let fixed, fixed.upperBound > fixed.lowerBound { a.lo = fixed.lowerBound; a.hi = fixed.upperBound }
        return a
    }

    public func svg() -> String {
        let W = Double(width), H = Double(height)
        var out = SVG.open(width: width, height: height, title: title)
        let allRuns = series.map(runs)
        let hasData = allRuns.contains { !$0.isEmpty }
        let top: Double = title.isEmpty ? 14 : 38
        if !title.isEmpty {
            out += SVG.text(SVG.truncateRight(title, maxWidth: W - 20, size: 15), x: W / 2, y: 24, size: 15,
                            anchor: "middle", weight: "bold")
        }
        guard hasData else {
            out += "<rect x=\"10\" y=\"\(SVG.num(top))\" width=\"\(SVG.num(W - 20))\" height=\"\(SVG.num(max(20, H - top - 10)))\" fill=\"none\" stroke=\"#cccccc\"/>\n"
            out += SVG.text("no data", x: W / 2, y: (top + H) / 2, size: 14, anchor: "middle", fill: "#666666")
            return out + "</svg>\n"
        }

        // Axis ranges from the data, the markers and the reference lines.
        var xs: [Double] = [], ys: [Double] = []
        for r in allRuns.joined() { for p in r { xs.append(p.0); ys.append(p.1) } }
        for m in markers where valid(m.x, log: xLog) { xs.append(m.x) }
        for h in hlines where valid(h.y, log: yLog) { ys.append(h.y) }
        let xa = Self.makeAxis(values: xs, fixed: xRange, log: xLog, target: 7)
        let ya = Self.makeAxis(values: ys, fixed: yRange, log: yLog, target: 6)

        // Margins: y tick labels set the left margin.
        let yLabelW = ya.major.map { ya.label($0).width }.max() ?? 20
        let left = 12 + (yLabel.isEmpty ? 0 : 18) + yLabelW + 8
        let right: Double = 18
        var bottom: Double = 8 + 18 + (xLabel.isEmpty ? 0 : 18)

        // Legend: inside the plot in the emptiest corner, else below the plot.
        let entries = series.indices.filter { !series[$0].name.isEmpty && !allRuns[$0].isEmpty }
        let legendFont = 11.0
        let legendW = 36 + (entries.map { SVG.textWidth(series[$0].name, size: legendFont) }.max() ?? 0) + 10
        let legendH = Double(entries.count) * 16 + 8
        var legendOutside = false
        var plot = (x: left, y: top, w: W - left - right, h: H - top - bottom)

        func px(_ v: Double, _ p: (x: Double, y: Double, w: Double, h: Double)) -> Double {
            max(-1e5, min(1e5, p.x + xa.t(v) * p.w))
        }
        func py(_ v: Double, _ p: (x: Double, y: Double, w: Double, h: Double)) -> Double {
            max(-1e5, min(1e5, p.y + p.h - ya.t(v) * p.h))
        }
        func polylines(_ p: (x: Double, y: Double, w: Double, h: Double)) -> [[[(Double, Double)]]] {
            series.indices.map { i in
                allRuns[i].map { run in
                    var pts: [(Double, Double)] = []
                    for (k, q) in run.enumerated() {
                        let X = px(q.0, p), Y = py(q.1, p)
                        if series[i].style == .step, k > 0 {
                            let prevY = pts[pts.count - 1].1
                            pts.append((X, prevY))
                            if Y != prevY { pts.append((X, Y)) }
                        } else {
                            pts.append((X, Y))
                        }
                    }
                    return pts
                }
            }
        }

        var legendPos: (Double, Double)? = nil
        if !entries.isEmpty {
            let lines = polylines(plot)
            var obstacles: [(Double, Double, Double, Double)] = []
            for (i, s) in lines.enumerated() {
                let drawsLine = series[i].style != .points
                for run in s {
                    if run.count == 1 || !drawsLine { for p in run { obstacles.append((p.0, p.1, p.0, p.1)) } }
                    else { for k in 1..<run.count { obstacles.append((run[k - 1].0, run[k - 1].1, run[k].0, run[k].1)) } }
                }
            }
            for m in markers where valid(m.x, log: xLog) {
                let X = px(m.x, plot); obstacles.append((X, plot.y, X, plot.y + plot.h))
            }
            for h in hlines where valid(h.y, log: yLog) {
                let Y = py(h.y, plot); obstacles.append((plot.x, Y, plot.x + plot.w, Y))
            }
            let pad = 6.0
            let corners = [
                (plot.x + plot.w - legendW - pad, plot.y + pad), (plot.x + pad, plot.y + pad),
                (plot.x + plot.w - legendW - pad, plot.y + plot.h - legendH - pad), (plot.x + pad, plot.y + plot.h - legendH - pad),
            ]
            for c in corners where legendW + 2 * pad < plot.w && legendH + 2 * pad < plot.h {
                let box = (c.0 - 3, c.1 - 3, c.0 + legendW + 3, c.1 + legendH + 3)
                if !obstacles.contains(where: { segmentHitsBox($0, box) }) { legendPos = c; break }
            }
            if legendPos == nil {
                legendOutside = true
                bottom += 10 + legendH
                plot.h = H - top - bottom
            }
        }
        plot.h = max(40, plot.h)
        let lines = polylines(plot)
        let p = plot
        let clipID = "wscan-clip-\(Int(p.x))-\(Int(p.y))-\(Int(p.w))-\(Int(p.h))"

        // Grid.
        out += "<g stroke=\"#ebebeb\" stroke-width=\"1\">\n"
        for v in xa.minor { let X = px(v, p); out += SVG.line(X, p.y, X, p.y + p.h, stroke: "#f4f4f4") }
        for v in ya.minor { let Y = py(v, p); out += SVG.line(p.x, Y, p.x + p.w, Y, stroke: "#f4f4f4") }
        for v in xa.major { let X = px(v, p); out += SVG.line(X, p.y, X, p.y + p.h, stroke: "#e3e3e3") }
        for v in ya.major { let Y = py(v, p); out += SVG.line(p.x, Y, p.x + p.w, Y, stroke: "#e3e3e3") }
        out += "</g>\n"
        out += "<rect x=\"\(SVG.num(p.x))\" y=\"\(SVG.num(p.y))\" width=\"\(SVG.num(p.w))\" height=\"\(SVG.num(p.h))\" fill=\"none\" stroke=\"#bbbbbb\"/>\n"

        // Ticks and tick labels.
        out += "<g stroke=\"#444444\">\n"
        for v in xa.major { let X = px(v, p); out += SVG.line(X, p.y + p.h, X, p.y + p.h + 5, stroke: "#444444") }
        for v in xa.minor { let X = px(v, p); out += SVG.line(X, p.y + p.h, X, p.y + p.h + 3, stroke: "#888888") }
        for v in ya.major { let Y = py(v, p); out += SVG.line(p.x - 5, Y, p.x, Y, stroke: "#444444") }
        for v in ya.minor { let Y = py(v, p); out += SVG.line(p.x - 3, Y, p.x, Y, stroke: "#888888") }
        out += "</g>\n"
        for v in xa.major {
            out += "<text class=\"xtick\" x=\"\(SVG.num(px(v, p)))\" y=\"\(SVG.num(p.y + p.h + 18))\" font-size=\"11\" text-anchor=\"middle\" fill=\"#333333\">\(xa.label(v).markup)</text>\n"
        }
        for v in ya.major {
            out += "<text class=\"ytick\" x=\"\(SVG.num(p.x - 8))\" y=\"\(SVG.num(py(v, p) + 4))\" font-size=\"11\" text-anchor=\"end\" fill=\"#333333\">\(ya.label(v).markup)</text>\n"
        }
        if !xLabel.isEmpty {
            out += SVG.text(xLabel, x: p.x + p.w / 2, y: p.y + p.h + 36, size: 12, anchor: "middle")
        }
        if !yLabel.isEmpty {
            out += SVG.text(SVG.truncateRight(yLabel, maxWidth: p.h, size: 12), x: 16, y: p.y + p.h / 2, size: 12,
                            anchor: "middle", rotate: -90)
        }

        // Data, reference lines and markers, clipped to the plot.
        out += "<defs><clipPath id=\"\(clipID)\"><rect x=\"\(SVG.num(p.x))\" y=\"\(SVG.num(p.y))\" width=\"\(SVG.num(p.w))\" height=\"\(SVG.num(p.h))\"/></clipPath></defs>\n"
        out += "<g clip-path=\"url(#\(clipID))\">\n"
        for h in hlines where valid(h.y, log: yLog) {
            let Y = py(h.y, p)
            out += SVG.line(p.x, Y, p.x + p.w, Y, stroke: h.color ?? "#666666", width: 1.2, dash: "4 3")
        }
        for m in markers where valid(m.x, log: xLog) {
            let X = px(m.x, p)
            out += SVG.line(X, p.y, X, p.y + p.h, stroke: m.color ?? "#555555", width: 1.2, dash: "5 4")
        }
        for (i, s) in series.enumerated() {
            let c = SVG.escape(color(i))
            if s.style != .points {
                var d = ""
                for run in lines[i] where run.count >= 2 {
                    d += "M" + run.map { SVG.num($0.0) + "," + SVG.num($0.1) }.joined(separator: "L")
                }
                if !d.isEmpty {
                    out += "<path d=\"\(d)\" fill=\"none\" stroke=\"\(c)\" stroke-width=\"1.8\" stroke-linejoin=\"round\""
                    out += s.dashed ? " stroke-dasharray=\"6 4\"/>\n" : "/>\n"
                }
            }
            let singles = lines[i].filter { $0.count == 1 }
            if s.style == .points || s.style == .linePoints || !singles.isEmpty {
                let pts = (s.style == .points || s.style == .linePoints) ? lines[i].joined().map { $0 } : singles.joined().map { $0 }
                if !pts.isEmpty {
                    out += "<g fill=\"\(c)\">"
                    for q in pts { out += "<circle cx=\"\(SVG.num(q.0))\" cy=\"\(SVG.num(q.1))\" r=\"2.5\"/>" }
                    out += "</g>\n"
                }
            }
        }
        out += "</g>\n"

        // Labels of reference lines and markers (outside the clip so they are never cut).
        for h in hlines where valid(h.y, log: yLog) && !h.label.isEmpty {
            let Y = py(h.y, p)
            guard Y >= p.y && Y <= p.y + p.h else { continue }
            out += SVG.text(h.label, x: p.x + p.w - 4, y: Y - 4, size: 10, anchor: "end", fill: h.color ?? "#444444", extra: SVG.halo)
        }
        for (k, m) in markers.enumerated() where valid(m.x, log: xLog) && !m.label.isEmpty {
            let X = px(m.x, p)
            guard X >= p.x && X <= p.x + p.w else { continue }
            let w = SVG.textWidth(m.label, size: 10)
            let y = p.y + 12 + Double(k % 4) * 13
            if X + 4 + w <= p.x + p.w { out += SVG.text(m.label, x: X + 4, y: y, size: 10, fill: m.color ?? "#333333", extra: SVG.halo) }
            else { out += SVG.text(m.label, x: X - 4, y: y, size: 10, anchor: "end", fill: m.color ?? "#333333", extra: SVG.halo) }
        }

        // Legend.
        if !entries.isEmpty {
            let (lx, ly): (Double, Double)
            if let legendPos { (lx, ly) = legendPos }
            else { (lx, ly) = (max(4, p.x + (p.w - legendW) / 2), p.y + p.h + 8 + 18 + (xLabel.isEmpty ? 0 : 18)) }
            _ = legendOutside
            out += "<g class=\"legend\">\n"
            out += "<rect x=\"\(SVG.num(lx))\" y=\"\(SVG.num(ly))\" width=\"\(SVG.num(legendW))\" height=\"\(SVG.num(legendH))\" fill=\"#ffffff\" fill-opacity=\"0.9\" stroke=\"#cccccc\"/>\n"
            for (row, i) in entries.enumerated() {
                let y = ly + 4 + Double(row) * 16 + 8
                let c = color(i), s = series[i]
                if s.style != .points {
                    out += SVG.line(lx + 8, y, lx + 30, y, stroke: c, width: 1.8, dash: s.dashed ? "6 4" : nil)
                }
                if s.style == .points || s.style == .linePoints {
                    out += "<circle cx=\"\(SVG.num(lx + 19))\" cy=\"\(SVG.num(y))\" r=\"2.5\" fill=\"\(SVG.escape(c))\"/>\n"
                }
                out += SVG.text(s.name, x: lx + 36, y: y + 4, size: legendFont)
            }
            out += "</g>\n"
        }
        return out + "</svg>\n"
    }
}

/// Whether segment (or point) `s` = (x1, y1, x2, y2) touches the box (x0, y0, x1, y1) — Liang–Barsky clipping.
func segmentHitsBox(_ s: (Double, Double, Double, Double), _ b: (Double, Double, Double, Double)) -> Bool {
    let dx = s.2 - s.0, dy = s.3 - s.1
    var t0 = 0.0, t1 = 1.0
    for (p, q) in [(-dx, s.0 - b.0), (dx, b.2 - s.0), (-dy, s.1 - b.1), (dy, b.3 - s.1)] {
        if p == 0 { if q < 0 { return false } ; continue }
        let r = q / p
        if p < 0 { if r > t1 { return false }; if r > t0 { t0 = r } }
        else { if r < t0 { return false }; if r < t1 { t1 = r } }
    }
    return true
}

/// A bar chart; horizontal by default so that long lists of layer names stay legible (the height grows with the
/// number of bars; labels too long for the label column keep their distinctive end: "…layers.23.mlp.up_proj").
public struct BarChart: Sendable {
    public var title: String
    public var labels: [String]
    public var values: [Double]
    /// Name of the value axis.
    public var valueLabel: String
    /// Per-bar CSS colours (cycled); nil colours by value (viridis, sequential) or, with `colorByValue` false,
    /// uses a single palette colour.
    public var colors: [String]?
    public var colorByValue: Bool
    public var horizontal: Bool
    /// Optional threshold drawn as a dashed line across the bars; labels of bars beyond it are bold.
    public var threshold: Double?
    public var thresholdLabel: String
    /// With `threshold`, a band [threshold, upperThreshold]: bars outside it are the highlighted ones, and the
    /// upper line is drawn too.
    public var upperThreshold: Double? = nil
    public var upperThresholdLabel: String = ""
    /// Width of the chart; the other dimension follows from the number of bars (horizontal) or is `height`.
    public var width: Int
    public var height: Int

    public init(title: String, labels: [String], values: [Double], valueLabel: String = "", colors: [String]? = nil,
                colorByValue: Bool = true, horizontal: Bool = true, threshold: Double? = nil, thresholdLabel: String = "",
                width: Int = 760, height: Int = 420) {
        self.title = title; self.labels = labels; self.values = values; self.valueLabel = valueLabel
        self.colors = colors; self.colorByValue = colorByValue; self.horizontal = horizontal
        self.threshold = threshold; self.thresholdLabel = thresholdLabel; self.width = width; self.height = height
    }

    var count: Int { min(labels.count, values.count) }
    var rowHeight: Double { count <= 20 ? 22 : 15 }

    /// Height of the horizontal chart for the current number of bars.
    public var horizontalHeight: Int {
        let axisTop: Double = count > 30 ? 20 : 0
        return Int((38 + axisTop + Double(count) * rowHeight + 8 + 18 + (valueLabel.isEmpty ? 0 : 18) + 6).rounded(.up))
    }

    private func barColors(_ lo: Double, _ hi: Double) -> [String] {
        let n = count
        if let colors, !colors.isEmpty { return (0..<n).map { colors[$0 % colors.count] } }
        if !colorByValue { return Array(repeating: SVG.palette[0], count: n) }
        return (0..<n).map { i in
            let v = values[i]
            guard v.isFinite, hi > lo else { return Colormap.hex(Colormap.viridis(0.45)) }
            return Colormap.hex(Colormap.viridis(0.9 * (v - lo) / (hi - lo)))
        }
    }

    public func svg() -> String {
        let n = count
        let finite = values.prefix(n).filter { $0.isFinite }
        if n == 0 || finite.isEmpty {
            let H = 120
            var out = SVG.open(width: width, height: H, title: title)
            if !title.isEmpty { out += SVG.text(title, x: Double(width) / 2, y: 24, size: 15, anchor: "middle", weight: "bold") }
            out += SVG.text("no data", x: Double(width) / 2, y: 72, size: 14, anchor: "middle", fill: "#666666")
            return out + "</svg>\n"
        }
        var lo = min(0, finite.min()!), hi = max(0, finite.max()!)
        if let t = threshold, t.isFinite { lo = min(lo, t); hi = max(hi, t) }
        let axis = Ticks.linear(lo: lo, hi: hi, target: horizontal ? 6 : 5)
        let cols = barColors(finite.min()!, finite.max()!)
        return horizontal ? horizontalSVG(axis, cols) : verticalSVG(axis, cols)
    }

    private func isHighlighted(_ v: Double) -> Bool {
        guard let t = threshold, t.isFinite, v.isFinite else { return false }
        if let u = upperThreshold, u.isFinite { return v < t || v > u }      // a healthy band: outside it is flagged
        return v > t
    }

    private func horizontalSVG(_ axis: (lo: Double, hi: Double, step: Double, values: [Double]), _ colors: [String]) -> String {
        let n = count, W = Double(width), H = horizontalHeight
        let rowH = rowHeight, font = n <= 20 ? 11.0 : 10.0
        var out = SVG.open(width: width, height: H, title: title)
        if !title.isEmpty {
            out += SVG.text(SVG.truncateRight(title, maxWidth: W - 20, size: 15), x: W / 2, y: 24, size: 15, anchor: "middle", weight: "bold")
        }
        let labelCol = min(W * 0.38, (labels.prefix(n).map { SVG.textWidth($0, size: font) }.max() ?? 40) + 12)
        let left = 8 + labelCol, right = 56.0
        let axisTop: Double = n > 30 ? 20 : 0
        let top = 38 + axisTop
        let plotW = W - left - right, plotH = Double(n) * rowH
        let X = { (v: Double) in left + (v - axis.lo) / (axis.hi - axis.lo) * plotW }
        let tickLabel = { (v: Double) in SVG.tickLabel(v, step: axis.step, scale: max(abs(axis.lo), abs(axis.hi))) }

        out += "<g stroke=\"#e3e3e3\">\n"
        for v in axis.values { out += SVG.line(X(v), top, X(v), top + plotH, stroke: "#e3e3e3") }
        out += "</g>\n"
        for v in axis.values {
            out += SVG.text(tickLabel(v), x: X(v), y: top + plotH + 16, size: 11, anchor: "middle", fill: "#333333")
            if axisTop > 0 { out += SVG.text(tickLabel(v), x: X(v), y: top - 6, size: 11, anchor: "middle", fill: "#333333") }
        }
        if !valueLabel.isEmpty {
            out += SVG.text(valueLabel, x: left + plotW / 2, y: top + plotH + 34, size: 12, anchor: "middle")
        }
        let x0 = X(0)
        let barH = rowH * 0.72
        let fitted = SVG.fittedLabels(Array(labels.prefix(n)), maxWidth: labelCol - 10, size: font)
        for i in 0..<n {
            let yMid = top + (Double(i) + 0.5) * rowH
            let full = labels[i]
            let shown = fitted[i]
            let weight = isHighlighted(values[i]) ? " font-weight=\"bold\"" : ""
            out += "<text x=\"\(SVG.num(left - 6))\" y=\"\(SVG.num(yMid + font * 0.35))\" font-size=\"\(SVG.num(font))\" text-anchor=\"end\" fill=\"#222222\"\(weight)>"
            if shown != full { out += "<title>\(SVG.escape(full))</title>" }
            out += SVG.escape(shown) + "</text>\n"
            let v = values[i]
            guard v.isFinite else {
                out += SVG.text("n/a", x: x0 + 4, y: yMid + 3.5, size: 10, fill: "#888888")
                continue
            }
            let xa = min(x0, X(v)), xb = max(x0, X(v))
            out += "<rect x=\"\(SVG.num(xa))\" y=\"\(SVG.num(yMid - barH / 2))\" width=\"\(SVG.num(max(0.5, xb - xa)))\" height=\"\(SVG.num(barH))\" fill=\"\(SVG.escape(colors[i]))\""
            out += isHighlighted(v) ? " stroke=\"#222222\" stroke-width=\"1\"/>\n" : "/>\n"
            if v >= 0 { out += SVG.text(SVG.value(v), x: xb + 4, y: yMid + 3.5, size: 10, fill: "#444444") }
            else { out += SVG.text(SVG.value(v), x: xa - 4, y: yMid + 3.5, size: 10, anchor: "end", fill: "#444444") }
        }
        out += SVG.line(x0, top, x0, top + plotH, stroke: "#666666")
        for (tt, label) in [(threshold, thresholdLabel), (upperThreshold, upperThresholdLabel)] {
            guard let t = tt, t.isFinite, t >= axis.lo, t <= axis.hi else { continue }   // only lines inside the axis
            out += SVG.line(X(t), top - 4, X(t), top + plotH, stroke: "#D55E00", width: 1.5, dash: "5 4")
            if !label.isEmpty {
                let anchorEnd = X(t) + 4 + SVG.textWidth(label, size: 10) > W - 4
                out += SVG.text(label, x: anchorEnd ? X(t) - 4 : X(t) + 4, y: top - 6 - axisTop, size: 10,
                                anchor: anchorEnd ? "end" : "start", fill: "#D55E00", extra: SVG.halo)
            }
        }
        return out + "</svg>\n"
    }

    private func verticalSVG(_ axis: (lo: Double, hi: Double, step: Double, values: [Double]), _ colors: [String]) -> String {
        let n = count, font = 10.0
        let tickLabel = { (v: Double) in SVG.tickLabel(v, step: axis.step, scale: max(abs(axis.lo), abs(axis.hi))) }
        let yTickW = axis.values.map { SVG.textWidth(tickLabel($0), size: 11) }.max() ?? 20
        var left = 12 + (valueLabel.isEmpty ? 0 : 18) + yTickW + 8
        let right = 16.0
        let labelSpace = min(150, (labels.prefix(n).map { SVG.textWidth($0, size: font) }.max() ?? 20) * 0.82 + 10)
        // Labels are rotated by -55°: the first ones reach left by length·cos 55°.
        left = max(left, (labelSpace - 10) / 0.82 * 0.574 - 4)
        let colW = max(12, (Double(width) - left - right) / Double(n))
        let W = Int((left + right + colW * Double(n)).rounded(.up))
        let H = max(height, Int(200 + labelSpace))
        let top = 38.0, bottom = labelSpace + 8
        let plotH = Double(H) - top - bottom
        let Y = { (v: Double) in top + plotH - (v - axis.lo) / (axis.hi - axis.lo) * plotH }
        var out = SVG.open(width: W, height: H, title: title)
        if !title.isEmpty {
            out += SVG.text(SVG.truncateRight(title, maxWidth: Double(W) - 20, size: 15), x: Double(W) / 2, y: 24, size: 15, anchor: "middle", weight: "bold")
        }
        out += "<g stroke=\"#e3e3e3\">\n"
        for v in axis.values { out += SVG.line(left, Y(v), left + colW * Double(n), Y(v), stroke: "#e3e3e3") }
        out += "</g>\n"
        for v in axis.values { out += SVG.text(tickLabel(v), x: left - 8, y: Y(v) + 4, size: 11, anchor: "end", fill: "#333333") }
        if !valueLabel.isEmpty {
            out += SVG.text(valueLabel, x: max(16, left - yTickW - 22), y: top + plotH / 2, size: 12, anchor: "middle", rotate: -90)
        }
        let y0 = Y(0)
        let fitted = SVG.fittedLabels(Array(labels.prefix(n)), maxWidth: (labelSpace - 10) / 0.82, size: font)
        for i in 0..<n {
            let xMid = left + (Double(i) + 0.5) * colW
            let v = values[i]
            if v.isFinite {
                let ya = min(y0, Y(v)), yb = max(y0, Y(v))
                out += "<rect x=\"\(SVG.num(xMid - colW * 0.36))\" y=\"\(SVG.num(ya))\" width=\"\(SVG.num(colW * 0.72))\" height=\"\(SVG.num(max(0.5, yb - ya)))\" fill=\"\(SVG.escape(colors[i]))\""
                out += isHighlighted(v) ? " stroke=\"#222222\" stroke-width=\"1\"/>\n" : "/>\n"
            }
            let shown = fitted[i]
            let ly = top + plotH + 10
            let weight = isHighlighted(v) ? " font-weight=\"bold\"" : ""
            out += "<text x=\"\(SVG.num(xMid + 3))\" y=\"\(SVG.num(ly))\" font-size=\"\(SVG.num(font))\" text-anchor=\"end\" fill=\"#222222\"\(weight) transform=\"rotate(-55 \(SVG.num(xMid + 3)) \(SVG.num(ly)))\">"
            if shown != labels[i] { out += "<title>\(SVG.escape(labels[i]))</title>" }
            out += SVG.escape(shown) + "</text>\n"
        }
        out += SVG.line(left, y0, left + colW * Double(n), y0, stroke: "#666666")
        if let t = threshold, t.isFinite {
            out += SVG.line(left, Y(t), left + colW * Double(n), Y(t), stroke: "#D55E00", width: 1.5, dash: "5 4")
            if !thresholdLabel.isEmpty {
                out += SVG.text(thresholdLabel, x: left + colW * Double(n) - 4, y: Y(t) - 4, size: 10, anchor: "end", fill: "#D55E00", extra: SVG.halo)
            }
        }
        return out + "</svg>\n"
    }
}

/// Empirical spectral densities.
public struct Histogram: Sendable {
    /// Log-spaced bin edges (bins + 1) over the positive finite values and the density of each bin
    /// (count / (total positive count × bin width), so the density integrates to 1).
    public static func logBinned(_ values: [Double], bins: Int) -> (edges: [Double], density: [Double]) {
        let v = values.filter { $0.isFinite && $0 > 0 }.sorted()
        guard let first = v.first, let last = v.last else { return ([], []) }
        let nb = max(1, bins)
        var lo = log10(first), hi = log10(last)
        if hi - lo < 1e-9 { lo -= 0.05; hi += 0.05 }
        let edges = (0...nb).map { pow(10, lo + (hi - lo) * Double($0) / Double(nb)) }
        var counts = [Int](repeating: 0, count: nb)
        for x in v {
            var b = Int(((log10(x) - lo) / (hi - lo) * Double(nb)).rounded(.down))
            b = max(0, min(nb - 1, b))
            counts[b] += 1
        }
        let total = Double(v.count)
        let density = (0..<nb).map { Double(counts[$0]) / (total * (edges[$0 + 1] - edges[$0])) }
        return (edges, density)
    }

    /// ESD on log-log axes: the log-binned density as steps, plus (with `fit`) the power law p(λ) ∝ λ^(−α) for
    /// λ ≥ xmin and a marker at xmin. The power law is normalised like the fitted tail: p(λ) = f·(α−1)/xmin·(λ/xmin)^(−α)
    /// with f the fraction of eigenvalues ≥ xmin, so at xmin it matches the tail's density; for α ≤ 1 (not
    /// normalisable) it is scaled to the density of the bin containing xmin instead.
    public static func esd(eigenvalues: [Double], bins: Int, fit: (alpha: Double, xmin: Double)?) -> LineChart {
        let (edges, density) = logBinned(eigenvalues, bins: bins)
        var chart = LineChart(title: "Empirical spectral density", xLabel: "eigenvalue λ", yLabel: "density",
                              xLog: true, yLog: true)
        guard !edges.isEmpty else { return chart }
        chart.series.append(ChartSeries(name: "ESD (\(max(1, bins)) log bins)", x: edges, y: density + [density.last!],
                                        style: .step, color: SVG.palette[0]))
        if let fit, fit.alpha.isFinite, fit.xmin.isFinite, fit.xmin > 0 {
            let pos = eigenvalues.filter { $0.isFinite && $0 > 0 }
            let tail = pos.filter { $0 >= fit.xmin }
            let xmax = max(tail.max() ?? fit.xmin, fit.xmin)
            var c: Double
            if fit.alpha > 1 {
                c = Double(tail.count) / Double(pos.count) * (fit.alpha - 1) / fit.xmin
            } else {
                let b = edges.lastIndex { $0 <= fit.xmin } ?? 0
                c = density[min(b, density.count - 1)]
            }
            if !(c > 0) { c = density.first { $0 > 0 } ?? 1 }
            let law = { (x: Double) in c * pow(x / fit.xmin, -fit.alpha) }
            let xs = [fit.xmin, xmax > fit.xmin ? xmax : fit.xmin * 1.0001]
            chart.series.append(ChartSeries(name: "power law α = \(SVG.fixed(fit.alpha, decimals: 2, trim: false))",
                                            x: xs, y: xs.map(law), style: .line, color: SVG.palette[1], dashed: true))
            chart.markers.append(ChartMarker(x: fit.xmin, label: "xmin = \(SVG.value(fit.xmin))"))
        }
        return chart
    }
}
