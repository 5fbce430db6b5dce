//! Open assignment watch streams, counted per principal, each principal under a bound: an
//! agent at most [`MAX_WATCH_STREAMS_PER_AGENT`] (its own cluster's, with room for a
//! reconnect that overlaps the old stream), an operator or token at most the node's
//! `--max-watch-streams-per-operator` (default [`DEFAULT_MAX_WATCH_STREAMS_PER_OPERATOR`]).
//! Over it, RESOURCE_EXHAUSTED. A stream's [`WatchSlot`] is freed when its task ends, and a
//! principal with no open stream takes no memory here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fleet_core::Principal;

use crate::error::NodeError;
use crate::grpc::auth::Caller;
pub use crate::limits::{DEFAULT_MAX_WATCH_STREAMS_PER_OPERATOR, MAX_WATCH_STREAMS_PER_AGENT};

/// The open streams of every principal that has one.
#[derive(Debug)]
pub struct WatchStreams {
    open: Mutex<HashMap<String, usize>>,
    max_per_operator: usize,
}

/// One open stream, counted until it is dropped.
#[derive(Debug)]
pub struct WatchSlot {
    streams: Arc<WatchStreams>,
    actor: String,
}

impl WatchStreams {
    pub fn new(max_per_operator: usize) -> Arc<Self> {
        Arc::new(WatchStreams {
            open: Mutex::new(HashMap::new()),
            max_per_operator,
        })
    }

    /// A slot for one more stream of `caller`; `ResourceExhausted` when it holds its bound.
    pub fn open(self: &Arc<Self>, caller: &Caller) -> Result<WatchSlot, NodeError> {
        let bound = match caller {
            Caller::Authenticated(Principal::Cluster(_)) => MAX_WATCH_STREAMS_PER_AGENT,
            _ => self.max_per_operator,
        };
        let actor = caller.actor();
        let mut open = self.open.lock().expect("watch streams lock poisoned");
        let held = open.entry(actor.clone()).or_insert(0);
        if *held >= bound {
            let held = *held;
            if held == 0 {
                open.remove(&actor);
            }
            return Err(NodeError::ResourceExhausted {
                message: format!(
                    "WatchAssignments: {actor} holds {held} open watch streams on this node, \
                     its bound"
                ),
                hint: "close streams you no longer read; an agent needs one per cluster".into(),
            });
        }
        *held += 1;
        Ok(WatchSlot {
            streams: self.clone(),
            actor,
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self
            .streams
            .open
            .lock()
            .expect("watch streams lock poisoned");
        if let Some(held) = open.get_mut(&self.actor) {
            *held -= 1;
            if *held == 0 {
                open.remove(&self.actor);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_holds_at_most_its_bound_and_a_closed_stream_frees_its_slot() {
        let streams = WatchStreams::new(2);
        let agent = Caller::Authenticated(Principal::Cluster("a".into()));
        let mut slots: Vec<WatchSlot> = (0..MAX_WATCH_STREAMS_PER_AGENT)
            .map(|_| streams.open(&agent).unwrap())
            .collect();
        assert!(matches!(
            streams.open(&agent),
            Err(NodeError::ResourceExhausted { .. })
        ));
        slots.pop();
        slots.push(streams.open(&agent).unwrap());
        let operator = Caller::Authenticated(Principal::Operator("kari".into()));
        let kari: Vec<WatchSlot> = (0..2).map(|_| streams.open(&operator).unwrap()).collect();
        assert!(streams.open(&operator).is_err());
        drop(kari);
        drop(slots);
        assert!(streams.open.lock().unwrap().is_empty(), "nothing is kept");
    }
}
