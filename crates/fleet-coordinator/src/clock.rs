//! Clock agreement. Every command carries the leader's wall-clock time (`Context::now_ms`), and
//! freezes, soaks, timeouts and the audit log are judged by it; a leader whose clock runs a day
//! ahead would let a promotion through a freeze and stamp reports from the future.
//!
//! The `clock-check` task of every node asks each other voter for its status once a second
//! (`GetCoordinatorStatus`, which carries the answering node's clock) and estimates the peer's
//! offset as NTP does: the peer's clock minus the midpoint of the exchange, so the error is at
//! most half the round trip (the ask times out after 500 ms). With at least three clocks known
//! (its own included), a node whose clock is more than `--max-clock-offset-ms` (default 500)
//! from the median of the voters' clocks is **skewed**: it does not campaign, a skewed leader
//! stops sending heartbeats so that the others elect a new leader, and it stamps no command
//! meanwhile (writes on it wait for the new leader, as during an election); it also asks an
//! up-to-date voter to take over at once (`TakeLeadership`, as the disk guard does). Between
//! two comparisons, a stamp is refused when the wall clock has left the voters' median as
//! carried forward on the monotonic clock ([`ClockCheck::may_stamp`]), so a clock that jumps
//! stamps nothing before the next comparison notices. With fewer clocks
//! known (a one- or two-voter cluster, or peers that do not answer) nothing can tell which
//! clock is wrong, and the node is not judged skewed. `coordinator status` shows each node's
//! offset and verdict, and the metrics `fleet_clock_offset_seconds` and `fleet_clock_skewed`.
//!
//! Independently, a leader stamps no time earlier than the latest committed one
//! (`State::last_time_ms`) or the last it stamped, so committed time never goes backwards when
//! leadership moves to a node whose clock is a little behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::coordinator::{Coordinator, now_ms};
pub use crate::limits::MIN_CLOCKS_TO_JUDGE;

/// How often the clocks are compared.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a peer has to answer; bounds the estimate's error to half of it.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// The default bound on a node's distance from the voters' median clock.
pub const DEFAULT_MAX_CLOCK_OFFSET_MS: u64 = 500;

/// How long the last comparison is trusted to tell the agreed time when peers stop answering.
const ANCHOR_TRUSTED_FOR: Duration = Duration::from_secs(10);

