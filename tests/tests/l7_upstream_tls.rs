//! End-to-end: TLS from the gateway to its backends (DestinationRule `trafficPolicy.tls`),
//! through the real `gateway` binary in the node namespace, against `test-backend --tls` /
//! `--h2tls` servers (rustls) in the backend namespaces with certificates made at test time.
//! Each backend reports the SNI, ALPN and client certificate it saw, so the assertions are about
//! what really went over the wire.

use std::{fs, time::Duration};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    agent::access_log_line,
    http::{expect, Response},
    manifests::{self, GATEWAY_HEAD},
    tls::{tls_backend, tls_secret, write_pem, Ca},
    topology::{Topology, BACKEND_HTTP_PORT, VIP},
    Agent, Opts,
};

/// Port of each backend's HTTP/1.1-over-TLS server, and of b1's HTTP/2-over-TLS one.
const TLS_PORT: u16 = 8443;
const H2_PORT: u16 = 8444;

/// A VirtualService sending every request for `host` to `dest` (`{host: x, subset: y}`).
fn route(name: &str, host: &str, dest: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  gateways: [gw]
  http:
  - route: [{{destination: {dest}}}]
"
    )
}

/// A STATIC ServiceEntry for `host` on port 443 (`protocol`) to `target` of `addr`, labelled
/// `app: tls`.
fn service(host: &str, protocol: &str, target: u16, addr: std::net::Ipv4Addr) -> String {
    manifests::service_entry(
        host.split('.').next().unwrap_or(host),
        "default",
        host,
        &format!(
            "{{number: 443, name: {}, protocol: {protocol}, targetPort: {target}}}",
            protocol.to_ascii_lowercase()
        ),
        &[format!("{{address: {addr}, labels: {{app: tls}}}}")],
    )
}

/// A DestinationRule for `host` with this `spec` body (indented two spaces).
fn rule(host: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {}, namespace: default}}
spec:
  host: {host}
{spec}",
        host.split('.').next().unwrap_or(host)
    )
}

