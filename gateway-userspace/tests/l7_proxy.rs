//! In-process tests of the HTTP proxy with real sockets: manifests -> plan -> `L7::apply` ->
//! real hyper backends on 127.0.0.1 ephemeral ports, real HTTP clients. No root needed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::config::{compile, load_str, IstioVersion};
use gateway::l7::L7;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

mod support;
use support::net::{dead_port, free_port};
use support::yaml;

/// A backend that answers with a JSON description of what it received; `x-delay-ms` and
/// `x-status` request headers (or the fixed `status`) shape the answer.
struct Backend {
    port: u16,
    hits: Arc<AtomicUsize>,
    /// Host header of every request received.
    hosts: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn backend(name: &'static str, status: u16) -> Backend {
    let hits = Arc::new(AtomicUsize::new(0));
    let hosts: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (h, hs) = (hits.clone(), hosts.clone());
    let port = support::backend::http(move |req: Request<Incoming>| {
        let (h, hs) = (h.clone(), hs.clone());
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let host = req.headers().get("host").and_then(|v| v.to_str().ok());
            hs.lock().unwrap().push(host.unwrap_or("").to_string());
            let delay = req
                .headers()
                .get("x-delay-ms")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0u64);
            let st = req
                .headers()
                .get("x-status")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(status);
            let mut headers = BTreeMap::new();
            for (k, v) in req.headers() {
                headers
                    .entry(k.to_string())
                    .or_insert_with(Vec::new)
                    .push(v.to_str().unwrap_or("").to_string());
            }
            let body = serde_json::json!({
                "backend": name,
                "method": req.method().as_str(),
                "path": req.uri().path_and_query().map(|p| p.to_string()),
                "headers": headers,
            });
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
            *r.status_mut() = http::StatusCode::from_u16(st).unwrap();
            r.headers_mut().insert("server", "backend".parse().unwrap());
            r.headers_mut().insert("x-backend", name.parse().unwrap());
            r
        }
    })
    .await;
    Backend { port, hits, hosts }
}

async fn gateway(port: u16, rest: &str) -> L7 {
    gateway_as(port, rest, IstioVersion::CURRENT).await
}

/// A gateway reproducing the given Istio release's version-dependent behaviour.
async fn gateway_as(port: u16, rest: &str, compat: IstioVersion) -> L7 {
    let yaml = format!("{}{rest}", yaml::http_gateway(port));
    support::gateway::serve_as(&yaml, compat).await
}

fn se(name: &str, endpoints: &[(u16, &str)]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(p, v)| yaml::endpoint(*p, &format!(", labels: {{version: {v}}}")))
        .collect();
    yaml::service_entry(name, &format!("{name}.example.internal"), "HTTP", &eps)
}

/// Service `NAME.example.internal` at 127.0.0.1:`port` (v1), and every request routed to it.
fn all_to(name: &str, port: u16) -> String {
    format!(
        "{}{}",
        se(name, &[(port, "v1")]),
        vs(&format!(
            "  - route: [{{destination: {{host: {name}.example.internal}}}}]\n"
        ))
    )
}

fn vs(http: &str) -> String {
    yaml::virtual_service(http)
}

struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
    fn backend(&self) -> String {
        self.headers
            .get("x-backend")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    fn seen(&self, h: &str) -> Option<String> {
        self.json()["headers"][h][0].as_str().map(String::from)
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

async fn send(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    let mut host = false;
    for (k, v) in headers {
        host |= k.eq_ignore_ascii_case("host");
        b = b.header(*k, *v);
    }
    if !host {
        b = b.header("host", "app.example.com");
    }
    let r = client()
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("request");
    let (parts, body) = r.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(port: u16, path: &str) -> Got {
    send(port, "GET", path, &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_with_envoy_headers_rewrite_and_header_ops() {
    let a = backend("a", 200).await;
    let port = free_port();
    let _gw = gateway(port, &format!("{}{}", se("a", &[(a.port, "v1")]), vs(
        "  - match: [{uri: {prefix: /api/}}]\n    rewrite: {uri: /}\n    headers:\n      request: {set: {x-set: one}, add: {x-add: two}, remove: [x-drop]}\n      response: {set: {x-resp: yes}, remove: [x-backend-secret]}\n    route: [{destination: {host: a.example.internal}, headers: {request: {set: {x-dest: d}}}}]\n  - match: [{uri: {exact: /x}}]\n    route: [{destination: {host: a.example.internal}}]\n"))).await;
    let r = send(
        port,
        "GET",
        "/api/items?q=1",
        &[
            ("x-drop", "1"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-envoy-retry-on", "5xx"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "h"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["path"], "/items?q=1");
    // Envoy copies the whole original :path, query included.
    assert_eq!(
        r.seen("x-envoy-original-path").as_deref(),
        Some("/api/items?q=1")
    );
    assert_eq!(r.seen("x-set").as_deref(), Some("one"));
    assert_eq!(r.seen("x-add").as_deref(), Some("two"));
    assert_eq!(r.seen("x-dest").as_deref(), Some("d"));
    assert_eq!(r.seen("x-drop"), None);
    assert_eq!(
        r.seen("x-hop"),
        None,
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(
        r.seen("x-envoy-retry-on"),
        None,
        "edge x-envoy-* controls are stripped"
    );
    assert_eq!(
        r.seen("x-forwarded-for").as_deref(),
        Some("1.2.3.4,127.0.0.1")
    );
    assert_eq!(r.seen("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(r.seen("x-envoy-attempt-count").as_deref(), Some("1"));
    assert_eq!(r.seen("host").as_deref(), Some("app.example.com"));
    assert_eq!(r.seen("x-request-id").map(|v| v.len()), Some(36));
    assert_eq!(r.headers["server"], "istio-envoy");
    assert_eq!(r.headers["x-resp"], "yes");
    assert!(r.headers.contains_key("x-envoy-upstream-service-time"));
    // A client-sent x-request-id is regenerated at the edge.
    let r = send(port, "GET", "/x", &[("x-request-id", "mine")]).await;
    assert_ne!(r.seen("x-request-id").as_deref(), Some("mine"));
    // Path normalised before matching and sent normalised upstream.
    let r = get(port, "/a/../x").await;
    assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/x")));
    // No route: 404, empty body, no upstream time.
    let r = get(port, "/nothing").await;
    assert_eq!((r.status, r.body.as_str()), (404, ""));
    assert_eq!(r.headers["server"], "istio-envoy");
    assert!(!r.headers.contains_key("x-envoy-upstream-service-time"));
}

#[tokio::test(flavor = "multi_thread")]
async fn local_replies_for_missing_clusters_and_endpoints() {
    let a = backend("a", 200).await;
    let port = free_port();
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: default}\nspec:\n  host: a.example.internal\n  subsets: [{name: v9, labels: {version: v9}}]\n---\n";
    let _gw = gateway(port, &format!("{}{dr}{}", se("a", &[(a.port, "v1")]), vs(
        "  - match: [{uri: {prefix: /ghost}}]\n    route: [{destination: {host: ghost.example.internal}}]\n  - match: [{uri: {prefix: /nosubset}}]\n    route: [{destination: {host: a.example.internal, subset: nope}}]\n  - match: [{uri: {prefix: /empty}}]\n    route: [{destination: {host: a.example.internal, subset: v9}}]\n  - match: [{uri: {prefix: /redir}}]\n    redirect: {uri: /new, authority: other.example.com, port: 8443}\n  - match: [{uri: {prefix: /direct}}]\n    directResponse: {status: 418, body: {string: teapot}}\n    headers: {response: {set: {x-d: \"1\"}}}\n"))).await;
    let r = get(port, "/ghost").await;
    assert_eq!((r.status, r.body.as_str()), (503, ""));
    let r = get(port, "/nosubset").await;
    assert_eq!((r.status, r.body.as_str()), (503, ""));
    let r = get(port, "/empty").await;
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
    let r = get(port, "/redir?k=v").await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers["location"],
        "http://other.example.com:8443/new?k=v"
    );
    let r = get(port, "/direct").await;
    assert_eq!((r.status, r.body.as_str()), (418, "teapot"));
    assert_eq!(r.headers["content-type"], "text/plain");
    assert_eq!(r.headers["x-d"], "1");
    assert_eq!(a.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn default_retry_moves_to_a_healthy_endpoint_after_refused_connection() {
    let a = backend("a", 200).await;
    let dead = dead_port();
    let port = free_port();
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: default}\nspec:\n  host: a.example.internal\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n---\n";
    let _gw = gateway(port, &format!("{}{dr}{}", se("a", &[(dead, "v1"), (a.port, "v1")]), vs(
        "  - match: [{uri: {prefix: /default}}]\n    route: [{destination: {host: a.example.internal}}]\n  - match: [{uri: {prefix: /none}}]\n    retries: {attempts: 0}\n    route: [{destination: {host: a.example.internal}}]\n"))).await;
    for _ in 0..20 {
        let r = get(port, "/default").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Without retries, the refused endpoint's turns fail with Envoy's message.
    let mut failed = 0;
    for _ in 0..20 {
        let r = get(port, "/none").await;
        if r.status == 503 {
            assert!(r.body.starts_with("upstream connect error or disconnect/reset before headers. reset reason: connection failure"), "{}", r.body);
            failed += 1;
        }
    }
    assert!(failed >= 5, "{failed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_on_status_and_attempt_count() {
    let bad = backend("bad", 503).await;
    let good = backend("good", 200).await;
    let port = free_port();
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: default}\nspec:\n  host: a.example.internal\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n---\n";
    let _gw = gateway(port, &format!("{}{dr}{}", se("a", &[(bad.port, "v1"), (good.port, "v1")]), vs(
        "  - match: [{uri: {prefix: /r}}]\n    retries: {attempts: 3, retryOn: \"503\"}\n    route: [{destination: {host: a.example.internal}}]\n  - route: [{destination: {host: a.example.internal}}]\n"))).await;
    let mut second = 0;
    for _ in 0..10 {
        let r = get(port, "/r").await;
        assert_eq!((r.status, r.backend().as_str()), (200, "good"));
        if r.seen("x-envoy-attempt-count").as_deref() == Some("2") {
            second += 1;
        }
    }
    assert!(second >= 3, "{second}");
    // Istio >= 1.24: the default policy does not retry upstream 503.
    let saw_503 = futures_all(20, || get(port, "/d"))
        .await
        .iter()
        .any(|r| r.status == 503);
    assert!(saw_503);
}

async fn futures_all<F, Fut>(n: usize, f: F) -> Vec<Got>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Got>,
{
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(f().await);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_and_faults() {
    let a = backend("a", 200).await;
    let port = free_port();
    let _gw = gateway(port, &format!("{}{}", se("a", &[(a.port, "v1")]), vs(
        "  - match: [{uri: {prefix: /slow}}]\n    timeout: 200ms\n    route: [{destination: {host: a.example.internal}}]\n  - match: [{uri: {prefix: /abort}}]\n    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n    route: [{destination: {host: a.example.internal}}]\n  - match: [{uri: {prefix: /never}}]\n    fault: {abort: {httpStatus: 418}}\n    route: [{destination: {host: a.example.internal}}]\n  - match: [{uri: {prefix: /delay}}]\n    timeout: 100ms\n    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}\n    route: [{destination: {host: a.example.internal}}]\n"))).await;
    let t = Instant::now();
    let r = send(port, "GET", "/slow", &[("x-delay-ms", "2000")]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "upstream request timeout")
    );
    assert!(t.elapsed() < Duration::from_millis(1500));
    let r = get(port, "/abort").await;
    assert_eq!((r.status, r.body.as_str()), (418, "fault filter abort"));
    // Absent percentage = 0 %.
    assert_eq!(get(port, "/never").await.status, 200);
    // The delay runs before the route timer: 200 after ~300 ms despite a 100 ms timeout.
    let t = Instant::now();
    let r = get(port, "/delay").await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(290));
    assert_eq!(a.hits.load(Ordering::SeqCst), 3); // slow, never, delay
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflight_is_answered_by_the_gateway() {
    let a = backend("a", 200).await;
    let port = free_port();
    let _gw = gateway(port, &format!("{}{}", se("a", &[(a.port, "v1")]), vs(
        "  - corsPolicy:\n      allowOrigins: [{exact: \"https://ok.example\"}]\n      allowMethods: [GET, POST]\n      allowHeaders: [x-a, x-b]\n      exposeHeaders: [x-e]\n      maxAge: 24h\n      allowCredentials: true\n    route: [{destination: {host: a.example.internal}}]\n"))).await;
    let pre = [
        ("origin", "https://ok.example"),
        ("access-control-request-method", "POST"),
    ];
    let r = send(port, "OPTIONS", "/x", &pre).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://ok.example"
    );
    assert_eq!(r.headers["access-control-allow-methods"], "GET,POST");
    assert_eq!(r.headers["access-control-allow-headers"], "x-a,x-b");
    assert_eq!(r.headers["access-control-max-age"], "86400");
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    assert_eq!(a.hits.load(Ordering::SeqCst), 0);
    // A disallowed origin's preflight goes upstream untouched.
    let r = send(
        port,
        "OPTIONS",
        "/x",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_eq!(r.backend(), "a");
    assert!(!r.headers.contains_key("access-control-allow-origin"));
    // Actual request: allowed origin echoed, expose headers set.
    let r = send(port, "GET", "/x", &[("origin", "https://ok.example")]).await;
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://ok.example"
    );
    assert_eq!(r.headers["access-control-expose-headers"], "x-e");
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_split_and_mirror() {
    let a = backend("a", 200).await;
    let b = backend("b", 200).await;
    let m = backend("m", 200).await;
    let port = free_port();
    let _gw = gateway(port, &format!("{}{}{}{}", se("a", &[(a.port, "v1")]), se("b", &[(b.port, "v1")]), se("m", &[(m.port, "v1")]), vs(
        "  - route:\n    - destination: {host: a.example.internal}\n      weight: 80\n    - destination: {host: b.example.internal}\n      weight: 20\n    mirror: {host: m.example.internal}\n    mirrorPercentage: {value: 50}\n"))).await;
    let mut n_a = 0;
    for _ in 0..500 {
        let r = get(port, "/").await;
        assert_eq!(r.status, 200);
        if r.backend() == "a" {
            n_a += 1;
        }
    }
    let share = n_a as f64 / 5.0;
    assert!((75.0..=85.0).contains(&share), "a got {share}%");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mirrored = m.hits.load(Ordering::SeqCst);
    assert!(
        (200..=300).contains(&mirrored),
        "mirrored {mirrored} of 500"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn circuit_breaker_overflow_and_outlier_ejection() {
    let a = backend("a", 200).await;
    let sick = backend("sick", 500).await;
    let port = free_port();
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: default}\nspec:\n  host: a.example.internal\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: s, namespace: default}\nspec:\n  host: s.example.internal\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 2, interval: 100ms, baseEjectionTime: 500ms, maxEjectionPercent: 50}\n---\n";
    let _gw = gateway(port, &format!("{}{}{dr}{}", se("a", &[(a.port, "v1")]), se("s", &[(a.port, "v1"), (sick.port, "v1")]), vs(
        "  - match: [{uri: {prefix: /s}}]\n    retries: {attempts: 0}\n    route: [{destination: {host: s.example.internal}}]\n  - route: [{destination: {host: a.example.internal}}]\n"))).await;
    // maxConnections 1 + one pending: of 5 concurrent slow requests one is served, one waits
    // for its connection (so it ends after both delays, never alongside), three overflow.
    let t0 = std::time::Instant::now();
    let slow: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(async move {
                let r = send(port, "GET", "/", &[("x-delay-ms", "500")]).await;
                (r, t0.elapsed())
            })
        })
        .collect();
    let mut overflowed = 0;
    let mut served = Vec::new();
    for h in slow {
        let (r, took) = h.await.unwrap();
        if r.status == 503 {
            assert_eq!(r.headers["x-envoy-overloaded"], "true");
            assert!(r.body.ends_with("reset reason: overflow"));
            overflowed += 1;
        } else {
            assert_eq!(r.status, 200);
            served.push(took);
        }
    }
    assert_eq!(overflowed, 3, "served after {served:?}");
    let last = served.iter().max().unwrap();
    assert!(
        *last >= Duration::from_millis(950),
        "the pending request ran alongside the first (done after {last:?}), not after it"
    );
    // Outlier: after 2 consecutive 500s the sick host is ejected; then every request succeeds.
    let mut errors = 0;
    for _ in 0..10 {
        if get(port, "/s").await.status == 500 {
            errors += 1;
        }
    }
    assert!(errors <= 3, "{errors}");
    let before = sick.hits.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(get(port, "/s").await.status, 200);
    }
    assert_eq!(sick.hits.load(Ordering::SeqCst), before);
    // ...and it returns after the ejection time.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..6 {
        get(port, "/s").await;
    }
    assert!(sick.hits.load(Ordering::SeqCst) > before);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_swap_keeps_the_listener_and_h2c_works() {
    let a = backend("a", 200).await;
    let b = backend("b", 200).await;
    let port = free_port();
    let mut gw = gateway(port, &all_to("a", a.port)).await;
    assert_eq!(get(port, "/").await.backend(), "a");
    // A keep-alive connection open across the swap keeps working and sees the new table.
    let c = client();
    let req = || {
        Request::builder()
            .uri(format!("http://127.0.0.1:{port}/"))
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let r = c.request(req()).await.unwrap();
    assert_eq!(r.headers()["x-backend"], "a");
    let yaml = format!("{}{}", yaml::http_gateway(port), all_to("b", b.port));
    let m = load_str("t.yaml", &yaml).unwrap();
    let (plan, _) = compile(&m, &support::gateway::input());
    gw.apply(&plan.http).await.unwrap();
    let r = c.request(req()).await.unwrap();
    assert_eq!(r.headers()["x-backend"], "b");
    // HTTP/2 with prior knowledge (h2c) downstream.
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let r = h2.request(req()).await.unwrap();
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (http::Version::HTTP_2, 200)
    );
    assert_eq!(
        gw.bound(),
        vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_headers_431_and_http10_426() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = backend("a", 200).await;
    let port = free_port();
    let _gw = gateway(port, &all_to("a", a.port)).await;
    let raw = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let big = "x".repeat(70 * 1024);
    let r = raw(format!("GET / HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n")).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    let r = raw("GET / HTTP/1.0\r\nhost: a\r\n\r\n".to_string()).await;
    assert!(
        r.starts_with("HTTP/1.0 426") || r.starts_with("HTTP/1.1 426"),
        "{r}"
    );
    let r = raw("GET / HTTP/1.1\r\n\r\n".to_string()).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
}

/// `--istio-compat 1.23`: the default retry policy retries upstream 503 (before 1.24) and
/// mirrored requests carry a `-shadow` Host (before 1.28); the current profile does neither.
#[tokio::test]
async fn compatibility_profile_for_older_istio() {
    let bad = backend("bad", 503).await;
    let good = backend("good", 200).await;
    let m = backend("m", 200).await;
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: default}\nspec:\n  host: a.example.internal\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n---\n";
    let rest = format!(
        "{}{}{dr}{}",
        se("a", &[(bad.port, "v1"), (good.port, "v1")]),
        se("m", &[(m.port, "v1")]),
        vs("  - route: [{destination: {host: a.example.internal}}]\n    mirror: {host: m.example.internal}\n")
    );
    let old_port = free_port();
    let _old = gateway_as(old_port, &rest, "1.23".parse().unwrap()).await;
    for _ in 0..10 {
        let r = send(old_port, "GET", "/", &[("host", "shop.example.com:8080")]).await;
        assert_eq!(
            (r.status, r.backend().as_str()),
            (200, "good"),
            "1.23 retries 503 by default"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = m.hosts.lock().unwrap().clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|h| h == "shop.example.com-shadow:8080"),
        "{seen:?}"
    );

    let new_port = free_port();
    let _new = gateway(new_port, &rest).await;
    m.hosts.lock().unwrap().clear();
    let codes: Vec<u16> = futures_all(20, || {
        send(new_port, "GET", "/", &[("host", "shop.example.com")])
    })
    .await
    .iter()
    .map(|r| r.status)
    .collect();
    assert!(
        codes.contains(&503),
        "current profile does not retry 503: {codes:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = m.hosts.lock().unwrap().clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|h| h == "shop.example.com"),
        "{seen:?}"
    );
}
