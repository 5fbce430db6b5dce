//! Spawning with names: every task runs inside a tracing span that names it.

use std::future::Future;

use tracing::Instrument;

/// Spawns `future` on the current tokio runtime inside a span `task{name=...}`.
pub fn spawn_named<F>(name: &'static str, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.instrument(tracing::info_span!("task", name)))
}
