import ContextDiff
import Datasets
import Foundation
import NN
import Torch

/// The configuration of an ``AttributeEvaluator`` (its `config.json`).
public struct AttributeEvaluatorConfig: Codable, Sendable, Equatable {
    public var format = "contextdiff-attribute-evaluator"
    public var trunk = ConvTrunkConfig()
    /// Hidden width of the object-count head.
    public var countHidden = 64
    /// How the weights were trained (provenance; not needed to run the model).
    public var training: EvaluatorTrainingConfig?

    public init() {}

    enum CodingKeys: String, CodingKey { case format, trunk, countHidden = "count_hidden", training }
}

/// The outputs of every head for a batch; dense maps are flattened over the `G × G` cells of
/// the trunk's last map (cell `c` is row `c / G`, column `c % G`).
public struct EvaluatorLogits {
    /// `[B, 2]`: one or two objects.
    public var count: Tensor
    /// `[B, G²]`: where object centers are (a softmax over cells).
    public var objectness: Tensor
    /// `[B, 4, G²]`, `[B, 6, G²]`, `[B, 2, G²]`: the shape, color and size of an object
    /// centered in each cell (classes in the enums' `allCases` order).
    public var shape: Tensor
    public var color: Tensor
    public var size: Tensor
    /// `[B, 2, G²]`: the center's (x, y) position inside its cell, before a sigmoid.
    public var offset: Tensor
}

/// The independent evaluator of the benchmark (DESIGN §6): a small fully convolutional detector
/// trained only on ground-truth renders (never on generated images) that reads every labelled
/// attribute back from pixels — how many objects there are and, for each, its shape, color,
/// size and bounding-box center (CenterNet-style: each cell of a coarse grid predicts whether
/// an object is centered there and, if so, its attributes and the center's offset). Relations
/// follow from the centers (``DetectedScene``). The pooled trunk features (``features(_:)``)
/// feed the Fréchet distance.
public final class AttributeEvaluator: Module, ConfiguredModel {
    public let config: AttributeEvaluatorConfig
    public let trunk: ConvTrunk
    @CheckpointKey("head_block") public private(set) var headBlock: ConvNormAct
    /// 1×1 convolution to objectness (1), shape (4), color (6), size (2), offset (2).
    @CheckpointKey("dense_head") public private(set) var denseHead: Conv2d
    @CheckpointKey("count_hidden") public private(set) var countHidden: Linear
    @CheckpointKey("count_out") public private(set) var countOut: Linear

    static let headChannels = 1 + ObjectShape.allCases.count + ObjectColor.allCases.count + ObjectSize.allCases.count + 2

    public init(_ config: AttributeEvaluatorConfig) throws {
        self.config = config
        trunk = try ConvTrunk(config.trunk)
        let c = config.trunk.mapChannels
        _headBlock.wrappedValue = try ConvNormAct(c, c, groups: config.trunk.normGroups)
        _denseHead.wrappedValue = try Conv2d(c, Self.headChannels, kernel: 1)
        _countHidden.wrappedValue = try Linear(config.trunk.featureDim, config.countHidden)
        _countOut.wrappedValue = try Linear(config.countHidden, 2)
        super.init()
    }

    public var imageSize: Int { config.trunk.imageSize }
    /// Cells per side of the detection grid.
    public var gridSize: Int { config.trunk.mapSize }

    /// The penultimate features `[B, featureDim]` of images `[B, 3, S, S]` in [-1, 1]: the
    /// trunk's last map average-pooled to a small grid and flattened.
    public func features(_ images: Tensor) throws -> Tensor { try trunk.features(images) }

