//! TLS connections proxied as byte streams (`plan::stream`, notes §3.7 and §3.27).
//!
//! The ClientHello is *peeked* (MSG_PEEK), never consumed, so a passthrough chain splices the
//! socket with every byte the client sent, and a terminating chain (or an HTTPS chain on the
//! same port) hands rustls the untouched stream. A ClientHello split over several segments is
//! awaited segment by segment: the peek reports "would block" while the record is incomplete,
//! which clears tokio's readiness, so the next wake-up is new data (Envoy's `tls_inspector`
//! waits the same way).
//!
//! Chain choice follows Envoy's filter-chain match: destination address (longest matching
//! `destinationSubnets` prefix, else chains without subnets), then SNI (exact, longest
//! `*.suffix`, no names), then ALPN. No chain: the connection is closed. Per connection: a
//! weighted destination, an endpoint by the cluster's load balancer (`useSourceIp` hashes the
//! client address), one connect attempt within the DestinationRule's `connectTimeout`
//! (Envoy `tcp_proxy`: a failure closes the client), TLS to the endpoint when the
//! DestinationRule says so (terminate, then originate; a failed upstream handshake is a connect
//! failure), `maxConnections` per cluster, outlier detection fed with connect failures, and
//! Envoy's 1 h idle timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rand::Rng;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

use super::cluster::{fnv, now_ms, try_acquire, Cluster, Counted, Outcome};
use super::observe::TcpConn;
use crate::plan::http as hp;
use crate::plan::stream as sp;

/// A client that has not sent a whole ClientHello by then is disconnected (Envoy's default
/// `listener_filters_timeout`, 15 s, with `continue_on_listener_filters_timeout` off).
pub const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy `tls_inspector`'s largest ClientHello; a longer one is treated as having no SNI.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;
/// Envoy `tcp_proxy`'s default idle timeout, which Istio keeps.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What the ClientHello says about where the connection should go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hello {
    /// `server_name` (host_name type), lower-cased.
    pub sni: Option<String>,
    /// `application_layer_protocol_negotiation` values, in the client's order.
    pub alpn: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    Hello(Hello),
    /// Not a TLS ClientHello: matched as a connection without SNI, as Envoy does.
    NotTls,
}

/// Parses the TLS records at the start of a connection up to the end of the ClientHello
/// (which may span several handshake records).
pub fn parse_client_hello(buf: &[u8]) -> Parsed {
    let mut hs: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        // Record header: type 22 (handshake), version 3.x, length.
        let rest = &buf[pos.min(buf.len())..];
        if rest.first().is_some_and(|&t| t != 22) || rest.get(1).is_some_and(|&v| v != 3) {
            return Parsed::NotTls;
        }
        let Some(h) = buf.get(pos..pos + 5) else {
            return Parsed::Incomplete;
        };
        if h[0] != 22 || h[1] != 3 {
            return Parsed::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if len == 0 || len > 16384 + 2048 {
            return Parsed::NotTls;
        }
        let Some(frag) = buf.get(pos + 5..pos + 5 + len) else {
            return Parsed::Incomplete;
        };
        hs.extend_from_slice(frag);
        pos += 5 + len;
        if hs.len() >= 4 {
            if hs[0] != 1 {
                return Parsed::NotTls; // not a ClientHello
            }
            let body_len =
                (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
            if hs.len() >= 4 + body_len {
                return match client_hello_body(&hs[4..4 + body_len]) {
                    Some(h) => Parsed::Hello(h),
                    None => Parsed::NotTls,
                };
            }
        }
    }
}

/// A cursor over big-endian, length-prefixed TLS structures.
struct Rd<'b>(&'b [u8]);

