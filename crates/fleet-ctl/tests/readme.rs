//! The README's quickstart and promotion walkthrough, run as written: the embedded demo (the
//! real `fleet-node` binary with its own CA and fleet-ctl contexts), then every command of the
//! README's two shell blocks, in order, through bash, with `fleet-ctl` on the PATH. A command
//! whose comment says it is refused must fail, one that says `exit N` must exit N, every other
//! one must succeed. Where the README tells the reader to wait (the soak), the test waits; a
//! `promote` that the README expects to succeed is retried while the staging gate still holds,
//! as a reader would.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The shell blocks of the section that starts with `heading` (up to the next heading), in
/// order.
fn blocks_of(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let rest = &readme[start + heading.len()..];
    // Up to the next heading of level 2 or 3 (a `#` line inside a block is a shell comment).
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|h| rest.find(h))
        .min()
        .unwrap_or(rest.len());
    let section = &rest[..end];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(block.join("\n"));
        }
    }
    blocks
}

/// The statements of a shell block: lines joined while they end in `\` or leave a
/// parenthesis open.
fn statements(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
        let open = current.matches('(').count() > current.matches(')').count();
        if !line.trim_end().ends_with('\\') && !open {
            out.push(std::mem::take(&mut current));
        }
    }
    assert!(current.is_empty(), "an unfinished statement: {current}");
    out
}

/// What the README says a statement does: its comment (after the last `  #`).
fn comment(statement: &str) -> String {
    statement
        .lines()
        .last()
        .and_then(|l| l.rsplit_once("  #"))
        .map_or(String::new(), |(_, c)| c.trim().to_string())
}

fn bash(dir: &Path, path: &str, config_home: &Path, statement: &str) -> Output {
    Command::new("bash")
        .args(["-c", statement])
        .current_dir(dir)
        .env("PATH", path)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("FLEET_CONFIG")
        .env_remove("FLEET_CONTEXT")
        .env_remove("FLEET_ENDPOINTS")
        .env_remove("FLEET_CA")
        .env_remove("FLEET_CERT")
        .env_remove("FLEET_KEY")
        .output()
        .expect("run bash")
}

/// The embedded demo, killed when dropped.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_quickstart_and_promotion_walkthrough_run_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("read README.md");
    let quickstart = blocks_of(&readme, "## Quickstart");
    assert_eq!(
        quickstart[0].trim(),
        "cargo run --release --bin fleet-node",
        "the quickstart starts the demo with one command"
    );
    let promotion = blocks_of(&readme, "### A promotion, end to end");
    assert_eq!(promotion.len(), 1, "one block for the walkthrough");

    let dir = tempfile::tempdir().unwrap();
    let config_home = dir.path().join("config");
    // `fleet-ctl` on the PATH, as the README's alias makes it.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fleet-ctl"), bin.join("fleet-ctl")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The demo as the README starts it, on free ports (a machine may have 7400 taken); its
    // contexts carry the address, so the README's commands need no --endpoints.
    let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
    let _demo = Demo(
        Command::new(fleet_testkit::fleet_node_binary())
            .current_dir(dir.path())
            .args([
                "demo",
                "--listen",
                &format!("127.0.0.1:{}", fleet_testkit::free_port()),
                "--metrics-listen",
                &format!("127.0.0.1:{}", fleet_testkit::free_port()),
            ])
            .env("XDG_CONFIG_HOME", &config_home)
            .env_remove("FLEET_CONFIG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let demo_log = || std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    let staging = dir.path().join("fleet-demo/stg-oslo-1/web/nginx.conf");
    let started = Instant::now();
    while !staging.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the demo agent never wrote staging:\n{}",
            demo_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let script: Vec<String> = quickstart[1..]
        .iter()
        .chain(&promotion)
        .flat_map(|b| statements(b))
        .collect();
    assert!(script.len() > 25, "{script:#?}");
    for statement in &script {
        let run = statement.replace("cargo run --release --bin fleet-ctl --", "fleet-ctl");
        let said = comment(statement);
        let refused = said.contains("refused");
        let exit = said
            .split("exit ")
            .nth(1)
            .and_then(|rest| rest.chars().next())
            .and_then(|c| c.to_digit(10))
            .map(|d| d as i32);
        let retry_until = Instant::now()
            + if !refused && run.contains("fleet-ctl promote") {
                Duration::from_secs(60)
            } else {
                Duration::ZERO
            };
        let out = loop {
            let out = bash(dir.path(), &path, &config_home, &run);
            if out.status.success() || Instant::now() >= retry_until {
                break out;
            }
            eprintln!(
                "{run}: {} (retrying while the gate holds)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        let shown = format!(
            "{run}\n--- stdout\n{}--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match (refused, exit) {
            (true, _) => assert!(!out.status.success(), "must be refused: {shown}"),
            (false, Some(code)) => assert_eq!(out.status.code(), Some(code), "{shown}"),
            (false, None) => assert!(out.status.success(), "must succeed: {shown}"),
        }
        if said.contains("wait the soak") {
            std::thread::sleep(Duration::from_secs(12));
        }
    }

    // The walkthrough's results: production runs the production overlay, and every change on
    // record was made by an authenticated principal (the operators' certificates, the agents'),
    // the planner, or the demo's seeding; the chain verifies.
    for cluster in ["prod-oslo-1", "prod-bergen-1", "prod-stavanger-1"] {
        let conf = dir
            .path()
            .join(format!("fleet-demo/{cluster}/web/nginx.conf"));
        assert!(
            std::fs::read_to_string(&conf)
                .unwrap_or_default()
                .contains("server_name web.example.no"),
            "{cluster} runs the production overlay"
        );
    }
    let out = bash(
        dir.path(),
        &path,
        &config_home,
        "fleet-ctl audit --limit 1000 -o json",
    );
    assert!(out.status.success());
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    let actors: std::collections::BTreeSet<String> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap().to_string())
        .collect();
    for who in ["kari", "ola", "per", "planner"] {
        assert!(actors.contains(who), "{who} is missing: {actors:?}");
    }
    for actor in &actors {
        assert!(
            ["kari", "ola", "per", "planner", "system:demo"].contains(&actor.as_str())
                || actor.starts_with("agent:")
                || actor.starts_with("coordinator:"),
            "{actor} is no authenticated principal: {actors:?}"
        );
    }
}
