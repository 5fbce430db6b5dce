//! Clocks that disagree, with real coordinator processes whose wall clock is moved by
//! libfaketime (Debian's `faketime` package): `LD_PRELOAD` of libfaketimeMT with a per-node
//! `FAKETIME_TIMESTAMP_FILE`, re-read every second, so a running node's clock can jump.
//! Monotonic clocks are left alone (`FAKETIME_DONT_FAKE_MONOTONIC`): timers and Raft's
//! election timeouts run as before; only the time stamped on commands is at stake.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleet_api::proto::promotion_service_client::PromotionServiceClient;
use fleet_api::proto::{
    AddFreezeRequest, CreateWorkloadRequest, ListAuditEventsRequest, PublishReleaseRequest,
    ReadConsistency,
};
use fleet_testkit::ProcessCluster;

use common::client;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const DAY_MS: i64 = 86_400_000;

fn real_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn set_offset(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).unwrap();
}

/// Restarts every node under libfaketime, each with its own offset file (starting at +0).
async fn under_faketime(cluster: &mut ProcessCluster) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for id in 1..=cluster.nodes.len() as u64 {
        let file = cluster.dir().join(format!("faketime-{id}"));
        set_offset(&file, "+0");
        let file_text = file.to_str().unwrap().to_string();
        let node = cluster.node(id);
        node.terminate(Duration::from_secs(10));
        node.restart_with_env(&[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &file_text),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]);
        cluster.wait_for_leader(Duration::from_secs(10)).await;
        files.push(file);
    }
    files
}

/// Every audit event's time, in sequence order, read from `address`.
async fn audit_times(address: &str) -> Vec<u64> {
    let mut c = client(address).await;
    let events = c
        .list_audit_events(ListAuditEventsRequest {
            after_sequence: 0,
            max_events: 0,
            kind: String::new(),
            consistency: ReadConsistency::Linearizable as i32,
            before_sequence: 0,
            newest: false,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    events.iter().map(|e| e.time_ms).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_clock_jumps_a_day_ahead_stops_leading_and_stamps_nothing() {
    if !Path::new(LIBFAKETIME).exists() {
        eprintln!("skipped: {LIBFAKETIME} is missing (Debian package faketime)");
        return;
    }
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let files = under_faketime(&mut cluster).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let others = cluster.others(leader);
    let live = cluster.address(others[0]);
    let mut c = client(&live).await;
    c.create_workload(CreateWorkloadRequest {
        name: "web".into(),
        repo_url: "https://git.example/web.git".into(),
        path_template: "app".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // The report's input: a freeze that covers the real time, and a leader a day ahead, for
    // which the freeze has ended.
    let mut p = PromotionServiceClient::new(fleet_testkit::channel(&live).await.unwrap());
    let now = real_now_ms();
    p.add_freeze(AddFreezeRequest {
        environment: "staging".into(),
        from_ms: now - 60_000,
        to_ms: now + 3_600_000,
        ..Default::default()
    })
    .await
    .unwrap();
    set_offset(&files[leader as usize - 1], "+1d");

    // Within a few seconds the fast node says it is skewed and another node leads.
    let start = Instant::now();
    loop {
        let skewed = cluster.status(leader).await;
        let new_leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
        if let Some(s) = &skewed
            && s.clock_skewed
            && new_leader != leader
        {
            assert!(
                (s.clock_offset_ms - DAY_MS).abs() < 2_000,
                "offset {} ms",
                s.clock_offset_ms
            );
            assert_eq!(s.clocks_compared, 3);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the fast node still leads or is not judged skewed: {skewed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let good = cluster.status(others[0]).await.unwrap();
    assert!(
        !good.clock_skewed && good.clock_offset_ms.abs() < 1_000,
        "{good:?}"
    );

    // Writes go on, stamped by a good clock: the freeze still blocks publishing.
    let refused = c
        .publish_release(PublishReleaseRequest {
            workload: "web".into(),
            revision: "1111111111111111111111111111111111111111".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(refused.message().contains("frozen"), "{refused:?}");
    for i in 0..20u64 {
        p.add_freeze(AddFreezeRequest {
            environment: "production".into(),
            from_ms: now + 7_200_000 + i,
            to_ms: now + 7_300_000,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // The fast node never leads again while it is a day ahead.
    for _ in 0..10 {
        let leader_now = cluster.wait_for_leader(Duration::from_secs(5)).await;
        assert_ne!(leader_now, leader, "the skewed node led again");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Committed time never went backwards, and never past the real time.
    let times = audit_times(&live).await;
    let limit = real_now_ms() + 1_000;
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        times.iter().all(|t| *t <= limit),
        "a time from the future: {times:?}"
    );

    // Back in step, it may lead again.
    set_offset(&files[leader as usize - 1], "+0");
    let start = Instant::now();
    while cluster.status(leader).await.is_none_or(|s| s.clock_skewed) {
        assert!(start.elapsed() < Duration::from_secs(10), "still skewed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
