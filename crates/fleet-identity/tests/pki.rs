//! The built-in CA's certificates as the authenticator judges them (webpki, real certificates
//! made by rcgen).

use std::time::Duration;

use fleet_core::{Principal, TrustDomain};
use fleet_identity::pki::{Ca, Validity};
use fleet_identity::tls::{Authenticator, Credentials, TlsFiles, Trust, certificates};

fn chain(pem: &str) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    certificates(std::path::Path::new("test"), pem).unwrap()
}

fn trust_of(dir: &std::path::Path, ca: &Ca) -> Trust {
    std::fs::write(dir.join("trusted.pem"), ca.cert_pem()).unwrap();
    Trust::load(&dir.join("trusted.pem"), None).unwrap()
}

#[test]
fn a_certificate_from_the_ca_names_its_principal_and_others_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::default();
    let ca = Ca::generate(&td).unwrap();
    let trust = trust_of(dir.path(), &ca);
    assert_eq!(trust.trust_domain, td, "the trust domain travels in the CA");
    let auth = Authenticator::new(&trust).unwrap();

    let kari = ca
        .issue(
            &Principal::Operator("kari".into()),
            &[],
            Validity::from_now(Duration::from_secs(3600)),
        )
        .unwrap();
    assert_eq!(
        auth.authenticate(&chain(&kari.cert_pem)),
        Ok(Principal::Operator("kari".into()))
    );

    let other = Ca::generate(&td).unwrap();
    let stranger = other
        .issue(
            &Principal::Operator("kari".into()),
            &[],
            Validity::from_now(Duration::from_secs(3600)),
        )
        .unwrap();
    let refused = auth.authenticate(&chain(&stranger.cert_pem)).unwrap_err();
    assert!(
        refused
            .message
            .contains("not issued by a CA of trust domain fleet.local"),
        "{refused:?}"
    );

    let now = Validity::from_now(Duration::ZERO).not_before_s;
    let expired = ca
        .issue(
            &Principal::Operator("kari".into()),
            &[],
            Validity {
                not_before_s: now - 7200,
                not_after_s: now - 3600,
            },
        )
        .unwrap();
    let refused = auth.authenticate(&chain(&expired.cert_pem)).unwrap_err();
    assert!(refused.message.contains("expired"), "{refused:?}");

    let foreign_domain = Ca::generate(&TrustDomain::parse("td", "other.local").unwrap()).unwrap();
    assert!(Authenticator::new(&trust_of(dir.path(), &foreign_domain)).is_ok());

    assert!(
        auth.authenticate(&[])
            .unwrap_err()
            .message
            .contains("no client certificate")
    );
}

#[test]
fn the_ca_written_and_read_back_issues_certificates_its_files_load_as_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::parse("td", "fleet.example.no").unwrap();
    Ca::generate(&td).unwrap().write(dir.path()).unwrap();
    assert!(
        Ca::generate(&td).unwrap().write(dir.path()).is_err(),
        "a CA is never overwritten"
    );
    let ca = Ca::load(dir.path(), None).unwrap();
    assert_eq!(ca.trust_domain(), &td);
    let issued = ca
        .issue(
            &Principal::Coordinator(2),
            &["127.0.0.1".into(), "coordinator-2.oslo".into()],
            Validity::from_now(Duration::from_secs(3600)),
        )
        .unwrap();
    let (cert, key) = issued.write(dir.path(), "coordinator-2").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let loaded = Credentials::load(
        &TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert,
            key,
        },
        None,
    )
    .unwrap();
    assert_eq!(loaded.principal, Principal::Coordinator(2));
    assert!(
        ca.issue(
            &Principal::Coordinator(3),
            &[],
            Validity::from_now(Duration::from_secs(60))
        )
        .is_err(),
        "a coordinator needs hosts"
    );
}

#[test]
fn a_remembered_certificate_is_refused_once_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate(&TrustDomain::default()).unwrap();
    let auth = Authenticator::new(&trust_of(dir.path(), &ca)).unwrap();
    let now = Validity::from_now(Duration::ZERO).not_after_s;
    let brief = ca
        .issue(
            &Principal::Operator("kari".into()),
            &[],
            Validity {
                not_before_s: now - 60,
                not_after_s: now + 1,
            },
        )
        .unwrap();
    let chain = chain(&brief.cert_pem);
    assert_eq!(
        auth.authenticate(&chain),
        Ok(Principal::Operator("kari".into()))
    );
    assert_eq!(
        auth.authenticate(&chain),
        Ok(Principal::Operator("kari".into())),
        "remembered"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let refused = auth.authenticate(&chain).unwrap_err();
    assert!(refused.message.contains("expired"), "{refused:?}");
}
