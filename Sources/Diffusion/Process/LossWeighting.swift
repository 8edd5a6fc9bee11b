import Foundation
import Torch

/// The per-timestep weight λ_t of the training loss (paper Eq. 8).
public enum LossWeighting: Codable, Sendable, Equatable {
    /// λ_t = 1.
    case uniform
    /// λ_t = 1 − ᾱ_t (DESIGN §3's P2-style choice: down-weights the nearly clean steps).
    case p2
    /// λ_t = min(SNR_t, γ) / γ with SNR_t = ᾱ_t / (1 − ᾱ_t) (Hang et al., 2023, for x0 targets;
    /// divided by γ so that the largest weight is 1).
    case minSNR(gamma: Double)

    /// Parses `uniform`, `p2`, `min-snr` (γ = 5) or `min-snr:G`.
    public init(parsing text: String) throws {
        let lower = text.lowercased()
        if lower == "uniform" { self = .uniform; return }
        if lower == "p2" { self = .p2; return }
        if lower == "min-snr" || lower == "minsnr" { self = .minSNR(gamma: 5); return }
        if lower.hasPrefix("min-snr:"), let g = Double(lower.dropFirst(8)), g > 0 { self = .minSNR(gamma: g); return }
        throw UnknownOptionError(option: "loss weighting", value: text, accepted: ["uniform", "p2", "min-snr", "min-snr:G"])
    }

    /// The textual form accepted by ``init(parsing:)``.
    public var name: String {
        switch self {
        case .uniform: "uniform"
        case .p2: "p2"
        case let .minSNR(gamma): "min-snr:\(gamma)"
        }
    }

    /// Encoded as its ``name`` (e.g. `"min-snr:5.0"`).
    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do {
            try self.init(parsing: text)
        } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\(error)"))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(name)
    }

    /// λ for one ᾱ.
    public func weight(alphaBar: Double) -> Double {
        switch self {
        case .uniform: return 1
        case .p2: return 1 - alphaBar
        case let .minSNR(gamma):
            let snr = alphaBar / Swift.max(1e-12, 1 - alphaBar)
            return Swift.min(snr, gamma) / gamma
        }
    }
}
