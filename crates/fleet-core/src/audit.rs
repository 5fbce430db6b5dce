//! The audit log: one event per committed command, each hashed together with the hash of the one
//! before, so that changing or dropping an event breaks the chain.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::command::{Command, Context};
use crate::model::TimeMs;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One committed change: who, what, when, why, chained to the event before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// 1 for the first event, then one more for each.
    pub sequence: u64,
    pub time_ms: TimeMs,
    pub actor: String,
    pub reason: String,
    pub command: Command,
    /// A one-line summary of what changed.
    pub summary: String,
    /// Hex SHA-256 of the previous event ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// Hex SHA-256 over all the fields above.
    pub hash: String,
}

impl AuditEvent {
    pub(crate) fn new(
        sequence: u64,
        ctx: &Context,
        command: &Command,
        summary: String,
        prev_hash: &str,
    ) -> Self {
        let mut event = AuditEvent {
            sequence,
            time_ms: ctx.now_ms,
            actor: ctx.actor.clone(),
            reason: ctx.reason.clone(),
            command: command.clone(),
            summary,
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        event.hash = event.compute_hash();
        event
    }

    /// The hash this event must carry, recomputed from its fields.
    pub fn compute_hash(&self) -> String {
        let command = serde_json::to_vec(&self.command).expect("commands always serialize");
        let mut hasher = Sha256::new();
        for part in [
            self.sequence.to_be_bytes().as_slice(),
            self.time_ms.to_be_bytes().as_slice(),
        ] {
            hasher.update(part);
        }
        for text in [&self.actor, &self.reason, &self.summary, &self.prev_hash] {
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
        }
        hasher.update((command.len() as u64).to_be_bytes());
        hasher.update(&command);
        hex::encode(hasher.finalize())
    }
}

/// Where and why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuditVerifyError {
    #[error("audit event {sequence}: expected sequence {expected}")]
    SequenceGap { sequence: u64, expected: u64 },
    #[error("audit event {sequence}: prev_hash does not match the hash of the event before")]
    BrokenLink { sequence: u64 },
    #[error("audit event {sequence}: its hash does not match its contents")]
    HashMismatch { sequence: u64 },
}

/// Recomputes the whole chain.
pub fn verify_chain(events: &[AuditEvent]) -> Result<(), AuditVerifyError> {
    let mut prev = GENESIS_HASH.to_string();
    for (i, event) in events.iter().enumerate() {
        let expected = i as u64 + 1;
        if event.sequence != expected {
            return Err(AuditVerifyError::SequenceGap {
                sequence: event.sequence,
                expected,
            });
        }
        if event.prev_hash != prev {
            return Err(AuditVerifyError::BrokenLink {
                sequence: event.sequence,
            });
        }
        if event.compute_hash() != event.hash {
            return Err(AuditVerifyError::HashMismatch {
                sequence: event.sequence,
            });
        }
        prev = event.hash.clone();
    }
    Ok(())
}
