//! How a node stops when its disk fails: a storage error (sled, the disk probe) ends the
//! process at once, so nothing that could not be persisted is ever acknowledged. Shared by
//! the store and the disk probe, which depend on nothing else of each other here.

/// Exit code of a node stopped by a storage error (EX_IOERR).
pub const EXIT_STORAGE_FAILURE: i32 = 74;

/// Logs a storage failure and stops the process. A node that cannot persist must not go on.
pub fn fail_stop(what: &str, error: &dyn std::fmt::Display) -> ! {
    tracing::error!(operation = what, %error, "storage failure: stopping the node");
    std::process::exit(EXIT_STORAGE_FAILURE);
}
