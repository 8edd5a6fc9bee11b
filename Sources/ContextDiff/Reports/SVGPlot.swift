import Foundation

/// A minimal line chart rendered as SVG (loss curves, accuracy vs steps, trade-off curves).
public struct SVGLineChart {
    public struct Series {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: String
        public init(name: String, points: [(x: Double, y: Double)], color: String) {
            self.name = name
            self.points = points
            self.color = color
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    public var logY = false
    public var width = 640.0
    public var height = 400.0

    public init(title: String, xLabel: String, yLabel: String, series: [Series], logY: Bool = false) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.logY = logY
    }

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]

    /// The chart as an SVG document.
    public func render() -> String {
        let all = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite && (!logY || $0.y > 0) }
        let (left, right, top, bottom) = (70.0, 20.0, 40.0, 50.0)
        let plotW = width - left - right, plotH = height - top - bottom
        func ty(_ y: Double) -> Double { logY ? Foundation.log10(y) : y }
        var minX = all.map(\.x).min() ?? 0, maxX = all.map(\.x).max() ?? 1
        var minY = all.map { ty($0.y) }.min() ?? 0, maxY = all.map { ty($0.y) }.max() ?? 1
        if maxX == minX { maxX += 1; minX -= 1 }
        if maxY == minY { maxY += 1; minY -= 1 }
        let padY = (maxY - minY) * 0.05
        minY -= padY
        maxY += padY
        func px(_ x: Double) -> Double { left + (x - minX) / (maxX - minX) * plotW }
        func py(_ y: Double) -> Double { top + (1 - (ty(y) - minY) / (maxY - minY)) * plotH }
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;")
        }
        func fmt(_ v: Double) -> String {
            let a = Swift.abs(v)
            if a != 0 && (a < 0.01 || a >= 10000) { return String(format: "%.2e", v) }
            return String(format: a >= 100 ? "%.0f" : "%.3g", v)
        }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(width / 2)" y="22" text-anchor="middle" font-size="15">\(esc(title))</text>
        <rect x="\(left)" y="\(top)" width="\(plotW)" height="\(plotH)" fill="none" stroke="#444"/>

        """
        for i in 0...4 {
            let fx = minX + (maxX - minX) * Double(i) / 4
            let fyT = minY + (maxY - minY) * Double(i) / 4
            let label = logY ? fmt(Foundation.pow(10, fyT)) : fmt(fyT)
            let yPos = top + (1 - Double(i) / 4) * plotH
            svg += "<line x1=\"\(px(fx))\" y1=\"\(top + plotH)\" x2=\"\(px(fx))\" y2=\"\(top + plotH + 5)\" stroke=\"#444\"/>"
            svg += "<text x=\"\(px(fx))\" y=\"\(top + plotH + 18)\" text-anchor=\"middle\">\(fmt(fx))</text>\n"
            svg += "<line x1=\"\(left)\" y1=\"\(yPos)\" x2=\"\(left + plotW)\" y2=\"\(yPos)\" stroke=\"#eee\"/>"
            svg += "<text x=\"\(left - 6)\" y=\"\(yPos + 4)\" text-anchor=\"end\">\(label)</text>\n"
        }
        svg += "<text x=\"\(left + plotW / 2)\" y=\"\(height - 10)\" text-anchor=\"middle\">\(esc(xLabel))</text>\n"
        svg += "<text x=\"16\" y=\"\(top + plotH / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(top + plotH / 2))\">\(esc(yLabel))</text>\n"
        for (i, s) in series.enumerated() {
            let pts = s.points.filter { $0.x.isFinite && $0.y.isFinite && (!logY || $0.y > 0) }
            let path = pts.map { String(format: "%.1f,%.1f", px($0.x), py($0.y)) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"1.5\" points=\"\(path)\"/>\n"
            if pts.count <= 30 {
                for p in pts { svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" ", px(p.x), py(p.y)) + "fill=\"\(s.color)\"/>" }
            }
            let ly = top + 16 + Double(i) * 16
            svg += "<line x1=\"\(left + plotW - 150)\" y1=\"\(ly - 4)\" x2=\"\(left + plotW - 130)\" y2=\"\(ly - 4)\" stroke=\"\(s.color)\" stroke-width=\"2\"/>"
            svg += "<text x=\"\(left + plotW - 125)\" y=\"\(ly)\">\(esc(s.name))</text>\n"
        }
        return svg + "</svg>\n"
    }

    /// Writes the SVG atomically.
    public func write(to url: URL) throws {
        try Data(render().utf8).write(to: url, options: .atomic)
    }
}
