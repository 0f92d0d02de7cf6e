//! VirtualService `http[]` routes: the compile step that turns Gateway HTTP servers and bound
//! VirtualServices into `plan::http` (listeners, virtual hosts, routes in Istio's order,
//! clusters with DestinationRule policy).
//!
//! Semantics follow `istio-semantics.md` §3.1–3.26; the places that decide them are named
//! where they are implemented. `mod.rs` builds listeners and virtual hosts; `delegate` merges
//! delegate VirtualServices into their roots; `routes` compiles one route (match, actions,
//! retries, redirects); `cluster` resolves destinations to clusters with their policy.

mod cluster;
mod delegate;
mod routes;

use crate::config::model::{Gateway, Server};
use crate::config::names::host_subset_of;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::Compiler;
pub use crate::config::syntax::{anchored, base64_decode, parse_duration};
use crate::plan::http as p;
pub use routes::{is_catch_all, DEFAULT_RETRY_ON};

// ---------------------------------------------------------------------------------------------
// Durations and small helpers

fn duration_ms(s: &Option<String>) -> Option<u64> {
    s.as_deref()
        .and_then(parse_duration)
        .map(|d| d.as_millis() as u64)
}

/// Istio `isAuthorityHeader` on a lower-cased name: setting it is an authority rewrite.
fn is_authority_header(k: &str) -> bool {
    k == "host" || k == ":authority"
}

/// Percentage -> parts per million (Envoy's FractionalPercent resolution).
fn ppm(p: f64) -> u32 {
    (p * 10_000.0).round().clamp(0.0, 1_000_000.0) as u32
}

// ---------------------------------------------------------------------------------------------
// Compile

/// An HTTP-family Gateway server taking part in one listener.
pub(crate) struct HttpServer<'a> {
    pub gw: &'a Gateway,
    pub server: &'a Server,
    pub gw_key: String,
    /// Position in `spec.servers`, for messages.
    pub index: usize,
}

/// Istio `Names.Intersection`: for each overlapping pair the more specific name.
fn intersection(server_hosts: &[String], vs_hosts: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in server_hosts {
        for b in vs_hosts {
            let pick = if host_subset_of(a, b) {
                Some(a)
            } else if host_subset_of(b, a) {
                Some(b)
            } else {
                None
            };
            if let Some(h) = pick {
                let h = h.to_ascii_lowercase();
                if !out.contains(&h) {
                    out.push(h);
                }
            }
        }
    }
    out
}

/// Istio `NamesForNamespace`: server hosts that a VirtualService in `vs_ns` may bind, with the
/// namespace part stripped (`./h` means the Gateway's namespace).
pub(super) fn server_hosts_for(srv: &HttpServer<'_>, vs_ns: &str) -> Vec<String> {
    srv.server
        .hosts
        .iter()
        .filter_map(|h| match h.split_once('/') {
            None => Some(h.clone()),
            Some(("*", host)) => Some(host.to_string()),
            Some((".", host)) => (srv.gw.namespace() == vs_ns).then(|| host.to_string()),
            Some((ns, host)) => (ns == vs_ns).then(|| host.to_string()),
        })
        .collect()
}

