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
