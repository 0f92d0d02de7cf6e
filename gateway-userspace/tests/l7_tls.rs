//! HTTPS termination in-process: certificates made with rcgen, real TLS handshakes with a
//! rustls client over 127.0.0.1, manifests loaded from a directory (relative certificate paths,
//! `kind: Secret` for credentialName) through `load_and_compile` and `L7::apply`.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use gateway::l7::L7;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod support;
use support::backend::header;
use support::gateway::{assert_all_served, compile_dir};
use support::net::free_port;
use support::tls::{b64, client_config, Ca, Leaf};
use support::yaml::{self, GATEWAY};

/// A backend that names itself and echoes what the gateway sent (`x-forwarded-proto`, host).
async fn backend(name: &'static str) -> u16 {
    support::backend::http(move |req: Request<Incoming>| async move {
        let h = |n: &str| header(req.headers(), n);
        let body = format!(
            "{name} xfp={} host={} path={} xfcc={}",
            h("x-forwarded-proto"),
            h("host"),
            req.uri().path(),
            h("x-forwarded-client-cert")
        );
        Response::new(Full::new(Bytes::from(body)))
    })
    .await
}

struct Setup {
    _l7: L7,
    _dir: tempfile::TempDir,
    ca: Ca,
    /// A client certificate from the trusted CA, and one from another CA.
    client: Leaf,
    rogue_client: Leaf,
    https: u16,
    mtls: u16,
    optional: u16,
    http: u16,
    /// SIMPLE with `cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256, AES128-SHA]`.
    ciphers: u16,
}

/// Ports: `https` has two SIMPLE servers (a.example.com from files with relative paths;
/// `*.b.example.com` from a Secret, TLS 1.3 only), `mtls` MUTUAL and `optional`
/// OPTIONAL_MUTUAL (any host), `http` plain text with httpsRedirect for a.example.com.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let a = ca.server(&["a.example.com"]);
    let b = ca.server(&["*.b.example.com"]);
    let any = ca.server(&["gateway.example.com", "localhost"]);
    let client = ca.client(&["client.example.com"]);
    let rogue_client = Ca::new("rogue CA").client(&["client.example.com"]);
    let d = dir.path();
    std::fs::create_dir(d.join("certs")).unwrap();
    for (f, c) in [
        ("certs/a.crt", &a.pem),
        ("certs/a.key", &a.key),
        ("certs/any.crt", &any.pem),
        ("certs/any.key", &any.key),
        ("certs/ca.crt", &ca.pem()),
    ] {
        std::fs::write(d.join(f), c).unwrap();
    }
    let be = backend("web").await;
    let (https, mtls, optional, http) = (free_port(), free_port(), free_port(), free_port());
    let ciphers = free_port();
    let yaml_web = yaml::local_service("web", "web.internal", (80, "http", "HTTP"), be);
    let vs_web = yaml::virtual_service_for(
        "web",
        r#"  http:
  - match: [{scheme: {exact: https}, uri: {prefix: /secure}}]
    route: [{destination: {host: web.internal}}]
    headers: {response: {set: {x-route: secure}}}
  - route: [{destination: {host: web.internal}}]
"#,
    );
    let yaml = format!(
        r#"{GATEWAY}  - port: {{number: {https}, name: https-a, protocol: HTTPS}}
    hosts: [a.example.com]
    tls: {{mode: SIMPLE, serverCertificate: certs/a.crt, privateKey: certs/a.key}}
  - port: {{number: {https}, name: https-b, protocol: HTTPS}}
    hosts: ["*.b.example.com"]
    tls: {{mode: SIMPLE, credentialName: b-cred, minProtocolVersion: TLSV1_3}}
  - port: {{number: {mtls}, name: mtls, protocol: HTTPS}}
    hosts: ["*"]
    tls: {{mode: MUTUAL, serverCertificate: certs/any.crt, privateKey: {}/certs/any.key, caCertificates: certs/ca.crt}}
  - port: {{number: {optional}, name: optional, protocol: HTTPS}}
    hosts: ["*"]
    tls: {{mode: OPTIONAL_MUTUAL, serverCertificate: certs/any.crt, privateKey: certs/any.key, caCertificates: certs/ca.crt}}
  - port: {{number: {http}, name: http, protocol: HTTP}}
    hosts: [a.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: {ciphers}, name: https-ciphers, protocol: HTTPS}}
    hosts: ["*"]
    tls: {{mode: SIMPLE, serverCertificate: certs/any.crt, privateKey: certs/any.key, cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256, AES128-SHA]}}
---
apiVersion: v1
kind: Secret
metadata: {{name: b-cred, namespace: istio-system}}
type: kubernetes.io/tls
data:
  tls.crt: {}
  tls.key: {}
