//! The Kubernetes target: server-side apply of a workload's manifests with our field manager,
//! Namespaces and CRDs first; drift found by comparing the live objects with what the last apply
//! returned; prune of objects that left Git, but only those labelled as this workload's.
//!
//! Which objects the agent applied is kept per workload in `STATE/kubernetes-inventory/`,
//! widened before an object is applied and narrowed after pruning, so a crash between the two
//! never forgets an object it created.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fleet_core::manifest::{
    self, Manifest, ObjectRef, fingerprint, owned_by, parse_render, with_ownership,
};
use fleet_core::{HealthState, render::Render};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde_json::Value;

use super::files::write_atomic;
use super::{AgentError, AppliedObject, TargetOutcome};
use fleet_core::render::FileKind;

/// The field manager of every server-side apply: `kubectl get -o yaml --show-managed-fields`
/// shows which fields fleet owns.
pub const FIELD_MANAGER: &str = "fleet-agent";

/// A render's hash and the manifests parsed from it.
type Parsed = (String, Arc<Vec<Manifest>>);

pub struct KubeTarget {
    client: kube::Client,
    inventory_dir: PathBuf,
    /// Discovery results by `(apiVersion, kind)`; only successes are kept, so a kind whose CRD
    /// is applied in the same pass resolves on a later one.
    kinds: Mutex<HashMap<(String, String), (ApiResource, ApiCapabilities)>>,
    /// Per workload and object: the fingerprint of what the last apply returned.
    applied: Mutex<HashMap<(String, ObjectRef), String>>,
    /// Per workload: the render hash and its parsed manifests.
    parsed: Mutex<HashMap<String, Parsed>>,
}

fn kube_error(what: &str, id: &impl std::fmt::Display, e: kube::Error) -> AgentError {
    AgentError::Target(format!("{what} {id}: {e}"))
}

impl KubeTarget {
    /// In-cluster configuration, else the kubeconfig (`$KUBECONFIG`, `~/.kube/config`).
    pub async fn connect(state_dir: &Path) -> Result<Self, AgentError> {
        let client = kube::Client::try_default().await.map_err(|e| {
            AgentError::Target(format!(
                "no Kubernetes configuration: {e} (run in a pod with a service account, or set \
                 KUBECONFIG)"
            ))
        })?;
        Ok(Self::new(client, state_dir))
    }

    pub fn new(client: kube::Client, state_dir: &Path) -> Self {
        KubeTarget {
            client,
            inventory_dir: state_dir.join("kubernetes-inventory"),
            kinds: Mutex::default(),
            applied: Mutex::default(),
            parsed: Mutex::default(),
        }
    }

    fn inventory_path(&self, workload: &str) -> PathBuf {
        self.inventory_dir.join(format!("{workload}.json"))
    }

