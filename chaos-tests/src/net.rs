//! Network namespaces for coordinators (root only): each node in its own namespace, joined to
//! the host by a veth pair on a bridge, so a partition is a real link going down and a split is
//! a node's link moved to another bridge.

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// One run's namespaces, bridges and links; all removed when dropped.
pub struct Network {
    /// Short prefix unique to this process, for every name this run creates.
    prefix: String,
    /// The subnet's first three octets, e.g. "10.123.7".
    subnet: String,
    nodes: usize,
    /// Blackhole routes in place: (the node whose namespace has it, the node it cuts off).
    cuts: Mutex<Vec<(u64, u64)>>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this process may create namespaces and mount FUSE filesystems.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Network {
    /// Creates a namespace per node (`1..=nodes`), a bridge `main` with the host's address
    /// `.1`, and node `i` at `.1{i}` (e.g. 10.x.y.11).
    pub fn create(nodes: usize) -> anyhow::Result<Network> {
        // Unique per process and per network within it (tests run side by side).
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let net = Network {
            prefix: format!("fc{}x{}", pid % 100_000, n % 100),
            subnet: format!("10.{}.{}", 100 + (pid + n * 7) % 150, (pid / 150 + n) % 250),
            nodes,
            cuts: Mutex::default(),
        };
        net.bridge("a")?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", net.subnet),
            "dev",
            &net.bridge_name("a"),
        ])?;
        net.bridge("b")?;
        for i in 1..=nodes {
            let ns = net.namespace(i as u64);
            let host = net.host_link(i as u64);
            let peer = format!("{}p{i}", net.prefix);
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &net.bridge_name("a")])?;
            ip(&["link", "set", &host, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            inside(&["link", "set", "lo", "up"])?;
            inside(&[
                "addr",
                "add",
                &format!("{}/24", net.address_of(i as u64)),
                "dev",
                &peer,
            ])?;
            inside(&["link", "set", &peer, "up"])?;
        }
        Ok(net)
    }

    fn bridge_name(&self, which: &str) -> String {
        format!("{}b{which}", self.prefix)
    }

    fn bridge(&self, which: &str) -> anyhow::Result<()> {
        let name = self.bridge_name(which);
        ip(&["link", "add", &name, "type", "bridge"])?;
        ip(&["link", "set", &name, "up"])
    }

    fn host_link(&self, node: u64) -> String {
        format!("{}h{node}", self.prefix)
    }

    /// The namespace node `node` runs in.
    pub fn namespace(&self, node: u64) -> String {
        format!("{}n{node}", self.prefix)
    }

    /// Node `node`'s IP address.
    pub fn address_of(&self, node: u64) -> String {
        format!("{}.{}", self.subnet, 10 + node)
    }

    /// Takes node `node`'s link down: it reaches no one and no one reaches it.
    pub fn isolate(&self, node: u64) -> anyhow::Result<()> {
        ip(&["link", "set", &self.host_link(node), "down"])
    }

    /// Moves the nodes of `minority` to a bridge of their own: they reach each other but
    /// neither the others nor the host (clients).
    pub fn split(&self, minority: &[u64]) -> anyhow::Result<()> {
        for node in minority {
            ip(&[
                "link",
                "set",
                &self.host_link(*node),
                "master",
                &self.bridge_name("b"),
            ])?;
        }
        Ok(())
    }

    /// Adds or deletes (`action`) the route in node `from`'s namespace that drops every packet
    /// to node `to`.
    fn blackhole(&self, action: &str, from: u64, to: u64) -> anyhow::Result<()> {
        ip(&[
            "netns",
            "exec",
            &self.namespace(from),
            "ip",
            "route",
            action,
            "blackhole",
            &format!("{}/32", self.address_of(to)),
        ])
    }

    /// Cuts the nodes of `group` off from every other node, both ways, with blackhole routes
    /// in their namespaces; unlike [`Network::isolate`], the host (the clients) still reaches
    /// every node, so a leader cut off this way keeps answering clients while the others
    /// elect a new one.
    pub fn cut(&self, group: &[u64]) -> anyhow::Result<()> {
        let mut cuts = self.cuts.lock().expect("cuts lock");
        for a in group {
            for b in (1..=self.nodes as u64).filter(|n| !group.contains(n)) {
                for (from, to) in [(*a, b), (b, *a)] {
                    self.blackhole("add", from, to)?;
                    cuts.push((from, to));
                }
            }
        }
        Ok(())
    }

    /// Every link up and on the main bridge, and no cuts.
    pub fn heal(&self) -> anyhow::Result<()> {
        for (from, to) in std::mem::take(&mut *self.cuts.lock().expect("cuts lock")) {
            self.blackhole("del", from, to)?;
        }
        for node in 1..=self.nodes as u64 {
            ip(&[
                "link",
                "set",
                &self.host_link(node),
                "master",
                &self.bridge_name("a"),
            ])?;
            ip(&["link", "set", &self.host_link(node), "up"])?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for i in 1..=self.nodes as u64 {
            let _ = ip(&["link", "del", &self.host_link(i)]);
            let _ = ip(&["netns", "del", &self.namespace(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge_name("a")]);
        let _ = ip(&["link", "del", &self.bridge_name("b")]);
    }
}
