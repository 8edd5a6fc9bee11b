import Foundation
import NN
import Torch

/// Which parameters one-shot tuning on the source video updates.
public enum VideoTuning: String, Codable, Sendable, CaseIterable {
    /// Tune-A-Video's choice: the U-Net's temporal layers and attention queries (and the adapter
    /// for ContextDiff).
    case queriesAndTemporal = "queries-temporal"
    /// The paper's protocol (§5.2): only the adapter r_φ, over a frozen pretrained base; methods
    /// without an adapter are then zero-shot.
    case adapter
}

/// A text-to-image ContextDiff model inflated to video: the U-Net with sparse-causal
/// self-attention and temporal layers, and (when present) the adapter with causal temporal
/// attention. Built from a 2-D ``ContextDiffModel`` (its weights are copied, never shared).
public final class VideoDiffusionModel {
    public let unet: UNet
    /// r_φ inflated to video; nil for the r_φ ≡ 0 baseline.
    public private(set) var adapter: ContextAdapter?
    public let schedule: NoiseSchedule
    public let index: ModelIndex

    /// Inflates `base` (a ``ContextDiffModel/load(from:)`` folder or any trained model). The new
    /// temporal parameters are drawn from the scoped generator (seed them with
    /// `Torch.withSeed`); their output projections are zero, so at this point the model equals
    /// the 2-D one frame by frame (with per-frame self-attention, or on a still video).
    public init(inflating base: ContextDiffModel) throws {
        guard base.classEncoder == nil else {
            throw VideoEditError.incompatibleModel("this model is class-conditional; video edits are driven by prompts (a text model)")
        }
        unet = try Self.inflated(base.unet)
        adapter = try base.adapter.map { try Self.inflated($0) }
        schedule = base.schedule
        index = base.index
    }

    /// A fresh inflated copy of a 2-D U-Net with its weights. A layout prior's predicted boxes
    /// are not painted (``UNet/paintsPredictedLayout``): an edit keeps the source's layout.
    public static func inflated(_ unet2D: UNet) throws -> UNet {
        let unet = try UNet(unet2D.config)
        try unet.inflate()
        try loadInflating(unet, from: unet2D.stateDict())
        unet.paintsPredictedLayout = false
        return unet
    }

    /// A fresh inflated copy of a 2-D adapter with its weights.
    public static func inflated(_ adapter2D: ContextAdapter) throws -> ContextAdapter {
        let adapter = try ContextAdapter(adapter2D.config)
        try adapter.inflate()
        try loadInflating(adapter, from: adapter2D.stateDict())
        return adapter
    }

    /// Whether a parameter key belongs to a layer that inflation added.
    public static func isTemporalKey(_ key: String) -> Bool { key.contains(".temporal.") || key.hasPrefix("temporal.") }

    /// Loads a 2-D state dict into an inflated module: every non-temporal key must be present with
    /// the right shape and dtype and no extra key may exist (as ``Module/load(_:allowDTypeConversion:)``);
    /// the temporal layers keep their values.
    public static func loadInflating(_ module: Module, from state2D: [String: Tensor]) throws {
        var merged = state2D
        for (key, value) in module.namedParameters() where isTemporalKey(key) {
            guard state2D[key] == nil else { continue }
            merged[key] = value
        }
        try module.load(merged)
    }

    /// Adds a fresh inflated adapter (last layer zero, so r_φ ≡ 0 until it is tuned), for editing
    /// with ContextDiff from a baseline model that has none; it is placed on the U-Net's device.
    public func addFreshAdapter(_ config: ContextAdapterConfig) throws {
        let a = try ContextAdapter(config)
        try a.inflate()
        try a.to(device)
        adapter = a
    }

    /// The device holding the networks' weights.
    public var device: Device {
        get throws { try unet.device ?? .cpu }
    }

    /// Moves the U-Net and the adapter to `device` in place; an edit then runs there (the text
    /// encoder stays on the CPU, its states are moved; noise is drawn on the CPU generator).
    public func to(_ device: Device) throws {
        try unet.to(device)
        try adapter?.to(device)
    }

    public func train(_ on: Bool = true) {
        unet.train(on)
        adapter?.train(on)
    }

    /// The parameters one-shot tuning updates. ``VideoTuning/queriesAndTemporal`` (Tune-A-Video
    /// §4.2): every temporal layer and the query projections of the self- and cross-attention of
    /// the U-Net, plus the whole adapter when `includeAdapter`. ``VideoTuning/adapter`` (the
    /// paper's §5.2 protocol): the adapter alone over the frozen U-Net, nothing without it.
    public func tunableParameters(_ tuning: VideoTuning = .queriesAndTemporal, includeAdapter: Bool) -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        if tuning == .queriesAndTemporal {
            out = unet.namedParameters().filter { key, _ in
                Self.isTemporalKey(key) || key.hasSuffix("attn1.to_q.weight") || key.hasSuffix("attn2.to_q.weight")
            }.map { ("unet." + $0.0, $0.1) }
        }
        if includeAdapter, let adapter { out += adapter.namedParameters().map { ("adapter." + $0.0, $0.1) } }
        return out
    }
}
