import CWscan
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest
@testable import WscanReport
import WscanAnalysis

// MARK: - Helpers

/// Parses XML with Foundation's XMLParser; records elements, attributes and character data.
final class XMLProbe: NSObject, XMLParserDelegate {
    struct Element { var name: String; var attributes: [String: String]; var text: String }
    var elements: [Element] = []
    private var stack: [Int] = []
    var error: String?

    static func parse(_ s: String) -> XMLProbe {
        let probe = XMLProbe()
        let parser = XMLParser(data: Data(s.utf8))
        parser.delegate = probe
        if !parser.parse() { probe.error = parser.parserError.map { "\($0)" } ?? probe.error ?? "parse failed" }
        return probe
    }
    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        elements.append(Element(name: name, attributes: attributes, text: ""))
        stack.append(elements.count - 1)
    }
    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        let i = stack.removeLast()
        // Text of children counts for the parent too (a tick label "10" + <tspan>k</tspan>).
        if let p = stack.last { elements[p].text += elements[i].text }
    }
    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if let i = stack.last { elements[i].text += string }
    }
    func parser(_ parser: XMLParser, parseErrorOccurred parseError: Error) { error = "\(parseError)" }

    func all(_ name: String, cls: String? = nil) -> [Element] {
        elements.filter { $0.name == name && (cls == nil || $0.attributes["class"] == cls) }
    }
    var root: Element? { elements.first }
}

func assertWellFormed(_ svg: String, file: StaticString = #filePath, line: UInt = #line) -> XMLProbe {
    let p = XMLProbe.parse(svg)
    XCTAssertNil(p.error, "SVG does not parse: \(p.error ?? "")\n\(svg.prefix(400))", file: file, line: line)
    return p
}

/// A minimal independent PNG decoder (8-bit RGB/RGBA, all five filters): checks the signature, every chunk CRC and
/// the zlib stream, returns the pixels.
enum PNGDecodeError: Error { case bad(String) }
func decodePNG(_ d: [UInt8]) throws -> (width: Int, height: Int, channels: Int, pixels: [UInt8], chunks: [String]) {
    guard d.count > 8, Array(d[0..<8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] else { throw PNGDecodeError.bad("signature") }
    func be32(_ i: Int) -> Int { Int(d[i]) << 24 | Int(d[i + 1]) << 16 | Int(d[i + 2]) << 8 | Int(d[i + 3]) }
    var i = 8, w = 0, h = 0, ch = 0
    var idat: [UInt8] = [], chunks: [String] = []
    while i + 12 <= d.count {
        let len = be32(i)
        let type = String(decoding: d[(i + 4)..<(i + 8)], as: UTF8.self)
        guard i + 12 + len <= d.count else { throw PNGDecodeError.bad("truncated \(type)") }
        let body = Array(d[(i + 4)..<(i + 8 + len)])
        if UInt32(be32(i + 8 + len)) != crc32Reference(body) { throw PNGDecodeError.bad("CRC of \(type)") }
        chunks.append(type)
        let data = Array(body[4...])
        switch type {
        case "IHDR":
            w = Int(data[0]) << 24 | Int(data[1]) << 16 | Int(data[2]) << 8 | Int(data[3])
            h = Int(data[4]) << 24 | Int(data[5]) << 16 | Int(data[6]) << 8 | Int(data[7])
            guard data[8] == 8, data[9] == 2 || data[9] == 6, data[10] == 0, data[11] == 0, data[12] == 0 else {
                throw PNGDecodeError.bad("IHDR fields")
            }
            ch = data[9] == 6 ? 4 : 3
        case "IDAT": idat += data
        default: break
        }
        i += 12 + len
    }
    guard i == d.count, chunks.first == "IHDR", chunks.last == "IEND" else { throw PNGDecodeError.bad("chunk layout \(chunks)") }
    // zlib header: CM=8, check bits.
    guard idat.count > 6, idat[0] & 0x0f == 8, (Int(idat[0]) << 8 | Int(idat[1])) % 31 == 0 else { throw PNGDecodeError.bad("zlib header") }
    let rowBytes = w * ch
    var raw = [UInt8](repeating: 0, count: (rowBytes + 1) * h)
    var got = 0
    let rc = idat.withUnsafeBufferPointer { src in
        raw.withUnsafeMutableBufferPointer { dst in
            wscan_inflate_raw(src.baseAddress! + 2, src.count - 6, dst.baseAddress, dst.count, &got)
        }
    }
    guard rc == 0, got == raw.count else { throw PNGDecodeError.bad("inflate rc=\(rc) got=\(got)") }
    var px = [UInt8](repeating: 0, count: rowBytes * h)
    for r in 0..<h {
        let f = raw[r * (rowBytes + 1)]
        for x in 0..<rowBytes {
            let v = raw[r * (rowBytes + 1) + 1 + x]
            let a = x >= ch ? Int(px[r * rowBytes + x - ch]) : 0
            let b = r > 0 ? Int(px[(r - 1) * rowBytes + x]) : 0
            let c = (r > 0 && x >= ch) ? Int(px[(r - 1) * rowBytes + x - ch]) : 0
            let pred: Int
            switch f {
            case 0: pred = 0
            case 1: pred = a
            case 2: pred = b
            case 3: pred = (a + b) / 2
            case 4:
                let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c)
            default: throw PNGDecodeError.bad("filter \(f)")
            }
            px[r * rowBytes + x] = UInt8((Int(v) + pred) & 0xff)
        }
    }
    return (w, h, ch, px, chunks)
}

