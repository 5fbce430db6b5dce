//! The gRPC edge of the coordinator: the four services it serves and its client of the other
//! coordinators ([`network`]). The only modules of the crate, with [`crate::convert`], that
//! name `fleet_api::proto` types (a test in fleet-api checks it); everything behind them works
//! with fleet-core's domain types and [`crate::error::NodeError`].

pub mod agent;
pub mod auth;
pub mod fleet;
pub mod network;
pub mod promotion;
pub mod raft;

use tonic::{Response, Status};

/// What a handler returns.
type Reply<T> = Result<Response<T>, Status>;
