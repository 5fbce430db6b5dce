//! The disk check's limits, named once.

use std::time::Duration;

/// Largest latency a histogram records; longer ones are clamped to it.
pub const MAX_RECORDED_LATENCY: Duration = Duration::from_secs(60);
