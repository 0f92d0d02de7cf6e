//! Validated manifests -> [`Plan`], with Istio's gateway semantics:
//!
//! * Gateways apply when `selector ⊆` the agent's labels; they (and VirtualServices) are taken in
//!   creation order (`creationTimestamp`, then name, then namespace). File order is not
//!   significant.
//! * Servers are keyed by (vip, port, transport). A server with a `bind` serves only that vip (and
//!   shadows wildcard servers there, as the more specific listener does). The first server in
//!   creation order decides the port: HTTP servers merge with HTTP servers and TLS servers with
//!   TLS servers (one agent-served [`LocalPort`]); a TCP-family or UDP server takes the port alone
//!   and any later server on it is dropped (Istio `mergeGateways`).
//! * An L4 server uses the first `tcp` rule of the first bound VirtualService (in creation
//!   order) whose match passes; no rule means the port is not served (Istio: no listener).
//!   Matching evaluates `port` and `gateways` like Istio, plus `destinationSubnets` against the
//!   vip (our extension: Istio's gateway listens on one wildcard address and ignores it; so do
//!   we for the unspecified vip 0.0.0.0).
//!   `sourceLabels` is ignored at a gateway, as in Istio.
//! * Destinations resolve to Kubernetes Services (via EndpointSlices) or STATIC ServiceEntries;
//!   subsets and the load-balancer hash come from the DestinationRule Istio would pick (§3.20).

pub mod http;
mod l4;
mod resolve;
pub mod stream;
pub mod tls;
mod upstream_tls;

use crate::config::model::{
    DestinationRule, Gateway, Kind, Labels, Manifests, Protocol, Resource, Server, Service,
    ServiceEntry, ServicePort, Subset, TrafficPolicy, VirtualService, Warning,
};
use crate::config::names::{
    host_matches, labels_subset, resolve_gateway_name, resolve_short_name, CLUSTER_DOMAIN,
    ROOT_NAMESPACE,
};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use crate::plan::{LocalPort, NatMode, Plan, Proto};

/// Who the agent is: what it serves on and how it matches Gateway selectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileInput {
    /// Both families: an IPv6 VIP serves the IPv6 endpoints of its routes' destinations, an
    /// IPv4 VIP the IPv4 ones.
    pub vips: Vec<IpAddr>,
    /// The agent's own labels (Gateway `selector`s are matched against them).
    pub labels: BTreeMap<String, String>,
    /// The agent's namespace: `exportTo` visibility and DestinationRule lookup use it.
    pub namespace: String,
    /// For L4 services whose Gateway has no `gateway.dataplane/nat-mode` annotation.
    pub default_nat: NatMode,
    /// Which Istio release's version-dependent behaviour to reproduce (notes §0.2).
    pub compat: IstioVersion,
}

/// An Istio release, for the behaviours that changed between releases (default: current).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IstioVersion {
    pub major: u32,
    pub minor: u32,
}

impl IstioVersion {
    pub const CURRENT: IstioVersion = IstioVersion {
        major: 1,
        minor: 28,
    };

    /// The default retry policy retries upstream 503s (dropped in 1.24).
    pub fn retries_503_by_default(self) -> bool {
        self < IstioVersion {
            major: 1,
            minor: 24,
        }
    }

    /// Mirrored requests get a `-shadow` Host suffix (dropped in 1.28).
    pub fn shadow_host_suffix(self) -> bool {
        self < IstioVersion {
            major: 1,
            minor: 28,
        }
    }
}