---
{yaml_web}{vs_web}"#,
        d.display(),
        b64(&b.pem),
        b64(&b.key),
    );
    let (plan, warnings) = compile_dir(d, "gw.yaml", &yaml);
    assert_all_served(&warnings);
    // AES128-SHA is a valid Istio name that rustls lacks (CBC): warned and ignored.
    assert!(
        warnings.iter().any(|w| w.field.ends_with("cipherSuites[1]")
            && w.message.contains("AES128-SHA is not supported")),
        "{warnings:#?}"
    );
    let mut l7 = L7::default();
    l7.apply(&plan.http).await.expect("binds");
    Setup {
        _l7: l7,
        _dir: dir,
        ca,
        client,
        rogue_client,
        https,
        mtls,
        optional,
        http,
        ciphers,
    }
}

static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

struct Client<'a> {
    roots: &'a Ca,
    cert: Option<&'a Leaf>,
    versions: &'static [&'static rustls::SupportedProtocolVersion],
    alpn: &'static [&'static [u8]],
    /// Offer only this cipher suite (None: rustls' defaults).
    suite: Option<rustls::CipherSuite>,
}

impl<'a> Client<'a> {
    fn new(roots: &'a Ca) -> Self {
        Client {
            roots,
            cert: None,
            versions: rustls::ALL_VERSIONS,
            alpn: &[b"h2", b"http/1.1"],
            suite: None,
        }
    }

