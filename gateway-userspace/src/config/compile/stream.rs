//! TLS servers the agent proxies as byte streams -> `plan::stream`, with Istio's semantics
//! (GWBUILD `createGatewayTCPFilterChainOpts`, `buildGatewayNetworkFiltersFromTLSRoutes`,
//! `buildGatewayNetworkFiltersFromTCPRoutes`; notes §3.7, §3.27):
//!
//! * PASSTHROUGH (protocol HTTPS or TLS): for every bound VirtualService (creation order) whose
//!   hosts overlap the server's, every `tls[].match[]` block whose `port` and `gateways` pass
//!   becomes a chain keyed by its `sniHosts` (`*` = no SNI constraint). A block naming an SNI
//!   already claimed on the port is skipped whole (Istio `CheckDuplicates`: first wins). The
//!   server's own hosts do not narrow the SNI names, as in Istio.
//! * `TLS` with SIMPLE, MUTUAL or OPTIONAL_MUTUAL: one chain keyed by the server hosts that
//!   terminates TLS and forwards by the first `tcp` rule of the first bound VirtualService whose
//!   match passes (the same single-rule choice as a TCP server).
//! * AUTO_PASSTHROUGH: a chain per port (and DestinationRule subset) of every mesh-internal
//!   service the server hosts cover, keyed by `outbound_.<port>_.<subset>_.<host>` and Istio's
//!   mTLS ALPNs (GWBUILD `builtAutoPassthroughFilterChains`).
//! * A server that yields no chain serves nothing; a port with no chain at all is not listened
//!   on (Istio builds no listener: connection refused).

use crate::config::model::{Destination, PortSelector, RouteDestination, VirtualService};
use crate::config::names::{host_matches, host_subset_of, resolve_gateway_name};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::http::{server_hosts_for, HttpServer};
use super::Compiler;
use crate::plan::http as hp;
use crate::plan::stream as sp;

/// A TLS-class (bind, port): the stream servers on it, the SNI names its HTTPS servers
/// already claim, and whether it is a plain TCP server (whose route originates TLS).
pub(super) type StreamKey<'a> = (Ipv4Addr, u16, Vec<HttpServer<'a>>, Vec<String>, bool);

type Clusters = BTreeMap<String, Option<hp::Cluster>>;

