//! VirtualService `http[]` routes: the typed model, Istio's validation of it, and the compile
//! step that turns Gateway HTTP servers and bound VirtualServices into `plan::http` (listeners,
//! virtual hosts, routes in Istio's order, clusters with DestinationRule policy).
//!
//! Semantics follow `istio-semantics.md` §3.1–3.26; the places that decide them are named
//! where they are implemented.

use crate::config::model::{
    ConnectionPool, Destination, Gateway, HeaderOperations, HttpMatch, HttpRedirect, HttpRetry,
    HttpRoute, Kind, LoadBalancer, OutlierDetection, Protocol, Resource, Server, StringMatch,
    TrafficPolicy, VirtualService, GRPC_CODES,
};
use crate::config::names::{
    host_subset_of, labels_subset, resolve_gateway_name, resolve_short_name,
};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_yaml::Value;

use super::{Compiler, IstioVersion};
pub use crate::config::syntax::{anchored, base64_decode, parse_duration};
use crate::plan::http as p;

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

/// Istio's mesh default `retry_on` (RETRY `DefaultPolicy`).
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

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

/// One route of a VirtualService after delegate merging: `vs` resolves its destinations and
/// names it in warnings (the delegate, for delegate routes), `at` is its field there.
struct FlatRoute<'a> {
    vs: &'a VirtualService,
    at: String,
    rule: std::borrow::Cow<'a, HttpRoute>,
    origin: String,
}

/// A route with its short names resolved in its own namespace (destination hosts, match
/// gateways), so that merging a root route with a delegate's from another namespace keeps
/// each side's meaning (Istio resolves both before merging).
fn qualified(r: &HttpRoute, ns: &str) -> HttpRoute {
    let mut r = r.clone();
    let fix = |d: &mut Destination| d.host = resolve_short_name(&d.host, ns);
    for rd in &mut r.route {
        if let Some(d) = rd.destination.as_mut() {
            fix(d);
        }
    }
    if let Some(d) = r.mirror.as_mut() {
        fix(d);
    }
    for m in r.mirrors.iter_mut().flatten() {
        if let Some(d) = m.destination.as_mut() {
            fix(d);
        }
    }
    for m in &mut r.matches {
        for g in &mut m.gateways {
            *g = resolve_gateway_name(g, ns);
        }
    }
    r
}

/// PUSH `mergeHTTPRoute`: None when the delegate's match conflicts with the root's.
pub(crate) fn merge_delegate_route(root: &HttpRoute, mut leaf: HttpRoute) -> Option<HttpRoute> {
    leaf.matches = merge_matches(&root.matches, &leaf.matches)?;
    leaf.name = match (root.name.is_empty(), leaf.name.is_empty()) {
        (_, true) => root.name.clone(),
        (false, false) => format!("{}-{}", root.name, leaf.name),
        (true, false) => leaf.name,
    };
    macro_rules! inherit {
        ($($f:ident),*) => {$(
            if leaf.$f.is_none() {
                leaf.$f = root.$f.clone();
            }
        )*};
    }
    inherit!(
        rewrite,
        direct_response,
        timeout,
        retries,
        fault,
        mirror,
        mirror_percent,
        mirror_percentage,
        cors_policy,
        mirrors,
        headers
    );
    Some(leaf)
}