/// Bitwise CRC-32 (IEEE), independent of zlib.
func crc32Reference(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xffff_ffff
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
    }
    return ~c
}

/// Deterministic pseudo-random numbers (no seeding from the clock).
struct LCG {
    var s: UInt64
    mutating func next() -> Double {
        s = s &* 6364136223846793005 &+ 1442695040888963407
        return Double(s >> 11) / Double(1 << 53)
    }
}

func runPython(_ script: String, _ args: [String]) -> (status: Int32, out: String, err: String)? {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", script] + args
    let o = Pipe(), e = Pipe()
    p.standardOutput = o; p.standardError = e
    do { try p.run() } catch { return nil }
    let od = o.fileHandleForReading.readDataToEndOfFile(), ed = e.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: od, as: UTF8.self), String(decoding: ed, as: UTF8.self))
}

// MARK: - SVG charts

final class ReportSVGChartTests: XCTestCase {
    static func sampleChart() -> LineChart {
        var g = LCG(s: 7)
        let x = (0..<200).map { Double($0) * 0.05 }
        let noisy = x.map { sin($0) + 0.2 * (g.next() - 0.5) }
        return LineChart(title: "Loss <curve> & \"friends\"", xLabel: "epoch", yLabel: "loss",
                         series: [ChartSeries(name: "train", x: x, y: noisy, style: .points),
                                  ChartSeries(name: "smooth", x: x, y: x.map(sin)),
                                  ChartSeries(name: "steps", x: [0, 2, 4, 6, 8], y: [0.5, -0.2, 0.1, 0.3, 0.3], style: .step, dashed: true)],
                         markers: [ChartMarker(x: 3.3, label: "knee")],
                         hlines: [ChartHLine(y: 0, label: "zero")])
    }

    func testLineChartParsesAndIsDeterministic() {
        let a = Self.sampleChart().svg(), b = Self.sampleChart().svg()
        XCTAssertEqual(a, b, "two renders differ")
        let p = assertWellFormed(a)
        XCTAssertEqual(p.root?.name, "svg")
        XCTAssertEqual(p.root?.attributes["width"], "760")
        XCTAssertEqual(p.all("title").first?.text, "Loss <curve> & \"friends\"")
        XCTAssertEqual(p.all("g", cls: "legend").count, 1)
        XCTAssertTrue(p.elements.contains { $0.name == "text" && $0.text == "knee" })
        XCTAssertGreaterThanOrEqual(p.all("text", cls: "xtick").count, 4)
        XCTAssertFalse(a.contains("nan") || a.contains("inf"))
    }

    func testEscapingOfAllText() {
        let nasty = "a<b & c>\"d\" 'e' \u{01}bell"
        let chart = LineChart(title: nasty, xLabel: nasty, yLabel: nasty,
                              series: [ChartSeries(name: nasty, x: [1, 2], y: [1, 2])],
                              markers: [ChartMarker(x: 1.5, label: nasty)], hlines: [ChartHLine(y: 1.5, label: nasty)])
        let p = assertWellFormed(chart.svg())
        let expected = "a<b & c>\"d\" 'e' \u{FFFD}bell"
        XCTAssertGreaterThanOrEqual(p.elements.filter { $0.name == "text" && $0.text == expected }.count, 5)
        let bars = BarChart(title: nasty, labels: [nasty, "x"], values: [1, 2], valueLabel: nasty, threshold: 1.5, thresholdLabel: nasty)
        _ = assertWellFormed(bars.svg())
        _ = assertWellFormed(Heatmap.legendSVG(vmin: 0, vmax: 1, label: nasty))
    }

