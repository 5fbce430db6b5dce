//! The Kubernetes target, tested at the HTTP boundary.
//!
//! No Kubernetes API server can be installed where these tests run, so the kube client talks
//! to an in-memory API server behind kube's `tower-test` mock service: it answers discovery,
//! GET, server-side apply PATCH and DELETE the way the real one does for these calls, keeps
//! status fields across applies (as a controller would have written them), and records every
//! request so the tests can assert what went over the wire.
//!
//! The upstream semantics the stand-in implements, and the tests rely on:
//! - Server-side apply (<https://kubernetes.io/docs/reference/using-api/server-side-apply/>):
//!   a `PATCH` with `application/apply-patch+yaml` creates or updates the object from the
//!   applied configuration; "if a field was previously applied by the manager but is no longer
//!   in the applied configuration, it is removed" when no other manager owns it. The stand-in
//!   has one manager (fleet), so an apply replaces the object's fields with the body (status
//!   kept, as it is a subresource written by controllers).
//! - Dry run (<https://kubernetes.io/docs/reference/using-api/api-concepts/#dry-run>):
//!   `?dryRun=All` runs every stage (admission, validation) and persists nothing; the
//!   response is what the object would be.
//! - A namespaced object in a namespace that does not exist is refused with 404 NotFound,
//!   `namespaces "NAME" not found`, dry run or not
//!   (<https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/>).
//!   The stand-in starts with the namespaces `default` and `shop`.
//! - A body the server finds invalid is refused with 422 Invalid, the message naming the
//!   field (<https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation>).
//!   The stand-in refuses any object carrying the annotation `test.fleet.dev/invalid`, with
//!   its value as the field's complaint.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fleet_agent::kubernetes::{FIELD_MANAGER, KubeTarget};
use fleet_agent::{AppliedObject, TargetOutcome};
use fleet_core::HealthState;
use fleet_core::render::{FileKind, Render, RenderPath};
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Option<Value>,
}

#[derive(Default)]
struct ApiServer {
    /// Objects by their URL path.
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    resource_version: u64,
}

fn resource(name: &str, kind: &str, namespaced: bool) -> Value {
    json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
           "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
}

fn discovery(path: &str) -> Option<Value> {
    let (group_version, resources) = match path {
        "/api/v1" => (
            "v1",
            vec![
                resource("namespaces", "Namespace", false),
                resource("services", "Service", true),
                resource("configmaps", "ConfigMap", true),
                resource("persistentvolumeclaims", "PersistentVolumeClaim", true),
            ],
        ),
        "/apis/apps/v1" => (
            "apps/v1",
            vec![
                resource("deployments", "Deployment", true),
                resource("statefulsets", "StatefulSet", true),
                resource("daemonsets", "DaemonSet", true),
            ],
        ),
        "/apis/batch/v1" => ("batch/v1", vec![resource("jobs", "Job", true)]),
        "/apis/apiextensions.k8s.io/v1" => (
            "apiextensions.k8s.io/v1",
            vec![resource(
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )],
        ),
        _ => return None,
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": resources}),
    )
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status":
               if code.is_success() { "Success" } else { "Failure" },
               "reason": reason, "message": message, "code": code.as_u16()}),
    )
}

