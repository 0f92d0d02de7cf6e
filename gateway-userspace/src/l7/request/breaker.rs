//! Envoy's circuit breakers, per cluster and shared by the workers: maxRequests bounds the
//! requests in flight whatever the protocol; on HTTP/1.1 maxConnections and
//! http1MaxPendingRequests bound the connections and the queue waiting for one.

use http::header::HeaderValue;
use http::Response;
use tokio::sync::SemaphorePermit;

use crate::l7::cluster::{try_acquire, Cluster, Counted};
use crate::l7::conn::{local_reply, Body};
use crate::l7::observe::flag;

/// A slot among the cluster's requests in flight, or None when maxRequests is reached.
pub(crate) fn request(cluster: &Cluster) -> Option<Counted<'_>> {
    try_acquire(&cluster.active_requests, cluster.plan.limits.max_requests)
}

/// On an HTTP/1.1 upstream each request in flight holds a connection: beyond maxConnections a
/// request waits in the pending queue (http1MaxPendingRequests) for one, and beyond that
/// overflows, as in Envoy's HTTP/1.1 pool. Waiting counts against the route timeout. (The slot
/// is given back with the response headers; Envoy keeps the connection until the body is
/// done.) Unlimited (no DestinationRule) skips the shared counter altogether.
pub(crate) async fn connection(
    cluster: &Cluster,
) -> Result<Option<SemaphorePermit<'_>>, Response<Body>> {
    if cluster.plan.http2 || cluster.plan.limits.max_connections == u32::MAX {
        return Ok(None);
    }
    match cluster.conn_slots.try_acquire() {
        Ok(slot) => Ok(Some(slot)),
        Err(_) => {
            let Some(_pending) =
                try_acquire(&cluster.pending, cluster.plan.limits.max_pending_requests)
            else {
                return Err(overflow());
            };
            match cluster.conn_slots.acquire().await {
                Ok(slot) => Ok(Some(slot)),
                Err(_) => Err(overflow()),
            }
        }
    }
}

/// A circuit breaker's 503 (Envoy's `UO`).
pub(crate) fn overflow() -> Response<Body> {
    let mut r = local_reply(
        503,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow",
    );
    r.headers_mut()
        .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    flag(r, "UO", "upstream_reset_before_response_started{overflow}")
}
