import ContextDiff
import Datasets
import Foundation
import NN
import Torch

/// Everything that defines the training of a super-resolution stage, saved as `recipe.json`
/// in the run folder. The defaults are the shipped stage's (docs/TRAINING.md).
public struct SuperResolutionRecipe: Codable, Equatable, Sendable {
    public var unet = EfficientUNetConfig()
    /// The stage's own schedule: cosine (Imagen's choice; a linear schedule leaves too little
    /// signal-free range at high resolution).
    public var schedule = SuperResolutionRecipe.defaultSchedule
    public var training = SuperResolutionRecipe.defaultTraining
    /// The benchmark at the **low** resolution (the base model's); pairs render it again
    /// `unet.factor` times larger.
    public var benchmark = SyntheticBenchmarkConfig()
    /// Distinct training scenes (pairs are rendered on the fly, so this costs no memory).
    public var datasetSize = 20000
    public var maxTokens = 32
    /// The augmentation level the stage samples at by default (``SuperResolutionIndex/samplingNoiseLevel``).
    public var samplingNoiseLevel = 100

    public init() {}

    enum CodingKeys: String, CodingKey {
        case unet, schedule, training, benchmark, datasetSize = "dataset_size", maxTokens = "max_tokens"
        case samplingNoiseLevel = "sampling_noise_level"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = SuperResolutionRecipe()
        unet = try c.decodeIfPresent(EfficientUNetConfig.self, forKey: .unet) ?? d.unet
        schedule = try c.decodeIfPresent(NoiseScheduleConfig.self, forKey: .schedule) ?? d.schedule
        training = try c.decodeIfPresent(SuperResolutionTrainingConfig.self, forKey: .training) ?? d.training
        benchmark = try c.decodeIfPresent(SyntheticBenchmarkConfig.self, forKey: .benchmark) ?? d.benchmark
        datasetSize = try c.decodeIfPresent(Int.self, forKey: .datasetSize) ?? d.datasetSize
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens) ?? d.maxTokens
        samplingNoiseLevel = try c.decodeIfPresent(Int.self, forKey: .samplingNoiseLevel) ?? d.samplingNoiseLevel
    }

    public static var defaultSchedule: NoiseScheduleConfig {
        var s = NoiseScheduleConfig()
        s.betaSchedule = .cosine
        return s
    }

    public static var defaultTraining: SuperResolutionTrainingConfig {
        var t = SuperResolutionTrainingConfig()
        t.training.steps = 3000
        t.training.batchSize = 16
        t.training.learningRate = 5e-4
        t.training.warmupSteps = 100
        t.training.checkpointEvery = 250
        t.cropSize = 64
        t.maxNoiseLevel = 400
        return t
    }

    /// Checks every part and that they agree (the benchmark's size is the stage's low resolution).
    public func validate() throws {
        func fail(_ message: String) -> WorkflowError { .inconsistentRecipe(message) }
        try unet.validate()
        try benchmark.validate()
        try training.validate(for: unet, trainTimesteps: schedule.trainTimesteps)
        guard datasetSize > 0 else { throw fail("dataset_size must be positive, got \(datasetSize)") }
        guard maxTokens > 0 else { throw fail("max_tokens must be positive, got \(maxTokens)") }
        guard benchmark.imageSize == unet.lowResolutionSize else {
            throw fail("benchmark.image_size \(benchmark.imageSize) differs from unet.low_resolution_size \(unet.lowResolutionSize)")
        }
        guard (0..<schedule.trainTimesteps).contains(samplingNoiseLevel) else {
            throw fail("sampling_noise_level \(samplingNoiseLevel) lies outside the schedule's 0..<\(schedule.trainTimesteps)")
        }
    }
}

/// The synthetic benchmark's pairs as the trainer's data (split `train`, indices 0..<count).
public struct SyntheticSuperResolutionSource: SuperResolutionSource {
    public let pairs: SuperResolutionPairs
    public let count: Int
    public var split = Split.train

    public init(pairs: SuperResolutionPairs, count: Int) {
        self.pairs = pairs
        self.count = count
    }

    public func batch(at indices: [Int]) throws -> (low: Tensor, high: Tensor, captions: [String]) {
        try pairs.batch(indices: indices, split: split)
    }

    public var captions: [String] { (0..<count).map { pairs.benchmark.annotation(index: $0, split: split).caption } }
}

/// `contextdiff train-sr` as a library call: the run folder and its recipe, the pairs, the
/// caption table, the stage (fresh, seeded by the recipe), the loop with checkpoints and a
/// validation grid (bicubic | stage | real) per checkpoint, and the loss curve.
public struct SuperResolutionSetup {
    public let recipe: SuperResolutionRecipe
    public let folder: RunFolder

    public init(recipe: SuperResolutionRecipe, folder: RunFolder) {
        self.recipe = recipe
        self.folder = folder
    }

    /// The recipe to train: the run folder's saved one when resuming (its settings win;
    /// `replaced` says whether they differed), saved back atomically.
    public static func prepare(folder: RunFolder, given: SuperResolutionRecipe, resume: Bool) throws
        -> (recipe: SuperResolutionRecipe, replaced: Bool)
    {
        try folder.prepareRecipe(given, resume: resume) { try $0.validate() }
    }

