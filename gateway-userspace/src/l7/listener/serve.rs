//! One downstream HTTP connection (HTTP/1.1 or h2): hyper's limits, the request id, the
//! idle and head timers, and the drain and overload actions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use crate::l7::conn::ConnInfo;
use crate::l7::drain::{ActiveGuard, CLOSING, DRAIN, DRAINING, STAGE};
use crate::l7::proxy::{self, Runtime};
use crate::l7::request::headers::{request_id, X_REQUEST_ID};
use crate::l7::{limits, observe, overload};

/// Marks a request's response done for the head timer, however the service future ends.
struct HeadDone<'a>(&'a limits::HeadTimer);

impl Drop for HeadDone<'_> {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// One downstream connection, HTTP/1.1 or h2 (prior knowledge, or ALPN over TLS).
pub(super) async fn serve<I>(io: I, conn: ConnInfo, state: Arc<ArcSwap<Runtime>>)
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
            req.headers_mut().insert(X_REQUEST_ID, request_id());
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
