//! Disk-aware leadership. etcd and Consul keep a leader whose disk has turned slow, and every
//! write waits for that disk; a fleet coordinator moves leadership away instead.
//!
//! The `leadership-guard` task of every node judges its own disk once a second from the
//! per-second p99 of all its fdatasyncs (log flushes and probe writes, see [`DiskHealth`]):
//!
//! - **Stalled** when each of the last `sustain` seconds had a p99 above the limit (10 ms,
//!   etcd's rule), or one fdatasync has hung for `sustain`. A single slow second is not enough.
//! - **Clear again** only when no second of the last `sustain` had a p99 at or above half the
//!   limit (hysteresis), at least one had samples, and nothing hangs.
//!
//! A stalled node does not campaign (openraft's `elect` switch), unless no leader has been
//! known for `leaderless_override`: availability wins over preference when every disk is slow.
//!
//! A stalled leader that has led for at least `dwell` hands over: it asks the other voters
//! for their disk health (`GetCoordinatorStatus`), picks the follower that is not stalled,
//! whose recent p99 is under the limit and under half its own, and whose log is within
//! [`MAX_SUCCESSOR_LAG`] entries of its own, preferring the lowest p99. It holds new entries
//! back (waiting for those in flight to finish), waits until that
//! follower has every entry, and sends it `TakeLeadership`. The follower checks its own disk
//! and log and campaigns at once; the old leader grants the vote (its log is no longer, and a
//! leader's own lease does not stop it from voting) and steps down. Once another node leads,
//! the old leader commits a `RecordLeadershipHandover` command through it, so each hand-over is
//! in the audit log with the figures behind it. A failed attempt is retried after
//! `retry_after`. Nothing hands leadership back: a healthy leader never hands over, and the
//! old leader, still stalled, does not campaign.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_core::Command;
use openraft::ServerState;
use tokio::task::JoinSet;

use crate::coordinator::Coordinator;
pub use crate::limits::MAX_SUCCESSOR_LAG;
use crate::types::{HandoverReply, HandoverRequest, NodeId};
use fleet_disk::FDATASYNC_P99_LIMIT;

/// How often the guard judges the disk.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long the leader waits for a follower's status.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the leader holds writes back for the successor to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
/// How long the leader waits for the successor to win its election.
const ELECTION_WAIT: Duration = Duration::from_secs(3);

/// The guard's knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// Turns hand-over and the campaign switch off; the verdict is still reported.
    pub enabled: bool,
    /// The fdatasync p99 limit, in microseconds.
    pub limit_us: u64,
    /// Seconds in a row above the limit before the disk counts as stalled.
    pub sustain_s: usize,
    /// A leader hands over only after it has led this long.
    pub dwell: Duration,
    /// Time between two hand-over attempts of one leader.
    pub retry_after: Duration,
    /// A stalled node campaigns after this long without any leader.
    pub leaderless_override: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: true,
            limit_us: FDATASYNC_P99_LIMIT.as_micros() as u64,
            sustain_s: 3,
            dwell: Duration::from_secs(5),
            retry_after: Duration::from_secs(5),
            leaderless_override: Duration::from_secs(3),
        }
    }
}

/// Whether this node's disk is too slow to lead, with hysteresis. Pure: fed figures, no clock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StallVerdict {
    stalled: bool,
}

impl StallVerdict {
    pub fn stalled(&self) -> bool {
        self.stalled
    }

    /// Takes the p99 of each of the last completed seconds (oldest first, `None` for a second
    /// without fdatasyncs) and the age of the oldest fdatasync still running; returns the
    /// verdict.
    pub fn observe(
        &mut self,
        p99s_us: &[Option<u64>],
        in_flight: Option<Duration>,
        config: &GuardConfig,
    ) -> bool {
        let sustain = Duration::from_secs(config.sustain_s as u64);
        let hung = in_flight.is_some_and(|d| d >= sustain);
        let slow = p99s_us.len() >= config.sustain_s
            && p99s_us
                .iter()
                .all(|p| p.is_some_and(|p| p > config.limit_us));
        // Seconds without samples say nothing: a stalled follower without a leader flushes
        // nothing, and must not look recovered for that.
        let calm = in_flight.is_none_or(|d| d.as_micros() < u128::from(config.limit_us))
            && p99s_us.iter().any(Option::is_some)
            && p99s_us
                .iter()
                .all(|p| p.is_none_or(|p| p < config.limit_us / 2));
        if hung || slow {
            self.stalled = true;
        } else if calm {
            self.stalled = false;
        }
        self.stalled
    }
}

