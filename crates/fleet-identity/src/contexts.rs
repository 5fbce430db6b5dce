//! fleet-ctl's config file, like kubeconfig: named contexts, each the endpoints and the TLS
//! files of one identity against one fleet, and the current one.
//!
//! Where: `$FLEET_CONFIG`, else `$XDG_CONFIG_HOME/fleet/config.yaml`, else
//! `$HOME/.config/fleet/config.yaml` (XDG Base Directory Specification). Example:
//!
//! ```yaml
//! current-context: kari
//! contexts:
//!   - name: kari
//!     endpoints: ["127.0.0.1:7400"]
//!     ca: /home/kari/fleet-data/pki/ca.pem
//!     cert: /home/kari/fleet-data/pki/operator-kari.pem
//!     key: /home/kari/fleet-data/pki/operator-kari-key.pem
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::IdentityError;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CtlConfig {
    /// The context used when a command names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
}

/// One context: where the fleet is and who one is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NamedContext {
    pub name: String,
    /// Coordinator HOST:PORTs, tried in order.
    pub endpoints: Vec<String>,
    /// The CA certificate to trust (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// This identity's certificate (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Plaintext, to a loopback node that runs with `--insecure-plaintext`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_plaintext: bool,
    /// A bearer token (`fleet:NAME:SECRET`) to act as instead of a certificate. The file is
    /// written readable by its owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The config file's path (see the module docs), or `None` when neither `FLEET_CONFIG`,
/// `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn config_path() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var("FLEET_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("fleet").join("config.yaml"))
}

impl CtlConfig {
    /// Reads `path`; an absent file is an empty config.
    pub fn load(path: &Path) -> Result<CtlConfig, IdentityError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CtlConfig::default()),
            Err(source) => {
                return Err(IdentityError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        serde_saphyr::from_str(&text).map_err(|e| IdentityError::Pem {
            path: path.to_path_buf(),
            message: format!("not a fleet-ctl config: {e}"),
        })
    }

    /// Writes `path` whole (its directory made if needed), mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let text = serde_saphyr::to_string(self)
            .map_err(|e| IdentityError::Certificate(format!("config: {e}")))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        crate::pki::write_file(path, &text, true)
    }

    pub fn context(&self, name: &str) -> Option<&NamedContext> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// Adds `context`, or replaces the one of the same name.
    pub fn upsert(&mut self, context: NamedContext) {
        match self.contexts.iter_mut().find(|c| c.name == context.name) {
            Some(existing) => *existing = context,
            None => self.contexts.push(context),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_survives_a_round_trip_and_upsert_replaces_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet/config.yaml");
        assert_eq!(CtlConfig::load(&path).unwrap(), CtlConfig::default());
        let mut config = CtlConfig::default();
        let kari = NamedContext {
            name: "kari".into(),
            endpoints: vec!["127.0.0.1:7400".into()],
            ca: Some("/p/ca.pem".into()),
            cert: Some("/p/operator-kari.pem".into()),
            key: Some("/p/operator-kari-key.pem".into()),
            insecure_plaintext: false,
            token: None,
        };
        config.upsert(kari.clone());
        config.upsert(NamedContext {
            endpoints: vec!["10.0.0.1:7400".into()],
            ..kari.clone()
        });
        config.current_context = Some("kari".into());
        config.save(&path).unwrap();
        let read = CtlConfig::load(&path).unwrap();
        assert_eq!(read, config);
        assert_eq!(read.contexts.len(), 1);
        assert_eq!(read.context("kari").unwrap().endpoints, ["10.0.0.1:7400"]);
        std::fs::write(&path, "contexts: [{name: x, endpoints: [], colour: red}]").unwrap();
        let refused = CtlConfig::load(&path).unwrap_err().to_string();
        assert!(refused.contains("config.yaml"), "{refused}");
    }
}
