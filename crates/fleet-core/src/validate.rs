//! Field validation. Each function names the field it checks in its error.

use std::collections::{BTreeMap, BTreeSet};

use crate::command::Command;
use crate::error::CoreError;
use crate::limits::*;
use crate::model::{Revision, StatusReport};
use crate::rollout::{MAX_REQUIRED_APPROVALS, MAX_SOAK_MS, Pipeline, UNREACHABLE_AFTER_MS};

/// Everything about a command that does not depend on the state: who acts, the reason, and the
/// names, formats and limits of the command's fields. The answer is the same on every node at
/// every moment, so a node refuses on it at once, without a leader or a read barrier.
/// [`crate::State::check`] runs it first, then checks the command against the state.
pub fn command(command: &Command, actor: &str, reason: &str) -> Result<(), CoreError> {
    command_in(command, actor, reason, crate::audit::AUDIT_EVENT_FORMAT)
}

/// [`command`] by the rules of entry format `format` (see `State::apply_stored`): from format 1
/// on, actors and reasons are single lines ([`one_line`]); format-0 entries allowed newlines
/// and tabs in them.
pub fn command_in(
    command: &Command,
    actor: &str,
    reason: &str,
    format: u32,
) -> Result<(), CoreError> {
    if actor.trim().is_empty() {
        return Err(CoreError::invalid(
            "actor",
            "must not be empty",
            "say who acts, e.g. with --as NAME",
        ));
    }
    if format >= 1 {
        one_line("actor", actor, MAX_ACTOR_LEN)?;
        one_line("reason", reason, MAX_REASON_LEN)?;
    } else {
        text("actor", actor, MAX_ACTOR_LEN)?;
        text("reason", reason, MAX_REASON_LEN)?;
    }
    match command {
        Command::AddSite { name } => dns_label("site", name),
        Command::AddEnvironment { name } => dns_label("environment", name),
        Command::RegisterCluster {
            name,
            site,
            environment,
            labels,
        } => {
            dns_label("name", name)?;
            dns_label("site", site)?;
            dns_label("environment", environment)?;
            self::labels(labels)
        }
        Command::RemoveCluster { name } => dns_label("name", name),
        Command::CreateWorkload {
            name,
            repo_url,
            path_template,
        } => {
            dns_label("name", name)?;
            self::repo_url(repo_url)?;
            self::path_template(path_template)
        }
        Command::PublishRelease {
            workload, revision, ..
        } => {
            dns_label("workload", workload)?;
            self::revision(revision).map(|_| ())
        }
        Command::RecordLeadershipHandover {
            from_node,
            to_node,
            from_p99s_us,
            ..
        } => {
            if from_node == to_node {
                return Err(CoreError::invalid(
                    "to_node",
                    format!("leadership cannot move from node {from_node} to itself"),
                    "name the node that took leadership",
                ));
            }
            if from_p99s_us.len() > MAX_HANDOVER_FIGURES {
                return Err(CoreError::invalid(
                    "from_p99s_us",
                    format!(
                        "{} figures is over the limit of {MAX_HANDOVER_FIGURES}",
                        from_p99s_us.len()
                    ),
                    "record the seconds that made the leader hand over, at most one minute",
                ));
            }
            Ok(())
        }
        Command::RecordStatus { cluster, report } => {
            dns_label("cluster", cluster)?;
            status_report(report)
        }
        Command::SetPipeline { workload, pipeline } => {
            dns_label("workload", workload)?;
            self::pipeline(pipeline)?;
            // From format 2 every wave name is bounded whichever the mode: a site name or a
            // label value, both at most 63 characters.
            if format >= 2 {
                for wave in &pipeline.wave_order {
                    wave_name(wave)?;
                }
            }
            Ok(())
        }
        Command::SetRequiredApprovals {
            environment,
            approvals,
        } => {
            dns_label("environment", environment)?;
            if *approvals > MAX_REQUIRED_APPROVALS {
                return Err(CoreError::invalid(
                    "approvals",
                    format!("{approvals} is over the limit of {MAX_REQUIRED_APPROVALS}"),
                    "require fewer approvals",
                ));
            }
            Ok(())
        }
        Command::Promote {
            workload,
            environment,
            revision,
            ..
        } => {
            dns_label("workload", workload)?;
            dns_label("environment", environment)?;
            match revision {
                Some(r) => revision_in("revision", r).map(|_| ()),
                None => Ok(()),
            }
        }
        Command::Approve {
            workload,
            environment,
        }
        | Command::PauseRollout {
            workload,
            environment,
        }
        | Command::ResumeRollout {
            workload,
            environment,
        }
        | Command::AbortRollout {
            workload,
            environment,
        }
        | Command::AdvanceRollout {
            workload,
            environment,
            ..
        } => {
            dns_label("workload", workload)?;
            dns_label("environment", environment)
        }
        Command::Rollback {
            workload,
            environment,
            to,
        } => {
            dns_label("workload", workload)?;
            dns_label("environment", environment)?;
            match to {
                Some(to) => revision_in("to", to).map(|_| ()),
                None => Ok(()),
            }
        }
        Command::AddFreeze {
            environment,
            from_ms,
            to_ms,
        } => {
            dns_label("environment", environment)?;
            if from_ms >= to_ms {
                return Err(CoreError::invalid(
                    "to",
                    "is not after --from",
                    "give a window that ends after it starts",
                ));
            }
            Ok(())
        }
        Command::RemoveFreeze { .. } => Ok(()),
        Command::BindRole {
            principal,
            role,
            environments,
            workloads,
        } => {
            crate::principal::operator_name("principal", principal)?;
            crate::access::Role::parse("role", role)?;
            scope(environments, workloads)
        }
        Command::UnbindRole { principal, role } => {
            crate::principal::operator_name("principal", principal)?;
            crate::access::Role::parse("role", role).map(|_| ())
        }
        Command::CreateToken {
            name,
            secret_sha256,
            role,
            environments,
            workloads,
            expires_at_ms,
        } => {
            crate::principal::operator_name("name", name)?;
            sha256_hex(secret_sha256)?;
            crate::access::Role::parse("role", role)?;
            if *expires_at_ms == 0 {
                return Err(CoreError::invalid(
                    "expires_at_ms",
                    "must be set",
                    "give the token a lifetime, e.g. --ttl 90d",
                ));
            }
            scope(environments, workloads)
        }
        Command::RevokeToken { name } => crate::principal::operator_name("name", name),
        Command::RevokeClusterCertificates { cluster } => dns_label("cluster", cluster),
        Command::CreateJoinToken {
            cluster,
            secret_sha256,
            expires_at_ms,
        } => {
            dns_label("cluster", cluster)?;
            sha256_hex(secret_sha256)?;
            if *expires_at_ms == 0 {
                return Err(CoreError::invalid(
                    "expires_at_ms",
                    "must be set",
                    "give the join token a lifetime, e.g. --ttl 1h",
                ));
            }
            Ok(())
        }
        Command::EnrollCluster {
            cluster,
            secret_sha256,
        } => {
            dns_label("cluster", cluster)?;
            sha256_hex(secret_sha256)
        }
    }
}

