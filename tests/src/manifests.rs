//! Istio manifests for the tests, generated as YAML strings: one Gateway (TCP 31400, UDP 5353),
//! one STATIC ServiceEntry with the topology's backends, a DestinationRule with a subset per
//! version label, and a VirtualService routing both ports.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use crate::topology::{Topology, BACKEND_TCP_PORT, BACKEND_UDP_PORT};

/// The head of Gateway `default/gw` (selector istio=ingressgateway), up to `servers:`.
pub const GATEWAY_HEAD: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n";

/// ServiceEntry `NAMESPACE/NAME` for `host` (resolution STATIC) with one port (a YAML flow
/// mapping, `{number: 80, name: http, protocol: HTTP}`) and these endpoints (flow mappings,
/// `{address: 198.18.1.2}`); ends with a newline, without `---`.
pub fn service_entry(
    name: &str,
    namespace: &str,
    host: &str,
    port: &str,
    endpoints: &[String],
) -> String {
    let eps: String = endpoints.iter().map(|e| format!("  - {e}\n")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{port}]\n  endpoints:\n{eps}"
    )
}

pub const TCP_PORT: u16 = 31400;
pub const UDP_PORT: u16 = 5353;
pub const HOST: &str = "echo.example.com";

/// File names, so tests can name them in assertions about `gateway check` output.
pub const GATEWAY_FILE: &str = "gateway.yaml";
pub const SERVICE_ENTRY_FILE: &str = "service-entry.yaml";
pub const DESTINATION_RULE_FILE: &str = "destination-rule.yaml";
pub const VIRTUAL_SERVICE_FILE: &str = "virtual-service.yaml";

#[derive(Clone, Debug)]
pub struct Route {
    /// DestinationRule subset, or the whole host.
    pub subset: Option<String>,
    /// `i64` so a test can write an invalid (negative) weight.
    pub weight: i64,
}

#[derive(Clone, Debug)]
pub struct L4Config {
    /// Value of the Gateway's `gateway.dataplane/nat-mode` annotation; none = the agent default (snat).
    pub nat_mode: Option<String>,
    /// Gateway TCP server port (a test may set an invalid one).
    pub gateway_tcp_port: i64,
    /// ServiceEntry endpoints: address and `version` label.
    pub endpoints: Vec<(IpAddr, String)>,
    /// DestinationRule subsets: name == version label.
    pub subsets: Vec<String>,
    /// Routes of the TCP port (weights as written).
    pub tcp_routes: Vec<Route>,
}

impl L4Config {
    /// Every backend as an endpoint, backend `bN` labelled `version: vN`, a subset per version,
    /// and the TCP port routed to the whole host.
    pub fn for_topology(topo: &Topology) -> Self {
        let endpoints: Vec<(IpAddr, String)> = topo
            .backends
            .iter()
            .map(|b| (b.addr.into(), b.name.replacen('b', "v", 1)))
            .collect();
        L4Config {
            nat_mode: None,
            gateway_tcp_port: TCP_PORT.into(),
            subsets: endpoints.iter().map(|(_, v)| v.clone()).collect(),
            endpoints,
            tcp_routes: vec![Route {
                subset: None,
                weight: 100,
            }],
        }
    }

    /// Routes the TCP port to subsets with weights, e.g. `[("v1", 80), ("v2", 20)]`.
    pub fn weighted(mut self, routes: &[(&str, i64)]) -> Self {
        self.tcp_routes = routes
            .iter()
            .map(|(s, w)| Route {
                subset: Some(s.to_string()),
                weight: *w,
            })
            .collect();
        self
    }

    pub fn without_endpoint(mut self, addr: Ipv4Addr) -> Self {
        self.endpoints.retain(|(a, _)| *a != IpAddr::from(addr));
        self
    }

