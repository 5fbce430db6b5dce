//! The Raft log, vote and state machine, kept in one sled database per node.
//!
//! # On-disk format (format 1)
//!
//! A data dir holds `identity.json` (cluster id, node id, format: see [`crate::identity`]),
//! written before anything else, and one sled database at `DATA_DIR/sled` with these trees:
//!
//! | tree       | key                          | value                              | durability |
//! |------------|------------------------------|------------------------------------|------------|
//! | `log`      | log index, u64 big-endian    | versioned `openraft::Entry<TypeConfig>` | flushed before openraft's append callback fires |
//! | `meta`     | `vote`                       | JSON `openraft::Vote`              | flushed before `save_vote` returns |
//! | `meta`     | `committed`                  | JSON `Option<LogId>`               | written unflushed; only an optimisation at start-up |
//! | `meta`     | `last_purged`                | JSON `LogId`                       | flushed with the purge |
//! | `snapshot` | `meta`                       | JSON `openraft::SnapshotMeta`      | flushed (with `data`, in one batch) before the snapshot is used |
//! | `snapshot` | `data`                       | versioned [`StateMachineData`]     | as above |
//!
//! *Versioned* values are one format byte, then JSON: `0x01` for format 1. A value that starts
//! with `{` is format 0 (written before formats were numbered: the same JSON, no byte); both
//! are read. A format byte this build does not know stops the node with a message naming it.
//! Snapshots travel to other nodes as these stored bytes.
//!
//! Commands inside entries are [`fleet_core::StoredCommand`]s: the JSON text the leader wrote
//! is kept verbatim through the log, snapshots and the audit log, and the audit hash covers
//! that text. Audit events carry their own format number (`fleet_core::audit`).
//!
//! ## Rules for changing the format
//!
//! - A field added to a command, the state or an event is additive: `#[serde(default)]`, so
//!   data written before it reads as before.
//! - A rule that refuses more than before applies only to entries of the format that brought
//!   it (`ProposalItem.audit_format`, passed to `State::apply_stored`), so that replaying an
//!   older log gives the state that was acknowledged: e.g. publishing a rejected revision is
//!   refused from format 1 on.
//! - Any other change takes a new format number here, code that reads every earlier format,
//!   and a test that reads data written by the previous format (the format-0 data dir in
//!   `tests/fixtures/` is read by `tests/on_disk_format.rs`).
//!
//! A command that carries a write id (`ProposalItem.write_id`, written from format 2 on) is
//! applied once: the state machine remembers the last `types::RECENT_WRITES` ids with their
//! results (`StateMachineData.recent_writes`, in snapshots too) and answers a repeated id with
//! the first result, changing nothing. This is what lets a node retry a forwarded write whose
//! answer was lost.
//!
//! The state machine itself lives in memory. At start-up it is loaded from the snapshot and
//! openraft re-applies the log after it; the log is purged only up to a persisted snapshot.
//!
//! # Failure
//!
//! Any sled error is fatal: [`fail_stop`] logs at ERROR and exits the process with
//! [`EXIT_STORAGE_FAILURE`], so nothing that could not be persisted is ever acknowledged.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fleet_core::{CoreError, Outcome, State};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::health::DiskHealth;
pub use crate::limits::MAX_PENDING_FLUSHES;
use crate::types::{
    AppliedWrite, ApplyResult, LogId, NodeId, ProposalItem, RecentWrites, StorageError,
    StoredMembership, TypeConfig,
};
use fleet_api::tasks::spawn_named;

pub use crate::fatal::{EXIT_STORAGE_FAILURE, fail_stop};

/// Flushes (fsyncs) the database on this thread, through the failpoint `point` (`log-flush` or
/// `vote-flush`): `sleep(MS)` slows the flush, `return` fails it (in a build with failpoints;
/// without, `point` is unused). Returns how long it took.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub fn flush_blocking(db: &sled::Db, point: &str) -> std::io::Result<Duration> {
    let started = Instant::now();
    fail::fail_point!(point, |_| Err(std::io::Error::other(format!(
        "injected failure at failpoint {point}"
    ))));
    db.flush().map_err(std::io::Error::other)?;
    Ok(started.elapsed())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("storage types always serialize")
}

/// The format byte of versioned values this build writes (module docs).
pub const STORE_FORMAT: u8 = 1;

/// A versioned value: [`STORE_FORMAT`], then JSON.
fn encode_versioned<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![STORE_FORMAT];
    serde_json::to_writer(&mut bytes, value).expect("storage types always serialize");
    bytes
}