/// A role's scope: environment and workload names, each listed once, at most
/// [`MAX_SCOPE_ENTRIES`] of each.
fn scope(environments: &[String], workloads: &[String]) -> Result<(), CoreError> {
    for (field, names) in [("environments", environments), ("workloads", workloads)] {
        if names.len() > MAX_SCOPE_ENTRIES {
            return Err(CoreError::invalid(
                field,
                format!(
                    "{} names is over the limit of {MAX_SCOPE_ENTRIES}",
                    names.len()
                ),
                "bind the role without a scope, or split it",
            ));
        }
        let mut seen = BTreeSet::new();
        for name in names {
            dns_label(field, name)?;
            if !seen.insert(name) {
                return Err(CoreError::invalid(
                    field,
                    format!("{name} is listed twice"),
                    "list each name once",
                ));
            }
        }
    }
    Ok(())
}

/// The shape of a pipeline; [`crate::rollout::validate_pipeline`] checks it against the fleet.
pub fn pipeline(p: &Pipeline) -> Result<(), CoreError> {
    if p.environments.is_empty() {
        return Err(CoreError::invalid(
            "environments",
            "is empty",
            "list the environments in order, e.g. --environments staging,production",
        ));
    }
    let mut seen = BTreeSet::new();
    for e in &p.environments {
        dns_label("environments", e)?;
        if !seen.insert(e) {
            return Err(CoreError::invalid(
                "environments",
                format!("{e} is listed twice"),
                "list each environment once",
            ));
        }
    }
    if p.soak_ms > MAX_SOAK_MS {
        return Err(CoreError::invalid(
            "soak",
            format!("{} s is longer than 7 days", p.soak_ms / 1000),
            "use a soak of at most 7d",
        ));
    }
    if !(1_000..=MAX_SOAK_MS).contains(&p.progress_deadline_ms) {
        return Err(CoreError::invalid(
            "progress_deadline",
            format!("{} ms is outside 1 s to 7 days", p.progress_deadline_ms),
            "use a deadline such as 10m (the default)",
        ));
    }
    if p.max_unavailable == 0 {
        return Err(CoreError::invalid(
            "max_unavailable",
            "is 0, so no cluster could ever change",
            "use 1 or more",
        ));
    }
    if p.unreachable_timeout_ms < UNREACHABLE_AFTER_MS {
        return Err(CoreError::invalid(
            "unreachable_timeout",
            format!(
                "{} s is shorter than the {} s after which a cluster counts as unreachable",
                p.unreachable_timeout_ms / 1000,
                UNREACHABLE_AFTER_MS / 1000
            ),
            "use at least 2m",
        ));
    }
    if p.wave_order.len() > MAX_WAVE_ORDER {
        return Err(CoreError::invalid(
            "wave_order",
            format!(
                "{} waves is over the limit of {MAX_WAVE_ORDER}",
                p.wave_order.len()
            ),
            "list the waves that need an order; the rest follow in name order",
        ));
    }
    let mut waves = BTreeSet::new();
    for s in &p.wave_order {
        if !waves.insert(s) {
            return Err(CoreError::invalid(
                "wave_order",
                format!("{s} is listed twice"),
                "list each wave once",
            ));
        }
    }
    if let Some(label) = &p.wave_label {
        labels(&BTreeMap::from([(label.clone(), String::new())]))?;
    }
    Ok(())
}

