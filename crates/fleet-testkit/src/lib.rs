//! Real coordinator processes for tests, chaos tests and benchmarks (set `FLEET_NODE_LOG` to
//! change their log filter): spawned from the
//! `fleet-node` binary, each with its own data dir and log file, stopped by pid when dropped.
//! Everything speaks mutual TLS: one test CA per test process ([`pki`]) issues every node's,
//! agent's and client's certificate.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fleet_core::{Principal, TrustDomain};
use fleet_identity::pki::{Ca, Validity};
use fleet_identity::{Credentials, TlsFiles, Transport};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::Channel;

use fleet_api::proto::fleet_service_client::FleetServiceClient;
use fleet_api::proto::{GetCoordinatorStatusRequest, GetCoordinatorStatusResponse};

/// The CA of this test process, in a temporary directory removed by the next test process
/// once this one has exited, and the admin operator's certificate.
pub struct TestPki {
    dir: PathBuf,
    ca: Ca,
    admin: TlsFiles,
}

/// Lifetime of the certificates the test CA issues: a year, so that a node whose clock a test
/// moves a day ahead (clock tests, the chaos suite's clock fault) still finds them valid.
const TEST_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// This test process's CA (made on first use).
pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let base = std::env::temp_dir();
        remove_stale_pki_dirs(&base);
        let dir = base.join(format!("fleet-test-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = Ca::generate(&TrustDomain::default()).expect("make the test CA");
        ca.write(&dir).expect("write the test CA");
        let mut pki = TestPki {
            admin: TlsFiles {
                ca: dir.join("ca.pem"),
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            dir,
            ca,
        };
        pki.admin = pki.issue(&Principal::Operator("admin".into()), &[], "operator-admin");
        pki
    })
}

/// Removes the test CAs of test processes that have exited.
fn remove_stale_pki_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.strip_prefix("fleet-test-pki-")
            && pid.parse::<u32>().is_ok()
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl TestPki {
    /// The CA certificate every test node and client trusts.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA's private key, for coordinators that sign agents' requests (`--ca-key`).
    pub fn ca_key_path(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }

    /// Issues a certificate valid for a day to `principal` (a coordinator's for `hosts`),
    /// written as `name.pem` and `name-key.pem` in the test CA's directory.
    pub fn issue(&self, principal: &Principal, hosts: &[String], name: &str) -> TlsFiles {
        self.issue_with(principal, hosts, name, Validity::from_now(TEST_TTL))
    }

    /// [`TestPki::issue`] with a validity of one's choice (e.g. one in the past).
    pub fn issue_with(
        &self,
        principal: &Principal,
        hosts: &[String],
        name: &str,
        validity: Validity,
    ) -> TlsFiles {
        // Every certificate gets files of its own: tests of one process run in parallel.
        static ISSUED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = ISSUED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (cert, key) = self
            .ca
            .issue(principal, hosts, validity)
            .expect("issue a test certificate")
            .write(&self.dir, &format!("{name}-{n}"))
            .expect("write a test certificate");
        TlsFiles {
            ca: self.ca_path(),
            cert,
            key,
        }
    }

    /// The certificate of the operator `admin`, which tests act as by default.
    pub fn admin(&self) -> &TlsFiles {
        &self.admin
    }

    /// Mutual TLS as `files`.
    pub fn transport_as(&self, files: &TlsFiles) -> Transport {
        let own = Credentials::load(files, None).expect("load test credentials");
        Transport::tls(&own.trust, Some(&own)).expect("a TLS client configuration")
    }

    /// Mutual TLS as the admin.
    pub fn transport(&self) -> Transport {
        static ADMIN: OnceLock<Transport> = OnceLock::new();
        ADMIN.get_or_init(|| self.transport_as(&self.admin)).clone()
    }

    /// The environment that makes `fleet-ctl` act as `files` (and read no config file).
    pub fn ctl_env(files: &TlsFiles) -> Vec<(&'static str, String)> {
        vec![
            ("FLEET_CA", files.ca.display().to_string()),
            ("FLEET_CERT", files.cert.display().to_string()),
            ("FLEET_KEY", files.key.display().to_string()),
            ("FLEET_CONFIG", "/nonexistent/fleet-test-config.yaml".into()),
        ]
    }
}