/// PUSH `mergeHTTPMatchRequests`: every delegate block must fit (not conflict with) some root
/// block; it is merged with each root block it fits.
fn merge_matches(root: &[HttpMatch], leaf: &[HttpMatch]) -> Option<Vec<HttpMatch>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let mut found = false;
        for r in root {
            if has_conflict(r, l) {
                continue;
            }
            out.push(merge_match(r, l));
            found = true;
        }
        if !found {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// PUSH `mergeHTTPMatchRequest`: the delegate's fields win, the root's fill the gaps, maps
/// are unioned (the delegate's value wins on a shared key).
fn merge_match(root: &HttpMatch, leaf: &HttpMatch) -> HttpMatch {
    let mut out = leaf.clone();
    out.name = match (root.name.is_empty(), leaf.name.is_empty()) {
        (_, true) => root.name.clone(),
        (false, false) => format!("{}-{}", root.name, leaf.name),
        (true, false) => leaf.name.clone(),
    };
    for (o, r) in [
        (&mut out.uri, &root.uri),
        (&mut out.scheme, &root.scheme),
        (&mut out.method, &root.method),
        (&mut out.authority, &root.authority),
    ] {
        if o.is_none() {
            *o = r.clone();
        }
    }
    let union = |r: &BTreeMap<String, Option<StringMatch>>,
                 l: &BTreeMap<String, Option<StringMatch>>| {
        let mut m = r.clone();
        m.extend(l.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    };
    out.headers = union(&root.headers, &leaf.headers);
    out.without_headers = union(&root.without_headers, &leaf.without_headers);
    out.query_params = union(&root.query_params, &leaf.query_params);
    let mut labels = root.source_labels.clone();
    labels.extend(
        leaf.source_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    out.source_labels = labels;
    if out.port == 0 {
        out.port = root.port;
    }
    if out.source_namespace.is_empty() {
        out.source_namespace = root.source_namespace.clone();
    }
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    if out.stat_prefix.as_deref().unwrap_or("").is_empty() {
        out.stat_prefix = root.stat_prefix.clone();
    }
    out
}

/// PUSH `hasConflict`: the delegate block is not a narrowing of the root block.
fn has_conflict(root: &HttpMatch, leaf: &HttpMatch) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let map_conflict = |r: &BTreeMap<String, Option<StringMatch>>,
                        l: &BTreeMap<String, Option<StringMatch>>| {
        l.iter()
            .any(|(k, lv)| string_match_conflict(r.get(k).and_then(Option::as_ref), lv.as_ref()))
    };
    if map_conflict(&root.headers, &leaf.headers)
        || map_conflict(&root.without_headers, &leaf.without_headers)
        || map_conflict(&root.query_params, &leaf.query_params)
    {
        return true;
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    if root.port > 0 && leaf.port > 0 && root.port != leaf.port {
        return true;
    }
    if !root.source_namespace.is_empty() && leaf.source_namespace != root.source_namespace {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
    {
        return true;
    }
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        if root.gateways.len() < leaf.gateways.len() {
            return true;
        }
        if leaf.gateways.iter().any(|g| !root.gateways.contains(g)) {
            return true;
        }
    }
    false
}

/// PUSH `stringMatchConflict`: a delegate string match must be the same exact value, or an
/// exact/prefix under the root's prefix; regex on either side conflicts with anything.
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let get = |o: &Option<String>| o.clone().unwrap_or_default();
    let (re, rp, rr) = (get(&root.exact), get(&root.prefix), get(&root.regex));
    let (le, lp, lr) = (get(&leaf.exact), get(&leaf.prefix), get(&leaf.regex));
    if !rr.is_empty() && (!lr.is_empty() || !lp.is_empty() || !le.is_empty()) {
        return true;
    }
    if !lr.is_empty() && (!rr.is_empty() || !rp.is_empty() || !re.is_empty()) {
        return true;
    }
    if !re.is_empty() {
        return !lp.is_empty() || le != re;
    }
    if !rp.is_empty() {
        if !lp.is_empty() {
            return !lp.starts_with(&rp);
        }
        if !le.is_empty() {
            return !le.starts_with(&rp);
        }
    }
    true
}

fn string_match_plan(m: &StringMatch) -> p::StrMatch {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), _, _) => p::StrMatch::Exact(e.clone()),
        (_, Some(pr), _) => p::StrMatch::Prefix(pr.clone()),
        // `regex: "*"` is Istio's spelling of "present" (ROUTE `canBeConvertedToPresentMatch`).
        (_, _, Some(r)) if r == "*" => p::StrMatch::Present,
        (_, _, Some(r)) => p::StrMatch::Regex(r.clone()),
        _ => p::StrMatch::Present,
    }
}

fn header_ops(ops: &Option<HeaderOperations>) -> p::HeaderOps {
    let Some(o) = ops else {
        return p::HeaderOps::default();
    };
    p::HeaderOps {
        remove: o.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
        set: o
            .set
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        add: o
            .add
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
    }
}

