//! Who calls: the authenticated principal of a request, and its SPIFFE ID.
//!
//! Every principal is a SPIFFE ID (<https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md>)
//! under one trust domain, carried as the URI SAN of an X.509 certificate (X509-SVID):
//!
//! | principal | SPIFFE ID | audit actor |
//! |---|---|---|
//! | coordinator node 3 | `spiffe://fleet.local/coordinator/3` | `coordinator:3` |
//! | the agent of cluster `prod-oslo-1` | `spiffe://fleet.local/cluster/prod-oslo-1` | `agent:prod-oslo-1` |
//! | operator `kari` | `spiffe://fleet.local/operator/kari` | `kari` |
//!
//! SPIFFE IDs are compared exactly (the spec makes them case-sensitive): `operator/Kari` is not
//! `operator/kari`. Parsing here is pure; reading the ID out of a certificate and checking the
//! certificate is the transport's job.

use std::fmt;

use crate::error::CoreError;
use crate::limits::MAX_NAME_LEN;

/// The trust domain every fleet identity lives under unless configured otherwise.
pub const DEFAULT_TRUST_DOMAIN: &str = "fleet.local";

/// A SPIFFE trust domain: 1 to 255 characters of lowercase ASCII letters, digits, `.`, `-` and
/// `_` (SPIFFE-ID section 2.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// `value` if it is a trust domain name as above; else `InvalidArgument` on `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, CoreError> {
        let hint = "use lowercase letters, digits, '.', '-' and '_' (e.g. fleet.local or \
                    fleet.example.no), as SPIFFE requires";
        if value.is_empty() || value.len() > 255 {
            return Err(CoreError::invalid(
                field,
                format!("{value:?} is not 1 to 255 characters"),
                hint,
            ));
        }
        if let Some(bad) = value.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(CoreError::invalid(
                field,
                format!("{value:?} contains {bad:?}"),
                hint,
            ));
        }
        Ok(TrustDomain(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        TrustDomain(DEFAULT_TRUST_DOMAIN.to_string())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A coordinator node, by node id (≥ 1).
    Coordinator(u64),
    /// The agent of one cluster, by cluster name (a DNS label).
    Cluster(String),
    /// A person or a tool acting for one: `[A-Za-z0-9._-]`, 1 to 63 characters.
    Operator(String),
}

impl Principal {
    /// The SPIFFE ID of this principal in `trust_domain`, e.g.
    /// `spiffe://fleet.local/operator/kari`.
    pub fn spiffe_id(&self, trust_domain: &TrustDomain) -> String {
        let path = match self {
            Principal::Coordinator(id) => format!("coordinator/{id}"),
            Principal::Cluster(name) => format!("cluster/{name}"),
            Principal::Operator(name) => format!("operator/{name}"),
        };
        format!("spiffe://{trust_domain}/{path}")
    }

    /// The principal a SPIFFE ID names in `trust_domain`; `InvalidArgument` on `field` for an
    /// ID of another trust domain, of another shape, or with a name that is not allowed.
    pub fn from_spiffe_id(
        field: &str,
        id: &str,
        trust_domain: &TrustDomain,
    ) -> Result<Self, CoreError> {
        let shapes = format!(
            "use spiffe://{trust_domain}/coordinator/ID, spiffe://{trust_domain}/cluster/NAME or \
             spiffe://{trust_domain}/operator/NAME"
        );
        let Some(rest) = id.strip_prefix("spiffe://") else {
            return Err(CoreError::invalid(
                field,
                format!("{id:?} is not a SPIFFE ID"),
                shapes,
            ));
        };
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        if domain != trust_domain.as_str() {
            return Err(CoreError::invalid(
                field,
                format!("{id:?} belongs to trust domain {domain:?}, not {trust_domain:?}"),
                shapes,
            ));
        }
        let principal = match path.split_once('/') {
            Some(("coordinator", n)) => match n.parse::<u64>() {
                Ok(parsed) if parsed >= 1 && parsed.to_string() == n => {
                    Principal::Coordinator(parsed)
                }
                _ => {
                    return Err(CoreError::invalid(
                        field,
                        format!("{id:?}: {n:?} is not a node id (1 or more, no leading zeros)"),
                        shapes,
                    ));
                }
            },
            Some(("cluster", name)) => {
                crate::validate::dns_label(field, name)?;
                Principal::Cluster(name.to_string())
            }
            Some(("operator", name)) => {
                operator_name(field, name)?;
                Principal::Operator(name.to_string())
            }
            _ => {
                return Err(CoreError::invalid(
                    field,
                    format!("{id:?} names no coordinator, cluster or operator"),
                    shapes,
                ));
            }
        };
        Ok(principal)
    }

    /// The actor this principal's changes are recorded under in the audit log: the operator's
    /// name, `agent:CLUSTER`, or `coordinator:ID`.
    pub fn actor(&self) -> String {
        match self {
            Principal::Coordinator(id) => format!("coordinator:{id}"),
            Principal::Cluster(name) => format!("agent:{name}"),
            Principal::Operator(name) => name.clone(),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Coordinator(id) => write!(f, "coordinator {id}"),
            Principal::Cluster(name) => write!(f, "the agent of cluster {name}"),
            Principal::Operator(name) => write!(f, "operator {name}"),
        }
    }
}

/// Names no operator may have: the audit actors of the fleet's own steps (the rollout
/// planner's) and of callers of a node without TLS; the others (`agent:`, `coordinator:`,
/// `token:`) hold a `:`, which operator names cannot.
pub const RESERVED_OPERATOR_NAMES: [&str; 2] = ["planner", "unauthenticated"];

/// An operator name: 1 to [`MAX_NAME_LEN`] characters of ASCII letters, digits, `.`, `-`, `_`
/// (the characters a SPIFFE ID path segment may hold, SPIFFE-ID section 2.2).
pub fn operator_name(field: &str, value: &str) -> Result<(), CoreError> {
    let hint = "use 1 to 63 letters, digits, '.', '-' and '_' (e.g. kari or ola.nordmann)";
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(CoreError::invalid(
            field,
            format!("{value:?} is not 1 to {MAX_NAME_LEN} characters"),
            hint,
        ));
    }
    if value == "." || value == ".." {
        return Err(CoreError::invalid(
            field,
            format!("{value:?} is not a name"),
            hint,
        ));
    }
    if RESERVED_OPERATOR_NAMES.contains(&value) {
        return Err(CoreError::invalid(
            field,
            format!("{value:?} is the audit actor of the fleet itself"),
            "choose another name: an operator must not look like the planner in the audit log",
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(CoreError::invalid(
            field,
            format!("{value:?} contains {bad:?}"),
            hint,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::default()
    }

    #[test]
    fn every_principal_survives_a_round_trip_through_its_spiffe_id() {
        for principal in [
            Principal::Coordinator(3),
            Principal::Cluster("prod-oslo-1".into()),
            Principal::Operator("ola.nordmann".into()),
            Principal::Operator("Kari_2".into()),
        ] {
            let id = principal.spiffe_id(&td());
            assert_eq!(Principal::from_spiffe_id("san", &id, &td()), Ok(principal));
        }
        assert_eq!(
            Principal::Operator("kari".into()).spiffe_id(&td()),
            "spiffe://fleet.local/operator/kari"
        );
    }

    #[test]
    fn spiffe_ids_of_another_domain_or_shape_are_refused_with_the_shapes() {
        for bad in [
            "spiffe://other.local/operator/kari",
            "spiffe://FLEET.local/operator/kari",
            "spiffe://fleet.local/operator",
            "spiffe://fleet.local/operator/",
            "spiffe://fleet.local/operator/kari/extra",
            "spiffe://fleet.local/operator/..",
            "spiffe://fleet.local/operator/planner",
            "spiffe://fleet.local/coordinator/0",
            "spiffe://fleet.local/coordinator/03",
            "spiffe://fleet.local/coordinator/x",
            "spiffe://fleet.local/cluster/Prod",
            "spiffe://fleet.local/admin/kari",
            "spiffe://fleet.local",
            "https://fleet.local/operator/kari",
            "",
        ] {
            let err = Principal::from_spiffe_id("san", bad, &td()).expect_err(bad);
            assert!(err.to_string().contains("san"), "{bad}: {err}");
        }
    }

    #[test]
    fn spiffe_ids_are_compared_exactly() {
        let upper = Principal::from_spiffe_id("san", "spiffe://fleet.local/operator/Kari", &td());
        let lower = Principal::from_spiffe_id("san", "spiffe://fleet.local/operator/kari", &td());
        assert_ne!(upper.unwrap(), lower.unwrap());
    }

    #[test]
    fn actors_name_the_operator_the_agent_or_the_coordinator() {
        assert_eq!(Principal::Operator("kari".into()).actor(), "kari");
        assert_eq!(Principal::Cluster("c1".into()).actor(), "agent:c1");
        assert_eq!(Principal::Coordinator(2).actor(), "coordinator:2");
    }

    #[test]
    fn trust_domains_are_lowercase_dns_like_names() {
        assert!(TrustDomain::parse("trust_domain", "fleet.example.no").is_ok());
        for bad in ["", "Fleet.local", "fleet local", "fleet/local"] {
            assert!(TrustDomain::parse("trust_domain", bad).is_err(), "{bad}");
        }
    }
}
