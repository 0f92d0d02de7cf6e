//! HTTPS termination through the real agent with curl, and the L7 path over IPv6.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    http::expect,
    manifests::{self, GATEWAY_HEAD},
    tls::{b64, tls_secret, Ca},
    topology::{Topology, BACKEND_HTTP_PORT, VIP},
    Agent, Opts,
};

use super::{files, opts, url, vs, HOST};

/// HTTPS termination through the real agent: a `credentialName` Secret, curl verifying the
/// certificate with `--cacert`, ALPN h2 and HTTP/1.1, x-forwarded-proto https; the plain-text
/// server redirects to https.
#[test]
fn https_termination_with_curl() -> Result<()> {
    let topo = Topology::new("tl", 1, opts())?;
    let ca = Ca::new("gateway test CA")?;
    let (cert, key) = ca.leaf(HOST)?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ca.pem");
    fs::write(&ca_file, ca.cert.pem())?;

    let gateway = format!(
        "{GATEWAY_HEAD}  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: SIMPLE, credentialName: web-cert}}
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [{HOST}]
    tls: {{httpsRedirect: true}}
---
{}",
        tls_secret("web-cert", (&cert, &key), None)
    );
    let mut cfg = files(
        &topo,
        "",
        &[&vs(
            "web",
            &format!("[{HOST}]"),
            &format!(
                "  - match: [{{scheme: {{exact: https}}}}]\n    route: [{{destination: {{host: {HOST}}}}}]\n"
            ),
        )],
    );
    cfg[0].1 = gateway;
    let agent = Agent::start(&topo, &cfg)?;
    // Debug from the start: even the most talkative log must not carry the key.
    ensure!(agent.post("/logging?level=debug")?.0 == 200);
    let c = topo.http_client();
    let resolve = format!("{HOST}:443:{VIP}");
    let cacert = ca_file.to_str().context("path")?;
    let u = format!("https://{HOST}/x?y=1");
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let r = c.curl(&["--cacert", cacert, "--resolve", &resolve, flag, &u])?;
        expect(&r, 200, "b1", "https")?;
        ensure!(r.version == version, "ALPN: HTTP/{} with {flag}", r.version);
        ensure!(
            r.upstream_header("x-forwarded-proto") == Some("https"),
            "{r:#?}"
        );
        ensure!(r.upstream_request_line() == "GET /x?y=1", "{r:#?}");
    }
    // An SNI no server claims: the handshake is refused (curl error 35).
    let err = c
        .curl(&[
            "--cacert",
            cacert,
            "--resolve",
            "other.example.com:443:198.18.0.1",
            "https://other.example.com/",
        ])
        .unwrap_err();
    ensure!(
        err.downcast_ref::<gateway_tests::http::CurlError>()
            .is_some_and(|e| e.code == 35),
        "want a TLS handshake failure: {err:#}"
    );
    let r = c.get(&format!("http://{VIP}/x?y=1"), &[&format!("Host: {HOST}")])?;
    expect(&r, 301, "", "httpsRedirect")?;
    ensure!(
        r.header("location") == Some(&format!("https://{HOST}/x?y=1")),
        "{r:#?}"
    );
    ensure!(
        agent.verdict_packets("pass_local")? > 0,
        "no pass_local verdicts"
    );

    // Secrets never leave the agent: not in its log, its dumps, its metrics.
    let key_line = key
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() > 40)
        .context("a base64 line of the key")?
        .to_string();
    let dump_all = agent.cli(&["dump", "all", "-o", "json"])?;
    ensure!(dump_all.status.success(), "gateway dump all failed");
    let views = [
        ("the agent's log", agent.log()),
        ("/config_dump", agent.get("/config_dump")?.1),
        ("/clusters", agent.get("/clusters")?.1),
        ("/stats", agent.get("/stats")?.1),
        (
            "/stats/prometheus",
            agent
                .get_at("127.0.0.1:15090".parse()?, "/stats/prometheus")?
                .1,
        ),
        (
            "gateway dump all",
            String::from_utf8_lossy(&dump_all.stdout).to_string(),
        ),
    ];
    for (what, text) in &views {
        ensure!(
            !text.contains(&key_line)
                && !text.contains(&b64(&key))
                && !text.contains("PRIVATE KEY"),
            "{what} shows the private key"
        );
    }
    ensure!(
        views[4].1.contains("istio_requests_total") && views[5].1.contains(HOST),
        "the views checked are not the real ones"
    );
    // The admin port is loopback only: a client reaches neither it nor the status port's
    // admin paths.
    let admin_port = agent.admin.port();
    let reached =
        topo.client_api().run(move || {
            Ok(TcpStream::connect_timeout(
                &SocketAddr::from((VIP, admin_port)),
                Duration::from_secs(1),
            )
            .is_ok())
        })?;
    ensure!(
        !reached,
        "a client connected to the admin port {admin_port}"
    );
    let r = c.get(&format!("http://{VIP}:15021/config_dump"), &[])?;
    ensure!(
        r.status == 404,
        "status port serves /config_dump: {}",
        r.status
    );
    Ok(())
}

