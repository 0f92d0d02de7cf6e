//! End-to-end: TLS passthrough, a TLS-terminating `TLS` server with `tcp` routes, and delegate
//! VirtualServices, through the real `gateway` binary in the node namespace (XDP attached,
//! forwarding off, so every byte reaches the agent because the XDP program passed it to the
//! local stack), with curl in the client namespace verifying certificates made at test time and
//! `test-backend --tls` backends (rustls) that name themselves.

use std::fs;

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    http::{expect, CurlError},
    manifests::{self, GATEWAY_HEAD},
    test_backend_bin,
    tls::{tls_secret, Ca},
    topology::{Topology, BACKEND_HTTP_PORT, VIP},
    Agent, ChildGuard, Opts,
};

/// Port of each backend's TLS server.
const BACKEND_TLS_PORT: u16 = 8443;

fn is_curl_code(e: &anyhow::Error, code: i32) -> bool {
    e.downcast_ref::<CurlError>()
        .is_some_and(|c| c.code == code)
}

/// Gateway `gw`: 443 passthrough (a, b), 9443 `TLS` SIMPLE for t.example.com (credentialName),
/// 80 HTTP. Services: `a.internal`/`b.internal` are b1's/b2's TLS servers, `web.internal` all
/// backends' HTTP, `plain.internal` b1's HTTP as an opaque TCP port.
fn manifests(topo: &Topology, t_cert: &(String, String)) -> Vec<(&'static str, String)> {
    let (b1, b2) = (topo.backend("b1").addr, topo.backend("b2").addr);
    let gateway = format!(
        "{GATEWAY_HEAD}  - port: {{number: 443, name: tls-pass, protocol: TLS}}
    hosts: [a.example.com, b.example.com]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: 9443, name: tls-term, protocol: TLS}}
    hosts: [t.example.com]
    tls: {{mode: SIMPLE, credentialName: t-cert}}
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [\"*\"]
---
{}",
        tls_secret("t-cert", (&t_cert.0, &t_cert.1), None)
    );
    // ServiceEntry NAME in NAMESPACE for HOST: port (number, name, protocol) to the backend's
    // `target` port at `addr`.
    let se = |name: &str,
              ns: &str,
              host: &str,
              (number, port, proto): (u16, &str, &str),
              target: u16,
              addr| {
        manifests::service_entry(
            name,
            ns,
            host,
            &format!("{{number: {number}, name: {port}, protocol: {proto}, targetPort: {target}}}"),
            &[format!("{{address: {addr}}}")],
        )
    };
    let se_a = se(
        "a",
        "default",
        "a.internal",
        (443, "tls", "TLS"),
        BACKEND_TLS_PORT,
        b1,
    );
    let se_b = se(
        "b",
        "default",
        "b.internal",
        (443, "tls", "TLS"),
        BACKEND_TLS_PORT,
        b2,
    );
    let se_plain = se(
        "plain",
        "default",
        "plain.internal",
        (7000, "tcp", "TCP"),
        BACKEND_HTTP_PORT,
        b1,
    );
    let se_web = se(
        "web",
        "apps",
        "web.internal",
        (80, "http", "HTTP"),
        BACKEND_HTTP_PORT,
        b2,
    );
    let services = format!(
        "{se_a}---
{se_b}---
{se_plain}---
{se_web}"
    );
    let routes = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sni, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [gw]
  tls:
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: a.internal}}]
  - match: [{sniHosts: [b.example.com], port: 443}]
    route: [{destination: {host: b.internal}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: term, namespace: default}
spec:
  hosts: [t.example.com]
  gateways: [gw]
  tcp:
  - route: [{destination: {host: plain.internal}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [d.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /api}}]
    delegate: {name: api, namespace: apps}
  - directResponse: {status: 200, body: {string: root}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: apps}
spec:
  http:
  - match: [{uri: {prefix: /api/v1}}]
    route: [{destination: {host: web.internal}}]
    headers: {request: {set: {x-delegate: api-v1}}}
  - directResponse: {status: 200, body: {string: api-rest}}
"
    .to_string();
    vec![
        ("gateway.yaml", gateway),
        ("services.yaml", services),
        ("routes.yaml", routes),
    ]
}

