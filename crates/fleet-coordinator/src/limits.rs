//! Every limit of the coordinator, named once: sizes and counts of what it accepts, keeps and
//! sends. Each module re-exports the ones it enforces. The wire's message sizes are in
//! `fleet_api::limits`, the domain's in `fleet_core::limits`.

use std::time::Duration;

// Agents' heartbeats (`heartbeat`).
/// Most (cluster, workload) pairs remembered; when full, the book starts over (the committed
/// report times still bound how stale `last seen` can be).
pub const MAX_HEARTBEAT_ENTRIES: usize = 400_000;

// Watch streams (`watches`).
/// Most assignment watch streams one agent holds open on one node: its own cluster's, and
/// room for reconnects that overlap the stream they replace.
pub const MAX_WATCH_STREAMS_PER_AGENT: usize = 4;
/// Most watch streams one operator or token holds open on one node unless
/// `--max-watch-streams-per-operator` says otherwise (tools that watch many clusters).
pub const DEFAULT_MAX_WATCH_STREAMS_PER_OPERATOR: usize = 1_024;

// Membership (`coordinator`).
/// How many times a joining node asks to be added before it gives up.
pub const MAX_JOIN_ATTEMPTS: u32 = 240;
/// The longest catch-up wait a request may ask for.
pub const MAX_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);

// The Raft transport (`network`).
/// Largest message on the Raft transport, either way.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

// Log entries (`batcher`).
/// Most commands in one log entry.
pub const MAX_COMMANDS_PER_ENTRY: usize = 256;
/// Most bytes (JSON) of one log entry, counted as commands are packed: an entry closes before
/// the command that would take it over, and a single command over it is refused
/// (INVALID_ARGUMENT) before it is proposed. With openraft's `max_payload_entries` set to
/// [`MAX_ENTRIES_PER_APPEND`], one AppendEntries message (16 × 2 MiB, plus framing) stays under
/// the Raft transport's 64 MiB limit.
pub const MAX_ENTRY_BYTES: usize = 2 * 1024 * 1024;
/// Most log entries sent in one AppendEntries call.
pub const MAX_ENTRIES_PER_APPEND: u64 = 16;
/// Most entries proposed and not yet applied at once.
pub const MAX_ENTRIES_IN_FLIGHT: usize = 2;
/// Most commands waiting for an entry; writers beyond it wait for room.
pub const MAX_QUEUED_COMMANDS: usize = 4096;

// The data dir's identity file (`identity`).
/// Largest identity file read.
pub const MAX_IDENTITY_BYTES: u64 = 4096;

// The clock check (`clock`).
/// Fewest clocks (this node's included) that can tell which one is wrong.
pub const MIN_CLOCKS_TO_JUDGE: usize = 3;

// Log flushes (`store`).
/// Most append callbacks waiting for one flush; appends beyond it wait for room.
pub const MAX_PENDING_FLUSHES: usize = 4096;

// Disk-aware leadership (`leadership`).
/// A successor may be this many entries behind the leader when it is chosen; it must have
/// every entry before it is asked to take over.
pub const MAX_SUCCESSOR_LAG: u64 = 1024;

// The gRPC services (`service`).
/// Most audit events in one `ListAuditEvents` page.
pub const MAX_AUDIT_EVENTS_PER_PAGE: usize = 1000;
/// Longest failpoint action string.
pub const MAX_FAILPOINT_ACTIONS_BYTES: usize = 256;

/// TLS handshakes a node runs at once (`listener.rs`); further connections wait in the
/// kernel's accept queue. Each handshake has 10 s.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;
