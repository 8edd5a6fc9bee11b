import Torch

/// How a command's process allocates tensor memory.
public enum MemorySettings {
    /// The caching allocator's bounds for training: at most 1 GiB of freed buffers kept, each of
    /// at most 32 MiB (glibc's largest mmap threshold; `Torch.keepFreedTensorMemory`).
    public static let trainingCacheLimit = 1 << 30
    public static let trainingLargestCachedBlock = 32 << 20

    /// For a training process: glibc keeps freed buffers in the heap, and libtorch's CPU tensors
    /// come from the caching allocator (`Torch.cacheTensorMemory`; a training step asks for the
    /// same sizes every step and keeps its activations until the backward pass). Sampling
    /// commands call only `Torch.keepFreedTensorMemory`: with the cache, a 16-image `generate`
    /// nearly doubled its peak RSS (docs/NOTES.md "Performance" 12). Returns whether the
    /// cache is on.
    @discardableResult
    public static func applyForTraining() -> Bool {
        Torch.keepFreedTensorMemory()
        return Torch.cacheTensorMemory(limit: trainingCacheLimit, largestBlock: trainingLargestCachedBlock)
    }
}
