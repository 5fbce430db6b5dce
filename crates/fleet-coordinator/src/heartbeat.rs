//! Agents' heartbeats kept in this node's memory.
//!
//! A status report that matches the committed one (and is younger than
//! [`fleet_core::limits::STATUS_REFRESH_MS`]) does not go through Raft; the node that received
//! it only notes the time here. `last seen` shown to users is the later of this time and the
//! committed report's, so on the node an agent talks to it is exact, and on every other node it
//! is at most a minute old. Lost on restart, by design: the next report refreshes it.

pub use crate::limits::MAX_HEARTBEAT_ENTRIES;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Heartbeats {
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl Heartbeats {
    /// Notes that the agent of `cluster` reported on `workload` at `now_ms`.
    pub fn record(&self, cluster: &str, workload: &str, now_ms: u64) {
        let mut seen = self.seen.lock().expect("heartbeat lock poisoned");
        if seen.len() >= MAX_HEARTBEAT_ENTRIES {
            seen.clear();
        }
        seen.insert((cluster.to_string(), workload.to_string()), now_ms);
    }

    /// The later of `committed_ms` and the last heartbeat this node received.
    pub fn last_seen(&self, cluster: &str, workload: &str, committed_ms: u64) -> u64 {
        let seen = self.seen.lock().expect("heartbeat lock poisoned");
        seen.get(&(cluster.to_string(), workload.to_string()))
            .map_or(committed_ms, |&t| t.max(committed_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_is_the_later_of_heartbeat_and_commit() {
        let book = Heartbeats::default();
        assert_eq!(book.last_seen("c", "w", 5), 5);
        book.record("c", "w", 9);
        assert_eq!(book.last_seen("c", "w", 5), 9);
        assert_eq!(book.last_seen("c", "w", 12), 12);
        assert_eq!(book.last_seen("c", "other", 0), 0);
    }
}
