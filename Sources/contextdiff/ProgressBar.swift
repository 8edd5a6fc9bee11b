import Foundation
import Torch

/// A one-line progress bar on standard error: count, rate, ETA and a free-form status.
/// Redraws at most ten times a second; prints plain lines when stderr is not a terminal.
final class ProgressBar {
    let total: Int
    let label: String
    var lastDraw = Date.distantPast
    let isTerminal = isatty(STDERR_FILENO) != 0
    var lastPlainPercent = -1

    init(total: Int, label: String) {
        self.total = max(1, total)
        self.label = label
    }

    /// The count and time of the first update: the rate is measured from there, so a bar made
    /// when the first result arrives (or a resumed run starting at step N) shows the real rate.
    private var first: (count: Int, at: Date)?

    func update(_ done: Int, status: String = "") {
        let now = Date()
        let finished = done >= total
        let origin = first ?? (done, now)
        if first == nil { first = origin }
        let elapsed = now.timeIntervalSince(origin.at)
        // No rate before a second update: a first line says so rather than "0.00 it/s ETA 0:00".
        let rate = elapsed > 0 && done > origin.count ? Double(done - origin.count) / elapsed : nil
        let speed = rate.map { String(format: "%.2f it/s ETA ", $0) + Self.clock(Double(total - done) / $0) } ?? "-- it/s ETA --:--"
        let line = "\(label) \(done)/\(total) \(speed) \(status)"
        if isTerminal {
            guard finished || now.timeIntervalSince(lastDraw) > 0.1 else { return }
            lastDraw = now
            let width = 24
            let filled = Int(Double(width) * Double(done) / Double(total))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            FileHandle.standardError.write(Data("\r\u{1B}[K[\(bar)] \(line)".utf8))
            if finished { FileHandle.standardError.write(Data("\n".utf8)) }
        } else {
            let percent = done * 10 / total
            guard finished || percent != lastPlainPercent else { return }
            lastPlainPercent = percent
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}

/// Draws the library's ``ProgressUpdate``s: a new bar whenever the phase changes, the metrics as
/// the status (loss, learning rate, ...). One of these serves every command.
final class ProgressDisplay {
    private var bar: ProgressBar?
    private var phase: String?
    /// Prepended to the phase in the bar's label.
    let prefix: String?

    init(prefix: String? = nil) { self.prefix = prefix }

    @discardableResult
    func update(_ p: ProgressUpdate) -> Bool {
        if phase != p.phase || bar == nil {
            phase = p.phase
            bar = ProgressBar(total: p.total, label: prefix.map { "\($0) \(p.phase)" } ?? p.phase)
        }
        bar?.update(p.completed, status: p.metrics.map(Self.format).joined(separator: " "))
        return true
    }

    static func format(_ m: ProgressUpdate.Metric) -> String {
        switch m.name {
        case "lr": String(format: "lr %.1e", m.value)
        case "case": "#\(Int(m.value))"
        case "steps_per_second": String(format: "%.2f steps/s", m.value)
        default: String(format: "%@ %.4f", m.name, m.value)
        }
    }
}

/// Writes a line to standard error (warnings and notices; results go to standard output).
func note(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
