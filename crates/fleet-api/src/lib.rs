//! The fleet.v1 wire, shared by the coordinator, the agent and fleet-ctl:
//!
//! - [`proto`]: the generated messages and gRPC clients and servers of `proto/fleet/v1`;
//! - [`convert`]: the one conversion between them and fleet-core's domain types;
//! - [`status`]: how a refusal becomes a `tonic::Status` (code, message, hint metadata), and
//!   how a client reads the hint back;
//! - [`limits`]: the size limits of the wire;
//! - [`tasks`]: named tokio tasks, as both sides of the wire (coordinator and agent) spawn them.
//!
//! It depends on fleet-core, prost, tonic, tokio and tracing only, so a client (fleet-ctl, other tooling in
//! Rust) links the wire without the coordinator's storage and consensus.

pub mod proto {
    //! Generated from proto/fleet/v1. Wire types stop at [`crate::convert`].
    #![allow(clippy::all)]
    tonic::include_proto!("fleet.v1");
}
pub mod address;
pub mod convert;
pub mod limits;
pub mod status;
pub mod tasks;
