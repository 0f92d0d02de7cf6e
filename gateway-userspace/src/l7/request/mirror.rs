//! Mirrors (§3.26): sampled per request, sent after rewrite and header operations, fire and
//! forget, never retried. A mirror gets the request body once it is complete.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::Method;

use crate::l7::body::{Source, UpBody};
use crate::l7::proxy::Runtime;
use crate::l7::request::fault::sample;
use crate::l7::request::upstream::build_upstream;
use crate::l7::router::Route;

/// The route's mirrors this request goes to, as a bit set over `route.mirrors` (the first 64).
pub(crate) fn choose(route: &Route) -> u64 {
    let mut mirrored = 0u64;
    for (k, (_, ppm, _)) in route.mirrors.iter().enumerate().take(64) {
        if sample(*ppm) {
            mirrored |= 1 << k;
        }
    }
    mirrored
}

/// Spawns one copy of the upstream request per chosen mirror.
pub(crate) fn spawn(
    rt: &Runtime,
    route: &Route,
    mirrored: u64,
    method: &Method,
    headers: &HeaderMap,
    path_and_query: &PathAndQuery,
    src: Option<&Arc<Source>>,
) {
    for (k, (mi, _, shadow)) in route.mirrors.iter().enumerate().take(64) {
        if mirrored & (1 << k) == 0 {
            continue;
        }
        let mc = rt.clusters[*mi].clone();
        let (m, mut hd, pq) = (method.clone(), headers.clone(), path_and_query.clone());
        if *shadow {
            shadow_host(&mut hd);
        }
        let complete = src.map(Source::complete);
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
