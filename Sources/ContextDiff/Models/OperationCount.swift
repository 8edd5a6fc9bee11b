import NN
import Torch

// Analytic multiply-accumulate (MAC) counts of one forward pass, for achieved-GFLOP/s figures
// (`contextdiff benchmark`, docs/PERFORMANCE.md). Counted: every convolution, every linear layer
// and the two attention matrix products (QKᵀ and weights·V). Not counted: normalisations,
// activations, softmax, additions and copies (a few per cent of the work, memory-bound). FLOPs
// are 2·MACs. The counts walk the same modules, in the same order, as the forward passes.

extension Linear {
    /// MACs of applying the layer to `rows` vectors.
    public func macs(rows: Int) -> Int { rows * weight.shape[0] * weight.shape[1] }
}

extension Conv2d {
    /// Output side for an input side `size`.
    public func outputSize(_ size: Int) -> Int {
        let k = weight.shape[2]
        return (size + 2 * padding - k) / stride + 1
    }

    /// MACs for a batch of `batch` square inputs of side `size`.
    public func macs(batch: Int, size: Int) -> Int {
        let w = weight.shape  // [O, I/g, k, k]
        let out = outputSize(size)
        return batch * out * out * w[0] * w[1] * w[2] * w[3]
    }
}

extension MultiHeadAttention {
    /// MACs for `batch` sequences of `queries` attending to `keys` keys.
    public func macs(batch: Int, queries: Int, keys: Int) -> Int {
        let inner = heads * headDim
        return toQ.macs(rows: batch * queries) + toK.macs(rows: batch * keys) + toV.macs(rows: batch * keys)
            + 2 * batch * queries * keys * inner + toOut.macs(rows: batch * queries)
    }
}

extension TimestepEmbedding {
    public func macs(batch: Int) -> Int { linear1.macs(rows: batch) + linear2.macs(rows: batch) }
}

extension ResBlock {
    func macs(batch: Int, size: Int) -> Int {
        conv1.macs(batch: batch, size: size) + timeProj.macs(rows: batch) + conv2.macs(batch: batch, size: size)
            + (skip?.macs(batch: batch, size: size) ?? 0)
    }
}

extension SpatialTransformer {
    func macs(batch: Int, size: Int, textTokens: Int) -> Int {
        let n = size * size, rows = batch * n
        var total = projIn.macs(rows: rows) + ff1.macs(rows: rows) + ff2.macs(rows: rows) + projOut.macs(rows: rows)
        total += selfAttention?.macs(batch: batch, queries: n, keys: n) ?? 0
        total += crossAttention?.macs(batch: batch, queries: n, keys: textTokens) ?? 0
        return total
    }
}

extension TransformerEncoderLayer {
    func macs(batch: Int, tokens: Int) -> Int {
        attention.macs(batch: batch, queries: tokens, keys: tokens) + fc1.macs(rows: batch * tokens) + fc2.macs(rows: batch * tokens)
    }
}

extension TextRefiner {
    public func macs(batch: Int, textTokens: Int) -> Int {
        let rows = batch * textTokens
        return projIn.macs(rows: rows) + layers.reduce(0) { $0 + $1.macs(batch: batch, tokens: textTokens) }
            + tokensOut.macs(rows: rows) + pooledOut.macs(rows: batch)
    }
}

extension LayoutPrior {
    /// With the canvas (`value`, one batched product over tokens and pixels, the convolution).
    public func macs(batch: Int, textTokens: Int, size: Int) -> Int {
        let rows = batch * textTokens
        return projIn.macs(rows: rows) + layers.reduce(0) { $0 + $1.macs(batch: batch, tokens: textTokens) }
            + head.macs(rows: rows) + value.macs(rows: rows) + batch * config.channels * textTokens * size * size
            + canvasIn.macs(batch: batch, size: size)
    }
}

extension UNet {
    /// MACs of one forward pass on `batch` images with `textTokens` text tokens per image.
    public func forwardMACs(batch: Int, textTokens: Int) -> Int {
        var total = timeEmbedding.macs(batch: batch) + pooledProj.macs(rows: batch)
        total += textRefiner?.macs(batch: batch, textTokens: textTokens) ?? 0
        total += layoutPrior?.macs(batch: batch, textTokens: textTokens, size: config.sampleSize) ?? 0
        var size = config.sampleSize
        total += convIn.macs(batch: batch, size: size)
        for level in down {
            for (i, resnet) in level.resnets.enumerated() {
                total += resnet.macs(batch: batch, size: size)
                if i < level.attentions.count {
                    total += level.attentions[i].macs(batch: batch, size: size, textTokens: textTokens)
                }
            }
            if let resample = level.resample {
                total += resample.macs(batch: batch, size: size)
                size = resample.outputSize(size)
            }
        }
        total += midResnet1.macs(batch: batch, size: size) + midResnet2.macs(batch: batch, size: size)
        total += midAttention.macs(batch: batch, size: size, textTokens: textTokens)
        for level in up {
            for (i, resnet) in level.resnets.enumerated() {
                total += resnet.macs(batch: batch, size: size)
                if i < level.attentions.count {
                    total += level.attentions[i].macs(batch: batch, size: size, textTokens: textTokens)
                }
            }
            if let resample = level.resample {
                size *= 2
                total += resample.macs(batch: batch, size: size)
            }
        }
        return total + convOut.macs(batch: batch, size: size)
    }
}

extension ContextAdapter {
    /// MACs of one forward pass on `batch` images with `textTokens` text tokens per image.
    public func forwardMACs(batch: Int, textTokens: Int) -> Int {
        let n = config.tokenGrid * config.tokenGrid
        var total = patchEmbed.macs(batch: batch, size: config.sampleSize) + timeEmbedding.macs(batch: batch)
        for block in blocks {
            total += block.selfAttention.macs(batch: batch, queries: n, keys: n)
            total += block.crossAttention.macs(batch: batch, queries: n, keys: textTokens)
            total += block.mlp1.macs(rows: batch * n) + block.mlp2.macs(rows: batch * n)
        }
        return total + projOut.macs(rows: batch * n)
    }
}
