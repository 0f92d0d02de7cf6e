//! Limits on downstream clients (hostile clients, floods, overload), set once at start-up from
//! the `gateway run` flags; docs/hardening.md lists every default and where it comes from.
//!
//! - HTTP/1.1: request head size ([`Limits::max_request_headers_kb`], Envoy's
//!   `max_request_headers_kb` = 60 → 431), header count (Envoy's `max_headers_count` = 100 →
//!   431), and the time a client may take to send its head ([`Limits::request_headers_timeout`]).
//! - HTTP/2: the SETTINGS Envoy's edge best practices recommend (100 concurrent streams, 64 KiB
//!   stream window, 1 MiB connection window), the header list size, and the reset limits of the
//!   rapid-reset (CVE-2023-44487) and "made you reset" floods.
//! - Any connection: no byte either way for [`Limits::stream_idle_timeout`] closes it.
//! - The process: at most [`Limits::max_connections`] downstream connections at once (Envoy's
//!   overload manager `downstream_connections` limit); the rest are accepted and closed at once
//!   and counted. The memory side of Envoy's overload manager is [`super::overload`].

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Clone, Debug)]
pub struct Limits {
    /// Downstream connections at once, over every listener (0: no limit, Envoy's default).
    pub max_connections: usize,
    /// A client must have sent its whole HTTP/1.1 request head within this (hyper's
    /// `header_read_timeout`; Envoy's `request_headers_timeout`, 10 s as its edge guide says).
    pub request_headers_timeout: Duration,
    /// A connection with no byte read or written for this long is closed (Envoy's
    /// `stream_idle_timeout`, 5 min; here per connection, see docs/hardening.md).
    pub stream_idle_timeout: Duration,
    /// Request line and headers together, in KiB (Envoy's `max_request_headers_kb`).
    pub max_request_headers_kb: usize,
    /// Header lines per HTTP/1.1 request (Envoy's `max_headers_count`).
    pub max_headers_count: usize,
    /// HTTP/2 streams open at once per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub h2_max_concurrent_streams: u32,
    /// Streams a client may reset before the server has accepted them, pending at once (the
    /// rapid-reset flood: beyond it the connection gets GOAWAY ENHANCE_YOUR_CALM).
    pub h2_max_pending_accept_reset_streams: usize,
    /// Streams the server resets for the client's protocol errors before it sends GOAWAY.
    pub h2_max_local_error_reset_streams: usize,
    /// Bytes queued to send per HTTP/2 stream.
    pub h2_max_send_buf_size: usize,
    /// Heap bytes at which the overload actions start (`overload`; 0: none).
    pub overload_max_heap: u64,
}

/// Envoy's edge defaults (docs/hardening.md).
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 0,
            request_headers_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(300),
            max_request_headers_kb: 60,
            max_headers_count: 100,
            h2_max_concurrent_streams: 100,
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 1024,
            h2_max_send_buf_size: 400 * 1024,
            overload_max_heap: 0,
        }
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Sets the limits (once, before serving; a later call is ignored).
pub fn set(l: Limits) {
    let _ = LIMITS.set(l);
}

/// The limits in force.
pub fn get() -> &'static Limits {
    LIMITS.get_or_init(Limits::default)
}