/// IPv6 on the L7 path: the XDP program hands the IPv6 VIP's HTTP port to the stack, the
/// wildcard listener's IPv6 twin takes the connection, and routes reach IPv4 and IPv6
/// upstreams alike (a ServiceEntry of IPv6 endpoints beside the IPv4 one).
#[test]
fn http_over_ipv6() -> Result<()> {
    use gateway_tests::topology::VIP6;
    let topo = Topology::new("h6", 2, Opts::http_backends().dual_stack())?;
    let eps6: Vec<String> = topo
        .backends
        .iter()
        .map(|b| format!("{{address: \"{}\"}}", b.addr6))
        .collect();
    let se6 = manifests::service_entry(
        "web6",
        "default",
        "web6.example.com",
        &format!("{{number: {BACKEND_HTTP_PORT}, name: http, protocol: HTTP}}"),
        &eps6,
    );
    let main = vs(
        "web",
        "[\"*\"]",
        &format!("  - route: [{{destination: {{host: {HOST}}}}}]\n"),
    );
    let six = vs(
        "web6",
        "[six.example.com]",
        "  - route: [{destination: {host: web6.example.com}}]\n",
    );
    let mut f = files(&topo, "", &[&main, &six]);
    f.push(("service-entry-6.yaml", se6));
    let agent = Agent::start(&topo, &f)?;
    let passed_before = agent.verdict_packets("pass_local")?;
    let c = topo.http_client();
    let base = format!("http://[{VIP6}]");
    for _ in 0..4 {
        let r = c.get(&format!("{base}/a"), &[])?;
        ensure!(
            r.status == 200 && ["b1", "b2"].contains(&r.backend()),
            "IPv6 client, IPv4 upstream: {} {:?}",
            r.status,
            r.backend()
        );
        let r = c.get(&format!("{base}/b"), &["Host: six.example.com"])?;
        ensure!(
            r.status == 200 && ["b1", "b2"].contains(&r.backend()),
            "IPv6 client, IPv6 upstream: {} {:?}",
            r.status,
            r.backend()
        );
    }
    // The IPv4 VIP still works on the same listener.
    let r = c.get(&url("/c"), &[])?;
    ensure!(r.status == 200, "IPv4 client: {}", r.status);
    let passed = agent.verdict_packets("pass_local")?;
    ensure!(
        passed > passed_before,
        "pass_local did not count the IPv6 HTTP packets ({passed_before} -> {passed})"
    );
    let st = agent.stats()?;
    let svc = format!("[{VIP6}]:80/tcp");
    ensure!(
        st["services"][&svc]["packets"].as_u64().unwrap_or(0) > 0,
        "no packets counted for the L7 service {svc}: {st}"
    );
    Ok(())
}