impl ApiServer {
    /// The kinds that stored CustomResourceDefinitions define: served once the definition is
    /// stored, as the real server does once the CRD is established.
    fn custom_discovery(&self, path: &str) -> Option<Value> {
        let group_version = path.strip_prefix("/apis/")?;
        let (group, version) = group_version.split_once('/')?;
        let resources: Vec<Value> = self
            .objects
            .values()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .filter(|o| o["spec"]["group"] == group)
            .filter(|o| {
                o["spec"]["versions"]
                    .as_array()
                    .is_some_and(|vs| vs.iter().any(|v| v["name"] == version))
            })
            .map(|o| {
                resource(
                    o["spec"]["names"]["plural"].as_str().unwrap(),
                    o["spec"]["names"]["kind"].as_str().unwrap(),
                    o["spec"]["scope"] == "Namespaced",
                )
            })
            .collect();
        (!resources.is_empty()).then(|| {
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                   "resources": resources})
        })
    }

    fn handle(&mut self, r: Recorded) -> (StatusCode, Value) {
        self.requests.push(r.clone());
        if r.method == "GET"
            && let Some(list) = discovery(&r.path).or_else(|| self.custom_discovery(&r.path))
        {
            return (StatusCode::OK, list);
        }
        match r.method.as_str() {
            "GET" => match self.objects.get(&r.path) {
                Some(o) => (StatusCode::OK, o.clone()),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{} not found", r.path),
                ),
            },
            "PATCH" if r.content_type == "application/apply-patch+yaml" => {
                let mut applied = r.body.expect("an apply has a body");
                let dry_run = r.query.split('&').any(|q| q == "dryRun=All");
                let name = applied["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let kind = applied["kind"].as_str().unwrap_or_default().to_string();
                if let Some(why) = applied
                    .pointer("/metadata/annotations/test.fleet.dev~1invalid")
                    .and_then(Value::as_str)
                {
                    return status(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        &format!("{kind} {name:?} is invalid: {why}"),
                    );
                }
                if let Some(ns) = r.path.strip_prefix("/api/v1/namespaces/").or_else(|| {
                    r.path
                        .split_once("/namespaces/")
                        .map(|(_, rest)| rest)
                        .filter(|_| r.path.starts_with("/apis/"))
                }) && let Some((ns, _)) = ns.split_once('/')
                    && !self
                        .objects
                        .contains_key(&format!("/api/v1/namespaces/{ns}"))
                {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("namespaces {ns:?} not found"),
                    );
                }
                self.resource_version += 1;
                let old = self.objects.get(&r.path);
                let generation = old
                    .and_then(|o| o.pointer("/metadata/generation"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    + i64::from(old.and_then(|o| o.get("spec")) != applied.get("spec"));
                if let Some(s) = old.and_then(|o| o.get("status")) {
                    applied["status"] = s.clone();
                }
                applied["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
                applied["metadata"]["generation"] = json!(generation.max(1));
                if !dry_run {
                    self.objects.insert(r.path, applied.clone());
                }
                (StatusCode::OK, applied)
            }
            "DELETE" => match self.objects.remove(&r.path) {
                Some(_) => status(StatusCode::OK, "", "deleted"),
                None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            },
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &r.method,
            ),
        }
    }
}

type Server = Arc<Mutex<ApiServer>>;

fn start() -> (kube::Client, Server) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server: Server = Arc::default();
    for ns in ["default", "shop"] {
        server.lock().unwrap().objects.insert(
            format!("/api/v1/namespaces/{ns}"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
    }
    let shared = server.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let recorded = Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default(),
                body: (!bytes.is_empty())
                    .then(|| serde_json::from_slice(&bytes).expect("JSON body")),
            };
            let (code, reply) = shared.lock().unwrap().handle(recorded);
            let response = Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            respond.send_response(response);
        }
    });
    (kube::Client::new(service, "default"), server)
}

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

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n";
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n";

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
}

const DEPLOYMENT_PATH: &str = "/apis/apps/v1/namespaces/shop/deployments/web";

fn requests(server: &Server) -> Vec<Recorded> {
    std::mem::take(&mut server.lock().unwrap().requests)
}

fn writes(server: &Server) -> Vec<String> {
    requests(server)
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn object<'a>(outcome: &'a TargetOutcome, name: &str) -> &'a AppliedObject {
    outcome
        .objects
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("{name} not in {:?}", outcome.objects))
}

