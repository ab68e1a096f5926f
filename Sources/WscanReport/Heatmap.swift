import Foundation

/// Weight-matrix heatmaps as PNG, with an SVG colour bar to place beside them.
public struct Heatmap: Sendable {
    public enum Reduce: Sendable {
        /// Largest value of the block (of |v| when `absolute`): outliers survive downsampling.
        case max
        /// Mean of the block's finite values.
        case mean
        /// The value of largest magnitude, sign kept (signed data with a diverging map).
        case maxMagnitude
    }

    /// Block-reduces a row-major rows × cols matrix to at most `maxSide` pixels per side, keeping the aspect ratio:
    /// with b = ceil(max(rows, cols) / maxSide) the output is height = ceil(rows / b) × width = ceil(cols / b), and
    /// output pixel (i, j) covers the blockRows × blockCols cells starting at (i·blockRows, j·blockCols), with
    /// blockRows = ceil(rows / height) and blockCols = ceil(cols / width) (edge blocks may be smaller).
    /// Non-finite values are ignored; a block without finite values is NaN.
    public static func downsample(values: [Float], rows: Int, cols: Int, maxSide: Int = 256, reduce: Reduce = .max,
                                  absolute: Bool = false)
        -> (cells: [Double], width: Int, height: Int, blockRows: Int, blockCols: Int) {
        precondition(rows >= 0 && cols >= 0 && values.count == rows * cols,
                     "Heatmap: \(values.count) values for a \(rows)x\(cols) matrix")
        guard rows > 0 && cols > 0 else { return ([], 0, 0, 1, 1) }
        let side = Swift.max(1, maxSide)
        let b = (Swift.max(rows, cols) + side - 1) / side
        let H = (rows + b - 1) / b, W = (cols + b - 1) / b
        let bh = (rows + H - 1) / H, bw = (cols + W - 1) / W
        var acc = [Double](repeating: reduce == .mean ? 0 : -.infinity, count: H * W)
        var sgn = [Double](repeating: 0, count: reduce == .maxMagnitude ? H * W : 0)
        var cnt = [Int](repeating: 0, count: H * W)
        values.withUnsafeBufferPointer { v in
            for r in 0..<rows {
                let bi = r / bh, base = r * cols
                for bj in 0..<W {
                    let c0 = bj * bw, c1 = Swift.min(cols, c0 + bw)
                    let k = bi * W + bj
                    var n = 0
                    switch reduce {
                    case .mean:
                        var s = 0.0
                        for c in c0..<c1 {
                            let x = v[base + c]
                            if x.isFinite { s += absolute ? Double(abs(x)) : Double(x); n += 1 }
                        }
                        acc[k] += s
                    case .max:
                        var m = -Float.infinity
                        for c in c0..<c1 {
                            let x = absolute ? abs(v[base + c]) : v[base + c]
                            if x.isFinite { n += 1; if x > m { m = x } }
                        }
                        if n > 0 && Double(m) > acc[k] { acc[k] = Double(m) }
                    case .maxMagnitude:
                        var m: Float = -1, s: Float = 0
                        for c in c0..<c1 {
                            let x = v[base + c]
                            if x.isFinite { n += 1; if abs(x) > m { m = abs(x); s = x } }
                        }
                        if n > 0 && Double(m) > acc[k] { acc[k] = Double(m); sgn[k] = Double(absolute ? m : s) }
                    }
                    cnt[k] += n
                }
            }
        }
        var cells = [Double](repeating: .nan, count: H * W)
        for k in 0..<(H * W) where cnt[k] > 0 {
            switch reduce {
            case .mean: cells[k] = acc[k] / Double(cnt[k])
            case .max: cells[k] = acc[k]
            case .maxMagnitude: cells[k] = sgn[k]
            }
        }
        return (cells, W, H, bh, bw)
    }

    /// Renders a row-major rows × cols matrix as an RGB PNG of at most `maxSide` pixels per side (see `downsample`),
    /// mapped with `colormap` over [vmin, vmax] (returned in data units):
    /// - viridis: vmin/vmax are the smallest/largest block value (of |v| when `absolute`);
    /// - diverging (signed data): symmetric, vmin = −vmax, vmax = max |block value|, 0 is white;
    /// - `logScale`: colours follow log10 of the value over the positive blocks (viridis always); blocks ≤ 0 get
    ///   the lowest colour.
    /// Blocks without finite values are mid grey. An empty matrix gives a 1×1 grey PNG and NaN bounds.
    public static func render(values: [Float], rows: Int, cols: Int, maxSide: Int = 256, reduce: Reduce = .max,
                              absolute: Bool = false, logScale: Bool = false, colormap: ColormapKind = .viridis)
        -> (png: [UInt8], width: Int, height: Int, vmin: Double, vmax: Double) {
        let d = downsample(values: values, rows: rows, cols: cols, maxSide: maxSide, reduce: reduce, absolute: absolute)
        guard d.width > 0 else {
            let g = Colormap.missing
            return (PNGEncoder.rgb(width: 1, height: 1, pixels: [g.0, g.1, g.2]), 1, 1, .nan, .nan)
        }
        let finite = d.cells.filter { $0.isFinite }
        var vmin = Double.nan, vmax = Double.nan
        let map: ColormapKind = logScale ? .viridis : colormap
        var t: (Double) -> Double
        if logScale {
            let pos = finite.filter { $0 > 0 }
            if let lo = pos.min(), let hi = pos.max() {
                vmin = lo; vmax = hi
                let a = log10(lo), b = log10(hi)
                t = { v in v > 0 ? (b > a ? (log10(v) - a) / (b - a) : 0.5) : 0 }
            } else {
                t = { _ in 0 }
            }
        } else if map == .diverging {
            let m = finite.map { abs($0) }.max() ?? 0
            vmin = -m; vmax = m
            t = { v in m > 0 ? (v / m + 1) / 2 : 0.5 }
        } else {
            if let lo = finite.min(), let hi = finite.max() {
                vmin = lo; vmax = hi
                t = { v in hi > lo ? (v - lo) / (hi - lo) : 0.5 }
            } else {
                t = { _ in 0.5 }
            }
        }
        var px = [UInt8](repeating: 0, count: d.width * d.height * 3)
        for k in 0..<d.cells.count {
            let v = d.cells[k]
            let c = v.isFinite ? map.rgb(t(v)) : Colormap.missing
            px[3 * k] = c.0; px[3 * k + 1] = c.1; px[3 * k + 2] = c.2
        }
        return (PNGEncoder.rgb(width: d.width, height: d.height, pixels: px), d.width, d.height, vmin, vmax)
    }

