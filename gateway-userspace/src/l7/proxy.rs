//! The request path: downstream hyper connection -> route -> fault / CORS / local action ->
//! weighted cluster -> attempts with retries and timeouts -> response, as Envoy at an Istio
//! ingress gateway does it (§3.8–3.18, 3.22–3.26).

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body as _, Incoming};

use super::body::Source;
use super::cluster::Cluster;
use super::router::{normalize_path, Decision, RequestView, Route, Table};
use crate::plan::http as p;

pub use super::conn::{local_reply, Body, BoxError, ConnInfo};
use super::observe::flag;
use super::request::attempt::Attempts;
use super::request::cors::{self, Cors};
use super::request::head::upstream_head;
use super::request::headers::{apply_ops, sanitize_edge};
use super::request::redirect::redirect;
use super::request::response::{self, Finish};
use super::request::upstream::{self, hash_key};
use super::request::{breaker, fault, mirror};

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

fn with_response_ops(mut r: Response<Body>, route: &Route, conn: &ConnInfo) -> Response<Body> {
    apply_ops(r.headers_mut(), &route.plan.response_headers, conn);
    r
}

/// What routing and forwarding read of the request line, borrowed from the request's own
/// (reference-counted) URI and Host so that nothing is copied per request.
pub(crate) struct Head<'a> {
    /// Host / :authority verbatim (port included).
    pub(crate) authority: &'a str,
    /// Normalised path, without the query; borrowed unless dot segments were removed.
    pub(crate) path: Cow<'a, str>,
    pub(crate) query: Option<&'a str>,
    /// The request's path and query as received, reused upstream when nothing rewrote them.
    pub(crate) original: Option<&'a PathAndQuery>,
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
    sanitize_edge(req.headers_mut(), conn);

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
    let allowed_origin = match cors::before(route, req.method(), req.headers()) {
        Cors::Preflight(r) => return r,
        Cors::Pass(origin) => origin,
    };
    if let Some(f) = &route.plan.fault {
        if let Some(r) = fault::inject(f).await {
            return r;
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
    if let Some(origin) = allowed_origin {
        cors::after(&mut resp, route, origin);
    }
    resp
}

/// A forwarded request, phase by phase: the weighted cluster, the upstream head, the body
/// source, mirrors, the request breaker, the attempts under the route timeout, the response.
async fn forward(
    rt: &Runtime,
    route: &Route,
    fwd: &p::Forward,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    head: &Head<'_>,
) -> Response<Body> {
    let Some((wc, cluster)) = upstream::pick_cluster(rt, route, fwd) else {
        let r = flag(local_reply(503, ""), "NC", "cluster_not_found");
        return with_response_ops(r, route, conn);
    };
    let (upgrade, downstream_upgrade) = response::websocket(&mut req);
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    let Some(path_and_query) = upstream_head(&mut headers, route, fwd, wc, conn, head, upgrade)
    else {
        return local_reply(400, "");
    };

    // Mirrors are chosen now; they get the body once it is complete, so the request body keeps
    // a copy while they or a retry may need it.
    let mirrored = mirror::choose(route);
    let policy = fwd.retry.as_ref();
    let max_attempts = 1 + policy.map_or(0, |p| p.num_retries);
    // The request body streams upstream as it arrives (Envoy's router does not buffer it).
    let src = (!body.is_end_stream()).then(|| Source::new(body, max_attempts > 1 || mirrored != 0));
    let _hold = src.as_ref().map(Source::hold);
    mirror::spawn(
        rt,
        route,
        mirrored,
        &parts.method,
        &headers,
        &path_and_query,
        src.as_ref(),
    );

    let Some(_active) = breaker::request(cluster) else {
        return breaker::overflow();
    };
    let (hash, set_cookie) = hash_key(cluster, &headers, head.query, conn);
    let attempts = Attempts {
        cluster,
        policy,
        max_attempts,
        method: &parts.method,
        path_and_query: &path_and_query,
        src: &src,
        hash,
    };
    let (outcome, deadline) = attempts.run_with_timeout(fwd.timeout_ms, headers).await;
    let (resp, took, host) = match outcome {
        Ok(x) => x,
        Err(mut r) => {
            response::served(&mut r, cluster, None);
            return with_response_ops(r, route, conn);
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return response::upgraded(resp, downstream_upgrade, cluster, host);
    }
    let finish = Finish {
        cluster,
        wc,
        conn,
        version: parts.version,
        set_cookie,
        deadline,
    };
    with_response_ops(finish.response(resp, took, host), route, conn)
}
