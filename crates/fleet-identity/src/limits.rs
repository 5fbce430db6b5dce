//! The limits of fleet-identity.

/// Accepted certificate chains an `Authenticator` remembers (about 100 bytes each); when full
/// it forgets them all and verifies again.
pub const MAX_REMEMBERED_CHAINS: usize = 4096;