impl<'a> Compiler<'a> {
    /// Builds `plan.http`: one listener per (bind, port) whose first server is HTTP-family.
    pub(crate) fn http_plan(
        &mut self,
        listeners: Vec<(Ipv4Addr, u16, Vec<HttpServer<'a>>)>,
        tls_listeners: Vec<(Ipv4Addr, u16, Vec<HttpServer<'a>>)>,
    ) -> p::HttpPlan {
        let mut clusters: BTreeMap<String, Option<p::Cluster>> = BTreeMap::new();
        let mut out = Vec::new();
        for (bind, port, servers) in listeners {
            let origin = servers
                .iter()
                .map(|s| {
                    let pn = s.server.port.as_ref();
                    format!(
                        "Gateway {} server {}:{}",
                        s.gw_key,
                        pn.map(|p| p.name.as_str()).unwrap_or(""),
                        port
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let vhosts = self.http_vhosts(port, &servers, &mut clusters);
            out.push(p::Listener {
                bind,
                port,
                vhosts,
                origin,
                tls: Vec::new(),
            });
        }
        for (bind, port, servers) in tls_listeners {
            let chains = self.tls_chains(port, &servers, &mut clusters);
            if chains.is_empty() {
                continue;
            }
            out.push(p::Listener {
                bind,
                port,
                vhosts: Vec::new(),
                origin: chains
                    .iter()
                    .map(|c| c.origin.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                tls: chains,
            });
        }
        out.sort_by_key(|l| (l.bind, l.port));
        p::HttpPlan {
            listeners: out,
            clusters: clusters.into_values().flatten().collect(),
        }
    }

    /// MERGE `mergeGateways` for TLS servers: one filter chain per HTTPS server, keyed by its
    /// hosts as SNI names, each with a route table of its own; a server repeating a host
    /// already claimed on the port is skipped (the earlier one wins).
    fn tls_chains(
        &mut self,
        port: u16,
        servers: &[HttpServer<'a>],
        clusters: &mut BTreeMap<String, Option<p::Cluster>>,
    ) -> Vec<p::TlsChain> {
        let mut chains: Vec<p::TlsChain> = Vec::new();
        for srv in servers {
            let hosts: Vec<String> = srv
                .server
                .hosts
                .iter()
                .map(|h| h.rsplit('/').next().unwrap_or(h).to_ascii_lowercase())
                .collect();
            // A `*` host puts no SNI constraint on the chain.
            let names: Vec<String> = if hosts.iter().any(|h| h == "*") {
                Vec::new()
            } else {
                let mut n = hosts.clone();
                n.sort();
                n.dedup();
                n
            };
            let clash = chains.iter().find(|c| {
                (names.is_empty() && c.server_names.is_empty())
                    || names.iter().any(|n| c.server_names.contains(n))
            });
            if let Some(c) = clash {
                let msg = format!(
                    "SNI hosts {hosts:?} on port {port} already served by {}; server skipped",
                    c.origin
                );
                self.warn(srv.gw, format!("spec.servers[{}].hosts", srv.index), msg);
                continue;
            }
            let Some(settings) = self.tls_settings(srv) else {
                continue;
            };
            let origin = format!(
                "Gateway {} server {}:{port}",
                srv.gw_key,
                srv.server
                    .port
                    .as_ref()
                    .map(|p| p.name.as_str())
                    .unwrap_or("")
            );
            let mut vhosts = self.http_vhosts(port, std::slice::from_ref(srv), clusters);
            // httpsRedirect never applies to requests that came over TLS (SIM "httpsRedirect on https").
            for v in &mut vhosts {
                v.require_tls = false;
            }
            chains.push(p::TlsChain {
                server_names: names,
                settings,
                vhosts,
                origin,
            });
        }
        chains
    }

    /// GWBUILD `buildGatewayHTTPRouteConfig`.
    fn http_vhosts(
        &mut self,
        port: u16,
        servers: &[HttpServer<'a>],
        clusters: &mut BTreeMap<String, Option<p::Cluster>>,
    ) -> Vec<p::VirtualHost> {
        let mut vhosts: Vec<p::VirtualHost> = Vec::new();
        // Domain -> index in `vhosts` (a linear search made 10,000 hosts quadratic).
        let mut by_domain: std::collections::HashMap<String, usize> =
            std::collections::HashMap::new();
        let n_vs = self.vss.len();
        for srv in servers {
            let https_redirect = srv.server.tls.as_ref().is_some_and(|t| t.https_redirect);
            for vi in 0..n_vs {
                let (vs, vs_hosts, vs_gateways) = {
                    let v = &self.vss[vi];
                    (v.vs, v.hosts.clone(), v.gateways.clone())
                };
                if !vs_gateways.contains(&srv.gw_key) || vs.spec.http.is_empty() {
                    continue;
                }
                let domains = intersection(&server_hosts_for(srv, vs.namespace()), &vs_hosts);
                if domains.is_empty() {
                    continue;
                }
                let routes: Vec<std::sync::Arc<p::Route>> = self
                    .http_routes(vs, srv, port, clusters)
                    .into_iter()
                    .map(std::sync::Arc::new)
                    .collect();
                for d in domains {
                    match by_domain.get(&d) {
                        Some(&i) => {
                            let v = &mut vhosts[i];
                            v.routes.extend(routes.iter().cloned());
                            v.require_tls |= https_redirect;
                        }
                        None => {
                            by_domain.insert(d.clone(), vhosts.len());
                            vhosts.push(p::VirtualHost {
                                domain: d,
                                require_tls: https_redirect,
                                routes: routes.clone(),
                            });
                        }
                    }
                }
            }
            if https_redirect {
                // Namespace-qualified server hosts count too for the redirect vhost.
                let qualified = srv
                    .server
                    .hosts
                    .iter()
                    .filter_map(|h| h.split_once('/').map(|(_, host)| host.to_string()));
                let hosts: Vec<String> = server_hosts_for(srv, "\u{0}")
                    .into_iter()
                    .chain(qualified)
                    .collect();
                for h in hosts {
                    let h = h.to_ascii_lowercase();
                    match by_domain.get(&h) {
                        Some(&i) => vhosts[i].require_tls = true,
                        None => {
                            by_domain.insert(h.clone(), vhosts.len());
                            vhosts.push(p::VirtualHost {
                                domain: h,
                                require_tls: true,
                                routes: Vec::new(),
                            });
                        }
                    }
                }
            }
        }
        // ROUTE `SortVHostRoutes`: catch-alls last, others keep their relative order.
        for v in &mut vhosts {
            let (mut specific, catch_all): (Vec<_>, Vec<_>) = std::mem::take(&mut v.routes)
                .into_iter()
                .partition(|r| !is_catch_all(&r.matcher));
            specific.extend(catch_all);
            v.routes = specific;
        }
        vhosts.sort_by(|a, b| a.domain.cmp(&b.domain));
        vhosts
    }
}
