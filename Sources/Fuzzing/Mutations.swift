import Foundation

/// FuzzRNG: a small, fast, seedable generator, so that every fuzz case is reproducible
/// from `(seed, format, case index)` alone.
public struct FuzzRNG: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The generator of one case: independent streams for every (seed, format, index).
    static func forCase(seed: UInt64, format: FuzzFormat, index: Int) -> FuzzRNG {
        var mixer = FuzzRNG(seed: seed ^ (UInt64(format.ordinal) &* 0xD6E8_FEB8_6659_FD93))
        for _ in 0..<2 { _ = mixer.next() }
        return FuzzRNG(seed: mixer.next() ^ UInt64(index) &* 0xA076_1D64_78BD_642F)
    }
}

/// Byte-level mutations shared by every format.
enum ByteMutation: CaseIterable {
    case flipBits, truncate, insertRandom, deleteSpan, duplicateSpan, overwriteExtreme, appendGarbage

    static func apply(to input: [UInt8], using rng: inout FuzzRNG) -> [UInt8] {
        var bytes = input
        let rounds = Int.random(in: 1...3, using: &rng)
        for _ in 0..<rounds { bytes = allCases.randomElement(using: &rng)!.mutate(bytes, &rng) }
        return bytes
    }

    func mutate(_ input: [UInt8], _ rng: inout FuzzRNG) -> [UInt8] {
        var bytes = input
        guard !bytes.isEmpty else { return [UInt8.random(in: 0...255, using: &rng)] }
        switch self {
        case .flipBits:
            for _ in 0..<Int.random(in: 1...8, using: &rng) {
                let i = Int.random(in: 0..<bytes.count, using: &rng)
                bytes[i] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
            }
        case .truncate:
            bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
        case .insertRandom:
            let at = Int.random(in: 0...bytes.count, using: &rng)
            let count = Int.random(in: 1...64, using: &rng)
            bytes.insert(contentsOf: (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: at)
        case .deleteSpan:
            let start = Int.random(in: 0..<bytes.count, using: &rng)
            let end = min(bytes.count, start + Int.random(in: 1...64, using: &rng))
            bytes.removeSubrange(start..<end)
        case .duplicateSpan:
            let start = Int.random(in: 0..<bytes.count, using: &rng)
            let end = min(bytes.count, start + Int.random(in: 1...256, using: &rng))
            bytes.insert(contentsOf: bytes[start..<end], at: Int.random(in: 0...bytes.count, using: &rng))
        case .overwriteExtreme:
            let start = Int.random(in: 0..<bytes.count, using: &rng)
            let value: UInt8 = [0x00, 0xFF, 0x7F, 0x80].randomElement(using: &rng)!
            for i in start..<min(bytes.count, start + Int.random(in: 1...8, using: &rng)) { bytes[i] = value }
        case .appendGarbage:
            bytes += (0..<Int.random(in: 1...512, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        }
        return bytes
    }
}

/// Values a hostile JSON document puts where a number, string or object was expected.
enum HostileJSON {
    static func value(using rng: inout FuzzRNG) -> Any {
        let choices: [Any] = [
            NSNull(), -1, 0, 1, 2, 3, 7, 1_000_000_000, Int64.max, Int64.min, 1e308, -1e308, 1.5, 0.5,
            "", "x", String(repeating: "a", count: 4096), "../../etc/passwd", "\u{0}",
            [Any](), [1, 2, 3], Array(repeating: 100_000, count: 8), ["a": 1] as [String: Any], true, false,
        ]
        return choices.randomElement(using: &rng)!
    }

    /// A mutation of a JSON object: one field deleted, replaced, added, or the whole document
    /// replaced by another JSON type.
    static func mutate(_ object: Any, using rng: inout FuzzRNG) -> Any {
        guard var dictionary = object as? [String: Any], !dictionary.isEmpty else {
            return value(using: &rng)
        }
        let key = dictionary.keys.sorted().randomElement(using: &rng)!
        switch Int.random(in: 0..<10, using: &rng) {
        case 0...1: dictionary.removeValue(forKey: key)
        case 2...6:
            if let nested = dictionary[key], nested is [String: Any] || nested is [Any], Bool.random(using: &rng) {
                if let array = nested as? [Any], !array.isEmpty {
                    var copy = array
                    copy[Int.random(in: 0..<copy.count, using: &rng)] = value(using: &rng)
                    dictionary[key] = copy
                } else {
                    dictionary[key] = mutate(nested, using: &rng)
                }
            } else {
                dictionary[key] = value(using: &rng)
            }
        case 7: dictionary["unexpected_\(Int.random(in: 0..<100, using: &rng))"] = value(using: &rng)
        case 8:
            // Deep nesting.
            var deep: Any = 1
            for _ in 0..<Int.random(in: 50...400, using: &rng) { deep = [deep] }
            dictionary[key] = deep
        default: return value(using: &rng)
        }
        return dictionary
    }

    static func encode(_ object: Any) -> [UInt8] {
        if JSONSerialization.isValidJSONObject(object),
           let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
            return [UInt8](data)
        }
        // A fragment (a bare number, string or null).
        if let data = try? JSONSerialization.data(withJSONObject: [object], options: []) {
            return Array([UInt8](data).dropFirst().dropLast())
        }
        return Array("null".utf8)
    }
}

/// CRC-32 (ISO-HDLC, as PNG chunks use), so that structured PNG mutations keep valid checksums
/// and reach the decoder's later checks.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}

extension Array where Element == UInt8 {
    mutating func writeBigEndian32(_ value: UInt32, at offset: Int) {
        for i in 0..<4 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * i)) }
    }

    mutating func writeBigEndian16(_ value: UInt16, at offset: Int) {
        self[offset] = UInt8(value >> 8)
        self[offset + 1] = UInt8(truncatingIfNeeded: value)
    }

    mutating func writeLittleEndian64(_ value: UInt64, at offset: Int) {
        for i in 0..<8 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }

    func readBigEndian32(at offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(self[offset + $1]) }
    }
}
