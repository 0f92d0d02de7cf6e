//! End-to-end: certificate revocation lists, through the real `gateway` binary with
//! certificates and CRLs made at test time. Ingress: a MUTUAL server (`caCrl` file, or `ca.crl`
//! in its `credentialName` Secret) refuses a revoked client certificate in the handshake (curl
//! from the client namespace). Upstream: a DestinationRule `caCrl` makes a revoked backend
//! certificate a 503 `UF` with the TLS_error details, as an untrusted one. An expired CRL refuses
//! every certificate it covers (Envoy's behaviour) unless `--crl-expiration ignore`; a CRL
//! rotated on disk takes effect for new handshakes; `/certs`, `gateway dump secrets` and the
//! metrics show the CRLs.

use std::{fs, path::Path, time::Duration};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    agent::access_log_line,
    http::{expect, CurlError, HttpClient, Response},
    manifests::{self, GATEWAY_HEAD},
    tls::{b64, tls_backend, write_pem, Ca},
    topology::{Topology, VIP},
    Agent, Opts,
};

/// A valid CRL's nextUpdate from now: whole days left is 1 wherever the test is in its run.
const VALID: i64 = 2 * 86_400 - 600;
const HOUR: i64 = 3_600;

/// A client certificate's files.
struct Client {
    crt: String,
    key: String,
    /// The certificate PEM, to revoke it.
    pem: String,
}

fn client(ca: &Ca, dir: &Path, name: &str) -> Result<Client> {
    let (pem, key) = ca.leaf(&format!("{name}.client.internal"))?;
    Ok(Client {
        crt: write_pem(dir, &format!("{name}.crt"), &pem)?,
        key: write_pem(dir, &format!("{name}.key"), &key)?,
        pem,
    })
}

/// `GET https://host/` on the VIP presenting `who`'s certificate: the response, or curl's
/// failure (the handshake refused). TLS 1.2: the server's verdict on the client certificate
/// then comes before the handshake completes, so curl reports the alert itself (with TLS 1.3
/// it may already be writing the request and report a reset instead).
fn get(c: &HttpClient, ca: &str, host: &str, who: &Client) -> Result<Response> {
    c.curl(&[
        "--tls-max",
        "1.2",
        "--cacert",
        ca,
        "--cert",
        &who.crt,
        "--key",
        &who.key,
        "--resolve",
        &format!("{host}:443:{VIP}"),
        &format!("https://{host}/"),
    ])
}

/// Whether the handshake was refused (curl failed), and what curl said.
fn refused(r: Result<Response>) -> (bool, String) {
    match r {
        Ok(r) => (false, format!("{r:#?}")),
        Err(e) => match e.downcast_ref::<CurlError>() {
            Some(c) => (true, c.stderr.clone()),
            None => (false, format!("{e:#}")),
        },
    }
}

/// MUTUAL ingress against `caCrl` (a file) and `ca.crl` (a Secret): the revoked client
/// certificate is refused with a certificate_revoked alert, the good one served; an expired
/// CRL refuses even the good one (Envoy's behaviour) and is used anyway under
/// `--crl-expiration ignore`; the CRL file rotated on disk revokes a further certificate for
/// new handshakes; the views list every CRL.
#[test]
fn ingress_mutual_revoked_expired_and_rotated_crls() -> Result<()> {
    let topo = Topology::new("crli", 1, Opts::no_backends())?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ca = Ca::new("crl client CA")?;
    let ca_pem = write_pem(d, "ca.pem", &ca.cert.pem())?;
    let (srv_crt, srv_key) = ca.leaf_for(&[
        "file.example.com",
        "secret.example.com",
        "expired.example.com",
    ])?;
    let srv_crt_f = write_pem(d, "srv.crt", &srv_crt)?;
    let srv_key_f = write_pem(d, "srv.key", &srv_key)?;
    let good = client(&ca, d, "good")?;
    let revoked = client(&ca, d, "revoked")?;
    let later = client(&ca, d, "later")?;
    let crl = write_pem(d, "ca.crl", &ca.crl(&[&revoked.pem], VALID)?)?;
    let expired = write_pem(d, "expired.crl", &ca.crl(&[&revoked.pem], -HOUR)?)?;
    let mutual = |extra: &str| {
        format!("{{mode: MUTUAL, serverCertificate: {srv_crt_f}, privateKey: {srv_key_f}, caCertificates: {ca_pem}{extra}}}")
    };
    let gateway = format!(
        "{GATEWAY_HEAD}  - port: {{number: 443, name: https-file, protocol: HTTPS}}
    hosts: [file.example.com]
    tls: {}
  - port: {{number: 443, name: https-secret, protocol: HTTPS}}
    hosts: [secret.example.com]
    tls: {{mode: MUTUAL, credentialName: mtls}}
  - port: {{number: 443, name: https-expired, protocol: HTTPS}}
    hosts: [expired.example.com]
    tls: {}
---
apiVersion: v1
kind: Secret
metadata: {{name: mtls, namespace: istio-system}}
type: kubernetes.io/tls
data:
  tls.crt: {}
  tls.key: {}
  ca.crt: {}
  ca.crl: {}
",
        mutual(&format!(", caCrl: {crl}")),
        mutual(&format!(", caCrl: {expired}")),
        b64(&srv_crt),
        b64(&srv_key),
        b64(&ca.cert.pem()),
        b64(&fs::read_to_string(&crl)?),
    );
    let routes = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ok, namespace: default}
