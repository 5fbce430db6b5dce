//! `kustomize build` for Kubernetes workloads whose path holds a `kustomization.yaml`.
//!
//! Overlays refer to bases elsewhere in the repository (`../../base`), so the whole tree at the
//! commit is written to a temporary directory and the build runs on the workload's path in it.
//! The build runs `kustomize build`, or `kubectl kustomize` when there is no `kustomize` on
//! `PATH`. Its output becomes the render (one file, [`BUILD_FILE`]), so the render hash is a
//! digest of what kustomize produced and the cache holds it for static stability.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_core::render::{FileKind, MAX_RENDER_FILE_BYTES, Render, RenderPath};

use super::AgentError;

/// The one file of a render built by kustomize.
pub const BUILD_FILE: &str = "kustomize-build.yaml";
/// A build that takes longer is killed and the revision reported Failed.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(60);

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            dir.join(program)
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// `kustomize build DIR`, else `kubectl kustomize DIR`.
fn command(dir: &Path) -> Result<Command, AgentError> {
    if on_path("kustomize") {
        let mut c = Command::new("kustomize");
        c.arg("build").arg(dir);
        Ok(c)
    } else if on_path("kubectl") {
        let mut c = Command::new("kubectl");
        c.arg("kustomize").arg(dir);
        Ok(c)
    } else {
        Err(AgentError::Refused(
            "the workload has a kustomization but neither `kustomize` nor `kubectl` is on PATH; \
             install one on the agent's host"
                .into(),
        ))
    }
}

fn write_tree(tree: &Render, root: &Path) -> Result<(), AgentError> {
    let failed = |p: &Path, e: std::io::Error| {
        AgentError::Target(format!("write {} for kustomize: {e}", p.display()))
    };
    for (path, (kind, content)) in tree {
        use std::os::unix::ffi::OsStrExt;
        let file = root.join(std::ffi::OsStr::from_bytes(path.as_bytes()));
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| failed(parent, e))?;
        }
        match kind {
            FileKind::Symlink => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(content), &file)
                    .map_err(|e| failed(&file, e))?;
            }
            FileKind::Regular | FileKind::Executable => {
                std::fs::write(&file, content).map_err(|e| failed(&file, e))?;
            }
        }
    }
    Ok(())
}

/// Builds the kustomization at `path` of `tree` (the whole repository at the commit, already
/// checked by `check_render`). Returns the render holding the build output.
pub fn build(tree: &Render, path: &str) -> Result<Render, AgentError> {
    let dir = tempfile::tempdir()
        .map_err(|e| AgentError::Target(format!("temporary directory for kustomize: {e}")))?;
    write_tree(tree, dir.path())?;
    let target = dir.path().join(path.trim_matches('/'));
    let mut child = command(&target)?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| AgentError::Target(format!("cannot run kustomize: {e}")))?;
    // Read both pipes on their own threads so a chatty build cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout)
            .take(MAX_RENDER_FILE_BYTES + 1)
            .read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > BUILD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AgentError::Target(format!(
                    "kustomize build of {path} took longer than {BUILD_TIMEOUT:?}"
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(AgentError::Target(format!("kustomize: {e}"))),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        return Err(AgentError::Refused(format!(
            "kustomize build of {path} failed ({status}): {}",
            String::from_utf8_lossy(&err).trim()
        )));
    }
    if out.len() as u64 > MAX_RENDER_FILE_BYTES {
        return Err(AgentError::Refused(format!(
            "kustomize build of {path} is larger than {MAX_RENDER_FILE_BYTES} bytes"
        )));
    }
    Ok(Render::from([(
        RenderPath::from(BUILD_FILE),
        (FileKind::Regular, out),
    )]))
}

#[cfg(test)]
mod tests {
    //! These run the real `kustomize` or `kubectl kustomize` (`.ci/run` installs Debian's
    //! `kubernetes-client` when neither is present).
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Render {
        files
            .iter()
            .map(|(p, c)| {
                (
                    RenderPath::from(*p),
                    (FileKind::Regular, c.as_bytes().to_vec()),
                )
            })
            .collect()
    }