#[tokio::test]
async fn server_side_apply_patches_with_the_field_manager_namespaces_first_and_labels_ownership() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let cm = config_map("settings");
    // The namespace sorts last by path; it must still be applied first.
    let r = render(&[
        ("app.yaml", &format!("{DEPLOYMENT}---\n{SERVICE}")),
        ("cm.yaml", &cm),
        ("zz-ns.yaml", NAMESPACE),
    ]);
    let outcome = target.apply("web", "h1", &r).await.unwrap();
    assert_eq!(outcome.error, None);
    let (dry_runs, patches): (Vec<Recorded>, Vec<Recorded>) = requests(&server)
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .partition(|r| r.query.contains("dryRun=All"));
    // A new revision is sent whole as a dry run first, then applied for real.
    let dry_paths: Vec<&str> = dry_runs.iter().map(|p| p.path.as_str()).collect();
    let real_paths: Vec<&str> = patches.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(dry_paths, real_paths);
    let paths: Vec<&str> = patches.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/shop",
            DEPLOYMENT_PATH,
            "/api/v1/namespaces/shop/services/web",
            // No namespace in the manifest: the client's default namespace.
            "/api/v1/namespaces/default/configmaps/settings",
        ]
    );
    for p in &patches {
        assert_eq!(p.content_type, "application/apply-patch+yaml", "{p:?}");
        assert!(
            p.query.contains(&format!("fieldManager={FIELD_MANAGER}")),
            "{p:?}"
        );
        assert!(p.query.contains("force=true"), "{p:?}");
        let labels = p
            .body
            .as_ref()
            .unwrap()
            .pointer("/metadata/labels")
            .unwrap();
        assert_eq!(labels["fleet.dev/workload"], "web", "{p:?}");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "fleet", "{p:?}");
    }
    assert!(
        outcome.objects.iter().all(|o| o.written),
        "{:?}",
        outcome.objects
    );
    assert_eq!(
        patches[3]
            .body
            .as_ref()
            .unwrap()
            .pointer("/metadata/namespace"),
        Some(&json!("default"))
    );
}

#[tokio::test]
async fn drift_is_repaired_by_reapplying_only_the_changed_objects() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let r = render(&[
        ("ns.yaml", NAMESPACE),
        ("app.yaml", &format!("{DEPLOYMENT}---\n{SERVICE}")),
    ]);
    target.apply("web", "h1", &r).await.unwrap();
    requests(&server);

    // Nothing changed, and a controller writing status is not drift: reads only.
    server
        .lock()
        .unwrap()
        .objects
        .get_mut(DEPLOYMENT_PATH)
        .unwrap()["status"] = json!({"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "observedGeneration": 1});
    let quiet = target.apply("web", "h1", &r).await.unwrap();
    assert_eq!(writes(&server), Vec::<String>::new());
    assert!(quiet.objects.iter().all(|o| !o.written));

    // `kubectl scale --replicas 5` and a hand-deleted Service.
    {
        let mut s = server.lock().unwrap();
        s.objects.get_mut(DEPLOYMENT_PATH).unwrap()["spec"]["replicas"] = json!(5);
        s.objects.remove("/api/v1/namespaces/shop/services/web");
    }
    let repaired = target.apply("web", "h1", &r).await.unwrap();
    assert_eq!(
        writes(&server),
        [
            format!("PATCH {DEPLOYMENT_PATH}"),
            "PATCH /api/v1/namespaces/shop/services/web".to_string()
        ]
    );
    assert!(object(&repaired, "Deployment/shop/web").written);
    assert!(object(&repaired, "Service/shop/web").written);
    assert!(!object(&repaired, "Namespace/shop").written);
    let live = server.lock().unwrap().objects[DEPLOYMENT_PATH].clone();
    assert_eq!(live["spec"]["replicas"], 2, "self-healed");
}

#[tokio::test]
async fn prune_deletes_an_owned_object_that_left_git_and_leaves_an_unowned_one() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let (a, b) = (config_map("a"), config_map("b"));
    let first = render(&[("a.yaml", &a), ("b.yaml", &b), ("svc.yaml", SERVICE)]);
    target.apply("web", "h1", &first).await.unwrap();
    // Someone took `b` over: our label is gone. And an object fleet never applied.
    {
        let mut s = server.lock().unwrap();
        let b = s
            .objects
            .get_mut("/api/v1/namespaces/default/configmaps/b")
            .unwrap();
        b["metadata"]["labels"] = json!({"owner": "someone-else"});
        s.objects.insert(
            "/api/v1/namespaces/default/configmaps/c".into(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}}),
        );
    }
    requests(&server);

    let second = render(&[("svc.yaml", SERVICE)]);
    let outcome = target.apply("web", "h2", &second).await.unwrap();
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.removed, ["ConfigMap/default/a"]);
    assert_eq!(
        writes(&server),
        ["DELETE /api/v1/namespaces/default/configmaps/a"]
    );
    let kept = |path: &str| server.lock().unwrap().objects.contains_key(path);
    assert!(
        kept("/api/v1/namespaces/default/configmaps/b"),
        "unowned: kept"
    );
    assert!(
        kept("/api/v1/namespaces/default/configmaps/c"),
        "never ours: kept"
    );
    let inventory: Vec<String> = target
        .inventory("web")
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(inventory, ["Service/shop/web"]);

    // An unassigned workload is pruned whole, owned objects only.
    assert_eq!(target.workloads().unwrap(), ["web"]);
    assert_eq!(target.forget("web").await.unwrap(), ["Service/shop/web"]);
    assert_eq!(target.workloads().unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn health_comes_from_the_live_status_fields() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let pvc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: shop}\nspec: {accessModes: [ReadWriteOnce]}\n";
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate, namespace: shop}\nspec: {template: {spec: {restartPolicy: Never}}}\n";
    let r = render(&[
        ("app.yaml", DEPLOYMENT),
        ("pvc.yaml", pvc),
        ("job.yaml", job),
    ]);
    let fresh = target.apply("web", "h1", &r).await.unwrap();
    let d = object(&fresh, "Deployment/shop/web");
    assert_eq!(d.health, HealthState::Progressing, "{d:?}");
    assert_eq!(
        object(&fresh, "PersistentVolumeClaim/shop/data").health,
        HealthState::Progressing
    );

    {
        let mut s = server.lock().unwrap();
        s.objects.get_mut(DEPLOYMENT_PATH).unwrap()["status"] =
            json!({"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2});
        s.objects
            .get_mut("/api/v1/namespaces/shop/persistentvolumeclaims/data")
            .unwrap()["status"] = json!({"phase": "Bound"});
        s.objects
            .get_mut("/apis/batch/v1/namespaces/shop/jobs/migrate")
            .unwrap()["status"] = json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]});
    }
    let later = target.apply("web", "h1", &r).await.unwrap();
    assert_eq!(
        object(&later, "Deployment/shop/web").health,
        HealthState::Healthy
    );
    assert_eq!(
        object(&later, "PersistentVolumeClaim/shop/data").health,
        HealthState::Healthy
    );
    let j = object(&later, "Job/shop/migrate");
    assert_eq!(j.health, HealthState::Degraded);
    assert!(j.message.contains("backoff limit"), "{j:?}");
    assert!(
        later.objects.iter().all(|o| !o.written),
        "status changes are not drift"
    );
}

