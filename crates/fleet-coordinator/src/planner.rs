//! The `rollout-planner` task: on the leader, advances running rollouts. The rules are
//! fleet-core's (`fleet_core::rollout`); this is the IO around them.

use std::sync::Arc;
use std::time::Duration;

use crate::coordinator::{Coordinator, now_ms};
use crate::error::NodeError;

/// How often the leader's planner looks for rollout steps; the soak and wave timing is
/// accurate to about this much.
pub const PLANNER_TICK: Duration = Duration::from_secs(1);
/// The actor of every planner step in the audit log.
pub use fleet_core::access::PLANNER_ACTOR;

/// On the leader, every [`PLANNER_TICK`]: plan against the applied state and propose each
/// step. A step that went stale before it was applied is refused by the state machine and
/// planned again on the next tick. While no operator holds `admin` (a data dir from before
/// roles), it binds `bootstrap_admin` first.
pub async fn run_planner(c: Arc<Coordinator>, bootstrap_admin: String) {
    let mut tick = tokio::time::interval(PLANNER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A skewed clock decides nothing: soaks and freezes would be judged by a wrong time.
        if c.leader().map(|(id, _)| id) != Some(c.id) || !c.clock.may_stamp(now_ms()) {
            continue;
        }
        if !c.read_state(|s| s.has_admin())
            && let Err(error) = crate::serve::bind_bootstrap_admin(&c, &bootstrap_admin).await
        {
            tracing::warn!(%error, "no admin, and the bootstrap admin could not be bound");
        }
        // Never earlier than a committed time: a report stamped by the previous leader is not
        // "in the future" of this decision.
        let now = c.stamp_ms();
        let steps = c.read_state(|s| fleet_core::rollout::plan(s, now));
        for step in steps {
            let kind = format!("{step:?}");
            match c
                .write(step, PLANNER_ACTOR.into(), "automatic rollout step".into())
                .await
            {
                Ok((index, _)) => tracing::info!(index, step = %kind, "rollout step"),
                Err(NodeError::Core(e)) => {
                    tracing::debug!(error = %e, "rollout step went stale; planning again")
                }
                Err(error) => tracing::warn!(%error, "rollout step not committed"),
            }
        }
    }
}
