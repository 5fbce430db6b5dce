//! Disk health: fdatasync latencies of the continuous probe and durations of the real log
//! flushes (the analogue of etcd's wal_fsync_duration_seconds), kept in HDR histograms over
//! sliding 1-minute and 10-minute windows.
//!
//! A window is made of [`SLOTS`] slots of [`SLOT`] each; a slot is cleared when time comes
//! back round to it. Time is passed in, so the windows are testable without sleeping.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::fatal::fail_stop;
use fleet_disk::{self as disk, ETCD_BLOCK_SIZE, FDATASYNC_P99_LIMIT, PatternFile};

/// Width of one slot.
pub const SLOT: Duration = Duration::from_secs(10);
/// Slots kept: 10 minutes.
pub const SLOTS: usize = 60;
/// The short window.
pub const WINDOW_SHORT: Duration = Duration::from_secs(60);
/// The long window.
pub const WINDOW_LONG: Duration = Duration::from_secs(600);
/// Size of the probe's rotating file in the data dir.
pub const PROBE_FILE_BYTES: u64 = 1024 * 1024;

/// Width of a slot of the per-second series the leadership guard reads.
pub const SECOND: Duration = Duration::from_secs(1);
/// Per-second slots kept.
pub const SECONDS_KEPT: usize = 16;

/// Latencies over sliding windows.
pub struct WindowedLatency {
    origin: Instant,
    slot: Duration,
    slots: Vec<(u64, Histogram<u64>)>,
}

/// p50/p99/p99.9/max of a window, in microseconds, and how many samples it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl WindowedLatency {
    /// [`SLOTS`] slots of [`SLOT`]: 10 minutes.
    pub fn new(origin: Instant) -> Self {
        Self::with_slots(origin, SLOT, SLOTS)
    }

    /// `count` slots of `slot` each.
    pub fn with_slots(origin: Instant, slot: Duration, count: usize) -> Self {
        WindowedLatency {
            origin,
            slot,
            slots: (0..count)
                .map(|_| (u64::MAX, disk::latency_histogram()))
                .collect(),
        }
    }

    fn slot_number(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / self.slot.as_nanos()) as u64
    }

    /// The p99 of each of the last `n` completed slots, oldest first; `None` for a slot
    /// without samples.
    pub fn completed_slot_p99s(&self, now: Instant, n: usize) -> Vec<Option<u64>> {
        let current = self.slot_number(now);
        let n = n.min(self.slots.len() - 1) as u64;
        (1..=n)
            .rev()
            .map(|back| {
                let wanted = current.checked_sub(back)?;
                let (number, histogram) = &self.slots[(wanted % self.slots.len() as u64) as usize];
                (*number == wanted && !histogram.is_empty())
                    .then(|| histogram.value_at_quantile(0.99))
            })
            .collect()
    }

    pub fn record(&mut self, now: Instant, latency: Duration) {
        let number = self.slot_number(now);
        let count = self.slots.len() as u64;
        let (slot_number, histogram) = &mut self.slots[(number % count) as usize];
        if *slot_number != number {
            histogram.reset();
            *slot_number = number;
        }
        disk::record(histogram, latency);
    }

    /// The samples of the last `span` (rounded up to whole slots, the current one included).
    pub fn summary(&self, now: Instant, span: Duration) -> LatencySummary {
        let current = self.slot_number(now);
        let wanted = span.as_nanos().div_ceil(self.slot.as_nanos()) as u64;
        let oldest = current.saturating_sub(wanted.saturating_sub(1));
        let mut merged = disk::latency_histogram();
        for (number, histogram) in &self.slots {
            if *number != u64::MAX && *number >= oldest && *number <= current {
                merged.add(histogram).expect("same bounds");
            }
        }
        if merged.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: merged.len(),
            p50_us: merged.value_at_quantile(0.5),
            p99_us: merged.value_at_quantile(0.99),
            p999_us: merged.value_at_quantile(0.999),
            max_us: merged.max(),
        }
    }
}

