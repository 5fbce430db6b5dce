//! The fleet runtime: the Raft-replicated coordinator.

pub use fleet_api::proto;
pub mod agent;
pub mod batcher;
pub mod clock;
pub mod convert;
pub mod coordinator;
pub mod demo;
pub mod error;
pub mod health;
pub mod heartbeat;
pub mod identity;
pub mod leadership;
pub mod metrics;
pub mod network;
pub mod promotion;
pub mod service;
pub mod store;
pub mod tasks;
pub mod types;
