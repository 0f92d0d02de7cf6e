//! The L7 half of the gateway: HTTP listeners serving `plan::http`.
//!
//! - `router`: pure route selection over a precompiled table (`route_index`: its per-vhost index).
//! - `cluster`: upstream endpoints, load balancing, outlier detection, circuit breakers.
//! - `proxy`: the request path (local replies, faults, CORS, retries, timeouts, mirrors).
//! - `tls`: HTTPS termination, the SNI chain per HTTPS server.
//! - `passthrough`: TLS servers proxied as byte streams (SNI passthrough, `TLS` termination
//!   with `tcp` routes), sharing their port with HTTPS servers.
//! - `observe`: access log and request counters.
//!
//! [`L7::apply`] binds every listener of a plan before it returns (so the agent reports ready
//! only once they accept), then publishes the new [`proxy::Runtime`] by one atomic swap:
//! connections in flight keep the generation they loaded; the next request sees the new one.

pub mod cluster;
pub mod observe;
pub mod passthrough;
pub mod proxy;
mod route_index;
pub mod router;
pub mod tls;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::plan::http::HttpPlan;
use crate::plan::stream::StreamPlan;
use proxy::{ConnInfo, Runtime};

/// Envoy's default request-header limit (60 KiB): beyond it the client gets 431.
pub const MAX_HEADER_BYTES: usize = 60 * 1024;
/// A client that has not sent its request head by then is disconnected.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub struct L7 {
    state: Arc<ArcSwap<Runtime>>,
    listeners: BTreeMap<(Ipv4Addr, u16), (SocketAddr, JoinHandle<()>)>,
}

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
            match TcpListener::bind(SocketAddr::from(key)).await {
                Ok(sock) => new.push((key, sock)),
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
        self.state.store(Arc::new(rt));
        for (key, sock) in new {
            let addr = sock.local_addr().unwrap_or(SocketAddr::from(key));
            log::info!("HTTP listener on {addr}");
            let task = tokio::spawn(accept_loop(sock, key, self.state.clone()));
            self.listeners.insert(key, (addr, task));
        }
        self.listeners.retain(|k, (addr, task)| {
            let stay = keys.contains(k);
            if !stay {
                log::info!("HTTP listener on {addr} closed");
                task.abort();
            }
            stay
        });
        Ok(())
    }

    /// The bound addresses, by (bind, port) of the plan.
    pub fn bound(&self) -> Vec<SocketAddr> {
        self.listeners.values().map(|(a, _)| *a).collect()
    }
}

impl Drop for L7 {
    fn drop(&mut self) {
        for (_, t) in self.listeners.values() {
            t.abort();
        }
    }
}

async fn accept_loop(sock: TcpListener, key: (Ipv4Addr, u16), state: Arc<ArcSwap<Runtime>>) {
    loop {
        let (stream, peer) = match sock.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("HTTP listener {}:{}: accept: {e}", key.0, key.1);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let mut conn = ConnInfo {
                bind: key.0,
                port: key.1,
                peer,
                chain: None,
                xfcc: None,
            };
            // The generation current at accept decides whether this connection is TLS.
            let tls = state.load().tls.get(&key).cloned();
            match tls {
                Some(t) => {
                    // A port with stream chains decides from the peeked ClientHello; an
                    // HTTPS chain then goes on as on any HTTPS port.
                    let mut chosen = None;
                    if let Some(streams) = t.streams() {
                        match t.route(&stream).await {
                            None => return,
                            Some(tls::Route::Stream(i)) => {
                                passthrough::serve(&streams.chains[i], stream, peer).await;
                                return;
                            }
                            Some(tls::Route::Https(i)) => chosen = Some(i),
                        }
                    }
                    let Some((stream, chain)) = t.accept(stream, chosen).await else {
                        return;
                    };
                    conn.chain = Some(chain);
                    conn.xfcc = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| tls::xfcc(c.as_ref()).into());
                    serve(TokioIo::new(stream), conn, state).await;
                }
                None => serve(TokioIo::new(stream), conn, state).await,
            }
        });
    }
}

/// One downstream connection, HTTP/1.1 or h2 (prior knowledge, or ALPN over TLS).
async fn serve<I>(io: TokioIo<I>, conn: ConnInfo, state: Arc<ArcSwap<Runtime>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let (state, conn) = (state.clone(), conn.clone());
        async move {
            let (start, started) = (std::time::Instant::now(), std::time::SystemTime::now());
            let info = observe::capture(&req);
            let resp = proxy::handle(state, conn.clone(), req).await?;
            observe::record(&conn, info, &resp, start.elapsed(), started);
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let _ = b.serve_connection_with_upgrades(io, svc).await;
}
