import ContextDiff
import Foundation

/// What one server will accept: every bound a request or the queue can hit, with its HTTP
/// answer (422 past an option's bound, 413 past a body's, 429 past the queue's).
public struct StudioLimits: Codable, Sendable, Equatable {
    /// Jobs waiting or running at once; one more is answered 429.
    public var queueCapacity = 8
    /// Images one request may ask for.
    public var maxImages = 8
    /// Denoising steps one request may ask for.
    public var maxSteps = 200
    /// Characters of a prompt or negative prompt.
    public var maxPromptCharacters = 500
    /// Bytes of a JSON request body.
    public var maxBodyBytes = 64 * 1024
    /// Classifier-free guidance weights allowed.
    public var maxGuidance = 30.0
    /// Finished runs the history lists at most per page.
    public var maxPageSize = 200
    /// Bytes of an uploaded clip.
    public var maxUploadBytes = 32 << 20
    /// Frames of a video edit.
    public var maxFrames = 16
    /// One-shot tuning steps of a video edit.
    public var maxTuneSteps = 200

    public init() {}

    enum CodingKeys: String, CodingKey {
        case queueCapacity = "queue_capacity", maxImages = "max_images", maxSteps = "max_steps"
        case maxPromptCharacters = "max_prompt_characters", maxBodyBytes = "max_body_bytes"
        case maxGuidance = "max_guidance", maxPageSize = "max_page_size", maxUploadBytes = "max_upload_bytes"
        case maxFrames = "max_frames", maxTuneSteps = "max_tune_steps"
    }
}

/// A generation request as the page and the JSON API send it. Every field but `prompt` is
/// optional and takes `generate`'s default; a missing seed is drawn at random (and recorded).
public struct GenerateRequest: Codable, Sendable, Equatable {
    public var prompt: String
    public var negativePrompt: String?
    public var sampler: String?
    public var steps: Int?
    public var guidance: Double?
    public var seed: UInt64?
    public var numImages: Int?
    /// `sampled` or `typical` (models with a layout prior).
    public var layout: String?
    /// Layout-to-image: objects named by phrases of the prompt, boxes `[x0, y0, x1, y1]` in [0, 1].
    public var boxes: [Layout.Object]?

    public init(prompt: String) { self.prompt = prompt }

    enum CodingKeys: String, CodingKey {
        case prompt, sampler, steps, guidance, seed, layout, boxes
        case negativePrompt = "negative_prompt", numImages = "num_images"
    }
}

/// A request checked against the limits and turned into the library's options.
public struct GenerationJobSpec: Sendable, Equatable {
    public var prompt: String
    public var options: GenerationOptions
    public var layout: Layout?
}

/// Why a request was refused, with the HTTP status it is answered with.
public struct StudioRequestError: Error, Equatable, CustomStringConvertible {
    public var status: Int
    public var message: String
    public var description: String { message }

    static func invalid(_ message: String) -> Self { Self(status: 422, message: message) }
}

extension GenerateRequest {
    /// Checks every field against `limits` and the model, naming the first bad one.
    public func validated(limits: StudioLimits, trainTimesteps: Int) throws -> GenerationJobSpec {
        let prompt = self.prompt.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !prompt.isEmpty else { throw StudioRequestError.invalid("prompt: describe the image to generate") }
        guard prompt.count <= limits.maxPromptCharacters else {
            throw StudioRequestError.invalid("prompt: at most \(limits.maxPromptCharacters) characters, got \(prompt.count)")
        }
        if let negativePrompt, negativePrompt.count > limits.maxPromptCharacters {
            throw StudioRequestError.invalid("negative_prompt: at most \(limits.maxPromptCharacters) characters")
        }
        var options = GenerationOptions()
        if let sampler {
            guard let kind = SamplerKind(rawValue: sampler) ?? SamplerKind.aliases[sampler] else {
                throw StudioRequestError.invalid("sampler: one of \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(sampler)\"")
            }
            options.sampler = kind
        }
        options.steps = try checked("steps", steps, in: 1...limits.maxSteps) ?? options.steps
        options.guidance = try checked("guidance", guidance, in: 0...limits.maxGuidance) ?? options.guidance
        options.imagesPerPrompt = try checked("num_images", numImages, in: 1...limits.maxImages) ?? options.imagesPerPrompt
        if let layout {
            guard let mode = LayoutMode(rawValue: layout) else {
                throw StudioRequestError.invalid("layout: sampled or typical, got \"\(layout)\"")
            }
            options.layout = mode
        }
        options.seed = seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        let negative = negativePrompt?.trimmingCharacters(in: .whitespacesAndNewlines)
        options.negativePrompt = negative?.isEmpty == false ? negative : nil
        do { try options.validate(trainTimesteps: trainTimesteps) } catch {
            throw StudioRequestError.invalid("\(error)")
        }
        var given: Layout?
        if let boxes, !boxes.isEmpty {
            guard boxes.count <= Layout.maxObjects else {
                throw StudioRequestError.invalid("boxes: at most \(Layout.maxObjects), got \(boxes.count)")
            }
            for object in boxes {
                guard object.box.count == 4, object.box.allSatisfy({ $0.isFinite && (0...1).contains($0) }),
                    object.box[0] < object.box[2], object.box[1] < object.box[3]
                else { throw StudioRequestError.invalid("boxes: each box is [x0, y0, x1, y1] in [0, 1] with x0 < x1 and y0 < y1") }
                guard !object.phrase.trimmingCharacters(in: .whitespaces).isEmpty, object.phrase.count <= limits.maxPromptCharacters else {
                    throw StudioRequestError.invalid("boxes: each box needs a phrase of the prompt")
                }
            }
            given = Layout(objects: boxes)
        }
        return GenerationJobSpec(prompt: prompt, options: options, layout: given)
    }
}

