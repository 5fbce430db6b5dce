//! Kubernetes manifests as the Kubernetes target sees them, and the pure decisions on them:
//! which files are manifests, the order objects are applied in, the labels that mark an object
//! as ours, whether a live object drifted from what was applied, and an object's health from
//! its status fields.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::CoreError;
pub use crate::limits::MAX_MANIFEST_OBJECTS;
use crate::model::HealthState;
use crate::render::{Render, RenderPath};

/// The label naming the workload an object belongs to. Prune deletes only objects carrying it
/// with the workload's name.
pub const OWNER_LABEL: &str = "fleet.dev/workload";
/// Set on every object fleet applies, for `kubectl get -l app.kubernetes.io/managed-by=fleet`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "fleet";
/// Files of these names in the workload's root make it a Kustomize build.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Which object: what the API server needs to find it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects and for namespaced ones that take the default namespace.
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// `(group, version)`; the core group is `""`.
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", self.api_version.as_str()),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    /// `Kind/namespace/name`, or `Kind/name` without a namespace.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One object to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub id: ObjectRef,
    /// The whole object as written in Git (without `status`).
    pub body: Value,
    /// Where it came from: `path` or `path#document`.
    pub source: String,
}

/// True for the files the Kubernetes target reads as manifests.
pub fn is_manifest_path(path: &RenderPath) -> bool {
    let name = path.file_name();
    !KUSTOMIZATION_FILES.iter().any(|k| k.as_bytes() == name)
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext.as_bytes()))
}

/// True when the render is a Kustomize build (a kustomization file at its root).
pub fn is_kustomization(render: &Render) -> bool {
    KUSTOMIZATION_FILES
        .iter()
        .any(|f| render.contains_key(&RenderPath::from(*f)))
}

fn refused(source: &str, message: impl Into<String>, hint: &str) -> CoreError {
    CoreError::invalid(&format!("manifest {source}"), message, hint)
}

/// Every manifest file of the render (in path order, documents in file order), parsed and
/// put in apply order by [`apply_order`]. Files that are not `.yaml`, `.yml` or `.json` are
/// ignored.
pub fn parse_render(render: &Render) -> Result<Vec<Manifest>, CoreError> {
    let mut all = Vec::new();
    for (path, (_, content)) in render.iter().filter(|(p, _)| is_manifest_path(p)) {
        let path = path.to_string();
        let text = std::str::from_utf8(content)
            .map_err(|_| refused(&path, "is not UTF-8", "save the file as UTF-8"))?;
        all.extend(parse_documents(&path, text)?);
    }
    finish(all)
}

/// The objects of one YAML or JSON text with any number of `---`-separated documents, in
/// document order. A `kind: List` document contributes its `items`. Empty documents are
/// skipped.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Manifest>, CoreError> {
    let documents: Vec<Value> = if source.ends_with(".json") {
        vec![serde_json::from_str(text).map_err(|e| {
            refused(
                source,
                format!("is not valid JSON: {e}"),
                "fix the JSON syntax",
            )
        })?]
    } else {
        crate::yaml::documents(text)
            .map_err(|e| {
                refused(
                    &format!("{source} line {}", e.line),
                    format!(
                        "is not valid YAML (read as kubectl reads it): {}{}",
                        if e.field.is_empty() {
                            String::new()
                        } else {
                            format!("field {}: ", e.field)
                        },
                        e.message
                    ),
                    "fix the YAML at that line",
                )
            })?
            .into_iter()
            .map(|(value, _)| value)
            .filter(|value| !value.is_null())
            .collect()
    };
    let mut out = Vec::new();
    let several = documents.len() > 1;
    for (index, document) in documents.into_iter().enumerate() {
        // `path#n`: the n-th non-empty document.
        let where_ = if several {
            format!("{source}#{}", index + 1)
        } else {
            source.to_string()
        };
        match document {
            Value::Null => {}
            Value::Object(map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = match map.get("items") {
                    Some(Value::Array(items)) => items.clone(),
                    _ => return Err(refused(&where_, "is a List without items", "add `items:`")),
                };
                for (i, item) in items.into_iter().enumerate() {
                    out.push(object(&format!("{where_}/items/{i}"), item)?);
                }
            }
            other => out.push(object(&where_, other)?),
        }
    }
    Ok(out)
}

