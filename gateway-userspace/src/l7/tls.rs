//! HTTPS termination (§3.7): one rustls `ServerConfig` per TLS chain (HTTPS server), chosen by
//! the ClientHello's SNI before the handshake goes on, as Envoy's filter-chain match does.
//!
//! Certificate files are read here, when a plan is applied: a bad file (or CRL, or pin) rejects
//! the whole config (the last good one keeps serving) with an error naming the Gateway field and
//! path. Client certificates are verified as Envoy's `CertificateValidationContext` does: chain
//! and CRL (WebPKI), then SAN and SPKI/hash pins; several server certificates are chosen by the
//! client's signature schemes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureAlgorithm,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use super::passthrough;
use crate::plan::http as p;

/// A client that has not finished its handshake by then is disconnected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Chain {
    /// Lower-cased; empty: any SNI, and no SNI.
    names: Vec<String>,
    config: Arc<ServerConfig>,
}

/// The TLS side of one listener: its HTTPS chains (served by the HTTP proxy) and the chains
/// proxied as byte streams (passthrough, `TLS` servers), which share the port.
pub struct TlsListener {
    chains: Vec<Chain>,
    /// The HTTPS chains' match conditions, for the choice among both kinds.
    https_match: Vec<passthrough::Match>,
    streams: Option<passthrough::StreamChains>,
}

/// Where a connection on a listener with stream chains goes.
pub enum Route {
    /// The HTTPS chain at this index (handshake and HTTP by the proxy).
    Https(usize),
    /// The stream chain at this index.
    Stream(usize),
}

fn read_pem(pem: &p::Pem) -> Result<(Vec<u8>, String), String> {
    match pem {
        p::Pem::File { path, origin } => std::fs::read(path)
            .map(|d| (d, format!("{origin} ({})", path.display())))
            .map_err(|e| format!("{origin}: reading {}: {e}", path.display())),
        p::Pem::Secret { origin, data } => Ok((data.clone(), origin.clone())),
    }
}

pub(crate) fn certs(pem: &p::Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let (data, what) = read_pem(pem)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: bad PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate found"));
    }
    Ok(certs)
}

pub(crate) fn key(pem: &p::Pem) -> Result<PrivateKeyDer<'static>, String> {
    let (data, what) = read_pem(pem)?;
    PrivateKeyDer::from_pem_slice(&data)
        .map_err(|e| format!("{what}: no usable PEM private key: {e}"))
}

/// What a CRL past its `nextUpdate` does to the certificates it covers (`gateway run
/// --crl-expiration`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CrlExpiration {
    /// Envoy's behaviour: BoringSSL fails the verification with `CRL_HAS_EXPIRED`, so every
    /// certificate the CRL covers is refused, revoked or not, until a fresh CRL is loaded.
    #[default]
    Enforce,
    /// The expired CRL is still used: its revoked serials stay refused, the others pass.
    Ignore,
}

static CRL_EXPIRATION_IGNORED: AtomicBool = AtomicBool::new(false);

/// Sets the policy (before serving; it applies to the TLS configs built afterwards).
pub fn set_crl_expiration(e: CrlExpiration) {
    CRL_EXPIRATION_IGNORED.store(e == CrlExpiration::Ignore, Ordering::Relaxed);
}

pub fn crl_expiration() -> CrlExpiration {
    if CRL_EXPIRATION_IGNORED.load(Ordering::Relaxed) {
        CrlExpiration::Ignore
    } else {
        CrlExpiration::Enforce
    }
}

/// The CRLs of a `caCrl` file or `ca.crl` key, each checked to be an X.509 CRL.
pub(crate) fn read_crls(
    pem: &p::Pem,
) -> Result<(Vec<CertificateRevocationListDer<'static>>, String), String> {
    let (data, what) = read_pem(pem)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: bad PEM CRL: {e}"))?;
    if crls.is_empty() {
        return Err(format!("{what}: no PEM X509 CRL found"));
    }
    if let Some(i) = crls
        .iter()
        .position(|der| super::certs::parse_crl(der).is_none())
    {
        return Err(format!("{what}: CRL {i} is not a valid X.509 CRL"));
    }
    Ok((crls, what))
}