#[tokio::test]
async fn an_unknown_kind_refuses_the_revision_naming_the_object_and_changes_nothing() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let (a, b) = (config_map("a"), config_map("b"));
    target
        .apply("web", "h1", &render(&[("a.yaml", &a), ("b.yaml", &b)]))
        .await
        .unwrap();
    requests(&server);
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n";
    let outcome = target
        .apply("web", "h2", &render(&[("a.yaml", &a), ("w.yaml", widget)]))
        .await
        .unwrap();
    let error = outcome.error.clone().expect("a failure");
    assert!(
        error.contains("Widget/w") && error.contains("does not serve"),
        "{error}"
    );
    assert_eq!(object(&outcome, "Widget/w").health, HealthState::Unknown);
    assert_eq!(
        writes(&server),
        Vec::<String>::new(),
        "nothing sent: no apply, no prune"
    );
    assert!(
        server
            .lock()
            .unwrap()
            .objects
            .contains_key("/api/v1/namespaces/default/configmaps/b")
    );
}

// Issue: a changed value must be applied, by comparing what Git asks for now with what was
// last applied, not the live object projected on the manifest's paths.

fn settings(level: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  level: {level:?}\n"
    )
}

const SETTINGS_PATH: &str = "/api/v1/namespaces/default/configmaps/settings";

/// The bodies of the real (not dry-run) server-side applies, by path.
fn applied_bodies(server: &Server) -> Vec<(String, Value)> {
    requests(server)
        .into_iter()
        .filter(|r| r.method == "PATCH" && !r.query.contains("dryRun=All"))
        .map(|r| (r.path, r.body.unwrap()))
        .collect()
}

