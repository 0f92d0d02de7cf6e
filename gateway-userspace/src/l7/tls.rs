//! HTTPS termination (§3.7): one rustls `ServerConfig` per TLS chain (HTTPS server), chosen by
//! the ClientHello's SNI before the handshake goes on, as Envoy's filter-chain match does.
//!
//! Certificate files are read here, when a plan is applied: a bad file rejects the whole
//! config (the last good one keeps serving) with an error naming the Gateway field and path.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
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

fn certs(pem: &p::Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let (data, what) = read_pem(pem)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: bad PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate found"));
    }
    Ok(certs)
}

fn key(pem: &p::Pem) -> Result<PrivateKeyDer<'static>, String> {
    let (data, what) = read_pem(pem)?;
    PrivateKeyDer::from_pem_slice(&data)
        .map_err(|e| format!("{what}: no usable PEM private key: {e}"))
}

pub(crate) fn server_config(s: &p::TlsSettings, origin: &str) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            // OPTIONAL_MUTUAL asks for a certificate; one that is sent must still verify.
            if mode == p::TlsMode::OptionalMutual {
                v = v.allow_unauthenticated();
            }
            let v = v
                .build()
                .map_err(|e| format!("{origin}: client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(v)
        }
        (_, None) => return Err(format!("{origin}: MUTUAL TLS requires a client CA bundle")),
    };
    let mut cfg = builder
        .with_single_cert(certs(&s.certificate)?, key(&s.private_key)?)
        .map_err(|e| format!("{origin}: certificate and private key: {e}"))?;
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
