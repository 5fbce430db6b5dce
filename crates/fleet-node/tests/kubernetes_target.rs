//! The Kubernetes target, tested at the HTTP boundary.
//!
//! No Kubernetes API server can be installed where these tests run, so the kube client talks
//! to an in-memory API server behind kube's `tower-test` mock service: it answers discovery,
//! GET, server-side apply PATCH and DELETE the way the real one does for these calls, keeps
//! status fields across applies (as a controller would have written them), and records every
//! request so the tests can assert what went over the wire.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fleet_core::HealthState;
use fleet_core::render::{FileKind, Render, RenderPath};
use fleet_node::agent::kubernetes::{FIELD_MANAGER, KubeTarget};
use fleet_node::agent::{AppliedObject, TargetOutcome};
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
    fn handle(&mut self, r: Recorded) -> (StatusCode, Value) {
        self.requests.push(r.clone());
        if r.method == "GET"
            && let Some(list) = discovery(&r.path)
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
                self.objects.insert(r.path, applied.clone());
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
    let patches: Vec<Recorded> = requests(&server)
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
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
async fn an_unknown_kind_fails_naming_the_object_applies_the_rest_and_prunes_nothing() {
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
    assert!(
        !writes(&server).iter().any(|w| w.starts_with("DELETE")),
        "no prune after a failure"
    );
    assert!(
        server
            .lock()
            .unwrap()
            .objects
            .contains_key("/api/v1/namespaces/default/configmaps/b")
    );
}