/// A video edit as the page sends it: the prompts and settings as query parameters, the clip
/// (anything ffmpeg reads) as the body. Missing settings take `edit-video`'s defaults.
public struct VideoEditRequest: Sendable, Equatable {
    public var sourcePrompt: String
    public var targetPrompt: String
    public var frames: Int?
    public var steps: Int?
    public var tuneSteps: Int?
    public var guidance: Double?
    public var seed: UInt64?
    public var method: String?

    public init(sourcePrompt: String, targetPrompt: String) {
        self.sourcePrompt = sourcePrompt
        self.targetPrompt = targetPrompt
    }

    /// Reads the query parameters `source_prompt`, `target_prompt`, `frames`, `steps`,
    /// `tune_steps`, `guidance`, `seed` and `method`; a number that does not parse is an error.
    public init(query: [String: String]) throws {
        sourcePrompt = query["source_prompt"] ?? ""
        targetPrompt = query["target_prompt"] ?? ""
        func number<T: LosslessStringConvertible>(_ key: String) throws -> T? {
            guard let text = query[key] else { return nil }
            guard let value = T(text) else { throw StudioRequestError(status: 400, message: "\(key): not a number: \(text.prefix(40))") }
            return value
        }
        frames = try number("frames")
        steps = try number("steps")
        tuneSteps = try number("tune_steps")
        guidance = try number("guidance")
        seed = try number("seed")
        method = query["method"]
    }

    /// Checks the settings against `limits`, naming the first bad one.
    public func validated(limits: StudioLimits, trainTimesteps: Int) throws -> (VideoEditOptions, frames: Int) {
        for (name, prompt) in [("source_prompt", sourcePrompt), ("target_prompt", targetPrompt)] {
            let trimmed = prompt.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty else { throw StudioRequestError.invalid("\(name): describe the video") }
            guard trimmed.count <= limits.maxPromptCharacters else {
                throw StudioRequestError.invalid("\(name): at most \(limits.maxPromptCharacters) characters")
            }
        }
        var options = VideoEditOptions()
        let frames = try checked("frames", self.frames, in: 1...limits.maxFrames) ?? 8
        options.steps = try checked("steps", steps, in: 1...limits.maxSteps) ?? options.steps
        options.tuneSteps = try checked("tune_steps", tuneSteps, in: 0...limits.maxTuneSteps) ?? options.tuneSteps
        options.guidance = try checked("guidance", guidance, in: 0...limits.maxGuidance) ?? options.guidance
        if let method {
            guard let m = VideoEditMethod(rawValue: method) else {
                throw StudioRequestError.invalid("method: contextdiff, fatezero or tuneavideo, got \"\(method.prefix(40))\"")
            }
            options.method = m
        }
        options.seed = seed ?? 0
        do { try options.validate(trainTimesteps: trainTimesteps) } catch { throw StudioRequestError.invalid("\(error)") }
        return (options, frames)
    }
}

/// `value` when it is in `range` (a 422 naming `name` otherwise); nil when not given.
func checked<T: Comparable & CustomStringConvertible>(_ name: String, _ value: T?, in range: ClosedRange<T>) throws -> T? {
    guard let value else { return nil }
    guard range.contains(value) else { throw StudioRequestError.invalid("\(name): \(range.lowerBound) to \(range.upperBound), got \(value)") }
    return value
}