/// A DNS-1123 label: 1..=63 of `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn dns_label(field: &str, value: &str) -> Result<(), CoreError> {
    let hint = "use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. oslo-prod-1)";
    if value.is_empty() {
        return Err(CoreError::invalid(field, "must not be empty", hint));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(CoreError::invalid(
            field,
            format!(
                "{} characters is over the limit of {MAX_NAME_LEN}",
                value.len()
            ),
            hint,
        ));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if let Some(bad) = value.chars().find(|c| !ok_char(*c)) {
        return Err(CoreError::invalid(
            field,
            format!("{value:?} contains {bad:?}, which is not allowed"),
            hint,
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(CoreError::invalid(
            field,
            format!("{value:?} must not start or end with '-'"),
            hint,
        ));
    }
    Ok(())
}

/// A name in a pipeline's `wave_order`: a site name, or a value of the wave label; either way
/// at most [`MAX_LABEL_VALUE_LEN`] letters, digits, '-', '_' and '.'.
pub fn wave_name(wave: &str) -> Result<(), CoreError> {
    let ok = !wave.is_empty()
        && wave.len() <= MAX_LABEL_VALUE_LEN
        && wave
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        return Ok(());
    }
    let shown: String = wave.chars().take(MAX_LABEL_VALUE_LEN).collect();
    Err(CoreError::invalid(
        "wave_order",
        format!(
            "{shown:?}{} is not a site name or label value",
            if shown.len() < wave.len() { "…" } else { "" }
        ),
        "list sites (or values of the wave label): up to 63 letters, digits, '-', '_' and '.'",
    ))
}

/// Cluster labels: at most [`MAX_LABELS_PER_CLUSTER`], keys and values as in Kubernetes
/// (without key prefixes).
pub fn labels(labels: &BTreeMap<String, String>) -> Result<(), CoreError> {
    if labels.len() > MAX_LABELS_PER_CLUSTER {
        return Err(CoreError::invalid(
            "labels",
            format!(
                "{} labels is over the limit of {MAX_LABELS_PER_CLUSTER}",
                labels.len()
            ),
            "keep the labels that select waves and drop the rest",
        ));
    }
    let label_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let hint = "label keys and values use up to 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit";
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY_LEN
            && key.chars().all(label_char)
            && key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && key
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !key_ok {
            return Err(CoreError::invalid(
                "labels",
                format!("label key {key:?} is not valid"),
                hint,
            ));
        }
        let value_ok = value.len() <= MAX_LABEL_VALUE_LEN
            && value.chars().all(label_char)
            && (value.is_empty()
                || (value
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
                    && value
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_ascii_alphanumeric())));
        if !value_ok {
            return Err(CoreError::invalid(
                "labels",
                format!("value {value:?} of label {key:?} is not valid"),
                hint,
            ));
        }
    }
    Ok(())
}

