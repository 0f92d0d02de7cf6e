//! In-process tests of the two streaming cases of the proxy, with real sockets: a WebSocket
//! upgrade spliced end to end, and gRPC over an h2 upstream whose trailers reach the client.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gateway::l7::L7;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;
use support::backend::header;
use support::gateway::serve;
use support::net::free_port;
use support::yaml;

/// Gateway on `port` routing everything to `svc.internal` (port protocol `protocol`) at
/// 127.0.0.1:`backend`.
async fn gateway(port: u16, backend: u16, protocol: &str) -> L7 {
    let yaml = format!(
        "{}{}{}",
        yaml::http_gateway(port),
        yaml::service_entry(
            "svc",
            "svc.internal",
            protocol,
            &yaml::endpoint(backend, "")
        ),
        yaml::virtual_service("  - route: [{destination: {host: svc.internal}}]\n"),
    );
    serve(&yaml).await
}

/// An HTTP/1.1 server that accepts WebSocket upgrades and then echoes every byte, upper-cased
/// (so an echo can only have come through the backend, not a short circuit in the proxy).
async fn websocket_backend() -> u16 {
    support::backend::accept(|s| async move {
        let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
            let is_ws = req
                .headers()
                .get("upgrade")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
            let mut r = Response::new(Full::new(Bytes::new()));
            if !is_ws {
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return Ok::<_, Infallible>(r);
            }
            let up = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(up) = up.await else { return };
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            buf[..n].make_ascii_uppercase();
                            if io.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert("upgrade", HeaderValue::from_static("websocket"));
            h.insert("connection", HeaderValue::from_static("Upgrade"));
            // The accept value of RFC 6455's sample key.
            h.insert(
                "sec-websocket-accept",
                HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            );
            Ok(r)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(s), svc)
            .with_upgrades()
            .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_is_spliced() {
    let be = websocket_backend().await;
    let port = free_port();
    let _gw = gateway(port, be, "HTTP").await;

    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("response head in time")
            .unwrap();
        assert!(
            n == 1,
            "closed before the response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(head.contains("server: istio-envoy"), "{head}");

    // Several exchanges in both directions over the spliced connection.
    for msg in ["hello", "websocket frames are just bytes here", "bye"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(got, msg.to_ascii_uppercase().as_bytes());
    }
}

/// An h2c-only gRPC-style server: echoes the request message and ends with trailers, telling in
/// them what protocol and `te` it received.
async fn grpc_backend() -> u16 {
    support::backend::h2c(|req: Request<Incoming>| async move {
        let version = format!("{:?}", req.version());
        let te = header(req.headers(), "te");
        let path = req.uri().path().to_string();
        let msg = req.into_body().collect().await.unwrap().to_bytes();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
        trailers.insert(
            "x-seen",
            HeaderValue::from_str(&format!("{version} te={te} {path}")).unwrap(),
        );
        let mut r = Response::new(Frames([Frame::data(msg), Frame::trailers(trailers)].into()));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        r
    })
    .await
}

/// A response body of given frames: data, then trailers, as a gRPC server sends them.
struct Frames(VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// gRPC's length-prefixed message framing: uncompressed flag, big-endian length, payload.
fn grpc_message(payload: &[u8]) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_over_h2_upstream_keeps_trailers() {
    let be = grpc_backend().await;
    let port = free_port();
    // Port protocol GRPC: the upstream speaks HTTP/2 (§3.25).
    let _gw = gateway(port, be, "GRPC").await;

    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let msg = grpc_message(b"\x0a\x05hello");
    for _ in 0..3 {
        let req = Request::builder()
            .method("POST")
            .uri(format!("http://grpc.example.com:{port}/echo.Echo/Say"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(msg.clone()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected
            .trailers()
            .cloned()
            .expect("trailers reach the client");
        assert_eq!(collected.to_bytes(), msg, "message echoed");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "ok");
        // The upstream got HTTP/2 with `te: trailers` kept (it is hop-by-hop otherwise).
        assert_eq!(trailers["x-seen"], "HTTP/2.0 te=trailers /echo.Echo/Say");
    }
}

/// An h2c server that refuses every stream with REFUSED_STREAM (as an overloaded h2 server
/// does before processing a request).
async fn refusing_h2_backend() -> u16 {
    support::backend::accept(|s| async move {
        let Ok(mut conn) = h2::server::handshake(s).await else {
            return;
        };
        while let Some(Ok((_req, mut respond))) = conn.accept().await {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        }
    })
    .await
}

/// An h2c server answering 200 `ok`.
async fn ok_h2_backend() -> u16 {
    support::backend::h2c(|_req: Request<Incoming>| async { support::backend::ok_response() }).await
}

/// Istio's default retry policy includes `refused-stream`: a stream refused by one h2 endpoint
/// is retried on the other, so every request succeeds; without retries some fail with 503.
#[tokio::test]
async fn refused_stream_is_retried_by_default() {
    let (bad, good) = (refusing_h2_backend().await, ok_h2_backend().await);
    let cfg = |retries: &str, port: u16| {
        let eps = yaml::endpoint(bad, "") + &yaml::endpoint(good, "");
        format!(
            "{}{}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc, namespace: default}}
spec:
  host: svc.internal
  trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}
---
{}",
            yaml::http_gateway(port),
            yaml::service_entry("svc", "svc.internal", "HTTP2", &eps),
            yaml::virtual_service(&format!(
                "  - route: [{{destination: {{host: svc.internal}}}}]\n{retries}"
            )),
        )
    };
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut statuses = Vec::new();
    for (retries, port) in [
        ("", free_port()),
        ("    retries: {attempts: 0}\n", free_port()),
    ] {
        let l7 = serve(&cfg(retries, port)).await;
        let mut codes = Vec::new();
        for _ in 0..10 {
            let req = Request::builder()
                .uri(format!("http://127.0.0.1:{port}/"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            codes.push(client.request(req).await.unwrap().status().as_u16());
        }
        statuses.push(codes);
        drop(l7);
    }
    assert!(
        statuses[0].iter().all(|&c| c == 200),
        "default policy: {:?}",
        statuses[0]
    );
    assert!(statuses[1].contains(&503), "no retries: {:?}", statuses[1]);
}
