//! The request path: downstream hyper connection -> route -> fault / CORS / local action ->
//! weighted cluster -> attempts with retries and timeouts -> response, as Envoy at an Istio
//! ingress gateway does it (§3.8–3.18, 3.22–3.26).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use rand::Rng;

use super::body::{Deadline, Source, UpBody};
use super::cluster::{try_acquire, Cluster, Outcome};
use super::router::{normalize_path, Decision, RequestView, Route, Table};
use crate::plan::http as p;

use super::conn::full;
pub use super::conn::{local_reply, Body, BoxError, ConnInfo};
use super::observe::{flag, Served};
use super::request::headers::{
    apply_ops, small_number, strip_hop_by_hop, EDGE_STRIPPED, X_ENVOY_ATTEMPT_COUNT,
    X_ENVOY_EXTERNAL_ADDRESS, X_ENVOY_ORIGINAL_PATH, X_ENVOY_UPSTREAM_SERVICE_TIME,
    X_FORWARDED_CLIENT_CERT, X_FORWARDED_FOR, X_FORWARDED_PROTO,
};
use super::request::redirect::redirect;
use super::request::retry::{
    classify, grpc_retriable, retriable_error, retriable_status, AttemptError, Tried,
};
use super::request::upstream::hash_key;

/// One generation of configuration: the route table and the clusters it indexes.
pub struct Runtime {
    pub table: Table,
    pub clusters: Vec<Arc<Cluster>>,
    /// HTTPS listeners' certificates and SNI chains, by (bind, port).
    pub tls: std::collections::HashMap<(std::net::Ipv4Addr, u16), Arc<super::tls::TlsListener>>,
    /// Every certificate and CRL those listeners and the clusters loaded (`/certs`).
    pub certs: super::certs::Inventory,
}

impl Runtime {
    pub fn build(plan: &p::HttpPlan) -> Runtime {
        let table = Table::build(plan);
        let clusters = table
            .clusters
            .iter()
            .map(|c| Arc::new(Cluster::new(c)))
            .collect();
        Runtime {
            table,
            clusters,
            tls: Default::default(),
            certs: Default::default(),
        }
    }
}

fn sample(ppm: u32) -> bool {
    ppm >= 1_000_000 || (ppm > 0 && rand::thread_rng().gen_range(0..1_000_000) < ppm)
}

fn with_response_ops(mut r: Response<Body>, route: &Route, conn: &ConnInfo) -> Response<Body> {
    apply_ops(r.headers_mut(), &route.plan.response_headers, conn);
    r
}

/// What routing and forwarding read of the request line, borrowed from the request's own
/// (reference-counted) URI and Host so that nothing is copied per request.
pub(crate) struct Head<'a> {
    /// Host / :authority verbatim (port included).
    authority: &'a str,
    /// Normalised path, without the query; borrowed unless dot segments were removed.
    path: Cow<'a, str>,
    query: Option<&'a str>,
    /// The request's path and query as received, reused upstream when nothing rewrote them.
    original: Option<&'a PathAndQuery>,
}

