//! The accept loop of one worker's socket: the connection limit, then for a TLS port the
//! chain its ClientHello picks (passthrough, or HTTPS termination), then the HTTP connection.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use super::serve::serve;
use crate::l7::conn::ConnInfo;
use crate::l7::proxy::Runtime;
use crate::l7::{limits, passthrough, tls};

/// The open-file limit stopped an accept (logged once).
static FD_CAP_LOGGED: AtomicBool = AtomicBool::new(false);

pub(crate) async fn accept_loop(
    sock: TcpListener,
    key: (Ipv4Addr, u16),
    state: Arc<ArcSwap<Runtime>>,
) {
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