/// Both series of one node, shared by the flusher, the probe, the leadership guard and the
/// status service.
pub struct DiskHealth {
    probe: Series,
    flush: Series,
    /// Every fdatasync of this node (probe and log flush) in one-second slots: what the
    /// leadership guard judges the disk by.
    seconds: Mutex<WindowedLatency>,
    /// The leadership guard's verdict: this node's disk is too slow to lead.
    stalled: AtomicBool,
}

/// One kind of fdatasync: its latencies, and when the one now running began.
struct Series {
    window: Mutex<WindowedLatency>,
    started: Mutex<Option<Instant>>,
}

impl Series {
    fn new(origin: Instant) -> Self {
        Series {
            window: Mutex::new(WindowedLatency::new(origin)),
            started: Mutex::new(None),
        }
    }

    fn begin(&self) {
        *self.started.lock().expect("lock") = Some(Instant::now());
    }

    fn started(&self) -> Option<Instant> {
        *self.started.lock().expect("lock")
    }
}

/// The span of the `recent` summary.
pub const WINDOW_RECENT: Duration = Duration::from_secs(5);

/// What the status service reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskReport {
    pub probe_short: LatencySummary,
    pub probe_long: LatencySummary,
    pub flush_short: LatencySummary,
    pub flush_long: LatencySummary,
    /// Every fdatasync of the last [`WINDOW_RECENT`].
    pub recent: LatencySummary,
    /// The leadership guard judges this disk too slow to lead.
    pub stalled: bool,
}

impl DiskReport {
    /// etcd's rule on the short window: the probe's and the log flush's p99 under 10 ms.
    /// A series without samples does not count against the disk.
    pub fn healthy(&self) -> bool {
        let limit = FDATASYNC_P99_LIMIT.as_micros() as u64;
        self.probe_short.p99_us < limit && self.flush_short.p99_us < limit
    }
}

impl Default for DiskHealth {
    fn default() -> Self {
        let now = Instant::now();
        DiskHealth {
            probe: Series::new(now),
            flush: Series::new(now),
            seconds: Mutex::new(WindowedLatency::with_slots(now, SECOND, SECONDS_KEPT)),
            stalled: AtomicBool::new(false),
        }
    }
}

impl DiskHealth {
    /// A probe write and its fdatasync begin.
    pub fn probe_started(&self) {
        self.probe.begin();
    }

    /// A probe write and its fdatasync took `latency`.
    pub fn record_probe(&self, latency: Duration) {
        self.finish(&self.probe, latency);
    }

    /// A log flush begins.
    pub fn flush_started(&self) {
        self.flush.begin();
    }

    /// A log flush took `latency`.
    pub fn record_flush(&self, latency: Duration) {
        self.finish(&self.flush, latency);
    }

    fn finish(&self, series: &Series, latency: Duration) {
        let now = Instant::now();
        *series.started.lock().expect("lock") = None;
        series.window.lock().expect("lock").record(now, latency);
        self.seconds.lock().expect("lock").record(now, latency);
    }

    /// How long the oldest fdatasync still running has been running.
    pub fn oldest_in_flight(&self, now: Instant) -> Option<Duration> {
        self.flush
            .started()
            .into_iter()
            .chain(self.probe.started())
            .min()
            .map(|started| now.saturating_duration_since(started))
    }

    /// The p99 of each of the last `n` completed seconds, oldest first.
    pub fn second_p99s(&self, now: Instant, n: usize) -> Vec<Option<u64>> {
        self.seconds
            .lock()
            .expect("lock")
            .completed_slot_p99s(now, n)
    }

    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    pub fn report(&self) -> DiskReport {
        let now = Instant::now();
        let probe = self.probe.window.lock().expect("lock");
        let flush = self.flush.window.lock().expect("lock");
        let seconds = self.seconds.lock().expect("lock");
        DiskReport {
            probe_short: probe.summary(now, WINDOW_SHORT),
            probe_long: probe.summary(now, WINDOW_LONG),
            flush_short: flush.summary(now, WINDOW_SHORT),
            flush_long: flush.summary(now, WINDOW_LONG),
            recent: seconds.summary(now, WINDOW_RECENT),
            stalled: self.stalled.load(Ordering::Relaxed),
        }
    }
}