/// The host part of a HOST:PORT (brackets of an IPv6 address removed).
fn host_of(address: &str) -> String {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// The `fleet-node` binary next to the running test executable (cargo puts test executables
/// in `target/<profile>/deps` and binaries in `target/<profile>`).
pub fn fleet_node_binary() -> PathBuf {
    sibling_binary("fleet-node")
}

/// A workspace binary next to the running test executable.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p fleet-node, or cargo test --workspace)",
        path.display()
    );
    path
}

/// Spawns `command` with stdout and stderr into a new file at `log_path`, no stdin, and the
/// log filter from `FLEET_NODE_LOG`. Backtraces are off unless `FLEET_NODE_BACKTRACE` is set:
/// a test's `RUST_BACKTRACE=1` would otherwise fill the log tail printed on failure with an
/// error's backtrace and push the error itself out of it.
fn spawn_logged(command: &mut Command, log_path: &Path) -> Child {
    let log = File::create(log_path).expect("create process log");
    command
        .env(
            "RUST_BACKTRACE",
            std::env::var("FLEET_NODE_BACKTRACE").unwrap_or_else(|_| "0".into()),
        )
        .env(
            "RUST_LOG",
            std::env::var("FLEET_NODE_LOG")
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn,h2=warn,tower=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .expect("spawn fleet-node")
}

/// Prints the last [`LOG_LINES_ON_FAILURE`] lines of a process log, for a failing test.
fn print_log_tail(title: &str, log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_LINES_ON_FAILURE)..];
    eprintln!("---- {title} log (last {} lines) ----", tail.len());
    for line in tail {
        eprintln!("{line}");
    }
}

/// The resident memory of process `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn resident_bytes(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| std::io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// The body of `GET PATH` over plain HTTP/1.0 from `address` (a node's metrics listener), with
/// the status line and headers in front. Panics when the listener cannot be reached.
pub fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to metrics");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