/// A Git repository URL: `https://`, `http://`, `ssh://`, `file://` or scp-like `user@host:path`.
pub fn repo_url(value: &str) -> Result<(), CoreError> {
    let hint = "give a URL such as https://git.example.no/team/app.git, ssh://git@host/repo.git or file:///srv/git/app.git";
    if value.is_empty() {
        return Err(CoreError::invalid("repo_url", "must not be empty", hint));
    }
    if value.len() > MAX_REPO_URL_LEN {
        return Err(CoreError::invalid(
            "repo_url",
            format!(
                "{} characters is over the limit of {MAX_REPO_URL_LEN}",
                value.len()
            ),
            hint,
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CoreError::invalid(
            "repo_url",
            "must not contain whitespace or control characters",
            hint,
        ));
    }
    let schemes = ["https://", "http://", "ssh://", "file://"];
    let has_scheme = schemes
        .iter()
        .any(|s| value.starts_with(s) && value.len() > s.len());
    let scp_like = !value.contains("://")
        && value
            .split_once('@')
            .is_some_and(|(user, rest)| !user.is_empty() && rest.contains(':'));
    if !has_scheme && !scp_like {
        return Err(CoreError::invalid(
            "repo_url",
            format!("{value:?} is not a Git URL this fleet can fetch"),
            hint,
        ));
    }
    Ok(())
}

/// A path template inside the repository: relative, no `..`, placeholders only `{environment}`.
pub fn path_template(value: &str) -> Result<(), CoreError> {
    let hint = "give a relative path inside the repository, e.g. overlays/{environment}; the only placeholder is {environment}";
    if value.is_empty() {
        return Err(CoreError::invalid("path", "must not be empty", hint));
    }
    if value.len() > MAX_PATH_TEMPLATE_LEN {
        return Err(CoreError::invalid(
            "path",
            format!(
                "{} characters is over the limit of {MAX_PATH_TEMPLATE_LEN}",
                value.len()
            ),
            hint,
        ));
    }
    if value.starts_with('/') || value.contains('\\') {
        return Err(CoreError::invalid(
            "path",
            format!("{value:?} must be a relative path with '/' separators"),
            hint,
        ));
    }
    if value.split('/').any(|part| part == "..") {
        return Err(CoreError::invalid(
            "path",
            format!("{value:?} must not contain '..'"),
            hint,
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(CoreError::invalid(
            "path",
            "must not contain control characters",
            hint,
        ));
    }
    let without = value.replace("{environment}", "");
    if without.contains('{') || without.contains('}') {
        return Err(CoreError::invalid(
            "path",
            format!("{value:?} has a placeholder other than {{environment}}"),
            hint,
        ));
    }
    Ok(())
}

/// A full 40-hex Git commit SHA. Returns it in lowercase.
pub fn revision(value: &str) -> Result<Revision, CoreError> {
    revision_in("revision", value)
}

/// A full 40-hex Git commit SHA in the field `field`. Returns it in lowercase.
pub fn revision_in(field: &str, value: &str) -> Result<Revision, CoreError> {
    let hint = "give the full 40-character commit SHA (git rev-parse HEAD), not a branch, tag or short SHA";
    if value.len() != 40 {
        return Err(CoreError::invalid(
            field,
            format!(
                "{value:?} is {} characters long, a revision is 40 hex digits",
                value.len()
            ),
            hint,
        ));
    }
    if let Some(bad) = value.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(CoreError::invalid(
            field,
            format!("{value:?} contains {bad:?}, which is not a hex digit"),
            hint,
        ));
    }
    Ok(Revision::checked(value.to_ascii_lowercase()))
}

/// Text that stays on one line, with a length limit: actors and reasons. Every control
/// character (newline, tab, NUL, escape, ...) is refused: a newline in a reason once made a
/// table of freezes show a row that did not exist, and an escape sequence can rewrite a
/// terminal.
pub fn one_line(field: &str, value: &str, max: usize) -> Result<(), CoreError> {
    if value.len() > max {
        return Err(CoreError::invalid(
            field,
            format!("{} bytes is over the limit of {max}", value.len()),
            format!("shorten the {field}"),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(CoreError::invalid(
            field,
            format!("contains the control character {c:?}"),
            format!("give the {field} on one line, without control characters"),
        ));
    }
    Ok(())
}

/// Whether two actors are the same person for the approval rules: compared trimmed and
/// case-insensitively (Unicode lower case), so `kari`, `kari ` and `KARI` are one approver.
/// Actors are authenticated principals now (SPIFFE IDs, compared exactly elsewhere); this
/// stays looser on purpose, since stored approvals are replayed by it, and two operators whose
/// names differ only in case count as one approver (stricter, never weaker).
pub fn same_actor(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// Free text with a length limit (agent messages, which may span lines).
pub fn text(field: &str, value: &str, max: usize) -> Result<(), CoreError> {
    if value.len() > max {
        return Err(CoreError::invalid(
            field,
            format!("{} bytes is over the limit of {max}", value.len()),
            format!("shorten the {field}"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(CoreError::invalid(
            field,
            "must not contain control characters",
            format!("remove control characters from the {field}"),
        ));
    }
    Ok(())
}

/// An agent's status report: names, revisions, hash and text lengths.
pub fn status_report(report: &StatusReport) -> Result<(), CoreError> {
    dns_label("workload", &report.workload)?;
    if !report.applied_revision.is_empty() {
        revision_in("applied_revision", &report.applied_revision)?;
    }
    if !report.desired_revision.is_empty() {
        revision_in("desired_revision", &report.desired_revision)?;
    }
    if !(report.render_hash.is_empty()
        || report.render_hash.len() == 64
            && report.render_hash.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(CoreError::invalid(
            "render_hash",
            format!("{:?} is not a hex SHA-256", report.render_hash),
            "send the 64 hex digits of the render's SHA-256, or nothing before the first render",
        ));
    }
    text("error", &report.error, MAX_STATUS_ERROR_LEN)?;
    if report.objects.len() > MAX_REPORT_OBJECTS {
        return Err(CoreError::invalid(
            "objects",
            format!(
                "{} objects is over the limit of {MAX_REPORT_OBJECTS}",
                report.objects.len()
            ),
            "send the first objects (not synced or not healthy first) and count the rest in objects_omitted",
        ));
    }
    for object in &report.objects {
        if object.name.is_empty() {
            return Err(CoreError::invalid(
                "objects.name",
                "must not be empty",
                "name the file path or Kind/namespace/name",
            ));
        }
        text("objects.name", &object.name, MAX_OBJECT_NAME_LEN)?;
        text("objects.message", &object.message, MAX_OBJECT_MESSAGE_LEN)?;
    }
    Ok(())
}

/// Whether `text` is 256 bits in 64 lowercase hex digits: a token's secret, or a SHA-256
/// digest as the state keeps it.
pub(crate) fn is_hex_256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A SHA-256 digest as the state keeps it: 64 lowercase hex digits.
fn sha256_hex(secret_sha256: &str) -> Result<(), CoreError> {
    if !is_hex_256(secret_sha256) {
        return Err(CoreError::invalid(
            "secret_sha256",
            "is not 64 lowercase hex digits",
            "the coordinator fills it in from the token it was given; send the request through \
             fleet-ctl or the agent",
        ));
    }
    Ok(())
}