spec:
  hosts: [file.example.com, secret.example.com, expired.example.com]
  gateways: [gw]
  http:
  - directResponse: {status: 200, body: {string: ok}}
"
    .to_string();
    let mut agent = Agent::start(&topo, &[("gateway.yaml", gateway), ("routes.yaml", routes)])?;
    let c = topo.http_client();

    // A valid CRL, from the file and from the Secret: the revoked certificate gets the
    // gateway's certificate_revoked alert, the others are served.
    for host in ["file.example.com", "secret.example.com"] {
        let r = get(&c, &ca_pem, host, &good)?;
        ensure!(r.status == 200 && r.body == "ok", "{host} good: {r:#?}");
        expect(&get(&c, &ca_pem, host, &later)?, 200, "", host)?;
        let (no, why) = refused(get(&c, &ca_pem, host, &revoked));
        ensure!(
            no && why.contains("certificate revoked"),
            "{host} revoked: {why}"
        );
    }
    // Expired (nextUpdate an hour ago): as Envoy, no certificate it covers passes, and the
    // agent says so when it loads the CRL.
    for who in [&good, &revoked] {
        let (no, why) = refused(get(&c, &ca_pem, "expired.example.com", who));
        // rustls' alert for an undecidable revocation status (BoringSSL: certificate_expired).
        ensure!(
            no && why.contains("alert unknown ca"),
            "expired CRL, {}: {why}",
            who.crt
        );
    }
    ensure!(
        agent.log().contains(&format!(
            "({expired}): CRL 0 of CN=crl client CA expired at"
        )) && agent.log().contains("--crl-expiration=enforce"),
        "{}",
        agent.log()
    );

    // The views: every CRL with its issuer, updates, revoked count and users.
    let certs = agent.get_json_at("/certs")?;
    let lists = certs["revocation_lists"]
        .as_array()
        .context("revocation_lists")?;
    let find = |source: &str| {
        lists
            .iter()
            .find(|c| c["source"].as_str().is_some_and(|s| s.contains(source)))
            .with_context(|| format!("no CRL from {source} in {certs:#}"))
    };
    let file = find(&crl)?;
    ensure!(
        file["kind"] == "client"
            && file["issuer"] == "CN=crl client CA"
            && file["revoked_certificates"] == 1
            && file["expired"] == false
            && file["days_until_next_update"] == 1
            && file["next_update"]
                .as_str()
                .is_some_and(|s| s.ends_with('Z'))
            && file["used_by"] == serde_json::json!(["Gateway default/gw server https-file:443"]),
        "{file:#}"
    );
    let secret = find("Secret istio-system/mtls key ca.crl")?;
    ensure!(secret["revoked_certificates"] == 1, "{secret:#}");
    let old = find(&expired)?;
    ensure!(
        old["expired"] == true && old["days_until_next_update"] == -1,
        "{old:#}"
    );
    let out = agent.cli(&["dump", "secrets"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("REVOCATION LISTS")
            && text.lines().any(|l| l.starts_with("client")
                && l.contains(&expired)
                && l.contains("CN=crl client CA")
                && l.contains("-1 (expired)")),
        "dump secrets:\n{text}"
    );
    let (_, metrics) = agent.get("/metrics")?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_crl_expiration_days{")
                && l.contains(&expired)
                && l.ends_with(" -1"))
            && metrics
                .lines()
                .any(|l| l.starts_with("gateway_crl_revoked_certificates{")
                    && l.contains(&crl)
                    && l.ends_with(" 1")),
        "{metrics}"
    );

    // Rotated on disk: the new CRL also revokes `later`, for the next handshakes.
    write_pem(d, "ca.crl", &ca.crl(&[&revoked.pem, &later.pem], VALID)?)?;
    gateway_tests::wait_until(Duration::from_secs(20), "the rotated CRL", || {
        Ok(refused(get(&c, &ca_pem, "file.example.com", &later)).0)
    })?;
    expect(
        &get(&c, &ca_pem, "file.example.com", &good)?,
        200,
        "",
        "after rotation",
    )?;

    // --crl-expiration ignore: the expired CRL is still used, so its revoked serial stays
    // refused and the good certificate passes.
    agent.set_extra_args(&["--crl-expiration", "ignore"]);
    agent.restart()?;
    expect(
        &get(&c, &ca_pem, "expired.example.com", &good)?,
        200,
        "",
        "expired CRL ignored",
    )?;
    let (no, why) = refused(get(&c, &ca_pem, "expired.example.com", &revoked));
    ensure!(no && why.contains("certificate revoked"), "{why}");
    ensure!(
        agent.log().contains("still used (--crl-expiration=ignore)"),
        "{}",
        agent.log()
    );
    Ok(())
}

