//! The fleet coordinator: the Raft-replicated store of the fleet's desired state. See
//! ARCHITECTURE.md for the map of its modules; `fleet-node coordinator` runs it.

pub mod batcher;
pub mod clock;
pub mod convert;
pub mod coordinator;
pub mod error;
pub mod fatal;
pub mod grpc;
pub mod health;
pub mod heartbeat;
pub mod identity;
pub mod leadership;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod planner;
pub mod serve;
pub mod store;
pub mod types;
pub mod watches;

/// Whether this build has failpoints: the `failpoints` feature, which only builds that include
/// fleet-testkit (the tests, the chaos suite, the benchmarks) turn on.
pub const HAS_FAILPOINTS: bool = cfg!(feature = "failpoints");

/// Reads failpoints from the `FAILPOINTS` environment variable (`name=action;...`, the `fail`
/// crate's syntax) for as long as the returned guard lives. A build without failpoints ignores
/// the variable, says so in the log, and returns `None`.
pub fn failpoints_from_env() -> Option<fail::FailScenario<'static>> {
    if HAS_FAILPOINTS {
        Some(fail::FailScenario::setup())
    } else {
        if std::env::var_os("FAILPOINTS").is_some() {
            tracing::warn!(
                "FAILPOINTS is ignored: this build has no failpoints (only test builds do)"
            );
        }
        None
    }
}
