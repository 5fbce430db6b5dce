//! Helpers shared by the fleet-ctl integration tests: the real binary, JSON output, real Git.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs fleet-ctl against `endpoints` as the test CA's operator `admin`.
pub fn ctl(endpoints: &str, args: &[&str]) -> Output {
    ctl_as(fleet_testkit::pki().admin(), endpoints, args)
}

/// Runs fleet-ctl against `endpoints` with the certificate `files` (and no config file).
pub fn ctl_as(files: &fleet_identity::TlsFiles, endpoints: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleet-ctl"))
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .env_remove("FLEET_ENDPOINTS")
        .env_remove("FLEET_CONTEXT")
        .envs(fleet_testkit::TestPki::ctl_env(files))
        .output()
        .expect("run fleet-ctl")
}

/// A certificate from the test CA for operator `name`.
pub fn operator(name: &str) -> fleet_identity::TlsFiles {
    fleet_testkit::pki().issue(
        &fleet_core::Principal::Operator(name.into()),
        &[],
        &format!("operator-{name}"),
    )
}

pub fn ok_json(endpoints: &str, args: &[&str]) -> Value {
    ok_json_as(fleet_testkit::pki().admin(), endpoints, args)
}

/// [`ok_json`] as the holder of `files`.
pub fn ok_json_as(files: &fleet_identity::TlsFiles, endpoints: &str, args: &[&str]) -> Value {
    let out = ctl_as(files, endpoints, &[args, &["-o", "json"]].concat());
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