/// Reads a versioned value of format 0 (bare JSON) or 1.
pub fn decode_versioned<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    let json = match bytes.first() {
        Some(b'{') => bytes,
        Some(&STORE_FORMAT) => &bytes[1..],
        Some(other) => {
            return Err(format!(
                "stored format {other} is unknown to this build (it writes {STORE_FORMAT}): run \
                 the fleet-node that wrote it, or a newer one"
            ));
        }
        None => return Err("an empty stored value".into()),
    };
    serde_json::from_slice(json).map_err(|e| e.to_string())
}

fn decode_versioned_or_stop<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> T {
    decode_versioned(bytes).unwrap_or_else(|e| fail_stop(what, &e))
}

/// Whether `dir` holds a store (format 0 data dirs hold one without an identity file).
pub fn has_store(dir: &Path) -> bool {
    dir.join("sled").join("db").exists()
}

/// Refuses a store whose vote or last log entry has a term no node could have reached
/// ([`fleet_core::limits::MAX_RAFT_TERM`]): openraft would overflow on it. Says how to recover.
pub fn check_stored_terms(db: &sled::Db, node: NodeId) -> Result<(), String> {
    use fleet_core::limits::MAX_RAFT_TERM;
    let recover = format!(
        "this node's stored Raft state cannot be used. Recover it as a node that lost its \
         disk: from a healthy member run `fleet-ctl coordinator remove --id {node}`, then start \
         this node with an empty data dir and --join HOST:PORT (README: recovering a node)"
    );
    let meta = db.open_tree("meta").map_err(|e| e.to_string())?;
    if let Some(bytes) = meta.get("vote").map_err(|e| e.to_string())? {
        let vote: Vote<NodeId> = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the stored vote is unreadable ({e}); {recover}"))?;
        if vote.leader_id.term > MAX_RAFT_TERM {
            return Err(format!(
                "the stored vote has term {}, above the cap of {MAX_RAFT_TERM}; {recover}",
                vote.leader_id.term
            ));
        }
    }
    let log = db.open_tree("log").map_err(|e| e.to_string())?;
    if let Some((_, bytes)) = log.last().map_err(|e| e.to_string())? {
        let entry: Entry<TypeConfig> = decode_versioned(&bytes)
            .map_err(|e| format!("the last log entry is unreadable ({e}); {recover}"))?;
        if entry.log_id.leader_id.term > MAX_RAFT_TERM {
            return Err(format!(
                "the last log entry has term {}, above the cap of {MAX_RAFT_TERM}; {recover}",
                entry.log_id.leader_id.term
            ));
        }
    }
    Ok(())
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> T {
    serde_json::from_slice(bytes).unwrap_or_else(|e| fail_stop(what, &e))
}

/// Opens (or creates) the node's sled database.
pub fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    sled::Config::new().path(dir.join("sled")).open()
}

/// The Raft log and vote. Cheap to clone: all clones share the same trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    flushes: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// Opens the log trees and starts the flusher task, which records every flush's duration
    /// in `health`. Must run inside a tokio runtime.
    pub fn open(db: &sled::Db, health: Arc<DiskHealth>) -> Result<Self, sled::Error> {
        let (flushes, pending) = mpsc::channel(MAX_PENDING_FLUSHES);
        spawn_named("log-flusher", flusher(db.clone(), pending, health));
        Ok(LogStore {
            db: db.clone(),
            log: db.open_tree("log")?,
            meta: db.open_tree("meta")?,
            flushes,
        })
    }

    /// Flushes on a blocking thread (an fsync may take seconds on a sick disk; the runtime's
    /// workers must not wait on it) and returns once it is done.
    async fn flush(&self, what: &'static str, point: &'static str) {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || flush_blocking(&db, point)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => fail_stop(what, &e),
            // A panic on the blocking thread is the caller's panic, as if it had run here.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => fail_stop(what, &e),
        }
    }

    fn meta_get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Option<T> {
        match self.meta.get(key) {
            Ok(v) => v.map(|b| decode(key, &b)),
            Err(e) => fail_stop("read meta", &e),
        }
    }
}

