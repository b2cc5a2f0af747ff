//! How the process's allocator treats the memory the runtime frees.
//!
//! A network's values on a batch are tens to hundreds of megabytes each, and a search
//! re-runs the network hundreds of times. glibc's defaults give such buffers back to the
//! kernel when they are freed (each its own `mmap`, per-thread heaps deleted once empty,
//! the main heap trimmed), so every re-run touches fresh pages, and the kernel zeroes each
//! 4 KiB on first touch: 3.0M page faults in 8 evaluations of a ResNet-18 search, 1.03M
//! (about its peak footprint, touched once) with the memory kept. Kept, the memory is
//! reused as it is; the peak was the same in that run (4.1 GB), but it is held until exit.

/// Have the allocator keep freed memory for reuse instead of returning it to the system:
/// one heap (small allocations still come from per-thread caches), no separate mappings
/// for large blocks, no trimming below 2 GiB of free space at the top. For the binaries'
/// `main`, before any thread starts; nothing on other platforms than Linux with glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only sets allocator parameters; called before any other thread
    // exists, it races with nothing. A parameter it rejects (returning 0) keeps its default.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
