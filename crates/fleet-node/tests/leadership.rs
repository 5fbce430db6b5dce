//! Disk-aware leadership on three real coordinator processes: a +50 ms delay injected into
//! every log flush of the leader (the `log-flush` failpoint, set at run time) moves leadership
//! to a healthy follower; writes are fast again, nothing flaps, and removing the fault does
//! not hand leadership back.
//!
//! The data dirs are on tmpfs (/dev/shm) when it has 1 GiB free: the injected delay must be the
//! only slow disk. On this project's CI machine the real disk has spells of several seconds in
//! which every node's fdatasync p99 exceeds 10 ms; the guard then rightly finds no healthy
//! follower, and the test would judge the machine rather than the hand-over.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{add_site, client, register};
use fleet_api::proto::{ListAuditEventsRequest, ReadConsistency};
use fleet_testkit::{ProcessCluster, set_failpoint};

/// Registers clusters through `address` until `stop`, except while `paused`, counting
/// acknowledged and failed writes.
fn background_writer(
    address: String,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut c = client(&address).await;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if paused.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            match register(&mut c, &format!("{prefix}-{i}"), "oslo").await {
                Ok(_) => acknowledged.fetch_add(1, Ordering::Relaxed),
                Err(status) => {
                    eprintln!("background write failed: {status}");
                    failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            i += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// The leader and term as `id` sees them.
async fn leader_and_term(cluster: &ProcessCluster, id: u64) -> (Option<u64>, u64) {
    let status = cluster.status(id).await.expect("node answers");
    (status.leader_id, status.term)
}

/// The p99 of 1000 sequential writes through `address`, with the distribution printed.
async fn sequential_write_p99(address: &str, prefix: &str) -> Duration {
    let mut c = client(address).await;
    let mut latencies = Vec::new();
    for i in 0..1000 {
        let started = Instant::now();
        register(&mut c, &format!("{prefix}-{i}"), "oslo")
            .await
            .expect("sequential write");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    eprintln!(
        "{prefix}: p50 {:?}, p90 {:?}, p99 {p99:?}, worst three {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 9 / 10],
        &latencies[latencies.len() - 3..]
    );
    p99
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_leader_disk_moves_leadership_to_a_healthy_follower_without_flapping() {
    // A container's /dev/shm is often 64 MiB: too small for three sled databases.
    let shm = std::path::Path::new("/dev/shm");
    let roomy = nix::sys::statvfs::statvfs(shm)
        .map(|s| s.blocks_available() * s.fragment_size() >= 1 << 30)
        .unwrap_or(false);
    let base = if roomy {
        shm.to_path_buf()
    } else {
        eprintln!("no roomy tmpfs at /dev/shm: data dirs on the real disk");
        std::env::temp_dir()
    };
    let cluster = ProcessCluster::start_in(&base, 3, &["--allow-failpoint-rpc"]).await;
    let old_leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let watcher = cluster.others(old_leader)[0];
    add_site(&mut client(&cluster.address(watcher)).await, "oslo")
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = [(old_leader, "via-old-leader"), (watcher, "via-follower")]
        .into_iter()
        .map(|(id, prefix)| {
            background_writer(
                cluster.address(id),
                prefix,
                stop.clone(),
                paused.clone(),
                acknowledged.clone(),
                failed.clone(),
            )
        })
        .collect();
    // Let the leader dwell past its minimum time (5 s) with writes flowing, then measure what
    // this machine gives a healthy cluster.
    tokio::time::sleep(Duration::from_secs(5)).await;
    paused.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let healthy_p99 = sequential_write_p99(&cluster.address(old_leader), "healthy").await;
    paused.store(false, Ordering::Relaxed);

    let injected = Instant::now();
    set_failpoint(&cluster.address(old_leader), "log-flush", "sleep(50)")
        .await
        .expect("failpoint set");
    let new_leader = loop {
        if let (Some(leader), _) = leader_and_term(&cluster, watcher).await
            && leader != old_leader
        {
            break leader;
        }
        assert!(
            injected.elapsed() < Duration::from_secs(10),
            "leadership did not move off node {old_leader} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let moved_after = injected.elapsed();
    eprintln!("leadership moved from node {old_leader} to node {new_leader} after {moved_after:?}");

    // Writes through the new leader, one at a time: the slow disk is out of the commit path.
    paused.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_p99 = sequential_write_p99(&cluster.address(new_leader), "after-handover").await;
    paused.store(false, Ordering::Relaxed);
    // The bar is 10 ms. On a loaded 2-core machine a healthy cluster's own p99 can come near
    // it, so the bar is that p99 plus a quarter when it is higher; either way the slow disk
    // (+50 ms a flush) must be out of the commit path.
    let bar = Duration::from_millis(10).max(healthy_p99 * 5 / 4);
    assert!(
        after_p99 < bar,
        "write p99 after the hand-over is {after_p99:?}, healthy {healthy_p99:?}, bar {bar:?}"
    );

    // 60 s with the fault still in place: no election at all, and the old leader knows its
    // disk is stalled.
    let (_, term) = leader_and_term(&cluster, new_leader).await;
    let watch_until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < watch_until {
        for id in [old_leader, new_leader, watcher] {
            assert_eq!(
                leader_and_term(&cluster, id).await,
                (Some(new_leader), term),
                "node {id} saw leadership or the term change while the fault stayed"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let old_disk = cluster.status(old_leader).await.unwrap().disk.unwrap();
    assert!(
        old_disk.stalled,
        "the slowed node reports its disk stalled: {old_disk:?}"
    );

    // Removing the fault hands nothing back.
    set_failpoint(&cluster.address(old_leader), "log-flush", "off")
        .await
        .expect("failpoint cleared");
    let watch_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < watch_until {
        assert_eq!(
            leader_and_term(&cluster, watcher).await,
            (Some(new_leader), term),
            "leadership changed after the fault was removed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let old_disk = cluster.status(old_leader).await.unwrap().disk.unwrap();
    assert!(
        !old_disk.stalled,
        "the recovered node clears its verdict: {old_disk:?}"
    );

    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no write failed");
    assert!(acknowledged.load(Ordering::Relaxed) > 100);

    // Exactly one hand-over, in the audit log with the figures behind it.
    let events = client(&cluster.address(watcher))
        .await
        .list_audit_events(ListAuditEventsRequest {
            after_sequence: 0,
            max_events: 0,
            kind: "record_leadership_handover".into(),
            consistency: ReadConsistency::Linearizable as i32,
            before_sequence: 0,
            newest: false,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "{events:?}");
    let command: serde_json::Value = serde_json::from_str(&events[0].command_json).unwrap();
    assert_eq!(command["from_node"], old_leader);
    assert_eq!(command["to_node"], new_leader);
    let figures = command["from_p99s_us"].as_array().unwrap();
    assert!(
        !figures.is_empty() && figures.iter().all(|p| p.as_u64().unwrap() > 10_000),
        "{command}"
    );
    assert_eq!(events[0].actor, format!("coordinator:{old_leader}"));
}
