import ContextDiff
import Datasets
import Foundation
import Torch

/// Layout-to-image as the evaluator sees it: for benchmark scenes the model never saw (the
/// held-out split's colour–shape combinations), generate from the scene's caption with the
/// scene's boxes as the layout, and count the objects drawn with the requested colour and shape
/// whose centre lies within ``tolerance`` pixels of the requested box's centre.
///
/// The same count on the real renders of those scenes is reported beside it: it is the
/// evaluator's own ceiling (its centre estimate has an error too). And the same scenes generated
/// from their captions alone (the layout the prior samples) show what the given layout changes.
public struct LayoutToImageEvaluation {
    /// Centre tolerance in pixels (issue 18's bar: 3 px at 32×32).
    public static let tolerance = 3.0

    /// Counts of one group of objects.
    public struct Counts: Codable, Equatable, Sendable {
        public var objects = 0
        /// Right colour and shape, anywhere.
        public var attributes = 0
        /// Right colour and shape, centre within the tolerance.
        public var placed = 0

        public init() {}

        public var attributeRate: Double { objects == 0 ? 0 : Double(attributes) / Double(objects) }
        public var placedRate: Double { objects == 0 ? 0 : Double(placed) / Double(objects) }

        static func + (a: Counts, b: Counts) -> Counts {
            var c = Counts()
            c.objects = a.objects + b.objects
            c.attributes = a.attributes + b.attributes
            c.placed = a.placed + b.placed
            return c
        }

        enum CodingKeys: String, CodingKey {
            case objects, attributes, placed
        }
    }

    /// One source of images scored against the requested layouts.
    public struct Row: Codable, Equatable, Sendable {
        /// "layout" (generated with the scene's boxes), "caption only" (the prior's layout),
        /// "real renders".
        public var name: String
        public var oneObject = Counts()
        public var twoObjects = Counts()
        /// Median distance (px) from each requested centre to the nearest detected object of the
        /// requested colour and shape (objects not found at all are left out).
        public var medianCentreError: Double?

        public var all: Counts { oneObject + twoObjects }

        enum CodingKeys: String, CodingKey {
            case name, all
            case oneObject = "one_object", twoObjects = "two_objects", medianCentreError = "median_centre_error"
        }