    /// A vertical colour bar (`height` px tall, default matching a 256 px heatmap) with ticks and a rotated label,
    /// to place beside the heatmap PNG. Log scale: decade ticks; linear: 1-2-5 ticks inside [vmin, vmax].
    public static func legendSVG(vmin: Double, vmax: Double, label: String, logScale: Bool = false,
                                 colormap: ColormapKind = .viridis, height: Int = 256) -> String {
        let barH = Double(max(32, height)), top = 8.0, barX = 6.0, barW = 18.0
        let map: ColormapKind = logScale ? .viridis : colormap
        let valid = vmin.isFinite && vmax.isFinite && (!logScale || (vmin > 0 && vmax > 0))
        // Tick values and labels.
        var ticks: [(Double, String)] = []   // (t in [0,1], label markup)
        var labelW = 0.0
        if valid && vmax > vmin {
            if logScale {
                let a = log10(vmin), b = log10(vmax)
                let tk = Ticks.log(lo: vmin, hi: vmax, expand: false)
                for v in tk.major {
                    let tt = (log10(v) - a) / (b - a)
                    if Ticks.isDecade(v) {
                        let k = Int(log10(v).rounded())
                        ticks.append((tt, SVG.powerOfTen(k, size: 11)))
                        labelW = max(labelW, SVG.textWidth("10" + String(k), size: 11))
                    } else {
                        ticks.append((tt, SVG.escape(SVG.value(v)))); labelW = max(labelW, SVG.textWidth(SVG.value(v), size: 11))
                    }
                }
            } else {
                let tk = Ticks.linear(lo: vmin, hi: vmax, target: 5, expand: false)
                for v in tk.values {
                    let s = SVG.tickLabel(v, step: tk.step, scale: max(abs(vmin), abs(vmax)))
                    ticks.append(((v - vmin) / (vmax - vmin), SVG.escape(s)))
                    labelW = max(labelW, SVG.textWidth(s, size: 11))
                }
            }
            if ticks.count < 2 {
                ticks = [(0, SVG.escape(SVG.value(vmin))), (1, SVG.escape(SVG.value(vmax)))]
                labelW = max(SVG.textWidth(SVG.value(vmin), size: 11), SVG.textWidth(SVG.value(vmax), size: 11))
            }
        } else if vmin.isFinite {
            ticks = [(0.5, SVG.escape(SVG.value(vmin)))]
            labelW = SVG.textWidth(SVG.value(vmin), size: 11)
        }
        let labelX = barX + barW + 8 + labelW + 14
        let W = Int((labelX + 8).rounded(.up)), H = Int(barH + 2 * top)
        var out = SVG.open(width: W, height: H, title: label.isEmpty ? "colour scale" : label)
        let steps = 64
        let seg = barH / Double(steps)
        for i in 0..<steps {
            let tt = (Double(i) + 0.5) / Double(steps)
            let c = Colormap.hex(valid ? map.rgb(tt) : Colormap.missing)
            let y = top + barH - Double(i + 1) * seg
            // Overlap by 0.5 px so no hairline gaps appear between segments.
            out += "<rect x=\"\(SVG.num(barX))\" y=\"\(SVG.num(y))\" width=\"\(SVG.num(barW))\" height=\"\(SVG.num(seg + 0.5))\" fill=\"\(c)\"/>\n"
        }
        out += "<rect x=\"\(SVG.num(barX))\" y=\"\(SVG.num(top))\" width=\"\(SVG.num(barW))\" height=\"\(SVG.num(barH))\" fill=\"none\" stroke=\"#555555\"/>\n"
        for (tt, markup) in ticks {
            let y = top + barH - tt * barH
            out += SVG.line(barX + barW, y, barX + barW + 4, y, stroke: "#444444")
            out += "<text x=\"\(SVG.num(barX + barW + 7))\" y=\"\(SVG.num(y + 4))\" font-size=\"11\" fill=\"#333333\">\(markup)</text>\n"
        }
        if !label.isEmpty {
            out += SVG.text(SVG.truncateRight(label, maxWidth: barH, size: 12), x: labelX, y: top + barH / 2, size: 12,
                            anchor: "middle", rotate: -90)
        }
        return out + "</svg>\n"
    }
}
