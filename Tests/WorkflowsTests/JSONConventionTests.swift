import ContextDiff
import Datasets
import Evaluation
import Foundation
import NN
import Testing
import Torch
import Workflows

/// One JSON convention: every key the project writes (recipes, model configs, options, reports)
/// is snake_case. A wrong key is a silent default on the next load, so this is checked on what
/// the encoders actually write.
@Suite("JSON: snake_case keys everywhere")
struct JSONConventionTests {
    /// Every key of a JSON document, recursively, with its path.
    func keys(_ value: Any, path: String = "") -> [String] {
        switch value {
        case let object as [String: Any]:
            return object.flatMap { key, child in [path + key] + keys(child, path: path + key + ".") }
        case let array as [Any]:
            return array.flatMap { keys($0, path: path) }
        default:
            return []
        }
    }

    func offending<T: Encodable>(_ value: T) throws -> [String] {
        let data = try JSONEncoder().encode(value)
        let object = try JSONSerialization.jsonObject(with: data)
        return keys(object).filter { path in
            let key = path.split(separator: ".").last.map(String.init) ?? path
            return key.contains { $0.isUppercase || $0 == "-" || $0 == " " } && Int(key) == nil
        }
    }

    @Test func recipesConfigsAndOptionsWriteSnakeCase() throws {
        var recipe = TrainingRecipe()
        recipe.unet = .shapesDefault
        recipe.adapter = .shapesDefault
        #expect(try offending(recipe) == [])
        #expect(try offending(UNetConfig.shapesDefault) == [])
        #expect(try offending(ContextAdapterConfig.shapesDefault) == [])
        #expect(try offending(GenerationOptions()) == [])
        #expect(try offending(VideoEditOptions()) == [])
        #expect(try offending(ModelIndex(contextual: true, textEncoder: TextEncoderSpec())) == [])
        #expect(try offending(NoiseScheduleConfig()) == [])
        #expect(try offending(EvaluatorTrainingConfig()) == [])
        #expect(try offending(ContrastiveTrainingConfig()) == [])
        #expect(try offending(AttributeEvaluatorConfig()) == [])
        #expect(try offending(WarmupCosineSchedule(peak: 1, warmupSteps: 2, totalSteps: 3)) == [])
        let box = BoundingBox(minX: 1, minY: 2, maxX: 3, maxY: 4)
        let scene = Scene(imageSize: 32, objects: [SceneObject(shape: .circle, color: .red, size: .small, bbox: box)], relation: nil)
        #expect(try offending(scene) == [])
        #expect(try offending(DetectedScene(scene)) == [])
    }

    /// Scenes and boxes in reports and exported metadata written before the convention still load.
    @Test func oldCamelCaseScenesStillLoad() throws {
        let old = #"{"imageSize": 32, "objects": [{"shape": "circle", "color": "red", "size": "small", "center": {"x": 2, "y": 3}, "bbox": {"minX": 1, "minY": 2, "maxX": 3, "maxY": 4}}]}"#
        let scene = try JSONDecoder().decode(Scene.self, from: Data(old.utf8))
        #expect(scene.imageSize == 32 && scene.objects[0].bbox == BoundingBox(minX: 1, minY: 2, maxX: 3, maxY: 4) && scene.relation == nil)
        #expect(try JSONDecoder().decode(Scene.self, from: JSONEncoder().encode(scene)) == scene)
        let detected = try JSONDecoder().decode(DetectedScene.self, from: Data(#"{"imageSize": 16, "objects": []}"#.utf8))
        #expect(detected.imageSize == 16)
    }

    /// Files written before the convention still load.
    @Test func oldCamelCaseVideoEditOptionsStillLoad() throws {
        let old = #"{"method": "fatezero", "tuneSteps": 7, "tuneLearningRate": 0.002, "frameAttention": "per-frame", "inversionEvaluation": "target"}"#
        let options = try JSONDecoder().decode(VideoEditOptions.self, from: Data(old.utf8))
        #expect(options.method == .fatezero && options.tuneSteps == 7 && options.tuneLearningRate == 0.002)
        #expect(options.frameAttention == .perFrame && options.inversionEvaluation == .target)
        #expect(options.steps == VideoEditOptions().steps)
        let again = try JSONDecoder().decode(VideoEditOptions.self, from: JSONEncoder().encode(options))
        #expect(again == options)
    }
}