/// The downstream entry point: never fails (every error becomes a local reply). The route that
/// answered, if any, is returned beside the response for the access log and metrics.
pub async fn handle(
    state: &ArcSwap<Runtime>,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> (Response<Body>, Option<RouteTag>) {
    let rt = state.load_full();
    if req.version() == Version::HTTP_10 || req.version() == Version::HTTP_09 {
        // Istio gateways refuse HTTP/1.0 unless configured otherwise (§3.8).
        return (local_reply(426, ""), None);
    }
    // Cheap clones (shared buffers): they outlive `req`, which the body forwarding consumes.
    let uri = req.uri().clone();
    let host_header;
    let authority = match uri.authority() {
        Some(a) => a.as_str(),
        None => {
            host_header = req.headers().get(header::HOST).cloned();
            match host_header.as_ref().and_then(|h| h.to_str().ok()) {
                Some(h) => h,
                None => return (local_reply(400, ""), None),
            }
        }
    };
    let Some(path) = normalize_path(uri.path()) else {
        return (local_reply(400, ""), None);
    };
    let head = Head {
        authority,
        path,
        query: uri.query(),
        original: uri.path_and_query(),
    };

    // Edge hygiene before routing (§3.13).
    {
        let h = req.headers_mut();
        // One scan instead of twenty removals for the usual request that has none of them.
        if h.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
            for n in EDGE_STRIPPED {
                h.remove(n);
            }
        }
        // Sanitise, then set from the verified client certificate (Istio's gateway default).
        h.remove(X_FORWARDED_CLIENT_CERT);
        if let Some(v) = conn
            .xfcc
            .as_deref()
            .and_then(|x| HeaderValue::from_str(x).ok())
        {
            h.insert(X_FORWARDED_CLIENT_CERT, v);
        }
        let xff = match h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.is_empty() => {
                let mut v = Vec::with_capacity(prev.len() + 1 + conn.peer_ip.len());
                v.extend_from_slice(prev.as_bytes());
                v.push(b',');
                v.extend_from_slice(conn.peer_ip.as_bytes());
                HeaderValue::from_bytes(&v).ok()
            }
            _ => Some(conn.peer_ip.clone()),
        };
        if let Some(v) = xff {
            h.insert(X_FORWARDED_FOR, v);
        }
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(conn.scheme()));
        h.insert(X_ENVOY_EXTERNAL_ADDRESS, conn.peer_ip.clone());
    }

    let listener = rt
        .table
        .listener(conn.bind, conn.port)
        .and_then(|l| match conn.chain {
            Some(c) => l.chains.get(c),
            None => Some(l),
        });
    let Some(listener) = listener else {
        return (flag(local_reply(404, ""), "NR", "route_not_found"), None);
    };
    let view = RequestView {
        method: req.method().as_str(),
        scheme: conn.scheme(),
        authority: head.authority,
        path: &head.path,
        query: head.query,
        headers: req.headers(),
    };
    let route = match listener.select(&view) {
        Decision::NoRoute => return (flag(local_reply(404, ""), "NR", "route_not_found"), None),
        Decision::HttpsRedirect => {
            let host = match head.authority.strip_suffix(":80") {
                Some(h) => h,
                None => head.authority,
            };
            let q = head.query.map(|q| format!("?{q}")).unwrap_or_default();
            let mut r = local_reply(301, "");
            if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{}{q}", head.path)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return (r, None);
        }
        Decision::Route(r) => r,
    };

    let resp = routed(&rt, route, conn, req, &head).await;
    (
        resp,
        Some(RouteTag(route.origin.clone(), route.name.clone())),
    )
}

/// Which route answered (its origin, and its name if it has one), for the access log and
/// metrics; never sent on the wire.
#[derive(Clone, Debug)]
pub struct RouteTag(pub Arc<str>, pub Option<Arc<str>>);