/// [`read_crls`] for a verifier: one already past its `nextUpdate` is logged, saying what it
/// does under the policy in force.
pub(crate) fn crls(pem: &p::Pem) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let (crls, what) = read_crls(pem)?;
    let now = super::certs::now();
    for (i, der) in crls.iter().enumerate() {
        let Some(c) = super::certs::parse_crl(der) else {
            continue;
        };
        if let Some(next) = c.next_update.filter(|n| *n < now) {
            let effect = match crl_expiration() {
                CrlExpiration::Enforce => {
                    "every certificate it covers is refused (--crl-expiration=enforce, as Envoy)"
                }
                CrlExpiration::Ignore => "still used (--crl-expiration=ignore)",
            };
            log::warn!(
                "{what}: CRL {i} of {} expired at {}: {effect}",
                c.issuer,
                super::certs::time(next)
            );
        }
    }
    Ok(crls)
}

/// The client-certificate pins of a MUTUAL server, parsed (Envoy's
/// `CertificateValidationContext`: `match_typed_subject_alt_names` exact,
/// `verify_certificate_spki`, `verify_certificate_hash`).
#[derive(Debug, Default)]
pub(crate) struct Pins {
    sans: Vec<String>,
    spki: Vec<[u8; 32]>,
    hash: Vec<[u8; 32]>,
}

/// `verifyCertificateSpki`: base64 of a SHA-256.
fn parse_spki(s: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    raw.try_into().ok()
}

/// `verifyCertificateHash`: hex of a SHA-256, any case, colons between bytes allowed.
fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

impl Pins {
    /// Errors name the Gateway field and the bad entry.
    pub(crate) fn parse(c: &p::ClientPins) -> Result<Pins, Vec<String>> {
        let mut errors = Vec::new();
        let mut parse =
            |list: &[String], field: &str, what: &str, f: fn(&str) -> Option<[u8; 32]>| {
                let mut out = Vec::new();
                for (i, v) in list.iter().enumerate() {
                    match f(v.trim()) {
                        Some(d) => out.push(d),
                        None => errors.push(format!(
                            "{}.{field}[{i}]: {v:?} is not a {what} SHA-256 digest",
                            c.origin
                        )),
                    }
                }
                out
            };
        let spki = parse(&c.spki, "verifyCertificateSpki", "base64", parse_spki);
        let hash = parse(&c.hash, "verifyCertificateHash", "hex", parse_hash);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Pins {
            sans: c.subject_alt_names.clone(),
            spki,
            hash,
        })
    }

    fn is_empty(&self) -> bool {
        self.sans.is_empty() && self.spki.is_empty() && self.hash.is_empty()
    }

    /// Whether a (chain-verified) leaf passes: one SAN (DNS, URI, email or IP) exactly equal
    /// to a listed name, and, if pins are listed, its SPKI or its hash pinned (either list).
    pub(crate) fn check(&self, der: &[u8]) -> Result<(), &'static str> {
        if !self.spki.is_empty() || !self.hash.is_empty() {
            let digest = |d: &[u8]| -> [u8; 32] {
                let h = ring::digest::digest(&ring::digest::SHA256, d);
                h.as_ref().try_into().expect("SHA-256 is 32 bytes")
            };
            let by_hash = self.hash.contains(&digest(der));
            let by_spki = !by_hash && !self.spki.is_empty() && {
                let (_, cert) =
                    x509_parser::parse_x509_certificate(der).map_err(|_| "unparsable")?;
                self.spki
                    .contains(&digest(cert.tbs_certificate.subject_pki.raw))
            };
            if !by_hash && !by_spki {
                return Err("certificate hash and SPKI are not pinned");
            }
        }
        if !self.sans.is_empty() {
            use x509_parser::extensions::GeneralName;
            let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| "unparsable")?;
            let san = cert.subject_alternative_name().ok().flatten();
            let names = san.iter().flat_map(|s| s.value.general_names.iter());
            // A DNS SAN may be a wildcard (Envoy's `dnsNameMatch`): `*.b.c` covers `a.b.c`.
            if names.clone().any(|n| match n {
                GeneralName::DNSName(pattern) => self.sans.iter().any(|s| dns_match(s, pattern)),
                _ => false,
            }) {
                return Ok(());
            }
            let found = names.filter_map(|n| match n {
                GeneralName::URI(v) | GeneralName::RFC822Name(v) => Some(v.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                    16 => {
                        Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string())
                    }
                    _ => None,
                },
                _ => None,
            });
            if !found.into_iter().any(|n| self.sans.contains(&n)) {
                return Err("no subject alternative name matches");
            }
        }
        Ok(())
    }
}