    func testLogAxisTicksAreDecades() {
        let x = (0..<60).map { pow(10, -2.6 + Double($0) * 0.12) }   // 2.5e-3 ... 3.3e4
        let chart = LineChart(title: "log", xLog: true, yLog: true,
                              series: [ChartSeries(name: "", x: x, y: x.map { 3 * pow($0, -1.5) }, style: .linePoints)])
        let svg = chart.svg()
        let p = assertWellFormed(svg)
        for cls in ["xtick", "ytick"] {
            let labels = p.all("text", cls: cls).map(\.text)
            XCTAssertGreaterThanOrEqual(labels.count, 3, cls)
            var exps: [Int] = []
            for l in labels {
                XCTAssertTrue(l.hasPrefix("10"), "\(cls) label \(l) is not 10^k")
                if let k = Int(l.dropFirst(2)) { exps.append(k) } else { XCTFail("\(cls) label \(l)") }
            }
            XCTAssertEqual(exps, exps.sorted(), cls)
            XCTAssertEqual(Set(exps).count, exps.count, cls)
        }
        let xt = p.all("text", cls: "xtick").map(\.text)
        XCTAssertEqual(xt.first, "10-3"); XCTAssertEqual(xt.last, "105")
        let t = Ticks.log(lo: 0.0025, hi: 33000)
        XCTAssertEqual(t.lo, 1e-3); XCTAssertEqual(t.hi, 1e5)
        XCTAssertTrue(t.major.allSatisfy(Ticks.isDecade))
        XCTAssertTrue(t.minor.contains(2e-3) && t.minor.contains(9e4))
        // A wide span labels every other decade and keeps the rest as minor ticks.
        let wide = Ticks.log(lo: 1e-12, hi: 1e6)
        XCTAssertTrue(wide.major.allSatisfy(Ticks.isDecade))
        XCTAssertLessThanOrEqual(wide.major.count, 10)
        XCTAssertTrue(wide.minor.contains { Ticks.isDecade($0) })
    }

    func testLinearTicksAreNice() {
        let t = Ticks.linear(lo: 0.13, hi: 9.7)
        XCTAssertEqual(t.step, 2)
        XCTAssertEqual(t.values, [0, 2, 4, 6, 8, 10])
        let u = Ticks.linear(lo: -0.0031, hi: 0.0112)
        XCTAssertEqual(u.step, 0.002, accuracy: 1e-15)
        XCTAssertEqual(u.lo, -0.004, accuracy: 1e-15)
        XCTAssertEqual(Ticks.linear(lo: 5, hi: 5).values.count > 1, true)
        XCTAssertEqual(SVG.tickLabel(0.30000000000000004, step: 0.1, scale: 1), "0.3")
        XCTAssertEqual(SVG.tickLabel(2.5e6, step: 5e5, scale: 3e6), "2.5e6")
        XCTAssertEqual(SVG.num(-0.004), "0")
        XCTAssertEqual(SVG.num(12.345), "12.35")
        XCTAssertEqual(SVG.value(0.000123), "1.23e-4")
        XCTAssertEqual(SVG.value(99.96), "100")
    }

    func testNonFiniteAndNonPositiveOnLogAxesAreSkipped() {
        let chart = LineChart(title: "gaps", yLog: true,
                              series: [ChartSeries(name: "s", x: [1, 2, 3, 4, 5, 6], y: [1, 0, -3, .nan, 10, .infinity])])
        let svg = chart.svg()
        let p = assertWellFormed(svg)
        XCTAssertFalse(svg.lowercased().contains("nan") || svg.contains("inf"))
        // Two isolated points remain (1 and 10): drawn as dots, no line across the gap.
        XCTAssertEqual(p.all("circle").count, 2)
        XCTAssertFalse(p.all("path").contains { ($0.attributes["d"] ?? "").contains("L") })
    }

    func testEmptyChartsSayNoData() {
        for svg in [LineChart(title: "empty").svg(),
                    LineChart(title: "nan", series: [ChartSeries(name: "x", x: [.nan], y: [1])]).svg(),
                    LineChart(title: "log", xLog: true, series: [ChartSeries(name: "x", x: [0, -1], y: [1, 2])]).svg(),
                    BarChart(title: "bars", labels: [], values: []).svg(),
                    Histogram.esd(eigenvalues: [], bins: 10, fit: nil).svg()] {
            let p = assertWellFormed(svg)
            XCTAssertTrue(p.elements.contains { $0.name == "text" && $0.text == "no data" }, svg)
        }
    }

    /// Noise filling every corner: no free corner for the legend.
    static func crowdedChart() -> LineChart {
        var g = LCG(s: 21)
        let x = (0..<400).map { _ in g.next() }, y = (0..<400).map { _ in g.next() }
        return LineChart(title: "crowded", xLabel: "x", yLabel: "y",
                         series: [ChartSeries(name: "noise A", x: x, y: y, style: .points),
                                  ChartSeries(name: "noise B with a longer name", x: y, y: x.map { 1 - $0 }, style: .points)],
                         xRange: 0...1, yRange: 0...1)
    }

