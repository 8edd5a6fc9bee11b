/// SplitMix64 (Steele, Lea & Flood 2014; the seeder of xoshiro): a tiny, fast, seedable
/// generator whose output is fixed by this file alone, so the synthetic benchmark does not
/// depend on libtorch's or the standard library's random algorithms.
///
/// Golden values (seed 0): 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F,
/// the reference sequence of `splitmix64.c` by Sebastiano Vigna.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.finalize(state)
    }

    /// A uniform integer in `0..<bound` (Lemire's multiply-shift with rejection: exactly uniform).
    public mutating func uniform(below bound: Int) -> Int {
        precondition(bound > 0, "uniform(below:) needs a positive bound")
        let n = UInt64(bound)
        var (high, low) = next().multipliedFullWidth(by: n)
        if low < n {
            let threshold = (0 &- n) % n
            while low < threshold { (high, low) = next().multipliedFullWidth(by: n) }
        }
        return Int(high)
    }

    /// A uniform integer in the closed range.
    public mutating func uniform(in range: ClosedRange<Int>) -> Int {
        range.lowerBound + uniform(below: range.upperBound - range.lowerBound + 1)
    }

    /// A uniform double in [0, 1) with 53 random bits.
    public mutating func unitDouble() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// A uniformly chosen element (the collection must not be empty).
    public mutating func choose<C: RandomAccessCollection>(_ items: C) -> C.Element {
        items[items.index(items.startIndex, offsetBy: uniform(below: items.count))]
    }

    /// A seed derived from `seed` and `parts` by repeated SplitMix finalisation: independent
    /// streams per (seed, split, index) without any shared state, so results do not depend on
    /// the order in which samples are requested.
    public static func derive(_ seed: UInt64, _ parts: UInt64...) -> UInt64 {
        var h = finalize(seed &+ 0x9E37_79B9_7F4A_7C15)
        for part in parts {
            h = finalize(h ^ part)
            h = finalize(h &+ 0x9E37_79B9_7F4A_7C15)
        }
        return h
    }

    static func finalize(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