/// Envoy's `dnsNameMatch`: equal, or the certificate's `*.suffix` covers exactly one label.
fn dns_match(name: &str, pattern: &str) -> bool {
    if name == pattern {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => name
            .strip_suffix(suffix)
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        _ => false,
    }
}

/// WebPKI chain validation first, then the pins on the leaf; a mismatch fails the handshake
/// with a bad_certificate alert, as Envoy's does.
#[derive(Debug)]
struct PinnedVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    pins: Pins,
}

impl ClientCertVerifier for PinnedVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.pins.check(end_entity.as_ref()).map_err(|why| {
            log::debug!("client certificate refused: {why}");
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
        })?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Several certificates for one server (`credentialNames`, `tlsCertificates`): as Envoy picks
/// among them, an ECDSA one when the client can verify it, else the first the client's
/// signature schemes allow (RSA), else the first.
#[derive(Debug)]
struct ByKeyType(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for ByKeyType {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        let usable = |k: &&Arc<CertifiedKey>| k.key.choose_scheme(schemes).is_some();
        let ecdsa = |k: &&Arc<CertifiedKey>| k.key.algorithm() == SignatureAlgorithm::ECDSA;
        self.0
            .iter()
            .filter(usable)
            .find(ecdsa)
            .or_else(|| self.0.iter().find(usable))
            .or_else(|| self.0.first())
            .cloned()
    }
}

pub(crate) fn server_config(s: &p::TlsSettings, origin: &str) -> Result<ServerConfig, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !s.cipher_suites.is_empty() {
        // `cipherSuites` replaces the TLS 1.2 suites, in its order; TLS 1.3's stay (Envoy).
        let all = std::mem::take(&mut provider.cipher_suites);
        let (tls13, tls12): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|cs| matches!(cs, rustls::SupportedCipherSuite::Tls13(_)));
        provider.cipher_suites = tls13;
        for name in &s.cipher_suites {
            if let Some(cs) = tls12
                .iter()
                .find(|cs| cs.suite().as_str() == Some(name.as_str()))
            {
                provider.cipher_suites.push(*cs);
            }
        }
    }
    let provider = Arc::new(provider);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (s.min_version..=s.max_version).contains(v))
            .map(|(_, v)| v)
            .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("{origin}: TLS versions: {e}"))?;
    let builder = match (s.mode, &s.ca_certificates) {
        (p::TlsMode::Simple, _) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{origin}: client CA certificate: {e}"))?;
            }
            let mut v =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            // OPTIONAL_MUTUAL asks for a certificate; one that is sent must still verify.
            if mode == p::TlsMode::OptionalMutual {
                v = v.allow_unauthenticated();
            }
            if let Some(crl) = &s.ca_crl {
                // Envoy: with a CRL, every certificate of the chain needs a verdict from one;
                // rustls' default (whole chain, unknown status refused) is the same.
                v = v.with_crls(crls(crl)?);
                // rustls' default ignores nextUpdate; Envoy's BoringSSL does not.
                if crl_expiration() == CrlExpiration::Enforce {
                    v = v.enforce_revocation_expiration();
                }
            }
            let v = v
                .build()
                .map_err(|e| format!("{origin}: client certificate verifier: {e}"))?;
            let pins = Pins::parse(&s.pins).map_err(|e| e.join("; "))?;
            if pins.is_empty() {
                builder.with_client_cert_verifier(v)
            } else {
                builder.with_client_cert_verifier(Arc::new(PinnedVerifier { inner: v, pins }))
            }
        }
        (_, None) => return Err(format!("{origin}: MUTUAL TLS requires a client CA bundle")),
    };
    let mut keys = Vec::new();
    for c in &s.certificates {
        let k = CertifiedKey::from_der(certs(&c.certificate)?, key(&c.private_key)?, &provider)
            .map_err(|e| format!("{origin}: certificate and private key: {e}"))?;
        keys.push(Arc::new(k));
    }
    if keys.is_empty() {
        return Err(format!("{origin}: no server certificate"));
    }
    let mut cfg = builder.with_cert_resolver(Arc::new(ByKeyType(keys)));
    // Istio's HTTPS servers offer both (§3.7); hyper's auto codec serves either.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

