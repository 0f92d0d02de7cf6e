//! Upstream TLS origination (DestinationRule `trafficPolicy.tls` SIMPLE/MUTUAL): the rustls
//! client configuration of a cluster, the certificate check Istio asks Envoy for (auto-SAN,
//! chain only, `subjectAltNames`, none), and the connector hyper's pooled client uses (TCP,
//! then the TLS handshake; pooled per worker, cluster, SNI and endpoint, with rustls'
//! in-memory session resumption). A handshake failure is a connection failure (`UF`), with
//! Envoy's `TLS_error:|...:TLS_error_end` transport failure reason.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tower_service::Service;

use crate::plan::http as p;

/// What a cluster's connections need for TLS: the client configs (shared by every connection,
/// so rustls' session cache resumes across them) and the SNI rule.
pub struct Origination {
    /// For HTTP requests: with auto-SNI the name is the request's `Host` and checked (auto-SAN).
    http: TlsConnector,
    /// For streams (`tcp` routes): with auto-SNI no SNI is sent and only the chain is checked,
    /// since Envoy's auto-SNI and auto-SAN are HTTP options.
    stream: TlsConnector,
    /// `tls.sni`; None: auto-SNI.
    sni: Option<ServerName<'static>>,
    /// The auto-SNI fallback for a request without a usable `Host`.
    destination: ServerName<'static>,
    /// Some: the settings are unusable; every connection fails with this reason.
    error: Option<String>,
}

impl Origination {
    /// Builds the client side of `t`; a file that cannot be read, or a bad certificate, gives
    /// an origination that fails every connection (logged once here, named by its origin).
    pub fn new(t: &p::UpstreamTls, cluster: &str) -> Arc<Origination> {
        let name = |s: &str| ServerName::try_from(s.to_string()).ok();
        let sni = t.sni.as_deref().and_then(name);
        let destination = name(&t.destination)
            .unwrap_or_else(|| ServerName::try_from("invalid.sni").expect("a valid name"));
        let auto = t.sni.is_none();
        let built = client_config(t, auto).and_then(|h| Ok((h, client_config(t, false)?)));
        let (http, stream, error) = match built {
            Ok((h, s)) => (h, s, t.error.clone()),
            Err(e) => {
                log::warn!("{cluster}: upstream TLS ({}): {e}", t.origin);
                (fallback_config(), fallback_config(), Some(e))
            }
        };
        Arc::new(Origination {
            http: TlsConnector::from(Arc::new(http)),
            stream: TlsConnector::from(Arc::new(stream)),
            sni,
            destination,
            error,
        })
    }

    /// Whether the SNI comes from each request's `Host` (so connections are pooled per SNI).
    pub fn auto_sni(&self) -> bool {
        self.sni.is_none()
    }

    /// The auto-SNI of a request with this `Host`: without its port; the destination when
    /// there is none or it is not a name.
    pub fn sni_for(&self, host: Option<&str>) -> ServerName<'static> {
        let host = host.map(|h| match h.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(']') && port.parse::<u16>().is_ok() => name,
            _ => h,
        });
        host.and_then(|h| ServerName::try_from(h.to_ascii_lowercase()).ok())
            .filter(|n| matches!(n, ServerName::DnsName(_)))
            .unwrap_or_else(|| self.destination.clone())
    }

    /// The TLS handshake of an HTTP connection; `auto` is the request's auto-SNI.
    pub async fn connect_http(
        &self,
        tcp: TcpStream,
        auto: Option<ServerName<'static>>,
    ) -> Result<TlsStream<TcpStream>, TlsError> {
        let name = self
            .sni
            .clone()
            .or(auto)
            .unwrap_or_else(|| self.destination.clone());
        self.handshake(&self.http, name, tcp).await
    }

    /// The TLS handshake of a stream: `tls.sni`, else no SNI at all (rustls sends none for an
    /// address).
    pub async fn connect_stream(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, TlsError> {
        let name = match &self.sni {
            Some(n) => n.clone(),
            None => match tcp.peer_addr() {
                Ok(a) => ServerName::IpAddress(a.ip().into()),
                Err(e) => return Err(TlsError::new("CONNECTION_CLOSED", &e.to_string())),
            },
        };
        self.handshake(&self.stream, name, tcp).await
    }

    async fn handshake(
        &self,
        c: &TlsConnector,
        name: ServerName<'static>,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, TlsError> {
        if let Some(e) = &self.error {
            return Err(TlsError::new("CONFIGURATION", e));
        }
        c.connect(name, tcp).await.map_err(TlsError::from_io)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system trust store, read once.
fn system_roots() -> Arc<RootCertStore> {
    static R: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    R.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            log::debug!("system trust store: {e}");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        log::debug!("system trust store: {added} roots ({ignored} unusable)");
        Arc::new(roots)
    })
    .clone()
}

