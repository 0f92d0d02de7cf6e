//! Pure route selection: `plan::http` compiled once (regexes built, header names parsed,
//! domains hashed, cluster names resolved to indices) into a [`Table`], then queried per request
//! without allocation in the common case (a repeated header or a percent-encoded query value
//! costs one).
//!
//! Semantics: vhost by Host without port, case-insensitive, exact > longest `*suffix` > `*`
//! (§3.5); routes first match wins, blocks already expanded in Istio's order by compile (§3.1);
//! StringMatch as §3.3; URI as §3.4 (the caller passes the normalised path, query removed).
//! A vhost of [`INDEX_MIN_ROUTES`] routes or more evaluates only the routes its URI index
//! ([`super::route_index`]) offers, with the same first-match result as the linear scan.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::Ipv4Addr;

use http::header::{HeaderMap, HeaderName};
use regex::Regex;

use super::route_index::RouteIndex;
use crate::plan::http as p;

/// A precompiled string matcher.
#[derive(Debug)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    Present,
}

impl Matcher {
    fn new(m: &p::StrMatch) -> Matcher {
        match m {
            p::StrMatch::Exact(s) => Matcher::Exact(s.clone()),
            p::StrMatch::Prefix(s) => Matcher::Prefix(s.clone()),
            // Validation rejects regexes that do not compile; should one slip through, it
            // matches nothing rather than everything.
            p::StrMatch::Regex(r) => Matcher::Regex(compile_regex(r).unwrap_or_else(|_| never())),
            p::StrMatch::Present => Matcher::Present,
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            Matcher::Exact(s) => v == s,
            Matcher::Prefix(s) => v.starts_with(s.as_str()),
            Matcher::Regex(r) => r.is_match(v),
            Matcher::Present => true,
        }
    }
}

fn never() -> Regex {
    Regex::new("[^\\s\\S]").expect("static regex")
}

fn compile_regex(r: &str) -> Result<Regex, regex::Error> {
    Regex::new(&crate::config::syntax::anchored(r))
}

#[derive(Debug)]
enum PathMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
struct HeaderMatcher {
    name: HeaderName,
    value: Matcher,
    invert: bool,
}

/// A route ready to be evaluated; `plan` keeps the data the proxy acts on.
#[derive(Debug)]
pub struct Route {
    pub plan: std::sync::Arc<p::Route>,
    /// `plan.origin`, shared: the access log and metrics take it per request without copying.
    pub origin: std::sync::Arc<str>,
    /// `plan.name`, shared the same way (%ROUTE_NAME%).
    pub name: Option<std::sync::Arc<str>>,
    path: PathMatcher,
    ignore_case: bool,
    method: Option<Matcher>,
    scheme: Option<Matcher>,
    authority: Option<Matcher>,
    headers: Vec<HeaderMatcher>,
    query: Vec<(String, Matcher)>,
    /// Per weighted destination: index into [`Table::clusters`] (None: cluster not found).
    pub clusters: Vec<Option<usize>>,
    /// Sum of the weights in `plan.action` (Forward).
    pub total_weight: u64,
    /// Compiled `uriRegexRewrite`.
    pub rewrite_regex: Option<Regex>,
    /// Mirrors resolved to cluster indices; unknown clusters mirror nothing (§3.26).
    /// (cluster index, sampling in parts per million, add the `-shadow` Host suffix).
    pub mirrors: Vec<(usize, u32, bool)>,
    /// Compiled CORS origin matchers.
    pub cors_origins: Vec<Matcher>,
}

/// What a request is to the router.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host / :authority verbatim (port included).
    pub authority: &'a str,
    /// Normalised, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

#[derive(Debug)]
pub enum Decision<'t> {
    /// No vhost or no route: 404.
    NoRoute,
    /// The vhost requires TLS (`httpsRedirect`): 301 to https.
    HttpsRedirect,
    Route(&'t Route),
}

/// [`Listener::explain`]'s answer.
#[derive(Debug)]
pub struct Explanation<'t> {
    /// The vhost domain the host selected; None: no vhost (404).
    pub vhost: Option<&'t str>,
    /// Routes evaluated in order, each with the condition it failed (None: the match).
    pub routes: Vec<(&'t Route, Option<&'static str>)>,
    pub decision: Decision<'t>,
}