impl TlsListener {
    /// Reads every chain's material; all errors at once.
    pub fn build(
        https: Option<&p::Listener>,
        streams: Option<&crate::plan::stream::StreamListener>,
        clusters: &std::collections::HashMap<String, Arc<super::cluster::Cluster>>,
    ) -> Result<TlsListener, Vec<String>> {
        let mut chains = Vec::new();
        let mut errors = Vec::new();
        for c in https.map(|l| l.tls.as_slice()).unwrap_or_default() {
            match server_config(&c.settings, &c.origin) {
                Ok(cfg) => chains.push(Chain {
                    names: c.server_names.clone(),
                    config: Arc::new(cfg),
                }),
                Err(e) => errors.push(e),
            }
        }
        let streams = match streams.map(|l| passthrough::StreamChains::build(l, clusters)) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                errors.extend(e);
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let https_match = chains
            .iter()
            .map(|c| passthrough::Match {
                names: c.names.clone(),
                subnets: Vec::new(),
                alpn: Vec::new(),
            })
            .collect();
        Ok(TlsListener {
            chains,
            https_match,
            streams,
        })
    }

    /// The stream chains, if this port has any.
    pub fn streams(&self) -> Option<&passthrough::StreamChains> {
        self.streams.as_ref()
    }

    /// On a port with stream chains: peeks the ClientHello (nothing is consumed) and picks a
    /// chain of either kind, as Envoy's filter-chain match does. None: no chain matches, the
    /// client sent no ClientHello in time, or it went away; the connection is to be closed.
    pub async fn route(&self, tcp: &TcpStream) -> Option<Route> {
        let streams = self.streams.as_ref()?;
        if streams.plain {
            return Some(Route::Stream(0));
        }
        let local = tcp.local_addr().ok()?;
        let Some(hello) = passthrough::peek_client_hello(tcp).await else {
            passthrough::count(local.port(), "", "no_client_hello");
            return None;
        };
        let dst = local.ip();
        let all: Vec<&passthrough::Match> = self
            .https_match
            .iter()
            .chain(streams.chains.iter().map(|c| &c.matcher))
            .collect();
        let i = passthrough::select(&all, dst, &hello);
        log::debug!("TLS chain for SNI {:?} to {dst}: {i:?}", hello.sni);
        let Some(i) = i else {
            passthrough::count(local.port(), "", "no_chain");
            return None;
        };
        Some(if i < self.chains.len() {
            Route::Https(i)
        } else {
            Route::Stream(i - self.chains.len())
        })
    }

