//! The test network: client <-> node <-> backends, each in its own namespace.
//!
//! ```text
//!  client 198.18.0.2 --- 198.18.0.1 (VIP) node 198.18.1x.1 --- 198.18.1x.2 backend x (x = 1..n)
//!  with Opts::ipv6, also:
//!  client 2001:db8::2 --- 2001:db8::1 (VIP) node 2001:db8:1x::1 --- 2001:db8:1x::2 backend x
//! ```
//!
//! The node has IPv4 and IPv6 forwarding off, so only the XDP program can carry a packet from
//! one of its interfaces to another: a connection that works proves the XDP path.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::Context as _;

use crate::{client::Client, netns::Netns, proc::ChildGuard, test_backend_bin};

/// The client's address, and the node's client-facing address (the gateway's VIP).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The same with [`Opts::ipv6`].
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// Ports every test backend serves.
pub const BACKEND_TCP_PORT: u16 = 9000;
pub const BACKEND_UDP_PORT: u16 = 9001;
/// Port of each backend's HTTP server (with [`Opts::http_backends`]).
pub const BACKEND_HTTP_PORT: u16 = 8000;

#[derive(Clone, Debug)]
pub struct Opts {
    /// Give backends a default route via the node (needed for preserve-source, where replies go
    /// to the client's address). Without it a backend reaches only its own /24, which proves
    /// SNAT: replies can only go to the node's address on that subnet.
    pub backend_routes: bool,
    /// Start `test-backend` in each backend namespace.
    pub start_backends: bool,
    /// Install permanent neighbour entries on the node for the client and every backend. Off by
    /// default: resolving backends (the XDP FIB lookup needs their neighbour entries) is the
    /// agent's job, and the tests should see it done.
    pub static_neighbours: bool,
    /// Also serve HTTP/1.1 on [`BACKEND_HTTP_PORT`] in each backend (see `test-backend --http`).
    pub http_backends: bool,
    /// Dual stack: every link gets its IPv6 addresses (2001:db8::/32) too, with the same
    /// routes as IPv4.
    pub ipv6: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            backend_routes: true,
            start_backends: true,
            static_neighbours: false,
            http_backends: false,
            ipv6: false,
        }
    }
}

impl Opts {
    /// The defaults, and HTTP servers in the backends too.
    pub fn http_backends() -> Self {
        Opts {
            http_backends: true,
            ..Opts::default()
        }
    }

    /// The defaults, but no `test-backend` started (the test starts its own servers).
    pub fn no_backends() -> Self {
        Opts {
            start_backends: false,
            ..Opts::default()
        }
    }

    /// The defaults, but backends reach only their own /24 (replies prove SNAT).
    pub fn no_backend_routes() -> Self {
        Opts {
            backend_routes: false,
            ..Opts::default()
        }
    }

    /// These options with IPv6 as well (dual stack).
    pub fn dual_stack(self) -> Self {
        Opts { ipv6: true, ..self }
    }
}

pub struct Backend {
    /// `b1`, `b2`, ...: also what the backend says in its greeting.
    pub name: String,
    pub addr: Ipv4Addr,
    /// The node's address on this backend's link (the SNAT source).
    pub node_addr: Ipv4Addr,
    /// Both, for IPv6 (configured with [`Opts::ipv6`]).
    pub addr6: Ipv6Addr,
    pub node_addr6: Ipv6Addr,
    /// The node's interface towards this backend.
    pub node_iface: String,
    // Declared before `ns`: the server dies before its namespace is deleted.
    server: Option<ChildGuard>,
    pub ns: Netns,
}

impl Backend {
    /// Stops this backend's `test-backend` (connections to its ports are then refused).
    pub fn stop_server(&mut self) {
        self.server = None;
    }
}

pub struct Topology {
    // Field order is drop order: backends (servers, then namespaces), client, node.
    pub backends: Vec<Backend>,
    pub client: Netns,
    pub node: Netns,
    /// The node's interface towards the client.
    pub client_iface: String,
    /// Unique prefix of every name this topology created.
    pub prefix: String,
}

