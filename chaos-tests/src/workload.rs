//! The client workload: concurrent clients registering, removing and reading clusters and
//! publishing and reading releases over gRPC against random nodes, every operation recorded
//! with its invoke and return times; plus the monitors that watch leaders and assignments.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_api::proto::fleet_service_client::FleetServiceClient;
use fleet_api::proto::{
    GetClusterRequest, GetCoordinatorStatusRequest, ListReleasesRequest, PublishReleaseRequest,
    ReadConsistency, RegisterClusterRequest, RemoveClusterRequest,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::checker::{Input, Operation, Output};

/// Each client operation gives up after this long; its outcome is then unknown.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys the clients share, so that operations on one key overlap.
pub const CLUSTER_KEYS: u64 = 6;
pub const WORKLOAD_KEYS: u64 = 2;
/// The environment and site every chaos cluster is registered in.
pub const ENVIRONMENT: &str = "staging";
pub const SITE: &str = "oslo";

/// The cluster key `i`.
pub fn cluster_key(i: u64) -> String {
    format!("c{i}")
}

/// The workload key `i`.
pub fn workload_key(i: u64) -> String {
    format!("w{i}")
}

/// A revision number as the 40-hex SHA the coordinator takes.
pub fn revision_sha(revision: u64) -> String {
    format!("{revision:040x}")
}

/// Lazily connected channels, one per node address.
#[derive(Clone)]
pub struct Nodes {
    addresses: Vec<String>,
    channels: Vec<Channel>,
}

impl Nodes {
    pub fn new(addresses: &[String]) -> Nodes {
        let channels = addresses
            .iter()
            .map(|a| {
                let endpoint = fleet_identity::Transport::endpoint(a)
                    .expect("a node address is a valid URI")
                    .connect_timeout(Duration::from_millis(500))
                    .timeout(OPERATION_TIMEOUT);
                fleet_testkit::pki().transport().connect_lazy(endpoint)
            })
            .collect();
        Nodes {
            addresses: addresses.to_vec(),
            channels,
        }
    }

    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    pub fn client(&self, i: usize) -> FleetServiceClient<Channel> {
        FleetServiceClient::new(self.channels[i].clone())
    }
}

/// The history shared by all clients, and the next operation id.
#[derive(Default)]
pub struct Recorder {
    pub operations: Mutex<Vec<Operation>>,
    next_id: Mutex<u64>,
}

impl Recorder {
    pub fn next_id(&self) -> u64 {
        let mut id = self.next_id.lock().unwrap();
        *id += 1;
        *id
    }

    pub fn record(&self, op: Operation) {
        self.operations.lock().unwrap().push(op);
    }
}

/// What came back from one call.
enum Answer {
    Definite(Output),
    /// Surely not done (UNAVAILABLE, or no connection): leave it out of the history.
    NotDone,
    Unknown,
}

fn classify_error(status: &tonic::Status) -> Answer {
    match status.code() {
        Code::AlreadyExists => Answer::Definite(Output::AlreadyExists),
        Code::NotFound => Answer::Definite(Output::NotFound),
        // No connection: nothing was sent.
        Code::Unavailable
            if status.message().contains("tcp connect error")
                || status.message().contains("Connection refused") =>
        {
            Answer::NotDone
        }
        // A transport failure after the request may have left: unknown.
        Code::Unavailable if status.message().contains("transport") => Answer::Unknown,
        // The coordinator's own UNAVAILABLE means nothing was done.
        Code::Unavailable => Answer::NotDone,
        _ => Answer::Unknown,
    }
}

/// Runs `input` on `key` through `client`; the reason names the operation, so that the
/// audit log can be searched for every acknowledged write.
async fn call(
    client: &mut FleetServiceClient<Channel>,
    id: u64,
    key: &str,
    input: &Input,
) -> Answer {
    let reason = format!("op-{id}");
    let linearizable = ReadConsistency::Linearizable as i32;
    let result: Result<Output, tonic::Status> = match input {
        Input::Register { value } => client
            .register_cluster(RegisterClusterRequest {
                name: key.into(),
                site: SITE.into(),
                environment: ENVIRONMENT.into(),
                labels: [("v".to_string(), value.to_string())].into(),
                reason,
            })
            .await
            .map(|_| Output::Ok),
        Input::Remove => client
            .remove_cluster(RemoveClusterRequest {
                name: key.into(),
                reason,
            })
            .await
            .map(|_| Output::Ok),
        Input::Get => match client
            .get_cluster(GetClusterRequest {
                name: key.into(),
                consistency: linearizable,
            })
            .await
        {
            Ok(r) => {
                Ok(Output::Value(r.into_inner().cluster.and_then(|c| {
                    c.labels.get("v").and_then(|v| v.parse().ok())
                })))
            }
            Err(s) if s.code() == Code::NotFound => Ok(Output::Value(None)),
            Err(s) => Err(s),
        },
        Input::Publish { revision } => client
            .publish_release(PublishReleaseRequest {
                workload: key.into(),
                revision: revision_sha(*revision),
                reason,
                allow_rejected: false,
                override_freeze: false,
            })
            .await
            .map(|_| Output::Ok),
        Input::Latest => client
            .list_releases(ListReleasesRequest {
                workload: key.into(),
                consistency: linearizable,
            })
            .await
            .map(|r| {
                Output::Value(
                    r.into_inner()
                        .releases
                        .last()
                        .and_then(|r| u64::from_str_radix(&r.revision, 16).ok()),
                )
            }),
    };
    match result {
        Ok(output) => Answer::Definite(output),
        Err(status) => classify_error(&status),
    }
}

/// Runs one operation against node `node` and records it (reads with an unknown outcome say
/// nothing and are left out, as are calls surely not done).
pub async fn run_operation(
    nodes: &Nodes,
    recorder: &Recorder,
    started: Instant,
    client_id: u64,
    node: usize,
    key: &str,
    input: Input,
) -> Option<Output> {
    let id = recorder.next_id();
    let mut client = nodes.client(node);
    let invoked = started.elapsed().as_nanos() as u64;
    let answer =
        match tokio::time::timeout(OPERATION_TIMEOUT, call(&mut client, id, key, &input)).await {
            Ok(a) => a,
            Err(_) => Answer::Unknown,
        };
    let returned = started.elapsed().as_nanos() as u64;
    let is_read = matches!(input, Input::Get | Input::Latest);
    let (output, returned_ns) = match answer {
        Answer::Definite(o) => (o, Some(returned)),
        Answer::NotDone => return None,
        Answer::Unknown if is_read => return None,
        Answer::Unknown => (Output::Unknown, None),
    };
    recorder.record(Operation {
        id,
        client: client_id,
        key: key.into(),
        input,
        output: output.clone(),
        invoked_ns: invoked,
        returned_ns,
    });
    Some(output)
}

/// One client: random operations on random keys against random nodes until `stop`, drawn
/// from its own seeded generator.
pub async fn client(
    nodes: Nodes,
    recorder: Arc<Recorder>,
    started: Instant,
    client_id: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut counter = 0u64;
    while !stop.load(Ordering::SeqCst) {
        counter += 1;
        let value = (client_id << 40) | counter;
        let node = rng.usize(..nodes.len());
        let (key, input) = match rng.u32(..100) {
            0..25 => (
                cluster_key(rng.u64(..CLUSTER_KEYS)),
                Input::Register { value },
            ),
            25..35 => (cluster_key(rng.u64(..CLUSTER_KEYS)), Input::Remove),
            35..60 => (cluster_key(rng.u64(..CLUSTER_KEYS)), Input::Get),
            60..75 => (
                workload_key(rng.u64(..WORKLOAD_KEYS)),
                Input::Publish { revision: value },
            ),
            _ => (workload_key(rng.u64(..WORKLOAD_KEYS)), Input::Latest),
        };
        let answered =
            run_operation(&nodes, &recorder, started, client_id, node, &key, input).await;
        if answered.is_none() {
            // That node is down or has no leader: do not spin on it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Leaders seen per term, from polling every node's status.
#[derive(Default)]
pub struct LeaderLog {
    pub leaders: Mutex<BTreeMap<u64, std::collections::BTreeSet<u64>>>,
}

impl LeaderLog {
    /// Terms in which more than one node said it was the leader.
    pub fn violations(&self) -> Vec<String> {
        self.leaders
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.len() > 1)
            .map(|(term, l)| format!("term {term} had leaders {l:?}"))
            .collect()
    }
}

/// Polls every node's role and term every 100 ms until `stop`.
pub async fn watch_leaders(nodes: Nodes, log: Arc<LeaderLog>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        for i in 0..nodes.len() {
            let mut client = nodes.client(i);
            let mut request = tonic::Request::new(GetCoordinatorStatusRequest {});
            request.set_timeout(Duration::from_millis(300));
            if let Ok(Ok(s)) = tokio::time::timeout(
                Duration::from_millis(400),
                client.get_coordinator_status(request),
            )
            .await
            {
                let s = s.into_inner();
                if s.role == "Leader" {
                    log.leaders
                        .lock()
                        .unwrap()
                        .entry(s.term)
                        .or_default()
                        .insert(s.node_id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads `cluster`'s assignment of `workload` linearizably every 200 ms until `stop`, and
/// reports every time its version went backwards or its revision changed without a new
/// version (no rollback runs in this workload, so either is a violation).
pub async fn watch_assignment(
    nodes: Nodes,
    cluster: String,
    workload: String,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut last: Option<(u64, String)> = None;
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let mut client = nodes.client(i % nodes.len());
        let reply = tokio::time::timeout(
            OPERATION_TIMEOUT,
            client.get_cluster(GetClusterRequest {
                name: cluster.clone(),
                consistency: ReadConsistency::Linearizable as i32,
            }),
        )
        .await;
        if let Ok(Ok(r)) = reply
            && let Some(a) = r
                .into_inner()
                .assignments
                .into_iter()
                .find(|a| a.workload == workload)
        {
            if let Some((version, revision)) = &last
                && (a.version < *version || (a.version == *version && a.revision != *revision))
            {
                violations.push(format!(
                    "{cluster}'s assignment went from version {version} ({revision}) to {} ({})",
                    a.version, a.revision
                ));
            }
            last = Some((a.version, a.revision));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    violations
}
