//! The Raft log, vote and state machine, kept in one sled database per node.
//!
//! # On-disk format
//!
//! One sled database at `DATA_DIR/sled`, with these trees (all values JSON unless said):
//!
//! | tree       | key                          | value                              | durability |
//! |------------|------------------------------|------------------------------------|------------|
//! | `log`      | log index, u64 big-endian    | `openraft::Entry<TypeConfig>`      | flushed before openraft's append callback fires |
//! | `meta`     | `vote`                       | `openraft::Vote`                   | flushed before `save_vote` returns |
//! | `meta`     | `committed`                  | `Option<LogId>`                    | written unflushed; only an optimisation at start-up |
//! | `meta`     | `last_purged`                | `LogId`                            | flushed with the purge |
//! | `snapshot` | `meta`                       | `openraft::SnapshotMeta`           | flushed (with `data`, in one batch) before the snapshot is used |
//! | `snapshot` | `data`                       | JSON of [`StateMachineData`]       | as above |
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

use fleet_core::{Outcome, State};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::health::DiskHealth;
use crate::tasks::spawn_named;
use crate::types::{ApplyResult, LogId, NodeId, StorageError, StoredMembership, TypeConfig};

/// Exit code of a node stopped by a storage error (EX_IOERR).
pub const EXIT_STORAGE_FAILURE: i32 = 74;

/// Most append callbacks waiting for one flush; appends beyond it wait for room.
pub const MAX_PENDING_FLUSHES: usize = 4096;

/// Flushes (fsyncs) the database on this thread, through the failpoint `point` (`log-flush` or
/// `vote-flush`): `sleep(MS)` slows the flush, `return` fails it. Returns how long it took.
pub fn flush_blocking(db: &sled::Db, point: &str) -> std::io::Result<Duration> {
    let started = Instant::now();
    fail::fail_point!(point, |_| Err(std::io::Error::other(format!(
        "injected failure at failpoint {point}"
    ))));
    db.flush().map_err(std::io::Error::other)?;
    Ok(started.elapsed())
}

/// Logs a storage failure and stops the process. A node that cannot persist must not go on.
pub fn fail_stop(what: &str, error: &dyn std::fmt::Display) -> ! {
    tracing::error!(operation = what, %error, "storage failure: stopping the node");
    std::process::exit(EXIT_STORAGE_FAILURE);
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("storage types always serialize")
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

    fn flush(&self, what: &str, point: &str) {
        if let Err(e) = flush_blocking(&self.db, point) {
            fail_stop(what, &e);
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
            entries.push(decode("log entry", &value));
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.meta_get("last_purged");
        let last = match self.log.last() {
            Ok(v) => v.map(|(_, b)| decode::<Entry<TypeConfig>>("log entry", &b).log_id),
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
        self.flush("flush vote", "vote-flush");
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
            batch.insert(&index_key(entry.log_id.index), encode(&entry));
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
        self.flush("flush truncate", "log-flush");
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
        self.flush("flush purge", "log-flush");
        Ok(())
    }
}

/// What the state machine holds: the fleet state and where it stands in the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateMachineData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: State,
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
            Some(bytes) => decode("snapshot data", &bytes),
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

    /// A receiver that changes whenever some cluster's assignments may have changed.
    pub fn watch_assignments(&self) -> tokio::sync::watch::Receiver<u64> {
        self.assignments_changed.subscribe()
    }

    fn notify_assignments(&self) {
        self.assignments_changed
            .send_modify(|generation| *generation += 1);
    }

    fn save_snapshot(&self, meta: &SnapshotMeta<NodeId, openraft::BasicNode>, data: &[u8]) {
        let mut batch = sled::Batch::default();
        batch.insert("meta", encode(meta));
        batch.insert("data", data);
        if let Err(e) = self.snapshot.apply_batch(batch) {
            fail_stop("write snapshot", &e);
        }
        if let Err(e) = flush_blocking(&self.db, "log-flush") {
            fail_stop("flush snapshot", &e);
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (bytes, last_applied, last_membership) = {
            let data = self.data.read().expect("state lock poisoned");
            (
                encode(&*data),
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
        self.save_snapshot(&meta, &bytes);
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
                    .map(|item| data.state.apply(&item.command, &item.context))
                    .collect(),
                EntryPayload::Membership(membership) => {
                    data.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            removed |= result
                .iter()
                .any(|r| matches!(r, Ok(Outcome::ClusterRemoved { .. })));
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
        let mut received: StateMachineData = serde_json::from_slice(&bytes)
            .map_err(|e| openraft::StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        received.last_applied = meta.last_log_id;
        received.last_membership = meta.last_membership.clone();
        self.save_snapshot(meta, &bytes);
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
    let mut value = serde_json::to_value(&*state).expect("the state serializes");
    let Some(summary) = value
        .pointer_mut(&format!("/audit/{}/summary", sequence.saturating_sub(1)))
        .and_then(|s| s.as_str().map(|t| t.to_string()))
    else {
        return tracing::error!(sequence, "audit-tamper: no such event");
    };
    value["audit"][sequence - 1]["summary"] = format!("{summary} (altered)").into();
    *state = serde_json::from_value(value).expect("the altered state deserializes");
    tracing::error!(sequence, "TEST HOOK: audit event altered in memory");
}