impl Topology {
    /// Builds the namespaces and links; `tag` (2 chars used) names them after the test.
    pub fn new(tag: &str, n_backends: usize, opts: Opts) -> anyhow::Result<Self> {
        crate::require_root()?;
        anyhow::ensure!((1..=9).contains(&n_backends), "1..=9 backends supported");
        let prefix = crate::netns::unique_prefix(tag);
        // Namespaces first, each owned at once, so an error below still deletes what exists.
        let client = Netns::new(&format!("{prefix}c"))?;
        let node = Netns::new(&format!("{prefix}n"))?;
        let mut topo = Topology {
            backends: Vec::new(),
            client,
            node,
            client_iface: format!("{prefix}c"),
            prefix: prefix.clone(),
        };
        for i in 1..=n_backends {
            let ns = Netns::new(&format!("{prefix}b{i}"))?;
            let net = 10 + i as u8;
            topo.backends.push(Backend {
                name: format!("b{i}"),
                addr: Ipv4Addr::new(198, 18, net, 2),
                node_addr: Ipv4Addr::new(198, 18, net, 1),
                addr6: Ipv6Addr::new(0x2001, 0xdb8, 0x10 + i as u16, 0, 0, 0, 0, 2),
                node_addr6: Ipv6Addr::new(0x2001, 0xdb8, 0x10 + i as u16, 0, 0, 0, 0, 1),
                node_iface: format!("{prefix}b{i}"),
                server: None,
                ns,
            });
        }
        topo.wire(&opts)
            .with_context(|| format!("building topology {prefix}"))?;
        if opts.start_backends {
            let bin = test_backend_bin()?;
            let bin = bin.to_str().context("non-UTF-8 path")?;
            for b in &mut topo.backends {
                let http = opts.http_backends.then_some(BACKEND_HTTP_PORT);
                b.server = Some(start_backend(
                    &b.ns,
                    bin,
                    &b.name,
                    Some(BACKEND_TCP_PORT),
                    Some(BACKEND_UDP_PORT),
                    http,
                )?);
            }
        }
        Ok(topo)
    }

    fn wire(&self, opts: &Opts) -> anyhow::Result<()> {
        let node = &self.node;
        // Links are created inside the node namespace with the peer placed straight into the
        // other one, so nothing ever appears in the root namespace.
        link(node, &self.client_iface, &self.client, VIP, CLIENT_ADDR)?;
        self.client
            .ip(&["route", "add", "default", "via", &VIP.to_string()])?;
        for b in &self.backends {
            link(node, &b.node_iface, &b.ns, b.node_addr, b.addr)?;
            if opts.backend_routes {
                b.ns.ip(&["route", "add", "default", "via", &b.node_addr.to_string()])?;
            }
        }
        if opts.ipv6 {
            link6(node, &self.client_iface, &self.client, VIP6, CLIENT_ADDR6)?;
            self.client
                .ip(&["-6", "route", "add", "default", "via", &VIP6.to_string()])?;
            for b in &self.backends {
                link6(node, &b.node_iface, &b.ns, b.node_addr6, b.addr6)?;
                if opts.backend_routes {
                    b.ns.ip(&[
                        "-6",
                        "route",
                        "add",
                        "default",
                        "via",
                        &b.node_addr6.to_string(),
                    ])?;
                }
            }
        }
        for ns in self.all_ns() {
            ns.ip(&["link", "set", "lo", "up"])?;
        }
        // Only XDP may move packets between the node's interfaces.
        node.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])?;
        node.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=0"])?;
        if opts.static_neighbours {
            let mac = mac_of(&self.client, "eth0")?;
            neigh(node, CLIENT_ADDR, &mac, &self.client_iface)?;
            for b in &self.backends {
                let mac = mac_of(&b.ns, "eth0")?;
                neigh(node, b.addr, &mac, &b.node_iface)?;
            }
        }
        Ok(())
    }

    fn all_ns(&self) -> Vec<&Netns> {
        let mut v = vec![&self.client, &self.node];
        v.extend(self.backends.iter().map(|b| &b.ns));
        v
    }

    /// The node's interfaces, client-facing first: what the agent attaches XDP to.
    pub fn node_ifaces(&self) -> Vec<String> {
        let mut v = vec![self.client_iface.clone()];
        v.extend(self.backends.iter().map(|b| b.node_iface.clone()));
        v
    }

    /// Sockets in the client namespace.
    pub fn client_api(&self) -> Client {
        Client::new(self.client.path())
    }

    /// HTTP clients (curl) in the client namespace.
    pub fn http_client(&self) -> crate::http::HttpClient {
        crate::http::HttpClient::new(self.client.name())
    }

    pub fn backend(&self, name: &str) -> &Backend {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no backend {name}"))
    }
}

