//! Every limit the domain enforces, named once. The gRPC layer documents the same numbers.

/// Longest name of a site, environment, cluster or workload: a DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63;
/// Most labels one cluster may carry.
pub const MAX_LABELS_PER_CLUSTER: usize = 32;
/// Longest label key (without a prefix) and longest label value, as in Kubernetes.
pub const MAX_LABEL_KEY_LEN: usize = 63;
/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 63;
/// Longest repository URL of a workload.
pub const MAX_REPO_URL_LEN: usize = 2048;
/// Longest path template of a workload.
pub const MAX_PATH_TEMPLATE_LEN: usize = 256;
/// Longest actor name recorded in the audit log.
pub const MAX_ACTOR_LEN: usize = 128;
/// Longest reason text recorded in the audit log.
pub const MAX_REASON_LEN: usize = 1024;
/// Most operators that hold roles at once.
pub const MAX_ROLE_BINDINGS: usize = 10_000;
/// Most bearer tokens (not revoked) at once.
pub const MAX_TOKENS: usize = 1_000;
/// Most environments, and most workloads, one role binding or token is scoped to.
pub const MAX_SCOPE_ENTRIES: usize = 64;
/// Longest a bearer token may be valid: 1 year.
pub const MAX_TOKEN_TTL_MS: u64 = 366 * 24 * 3600 * 1000;
/// Longest a cluster's join token may be valid: 7 days (the default is 1 hour).
pub const MAX_JOIN_TOKEN_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Most sites in one fleet.
pub const MAX_SITES: usize = 1024;
/// Most entries in a pipeline's wave order (sites, or values of the wave label).
pub const MAX_WAVE_ORDER: usize = MAX_SITES;
/// Most environments in the pipeline.
pub const MAX_ENVIRONMENTS: usize = 16;
/// Most clusters in one fleet.
pub const MAX_CLUSTERS: usize = 100_000;
/// Most workloads in one fleet.
pub const MAX_WORKLOADS: usize = 10_000;
/// Releases kept per workload in the state (older ones stay in the audit log).
pub const MAX_RELEASES_KEPT_PER_WORKLOAD: usize = 100;
/// Most per-second figures one leadership hand-over record carries.
pub const MAX_HANDOVER_FIGURES: usize = 60;
/// Most per-object entries in one status report; the rest are only counted.
pub const MAX_REPORT_OBJECTS: usize = 100;
/// Longest object name in a status report.
pub const MAX_OBJECT_NAME_LEN: usize = 512;
/// Longest per-object message in a status report.
pub const MAX_OBJECT_MESSAGE_LEN: usize = 256;
/// Longest error text in a status report.
pub const MAX_STATUS_ERROR_LEN: usize = 1024;
/// Most workload reports in one `ReportStatus` call.
pub const MAX_REPORTS_PER_CALL: usize = 64;
/// An unchanged report is committed again once the committed one is this old, so that every
/// node knows an agent is alive to within this much without a Raft write per heartbeat.
pub const STATUS_REFRESH_MS: u64 = 60_000;
/// Assignment changes kept per cluster for `fleet-ctl history` (older ones stay in the audit
/// log).
pub const MAX_ASSIGNMENT_CHANGES_KEPT: usize = 500;
/// Most symlinks one path resolution may pass through before it is refused as a loop: Linux's
/// `MAXSYMLINKS` (include/linux/namei.h), so fleet refuses exactly what the kernel would.
pub const MAX_SYMLINK_FOLLOWS: usize = 40;
/// Most YAML nodes one manifest file may expand to, aliases included: a bound on "billion
/// laughs" documents.
pub const MAX_YAML_NODES: usize = 1_000_000;
/// Highest Raft term a coordinator accepts in any message: far above any term elections reach,
/// far below `u64::MAX`, so openraft's term arithmetic can never overflow.
pub const MAX_RAFT_TERM: u64 = 1 << 63;
/// Most a Raft message's term may lie above the receiver's current term. Each election adds
/// one; a term further ahead than a million elections comes from no real peer.
pub const MAX_RAFT_TERM_STEP: u64 = 1 << 20;

// Rollouts (`rollout`).
/// Longest soak a pipeline may ask for (7 days).
pub const MAX_SOAK_MS: u64 = 7 * 24 * 3600 * 1000;
/// Most freeze windows in the fleet.
pub const MAX_FREEZES: usize = 256;
/// Most approvals an environment may require.
pub const MAX_REQUIRED_APPROVALS: u32 = 16;
/// Desired revisions remembered per workload and environment (for rollback targets).
pub const MAX_HISTORY_PER_ENVIRONMENT: usize = 100;
/// Finished rollouts kept per workload and environment.
pub const MAX_FINISHED_ROLLOUTS_KEPT: usize = 20;
/// Most clusters one planner step names (rules 2 on): more wait for the next tick. With
/// [`MAX_WHY_CHARS`] this keeps a step far below the coordinator's 2 MiB log entry.
pub const MAX_CLUSTERS_PER_STEP: usize = 1000;
/// Longest reason kept per cluster in a step, in characters.
pub const MAX_WHY_CHARS: usize = 256;
/// Clusters a halt's reason lists by name (rules 2 on); the rest are counted.
pub const MAX_CLUSTERS_IN_REASON: usize = 20;

// Renders (`render`).
/// Most files one render may hold.
pub const MAX_RENDER_FILES: usize = 10_000;
/// Largest single file of a render.
pub const MAX_RENDER_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest render in total.
pub const MAX_RENDER_BYTES: u64 = 256 * 1024 * 1024;

// Manifests (`manifest`).
/// Most objects one workload may hold.
pub const MAX_MANIFEST_OBJECTS: usize = 10_000;