impl std::str::FromStr for IstioVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected an Istio release like 1.23");
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let minor = b.split('.').next().unwrap_or(b);
        Ok(IstioVersion {
            major: a.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

impl Default for CompileInput {
    fn default() -> Self {
        CompileInput {
            vips: Vec::new(),
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
            namespace: ROOT_NAMESPACE.to_string(),
            default_nat: NatMode::Snat,
            compat: IstioVersion::CURRENT,
        }
    }
}

/// Compiles manifests that passed `validate` (on others it still terminates, but may skip
/// whatever is malformed). Returns the plan and what deserves a warning (routes to nowhere,
/// dropped servers, ...). Deterministic: same manifests in any order give the same plan.
pub fn compile(m: &Manifests, input: &CompileInput) -> (Plan, Vec<Warning>) {
    let mut c = Compiler::new(m, input);
    let mut plan = c.run();
    plan.shrink_to_fit();
    let mut seen = BTreeSet::new();
    let warnings = c
        .warnings
        .into_iter()
        .filter(|w| seen.insert(w.clone()))
        .collect();
    (plan, warnings)
}

/// Istio's creation order, then the source position so that even invalid duplicates order
/// deterministically.
fn creation_order<S>(a: &Resource<S>, b: &Resource<S>) -> Ordering {
    let ts = |r: &Resource<S>| r.metadata.creation_timestamp.clone().unwrap_or_default();
    ts(a)
        .cmp(&ts(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        .then_with(|| a.metadata.namespace.cmp(&b.metadata.namespace))
        .then_with(|| a.source.cmp(&b.source))
}

fn sorted<S>(list: &[Resource<S>]) -> Vec<&Resource<S>> {
    let mut v: Vec<_> = list.iter().collect();
    v.sort_by(|a, b| creation_order(a, b));
    v
}

/// Visible from `client_ns`? Absent or `*` = everyone; `.` = the owner's namespace; `~` = no one.
pub(super) fn exported_to(export_to: &[String], owner_ns: &str, client_ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == client_ns || (e == "." && owner_ns == client_ns))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Http,
    Tls,
    Tcp,
    Udp,
}

impl Class {
    fn of(protocol: Protocol) -> Class {
        if protocol.is_http() {
            Class::Http
        } else if protocol.is_tls() {
            Class::Tls
        } else if protocol == Protocol::Udp {
            Class::Udp
        } else {
            Class::Tcp
        }
    }

    /// Which socket family the port lives in: a UDP server never conflicts with TCP ones.
    fn proto(self) -> Proto {
        if self == Class::Udp {
            Proto::Udp
        } else {
            Proto::Tcp
        }
    }
}

/// One Gateway server as the compiler sees it.
struct Srv<'a> {
    gw: &'a Gateway,
    index: usize,
    server: &'a Server,
    port: u16,
    class: Class,
    /// None = all vips.
    bind: Option<IpAddr>,
    gw_key: String,
    /// `Gateway istio-system/gw server tcp-echo:31400`.
    origin: String,
}

/// A VirtualService visible to the agent, with names resolved the way Istio does.
pub(super) struct Vs<'a> {
    pub vs: &'a VirtualService,
    pub hosts: Vec<String>,
    pub gateways: Vec<String>,
}

#[derive(Clone, Copy)]
enum SvcKind<'a> {
    Kube(&'a Service),
    Entry(&'a ServiceEntry),
}

/// A registry service: what a destination host names.
struct Svc<'a> {
    kind: SvcKind<'a>,
    namespace: &'a str,
}

#[derive(Clone, Debug)]
pub(super) struct SvcPort {
    pub number: u16,
    name: String,
    /// ServiceEntry `targetPort` (0 = unset). Kubernetes ports map through EndpointSlices.
    target_port: u16,
    /// Upper-cased application protocol (ServiceEntry `protocol`; Kubernetes `appProtocol`, or
    /// Istio's port-name prefix convention `http2-`, `grpc-`).
    pub protocol: String,
}

impl Svc<'_> {
    fn id(&self) -> String {
        match self.kind {
            SvcKind::Kube(s) => s.id(),
            SvcKind::Entry(s) => s.id(),
        }
    }

    fn ports(&self) -> Vec<SvcPort> {
        match self.kind {
            SvcKind::Kube(s) => s
                .spec
                .ports
                .iter()
                .filter_map(|p| {
                    Some(SvcPort {
                        number: u16::try_from(p.port).ok()?,
                        name: p.name.clone(),
                        target_port: 0,
                        protocol: kube_port_protocol(p),
                    })
                })
                .collect(),
            SvcKind::Entry(s) => s
                .spec
                .ports
                .iter()
                .filter_map(|p| {
                    Some(SvcPort {
                        number: u16::try_from(p.number).ok()?,
                        name: p.name.clone(),
                        target_port: u16::try_from(p.target_port).unwrap_or(0),
                        protocol: p.protocol.to_ascii_uppercase(),
                    })
                })
                .collect(),
        }
    }
}

