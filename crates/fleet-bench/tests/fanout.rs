//! The benchmark binary end to end against a real coordinator process: `fanout` with a
//! handful of agents delivers every release to every agent and prints one row per release.
//! (Figures are not judged here: benchmarks are measured, not timed in tests.)

use std::process::Command;

#[test]
fn fanout_delivers_each_release_to_every_agent_and_prints_a_row_per_release() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-bench"))
        .args(["fanout", "--agents", "5", "--nodes", "1", "--releases", "2"])
        .output()
        .expect("run fleet-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.split_whitespace().take(2).eq(["5", "1"]))
        .collect();
    assert_eq!(rows.len(), 2, "one row per release:\n{stdout}");
    assert!(rows[1].split_whitespace().nth(2) == Some("2"), "{stdout}");
}
