//! Prometheus metrics on `--metrics-listen` (`/metrics`). Units are in the names.

use std::net::SocketAddr;

use metrics::gauge;

use crate::health::{DiskReport, LatencySummary};

/// Installs the global recorder with an HTTP listener. Must run inside a tokio runtime.
pub fn install(listen: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()
        .map_err(|e| format!("metrics listener on {listen}: {e}"))
}

fn publish_summary(name: &'static str, window: &'static str, s: &LatencySummary) {
    let seconds = |us: u64| us as f64 / 1e6;
    for (quantile, value) in [
        ("0.5", s.p50_us),
        ("0.99", s.p99_us),
        ("0.999", s.p999_us),
        ("1", s.max_us),
    ] {
        gauge!(name, "window" => window, "quantile" => quantile).set(seconds(value));
    }
    gauge!(format!("{name}_count"), "window" => window).set(s.count as f64);
}

/// Publishes the disk report as gauges:
/// `fleet_disk_probe_fdatasync_seconds{window,quantile}`,
/// `fleet_log_flush_seconds{window,quantile}` and `fleet_disk_healthy`.
pub fn publish_disk(report: &DiskReport) {
    publish_summary(
        "fleet_disk_probe_fdatasync_seconds",
        "1m",
        &report.probe_short,
    );
    publish_summary(
        "fleet_disk_probe_fdatasync_seconds",
        "10m",
        &report.probe_long,
    );
    publish_summary("fleet_log_flush_seconds", "1m", &report.flush_short);
    publish_summary("fleet_log_flush_seconds", "10m", &report.flush_long);
    gauge!("fleet_disk_healthy").set(if report.healthy() { 1.0 } else { 0.0 });
}

/// Publishes Raft progress: `fleet_raft_term`, `fleet_raft_applied_index`, `fleet_raft_is_leader`.
pub fn publish_raft(term: u64, applied_index: u64, is_leader: bool) {
    gauge!("fleet_raft_term").set(term as f64);
    gauge!("fleet_raft_applied_index").set(applied_index as f64);
    gauge!("fleet_raft_is_leader").set(if is_leader { 1.0 } else { 0.0 });
}

/// Publishes `fleet_heap_allocated_bytes`: the bytes the process holds allocated, as its
/// allocator counts them ([`crate::serve::CoordinatorConfig::heap_allocated_bytes`]).
/// Resident memory also counts what an allocator keeps free for reuse, so this is the figure
/// that shows whether something is kept that should have been freed.
pub fn publish_heap(allocated_bytes: u64) {
    gauge!("fleet_heap_allocated_bytes").set(allocated_bytes as f64);
}

/// Publishes the clock check: `fleet_clock_offset_seconds` (this node's clock minus the voters'
/// median) and `fleet_clock_skewed` (1 while this node does not lead or stamp for it).
pub fn publish_clock(offset_ms: i64, skewed: bool) {
    gauge!("fleet_clock_offset_seconds").set(offset_ms as f64 / 1e3);
    gauge!("fleet_clock_skewed").set(if skewed { 1.0 } else { 0.0 });
}