    func testLegendMovesBelowWhenEveryCornerHasData() {
        let svg = Self.crowdedChart().svg()
        let p = assertWellFormed(svg)
        let plot = p.elements.first { $0.name == "rect" && $0.attributes["stroke"] == "#bbbbbb" }!
        let legend = p.elements.first { $0.name == "rect" && $0.attributes["fill-opacity"] == "0.9" }!
        let plotBottom = Double(plot.attributes["y"]!)! + Double(plot.attributes["height"]!)!
        XCTAssertGreaterThan(Double(legend.attributes["y"]!)!, plotBottom)
        XCTAssertLessThanOrEqual(Double(legend.attributes["y"]!)! + Double(legend.attributes["height"]!)!, 420)
    }

    func testLegendAvoidsData() {
        // Data filling the top-right corner: the legend moves to another corner.
        let x = (0...50).map(Double.init)
        let chart = LineChart(title: "legend", series: [ChartSeries(name: "rising", x: x, y: x.map { $0 * $0 })])
        let p = assertWellFormed(chart.svg())
        let rect = p.all("g", cls: "legend").isEmpty ? nil : p.elements.first { $0.name == "rect" && $0.attributes["fill-opacity"] == "0.9" }
        XCTAssertNotNil(rect)
        XCTAssertLessThan(Double(rect!.attributes["x"]!)!, 380, "legend should sit on the left, away from the curve")
    }

    func testBarChartWith150LabelsGrowsAndStaysLegible() {
        func labels(_ n: Int) -> [String] {
            (0..<n).map { "very.long.prefix.module.transformer.encoder.block.\($0).layer.1.DenseReluDense.wo.weight" }
        }
        let small = BarChart(title: "alpha", labels: labels(10), values: (0..<10).map { Double($0) }, valueLabel: "α")
        var g = LCG(s: 3)
        let values = (0..<150).map { _ in 1.5 + 5 * g.next() }
        let big = BarChart(title: "alpha per layer", labels: labels(150), values: values, valueLabel: "α",
                           threshold: 6, thresholdLabel: "α > 6: over-trained?")
        let s1 = small.svg(), s2 = big.svg()
        XCTAssertEqual(s2, big.svg())
        let p1 = assertWellFormed(s1), p2 = assertWellFormed(s2)
        let h1 = Int(p1.root!.attributes["height"]!)!, h2 = Int(p2.root!.attributes["height"]!)!
        XCTAssertGreaterThan(h2, h1)
        XCTAssertGreaterThanOrEqual(h2, 150 * 14)
        XCTAssertEqual(Int(p2.root!.attributes["width"]!)!, 760)
        let rowLabels = p2.all("text").filter { $0.attributes["text-anchor"] == "end" && $0.text.contains("wo.weight") }
        XCTAssertEqual(rowLabels.count, 150)
        for (i, l) in rowLabels.enumerated() {
            // <title> carries the full name, the visible text keeps the distinctive suffix.
            XCTAssertTrue(l.text.contains("block.\(i).layer.1.DenseReluDense.wo.weight"), l.text)
            XCTAssertTrue(l.text.contains("…"), l.text)
        }
        XCTAssertEqual(p2.all("rect").filter { $0.attributes["height"] != nil && $0.attributes["fill"]?.hasPrefix("#") == true }.count, 150 + 1)
        // Vertical variant parses too.
        _ = assertWellFormed(BarChart(title: "v", labels: labels(40), values: values.prefix(40).map { $0 - 3 }, horizontal: false, threshold: 1).svg())
    }

    func testESDChart() {
        // Pareto tail with α = 2.5 above xmin = 1, plus a bulk below.
        var g = LCG(s: 11)
        var ev = (0..<400).map { _ in 0.05 + 0.9 * g.next() }
        ev += (0..<200).map { _ in pow(1 - g.next(), -1 / 1.5) }
        ev += [0, -1, .nan]
        let chart = Histogram.esd(eigenvalues: ev, bins: 30, fit: (alpha: 2.5, xmin: 1))
        XCTAssertTrue(chart.xLog && chart.yLog)
        XCTAssertEqual(chart.series.count, 2)
        XCTAssertEqual(chart.series[0].style, .step)
        XCTAssertEqual(chart.series[0].x.count, 31)
        XCTAssertEqual(chart.markers.first?.x, 1)
        // Fitted density at xmin = tail fraction × (α − 1) / xmin.
        XCTAssertEqual(chart.series[1].y[0], 200.0 / 600.0 * 1.5, accuracy: 1e-12)
        // The binned density integrates to 1.
        let (e, d) = Histogram.logBinned(ev, bins: 30)
        XCTAssertEqual(zip(d, zip(e, e.dropFirst())).map { $0 * ($1.1 - $1.0) }.reduce(0, +), 1, accuracy: 1e-9)
        let svg = chart.svg()
        XCTAssertEqual(svg, Histogram.esd(eigenvalues: ev, bins: 30, fit: (alpha: 2.5, xmin: 1)).svg())
        let p = assertWellFormed(svg)
        XCTAssertTrue(p.all("text", cls: "xtick").allSatisfy { $0.text.hasPrefix("10") })
        XCTAssertTrue(p.elements.contains { $0.name == "text" && $0.text == "xmin = 1" })
        XCTAssertTrue(p.elements.contains { $0.name == "text" && $0.text == "power law α = 2.50" })
    }