/// Istio `IsCatchAllRoute` on a compiled match.
pub fn is_catch_all(m: &p::RouteMatch) -> bool {
    let path_all = match &m.path {
        p::PathMatch::Prefix(s) => s == "/",
        p::PathMatch::Regex(r) => r == "*" || r == ".*",
        p::PathMatch::Exact(_) => false,
    };
    path_all
        && m.method.is_none()
        && m.scheme.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.query.is_empty()
}

fn route_match(m: Option<&HttpMatch>) -> p::RouteMatch {
    let Some(m) = m else {
        return p::RouteMatch {
            path: p::PathMatch::Prefix("/".into()),
            ignore_case: false,
            method: None,
            scheme: None,
            authority: None,
            headers: Vec::new(),
            query: Vec::new(),
        };
    };
    let path = match &m.uri {
        Some(StringMatch { exact: Some(e), .. }) => p::PathMatch::Exact(e.clone()),
        Some(StringMatch {
            prefix: Some(pr), ..
        }) => p::PathMatch::Prefix(pr.clone()),
        Some(StringMatch { regex: Some(r), .. }) => p::PathMatch::Regex(r.clone()),
        _ => p::PathMatch::Prefix("/".into()),
    };
    let mut headers = Vec::new();
    for (name, sm) in &m.headers {
        let Some(sm) = sm else { continue };
        headers.push(p::HeaderMatch {
            name: name.to_ascii_lowercase(),
            value: string_match_plan(sm),
            invert: false,
        });
    }
    for (name, sm) in &m.without_headers {
        let Some(sm) = sm else { continue };
        headers.push(p::HeaderMatch {
            name: name.to_ascii_lowercase(),
            value: string_match_plan(sm),
            invert: true,
        });
    }
    p::RouteMatch {
        path,
        ignore_case: m.ignore_uri_case,
        method: m.method.as_ref().map(string_match_plan),
        scheme: m.scheme.as_ref().map(string_match_plan),
        authority: m.authority.as_ref().map(string_match_plan),
        headers,
        query: m
            .query_params
            .iter()
            .filter_map(|(k, v)| {
                Some(p::QueryMatch {
                    name: k.clone(),
                    value: string_match_plan(v.as_ref()?),
                })
            })
            .collect(),
    }
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

    /// ROUTE `BuildHTTPRoutesForVirtualService` for one server (its gateway and port), over
    /// the VirtualService's routes with delegates merged in (PUSH `mergeVirtualServices`).
    fn http_routes(
        &mut self,
        vs: &'a VirtualService,
        srv: &HttpServer<'a>,
        port: u16,
        clusters: &mut BTreeMap<String, Option<p::Cluster>>,
    ) -> Vec<p::Route> {
        let ns = vs.namespace();
        let mut out = Vec::new();
        let rules = self.merged_http(vs);
        'rules: for f in &rules {
            let rule = &f.rule;
            let blocks: Vec<(Option<usize>, Option<&HttpMatch>)> = if rule.matches.is_empty() {
                vec![(None, None)]
            } else {
                rule.matches
                    .iter()
                    .enumerate()
                    .map(|(k, m)| (Some(k), Some(m)))
                    .collect()
            };
            for (k, m) in blocks {
                if let Some(m) = m {
                    // Config-time conditions (ROUTE `sourceMatchHTTP`): drop the block.
                    if m.port != 0 && m.port != i64::from(port) {
                        continue;
                    }
                    if !m.gateways.is_empty() {
                        if !m
                            .gateways
                            .iter()
                            .any(|g| resolve_gateway_name(g, ns) == srv.gw_key)
                        {
                            continue;
                        }
                    } else {
                        if !labels_subset(&m.source_labels, &self.input.labels) {
                            continue;
                        }
                        if !m.source_namespace.is_empty()
                            && m.source_namespace != self.input.namespace
                        {
                            continue;
                        }
                    }
                }
                let origin = match k {
                    Some(k) => format!("{}.match[{k}]", f.origin),
                    None => f.origin.clone(),
                };
                let matcher = route_match(m);
                let catch_all = is_catch_all(&matcher);
                let mut r = self.http_route(f.vs, &f.at, rule, matcher, origin, port, clusters);
                // Envoy's route name (%ROUTE_NAME%), as Istio sets it: the rule's name, joined
                // with the match's.
                r.name = match (rule.name.as_str(), m.map_or("", |m| m.name.as_str())) {
                    ("", "") => None,
                    (n, "") => Some(n.to_string()),
                    (n, m) => Some(format!("{n}.{m}")),
                };
                out.push(r);
                if catch_all {
                    break 'rules;
                }
            }
        }
        out
    }

    /// The root's `http[]` with each `delegate` route replaced by the delegate's routes merged
    /// with it (PUSH `mergeVirtualServices`, `MergeHTTPRoutes`, notes §3.19). The delegate is
    /// the VirtualService `namespace/name` (namespace defaulting to the root's) without hosts,
    /// exported to the root's namespace; otherwise that root route is dropped with a warning,
    /// as Istio does. One level only (validation rejects a delegate in a delegate).
    fn merged_http(&mut self, vs: &'a VirtualService) -> Vec<FlatRoute<'a>> {
        let mut out = Vec::new();
        for (i, rule) in vs.spec.http.iter().enumerate() {
            let Some(rule) = rule else { continue };
            let at = format!("spec.http[{i}]");
            let Some(d) = &rule.delegate else {
                out.push(FlatRoute {
                    vs,
                    at,
                    rule: std::borrow::Cow::Borrowed(rule),
                    origin: format!("{} http[{i}]", vs.id()),
                });
                continue;
            };
            let dns = if d.namespace.is_empty() {
                vs.namespace()
            } else {
                d.namespace.as_str()
            };
            let m = self.m;
            let found = m
                .virtual_services
                .iter()
                .filter(|v| v.name() == d.name && v.namespace() == dns)
                .min_by(|a, b| a.source.cmp(&b.source));
            let dvs = match found {
                Some(v) if v.spec.hosts.is_empty() => v,
                Some(v) => {
                    let msg = format!(
                        "delegate {} has hosts, so it is a root VirtualService, not a delegate; this route is dropped",
                        v.id()
                    );
                    self.warn(vs, format!("{at}.delegate"), msg);
                    continue;
                }
                None => {
                    let msg = format!(
                        "delegate VirtualService {dns}/{} not found; this route is dropped",
                        d.name
                    );
                    self.warn(vs, format!("{at}.delegate"), msg);
                    continue;
                }
            };
            if !super::exported_to(&dvs.spec.export_to, dns, vs.namespace()) {
                let msg = format!(
                    "delegate {} is not exported to namespace {}; this route is dropped",
                    dvs.id(),
                    vs.namespace()
                );
                self.warn(vs, format!("{at}.delegate"), msg);
                continue;
            }
            let root = qualified(rule, vs.namespace());
            for (j, leaf) in dvs.spec.http.iter().enumerate() {
                let Some(leaf) = leaf else { continue };
                if leaf.delegate.is_some() {
                    continue; // validation rejects it; one level only
                }
                let leaf_q = qualified(leaf, dvs.namespace());
                match merge_delegate_route(&root, leaf_q) {
                    Some(merged) => out.push(FlatRoute {
                        vs: dvs,
                        at: format!("spec.http[{j}]"),
                        rule: std::borrow::Cow::Owned(merged),
                        origin: format!("{} http[{i}] -> {} http[{j}]", vs.id(), dvs.id()),
                    }),
                    None => {
                        let msg = format!(
                            "match conflicts with root route {} {at} (each delegate match must narrow a root match); this route is dropped there",
                            vs.id()
                        );
                        self.warn(dvs, format!("spec.http[{j}].match"), msg);
                    }
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn http_route(
        &mut self,
        vs: &'a VirtualService,
        at: &str,
        rule: &HttpRoute,
        matcher: p::RouteMatch,
        origin: String,
        port: u16,
        clusters: &mut BTreeMap<String, Option<p::Cluster>>,
    ) -> p::Route {
        let mut request_headers = rule
            .headers
            .as_ref()
            .map(|h| header_ops(&h.request))
            .unwrap_or_default();
        let response_headers = rule
            .headers
            .as_ref()
            .map(|h| header_ops(&h.response))
            .unwrap_or_default();
        // Setting `host` or `:authority` is an authority rewrite (§3.14), not a header operation.
        let mut authority = rule.rewrite.as_ref().and_then(|w| w.authority.clone());
        request_headers.set.retain(|(k, v)| {
            if is_authority_header(k) {
                authority = Some(v.clone());
                false
            } else {
                true
            }
        });
        request_headers.add.retain(|(k, v)| {
            if is_authority_header(k) {
                authority = Some(v.clone());
                false
            } else {
                true
            }
        });

        let action = if let Some(rd) = &rule.redirect {
            p::Action::Redirect(redirect_plan(rd, port))
        } else if let Some(dr) = &rule.direct_response {
            let body = dr.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(bs)) => {
                    base64_decode(bs).map(|v| String::from_utf8_lossy(&v).into_owned())
                }
                _ => None,
            });
            p::Action::Direct {
                status: u16::try_from(dr.status).unwrap_or(200),
                body,
            }
        } else {
            let several = rule.route.len() > 1;
            let mut wcs = Vec::new();
            let mut hash_lb = false;
            for (k, rd) in rule.route.iter().enumerate() {
                // §3.9: one destination takes everything; with several, weight 0 is dropped.
                if several && rd.weight <= 0 {
                    continue;
                }
                let Some(dest) = &rd.destination else {
                    continue;
                };
                let field = format!("{at}.route[{k}].destination");
                let name = self.http_cluster(vs, &field, dest, port, clusters);
                if let Some(Some(c)) = clusters.get(&name) {
                    hash_lb |= c.lb.is_hash();
                }
                let (mut rq, rs) = rd
                    .headers
                    .as_ref()
                    .map(|h| (header_ops(&h.request), header_ops(&h.response)))
                    .unwrap_or_default();
                // A destination-level authority applies only if the route has none.
                rq.set.retain(|(k, v)| {
                    if is_authority_header(k) {
                        if authority.is_none() {
                            authority = Some(v.clone());
                        }
                        false
                    } else {
                        true
                    }
                });
                wcs.push(p::WeightedCluster {
                    cluster: name,
                    weight: if several {
                        u32::try_from(rd.weight).unwrap_or(u32::MAX)
                    } else {
                        1
                    },
                    request_headers: rq,
                    response_headers: rs,
                });
            }
            let rewrite = rule.rewrite.as_ref().and_then(|w| {
                if let Some(u) = &w.uri {
                    Some(p::Rewrite::Prefix(u.clone()))
                } else {
                    w.uri_regex_rewrite.as_ref().map(|rr| p::Rewrite::Regex {
                        pattern: rr.pattern.clone(),
                        substitution: regex_substitution(&rr.rewrite),
                    })
                }
            });
            p::Action::Forward(p::Forward {
                clusters: wcs,
                rewrite,
                authority: authority.clone(),
                timeout_ms: duration_ms(&rule.timeout).filter(|t| *t > 0),
                retry: retry_plan(rule.retries.as_ref(), hash_lb, self.input.compat),
            })
        };
        let fault = rule.fault.as_ref().map(|f| p::Fault {
            delay: f.delay.as_ref().and_then(|d| {
                Some(p::FaultDelay {
                    delay_ms: duration_ms(&d.fixed_delay)?,
                    ppm: match (&d.percentage, d.percent) {
                        (Some(pc), _) => ppm(pc.value),
                        (None, Some(i)) => ppm(i as f64),
                        (None, None) => 0,
                    },
                })
            }),
            abort: f.abort.as_ref().and_then(|a| {
                let grpc = a
                    .grpc_status
                    .as_ref()
                    .and_then(|g| GRPC_CODES.iter().position(|c| c == g))
                    .map(|c| c as u32);
                let http = a.http_status.and_then(|s| u16::try_from(s).ok());
                if http.is_none() && grpc.is_none() {
                    return None;
                }
                Some(p::FaultAbort {
                    http_status: http,
                    grpc_status: if http.is_some() { None } else { grpc },
                    ppm: a.percentage.as_ref().map_or(0, |pc| ppm(pc.value)),
                })
            }),
        });
        let mut mirrors = Vec::new();
        let forwards = matches!(action, p::Action::Forward(_));
        if forwards {
            if let Some(d) = &rule.mirror {
                let pct = match (&rule.mirror_percentage, rule.mirror_percent) {
                    (Some(pc), _) => pc.value,
                    (None, Some(i)) => i as f64,
                    (None, None) => 100.0,
                };
                let name = self.http_cluster(vs, &format!("{at}.mirror"), d, port, clusters);
                mirrors.push(p::Mirror {
                    cluster: name,
                    ppm: ppm(pct),
                    shadow_host: self.input.compat.shadow_host_suffix(),
                });
            }
            for (k, m) in rule.mirrors.iter().flatten().enumerate() {
                let Some(d) = &m.destination else { continue };
                let name = self.http_cluster(
                    vs,
                    &format!("{at}.mirrors[{k}].destination"),
                    d,
                    port,
                    clusters,
                );
                mirrors.push(p::Mirror {
                    cluster: name,
                    ppm: ppm(m.percentage.as_ref().map_or(100.0, |pc| pc.value)),
                    shadow_host: self.input.compat.shadow_host_suffix(),
                });
            }
        }
        let cors = rule.cors_policy.as_ref().map(|c| {
            let mut origins: Vec<p::StrMatch> =
                c.allow_origins.iter().map(string_match_plan).collect();
            origins.extend(c.allow_origin.iter().map(|o| p::StrMatch::Exact(o.clone())));
            p::Cors {
                allow_origins: origins,
                allow_methods: c.allow_methods.join(","),
                allow_headers: c.allow_headers.join(","),
                expose_headers: c.expose_headers.join(","),
                max_age: c
                    .max_age
                    .as_deref()
                    .and_then(parse_duration)
                    .map(|d| d.as_secs().to_string()),
                allow_credentials: c.allow_credentials == Some(true),
                ignore_unmatched_preflights: c.unmatched_preflights.as_deref() == Some("IGNORE"),
            }
        });
        p::Route {
            origin,
            name: None,
            matcher,
            action,
            request_headers,
            response_headers,
            fault,
            mirrors,
            cors,
        }
    }

    /// Resolves a destination to its cluster name (`outbound|port|subset|host`) and builds the
    /// cluster once. Unknown host/port/subset: the name is returned but no cluster exists, so
    /// requests get 503 (Envoy "cluster not found"), as in Istio.
    pub(super) fn http_cluster<S: Kind>(
        &mut self,
        vs: &Resource<S>,
        field: &str,
        dest: &Destination,
        listener_port: u16,
        clusters: &mut BTreeMap<String, Option<p::Cluster>>,
    ) -> String {
        let host = resolve_short_name(&dest.host, vs.namespace());
        let want_port = dest.port.as_ref().map(|p| p.number);
        let resolved = self.resolve_destination(vs, field, dest, listener_port, "");
        let Some(r) = resolved else {
            let port = want_port.unwrap_or(i64::from(listener_port));
            let name = format!("outbound|{port}|{}|{host}", dest.subset);
            clusters.entry(name.clone()).or_insert(None);
            return name;
        };
        let name = format!("outbound|{}|{}|{host}", r.port.number, dest.subset);
        if clusters.contains_key(&name) {
            return name;
        }
        if r.eps.is_empty() {
            self.warn(
                vs,
                field.to_string(),
                format!("{name} has no endpoints: requests get 503 no healthy upstream"),
            );
        }
        let policy = effective_policy(r.dr_policy, r.subset_policy, r.port.number);
        let mut endpoints: Vec<p::Endpoint> = r
            .eps
            .iter()
            .map(|e| p::Endpoint {
                addr: e.addr,
                port: e.port,
                weight: u32::try_from(e.weight).unwrap_or(u32::MAX),
            })
            .collect();
        endpoints.sort();
        endpoints.dedup();
        let proto = r.port.protocol.to_ascii_uppercase();
        let subset = r.subset.map(|s| s.name.as_str());
        let tls = super::upstream_tls::effective_tls(
            r.dr_policy,
            subset.zip(r.subset_policy),
            r.port.number,
        );
        // `file: DestinationRule ns/name`, as every config message starts: the agent logs
        // upstream TLS problems at apply time, away from the compiler's warnings.
        let dr_id =
            r.dr.as_ref()
                .and_then(|d| {
                    let id = d.ids.first()?;
                    Some(match d.files.first() {
                        Some(f) => format!("{}: {id}", f.display()),
                        None => id.clone(),
                    })
                })
                .unwrap_or_default();
        let tls = tls.and_then(|(v, f)| {
            self.upstream_tls(vs, field, v, &dr_id, &f, &host, &proto, r.entry_sans)
        });
        let cluster = p::Cluster {
            name: name.clone(),
            namespace: r.namespace.to_string(),
            http2: Protocol::parse(&r.port.protocol).is_http2(),
            endpoints,
            lb: policy.0,
            connect_timeout_ms: policy.1,
            limits: policy.2,
            outlier: policy.3,
            tls,
        };
        clusters.insert(name.clone(), Some(cluster));
        name
    }
}

/// `\1`..`\9` (RE2/Envoy) -> `${1}` (regex crate); a literal `$` is escaped.
fn regex_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' if it.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let d = it.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn redirect_plan(r: &HttpRedirect, listener_port: u16) -> p::Redirect {
    let (port, strip_port) = match (r.port, r.derive_port.as_deref()) {
        (Some(n), _) => (u16::try_from(n).ok(), false),
        (None, Some("FROM_REQUEST_PORT")) => (Some(listener_port), false),
        (None, Some("FROM_PROTOCOL_DEFAULT")) => (None, true),
        _ => (None, false),
    };
    p::Redirect {
        scheme: r.scheme.clone(),
        authority: r.authority.clone(),
        port,
        strip_port,
        path: r.uri.clone(),
        prefix_rewrite: r.prefix_rewrite.clone(),
        code: if r.redirect_code == 0 {
            301
        } else {
            r.redirect_code as u16
        },
    }
}

