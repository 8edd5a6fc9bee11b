import CTorch

extension Torch {
    /// Tells glibc's malloc to keep freed tensor buffers (up to 32 MiB each) in the process heap
    /// instead of returning them to the kernel with munmap/trim and faulting fresh zeroed pages in
    /// on the next allocation. libtorch's CPU allocator is plain malloc, and an eager training step
    /// frees and re-allocates the same activation sizes every step; with glibc's defaults that
    /// costs tens of thousands of page faults per step (measured: ~34 000 minor faults and ~55 ms
    /// of system time per 1.3 s training step of the shipped U-Net, docs/NOTES.md "Performance").
    /// Peak RSS is unchanged (the memory is reused, not added). Process-wide; call it once at
    /// start-up from an executable, not from a library. Returns false where it is not supported.
    @discardableResult
    public static func keepFreedTensorMemory() -> Bool {
        ct_keep_freed_memory() == 1
    }
}
