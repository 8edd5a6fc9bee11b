import NN

// The default recipe's networks (docs/TRAINING.md): what `contextdiff train` builds, what the
// benchmark and the operation-count tests build, and the shipped model's (models/default) minus
// the position tables and the layout prior its later fine-tuning stages added.

extension UNetConfig {
    /// The default denoiser: 32×32, widths 32/64/64, attention at 8×8, cross-attention at 16 and 8.
    public static var shapesDefault: UNetConfig {
        var c = UNetConfig()
        c.sampleSize = 32
        c.baseChannels = 32
        c.channelMultipliers = [1, 2, 2]
        c.layersPerBlock = 1
        c.attentionResolutions = [8]
        c.crossAttentionResolutions = [16, 8]
        c.heads = 4
        return c
    }
}

extension ContextAdapterConfig {
    /// The shipped model's context adapter r_φ: 4×4 patches, width 64, one block, 8 heads.
    public static var shapesDefault: ContextAdapterConfig {
        var c = ContextAdapterConfig()
        c.sampleSize = 32
        c.patchSize = 4
        c.width = 64
        c.depth = 1
        c.heads = 8
        return c
    }
}
