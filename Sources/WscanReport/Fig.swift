import Foundation

/// The report's figure vocabulary over the chart, heat-map and Graphviz primitives.
public enum Fig {
    public static func line(title: String, xLabel: String, yLabel: String, xLog: Bool, yLog: Bool,
                     series: [(String, [Double], [Double], Bool)], markers: [(Double, String)], hlines: [(Double, String)]) -> String {
        LineChart(title: title, xLabel: xLabel, yLabel: yLabel, xLog: xLog, yLog: yLog,
                  series: series.map { ChartSeries(name: $0.0, x: $0.1, y: $0.2, style: $0.1.count <= 30 ? .linePoints : .line, dashed: $0.3) },
                  markers: markers.map { ChartMarker(x: $0.0, label: $0.1) },
                  hlines: hlines.map { ChartHLine(y: $0.0, label: $0.1) }).svg()
    }

    public static func bars(title: String, labels: [String], values: [Double], valueLabel: String, refLines: [(Double, String)]) -> String {
        var c = BarChart(title: title, labels: labels, values: values, valueLabel: valueLabel,
                         threshold: refLines.first?.0, thresholdLabel: refLines.first?.1 ?? "")
        if refLines.count > 1 { c.upperThreshold = refLines[1].0; c.upperThresholdLabel = refLines[1].1 }   // a band
        return c.svg()
    }

    public static func esd(eigenvalues: [Double], alpha: Double, xmin: Double, title: String) -> String {
        // About 2√n bins (8 to 60): with 60 bins for a 32-value spectrum every bin holds one value and the histogram
        // shows the binning, not the spectrum.
        let bins = min(60, max(8, Int((2 * Double(eigenvalues.count).squareRoot()).rounded())))
        var c = Histogram.esd(eigenvalues: eigenvalues, bins: bins, fit: (alpha: alpha, xmin: xmin))
        c.title = title
        return c.svg()
    }

    public static func heatmap(values: [Float], rows: Int, cols: Int) -> (png: [UInt8], legend: String, width: Int, height: Int) {
        let h = Heatmap.render(values: values, rows: rows, cols: cols, maxSide: 256, reduce: .max, absolute: true)
        return (h.png, Heatmap.legendSVG(vmin: h.vmin, vmax: h.vmax, label: "score (block max)", height: max(140, h.height)), h.width, h.height)
    }

    public static func dot(_ source: String) throws -> String { try Graphviz.svg(dot: source) }
}
