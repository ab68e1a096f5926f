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

    /// Block-reduces a row-major rows × cols matrix to at most `maxSide` pixels per side. Up to an aspect ratio of
    /// 4:1 the block is square, keeping the aspect: with b = ceil(max(rows, cols) / maxSide) the output is
    /// height = ceil(rows / b) × width = ceil(cols / b). Beyond 4:1 (a 30522×384 embedding) each axis is reduced on
    /// its own, b_r = ceil(rows / maxSide) and b_c = ceil(cols / maxSide), so the short side is not squeezed to a
    /// few pixels. Output pixel (i, j) covers the blockRows × blockCols cells starting at (i·blockRows, j·blockCols),
    /// with blockRows = ceil(rows / height) and blockCols = ceil(cols / width) (edge blocks may be smaller).
    /// Non-finite values are ignored; a block without finite values is NaN.
    public static func downsample(values: [Float], rows: Int, cols: Int, maxSide: Int = 256, reduce: Reduce = .max,
                                  absolute: Bool = false)
        -> (cells: [Double], width: Int, height: Int, blockRows: Int, blockCols: Int) {
        precondition(rows >= 0 && cols >= 0 && values.count == rows * cols,
                     "Heatmap: \(values.count) values for a \(rows)x\(cols) matrix")
        guard rows > 0 && cols > 0 else { return ([], 0, 0, 1, 1) }
        let side = Swift.max(1, maxSide)
        let b = (Swift.max(rows, cols) + side - 1) / side
        let squareBlocks = Swift.max(rows, cols) <= 4 * Swift.min(rows, cols)
        let br = squareBlocks ? b : (rows + side - 1) / side, bc = squareBlocks ? b : (cols + side - 1) / side
        let H = (rows + br - 1) / br, W = (cols + bc - 1) / bc
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
        let r = pixels(values: values, rows: rows, cols: cols, maxSide: maxSide, reduce: reduce, absolute: absolute,
                       logScale: logScale, colormap: colormap)
        return (PNGEncoder.rgb(width: r.width, height: r.height, pixels: r.px), r.width, r.height, r.vmin, r.vmax)
    }

    /// Smallest side of a rendered heatmap: small matrices are enlarged by whole pixels (uniformly while the long
    /// side stays within `maxSide`, then the short side alone, never past `maxSide`), so a 10×32 layer is 40×128 px
    /// and a 2×384 one 32×192.
    public static let minSide = 32

    /// A heatmap with its colour scale inside the same PNG: to the right of the map (after 6 px), a 10 px colour bar
    /// as tall as the map, and the largest and smallest value (`%.3g`) beside its top and bottom in a 5×7 pixel font.
    /// Width = map width + 6 + 10 + 4 + 6 × (longest label) + 2; height = max(map height, 24).
    public static func renderWithLegend(values: [Float], rows: Int, cols: Int, maxSide: Int = 256, reduce: Reduce = .max,
                                        absolute: Bool = false, logScale: Bool = false, colormap: ColormapKind = .viridis)
        -> (png: [UInt8], width: Int, height: Int, mapWidth: Int, mapHeight: Int, vmin: Double, vmax: Double) {
        let r = pixels(values: values, rows: rows, cols: cols, maxSide: maxSide, reduce: reduce, absolute: absolute,
                       logScale: logScale, colormap: colormap)
        let map: ColormapKind = logScale ? .viridis : colormap
        let valid = r.vmin.isFinite && r.vmax.isFinite
        let top = valid ? String(format: "%.3g", r.vmax) : "", bottom = valid ? String(format: "%.3g", r.vmin) : ""
        let labelW = 6 * max(top.count, bottom.count)
        let W = r.width + 6 + 10 + 4 + labelW + 2, H = max(r.height, 24)
        var px = [UInt8](repeating: 255, count: W * H * 3)
        for y in 0..<r.height { for x in 0..<r.width { for c in 0..<3 { px[3 * (y * W + x) + c] = r.px[3 * (y * r.width + x) + c] } } }
        let barX = r.width + 6
        for y in 0..<H {
            let t = H > 1 ? 1 - Double(y) / Double(H - 1) : 0.5
            let c = valid ? map.rgb(t) : Colormap.missing
            for x in barX..<(barX + 10) { px[3 * (y * W + x)] = c.0; px[3 * (y * W + x) + 1] = c.1; px[3 * (y * W + x) + 2] = c.2 }
        }
        PixelFont.draw(top, into: &px, width: W, x: barX + 14, y: 0)
        PixelFont.draw(bottom, into: &px, width: W, x: barX + 14, y: H - 7)
        return (PNGEncoder.rgb(width: W, height: H, pixels: px), W, H, r.width, r.height, r.vmin, r.vmax)
    }

    static func pixels(values: [Float], rows: Int, cols: Int, maxSide: Int, reduce: Reduce, absolute: Bool,
                       logScale: Bool, colormap: ColormapKind) -> (px: [UInt8], width: Int, height: Int, vmin: Double, vmax: Double) {
        let d = downsample(values: values, rows: rows, cols: cols, maxSide: maxSide, reduce: reduce, absolute: absolute)
        guard d.width > 0 else {
            let g = Colormap.missing
            return ([g.0, g.1, g.2], 1, 1, .nan, .nan)
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
        // Enlarge small maps by whole pixels (see minSide).
        let side = Swift.max(1, maxSide)
        let f = Swift.max(1, Swift.min((minSide + Swift.min(d.width, d.height) - 1) / Swift.min(d.width, d.height),
                                       side / Swift.max(d.width, d.height)))
        var fx = f, fy = f
        if d.height * fy < minSide { fy = Swift.max(1, Swift.min((minSide + d.height - 1) / d.height, side / d.height)) }
        if d.width * fx < minSide { fx = Swift.max(1, Swift.min((minSide + d.width - 1) / d.width, side / d.width)) }
        guard fx > 1 || fy > 1 else { return (px, d.width, d.height, vmin, vmax) }
        let W = d.width * fx, H = d.height * fy
        var big = [UInt8](repeating: 0, count: W * H * 3)
        for y in 0..<H { for x in 0..<W {
            let k = (y / fy) * d.width + x / fx
            big[3 * (y * W + x)] = px[3 * k]; big[3 * (y * W + x) + 1] = px[3 * k + 1]; big[3 * (y * W + x) + 2] = px[3 * k + 2]
        } }
        return (big, W, H, vmin, vmax)
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

/// A 5×7 pixel font for the numbers in a PNG legend: digits, '.', '-', '+', 'e', 'n', 'a', 'i', 'f' (for nan, inf).
enum PixelFont {
    static let glyphs: [Character: [UInt8]] = [
        "0": [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110],
        "1": [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        "2": [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111],
        "3": [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110],
        "4": [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010],
        "5": [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110],
        "6": [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110],
        "7": [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000],
        "8": [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110],
        "9": [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100],
        ".": [0, 0, 0, 0, 0, 0b01100, 0b01100],
        "-": [0, 0, 0, 0b11111, 0, 0, 0],
        "+": [0, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0],
        "e": [0, 0, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110],
        "n": [0, 0, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001],
        "a": [0, 0, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111],
        "i": [0b00100, 0, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110],
        "f": [0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000],
    ]

    /// Draws `text` in dark grey with its top-left corner at (x, y), 6 px per character; pixels outside are clipped.
    static func draw(_ text: String, into px: inout [UInt8], width: Int, x: Int, y: Int) {
        let height = px.count / (3 * width)
        for (i, ch) in text.enumerated() {
            guard let g = glyphs[ch] else { continue }
            for (row, bits) in g.enumerated() {
                for col in 0..<5 where bits & (1 << (4 - col)) != 0 {
                    let X = x + 6 * i + col, Y = y + row
                    guard X >= 0, X < width, Y >= 0, Y < height else { continue }
                    px[3 * (Y * width + X)] = 40; px[3 * (Y * width + X) + 1] = 40; px[3 * (Y * width + X) + 2] = 40
                }
            }
        }
    }
}
