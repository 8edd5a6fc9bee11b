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

extension Torch {
    /// Makes this process receive SIGTERM when its parent exits (Linux `PR_SET_PDEATHSIG`), so
    /// that workers started by a launcher do not outlive it when it is killed; SIGTERM is
    /// unblocked on the calling thread (a blocked mask is inherited from whoever started the
    /// launcher). Call it from the main thread, early. Returns false when
    /// `parent` is no longer this process's parent (it died before the request) or the platform
    /// lacks the mechanism; the caller decides what to do then.
    @discardableResult
    public static func exitWithParent(_ parent: Int32) -> Bool {
        ct_exit_with_parent(Int64(parent)) == 1
    }
}