fn fallback_config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            webpki: None,
            names: Names::Any,
        }))
        .with_no_client_auth()
}

/// The upstream certificate check of `t`. `auto_san`: without `subjectAltNames`, the
/// certificate must be valid for the SNI (Envoy's auto_san_validation, which Istio sets when
/// `sni` is unset).
fn verifier(t: &p::UpstreamTls, auto_san: bool) -> Result<Verifier, String> {
    let names = if t.insecure_skip_verify {
        return Ok(Verifier {
            webpki: None,
            names: Names::Any,
        });
    } else if !t.subject_alt_names.is_empty() {
        let sans = p::ClientPins {
            subject_alt_names: t.subject_alt_names.clone(),
            ..Default::default()
        };
        Names::Sans(super::tls::Pins::parse(&sans).map_err(|e| e.join("; "))?)
    } else if auto_san {
        Names::ServerName
    } else {
        Names::ChainOnly
    };
    let roots = match &t.ca_certificates {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for c in super::tls::certs(pem)? {
                roots
                    .add(c)
                    .map_err(|e| format!("caCertificates: unusable CA certificate: {e}"))?;
            }
            Arc::new(roots)
        }
        None => system_roots(),
    };
    if roots.is_empty() {
        return Err("no trust anchors: caCertificates is unset and the system trust store (/etc/ssl/certs) has none".into());
    }
    let mut b = WebPkiServerVerifier::builder_with_provider(roots, provider());
    if let Some(crl) = &t.ca_crl {
        // As Envoy with a CRL: every certificate of the chain needs a verdict (rustls'
        // default depth and unknown-status policy), and an expired CRL per --crl-expiration.
        b = b.with_crls(super::tls::crls(crl)?);
        if super::tls::crl_expiration() == super::tls::CrlExpiration::Enforce {
            b = b.enforce_revocation_expiration();
        }
    }
    let webpki = b.build().map_err(|e| match &t.ca_crl {
        Some(p::Pem::File { origin, .. } | p::Pem::Secret { origin, .. }) => {
            format!("{origin}: {e}")
        }
        None => format!("caCertificates: {e}"),
    })?;
    Ok(Verifier {
        webpki: Some(webpki),
        names,
    })
}