/// This node's verdict on its own clock, updated by the `clock-check` task.
#[derive(Debug)]
pub struct ClockCheck {
    max_offset_ms: u64,
    offset_ms: AtomicI64,
    compared: AtomicU32,
    skewed: AtomicBool,
    /// The voters' median clock at the last judged comparison, on this node's monotonic
    /// clock, which a wall-clock jump does not move: (when, median in ms since the epoch).
    anchor: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl ClockCheck {
    pub fn new(max_offset_ms: u64) -> Self {
        ClockCheck {
            max_offset_ms,
            offset_ms: AtomicI64::new(0),
            compared: AtomicU32::new(1),
            skewed: AtomicBool::new(false),
            anchor: std::sync::Mutex::new(None),
        }
    }

    /// Whether `wall_ms`, this node's wall clock now, may be stamped on a command: the node is
    /// not judged skewed, and `wall_ms` is within the bound of the voters' median as carried
    /// forward from the last comparison on the monotonic clock. The second part catches a
    /// clock that jumps between two comparisons before it stamps anything.
    pub fn may_stamp(&self, wall_ms: u64) -> bool {
        if self.skewed() {
            return false;
        }
        let anchor = *self.anchor.lock().expect("clock anchor lock");
        match anchor {
            Some((at, median_ms)) if at.elapsed() <= ANCHOR_TRUSTED_FOR => {
                let agreed = median_ms + at.elapsed().as_millis() as u64;
                wall_ms.abs_diff(agreed) <= self.max_offset_ms
            }
            _ => true,
        }
    }

    /// Whether this node's clock is too far from the voters' median to lead or stamp.
    pub fn skewed(&self) -> bool {
        self.skewed.load(Ordering::Relaxed)
    }

    /// This node's clock minus the voters' median, in milliseconds (0 until judged).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// How many clocks the last comparison saw, this node's included.
    pub fn compared(&self) -> u32 {
        self.compared.load(Ordering::Relaxed)
    }

    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// Records a comparison made when this node's wall clock read `wall_ms`; returns whether
    /// the verdict changed.
    fn record(&self, offset_ms: Option<i64>, compared: usize, wall_ms: u64) -> bool {
        let skewed = offset_ms.is_some_and(|o| o.unsigned_abs() > self.max_offset_ms);
        if let Some(offset) = offset_ms {
            let median = (wall_ms as i64 - offset).max(0) as u64;
            *self.anchor.lock().expect("clock anchor lock") =
                Some((std::time::Instant::now(), median));
        }
        self.offset_ms
            .store(offset_ms.unwrap_or(0), Ordering::Relaxed);
        self.compared.store(compared as u32, Ordering::Relaxed);
        self.skewed.swap(skewed, Ordering::Relaxed) != skewed
    }
}

/// A peer's clock minus this node's, from one exchange: the peer's reading against the
/// midpoint of the send and receive times read here (all in ms since the Unix epoch).
pub fn peer_offset_ms(sent_ms: u64, received_ms: u64, peer_now_ms: u64) -> i64 {
    let midpoint = sent_ms / 2 + received_ms / 2 + (sent_ms % 2 + received_ms % 2) / 2;
    peer_now_ms as i64 - midpoint as i64
}

/// This node's clock minus the median of the voters' clocks, given each other voter's offset
/// from this node (peer minus self). `None` with fewer than [`MIN_CLOCKS_TO_JUDGE`] clocks.
/// With an even count the median is the mean of the middle two.
pub fn offset_from_median(peer_offsets_ms: &[i64]) -> Option<i64> {
    let mut all: Vec<i64> = peer_offsets_ms.to_vec();
    all.push(0);
    if all.len() < MIN_CLOCKS_TO_JUDGE {
        return None;
    }
    all.sort_unstable();
    let n = all.len();
    let median = if n % 2 == 1 {
        all[n / 2]
    } else {
        (all[n / 2 - 1] + all[n / 2]) / 2
    };
    Some(-median)
}

/// The `clock-check` task: compares clocks once a second and acts on the verdict.
///
/// # Cancel safety
/// Safe to drop at any point.
pub async fn run_clock_check(coordinator: Arc<Coordinator>) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_hand_over: Option<std::time::Instant> = None;
    loop {
        ticker.tick().await;
        let offsets = peer_offsets(&coordinator).await;
        let offset = offset_from_median(&offsets);
        let check = &coordinator.clock;
        if check.record(offset, offsets.len() + 1, now_ms()) {
            if check.skewed() {
                tracing::warn!(
                    node = coordinator.id,
                    offset_ms = check.offset_ms(),
                    max_offset_ms = check.max_offset_ms(),
                    "clock too far from the voters' median: this node will not lead or stamp times"
                );
            } else {
                tracing::info!(
                    node = coordinator.id,
                    offset_ms = check.offset_ms(),
                    "clock agrees with the voters' again"
                );
            }
        }
        coordinator.act_on_clock(check.skewed());
        crate::metrics::publish_clock(check.offset_ms(), check.skewed());
        // A skewed leader asks an up-to-date voter to take over at once: without heartbeats
        // the others would wait out their leases, which its read barriers keep renewing.
        let leads = coordinator.raft.metrics().borrow().state == openraft::ServerState::Leader;
        let may_retry = last_hand_over.is_none_or(|t| t.elapsed() >= HAND_OVER_RETRY);
        if check.skewed() && leads && may_retry {
            last_hand_over = Some(std::time::Instant::now());
            if let Err(why) = crate::leadership::hand_over_for_clock(&coordinator).await {
                tracing::warn!(node = coordinator.id, reason = %why, "clock skewed but leadership stays here");
            }
        }
    }
}

/// A skewed leader's hand-over attempts are this far apart.
const HAND_OVER_RETRY: Duration = Duration::from_secs(2);

