//! The disk check etcd's operators use, done by fleet itself: sequential writes of 2300 bytes,
//! each followed by fdatasync, as in
//! `fio --rw=write --ioengine=sync --fdatasync=1 --size=22m --bs=2300`.
//! Like fio, the file is laid out with `fallocate` first and then overwritten from the start.
//! Latencies are of the fdatasync call alone (fio's "sync" latencies).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub mod limits;
pub use crate::limits::MAX_RECORDED_LATENCY;

/// etcd's rule: the WAL disk's fdatasync p99 must stay under 10 ms.
pub const FDATASYNC_P99_LIMIT: Duration = Duration::from_millis(10);
/// fio's block size in the etcd check: about the size of one etcd WAL entry.
pub const ETCD_BLOCK_SIZE: usize = 2300;
/// fio's file size in the etcd check: 22 MiB.
pub const ETCD_CHECK_SIZE: u64 = 22 * 1024 * 1024;

/// A latency histogram in microseconds, two significant digits (1% resolution).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_RECORDED_LATENCY.as_micros() as u64, 2)
        .expect("valid histogram bounds")
}

/// Records one latency, clamped to the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let us = (latency.as_micros() as u64).clamp(1, MAX_RECORDED_LATENCY.as_micros() as u64);
    histogram.record(us).expect("value is clamped into range");
}

/// The result of one run of the pattern.
pub struct FdatasyncRun {
    pub writes: u64,
    pub block_size: usize,
    pub size_bytes: u64,
    /// fdatasync latencies, microseconds.
    pub fdatasync_us: Histogram<u64>,
    pub elapsed: Duration,
}

impl FdatasyncRun {
    pub fn p99(&self) -> Duration {
        Duration::from_micros(self.fdatasync_us.value_at_quantile(0.99))
    }

    /// True when the p99 is under [`FDATASYNC_P99_LIMIT`].
    pub fn meets_etcd_rule(&self) -> bool {
        self.p99() < FDATASYNC_P99_LIMIT
    }
}

/// A file for the pattern: laid out with fallocate to `size_bytes`, removed when dropped.
pub struct PatternFile {
    file: File,
    path: PathBuf,
    size_bytes: u64,
    offset: u64,
    block: Vec<u8>,
}

impl PatternFile {
    /// Creates `dir/name` and allocates `size_bytes` for it.
    pub fn create(
        dir: &Path,
        name: &str,
        size_bytes: u64,
        block_size: usize,
    ) -> std::io::Result<Self> {
        assert!(block_size > 0, "block size must be positive");
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        nix::fcntl::fallocate(
            &file,
            nix::fcntl::FallocateFlags::empty(),
            0,
            size_bytes as i64,
        )
        .map_err(std::io::Error::from)?;
        file.sync_all()?;
        // Varied bytes, so no layer below can shortcut zeroes.
        let block = (0..block_size).map(|i| (i * 131 % 251) as u8).collect();
        Ok(PatternFile {
            file,
            path,
            size_bytes,
            offset: 0,
            block,
        })
    }

    /// Writes one block at the next offset (wrapping at the end of the file), then fdatasyncs.
    /// Returns the fdatasync latency.
    pub fn write_and_sync(&mut self) -> std::io::Result<Duration> {
        let len = self.block.len() as u64;
        if self.offset + len > self.size_bytes {
            self.offset = 0;
            self.file.seek(SeekFrom::Start(0))?;
        }
        self.file.write_all(&self.block)?;
        self.offset += len;
        let started = Instant::now();
        self.file.sync_data()?;
        Ok(started.elapsed())
    }
}

impl Drop for PatternFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs the pattern once over `size_bytes` in `dir`, as fio does: `size_bytes / block_size`
/// writes.
pub fn run_fdatasync_pattern(
    dir: &Path,
    size_bytes: u64,
    block_size: usize,
) -> std::io::Result<FdatasyncRun> {
    let name = format!(".fleet-disk-bench.{}", std::process::id());
    let mut file = PatternFile::create(dir, &name, size_bytes, block_size)?;
    let writes = size_bytes / block_size as u64;
    let mut fdatasync_us = latency_histogram();
    let started = Instant::now();
    for _ in 0..writes {
        record(&mut fdatasync_us, file.write_and_sync()?);
    }
    Ok(FdatasyncRun {
        writes,
        block_size,
        size_bytes,
        fdatasync_us,
        elapsed: started.elapsed(),
    })
}