    /// The objects this agent applied for `workload` and has not pruned.
    pub fn inventory(&self, workload: &str) -> Result<BTreeSet<ObjectRef>, AgentError> {
        let path = self.inventory_path(workload);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| AgentError::Target(format!("inventory {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(e) => Err(AgentError::Target(format!("read {}: {e}", path.display()))),
        }
    }

    fn save_inventory(&self, workload: &str, refs: &BTreeSet<ObjectRef>) -> Result<(), AgentError> {
        let path = self.inventory_path(workload);
        if refs.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::Target(
                    format!("remove {}: {e}", path.display()),
                )),
                _ => Ok(()),
            };
        }
        std::fs::create_dir_all(&self.inventory_dir).map_err(|e| {
            AgentError::Target(format!("create {}: {e}", self.inventory_dir.display()))
        })?;
        let bytes = serde_json::to_vec(refs).expect("object refs serialise");
        write_atomic(&path, &bytes, FileKind::Regular)
    }

    /// The workloads with an inventory.
    pub fn workloads(&self) -> Result<Vec<String>, AgentError> {
        let entries = match std::fs::read_dir(&self.inventory_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AgentError::Target(format!("list inventory: {e}"))),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn manifests(
        &self,
        workload: &str,
        hash: &str,
        render: &Render,
    ) -> Result<Arc<Vec<Manifest>>, AgentError> {
        let mut parsed = self.parsed.lock().expect("parsed lock");
        if let Some((h, manifests)) = parsed.get(workload)
            && h == hash
        {
            return Ok(manifests.clone());
        }
        let manifests = Arc::new(
            parse_render(render).map_err(|e| AgentError::Refused(format!("{e} ({})", e.hint())))?,
        );
        parsed.insert(workload.to_string(), (hash.to_string(), manifests.clone()));
        Ok(manifests)
    }

    async fn resolve(&self, id: &ObjectRef) -> Result<(ApiResource, ApiCapabilities), AgentError> {
        let key = (id.api_version.clone(), id.kind.clone());
        if let Some(found) = self.kinds.lock().expect("kinds lock").get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = id.group_version();
        let gvk = GroupVersionKind::gvk(group, version, &id.kind);
        let found = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| {
                AgentError::Target(format!(
                    "{}: the API server does not serve {} {}: {e}",
                    id, id.api_version, id.kind
                ))
            })?;
        self.kinds
            .lock()
            .expect("kinds lock")
            .insert(key, found.clone());
        Ok(found)
    }

    /// The API for one object, and the object's reference with its namespace resolved (the
    /// client's default for namespaced objects without one; none for cluster-scoped ones).
    async fn api(&self, id: &ObjectRef) -> Result<(Api<DynamicObject>, ObjectRef), AgentError> {
        let (resource, caps) = self.resolve(id).await?;
        let mut id = id.clone();
        if caps.scope == Scope::Namespaced {
            if id.namespace.is_empty() {
                id.namespace = self.client.default_namespace().to_string();
            }
            let api = Api::namespaced_with(self.client.clone(), &id.namespace, &resource);
            Ok((api, id))
        } else {
            id.namespace.clear();
            Ok((Api::all_with(self.client.clone(), &resource), id))
        }
    }

    /// One pass for a workload: apply what is missing or drifted, then prune what left Git.
    /// Objects that fail are reported and the others still applied; nothing is pruned after a
    /// failure, so a half-applied revision never deletes what the previous one needs.
    pub async fn apply(
        &self,
        workload: &str,
        hash: &str,
        render: &Render,
    ) -> Result<TargetOutcome, AgentError> {
        let manifests = self.manifests(workload, hash, render)?;
        let mut inventory = self.inventory(workload)?;
        let mut outcome = TargetOutcome::default();
        let mut desired = BTreeSet::new();
        let mut failures = Vec::new();
        for m in manifests.iter() {
            match self.apply_one(workload, m, &mut inventory).await {
                Ok((id, object)) => {
                    desired.insert(id);
                    outcome.objects.push(object);
                }
                Err(e) => {
                    outcome.objects.push(AppliedObject {
                        name: m.id.to_string(),
                        written: false,
                        health: HealthState::Unknown,
                        message: e.to_string(),
                    });
                    failures.push(e.to_string());
                }
            }
        }
        if let Some(first) = failures.first() {
            outcome.error = Some(format!(
                "{} of {} objects failed; first: {first}",
                failures.len(),
                manifests.len()
            ));
            return Ok(outcome);
        }
        for id in inventory.difference(&desired).cloned().collect::<Vec<_>>() {
            match self.prune_one(workload, &id).await {
                Ok(deleted) => {
                    if deleted {
                        outcome.removed.push(id.to_string());
                    }
                    inventory.remove(&id);
                }
                Err(e) => {
                    tracing::warn!(%workload, object = %id, error = %e, "cannot prune; will retry")
                }
            }
        }
        self.save_inventory(workload, &inventory)?;
        Ok(outcome)
    }

    async fn apply_one(
        &self,
        workload: &str,
        m: &Manifest,
        inventory: &mut BTreeSet<ObjectRef>,
    ) -> Result<(ObjectRef, AppliedObject), AgentError> {
        let (api, id) = self.api(&m.id).await?;
        let mut body = with_ownership(m, workload);
        if !id.namespace.is_empty() {
            body["metadata"]["namespace"] = Value::String(id.namespace.clone());
        }
        if inventory.insert(id.clone()) {
            self.save_inventory(workload, inventory)?;
        }
        let key = (workload.to_string(), id.clone());
        let known = self
            .applied
            .lock()
            .expect("applied lock")
            .get(&key)
            .cloned();
        let live = match &known {
            // Never applied by this process: apply without looking.
            None => None,
            Some(_) => api
                .get_opt(&id.name)
                .await
                .map_err(|e| kube_error("get", &id, e))?
                .map(|o| serde_json::to_value(o).expect("a live object serialises")),
        };
        let unchanged = match (&known, &live) {
            (Some(known), Some(live)) => *known == fingerprint(&body, live),
            _ => false,
        };
        let (live, written) = if unchanged {
            (live.expect("unchanged implies live"), false)
        } else {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let returned = api
                .patch(&id.name, &params, &Patch::Apply(&body))
                .await
                .map_err(|e| kube_error("apply", &id, e))?;
            let returned = serde_json::to_value(returned).expect("an object serialises");
            self.applied
                .lock()
                .expect("applied lock")
                .insert(key, fingerprint(&body, &returned));
            (returned, true)
        };
        let (health, message) = manifest::health(&id.kind, &live);
        let object = AppliedObject {
            name: id.to_string(),
            written,
            health,
            message,
        };
        Ok((id, object))
    }

    /// Deletes the object if it still carries our ownership label for `workload`; true when it
    /// was deleted. An object without the label (someone else's now) is left alone.
    async fn prune_one(&self, workload: &str, id: &ObjectRef) -> Result<bool, AgentError> {
        let (api, id) = self.api(id).await?;
        let live = api
            .get_opt(&id.name)
            .await
            .map_err(|e| kube_error("get", &id, e))?;
        let Some(live) = live else {
            return Ok(false);
        };
        let live = serde_json::to_value(live).expect("a live object serialises");
        self.applied
            .lock()
            .expect("applied lock")
            .remove(&(workload.to_string(), id.clone()));
        if !owned_by(&live, workload) {
            tracing::warn!(%workload, object = %id, "left Git but is not labelled {}={workload}; left alone", manifest::OWNER_LABEL);
            return Ok(false);
        }
        api.delete(&id.name, &DeleteParams::background())
            .await
            .map_err(|e| kube_error("delete", &id, e))?;
        tracing::info!(%workload, object = %id, "pruned");
        Ok(true)
    }

    /// Prunes every object of a workload that is no longer assigned; returns what was deleted.
    pub async fn forget(&self, workload: &str) -> Result<Vec<String>, AgentError> {
        let mut inventory = self.inventory(workload)?;
        let mut removed = Vec::new();
        for id in inventory.clone() {
            if self.prune_one(workload, &id).await? {
                removed.push(id.to_string());
            }
            inventory.remove(&id);
            self.save_inventory(workload, &inventory)?;
        }
        self.save_inventory(workload, &inventory)?;
        self.parsed.lock().expect("parsed lock").remove(workload);
        Ok(removed)
    }
}