#[derive(Debug, Default)]
struct VHost {
    domain: String,
    routes: Vec<Route>,
    require_tls: bool,
    index: RouteIndex,
}

/// Below this many routes a vhost is scanned linearly. Measured on the benchmark's mixed table
/// (release, 2 shared cores): the index wins from about 10 routes when the match is near the end
/// (8 routes: 93 ns indexed, 52-82 ns linear; 12: 96 vs 125; 16: 107 vs 145), later when it is
/// nearer the front; 16 sits between.
pub const INDEX_MIN_ROUTES: usize = 16;

/// How [`Listener::select_with`] finds the route; every strategy gives the same decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The index from [`INDEX_MIN_ROUTES`] routes on when it leaves out routes, else the
    /// linear scan.
    Auto,
    Indexed,
    /// Every route in order, as Envoy does: the reference the index is tested against.
    Linear,
}

impl VHost {
    fn route(&self, req: &RequestView<'_>, strategy: Strategy) -> Option<&Route> {
        let indexed = match strategy {
            Strategy::Auto => self.routes.len() >= INDEX_MIN_ROUTES && self.index.narrows(),
            Strategy::Indexed => true,
            Strategy::Linear => false,
        };
        if indexed {
            self.index
                .first_match(req.path, |i| self.routes[i].matches(req))
                .map(|i| &self.routes[i])
        } else {
            self.routes.iter().find(|r| r.matches(req))
        }
    }
}

/// One listener's vhosts, indexed for lookup.
#[derive(Debug)]
pub struct Listener {
    pub bind: Ipv4Addr,
    pub port: u16,
    vhosts: Vec<VHost>,
    exact: HashMap<String, usize>,
    /// `*-api.example.com` is stored as `-api.example.com`; lengths longest first.
    wildcard: HashMap<String, usize>,
    wildcard_lens: Vec<usize>,
    star: Option<usize>,
    /// TLS listeners: the route table of each SNI chain, in `plan` order (§3.7: every HTTPS
    /// server has its own). The listener's own vhosts are then empty.
    pub chains: Vec<Listener>,
}

/// The compiled route tables of every listener, plus the clusters they point at.
#[derive(Debug, Default)]
pub struct Table {
    pub listeners: Vec<Listener>,
    /// Same order as `plan.clusters`.
    pub clusters: Vec<p::Cluster>,
}

impl Table {
    pub fn build(plan: &p::HttpPlan) -> Table {
        let cluster_idx: HashMap<&str, usize> = plan
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let listeners = plan
            .listeners
            .iter()
            .map(|l| Listener::build(l, &cluster_idx))
            .collect();
        Table {
            listeners,
            clusters: plan.clusters.clone(),
        }
    }

    pub fn listener(&self, bind: Ipv4Addr, port: u16) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| l.bind == bind && l.port == port)
    }
}

fn build_route(r: &std::sync::Arc<p::Route>, cluster_idx: &HashMap<&str, usize>) -> Route {
    let path = match &r.matcher.path {
        p::PathMatch::Exact(s) => PathMatcher::Exact(s.clone()),
        p::PathMatch::Prefix(s) => PathMatcher::Prefix(s.clone()),
        p::PathMatch::Regex(re) => {
            PathMatcher::Regex(compile_regex(re).unwrap_or_else(|_| never()))
        }
    };
    let (clusters, total_weight, rewrite_regex) = match &r.action {
        p::Action::Forward(f) => (
            f.clusters
                .iter()
                .map(|c| cluster_idx.get(c.cluster.as_str()).copied())
                .collect(),
            f.clusters.iter().map(|c| u64::from(c.weight)).sum(),
            match &f.rewrite {
                Some(p::Rewrite::Regex { pattern, .. }) => Regex::new(pattern).ok(),
                _ => None,
            },
        ),
        _ => (Vec::new(), 0, None),
    };
    Route {
        path,
        ignore_case: r.matcher.ignore_case,
        method: r.matcher.method.as_ref().map(Matcher::new),
        scheme: r.matcher.scheme.as_ref().map(Matcher::new),
        authority: r.matcher.authority.as_ref().map(Matcher::new),
        headers: r
            .matcher
            .headers
            .iter()
            .filter_map(|h| {
                Some(HeaderMatcher {
                    name: HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                    value: Matcher::new(&h.value),
                    invert: h.invert,
                })
            })
            .collect(),
        query: r
            .matcher
            .query
            .iter()
            .map(|q| (q.name.clone(), Matcher::new(&q.value)))
            .collect(),
        clusters,
        total_weight,
        rewrite_regex,
        mirrors: r
            .mirrors
            .iter()
            .filter_map(|m| Some((*cluster_idx.get(m.cluster.as_str())?, m.ppm, m.shadow_host)))
            .collect(),
        cors_origins: r
            .cors
            .as_ref()
            .map(|c| c.allow_origins.iter().map(Matcher::new).collect())
            .unwrap_or_default(),
        origin: r.origin.as_str().into(),
        name: r.name.as_deref().map(Into::into),
        plan: r.clone(),
    }
}

