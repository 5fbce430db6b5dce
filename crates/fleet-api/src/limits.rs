//! The size limits of the fleet.v1 wire, in bytes of the encoded protobuf message. A message
//! over a limit is refused by the receiving side (tonic: RESOURCE_EXHAUSTED or OUT_OF_RANGE)
//! and changes nothing.

/// Largest request message a client may send to `FleetService`, `PromotionService` or
/// `AgentService`: 1 MiB.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest response message a node sends to a client, and the most a client accepts: 64 MiB.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Largest certificate signing request `AgentService.RequestCertificate` accepts.
pub const MAX_CSR_BYTES: usize = 16 * 1024;
