//! The Kubernetes target: server-side apply of a workload's manifests with our field manager,
//! Namespaces and CRDs first; drift found by comparing the live objects with what the last apply
//! returned; prune of objects that left Git, but only those labelled as this workload's.
//!
//! Which objects the agent applied is kept per workload in `STATE/kubernetes-inventory/`,
//! widened before an object is applied and narrowed after pruning, so a crash between the two
//! never forgets an object it created.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fleet_core::manifest::{
    self, Manifest, ObjectRef, fingerprint, owned_by, parse_render, with_ownership,
};
use fleet_core::{HealthState, render::Render};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

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
    /// `STATE/kubernetes-applied/`: per workload, what was last applied ([`AppliedRecords`]).
    records_dir: PathBuf,
    /// Per workload: the render hash and its parsed manifests.
    parsed: Mutex<HashMap<String, Parsed>>,
}

/// Why an object is applied in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApplyReason {
    /// Never applied by this agent (or its records were lost).
    New,
    /// Its desired body differs from the one last applied: Git changed it.
    Changed,
    /// The live object differs from what the last apply returned, or is gone.
    Drift,
}

/// One object of a pass, resolved and read.
struct Planned {
    /// Its place in the manifests.
    index: usize,
    api: Api<DynamicObject>,
    /// With its namespace defaulted.
    id: ObjectRef,
    /// What is sent: the manifest with the ownership labels and the namespace.
    body: Value,
    digest: String,
    live: Option<Value>,
    /// `None`: the live object is what was last applied, nothing to send.
    reason: Option<ApplyReason>,
}

/// What was last applied for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRecord {
    /// SHA-256 of the JSON body sent.
    pub body_sha256: String,
    /// [`fingerprint`] of the object the server returned.
    pub fingerprint: String,
}

/// What was last applied for one workload, as kept in `STATE/kubernetes-applied/<workload>.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedRecords {
    /// The render hash of the last revision applied whole; a new one is dry-run first.
    pub render_hash: String,
    pub objects: BTreeMap<ObjectRef, AppliedRecord>,
}

/// The file form: a list, since an object reference is not a JSON key.
#[derive(Serialize, Deserialize)]
struct StoredRecords {
    render_hash: String,
    objects: Vec<(ObjectRef, AppliedRecord)>,
}

/// SHA-256 of a body as JSON (object keys in a fixed order, so the same body always has the
/// same digest).
fn body_digest(body: &Value) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(body).expect("a body serialises"),
    ))
}

/// Why one object stops its revision.
struct Refusal {
    /// Its place in the manifests.
    index: usize,
    /// The object, its namespace defaulted where it was resolved.
    object: String,
    why: String,
}

/// True when a CustomResourceDefinition among `manifests` defines the kind of `id`.
fn defined_by_crd(manifests: &[Manifest], id: &ObjectRef) -> bool {
    let (group, _) = id.group_version();
    manifests.iter().any(|m| {
        m.id.kind == "CustomResourceDefinition"
            && m.body.pointer("/spec/group").and_then(Value::as_str) == Some(group)
            && m.body.pointer("/spec/names/kind").and_then(Value::as_str) == Some(&id.kind)
    })
}