/// The client config of `t` (see [`verifier`] for `auto_san`).
pub(crate) fn client_config(t: &p::UpstreamTls, auto_san: bool) -> Result<ClientConfig, String> {
    let verifier = verifier(t, auto_san)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match (&t.client_certificate, &t.private_key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(super::tls::certs(c)?, super::tls::key(k)?)
            .map_err(|e| format!("clientCertificate/privateKey: {e}"))?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = t.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Ok(config)
}

/// Which names the upstream certificate must carry, once its chain verified.
#[derive(Debug)]
enum Names {
    /// `insecureSkipVerify`: no check at all, not even the chain.
    Any,
    /// The chain only (`sni` set without `subjectAltNames`, as Envoy without SAN matchers).
    ChainOnly,
    /// Valid for the SNI it was asked for (auto-SAN).
    ServerName,
    /// A SAN of any type exactly equal to one of these (a `*.` DNS SAN covers one label), as
    /// a MUTUAL server checks its clients'.
    Sans(super::tls::Pins),
}

/// The upstream certificate check (Envoy's `CertificateValidationContext` as Istio fills it).
#[derive(Debug)]
struct Verifier {
    /// Chain, validity and revocation (CRLs); None with `insecureSkipVerify`.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    names: Names,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        // rustls checks the chain (with revocation) first and the name last, so a name error
        // means the chain passed; only the auto-SAN check wants that name.
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(_) => {}
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !matches!(self.names, Names::ServerName) => {}
            Err(e) => return Err(e),
        }
        if let Names::Sans(want) = &self.names {
            if want.check(end_entity.as_ref()).is_err() {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                ));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A failed upstream TLS handshake, with Envoy's transport failure reason
/// (`TLS_error:|CERTIFICATE_VERIFY_FAILED:invalid_peer_certificate:_UnknownIssuer:TLS_error_end`).
#[derive(Debug)]
pub struct TlsError {
    pub reason: &'static str,
}

impl TlsError {
    fn new(code: &str, msg: &str) -> TlsError {
        // Envoy's response details carry no spaces.
        let msg: String = msg
            .chars()
            .filter(|c| *c != '"')
            .map(|c| {
                if c.is_whitespace() || c == '{' || c == '}' || c == ',' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        TlsError {
            reason: intern(format!("TLS_error:|{code}:{msg}:TLS_error_end")),
        }
    }

    fn from_io(e: io::Error) -> TlsError {
        use rustls::CertificateError as C;
        let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        let code = match rustls_error {
            Some(rustls::Error::InvalidCertificate(_)) => "CERTIFICATE_VERIFY_FAILED",
            Some(rustls::Error::AlertReceived(_)) => "TLS_ALERT_RECEIVED",
            Some(rustls::Error::NoApplicationProtocol) => "NO_APPLICATION_PROTOCOL",
            Some(_) => "HANDSHAKE_FAILURE",
            None => "CONNECTION_CLOSED",
        };
        // Errors that carry the time of the handshake would make a new reason each time:
        // BoringSSL's words for them instead.
        let fixed = match rustls_error {
            Some(rustls::Error::InvalidCertificate(c)) => match c {
                C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
                    Some("invalid peer certificate: CRL has expired")
                }
                C::Expired | C::ExpiredContext { .. } => {
                    Some("invalid peer certificate: certificate has expired")
                }
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    Some("invalid peer certificate: certificate is not yet valid")
                }
                _ => None,
            },
            _ => None,
        };
        match fixed {
            Some(msg) => TlsError::new(code, msg),
            None => TlsError::new(code, &e.to_string()),
        }
    }
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for TlsError {}

/// Reasons are few (one per kind of rustls error): kept for the process's life, so access log
/// entries can name them without an allocation each. Bounded: past 512, a generic reason.
fn intern(s: String) -> &'static str {
    static SEEN: OnceLock<Mutex<std::collections::HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(s) = seen.get(s.as_str()) {
        return s;
    }
    if seen.len() >= 512 {
        return "TLS_error:|HANDSHAKE_FAILURE:TLS_error_end";
    }
    let s: &'static str = Box::leak(s.into_boxed_str());
    seen.insert(s);
    s
}

/// `upstream_reset_before_response_started{connection_failure,TLS_error:|...:TLS_error_end}`.
pub fn connection_failure_details(reason: &str) -> &'static str {
    intern(format!(
        "upstream_reset_before_response_started{{connection_failure,{reason}}}"
    ))
}

/// hyper's connector for a cluster: plain TCP, or TCP then TLS (with the auto-SNI of the
/// client it belongs to: one client, so one pool, per SNI).
#[derive(Clone)]
pub struct Connector {
    pub http: HttpConnector,
    pub tls: Option<Arc<Origination>>,
    pub sni: Option<ServerName<'static>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.http.call(uri);
        let tls = self.tls.clone();
        let sni = self.sni.clone();
        Box::pin(async move {
            let tcp = tcp.await?;
            match tls {
                None => Ok(Conn::Plain(tcp)),
                Some(t) => {
                    let s = t.connect_http(tcp.into_inner(), sni).await?;
                    Ok(Conn::Tls(Box::new(TokioIo::new(s))))
                }
            }
        })
    }
}