    func testColourBarLegend() {
        let lin = Heatmap.legendSVG(vmin: -0.3, vmax: 0.3, label: "weight", colormap: .diverging)
        let p = assertWellFormed(lin)
        XCTAssertEqual(p.root?.attributes["height"], "272")
        XCTAssertTrue(p.elements.contains { $0.name == "text" && $0.text == "0.0" })
        let log = assertWellFormed(Heatmap.legendSVG(vmin: 1e-4, vmax: 3.2, label: "|w|", logScale: true))
        XCTAssertTrue(log.elements.contains { $0.name == "text" && $0.text == "10-2" })
        _ = assertWellFormed(Heatmap.legendSVG(vmin: .nan, vmax: .nan, label: "empty"))
        XCTAssertEqual(lin, Heatmap.legendSVG(vmin: -0.3, vmax: 0.3, label: "weight", colormap: .diverging))
    }
}

// MARK: - PNG, colormaps, heatmaps

final class ReportPNGTests: XCTestCase {
    func gradient(_ w: Int, _ h: Int, _ ch: Int) -> [UInt8] {
        var g = LCG(s: 5)
        var px = [UInt8](repeating: 0, count: w * h * ch)
        for y in 0..<h {
            for x in 0..<w {
                let k = (y * w + x) * ch
                px[k] = UInt8((x * 255) / max(1, w - 1)); px[k + 1] = UInt8((y * 255) / max(1, h - 1))
                px[k + 2] = UInt8(Int(g.next() * 256) & 0xff)
                if ch == 4 { px[k + 3] = UInt8((x + y) & 0xff) }
            }
        }
        return px
    }

    func testRoundTripWithIndependentDecoder() throws {
        for (w, h, ch) in [(1, 1, 3), (37, 23, 3), (64, 48, 4), (300, 2, 3)] {
            let px = gradient(w, h, ch)
            let png = ch == 3 ? PNGEncoder.rgb(width: w, height: h, pixels: px) : PNGEncoder.rgba(width: w, height: h, pixels: px)
            let d = try decodePNG(png)
            XCTAssertEqual(d.width, w); XCTAssertEqual(d.height, h); XCTAssertEqual(d.channels, ch)
            XCTAssertEqual(d.pixels, px, "\(w)x\(h)x\(ch)")
            XCTAssertEqual(png, ch == 3 ? PNGEncoder.rgb(width: w, height: h, pixels: px) : PNGEncoder.rgba(width: w, height: h, pixels: px))
        }
    }

    func testPILReadsOurPNG() throws {
        let probe = runPython("import PIL", [])
        guard let probe, probe.status == 0 else {
            throw XCTSkip("Python PIL (pillow) not available: `pip install pillow` (scripts/install-deps --python) to run this check")
        }
        let tmp = TempDir()
        for (w, h, ch) in [(37, 23, 3), (20, 11, 4)] {
            let px = gradient(w, h, ch)
            let png = ch == 3 ? PNGEncoder.rgb(width: w, height: h, pixels: px) : PNGEncoder.rgba(width: w, height: h, pixels: px)
            let path = tmp.write("img\(ch).png", png)
            let r = runPython("import sys\nfrom PIL import Image\nim=Image.open(sys.argv[1]); im.load()\nprint(im.size, im.mode)\nprint(im.tobytes().hex())", [path])!
            XCTAssertEqual(r.status, 0, r.err)
            let lines = r.out.split(separator: "\n").map(String.init)
            XCTAssertEqual(lines.first, "(\(w), \(h)) \(ch == 3 ? "RGB" : "RGBA")")
            XCTAssertEqual(lines.dropFirst().first, px.map { String(format: "%02x", $0) }.joined())
        }
    }

