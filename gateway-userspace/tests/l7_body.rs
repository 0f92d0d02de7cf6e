//! In-process tests of request and response bodies through the proxy, with real sockets:
//! uploads stream to the upstream as they arrive (not buffered whole), a copy kept for retries
//! and mirrors up to the retry buffer limit, and the route timeout cutting a response body
//! that is still streaming (Envoy's router, istio-semantics.md §3.8, §3.10, §3.11).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::l7::body::RETRY_BUFFER_LIMIT;
use gateway::l7::L7;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, oneshot};

mod support;
use support::backend::header;
use support::net::free_port;
use support::yaml;

/// A gateway on `port` routing every host to `svc.internal` (endpoints on 127.0.0.1 at
/// `backends`) by one route with the extra fields `route`; `mirror` adds the service
/// `mirror.internal` on that port.
async fn gateway(port: u16, backends: &[u16], mirror: Option<u16>, route: &str) -> L7 {
    let eps: String = backends.iter().map(|p| yaml::endpoint(*p, "")).collect();
    let mirror_se = match mirror {
        Some(p) => yaml::service_entry("mirror", "mirror.internal", "HTTP", &yaml::endpoint(p, "")),
        None => String::new(),
    };
    let yaml = format!(
        "{}{}{mirror_se}{}",
        yaml::http_gateway(port),
        yaml::service_entry("svc", "svc.internal", "HTTP", &eps),
        yaml::virtual_service(&format!(
            "  - route: [{{destination: {{host: svc.internal}}}}]\n{route}"
        )),
    );
    support::gateway::serve(&yaml).await
}

/// What a backend saw of one request body.
#[derive(Clone, Debug, Default)]
struct Seen {
    len: usize,
    /// FNV-1a of the bytes, to compare with what the client sent.
    hash: u64,
    attempt: String,
}

fn fnv(h: &mut u64, b: &[u8]) {
    for x in b {
        *h ^= u64::from(*x);
        *h = h.wrapping_mul(0x100000001b3);
    }
}

const FNV0: u64 = 0xcbf29ce484222325;

/// A backend reading each request body whole, then answering 200 with its length and hash (503
/// `no` to the first `fail_first` requests). `first_bytes` is told when a body's first bytes
/// arrive.
struct Backend {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
}

async fn backend(fail_first: usize, first_bytes: Option<mpsc::UnboundedSender<()>>) -> Backend {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let hits = Arc::new(AtomicUsize::new(0));
    let (s2, h2) = (seen.clone(), hits.clone());
    let port = support::backend::http(move |req: Request<Incoming>| {
        let (seen, hits, first) = (s2.clone(), h2.clone(), first_bytes.clone());
        async move {
            let n = hits.fetch_add(1, Ordering::SeqCst);
            let attempt = header(req.headers(), "x-envoy-attempt-count");
            let mut body = req.into_body();
            let mut got = Seen {
                hash: FNV0,
                attempt,
                ..Seen::default()
            };
            while let Some(f) = body.frame().await {
                let Ok(f) = f else { break };
                if let Some(d) = f.data_ref() {
                    if got.len == 0 && !d.is_empty() {
                        if let Some(tx) = &first {
                            let _ = tx.send(());
                        }
                    }
                    got.len += d.len();
                    fnv(&mut got.hash, d);
                }
            }
            seen.lock().unwrap().push(got.clone());
            if n < fail_first {
                let mut r = Response::new(Full::new(Bytes::from_static(b"no")));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                return r;
            }
            let text = format!("{} {:x}", got.len, got.hash);
            Response::new(Full::new(Bytes::from(text)))
        }
    })
    .await;
    Backend { port, seen, hits }
}

/// A body fed chunk by chunk through a channel (the test decides when each chunk goes).
struct ChanBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

fn streaming_client() -> Client<HttpConnector, ChanBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Starts a POST whose body the caller feeds through the returned sender.
fn upload(
    port: u16,
    path: &str,
    len: usize,
) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<(u16, String)>) {
    let (tx, rx) = mpsc::channel(4);
    let req = Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("host", "app.example.com")
        .header("content-length", len.to_string())
        .body(ChanBody(rx))
        .unwrap();
    let task = tokio::spawn(async move {
        let r = streaming_client().request(req).await.expect("response");
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    (tx, task)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_upload_streams_to_the_backend_before_the_client_finishes() {
    let (first_tx, mut first_rx) = mpsc::unbounded_channel();
    let b = backend(0, Some(first_tx)).await;
    let port = free_port();
    // The default retry policy is on: the body outgrows the retry buffer and keeps streaming.
    let _gw = gateway(port, &[b.port], None, "").await;
    let total = 20 * RETRY_BUFFER_LIMIT; // also beyond the 16 MiB the proxy used to buffer
    let data = pattern(total, 7);
    let mut expect = FNV0;
    fnv(&mut expect, &data);
    let (tx, task) = upload(port, "/up", total);
    let first = 64 * 1024;
    tx.send(Bytes::copy_from_slice(&data[..first]))
        .await
        .unwrap();
    // The rest is sent only once the backend has the first bytes: a proxy that buffers the
    // whole body before forwarding never gets there.
    tokio::time::timeout(Duration::from_secs(10), first_rx.recv())
        .await
        .expect("the backend saw the first bytes before the upload was complete")
        .unwrap();
    for c in data[first..].chunks(256 * 1024) {
        tx.send(Bytes::copy_from_slice(c)).await.unwrap();
    }
    drop(tx);
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("upload finished")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("{total} {expect:x}"));
    let seen = b.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].len, seen[0].hash), (total, expect));
}