impl Listener {
    fn build(l: &p::Listener, cluster_idx: &HashMap<&str, usize>) -> Listener {
        let mut out = Self::with_vhosts(l.bind, l.port, &l.vhosts, cluster_idx);
        out.chains = l
            .tls
            .iter()
            .map(|c| Self::with_vhosts(l.bind, l.port, &c.vhosts, cluster_idx))
            .collect();
        out
    }

    fn with_vhosts(
        bind: Ipv4Addr,
        port: u16,
        vhosts: &[p::VirtualHost],
        cluster_idx: &HashMap<&str, usize>,
    ) -> Listener {
        let mut out = Listener {
            bind,
            port,
            vhosts: Vec::new(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            wildcard_lens: Vec::new(),
            star: None,
            chains: Vec::new(),
        };
        for (i, v) in vhosts.iter().enumerate() {
            out.vhosts.push(VHost {
                domain: v.domain.clone(),
                routes: v
                    .routes
                    .iter()
                    .map(|r| build_route(r, cluster_idx))
                    .collect(),
                require_tls: v.require_tls,
                index: RouteIndex::build(
                    v.routes
                        .iter()
                        .map(|r| (&r.matcher.path, r.matcher.ignore_case)),
                ),
            });
            let d = v.domain.to_ascii_lowercase();
            if d == "*" {
                out.star = Some(i);
            } else if let Some(suffix) = d.strip_prefix('*') {
                out.wildcard_lens.push(suffix.len());
                out.wildcard.insert(suffix.to_string(), i);
            } else {
                out.exact.insert(d, i);
            }
        }
        out.wildcard_lens.sort_unstable_by(|a, b| b.cmp(a));
        out.wildcard_lens.dedup();
        out
    }

    /// §3.5: exact, then the longest suffix wildcard (at least one character before it), then
    /// `*`. `host` must already be lower-case and without port.
    fn vhost(&self, host: &str) -> Option<&VHost> {
        if let Some(&i) = self.exact.get(host) {
            return Some(&self.vhosts[i]);
        }
        for &len in &self.wildcard_lens {
            if host.len() > len && host.is_char_boundary(host.len() - len) {
                if let Some(&i) = self.wildcard.get(&host[host.len() - len..]) {
                    return Some(&self.vhosts[i]);
                }
            }
        }
        self.star.map(|i| &self.vhosts[i])
    }

    pub fn select<'t>(&'t self, req: &RequestView<'_>) -> Decision<'t> {
        self.select_with(req, Strategy::Auto)
    }

    /// Every vhost domain of this listener, in plan order.
    pub fn domains(&self) -> Vec<&str> {
        self.vhosts.iter().map(|v| v.domain.as_str()).collect()
    }

    /// How [`Listener::select`] decides, step by step: the vhost chosen for the host, then each
    /// route in order with the first condition it failed, up to the one that matched.
    pub fn explain<'t>(&'t self, req: &RequestView<'_>) -> Explanation<'t> {
        let host = strip_port(req.authority).to_ascii_lowercase();
        let Some(vh) = self.vhost(&host) else {
            return Explanation {
                vhost: None,
                routes: Vec::new(),
                decision: Decision::NoRoute,
            };
        };
        let mut routes = Vec::new();
        if vh.require_tls && req.scheme != "https" {
            return Explanation {
                vhost: Some(&vh.domain),
                routes,
                decision: Decision::HttpsRedirect,
            };
        }
        for r in &vh.routes {
            let failed = r.first_failure(req);
            routes.push((r, failed));
            if failed.is_none() {
                break;
            }
        }
        Explanation {
            vhost: Some(&vh.domain),
            routes,
            // The decision itself comes from the serving path, so that explain cannot drift.
            decision: self.select(req),
        }
    }

    /// [`Listener::select`] with the route lookup chosen: for the equivalence test and the
    /// benchmark.
    pub fn select_with<'t>(&'t self, req: &RequestView<'_>, strategy: Strategy) -> Decision<'t> {
        let host = strip_port(req.authority);
        let mut buf = [0u8; 256];
        let lowered: Cow<str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            if host.len() <= buf.len() {
                buf[..host.len()].copy_from_slice(host.as_bytes());
                buf[..host.len()].make_ascii_lowercase();
                // Lower-casing ASCII keeps UTF-8 valid.
                Cow::Borrowed(std::str::from_utf8(&buf[..host.len()]).unwrap_or(""))
            } else {
                Cow::Owned(host.to_ascii_lowercase())
            }
        } else {
            Cow::Borrowed(host)
        };
        let Some(vh) = self.vhost(&lowered) else {
            return Decision::NoRoute;
        };
        if vh.require_tls && req.scheme != "https" {
            return Decision::HttpsRedirect;
        }
        match vh.route(req, strategy) {
            Some(r) => Decision::Route(r),
            None => Decision::NoRoute,
        }
    }
}

