//! A running coordinator node ([`Coordinator`]): the write path (forwarded to the leader), the
//! read path (read-index, linearizable by default) and membership changes. Start-up and
//! shutdown are [`crate::serve`].
//!
//! Writes: any node accepts a write. The node that is not the leader forwards it, once per
//! attempt, to the leader it knows over `RaftService.Propose`; the leader checks the command
//! against its state, stamps the time, and hands it to the [`Batcher`], which packs concurrent
//! commands into one log entry (group commit). While there is no leader the write
//! waits up to [`LEADER_WAIT`]. Each write gets a write id where it enters; an attempt whose
//! answer was lost (the leader died or lost its leadership mid-write) is retried with the same
//! id, to whichever node leads next, and the state machine applies an id once
//! (`store::StateMachineData::recent_writes`). Only when no attempt gets an answer within
//! [`LEADER_WAIT`] is the outcome unknown to the caller.
//!
//! Reads: linearizable reads take a read index from the leader (`ensure_linearizable` on the
//! leader itself, `RaftService.ReadIndex` from a follower) and wait until this node has applied
//! up to it, then read the local state. Stale reads read the local state at once.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleet_core::{Command, Context, Outcome, State};
use openraft::{BasicNode, ChangeMembers, ServerState};

use crate::batcher::{BatchError, Batcher};
use crate::error::NodeError;
use crate::grpc::network::{PeerIdentity, Peers};
use crate::health::DiskHealth;
pub use crate::limits::MAX_CATCH_UP_TIMEOUT;
use crate::store::SharedState;
use crate::types::{ForwardedReply, ForwardedWrite, NodeId, ProposalItem, Raft, new_write_id};

/// How long a request waits for a leader before it fails with UNAVAILABLE.
pub const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting request looks for a leader again.
const LEADER_POLL: Duration = Duration::from_millis(50);
/// How long a node being added may take to catch up, by default, before the add fails and it
/// stays a learner.
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a member's address may take to answer `Identify` in membership checks.
pub const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times a membership check asks an address that does not answer.
pub const IDENTIFY_ATTEMPTS: u32 = 3;

/// Read consistency of one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Stale,
}

/// A running coordinator node. Shared by the gRPC services.
pub struct Coordinator {
    pub id: NodeId,
    /// The cluster id from this node's data dir.
    pub cluster_id: String,
    /// Held by the membership change in progress on this node (one at a time).
    pub(crate) membership_change: tokio::sync::Mutex<()>,
    pub raft: Raft,
    pub(crate) state: SharedState,
    pub(crate) peers: Peers,
    pub(crate) batcher: Batcher,
    /// This node's disk latencies: probe and log flushes.
    pub health: Arc<DiskHealth>,
    /// `RaftService.SetFailpoint` is served (tests and chaos runs only).
    pub allow_failpoint_rpc: bool,
    /// Changes whenever some cluster's assignments, or who may watch them, may have changed in
    /// the applied state.
    pub assignments_changed: tokio::sync::watch::Receiver<u64>,
    /// Agents' heartbeats that did not need a commit.
    pub heartbeats: crate::heartbeat::Heartbeats,
    /// This node's clock against the voters' (see [`crate::clock`]).
    pub clock: crate::clock::ClockCheck,
    /// The last time this node stamped on a command; stamps never go back.
    pub(crate) last_stamp_ms: std::sync::atomic::AtomicU64,
    /// Why this node must not campaign: (its disk is stalled, its clock is skewed).
    pub(crate) campaign_vetoes: std::sync::Mutex<(bool, bool)>,
    /// Open assignment watch streams per principal.
    pub watch_streams: Arc<crate::watches::WatchStreams>,
}

impl Coordinator {
    /// The time to stamp on a command now: this node's clock, but never earlier than the
    /// latest committed time or the last time this node stamped, so committed time never
    /// goes backwards (milliseconds since the Unix epoch).
    pub fn stamp_ms(&self) -> u64 {
        let floor = self.read_state(|s| s.last_time_ms());
        let now = now_ms().max(floor);
        let before = self
            .last_stamp_ms
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        now.max(before)
    }