    func testColormaps() {
        XCTAssertTrue(Colormap.viridis(0) == (0x44, 0x01, 0x54))
        XCTAssertTrue(Colormap.viridis(1) == (0xfd, 0xe7, 0x25))
        XCTAssertTrue(Colormap.viridis(128.0 / 255) == (0x21, 0x91, 0x8c))   // published table entry 128
        XCTAssertTrue(Colormap.viridis(-3) == Colormap.viridis(0))
        XCTAssertTrue(Colormap.viridis(.nan) == Colormap.missing)
        // Perceptually ordered: lightness (approx. luma) increases monotonically.
        var last = -1.0
        for i in 0...100 {
            let c = Colormap.viridis(Double(i) / 100)
            let l = 0.2126 * Double(c.0) + 0.7152 * Double(c.1) + 0.0722 * Double(c.2)
            XCTAssertGreaterThan(l, last - 0.5); last = l
        }
        XCTAssertTrue(Colormap.diverging(0.5) == (0xf7, 0xf7, 0xf7))
        let lo = Colormap.diverging(0), hi = Colormap.diverging(1)
        XCTAssertGreaterThan(lo.2, lo.0)   // blue for negative
        XCTAssertGreaterThan(hi.0, hi.2)   // red for positive
        XCTAssertEqual(Colormap.hex((0, 114, 178)), "#0072b2")
    }
}

final class ReportHeatmapTests: XCTestCase {
    func testBlockMaxPutsOutlierInTheRightPixel() throws {
        for (rows, cols, maxSide) in [(1000, 600, 100), (1001, 600, 100), (517, 2048, 256), (40, 30, 256), (3000, 40, 256), (2, 300, 256)] {
            var m = [Float](repeating: 0, count: rows * cols)
            let (r0, c0) = (rows * 11 / 15, cols * 2 / 3)
            m[r0 * cols + c0] = 5
            let d = Heatmap.downsample(values: m, rows: rows, cols: cols, maxSide: maxSide, reduce: .max)
            if max(rows, cols) <= 4 * min(rows, cols) {               // square blocks: aspect kept
                let b = (max(rows, cols) + maxSide - 1) / maxSide
                XCTAssertEqual(d.height, (rows + b - 1) / b); XCTAssertEqual(d.width, (cols + b - 1) / b)
            } else {                                                 // each axis on its own
                let br = (rows + maxSide - 1) / maxSide, bc = (cols + maxSide - 1) / maxSide
                XCTAssertEqual(d.height, (rows + br - 1) / br); XCTAssertEqual(d.width, (cols + bc - 1) / bc)
            }
            XCTAssertLessThanOrEqual(max(d.width, d.height), maxSide)
            XCTAssertEqual(d.blockRows, (rows + d.height - 1) / d.height)
            XCTAssertEqual(d.blockCols, (cols + d.width - 1) / d.width)
            let (pi, pj) = (r0 / d.blockRows, c0 / d.blockCols)
            for k in 0..<d.cells.count { XCTAssertEqual(d.cells[k], k == pi * d.width + pj ? 5 : 0, "\(rows)x\(cols) cell \(k)") }

            let r = Heatmap.render(values: m, rows: rows, cols: cols, maxSide: maxSide, reduce: .max, absolute: true, logScale: false)
            XCTAssertEqual(r.vmin, 0); XCTAssertEqual(r.vmax, 5)
            let png = try decodePNG(r.png)
            XCTAssertEqual(png.width, r.width); XCTAssertEqual(png.height, r.height)
            // Small maps are enlarged by whole pixels to at least Heatmap.minSide a side.
            XCTAssertEqual(png.width % d.width, 0); XCTAssertEqual(png.height % d.height, 0)
            let fx = png.width / d.width, fy = png.height / d.height
            XCTAssertGreaterThanOrEqual(min(png.width, png.height), min(Heatmap.minSide, min(rows, cols)))
            if min(d.width, d.height) >= Heatmap.minSide { XCTAssertEqual(fx, 1); XCTAssertEqual(fy, 1) }
            for y in 0..<png.height {
                for x in 0..<png.width {
                    let k = (y * png.width + x) * 3
                    let c = (png.pixels[k], png.pixels[k + 1], png.pixels[k + 2])
                    XCTAssertTrue(c == ((y / fy, x / fx) == (pi, pj) ? Colormap.viridis(1) : Colormap.viridis(0)), "\(rows)x\(cols) pixel \(x),\(y)")
                }
            }
            // Block mean dilutes the outlier over the block.
            let mean = Heatmap.downsample(values: m, rows: rows, cols: cols, maxSide: maxSide, reduce: .mean)
            let rowsIn = min(rows, (pi + 1) * d.blockRows) - pi * d.blockRows, colsIn = min(cols, (pj + 1) * d.blockCols) - pj * d.blockCols
            XCTAssertEqual(mean.cells[pi * d.width + pj], 5 / Double(rowsIn * colsIn), accuracy: 1e-12)
        }
    }