impl<'b> Rd<'b> {
    fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'b [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'b [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn client_hello_body(body: &[u8]) -> Option<Hello> {
    let mut r = Rd(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut hello = Hello::default();
    if r.0.is_empty() {
        return Some(hello); // no extensions at all
    }
    let mut exts = Rd(r.vec16()?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let mut data = Rd(exts.vec16()?);
        match ty {
            0 => {
                let mut list = Rd(data.vec16()?);
                while !list.0.is_empty() {
                    let kind = list.u8()?;
                    let name = list.vec16()?;
                    if kind == 0 && hello.sni.is_none() {
                        let name = std::str::from_utf8(name).ok()?;
                        hello.sni = Some(name.to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let mut list = Rd(data.vec16()?);
                while !list.0.is_empty() {
                    let p = list.vec8()?;
                    hello.alpn.push(String::from_utf8_lossy(p).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

/// Waits for the whole ClientHello without consuming it. None: the client closed, sent
/// garbage we cannot wait on, or timed out.
pub async fn peek_client_hello(s: &TcpStream) -> Option<Hello> {
    let work = async {
        // Most ClientHellos fit a few KiB; the buffer grows only for a longer one.
        let mut buf = vec![0u8; 8192];
        loop {
            s.readable().await.ok()?;
            let r = s.try_io(Interest::READABLE, || {
                // SAFETY: recv into a buffer we own, of its length.
                let n = unsafe {
                    libc::recv(
                        s.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_PEEK,
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                let n = n as usize;
                if n == 0 {
                    return Ok(None); // closed before a ClientHello
                }
                match parse_client_hello(&buf[..n]) {
                    // Wait for the next segment: "would block" clears the readiness.
                    Parsed::Incomplete if n < buf.len() => Err(io::ErrorKind::WouldBlock.into()),
                    // The buffer is full of an unfinished ClientHello: room for more.
                    Parsed::Incomplete if buf.len() < MAX_CLIENT_HELLO => {
                        Err(io::ErrorKind::OutOfMemory.into())
                    }
                    Parsed::Incomplete | Parsed::NotTls => Ok(Some(Hello::default())),
                    Parsed::Hello(h) => Ok(Some(h)),
                }
            });
            match r {
                Ok(h) => return h,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {
                    buf.resize((buf.len() * 2).min(MAX_CLIENT_HELLO), 0);
                }
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(CLIENT_HELLO_TIMEOUT, work)
        .await
        .ok()
        .flatten()
}

/// The match conditions of one filter chain.
pub struct Match {
    /// Lower-cased; empty: any SNI, and no SNI.
    pub names: Vec<String>,
    pub subnets: Vec<ipnet::IpNet>,
    pub alpn: Vec<String>,
}

/// Envoy's filter-chain match over `chains` (in order; the first of equals wins).
pub fn select(chains: &[&Match], dst: IpAddr, hello: &Hello) -> Option<usize> {
    // 1. Destination address: the longest matching prefix; chains without subnets only when
    //    no chain's subnets contain the address.
    let score = |m: &Match| -> Option<u8> {
        if m.subnets.is_empty() {
            return Some(0);
        }
        m.subnets
            .iter()
            .filter(|n| n.contains(&dst))
            .map(|n| n.prefix_len() + 1)
            .max()
    };
    let best = chains.iter().filter_map(|m| score(m)).max()?;
    let group: Vec<usize> = (0..chains.len())
        .filter(|&i| score(chains[i]) == Some(best))
        .collect();
    // 2. SNI: exact, then the longest `*.suffix` (any number of labels before it), then
    //    chains without names. No fallback to a lower level when a later step fails.
    let mut level: Vec<usize> = Vec::new();
    if let Some(sni) = &hello.sni {
        level = group
            .iter()
            .copied()
            .filter(|&i| chains[i].names.iter().any(|n| n == sni))
            .collect();
        if level.is_empty() {
            let suffix_len = |i: usize| {
                chains[i]
                    .names
                    .iter()
                    .filter_map(|n| n.strip_prefix('*'))
                    .filter(|s| sni.len() > s.len() && sni.ends_with(s))
                    .map(str::len)
                    .max()
            };
            if let Some(longest) = group.iter().filter_map(|&i| suffix_len(i)).max() {
                level = group
                    .iter()
                    .copied()
                    .filter(|&i| suffix_len(i) == Some(longest))
                    .collect();
            }
        }
    }
    if level.is_empty() {
        level = group
            .into_iter()
            .filter(|&i| chains[i].names.is_empty())
            .collect();
    }
    // 3. ALPN: a chain asking for one the client offers, else a chain asking for none.
    level
        .iter()
        .copied()
        .find(|&i| {
            !chains[i].alpn.is_empty() && chains[i].alpn.iter().any(|a| hello.alpn.contains(a))
        })
        .or_else(|| level.iter().copied().find(|&i| chains[i].alpn.is_empty()))
}

/// One chain at run time.
pub struct Chain {
    pub matcher: Match,
    terminate: Option<Arc<ServerConfig>>,
    /// (cluster or None when it does not exist, weight).
    routes: Vec<(Option<Arc<Cluster>>, u32)>,
    origin: String,
}

/// The stream chains of one (bind, port).
pub struct StreamChains {
    pub chains: Vec<Chain>,
    /// A plain TCP server: its one chain takes every connection, nothing is peeked.
    pub plain: bool,
}

impl StreamChains {
    /// Reads the certificates of terminating chains; all errors at once.
    pub fn build(
        l: &sp::StreamListener,
        clusters: &std::collections::HashMap<String, Arc<Cluster>>,
    ) -> Result<StreamChains, Vec<String>> {
        let mut chains = Vec::new();
        let mut errors = Vec::new();
        for c in &l.chains {
            let terminate = match &c.terminate {
                None => None,
                Some(s) => match super::tls::server_config(s, &c.origin) {
                    // Istio offers h2 and http/1.1 here too (LSN `BuildListenerTLSContext`
                    // uses the HTTP ALPNs for every terminating server but ISTIO_MUTUAL TCP).
                    Ok(cfg) => Some(Arc::new(cfg)),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            chains.push(Chain {
                matcher: Match {
                    names: c.server_names.clone(),
                    subnets: c
                        .destination_subnets
                        .iter()
                        .filter_map(|s| parse_subnet(s))
                        .collect(),
                    alpn: c.alpn.clone(),
                },
                terminate,
                routes: c
                    .routes
                    .iter()
                    .map(|r| (clusters.get(&r.cluster).cloned(), r.weight.max(1)))
                    .collect(),
                origin: c.origin.clone(),
            });
        }
        if errors.is_empty() {
            Ok(StreamChains {
                chains,
                plain: l.plain,
            })
        } else {
            Err(errors)
        }
    }
}

/// `10.0.0.0/8` or a bare address (a /32 or /128), as Istio accepts them.
fn parse_subnet(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Builds the run-time clusters of a stream plan.
pub fn clusters(plan: &sp::StreamPlan) -> std::collections::HashMap<String, Arc<Cluster>> {
    plan.clusters
        .iter()
        .map(|c| (c.name.clone(), Arc::new(Cluster::new(c))))
        .collect()
}

/// Counts one connection's outcome: `forwarded`, `no_chain`, `no_client_hello`,
/// `handshake_failed`, `no_cluster`, `overflow`, `no_healthy_upstream`, `connect_failed`,
/// `upstream_tls_failed`.
pub fn count(port: u16, chain: &str, outcome: &'static str) {
    crate::metrics::ISTIO
        .tls_streams
        .get_or_create(&crate::metrics::StreamLabels {
            listener_port: port,
            chain: chain.to_string(),
            outcome,
        })
        .inc();
}

/// Serves one connection on `chain`: optional TLS termination, destination, upstream
/// connect, then bytes both ways until both sides are done or the idle timeout.
pub async fn serve(chain: &Chain, tcp: TcpStream, peer: SocketAddr) {
    let port = tcp.local_addr().map(|a| a.port()).unwrap_or(0);
    if let Err(outcome) = forward(chain, tcp, peer, port).await {
        count(port, &chain.origin, outcome);
    }
}

/// Err: why the connection was closed without being forwarded.
async fn forward(
    chain: &Chain,
    tcp: TcpStream,
    peer: SocketAddr,
    port: u16,
) -> Result<(), &'static str> {
    let Some(cluster) = pick_route(&chain.routes) else {
        log::debug!("{}: no cluster for this connection; closed", chain.origin);
        return Err("no_cluster");
    };
    let limit = cluster.plan.limits.max_connections;
    let Some(_conn) = try_acquire(&cluster.active_requests, limit) else {
        log::debug!("{}: {} at maxConnections", chain.origin, cluster.plan.name);
        return Err("overflow");
    };
    let local = tcp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], port)));
    match &chain.terminate {
        None => {
            let (up, _active) = connect(&cluster, peer).await?;
            count(port, &chain.origin, "forwarded");
            let upstream = up.peer_addr().ok();
            let conn = TcpConn::opened(&cluster, local, peer, None);
            let (received, sent) = up.splice(tcp).await;
            conn.closed(upstream, received, sent);
        }
        Some(cfg) => {
            let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
            let handshake = async {
                let start = hello.await.ok()?;
                start
                    .into_stream(cfg.clone())
                    .await
                    .map_err(|e| log::debug!("{}: TLS handshake: {e}", chain.origin))
                    .ok()
            };
            let timed = tokio::time::timeout(super::tls::HANDSHAKE_TIMEOUT, handshake).await;
            let Ok(Some(down)) = timed else {
                return Err("handshake_failed");
            };
            let (up, _active) = connect(&cluster, peer).await?;
            count(port, &chain.origin, "forwarded");
            let upstream = up.peer_addr().ok();
            let sni = down.get_ref().1.server_name().map(Into::into);
            let conn = TcpConn::opened(&cluster, local, peer, sni);
            let (received, sent) = up.splice(down).await;
            conn.closed(upstream, received, sent);
        }
    }
    Ok(())
}

fn pick_route(routes: &[(Option<Arc<Cluster>>, u32)]) -> Option<Arc<Cluster>> {
    let total: u64 = routes.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut x = rand::thread_rng().gen_range(0..total);
    for (c, w) in routes {
        if x < u64::from(*w) {
            return c.clone();
        }
        x -= u64::from(*w);
    }
    None
}

/// The upstream side of a stream: plain, or TLS the gateway originated (DestinationRule `tls`).
enum Upstream {
    Plain(TcpStream),
    /// Boxed: a rustls connection is a kilobyte.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Upstream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Upstream::Plain(s) => s.peer_addr(),
            Upstream::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }

    async fn splice<D: AsyncRead + AsyncWrite + Unpin>(self, down: D) -> (u64, u64) {
        match self {
            Upstream::Plain(s) => splice(down, s).await,
            Upstream::Tls(s) => splice(down, s).await,
        }
    }
}

/// One connect attempt to an endpoint the cluster's load balancer picks, then the TLS
/// handshake if the cluster originates TLS (both within `connectTimeout`); with the guard of
/// the endpoint's active-connection count (least-request balancing).
async fn connect(
    cluster: &Cluster,
    peer: SocketAddr,
) -> Result<(Upstream, Counted<'_>), &'static str> {
    let hash = matches!(cluster.plan.lb, hp::Lb::HashSourceIp)
        .then(|| fnv(peer.ip().to_string().as_bytes()));
    let Some(i) = cluster.pick(hash, &[]) else {
        log::debug!("{}: no healthy upstream; closed", cluster.plan.name);
        return Err("no_healthy_upstream");
    };
    let ep = &cluster.endpoints[i];
    ep.active.fetch_add(1, Relaxed);
    let active = Counted(&ep.active);
    let timeout = Duration::from_millis(cluster.plan.connect_timeout_ms.max(1));
    match tokio::time::timeout(timeout, TcpStream::connect(ep.addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            let up = match &cluster.tls {
                None => Upstream::Plain(s),
                Some(t) => match tokio::time::timeout(timeout, t.connect_stream(s)).await {
                    Ok(Ok(s)) => Upstream::Tls(Box::new(s)),
                    Ok(Err(e)) => {
                        log::debug!("{}: TLS to {}: {e}", cluster.plan.name, ep.addr);
                        cluster.record(i, Outcome::LocalFailure);
                        return Err("upstream_tls_failed");
                    }
                    Err(_) => {
                        log::debug!("{}: TLS to {}: timed out", cluster.plan.name, ep.addr);
                        cluster.record(i, Outcome::LocalFailure);
                        return Err("upstream_tls_failed");
                    }
                },
            };
            cluster.record(i, Outcome::Status(200));
            Ok((up, active))
        }
        Ok(Err(e)) => {
            log::debug!("{}: connect {}: {e}", cluster.plan.name, ep.addr);
            cluster.record(i, Outcome::LocalFailure);
            Err("connect_failed")
        }
        Err(_) => {
            log::debug!("{}: connect {}: timed out", cluster.plan.name, ep.addr);
            cluster.record(i, Outcome::LocalFailure);
            Err("connect_failed")
        }
    }
}

/// Counts the last time bytes came in either way, and the bytes read from this side.
struct Tracked<S> {
    inner: S,
    last: Arc<AtomicU64>,
    read: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.last.store(now_ms(), Relaxed);
            self.read += n as u64;
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies both ways (half-closes propagated) until both are done, or nothing moved for
/// [`IDLE_TIMEOUT`]. Returns the bytes received from the downstream and sent to it.
async fn splice<D, U>(down: D, up: U) -> (u64, u64)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let last = Arc::new(AtomicU64::new(now_ms()));
    let mut down = Tracked {
        inner: down,
        last: last.clone(),
        read: 0,
    };
    let mut up = Tracked {
        inner: up,
        last: last.clone(),
        read: 0,
    };
    let idle = IDLE_TIMEOUT.as_millis() as u64;
    let watchdog = async {
        loop {
            let since = now_ms().saturating_sub(last.load(Relaxed));
            if since >= idle {
                return;
            }
            tokio::time::sleep(Duration::from_millis(idle - since)).await;
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
        _ = watchdog => {}
    }
    (down.read, up.read)
}

#[cfg(test)]
mod tests {
    use super::{hp, parse_client_hello, parse_subnet, pick_route, select, Hello, Match, Parsed};
    use crate::l7::cluster::Cluster;
    use std::net::IpAddr;
    use std::sync::Arc;

    /// A real ClientHello, written by rustls for `sni` offering `alpn`.
    fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn parses_sni_and_alpn_from_a_real_client_hello() {
        let ch = client_hello("A.Example.com", &["h2", "istio"]);
        let want = Hello {
            sni: Some("a.example.com".into()),
            alpn: vec!["h2".into(), "istio".into()],
        };
        assert_eq!(parse_client_hello(&ch), Parsed::Hello(want.clone()));
        // Every proper prefix is incomplete, never a wrong answer.
        for cut in [0, 1, 4, 5, 6, 40, ch.len() - 1] {
            assert_eq!(
                parse_client_hello(&ch[..cut]),
                Parsed::Incomplete,
                "cut {cut}"
            );
        }
        // Split over two handshake records (allowed by TLS): still found.
        let body = &ch[5..];
        let (a, b) = body.split_at(30);
        let mut split = Vec::new();
        for part in [a, b] {
            split.extend_from_slice(&[22, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(parse_client_hello(&split), Parsed::Hello(want));
        assert_eq!(
            parse_client_hello(&split[..split.len() - 3]),
            Parsed::Incomplete
        );
    }

    #[test]
    fn plain_text_is_not_tls() {
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), Parsed::NotTls);
        assert_eq!(parse_client_hello(b"G"), Parsed::NotTls);
        // A handshake record that is not a ClientHello.
        assert_eq!(
            parse_client_hello(&[22, 3, 3, 0, 4, 2, 0, 0, 0]),
            Parsed::NotTls
        );
    }

    fn m(names: &[&str], subnets: &[&str], alpn: &[&str]) -> Match {
        Match {
            names: names.iter().map(|s| s.to_string()).collect(),
            subnets: subnets.iter().map(|s| parse_subnet(s).unwrap()).collect(),
            alpn: alpn.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn hello(sni: Option<&str>, alpn: &[&str]) -> Hello {
        Hello {
            sni: sni.map(str::to_string),
            alpn: alpn.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn envoy_filter_chain_order() {
        let dst: IpAddr = "198.18.0.1".parse().unwrap();
        let exact = m(&["a.example.com"], &[], &[]);
        let wild = m(&["*.example.com"], &[], &[]);
        let deeper = m(&["*.b.example.com"], &[], &[]);
        let any = m(&[], &[], &[]);
        let chains = [&exact, &wild, &deeper, &any];
        let pick = |sni: Option<&str>| select(&chains, dst, &hello(sni, &[]));
        assert_eq!(pick(Some("a.example.com")), Some(0));
        assert_eq!(pick(Some("x.example.com")), Some(1));
        assert_eq!(pick(Some("x.y.b.example.com")), Some(2));
        // `*.example.com` does not cover `example.com`.
        assert_eq!(pick(Some("example.com")), Some(3));
        assert_eq!(pick(None), Some(3));
        let no_catch_all = [&exact, &wild];
        assert_eq!(
            select(&no_catch_all, dst, &hello(Some("other.org"), &[])),
            None
        );
        assert_eq!(select(&no_catch_all, dst, &hello(None, &[])), None);

        // A chain whose subnets contain the address outranks chains without subnets, and a
        // non-matching subnet excludes the chain.
        let here = m(&["*.example.com"], &["198.18.0.0/24"], &[]);
        let elsewhere = m(&["a.example.com"], &["10.0.0.0/8"], &[]);
        let chains = [&exact, &here, &elsewhere];
        assert_eq!(
            select(&chains, dst, &hello(Some("a.example.com"), &[])),
            Some(1)
        );
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            select(&chains, other, &hello(Some("a.example.com"), &[])),
            Some(0)
        );

        // ALPN last, without falling back to a less specific SNI.
        let istio = m(&["a.example.com"], &[], &["istio", "istio-h2"]);
        let chains = [&istio, &any];
        assert_eq!(
            select(&chains, dst, &hello(Some("a.example.com"), &["istio-h2"])),
            Some(0)
        );
        assert_eq!(
            select(&chains, dst, &hello(Some("a.example.com"), &["h2"])),
            None
        );
    }

    #[test]
    fn weighted_route_choice() {
        let c = |n: &str| {
            Some(Arc::new(Cluster::new(&hp::Cluster {
                name: n.into(),
                namespace: String::new(),
                http2: false,
                endpoints: Vec::new(),
                lb: hp::Lb::RoundRobin,
                connect_timeout_ms: 1000,
                limits: hp::Limits::default(),
                outlier: None,
                tls: None,
            })))
        };
        let routes = vec![(c("a"), 1), (c("b"), 3)];
        let mut b = 0;
        for _ in 0..4000 {
            if pick_route(&routes).unwrap().plan.name == "b" {
                b += 1;
            }
        }
        assert!((2700..3300).contains(&b), "{b} of 4000 to weight 3 of 4");
        assert!(pick_route(&[(None, 1)]).is_none());
    }
}