        public init(name: String) { self.name = name }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            oneObject = try c.decode(Counts.self, forKey: .oneObject)
            twoObjects = try c.decode(Counts.self, forKey: .twoObjects)
            medianCentreError = try c.decodeIfPresent(Double.self, forKey: .medianCentreError)
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(all, forKey: .all)
            try c.encode(oneObject, forKey: .oneObject)
            try c.encode(twoObjects, forKey: .twoObjects)
            try c.encodeIfPresent(medianCentreError, forKey: .medianCentreError)
        }
    }

    public struct Report: Codable, Equatable, Sendable {
        public var scenes: Int
        public var split: Split
        public var tolerancePixels: Double
        public var rows: [Row]

        enum CodingKeys: String, CodingKey {
            case scenes, split, rows
            case tolerancePixels = "tolerance_pixels"
        }

        /// The report for a person: one line per row.
        public func table() -> String {
            func pct(_ c: Counts) -> String {
                String(format: "%5.1f %% (%d/%d)", 100 * c.placedRate, c.placed, c.objects)
            }
            var lines = [
                "layout-to-image, \(scenes) \(split.rawValue) scenes: objects of the requested colour and shape within \(tolerancePixels) px of their box's centre",
                "  source          all                   one object            two objects           right attributes   median centre error",
            ]
            for r in rows {
                let name: String = r.name.padding(toLength: 14, withPad: " ", startingAt: 0)
                let counts: String = [pct(r.all), pct(r.oneObject), pct(r.twoObjects)].joined(separator: "   ")
                let attributes = String(format: "   %5.1f %%", 100 * r.all.attributeRate)
                let error = r.medianCentreError.map { String(format: "            %.2f px", $0) } ?? ""
                lines.append("  \(name)  \(counts)\(attributes)\(error)")
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

    /// The layout of a benchmark scene: each object named by the caption's words for it (the
    /// size word when the caption states sizes, the colour, the shape), its box in fractions.
    public static func layout(of annotation: SceneAnnotation) -> Layout {
        let side = Double(annotation.scene.imageSize)
        return Layout(objects: annotation.scene.objects.map { o in
            let words = (annotation.style.mentionsSize ? [o.size.rawValue] : []) + [o.color.rawValue, o.shape.rawValue]
            return Layout.Object(
                phrase: words.joined(separator: " "),
                box: [o.bbox.minX / side, o.bbox.minY / side, o.bbox.maxX / side, o.bbox.maxY / side])
        })
    }

    /// Scores detections against the scenes' objects (one detection per scene).
    public static func score(_ name: String, scenes: [Scene], detected: [DetectedScene]) -> Row {
        var row = Row(name: name)
        var errors: [Double] = []
        for (scene, found) in zip(scenes, detected) {
            var counts = Counts()
            for o in scene.objects {
                counts.objects += 1
                let candidates = found.objects.filter { $0.color == o.color && $0.shape == o.shape }
                guard let nearest = candidates.map({ $0.center.distance(to: o.bbox.center) }).min() else { continue }
                counts.attributes += 1
                errors.append(nearest)
                if nearest <= tolerance { counts.placed += 1 }
            }
            if scene.objects.count == 1 { row.oneObject = row.oneObject + counts } else { row.twoObjects = row.twoObjects + counts }
        }
        errors.sort()
        let n = errors.count
        row.medianCentreError = n == 0 ? nil : n % 2 == 1 ? errors[n / 2] : (errors[n / 2 - 1] + errors[n / 2]) / 2
        return row
    }

    /// Generates `count` scenes of `split` (indices 0..<count) with and without their layouts,
    /// `batchSize` at a time (seeds `options.seed + start`), and scores both and the real renders.
    /// Returns the report and the images generated with the layouts.
    public func run(
        count: Int, split: Split = .heldout, options: GenerationOptions, batchSize: Int = 16,
        progress: ProgressHandler = { _ in true }
    ) throws -> (report: Report, images: [RGBImage]) {
        guard count > 0 else { throw EvaluationError.invalidInput("no scenes to evaluate") }
        guard batchSize > 0 else { throw EvaluationError.invalidInput("batch size must be positive") }
        var options = options
        options.imagesPerPrompt = 1
        var config = SyntheticBenchmarkConfig()
        config.imageSize = pipeline.model.unet.config.sampleSize
        let benchmark = try SyntheticBenchmark(config)
        let annotations = (0..<count).map { benchmark.annotation(index: $0, split: split) }
        var withLayout: [RGBImage] = [], captionOnly: [DetectedScene] = [], laid: [DetectedScene] = []
        for start in stride(from: 0, to: count, by: batchSize) {
            let chunk = Array(annotations[start..<min(count, start + batchSize)])
            var o = options
            o.seed = options.seed &+ UInt64(start)
            let captions = chunk.map(\.caption)
            let images = try pipeline.generate(prompts: captions, options: o, layouts: chunk.map(Self.layout(of:))).images
            let rgb = try RGBImage.images(fromBatch: images)
            withLayout += rgb
            laid += try evaluator.detect(RGBImage.batch(rgb))
            let plain = try RGBImage.images(fromBatch: pipeline.generate(prompts: captions, options: o).images)
            captionOnly += try evaluator.detect(RGBImage.batch(plain))
            guard progress(ProgressUpdate(phase: "evaluating", completed: withLayout.count, total: count)) else {
                throw SamplingError.cancelled(completedSteps: withLayout.count, totalSteps: count)
            }
        }
        var real: [DetectedScene] = []
        for start in stride(from: 0, to: count, by: 64) {
            let renders = annotations[start..<min(count, start + 64)].map { benchmark.render($0.scene) }
            real += try evaluator.detect(RGBImage.batch(renders))
        }
        let scenes = annotations.map(\.scene)
        let report = Report(
            scenes: count, split: split, tolerancePixels: Self.tolerance,
            rows: [
                Self.score("layout", scenes: scenes, detected: laid),
                Self.score("caption only", scenes: scenes, detected: captionOnly),
                Self.score("real renders", scenes: scenes, detected: real),
            ])
        return (report, withLayout)
    }
}
