import Torch

/// Bounds on the sizes a network config may name. Far beyond any model this library trains,
/// they keep the arithmetic on a config (widths × multipliers, 2^levels) from overflowing, so
/// a mistyped or hostile `config.json` is refused with a message naming the field instead of
/// trapping.
enum ConfigLimits {
    /// Channels, widths, embedding sizes, token counts, sample sizes.
    static let size = 1 << 16
    /// Layers, levels, multipliers, ratios.
    static let count = 64
    /// Attention heads.
    static let heads = 1024

    /// Throws `fail(message)` unless every `(name, value)` lies in `range`.
    static func check(_ fields: KeyValuePairs<String, Int>, in range: ClosedRange<Int>, _ fail: (String) -> Error) throws {
        for (name, value) in fields where !range.contains(value) {
            throw fail("\(name) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
        }
    }
}