/// Everything after route selection: CORS, faults, the route's action.
async fn routed(
    rt: &Runtime,
    route: &Route,
    conn: &ConnInfo,
    req: Request<Incoming>,
    head: &Head<'_>,
) -> Response<Body> {
    // CORS (§3.18): the filter runs before the router; preflights may be answered here.
    let origin_value = req
        .headers()
        .get(header::ORIGIN)
        .filter(|v| !v.is_empty() && v.to_str().is_ok())
        .cloned();
    let origin = origin_value.as_ref().and_then(|v| v.to_str().ok());
    let mut cors_allowed = false;
    if let (Some(cors), Some(origin)) = (&route.plan.cors, origin) {
        cors_allowed = route
            .cors_origins
            .iter()
            .any(|m| m.matches(origin) || m.matches("*"));
        let acrm = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .filter(|v| !v.is_empty())
            .cloned();
        if req.method() == Method::OPTIONS {
            if let Some(acrm) = acrm {
                if cors_allowed || cors.ignore_unmatched_preflights {
                    let mut r = local_reply(200, "");
                    let h = r.headers_mut();
                    if let (true, Some(v)) = (cors_allowed, &origin_value) {
                        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v.clone());
                    }
                    if cors.allow_credentials {
                        h.insert(
                            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                            HeaderValue::from_static("true"),
                        );
                    }
                    let methods = if cors.allow_methods == "*" {
                        Some(acrm)
                    } else {
                        HeaderValue::from_str(&cors.allow_methods).ok()
                    };
                    if let Some(m) = methods.filter(|m| !m.is_empty()) {
                        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
                    }
                    let headers = if cors.allow_headers == "*" {
                        req.headers()
                            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                            .cloned()
                    } else {
                        HeaderValue::from_str(&cors.allow_headers).ok()
                    };
                    if let Some(v) = headers.filter(|v| !v.is_empty()) {
                        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
                    }
                    if let Some(v) = cors
                        .max_age
                        .as_deref()
                        .and_then(|m| HeaderValue::from_str(m).ok())
                    {
                        h.insert(header::ACCESS_CONTROL_MAX_AGE, v);
                    }
                    return r;
                }
            }
        }
    }

    // Fault filter (§3.12): delay first, then abort; aborts skip router, retries, mirrors.
    if let Some(f) = &route.plan.fault {
        if let Some(d) = &f.delay {
            if sample(d.ppm) {
                tokio::time::sleep(Duration::from_millis(d.delay_ms)).await;
            }
        }
        if let Some(a) = &f.abort {
            if sample(a.ppm) {
                return match (a.http_status, a.grpc_status) {
                    (Some(s), _) => flag(
                        local_reply(s, "fault filter abort"),
                        "FI",
                        "fault_filter_abort",
                    ),
                    (None, Some(g)) => {
                        let mut r = local_reply(200, "");
                        let h = r.headers_mut();
                        h.insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/grpc"),
                        );
                        h.insert("grpc-status", HeaderValue::from(g));
                        h.insert(
                            "grpc-message",
                            HeaderValue::from_static("fault filter abort"),
                        );
                        flag(r, "FI", "fault_filter_abort")
                    }
                    (None, None) => flag(
                        local_reply(500, "fault filter abort"),
                        "FI",
                        "fault_filter_abort",
                    ),
                };
            }
        }
    }

    let fwd = match &route.plan.action {
        p::Action::Redirect(rd) => {
            let r = redirect(
                rd,
                route,
                conn.scheme(),
                head.authority,
                &head.path,
                head.query,
            );
            return with_response_ops(r, route, conn);
        }
        p::Action::Direct { status, body } => {
            let r = local_reply(*status, body.as_deref().unwrap_or(""));
            return with_response_ops(flag(r, "-", "direct_response"), route, conn);
        }
        p::Action::Forward(f) => f,
    };

    let mut resp = forward(rt, route, fwd, conn, req, head).await;
    if cors_allowed {
        if let (Some(cors), Some(origin)) = (&route.plan.cors, origin_value) {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            if cors.allow_credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if !cors.expose_headers.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&cors.expose_headers) {
                    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
                }
            }
        }
    }
    resp
}