    func testSignedLogAndMissingValues() throws {
        // 4x4, maxSide 2 -> 2x2 blocks of 2x2.
        let m: [Float] = [1, -9, 0, 0,
                          2, 3, 0, .nan,
                          .nan, .nan, 0.5, 0.25,
                          .nan, .nan, 4, 0.001]
        let mag = Heatmap.downsample(values: m, rows: 4, cols: 4, maxSide: 2, reduce: .maxMagnitude)
        XCTAssertEqual(mag.cells[0], -9); XCTAssertEqual(mag.cells[1], 0); XCTAssertTrue(mag.cells[2].isNaN); XCTAssertEqual(mag.cells[3], 4)
        let mx = Heatmap.downsample(values: m, rows: 4, cols: 4, maxSide: 2, reduce: .max, absolute: true)
        XCTAssertEqual(mx.cells[0], 9)
        let div = Heatmap.render(values: m, rows: 4, cols: 4, maxSide: 2, reduce: .maxMagnitude, absolute: false, logScale: false, colormap: .diverging)
        XCTAssertEqual(div.vmin, -9); XCTAssertEqual(div.vmax, 9)
        let px = try decodePNG(div.png).pixels
        XCTAssertTrue((px[0], px[1], px[2]) == Colormap.diverging(0))
        XCTAssertTrue((px[6], px[7], px[8]) == Colormap.missing)
        let log = Heatmap.render(values: m, rows: 4, cols: 4, maxSide: 4, reduce: .max, absolute: true, logScale: true)
        XCTAssertEqual(log.vmin, 0.001, accuracy: 1e-9); XCTAssertEqual(log.vmax, 9)
        let empty = Heatmap.render(values: [], rows: 0, cols: 5, reduce: .mean, absolute: false, logScale: false)
        XCTAssertEqual(empty.width, 1); XCTAssertTrue(empty.vmin.isNaN)
        XCTAssertNoThrow(try decodePNG(empty.png))
    }

    /// The saliency-map PNG carries its own scale: a colour bar from vmax (top) to vmin (bottom) beside the map and
    /// both values written in the pixel font.
    func testLegendInsidePNG() throws {
        let m = (0..<320).map { Float($0) / 100 }                       // 10×32, values 0 … 3.19
        let r = Heatmap.renderWithLegend(values: m, rows: 10, cols: 32, reduce: .max, absolute: true)
        XCTAssertEqual(r.mapWidth, 128); XCTAssertEqual(r.mapHeight, 40)
        XCTAssertEqual(r.vmin, 0); XCTAssertEqual(r.vmax, 3.19, accuracy: 1e-6)
        XCTAssertEqual(r.width, 128 + 22 + 6 * 4); XCTAssertEqual(r.height, 40)     // labels "3.19" and "0"
        let png = try decodePNG(r.png)
        XCTAssertEqual(png.width, r.width); XCTAssertEqual(png.height, r.height)
        func px(_ x: Int, _ y: Int) -> (UInt8, UInt8, UInt8) { let k = 3 * (y * png.width + x); return (png.pixels[k], png.pixels[k + 1], png.pixels[k + 2]) }
        XCTAssertTrue(px(128 + 6, 0) == Colormap.viridis(1)); XCTAssertTrue(px(128 + 15, 39) == Colormap.viridis(0))
        XCTAssertTrue(px(128 + 3, 20) == (255, 255, 255))
        let ink = (0..<png.height).reduce(0) { n, y in n + (128 + 20..<png.width).filter { px($0, y) == (40, 40, 40) }.count }
        XCTAssertGreaterThan(ink, 20, "labels drawn")
    }

    func testLargeMatrixSizeAndAspect() throws {
        var g = LCG(s: 9)
        let rows = 768, cols = 3072
        let m = (0..<(rows * cols)).map { _ in Float(g.next() - 0.5) }
        let r = Heatmap.render(values: m, rows: rows, cols: cols, reduce: .mean, absolute: true, logScale: false)
        XCTAssertEqual(r.width, 256); XCTAssertEqual(r.height, 64)
        let d = try decodePNG(r.png)
        XCTAssertEqual(d.width, 256); XCTAssertEqual(d.height, 64)
    }
}

// MARK: - Graphviz

