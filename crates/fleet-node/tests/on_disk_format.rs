//! Data written by the previous on-disk format is read by this one, and its audit chain still
//! verifies after a command gained a field (`PublishRelease.allow_rejected`, added after the
//! fixture was written). The fixture `tests/fixtures/format0-single-node` is a real data dir
//! written by the format-0 `fleet-node` (its README says how); real processes, real `fleet-ctl`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_node::testing::{fleet_node_binary, free_port, sibling_binary};

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

struct Node {
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    fn start(data_dir: &Path, address: &str, extra: &[&str], log: PathBuf) -> Node {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(fleet_node_binary())
            .args(["coordinator", "--id", "1", "--listen", address])
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--disk-probe-interval-ms",
                "0",
                "--snapshot-after-logs",
                "3",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Node {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- node log ----\n{}", self.log());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `fleet-ctl` against `address` until it succeeds (the node may still be starting).
fn ctl(address: &str, args: &[&str]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = Command::new(sibling_binary("fleet-ctl"))
            .args(["--endpoints", address, "-o", "json", "--as", "tester"])
            .args(args)
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

#[test]
fn a_format_0_data_dir_is_read_and_its_audit_chain_verifies_after_a_command_gained_a_field() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format0-single-node");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node-1");
    copy_dir(&fixture, &data_dir);
    std::fs::create_dir_all(data_dir.join("sled/blobs")).unwrap();
    assert!(!data_dir.join("identity.json").exists());
    let address = format!("127.0.0.1:{}", free_port());

    let mut node = Node::start(&data_dir, &address, &[], dir.path().join("1.log"));
    let verified = ctl(&address, &["audit", "verify"]);
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["events"], FIXTURE_EVENTS, "{verified}");
    assert_eq!(verified["head_hash"], FIXTURE_HEAD, "{verified}");

    // The publish events were stored before `allow_rejected` existed: their stored text lacks
    // it, and re-serializing the command as this build reads it would add it (and so change
    // the bytes the old hash covers).
    let events = audit_events(&address);
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
    node.stop();
    let mut node = Node::start(&data_dir, &address, &[], dir.path().join("2.log"));
    let verified = ctl(&address, &["audit", "verify"]);
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["events"], FIXTURE_EVENTS + 3, "{verified}");
    let events = audit_events(&address);
    assert_eq!(events[0]["format"], 0, "{:?}", events[0]);
    assert_eq!(events[events.len() - 1]["format"], 1);
    assert_eq!(events[FIXTURE_EVENTS as usize - 1]["hash"], FIXTURE_HEAD);
    assert!(node.log().contains("snapshot"), "{}", node.log());
    node.stop();

    // The data dir belongs to a cluster now: --bootstrap on it is refused.
    let mut node = Node::start(
        &data_dir,
        &address,
        &["--bootstrap"],
        dir.path().join("3.log"),
    );
    let status = node
        .wait_exit(Duration::from_secs(20))
        .expect("--bootstrap on a data dir of a cluster is refused");
    assert!(!status.success());
    assert!(
        node.log()
            .contains("already belongs to coordinator cluster"),
        "{}",
        node.log()
    );
}
