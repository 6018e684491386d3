//! CPU priority for background threads (extraction, indexing): a higher nice value than the
//! request handlers, so requests win the CPU whenever both want it.

/// Sets the calling thread's nice value (Linux threads have their own, and threads it starts
/// inherit it); elsewhere, and for 0, a no-op.
pub fn lower_current_thread(nice: i32, what: &str) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(err) = rustix::process::setpriority_process(Some(tid), nice) {
            tracing::warn!(%err, nice, what, "cannot lower a background thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = what;
}