fn live(server: &Server, path: &str) -> Value {
    server.lock().unwrap().objects[path].clone()
}

/// Assumes: a server-side apply of a changed body updates the fields fleet manages
/// (https://kubernetes.io/docs/reference/using-api/server-side-apply/#apply-and-update).
#[tokio::test]
async fn a_changed_value_is_applied_before_the_revision_is_reported_synced() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    target
        .apply("web", "h1", &render(&[("cm.yaml", &settings("info"))]))
        .await
        .unwrap();
    requests(&server);
    let outcome = target
        .apply("web", "h2", &render(&[("cm.yaml", &settings("debug"))]))
        .await
        .unwrap();
    assert_eq!(outcome.error, None);
    assert!(object(&outcome, "ConfigMap/default/settings").written);
    let bodies = applied_bodies(&server);
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0].0, SETTINGS_PATH);
    assert_eq!(bodies[0].1["data"]["level"], "debug");
    assert_eq!(live(&server, SETTINGS_PATH)["data"]["level"], "debug");
}

/// Assumes: `spec.replicas` and a container's `image` are ordinary fields of an applied
/// Deployment, replaced by the next apply
/// (https://kubernetes.io/docs/reference/using-api/server-side-apply/#apply-and-update).
#[tokio::test]
async fn a_deployments_image_and_replicas_change_is_applied() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    target
        .apply("web", "h1", &render(&[("app.yaml", DEPLOYMENT)]))
        .await
        .unwrap();
    requests(&server);
    let changed = DEPLOYMENT
        .replace("replicas: 2", "replicas: 3")
        .replace("nginx:1.27", "nginx:1.28");
    let outcome = target
        .apply("web", "h2", &render(&[("app.yaml", &changed)]))
        .await
        .unwrap();
    assert_eq!(outcome.error, None);
    let bodies = applied_bodies(&server);
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let live = live(&server, DEPLOYMENT_PATH);
    assert_eq!(live["spec"]["replicas"], 3);
    assert_eq!(
        live.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("nginx:1.28"))
    );
}

/// Server-side apply removes a field the manager applied before and no longer applies
/// (https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management):
/// fleet's part is to send a body without it.
#[tokio::test]
async fn a_field_removed_from_git_is_not_in_the_body_sent_and_leaves_the_live_object() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let both = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  level: info\n  extra: x\n";
    target
        .apply("web", "h1", &render(&[("cm.yaml", both)]))
        .await
        .unwrap();
    requests(&server);
    target
        .apply("web", "h2", &render(&[("cm.yaml", &settings("info"))]))
        .await
        .unwrap();
    let bodies = applied_bodies(&server);
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0].1["data"], json!({"level": "info"}));
    assert_eq!(
        live(&server, SETTINGS_PATH)["data"],
        json!({"level": "info"})
    );
}

/// Assumes: a GET returns the object as stored, so an unchanged object needs no apply, and
/// applying the same body again changes nothing
/// (https://kubernetes.io/docs/reference/using-api/server-side-apply/#comparison-with-client-side-apply).
#[tokio::test]
async fn an_agent_restart_sends_nothing_for_an_unchanged_revision_and_applies_a_changed_one() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let first = render(&[("cm.yaml", &settings("info")), ("app.yaml", DEPLOYMENT)]);
    KubeTarget::new(client.clone(), state.path())
        .apply("web", "h1", &first)
        .await
        .unwrap();
    requests(&server);
    // A new process: only what is in the state directory survives.
    let restarted = KubeTarget::new(client, state.path());
    let quiet = restarted.apply("web", "h1", &first).await.unwrap();
    assert_eq!(writes(&server), Vec::<String>::new(), "reads only");
    assert!(quiet.objects.iter().all(|o| !o.written));
    let second = render(&[("cm.yaml", &settings("debug")), ("app.yaml", DEPLOYMENT)]);
    restarted.apply("web", "h2", &second).await.unwrap();
    let bodies = applied_bodies(&server);
    let paths: Vec<&str> = bodies.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, [SETTINGS_PATH], "the changed object only");
    assert_eq!(live(&server, SETTINGS_PATH)["data"]["level"], "debug");
}

// Issue: YAML read as kubectl reads it (sigs.k8s.io/yaml over go-yaml v2, YAML 1.1).

