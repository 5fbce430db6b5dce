//! Helpers shared by the fleet-ctl integration tests: the real binary, JSON output, real Git.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

pub fn ctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleet-ctl"))
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .env_remove("FLEET_ENDPOINTS")
        .output()
        .expect("run fleet-ctl")
}

pub fn ok_json(endpoints: &str, args: &[&str]) -> Value {
    let out = ctl(endpoints, &[args, &["-o", "json"]].concat());
    assert!(
        out.status.success(),
        "fleet-ctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.no")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.no")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
