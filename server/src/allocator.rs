//! glibc's allocator, tuned for a long-running sidecar. By default glibc gives each thread
//! that allocates an arena of its own (up to 8 per core) and keeps freed memory in them: the
//! model loads (ONNX Runtime optimising the graph allocates and frees hundreds of MB on
//! whichever thread loads it) left ~190 MB resident that nothing used again. Two arenas and
//! a 128 KiB trim threshold return it (idle RSS 558 MB → 372 MB with the default
//! configuration; docs/operations.md). `malloc_trim` after the loads returned nothing more.
//! `MALLOC_ARENA_MAX` and `MALLOC_TRIM_THRESHOLD_` in the environment still take precedence.
//! Elsewhere than Linux with glibc these are no-ops.

/// Arenas shared by all threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;
/// Free memory at the top of a heap beyond this is returned to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 128 << 10;

/// Applies the settings; call first thing in `main`, before any thread starts.
#[allow(unsafe_code)]
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str| std::env::var_os(name).is_some();
        // SAFETY: mallopt only changes allocator parameters; it has no preconditions and is
        // safe to call at any time.
        unsafe {
            if !set("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, ARENAS);
            }
            if !set("MALLOC_TRIM_THRESHOLD_") {
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            }
        }
    }
}

/// What the allocator holds, from glibc's `mallinfo2`: memory handed out and not yet freed,
/// and memory freed but kept in its arenas (resident until trimmed or reused). Growth in the
/// first is live data; growth in the second is the allocator's, not memd's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    /// Bytes allocated and in use (`uordblks` + `hblkhd`: arena chunks and mmapped blocks).
    pub in_use: u64,
    /// Bytes freed but held in the arenas (`fordblks`).
    pub free: u64,
}

/// The allocator's [`Heap`], `None` where the allocator is not glibc's.
#[allow(unsafe_code)]
pub fn heap() -> Option<Heap> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and only reads the allocator's statistics
        // (under its own locks).
        let info = unsafe { libc::mallinfo2() };
        Some(Heap {
            in_use: (info.uordblks + info.hblkhd) as u64,
            free: info.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}
