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
pub mod limits;
pub mod observe;
pub mod overload;
pub mod passthrough;
pub mod proxy;
mod request;
mod route_index;
pub mod router;
pub mod tls;
pub mod upstream_tls;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::plan::http::HttpPlan;
use crate::plan::stream::StreamPlan;
use conn::ConnInfo;
use proxy::Runtime;

/// Drain stages, process-wide, as Envoy drains at shutdown: [`SERVING`]; [`DRAINING`]: HTTP/1.1
/// responses carry `connection: close` and HTTP/2 connections get GOAWAY, so clients move to
/// other gateways while this one still accepts; [`CLOSING`]: listeners are closed and every
/// connection ends once its in-flight requests are done.
pub const SERVING: u8 = 0;
pub const DRAINING: u8 = 1;
pub const CLOSING: u8 = 2;
static DRAIN: std::sync::LazyLock<tokio::sync::watch::Sender<u8>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(SERVING).0);
/// The stage, read per request without a lock.
static STAGE: AtomicU8 = AtomicU8::new(SERVING);
/// The open-file limit stopped an accept (logged once).
static FD_CAP_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Downstream HTTP connections open now (what a shutdown waits for).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Moves the drain forward to `stage` (never back).
pub fn drain(stage: u8) {
    STAGE.fetch_max(stage, Ordering::AcqRel);
    DRAIN.send_if_modified(|s| {
        let moved = *s < stage;
        *s = (*s).max(stage);
        moved
    });
}

/// Downstream HTTP connections open now.
pub fn active_connections() -> usize {
    ACTIVE.load(Ordering::Acquire)
}

struct ActiveGuard;

impl ActiveGuard {
    fn new() -> ActiveGuard {
        ACTIVE.fetch_add(1, Ordering::AcqRel);
        ActiveGuard
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct L7 {
    state: Arc<ArcSwap<Runtime>>,
    listeners: BTreeMap<(Ipv4Addr, u16), Bound>,
}

/// A listener's bound address and its accept loops, one per worker.
type Bound = (SocketAddr, Vec<JoinHandle<()>>);

thread_local! {
    /// The index of the L7 worker running on this thread (0 elsewhere).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// How many L7 workers there are: one per core.
pub fn worker_count() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The L7 worker this thread is (0 off the workers); it picks the worker's upstream pools.
pub fn worker_index() -> usize {
    WORKER.with(Cell::get)
}

/// The workers' runtimes, started on first use; they live as long as the process.
fn workers() -> &'static [Handle] {
    static W: OnceLock<Vec<Handle>> = OnceLock::new();
    W.get_or_init(|| {
        (0..worker_count())
            .map(|i| {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name(format!("l7-worker-{i}"))
                    .spawn(move || {
                        WORKER.with(|w| w.set(i));
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("L7 worker runtime");
                        let _ = tx.send(rt.handle().clone());
                        rt.block_on(std::future::pending::<()>());
                    })
                    .expect("L7 worker thread");
                rx.recv().expect("L7 worker started")
            })
            .collect()
    })
}

/// One listening socket per worker on `addr`, all sharing the port (`SO_REUSEPORT`: the kernel
/// spreads connections over them); each is registered with its worker's runtime. A wildcard
/// `0.0.0.0` listener gets an IPv6 twin on `[::]` (IPV6_V6ONLY, same port): IPv6 clients of an
/// IPv6 VIP reach the same route table. Without IPv6 in the kernel the twin is left out.
fn bind_workers(addr: SocketAddr) -> std::io::Result<(SocketAddr, Vec<TcpListener>)> {
    let mut bound = addr;
    let mut out = Vec::new();
    for h in workers() {
        let _ctx = h.enter();
        let s = TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        s.set_reuseport(true)?;
        // Port 0: the first socket picks the port, the others join it.
        s.bind(bound)?;
        let l = s.listen(1024)?;
        bound = l.local_addr()?;
        out.push(l);
    }
    if addr.ip().is_unspecified() {
        let twin = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), bound.port());
        let mut v6 = Vec::new();
        let res: std::io::Result<()> = workers().iter().try_for_each(|h| {
            let _ctx = h.enter();
            let s = TcpSocket::new_v6()?;
            s.set_reuseaddr(true)?;
            s.set_reuseport(true)?;
            set_v6only(&s)?;
            s.bind(twin)?;
            v6.push(s.listen(1024)?);
            Ok(())
        });
        match res {
            Ok(()) => out.extend(v6),
            Err(e) => log::warn!("HTTP listener {bound}: no IPv6 twin on {twin}: {e}"),
        }
    }
    Ok((bound, out))
}

/// IPV6_V6ONLY on: the socket takes IPv6 only, beside the IPv4 one on the same port.
fn set_v6only(s: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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

async fn accept_loop(sock: TcpListener, key: (Ipv4Addr, u16), state: Arc<ArcSwap<Runtime>>) {
    loop {
        let (stream, peer) = match sock.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and say once what caps the
                // connections (a line per failed accept would flood the log).
                if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                    if !FD_CAP_LOGGED.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "HTTP listener {}:{}: accept: {e}: the open-file limit caps downstream connections ({} open now); new ones wait in the backlog until some close. Raise the limit (ulimit -n, the pod's nofile), or set --max-connections below it (logged once)",
                            key.0,
                            key.1,
                            limits::downstream_connections()
                        );
                    }
                } else {
                    log::warn!("HTTP listener {}:{}: accept: {e}", key.0, key.1);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Overload: beyond --max-connections the connection is closed at once (dropped here).
        let Some(slot) = limits::admit() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        // One span per downstream connection: what is logged while serving it carries its peer
        // and listener. A span prints nothing by itself: no line per connection at info.
        let span = tracing::info_span!("conn", %peer, port = key.1);
        let task = async move {
            let _slot = slot;
            let mut conn = ConnInfo::new(key.0, key.1, peer);
            if let Ok(a) = stream.local_addr() {
                conn.local = a;
            }
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
                    conn.sni = stream.get_ref().1.server_name().map(Into::into);
                    conn.xfcc = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| tls::xfcc(c.as_ref()).into());
                    serve(stream, conn, state).await;
                }
                None => serve(stream, conn, state).await,
            }
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }
}