    /// Envoy's filter-chain match on SNI: exact name, then the longest `*.suffix` (any number
    /// of labels before it), then a chain without names. None: the connection is closed.
    pub fn select(&self, sni: Option<&str>) -> Option<usize> {
        if let Some(sni) = sni {
            if let Some(i) = self
                .chains
                .iter()
                .position(|c| c.names.iter().any(|n| n == sni))
            {
                return Some(i);
            }
            let mut best: Option<(usize, usize)> = None;
            for (i, c) in self.chains.iter().enumerate() {
                for n in &c.names {
                    if let Some(suffix) = n.strip_prefix('*') {
                        if sni.len() > suffix.len()
                            && sni.ends_with(suffix)
                            && best.is_none_or(|(_, l)| suffix.len() > l)
                        {
                            best = Some((i, suffix.len()));
                        }
                    }
                }
            }
            if let Some((i, _)) = best {
                return Some(i);
            }
        }
        self.chains.iter().position(|c| c.names.is_empty())
    }

    /// Reads the ClientHello, picks the chain (unless `chosen` already did), completes the
    /// handshake: the stream and the chain index, or None (no chain for this SNI, handshake
    /// failure or timeout).
    pub async fn accept(
        &self,
        tcp: TcpStream,
        chosen: Option<usize>,
    ) -> Option<(TlsStream<TcpStream>, usize)> {
        let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
        let start = tokio::time::timeout(HANDSHAKE_TIMEOUT, hello)
            .await
            .ok()?
            .ok()?;
        let sni = start
            .client_hello()
            .server_name()
            .map(str::to_ascii_lowercase);
        let i = match chosen {
            Some(i) => i,
            None => self.select(sni.as_deref())?,
        };
        let stream = start.into_stream(self.chains[i].config.clone());
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream)
            .await
            .ok()?
            .map_err(|e| log::debug!("TLS handshake (SNI {sni:?}): {e}"))
            .ok()?;
        Some((stream, i))
    }
}

/// The `x-forwarded-client-cert` value Istio's gateway sets for a verified client certificate
/// (Envoy SANITIZE_SET with Hash, Subject, URI and DNS; notes §3.13):
/// `Hash=<hex sha256 of the DER>;Subject="<RFC 2253>";URI=<uri SAN>;DNS=<dns SAN>...`.
pub fn xfcc(der: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::from("Hash=");
    for b in digest.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    // Istio's gateway asks Envoy for Subject, Cert, URI and DNS (set_current_client_cert_details);
    // Envoy writes them in the order Hash, Cert, Subject, URI, DNS.
    let _ = write!(out, ";Cert=\"{}\"", url_encoded_pem(der));
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return out;
    };
    let subject = cert.subject().to_string();
    if !subject.is_empty() {
        let _ = write!(out, ";Subject=\"{}\"", subject.replace('"', "\\\""));
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        use x509_parser::extensions::GeneralName;
        for n in &san.value.general_names {
            if let GeneralName::URI(u) = n {
                let _ = write!(out, ";URI={u}");
            }
        }
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                let _ = write!(out, ";DNS={d}");
            }
        }
    }
    out
}