/// DestinationRule `caCrl` (a file, or `ca.crl` in the `credentialName` Secret): a backend whose
/// certificate the CRL revokes fails as an untrusted one (503 UF, TLS_error details in the
/// access log), the others are served; the CRL rotated on disk takes effect for new
/// connections; an expired CRL fails every backend it covers unless `--crl-expiration ignore`.
#[test]
fn upstream_simple_revoked_and_expired_crls() -> Result<()> {
    let topo = Topology::new("crlu", 2, Opts::http_backends())?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ca = Ca::new("crl upstream CA")?;
    let ca_pem = write_pem(d, "ca.pem", &ca.cert.pem())?;
    // b1's certificate is revoked, b2's is not.
    let (r_crt, r_key) = ca.leaf("b1.internal")?;
    let (g_crt, g_key) = ca.leaf("b2.internal")?;
    let _b1 = tls_backend(
        &topo,
        "b1",
        &[
            "--tls",
            "8443",
            "--cert",
            &write_pem(d, "b1.crt", &r_crt)?,
            "--key",
            &write_pem(d, "b1.key", &r_key)?,
        ],
    )?;
    let _b2 = tls_backend(
        &topo,
        "b2",
        &[
            "--tls",
            "8443",
            "--cert",
            &write_pem(d, "b2.crt", &g_crt)?,
            "--key",
            &write_pem(d, "b2.key", &g_key)?,
        ],
    )?;
    let crl_pem = ca.crl(&[&r_crt], VALID)?;
    let crl = write_pem(d, "ca.crl", &crl_pem)?;
    let expired = write_pem(d, "expired.crl", &ca.crl(&[&r_crt], -HOUR)?)?;
    let (b1, b2) = (topo.backend("b1").addr, topo.backend("b2").addr);
    let service = |host: &str, addr| {
        manifests::service_entry(
            host.split('.').next().unwrap_or(host),
            "default",
            host,
            "{number: 443, name: http, protocol: HTTP, targetPort: 8443}",
            &[format!("{{address: {addr}}}")],
        )
    };
    // `sni` fixed: one name per backend, so the checks are about revocation only.
    let rule = |name: &str, host: &str, tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {host}
  trafficPolicy:
    tls: {tls}
"
        )
    };
    let simple = |sni: &str, crl: &str| {
        format!("{{mode: SIMPLE, caCertificates: {ca_pem}, caCrl: {crl}, sni: {sni}}}")
    };
    let config = [
        (
            "gateway.yaml",
            format!(
                "{GATEWAY_HEAD}  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [\"*\"]
---
apiVersion: v1
kind: Secret
metadata: {{name: up-ca, namespace: istio-system}}
data:
  ca.crt: {}
  ca.crl: {}
",
                b64(&ca.cert.pem()),
                b64(&crl_pem)
            ),
        ),
        (
            "services.yaml",
            [
                service("revoked.internal", b1),
                service("good.internal", b2),
                service("secret.internal", b1),
                service("old.internal", b2),
                service("oldrevoked.internal", b1),
            ]
            .join("---\n"),
        ),
        (
            "rules.yaml",
            [
                rule("revoked", "revoked.internal", &simple("b1.internal", &crl)),
                rule("good", "good.internal", &simple("b2.internal", &crl)),
                rule(
                    "secret",
                    "secret.internal",
                    "{mode: SIMPLE, credentialName: up-ca, sni: b1.internal}",
                ),
                rule("old", "old.internal", &simple("b2.internal", &expired)),
                rule(
                    "oldrevoked",
                    "oldrevoked.internal",
                    &simple("b1.internal", &expired),
                ),
            ]
            .join("---\n"),
        ),
        (
            "routes.yaml",
            ["revoked", "good", "secret", "old", "oldrevoked"]
                .iter()
                .map(|n| {
                    format!(
                        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {n}, namespace: default}}
spec:
  hosts: [{n}.example.com]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: {n}.internal}}}}]