/// A revision refused before anything was sent: every object listed, the refused ones with
/// their reason.
fn refused(
    mut outcome: TargetOutcome,
    manifests: &[Manifest],
    refusals: Vec<Refusal>,
) -> TargetOutcome {
    for (index, m) in manifests.iter().enumerate() {
        let refusal = refusals.iter().find(|r| r.index == index);
        outcome.objects.push(AppliedObject {
            name: refusal.map_or_else(|| m.id.to_string(), |r| r.object.clone()),
            written: false,
            health: HealthState::Unknown,
            message: refusal.map_or_else(
                || "not applied: the revision was refused".to_string(),
                |r| r.why.clone(),
            ),
        });
    }
    let first = &refusals[0];
    outcome.error = Some(format!(
        "nothing applied: {} of {} objects refused; first: {} {}",
        refusals.len(),
        manifests.len(),
        first.object,
        first.why
    ));
    outcome
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
            records_dir: state_dir.join("kubernetes-applied"),
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

    /// Saves the inventory of `workload` (fsynced; removed when empty), on a blocking thread.
    async fn save_inventory(
        &self,
        workload: &str,
        refs: &BTreeSet<ObjectRef>,
    ) -> Result<(), AgentError> {
        let (path, dir, refs) = (
            self.inventory_path(workload),
            self.inventory_dir.clone(),
            refs.clone(),
        );
        crate::blocking("save the inventory", move || {
            save_inventory(&path, &dir, &refs)
        })
        .await
    }

    fn records_path(&self, workload: &str) -> PathBuf {
        self.records_dir.join(format!("{workload}.json"))
    }

    /// What was last applied for `workload`: per object the digest of the body sent and the
    /// fingerprint of what the server returned, and the render applied whole last.
    pub fn records(&self, workload: &str) -> Result<AppliedRecords, AgentError> {
        let path = self.records_path(workload);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: StoredRecords = serde_json::from_slice(&bytes).map_err(|e| {
                    AgentError::Target(format!("applied records {}: {e}", path.display()))
                })?;
                Ok(AppliedRecords {
                    render_hash: stored.render_hash,
                    objects: stored.objects.into_iter().collect(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AppliedRecords::default()),
            Err(e) => Err(AgentError::Target(format!("read {}: {e}", path.display()))),
        }
    }

    /// Saves what was last applied for `workload` (fsynced), on a blocking thread.
    async fn save_records(
        &self,
        workload: &str,
        records: &AppliedRecords,
    ) -> Result<(), AgentError> {
        let stored = StoredRecords {
            render_hash: records.render_hash.clone(),
            objects: records
                .objects
                .iter()
                .map(|(id, r)| (id.clone(), r.clone()))
                .collect(),
        };
        let (path, dir) = (self.records_path(workload), self.records_dir.clone());
        crate::blocking("save the applied records", move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| AgentError::Target(format!("create {}: {e}", dir.display())))?;
            let bytes = serde_json::to_vec(&stored).expect("records serialise");
            write_atomic(&path, &bytes, FileKind::Regular)
        })
        .await
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

    /// One pass for a workload, all or nothing across its objects:
    ///
    /// 1. Every object is resolved (its API, its namespace defaulted) and read. The revision is
    ///    refused, with nothing sent, when an object is declared twice (compared by group,
    ///    kind, namespace and name after defaulting) or carries another workload's ownership
    ///    label (the owner is the workload whose label is on the live object).
    /// 2. An object is applied when its desired body differs from the one last applied (kept
    ///    in the state directory, so a restart changes nothing), or when the live object
    ///    drifted from what that apply returned, or is gone.
    /// 3. When the revision has not been applied whole before, every object to apply is first
    ///    sent as a server-side apply with `dryRun=All`; one refusal and nothing is applied.
    /// 4. The objects are applied for real; only after all succeeded are objects that left Git
    ///    pruned.
    pub async fn apply(
        &self,
        workload: &str,
        hash: &str,
        render: &Render,
    ) -> Result<TargetOutcome, AgentError> {
        let manifests = self.manifests(workload, hash, render)?;
        let mut records = self.records(workload)?;
        let loaded = records.clone();
        let mut outcome = TargetOutcome::default();
        let (plans, deferred, refusals) = self.plan(workload, &manifests, &records).await?;
        if !refusals.is_empty() {
            return Ok(refused(outcome, &manifests, refusals));
        }
        let to_apply: Vec<&Planned> = plans.iter().filter(|p| p.reason.is_some()).collect();
        if records.render_hash != hash && !to_apply.is_empty() {
            let refusals = self.dry_run(workload, &to_apply, &manifests).await;
            if !refusals.is_empty() {
                return Ok(refused(outcome, &manifests, refusals));
            }
        }
        let mut inventory = self.inventory(workload)?;
        let mut failures = Vec::new();
        let mut desired = BTreeSet::new();
        for plan in &plans {
            desired.insert(plan.id.clone());
            match self
                .apply_planned(workload, plan, &mut inventory, &mut records)
                .await
            {
                Ok(object) => outcome.objects.push(object),
                Err(e) => {
                    outcome.objects.push(AppliedObject {
                        name: plan.id.to_string(),
                        written: false,
                        health: HealthState::Unknown,
                        message: e.to_string(),
                    });
                    failures.push(e.to_string());
                }
            }
        }
        // Custom resources whose definition this pass applied: served now, or on a later pass.
        for index in deferred {
            let m = &manifests[index];
            let result = match self.plan_one(workload, index, m, &records).await? {
                Ok(plan) => {
                    desired.insert(plan.id.clone());
                    self.apply_planned(workload, &plan, &mut inventory, &mut records)
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(refusal) => Err(format!(
                    "waiting for its CustomResourceDefinition to be served: {}",
                    refusal.why
                )),
            };
            match result {
                Ok(object) => outcome.objects.push(object),
                Err(e) => {
                    desired.insert(m.id.clone());
                    outcome.objects.push(AppliedObject {
                        name: m.id.to_string(),
                        written: false,
                        health: HealthState::Progressing,
                        message: e.clone(),
                    });
                    failures.push(format!("{}: {e}", m.id));
                }
            }
        }
        if let Some(first) = failures.first() {
            if records != loaded {
                self.save_records(workload, &records).await?;
            }
            outcome.error = Some(format!(
                "{} of {} objects failed; first: {first}",
                failures.len(),
                manifests.len()
            ));
            return Ok(outcome);
        }
        records.render_hash = hash.to_string();
        records.objects.retain(|id, _| desired.contains(id));
        if records != loaded {
            self.save_records(workload, &records).await?;
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
        self.save_inventory(workload, &inventory).await?;
        Ok(outcome)
    }

    /// Resolves and reads every object and decides what to do with it. Returns the plans, the
    /// objects whose kind a CustomResourceDefinition of this revision defines but the server
    /// does not serve yet (planned again once the rest is applied), and the refusals that
    /// stop the whole revision.
    async fn plan(
        &self,
        workload: &str,
        manifests: &[Manifest],
        records: &AppliedRecords,
    ) -> Result<(Vec<Planned>, Vec<usize>, Vec<Refusal>), AgentError> {
        let mut plans = Vec::new();
        let mut deferred = Vec::new();
        let mut refusals = Vec::new();
        let mut seen: HashMap<(String, String, String, String), &str> = HashMap::new();
        for (index, m) in manifests.iter().enumerate() {
            let plan = match self.plan_one(workload, index, m, records).await? {
                Ok(plan) => plan,
                Err(_) if defined_by_crd(manifests, &m.id) => {
                    deferred.push(index);
                    continue;
                }
                Err(refusal) => {
                    refusals.push(refusal);
                    continue;
                }
            };
            let (group, _) = plan.id.group_version();
            let key = (
                group.to_string(),
                plan.id.kind.clone(),
                plan.id.namespace.clone(),
                plan.id.name.clone(),
            );
            if let Some(first) = seen.insert(key, &m.source) {
                refusals.push(Refusal {
                    index,
                    object: plan.id.to_string(),
                    why: format!(
                        "is declared twice, in {first} and in {} (compared after the default \
                         namespace is applied); keep one",
                        m.source
                    ),
                });
                continue;
            }
            plans.push(plan);
        }
        Ok((plans, deferred, refusals))
    }

    /// Resolves, reads and decides one object; `Err(refusal)` when it cannot be applied.
    async fn plan_one(
        &self,
        workload: &str,
        index: usize,
        m: &Manifest,
        records: &AppliedRecords,
    ) -> Result<Result<Planned, Refusal>, AgentError> {
        let refusal = |object: String, why: String| Ok(Err(Refusal { index, object, why }));
        let (api, id) = match self.api(&m.id).await {
            Ok(found) => found,
            Err(e) => return refusal(m.id.to_string(), e.to_string()),
        };
        let mut body = with_ownership(m, workload);
        if !id.namespace.is_empty() {
            body["metadata"]["namespace"] = Value::String(id.namespace.clone());
        }
        let live = api
            .get_opt(&id.name)
            .await
            .map_err(|e| kube_error("get", &id, e))?
            .map(|o| serde_json::to_value(o).expect("a live object serialises"));
        if let Some(owner) = live.as_ref().and_then(manifest::owner)
            && owner != workload
        {
            return refusal(
                id.to_string(),
                format!(
                    "is owned by workload {owner:?} (label {}={owner} on the live object); \
                     declare it in one workload only",
                    manifest::OWNER_LABEL
                ),
            );
        }
        let digest = body_digest(&body);
        let reason = match (records.objects.get(&id), &live) {
            (None, _) => Some(ApplyReason::New),
            (Some(r), _) if r.body_sha256 != digest => Some(ApplyReason::Changed),
            (Some(_), None) => Some(ApplyReason::Drift),
            (Some(r), Some(live)) if r.fingerprint != fingerprint(&body, live) => {
                Some(ApplyReason::Drift)
            }
            (Some(_), Some(_)) => None,
        };
        Ok(Ok(Planned {
            index,
            api,
            id,
            body,
            digest,
            live,
            reason,
        }))
    }

    /// Sends every planned apply with `dryRun=All`; returns the refusals. A refusal because
    /// the object's namespace does not exist yet is not one when the revision creates that
    /// namespace (the real apply makes it first).
    async fn dry_run(
        &self,
        workload: &str,
        plans: &[&Planned],
        manifests: &[Manifest],
    ) -> Vec<Refusal> {
        let created: BTreeSet<&str> = manifests
            .iter()
            .filter(|m| m.id.kind == "Namespace" && m.id.group_version().0.is_empty())
            .map(|m| m.id.name.as_str())
            .collect();
        let mut refusals = Vec::new();
        for plan in plans {
            let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
            match plan
                .api
                .patch(&plan.id.name, &params, &Patch::Apply(&plan.body))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status))
                    if status.code == 404
                        && created.contains(plan.id.namespace.as_str())
                        && status.message.contains("namespaces") => {}
                Err(e) => refusals.push(Refusal {
                    index: plan.index,
                    object: plan.id.to_string(),
                    why: format!("refused by the API server's dry run: {e}"),
                }),
            }
        }
        if !refusals.is_empty() {
            tracing::warn!(%workload, refused = refusals.len(), "the dry run refused the revision; nothing applied");
        }
        refusals
    }

    async fn apply_planned(
        &self,
        workload: &str,
        plan: &Planned,
        inventory: &mut BTreeSet<ObjectRef>,
        records: &mut AppliedRecords,
    ) -> Result<AppliedObject, AgentError> {
        if inventory.insert(plan.id.clone()) {
            self.save_inventory(workload, inventory).await?;
        }
        let (live, written) = match (plan.reason, &plan.live) {
            (None, Some(live)) => (live.clone(), false),
            _ => {
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let returned = plan
                    .api
                    .patch(&plan.id.name, &params, &Patch::Apply(&plan.body))
                    .await
                    .map_err(|e| kube_error("apply", &plan.id, e))?;
                let returned = serde_json::to_value(returned).expect("an object serialises");
                if let Some(reason) = plan.reason {
                    tracing::info!(%workload, object = %plan.id, ?reason, "applied");
                }
                records.objects.insert(
                    plan.id.clone(),
                    AppliedRecord {
                        body_sha256: plan.digest.clone(),
                        fingerprint: fingerprint(&plan.body, &returned),
                    },
                );
                (returned, true)
            }
        };
        let (health, message) = manifest::health(&plan.id.kind, &live);
        Ok(AppliedObject {
            name: plan.id.to_string(),
            written,
            health,
            message,
        })
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
            self.save_inventory(workload, &inventory).await?;
        }
        self.save_inventory(workload, &inventory).await?;
        self.parsed.lock().expect("parsed lock").remove(workload);
        match std::fs::remove_file(self.records_path(workload)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(AgentError::Target(format!("remove applied records: {e}")));
            }
            _ => {}
        }
        Ok(removed)
    }
}

/// Writes `refs` to `path` (creating `dir`), or removes `path` when `refs` is empty.
fn save_inventory(path: &Path, dir: &Path, refs: &BTreeSet<ObjectRef>) -> Result<(), AgentError> {
    if refs.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::Target(format!(
                "remove {}: {e}",
                path.display()
            ))),
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| AgentError::Target(format!("create {}: {e}", dir.display())))?;
    let bytes = serde_json::to_vec(refs).expect("object refs serialise");
    write_atomic(path, &bytes, FileKind::Regular)
}