/// A veth pair: `local` in `a` with `a_addr`/24, `eth0` in `b` with `b_addr`/24, both up.
fn link(
    a: &Netns,
    local: &str,
    b: &Netns,
    a_addr: Ipv4Addr,
    b_addr: Ipv4Addr,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        local.len() <= crate::netns::IFNAME_MAX,
        "interface name {local:?} too long"
    );
    a.ip(&[
        "link",
        "add",
        local,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        b.name(),
    ])?;
    a.ip(&["addr", "add", &format!("{a_addr}/24"), "dev", local])?;
    b.ip(&["addr", "add", &format!("{b_addr}/24"), "dev", "eth0"])?;
    a.ip(&["link", "set", local, "up"])?;
    b.ip(&["link", "set", "eth0", "up"])?;
    Ok(())
}

/// IPv6 addresses (/64, no duplicate address detection, so usable at once) on the link that
/// [`link`] made: `local` in `a`, `eth0` in `b`.
fn link6(
    a: &Netns,
    local: &str,
    b: &Netns,
    a_addr: Ipv6Addr,
    b_addr: Ipv6Addr,
) -> anyhow::Result<()> {
    a.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{a_addr}/64"),
        "dev",
        local,
        "nodad",
    ])?;
    b.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{b_addr}/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    Ok(())
}

fn mac_of(ns: &Netns, iface: &str) -> anyhow::Result<String> {
    let out = ns.ip(&["-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no MAC in {out}"))
}

fn neigh(ns: &Netns, addr: Ipv4Addr, mac: &str, dev: &str) -> anyhow::Result<()> {
    ns.ip(&[
        "neigh",
        "replace",
        &addr.to_string(),
        "lladdr",
        mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ])?;
    Ok(())
}

/// Starts `test-backend` in `ns` and waits until its sockets are bound.
pub fn start_server(
    ns: &Netns,
    bin: &str,
    name: &str,
    tcp: u16,
    udp: Option<u16>,
) -> anyhow::Result<ChildGuard> {
    start_backend(ns, bin, name, Some(tcp), udp, None)
}

/// [`start_server`] with an optional HTTP port as well.
pub fn start_backend(
    ns: &Netns,
    bin: &str,
    name: &str,
    tcp: Option<u16>,
    udp: Option<u16>,
    http: Option<u16>,
) -> anyhow::Result<ChildGuard> {
    let tcp = tcp.map(|u| u.to_string());
    let udp = udp.map(|u| u.to_string());
    let http = http.map(|u| u.to_string());
    let mut args = vec!["--name", name];
    if let Some(t) = &tcp {
        args.extend(["--tcp", t.as_str()]);
    }
    if let Some(u) = &udp {
        args.extend(["--udp", u.as_str()]);
    }
    if let Some(h) = &http {
        args.extend(["--http", h.as_str()]);
    }
    let mut child = ns.spawn(bin, &args, true)?;
    child.wait_for_line("ready", Duration::from_secs(10))?;
    Ok(child)
}
