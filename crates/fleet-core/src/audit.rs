//! The audit log: one event per committed command, each hashed together with the hash of the one
//! before, so that changing or dropping an event breaks the chain.
//!
//! # Event formats
//!
//! The hash is computed over the exact stored text of the command ([`StoredCommand`]), never
//! over a re-serialization, so an event verifies whatever fields [`Command`] gained since.
//!
//! - format 0 (events written before formats were numbered; `format` absent): SHA-256 over
//!   `sequence` and `time_ms` (u64 big-endian), then `actor`, `reason`, `summary`, `prev_hash`
//!   and the command text, each as its length (u64 big-endian) and its UTF-8 bytes.
//! - format 1: the byte `1`, then the same as format 0. Its entries are checked by the rules
//!   of format 1 (actors compared trimmed and case-insensitively, control characters refused,
//!   a rejected revision published only with `allow_rejected`).
//! - format 2: the byte `2`, then the same as format 0. Its entries are also
//!   checked by the rules of format 2: a pipeline change may not leave out an environment
//!   with an active rollout, a rollout started by a format-2 `Promote` follows the planner of
//!   format 2 (`rollout::ROLLOUT_RULES_V2`), and a freeze window on a workload's first
//!   environment blocks publishing unless `override_freeze` is set.
//! - format 3 (written now): the byte `3`, then the same as format 0. Its entries are also
//!   authorized: the actor must hold a role that allows the command ([`crate::access`]).
//!
//! An event's format is chosen by the log entry it comes from (`ProposalItem.audit_format` in
//! fleet-node; 0 for entries from before formats), never by the build that applies it, so a
//! log re-applied by a newer build yields the same chain.
//!
//! A format this build does not know does not verify ([`AuditVerifyError::UnknownFormat`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

#[cfg(doc)]
use crate::command::Command;
use crate::command::{Context, StoredCommand};
use crate::model::TimeMs;

/// The format of the events this build writes (see the module docs).
pub const AUDIT_EVENT_FORMAT: u32 = 3;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One committed change: who, what, when, why, chained to the event before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// How `hash` is computed (module docs); 0 when absent, in events from before formats.
    #[serde(default)]
    pub format: u32,
    /// 1 for the first event, then one more for each.
    pub sequence: u64,
    pub time_ms: TimeMs,
    pub actor: String,
    pub reason: String,
    /// The command as stored in the log; its text is hashed.
    pub command: StoredCommand,
    /// A one-line summary of what changed.
    pub summary: String,
    /// Hex SHA-256 of the previous event ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// Hex SHA-256 over all the fields above, as the format says.
    pub hash: String,
}

impl AuditEvent {
    /// `format` must be one this build knows (at most [`AUDIT_EVENT_FORMAT`]).
    pub(crate) fn new(
        format: u32,
        sequence: u64,
        ctx: &Context,
        command: &StoredCommand,
        summary: String,
        prev_hash: &str,
    ) -> Self {
        let mut event = AuditEvent {
            format,
            sequence,
            time_ms: ctx.now_ms,
            actor: ctx.actor.clone(),
            reason: ctx.reason.clone(),
            command: command.clone(),
            summary,
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        event.hash = event.compute_hash().expect("a format this build knows");
        event
    }

    /// The hash this event must carry, recomputed from its fields and stored command text;
    /// `None` for a format this build does not know.
    pub fn compute_hash(&self) -> Option<String> {
        let command = self.command.json().as_bytes();
        let mut hasher = Sha256::new();
        match self.format {
            0 => {}
            1 => hasher.update([1u8]),
            2 => hasher.update([2u8]),
            3 => hasher.update([3u8]),
            _ => return None,
        }
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
        hasher.update(command);
        Some(hex::encode(hasher.finalize()))
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
    #[error(
        "audit event {sequence}: format {format} is newer than this build knows; verify with a newer fleet-ctl"
    )]
    UnknownFormat { sequence: u64, format: u32 },
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
        match event.compute_hash() {
            None => {
                return Err(AuditVerifyError::UnknownFormat {
                    sequence: event.sequence,
                    format: event.format,
                });
            }
            Some(hash) if hash != event.hash => {
                return Err(AuditVerifyError::HashMismatch {
                    sequence: event.sequence,
                });
            }
            Some(_) => {}
        }
        prev = event.hash.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event as a build before `PublishRelease.allow_rejected` stored it (format 0).
    fn format0_publish_event() -> AuditEvent {
        let stored = r#"{"type":"publish_release","workload":"web","revision":"1111111111111111111111111111111111111111"}"#;
        let mut event = AuditEvent {
            format: 0,
            sequence: 1,
            time_ms: 1_700_000_000_000,
            actor: "alice".into(),
            reason: String::new(),
            command: StoredCommand::from_json(stored).unwrap(),
            summary: "release published".into(),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        event.hash = event.compute_hash().unwrap();
        event
    }

    #[test]
    fn an_event_stored_before_a_command_gained_a_field_still_verifies() {
        let event = format0_publish_event();
        // Read back as this build reads a snapshot: the new field is defaulted ...
        let read: AuditEvent =
            serde_json::from_slice(&serde_json::to_vec(&event).unwrap()).unwrap();
        // ... so re-serializing the command, as hashes were once computed, changes the bytes;
        assert_ne!(
            serde_json::to_string(read.command.command()).unwrap(),
            read.command.json()
        );
        // the stored text did not change, and the chain verifies.
        assert_eq!(read.command.json(), event.command.json());
        verify_chain(&[read]).unwrap();
    }

    #[test]
    fn an_event_of_an_unknown_format_does_not_verify() {
        let mut event = format0_publish_event();
        event.format = AUDIT_EVENT_FORMAT + 1;
        assert_eq!(
            verify_chain(&[event]),
            Err(AuditVerifyError::UnknownFormat {
                sequence: 1,
                format: AUDIT_EVENT_FORMAT + 1
            })
        );
    }

    #[test]
    fn the_format_is_part_of_the_hash() {
        for format in 1..=AUDIT_EVENT_FORMAT {
            let mut event = format0_publish_event();
            event.format = format;
            assert_eq!(
                verify_chain(&[event]),
                Err(AuditVerifyError::HashMismatch { sequence: 1 }),
                "format {format}"
            );
        }
    }
}
