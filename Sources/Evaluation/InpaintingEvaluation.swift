import ContextDiff
import Datasets
import Foundation
import Torch

/// Inpainting as the evaluator sees it (issue 23's protocol): for benchmark scenes, render the
/// scene, pick one object, give it a colour the scene does not have, and inpaint that object's
/// box (grown by ``margin`` pixels to cover its anti-aliased edge) with the edited scene's
/// caption and layout. An edit lands when the evaluator finds an object of the new colour and
/// the old shape within ``LayoutToImageEvaluation/tolerance`` px of the box's centre; the
/// pixels outside the mask are compared with the input.
public struct InpaintingEvaluation {
    /// Pixels added on every side of the object's box for the mask.
    public static let margin = 1.5

    /// One edit: the scene, the edited scene and the mask box (fractions of the side).
    public struct Edit: Sendable {
        public var source: SceneAnnotation
        public var edited: SceneAnnotation
        public var object: Int
        public var box: [Double]
    }

    public struct Row: Codable, Equatable, Sendable {
        /// "ContextDiff" or "r_φ ≡ 0" (the same model sampled without its adapter).
        public var name: String
        public var edits = 0
        /// The new colour and the old shape at the box.
        public var landed = 0
        /// The new colour anywhere in the image.
        public var newColour = 0
        /// Two-object scenes whose other object is still detected with its colour and shape.
        public var otherKept = 0
        public var twoObjectEdits = 0
        /// The largest change of a kept pixel over all edits, in 8-bit levels.
        public var maxKeptChange = 0
        /// Edits whose kept pixels all stay within 2 levels of the input.
        public var keptWithin2 = 0

        public init(name: String) { self.name = name }

        public var landedRate: Double { edits == 0 ? 0 : Double(landed) / Double(edits) }

        enum CodingKeys: String, CodingKey {
            case name, edits, landed
            case newColour = "new_colour", otherKept = "other_kept", twoObjectEdits = "two_object_edits"
            case maxKeptChange = "max_kept_change", keptWithin2 = "kept_within_2"
        }
    }

    public struct Report: Codable, Equatable, Sendable {
        public var split: Split
        public var rows: [Row]

        public func table() -> String {
            var lines = [
                "inpainting, \(rows.first?.edits ?? 0) \(split.rawValue) scenes: one object's box repainted in a new colour",
                "  sampling       new colour at the box    new colour anywhere   other object kept   kept pixels within 2/255   max change",
            ]
            for r in rows {
                let name = r.name.padding(toLength: 13, withPad: " ", startingAt: 0)
                let landed = String(format: "%5.1f %% (%d/%d)", 100 * r.landedRate, r.landed, r.edits)
                let anywhere = "\(r.newColour)/\(r.edits)", other = "\(r.otherKept)/\(r.twoObjectEdits)"
                lines.append("  \(name)  \(landed)       \(anywhere)                \(other)              \(r.keptWithin2)/\(r.edits)                     \(r.maxKeptChange)")
            }
            return lines.joined(separator: "\n")
        }
    }

    public let pipeline: TextToImagePipeline
    public let evaluator: AttributeEvaluator

    public init(pipeline: TextToImagePipeline, evaluator: AttributeEvaluator) throws {
        try evaluator.checkReads(imagesOf: pipeline.model)
        self.pipeline = pipeline
        self.evaluator = evaluator
    }

    /// The edit of scene `annotation` (deterministic): object `index % count` gets the first
    /// colour after its own (in ``ObjectColor/allCases`` order) that no object of the scene has.
    public static func edit(of annotation: SceneAnnotation, index: Int) -> Edit {
        let scene = annotation.scene
        let k = index % scene.objects.count
        let colours = ObjectColor.allCases
        let used = Set(scene.objects.map(\.color))
        let own = colours.firstIndex(of: scene.objects[k].color)!
        let colour = (1..<colours.count).map { colours[(own + $0) % colours.count] }.first { !used.contains($0) }!
        var edited = annotation
        edited.scene.objects[k].color = colour
        edited.caption = Captions.caption(for: edited.scene, style: annotation.style)
        let side = Double(scene.imageSize), b = scene.objects[k].bbox
        let box = [b.minX - margin, b.minY - margin, b.maxX + margin, b.maxY + margin].map { min(1, max(0, $0 / side)) }
        return Edit(source: annotation, edited: edited, object: k, box: box)
    }

