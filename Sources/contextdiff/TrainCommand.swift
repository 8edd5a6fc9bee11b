import ArgumentParser
import ContextDiff
import Datasets
import Foundation
import NN
import Torch
import Workflows

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a ContextDiff (or baseline) text-to-image model; resumes from the run folder's last checkpoint."
    )

    @Option(name: .shortAndLong, help: "Run folder (checkpoints, log.jsonl, loss.svg, samples, model/).")
    var output: String

    @Option(help: "A recipe JSON (see docs/TRAINING.md); flags below override it.")
    var config: String?

    @Flag(help: "Train the plain-diffusion baseline (r_φ ≡ 0, no adapter).")
    var baseline = false
    @Option(help: "What the model is conditioned on: text (captions) or class (the benchmark's colour × shape classes, single objects).")
    var condition: ConditionKind?

    @Option(help: "Training steps.") var steps: Int?
    @Option(help: "Global batch size.") var batchSize: Int?
    @Option(help: "Peak learning rate.") var learningRate: Double?
    @Option(help: "Loss weighting λ_t: uniform, p2, min-snr, min-snr:G.") var weighting: String?
    @Option(help: "Seed for initialisation, data order and noise.") var seed: UInt64?
    @Option(help: "Checkpoint every N steps.") var checkpointEvery: Int?
    @Option(help: "Checkpoints kept on disk, oldest deleted first (keep them all for a convergence curve).")
    var keepCheckpoints: Int?
    @Option(help: "Synthetic images to render for training.") var datasetSize: Int?
    @Option(help: "Train on an image folder with metadata.jsonl instead of the synthetic benchmark.")
    var imageFolder: String?
    @Option(help: "U-Net base channels.") var baseChannels: Int?
    @Option(help: "Image size (synthetic data and model).") var imageSize: Int?
    @Flag(help: "Give the U-Net's attention layers a learned position embedding (recipe: unet.positional_embedding).")
    var positionalEmbedding = false
    @Option(help: ArgumentHelp(
        "Layers of a trainable transformer over the text-token states (recipe: unet.text_refiner); 0 turns it off.",
        discussion: "Width 128, 4 heads; its output projections start at zero, so a model fine-tuned with a new refiner starts out computing what its source did."))
    var textRefinerLayers: Int?
    @Flag(help: ArgumentHelp(
        "Add a text-side layout prior (recipe: unet.layout_prior): boxes predicted from the caption, painted into the U-Net's input.",
        discussion: "Synthetic benchmark only: it learns from the dataset's object boxes (docs/TRAINING.md). Its canvas convolution starts at zero, so a model fine-tuned with a new prior starts out computing what its source did."))
    var layoutPrior = false
    @Option(help: ArgumentHelp(
        "Steps of fitting a new layout prior's box predictor alone before the first training step (recipe: training.layout_fit_steps; default 1500).",
        discussion: "Batches of 256 captions with their boxes at learning rate 1e-3 (training.layout_fit_learning_rate); 0 leaves the predictor to the joint steps."))
    var layoutFitSteps: Int?
    @Option(help: ArgumentHelp(
        "Components of a Gaussian mixture over each object's box (recipe: unet.layout_prior.mixture_components): layouts sampled per seed.",
        discussion: "Needs a layout prior. Learnt by likelihood during the prior's fit; with --init-from a model whose prior has no mixture, --steps 0 fits the prior alone (the U-Net is unchanged)."))
    var layoutMixture: Int?
    @Flag(help: ArgumentHelp(
        "Fit only the layout prior's mixture head (recipe: training.layout_fit_mixture_only); the typical boxes and gates stay as they were."))
    var layoutFitMixtureOnly = false
    @Option(help: ArgumentHelp(
        "Weight of the token-grounding loss on the cross-attention (recipe: training.grounding_weight); 0 turns it off.",
        discussion: "Synthetic benchmark only: each object's caption words are pulled towards its box (TokenCompose's token loss; docs/TRAINING.md)."))
    var groundingWeight: Double?
    @Option(help: ArgumentHelp(
        "Draw training timesteps from LO..<HI only, e.g. 400..<1000 (recipe: training.timestep_range).",
        discussion: "For fine-tuning on the noisy end of the process, where a sample's layout is decided."))
    var timestepRange: String?
    @Option(help: "Intra-op threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: ArgumentHelp(
        "Split each step's batch into 1 or 2 parts computed at once, each on its share of --threads.",
        discussion: "Default: 2 on a CPU with two or more threads (both cores stay busy; docs/NOTES.md \"Performance\"), 1 elsewhere. Results differ only by the order of float additions."))
    var shards: Int?
    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var precisionOptions: PrecisionOptions
    @Flag(help: "Start from scratch even if the run folder has checkpoints.") var noResume = false
    @Option(help: ArgumentHelp(
        "Start from a model folder's weights instead of a random initialisation (fine-tuning).",
        discussion: "The U-Net's and, when both have one, the adapter's. Every tensor must match the recipe's networks, except position-embedding tables, a text refiner and a layout prior the source lacks, which keep their initialisation (the identity). Ignored when resuming from a checkpoint."))
    var initFrom: String?
    @Flag(help: "Skip the validation sample grid at checkpoints.") var noSamples = false
    @OptionGroup(title: "Data-parallel training") var distributed: DistributedOptions

    func recipe() throws -> TrainingRecipe {
        var r = TrainingRecipe()
        if let config {
            let url = URL(fileURLWithPath: config)
            guard FileManager.default.fileExists(atPath: url.path) else { throw ValidationError("config file not found: \(config)") }
            do {
                r = try JSONDecoder().decode(TrainingRecipe.self, from: Data(contentsOf: url))
            } catch {
                throw ValidationError("cannot read recipe \(config): \(error)")
            }
        }
        if baseline { r.adapter = nil }
        if let condition { r.condition = condition }
        if let steps { r.training.steps = steps }
        if let batchSize { r.training.batchSize = batchSize }
        if let learningRate {
            r.training.learningRate = learningRate
            r.training.minLearningRate = min(r.training.minLearningRate, learningRate)
        }
        if let weighting { r.training.weighting = try LossWeighting(parsing: weighting) }
        if let seed { r.training.seed = seed; r.benchmark.seed = seed }
        if let checkpointEvery { r.training.checkpointEvery = checkpointEvery }
        let (precision, precisionNote) = precisionOptions.resolved(for: deviceOptions.device, fallback: r.training.precision)
        r.training.precision = precision
        if let precisionNote { note(precisionNote) }
        if let keepCheckpoints { r.training.keepCheckpoints = keepCheckpoints }
        if let datasetSize { r.datasetSize = datasetSize }
        if let imageFolder { r.imageFolder = imageFolder }
        if let baseChannels { r.unet.baseChannels = baseChannels }
        if positionalEmbedding { r.unet.positionalEmbedding = true }
        if let textRefinerLayers {
            guard textRefinerLayers >= 0 else { throw ValidationError("--text-refiner-layers must be 0 or more") }
            if textRefinerLayers == 0 {
                r.unet.textRefiner = nil
            } else {
                var refiner = r.unet.textRefiner ?? TextRefinerConfig(maxTokens: r.maxTokens)
                refiner.layers = textRefinerLayers
                r.unet.textRefiner = refiner
            }
        }
        if layoutPrior, r.unet.layoutPrior == nil { r.unet.layoutPrior = LayoutPriorConfig(maxTokens: r.maxTokens) }
        if let layoutFitSteps { r.training.layoutFitSteps = layoutFitSteps }
        if let layoutMixture {
            guard r.unet.layoutPrior != nil else { throw ValidationError("--layout-mixture needs a layout prior (--layout-prior)") }
            guard (1...64).contains(layoutMixture) else { throw ValidationError("--layout-mixture must be in 1...64, got \(layoutMixture)") }
            r.unet.layoutPrior?.mixtureComponents = layoutMixture
        }
        if layoutFitMixtureOnly {
            guard r.unet.layoutPrior?.mixtureComponents != nil else {
                throw ValidationError("--layout-fit-mixture-only needs a prior with a mixture (--layout-mixture K)")
            }
            r.training.layoutFitMixtureOnly = true
        }
        if let groundingWeight { r.training.groundingWeight = groundingWeight }
        if let timestepRange {
            let parts = timestepRange.components(separatedBy: "..<").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard parts.count == 2 else { throw ValidationError("--timestep-range must look like 400..<1000, got '\(timestepRange)'") }
            r.training.timestepRange = parts
        }
        if let imageSize {
            r.unet.sampleSize = imageSize
            r.adapter?.sampleSize = imageSize
            r.benchmark.imageSize = imageSize
            r.unet.attentionResolutions = [imageSize / 4]
            r.unet.crossAttentionResolutions = [imageSize / 2, imageSize / 4]
        }
        try r.validate()
        return r
    }

    func run() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        if let shards, !(1...2).contains(shards) { throw ValidationError("--shards must be 1 or 2") }
        // Checked again when the weights are read; here so that a typo fails before data preparation.
        if let initFrom, !FileManager.default.fileExists(atPath: URL(fileURLWithPath: initFrom).appendingPathComponent("unet").path) {
            throw ValidationError("--init-from \(initFrom): not a model folder (no unet/ inside)")
        }
        let settings = try distributed.resolve()
        if let text = ProcessInfo.processInfo.environment[RankLauncher.launcherVariable], let launcher = Int32(text),
           !Torch.exitWithParent(launcher) {
            throw ValidationError("the launcher (pid \(launcher)) exited before this rank started")
        }
        useThreads(threads)
        MemorySettings.applyForTraining()
        var recipe = try recipe()
        guard let settings else { return try train(recipe: recipe, resume: !noResume, group: nil) }
        guard recipe.training.batchSize % settings.worldSize == 0 else {
            throw ValidationError("the global batch \(recipe.training.batchSize) must split evenly over \(settings.worldSize) ranks")
        }
        // Join first, so that a bad address fails before the minutes of data preparation.
        let group = try settings.join { note($0) }
        do {
            if group.rank == 0 { recipe = try prepareRunFolder(recipe) }
            let agreed = try settings.agree(on: RunAgreement(recipe: recipe, resume: !noResume), in: group)
            try train(recipe: agreed.recipe, resume: agreed.resume, group: group)
        } catch let TorchError.distributed(message) {
            throw DistributedTrainingError.lostPeers(rank: settings.rank, worldSize: settings.worldSize, timeout: settings.timeout, message)
        }
    }

    /// Uses the run folder's saved recipe when resuming, and saves the recipe. Rank 0 only.
    func prepareRunFolder(_ given: TrainingRecipe) throws -> TrainingRecipe {
        let (recipe, replaced) = try TrainingSetup.prepare(folder: RunFolder(URL(fileURLWithPath: output)), given: given, resume: !noResume)
        if replaced { note("note: resuming with the run folder's recipe.json (its settings win over the flags given)") }
        return recipe
    }

    /// Trains in this process, alone or as one rank of `group` (``TrainingSetup/train(textEncoder:options:group:progress:notes:)``;
    /// only rank 0 writes files and draws progress; the other ranks stay quiet unless something fails).
    func train(recipe given: TrainingRecipe, resume: Bool, group: ProcessGroup?) throws {
        let isRankZero = (group?.rank ?? 0) == 0
        let setup = TrainingSetup(
            recipe: group == nil ? try prepareRunFolder(given) : given, folder: RunFolder(URL(fileURLWithPath: output)))
        if isRankZero { note("loading the MiniLM text encoder…") }
        let textEncoder = try MiniLMTextEncoder()
        var options = TrainingSetup.RunOptions()
        options.initFrom = initFrom.map { URL(fileURLWithPath: $0) }
        options.command = CommandLine.arguments
        options.resume = resume
        options.writeSamples = !noSamples
        options.device = try deviceOptions.resolved(rank: group?.rank)
        options.shards = shards
        let display = ProgressDisplay()
        var bar: ProgressBar?
        var midBar = false
        try setup.train(textEncoder: textEncoder, options: options, group: group) { p in
            guard p.phase == TrainingPhase.training.rawValue else { return display.update(p) }
            if bar == nil { bar = ProgressBar(total: p.total, label: "train") }
            bar?.update(p.completed, status: String(format: "loss %.4f lr %.1e", p.metric("loss") ?? Double.nan, p.metric("lr") ?? Double.nan))
            midBar = p.completed < p.total
            return true
        } notes: { text in
            // A note in the middle of the training bar starts on its own line.
            note(midBar ? "\n" + text : text)
        }
    }
}