/// An endpoint of a service port.
pub(super) struct Ep<'a> {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u64,
    labels: Option<&'a Labels>,
}

/// See [`Compiler::resolve_destination`].
pub(super) struct Resolved<'a> {
    pub svc_id: String,
    /// The Service's or ServiceEntry's namespace (Istio's `destination_service_namespace`).
    pub namespace: &'a str,
    pub port: SvcPort,
    pub dr: Option<MergedDr<'a>>,
    pub dr_policy: Option<&'a TrafficPolicy>,
    pub subset: Option<&'a Subset>,
    pub subset_policy: Option<&'a TrafficPolicy>,
    pub eps: Vec<Ep<'a>>,
    /// A ServiceEntry's `subjectAltNames`: the upstream SANs when the DestinationRule's
    /// `tls` lists none (Istio does so for ServiceEntry hosts).
    pub entry_sans: &'a [String],
}

fn protocol_of(s: &Srv<'_>) -> Option<Protocol> {
    s.server.port.as_ref().map(|p| p.protocol())
}

/// Istio's protocol selection for a Kubernetes Service port: `appProtocol`, else the name
/// prefix before `-` (`http2-web`, `grpc`).
fn kube_port_protocol(p: &ServicePort) -> String {
    if let Some(ap) = p.app_protocol.as_ref().and_then(|v| v.as_str()) {
        return ap.to_ascii_uppercase();
    }
    p.name
        .split('-')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

/// The DestinationRules that apply to one host, merged as Istio merges them.
pub(super) struct MergedDr<'a> {
    policy: Option<&'a TrafficPolicy>,
    subsets: Vec<&'a Subset>,
    ids: Vec<String>,
    /// The file of each of `ids`, for messages that the agent logs at apply time.
    files: Vec<&'a std::path::Path>,
}

pub(super) struct Compiler<'a> {
    pub(super) m: &'a Manifests,
    pub(super) input: &'a CompileInput,
    warnings: Vec<Warning>,
    pub(super) vss: Vec<Vs<'a>>,
    registry: BTreeMap<String, Svc<'a>>,
    pods: BTreeMap<(&'a str, &'a str), &'a Labels>,
    drs: Vec<&'a DestinationRule>,
    /// TCP servers (bind or 0.0.0.0, port) whose route originates TLS: served by the agent as
    /// streams instead of by the L4 path.
    tls_tcp: BTreeSet<(Ipv4Addr, u16)>,
}

impl<'a> Compiler<'a> {
    fn new(m: &'a Manifests, input: &'a CompileInput) -> Self {
        let mut c = Compiler {
            m,
            input,
            warnings: Vec::new(),
            vss: Vec::new(),
            registry: BTreeMap::new(),
            pods: BTreeMap::new(),
            drs: sorted(&m.destination_rules),
            tls_tcp: BTreeSet::new(),
        };
        c.index_virtual_services();
        c.index_registry();
        for p in &m.pods {
            c.pods.insert((p.namespace(), p.name()), &p.metadata.labels);
        }
        c
    }

    pub(super) fn warn<S: Kind>(
        &mut self,
        r: &Resource<S>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) {
        self.warnings.push(Warning {
            file: r.source.file.clone(),
            resource: r.id(),
            field: field.into(),
            message: msg.into(),
        });
    }