    /// Handshake with `sni` on `port`, then GET `path` with `host`: (status, version, body,
    /// x-route) or the error text.
    async fn get(
        &self,
        port: u16,
        sni: &str,
        host: &str,
        path: &str,
    ) -> Result<(u16, Version, String, String), String> {
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(only) = self.suite {
            provider.cipher_suites.retain(|cs| cs.suite() == only);
        }
        let cfg = client_config(self.roots, provider, self.versions, self.cert, self.alpn);
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let req = Request::builder()
            .uri(format!("https://{host}{path}"))
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = if h2 {
            let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut req = req;
            req.headers_mut().remove("host");
            s.send_request(req).await.map_err(|e| e.to_string())?
        } else {
            let (mut s, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            s.send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let route = parts
            .headers
            .get("x-route")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Ok((
            parts.status.as_u16(),
            parts.version,
            String::from_utf8_lossy(&body).into_owned(),
            route,
        ))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn simple_tls_sni_alpn_scheme_and_route_tables() {
    let s = setup().await;
    let c = Client::new(&s.ca);
    // ALPN h2; x-forwarded-proto https; `scheme: https` matches.
    let (st, v, body, route) = c
        .get(s.https, "a.example.com", "a.example.com", "/secure")
        .await
        .unwrap();
    assert_eq!((st, v), (200, Version::HTTP_2), "{body}");
    assert!(body.contains("xfp=https"), "{body}");
    assert_eq!(route, "secure");
    // HTTP/1.1 when the client offers only that.
    let c11 = Client {
        alpn: &[b"http/1.1"],
        ..Client::new(&s.ca)
    };
    let (st, v, _, _) = c11
        .get(s.https, "a.example.com", "a.example.com", "/x")
        .await
        .unwrap();
    assert_eq!((st, v), (200, Version::HTTP_11));
    // SNI picks the certificate: the Secret's wildcard one for x.b.example.com (the client
    // verifies the name, so a wrong certificate fails the handshake).
    let (st, _, body, _) = c
        .get(s.https, "x.b.example.com", "x.b.example.com", "/")
        .await
        .unwrap();
    assert_eq!(st, 200, "{body}");
    // Each HTTPS server has its own route table: SNI a + Host x.b gives 404 (§3.7).
    let (st, ..) = c
        .get(s.https, "a.example.com", "x.b.example.com", "/")
        .await
        .unwrap();
    assert_eq!(st, 404);
    // Unknown SNI and no `*` server: the connection is closed during the handshake.
    let e = c
        .get(s.https, "c.example.com", "c.example.com", "/")
        .await
        .unwrap_err();
    assert!(e.contains("handshake"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_versions() {
    let s = setup().await;
    let tls12 = Client {
        versions: TLS12_ONLY,
        ..Client::new(&s.ca)
    };
    // a.example.com: default 1.2..1.3.
    assert_eq!(
        tls12
            .get(s.https, "a.example.com", "a.example.com", "/")
            .await
            .unwrap()
            .0,
        200
    );
    // *.b.example.com: minProtocolVersion TLSV1_3.
    let e = tls12
        .get(s.https, "x.b.example.com", "x.b.example.com", "/")
        .await
        .unwrap_err();
    assert!(e.contains("handshake"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_and_optional_mutual() {
    let s = setup().await;
    let anon = Client::new(&s.ca);
    let good = Client {
        cert: Some(&s.client),
        ..Client::new(&s.ca)
    };
    let rogue = Client {
        cert: Some(&s.rogue_client),
        ..Client::new(&s.ca)
    };
    // MUTUAL: a client certificate from the CA is required.
    let (status, _, body, _) = good.get(s.mtls, "localhost", "x", "/").await.unwrap();
    assert_eq!(status, 200);
    // The upstream learns who the client is from x-forwarded-client-cert (Istio's gateway sets
    // Hash, Cert, Subject, URI and DNS of the verified certificate).
    let der = CertificateDer::from_pem_slice(s.client.pem.as_bytes()).unwrap();
    let hash: String = ring::digest::digest(&ring::digest::SHA256, der.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let want = format!("xfcc=Hash={hash};Cert=\"-----BEGIN%20CERTIFICATE-----%0A");
    assert!(body.contains(&want), "{body} (want {want})");
    let want =
        "-----END%20CERTIFICATE-----%0A\";Subject=\"CN=client.example.com\";DNS=client.example.com";
    assert!(body.ends_with(want), "{body} (want {want})");
    // (TLS 1.3 reports a missing or rejected client certificate after the handshake, on the
    // first read, so the failure may surface at the request.)
    assert!(anon.get(s.mtls, "localhost", "x", "/").await.is_err());
    assert!(rogue.get(s.mtls, "localhost", "x", "/").await.is_err());
    // OPTIONAL_MUTUAL: no certificate is fine, a bad one is not.
    let (status, _, body, _) = anon.get(s.optional, "localhost", "x", "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.ends_with("xfcc="),
        "no client certificate, no XFCC: {body}"
    );
    assert_eq!(
        good.get(s.optional, "localhost", "x", "/").await.unwrap().0,
        200
    );
    assert!(rogue.get(s.optional, "localhost", "x", "/").await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn https_redirect_on_the_http_server() {
    let s = setup().await;
    let r = reqwest_like_get(s.http, "a.example.com", "/p?q=1").await;
    assert_eq!(r.0, 301);
    assert_eq!(r.1, "https://a.example.com/p?q=1");
    // Plain-text routes never see scheme https.
    let r = reqwest_like_get(s.http, "other.example.com", "/secure").await;
    assert_eq!(r.0, 404, "no vhost for other hosts on this server");
}

async fn reqwest_like_get(port: u16, host: &str, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let r = s
        .send_request(
            Request::builder()
                .uri(path)
                .header("host", host)
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let loc = header(r.headers(), "location");
    (r.status().as_u16(), loc)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_certificate_file_rejects_the_config_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let https = |tls: &str| {
        yaml::gateway(&format!(
            "  - port: {{number: {port}, name: https, protocol: HTTPS}}\n    hosts: [\"*\"]\n    tls: {{{tls}}}\n"
        ))
    };
    let (plan, _) = compile_dir(
        dir.path(),
        "gw.yaml",
        &https("mode: SIMPLE, serverCertificate: missing.crt, privateKey: missing.key"),
    );
    let errs = L7::default().apply(&plan.http).await.unwrap_err();
    let want = format!(
        "Gateway istio-system/gw spec.servers[0].tls.serverCertificate: reading {}",
        Path::new(dir.path()).join("missing.crt").display()
    );
    assert!(errs.iter().any(|e| e.starts_with(&want)), "{errs:#?}");
    // A credentialName without its Secret: the server is not served, and the warning says why.
    let (plan, warnings) = compile_dir(
        dir.path(),
        "gw.yaml",
        &https("mode: SIMPLE, credentialName: nope"),
    );
    assert!(plan.http.listeners.is_empty());
    assert!(
        warnings
            .iter()
            .any(|w| w.field == "spec.servers[0].tls.credentialName"
                && w.message.contains("Secret istio-system/nope not found")),
        "{warnings:#?}"
    );
}

/// `cipherSuites` is enforced for TLS 1.2 (a client offering only other suites fails the
/// handshake), in Envoy's way: TLS 1.3 is not affected.
#[tokio::test(flavor = "multi_thread")]
async fn cipher_suites_are_enforced() {
    use rustls::CipherSuite as C;
    static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    let s = setup().await;
    let tls12 = |suite| Client {
        versions: &TLS12,
        suite: Some(suite),
        ..Client::new(&s.ca)
    };
    let listed = tls12(C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    let (status, ..) = listed.get(s.ciphers, "localhost", "x", "/").await.unwrap();
    assert_eq!(status, 200);
    for other in [
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ] {
        let e = tls12(other)
            .get(s.ciphers, "localhost", "x", "/")
            .await
            .unwrap_err();
        assert!(e.contains("handshake"), "{other:?}: {e}");
        // Without cipherSuites the same client connects.
        let (status, ..) = tls12(other)
            .get(s.https, "a.example.com", "a.example.com", "/")
            .await
            .unwrap();
        assert_eq!(status, 200, "{other:?} without cipherSuites");
    }
    let tls13 = Client::new(&s.ca);
    let (status, ..) = tls13.get(s.ciphers, "localhost", "x", "/").await.unwrap();
    assert_eq!(status, 200);
}