/// The reason of a TLS handshake failure somewhere in an upstream error's chain.
pub fn tls_reason(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        if let Some(t) = err.downcast_ref::<TlsError>() {
            return Some(t.reason);
        }
        src = err.source();
    }
    None
}

pub enum Conn {
    Plain(TokioIo<TcpStream>),
    /// Boxed: a rustls connection is a kilobyte, a plain one a few words.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(s) => s.connected(),
            Conn::Tls(s) => {
                let (tcp, tls) = s.inner().get_ref();
                let c = tcp.connected();
                if tls.alpn_protocol() == Some(b"h2") {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        }
    }
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        connection_failure_details, p, verifier, CertificateDer, Origination, ServerCertVerifier,
        ServerName, TlsError, UnixTime, Verifier,
    };

    /// A CA and a leaf it signed for `names` (DER), and the CA as a Secret-held PEM.
    fn ca_and_leaf(names: &[&str]) -> (p::Pem, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("leaf");
        let pem = p::Pem::Secret {
            origin: "Secret istio-system/ca key ca.crt".into(),
            data: ca.pem().into_bytes(),
        };
        (pem, leaf.der().clone())
    }

    fn settings(ca: p::Pem, sni: Option<&str>, sans: &[&str], insecure: bool) -> p::UpstreamTls {
        p::UpstreamTls {
            mode: "SIMPLE".into(),
            sni: sni.map(Into::into),
            destination: "dest.internal".into(),
            ca_certificates: Some(ca),
            ca_crl: None,
            client_certificate: None,
            private_key: None,
            subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
            insecure_skip_verify: insecure,
            alpn: Vec::new(),
            origin: "DestinationRule default/x spec.trafficPolicy.tls".into(),
            error: None,
        }
    }

    /// Runs the verifier on `leaf` for `name`.
    fn verifies(v: &Verifier, leaf: &CertificateDer<'_>, name: &str) -> bool {
        let name = ServerName::try_from(name.to_string()).expect("name");
        v.verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn which_names_the_upstream_certificate_must_carry() {
        let (ca, leaf) = ca_and_leaf(&["a.internal", "*.wild.internal"]);
        // Auto-SAN: valid for the SNI asked for, not for another.
        let auto = verifier(&settings(ca.clone(), None, &[], false), true).expect("cfg");
        assert!(verifies(&auto, &leaf, "a.internal"));
        assert!(!verifies(&auto, &leaf, "b.internal"));
        // `sni` without SANs: the chain only.
        let chain = verifier(&settings(ca.clone(), Some("x"), &[], false), false).expect("cfg");
        assert!(verifies(&chain, &leaf, "b.internal"));
        // SANs: exact, or one label under a wildcard SAN; the SNI is not what counts.
        let sans = verifier(
            &settings(ca.clone(), None, &["x.wild.internal"], false),
            true,
        )
        .expect("cfg");
        assert!(verifies(&sans, &leaf, "unrelated.internal"));
        let wrong =
            verifier(&settings(ca.clone(), None, &["b.internal"], false), true).expect("cfg");
        assert!(!verifies(&wrong, &leaf, "a.internal"));
        // Another CA's certificate fails the chain whatever the names.
        let (other_ca, _) = ca_and_leaf(&["a.internal"]);
        let untrusted = verifier(&settings(other_ca.clone(), None, &[], false), true).expect("cfg");
        assert!(!verifies(&untrusted, &leaf, "a.internal"));
        // insecureSkipVerify: anything.
        let any = verifier(&settings(other_ca, None, &[], true), true).expect("cfg");
        assert!(verifies(&any, &leaf, "whatever.internal"));
    }

    /// A CA, a leaf it signed for `name`, and a CRL of that CA revoking `revoked` (DERs),
    /// whose nextUpdate is `next_in` seconds from now.
    fn crl_case(next_in: i64, revoke_leaf: bool) -> (p::Pem, CertificateDer<'static>, p::Pem) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "crl unit CA");
        let ca = ca.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["a.internal".to_string()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("leaf");
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.der()).expect("leaf");
        let now = super::super::certs::now();
        let at =
            |t: i64| rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(t as u64);
        let this = (now - 60).min(now + next_in - 3600);
        let revoked_certs = if revoke_leaf {
            vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(parsed.raw_serial()),
                revocation_time: at(this),
                reason_code: None,
                invalidity_date: None,
            }]
        } else {
            Vec::new()
        };
        let crl = rcgen::CertificateRevocationListParams {
            this_update: at(this),
            next_update: at(now + next_in),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca, &ca_key)
        .expect("crl");
        let secret = |what: &str, data: String| p::Pem::Secret {
            origin: format!("Secret istio-system/ca key {what}"),
            data: data.into_bytes(),
        };
        (
            secret("ca.crt", ca.pem()),
            leaf.der().clone(),
            secret("ca.crl", crl.pem().expect("pem")),
        )
    }

    #[test]
    fn crls_refuse_revoked_upstreams_and_expired_lists() {
        for (next_in, revoke, ok) in [
            (86_400, false, true),
            (86_400, true, false),
            (-3600, false, false),
        ] {
            let (ca, leaf, crl) = crl_case(next_in, revoke);
            let mut t = settings(ca, Some("x"), &[], false);
            t.ca_crl = Some(crl);
            // Chain only (sni set), auto-SAN and SANs all go through the revocation check.
            for (auto, sans) in [
                (false, vec![]),
                (true, vec![]),
                (true, vec!["a.internal".to_string()]),
            ] {
                let mut t = t.clone();
                t.subject_alt_names = sans.clone();
                let v = verifier(&t, auto).expect("verifier");
                assert_eq!(
                    verifies(&v, &leaf, "a.internal"),
                    ok,
                    "next_in {next_in}, revoked {revoke}, auto {auto}, sans {sans:?}"
                );
            }
        }
        // A CRL that is not one is refused when the cluster is built, naming where it came from.
        let (ca, _, _) = crl_case(86_400, false);
        let mut t = settings(ca.clone(), None, &[], false);
        t.ca_crl = Some(ca);
        let e = verifier(&t, true).unwrap_err();
        assert!(e.contains("Secret istio-system/ca key ca.crt"), "{e}");
    }

    #[test]
    fn auto_sni_is_the_host_without_its_port() {
        let (ca, _) = ca_and_leaf(&["a.internal"]);
        let o = Origination::new(&settings(ca, None, &[], false), "c");
        let name = |h: Option<&str>| match o.sni_for(h) {
            ServerName::DnsName(d) => d.as_ref().to_string(),
            other => format!("{other:?}"),
        };
        assert!(o.auto_sni());
        assert_eq!(name(Some("Web.Example.com:8443")), "web.example.com");
        assert_eq!(name(Some("web.example.com")), "web.example.com");
        // No Host, or an address: the destination host.
        assert_eq!(name(None), "dest.internal");
        assert_eq!(name(Some("198.18.0.1:80")), "dest.internal");
        assert_eq!(name(Some("[::1]:80")), "dest.internal");
    }

    #[test]
    fn tls_errors_read_as_envoy_details() {
        let e = TlsError::new(
            "CERTIFICATE_VERIFY_FAILED",
            "invalid peer certificate: \"x\", {a}",
        );
        assert_eq!(
            e.reason,
            "TLS_error:|CERTIFICATE_VERIFY_FAILED:invalid_peer_certificate:_x___a_:TLS_error_end"
        );
        assert_eq!(
            connection_failure_details(e.reason),
            "upstream_reset_before_response_started{connection_failure,TLS_error:|CERTIFICATE_VERIFY_FAILED:invalid_peer_certificate:_x___a_:TLS_error_end}"
        );
    }
}
