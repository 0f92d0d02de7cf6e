//! The L7 half of the gateway: HTTP listeners serving `plan::http`.
//!
//! - `router`: pure route selection over a precompiled table (`route_index`: its per-vhost index).
//! - `body`: request bodies streamed upstream (with a bounded copy for retries and mirrors), and
//!   the route timeout over response bodies.
//! - `cluster`: upstream endpoints, load balancing, outlier detection, circuit breakers.
//! - `proxy`: the request path (local replies, faults, CORS, retries, timeouts, mirrors).
//! - `tls`: HTTPS termination, the SNI chain per HTTPS server.
//! - `passthrough`: TLS servers proxied as byte streams (SNI passthrough, `TLS` termination
//!   with `tcp` routes), sharing their port with HTTPS servers.
//! - `observe`: access log and request counters.
//! - `listener`: the workers, their `SO_REUSEPORT` sockets, the accept loop and the downstream
//!   connection; `drain`: the shutdown drain and the open-connection count.
//! - `request`: the request path's phases, one module each, called in order by `proxy`.
//!
//! [`L7::apply`] binds every listener of a plan before it returns (so the agent reports ready
//! only once they accept), then publishes the new [`proxy::Runtime`] by one atomic swap:
//! connections in flight keep the generation they loaded; the next request sees the new one.
//!
//! Requests run on L7 workers, one thread per core with its own single-threaded runtime, each
//! accepting on its own `SO_REUSEPORT` socket of every listener and holding its own upstream
//! connection pools (Envoy's worker model, and HAProxy's threads): a request stays on the thread
//! that accepted its connection, with no work stealing and no cross-thread wake-ups.

pub mod body;
pub mod certs;
pub mod cluster;
pub mod conn;
mod drain;
pub mod limits;
pub mod listener;
pub mod observe;
pub mod overload;
pub mod passthrough;
pub mod proxy;
mod request;
mod route_index;
pub mod router;
pub mod tls;
pub mod upstream_tls;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::plan::http::HttpPlan;
use crate::plan::stream::StreamPlan;
pub use drain::{active_connections, drain, CLOSING, DRAINING, SERVING};
use listener::{accept_loop, bind_workers, workers};
pub use listener::{worker_count, worker_index};
use proxy::Runtime;

pub struct L7 {
    state: Arc<ArcSwap<Runtime>>,
    listeners: BTreeMap<(Ipv4Addr, u16), Bound>,
}

/// A listener's bound address and its accept loops, one per worker.
type Bound = (SocketAddr, Vec<JoinHandle<()>>);

impl Default for L7 {
    fn default() -> Self {
        L7 {
            state: Arc::new(ArcSwap::from_pointee(Runtime::build(&HttpPlan::default()))),
            listeners: BTreeMap::new(),
        }
    }
}

impl L7 {
    /// Binds the plan's new listeners, swaps the route table, then closes listeners the plan no
    /// longer has (their open connections finish on their own). On a bind error nothing is
    /// swapped and the listeners bound by this call are closed again.
    /// The route table and clusters being served, swapped whole on each apply: for the admin's
    /// `/clusters`.
    pub fn runtime(&self) -> Arc<ArcSwap<Runtime>> {
        self.state.clone()
    }

    pub async fn apply(&mut self, plan: &HttpPlan) -> Result<(), Vec<String>> {
        self.apply_with_streams(plan, &StreamPlan::default()).await
    }

    /// [`L7::apply`] for a whole plan: its HTTP listeners and its stream (TLS) listeners.
    pub async fn apply_plan(&mut self, plan: &crate::plan::Plan) -> Result<(), Vec<String>> {
        self.apply_with_streams(&plan.http, &plan.streams).await
    }

    async fn apply_with_streams(
        &mut self,
        plan: &HttpPlan,
        streams: &StreamPlan,
    ) -> Result<(), Vec<String>> {
        let mut new = Vec::new();
        let mut errors = Vec::new();
        let mut keys: Vec<(Ipv4Addr, u16)> = plan
            .listeners
            .iter()
            .map(|l| (l.bind, l.port))
            .chain(streams.listeners.iter().map(|l| (l.bind, l.port)))
            .collect();
        keys.sort();
        keys.dedup();
        for &key in &keys {
            if self.listeners.contains_key(&key) {
                continue;
            }
            match bind_workers(SocketAddr::from(key)) {
                Ok(socks) => new.push((key, socks)),
                Err(e) => errors.push(format!("binding HTTP listener {}:{}: {e}", key.0, key.1)),
            }
        }
        // Certificates are read before anything changes: a bad file keeps the old generation.
        let stream_clusters = passthrough::clusters(streams);
        let mut tls = std::collections::HashMap::new();
        for &key in &keys {
            let https = plan
                .listeners
                .iter()
                .find(|l| (l.bind, l.port) == key && !l.tls.is_empty());
            let stream = streams.listeners.iter().find(|l| (l.bind, l.port) == key);
            if https.is_none() && stream.is_none() {
                continue;
            }
            match tls::TlsListener::build(https, stream, &stream_clusters) {
                Ok(t) => {
                    tls.insert(key, Arc::new(t));
                }
                Err(e) => errors.extend(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut rt = Runtime::build(plan);
        rt.tls = tls;
        rt.certs = certs::inventory(plan, streams);
        self.state.store(Arc::new(rt));
        for (key, (addr, socks)) in new {
            log::info!("HTTP listener on {addr}");
            let tasks = socks
                .into_iter()
                // Each worker gets one socket per family (the IPv6 twins follow the IPv4 ones).
                .zip(workers().iter().cycle())
                .map(|(sock, h)| h.spawn(accept_loop(sock, key, self.state.clone())))
                .collect();
            self.listeners.insert(key, (addr, tasks));
        }
        self.listeners.retain(|k, (addr, tasks)| {
            let stay = keys.contains(k);
            if !stay {
                log::info!("HTTP listener on {addr} closed");
                tasks.iter().for_each(JoinHandle::abort);
            }
            stay
        });
        Ok(())
    }

    /// Stops accepting on every listener (shutdown); open connections go on.
    pub fn close_listeners(&mut self) {
        for (addr, tasks) in std::mem::take(&mut self.listeners).into_values() {
            log::info!("HTTP listener on {addr} closed");
            tasks.iter().for_each(JoinHandle::abort);
        }
    }

    /// The bound addresses, by (bind, port) of the plan.
    pub fn bound(&self) -> Vec<SocketAddr> {
        self.listeners.values().map(|(a, _)| *a).collect()
    }
}

impl Drop for L7 {
    fn drop(&mut self) {
        for (_, tasks) in self.listeners.values() {
            tasks.iter().for_each(JoinHandle::abort);
        }
    }
}