fn string_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn object(source: &str, value: Value) -> Result<Manifest, CoreError> {
    let Value::Object(mut map) = value else {
        return Err(refused(
            source,
            "is not a mapping",
            "each document must be one Kubernetes object",
        ));
    };
    let api_version = string_field(&map, "apiVersion")
        .ok_or_else(|| refused(source, "has no apiVersion", "add `apiVersion:`"))?
        .to_string();
    let kind = string_field(&map, "kind")
        .ok_or_else(|| refused(source, "has no kind", "add `kind:`"))?
        .to_string();
    let metadata = map
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or_else(|| refused(source, "has no metadata", "add `metadata: {name: ...}`"))?;
    let name = string_field(metadata, "name").ok_or_else(|| {
        refused(
            source,
            "has no metadata.name",
            "give the object a fixed name (generateName cannot be reconciled)",
        )
    })?;
    if name.len() > 253 || name.contains('/') {
        return Err(refused(
            source,
            format!("metadata.name {name:?} is not a Kubernetes name"),
            "use at most 253 characters and no '/'",
        ));
    }
    let id = ObjectRef {
        api_version,
        kind,
        namespace: string_field(metadata, "namespace")
            .unwrap_or_default()
            .to_string(),
        name: name.to_string(),
    };
    map.remove("status");
    Ok(Manifest {
        id,
        body: Value::Object(map),
        source: source.to_string(),
    })
}

/// Checks the limits and duplicates and puts the objects in apply order.
pub fn finish(mut manifests: Vec<Manifest>) -> Result<Vec<Manifest>, CoreError> {
    if manifests.len() > MAX_MANIFEST_OBJECTS {
        return Err(CoreError::invalid(
            "render",
            format!(
                "holds {} objects, more than {MAX_MANIFEST_OBJECTS}",
                manifests.len()
            ),
            "split the workload",
        ));
    }
    let mut seen = BTreeSet::new();
    for m in &manifests {
        let (group, _) = m.id.group_version();
        if !seen.insert((group, &m.id.kind, &m.id.namespace, &m.id.name)) {
            return Err(refused(
                &m.source,
                format!("declares {} a second time", m.id),
                "keep one definition of each object",
            ));
        }
    }
    apply_order(&mut manifests);
    Ok(manifests)
}

/// Namespaces first, then CustomResourceDefinitions, then everything else; a stable sort, so
/// within each group the order is the file and document order.
pub fn apply_order(manifests: &mut [Manifest]) {
    manifests.sort_by_key(|m| match (m.id.group_version().0, m.id.kind.as_str()) {
        ("", "Namespace") => 0,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 1,
        _ => 2,
    });
}

/// The body to apply: the manifest with our ownership labels added.
pub fn with_ownership(manifest: &Manifest, workload: &str) -> Value {
    let mut body = manifest.body.clone();
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if !labels.is_object() {
            *labels = Value::Object(Map::new());
        }
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(OWNER_LABEL.into(), Value::String(workload.into()));
            labels.insert(
                MANAGED_BY_LABEL.into(),
                Value::String(MANAGED_BY_VALUE.into()),
            );
        }
    }
    body
}

/// True when the live object carries our ownership label for `workload`.
pub fn owned_by(live: &Value, workload: &str) -> bool {
    owner(live) == Some(workload)
}

/// The workload whose ownership label is on a live object, if any (an empty label is none).
pub fn owner(live: &Value) -> Option<&str> {
    live.pointer("/metadata/labels")
        .and_then(|labels| labels.get(OWNER_LABEL))
        .and_then(Value::as_str)
        .filter(|owner| !owner.is_empty())
}

/// The part of `live` at the places `desired` sets: maps keep only the desired keys, lists keep
/// their length and are projected element by element. Missing places become `null`.
pub fn project(desired: &Value, live: &Value) -> Value {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => Value::Object(
            d.iter()
                .map(|(k, dv)| {
                    (
                        k.clone(),
                        l.get(k).map_or(Value::Null, |lv| project(dv, lv)),
                    )
                })
                .collect(),
        ),
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => {
            Value::Array(d.iter().zip(l).map(|(dv, lv)| project(dv, lv)).collect())
        }
        _ => live.clone(),
    }
}