/// Assumes: `kubectl apply -f` converts YAML to JSON with sigs.k8s.io/yaml over go-yaml v2
/// (https://github.com/kubernetes-sigs/yaml/blob/master/goyaml.v2/resolve.go), which reads
/// `0644` as octal; `defaultMode` and `mode` are decimal integers in the API
/// (https://kubernetes.io/docs/reference/kubernetes-api/config-and-storage-resources/volume/).
#[tokio::test]
async fn file_modes_in_legacy_octal_are_sent_as_kubectl_sends_them() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  replicas: 0x2\n  template:\n    spec:\n      volumes:\n      - name: certs\n        secret:\n          secretName: certs\n          defaultMode: 0644\n          items:\n          - key: tls.key\n            path: tls.key\n            mode: 0400\n";
    target
        .apply("web", "h1", &render(&[("app.yaml", deployment)]))
        .await
        .unwrap();
    let bodies = applied_bodies(&server);
    let volume = bodies[0]
        .1
        .pointer("/spec/template/spec/volumes/0/secret")
        .unwrap();
    // What `kubectl apply -f` sends for the same file: go-yaml v2 reads 0644 as octal.
    assert_eq!(volume["defaultMode"], 420);
    assert_eq!(volume["items"][0]["mode"], 256);
    assert_eq!(bodies[0].1["spec"]["replicas"], 2);
}

/// Assumes: kubectl's YAML-to-JSON step fails on `.inf`, as Go's encoding/json refuses
/// non-finite numbers (https://pkg.go.dev/encoding/json#Marshal: "NaN and +/-Inf ... an
/// UnsupportedValueError").
#[tokio::test]
async fn a_yaml_spelling_kubectl_refuses_is_refused_naming_file_line_and_field() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let infinite =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\nspec:\n  ratio: .inf\n";
    let error = target
        .apply("web", "h1", &render(&[("cm.yaml", infinite)]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cm.yaml line 6")
            && error.contains("field spec.ratio")
            && error.contains("JSON"),
        "{error}"
    );
    assert_eq!(writes(&server), Vec::<String>::new());
}

// Issue: one owner per object.

/// Assumes: a namespaced object without `metadata.namespace` goes to the client's default
/// namespace, so both declarations name one object
/// (https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/).
#[tokio::test]
async fn an_object_declared_with_and_without_the_default_namespace_is_refused_as_a_duplicate() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let explicit = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: twice\n  namespace: default\ndata: {a: '1'}\n";
    let implicit = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: twice\ndata: {a: '2'}\n";
    let outcome = target
        .apply(
            "web",
            "h1",
            &render(&[("a.yaml", explicit), ("b.yaml", implicit)]),
        )
        .await
        .unwrap();
    let error = outcome.error.expect("refused");
    assert!(
        error.contains("ConfigMap/default/twice")
            && error.contains("declared twice")
            && error.contains("a.yaml")
            && error.contains("b.yaml"),
        "{error}"
    );
    assert_eq!(writes(&server), Vec::<String>::new(), "nothing sent");
}

/// Assumes: labels on a live object are what a GET returns, and a forced apply would take
/// the object's fields over from another manager
/// (https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts): so fleet
/// must decide ownership itself, by its label, before sending anything.
#[tokio::test]
async fn two_workloads_declaring_one_object_do_not_flap_and_the_owner_keeps_it() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let shared = config_map("shared");
    let web = render(&[("shared.yaml", &shared)]);
    let api = render(&[
        ("shared.yaml", &shared),
        ("own.yaml", &config_map("api-own")),
    ]);
    let mut api_outcomes = Vec::new();
    for _ in 0..5 {
        target.apply("web", "w1", &web).await.unwrap();
        api_outcomes.push(target.apply("api", "a1", &api).await.unwrap());
    }
    let shared_path = "/api/v1/namespaces/default/configmaps/shared";
    let applies: Vec<String> = requests(&server)
        .into_iter()
        .filter(|r| r.method == "PATCH" && !r.query.contains("dryRun") && r.path == shared_path)
        .map(|r| r.path)
        .collect();
    assert_eq!(applies.len(), 1, "applied once, by its owner: {applies:?}");
    assert_eq!(
        live(&server, shared_path)["metadata"]["labels"]["fleet.dev/workload"],
        "web"
    );
    for outcome in &api_outcomes {
        let error = outcome.error.as_deref().expect("api's revision fails");
        assert!(
            error.contains("ConfigMap/default/shared") && error.contains("\"web\""),
            "{error}"
        );
        assert!(outcome.objects.iter().all(|o| !o.written));
    }
    assert!(
        !server
            .lock()
            .unwrap()
            .objects
            .contains_key("/api/v1/namespaces/default/configmaps/api-own"),
        "nothing of the refused revision was applied"
    );
}