/// `host:port` -> `host`; `[v6]:port` -> `[v6]`.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(i) => &authority[..=i],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Header value as matched: repeated headers joined with `,` (Envoy, CVE-2020-25017).
fn header_value<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Cow<'h, str>> {
    let mut it = headers.get_all(name).iter();
    let first = it.next()?;
    let first_s = std::str::from_utf8(first.as_bytes()).unwrap_or("");
    match it.next() {
        None => Some(Cow::Borrowed(first_s)),
        Some(second) => {
            let mut s = String::from(first_s);
            for v in std::iter::once(second).chain(it) {
                s.push(',');
                s.push_str(std::str::from_utf8(v.as_bytes()).unwrap_or(""));
            }
            Some(Cow::Owned(s))
        }
    }
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The first value of query parameter `name` (`?k` gives `""`), §3.3.
fn query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k) == name {
            return Some(percent_decode(v));
        }
    }
    None
}

impl Route {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        self.first_failure(req).is_none()
    }

    /// The first match condition `req` fails (`uri`, `method`, `scheme`, `authority`,
    /// `headers`, `queryParams`), or None when the route matches: what `explain` reports.
    pub fn first_failure(&self, req: &RequestView<'_>) -> Option<&'static str> {
        let path = req.path;
        let path_ok = match &self.path {
            PathMatcher::Exact(s) if self.ignore_case => path.eq_ignore_ascii_case(s),
            PathMatcher::Exact(s) => path == s,
            PathMatcher::Prefix(s) if self.ignore_case => {
                path.len() >= s.len()
                    && path.as_bytes()[..s.len()].eq_ignore_ascii_case(s.as_bytes())
            }
            PathMatcher::Prefix(s) => path.starts_with(s.as_str()),
            // ignoreUriCase does not apply to regex (Envoy ignores case_sensitive there).
            PathMatcher::Regex(r) => r.is_match(path),
        };
        if !path_ok {
            return Some("uri");
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method) {
                return Some("method");
            }
        }
        if let Some(m) = &self.scheme {
            if !m.matches(req.scheme) {
                return Some("scheme");
            }
        }
        if let Some(m) = &self.authority {
            if !m.matches(req.authority) {
                return Some("authority");
            }
        }
        for h in &self.headers {
            let v = header_value(req.headers, &h.name);
            let ok = match (&v, h.invert) {
                (Some(v), false) => h.value.matches(v),
                (None, false) => false,
                // withoutHeaders `{}`: the header must be absent.
                (_, true) if matches!(h.value, Matcher::Present) => v.is_none(),
                // A missing header counts as the empty value, then the result is inverted.
                (v, true) => !h.value.matches(v.as_deref().unwrap_or("")),
            };
            if !ok {
                return Some("headers");
            }
        }
        for (name, m) in &self.query {
            match req.query.and_then(|q| query_value(q, name)) {
                Some(v) if m.matches(&v) => {}
                _ => return Some("queryParams"),
            }
        }
        None
    }

    /// The matched prefix length for `rewrite.uri` (§3.14): the whole path for exact and regex
    /// matches, the prefix for prefix matches.
    pub fn matched_prefix_len(&self, path: &str) -> usize {
        match &self.path {
            PathMatcher::Prefix(s) => s.len().min(path.len()),
            _ => path.len(),
        }
    }
}

