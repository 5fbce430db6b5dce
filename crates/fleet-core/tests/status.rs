//! Agents' status reports in the replicated state: stored per cluster and workload, kept out of
//! the audit trail, committed again only on change or once they are a minute old.

use std::collections::BTreeMap;

use fleet_core::limits::{MAX_REPORT_OBJECTS, STATUS_REFRESH_MS};
use fleet_core::{
    Command, Context, CoreError, HealthState, ObjectStatus, State, StatusReport, SyncState,
};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn ctx(now_ms: u64) -> Context {
    Context {
        now_ms,
        actor: "test".into(),
        reason: String::new(),
    }
}

fn fleet() -> State {
    let mut state = State::default();
    for command in [
        Command::AddSite {
            name: "oslo".into(),
        },
        Command::RegisterCluster {
            name: "oslo-1".into(),
            site: "oslo".into(),
            environment: "staging".into(),
            labels: BTreeMap::new(),
        },
        Command::CreateWorkload {
            name: "web".into(),
            repo_url: "https://git.example/web.git".into(),
            path_template: "overlays/{environment}".into(),
        },
        Command::PublishRelease {
            workload: "web".into(),
            revision: SHA.into(),
            allow_rejected: false,
            override_freeze: false,
        },
    ] {
        state.apply(&command, &ctx(1_000)).unwrap();
    }
    state
}

fn report() -> StatusReport {
    StatusReport {
        workload: "web".into(),
        applied_revision: SHA.into(),
        desired_revision: SHA.into(),
        assignment_version: 1,
        render_hash: "ab".repeat(32),
        sync: SyncState::Synced,
        health: HealthState::Healthy,
        error: String::new(),
        drift_count: 0,
        objects: vec![ObjectStatus {
            name: "nginx.conf".into(),
            sync: SyncState::Synced,
            health: HealthState::Healthy,
            message: String::new(),
        }],
        objects_omitted: 0,
    }
}

fn record(state: &mut State, report: StatusReport, now_ms: u64) -> Result<(), CoreError> {
    state
        .apply(
            &Command::RecordStatus {
                cluster: "oslo-1".into(),
                report,
            },
            &ctx(now_ms),
        )
        .map(|_| ())
}

#[test]
fn a_report_shows_in_the_status_row_and_not_in_the_audit_log() {
    let mut state = fleet();
    let audit_before = state.audit_events().len();
    record(&mut state, report(), 5_000).unwrap();
    assert_eq!(state.audit_events().len(), audit_before);
    let row = &state.status_rows()[0];
    let reported = row.report.as_ref().expect("the row carries the report");
    assert_eq!(reported.report, report());
    assert_eq!(reported.reported_at_ms, 5_000);
    state.verify_audit().unwrap();
}

#[test]
fn only_a_changed_or_minute_old_report_needs_a_commit() {
    let mut state = fleet();
    assert!(state.report_needs_commit("oslo-1", &report(), 5_000));
    record(&mut state, report(), 5_000).unwrap();
    assert!(!state.report_needs_commit("oslo-1", &report(), 5_000 + STATUS_REFRESH_MS - 1));
    assert!(state.report_needs_commit("oslo-1", &report(), 5_000 + STATUS_REFRESH_MS));
    let drifted = StatusReport {
        sync: SyncState::OutOfSync,
        drift_count: 1,
        ..report()
    };
    assert!(state.report_needs_commit("oslo-1", &drifted, 5_001));
}

#[test]
fn removing_a_cluster_forgets_its_reports() {
    let mut state = fleet();
    record(&mut state, report(), 5_000).unwrap();
    state
        .apply(
            &Command::RemoveCluster {
                name: "oslo-1".into(),
            },
            &ctx(6_000),
        )
        .unwrap();
    assert!(state.report("oslo-1", "web").is_none());
}

#[test]
fn a_bad_report_names_the_field_and_changes_nothing() {
    let mut state = fleet();
    let before = state.clone();
    let cases = [
        (
            StatusReport {
                applied_revision: "main".into(),
                ..report()
            },
            "applied_revision",
        ),
        (
            StatusReport {
                render_hash: "xyz".into(),
                ..report()
            },
            "render_hash",
        ),
        (
            StatusReport {
                objects: vec![report().objects[0].clone(); MAX_REPORT_OBJECTS + 1],
                ..report()
            },
            "objects",
        ),
        (
            StatusReport {
                error: "e".repeat(2000),
                ..report()
            },
            "error",
        ),
        (
            StatusReport {
                workload: "nope".into(),
                ..report()
            },
            "nope",
        ),
    ];
    for (bad, field) in cases {
        let error = record(&mut state, bad, 5_000).unwrap_err();
        assert!(error.to_string().contains(field), "{field}: {error}");
        assert_eq!(state, before);
    }
}