/// Group commit: waits for append callbacks, flushes once for all that are waiting (sled's
/// flush covers every write made before it), then completes them in order.
///
/// # Cancel safety
/// Runs until every sender is dropped; it is never cancelled mid-flush.
async fn flusher(
    db: sled::Db,
    mut pending: mpsc::Receiver<LogFlushed<TypeConfig>>,
    health: Arc<DiskHealth>,
) {
    let mut batch = Vec::new();
    while pending.recv_many(&mut batch, MAX_PENDING_FLUSHES).await > 0 {
        let flushing = db.clone();
        health.flush_started();
        let flushed = tokio::task::spawn_blocking(move || flush_blocking(&flushing, "log-flush"))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let took = flushed.unwrap_or_else(|e| fail_stop("flush log", &e));
        health.record_flush(took);
        tracing::trace!(
            entries = batch.len(),
            flush_us = took.as_micros() as u64,
            "log flushed"
        );
        for callback in batch.drain(..) {
            callback.log_io_completed(Ok(()));
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => *i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in self.log.range(index_key(start)..) {
            let (key, value) = item.unwrap_or_else(|e| fail_stop("read log", &e));
            let index = u64::from_be_bytes(key.as_ref().try_into().expect("8-byte keys"));
            if !range.contains(&index) {
                break;
            }
            entries.push(decode_versioned_or_stop("log entry", &value));
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.meta_get("last_purged");
        let last = match self.log.last() {
            Ok(v) => v.map(|(_, b)| {
                decode_versioned_or_stop::<Entry<TypeConfig>>("log entry", &b).log_id
            }),
            Err(e) => fail_stop("read log", &e),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        if let Err(e) = self.meta.insert("vote", encode(vote)) {
            fail_stop("write vote", &e);
        }
        self.flush("flush vote", "vote-flush").await;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.meta_get("vote"))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Err(e) = self.meta.insert("committed", encode(&committed)) {
            fail_stop("write committed", &e);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta_get::<Option<LogId>>("committed").flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.log_id.index), encode_versioned(&entry));
        }
        if let Err(e) = self.log.apply_batch(batch) {
            fail_stop("write log", &e);
        }
        // Readable now; durable when the flusher calls back.
        if self.flushes.send(callback).await.is_err() {
            fail_stop("append", &"the log flusher has stopped");
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(log_id.index)..) {
            let (key, _) = item.unwrap_or_else(|e| fail_stop("read log", &e));
            batch.remove(key);
        }
        if let Err(e) = self.log.apply_batch(batch) {
            fail_stop("truncate log", &e);
        }
        self.flush("flush truncate", "log-flush").await;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if let Err(e) = self.meta.insert("last_purged", encode(&log_id)) {
            fail_stop("write last_purged", &e);
        }
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.unwrap_or_else(|e| fail_stop("read log", &e));
            batch.remove(key);
        }
        if let Err(e) = self.log.apply_batch(batch) {
            fail_stop("purge log", &e);
        }
        self.flush("flush purge", "log-flush").await;
        Ok(())
    }
}

/// What the state machine holds: the fleet state and where it stands in the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateMachineData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: State,
    /// Writes applied lately, by write id: what makes a retried write apply once.
    #[serde(default)]
    pub recent_writes: RecentWrites,
}

/// Applies one command of an entry at `index`, once: a command whose write id was applied
/// before (a retry of a write whose first answer was lost) changes nothing and gives what the
/// first one gave.
fn apply_item(
    data: &mut StateMachineData,
    item: &ProposalItem,
    index: u64,
) -> Result<Outcome, CoreError> {
    if let Some(id) = &item.write_id
        && let Some(earlier) = data.recent_writes.get(id)
    {
        return earlier.result.clone();
    }
    let result = data
        .state
        .apply_stored(&item.command, &item.context, item.audit_format);
    if let Some(id) = &item.write_id {
        data.recent_writes.remember(
            id.clone(),
            AppliedWrite {
                index,
                result: result.clone(),
            },
        );
    }
    result
}

/// A read handle on the applied state, shared with the gRPC services.
pub type SharedState = Arc<RwLock<StateMachineData>>;