/// The value of the unlabelled gauge `name` in a Prometheus text exposition, if present.
pub fn gauge_value(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// A free TCP port on 127.0.0.1 (free when asked; the OS may hand it out again later).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// One coordinator process.
pub struct NodeProcess {
    pub id: u64,
    pub address: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Extra environment for the next start, e.g. FAILPOINTS.
    env: Vec<(String, String)>,
    binary: PathBuf,
    /// Runs the binary through this command, e.g. `ip netns exec NS` (it must exec the
    /// binary, so that the pid is the node's).
    wrapper: Vec<String>,
    /// How many times this node was started (log files are numbered by it).
    starts: u32,
}

/// Where one node of a [`ProcessCluster::start_with`] runs.
pub struct NodeSpec {
    pub address: String,
    pub data_dir: PathBuf,
    /// A command the binary is run through, e.g. `["ip", "netns", "exec", "ns1"]`; it must
    /// exec the binary.
    pub wrapper: Vec<String>,
}

impl NodeProcess {
    fn new(
        id: u64,
        spec: NodeSpec,
        binary: PathBuf,
        extra_args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> NodeProcess {
        NodeProcess {
            id,
            address: spec.address,
            data_dir: spec.data_dir,
            log_path: PathBuf::new(),
            child: None,
            extra_args,
            env,
            binary,
            wrapper: spec.wrapper,
            starts: 0,
        }
    }

    fn spawn(&mut self, start_args: &[String]) {
        self.starts += 1;
        self.log_path = self.data_dir.with_extension(format!("log.{}", self.starts));
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        command
            .arg("coordinator")
            .args(["--id", &self.id.to_string()])
            .args(["--listen", &self.address])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(self.tls_args())
            .args(start_args)
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.child = Some(spawn_logged(&mut command, &self.log_path));
    }

    /// `--tls-cert`, `--tls-key`, `--tls-ca`: a certificate for this node id and address from
    /// the test CA, next to the data dir (so that wiping the data dir keeps it).
    fn tls_args(&self) -> Vec<String> {
        let files = pki().issue(
            &Principal::Coordinator(self.id),
            &[host_of(&self.address)],
            &format!("coordinator-{}", self.id),
        );
        vec![
            "--tls-cert".into(),
            files.cert.display().to_string(),
            "--tls-key".into(),
            files.key.display().to_string(),
            "--tls-ca".into(),
            files.ca.display().to_string(),
        ]
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. SIGSTOP, SIGCONT) to the running process.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts the node again from its data dir (neither --bootstrap nor --join).
    pub fn restart(&mut self) {
        self.restart_with_env(&[]);
    }

    /// Starts the node again with extra environment (e.g. `FAILPOINTS`) for this start only.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "node {} is still running", self.id);
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.spawn(&[]);
    }

    /// Starts the node again from its data dir with another `fleet-node` binary (e.g. a
    /// product build, without failpoints) and extra environment; later restarts use it too.
    pub fn restart_with_binary(&mut self, binary: &Path, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "node {} is still running", self.id);
        self.binary = binary.to_path_buf();
        self.restart_with_env(env);
    }

    /// Starts the node again with these start flags (e.g. `["--join", ADDRESS]`) and extra
    /// environment, for this start only.
    pub fn restart_with_args(&mut self, args: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "node {} is still running", self.id);
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.spawn(&args);
    }

    /// Removes everything in the node's data dir, as a lost disk would (the directory itself
    /// stays: it may be a mount point). The node must be stopped.
    pub fn wipe_data_dir(&mut self) {
        assert!(self.child.is_none(), "node {} is still running", self.id);
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("read the data dir").path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("remove from the data dir");
            } else {
                std::fs::remove_file(&path).expect("remove from the data dir");
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; its status, or None if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if the process has exited (reaped), without waiting.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// The text the node has logged since its last start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A coordinator cluster of real processes in a temporary directory.
pub struct ProcessCluster {
    pub nodes: Vec<NodeProcess>,
    dir: tempfile::TempDir,
}

/// Lines of each node's log printed when a test fails.
const LOG_LINES_ON_FAILURE: usize = 60;

impl Drop for ProcessCluster {
    /// Stops every node; when the test is failing, prints the end of each node's log first.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                print_log_tail(&format!("node {}", node.id), &node.log());
            }
        }
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

impl ProcessCluster {
    /// Starts `size` nodes: node 1 bootstraps, the others join it. Returns once every node is
    /// a voter and a leader is known. `extra_args` go to every node.
    pub async fn start(size: usize, extra_args: &[&str]) -> Self {
        Self::start_in(&std::env::temp_dir(), size, extra_args).await
    }