/// RETRY `ConvertPolicy`: absent = Istio's default; `attempts: 0` = none.
fn retry_plan(
    r: Option<&HttpRetry>,
    hash_lb: bool,
    compat: IstioVersion,
) -> Option<p::RetryPolicy> {
    let default_on = || -> Vec<String> { DEFAULT_RETRY_ON.split(',').map(String::from).collect() };
    let Some(r) = r else {
        return Some(p::RetryPolicy {
            num_retries: 2,
            retry_on: default_on(),
            // Istio >= 1.24 no longer retries 503 by default (EXCLUDE_UNSAFE_503...).
            retriable_status_codes: if compat.retries_503_by_default() {
                vec![503]
            } else {
                Vec::new()
            },
            per_try_timeout_ms: None,
            backoff_base_ms: 25,
            previous_hosts: !hash_lb,
        });
    };
    if r.attempts <= 0 {
        return None;
    }
    let mut on = Vec::new();
    let mut codes = Vec::new();
    match &r.retry_on {
        None => on = default_on(),
        Some(s) => {
            for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if let Ok(c) = t.parse::<u16>() {
                    codes.push(c);
                } else {
                    on.push(t.to_string());
                }
            }
            if !codes.is_empty() && !on.iter().any(|o| o == "retriable-status-codes") {
                on.push("retriable-status-codes".into());
            }
        }
    }
    Some(p::RetryPolicy {
        num_retries: u32::try_from(r.attempts).unwrap_or(u32::MAX),
        retry_on: on,
        retriable_status_codes: codes,
        per_try_timeout_ms: duration_ms(&r.per_try_timeout),
        backoff_base_ms: duration_ms(&r.backoff).unwrap_or(25),
        previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(!hash_lb),
    })
}