async fn forward(
    rt: &Runtime,
    route: &Route,
    fwd: &p::Forward,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    head: &Head<'_>,
) -> Response<Body> {
    // Weighted destination, chosen per request (§3.9).
    let k = if fwd.clusters.len() <= 1 || route.total_weight == 0 {
        0
    } else {
        let mut x = rand::thread_rng().gen_range(0..route.total_weight);
        let mut k = 0;
        for (i, c) in fwd.clusters.iter().enumerate() {
            if x < u64::from(c.weight) {
                k = i;
                break;
            }
            x -= u64::from(c.weight);
        }
        k
    };
    let not_found = || flag(local_reply(503, ""), "NC", "cluster_not_found");
    let Some(wc) = fwd.clusters.get(k) else {
        return with_response_ops(not_found(), route, conn);
    };
    let Some(ci) = route.clusters[k] else {
        // Unknown host, port or subset: Envoy's "cluster not found" (NC).
        return with_response_ops(not_found(), route, conn);
    };
    let cluster = &*rt.clusters[ci];

    // The upstream request head: hop-by-hop gone, header operations applied.
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .filter(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .cloned();
    let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    if fwd.clusters.len() > 1 {
        apply_ops(&mut headers, &wc.request_headers, conn);
        apply_ops(&mut headers, &route.plan.request_headers, conn);
    } else {
        apply_ops(&mut headers, &route.plan.request_headers, conn);
        apply_ops(&mut headers, &wc.request_headers, conn);
    }
    let up_authority = fwd.authority.as_deref().unwrap_or(head.authority);
    // An HTTP/1.1 request usually carries the right Host already.
    if headers.get(header::HOST).map(HeaderValue::as_bytes) != Some(up_authority.as_bytes()) {
        if let Ok(v) = HeaderValue::from_str(up_authority) {
            headers.insert(header::HOST, v);
        }
    }
    let path: &str = &head.path;
    let rewritten: Option<String> = match &fwd.rewrite {
        None => None,
        Some(p::Rewrite::Prefix(r)) => {
            let n = route.matched_prefix_len(path);
            Some(format!("{r}{}", &path[n..]))
        }
        Some(p::Rewrite::Regex { substitution, .. }) => route
            .rewrite_regex
            .as_ref()
            .map(|re| re.replace_all(path, substitution.as_str()).into_owned()),
    };
    if rewritten.as_deref().is_some_and(|n| n != path) {
        // Envoy copies the whole :path, query string included.
        let original = match head.query {
            Some(q) => HeaderValue::from_str(&format!("{path}?{q}")),
            None => HeaderValue::from_str(path),
        };
        if let Ok(v) = original {
            headers.insert(X_ENVOY_ORIGINAL_PATH, v);
        }
    }
    // The received path and query go upstream as they are unless normalised or rewritten.
    let path_and_query = match (&rewritten, &head.path, head.original) {
        (None, Cow::Borrowed(_), Some(pq)) => pq.clone(),
        _ => {
            let new_path = rewritten.as_deref().unwrap_or(path);
            let s = match head.query {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path.to_string(),
            };
            match PathAndQuery::from_maybe_shared(Bytes::from(s)) {
                Ok(pq) => pq,
                Err(_) => return local_reply(400, ""),
            }
        }
    };
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }

    // Mirrors (§3.26) are chosen now; they get the body once it is complete, so the request
    // body keeps a copy while they or a retry may need it.
    let mut mirrored = 0u64;
    for (k, (_, ppm, _)) in route.mirrors.iter().enumerate().take(64) {
        if sample(*ppm) {
            mirrored |= 1 << k;
        }
    }
    let policy = fwd.retry.as_ref();
    let max_attempts = 1 + policy.map_or(0, |p| p.num_retries);
    // The request body streams upstream as it arrives (Envoy's router does not buffer it).
    let src = (!body.is_end_stream()).then(|| Source::new(body, max_attempts > 1 || mirrored != 0));
    let _hold = src.as_ref().map(Source::hold);

    // Mirrors: fire and forget, after rewrite and header operations, never retried (§3.26).
    for (k, (mi, _, shadow)) in route.mirrors.iter().enumerate().take(64) {
        if mirrored & (1 << k) == 0 {
            continue;
        }
        let mc = rt.clusters[*mi].clone();
        let (m, mut hd, pq) = (
            parts.method.clone(),
            headers.clone(),
            path_and_query.clone(),
        );
        if *shadow {
            shadow_host(&mut hd);
        }
        let complete = src.as_ref().map(Source::complete);
        tokio::spawn(async move {
            let body = match complete {
                None => UpBody::Empty,
                // A body beyond the retry buffer gives the mirror up, as Envoy does.
                Some(c) => match c.await {
                    Some(b) => UpBody::Full(Some(b)),
                    None => return,
                },
            };
            let Some(i) = mc.pick(None, &[]) else { return };
            if let Ok(r) = build_upstream(&mc, i, &m, hd, &pq, body, 1) {
                let host = r.headers().get(header::HOST).and_then(|h| h.to_str().ok());
                let _ = mc.client(host).request(r).await;
            }
        });
    }

    // Envoy's circuit breakers, per cluster and shared by the workers: maxRequests bounds the
    // requests in flight whatever the protocol.
    let _active = match try_acquire(&cluster.active_requests, cluster.plan.limits.max_requests) {
        Some(g) => g,
        None => return overflow(),
    };
    let (hash, set_cookie) = hash_key(cluster, &headers, head.query, conn);

    let attempts = async {
        // On an HTTP/1.1 upstream each request in flight holds a connection: beyond
        // maxConnections a request waits in the pending queue (http1MaxPendingRequests) for one,
        // and beyond that overflows, as in Envoy's HTTP/1.1 pool. Waiting counts against the
        // route timeout. (The slot is given back with the response headers; Envoy keeps the
        // connection until the body is done.)
        // Unlimited (no DestinationRule) skips the shared counter altogether.
        let _conn = if cluster.plan.http2 || cluster.plan.limits.max_connections == u32::MAX {
            None
        } else {
            match cluster.conn_slots.try_acquire() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    let Some(_pending) =
                        try_acquire(&cluster.pending, cluster.plan.limits.max_pending_requests)
                    else {
                        return Err(Err(overflow()));
                    };
                    match cluster.conn_slots.acquire().await {
                        Ok(slot) => Some(slot),
                        Err(_) => return Err(Err(overflow())),
                    }
                }
            }
        };
        let mut tried = Tried::default();
        let mut last_err: Option<AttemptError> = None;
        let mut retry_guard = None;
        for attempt in 1..=max_attempts {
            if attempt > 1 {
                let pol = policy.expect("retries imply a policy");
                match try_acquire(&cluster.active_retries, cluster.plan.limits.max_retries) {
                    Some(g) => retry_guard = Some(g),
                    None => return Err(Err(overflow())),
                }
                // Fully jittered exponential back-off, capped at 10x base.
                let base = pol.backoff_base_ms.max(1);
                let cap = (((1u64 << (attempt - 1).min(20)) - 1) * base)
                    .min(10 * base)
                    .max(1);
                let wait = rand::thread_rng().gen_range(0..cap);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                // The body outgrew the retry buffer during the back-off (Envoy: 507).
                if src.as_ref().is_some_and(|s| !s.replayable()) {
                    return Err(Err(local_reply(
                        507,
                        "exceeded request buffer limit while retrying upstream",
                    )));
                }
            }
            let avoid: &[usize] = if policy.is_some_and(|p| p.previous_hosts) {
                tried.as_slice()
            } else {
                &[]
            };
            let picked = if tried.count == 0 {
                cluster.pick(hash, avoid)
            } else {
                cluster.pick_retry(hash, avoid)
            };
            let Some(i) = picked else {
                return Err(Err(flag(
                    local_reply(503, "no healthy upstream"),
                    "UH",
                    "no_healthy_upstream",
                )));
            };
            tried.push(i);
            let ep = &cluster.endpoints[i];
            ep.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ep_guard = super::cluster::Counted(&ep.active);
            // The last possible attempt takes the headers; earlier ones copy them for a retry.
            let hd = if attempt == max_attempts {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };
            let up = match build_upstream(
                cluster,
                i,
                &parts.method,
                hd,
                &path_and_query,
                match &src {
                    Some(s) => s.body(attempt),
                    None => UpBody::Empty,
                },
                attempt,
            ) {
                Ok(r) => r,
                Err(_) => return Err(Err(local_reply(400, ""))),
            };
            let sent = Instant::now();
            let host = up.headers().get(header::HOST).and_then(|h| h.to_str().ok());
            let fut = cluster.client(host).request(up);
            let res = match policy.and_then(|p| p.per_try_timeout_ms) {
                Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), fut).await {
                    Ok(r) => r.map_err(classify),
                    Err(_) => Err(AttemptError::Timeout),
                },
                None => fut.await.map_err(classify),
            };
            match res {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    cluster.record(i, Outcome::Status(status));
                    let retry = policy.is_some_and(|p| {
                        retriable_status(p, status)
                            || (status == 200 && grpc_retriable(p, resp.headers()))
                    }) && replayable(&src);
                    if retry && attempt < max_attempts {
                        continue;
                    }
                    drop(retry_guard);
                    return Ok((resp, sent.elapsed(), ep.addr));
                }
                Err(e) => {
                    cluster.record(i, Outcome::LocalFailure);
                    let retry = policy.is_some_and(|p| retriable_error(p, &e)) && replayable(&src);
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        let e = last_err.unwrap_or(AttemptError::Reset);
        if matches!(e, AttemptError::Timeout) {
            return Err(Err(flag(
                local_reply(504, "upstream request timeout"),
                "UT",
                "response_timeout",
            )));
        }
        // Envoy: a TLS handshake failure is told as the transport failure reason.
        let transport = match &e {
            AttemptError::Connect(Some(t)) => format!(", transport failure reason: {t}"),
            _ => String::new(),
        };
        let msg = if tried.count > 1 {
            format!("upstream connect error or disconnect/reset before headers. retried and the latest reset reason: {}{transport}", e.reason())
        } else {
            format!(
                "upstream connect error or disconnect/reset before headers. reset reason: {}{transport}",
                e.reason()
            )
        };
        let (flags, details) = match (&e, tried.count > 1) {
            (AttemptError::Connect(Some(t)), retried) => (
                if retried { "UF,URX" } else { "UF" },
                super::upstream_tls::connection_failure_details(t),
            ),
            (AttemptError::Connect(None), false) => (
                "UF",
                "upstream_reset_before_response_started{connection_failure}",
            ),
            (AttemptError::Connect(None), true) => (
                "UF,URX",
                "upstream_reset_before_response_started{connection_failure}",
            ),
            (_, false) => (
                "UC",
                "upstream_reset_before_response_started{connection_termination}",
            ),
            (_, true) => (
                "UC,URX",
                "upstream_reset_before_response_started{connection_termination}",
            ),
        };
        Err(Err(flag(local_reply(503, &msg), flags, details)))
    };
    // The route timeout starts once the downstream request is complete and covers the whole
    // response, body included (§3.11).
    let t0 = tokio::time::Instant::now();
    let outcome: Result<_, Result<(), Response<Body>>> = match fwd.timeout_ms {
        Some(ms) => {
            let timer = async {
                if let Some(s) = &src {
                    s.finished().await;
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
            };
            tokio::select! {
                r = attempts => r,
                () = timer => Err(Err(flag(
                    local_reply(504, "upstream request timeout"),
                    "UT",
                    "response_timeout",
                ))),
            }
        }
        None => attempts.await,
    };
    // The same timer then bounds the response body; if the headers came before the request was
    // complete, it counts from now.
    let deadline = fwd.timeout_ms.map(|ms| {
        let start = match &src {
            None => t0,
            Some(s) => s.finished_at().unwrap_or_else(tokio::time::Instant::now),
        };
        start + Duration::from_millis(ms)
    });
    // The cluster (and host) that answered, for the access log and metrics.
    let served = |r: &mut Response<Body>, host: Option<std::net::SocketAddr>| {
        let s = r.extensions_mut().get_or_insert_default::<Served>();
        s.cluster = Some(cluster.name.clone());
        s.dest = cluster.dest.clone();
        s.upstream_host = host;
        if host.is_some() {
            s.details = "via_upstream";
        }
    };
    let (resp, took, host) = match outcome {
        Ok(x) => x,
        Err(Err(mut r)) => {
            served(&mut r, None);
            return with_response_ops(r, route, conn);
        }
        Err(Ok(())) => return with_response_ops(local_reply(503, ""), route, conn),
    };

    let mut resp = resp;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // WebSocket: splice the two upgraded connections once both sides switched.
        let up_upgrade = hyper::upgrade::on(&mut resp);
        if let Some(down) = downstream_upgrade {
            tokio::spawn(async move {
                if let (Ok(d), Ok(u)) = (down.await, up_upgrade.await) {
                    let mut d = hyper_util::rt::TokioIo::new(d);
                    let mut u = hyper_util::rt::TokioIo::new(u);
                    let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
                }
            });
        }
        let mut r = Response::new(full(Bytes::new()));
        served(&mut r, Some(host));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *r.headers_mut() = std::mem::take(resp.headers_mut());
        r.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static("istio-envoy"));
        return r;
    }
    let (mut rparts, rbody) = resp.into_parts();
    // The downstream connection speaks its own version, whatever the upstream used.
    rparts.version = parts.version;
    strip_hop_by_hop(&mut rparts.headers);
    let h = &mut rparts.headers;
    h.insert(header::SERVER, HeaderValue::from_static("istio-envoy"));
    h.insert(
        X_ENVOY_UPSTREAM_SERVICE_TIME,
        small_number(took.as_millis() as u64),
    );
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.append(header::SET_COOKIE, c);
    }
    let rbody = match deadline {
        Some(at) => Deadline::new(rbody, at).boxed(),
        None => rbody.map_err(|e| Box::new(e) as BoxError).boxed(),
    };
    let mut resp = Response::from_parts(rparts, rbody);
    served(&mut resp, Some(host));
    // Response operations: destination level, then route level.
    apply_ops(resp.headers_mut(), &wc.response_headers, conn);
    with_response_ops(resp, route, conn)
}