    /// Like [`ProcessCluster::start`], with the data dirs in a new directory under `base`
    /// (e.g. a tmpfs, for a test that must not depend on the machine's disk).
    pub async fn start_in(base: &Path, size: usize, extra_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fleet-cluster-")
            .tempdir_in(base)
            .expect("temp dir");
        let specs = (1..=size as u64)
            .map(|id| NodeSpec {
                address: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("node-{id}")),
                wrapper: Vec::new(),
            })
            .collect();
        Self::start_with(dir, specs, extra_args).await
    }

    /// Starts one node per spec (ids from 1, in order), owning `dir` (removed when the cluster
    /// is dropped): node 1 bootstraps, the others join it. Returns once every node is a voter
    /// and a leader is known.
    pub async fn start_with(
        dir: tempfile::TempDir,
        specs: Vec<NodeSpec>,
        extra_args: &[&str],
    ) -> Self {
        let binary = fleet_node_binary();
        let size = specs.len();
        let mut cluster = ProcessCluster {
            nodes: Vec::new(),
            dir,
        };
        for (i, spec) in specs.into_iter().enumerate() {
            let id = i as u64 + 1;
            let mut node = NodeProcess::new(
                id,
                spec,
                binary.clone(),
                extra_args.iter().map(|s| s.to_string()).collect(),
                Vec::new(),
            );
            if i == 0 {
                node.spawn(&["--bootstrap".to_string()]);
            } else {
                let first = cluster.nodes[0].address.clone();
                node.spawn(&["--join".to_string(), first]);
            }
            cluster.nodes.push(node);
            if i == 0 {
                cluster.wait_for_leader(Duration::from_secs(30)).await;
            }
        }
        cluster.wait_for_voters(size, Duration::from_secs(60)).await;
        cluster
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a new node `id` on a free port with a new data dir, with `start_args` (e.g.
    /// `["--join", ADDRESS]`), the cluster's extra arguments and `env`. Does not wait.
    pub fn spawn_node(
        &mut self,
        id: u64,
        start_args: &[&str],
        env: &[(&str, &str)],
    ) -> &mut NodeProcess {
        let spec = NodeSpec {
            address: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("node-{id}")),
            wrapper: Vec::new(),
        };
        self.spawn_node_with(id, spec, start_args, env)
    }

    /// [`ProcessCluster::spawn_node`] where `spec` says.
    pub fn spawn_node_with(
        &mut self,
        id: u64,
        spec: NodeSpec,
        start_args: &[&str],
        env: &[(&str, &str)],
    ) -> &mut NodeProcess {
        assert!(self.nodes.iter().all(|n| n.id != id), "node {id} exists");
        let template = &self.nodes[0];
        let mut node = NodeProcess::new(
            id,
            spec,
            template.binary.clone(),
            template.extra_args.clone(),
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let args: Vec<String> = start_args.iter().map(|a| a.to_string()).collect();
        node.spawn(&args);
        self.nodes.push(node);
        self.nodes.last_mut().expect("just pushed")
    }

    /// All node addresses, comma-separated, as `--endpoints` takes them.
    pub fn endpoints(&self) -> String {
        let all: Vec<&str> = self.nodes.iter().map(|n| n.address.as_str()).collect();
        all.join(",")
    }

    pub fn node(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("no node with that id")
    }

    pub fn address(&self, id: u64) -> String {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("no node with that id")
            .address
            .clone()
    }

    /// The ids of all nodes but `id`, in id order.
    pub fn others(&self, id: u64) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.id)
            .filter(|n| *n != id)
            .collect()
    }

    /// The status one node reports, or None when it does not answer.
    pub async fn status(&self, id: u64) -> Option<GetCoordinatorStatusResponse> {
        let mut client = connect(&self.address(id)).await?;
        let mut request = tonic::Request::new(GetCoordinatorStatusRequest {});
        request.set_timeout(Duration::from_secs(1));
        client
            .get_coordinator_status(request)
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until a running node reports a leader that is itself running; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                if let Some(s) = self.status(node.id).await
                    && s.role == "Leader"
                    && s.leader_id == Some(node.id)
                {
                    return node.id;
                }
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the leader reports exactly `count` voters.
    pub async fn wait_for_voters(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self.wait_for_leader(timeout).await;
            let members = self.status(leader).await.map(|s| s.members);
            if let Some(members) = &members
                && members.iter().filter(|m| m.voter).count() == count
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{count} voters not reached within {timeout:?}; leader {leader} knows {members:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_for_applied(&self, id: u64, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status(id).await
                && s.applied_index >= index
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not apply index {index} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A FleetService client for one address, as the admin, or None when it cannot connect.
pub async fn connect(address: &str) -> Option<FleetServiceClient<Channel>> {
    channel(address).await.ok().map(FleetServiceClient::new)
}

/// A channel to one address over mutual TLS as the admin.
pub async fn channel(address: &str) -> Result<Channel, tonic::transport::Error> {
    channel_as(address, &pki().transport()).await
}

/// A channel to one address over `transport` (e.g. [`TestPki::transport_as`] another
/// identity).
pub async fn channel_as(
    address: &str,
    transport: &Transport,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Transport::endpoint(address)?.connect_timeout(Duration::from_millis(500));
    transport.connect(endpoint).await
}

/// Configures a failpoint of the node at `address` through `RaftService.SetFailpoint` (the
/// node must run with `--allow-failpoint-rpc`), e.g. `("log-flush", "sleep(50)")` or `"off"`.
pub async fn set_failpoint(address: &str, name: &str, actions: &str) -> Result<(), tonic::Status> {
    let channel = channel(address)
        .await
        .map_err(|e| fleet_api::status::with_hint(tonic::Code::Unavailable, e.to_string(), ""))?;
    fleet_api::proto::raft_service_client::RaftServiceClient::new(channel)
        .set_failpoint(fleet_api::proto::SetFailpointRequest {
            name: name.into(),
            actions: actions.into(),
        })
        .await
        .map(|_| ())
}

/// One `fleet-node agent` process on a files target, stopped by pid when dropped.
pub struct AgentProcess {
    pub cluster: String,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    endpoints: String,
    resync: String,
    child: Option<Child>,
    starts: u32,
    /// Enrolls itself: `--ca` only, and this join token on the next start (then none).
    enrolls: bool,
    join_token: Option<String>,
}

impl AgentProcess {
    /// Starts the agent of `cluster` with its root and state under `dir`.
    pub fn start(dir: &Path, cluster: &str, endpoints: &str, resync: &str) -> Self {
        Self::spawned(dir, cluster, endpoints, resync, false, None)
    }

    fn spawned(
        dir: &Path,
        cluster: &str,
        endpoints: &str,
        resync: &str,
        enrolls: bool,
        join_token: Option<String>,
    ) -> Self {
        let mut agent = AgentProcess {
            cluster: cluster.to_string(),
            root: dir.join(format!("{cluster}-root")),
            state_dir: dir.join(format!("{cluster}-state")),
            log_path: PathBuf::new(),
            endpoints: endpoints.to_string(),
            resync: resync.to_string(),
            child: None,
            starts: 0,
            enrolls,
            join_token,
        };
        agent.spawn();
        agent
    }

    /// Starts the agent of `cluster` with `--ca` and `--join-token TOKEN` only: it enrolls
    /// itself and keeps its certificate in its state directory. Later starts
    /// ([`AgentProcess::restart`]) pass no token.
    pub fn start_enrolling(
        dir: &Path,
        cluster: &str,
        endpoints: &str,
        resync: &str,
        join_token: &str,
    ) -> Self {
        Self::spawned(
            dir,
            cluster,
            endpoints,
            resync,
            true,
            Some(join_token.to_string()),
        )
    }

    /// Whether the process is still running (it exits on a refused join token).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    fn spawn(&mut self) {
        self.starts += 1;
        self.log_path = self
            .state_dir
            .with_extension(format!("log.{}", self.starts));
        let mut command = Command::new(fleet_node_binary());
        command
            .arg("agent")
            .args(["--cluster", &self.cluster])
            .args(["--endpoints", &self.endpoints])
            .arg("--target")
            .arg(format!("files:{}", self.root.display()))
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["--resync-interval", &self.resync]);
        if self.enrolls {
            command.arg("--ca").arg(pki().ca_path());
            if let Some(token) = self.join_token.take() {
                command.args(["--join-token", &token]);
            }
            self.child = Some(spawn_logged(&mut command, &self.log_path));
            return;
        }
        let files = pki().issue(
            &Principal::Cluster(self.cluster.clone()),
            &[],
            &format!("cluster-{}", self.cluster),
        );
        command
            .arg("--ca")
            .arg(&files.ca)
            .arg("--cert")
            .arg(&files.cert)
            .arg("--key")
            .arg(&files.key);
        self.child = Some(spawn_logged(&mut command, &self.log_path));
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the agent again with the same state directory.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "agent {} is still running",
            self.cluster
        );
        self.spawn();
    }

    /// Starts an enrolling agent again, with a new join token this time.
    pub fn restart_with_join_token(&mut self, join_token: &str) {
        assert!(
            self.enrolls,
            "agent {} was given its certificate",
            self.cluster
        );
        self.join_token = Some(join_token.to_string());
        self.restart();
    }

    /// The file `path` of `workload` under the agent's root, if it exists.
    pub fn file(&self, workload: &str, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(workload).join(path)).ok()
    }

    /// The text the agent has logged since its last start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log_tail(&format!("agent {}", self.cluster), &self.log());
        }
        self.kill();
    }
}