    /// Every backend's IPv6 address as an endpoint too (same labels): a dual-stack service,
    /// whose IPv6 VIP reaches the IPv6 endpoints and IPv4 VIP the IPv4 ones.
    pub fn dual_stack(mut self, topo: &Topology) -> Self {
        for b in &topo.backends {
            self.endpoints
                .push((b.addr6.into(), b.name.replacen('b', "v", 1)));
        }
        self
    }

    pub fn nat(mut self, mode: &str) -> Self {
        self.nat_mode = Some(mode.to_string());
        self
    }

    pub fn gateway(&self) -> String {
        let mut annotations = String::new();
        if let Some(m) = &self.nat_mode {
            annotations = format!("  annotations:\n    gateway.dataplane/nat-mode: {m}\n");
        }
        format!(
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: default
{annotations}spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: {}
      name: tcp-echo
      protocol: TCP
    hosts: [\"*\"]
  - port:
      number: {UDP_PORT}
      name: udp-echo
      protocol: UDP
    hosts: [\"*\"]
",
            self.gateway_tcp_port
        )
    }

    pub fn service_entry(&self) -> String {
        let mut eps = String::new();
        for (addr, version) in &self.endpoints {
            let _ = write!(
                eps,
                "  - address: \"{addr}\"\n    labels:\n      version: {version}\n"
            );
        }
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: echo
  namespace: default
spec:
  hosts: [{HOST}]
  resolution: STATIC
  ports:
  - number: {BACKEND_TCP_PORT}
    name: tcp
    protocol: TCP
  - number: {BACKEND_UDP_PORT}
    name: udp
    protocol: UDP
  endpoints:
{eps}"
        )
    }

    pub fn destination_rule(&self) -> String {
        let mut subsets = String::new();
        for s in &self.subsets {
            let _ = write!(subsets, "  - name: {s}\n    labels:\n      version: {s}\n");
        }
        format!(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
  namespace: default
spec:
  host: {HOST}
  subsets:
{subsets}"
        )
    }

    pub fn virtual_service(&self) -> String {
        let mut routes = String::new();
        for r in &self.tcp_routes {
            let subset = r
                .subset
                .as_ref()
                .map(|s| format!(", subset: {s}"))
                .unwrap_or_default();
            let _ = write!(
                routes,
                "    - destination: {{host: {HOST}{subset}, port: {{number: {BACKEND_TCP_PORT}}}}}\n      weight: {}\n",
                r.weight
            );
        }
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo
  namespace: default
spec:
  hosts: [\"*\"]
  gateways: [gw]
  tcp:
  - match:
    - port: {TCP_PORT}
    route:
{routes}  - match:
    - port: {UDP_PORT}
    route:
    - destination: {{host: {HOST}, port: {{number: {BACKEND_UDP_PORT}}}}}
"
        )
    }

    /// All four files, as (name, YAML) for [`crate::Agent::write_config`].
    pub fn files(&self) -> Vec<(&'static str, String)> {
        vec![
            (GATEWAY_FILE, self.gateway()),
            (SERVICE_ENTRY_FILE, self.service_entry()),
            (DESTINATION_RULE_FILE, self.destination_rule()),
            (VIRTUAL_SERVICE_FILE, self.virtual_service()),
        ]
    }
}

/// The embedded demo's manifests (examples/demo), as (file name, content), sorted by name.
pub fn demo_files() -> anyhow::Result<Vec<(String, String)>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
    let mut files = Vec::new();
    for e in std::fs::read_dir(&root)? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        files.push((name, std::fs::read_to_string(&p)?));
    }
    files.sort();
    Ok(files)
}

/// The demo's `web.yaml` among `files` (from [`demo_files`]), as (name, text); checks that it
/// still has the `default` route that reload tests rewrite.
pub fn demo_web(files: &[(String, String)]) -> anyhow::Result<(&str, &str)> {
    let (name, web) = files
        .iter()
        .find(|(n, _)| n == "web.yaml")
        .ok_or_else(|| anyhow::anyhow!("demo web.yaml"))?;
    anyhow::ensure!(
        web.contains("  - name: default\n    route:\n"),
        "demo default route"
    );
    Ok((name, web))
}