    fn index_virtual_services(&mut self) {
        let gateway_keys: BTreeSet<String> = self.m.gateways.iter().map(|g| g.key()).collect();
        for vs in sorted(&self.m.virtual_services) {
            let ns = vs.namespace();
            let gateways: Vec<String> = vs
                .spec
                .gateways
                .iter()
                .map(|g| resolve_gateway_name(g, ns))
                .collect();
            for (k, g) in gateways.iter().enumerate() {
                if g != "mesh" && !gateway_keys.contains(g) {
                    self.warn(
                        vs,
                        format!("spec.gateways[{k}]"),
                        format!("Gateway {g} not found"),
                    );
                }
            }
            if !exported_to(&vs.spec.export_to, ns, &self.input.namespace) {
                continue;
            }
            self.vss.push(Vs {
                vs,
                hosts: vs
                    .spec
                    .hosts
                    .iter()
                    .map(|h| resolve_short_name(h, ns))
                    .collect(),
                gateways,
            });
        }
    }

    /// Host -> service. Kubernetes Services first, then ServiceEntries in creation order; the
    /// first claim on a host wins (Istio would merge or pick by namespace: kept simple).
    fn index_registry(&mut self) {
        for s in sorted(&self.m.services) {
            let host = format!("{}.{}.svc.{CLUSTER_DOMAIN}", s.name(), s.namespace());
            self.registry.entry(host).or_insert(Svc {
                kind: SvcKind::Kube(s),
                namespace: s.namespace(),
            });
        }
        for se in sorted(&self.m.service_entries) {
            if !exported_to(&se.spec.export_to, se.namespace(), &self.input.namespace)
                || se.spec.export_to.iter().any(|e| e == "~")
            {
                continue;
            }
            for (j, h) in se.spec.hosts.iter().enumerate() {
                if let Some(prev) = self.registry.get(h) {
                    let prev = prev.id();
                    self.warn(
                        se,
                        format!("spec.hosts[{j}]"),
                        format!("host {h} is already defined by {prev}; ignored here"),
                    );
                    continue;
                }
                self.registry.insert(
                    h.clone(),
                    Svc {
                        kind: SvcKind::Entry(se),
                        namespace: se.namespace(),
                    },
                );
            }
        }
    }