    /// Inpaints `count` scenes of `split`, with and without r_φ, `batchSize` at a time (seeds
    /// `options.seed + start`). Returns the report and, per edit, the input and both results.
    public func run(
        count: Int, split: Split = .heldout, options: GenerationOptions, batchSize: Int = 16,
        progress: ProgressHandler = { _ in true }
    ) throws -> (report: Report, images: [RGBImage]) {
        guard count > 0 else { throw EvaluationError.invalidInput("no scenes to inpaint") }
        guard batchSize > 0 else { throw EvaluationError.invalidInput("batch size must be positive") }
        let size = pipeline.model.unet.config.sampleSize
        var config = SyntheticBenchmarkConfig()
        config.imageSize = size
        let benchmark = try SyntheticBenchmark(config)
        let edits = (0..<count).map { Self.edit(of: benchmark.annotation(index: $0, split: split), index: $0) }
        let variants: [(String, Bool)] = pipeline.model.adapter == nil ? [("r_φ ≡ 0 model", false)] : [("ContextDiff", true), ("r_φ ≡ 0", false)]
        var rows = variants.map { Row(name: $0.0) }
        var inputs: [RGBImage] = [], outputs: [[RGBImage]] = variants.map { _ in [] }
        for start in stride(from: 0, to: count, by: batchSize) {
            let chunk = Array(edits[start..<min(count, start + batchSize)])
            let renders = chunk.map { benchmark.render($0.source.scene) }
            inputs += renders
            let images = try RGBImage.batch(renders)
            let masks = try Tensor.cat(chunk.map { try ImageStart.boxMask($0.box, size: size) })
            for (v, variant) in variants.enumerated() {
                var o = options
                o.imagesPerPrompt = 1
                o.seed = options.seed &+ UInt64(start)
                o.useContext = variant.1
                let out = try pipeline.generate(
                    prompts: chunk.map(\.edited.caption), options: o,
                    // A model with a layout prior gets the edited scene's layout (it would paint a drawn one otherwise).
                    layouts: pipeline.model.unet.layoutPrior == nil ? nil : chunk.map { LayoutToImageEvaluation.layout(of: $0.edited) },
                    start: ImageStart(image: images, strength: 1, mask: masks)
                ).images
                let rgb = try RGBImage.images(fromBatch: out)
                outputs[v] += rgb
                let detected = try evaluator.detect(RGBImage.batch(rgb))
                for (i, edit) in chunk.enumerated() {
                    score(edit, input: renders[i], output: rgb[i], detected: detected[i], size: size, into: &rows[v])
                }
            }
            guard progress(ProgressUpdate(phase: "evaluating", completed: inputs.count, total: count)) else {
                throw SamplingError.cancelled(completedSteps: inputs.count, totalSteps: count)
            }
        }
        // Per edit: the input, then each variant's result.
        var strip: [RGBImage] = []
        for i in inputs.indices { strip += [inputs[i]] + outputs.map { $0[i] } }
        return (Report(split: split, rows: rows), strip)
    }

    func score(_ edit: Edit, input: RGBImage, output: RGBImage, detected: DetectedScene, size: Int, into row: inout Row) {
        row.edits += 1
        let target = edit.edited.scene.objects[edit.object]
        let newColour = detected.objects.filter { $0.color == target.color }
        if !newColour.isEmpty { row.newColour += 1 }
        if newColour.contains(where: { $0.shape == target.shape && $0.center.distance(to: target.bbox.center) <= LayoutToImageEvaluation.tolerance }) {
            row.landed += 1
        }
        if edit.source.scene.objects.count == 2 {
            row.twoObjectEdits += 1
            let other = edit.source.scene.objects[1 - edit.object]
            if detected.objects.contains(where: { $0.color == other.color && $0.shape == other.shape }) { row.otherKept += 1 }
        }
        var largest = 0
        for y in 0..<size {
            for x in 0..<size {
                let (cx, cy) = ((Double(x) + 0.5) / Double(size), (Double(y) + 0.5) / Double(size))
                if cx >= edit.box[0], cx <= edit.box[2], cy >= edit.box[1], cy <= edit.box[3] { continue }
                let i = (y * size + x) * 3
                for c in 0..<3 { largest = max(largest, abs(Int(input.pixels[i + c]) - Int(output.pixels[i + c]))) }
            }
        }
        row.maxKeptChange = max(row.maxKeptChange, largest)
        if largest <= 2 { row.keptWithin2 += 1 }
    }
}