/// A digest of the live object at the places the applied body sets. The agent keeps it after
/// each apply; a later live object with another fingerprint was changed by someone else (drift).
/// Comparing against what the server returned, not against the manifest, keeps the server's
/// normalisations (`0.5` → `500m`, defaulted list members) from reading as drift.
pub fn fingerprint(applied: &Value, live: &Value) -> String {
    let mut projected = project(applied, live);
    if let Some(metadata) = projected.get_mut("metadata").and_then(Value::as_object_mut) {
        // Server-owned even when a manifest sets them.
        for key in [
            "resourceVersion",
            "generation",
            "uid",
            "creationTimestamp",
            "managedFields",
        ] {
            metadata.remove(key);
        }
    }
    hex::encode(Sha256::digest(projected.to_string().as_bytes()))
}

fn int(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

fn condition<'a>(live: &'a Value, kind: &str) -> Option<&'a Value> {
    live.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn condition_is(live: &Value, kind: &str, status: &str) -> bool {
    condition(live, kind)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some(status)
}

fn condition_message(live: &Value, kind: &str) -> String {
    condition(live, kind)
        .and_then(|c| c.get("message").or_else(|| c.get("reason")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Has the controller seen the newest spec? Without both fields, assume it has.
fn observed(live: &Value) -> bool {
    match (
        int(live, "/metadata/generation"),
        int(live, "/status/observedGeneration"),
    ) {
        (Some(generation), Some(observed)) => observed >= generation,
        (Some(_), None) => false,
        _ => true,
    }
}

fn progressing(message: impl Into<String>) -> (HealthState, String) {
    (HealthState::Progressing, message.into())
}

/// The health of a live object from its status fields, with a short reason when not Healthy.
///
/// - Deployment: Degraded when its Progressing condition says `ProgressDeadlineExceeded`;
///   Healthy when the newest generation is observed and updated and available replicas reach
///   `spec.replicas` (default 1).
/// - StatefulSet: ready and updated replicas reach `spec.replicas` and, for rolling updates,
///   `currentRevision == updateRevision`.
/// - DaemonSet: updated and available pods reach `desiredNumberScheduled`.
/// - Job: Healthy when Complete, Degraded when Failed, else Progressing.
/// - Service: a LoadBalancer is Progressing until it has an ingress address; others Healthy.
/// - PersistentVolumeClaim: Bound is Healthy, Lost Degraded, anything else Progressing.
/// - Any other kind: Degraded when it has a `Ready` condition that is `False`, else Healthy
///   (it exists, which is all we know).
pub fn health(kind: &str, live: &Value) -> (HealthState, String) {
    let healthy = (HealthState::Healthy, String::new());
    match kind {
        "Deployment" => {
            if condition(live, "Progressing")
                .and_then(|c| c.get("reason"))
                .and_then(Value::as_str)
                == Some("ProgressDeadlineExceeded")
            {
                return (
                    HealthState::Degraded,
                    condition_message(live, "Progressing"),
                );
            }
            if !observed(live) {
                return progressing("waiting for the controller to observe the new spec");
            }
            let want = int(live, "/spec/replicas").unwrap_or(1);
            let updated = int(live, "/status/updatedReplicas").unwrap_or(0);
            let available = int(live, "/status/availableReplicas").unwrap_or(0);
            if updated < want || available < want {
                return progressing(format!(
                    "{updated} of {want} replicas updated, {available} available"
                ));
            }
            healthy
        }
        "StatefulSet" => {
            if !observed(live) {
                return progressing("waiting for the controller to observe the new spec");
            }
            let want = int(live, "/spec/replicas").unwrap_or(1);
            let ready = int(live, "/status/readyReplicas").unwrap_or(0);
            let rolling = live
                .pointer("/spec/updateStrategy/type")
                .and_then(Value::as_str)
                .is_none_or(|t| t == "RollingUpdate");
            if ready < want {
                return progressing(format!("{ready} of {want} replicas ready"));
            }
            if rolling {
                let updated = int(live, "/status/updatedReplicas").unwrap_or(0);
                let current = live.pointer("/status/currentRevision");
                let update = live.pointer("/status/updateRevision");
                if updated < want || current != update {
                    return progressing(format!("{updated} of {want} replicas updated"));
                }
            }
            healthy
        }
        "DaemonSet" => {
            if !observed(live) {
                return progressing("waiting for the controller to observe the new spec");
            }
            let want = int(live, "/status/desiredNumberScheduled").unwrap_or(0);
            let updated = int(live, "/status/updatedNumberScheduled").unwrap_or(0);
            let available = int(live, "/status/numberAvailable").unwrap_or(0);
            if updated < want || available < want {
                return progressing(format!(
                    "{updated} of {want} pods updated, {available} available"
                ));
            }
            healthy
        }
        "Job" => {
            if condition_is(live, "Failed", "True") {
                (HealthState::Degraded, condition_message(live, "Failed"))
            } else if condition_is(live, "Complete", "True") {
                healthy
            } else {
                progressing("running")
            }
        }
        "Service" => {
            let load_balancer =
                live.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer");
            let has_ingress = live
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .is_some_and(|i| !i.is_empty());
            if load_balancer && !has_ingress {
                return progressing("waiting for a load balancer address");
            }
            healthy
        }
        "PersistentVolumeClaim" => match live.pointer("/status/phase").and_then(Value::as_str) {
            Some("Bound") => healthy,
            Some("Lost") => (HealthState::Degraded, "the claim lost its volume".into()),
            Some(phase) => progressing(format!("phase {phase}")),
            None => progressing("no phase yet"),
        },
        _ => {
            if condition_is(live, "Ready", "False") {
                (HealthState::Degraded, condition_message(live, "Ready"))
            } else {
                healthy
            }
        }
    }
}

/// The worst of several healths: Degraded, then Progressing, then Unknown, then Healthy.
pub fn worst(healths: impl IntoIterator<Item = HealthState>) -> HealthState {
    let rank = |h: &HealthState| match h {
        HealthState::Healthy => 0,
        HealthState::Unknown => 1,
        HealthState::Progressing => 2,
        HealthState::Degraded => 3,
    };
    healths
        .into_iter()
        .max_by_key(rank)
        .unwrap_or(HealthState::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::FileKind;
    use serde_json::json;

    fn render(files: &[(&str, &str)]) -> Render {
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

    #[test]
    fn manifests_parse_in_path_and_document_order_with_namespaces_and_crds_first() {
        let r = render(&[
            (
                "a/app.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n---\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nstatus: {x: 1}\n",
            ),
            ("README.md", "not a manifest"),
            (
                "b/list.json",
                r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"}}]}"#,
            ),
            (
                "z/crd.yaml",
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n",
            ),
            (
                "z/ns.yml",
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
            ),
        ]);
        let ms = parse_render(&r).unwrap();
        let names: Vec<String> = ms.iter().map(|m| m.id.to_string()).collect();
        assert_eq!(
            names,
            [
                "Namespace/shop",
                "CustomResourceDefinition/widgets.example.com",
                "Deployment/shop/web",
                "Service/shop/web",
                "ConfigMap/cfg"
            ]
        );
        assert_eq!(ms[3].source, "a/app.yaml#2", "empty documents are skipped");
        assert_eq!(ms[4].source, "b/list.json/items/0");
        assert!(
            ms[3].body.get("status").is_none(),
            "status is never applied"
        );
    }

    #[test]
    fn malformed_manifests_are_refused_naming_the_file_and_the_fix() {
        for (text, expect) in [
            ("kind: Service\nmetadata: {name: a}\n", "no apiVersion"),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {generateName: a-}\n",
                "generateName",
            ),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n",
                "not valid YAML",
            ),
            ("- just\n- a list\n", "not a mapping"),
        ] {
            let e = parse_render(&render(&[("bad.yaml", text)])).unwrap_err();
            let shown = format!("{e} / {}", e.hint());
            assert!(shown.contains("manifest bad.yaml"), "{shown}");
            assert!(shown.contains(expect), "{shown} lacks {expect}");
        }
        let twice = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n";
        let e = parse_render(&render(&[("x.yaml", twice)])).unwrap_err();
        assert!(e.to_string().contains("second time"), "{e}");
    }

    #[test]
    fn ownership_labels_are_added_and_recognised() {
        let m = &parse_render(&render(&[(
            "s.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {app: a}}\n",
        )]))
        .unwrap()[0];
        let body = with_ownership(m, "web");
        assert_eq!(body.pointer("/metadata/labels/app"), Some(&json!("a")));
        assert!(owned_by(&body, "web"));
        assert!(!owned_by(&body, "api"));
        assert!(!owned_by(&m.body, "web"));
    }

    #[test]
    fn fingerprint_sees_changes_to_applied_fields_only() {
        let applied = json!({"metadata": {"name": "w", "labels": {"a": "1"}}, "spec": {"replicas": 2, "ports": [{"port": 80}]}});
        let live = json!({"metadata": {"name": "w", "labels": {"a": "1"}, "resourceVersion": "5"}, "spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}], "extra": true}, "status": {"ready": 1}});
        let before = fingerprint(&applied, &live);
        let mut status_changed = live.clone();
        status_changed["status"]["ready"] = json!(2);
        status_changed["metadata"]["resourceVersion"] = json!("6");
        assert_eq!(fingerprint(&applied, &status_changed), before);
        let mut edited = live.clone();
        edited["spec"]["replicas"] = json!(5);
        assert_ne!(fingerprint(&applied, &edited), before);
        let mut label_removed = live.clone();
        label_removed["metadata"]["labels"] = json!({});
        assert_ne!(fingerprint(&applied, &label_removed), before);
    }

    #[test]
    fn health_follows_each_kinds_status_fields() {
        use HealthState::*;
        let cases = [
            (
                "Deployment",
                json!({"metadata": {"generation": 2}, "spec": {"replicas": 3}, "status": {"observedGeneration": 2, "updatedReplicas": 3, "availableReplicas": 3}}),
                Healthy,
            ),
            (
                "Deployment",
                json!({"metadata": {"generation": 3}, "spec": {"replicas": 3}, "status": {"observedGeneration": 2, "updatedReplicas": 3, "availableReplicas": 3}}),
                Progressing,
            ),
            (
                "Deployment",
                json!({"spec": {"replicas": 3}, "status": {"updatedReplicas": 3, "availableReplicas": 1}}),
                Progressing,
            ),
            (
                "Deployment",
                json!({"status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}}),
                Degraded,
            ),
            (
                "StatefulSet",
                json!({"spec": {"replicas": 2}, "status": {"readyReplicas": 2, "updatedReplicas": 2, "currentRevision": "a", "updateRevision": "a"}}),
                Healthy,
            ),
            (
                "StatefulSet",
                json!({"spec": {"replicas": 2}, "status": {"readyReplicas": 2, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"}}),
                Progressing,
            ),
            (
                "DaemonSet",
                json!({"status": {"desiredNumberScheduled": 4, "updatedNumberScheduled": 4, "numberAvailable": 4}}),
                Healthy,
            ),
            (
                "DaemonSet",
                json!({"status": {"desiredNumberScheduled": 4, "updatedNumberScheduled": 4, "numberAvailable": 3}}),
                Progressing,
            ),
            (
                "Job",
                json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
                Healthy,
            ),
            (
                "Job",
                json!({"status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}}),
                Degraded,
            ),
            ("Job", json!({"status": {}}), Progressing),
            ("Service", json!({"spec": {"type": "ClusterIP"}}), Healthy),
            (
                "Service",
                json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}}),
                Progressing,
            ),
            (
                "Service",
                json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}}),
                Healthy,
            ),
            (
                "PersistentVolumeClaim",
                json!({"status": {"phase": "Bound"}}),
                Healthy,
            ),
            (
                "PersistentVolumeClaim",
                json!({"status": {"phase": "Pending"}}),
                Progressing,
            ),
            (
                "PersistentVolumeClaim",
                json!({"status": {"phase": "Lost"}}),
                Degraded,
            ),
            ("ConfigMap", json!({"data": {}}), Healthy),
            (
                "Widget",
                json!({"status": {"conditions": [{"type": "Ready", "status": "False", "message": "no widgets"}]}}),
                Degraded,
            ),
        ];
        for (kind, live, want) in cases {
            let (got, why) = health(kind, &live);
            assert_eq!(got, want, "{kind} {live} ({why})");
            assert_eq!(why.is_empty(), want == Healthy, "{kind}: {why:?}");
        }
        assert_eq!(worst([Healthy, Progressing, Unknown]), Progressing);
        assert_eq!(worst([]), Healthy);
    }
}