/// The leader's figures for each judged second: its p99, or for a second without samples the
/// age of the fdatasync still running (a hung disk finishes none). These go into the audit
/// record, and their maximum is what a successor must clearly beat.
pub fn leader_figures(p99s_us: &[Option<u64>], in_flight: Option<Duration>) -> Vec<u64> {
    let hung_us = in_flight.map_or(0, |d| d.as_micros() as u64);
    p99s_us.iter().map(|p| p.unwrap_or(hung_us)).collect()
}

/// A follower as the leader sees it when it looks for a successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    pub address: String,
    /// The last log index the leader knows the follower holds.
    pub matched_index: u64,
    pub stalled: bool,
    /// p99 and sample count of all its fdatasyncs over the last 5 s.
    pub recent_p99_us: u64,
    pub recent_count: u64,
    /// p99 of its log flushes over the last minute.
    pub flush_1m_p99_us: u64,
}

impl Candidate {
    /// The figure candidates are ranked by: the recent p99, or the last minute's log-flush p99
    /// when the recent window is empty.
    pub fn score_us(&self) -> u64 {
        if self.recent_count > 0 {
            self.recent_p99_us
        } else {
            self.flush_1m_p99_us
        }
    }
}

/// The follower to hand leadership to: not stalled, scoring under the limit and under half
/// of `leader_p99_us`, the leader's worst judged second (so leadership only moves to a
/// clearly better disk), within
/// [`MAX_SUCCESSOR_LAG`] entries of `leader_last_index`; the lowest score wins, then the
/// longest log, then the lowest id. `None` when no follower qualifies.
pub fn choose_successor<'a>(
    leader_last_index: u64,
    leader_p99_us: u64,
    candidates: &'a [Candidate],
    config: &GuardConfig,
) -> Option<&'a Candidate> {
    candidates
        .iter()
        .filter(|c| !c.stalled)
        .filter(|c| c.score_us() < config.limit_us && c.score_us() < leader_p99_us / 2)
        .filter(|c| c.matched_index + MAX_SUCCESSOR_LAG >= leader_last_index)
        .min_by_key(|c| (c.score_us(), u64::MAX - c.matched_index, c.id))
}

/// Judges this node's disk once a second, switches campaigning, and hands leadership over
/// when this node leads on a stalled disk.
///
/// # Cancel safety
/// Safe to drop at any point; a hand-over cut short releases the held writes when the
/// coordinator is dropped with it.
pub async fn run_guard(coordinator: Arc<Coordinator>, config: GuardConfig) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut verdict = StallVerdict::default();
    let mut last_leader_seen = Instant::now();
    let mut leader_since: Option<Instant> = None;
    let mut last_attempt: Option<Instant> = None;
    let mut may_campaign = true;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let health = &coordinator.health;
        let p99s = health.second_p99s(now, config.sustain_s);
        let was_stalled = verdict.stalled();
        let stalled = verdict.observe(&p99s, health.oldest_in_flight(now), &config);
        health.set_stalled(stalled);
        if stalled != was_stalled {
            if stalled {
                tracing::warn!(
                    node = coordinator.id,
                    p99s_us = ?p99s,
                    limit_us = config.limit_us,
                    "disk stalled: fdatasync p99 above the limit for {} s; this node will not lead",
                    config.sustain_s
                );
            } else {
                tracing::info!(node = coordinator.id, p99s_us = ?p99s, "disk recovered");
            }
        }
        if !config.enabled {
            continue;
        }

        let (state, leader) = {
            let metrics = coordinator.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state, metrics.current_leader)
        };
        if leader.is_some() {
            last_leader_seen = now;
        }
        let campaign = !stalled
            || now.saturating_duration_since(last_leader_seen) >= config.leaderless_override;
        if campaign != may_campaign {
            coordinator.set_disk_veto(!campaign);
            may_campaign = campaign;
        }

        if state != ServerState::Leader {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert(now);
        let dwelt = now.saturating_duration_since(since) >= config.dwell;
        let may_retry =
            last_attempt.is_none_or(|t| now.saturating_duration_since(t) >= config.retry_after);
        if stalled && dwelt && may_retry {
            last_attempt = Some(now);
            let figures = leader_figures(&p99s, health.oldest_in_flight(now));
            if let Err(why) = hand_over(&coordinator, figures, &config).await {
                tracing::warn!(
                    node = coordinator.id,
                    reason = %why,
                    retry_in_s = config.retry_after.as_secs(),
                    "leader's disk is stalled but leadership stays here"
                );
            }
        }
    }
}

