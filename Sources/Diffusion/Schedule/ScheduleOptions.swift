import Foundation

// Parsing of the string options that name schedules, spacings, prediction types and variance
// types (diffusers' config values), with one typed error that lists the accepted names.

/// A string option that names none of the accepted values.
public struct UnknownOptionError: Error, Equatable, CustomStringConvertible, Sendable {
    /// What was being parsed, e.g. "beta schedule".
    public let option: String
    /// The rejected text.
    public let value: String
    /// Every accepted spelling.
    public let accepted: [String]

    public init(option: String, value: String, accepted: [String]) {
        self.option = option
        self.value = value
        self.accepted = accepted
    }

    public var description: String {
        "unknown \(option) '\(value)'; expected one of: \(accepted.joined(separator: ", "))"
    }
}

/// Enumerations spelled as diffusers spells them in a scheduler config.
public protocol NamedOption: CaseIterable, RawRepresentable where RawValue == String {
    /// A human name for error messages ("beta schedule").
    static var optionName: String { get }
    /// Extra accepted spellings besides the raw values.
    static var aliases: [String: Self] { get }
}

extension NamedOption {
    public static var aliases: [String: Self] { [:] }

    /// Parses a diffusers config value (or an alias), throwing a message that lists the choices.
    public init(parsing text: String) throws(UnknownOptionError) {
        if let v = Self(rawValue: text) ?? Self.aliases[text] {
            self = v
            return
        }
        let names = Self.allCases.map(\.rawValue) + Self.aliases.keys.sorted()
        throw UnknownOptionError(option: Self.optionName, value: text, accepted: names)
    }
}

extension BetaSchedule: NamedOption {
    public static var optionName: String { "beta schedule" }
    /// `cosine` is accepted for `squaredcos_cap_v2`.
    public static var aliases: [String: BetaSchedule] { ["cosine": .cosine] }
}

extension TimestepSpacing: NamedOption {
    public static var optionName: String { "timestep spacing" }
}

// MARK: - ContextDiff's bias coefficient

extension NoiseSchedule {
    /// ContextDiff's bias scale `k_t = sqrt(ᾱ_t) · (1 − sqrt(ᾱ_t))` (paper §3.1, the coefficient of
    /// `r_φ` in `b_t = k_t · r_φ(x0, c, t)`), for a diffusers timestep index `t` in `-1..<T`.
    ///
    /// Indexing: diffusers' index `t` is the paper's step `t + 1`, so the paper's `k_T = 0` is
    /// index `T − 1`, and index `−1` is the paper's clean level `x_0` (ᾱ = 1) where `b_0 = 0`.
    /// Computed in Double from the float32 ᾱ.
    public func contextCoefficient(_ t: Int) -> Double {
        let count = alphasCumprod.count
        precondition(t >= -1 && t < count, "timestep \(t) outside -1..<\(count)")
        if t == -1 || t == count - 1 { return 0 }
        return Self.contextCoefficient(alphaBar: alphasCumprod[t])
    }

    /// `sqrt(ᾱ) · (1 − sqrt(ᾱ))` for any ᾱ (0 at ᾱ = 0 and ᾱ = 1, at most 1/4 at ᾱ = 1/4).
    public static func contextCoefficient(alphaBar: Float) -> Double {
        let s = Double(alphaBar).squareRoot()
        return s * (1 - s)
    }
}
