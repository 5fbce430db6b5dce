//! Property: no symlink the files target accepts resolves outside the workload's root, judged
//! by the kernel itself (`realpath` on the written tree), whatever the render holds and
//! whatever hand-made links already stand in the workload's root.
//!
//! Bounded for CI: `FLEET_PROPTEST_CASES` trees (default 1000, about two seconds). Every run prints
//! its seed; `FLEET_PROPTEST_SEED=S` replays one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use fleet_agent::files::FilesTarget;
use fleet_core::render::{FileKind, Render, RenderPath, check_render};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

/// Names the render's entries are made of: few, so links often meet other entries.
const NAMES: [&str; 3] = ["a", "b", "l"];
/// Names of the hand-made links already in the workload's root.
const HAND_MADE: [&str; 2] = ["h1", "h2"];
/// Steps of a link target: names weighted above `..`, so chains often resolve somewhere;
/// `outside` and `etc` also stand next to the workload's root, so an escape resolves to
/// something real.
const STEPS: [&str; 13] = [
    "a", "b", "l", "a", "b", "l", "h1", "h2", "outside", "etc", "..", "..", ".",
];

/// Accepted links that the kernel resolved to somewhere (all of them checked inside).
static RESOLVED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
enum Kind {
    File,
    /// A link with a target made of random steps.
    Link(String),
    /// A link to another entry of the render (or of the disk): up to the root (`ups` 1), or
    /// one level less (0) or more (2, an escape); then the path of entry `pick`, then `tail`;
    /// so targets often exist and chains form.
    LinkTo {
        ups: usize,
        pick: usize,
        tail: String,
    },
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&NAMES[..]), 1..=2).prop_map(|p| p.join("/"))
}

fn link_target() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(&STEPS[..]), 1..=5),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(steps, absolute)| {
            let joined = steps.join("/");
            if absolute {
                format!("/{joined}")
            } else {
                joined
            }
        })
}

fn entry() -> impl Strategy<Value = (String, Kind)> {
    (
        path(),
        prop_oneof![
            Just(Kind::File),
            link_target().prop_map(Kind::Link),
            (
                prop_oneof![1 => Just(0usize), 6 => Just(1), 1 => Just(2)],
                any::<usize>(),
                prop_oneof![
                    3 => Just(String::new()),
                    1 => prop::collection::vec(prop::sample::select(&STEPS[..]), 1..=2)
                        .prop_map(|t| t.join("/")),
                ],
            )
                .prop_map(|(ups, pick, tail)| Kind::LinkTo { ups, pick, tail }),
        ],
    )
}

/// The render's entries (path, kind), and the hand-made links (name, target) already in the
/// workload's root, not owned by the agent.
type Case = (Vec<(String, Kind)>, Vec<(String, String)>);

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(entry(), 1..=6),
        prop::collection::vec(
            (
                prop::sample::select(&HAND_MADE[..]),
                prop_oneof![
                    Just("/".to_string()),
                    Just("..".to_string()),
                    Just("../outside".to_string()),
                    Just("a".to_string()),
                    link_target()
                ],
            )
                .prop_map(|(name, target)| (name.to_string(), target)),
            1..=2,
        ),
    )
}

fn check(entries: &[(String, Kind)], hand_made: &[(String, String)]) -> Result<(), TestCaseError> {
    // Keep the tree consistent (no file below a file), so most cases reach the disk.
    let mut kept: Vec<(&str, &Kind)> = Vec::new();
    for (path, kind) in entries {
        let clash = kept.iter().any(|(k, _)| {
            k == path || path.starts_with(&format!("{k}/")) || k.starts_with(&format!("{path}/"))
        });
        if !clash {
            kept.push((path, kind));
        }
    }
    let mut names: Vec<&str> = kept.iter().map(|(p, _)| *p).collect();
    names.extend(HAND_MADE);
    let mut render = Render::new();
    for (path, kind) in &kept {
        let value = match kind {
            Kind::File => (FileKind::Regular, b"x".to_vec()),
            Kind::Link(target) => (FileKind::Symlink, target.as_bytes().to_vec()),
            Kind::LinkTo { ups, pick, tail } => {
                // From the link's directory back to the root, then `ups - 1` more (0: stay
                // one below the root; 2: one above it, an escape).
                let depth = path.matches('/').count();
                let mut target =
                    "../".repeat((depth + ups).saturating_sub(1)) + names[pick % names.len()];
                if !tail.is_empty() {
                    target = format!("{target}/{tail}");
                }
                (FileKind::Symlink, target.into_bytes())
            }
        };
        render.insert(RenderPath::from(*path), value);
    }
    if check_render(&render).is_err() {
        return Ok(()); // Refused before the disk is looked at: nothing to resolve.
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let web = root.join("web");
    std::fs::create_dir_all(web.join("..").join("etc")).unwrap();
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(root.join("outside"), "outside").unwrap();
    let mut made = BTreeMap::new();
    for (name, target) in hand_made {
        if made.insert(name.clone(), ()).is_none() {
            std::os::unix::fs::symlink(target, web.join(name)).unwrap();
        }
    }
    let target = FilesTarget::new(root.clone(), &dir.path().join("state"));
    if target.apply("web", &render).is_err() {
        return Ok(()); // Refused: nothing written, so nothing to resolve.
    }
    let inside = std::fs::canonicalize(&web).unwrap();
    for (path, (kind, link)) in &render {
        if *kind != FileKind::Symlink {
            continue;
        }
        let written = web.join(path.to_str().unwrap());
        // The kernel's answer: where the link leads, if it leads anywhere.
        if let Ok(resolved) = std::fs::canonicalize(&written) {
            RESOLVED.fetch_add(1, Ordering::Relaxed);
            prop_assert!(
                resolved.starts_with(&inside),
                "{path:?} -> {:?} was accepted but resolves to {} (outside {})",
                String::from_utf8_lossy(link),
                resolved.display(),
                inside.display()
            );
        }
    }
    Ok(())
}

#[test]
fn no_accepted_symlink_resolves_outside_the_workload_root() {
    let seed: u64 = std::env::var("FLEET_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let cases: u32 = std::env::var("FLEET_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    eprintln!("seed {seed}, {cases} cases (replay with FLEET_PROPTEST_SEED={seed})");
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(failure) = runner.run(&case(), |(entries, hand_made)| check(&entries, &hand_made)) {
        panic!("seed {seed} (replay with FLEET_PROPTEST_SEED={seed}): {failure}");
    }
    // The property is not vacuous: many accepted links were resolved by the kernel.
    let resolved = RESOLVED.load(Ordering::Relaxed);
    assert!(
        resolved >= u64::from(cases) / 20,
        "only {resolved} accepted links resolved in {cases} cases: the generator is too narrow"
    );
    eprintln!("{resolved} accepted links resolved inside the workload's root");
}