    /// The disk guard's verdict: a stalled disk vetoes campaigning.
    pub(crate) fn set_disk_veto(&self, veto: bool) {
        self.update_vetoes(|v| v.0 = veto);
    }

    /// The clock check's verdict: a skewed clock vetoes campaigning, and a skewed leader stops
    /// sending heartbeats so that the other voters elect a new leader.
    pub(crate) fn act_on_clock(&self, skewed: bool) {
        self.update_vetoes(|v| v.1 = skewed);
        self.raft.runtime_config().heartbeat(!skewed);
    }

    fn update_vetoes(&self, change: impl FnOnce(&mut (bool, bool))) {
        let mut vetoes = self.campaign_vetoes.lock().expect("veto lock");
        let before = *vetoes;
        change(&mut vetoes);
        let campaign = !(vetoes.0 || vetoes.1);
        let could = !(before.0 || before.1);
        if campaign != could {
            self.raft.runtime_config().elect(campaign);
            tracing::info!(
                node = self.id,
                campaign,
                disk_stalled = vetoes.0,
                clock_skewed = vetoes.1,
                "election timer switched"
            );
        }
    }

    /// Writes a command through Raft, from any node. Returns the log index and the outcome.
    pub async fn write(
        &self,
        command: Command,
        actor: String,
        reason: String,
    ) -> Result<(u64, Outcome), NodeError> {
        // Malformed input is refused here, whatever the state and whether or not there is a
        // leader: the same answer the leader would give, without waiting for one.
        fleet_core::validate::command(&command, &actor, &reason)?;
        let started = Instant::now();
        let forwarded = ForwardedWrite {
            command,
            actor,
            reason,
            write_id: Some(new_write_id()),
        };
        // Why the last attempt that may have been delivered got no answer.
        let mut lost_answer: Option<String> = None;
        loop {
            match self.leader() {
                Some((leader, _)) if leader == self.id => {
                    match self.write_as_leader(&forwarded).await {
                        Err(NotLeader) => {}
                        Ok(Err(NodeError::OutcomeUnknown { detail })) => {
                            tracing::debug!(%detail, "a write's outcome was lost; retrying it");
                            lost_answer = Some(detail);
                        }
                        Ok(reply) => return reply,
                    }
                }
                Some((_, address)) => {
                    match self.peers.propose(&address, &forwarded).await {
                        Ok(reply) => {
                            let reply: ForwardedReply =
                                serde_json::from_slice(&reply).map_err(|e| {
                                    NodeError::OutcomeUnknown {
                                        detail: format!("unreadable reply from the leader: {e}"),
                                    }
                                })?;
                            let (index, outcome) = reply.map_err(NodeError::from)?;
                            self.await_applied(index).await;
                            return Ok((index, outcome));
                        }
                        // Not delivered, or the receiver was not the leader: try again.
                        Err(status) if status.code() == tonic::Code::Unavailable => {
                            tracing::debug!(%address, %status, "forwarding failed, retrying");
                        }
                        // Perhaps delivered (a connection that broke mid-call, a leader that
                        // lost its leadership mid-write): the same write id again is safe.
                        Err(status)
                            if matches!(
                                status.code(),
                                tonic::Code::Unknown
                                    | tonic::Code::Cancelled
                                    | tonic::Code::DeadlineExceeded
                                    | tonic::Code::Internal
                                    | tonic::Code::Aborted
                            ) =>
                        {
                            tracing::debug!(%address, %status, "a forwarded write's answer was lost; retrying it");
                            lost_answer = Some(format!("{address}: {}", status.message()));
                        }
                        // The leader refused the message itself (another cluster, too large):
                        // nothing was proposed, and asking again would get the same answer.
                        Err(status) => return Err(NodeError::from_leader(status)),
                    }
                }
                None => {}
            }
            if started.elapsed() > LEADER_WAIT {
                return Err(match lost_answer {
                    Some(detail) => NodeError::OutcomeUnknown { detail },
                    None => no_leader(started),
                });
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// Waits (bounded) until this node has applied `index`, so that a caller who wrote through
    /// a follower reads its own write from this node's state afterwards.
    async fn await_applied(&self, index: u64) {
        if let Err(e) = self
            .raft
            .wait(Some(LEADER_WAIT))
            .applied_index_at_least(Some(index), "read your write")
            .await
        {
            tracing::debug!(index, error = %e, "this node has not applied a forwarded write yet");
        }
    }

    /// Proposes a write on this node, which believes it leads. `Err(NotLeader)` when it does
    /// not (nothing was appended). The caller has validated it with `validate::command`.
    pub async fn write_as_leader(
        &self,
        write: &ForwardedWrite,
    ) -> Result<Result<(u64, Outcome), NodeError>, NotLeader> {
        // A node whose clock disagrees with the voters' stamps nothing; it stops leading.
        if !self.clock.may_stamp(now_ms()) {
            return Err(NotLeader);
        }
        // A retry of a write that was applied gets the first answer, before any check: the
        // state it would be checked against already contains it.
        if let Some(earlier) = self.applied_write(write) {
            return Ok(earlier);
        }
        let item = ProposalItem {
            command: fleet_core::StoredCommand::new(write.command.clone()),
            audit_format: fleet_core::audit::AUDIT_EVENT_FORMAT,
            context: Context {
                now_ms: self.stamp_ms(),
                actor: write.actor.clone(),
                reason: write.reason.clone(),
            },
            write_id: write.write_id.clone(),
        };
        // Refuse bad input before it reaches the log; apply checks again, deterministically.
        // Callers have run the state-free checks (`validate::command`); those against the state
        // remain. This node's applied state may be behind: a new leader that has not yet applied
        // its predecessor's entries, or a deposed leader that does not know it yet. A refusal read
        // from it ("not found", "already exists") would then answer from the past, so it is
        // confirmed after a read barrier; passing checks need no barrier, as apply decides.
        if self
            .read_state(|s| s.check_entry(&item.command, &item.context))
            .is_err()
        {
            if let Err(e) = self.raft.ensure_linearizable().await {
                tracing::debug!(error = %e, "could not confirm leadership for a refusal");
                return Err(NotLeader);
            }
            if let Some(earlier) = self.applied_write(write) {
                return Ok(earlier);
            }
            if let Err(e) = self.read_state(|s| s.check_entry(&item.command, &item.context)) {
                return Ok(Err(e.into()));
            }
        }
        match self.batcher.write(item).await {
            Ok(applied) => Ok(Ok(applied)),
            Err(BatchError::NotLeader) => Err(NotLeader),
            Err(BatchError::Refused(refusal)) => Ok(Err(refusal.into())),
            // The entry may have been appended: never report this as safe to retry.
            Err(BatchError::Raft(detail)) => Ok(Err(NodeError::OutcomeUnknown { detail })),
        }
    }

    /// What `write` gave, when this node has applied it before (a retry whose first attempt
    /// was applied): the index of the entry that applied it and its result.
    fn applied_write(&self, write: &ForwardedWrite) -> Option<Result<(u64, Outcome), NodeError>> {
        let id = write.write_id.as_deref()?;
        let data = self.state.read().expect("state lock poisoned");
        let earlier = data.recent_writes.get(id)?;
        Some(
            earlier
                .result
                .clone()
                .map(|outcome| (earlier.index, outcome))
                .map_err(NodeError::from),
        )
    }

    /// Waits until a read at `consistency` may be served from this node's state.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), NodeError> {
        if consistency == Consistency::Stale {
            return Ok(());
        }
        // A deliberate bug for the chaos suite's own test: serve a linearizable read from the
        // local state without the barrier, which its checker must catch.
        fail::fail_point!("stale-linearizable-read", |_| Ok(()));
        let started = Instant::now();
        loop {
            let read_index = match self.leader() {
                Some((leader, _)) if leader == self.id => {
                    match self.raft.ensure_linearizable().await {
                        Ok(_) => return Ok(()),
                        Err(e) => {
                            tracing::debug!(error = %e, "leader could not confirm a read");
                            None
                        }
                    }
                }
                Some((_, address)) => match self.peers.read_index(&address).await {
                    Ok(index) => Some(index),
                    Err(status) => {
                        tracing::debug!(%address, %status, "read index failed, retrying");
                        None
                    }
                },
                None => None,
            };
            if let Some(index) = read_index {
                let remaining = LEADER_WAIT.saturating_sub(started.elapsed());
                return self
                    .raft
                    .wait(Some(remaining))
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .map(|_| ())
                    .map_err(|_| no_leader(started));
            }
            if started.elapsed() > LEADER_WAIT {
                return Err(no_leader(started));
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// Reads at `consistency`.
    pub async fn read<T>(
        &self,
        consistency: Consistency,
        query: impl FnOnce(&State) -> T,
    ) -> Result<T, NodeError> {
        self.read_barrier(consistency).await?;
        Ok(self.read_state(query))
    }

    /// Runs `query` on this node's applied state, as it is now.
    pub fn read_state<T>(&self, query: impl FnOnce(&State) -> T) -> T {
        query(&self.state.read().expect("state lock poisoned").state)
    }

    /// The read index for a follower's linearizable read; leader only.
    pub async fn read_index(&self) -> Result<u64, NodeError> {
        let (read_log_id, _applied) = self
            .raft
            .get_read_log_id()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        Ok(read_log_id.map_or(0, |l| l.index))
    }

    /// The leader this node knows of, with its address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// Adds a node: checks that `address` answers as node `id` of this cluster, adds it as a
    /// learner, waits (up to `catch_up`) until the leader's replication shows it caught up, and
    /// only then makes it a voter. Forwarded to the leader from other nodes.
    ///
    /// # Errors
    /// `InvalidArgument` for an address that is not HOST:PORT; `AlreadyExists` for an id that
    /// is a voter, or an id or address that another member has; `FailedPrecondition` when the
    /// address does not answer as that node or the learner was removed meanwhile;
    /// `MembershipBusy` while another membership change runs; `CatchUpTimeout` when the learner
    /// did not catch up in time (it then stays a learner).
    pub async fn add_coordinator(
        &self,
        id: NodeId,
        address: String,
        catch_up: Duration,
    ) -> Result<u64, NodeError> {
        if address.parse::<SocketAddr>().is_err() {
            return Err(NodeError::InvalidArgument {
                field: "address",
                message: format!("{address:?} is not HOST:PORT with an IP address"),
                hint: "give the address the node listens on, e.g. 127.0.0.1:7401".into(),
            });
        }
        if let Some(leader_address) = self.leader_elsewhere()? {
            return self
                .peers
                .add_coordinator(&leader_address, id, address, catch_up)
                .await
                .map_err(NodeError::from_leader);
        }
        // The learner is added under the lock; the catch-up wait runs without it, so that a
        // learner that never catches up can be removed meanwhile. `added_at` is the log index of
        // the membership that has the learner.
        let added_at = {
            let _one_at_a_time = self
                .membership_change
                .try_lock()
                .map_err(|_| NodeError::MembershipBusy)?;
            let membership = self.membership();
            let is_voter = membership.voter_ids().any(|v| v == id);
            if let Some(node) = membership.get_node(&id) {
                if is_voter {
                    return Err(NodeError::AlreadyExists {
                        message: format!("node {id} is already a voter, at {}", node.addr),
                        hint: format!(
                            "node ids are never reused while a member has them. To bring back a \
                             node that lost its data dir: fleet-ctl coordinator remove --id {id}, \
                             then start it with an empty data dir and --join"
                        ),
                    });
                }
                if node.addr != address {
                    return Err(NodeError::AlreadyExists {
                        message: format!(
                            "node {id} is a learner at {}, not at {address}",
                            node.addr
                        ),
                        hint: format!("remove it first: fleet-ctl coordinator remove --id {id}"),
                    });
                }
            }
            if let Some((other, _)) = membership
                .nodes()
                .find(|(other, node)| **other != id && node.addr == address)
            {
                return Err(NodeError::AlreadyExists {
                    message: format!("{address} is the address of node {other}"),
                    hint: "give the new node's own address (its --advertise)".into(),
                });
            }
            self.check_answers_as(id, &address).await?;
            if membership.get_node(&id).is_none() {
                let response = self
                    .raft
                    .add_learner(id, BasicNode::new(address.clone()), false)
                    .await
                    .map_err(|e| NodeError::Raft(e.to_string()))?;
                tracing::info!(node = id, %address, "coordinator added as a learner");
                response.log_id.index
            } else {
                self.membership_index()
            }
        };
        self.wait_caught_up(id, added_at, catch_up).await?;
        let _one_at_a_time = self
            .membership_change
            .try_lock()
            .map_err(|_| NodeError::MembershipBusy)?;
        let membership = self.membership();
        let still_learner =
            membership.get_node(&id).is_some() && !membership.voter_ids().any(|v| v == id);
        if !still_learner {
            return Err(NodeError::FailedPrecondition {
                message: format!("node {id} is no longer a learner (removed while catching up?)"),
                hint: "see `fleet-ctl coordinator status`".into(),
            });
        }
        let response = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        tracing::info!(node = id, "coordinator caught up and made a voter");
        Ok(response.log_id.index)
    }

    /// Removes a voter or learner. Refused when the voters left would not have a quorum of
    /// nodes that answer, unless `force`.
    ///
    /// # Errors
    /// `NotFound` for a node that is not a member; `FailedPrecondition` for the last voter or
    /// for a removal that would leave no reachable quorum (without `force`); `MembershipBusy`
    /// while another membership change runs.
    pub async fn remove_coordinator(&self, id: NodeId, force: bool) -> Result<u64, NodeError> {
        if let Some(leader_address) = self.leader_elsewhere()? {
            return self
                .peers
                .remove_coordinator(&leader_address, id, force)
                .await
                .map_err(NodeError::from_leader);
        }
        let _one_at_a_time = self
            .membership_change
            .try_lock()
            .map_err(|_| NodeError::MembershipBusy)?;
        let membership = self.membership();
        if membership.get_node(&id).is_none() {
            return Err(NodeError::NotFound {
                message: format!("node {id} is not a member of this coordinator cluster"),
                hint: "list the members with `fleet-ctl coordinator status`".into(),
            });
        }
        let change = if membership.voter_ids().any(|v| v == id) {
            let remaining: Vec<(NodeId, String)> = membership
                .voter_ids()
                .filter(|v| *v != id)
                .filter_map(|v| membership.get_node(&v).map(|n| (v, n.addr.clone())))
                .collect();
            if remaining.is_empty() {
                return Err(NodeError::FailedPrecondition {
                    message: format!("node {id} is the last voter"),
                    hint: "add another node first".into(),
                });
            }
            let mut reachable = Vec::new();
            for (voter, address) in &remaining {
                if *voter == self.id || self.check_answers_as(*voter, address).await.is_ok() {
                    reachable.push(*voter);
                }
            }
            let quorum = remaining.len() / 2 + 1;
            if reachable.len() < quorum && !force {
                return Err(NodeError::FailedPrecondition {
                    message: format!(
                        "removing node {id} leaves voters {:?}, of which only {:?} answer; a \
                         quorum of them is {quorum}",
                        remaining.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
                        reachable
                    ),
                    hint: "bring a voter back first, or remove anyway with --force (writes stop \
                           until a quorum answers)"
                        .into(),
                });
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let response = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        tracing::info!(node = id, force, "coordinator removed");
        Ok(response.log_id.index)
    }

    /// The latest membership in this node's log (committed or not).
    pub(crate) fn membership(&self) -> openraft::Membership<NodeId, BasicNode> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// The log index of the membership [`Self::membership`] returns (0 for the initial one).
    fn membership_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .log_id()
            .map_or(0, |l| l.index)
    }

    /// `None` when this node leads; the leader's address when another node does.
    fn leader_elsewhere(&self) -> Result<Option<String>, NodeError> {
        match self.leader() {
            Some((leader, _)) if leader == self.id => Ok(None),
            Some((_, address)) => Ok(Some(address)),
            None => Err(NodeError::NoLeader { waited_ms: 0 }),
        }
    }

    /// Checks that `address` answers `Identify` as node `id` of this cluster. A call that
    /// fails in transport is tried [`IDENTIFY_ATTEMPTS`] times, so that a node slow to accept
    /// a connection (a loaded machine) is not refused for good.
    async fn check_answers_as(&self, id: NodeId, address: &str) -> Result<(), NodeError> {
        let mut answer = identify(&self.peers, address).await;
        for _ in 1..IDENTIFY_ATTEMPTS {
            if answer.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            answer = identify(&self.peers, address).await;
        }
        let refuse = |message: String| NodeError::FailedPrecondition {
            message,
            hint: format!(
                "start node {id} first (with --join, or an empty data dir) and give the address \
                 it advertises (--advertise)"
            ),
        };
        match answer {
            Err(status) => Err(refuse(format!(
                "nothing answers as node {id} at {address}: {}",
                status.message()
            ))),
            Ok(reply) if reply.cluster_id != self.cluster_id => Err(refuse(format!(
                "{address} answers as a node of another cluster ({}; this is {})",
                reply.cluster_id, self.cluster_id
            ))),
            Ok(reply) if reply.node_id != id => Err(refuse(format!(
                "{address} answers as node {}, not node {id}",
                reply.node_id
            ))),
            Ok(_) => Ok(()),
        }
    }

    /// Waits until the leader's replication metrics show learner `id` at the leader's last log
    /// index as it was when the wait began; logs progress every second. `added_at` is the log
    /// index of the membership that added the learner: the metrics are published after the
    /// write returns, so a membership older than that one says nothing about a removal.
    async fn wait_caught_up(
        &self,
        id: NodeId,
        added_at: u64,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let started = Instant::now();
        let target = self
            .raft
            .metrics()
            .borrow()
            .last_log_index
            .unwrap_or(0)
            .max(added_at);
        let mut last_report = Instant::now();
        loop {
            let matched = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index)
            };
            if matched.is_some_and(|m| m >= target) {
                return Ok(());
            }
            if self.membership_index() >= added_at && self.membership().get_node(&id).is_none() {
                return Err(NodeError::FailedPrecondition {
                    message: format!("node {id} was removed while it caught up"),
                    hint: "add it again if that was not meant".into(),
                });
            }
            if started.elapsed() >= timeout {
                return Err(NodeError::CatchUpTimeout {
                    message: format!(
                        "node {id} is a learner and has not caught up within {} s (at {} of {target})",
                        timeout.as_secs(),
                        matched.map_or("nothing".to_string(), |m| m.to_string())
                    ),
                    hint: format!(
                        "it stays a learner and does not count for quorum. Add it again once it \
                         is reachable, or remove it: fleet-ctl coordinator remove --id {id}"
                    ),
                });
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                tracing::info!(
                    node = id,
                    ?matched,
                    target,
                    "waiting for the learner to catch up"
                );
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Role name for status output.
    pub fn role(state: ServerState) -> &'static str {
        match state {
            ServerState::Leader => "Leader",
            ServerState::Follower => "Follower",
            ServerState::Candidate => "Candidate",
            ServerState::Learner => "Learner",
            ServerState::Shutdown => "Shutdown",
        }
    }
}

/// Asks `address` who it is, within [`IDENTIFY_TIMEOUT`].
pub async fn identify(peers: &Peers, address: &str) -> Result<PeerIdentity, tonic::Status> {
    peers.identify(address, IDENTIFY_TIMEOUT).await
}

/// This node is not the leader; nothing was proposed.
#[derive(Debug)]
pub struct NotLeader;

fn no_leader(started: Instant) -> NodeError {
    NodeError::NoLeader {
        waited_ms: started.elapsed().as_millis() as u64,
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