impl Limits {
    pub fn max_header_bytes(&self) -> usize {
        self.max_request_headers_kb * 1024
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (a gateway holds two descriptors per
/// proxied connection) and returns the cap now in force.
pub fn raise_nofile() -> std::io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        r.rlim_cur = r.rlim_max;
    }
    Ok(r.rlim_cur)
}

/// Downstream connections open now (HTTP, HTTPS and TLS streams).
static DOWNSTREAM: AtomicUsize = AtomicUsize::new(0);
static REJECT_LOGGED: AtomicBool = AtomicBool::new(false);

/// One admitted downstream connection; dropping it frees its slot.
pub struct Slot(());

impl Drop for Slot {
    fn drop(&mut self) {
        DOWNSTREAM.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A slot for a connection just accepted, or `None` when [`Limits::max_connections`] are open
/// (the caller closes it; counted in `gateway_overload_rejected_connections_total`, logged
/// once).
pub fn admit() -> Option<Slot> {
    if super::overload::state() >= super::overload::REFUSING {
        // Over 95 % of --overload-max-heap: Envoy's stop_accepting_connections (the monitor
        // logs it).
        crate::metrics::ISTIO.overload_rejected.inc();
        return None;
    }
    let max = get().max_connections;
    let n = DOWNSTREAM.fetch_add(1, Ordering::AcqRel);
    if max != 0 && n >= max {
        DOWNSTREAM.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::ISTIO.overload_rejected.inc();
        if !REJECT_LOGGED.swap(true, Ordering::Relaxed) {
            log::warn!(
                "overload: {max} downstream connections open (--max-connections); new ones are closed at once (counted in gateway_overload_rejected_connections_total, logged once)"
            );
        }
        return None;
    }
    Some(Slot(()))
}

/// Downstream connections open now.
pub fn downstream_connections() -> usize {
    DOWNSTREAM.load(Ordering::Acquire)
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// When a connection last moved a byte, in ms since [`epoch`]; shared with its idle timer.
#[derive(Clone)]
pub struct Activity(Arc<AtomicU64>);

impl Activity {
    pub fn new() -> Activity {
        Activity(Arc::new(AtomicU64::new(now_ms())))
    }

    fn touch(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `idle` (never for a zero `idle`).
    pub async fn idle(&self, idle: Duration) {
        if idle.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let last = self.0.load(Ordering::Relaxed);
            let due = epoch() + Duration::from_millis(last) + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// Envoy's `request_headers_timeout` for HTTP/1.1: armed by the first byte of a request head,
/// disarmed when the head is complete (the request reaches the service). hyper's own
/// `header_read_timeout` is not used: it also runs while a kept-alive connection waits for its
/// next request, so it would close every HTTP/1.1 connection idle for 10 s, which Envoy does
/// not (its idle timeout is an hour).
#[derive(Clone, Default)]
pub struct HeadTimer(Arc<HeadState>);

#[derive(Default)]
struct HeadState {
    /// When the head's first byte came, in ms since [`epoch`] plus one; 0: not running.
    started: AtomicU64,
    /// Requests whose head is complete and whose response is not yet (bytes read meanwhile are
    /// their bodies, not a new head).
    in_flight: AtomicUsize,
    /// An HTTP/2 connection (its streams are bounded by the h2 limits instead).
    off: AtomicBool,
    /// The connection's first bytes were read.
    seen: AtomicBool,
    armed: tokio::sync::Notify,
}

impl HeadTimer {
    fn on_bytes(&self, bytes: &[u8]) {
        let s = &self.0;
        // The HTTP/2 preface (prior knowledge, or ALPN h2 under TLS) as the first bytes: an
        // h2 connection, which may wait for its first request as long as it likes.
        if !s.seen.swap(true, Ordering::Relaxed) && bytes.starts_with(b"PRI * HTTP/2") {
            s.off.store(true, Ordering::Relaxed);
        }
        if !s.off.load(Ordering::Relaxed)
            && s.in_flight.load(Ordering::Acquire) == 0
            && s.started.load(Ordering::Relaxed) == 0
        {
            s.started.store(now_ms() + 1, Ordering::Relaxed);
            s.armed.notify_one();
        }
    }

    /// A request head was parsed: the timer stops until its response is done.
    pub fn request_started(&self) {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        self.0.started.store(0, Ordering::Relaxed);
    }

    pub fn request_done(&self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// The connection speaks HTTP/2: no head timer.
    pub fn disable(&self) {
        self.0.off.store(true, Ordering::Relaxed);
        self.0.started.store(0, Ordering::Relaxed);
    }

    /// Resolves when a head has taken longer than `timeout` (never for a zero `timeout`).
    pub async fn expired(&self, timeout: Duration) {
        if timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let started = self.0.started.load(Ordering::Relaxed);
            if started == 0 {
                self.0.armed.notified().await;
                continue;
            }
            let due = epoch() + Duration::from_millis(started - 1) + timeout;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// An I/O stream that records every byte moved in its [`Activity`], and arms its
/// [`HeadTimer`] with the bytes it reads.
pub struct Tracked<I> {
    io: I,
    activity: Activity,
    head: HeadTimer,
}

impl<I> Tracked<I> {
    pub fn new(io: I, activity: Activity, head: HeadTimer) -> Self {
        Tracked { io, activity, head }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
            self.head.on_bytes(&buf.filled()[before..]);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{raise_nofile, Limits};
    use std::time::Duration;

    #[test]
    fn defaults_are_envoys() {
        let l = Limits::default();
        assert_eq!(l.max_header_bytes(), 60 * 1024);
        assert_eq!(l.max_headers_count, 100);
        assert_eq!(l.stream_idle_timeout, Duration::from_secs(300));
        assert_eq!(l.h2_max_concurrent_streams, 100);
    }

    #[test]
    fn nofile_soft_limit_reaches_the_hard_one() {
        let cap = raise_nofile().expect("raise");
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
        assert_eq!(r.rlim_cur, r.rlim_max);
        assert_eq!(cap, r.rlim_cur);
    }
}