/// The certificate as PEM, percent-encoded except RFC 3986's unreserved characters (Envoy's
/// `urlEncodedPemEncodedPeerCertificate`).
fn url_encoded_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    use std::fmt::Write as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut out = String::with_capacity(pem.len() * 11 / 10);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{dns_match, p, xfcc, Pins};

    #[test]
    fn xfcc_carries_the_url_encoded_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["client.example.com".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client");
        let cert = params.self_signed(&key).unwrap();
        let v = xfcc(cert.der());
        let (hash, rest) = v.split_once(";Cert=\"").unwrap();
        assert!(hash.starts_with("Hash=") && hash.len() == 5 + 64, "{v}");
        let (enc, rest) = rest.split_once('"').unwrap();
        assert!(enc.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{enc}");
        assert!(enc.ends_with("-----END%20CERTIFICATE-----%0A"), "{enc}");
        // Decoding gives back the PEM of the same certificate.
        let mut pem = Vec::new();
        let b = enc.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                pem.push(
                    u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap(),
                );
                i += 3;
            } else {
                pem.push(b[i]);
                i += 1;
            }
        }
        assert_eq!(
            String::from_utf8(pem).unwrap().replace('\r', ""),
            cert.pem().replace('\r', "")
        );
        assert_eq!(rest, ";Subject=\"CN=client\";DNS=client.example.com");
    }

    fn pins(spki: &[&str], hash: &[&str]) -> p::ClientPins {
        p::ClientPins {
            subject_alt_names: Vec::new(),
            spki: spki.iter().map(|s| s.to_string()).collect(),
            hash: hash.iter().map(|s| s.to_string()).collect(),
            origin: "Gateway ns/gw spec.servers[2].tls".into(),
        }
    }

    #[test]
    fn pin_formats() {
        let hex = "AB:".repeat(31) + "CD";
        let ok = Pins::parse(&pins(
            &["IQnLhNPH/LTI1HLbPBtX3TxAQgdTLkjYQpp8WkxQseE="],
            &[&hex, &"ef".repeat(32)],
        ))
        .unwrap();
        assert_eq!(ok.hash[0][0], 0xab);
        assert_eq!(ok.hash[0][31], 0xcd);
        assert_eq!(ok.hash[1], [0xef; 32]);
        assert_eq!(ok.spki[0][0], 0x21);
        let errs = Pins::parse(&pins(&["c2hvcnQ="], &["AB:CD", &"zz".repeat(32)])).unwrap_err();
        assert_eq!(
            errs,
            [
                "Gateway ns/gw spec.servers[2].tls.verifyCertificateSpki[0]: \"c2hvcnQ=\" is not a base64 SHA-256 digest",
                "Gateway ns/gw spec.servers[2].tls.verifyCertificateHash[0]: \"AB:CD\" is not a hex SHA-256 digest",
                &format!("Gateway ns/gw spec.servers[2].tls.verifyCertificateHash[1]: \"{}\" is not a hex SHA-256 digest", "zz".repeat(32)),
            ]
        );
    }

    #[test]
    fn pins_check_the_leaf() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::URI("spiffe://td/ns/x".try_into().unwrap()));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("192.0.2.7".parse().unwrap()));
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let sans = |names: &[&str]| Pins {
            sans: names.iter().map(|s| s.to_string()).collect(),
            ..Pins::default()
        };
        for good in ["a.example.com", "spiffe://td/ns/x", "192.0.2.7"] {
            assert_eq!(sans(&["other", good]).check(&der), Ok(()), "{good}");
        }
        // Exact: no wildcard on our side, no case folding, no prefix.
        for bad in ["*.example.com", "A.example.com", "spiffe://td/ns"] {
            assert!(sans(&[bad]).check(&der).is_err(), "{bad}");
        }
        // A wildcard DNS SAN in the certificate covers one label (Envoy's dnsNameMatch).
        assert!(dns_match("a.w.example.com", "*.w.example.com"));
        assert!(!dns_match("a.b.w.example.com", "*.w.example.com"));
        assert!(!dns_match("w.example.com", "*.w.example.com"));
        assert!(!dns_match(".w.example.com", "*.w.example.com"));
        let digest = |d: &[u8]| -> [u8; 32] {
            ring::digest::digest(&ring::digest::SHA256, d)
                .as_ref()
                .try_into()
                .unwrap()
        };
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let spki = digest(cert.tbs_certificate.subject_pki.raw);
        let hash = digest(&der);
        let by = |spki: Vec<[u8; 32]>, hash: Vec<[u8; 32]>| Pins {
            spki,
            hash,
            ..Pins::default()
        };
        assert_eq!(by(vec![spki], vec![]).check(&der), Ok(()));
        assert_eq!(by(vec![], vec![hash]).check(&der), Ok(()));
        // Either list may match.
        assert_eq!(by(vec![[0; 32]], vec![hash]).check(&der), Ok(()));
        assert_eq!(by(vec![spki], vec![[0; 32]]).check(&der), Ok(()));
        assert!(by(vec![hash], vec![spki]).check(&der).is_err());
        // SAN and pin must both hold.
        let mut both = by(vec![spki], vec![]);
        both.sans = vec!["nope".into()];
        assert!(both.check(&der).is_err());
    }
}