/// RFC 3986 dot-segment removal (Envoy `normalize_path`; `%2e` counts as a dot). Slashes are
/// not merged and `%2F` is kept (§3.4). `None`: not a valid origin-form path (400).
pub fn normalize_path(path: &str) -> Option<Cow<'_, str>> {
    if !path.starts_with('/') {
        return None;
    }
    let is_dot = |s: &str| s == "." || s.eq_ignore_ascii_case("%2e");
    let is_dotdot = |s: &str| {
        matches!(s.len(), 2 | 4 | 6) && s.to_ascii_lowercase().replace("%2e", ".").eq("..")
    };
    // Fast path: nothing to do unless a segment is a (possibly encoded) dot.
    if !path
        .split('/')
        .any(|s| is_dot(s) || s.starts_with('.') || s.starts_with('%'))
    {
        return Some(Cow::Borrowed(path));
    }
    let segs: Vec<&str> = path[1..].split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segs.len());
    let last = segs.len() - 1;
    for (i, s) in segs.iter().enumerate() {
        if is_dot(s) {
            if i == last {
                out.push("");
            }
        } else if is_dotdot(s) {
            out.pop();
            if i == last {
                out.push("");
            }
        } else {
            out.push(s);
        }
    }
    let mut res = String::with_capacity(path.len());
    for s in &out {
        res.push('/');
        res.push_str(s);
    }
    if res.is_empty() {
        res.push('/');
    }
    if res == path {
        Some(Cow::Borrowed(path))
    } else {
        Some(Cow::Owned(res))
    }
}

/// The route tables of the router benchmark, all on one vhost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTable {
    /// A third each `prefix`, `exact` and `regex` + header; the request hits a prefix route
    /// near the end.
    Mixed,
    /// Every route `prefix: /` plus its own `x-tenant` header; the request hits the last one.
    /// The URI index cannot tell these routes apart.
    HeaderOnly,
    /// Every route a regex with no literal prefix (`.*/u{i}/[a-z]+`); the request hits the last
    /// one. The index's `RegexSet` gate matches, then every route's regex is tried.
    UnprefixedRegex,
}