    fn run(&mut self) -> Plan {
        let servers = self.servers();
        let mut vips = self.input.vips.clone();
        vips.sort();
        vips.dedup();
        if vips.is_empty() && !servers.is_empty() {
            self.warnings.push(Warning {
                file: Default::default(),
                resource: String::new(),
                field: String::new(),
                message: "no VIPs configured: no Gateway server is served".to_string(),
            });
        }

        let mut plan = Plan::default();
        for &vip in &vips {
            let keys: BTreeSet<(u16, Proto)> = servers
                .iter()
                .filter(|s| s.bind.is_none_or(|b| b == vip))
                .map(|s| (s.port, s.class.proto()))
                .collect();
            for (port, proto) in keys {
                let on_port = |bind: Option<IpAddr>| -> Vec<&Srv<'a>> {
                    servers
                        .iter()
                        .filter(|s| s.port == port && s.class.proto() == proto && s.bind == bind)
                        .collect()
                };
                // A server bound to this vip is the more specific listener: it shadows the
                // wildcard servers there.
                let mut cands = on_port(Some(vip));
                if cands.is_empty() {
                    cands = on_port(None);
                }
                let first = cands[0];
                let mut merged = vec![first];
                for s in &cands[1..] {
                    if s.class == first.class && matches!(s.class, Class::Http | Class::Tls) {
                        merged.push(s);
                    } else {
                        let msg = format!(
                            "port {port} on {vip} is already taken by {}; server skipped",
                            first.origin
                        );
                        self.warn(s.gw, format!("spec.servers[{}]", s.index), msg);
                    }
                }
                match first.class {
                    Class::Http | Class::Tls => plan.local.push(LocalPort {
                        vip,
                        port,
                        origin: merged
                            .iter()
                            .map(|s| s.origin.as_str())
                            .collect::<Vec<_>>()
                            .join("; "),
                    }),
                    // XDP forwards packets and cannot originate TLS: a TCP server whose route
                    // asks for TLS to its backends is served by the agent, as a stream.
                    Class::Tcp if self.tcp_route_originates(first, vip) => {
                        // Keyed as the L7 listeners are (an IPv6 bind is served by the
                        // port's wildcard listener).
                        let bind = match first.bind {
                            Some(IpAddr::V4(b)) => b,
                            _ => Ipv4Addr::UNSPECIFIED,
                        };
                        self.tls_tcp.insert((bind, port));
                        plan.local.push(LocalPort {
                            vip,
                            port,
                            origin: first.origin.clone(),
                        });
                    }
                    Class::Tcp | Class::Udp => {
                        if let Some((svc, dest)) = self.l4_service(first, vip) {
                            let name = crate::plan::l4_name(svc.vip, svc.port, svc.proto);
                            plan.l4_dests.insert(name, dest);
                            plan.l4.push(svc);
                        }
                    }
                }
            }
        }
        plan.l4.sort_by_key(|s| (s.vip, s.port, s.proto));
        plan.local.sort();
        if !vips.is_empty() {
            (plan.http, plan.streams) = self.http_listeners(&servers);
        }
        plan
    }

    /// HTTP listeners: per (bind or 0.0.0.0, port) the first server in creation order decides
    /// the port; later HTTP-family servers there merge into its route table (Istio
    /// `mergeGateways`). Conflicts were already reported above, per vip.
    fn http_listeners(
        &mut self,
        servers: &[Srv<'a>],
    ) -> (crate::plan::http::HttpPlan, crate::plan::stream::StreamPlan) {
        // The agent's HTTP listeners: per IPv4 bind (or 0.0.0.0, which serves IPv6 clients too
        // through its `[::]` twin, see `l7`); a server bound to an IPv6 VIP is served by the
        // wildcard listener of its port.
        let l7_bind = |s: &Srv<'a>| match s.bind {
            Some(IpAddr::V4(b)) => b,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let mut keys: Vec<(Ipv4Addr, u16)> = servers
            .iter()
            .filter(|s| s.class.proto() == Proto::Tcp)
            .map(|s| (l7_bind(s), s.port))
            .collect();
        keys.sort();
        keys.dedup();
        let mut listeners = Vec::new();
        let mut tls_listeners = Vec::new();
        let mut stream_listeners = Vec::new();
        for (bind, port) in keys {
            let on_key: Vec<&Srv<'a>> = servers
                .iter()
                .filter(|s| s.class.proto() == Proto::Tcp && s.port == port && l7_bind(s) == bind)
                .collect();
            let first = on_key[0];
            let server = |s: &&Srv<'a>| super::http::HttpServer {
                gw: s.gw,
                server: s.server,
                gw_key: s.gw_key.clone(),
                index: s.index,
            };
            if first.class == Class::Tls {
                // TLS servers of every kind share the port as SNI filter chains (MERGE
                // `mergeGateways`): a server repeating a host already claimed there is skipped.
                let mut claimed: Vec<(String, String)> = Vec::new();
                let mut kept: Vec<&Srv<'a>> = Vec::new();
                for s in on_key.iter().filter(|s| s.class == Class::Tls) {
                    let hosts: Vec<String> = s
                        .server
                        .hosts
                        .iter()
                        .map(|h| h.rsplit('/').next().unwrap_or(h).to_ascii_lowercase())
                        .collect();
                    if let Some((_, by)) = claimed.iter().find(|(h, _)| hosts.contains(h)) {
                        let msg = format!(
                            "SNI hosts {hosts:?} on port {port} already served by {by}; server skipped"
                        );
                        self.warn(s.gw, format!("spec.servers[{}].hosts", s.index), msg);
                        continue;
                    }
                    claimed.extend(hosts.into_iter().map(|h| (h, s.origin.clone())));
                    kept.push(s);
                }
                // TLS-terminating HTTPS servers are served by the HTTP proxy, one SNI chain
                // each; passthrough servers and terminating `TLS` servers are byte streams.
                let terminating_https = |s: &&&Srv<'a>| {
                    protocol_of(s) == Some(Protocol::Https)
                        && s.server.tls.as_ref().is_some_and(|t| !t.is_passthrough())
                };
                let https: Vec<_> = kept.iter().filter(terminating_https).map(server).collect();
                let others: Vec<_> = kept
                    .iter()
                    .filter(|s| !terminating_https(s))
                    .map(server)
                    .collect();
                let https_names: Vec<String> = https
                    .iter()
                    .flat_map(|s| s.server.hosts.iter())
                    .map(|h| h.rsplit('/').next().unwrap_or(h).to_ascii_lowercase())
                    .collect();
                if !others.is_empty() {
                    stream_listeners.push((bind, port, others, https_names, false));
                }
                if !https.is_empty() {
                    tls_listeners.push((bind, port, https));
                }
                continue;
            }
            if first.class == Class::Tcp && self.tls_tcp.contains(&(bind, port)) {
                stream_listeners.push((bind, port, vec![server(&first)], Vec::new(), true));
                continue;
            }
            if first.class != Class::Http {
                continue;
            }
            let merged = on_key
                .iter()
                .filter(|s| s.class == Class::Http)
                .map(server)
                .collect();
            listeners.push((bind, port, merged));
        }
        let http = self.http_plan(listeners, tls_listeners);
        let streams = self.stream_plan(stream_listeners);
        (http, streams)
    }

    /// Servers of the Gateways that select this agent, in creation order.
    fn servers(&mut self) -> Vec<Srv<'a>> {
        let mut out = Vec::new();
        for gw in sorted(&self.m.gateways) {
            if !labels_subset(&gw.spec.selector, &self.input.labels) {
                continue;
            }
            for (index, server) in gw.spec.servers.iter().enumerate() {
                let Some(port) = &server.port else { continue };
                let Ok(number) = u16::try_from(port.number) else {
                    continue;
                };
                if number == 0 {
                    continue;
                }
                let bind = if server.bind.is_empty() {
                    None
                } else {
                    match server.bind.parse::<IpAddr>() {
                        Ok(ip) if self.input.vips.contains(&ip) => Some(ip),
                        _ => {
                            let msg = format!(
                                "bind {} is not one of this gateway's VIPs; server not served",
                                server.bind
                            );
                            self.warn(gw, format!("spec.servers[{index}].bind"), msg);
                            continue;
                        }
                    }
                };
                out.push(Srv {
                    gw,
                    index,
                    server,
                    port: number,
                    class: Class::of(port.protocol()),
                    bind,
                    gw_key: gw.key(),
                    origin: format!("Gateway {} server {}:{}", gw.key(), port.name, port.number),
                });
            }
        }
        out
    }

    /// Does any server host (as allowed for the VS namespace) overlap any VS host?
    fn hosts_overlap(srv: &Srv<'_>, vs: &Vs<'_>) -> bool {
        let vs_ns = vs.vs.namespace();
        srv.server.hosts.iter().any(|h| {
            let host = match h.split_once('/') {
                None => Some(h.as_str()),
                Some(("*", host)) => Some(host),
                Some((".", host)) => (srv.gw.namespace() == vs_ns).then_some(host),
                Some((ns, host)) => (ns == vs_ns).then_some(host),
            };
            host.is_some_and(|sh| vs.hosts.iter().any(|vh| host_matches(sh, vh)))
        })
    }
}

#[cfg(test)]
mod tests;