/// SIMPLE and MUTUAL origination over HTTP/1.1 and HTTP/2: SNI (auto and set), SAN checks,
/// file and Secret credentials, insecureSkipVerify, per-subset settings, DISABLE; untrusted or
/// mismatched upstream certificates give 503 UF with Envoy's TLS_error details and count toward
/// outlier detection; ISTIO_MUTUAL is rejected naming the field while the rest serves.
#[test]
fn simple_mutual_sni_san_h2_and_failures() -> Result<()> {
    let topo = Topology::new("utls", 3, Opts::http_backends())?;
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("upstream e2e CA")?;
    let rogue = Ca::new("rogue CA")?;
    let ca_pem = write_pem(dir.path(), "ca.pem", &ca.cert.pem())?;
    let leaf = |ca: &Ca, names: &[&str], file: &str| -> Result<(String, String)> {
        let (c, k) = ca.leaf_for(names)?;
        Ok((
            write_pem(dir.path(), &format!("{file}.crt"), &c)?,
            write_pem(dir.path(), &format!("{file}.key"), &k)?,
        ))
    };
    // Auto-SNI is the request's Host, so the backends' certificates name the public hosts
    // routed to them (as an Istio user's must), besides their own.
    let (a_crt, a_key) = leaf(&ca, &["a.internal", "simple.example.com"], "a")?;
    let (m_crt, m_key) = leaf(
        &ca,
        &[
            "m.internal",
            "mutual.example.com",
            "cred.example.com",
            "nocert.example.com",
        ],
        "m",
    )?;
    let (u_crt, u_key) = leaf(&rogue, &["u.internal"], "u")?;
    let (gw_crt, gw_key) = leaf(&ca, &["gw.client.internal"], "gw")?;
    let (sec_crt, sec_key) = ca.leaf("secret.client.internal")?;
    let tls = TLS_PORT.to_string();
    let h2 = H2_PORT.to_string();
    let mut b1_server = tls_backend(
        &topo,
        "b1",
        &[
            "--tls", &tls, "--h2tls", &h2, "--cert", &a_crt, "--key", &a_key,
        ],
    )?;
    let _b2 = tls_backend(
        &topo,
        "b2",
        &[
            "--tls",
            &tls,
            "--cert",
            &m_crt,
            "--key",
            &m_key,
            "--client-ca",
            &ca_pem,
        ],
    )?;
    let _b3 = tls_backend(
        &topo,
        "b3",
        &["--tls", &tls, "--cert", &u_crt, "--key", &u_key],
    )?;
    let (b1, b2, b3) = (
        topo.backend("b1").addr,
        topo.backend("b2").addr,
        topo.backend("b3").addr,
    );

    let gateway = format!(
        "{GATEWAY_HEAD}  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [\"*\"]
---
{}",
        tls_secret("m-client", (&sec_crt, &sec_key), Some(&ca.cert.pem()))
    );
    let services = [
        service("a.internal", "HTTP", TLS_PORT, b1),
        service("alias.internal", "HTTP", TLS_PORT, b1),
        service("h2.internal", "HTTP2", H2_PORT, b1),
        service("m.internal", "HTTP", TLS_PORT, b2),
        service("u.internal", "HTTP", TLS_PORT, b3),
        service("plain.internal", "HTTP", BACKEND_HTTP_PORT, b1),
        service("bad.internal", "HTTP", BACKEND_HTTP_PORT, b1),
    ]
    .join("---\n");
    let simple = format!("{{mode: SIMPLE, caCertificates: {ca_pem}}}");
    let subset = |name: &str, tls: &str| {
        format!(
            "  - name: {name}\n    labels: {{app: tls}}\n    trafficPolicy:\n      tls: {tls}\n"
        )
    };
    let rules = [
        // Subset `fresh`: one request per connection, so every request needs a handshake.
        rule(
            "a.internal",
            &format!(
                "  trafficPolicy:\n    tls: {simple}\n  subsets:\n  - name: fresh\n    labels: {{app: tls}}\n    trafficPolicy:\n      connectionPool: {{http: {{maxRequestsPerConnection: 1}}}}\n      tls: {{mode: SIMPLE, caCertificates: {ca_pem}, sni: a.internal}}\n"
            ),
        ),
        // No sni: the SNI is alias.internal, for which a.internal's certificate is not valid.
        rule(
            "alias.internal",
            &format!(
                "  trafficPolicy:\n    tls: {simple}\n  subsets:\n{}{}{}{}{}",
                subset("sni", &format!("{{mode: SIMPLE, caCertificates: {ca_pem}, sni: a.internal}}")),
                subset("nofile", "{mode: SIMPLE, caCertificates: /nonexistent/ca.pem}"),
                subset(
                    "chainonly",
                    &format!("{{mode: SIMPLE, caCertificates: {ca_pem}, sni: elsewhere.internal}}")
                ),
                subset(
                    "san",
                    &format!("{{mode: SIMPLE, caCertificates: {ca_pem}, sni: other.internal, subjectAltNames: [a.internal]}}")
                ),
                subset(
                    "badsan",
                    &format!("{{mode: SIMPLE, caCertificates: {ca_pem}, sni: a.internal, subjectAltNames: [wrong.internal]}}")
                ),
            ),
        ),
        rule(
            "h2.internal",
            &format!("  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: {ca_pem}, sni: a.internal}}\n"),
        ),
        rule(
            "m.internal",
            &format!(
                "  trafficPolicy:\n    tls: {{mode: MUTUAL, caCertificates: {ca_pem}, clientCertificate: {gw_crt}, privateKey: {gw_key}}}\n  subsets:\n{}{}",
                subset("nocert", &simple),
                subset("cred", "{mode: MUTUAL, credentialName: m-client}"),
            ),
        ),
        rule(
            "u.internal",
            &format!(
                "  trafficPolicy:\n    tls: {simple}\n    outlierDetection: {{consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}}\n  subsets:\n{}",
                subset("skip", "{mode: SIMPLE, insecureSkipVerify: true}"),
            ),
        ),
        rule("plain.internal", "  trafficPolicy:\n    tls: {mode: DISABLE}\n"),
        rule("bad.internal", "  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n"),
    ]
    .join("---\n");
    let routes = [
        ("simple", "{host: a.internal}"),
        ("fresh", "{host: a.internal, subset: fresh}"),
        ("autosni", "{host: alias.internal}"),
        ("sni", "{host: alias.internal, subset: sni}"),
        ("chainonly", "{host: alias.internal, subset: chainonly}"),
        ("nofile", "{host: alias.internal, subset: nofile}"),
        ("san", "{host: alias.internal, subset: san}"),
        ("badsan", "{host: alias.internal, subset: badsan}"),
        ("h2", "{host: h2.internal}"),
        ("mutual", "{host: m.internal}"),
        ("nocert", "{host: m.internal, subset: nocert}"),
        ("cred", "{host: m.internal, subset: cred}"),
        ("untrusted", "{host: u.internal}"),
        ("skip", "{host: u.internal, subset: skip}"),
        ("plain", "{host: plain.internal}"),
        ("bad", "{host: bad.internal}"),
    ]
    .iter()
    .map(|(n, d)| route(n, &format!("{n}.example.com"), d))
    .collect::<Vec<_>>()
    .join("---\n");
    let log = dir.path().join("access.log");
    let log_s = log.to_str().context("path")?.to_string();
    let agent = Agent::start_with(
        &topo,
        &[
            ("gateway.yaml", gateway),
            ("services.yaml", services),
            ("rules.yaml", rules),
            ("routes.yaml", routes),
        ],
        &["--access-log", &log_s],
    )?;
    let c = topo.http_client();
    let get = |name: &str, path: &str| -> Result<Response> {
        c.get(
            &format!("http://{VIP}{path}"),
            &[&format!("Host: {name}.example.com")],
        )
    };
    let facts = |r: &Response| {
        (
            r.upstream_header("tls-sni").unwrap_or("-").to_string(),
            r.upstream_header("tls-alpn").unwrap_or("-").to_string(),
            r.upstream_header("tls-client").unwrap_or("-").to_string(),
        )
    };
    let fact = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());

    // SIMPLE: auto-SNI is the request's Host (Envoy's auto_sni, which Istio sets when `sni`
    // is unset) and the certificate must be valid for it (auto_san_validation); no ALPN on an
    // HTTP/1.1 port (Istio sets it only for HTTP/2); no client certificate.
    for _ in 0..2 {
        let r = get("simple", "/s")?;
        expect(&r, 200, "b1", "SIMPLE")?;
        ensure!(
            facts(&r) == fact("simple.example.com", "none", "none"),
            "{r:#?}"
        );
        ensure!(r.upstream_request_line() == "GET /s", "{r:#?}");
    }
    // Pooling: four requests on one downstream connection (so one L7 worker, whose pool it
    // is) take at most one new upstream handshake (none if this worker already has one).
    b1_server.take_lines();
    let hits = c.many(
        &format!("http://{VIP}/pooled"),
        4,
        &["-H", "Host: simple.example.com"],
    )?;
    ensure!(hits.iter().all(|h| h.0 == 200 && h.1 == "b1"), "{hits:?}");
    // The backend's stdout is read by a thread: collect until all four were seen.
    let mut lines = Vec::new();
    gateway_tests::wait_until(Duration::from_secs(5), "b1's request lines", || {
        lines.extend(b1_server.take_lines());
        Ok(lines
            .iter()
            .filter(|l| l.starts_with("request GET /pooled"))
            .count()
            >= 4)
    })?;
    let handshakes = lines
        .iter()
        .filter(|l| l.starts_with("tls handshake"))
        .count();
    let served = lines
        .iter()
        .filter(|l| l.starts_with("request GET /pooled"))
        .count();
    ensure!(
        served == 4 && handshakes <= 1,
        "pooled connections expected: {lines:?}"
    );
    // A new connection resumes the session of the previous one (rustls' session cache is the
    // cluster's): maxRequestsPerConnection 1 forces the second handshake.
    let first = get("fresh", "/")?;
    let second = get("fresh", "/")?;
    expect(&second, 200, "b1", "fresh connection")?;
    ensure!(
        first.upstream_header("tls-resumed") == Some("no")
            && second.upstream_header("tls-resumed") == Some("yes"),
        "{first:#?} {second:#?}"
    );

    // The certificate must be valid for the SNI (auto-SAN): autosni.example.com is not in it.
    // Istio's default retry policy retries the connect failure (URX).
    let r = get("autosni", "/autosni")?;
    expect(&r, 503, "", "auto SAN mismatch")?;
    ensure!(
        r.body.starts_with("upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection failure, transport failure reason: TLS_error:|CERTIFICATE_VERIFY_FAILED:invalid_peer_certificate:_certificate_not_valid_for_name_autosni.example.com"),
        "{r:#?}"
    );
    let l = access_log_line(&log, "/autosni")?;
    ensure!(
        l.contains(" 503 UF,URX upstream_reset_before_response_started{connection_failure,TLS_error:|CERTIFICATE_VERIFY_FAILED:")
            && l.contains(":TLS_error_end}"),
        "access log: {l}"
    );
    // `sni` set: sent as is; without `subjectAltNames` Envoy then checks the chain only, so a
    // name the certificate lacks passes too.
    let r = get("sni", "/")?;
    expect(&r, 200, "b1", "sni")?;
    ensure!(facts(&r).0 == "a.internal", "{r:#?}");
    let r = get("chainonly", "/")?;
    expect(&r, 200, "b1", "sni without subjectAltNames")?;
    ensure!(facts(&r).0 == "elsewhere.internal", "{r:#?}");
    // `subjectAltNames` replace the SNI in the check: SNI other.internal, SAN a.internal.
    let r = get("san", "/")?;
    expect(&r, 200, "b1", "subjectAltNames")?;
    ensure!(facts(&r).0 == "other.internal", "{r:#?}");
    let r = get("badsan", "/badsan")?;
    expect(&r, 503, "", "SAN mismatch")?;
    ensure!(
        access_log_line(&log, "/badsan")?.contains(" 503 UF,URX "),
        "badsan"
    );

    // A CA file that cannot be read: that cluster's connections fail (503 UF, the reason in
    // the details), the log names the manifest file, rule, field and path, and the rest
    // serves.
    let r = get("nofile", "/nofile")?;
    expect(&r, 503, "", "unreadable caCertificates")?;
    ensure!(
        access_log_line(&log, "/nofile")?.contains("TLS_error:|CONFIGURATION:"),
        "nofile"
    );
    ensure!(
        agent.log().contains("/rules.yaml: DestinationRule default/alias spec.subsets[nofile].trafficPolicy.tls.caCertificates: reading /nonexistent/ca.pem: No such file"),
        "{}",
        agent.log()
    );

    // HTTP2 port: ALPN h2, and the request went as HTTP/2 (the backend saw :authority).
    let r = get("h2", "/h2")?;
    expect(&r, 200, "b1", "h2 over TLS")?;
    ensure!(facts(&r).1 == "h2", "{r:#?}");
    ensure!(r.upstream_header(":authority").is_some(), "{r:#?}");
    ensure!(r.upstream_request_line() == "GET /h2", "{r:#?}");

    // MUTUAL: the backend demands a client certificate and sees the gateway's.
    let r = get("mutual", "/")?;
    expect(&r, 200, "b2", "MUTUAL")?;
    ensure!(facts(&r).2 == "gw.client.internal", "{r:#?}");
    // ... from a credentialName Secret (tls.crt/tls.key, CA from ca.crt).
    let r = get("cred", "/")?;
    expect(&r, 200, "b2", "MUTUAL credentialName")?;
    ensure!(facts(&r).2 == "secret.client.internal", "{r:#?}");
    // Without a client certificate the backend refuses the handshake.
    let r = get("nocert", "/nocert")?;
    expect(&r, 503, "", "no client certificate")?;

    // An upstream certificate from an untrusted CA: 503 UF, and the endpoint is ejected by
    // outlier detection (a connection failure is a gateway error; the attempt and Istio's two default
    // retries make the three consecutive errors).
    let r = get("untrusted", "/untrusted")?;
    expect(&r, 503, "", "untrusted upstream")?;
    let l = access_log_line(&log, "/untrusted")?;
    ensure!(
        l.contains(" 503 UF,URX upstream_reset_before_response_started{connection_failure,TLS_error:|CERTIFICATE_VERIFY_FAILED:invalid_peer_certificate:_UnknownIssuer:TLS_error_end}"),
        "access log: {l}"
    );
    let (_, clusters) = agent.get("/clusters")?;
    ensure!(
        clusters.lines().any(|l| l
            == format!(
                "outbound|443||u.internal::{b3}:{TLS_PORT}::health_flags::/failed_outlier_check"
            )),
        "/clusters does not show b3 ejected:\n{clusters}"
    );
    // insecureSkipVerify: the same backend is accepted.
    let r = get("skip", "/")?;
    expect(&r, 200, "b3", "insecureSkipVerify")?;
    ensure!(facts(&r).0 == "skip.example.com", "{r:#?}");

    // DISABLE: plain text to the HTTP port.
    let r = get("plain", "/")?;
    expect(&r, 200, "b1", "DISABLE")?;
    ensure!(facts(&r).0 == "-", "{r:#?}");

    // ISTIO_MUTUAL: that DestinationRule is rejected naming the field; its host is served
    // without it (plain text), as a rejected object is a missing one.
    let dump = agent.config_dump()?;
    let rejected = dump["rejected"].to_string();
    ensure!(
        rejected.contains("DestinationRule default/bad")
            && rejected.contains("spec.trafficPolicy.tls.mode")
            && rejected.contains("ISTIO_MUTUAL"),
        "{rejected}"
    );
    expect(&get("bad", "/")?, 200, "b1", "host of a rejected rule")?;
    Ok(())
}