    /// The stage the recipe describes, for a text encoder of `width`, initialised from the
    /// recipe's seed or copied from the stage in `initFrom` (fine-tuning: every tensor must
    /// match), with its provenance.
    public func makeModel(textEncoderWidth width: Int, initFrom: URL? = nil, command: [String]) throws -> SuperResolutionModel {
        var config = recipe.unet
        config.contextDim = width
        config.pooledDim = width
        let unet = try Torch.withSeed(recipe.training.training.seed) { try EfficientUNet(config) }
        var sourceCommand: String?
        if let initFrom {
            let source = try SuperResolutionModel.load(from: initFrom)
            guard source.unet.config == config else {
                throw WorkflowError.inconsistentRecipe("the stage in \(initFrom.path) has another network than the recipe's unet")
            }
            try unet.load(Dictionary(uniqueKeysWithValues: source.unet.namedParameters().map { ($0.0, $0.1) }))
            sourceCommand = source.index.notes["command"]
        }
        var index = SuperResolutionIndex(
            textEncoder: TextEncoderSpec(kind: "minilm", maxTokens: recipe.maxTokens), samplingNoiseLevel: recipe.samplingNoiseLevel)
        index.notes["command"] = Provenance.portableCommand(command)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        index.notes["recipe"] = String(decoding: try encoder.encode(recipe), as: UTF8.self)
        if let sourceCommand { index.notes["init_from_command"] = sourceCommand }
        return try SuperResolutionModel(unet: unet, schedule: NoiseSchedule(recipe.schedule), index: index)
    }

    public func pairs() throws -> SuperResolutionPairs {
        try SuperResolutionPairs(recipe.benchmark, factor: recipe.unet.factor)
    }

    /// Four validation scenes as rows of bicubic | the stage | the real high-resolution render.
    public func writeValidationGrid(step: Int, textEncoder: any TextEncoder) throws {
        let model = try SuperResolutionModel.load(from: folder.model)
        let pairs = try pairs()
        let indices = [0, 1, 2, 3]
        let (low, high, captions) = try pairs.batch(indices: indices, split: .validation)
        let encoder = TextConditionEncoder(textEncoder: textEncoder, maxTokens: model.index.textEncoder.maxTokens)
        let conditional = try encoder.encode(captions).condition
        let unconditional = try encoder.unconditional(count: indices.count)
        let upsampled = try SuperResolutionPipeline(model: model).upsample(
            low, conditional: conditional, unconditional: unconditional, options: SuperResolutionOptions())
        let bicubic = try NoiseAugmentation.upsample(low, to: pairs.highSize)
        var rows: [RGBImage] = []
        for i in indices {
            for t in [bicubic, upsampled, high] { rows.append(try RGBImage(tensor: t.slice(dim: 0, i, i + 1).squeezed(0))) }
        }
        try FileManager.default.createDirectory(at: folder.samples, withIntermediateDirectories: true)
        try RGBImage.grid(rows, columns: 3).writePNG(to: folder.sample(step: step))
    }

    /// The whole run. Progress phase ``TrainingPhase/training``; `notes` gets lines for a person.
    public func train(
        textEncoder: any TextEncoder, command: [String], resume: Bool, initFrom: URL? = nil, writeSamples: Bool = true,
        progress: ProgressHandler = { _ in true }, notes: (String) -> Void = { _ in }
    ) throws {
        let data = SyntheticSuperResolutionSource(pairs: try pairs(), count: recipe.datasetSize)
        let texts = data.captions
        notes("encoding \(Set(texts).count) distinct captions…")
        let limit = recipe.maxTokens
        let captions = try CaptionTable(captions: texts) { batch in
            let e = try textEncoder.encode(batch)
            let kept = min(limit, try e.tokenStates.size(1))
            return try Condition(
                tokens: e.tokenStates.slice(dim: 1, 0, kept), mask: e.attentionMask.slice(dim: 1, 0, kept), pooled: e.pooled)
        }
        let model = try makeModel(textEncoderWidth: textEncoder.width, initFrom: initFrom, command: command)
        let trainer = try SuperResolutionTrainer(
            model: model, config: recipe.training, data: data, captions: captions, runDirectory: folder.url)
        if resume, try trainer.resumeFromLatest() { notes("resumed from step \(trainer.step)") }
        let c = recipe.unet, t = recipe.training
        notes("training the \(c.lowResolutionSize) → \(c.sampleSize) stage: Efficient U-Net \(model.unet.parameterCount) parameters; \(t.training.steps) steps of batch \(t.training.batchSize) on \(t.cropSize.map { "\($0)×\($0) crops" } ?? "whole images")")
        var lastSampled = trainer.step
        try trainer.run(resume: false) { p in
            guard progress(p) else { return false }
            if writeSamples, p.completed % t.training.checkpointEvery == 0 || p.completed == p.total, p.completed != lastSampled {
                lastSampled = p.completed
                do {
                    try writeValidationGrid(step: p.completed, textEncoder: textEncoder)
                } catch {
                    notes("warning: validation samples failed: \(error)")
                }
            }
            return true
        }
        try folder.writeLossCurve()
        notes("done: model at \(folder.model.path)")
    }
}