/// One hand-over attempt by the leader.
async fn hand_over(
    coordinator: &Coordinator,
    from_p99s_us: Vec<u64>,
    config: &GuardConfig,
) -> Result<(), String> {
    let metrics = coordinator.raft.metrics().borrow().clone();
    let replication = metrics.replication.clone().unwrap_or_default();
    let membership = metrics.membership_config.membership();
    let mut asks = JoinSet::new();
    for id in membership.voter_ids().filter(|id| *id != coordinator.id) {
        let Some(node) = membership.get_node(&id) else {
            continue;
        };
        let address = node.addr.clone();
        let peers = coordinator.peers.clone();
        let matched_index = replication
            .get(&id)
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.index);
        asks.spawn(async move {
            let status = peers.coordinator_status(&address, STATUS_TIMEOUT).await;
            let disk = status.ok()?.disk?;
            Some(Candidate {
                id,
                address,
                matched_index,
                stalled: disk.stalled,
                recent_p99_us: disk.recent_p99_us,
                recent_count: disk.recent_count,
                flush_1m_p99_us: disk.flush_1m_p99_us,
            })
        });
    }
    let mut candidates: Vec<Candidate> = asks.join_all().await.into_iter().flatten().collect();
    candidates.sort_by_key(|c| c.id);
    let last_index = metrics.last_log_index.unwrap_or(0);
    let leader_p99_us = from_p99s_us.iter().copied().max().unwrap_or(0);
    let Some(successor) = choose_successor(last_index, leader_p99_us, &candidates, config).cloned()
    else {
        return Err(format!(
            "no follower is up to date with a healthy disk: {candidates:?}"
        ));
    };
    tracing::warn!(
        node = coordinator.id,
        successor = successor.id,
        successor_p99_us = successor.score_us(),
        p99s_us = ?from_p99s_us,
        "disk stalled: handing leadership over"
    );

    let moved = match tokio::time::timeout(CATCH_UP_WAIT, coordinator.batcher.hold()).await {
        Ok(()) => hand_over_to(coordinator, &successor, &from_p99s_us, config).await,
        Err(_) => Err("entries in flight did not finish in time".to_string()),
    };
    coordinator.batcher.release();
    let (new_leader, term) = moved?;

    // Recorded by the old leader once it follows: the write goes to the new leader, and is
    // right whichever follower won the election in the end.
    let to_p99_us = candidates
        .iter()
        .find(|c| c.id == new_leader)
        .map_or(0, Candidate::score_us);
    let command = Command::RecordLeadershipHandover {
        from_node: coordinator.id,
        to_node: new_leader,
        term,
        from_p99s_us,
        to_p99_us,
        limit_us: config.limit_us,
    };
    let reason = format!(
        "disk-aware leadership: fdatasync p99 on node {} stayed above {} us",
        coordinator.id, config.limit_us
    );
    match coordinator
        .write(command, format!("coordinator:{}", coordinator.id), reason)
        .await
    {
        Ok((index, _)) => {
            tracing::info!(
                from = coordinator.id,
                to = new_leader,
                term,
                index,
                "hand-over recorded"
            )
        }
        Err(e) => tracing::warn!(error = %e, "hand-over not recorded in the audit log"),
    }
    Ok(())
}

