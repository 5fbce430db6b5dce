//! The typed wire enums stay in step with the domain: every command kind has its
//! `AuditKind` value, and the enum lists no kind the domain lacks.

use std::collections::BTreeSet;

use fleet_api::convert::audit_kind;
use fleet_api::proto::AuditKind;
use fleet_core::Command;

#[test]
fn every_command_kind_has_its_own_audit_kind_on_the_wire() {
    let mut seen = BTreeSet::new();
    for kind in Command::KINDS {
        let wire = audit_kind(kind);
        assert_ne!(
            wire,
            AuditKind::Unspecified,
            "add AUDIT_KIND_{} to proto/fleet/v1/fleet.proto",
            kind.to_ascii_uppercase()
        );
        assert!(seen.insert(wire as i32), "{kind} shares its AuditKind");
        // The enum's name is the kind's, so clients can print either.
        assert_eq!(
            wire.as_str_name().strip_prefix("AUDIT_KIND_").unwrap(),
            kind.to_ascii_uppercase()
        );
    }
    // Every value but UNSPECIFIED names a kind of the domain.
    let values = (1..100).filter(|v| AuditKind::try_from(*v).is_ok()).count();
    assert_eq!(values, Command::KINDS.len());
    assert_eq!(audit_kind("no_such_kind"), AuditKind::Unspecified);
}
