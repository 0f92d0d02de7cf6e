//! Client-certificate checks and several server certificates on HTTPS servers, in-process:
//! CAs, certificates and a CRL made with rcgen (RSA keys by `openssl genpkey`, as ring cannot
//! generate them), real handshakes with a rustls client over 127.0.0.1, manifests through
//! `load_and_compile` and `L7::apply_plan`.

use std::sync::Arc;

use gateway::l7::L7;
use http::Request;
use hyper::body::Incoming;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::SignatureScheme;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod support;
use support::gateway::{assert_all_served, compile_dir};
use support::net::free_port;
use support::tls::{b64, client_config, rsa_key, Ca, Leaf, Usage};
use support::yaml::{self, GATEWAY};

async fn backend() -> u16 {
    support::backend::http(|_req: Request<Incoming>| async { support::backend::ok_response() })
        .await
}

fn sha256(d: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, d)
        .as_ref()
        .to_vec()
}

/// base64 SHA-256 of the certificate's SubjectPublicKeyInfo (Envoy's `verify_certificate_spki`).
fn spki_pin(der: &[u8]) -> String {
    use base64::Engine as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    base64::engine::general_purpose::STANDARD.encode(sha256(cert.tbs_certificate.subject_pki.raw))
}

/// `AB:CD:...` SHA-256 of the DER (Envoy's `verify_certificate_hash`, colon form).
fn hash_pin(der: &[u8]) -> String {
    sha256(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The ring provider verifying only these signature schemes: the client offers only them, so
/// the server must present a certificate whose key can use one.
fn provider_only(keep: fn(SignatureScheme) -> bool) -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    let mapping: Vec<_> = p
        .signature_verification_algorithms
        .mapping
        .iter()
        .filter(|(s, _)| keep(*s))
        .cloned()
        .collect();
    p.signature_verification_algorithms.mapping = Box::leak(mapping.into_boxed_slice());
    p
}

fn ecdsa_only(s: SignatureScheme) -> bool {
    format!("{s:?}").starts_with("ECDSA")
}

fn rsa_only(s: SignatureScheme) -> bool {
    format!("{s:?}").starts_with("RSA")
}

/// Handshake on `port` (SNI localhost), optionally with a client certificate, then GET /:
/// (status, the server's leaf certificate DER) or the error text. TLS 1.3 reports a refused
/// client certificate after the handshake, so a refusal may surface at the request.
async fn get(
    ca: &Ca,
    port: u16,
    cert: Option<&Leaf>,
    provider: Option<CryptoProvider>,
) -> Result<(u16, Vec<u8>), String> {
    let cfg = client_config(
        ca,
        provider.unwrap_or_else(rustls::crypto::ring::default_provider),
        rustls::DEFAULT_VERSIONS,
        cert,
        &[b"http/1.1"],
    );
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    // A plain HTTP/1.1 exchange, so that the server's alert is the error read.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tls = tls;
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    tls.read_to_end(&mut resp)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let resp = String::from_utf8_lossy(&resp);
    let status = resp
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response {resp:?}"))?;
    Ok((status, server_cert))
}

/// The request was answered 200.
#[track_caller]
fn served(r: Result<(u16, Vec<u8>), String>) {
    assert_eq!(r.map(|r| r.0), Ok(200));
}

/// The handshake was refused with this alert.
fn refused(r: Result<(u16, Vec<u8>), String>, alert: &str) {
    match r {
        Ok((st, _)) => panic!("served ({st}), want alert {alert}"),
        Err(e) => assert!(e.contains(&format!("received fatal alert: {alert}")), "{e}"),
    }
}

struct Setup {
    l7: L7,
    dir: tempfile::TempDir,
    ca: Ca,
    /// SAN spiffe://example.com/good and good.client.example.com; serial 10.
    good: Leaf,
    /// SAN other.client.example.com; serial 11.
    other: Leaf,
    /// SAN good.client.example.com, revoked by the CRL; serial 12.
    revoked: Leaf,
    rsa_server: Leaf,
    ecdsa_server: Leaf,
    ports: Ports,
}

struct Ports {
    san: u16,
    spki: u16,
    hash: u16,
    both: u16,
    crl: u16,
    files: u16,
    secrets: u16,
    /// A `TLS` server (terminated, then `tcp` routes) with subjectAltNames.
    stream: u16,
}

fn server(port: u16, name: &str, tls: &str) -> String {
    format!(
        "  - port: {{number: {port}, name: {name}, protocol: HTTPS}}\n    hosts: [\"*\"]\n    tls: {{{tls}}}\n"
    )
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("test CA");
    let good = ca.leaf(
        &["spiffe://example.com/good", "good.client.example.com"],
        Usage::Client,
        Some(10),
        None,
    );
    let other = ca.leaf(&["other.client.example.com"], Usage::Client, Some(11), None);
    let revoked = ca.leaf(&["good.client.example.com"], Usage::Client, Some(12), None);
    let ecdsa_server = ca.leaf(&["localhost"], Usage::Server, Some(20), None);
    let rsa_server = ca.leaf(&["localhost"], Usage::Server, Some(21), Some(rsa_key()));
    for (f, c) in [
        ("rsa.crt", &rsa_server.pem),
        ("rsa.key", &rsa_server.key),
        ("ecdsa.crt", &ecdsa_server.pem),
        ("ecdsa.key", &ecdsa_server.key),
        ("ca.crt", &ca.cert.pem()),
        ("ca.crl", &ca.crl(&[12])),
    ] {
        std::fs::write(d.join(f), c).unwrap();
    }
    let ports = Ports {
        san: free_port(),
        spki: free_port(),
        hash: free_port(),
        both: free_port(),
        crl: free_port(),
        files: free_port(),
        secrets: free_port(),
        stream: free_port(),
    };
    let mtls =
        "mode: MUTUAL, serverCertificate: ecdsa.crt, privateKey: ecdsa.key, caCertificates: ca.crt";
    let mut servers = String::new();
    servers += &server(
        ports.san,
        "san",
        &format!("{mtls}, subjectAltNames: [spiffe://example.com/good, x.example.com]"),
    );
    servers += &server(
        ports.spki,
        "spki",
        &format!(
            "{mtls}, verifyCertificateSpki: [\"{}\"]",
            spki_pin(&good.der)
        ),
    );
    servers += &server(
        ports.hash,
        "hash",
        &format!(
            "{mtls}, verifyCertificateHash: [\"{}\"]",
            hash_pin(&other.der)
        ),
    );
    // Either list may match; the SAN must match too.
    servers += &server(
        ports.both,
        "both",
        &format!(
            "{mtls}, verifyCertificateSpki: [\"{}\"], verifyCertificateHash: [\"{}\"], subjectAltNames: [good.client.example.com, other.client.example.com]",
            spki_pin(&good.der),
            hash_pin(&other.der).replace(':', "").to_lowercase()
        ),
    );
    servers += &server(ports.crl, "crl", &format!("{mtls}, caCrl: ca.crl"));
    servers += &server(
        ports.files,
        "files",
        "mode: SIMPLE, tlsCertificates: [{serverCertificate: rsa.crt, privateKey: rsa.key}, {serverCertificate: ecdsa.crt, privateKey: ecdsa.key}]",
    );
    servers += &server(
        ports.secrets,
        "secrets",
        "mode: MUTUAL, credentialNames: [rsa-cred, ecdsa-cred], caCertCredentialName: client-ca",
    );
    servers += &format!(
        "  - port: {{number: {}, name: tls-term, protocol: TLS}}\n    hosts: [\"*\"]\n    tls: {{{mtls}, subjectAltNames: [other.client.example.com]}}\n",
        ports.stream
    );
    let be = backend().await;
    let secret = |name: &str, data: &[(&str, &str)]| {
        let mut s = format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ndata:\n"
        );
        for (k, v) in data {
            s += &format!("  {k}: {}\n", b64(v));
        }
        s
    };
    let mut yaml = format!("{GATEWAY}{servers}");
    yaml += &secret(
        "rsa-cred",
        &[("tls.crt", &rsa_server.pem), ("tls.key", &rsa_server.key)],
    );
    yaml += &secret(
        "ecdsa-cred",
        &[
            ("tls.crt", &ecdsa_server.pem),
            ("tls.key", &ecdsa_server.key),
        ],
    );
    yaml += &secret(
        "client-ca",
        &[("ca.crt", &ca.cert.pem()), ("ca.crl", &ca.crl(&[11]))],
    );
    yaml += "---\n";
    yaml += &yaml::local_service("web", "web.internal", (80, "http", "HTTP"), be);
    yaml += &yaml::virtual_service_for(
        "web",
        r#"  http:
  - route: [{destination: {host: web.internal}}]
  tcp:
  - route: [{destination: {host: web.internal, port: {number: 80}}}]
"#,
    );
    let (plan, warnings) = compile_dir(d, "gw.yaml", &yaml);
    assert_all_served(&warnings);
    let mut l7 = L7::default();
    l7.apply_plan(&plan).await.expect("binds");
    Setup {
        l7,
        dir,
        ca,
        good,
        other,
        revoked,
        rsa_server,
        ecdsa_server,
        ports,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn subject_alt_names_pick_the_client() {
    let s = setup().await;
    // The URI SAN matches exactly.
    let r = get(&s.ca, s.ports.san, Some(&s.good), None).await;
    assert_eq!(r.map(|r| r.0), Ok(200));
    // Same CA, no listed SAN: refused.
    refused(
        get(&s.ca, s.ports.san, Some(&s.other), None).await,
        "BadCertificate",
    );
    // No certificate at all on MUTUAL: refused.
    assert!(get(&s.ca, s.ports.san, None, None).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_servers_with_tcp_routes_check_the_client_too() {
    let s = setup().await;
    // The bytes after termination reach the HTTP backend unchanged.
    let r = get(&s.ca, s.ports.stream, Some(&s.other), None).await;
    assert_eq!(r.map(|r| r.0), Ok(200));
    refused(
        get(&s.ca, s.ports.stream, Some(&s.good), None).await,
        "BadCertificate",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spki_and_hash_pins() {
    let s = setup().await;
    served(get(&s.ca, s.ports.spki, Some(&s.good), None).await);
    refused(
        get(&s.ca, s.ports.spki, Some(&s.other), None).await,
        "BadCertificate",
    );
    served(get(&s.ca, s.ports.hash, Some(&s.other), None).await);
    refused(
        get(&s.ca, s.ports.hash, Some(&s.good), None).await,
        "BadCertificate",
    );
    // Both lists: either pin is enough (good by SPKI, other by hash); the revoked-serial
    // certificate has the good SAN but neither pin.
    for c in [&s.good, &s.other] {
        served(get(&s.ca, s.ports.both, Some(c), None).await);
    }
    refused(
        get(&s.ca, s.ports.both, Some(&s.revoked), None).await,
        "BadCertificate",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crl_refuses_a_revoked_client() {
    let s = setup().await;
    served(get(&s.ca, s.ports.crl, Some(&s.good), None).await);
    refused(
        get(&s.ca, s.ports.crl, Some(&s.revoked), None).await,
        "CertificateRevoked",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_certificates_by_the_clients_signature_schemes() {
    let s = setup().await;
    for port in [s.ports.files, s.ports.secrets] {
        let cert = (port == s.ports.secrets).then_some(&s.good);
        let (st, leaf) = get(&s.ca, port, cert, Some(provider_only(ecdsa_only)))
            .await
            .unwrap();
        assert_eq!((st, &leaf), (200, &s.ecdsa_server.der), "ECDSA-only client");
        let (st, leaf) = get(&s.ca, port, cert, Some(provider_only(rsa_only)))
            .await
            .unwrap();
        assert_eq!((st, &leaf), (200, &s.rsa_server.der), "RSA-only client");
        // A client that can verify both gets ECDSA, as from Envoy, though RSA is listed first.
        let (st, leaf) = get(&s.ca, port, cert, None).await.unwrap();
        assert_eq!((st, &leaf), (200, &s.ecdsa_server.der), "client with both");
    }
    // The CA (and CRL) of `secrets` come from the caCertCredentialName Secret: `other` is
    // revoked there, and a client from another CA is refused.
    refused(
        get(&s.ca, s.ports.secrets, Some(&s.other), None).await,
        "CertificateRevoked",
    );
    let rogue = Ca::new("rogue").leaf(&["good.client.example.com"], Usage::Client, Some(10), None);
    refused(
        get(&s.ca, s.ports.secrets, Some(&rogue), None).await,
        "UnknownCA",
    );
    assert!(get(&s.ca, s.ports.secrets, None, None).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_pin_or_crl_keeps_the_last_good_config() {
    let mut s = setup().await;
    let path = s.dir.path().join("gw.yaml");
    let good_yaml = std::fs::read_to_string(&path).unwrap();
    // A pin that is not a SHA-256, then a CRL file that is not there: each rejects the config
    // with the Gateway field (and file) named.
    let pin = spki_pin(&s.good.der);
    let cases = [
        (
            good_yaml.replace(&pin, "bm90IGEgZGlnZXN0"),
            "Gateway istio-system/gw spec.servers[1].tls.verifyCertificateSpki[0]: \"bm90IGEgZGlnZXN0\" is not a base64 SHA-256 digest".to_string(),
        ),
        (
            good_yaml.replace("caCrl: ca.crl", "caCrl: gone.crl"),
            format!(
                "Gateway istio-system/gw spec.servers[4].tls.caCrl: reading {}",
                s.dir.path().join("gone.crl").display()
            ),
        ),
    ];
    for (yaml, want) in cases {
        let (plan, _) = compile_dir(s.dir.path(), "gw.yaml", &yaml);
        let errs = s.l7.apply_plan(&plan).await.unwrap_err();
        assert!(errs.iter().any(|e| e.starts_with(&want)), "{errs:#?}");
        // The previous generation still serves, pins and CRL included.
        served(get(&s.ca, s.ports.spki, Some(&s.good), None).await);
        refused(
            get(&s.ca, s.ports.spki, Some(&s.other), None).await,
            "BadCertificate",
        );
        refused(
            get(&s.ca, s.ports.crl, Some(&s.revoked), None).await,
            "CertificateRevoked",
        );
    }
}