/// A gateway on a free port whose route tries twice on 5xx and mirrors; its backend fails the
/// first request. (backend, mirror, gateway port, gateway)
async fn retried_and_mirrored() -> (Backend, Backend, u16, L7) {
    let b = backend(1, None).await;
    let m = backend(0, None).await;
    let port = free_port();
    let gw = gateway(
        port,
        &[b.port],
        Some(m.port),
        "    retries: {attempts: 2, retryOn: 5xx}\n    mirror: {host: mirror.internal}\n",
    )
    .await;
    (b, m, port, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn small_bodies_are_retried_whole_and_mirrored() {
    // The first attempt gets 503 after reading the body; the retry must carry it whole again.
    let (b, m, port, _gw) = retried_and_mirrored().await;
    let total = 200 * 1024;
    let data = pattern(total, 3);
    let mut expect = FNV0;
    fnv(&mut expect, &data);
    let (tx, task) = upload(port, "/small", total);
    for c in data.chunks(16 * 1024) {
        tx.send(Bytes::copy_from_slice(c)).await.unwrap();
    }
    drop(tx);
    let (status, body) = task.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("{total} {expect:x}"));
    assert_eq!(b.hits.load(Ordering::SeqCst), 2);
    let seen = b.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (s, attempt) in seen.iter().zip(["1", "2"]) {
        assert_eq!(
            (s.len, s.hash, s.attempt.as_str()),
            (total, expect, attempt)
        );
    }
    // The mirror got the same body (fire and forget: wait for it a little).
    let t = Instant::now();
    while m.seen.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ms = m.seen.lock().unwrap().clone();
    assert_eq!(ms.len(), 1, "{ms:?}");
    assert_eq!((ms[0].len, ms[0].hash), (total, expect));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_beyond_the_retry_buffer_gives_up_retry_and_mirror() {
    let (b, m, port, _gw) = retried_and_mirrored().await;
    let total = 3 * RETRY_BUFFER_LIMIT;
    let data = pattern(total, 5);
    let (tx, task) = upload(port, "/big", total);
    let feed = tokio::spawn(async move {
        for c in data.chunks(64 * 1024) {
            if tx.send(Bytes::copy_from_slice(c)).await.is_err() {
                return;
            }
        }
    });
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("answered")
        .unwrap();
    // The backend read the whole body, then answered 503; the body was beyond the retry buffer,
    // so the gateway could not send it again and the 503 is the answer.
    assert_eq!((status, body.as_str()), (503, "no"));
    feed.abort();
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.hits.load(Ordering::SeqCst), 0, "the mirror was given up");
}

/// A backend answering headers and a first chunk at once, then the rest after `pause`.
async fn slow_body_backend(pause: Duration) -> u16 {
    support::backend::http(move |_req: Request<Incoming>| async move {
        let (tx, rx) = mpsc::channel::<Bytes>(2);
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(b"first ")).await;
            tokio::time::sleep(pause).await;
            let _ = tx.send(Bytes::from_static(b"last")).await;
        });
        Response::new(ChanBody(rx))
    })
    .await
}

/// GET /timed for app.example.com through the gateway on `port`.
fn timed(port: u16) -> Request<Full<Bytes>> {
    Request::get(format!("http://127.0.0.1:{port}/timed"))
        .header("host", "app.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn route_timeout_cuts_a_streaming_response_body() {
    let slow = slow_body_backend(Duration::from_secs(3)).await;
    let port = free_port();
    let _gw = gateway(port, &[slow], None, "    timeout: 400ms\n").await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let t = Instant::now();
    let r = client
        .request(timed(port))
        .await
        .expect("response headers arrive before the timeout");
    assert_eq!(r.status(), 200);
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(r.into_body().collect().await.map(|c| c.to_bytes()));
    });
    let got = tokio::time::timeout(Duration::from_secs(10), done_rx)
        .await
        .expect("the body ends one way or another")
        .unwrap();
    assert!(
        got.is_err(),
        "the body completed ({got:?}) instead of being cut by the route timeout"
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(2500),
        "cut after {took:?}"
    );
    // A body that completes in time is not cut.
    let fast = slow_body_backend(Duration::from_millis(50)).await;
    let port = free_port();
    let _gw2 = gateway(port, &[fast], None, "    timeout: 400ms\n").await;
    let r = client.request(timed(port)).await.unwrap();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"first last");
}