/// The ALPN values Istio's mTLS clients offer; AUTO_PASSTHROUGH chains require one of them so
/// that only mesh mTLS reaches the services (GWBUILD `allIstioMtlsALPNs`).
const ISTIO_MTLS_ALPNS: [&str; 5] = [
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

fn origin_of(srv: &HttpServer<'_>, port: u16) -> String {
    let name = srv.server.port.as_ref().map(|p| p.name.as_str());
    format!(
        "Gateway {} server {}:{port}",
        srv.gw_key,
        name.unwrap_or("")
    )
}

/// Envoy filter-chain names: lower-cased, sorted; any `*` means no SNI constraint.
fn chain_names(hosts: &[String]) -> Vec<String> {
    if hosts.iter().any(|h| h == "*") {
        return Vec::new();
    }
    let mut n: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    n.sort();
    n.dedup();
    n
}

impl<'a> Compiler<'a> {
    pub(super) fn stream_plan(&mut self, keys: Vec<StreamKey<'a>>) -> sp::StreamPlan {
        let mut clusters = Clusters::new();
        let mut listeners = Vec::new();
        for (bind, port, servers, https_names, plain) in keys {
            let mut chains = Vec::new();
            if plain {
                // A TCP server: no TLS from the client, one chain with its tcp route.
                let chain = servers
                    .first()
                    .and_then(|srv| self.terminating_chain(srv, port, &mut clusters, false));
                listeners.extend(chain.map(|c| sp::StreamListener {
                    bind,
                    port,
                    chains: vec![c],
                    plain: true,
                }));
                continue;
            }
            // Istio's `tlsHostsByPort`: SNI names of passthrough chains on this port.
            let mut known: BTreeSet<String> = BTreeSet::new();
            for srv in &servers {
                let Some(tls) = srv.server.tls.as_ref() else {
                    continue; // validation requires tls on HTTPS/TLS servers
                };
                match tls.mode().as_str() {
                    "PASSTHROUGH" => {
                        let before = chains.len();
                        self.passthrough_chains(
                            srv,
                            port,
                            &https_names,
                            &mut known,
                            &mut chains,
                            &mut clusters,
                        );
                        if chains.len() == before {
                            let msg = format!(
                                "no VirtualService tls route matches {}; server not served",
                                origin_of(srv, port)
                            );
                            self.warn(srv.gw, format!("spec.servers[{}]", srv.index), msg);
                        }
                    }
                    "AUTO_PASSTHROUGH" => {
                        let before = chains.len();
                        self.auto_passthrough_chains(srv, port, &mut chains, &mut clusters);
                        if chains.len() == before {
                            let msg = "no mesh-internal service (Kubernetes Service, or ServiceEntry with location MESH_INTERNAL) is covered by the server hosts; server not served";
                            self.warn(srv.gw, format!("spec.servers[{}].hosts", srv.index), msg);
                        }
                    }
                    _ => {
                        if let Some(c) = self.terminating_chain(srv, port, &mut clusters, true) {
                            chains.push(c);
                        }
                    }
                }
            }
            if !chains.is_empty() {
                listeners.push(sp::StreamListener {
                    bind,
                    port,
                    chains,
                    plain: false,
                });
            }
        }
        listeners.sort_by_key(|l| (l.bind, l.port));
        sp::StreamPlan {
            listeners,
            clusters: clusters.into_values().flatten().collect(),
        }
    }

    /// Istio `pickMatchingGatewayHosts` is non-empty: some server host (as allowed for the VS
    /// namespace) overlaps some VS host.
    fn stream_hosts_overlap(&self, srv: &HttpServer<'a>, vi: usize) -> bool {
        let v = &self.vss[vi];
        server_hosts_for(srv, v.vs.namespace())
            .iter()
            .any(|sh| v.hosts.iter().any(|vh| host_matches(sh, vh)))
    }

    /// Istio `l4SingleMatch`: only `port` and `gateways` count at a gateway.
    fn l4_passes(
        port_match: i64,
        gateways: &[String],
        vs_ns: &str,
        srv: &HttpServer<'_>,
        port: u16,
    ) -> bool {
        (port_match == 0 || port_match == i64::from(port))
            && (gateways.is_empty()
                || gateways
                    .iter()
                    .any(|g| resolve_gateway_name(g, vs_ns) == srv.gw_key))
    }

    fn passthrough_chains(
        &mut self,
        srv: &HttpServer<'a>,
        port: u16,
        https_names: &[String],
        known: &mut BTreeSet<String>,
        chains: &mut Vec<sp::StreamChain>,
        clusters: &mut Clusters,
    ) {
        for vi in 0..self.vss.len() {
            let vs = self.vss[vi].vs;
            if vs.spec.tls.is_empty()
                || !self.vss[vi].gateways.contains(&srv.gw_key)
                || !self.stream_hosts_overlap(srv, vi)
            {
                continue;
            }
            for (ri, rule) in vs.spec.tls.iter().enumerate() {
                if rule.route.is_empty() {
                    continue;
                }
                for (k, m) in rule.matches.iter().enumerate() {
                    if !Self::l4_passes(m.port, &m.gateways, vs.namespace(), srv, port) {
                        continue;
                    }
                    let at = format!("spec.tls[{ri}].match[{k}].sniHosts");
                    let sni: Vec<String> =
                        m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
                    let dups: Vec<&String> = sni.iter().filter(|h| known.contains(*h)).collect();
                    if !dups.is_empty() {
                        let msg = format!(
                            "duplicate SNI host names {dups:?} on port {port} of {}; this match is skipped (the first VirtualService in creation order wins)",
                            srv.gw_key
                        );
                        self.warn(vs, at, msg);
                        continue;
                    }
                    // Envoy would refuse a listener with two identical chain matches; here the
                    // HTTPS server (a whole server) keeps the name.
                    let clash: Vec<&String> =
                        sni.iter().filter(|h| https_names.contains(h)).collect();
                    if !clash.is_empty() {
                        let msg = format!(
                            "SNI host names {clash:?} on port {port} are already served by an HTTPS server; this match is skipped"
                        );
                        self.warn(vs, at, msg);
                        continue;
                    }
                    known.extend(sni.iter().cloned());
                    let routes = self.stream_routes(
                        vs,
                        &format!("spec.tls[{ri}]"),
                        &rule.route,
                        port,
                        clusters,
                    );
                    chains.push(sp::StreamChain {
                        server_names: chain_names(&sni),
                        destination_subnets: m.destination_subnets.clone(),
                        alpn: Vec::new(),
                        terminate: None,
                        routes,
                        origin: format!(
                            "{} -> {} tls[{ri}].match[{k}]",
                            origin_of(srv, port),
                            vs.id()
                        ),
                    });
                }
            }
        }
    }

    /// GWBUILD `builtAutoPassthroughFilterChains`: a chain per port (and per DestinationRule
    /// subset) of every mesh-internal service whose host the server hosts cover, keyed by
    /// Istio's cluster SNI `outbound_.<port>_.<subset>_.<host>` and Istio's mTLS ALPNs, straight
    /// to that cluster; no VirtualService is consulted.
    fn auto_passthrough_chains(
        &mut self,
        srv: &HttpServer<'a>,
        port: u16,
        chains: &mut Vec<sp::StreamChain>,
        clusters: &mut Clusters,
    ) {
        let hosts: Vec<String> = srv
            .server
            .hosts
            .iter()
            .map(|h| h.rsplit('/').next().unwrap_or(h).to_string())
            .collect();
        for (host, ns, ports) in self.mesh_internal_ports() {
            if !hosts.iter().any(|h| host_subset_of(&host, h)) {
                continue;
            }
            let subsets = self.subset_names(&host, &ns);
            for &number in &ports {
                for subset in std::iter::once(String::new()).chain(subsets.iter().cloned()) {
                    let sni = format!("outbound_.{number}_.{subset}_.{host}");
                    let dest = Destination {
                        host: host.clone(),
                        subset,
                        port: Some(PortSelector {
                            number: i64::from(number),
                        }),
                    };
                    let field = format!("spec.servers[{}]", srv.index);
                    let cluster = self.http_cluster(srv.gw, &field, &dest, port, clusters);
                    chains.push(sp::StreamChain {
                        server_names: vec![sni.to_ascii_lowercase()],
                        destination_subnets: Vec::new(),
                        alpn: ISTIO_MTLS_ALPNS.iter().map(|a| a.to_string()).collect(),
                        terminate: None,
                        routes: vec![sp::StreamRoute { cluster, weight: 1 }],
                        origin: format!("{} -> {sni}", origin_of(srv, port)),
                    });
                }
            }
        }
    }

    /// A `TLS` server that terminates (`terminate`), or a plain TCP server: the server hosts
    /// as SNI names, the first passing `tcp` rule of the first bound VirtualService as
    /// destinations.
    fn terminating_chain(
        &mut self,
        srv: &HttpServer<'a>,
        port: u16,
        clusters: &mut Clusters,
        terminate: bool,
    ) -> Option<sp::StreamChain> {
        let mut found = None;
        'vs: for vi in 0..self.vss.len() {
            let vs = self.vss[vi].vs;
            if !self.vss[vi].gateways.contains(&srv.gw_key) || !self.stream_hosts_overlap(srv, vi) {
                continue;
            }
            for (ri, rule) in vs.spec.tcp.iter().enumerate() {
                let passes = rule.matches.is_empty()
                    || rule
                        .matches
                        .iter()
                        .any(|m| Self::l4_passes(m.port, &m.gateways, vs.namespace(), srv, port));
                if passes && !rule.route.is_empty() {
                    found = Some((vs, ri));
                    break 'vs;
                }
            }
        }
        let Some((vs, ri)) = found else {
            let msg = format!(
                "no VirtualService tcp route matches {}; server not served",
                origin_of(srv, port)
            );
            self.warn(srv.gw, format!("spec.servers[{}]", srv.index), msg);
            return None;
        };
        let settings = if terminate {
            Some(self.tls_settings(srv)?)
        } else {
            None
        };
        let hosts: Vec<String> = srv
            .server
            .hosts
            .iter()
            .map(|h| h.rsplit('/').next().unwrap_or(h).to_string())
            .collect();
        let routes = self.stream_routes(
            vs,
            &format!("spec.tcp[{ri}]"),
            &vs.spec.tcp[ri].route,
            port,
            clusters,
        );
        Some(sp::StreamChain {
            server_names: chain_names(&hosts),
            destination_subnets: Vec::new(),
            alpn: Vec::new(),
            terminate: settings,
            routes,
            origin: format!("{} -> {} tcp[{ri}]", origin_of(srv, port), vs.id()),
        })
    }

    /// Weighted destinations (§3.9): one takes everything whatever its weight; with several, a
    /// weight of 0 (or none) gets nothing.
    fn stream_routes(
        &mut self,
        vs: &'a VirtualService,
        at: &str,
        route: &[RouteDestination],
        port: u16,
        clusters: &mut Clusters,
    ) -> Vec<sp::StreamRoute> {
        let several = route.len() > 1;
        let mut out = Vec::new();
        for (k, rd) in route.iter().enumerate() {
            if several && rd.weight <= 0 {
                continue;
            }
            let Some(dest) = &rd.destination else {
                continue;
            };
            let field = format!("{at}.route[{k}].destination");
            let cluster = self.http_cluster(vs, &field, dest, port, clusters);
            out.push(sp::StreamRoute {
                cluster,
                weight: if several {
                    u32::try_from(rd.weight).unwrap_or(u32::MAX)
                } else {
                    1
                },
            });
        }
        out
    }
}