/// Each other voter's clock minus this node's, for those that answered in time.
async fn peer_offsets(coordinator: &Coordinator) -> Vec<i64> {
    let membership = coordinator
        .raft
        .metrics()
        .borrow()
        .membership_config
        .clone();
    let membership = membership.membership();
    let mut asks = JoinSet::new();
    for id in membership.voter_ids().filter(|id| *id != coordinator.id) {
        let Some(node) = membership.get_node(&id) else {
            continue;
        };
        let peers = coordinator.peers.clone();
        let address = node.addr.clone();
        asks.spawn(async move {
            let sent_ms = now_ms();
            let status = peers
                .coordinator_status(&address, STATUS_TIMEOUT)
                .await
                .ok()?;
            let received_ms = now_ms();
            // A node from before clocks were compared answers 0: not a clock reading.
            (status.now_ms > 0).then(|| peer_offset_ms(sent_ms, received_ms, status.now_ms))
        });
    }
    asks.join_all().await.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_offset_is_measured_against_the_midpoint_of_the_exchange() {
        assert_eq!(peer_offset_ms(1_000, 1_010, 1_005), 0);
        assert_eq!(peer_offset_ms(1_000, 1_010, 1_105), 100);
        assert_eq!(peer_offset_ms(1_000, 1_010, 905), -100);
        assert_eq!(peer_offset_ms(u64::MAX - 1, u64::MAX - 1, u64::MAX - 1), 0);
    }

    #[test]
    fn a_clock_a_day_ahead_is_the_one_off_the_median_of_three() {
        let day: i64 = 86_400_000;
        // Seen from the fast node: both others a day behind.
        assert_eq!(offset_from_median(&[-day, -day + 3]), Some(day - 3));
        // Seen from a good node: one peer a day ahead, one 2 ms behind.
        assert_eq!(offset_from_median(&[day, -2]), Some(0));
        let check = ClockCheck::new(DEFAULT_MAX_CLOCK_OFFSET_MS);
        assert!(check.record(offset_from_median(&[-day, -day]), 3, 1_000_000));
        assert!(check.skewed());
        assert!(check.record(offset_from_median(&[day, -2]), 3, 1_000_000));
        assert!(!check.skewed());
    }

    #[test]
    fn with_fewer_than_three_clocks_no_node_is_judged() {
        assert_eq!(offset_from_median(&[]), None);
        assert_eq!(offset_from_median(&[86_400_000]), None);
        let check = ClockCheck::new(500);
        assert!(!check.record(None, 2, 1_000_000));
        assert!(!check.skewed());
    }

    #[test]
    fn the_bound_is_inclusive_and_applies_both_ways() {
        let check = ClockCheck::new(500);
        check.record(offset_from_median(&[-500, -500]), 3, 1_000_000);
        assert!(!check.skewed(), "500 ms off is within a 500 ms bound");
        check.record(offset_from_median(&[501, 501]), 3, 1_000_000);
        assert!(check.skewed(), "a clock behind is as wrong as one ahead");
        assert_eq!(check.offset_ms(), -501);
    }

    #[test]
    fn a_clock_that_jumps_after_a_good_comparison_may_not_stamp() {
        let check = ClockCheck::new(500);
        let wall = 1_796_000_000_000;
        assert!(
            check.may_stamp(wall),
            "nothing compared yet: nothing to judge by"
        );
        // In step with two peers 3 ms and 1 ms ahead.
        assert!(!check.record(offset_from_median(&[3, 1]), 3, wall));
        assert!(!check.skewed());
        assert!(check.may_stamp(wall + 10));
        assert!(check.may_stamp(wall + 400));
        // The wall clock jumps a day before the next comparison.
        assert!(!check.may_stamp(wall + 86_400_000));
        assert!(!check.may_stamp(wall - 60_000), "a jump back counts too");
    }

    #[test]
    fn with_five_voters_two_wrong_clocks_are_each_found() {
        // Seen from a good node: two peers far ahead, two close.
        assert_eq!(offset_from_median(&[90_000, 80_000, 3, -4]), Some(-3));
        // Seen from the node 90 s ahead.
        assert_eq!(
            offset_from_median(&[-10_000, -90_000, -90_003, -89_996]),
            Some(89_996)
        );
    }
}