#[test]
fn passthrough_tls_termination_and_delegates_end_to_end() -> Result<()> {
    let topo = Topology::new("tp", 2, Opts::http_backends())?;
    let ca = Ca::new("gateway e2e CA")?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ca.pem");
    fs::write(&ca_file, ca.cert.pem())?;
    // Each backend terminates TLS itself with its own certificate.
    let bin = test_backend_bin()?;
    let bin = bin.to_str().context("non-UTF-8 path")?;
    let mut tls_servers: Vec<ChildGuard> = Vec::new();
    for (b, host) in [("b1", "a.example.com"), ("b2", "b.example.com")] {
        let (cert, key) = ca.leaf(host)?;
        let (cf, kf) = (
            dir.path().join(format!("{b}.crt")),
            dir.path().join(format!("{b}.key")),
        );
        fs::write(&cf, cert)?;
        fs::write(&kf, key)?;
        let port = BACKEND_TLS_PORT.to_string();
        let args = [
            "--name",
            b,
            "--tls",
            &port,
            "--cert",
            cf.to_str().context("path")?,
            "--key",
            kf.to_str().context("path")?,
        ];
        let mut child = topo.backend(b).ns.spawn(bin, &args, true)?;
        child.wait_for_line("ready", std::time::Duration::from_secs(10))?;
        tls_servers.push(child);
    }
    let t_cert = ca.leaf("t.example.com")?;
    let agent = Agent::start(&topo, &manifests(&topo, &t_cert))?;
    let c = topo.http_client();
    let cacert = ca_file.to_str().context("path")?;
    let https = |host: &str, port: u16, path: &str| {
        let resolve = format!("{host}:{port}:{VIP}");
        let url = format!("https://{host}:{port}{path}");
        c.curl(&["--http1.1", "--cacert", cacert, "--resolve", &resolve, &url])
    };

    // Passthrough: SNI picks the backend, and curl verified that backend's own certificate
    // (the gateway holds no key for a or b).
    for (host, want) in [("a.example.com", "b1"), ("b.example.com", "b2")] {
        for _ in 0..3 {
            let r = https(host, 443, "/p")?;
            expect(&r, 200, want, host)?;
            ensure!(r.upstream_request_line() == "GET /p", "{r:#?}");
        }
    }
    // An SNI no tls route names: the gateway closes the connection (curl: TLS connect error).
    let e = https("c.example.com", 443, "/").unwrap_err();
    ensure!(is_curl_code(&e, 35), "want a TLS handshake failure: {e:#}");

    // `TLS` server, SIMPLE: the gateway's certificate for t.example.com, then the decrypted
    // bytes as plain TCP to b1's HTTP server.
    let r = https("t.example.com", 9443, "/t")?;
    expect(&r, 200, "b1", "tls termination")?;
    ensure!(r.upstream_request_line() == "GET /t", "{r:#?}");
    let e = https("c.example.com", 9443, "/").unwrap_err();
    ensure!(is_curl_code(&e, 35), "want a TLS handshake failure: {e:#}");

    // Delegate: /api/v1 from the delegate (in another namespace), the rest of /api from its
    // catch-all, everything else from the root.
    let host = "Host: d.example.com";
    let r = c.get(&format!("http://{VIP}/api/v1/x"), &[host])?;
    expect(&r, 200, "b2", "delegate route")?;
    ensure!(r.upstream_header("x-delegate") == Some("api-v1"), "{r:#?}");
    let r = c.get(&format!("http://{VIP}/api/other"), &[host])?;
    ensure!(r.status == 200 && r.body == "api-rest", "{r:#?}");
    let r = c.get(&format!("http://{VIP}/else"), &[host])?;
    ensure!(r.status == 200 && r.body == "root", "{r:#?}");

    // /metrics counts stream connections by chain and outcome.
    let (_, metrics) = agent.get("/metrics")?;
    let counted = |chain: &str, outcome: &str| {
        let key = format!(
            "gateway_tls_stream_connections_total{{listener_port=\"443\",chain=\"{chain}\",outcome=\"{outcome}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let a_chain =
        "Gateway default/gw server tls-pass:443 -> VirtualService default/sni tls[0].match[0]";
    ensure!(counted(a_chain, "forwarded") == Some(3), "{metrics}");
    ensure!(counted("", "no_chain") == Some(1), "{metrics}");
    ensure!(
        agent.verdict_packets("pass_local")? > 0,
        "no pass_local verdicts"
    );

    // A reload re-routes new connections: a.example.com now to b.internal (b2, whose
    // certificate is for b.example.com only, so curl must refuse it: the bytes really went
    // there untouched), and c.example.com appears.
    let mut files = manifests(&topo, &t_cert);
    files[2].1 = files[2]
        .1
        .replace(
            "  - match: [{sniHosts: [a.example.com]}]\n    route: [{destination: {host: a.internal}}]",
            "  - match: [{sniHosts: [a.example.com]}]\n    route: [{destination: {host: b.internal}}]",
        )
        .replace("hosts: [a.example.com, b.example.com]\n  gateways", "hosts: [a.example.com, b.example.com, c.example.com]\n  gateways")
        .replace(
            "  - match: [{sniHosts: [b.example.com], port: 443}]",
            "  - match: [{sniHosts: [c.example.com]}]\n    route: [{destination: {host: a.internal}}]\n  - match: [{sniHosts: [b.example.com], port: 443}]",
        );
    files[0].1 = files[0].1.replace(
        "hosts: [a.example.com, b.example.com]",
        "hosts: [a.example.com, b.example.com, c.example.com]",
    );
    let generation = agent.generation()?;
    agent.write_config(&files)?;
    agent.wait_generation_above(generation, std::time::Duration::from_secs(10))?;
    let e = https("a.example.com", 443, "/").unwrap_err();
    ensure!(
        is_curl_code(&e, 60),
        "want b2's certificate refused for a.example.com: {e:#}"
    );
    // c.example.com reaches b1, whose certificate is for a.example.com: refused likewise,
    // while `-k` shows the connection itself went through to b1.
    let resolve = format!("c.example.com:443:{VIP}");
    let r = c.curl(&["-k", "--resolve", &resolve, "https://c.example.com/"])?;
    expect(&r, 200, "b1", "c.example.com after reload")?;
    drop(tls_servers);
    Ok(())
}