"
                    )
                })
                .collect::<Vec<_>>()
                .join("---\n"),
        ),
    ];
    let log = d.join("access.log");
    let log_s = log.to_str().context("path")?.to_string();
    let mut agent = Agent::start_with(&topo, &config, &["--access-log", &log_s])?;
    let c = topo.http_client();
    let get = |name: &str, path: &str| -> Result<Response> {
        c.get(
            &format!("http://{VIP}{path}"),
            &[&format!("Host: {name}.example.com")],
        )
    };

    expect(&get("good", "/good")?, 200, "b2", "certificate not revoked")?;
    // Revoked: a connection failure as Envoy reports a CRL verdict, after Istio's retries.
    for (name, path) in [("revoked", "/revoked"), ("secret", "/secret")] {
        let r = get(name, path)?;
        expect(&r, 503, "", name)?;
        ensure!(
            r.body.contains("transport failure reason: TLS_error:|CERTIFICATE_VERIFY_FAILED:invalid_peer_certificate:_Revoked:TLS_error_end"),
            "{r:#?}"
        );
        let l = access_log_line(&log, path)?;
        ensure!(
            l.contains(" 503 UF,URX upstream_reset_before_response_started{connection_failure,TLS_error:|CERTIFICATE_VERIFY_FAILED:invalid_peer_certificate:_Revoked:TLS_error_end}"),
            "access log: {l}"
        );
    }
    // Expired: every backend it covers fails, revoked or not, in BoringSSL's words.
    for (name, path) in [("old", "/old"), ("oldrevoked", "/oldrevoked")] {
        expect(&get(name, path)?, 503, "", name)?;
        ensure!(
            access_log_line(&log, path)?.contains(
                "TLS_error:|CERTIFICATE_VERIFY_FAILED:invalid_peer_certificate:_CRL_has_expired:TLS_error_end"
            ),
            "{name}"
        );
    }
    let certs = agent.get_json_at("/certs")?;
    ensure!(
        certs["revocation_lists"]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["kind"] == "upstream"
                && c["source"] == crl.as_str()
                && c["used_by"]
                    == serde_json::json!([
                        "outbound|443||good.internal",
                        "outbound|443||revoked.internal"
                    ]))),
        "{certs:#}"
    );

    // Rotated on disk: the new CRL revokes b2 too; the cluster is rebuilt, so the next
    // connection (a new pool) is checked against it.
    write_pem(d, "ca.crl", &ca.crl(&[&r_crt, &g_crt], VALID)?)?;
    gateway_tests::wait_until(Duration::from_secs(20), "the rotated upstream CRL", || {
        Ok(get("good", "/rotated").is_ok_and(|r| r.status == 503))
    })?;
    expect(
        &get("good", "/rotated2")?,
        503,
        "",
        "revoked by the rotated CRL",
    )?;
    let l = access_log_line(&log, "/rotated2")?;
    ensure!(l.contains("_Revoked:TLS_error_end}"), "rotated: {l}");

    // --crl-expiration ignore: the expired CRL still revokes b1, and b2 is served.
    agent.set_extra_args(&["--access-log", &log_s, "--crl-expiration", "ignore"]);
    agent.restart()?;
    expect(&get("old", "/old2")?, 200, "b2", "expired CRL ignored")?;
    let r = get("oldrevoked", "/oldrevoked2")?;
    expect(&r, 503, "", "revoked in an expired CRL")?;
    ensure!(r.body.contains("_Revoked:TLS_error_end"), "{r:#?}");
    Ok(())
}