// Issue: all or nothing across objects.

/// Assumes: `dryRun=All` validates and persists nothing, and an invalid object is refused
/// with 422 and a message naming the field
/// (https://kubernetes.io/docs/reference/using-api/api-concepts/#dry-run).
#[tokio::test]
async fn a_revision_the_dry_run_refuses_changes_nothing_and_names_the_object_and_field() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let numbered = |value: &str, invalid_at: Option<usize>| {
        let files: Vec<(String, String)> = (0..10)
            .map(|i| {
                let annotation = if invalid_at == Some(i) {
                    "  annotations:\n    test.fleet.dev/invalid: \"data.level: Invalid value: \\\"loud\\\": must be info or debug\"\n"
                } else {
                    ""
                };
                (
                    format!("c{i}.yaml"),
                    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\n{annotation}data:\n  level: {value}\n"),
                )
            })
            .collect();
        files
    };
    let as_render = |files: &[(String, String)]| {
        let pairs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        render(&pairs)
    };
    target
        .apply("web", "h1", &as_render(&numbered("info", None)))
        .await
        .unwrap();
    requests(&server);
    let outcome = target
        .apply("web", "h2", &as_render(&numbered("loud", Some(9))))
        .await
        .unwrap();
    let error = outcome.error.clone().expect("refused");
    assert!(
        error.contains("ConfigMap/default/c9")
            && error.contains("data.level")
            && error.contains("dry run"),
        "{error}"
    );
    let sent = requests(&server);
    let dry: Vec<&Recorded> = sent
        .iter()
        .filter(|r| r.method == "PATCH" && r.query.contains("dryRun=All"))
        .collect();
    let real: Vec<&Recorded> = sent
        .iter()
        .filter(|r| r.method == "PATCH" && !r.query.contains("dryRun=All"))
        .collect();
    assert_eq!(dry.len(), 10, "every object dry-run");
    assert!(real.is_empty(), "nothing applied for real: {real:?}");
    for i in 0..10 {
        let path = format!("/api/v1/namespaces/default/configmaps/c{i}");
        assert_eq!(live(&server, &path)["data"]["level"], "info", "c{i}");
    }
    let c9 = object(&outcome, "ConfigMap/default/c9");
    assert!(c9.message.contains("must be info or debug"), "{c9:?}");
}

/// Assumes: an object in a namespace that does not exist is refused with 404, also in a dry
/// run, and a custom resource is served once its CustomResourceDefinition is stored
/// (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/).
#[tokio::test]
async fn a_namespace_and_a_custom_resource_definition_made_by_the_revision_do_not_block_it() {
    let (client, server) = start();
    let state = tempfile::tempdir().unwrap();
    let target = KubeTarget::new(client, state.path());
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: fresh\n";
    let in_fresh =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: fresh\ndata: {a: b}\n";
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: widgets, singular: widget, kind: Widget}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n";
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: fresh\nspec: {size: 1}\n";
    let r = render(&[
        ("ns.yaml", namespace),
        ("cm.yaml", in_fresh),
        ("crd.yaml", crd),
        ("w.yaml", widget),
    ]);
    let outcome = target.apply("web", "h1", &r).await.unwrap();
    assert_eq!(outcome.error, None, "{:?}", outcome.objects);
    let s = server.lock().unwrap();
    assert!(
        s.objects
            .contains_key("/api/v1/namespaces/fresh/configmaps/c")
    );
    assert!(
        s.objects
            .contains_key("/apis/example.com/v1/namespaces/fresh/widgets/w")
    );
}