/// Whether another attempt can carry the request body (none, or a copy within the limit).
fn replayable(src: &Option<Arc<Source>>) -> bool {
    src.as_ref().is_none_or(|s| s.replayable())
}

/// Istio < 1.28: `foo` becomes `foo-shadow`, `foo:8080` becomes `foo-shadow:8080`.
fn shadow_host(h: &mut HeaderMap) {
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let shadowed = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{name}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    };
    if let Ok(v) = HeaderValue::from_str(&shadowed) {
        h.insert(header::HOST, v);
    }
}

fn overflow() -> Response<Body> {
    let mut r = local_reply(
        503,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow",
    );
    r.headers_mut()
        .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    flag(r, "UO", "upstream_reset_before_response_started{overflow}")
}

fn build_upstream(
    c: &Cluster,
    i: usize,
    method: &Method,
    headers: HeaderMap,
    path_and_query: &PathAndQuery,
    body: UpBody,
    attempt: u32,
) -> Result<Request<UpBody>, http::Error> {
    let ep = &c.endpoints[i];
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if c.tls.is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    uri.authority = Some(ep.authority.clone());
    uri.path_and_query = Some(path_and_query.clone());
    let mut r = Request::new(body);
    *r.method_mut() = method.clone();
    *r.uri_mut() = Uri::from_parts(uri)?;
    if c.plan.http2 {
        *r.version_mut() = Version::HTTP_2;
    }
    *r.headers_mut() = headers;
    r.headers_mut()
        .insert(X_ENVOY_ATTEMPT_COUNT, small_number(u64::from(attempt)));
    Ok(r)
}