/// The state machine: in memory, with its snapshot in sled.
#[derive(Clone)]
pub struct StateMachineStore {
    data: SharedState,
    db: sled::Db,
    snapshot: sled::Tree,
    /// Counts applied changes that may change some cluster's assignments (an assignment
    /// version used, a cluster removed, a snapshot installed): what assignment watchers wait on.
    assignments_changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl StateMachineStore {
    /// Opens the snapshot tree and loads the state from the last snapshot, if any.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let snapshot = db.open_tree("snapshot")?;
        let data = match snapshot.get("data")? {
            Some(bytes) => decode_versioned_or_stop("snapshot data", &bytes),
            None => StateMachineData::default(),
        };
        Ok(StateMachineStore {
            data: Arc::new(RwLock::new(data)),
            db: db.clone(),
            snapshot,
            assignments_changed: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    pub fn shared(&self) -> SharedState {
        self.data.clone()
    }

    /// A receiver that changes whenever some cluster's assignments may have changed, or who may
    /// watch them (a token revoked, a role bound or unbound).
    pub fn watch_assignments(&self) -> tokio::sync::watch::Receiver<u64> {
        self.assignments_changed.subscribe()
    }

    fn notify_assignments(&self) {
        self.assignments_changed
            .send_modify(|generation| *generation += 1);
    }

    /// Writes and flushes the snapshot on a blocking thread (it may be megabytes, and the
    /// flush an fsync), returning once it is durable.
    async fn save_snapshot(&self, meta: &SnapshotMeta<NodeId, openraft::BasicNode>, data: Vec<u8>) {
        let mut batch = sled::Batch::default();
        batch.insert("meta", encode(meta));
        batch.insert("data", data);
        let (tree, db) = (self.snapshot.clone(), self.db.clone());
        let saved = tokio::task::spawn_blocking(move || {
            if let Err(e) = tree.apply_batch(batch) {
                fail_stop("write snapshot", &e);
            }
            if let Err(e) = flush_blocking(&db, "log-flush") {
                fail_stop("flush snapshot", &e);
            }
        })
        .await;
        match saved {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => fail_stop("save snapshot", &e),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (bytes, last_applied, last_membership) = {
            let data = self.data.read().expect("state lock poisoned");
            (
                encode_versioned(&*data),
                data.last_applied,
                data.last_membership.clone(),
            )
        };
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, bytes.len()),
            None => format!("empty-{}", bytes.len()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        self.save_snapshot(&meta, bytes.clone()).await;
        tracing::info!(snapshot_id = %meta.snapshot_id, bytes = bytes.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let data = self.data.read().expect("state lock poisoned");
        Ok((data.last_applied, data.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut data = self.data.write().expect("state lock poisoned");
        let version_before = data.state.last_assignment_version();
        let mut removed = false;
        let mut results = Vec::new();
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(proposal) => proposal
                    .items
                    .iter()
                    .map(|item| apply_item(&mut data, item, entry.log_id.index))
                    .collect(),
                EntryPayload::Membership(membership) => {
                    data.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            // A removed cluster ends its watch streams; a revoked token or a changed role may
            // end others (`grpc::agent::still_may_watch`).
            removed |= result.iter().any(|r| {
                matches!(
                    r,
                    Ok(Outcome::ClusterRemoved { .. }
                        | Outcome::TokenRevoked { .. }
                        | Outcome::ClusterCertificatesRevoked { .. }
                        | Outcome::RoleUnbound { .. }
                        | Outcome::RoleBound { .. })
                )
            });
            results.push(ApplyResult(result));
        }
        #[cfg(feature = "failpoints")]
        if let Some(Some(sequence)) = fail::eval("audit-tamper", |arg| arg) {
            tamper_with_audit_event(&mut data.state, &sequence);
        }
        let changed = removed || data.state.last_assignment_version() != version_before;
        drop(data);
        if changed {
            self.notify_assignments();
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let mut received: StateMachineData = decode_versioned(&bytes).map_err(|e| {
            openraft::StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(e),
            )
        })?;
        received.last_applied = meta.last_log_id;
        received.last_membership = meta.last_membership.clone();
        self.save_snapshot(meta, bytes).await;
        *self.data.write().expect("state lock poisoned") = received;
        self.notify_assignments();
        tracing::info!(snapshot_id = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let meta = self
            .snapshot
            .get("meta")
            .unwrap_or_else(|e| fail_stop("read snapshot", &e));
        let data = self
            .snapshot
            .get("data")
            .unwrap_or_else(|e| fail_stop("read snapshot", &e));
        Ok(match (meta, data) {
            (Some(meta), Some(data)) => Some(Snapshot {
                meta: decode("snapshot meta", &meta),
                snapshot: Box::new(Cursor::new(data.to_vec())),
            }),
            _ => None,
        })
    }
}

/// Test-only: alters the summary of one stored audit event in this node's state, without
/// fixing its hash, so `fleet-ctl audit verify` can be shown to catch it. Reached only through
/// the `audit-tamper` failpoint (`return(SEQUENCE)`), on a node run with
/// `--allow-failpoint-rpc`.
#[cfg(feature = "failpoints")]
fn tamper_with_audit_event(state: &mut fleet_core::State, sequence: &str) {
    let Ok(sequence) = sequence.parse::<usize>() else {
        return tracing::error!(sequence, "audit-tamper needs return(SEQUENCE)");
    };
    // Edited as text: a round trip through serde_json::Value would reorder the keys of every
    // stored command and break every event, not just this one.
    let mut text = serde_json::to_string(&*state).expect("the state serializes");
    let start = format!(
        "\"format\":{},\"sequence\":{sequence},",
        fleet_core::audit::AUDIT_EVENT_FORMAT
    );
    let Some(at) = text.find(&start) else {
        return tracing::error!(sequence, "audit-tamper: no such event");
    };
    let Some(summary_at) = text[at..].find("\"summary\":\"").map(|i| at + i + 11) else {
        return tracing::error!(sequence, "audit-tamper: event without a summary");
    };
    text.insert_str(summary_at, "(altered) ");
    *state = serde_json::from_str(&text).expect("the altered state deserializes");
    tracing::error!(sequence, "TEST HOOK: audit event altered in memory");
}

#[cfg(test)]
mod tests {
    use fleet_core::{Command, Context, StoredCommand};

    use super::*;
    use crate::types::RECENT_WRITES;

    fn item(name: &str, write_id: Option<&str>) -> ProposalItem {
        ProposalItem {
            command: StoredCommand::new(Command::AddSite { name: name.into() }),
            context: Context {
                now_ms: 1_700_000_000_000,
                actor: fleet_core::access::UNAUTHENTICATED_ACTOR.into(),
                reason: String::new(),
            },
            audit_format: fleet_core::audit::AUDIT_EVENT_FORMAT,
            write_id: write_id.map(str::to_string),
        }
    }

    #[test]
    fn a_repeated_write_id_changes_nothing_and_gives_the_first_result() {
        let mut data = StateMachineData::default();
        let first = apply_item(&mut data, &item("oslo", Some("a")), 7);
        assert_eq!(
            first,
            Ok(Outcome::SiteAdded {
                name: "oslo".into()
            })
        );
        let before = serde_json::to_string(&data.state).unwrap();
        let again = apply_item(&mut data, &item("oslo", Some("a")), 9);
        assert_eq!(again, first);
        assert_eq!(serde_json::to_string(&data.state).unwrap(), before);
        assert_eq!(data.recent_writes.get("a").unwrap().index, 7);
        // The same command under another id, or none, is a new write: refused.
        assert!(matches!(
            apply_item(&mut data, &item("oslo", Some("b")), 10),
            Err(CoreError::AlreadyExists { .. })
        ));
        assert!(apply_item(&mut data, &item("oslo", None), 11).is_err());
        // A refusal is remembered too, so its retry is refused alike.
        assert_eq!(
            apply_item(&mut data, &item("oslo", Some("b")), 12),
            data.recent_writes.get("b").unwrap().result
        );
    }

    #[test]
    fn recent_writes_forget_the_oldest_beyond_their_bound_and_survive_a_snapshot() {
        let mut data = StateMachineData::default();
        for i in 0..RECENT_WRITES + 10 {
            let id = format!("id{i}");
            let _ = apply_item(&mut data, &item(&format!("s{i}"), Some(&id)), i as u64);
        }
        assert_eq!(data.recent_writes.len(), RECENT_WRITES);
        assert!(data.recent_writes.get("id9").is_none());
        assert!(data.recent_writes.get("id10").is_some());
        let bytes = encode_versioned(&data);
        let read: StateMachineData = decode_versioned(&bytes).unwrap();
        assert_eq!(read.recent_writes, data.recent_writes);
    }

    #[test]
    fn snapshot_data_written_before_write_ids_reads_with_none_remembered() {
        let mut data = StateMachineData::default();
        let _ = apply_item(&mut data, &item("oslo", Some("a")), 1);
        let mut old = serde_json::to_value(&data).unwrap();
        old.as_object_mut()
            .unwrap()
            .remove("recent_writes")
            .unwrap();
        let mut versioned = vec![1u8];
        versioned.extend_from_slice(&serde_json::to_vec(&old).unwrap());
        let read: StateMachineData = decode_versioned(&versioned).unwrap();
        assert!(read.recent_writes.is_empty());
        assert_eq!(read.state.sites().count(), 1);
    }
}