/// Marks a request's response done for the head timer, however the service future ends.
struct HeadDone<'a>(&'a limits::HeadTimer);

impl Drop for HeadDone<'_> {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// One downstream connection, HTTP/1.1 or h2 (prior knowledge, or ALPN over TLS).
async fn serve<I>(io: I, conn: ConnInfo, state: Arc<ArcSwap<Runtime>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = limits::Activity::new();
    let head = limits::HeadTimer::default();
    let io = TokioIo::new(limits::Tracked::new(io, activity.clone(), head.clone()));
    let _active = ActiveGuard::new();
    let mut drain = DRAIN.subscribe();
    let mut overloaded = overload::subscribe();
    // Set by the first HTTP/2 request: a drain sends such a connection GOAWAY at once.
    let h2 = Arc::new(AtomicBool::new(false));
    // One shared context per connection: a request clones one Arc, not the connection's fields.
    let ctx = Arc::new((state, conn, h2.clone(), head.clone()));
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move {
            let (state, conn, h2, head) = &*ctx;
            let version = req.version();
            if version == http::Version::HTTP_2 {
                h2.store(true, Ordering::Relaxed);
                head.disable();
            }
            head.request_started();
            let _done = HeadDone(head);
            let mut req = req;
            // Edge hygiene: the gateway owns the request id (Envoy at the edge regenerates it);
            // set before capture so the access log prints the one sent upstream.
            req.headers_mut().insert(
                request::headers::X_REQUEST_ID,
                request::headers::request_id(),
            );
            let info = observe::capture(&req);
            let what = log::log_enabled!(log::Level::Debug)
                .then(|| format!("{} {}", req.method(), req.uri()));
            let (resp, route) = proxy::handle(state, conn, req).await;
            if let Some(what) = what {
                // Inside the connection's span: the line carries its peer and port.
                log::debug!("{what}: {}", resp.status().as_u16());
            }
            let route = route.map(|r| (r.0, r.1));
            let mut resp = resp;
            let closing = STAGE.load(Ordering::Relaxed) >= DRAINING
                || overload::state() >= overload::KEEPALIVE_OFF;
            if closing && version < http::Version::HTTP_2 {
                // Draining, or keep-alive off under overload: this response is the
                // connection's last (hyper closes after it).
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, std::convert::Infallible>(observe::finish(conn, info, resp, route))
        }
    });
    let lim = limits::get();
    let mut b = auto::Builder::new(TokioExecutor::new());
    // A request head beyond the buffer is answered 431 (hyper parses the head in it; bodies
    // stream through and are not held by it).
    b.http1()
        .timer(TokioTimer::new())
        // The head timeout is `head` below (hyper's would also cut idle keep-alives).
        .header_read_timeout(None)
        .max_headers(lim.max_headers_count)
        .max_buf_size(lim.max_header_bytes().max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(lim.max_header_bytes() as u32)
        .max_concurrent_streams(lim.h2_max_concurrent_streams)
        .initial_stream_window_size(65536)
        .initial_connection_window_size(1024 * 1024)
        .max_pending_accept_reset_streams(lim.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(lim.h2_max_local_error_reset_streams)
        .max_send_buf_size(lim.h2_max_send_buf_size);
    let conn = b.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let mut shutting = false;
    let idle = activity.idle(lim.stream_idle_timeout);
    tokio::pin!(idle);
    let head_expired = head.expired(lim.request_headers_timeout);
    tokio::pin!(head_expired);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            // Nothing moved either way for the idle timeout: the connection is dropped.
            _ = idle.as_mut() => {
                log::debug!("downstream connection idle for {:?}: closed", lim.stream_idle_timeout);
                return;
            }
            // An HTTP/1.1 head not complete within --request-headers-timeout of its first byte.
            _ = head_expired.as_mut() => {
                log::debug!("request head not complete within {:?}: closed", lim.request_headers_timeout);
                return;
            }
            changed = drain.changed(), if !shutting => {
                let stage = if changed.is_ok() { *drain.borrow_and_update() } else { CLOSING };
                // GOAWAY for HTTP/2 as soon as the drain starts; at closing, every connection
                // finishes its in-flight requests and closes (an idle one at once).
                if stage >= CLOSING || (stage >= DRAINING && h2.load(Ordering::Relaxed)) {
                    conn.as_mut().graceful_shutdown();
                    shutting = true;
                }
            }
            // Overload (keep-alive off): an idle connection closes now, a busy one after its
            // requests in flight, HTTP/2 with GOAWAY; the memory they hold is given back.
            changed = overloaded.changed(), if !shutting => {
                if changed.is_ok() && *overloaded.borrow_and_update() >= overload::KEEPALIVE_OFF {
                    conn.as_mut().graceful_shutdown();
                    shutting = true;
                }
            }
        }
    }
}