final class ReportBandTests: XCTestCase {
    /// The alpha chart's healthy band [2, 6]: labels of layers outside it are bold, those inside are not (every
    /// layer above 2 was bold before).
    func testBandHighlightsOnlyOutliers() {
        let svg = Fig.bars(title: "alpha", labels: ["low", "mid", "high"], values: [1.5, 3.2, 7.0], valueLabel: "alpha",
                           refLines: [(2, "2"), (6, "6")])
        func bold(_ label: String) -> Bool {
            svg.split(separator: "\n").contains { $0.contains(">\(label)</text>") && $0.contains("font-weight=\"bold\"") }
        }
        XCTAssertTrue(bold("low")); XCTAssertFalse(bold("mid")); XCTAssertTrue(bold("high"))
        // No power-law fit on 2 eigenvalues (token_type_embeddings): no alpha, no alpha warning.
        XCTAssertNil(SpectrumAnalyzer.computeMetrics([3, 1], rows: 2, cols: 384, energies: [0.9]).alpha)
    }
}

final class ReportDiagramTests: XCTestCase {
    /// Crafted tensor names (empty, all dots, non-ASCII digits, quotes, backslashes, newlines) give a DOT source
    /// Graphviz accepts, never a crash (found by running `wscan report` over the fuzzer's corpus).
    func testArchitectureSurvivesCraftedNames() throws {
        let names = ["", ".", "...", "a..b", "1", "layer.٣.w", "layer.²", "x\"y\\", "n\nm.weight", "enc.layer.0.w", "enc.layer.12.w"]
        let dot = Diagrams.architecture(name: "crafted \"model\"", tensors: names.map { ($0, [2, 2], 4) }, metric: [:])
        XCTAssertTrue(dot.hasPrefix("digraph architecture {"))
        XCTAssertTrue(dot.contains("{0..12} ×2"), dot)
        let svg = try Graphviz.svg(dot: dot)
        XCTAssertTrue(svg.contains("<svg"))
    }
}

final class ReportGraphvizTests: XCTestCase {
    static let dot = """
    digraph model {
      rankdir=LR;
      node [shape=box, fontname="Helvetica"];
      \(Graphviz.quote("embed")) -> \(Graphviz.quote("layer.0 attn"));
      \(Graphviz.quote("layer.0 attn")) -> \(Graphviz.quote("a<b & \"c\" \\ d"));
      \(Graphviz.quote("a<b & \"c\" \\ d")) [label=\(Graphviz.quote("α < β &amp; 2 lines\nsecond"))];
    }
    """

    func testRendersParsesAndIsDeterministic() throws {
        let a = try Graphviz.svg(dot: Self.dot), b = try Graphviz.svg(dot: Self.dot)
        XCTAssertEqual(a, b)
        XCTAssertFalse(a.contains("Generated by graphviz"))
        let p = assertWellFormed(a)
        XCTAssertTrue(p.elements.contains { $0.name == "svg" })
        let texts = p.all("text").map(\.text)
        XCTAssertTrue(texts.contains("embed"), "\(texts)")
        XCTAssertTrue(texts.contains("layer.0 attn"), "\(texts)")
        XCTAssertTrue(texts.contains("α < β &amp; 2 lines"), "\(texts)")
        XCTAssertTrue(texts.contains("second"), "\(texts)")
        // Node ids keep DOT's backslash escape in <title> (only labels are unescaped); the id is stable either way.
        XCTAssertTrue(p.all("title").map(\.text).contains { $0.hasPrefix("a<b & \"c\" ") }, "\(p.all("title").map(\.text))")
    }

    func testSyntaxErrorThrows() throws {
        XCTAssertThrowsError(try Graphviz.svg(dot: "digraph { a -> ; }")) { e in
            XCTAssertTrue("\(e)".lowercased().contains("syntax"), "\(e)")
        }
        XCTAssertThrowsError(try Graphviz.svg(dot: ""))
        XCTAssertThrowsError(try Graphviz.svg(dot: "digraph { a \u{0} }"))
        // Graphviz still works after an error (its lexer state is reset).
        XCTAssertNoThrow(try Graphviz.svg(dot: "digraph { x -> y }"))
        XCTAssertTrue(try Graphviz.svg(dot: Self.dot).contains("embed"))
    }

    func testEscape() {
        XCTAssertEqual(Graphviz.escape("a\"b\\c\nd&e\u{07}"), "a\\\"b\\\\c\\nd&amp;e")
        XCTAssertEqual(Graphviz.quote("x"), "\"x\"")
    }

    func testPluginRegistryPresent() {
        let dir = "/usr/lib/x86_64-linux-gnu/graphviz"
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        if FileManager.default.fileExists(atPath: dir) {
            XCTAssertTrue(files.contains { $0.hasPrefix("config6") }, "run scripts/install-deps (libgvc6-config-update -c)")
        }
    }
}