fn lb_plan(lb: Option<&LoadBalancer>) -> p::Lb {
    let Some(lb) = lb else {
        return p::Lb::LeastRequest;
    };
    if let Some(ch) = &lb.consistent_hash {
        if let Some(h) = &ch.http_header_name {
            return p::Lb::HashHeader(h.to_ascii_lowercase());
        }
        if let Some(c) = &ch.http_cookie {
            let get = |k: &str| c.get(k).and_then(Value::as_str).map(String::from);
            return p::Lb::HashCookie {
                name: get("name").unwrap_or_default(),
                path: get("path").unwrap_or_default(),
                ttl_s: get("ttl")
                    .as_deref()
                    .and_then(parse_duration)
                    .map(|d| d.as_secs()),
            };
        }
        if ch.use_source_ip == Some(true) {
            return p::Lb::HashSourceIp;
        }
        if let Some(q) = &ch.http_query_parameter_name {
            return p::Lb::HashQuery(q.clone());
        }
    }
    match lb.simple.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("ROUND_ROBIN") => p::Lb::RoundRobin,
        Some("RANDOM") => p::Lb::Random,
        _ => p::Lb::LeastRequest,
    }
}

fn pool_plan(cp: Option<&Value>) -> (u64, p::Limits) {
    let mut limits = p::Limits::default();
    let mut connect_ms = 10_000;
    let Some(cp) = cp.and_then(|v| serde_yaml::from_value::<ConnectionPool>(v.clone()).ok()) else {
        return (connect_ms, limits);
    };
    let lim = |v: Option<i64>| {
        v.filter(|n| *n > 0)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    if let Some(t) = &cp.tcp {
        if let Some(n) = lim(t.max_connections) {
            limits.max_connections = n;
        }
        if let Some(ms) = duration_ms(&t.connect_timeout) {
            connect_ms = ms;
        }
    }
    if let Some(h) = &cp.http {
        if let Some(n) = lim(h.http1_max_pending_requests) {
            limits.max_pending_requests = n;
        }
        if let Some(n) = lim(h.http2_max_requests) {
            limits.max_requests = n;
        }
        if let Some(n) = lim(h.max_retries) {
            limits.max_retries = n;
        }
        if let Some(n) = lim(h.max_requests_per_connection) {
            limits.max_requests_per_connection = n;
        }
    }
    (connect_ms, limits)
}

fn outlier_plan(od: Option<&Value>) -> Option<p::Outlier> {
    let od: OutlierDetection = serde_yaml::from_value(od?.clone()).unwrap_or_default();
    let n = |v: Option<i64>, d: u32| v.map_or(d, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
    Some(p::Outlier {
        consecutive_5xx: n(od.consecutive5xx_errors, 5),
        consecutive_gateway_errors: n(od.consecutive_gateway_errors, 0),
        interval_ms: duration_ms(&od.interval).unwrap_or(10_000),
        base_ejection_ms: duration_ms(&od.base_ejection_time).unwrap_or(30_000),
        max_ejection_percent: n(od.max_ejection_percent, 10),
    })
}

/// §3.21: top level, replaced whole by its port-level entry; then each component the subset
/// sets replaces the inherited one; a subset port-level entry replaces all of them.
fn effective_policy(
    top: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u16,
) -> (p::Lb, u64, p::Limits, Option<p::Outlier>) {
    let mut lb: Option<&LoadBalancer> = None;
    let mut cp: Option<&Value> = None;
    let mut od: Option<&Value> = None;
    if let Some(tp) = top {
        match tp.port_level(port) {
            Some(pl) => {
                lb = pl.load_balancer.as_ref();
                cp = pl.connection_pool.as_ref();
                od = pl.outlier_detection.as_ref();
            }
            None => {
                lb = tp.load_balancer.as_ref();
                cp = tp.connection_pool.as_ref();
                od = tp.outlier_detection.as_ref();
            }
        }
    }
    if let Some(stp) = subset {
        if let Some(pl) = stp.port_level(port) {
            lb = pl.load_balancer.as_ref();
            cp = pl.connection_pool.as_ref();
            od = pl.outlier_detection.as_ref();
        } else {
            if stp.load_balancer.is_some() {
                lb = stp.load_balancer.as_ref();
            }
            if stp.connection_pool.is_some() {
                cp = stp.connection_pool.as_ref();
            }
            if stp.outlier_detection.is_some() {
                od = stp.outlier_detection.as_ref();
            }
        }
    }
    let (connect_ms, limits) = pool_plan(cp);
    (lb_plan(lb), connect_ms, limits, outlier_plan(od))
}
