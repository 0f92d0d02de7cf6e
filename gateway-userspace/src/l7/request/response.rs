//! The downstream response: a WebSocket upgrade spliced, or the upstream's head cleaned
//! (hop-by-hop gone, `server`, `x-envoy-upstream-service-time`, a generated hash cookie), the
//! body under the route timeout's deadline, and the response header operations.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::l7::body::Deadline;
use crate::l7::cluster::Cluster;
use crate::l7::conn::{full, Body, BoxError, ConnInfo};
use crate::l7::observe::Served;
use crate::l7::request::headers::{
    apply_ops, small_number, strip_hop_by_hop, X_ENVOY_UPSTREAM_SERVICE_TIME,
};
use crate::plan::http as p;

/// A WebSocket upgrade request: its `Upgrade` value, and the downstream connection once
/// upgraded.
pub(crate) fn websocket<B>(req: &mut Request<B>) -> (Option<HeaderValue>, Option<OnUpgrade>) {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .filter(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .cloned();
    let downstream = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut *req));
    (upgrade, downstream)
}

/// Marks the cluster (and host) that answered, for the access log and metrics.
pub(crate) fn served(r: &mut Response<Body>, cluster: &Cluster, host: Option<SocketAddr>) {
    let s = r.extensions_mut().get_or_insert_default::<Served>();
    s.cluster = Some(cluster.name.clone());
    s.dest = cluster.dest.clone();
    s.upstream_host = host;
    if host.is_some() {
        s.details = "via_upstream";
    }
}

/// A 101 from the upstream: the two upgraded connections are spliced once both sides
/// switched, and the 101 goes downstream as it is (no response operations).
pub(crate) fn upgraded(
    mut resp: Response<Incoming>,
    downstream: Option<OnUpgrade>,
    cluster: &Cluster,
    host: SocketAddr,
) -> Response<Body> {
    let up_upgrade = hyper::upgrade::on(&mut resp);
    if let Some(down) = downstream {
        tokio::spawn(async move {
            if let (Ok(d), Ok(u)) = (down.await, up_upgrade.await) {
                let mut d = hyper_util::rt::TokioIo::new(d);
                let mut u = hyper_util::rt::TokioIo::new(u);
                let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
            }
        });
    }
    let mut r = Response::new(full(Bytes::new()));
    served(&mut r, cluster, Some(host));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *r.headers_mut() = std::mem::take(resp.headers_mut());
    r.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("istio-envoy"));
    r
}

/// What the downstream response is built from, besides the upstream's answer.
pub(crate) struct Finish<'a> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) wc: &'a p::WeightedCluster,
    pub(crate) conn: &'a ConnInfo,
    /// The downstream request's version, which the response speaks whatever the upstream used.
    pub(crate) version: Version,
    /// A consistent-hash cookie generated for this request.
    pub(crate) set_cookie: Option<String>,
    /// The route timeout's deadline for the response body.
    pub(crate) deadline: Option<tokio::time::Instant>,
}

impl Finish<'_> {
    /// The downstream response to the upstream's `resp` from `host`, which took `took`, with
    /// the destination's response operations (the route's are left to the caller).
    pub(crate) fn response(
        self,
        resp: Response<Incoming>,
        took: Duration,
        host: SocketAddr,
    ) -> Response<Body> {
        let (mut rparts, rbody) = resp.into_parts();
        rparts.version = self.version;
        strip_hop_by_hop(&mut rparts.headers);
        let h = &mut rparts.headers;
        h.insert(header::SERVER, HeaderValue::from_static("istio-envoy"));
        h.insert(
            X_ENVOY_UPSTREAM_SERVICE_TIME,
            small_number(took.as_millis() as u64),
        );
        if let Some(c) = self.set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
            h.append(header::SET_COOKIE, c);
        }
        let rbody = match self.deadline {
            Some(at) => Deadline::new(rbody, at).boxed(),
            None => rbody.map_err(|e| Box::new(e) as BoxError).boxed(),
        };
        let mut resp = Response::from_parts(rparts, rbody);
        served(&mut resp, self.cluster, Some(host));
        apply_ops(resp.headers_mut(), &self.wc.response_headers, self.conn);
        resp
    }
}
