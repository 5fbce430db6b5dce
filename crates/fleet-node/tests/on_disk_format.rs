//! Data written by the previous on-disk format is read by this one, and its audit chain still
//! verifies after a command gained a field (`PublishRelease.allow_rejected`, added after the
//! fixture was written). The fixture `tests/fixtures/format0-single-node` is a real data dir
//! written by the format-0 `fleet-node` (its README says how); real processes, real `fleet-ctl`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fleet_testkit::{ProcessCluster, sibling_binary};

/// The audit head of the fixture, as the format-0 `fleet-ctl audit verify` printed it.
const FIXTURE_HEAD: &str = "c3996115d1cf5691075ea4b639058b2456b77771459019f4a3d12b6010924616";
const FIXTURE_EVENTS: u64 = 8;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs `fleet-ctl` against `address` until it succeeds (the node may still be starting).
fn ctl(address: &str, args: &[&str]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = Command::new(sibling_binary("fleet-ctl"))
            .args(["--endpoints", address, "-o", "json"])
            .args(args)
            .envs(fleet_testkit::TestPki::ctl_env(
                fleet_testkit::pki().admin(),
            ))
            .output()
            .unwrap();
        if output.status.success() {
            return serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            Instant::now() < deadline,
            "fleet-ctl {args:?} failed: {stderr}\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn audit_events(address: &str) -> Vec<serde_json::Value> {
    let listed = ctl(address, &["audit", "--limit", "1000"]);
    listed["events"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no events in {listed}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_0_data_dir_is_read_and_its_audit_chain_verifies_after_a_command_gained_a_field() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format0-single-node");
    // A node of this build, stopped; its data dir then holds the format-0 fixture instead.
    let mut cluster = ProcessCluster::start(1, &["--snapshot-after-logs", "3"]).await;
    cluster.node(1).kill();
    cluster.node(1).wipe_data_dir();
    let data_dir = cluster.node(1).data_dir.clone();
    copy_dir(&fixture, &data_dir);
    std::fs::create_dir_all(data_dir.join("sled/blobs")).unwrap();
    assert!(!data_dir.join("identity.json").exists());
    let address = cluster.address(1);

    cluster.node(1).restart();
    // A data dir from before roles has no admin: the leader binds the bootstrap admin (the
    // test CA's `admin`) as its first new event, after the fixture's unchanged chain.
    let kept_head = format!("{FIXTURE_EVENTS}:{FIXTURE_HEAD}");
    let verified = ctl(&address, &["audit", "verify", "--head", &kept_head]);
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["events"], FIXTURE_EVENTS + 1, "{verified}");

    // The publish events were stored before `allow_rejected` existed: their stored text lacks
    // it, and re-serializing the command as this build reads it would add it (and so change
    // the bytes the old hash covers).
    let events = audit_events(&address);
    let bound = &events[FIXTURE_EVENTS as usize];
    assert_eq!(bound["kind"], "bind_role", "{bound}");
    assert_eq!(bound["actor"], "coordinator:1", "{bound}");
    assert_eq!(bound["command"]["principal"], "admin", "{bound}");
    let publishes: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "publish_release")
        .collect();
    assert_eq!(publishes.len(), 2, "{events:?}");
    for event in &publishes {
        let stored = event["command"].to_string();
        assert!(!stored.contains("allow_rejected"), "{stored}");
        let command: fleet_core::Command =
            serde_json::from_value(event["command"].clone()).unwrap();
        assert!(
            serde_json::to_string(&command)
                .unwrap()
                .contains("\"allow_rejected\":false")
        );
    }
    let identity = std::fs::read_to_string(data_dir.join("identity.json")).unwrap();
    assert!(
        identity.contains("\"cluster_id\":\"format0\""),
        "{identity}"
    );

    // New writes in this build's format extend the same chain; a snapshot in the new format
    // is built (every 3 entries) and read at the next start.
    for revision in [
        "3333333333333333333333333333333333333333",
        "4444444444444444444444444444444444444444",
    ] {
        ctl(&address, &["release", "publish", "web", revision]);
    }
    ctl(&address, &["site", "add", "trondheim"]);
    cluster.node(1).terminate(Duration::from_secs(10));
    cluster.node(1).restart();
    let verified = ctl(&address, &["audit", "verify"]);
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["events"], FIXTURE_EVENTS + 4, "{verified}");
    let events = audit_events(&address);
    assert_eq!(events[0]["format"], 0, "{:?}", events[0]);
    assert_eq!(
        events[events.len() - 1]["format"],
        fleet_core::audit::AUDIT_EVENT_FORMAT
    );
    assert_eq!(events[FIXTURE_EVENTS as usize - 1]["hash"], FIXTURE_HEAD);
    cluster.node(1).terminate(Duration::from_secs(10));
    {
        let db = fleet_coordinator::store::open_db(&data_dir).unwrap();
        let snapshot = db
            .open_tree("snapshot")
            .unwrap()
            .get("data")
            .unwrap()
            .unwrap();
        assert_eq!(
            snapshot[0],
            fleet_coordinator::store::STORE_FORMAT,
            "the snapshot was rebuilt in this build's format"
        );
    }

    // The data dir belongs to a cluster now: --bootstrap on it is refused.
    cluster.node(1).restart_with_args(&["--bootstrap"], &[]);
    let status = cluster
        .node(1)
        .wait_exit(Duration::from_secs(20))
        .expect("--bootstrap on a data dir of a cluster is refused");
    assert!(!status.success());
    let log = cluster.node(1).log();
    assert!(
        log.contains("already belongs to coordinator cluster"),
        "{log}"
    );
}
