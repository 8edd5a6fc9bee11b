import Torch

/// Process-wide choices between equivalent kernels (same results up to float rounding).
///
/// The defaults are the fastest measured on the target CPUs (docs/NOTES.md "Performance");
/// `contextdiff benchmark` switches them all off for its "Swift, reference kernels" side, to
/// show what each buys next to the PyTorch twin in the same run. Set them before building or
/// running models, not while another thread runs one.
public enum Kernels {
    /// ``Linear`` layers over ≥ 256 rows run as oneDNN 1×1 convolutions instead of BLAS sgemm.
    nonisolated(unsafe) public static var linearAsConvolution = true
    /// ``MultiHeadAttention`` projects queries, keys and values with one matrix product (keys and
    /// values with one for cross-attention), scales and masks the scores inside the score
    /// product (`baddbmm` with an additive mask), and reuses the projected keys and values of a
    /// fixed context across calls when given a ``AttentionContextCache``.
    nonisolated(unsafe) public static var fusedAttention = true
    /// Batched float32 products (attention's scores and weighted sums, and their gradients) as
    /// direct BLAS calls per batch entry over libtorch's threads (``Torch/setDirectBatchedProducts(_:)``).
    nonisolated(unsafe) public static var directBatchedProducts = true {
        didSet { Torch.setDirectBatchedProducts(directBatchedProducts) }
    }

    /// 3×3 float32 convolutions by oneDNN's Winograd algorithm where it has a kernel
    /// (``Torch/setWinogradConvolutions(_:)``); results differ from the direct algorithm's by
    /// float rounding (relative 1e-6 to 1e-5).
    nonisolated(unsafe) public static var winogradConvolutions = true {
        didSet { Torch.setWinogradConvolutions(winogradConvolutions) }
    }

    /// Every switch off: the straightforward kernels, as the PyTorch twin uses them.
    public static func useReferenceKernels() {
        linearAsConvolution = false
        fusedAttention = false
        directBatchedProducts = false
        winogradConvolutions = false
    }
}
