//! Backends on 127.0.0.1 for the gateway to forward to: an accept loop, HTTP servers (HTTP/1.1
//! and h2c, or h2c only) around a handler, and TCP/TLS servers that name themselves and echo.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::tls::{self, Leaf};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Listens on a free port of 127.0.0.1 and runs `on_conn` in a task of its own for every
/// connection accepted; returns the port.
pub async fn accept<F, Fut>(on_conn: F) -> u16
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(on_conn(s));
        }
    });
    port
}

/// What answers the requests of [`http`] and [`h2c`]: an async function of the request.
pub trait Handler: Clone + Send + Sync + 'static {
    type Body: hyper::body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static;
    type Fut: Future<Output = Response<Self::Body>> + Send + 'static;
    fn call(&self, req: Request<Incoming>) -> Self::Fut;
}

impl<H, Fut, B> Handler for H
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
    type Fut = Fut;
    fn call(&self, req: Request<Incoming>) -> Fut {
        self(req)
    }
}

/// An HTTP server (HTTP/1.1 or h2c, as the client speaks) answering every request with
/// `handler`; returns its port.
pub async fn http(handler: impl Handler) -> u16 {
    serve(handler, false).await
}

/// An h2c-only server answering every request with `handler`; returns its port.
pub async fn h2c(handler: impl Handler) -> u16 {
    serve(handler, true).await
}

async fn serve(handler: impl Handler, h2_only: bool) -> u16 {
    accept(move |s| {
        let handler = handler.clone();
        let svc = hyper::service::service_fn(move |req| {
            let fut = handler.call(req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        async move {
            let io = TokioIo::new(s);
            if h2_only {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, svc)
                    .await;
            } else {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(io, svc)
                    .await;
            }
        }
    })
    .await
}

/// The value of header `name` as text, or "" when it is absent or not text.
pub fn header(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A `200 ok` response.
pub fn ok_response() -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(b"ok")))
}

/// A TLS server presenting `leaf`: after the handshake it sends `NAME\n`, then echoes.
pub async fn tls_echo(name: &'static str, leaf: &Leaf) -> u16 {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(leaf));
    accept(move |s| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut s) = acceptor.accept(s).await else {
                return;
            };
            echo(name, &mut s).await;
        }
    })
    .await
}

/// A plain TCP server with the same greeting and echo as [`tls_echo`].
pub async fn plain_echo(name: &'static str) -> u16 {
    accept(move |mut s| async move { echo(name, &mut s).await }).await
}

/// Sends `NAME\n`, then echoes every byte until the peer closes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(name: &str, s: &mut S) {
    if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
