//! TLS servers served as byte streams, and delegate VirtualServices, in-process over 127.0.0.1:
//! manifests through `load_and_compile` and `L7::apply_plan`, TLS backends (rustls, rcgen
//! certificates) that name themselves, and rustls clients that verify whose certificate they
//! got.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::config::Warning;
use gateway::l7::L7;
use gateway::plan::stream::StreamListener;
use gateway::plan::Plan;
use rustls::pki_types::ServerName;

mod support;
use support::backend::{plain_echo, tls_echo};
use support::gateway::compile_dir;
use support::net::free_port;
use support::tls::Ca;
use support::yaml::{self, GATEWAY};

/// TLS client (blocking, verifying the certificate for `sni`): the greeting line, and the echo
/// of a probe; or the error.
fn tls_hello(ca: &Ca, port: u16, sni: &str, split: bool) -> Result<String, String> {
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(ca.client_config(), name).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if split {
        // The ClientHello in two segments 300 ms apart: the gateway must wait for the rest.
        tcp.set_nodelay(true).unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        tcp.write_all(&hello[..20]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        tcp.write_all(&hello[20..]).unwrap();
    }
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut r = BufReader::new(&mut s);
    let mut greeting = String::new();
    r.read_line(&mut greeting)
        .map_err(|e| format!("handshake/read: {e}"))?;
    if greeting.is_empty() {
        return Err("closed".into());
    }
    s.write_all(b"probe\n").map_err(|e| e.to_string())?;
    let mut back = [0u8; 6];
    s.read_exact(&mut back).map_err(|e| e.to_string())?;
    assert_eq!(&back, b"probe\n");
    Ok(greeting.trim().to_string())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

struct Setup {
    _l7: L7,
    _dir: tempfile::TempDir,
    ca: Arc<Ca>,
    plan: Plan,
    warnings: Vec<Warning>,
    /// Passthrough (a, b, `*.w`) and an HTTPS SIMPLE server (h) on one port.
    mixed: u16,
    /// A `TLS` server terminating for t.example.com, `tcp` route to a plain backend.
    term: u16,
}

impl Setup {
    /// The compiled stream listener on `port`.
    fn listener(&self, port: u16) -> &StreamListener {
        self.plan
            .streams
            .listeners
            .iter()
            .find(|l| l.port == port)
            .expect("stream listener")
    }
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Arc::new(Ca::new("passthrough test CA"));
    let a = tls_echo(
        "A",
        &ca.server(&["a.example.com", "*.w.example.com", "*.z.w.example.com"]),
    )
    .await;
    let b = tls_echo("B", &ca.server(&["b.example.com"])).await;
    let plain = plain_echo("PLAIN").await;
    for (f, leaf) in [
        ("h", ca.server(&["h.example.com"])),
        ("t", ca.server(&["t.example.com"])),
    ] {
        std::fs::write(d.join(format!("{f}.crt")), leaf.pem).unwrap();
        std::fs::write(d.join(format!("{f}.key")), leaf.key).unwrap();
    }
    let (mixed, term) = (free_port(), free_port());
    let yaml_backends = yaml::local_service("backends", "a.internal", (443, "tls", "TLS"), a);
    let yaml_b = yaml::local_service("b", "b.internal", (443, "tls", "TLS"), b);
    let yaml_plain = yaml::local_service("plain", "plain.internal", (9000, "tcp", "TCP"), plain);
    let yaml = format!(
        r#"{GATEWAY}  - port: {{number: {mixed}, name: tls-pass, protocol: TLS}}
    hosts: [a.example.com, b.example.com, "*.w.example.com", big.example.com]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: {mixed}, name: https-h, protocol: HTTPS}}
    hosts: [h.example.com]
    tls: {{mode: SIMPLE, serverCertificate: h.crt, privateKey: h.key}}
  - port: {{number: {term}, name: tls-term, protocol: TLS}}
    hosts: [t.example.com]
    tls: {{mode: SIMPLE, serverCertificate: t.crt, privateKey: t.key}}
---
{yaml_backends}{yaml_b}{yaml_plain}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pass, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}}
spec:
  hosts: [a.example.com, b.example.com, "*.w.example.com", big.example.com]
  gateways: [istio-system/gw]
  tls:
  - match: [{{sniHosts: [a.example.com]}}]
    route: [{{destination: {{host: a.internal}}}}]
  - match: [{{sniHosts: [b.example.com], port: {mixed}}}]
    route: [{{destination: {{host: b.internal}}}}]
  - match: [{{sniHosts: ["*.w.example.com"], gateways: [istio-system/gw]}}]
    route: [{{destination: {{host: a.internal}}}}]
  - match: [{{sniHosts: [a.example.com, b.example.com], port: 1}}]
    route: [{{destination: {{host: b.internal}}}}]
  - match: [{{sniHosts: [big.example.com]}}]
    route: [{{destination: {{host: plain.internal}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pass-later, namespace: default, creationTimestamp: "2024-01-02T00:00:00Z"}}
spec:
  hosts: [b.example.com]
  gateways: [istio-system/gw]
  tls:
  - match: [{{sniHosts: [b.example.com]}}]
    route: [{{destination: {{host: a.internal}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: h, namespace: default}}
spec:
  hosts: [h.example.com]
  gateways: [istio-system/gw]
  http:
  - directResponse: {{status: 200, body: {{string: "https h"}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: t, namespace: default}}
spec:
  hosts: [t.example.com]
  gateways: [istio-system/gw]
  tcp:
  - match: [{{port: 1}}]
    route: [{{destination: {{host: b.internal}}}}]
  - route: [{{destination: {{host: plain.internal}}}}]
"#
    );
    let (plan, warnings) = compile_dir(d, "config.yaml", &yaml);
    let mut l7 = L7::default();
    l7.apply_plan(&plan).await.expect("binds");
    Setup {
        _l7: l7,
        _dir: dir,
        ca,
        plan,
        warnings,
        mixed,
        term,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_by_sni_shares_the_port_with_https() {
    let s = setup().await;
    // Compiled as Istio would: one chain per passing match block in order; the later
    // VirtualService's duplicate SNI is skipped with a warning naming it; port-mismatched
    // blocks contribute nothing; both ports are agent-served local ports (XDP passes them).
    let l = s.listener(s.mixed);
    let names: Vec<Vec<String>> = l.chains.iter().map(|c| c.server_names.clone()).collect();
    assert_eq!(
        names,
        vec![
            vec!["a.example.com".to_string()],
            vec!["b.example.com".to_string()],
            vec!["*.w.example.com".to_string()],
            vec!["big.example.com".to_string()],
        ]
    );
    assert!(l.chains[1]
        .origin
        .contains("VirtualService default/pass tls[1].match[0]"));
    assert!(
        s.warnings
            .iter()
            .any(|w| w.resource == "VirtualService default/pass-later"
                && w.field == "spec.tls[0].match[0].sniHosts"
                && w.message.contains("duplicate SNI host names")),
        "{:#?}",
        s.warnings
    );
    for port in [s.mixed, s.term] {
        assert!(
            s.plan.local.iter().any(|p| p.port == port),
            "{:?}",
            s.plan.local
        );
    }

    // The client verifies the backend's own certificate: the TLS bytes went through untouched.
    let ca = s.ca.clone();
    let port = s.mixed;
    let got = blocking(move || {
        [
            "a.example.com",
            "b.example.com",
            "x.w.example.com",
            "y.z.w.example.com",
        ]
        .map(|sni| tls_hello(&ca, port, sni, false))
    })
    .await;
    assert_eq!(
        got,
        [
            Ok("A".to_string()),
            Ok("B".to_string()),
            Ok("A".to_string()),
            Ok("A".to_string())
        ]
    );
    // Unknown SNI (and no SNI catch-all chain): closed during the handshake.
    let ca = s.ca.clone();
    let e = blocking(move || tls_hello(&ca, port, "c.example.com", false)).await;
    assert!(e.is_err(), "{e:?}");
    // The HTTPS server on the same port terminates with its own certificate and serves HTTP.
    let ca = s.ca.clone();
    let body = blocking(move || {
        let name = ServerName::try_from("h.example.com").unwrap();
        let conn = rustls::ClientConnection::new(ca.client_config(), name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(b"GET / HTTP/1.1\r\nhost: h.example.com\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.ends_with("https h"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_hello_in_two_segments_and_silent_client() {
    let s = setup().await;
    let (ca, port) = (s.ca.clone(), s.mixed);
    let got = blocking(move || tls_hello(&ca, port, "b.example.com", true)).await;
    assert_eq!(got, Ok("B".to_string()));
    // A client that never sends a ClientHello is disconnected after Envoy's 15 s listener
    // filter timeout, not kept forever.
    let port = s.mixed;
    let (read, waited) = blocking(move || {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let t = Instant::now();
        let mut b = [0u8; 1];
        (tcp.read(&mut b).map_err(|e| e.kind()), t.elapsed())
    })
    .await;
    assert_eq!(read, Ok(0), "closed without data");
    assert!(
        waited >= Duration::from_secs(14) && waited < Duration::from_secs(25),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_server_terminates_and_forwards_by_tcp_routes() {
    let s = setup().await;
    let l = s.listener(s.term);
    assert_eq!(l.chains.len(), 1);
    assert!(l.chains[0].terminate.is_some());
    // The first tcp rule whose match passes (port 1 does not): plain.internal.
    assert!(
        l.chains[0]
            .origin
            .ends_with("VirtualService default/t tcp[1]"),
        "{}",
        l.chains[0].origin
    );
    let (ca, port) = (s.ca.clone(), s.term);
    // The gateway's certificate for t.example.com; the plain backend behind it.
    let got = blocking(move || tls_hello(&ca, port, "t.example.com", false)).await;
    assert_eq!(got, Ok("PLAIN".to_string()));
    let (ca, port) = (s.ca.clone(), s.term);
    let e = blocking(move || tls_hello(&ca, port, "other.example.com", false)).await;
    assert!(e.is_err(), "{e:?}");
}

#[test]
fn passthrough_without_route_is_not_listened_on() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = yaml::gateway(concat!(
        "  - port: {number: 8443, name: tls, protocol: TLS}\n",
        "    hosts: [a.example.com]\n",
        "    tls: {mode: PASSTHROUGH}\n",
        "  - port: {number: 9443, name: auto, protocol: TLS}\n",
        "    hosts: [\"*.local\"]\n",
        "    tls: {mode: AUTO_PASSTHROUGH}\n",
    ));
    let (plan, warnings) = compile_dir(dir.path(), "config.yaml", &yaml);
    assert!(plan.streams.listeners.is_empty(), "{:#?}", plan.streams);
    let w = |field: &str| {
        warnings
            .iter()
            .find(|w| w.resource == "Gateway istio-system/gw" && w.field == field)
            .map(|w| w.message.clone())
            .unwrap_or_default()
    };
    assert!(
        w("spec.servers[0]").contains("no VirtualService tls route"),
        "{warnings:#?}"
    );
    assert!(
        w("spec.servers[1].hosts").contains("no mesh-internal service"),
        "{warnings:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Delegate VirtualServices

/// Root `default/root` on d.example.com delegating `/api` (with a header) and `/v2api` to
/// `apps/api`; `spec_extra` goes into the delegate's spec.
fn delegate_yaml(port: u16, spec_extra: &str) -> String {
    format!(
        r#"{GATEWAY}  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: apps}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: root, namespace: default}}
spec:
  hosts: [d.example.com]
  gateways: [istio-system/gw]
  http:
  - name: api
    match: [{{uri: {{prefix: /api}}, headers: {{x-team: {{exact: blue}}}}}}, {{uri: {{prefix: /v2api}}}}]
    delegate: {{name: api, namespace: apps}}
    headers: {{response: {{set: {{x-root: "yes"}}}}}}
  - match: [{{uri: {{prefix: /gone}}}}]
    delegate: {{name: missing}}
  - directResponse: {{status: 200, body: {{string: root-default}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: apps}}
spec:
{spec_extra}  http:
  - name: v1
    match: [{{uri: {{prefix: /api/v1}}}}]
    directResponse: {{status: 200, body: {{string: delegate-v1}}}}
  - match: [{{uri: {{prefix: /other}}}}]
    directResponse: {{status: 200, body: {{string: never}}}}
  - match: [{{uri: {{regex: "/api/.*"}}}}]
    directResponse: {{status: 200, body: {{string: never}}}}
  - route: [{{destination: {{host: web}}}}]
"#
    )
}

#[test]
fn delegate_routes_merge_as_istio_does() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, warnings) = compile_dir(dir.path(), "config.yaml", &delegate_yaml(8080, ""));
    let vh = &plan.http.listeners[0].vhosts;
    let routes: Vec<&str> = vh
        .iter()
        .find(|v| v.domain == "d.example.com")
        .unwrap()
        .routes
        .iter()
        .map(|r| r.origin.as_str())
        .collect();
    // Delegate v1 fits /api only; the delegate's catch-all inherits both root blocks; the
    // conflicting /other and regex routes are dropped; the missing delegate drops its route.
    assert_eq!(
        routes,
        vec![
            "VirtualService default/root http[0] -> VirtualService apps/api http[0].match[0]",
            "VirtualService default/root http[0] -> VirtualService apps/api http[3].match[0]",
            "VirtualService default/root http[0] -> VirtualService apps/api http[3].match[1]",
            "VirtualService default/root http[2]",
        ]
    );
    let json = serde_json::to_value(&plan.http).unwrap();
    let r0 = &json["listeners"][0]["vhosts"][0]["routes"][0];
    assert_eq!(r0["match"]["path"]["prefix"], "/api/v1");
    assert_eq!(r0["match"]["headers"][0]["name"], "x-team");
    // Inherited from the root route: its response headers.
    assert_eq!(r0["response_headers"]["set"][0][0], "x-root");
    // The delegate's short name resolves in the delegate's namespace.
    let r1 = &json["listeners"][0]["vhosts"][0]["routes"][1];
    assert_eq!(
        r1["action"]["forward"]["clusters"][0]["cluster"],
        "outbound|80||web.apps.svc.cluster.local"
    );
    let find = |res: &str, field: &str| {
        warnings
            .iter()
            .find(|w| w.resource == res && w.field == field)
            .map(|w| w.message.clone())
            .unwrap_or_default()
    };
    assert!(
        find("VirtualService apps/api", "spec.http[1].match").contains("conflicts"),
        "{warnings:#?}"
    );
    assert!(find("VirtualService apps/api", "spec.http[2].match").contains("conflicts"));
    assert!(
        find("VirtualService default/root", "spec.http[1].delegate")
            .contains("default/missing not found"),
        "{warnings:#?}"
    );

    // Not exported to the root's namespace, or not a delegate (it has hosts): dropped.
    for (extra, want) in [
        ("  exportTo: [\".\"]\n", "not exported to namespace default"),
        ("  hosts: [api.example.com]\n", "is a root VirtualService"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (plan, warnings) = compile_dir(dir.path(), "config.yaml", &delegate_yaml(8080, extra));
        let n = plan.http.listeners[0]
            .vhosts
            .iter()
            .find(|v| v.domain == "d.example.com")
            .unwrap()
            .routes
            .len();
        assert_eq!(n, 1, "only the root default route is left");
        assert!(
            find_in(
                &warnings,
                "VirtualService default/root",
                "spec.http[0].delegate"
            )
            .contains(want),
            "{warnings:#?}"
        );
    }
}

fn find_in(warnings: &[Warning], res: &str, field: &str) -> String {
    warnings
        .iter()
        .find(|w| w.resource == res && w.field == field)
        .map(|w| w.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn delegate_routes_answer_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (plan, _) = compile_dir(dir.path(), "config.yaml", &delegate_yaml(port, ""));
    let mut l7 = L7::default();
    l7.apply_plan(&plan).await.unwrap();
    let get = |path: &'static str, extra: &'static str| {
        blocking(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nhost: d.example.com\r\n{extra}connection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
    };
    let r = get("/api/v1/x", "x-team: blue\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("delegate-v1"),
        "{r}"
    );
    assert!(r.contains("x-root: yes"), "{r}");
    // The root block needs the header: without it /api/v1 falls to the root default.
    let r = get("/api/v1/x", "").await;
    assert!(r.ends_with("root-default"), "{r}");
    // /v2api is the second root block: the delegate's catch-all (web has no endpoints: 503).
    let r = get("/v2api/x", "").await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    let r = get("/other", "").await;
    assert!(r.ends_with("root-default"), "{r}");
}

/// A ClientHello for `sni` carrying a padding extension of `pad` bytes, cut into handshake
/// records of at most 16 KiB (what a client with large post-quantum key shares sends).
fn big_client_hello(sni: &str, pad: usize) -> Vec<u8> {
    client_hello_with(sni, &[], pad)
}

/// A hand-made ClientHello (SNI, ALPN, padding); see [`big_client_hello`].
fn client_hello_with(sni: &str, alpn: &[&str], pad: usize) -> Vec<u8> {
    let mut sni_ext = Vec::new();
    let entry_len = 3 + sni.len();
    sni_ext.extend_from_slice(&(entry_len as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(sni.as_bytes());
    let mut alpn_list = Vec::new();
    for a in alpn {
        alpn_list.push(a.len() as u8);
        alpn_list.extend_from_slice(a.as_bytes());
    }
    let mut alpn_ext = (alpn_list.len() as u16).to_be_bytes().to_vec();
    alpn_ext.extend_from_slice(&alpn_list);
    let mut exts = Vec::new();
    let mut parts = vec![(0u16, sni_ext), (21u16, vec![0u8; pad])];
    if !alpn.is_empty() {
        parts.push((16, alpn_ext));
    }
    for (ty, data) in parts {
        exts.extend_from_slice(&ty.to_be_bytes());
        exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        exts.extend_from_slice(&data);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut out = Vec::new();
    for chunk in hs.chunks(16384) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn large_client_hello_is_read_whole_and_spliced_untouched() {
    let s = setup().await;
    let port = s.mixed;
    let hello = big_client_hello("big.example.com", 30_000);
    assert!(hello.len() > 30_000);
    let sent = hello.clone();
    let (greeting, echoed) = blocking(move || {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(&sent).unwrap();
        let mut r = BufReader::new(tcp);
        let mut greeting = String::new();
        r.read_line(&mut greeting).unwrap();
        let mut echoed = vec![0u8; sent.len()];
        r.read_exact(&mut echoed).unwrap();
        (greeting, echoed)
    })
    .await;
    // The plain backend behind the big.example.com chain greets, then echoes every byte the
    // client sent, ClientHello included.
    assert_eq!(greeting, "PLAIN\n");
    assert!(echoed == hello, "the ClientHello arrived altered");
}

/// Sends `hello` to `port` and returns the first line the far side sends ("" when closed).
fn first_line(port: u16, hello: Vec<u8>) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(&hello).unwrap();
    let mut line = String::new();
    let _ = BufReader::new(tcp).read_line(&mut line);
    line
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_passthrough_by_istio_cluster_sni() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (plain_echo("V1").await, plain_echo("V2").await);
    let port = free_port();
    let yaml_outside = yaml::local_service("outside", "outside.mesh", (9000, "tcp", "TCP"), v1);
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: eastwest, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: tls, protocol: TLS}}
    hosts: ["*.mesh"]
    tls: {{mode: AUTO_PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{tcp: {v2}}}, labels: {{version: v2}}}}
---
{yaml_outside}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: echo.mesh
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"#
    );
    let (plan, warnings) = compile_dir(dir.path(), "config.yaml", &yaml);
    let names: Vec<String> = plan.streams.listeners[0]
        .chains
        .iter()
        .flat_map(|c| c.server_names.clone())
        .collect();
    // MESH_EXTERNAL (the ServiceEntry default) services get no chain.
    assert_eq!(
        names,
        [
            "outbound_.9000_._.echo.mesh",
            "outbound_.9000_.v1_.echo.mesh",
            "outbound_.9000_.v2_.echo.mesh"
        ],
        "{warnings:#?}"
    );
    let mut l7 = L7::default();
    l7.apply_plan(&plan).await.unwrap();
    let got = blocking(move || {
        [
            (
                "outbound_.9000_.v1_.echo.mesh",
                &["istio-peer-exchange", "istio"][..],
            ),
            ("outbound_.9000_.v2_.echo.mesh", &["istio-h2"][..]),
            // Without an Istio mTLS ALPN, or for a service outside the mesh: closed.
            ("outbound_.9000_.v1_.echo.mesh", &["h2"][..]),
            ("outbound_.9000_._.outside.mesh", &["istio"][..]),
        ]
        .map(|(sni, alpn)| first_line(port, client_hello_with(sni, alpn, 0)))
    })
    .await;
    assert_eq!(got, ["V1\n", "V2\n", "", ""]);
}

#[test]
fn passthrough_binding_follows_istio() {
    // Server hosts `apps/*` admit only VirtualServices from `apps`; `sniHosts: ["*"]` is a
    // chain without SNI names (it also takes clients without SNI); a VirtualService whose
    // hosts do not overlap the server's contributes nothing.
    let yaml = yaml::gateway(concat!(
        "  - port: {number: 8443, name: tls, protocol: HTTPS}\n",
        "    hosts: [\"apps/*\"]\n",
        "    tls: {mode: PASSTHROUGH}\n",
    )) + r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: any, namespace: apps}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  tls:
  - match: [{sniHosts: ["*"]}]
    route: [{destination: {host: a.internal}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: elsewhere, namespace: default}
spec:
  hosts: [x.example.com]
  gateways: [istio-system/gw]
  tls:
  - match: [{sniHosts: [x.example.com]}]
    route: [{destination: {host: a.internal}}]
"#;
    let dir = tempfile::tempdir().unwrap();
    let (plan, warnings) = compile_dir(dir.path(), "config.yaml", &yaml);
    let chains = &plan.streams.listeners[0].chains;
    assert_eq!(chains.len(), 1, "{chains:#?}");
    assert!(chains[0].server_names.is_empty());
    assert!(chains[0]
        .origin
        .ends_with("VirtualService apps/any tls[0].match[0]"));
    // The unknown destination host is named, and the chain closes its connections.
    assert!(
        warnings
            .iter()
            .any(|w| w.resource == "VirtualService apps/any"
                && w.field == "spec.tls[0].route[0].destination.host"),
        "{warnings:#?}"
    );
    assert!(plan.streams.clusters.is_empty());
}
