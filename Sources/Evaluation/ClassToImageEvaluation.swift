import ContextDiff
import Datasets
import Foundation
import Torch

/// Class-to-image as the evaluator sees it: `perClass` images of every class of a
/// class-conditional model (names "colour shape"), scored for class accuracy (one object of the
/// class's colour and shape), and against as many real renders of each class for the Fréchet
/// distance, precision and recall of the evaluator's features and the spread of object centres
/// and sizes across seeds.
public struct ClassToImageEvaluation {
    public struct Report: Codable, Equatable, Sendable {
        public var model: String
        public var context: Bool
        public var classes: Int
        public var perClass: Int
        /// One object of the class's colour and shape.
        public var classAccuracy: Double
        public var colourAccuracy: Double
        public var shapeAccuracy: Double
        public var frechetDistance: Double
        public var diversity: DiversitySummary
        public var seconds: Double

        enum CodingKeys: String, CodingKey {
            case model, context, classes, diversity, seconds
            case perClass = "per_class", classAccuracy = "class_accuracy", colourAccuracy = "colour_accuracy"
            case shapeAccuracy = "shape_accuracy", frechetDistance = "frechet_distance"
        }

        public func table() -> String {
            var line = String(
                format: "%@%@: class accuracy %.1f %% (colour %.1f %%, shape %.1f %%) over %d classes × %d; Fréchet %.3f",
                model, context ? "" : " (r_φ off)", 100 * classAccuracy, 100 * colourAccuracy, 100 * shapeAccuracy, classes,
                perClass, frechetDistance)
            if let p = diversity.precision, let r = diversity.recall { line += String(format: "; precision %.3f recall %.3f", p, r) }
            if let s = diversity.spread, let real = diversity.realSpread {
                line += String(format: "; centre spread %.2f px (real %.2f), size CV %.3f (real %.3f)", s.centreSpread, real.centreSpread, s.sizeCV, real.sizeCV)
            }
            return line
        }
    }

    public let pipeline: ClassToImagePipeline
    public let evaluator: AttributeEvaluator

    public init(pipeline: ClassToImagePipeline, evaluator: AttributeEvaluator) throws {
        try evaluator.checkReads(imagesOf: pipeline.model)
        self.pipeline = pipeline
        self.evaluator = evaluator
    }

    /// The benchmark prompt of a class name "colour shape" (nil when it is not one).
    public static func spec(ofClass name: String) -> PromptSpec? {
        let words = name.lowercased().split(separator: " ").map(String.init)
        guard words.count == 2, let color = ObjectColor(rawValue: words[0]), let shape = ObjectShape(rawValue: words[1]) else { return nil }
        return PromptSpec(text: "a \(name)", kind: .singleObject, objects: [PromptObject(shape: shape, color: color)], relation: nil)
    }

    /// Generates `perClass` images of every class (seeds `options.seed + class index`).
    public func run(
        perClass: Int, options: GenerationOptions, modelDescription: String, progress: ProgressHandler = { _ in true }
    ) throws -> (report: Report, images: [RGBImage]) {
        guard perClass >= 2 else { throw EvaluationError.invalidInput("give at least 2 images per class (spread and recall need them)") }
        let names = pipeline.classes.config.names
        let specs = try names.map { name -> PromptSpec in
            guard let spec = Self.spec(ofClass: name) else {
                throw EvaluationError.invalidInput("class '\(name)' is not a benchmark class ('colour shape')")
            }
            return spec
        }
        let started = Date()
        var options = options
        options.imagesPerPrompt = perClass
        var images: [RGBImage] = [], scenes: [DetectedScene] = [], features: [Tensor] = []
        for (label, _) in names.enumerated() {
            var o = options
            o.seed = options.seed &+ UInt64(label)
            let rgb = try RGBImage.images(fromBatch: pipeline.generate(labels: [label], options: o).images)
            let (detected, f) = try evaluator.detectWithFeatures(RGBImage.batch(rgb))
            images += rgb
            scenes += detected
            features.append(f)
            guard progress(ProgressUpdate(phase: "evaluating", completed: images.count, total: names.count * perClass)) else {
                throw SamplingError.cancelled(completedSteps: images.count, totalSteps: names.count * perClass)
            }
        }
        var config = SyntheticBenchmarkConfig()
        config.imageSize = pipeline.model.unet.config.sampleSize
        let real = try SyntheticBenchmark(config).renders(of: specs, count: perClass, seed: 0xC1A5_5E5)
        let (realScenes, realFeatures) = try evaluator.detectWithFeatures(real)
        var right = 0, colour = 0, shape = 0
        for (k, spec) in specs.enumerated() {
            let object = spec.objects[0]
            for scene in scenes[(k * perClass)..<((k + 1) * perClass)] {
                if scene.objects.count == 1, scene.objects[0].color == object.color, scene.objects[0].shape == object.shape { right += 1 }
                if scene.objects.contains(where: { $0.color == object.color }) { colour += 1 }
                if scene.objects.contains(where: { $0.shape == object.shape }) { shape += 1 }
            }
        }
        let generated = try Tensor.cat(features)
        let fd = try FrechetDistance.distance(GaussianStatistics(features: generated), GaussianStatistics(features: realFeatures))
        let (precision, recall) = try PrecisionRecall.compute(real: realFeatures, generated: generated)
        let group = { (all: [DetectedScene]) in specs.indices.map { k in Array(all[(k * perClass)..<((k + 1) * perClass)]) } }
        let diversity = DiversitySummary(
            precision: precision, recall: recall, spread: LayoutSpread.measure(prompts: specs, scenes: group(scenes)),
            realSpread: LayoutSpread.measure(prompts: specs, scenes: group(realScenes)))
        let total = Double(images.count)
        let report = Report(
            model: modelDescription, context: options.useContext && pipeline.model.adapter != nil, classes: names.count,
            perClass: perClass, classAccuracy: Double(right) / total, colourAccuracy: Double(colour) / total,
            shapeAccuracy: Double(shape) / total, frechetDistance: fd, diversity: diversity, seconds: Date().timeIntervalSince(started))
        return (report, images)
    }
}
