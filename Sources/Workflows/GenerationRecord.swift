import ContextDiff
import Datasets
import Foundation

/// What made an image, enough to make it again: the call's prompts and options, the image's
/// place in the batch and the model's name (never a local path). `generate` and the studio keep
/// it inside every PNG they write, as two text chunks — `parameters`, one line of settings a
/// person reads (the convention of other diffusion front ends), and `contextdiff`, this record
/// as JSON, which ``init(pngText:)`` reads back.
public struct GenerationRecord: Codable, Sendable, Equatable {
    /// The call's prompts (class names for a class-conditional model), in batch order.
    public var prompts: [String]
    /// The image's position in the call's batch (`prompt index · imagesPerPrompt + k`); nil for
    /// a grid of the whole call.
    public var index: Int?
    public var options: GenerationOptions
    /// The model folder's name (`default`, a run's name).
    public var model: String
    /// The super-resolution stage's options when the cascade ran (nil: the base model's image).
    public var superResolution: SuperResolutionOptions?
    /// The super-resolution model folder's name (`superres`).
    public var superResolutionModel: String?

    enum CodingKeys: String, CodingKey {
        case prompts, index, options, model
        case superResolution = "super_resolution", superResolutionModel = "super_resolution_model"
    }

    public init(prompts: [String], index: Int?, options: GenerationOptions, model: String) {
        self.prompts = prompts
        self.index = index
        self.options = options
        self.model = model
    }

    /// The image's own prompt (the first prompt for a grid).
    public var prompt: String {
        guard let index, options.imagesPerPrompt > 0 else { return prompts.first ?? "" }
        let row = index / options.imagesPerPrompt
        return prompts.indices.contains(row) ? prompts[row] : prompts.first ?? ""
    }

    /// The two PNG text chunks (`parameters`, then `contextdiff`).
    public func pngText() throws -> [(key: String, value: String)] {
        var settings = [
            "Steps: \(options.steps)", "Sampler: \(options.sampler.rawValue)",
            "CFG scale: \(Self.number(options.guidance))", "Seed: \(options.seed)",
        ]
        if let index { settings.append("Batch index: \(index)") }
        settings.append("Model: \(model)")
        if let superResolution {
            settings.append("Super-resolution: \(superResolutionModel ?? "?"), \(superResolution.steps) steps, CFG scale \(Self.number(superResolution.guidance))")
        }
        if !options.useContext { settings.append("Context: off") }
        var human = prompt
        if let negative = options.negativePrompt, !negative.isEmpty { human += "\nNegative prompt: \(negative)" }
        human += "\n" + settings.joined(separator: ", ")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = String(decoding: try encoder.encode(self), as: UTF8.self)
        return [("parameters", human), ("contextdiff", json)]
    }

    /// The record a PNG written with ``pngText()`` carries; nil when it has none.
    public init?(pngText: [(key: String, value: String)]) {
        guard let json = pngText.first(where: { $0.key == "contextdiff" })?.value,
            let record = try? JSONDecoder().decode(Self.self, from: Data(json.utf8))
        else { return nil }
        self = record
    }

    /// `3` for 3.0, `2.5` for 2.5.
    static func number(_ x: Double) -> String {
        x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x)
    }
}

extension RGBImage {
    /// Writes the image as a PNG (atomically) that carries `record` in its text chunks.
    public func writePNG(to url: URL, record: GenerationRecord) throws {
        try writePNG(to: url, text: record.pngText())
    }
}