/// A leader whose clock is skewed (see [`crate::clock`]) asks the most up-to-date other voter
/// to take over, as a hand-over for a stalled disk does, without holding writes back (a skewed
/// leader stamps none) and without an audit event (it records disk figures). The voter
/// refuses when its own clock is skewed or its disk stalled.
pub(crate) async fn hand_over_for_clock(coordinator: &Coordinator) -> Result<(), String> {
    let metrics = coordinator.raft.metrics().borrow().clone();
    let replication = metrics.replication.clone().unwrap_or_default();
    let membership = metrics.membership_config.membership();
    let successor = membership
        .voter_ids()
        .filter(|id| *id != coordinator.id)
        .filter_map(|id| {
            let address = membership.get_node(&id)?.addr.clone();
            let matched_index = replication
                .get(&id)
                .and_then(|l| l.as_ref())
                .map_or(0, |l| l.index);
            Some(Candidate {
                id,
                address,
                matched_index,
                stalled: false,
                recent_p99_us: 0,
                recent_count: 0,
                flush_1m_p99_us: 0,
            })
        })
        .max_by_key(|c| (c.matched_index, std::cmp::Reverse(c.id)))
        .ok_or_else(|| "no other voter".to_string())?;
    tracing::warn!(
        node = coordinator.id,
        successor = successor.id,
        "clock skewed: handing leadership over"
    );
    hand_over_to(coordinator, &successor, &[], &GuardConfig::default())
        .await
        .map(|_| ())
}

/// Waits for the successor to catch up, asks it to take over, and waits for a new leader.
/// Returns the new leader and its term.
async fn hand_over_to(
    coordinator: &Coordinator,
    successor: &Candidate,
    from_p99s_us: &[u64],
    config: &GuardConfig,
) -> Result<(NodeId, u64), String> {
    // Wait until the successor holds every entry this leader has.
    let successor_id = successor.id;
    let caught_up = coordinator
        .raft
        .wait(Some(CATCH_UP_WAIT))
        .metrics(
            |m| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&successor_id).cloned().flatten())
                    .map(|l| l.index);
                m.state == ServerState::Leader && matched >= m.last_log_index
            },
            "successor caught up",
        )
        .await
        .map_err(|e| format!("node {successor_id} did not catch up: {e}"))?;

    let request = HandoverRequest {
        from_node: coordinator.id,
        term: caught_up.current_term,
        leader_last_index: caught_up.last_log_index.unwrap_or(0),
        from_p99s_us: from_p99s_us.to_vec(),
        to_p99_us: successor.score_us(),
        limit_us: config.limit_us,
    };
    let reply = coordinator
        .peers
        .take_leadership(&successor.address, &request, STATUS_TIMEOUT)
        .await
        .map_err(|why| format!("node {successor_id}: {why}"))?;
    reply.map_err(|why| format!("node {successor_id} declined: {why}"))?;

    let own_id = coordinator.id;
    let moved = coordinator
        .raft
        .wait(Some(ELECTION_WAIT))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != own_id),
            "another node leads",
        )
        .await
        .map_err(|e| format!("node {successor_id} did not take leadership: {e}"))?;
    let new_leader = moved.current_leader.expect("checked by the wait");
    tracing::info!(
        from = own_id,
        to = new_leader,
        term = moved.current_term,
        "leadership handed over"
    );
    Ok((new_leader, moved.current_term))
}

