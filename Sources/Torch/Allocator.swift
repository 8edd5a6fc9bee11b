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

    /// Serves libtorch's CPU tensors from a caching allocator: freed buffers of 64 KiB to
    /// `largestBlock` bytes are kept in exact-size free lists (at most `limit` bytes of them) and
    /// handed out again for the next request of that size, instead of going back through
    /// glibc's malloc, whose bookkeeping for large chunks an eager step pays for at every
    /// operator. It suits training, where a step's activations live until its backward pass
    /// and every step asks for the same sizes (measured: steps ~2 % faster and 40–50 MiB less
    /// peak RSS, docs/NOTES.md "Performance" 12). It does not suit a sampling cascade: there a
    /// buffer is freed right after the next operator reads it, glibc reuses its memory for the
    /// next size, and a free list keeps one size only (a 16-image `generate` with the cache
    /// nearly doubled its peak RSS). Tensors made before the call keep their allocator. Process-wide; call it from
    /// an executable. A later call changes both bounds (a limit of 0 stops caching). Returns
    /// whether libtorch's CPU tensors now come from it.
    @discardableResult
    public static func cacheTensorMemory(limit: Int, largestBlock: Int) -> Bool {
        ct_cache_tensor_memory(Int64(max(0, limit)), Int64(max(0, largestBlock))) == 1
    }

    /// Frees every buffer the caching allocator holds (``cacheTensorMemory(limit:largestBlock:)``);
    /// returns the number of bytes released.
    @discardableResult
    public static func releaseCachedTensorMemory() -> Int {
        Int(ct_release_cached_tensor_memory())
    }

    /// The caching allocator's free bytes held, and its hits and misses so far.
    public static var tensorMemoryCache: (cachedBytes: Int, hits: Int, misses: Int) {
        var bytes: Int64 = 0, hits: Int64 = 0, misses: Int64 = 0
        ct_tensor_memory_cache_stats(&bytes, &hits, &misses)
        return (Int(bytes), Int(hits), Int(misses))
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