// MARK: - Data-parallel settings

/// Where a rank finds its process group (``DistributedSettings``): torchrun's environment
/// variables (`MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`) or these flags, which win over
/// them. With neither a rank nor a world size, or a world size of 1, training runs in one process.
struct DistributedOptions: ParsableArguments {
    @Option(help: "Host or IP of rank 0, which serves the rendezvous store (env MASTER_ADDR).")
    var masterAddr: String?
    @Option(help: "TCP port of rank 0's store (env MASTER_PORT).")
    var masterPort: Int?
    @Option(help: "This process's rank in 0..<world size (env RANK).")
    var rank: Int?
    @Option(help: "Number of ranks in all (env WORLD_SIZE); `contextdiff launch` sets these for local ranks.")
    var worldSize: Int?
    @Option(help: "Seconds the rendezvous or any collective waits for the other ranks before failing.")
    var distTimeout: Double = 60

    func validate() throws {
        guard distTimeout > 0, distTimeout.isFinite else { throw ValidationError("--dist-timeout must be a positive number of seconds") }
    }

    /// The settings from flags and the environment, or nil for a single process.
    func resolve() throws -> DistributedSettings? {
        try DistributedSettings.resolve(masterAddr: masterAddr, masterPort: masterPort, rank: rank, worldSize: worldSize, timeout: distTimeout)
    }
}