impl Coordinator {
    /// A leader with a stalled disk or a skewed clock asks this node to take over: refused when
    /// this node's own disk is stalled, its own clock skewed, or its log is shorter than the
    /// leader's; otherwise it campaigns at once.
    pub async fn take_leadership(&self, request: HandoverRequest) -> HandoverReply {
        if self.health.report().stalled {
            return Err(format!("node {}'s own disk is stalled", self.id));
        }
        if self.clock.skewed() {
            return Err(format!("node {}'s own clock is skewed", self.id));
        }
        let (state, last_index) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state, metrics.last_log_index.unwrap_or(0))
        };
        if state == ServerState::Leader {
            return Ok(());
        }
        if last_index < request.leader_last_index {
            return Err(format!(
                "node {} holds the log up to {last_index}, the leader up to {}",
                self.id, request.leader_last_index
            ));
        }
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| format!("node {} cannot campaign: {e}", self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GuardConfig {
        GuardConfig::default()
    }

    fn candidate(id: NodeId, matched_index: u64, recent_p99_us: u64) -> Candidate {
        Candidate {
            id,
            address: format!("127.0.0.1:{}", 7400 + id),
            matched_index,
            stalled: false,
            recent_p99_us,
            recent_count: 50,
            flush_1m_p99_us: recent_p99_us,
        }
    }

    #[test]
    fn one_slow_second_does_not_stall_a_disk_but_three_in_a_row_do() {
        let config = config();
        let mut verdict = StallVerdict::default();
        assert!(!verdict.observe(&[Some(800), Some(45_000), Some(900)], None, &config));
        assert!(!verdict.observe(&[Some(45_000), Some(900), Some(52_000)], None, &config));
        assert!(verdict.observe(&[Some(51_000), Some(52_000), Some(50_500)], None, &config));
    }

    #[test]
    fn an_idle_second_breaks_a_slow_streak() {
        let mut verdict = StallVerdict::default();
        assert!(!verdict.observe(&[Some(51_000), None, Some(50_500)], None, &config()));
    }

    #[test]
    fn a_hung_fdatasync_stalls_the_disk_without_any_finished_sample() {
        let config = config();
        let mut verdict = StallVerdict::default();
        assert!(!verdict.observe(&[None, None, None], Some(Duration::from_secs(2)), &config));
        assert!(verdict.observe(&[None, None, None], Some(Duration::from_secs(3)), &config));
    }

    #[test]
    fn a_stalled_disk_clears_only_below_half_the_limit() {
        let config = config();
        let mut verdict = StallVerdict::default();
        verdict.observe(&[Some(20_000); 3], None, &config);
        assert!(verdict.stalled());
        // Under the limit but above half of it: still stalled (hysteresis).
        assert!(verdict.observe(&[Some(7_000), Some(6_000), Some(8_000)], None, &config));
        assert!(verdict.observe(&[Some(6_000), Some(3_000), Some(900)], None, &config));
        assert!(!verdict.observe(&[Some(3_000), Some(900), Some(700)], None, &config));
    }

    #[test]
    fn seconds_without_samples_do_not_clear_a_stalled_disk() {
        let config = config();
        let mut verdict = StallVerdict::default();
        verdict.observe(&[Some(20_000); 3], None, &config);
        assert!(verdict.observe(&[None, None, None], None, &config));
        assert!(!verdict.observe(&[None, Some(800), None], None, &config));
    }

    #[test]
    fn a_hung_leader_disk_still_finds_a_successor() {
        let config = config();
        let figures = leader_figures(&[Some(800), None, None], Some(Duration::from_secs(3)));
        assert_eq!(figures, [800, 3_000_000, 3_000_000]);
        let leader_p99_us = figures.iter().copied().max().unwrap();
        let followers = [candidate(2, 1000, 900)];
        assert_eq!(
            choose_successor(1000, leader_p99_us, &followers, &config)
                .unwrap()
                .id,
            2
        );
    }

    #[test]
    fn the_successor_is_the_healthiest_up_to_date_follower() {
        let config = config();
        let followers = [candidate(2, 1000, 2_000), candidate(3, 1000, 900)];
        assert_eq!(
            choose_successor(1000, 50_000, &followers, &config)
                .unwrap()
                .id,
            3
        );
    }

    #[test]
    fn stalled_slow_or_lagging_followers_are_not_chosen() {
        let config = config();
        let mut stalled = candidate(2, 1000, 400);
        stalled.stalled = true;
        let over_the_limit = candidate(3, 5000, 11_000);
        let lagging = candidate(4, 10, 400);
        let followers = [stalled, over_the_limit, lagging];
        assert_eq!(choose_successor(5000, 50_000, &followers, &config), None);
    }

    #[test]
    fn leadership_only_moves_to_a_clearly_better_disk() {
        let config = config();
        let followers = [candidate(2, 1000, 8_000)];
        assert_eq!(choose_successor(1000, 14_000, &followers, &config), None);
        assert_eq!(
            choose_successor(1000, 17_000, &followers, &config)
                .unwrap()
                .id,
            2
        );
    }

    #[test]
    fn a_follower_without_recent_samples_is_ranked_by_its_last_minute() {
        let config = config();
        let mut quiet = candidate(2, 1000, 0);
        quiet.recent_count = 0;
        quiet.flush_1m_p99_us = 30_000;
        let busy = candidate(3, 1000, 3_000);
        let followers = [quiet, busy];
        assert_eq!(
            choose_successor(1000, 50_000, &followers, &config)
                .unwrap()
                .id,
            3
        );
    }
}