/// A `TLS` server that terminates (SIMPLE) forwards its `tcp` routes over TLS the gateway
/// originates: without `sni` a stream sends none and only the chain is verified (Envoy's
/// auto-SNI and auto-SAN are HTTP options), no ALPN (an opaque TLS port); an untrusted
/// backend's connection fails and the client's is closed, counted as
/// `upstream_tls_failed`; a `TCP` server with such a route is served by the agent instead of
/// XDP; the certificate views list what was loaded; a rotated CA file is picked up without a
/// restart.
#[test]
fn tls_server_terminates_then_originates_on_tcp_routes() -> Result<()> {
    let topo = Topology::new("utcp", 2, Opts::http_backends())?;
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("upstream tcp CA")?;
    let rogue = Ca::new("rogue tcp CA")?;
    let ca_pem = write_pem(dir.path(), "ca.pem", &ca.cert.pem())?;
    let (a_crt, a_key) = ca.leaf("a.internal")?;
    let (u_crt, u_key) = rogue.leaf("u.internal")?;
    let tls = TLS_PORT.to_string();
    let (a_crt, a_key) = (
        write_pem(dir.path(), "a.crt", &a_crt)?,
        write_pem(dir.path(), "a.key", &a_key)?,
    );
    let (u_crt, u_key) = (
        write_pem(dir.path(), "u.crt", &u_crt)?,
        write_pem(dir.path(), "u.key", &u_key)?,
    );
    let _b1 = tls_backend(
        &topo,
        "b1",
        &["--tls", &tls, "--cert", &a_crt, "--key", &a_key],
    )?;
    let _b2 = tls_backend(
        &topo,
        "b2",
        &["--tls", &tls, "--cert", &u_crt, "--key", &u_key],
    )?;
    let gw_cert = ca.leaf("t.example.com")?;
    let gateway = format!(
        "{GATEWAY_HEAD}  - port: {{number: 9443, name: tls-term, protocol: TLS}}
    hosts: [t.example.com, v.example.com]
    tls: {{mode: SIMPLE, credentialName: t-cert}}
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: [\"*\"]
---
{}",
        tls_secret("t-cert", (&gw_cert.0, &gw_cert.1), None)
    );
    let services = [
        service("a.internal", "TLS", TLS_PORT, topo.backend("b1").addr),
        service("u.internal", "TLS", TLS_PORT, topo.backend("b2").addr),
    ]
    .join("---\n");
    let rules = [
        rule(
            "a.internal",
            &format!("  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: {ca_pem}}}\n"),
        ),
        rule(
            "u.internal",
            &format!("  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: {ca_pem}}}\n"),
        ),
    ]
    .join("---\n");
    let tcp = |name: &str, dest: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [t.example.com]
  gateways: [gw]
  tcp:
  - route: [{{destination: {{host: {dest}}}}}]
"
        )
    };
    let agent = Agent::start(
        &topo,
        &[
            ("gateway.yaml", gateway.clone()),
            ("services.yaml", services.clone()),
            ("rules.yaml", rules.clone()),
            ("routes.yaml", tcp("term", "a.internal")),
        ],
    )?;
    let c = topo.http_client();
    let gw_ca = write_pem(dir.path(), "gw-ca.pem", &ca.cert.pem())?;
    let https = || {
        c.curl(&[
            "--http1.1",
            "--cacert",
            &gw_ca,
            "--resolve",
            &format!("t.example.com:9443:{VIP}"),
            "https://t.example.com:9443/t",
        ])
    };
    for _ in 0..2 {
        let r = https()?;
        expect(&r, 200, "b1", "terminate, then originate")?;
        ensure!(
            r.upstream_header("tls-sni") == Some("none")
                && r.upstream_header("tls-alpn") == Some("none"),
            "{r:#?}"
        );
        ensure!(r.upstream_request_line() == "GET /t", "{r:#?}");
    }

    // A TCP server whose route asks for TLS is served by the agent (XDP cannot originate
    // it): the client speaks plain HTTP over TCP, b1 gets it over TLS.
    let r = c.get(&format!("http://{VIP}:31400/plain"), &[])?;
    expect(&r, 200, "b1", "TCP server, TLS upstream")?;
    ensure!(
        r.upstream_header("tls-sni") == Some("none") && r.upstream_request_line() == "GET /plain",
        "{r:#?}"
    );
    ensure!(
        agent.config_dump()?["plan"]["l4"]
            .as_array()
            .is_some_and(|l| l.is_empty()),
        "the TCP server must not be on the L4 path"
    );

    // Every loaded certificate, in /certs, `gateway dump secrets` and the expiry metric: the
    // server certificate from its Secret, the upstream CA file of the routed cluster.
    let certs = agent.get_json_at("/certs")?;
    let list = certs["certificates"].as_array().context("certificates")?;
    let find = |kind: &str, source: &str| {
        list.iter()
            .find(|c| c["kind"] == kind && c["source"].as_str().is_some_and(|s| s.contains(source)))
            .with_context(|| format!("no {kind} certificate from {source} in {certs:#}"))
    };
    let server = find("server", "t-cert")?;
    ensure!(
        server["subject_alt_names"] == serde_json::json!(["DNS:t.example.com"])
            && server["used_by"][0]
                .as_str()
                .is_some_and(|u| u.starts_with("Gateway default/gw"))
            && server["serial_number"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
            && server["expiration_time"]
                .as_str()
                .is_some_and(|s| s.ends_with('Z')),
        "{server:#}"
    );
    let up_ca = find("upstream_ca", &ca_pem)?;
    ensure!(
        up_ca["used_by"] == serde_json::json!(["outbound|443||a.internal"])
            && up_ca["subject"] == "CN=upstream tcp CA",
        "{up_ca:#}"
    );
    let out = agent.cli(&["dump", "secrets"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.lines().any(|l| l.starts_with("upstream_ca")
            && l.contains(&ca_pem)
            && l.contains("CN=upstream tcp CA")
            && l.ends_with("  outbound|443||a.internal")),
        "dump secrets:\n{text}"
    );
    let (_, metrics) = agent.get("/metrics")?;
    let days = server["days_until_expiration"].as_i64().context("days")?;
    ensure!(
        metrics.lines().any(|l| l
            .starts_with("gateway_certificate_expiration_days{kind=\"server\"")
            && l.contains("t-cert")
            && l.ends_with(&format!(" {days}"))),
        "{metrics}"
    );
    let first = list
        .iter()
        .filter_map(|c| c["days_until_expiration"].as_i64())
        .min()
        .context("days")?;
    ensure!(
        metrics
            .lines()
            .any(|l| l == format!("envoy_server_days_until_first_cert_expiring {first}")),
        "{metrics}"
    );

    // The same route to the backend with a rogue certificate: the client's connection is
    // closed after its own handshake (curl: empty reply).
    let generation = agent.generation()?;
    agent.write_config(&[
        ("gateway.yaml", gateway),
        ("services.yaml", services),
        ("rules.yaml", rules),
        ("routes.yaml", tcp("term", "u.internal")),
    ])?;
    agent.wait_generation_above(generation, Duration::from_secs(10))?;
    let e = https().unwrap_err();
    ensure!(
        e.downcast_ref::<gateway_tests::http::CurlError>()
            .is_some_and(|c| c.code == 52 || c.code == 56),
        "want the connection closed: {e:#}"
    );
    let (_, metrics) = agent.get("/metrics")?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_tls_stream_connections_total{")
                && l.contains("outcome=\"upstream_tls_failed\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    // The upstream CA file is watched like the servers' certificates: replaced by the rogue
    // CA (write and rename, as a secret mount does), the next connection trusts b2.
    let tmp = dir.path().join("ca.pem.new");
    fs::write(&tmp, rogue.cert.pem())?;
    fs::rename(&tmp, &ca_pem)?;
    gateway_tests::wait_until(Duration::from_secs(20), "the rotated upstream CA", || {
        Ok(https().is_ok_and(|r| r.backend() == "b2"))
    })?;
    Ok(())
}