/// A synthetic table of `n_routes` routes (`kind`) and the mean time of one lookup that hits
/// near the end of it, found by `strategy`: the router benchmark (`cargo xtask bench` calls
/// this). Returns nanoseconds per lookup.
pub fn bench_router(n_routes: usize, lookups: usize, kind: BenchTable, strategy: Strategy) -> f64 {
    let tenant = |i: usize| {
        vec![p::HeaderMatch {
            name: "x-tenant".into(),
            value: p::StrMatch::Exact(format!("t{i}")),
            invert: false,
        }]
    };
    let mut routes = Vec::with_capacity(n_routes);
    for i in 0..n_routes {
        let (path, headers) = match (kind, i % 3) {
            (BenchTable::HeaderOnly, _) => (p::PathMatch::Prefix("/".into()), tenant(i)),
            (BenchTable::UnprefixedRegex, _) => {
                (p::PathMatch::Regex(format!(".*/u{i}/[a-z]+")), Vec::new())
            }
            (_, 0) => (p::PathMatch::Prefix(format!("/svc{i}/")), Vec::new()),
            (_, 1) => (p::PathMatch::Exact(format!("/exact/{i}")), Vec::new()),
            _ => (p::PathMatch::Regex(format!("/re{i}/[a-z]+")), tenant(i)),
        };
        routes.push(p::Route {
            origin: format!("bench {i}"),
            name: None,
            matcher: p::RouteMatch {
                path,
                ignore_case: false,
                method: None,
                scheme: None,
                authority: None,
                headers,
                query: Vec::new(),
            },
            action: p::Action::Direct {
                status: 200,
                body: None,
            },
            request_headers: p::HeaderOps::default(),
            response_headers: p::HeaderOps::default(),
            fault: None,
            mirrors: Vec::new(),
            cors: None,
        });
    }
    let plan = p::HttpPlan {
        listeners: vec![p::Listener {
            bind: Ipv4Addr::UNSPECIFIED,
            port: 80,
            vhosts: vec![p::VirtualHost {
                domain: "bench.example.com".into(),
                require_tls: false,
                routes: routes.into_iter().map(std::sync::Arc::new).collect(),
            }],
            origin: "bench".into(),
            tls: Vec::new(),
        }],
        clusters: Vec::new(),
    };
    let table = Table::build(&plan);
    let l = &table.listeners[0];
    let mut headers = HeaderMap::new();
    let path = match kind {
        BenchTable::Mixed => {
            let target = n_routes.saturating_sub(3) / 3 * 3; // a prefix route near the end
            format!("/svc{target}/x")
        }
        BenchTable::HeaderOnly => {
            let last = n_routes.saturating_sub(1);
            headers.insert(
                "x-tenant",
                http::HeaderValue::from_str(&format!("t{last}")).expect("header value"),
            );
            "/x".to_string()
        }
        BenchTable::UnprefixedRegex => format!("/x/u{}/abc", n_routes.saturating_sub(1)),
    };
    let req = RequestView {
        method: "GET",
        scheme: "http",
        authority: "Bench.Example.com:80",
        path: &path,
        query: None,
        headers: &headers,
    };
    let start = std::time::Instant::now();
    let mut hits = 0usize;
    for _ in 0..lookups {
        let d = l.select_with(std::hint::black_box(&req), strategy);
        if let Decision::Route(_) = std::hint::black_box(d) {
            hits += 1;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / lookups.max(1) as f64;
    assert_eq!(hits, lookups, "benchmark request must hit a route");
    ns
}

#[cfg(test)]
mod tests {
    use super::{bench_router, normalize_path, query_value, strip_port, BenchTable, Strategy};

    #[test]
    fn normalizes_dot_segments_only() {
        let n = |p: &str| normalize_path(p).map(|c| c.into_owned());
        assert_eq!(n("/a/../b").as_deref(), Some("/b"));
        assert_eq!(n("/a/./b/").as_deref(), Some("/a/b/"));
        assert_eq!(n("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(n("/../../x").as_deref(), Some("/x"));
        assert_eq!(n("/a/%2e%2E/b").as_deref(), Some("/b"));
        assert_eq!(n("//a//b").as_deref(), Some("//a//b"));
        assert_eq!(n("/a%2Fb/..").as_deref(), Some("/"));
        assert_eq!(n("/.well-known/x").as_deref(), Some("/.well-known/x"));
        assert_eq!(n("a/b"), None);
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("a.com:8080"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn query_values() {
        assert_eq!(query_value("a=1&b=2&a=3", "a").as_deref(), Some("1"));
        assert_eq!(query_value("k", "k").as_deref(), Some(""));
        assert_eq!(query_value("k=", "k").as_deref(), Some(""));
        assert_eq!(query_value("x=%41b", "x").as_deref(), Some("Ab"));
        assert_eq!(query_value("x=1", "y"), None);
    }

    #[test]
    fn bench_runs() {
        for table in [
            BenchTable::Mixed,
            BenchTable::HeaderOnly,
            BenchTable::UnprefixedRegex,
        ] {
            for strategy in [Strategy::Indexed, Strategy::Linear] {
                assert!(bench_router(300, 100, table, strategy) > 0.0);
            }
        }
    }
}