    const BASE: [(&str, &str); 2] = [
        ("base/kustomization.yaml", "resources:\n- deployment.yaml\n"),
        (
            "base/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n",
        ),
    ];

    #[test]
    fn an_overlay_builds_against_its_base_elsewhere_in_the_repository() {
        let mut files = BASE.to_vec();
        // `bases:` and `commonLabels:` are understood by old and new kustomize alike.
        files.push((
            "overlays/production/kustomization.yaml",
            "bases:\n- ../../base\nnamePrefix: prod-\ncommonLabels:\n  env: production\n",
        ));
        let built = build(&tree(&files), "overlays/production").unwrap();
        let build_file = RenderPath::from(BUILD_FILE);
        assert_eq!(built.keys().collect::<Vec<_>>(), [&build_file]);
        let text = std::str::from_utf8(&built[&build_file].1).unwrap();
        let objects = fleet_core::manifest::parse_documents(BUILD_FILE, text).unwrap();
        assert_eq!(objects.len(), 1, "{text}");
        assert_eq!(objects[0].id.to_string(), "Deployment/prod-web");
        assert_eq!(
            objects[0].body.pointer("/metadata/labels/env"),
            Some(&serde_json::json!("production"))
        );
    }

    #[test]
    fn a_broken_kustomization_is_refused_with_kustomizes_message() {
        let files = [(
            "overlays/staging/kustomization.yaml",
            "resources:\n- missing.yaml\n",
        )];
        let error = build(&tree(&files), "overlays/staging").unwrap_err();
        let shown = error.to_string();
        assert!(
            shown.contains("kustomize build of overlays/staging failed"),
            "{shown}"
        );
        assert!(shown.contains("missing.yaml"), "{shown}");
    }

    /// fleet's render of a kustomization is exactly what `kubectl kustomize` prints for the
    /// same tree (run here by hand, the way an operator would), and its objects are read from
    /// it as `kubectl apply -k` reads them: YAML 1.1, so `0644` is the file mode 420.
    #[test]
    fn the_render_of_a_kustomization_is_kubectl_kustomize_output_on_the_same_tree() {
        let mut files = BASE.to_vec();
        files.push((
            "base/secret-volume.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: certs\nspec:\n  \
             template:\n    spec:\n      volumes:\n      - name: certs\n        secret:\n          \
             secretName: certs\n          defaultMode: 0644\n",
        ));
        files[0].1 = "resources:\n- deployment.yaml\n- secret-volume.yaml\n";
        files.push((
            "overlays/production/kustomization.yaml",
            "resources:\n- ../../base\nnamePrefix: prod-\nlabels:\n- pairs:\n    env: production\n",
        ));
        let tree = tree(&files);
        let built = build(&tree, "overlays/production").unwrap();
        let ours = &built[&RenderPath::from(BUILD_FILE)].1;

        let dir = tempfile::tempdir().unwrap();
        write_tree(&tree, dir.path()).unwrap();
        let by_hand = Command::new("kubectl")
            .arg("kustomize")
            .arg(dir.path().join("overlays/production"))
            .output()
            .expect("kubectl runs (.ci/run installs kubernetes-client)");
        assert!(
            by_hand.status.success(),
            "{}",
            String::from_utf8_lossy(&by_hand.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(ours),
            String::from_utf8_lossy(&by_hand.stdout),
            "fleet's render is kubectl kustomize's output, byte for byte"
        );

        let text = std::str::from_utf8(ours).unwrap();
        let objects = fleet_core::manifest::parse_documents(BUILD_FILE, text).unwrap();
        let certs = objects
            .iter()
            .find(|o| o.id.name == "prod-certs")
            .expect("the certs Deployment");
        assert_eq!(
            certs
                .body
                .pointer("/spec/template/spec/volumes/0/secret/defaultMode"),
            Some(&serde_json::json!(420)),
            "{text}"
        );
    }
}