/// How the probe runs.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub data_dir: PathBuf,
    /// Time between bursts; zero turns the probe off.
    pub interval: Duration,
    /// fdatasyncs per burst.
    pub writes_per_burst: u32,
}

/// Runs bursts of the etcd fio pattern on a rotating file in the data dir, forever. A failed
/// write or fdatasync there is a failing disk: the node stops.
///
/// # Cancel safety
/// Safe to drop between bursts; a burst runs on a blocking thread and finishes.
pub async fn run_probe(config: ProbeConfig, health: Arc<DiskHealth>) {
    if config.interval.is_zero() {
        return;
    }
    let file = PatternFile::create(
        &config.data_dir,
        "disk-probe",
        PROBE_FILE_BYTES,
        ETCD_BLOCK_SIZE,
    )
    .unwrap_or_else(|e| fail_stop("create the disk probe file", &e));
    let file = Arc::new(Mutex::new(file));
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // `disk-probe-burst=return` skips bursts (the probe-overhead benchmark turns the probe
        // off and on with it on a running cluster).
        if fail::eval("disk-probe-burst", |_| ()).is_some() {
            continue;
        }
        let file = file.clone();
        let recorder = health.clone();
        let writes = config.writes_per_burst;
        let burst = tokio::task::spawn_blocking(move || {
            let mut file = file.lock().expect("probe file lock");
            for _ in 0..writes {
                // `disk-probe=sleep(MS)` adds to the measured latency; `return` fails the write.
                let started = Instant::now();
                recorder.probe_started();
                fail::fail_point!("disk-probe", |_| Err(std::io::Error::other(
                    "injected failure at failpoint disk-probe"
                )));
                let injected = started.elapsed();
                recorder.record_probe(injected + file.write_and_sync()?);
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        match burst {
            Ok(Ok(())) => {}
            Ok(Err(e)) => fail_stop("disk probe write", &e),
            Err(e) => fail_stop("disk probe task", &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn short_window_forgets_what_the_long_window_keeps() {
        let t0 = Instant::now();
        let mut w = WindowedLatency::new(t0);
        for _ in 0..100 {
            w.record(t0, ms(50));
        }
        let later = t0 + Duration::from_secs(120);
        for _ in 0..100 {
            w.record(later, ms(1));
        }
        let short = w.summary(later, WINDOW_SHORT);
        assert_eq!(short.count, 100);
        assert!(short.p99_us < 1100, "{short:?}");
        let long = w.summary(later, WINDOW_LONG);
        assert_eq!(long.count, 200);
        assert!(long.p99_us >= 49_000, "{long:?}");
    }

    #[test]
    fn slots_are_reused_after_ten_minutes() {
        let t0 = Instant::now();
        let mut w = WindowedLatency::new(t0);
        w.record(t0, ms(5));
        let eleven_minutes = t0 + Duration::from_secs(660);
        assert_eq!(w.summary(eleven_minutes, WINDOW_LONG).count, 0);
        w.record(eleven_minutes, ms(2));
        let s = w.summary(eleven_minutes, WINDOW_LONG);
        assert_eq!(s.count, 1);
        assert!(s.max_us < 2100, "{s:?}");
    }

    #[test]
    fn percentiles_resolve_one_percent_not_powers_of_two() {
        let t0 = Instant::now();
        let mut w = WindowedLatency::new(t0);
        for i in 1..=1000u64 {
            w.record(t0, Duration::from_micros(1000 + i));
        }
        let s = w.summary(t0, WINDOW_SHORT);
        // Power-of-two buckets would report 2048 for all of these.
        assert!((1490..=1510).contains(&s.p50_us), "{s:?}");
        assert!((1975..=2010).contains(&s.p99_us), "{s:?}");
    }

    #[test]
    fn a_slow_series_makes_the_disk_unhealthy() {
        let mut report = DiskReport::default();
        assert!(
            report.healthy(),
            "no samples is not a verdict against the disk"
        );
        report.flush_short.p99_us = 12_000;
        assert!(!report.healthy());
    }
}