    /// Every head's output and the features.
    public func forward(_ images: Tensor) throws -> (logits: EvaluatorLogits, features: Tensor) {
        let map = try trunk.map(images)
        let features = try trunk.features(fromMap: map)
        let dense = try denseHead(headBlock(map)).flattened(from: 2)  // [B, 15, G²]
        let sizes = [1, ObjectShape.allCases.count, ObjectColor.allCases.count, ObjectSize.allCases.count, 2]
        let parts = try dense.split(sizes: sizes, dim: 1)
        let logits = EvaluatorLogits(
            count: try countOut(countHidden(features).silu()), objectness: try parts[0].squeezed(1),
            shape: parts[1], color: parts[2], size: parts[3], offset: parts[4])
        return (logits, features)
    }

    public func logits(_ images: Tensor) throws -> EvaluatorLogits { try forward(images).logits }

    /// Reads the scenes of images `[B, 3, S, S]` in [-1, 1] (evaluation mode, no gradients).
    public func detect(_ images: Tensor) throws -> [DetectedScene] {
        try detectWithFeatures(images).scenes
    }

    /// The scenes and the penultimate features `[B, featureDim]` (float32) in one pass.
    ///
    /// Decoding: the count head says one or two; the first object is the cell with the highest
    /// objectness, the second the highest among cells not adjacent to the first (two centers
    /// are always more than a cell apart).
    public func detectWithFeatures(_ images: Tensor) throws -> (scenes: [DetectedScene], features: Tensor) {
        eval()
        return try Torch.withNoGrad {
            let (l, f) = try forward(images)
            let b = try images.size(0), cells = gridSize * gridSize
            func floats(_ t: Tensor) throws -> [Float] { try t.contiguous().to(.float32).scalars(as: Float.self) }
            func classes(_ t: Tensor) throws -> [Int] { try t.argmax(dim: 1).to(.int64).scalars(as: Int64.self).map(Int.init) }
            let count = try classes(l.count)
            let objectness = try floats(l.objectness)
            let shape = try classes(l.shape), color = try classes(l.color), size = try classes(l.size)  // [B·G²]
            let offset = try floats(l.offset.sigmoid())  // [B, 2, G²]
            let cellSide = Double(imageSize) / Double(gridSize)
            var scenes: [DetectedScene] = []
            for i in 0..<b {
                var chosen: [Int] = []
                for _ in 0...count[i] {
                    var best = -1
                    for c in 0..<cells {
                        let adjacent = chosen.contains { abs($0 / gridSize - c / gridSize) <= 1 && abs($0 % gridSize - c % gridSize) <= 1 }
                        if adjacent { continue }
                        if best < 0 || objectness[i * cells + c] > objectness[i * cells + best] { best = c }
                    }
                    if best >= 0 { chosen.append(best) }
                }
                let objects = chosen.map { c in
                    let k = i * cells + c
                    let x = (Double(c % gridSize) + Double(offset[(i * 2) * cells + c])) * cellSide
                    let y = (Double(c / gridSize) + Double(offset[(i * 2 + 1) * cells + c])) * cellSide
                    return DetectedObject(
                        shape: ObjectShape.allCases[shape[k]], color: ObjectColor.allCases[color[k]],
                        size: ObjectSize.allCases[size[k]], center: Point(x: x, y: y))
                }
                scenes.append(DetectedScene(imageSize: imageSize, objects: objects))
            }
            return (scenes, f)
        }
    }
}

extension AttributeEvaluator {
    /// Loads a model folder written by ``ModelFolder/save(_:to:metadata:)`` (config.json +
    /// model.safetensors), checking every tensor.
    public static func load(from directory: URL) throws -> AttributeEvaluator {
        let config = try ModelFolder.config(AttributeEvaluatorConfig.self, in: directory)
        guard config.format == AttributeEvaluatorConfig().format else {
            throw CheckpointError.invalidConfig(
                path: directory.appendingPathComponent(ModelFolder.configName).path,
                reason: "format '\(config.format)' is not an attribute evaluator")
        }
        let model = try ModelFolder.load(AttributeEvaluator.self, from: directory)
        model.eval()
        return model
    }
}
