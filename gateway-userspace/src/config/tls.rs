//! Downstream TLS of HTTPS Gateway servers (§2.1 `tls.*`, §3.7, §4 TLS notes): where the
//! certificate, key and client CA come from (file paths or a `kind: Secret` named by
//! `credentialName` in the agent's namespace), and the protocol versions. Pure: files are only
//! named here; `l7::tls` reads them when it builds the listener.

use std::path::{Path, PathBuf};

use super::compile::Compiler;
use super::http::HttpServer;
use super::model::*;
use crate::plan::http as p;

/// `TLSV1_2` -> 12. rustls speaks only TLS 1.2 and 1.3: older minimums become 1.2 (with a
/// warning), as Envoy's BoringSSL would accept them but no client worth serving needs them.
fn version(v: Option<&str>, default: u8) -> Result<u8, String> {
    match v.map(str::to_ascii_uppercase).as_deref() {
        None | Some("TLS_AUTO") => Ok(default),
        Some("TLSV1_0") | Some("TLSV1_1") => {
            Err("TLS 1.0 and 1.1 are not supported; using TLS 1.2".into())
        }
        Some("TLSV1_2") => Ok(12),
        Some("TLSV1_3") => Ok(13),
        Some(other) => Err(format!("unknown TLS version {other:?}; using the default")),
    }
}

impl<'a> Compiler<'a> {
    /// The TLS settings of a terminating HTTPS server, or None (with a warning) when its
    /// material cannot be found or uses what this gateway does not support.
    pub(crate) fn tls_settings(&mut self, srv: &HttpServer<'a>) -> Option<p::TlsSettings> {
        let t = srv.server.tls.as_ref()?;
        let at = format!("spec.servers[{}].tls", srv.index);
        let mode = match t.mode().as_str() {
            "SIMPLE" => p::TlsMode::Simple,
            "MUTUAL" => p::TlsMode::Mutual,
            "OPTIONAL_MUTUAL" => p::TlsMode::OptionalMutual,
            other => {
                self.warn(
                    srv.gw,
                    format!("{at}.mode"),
                    format!("TLS mode {other} is not supported by this gateway; server not served"),
                );
                return None;
            }
        };
        // Fail closed: a server whose client-certificate pinning we cannot enforce is not served.
        for (set, field) in [
            (!t.subject_alt_names.is_empty(), "subjectAltNames"),
            (
                !t.verify_certificate_spki.is_empty(),
                "verifyCertificateSpki",
            ),
            (
                !t.verify_certificate_hash.is_empty(),
                "verifyCertificateHash",
            ),
            (!t.credential_names.is_empty(), "credentialNames"),
            (!t.tls_certificates.is_empty(), "tlsCertificates"),
            (
                !t.ca_cert_credential_name.is_empty(),
                "caCertCredentialName",
            ),
            (!t.ca_crl.is_empty(), "caCrl"),
        ] {
            if set {
                self.warn(
                    srv.gw,
                    format!("{at}.{field}"),
                    format!("tls.{field} is not supported yet; server not served"),
                );
                return None;
            }
        }
        if !t.cipher_suites.is_empty() {
            self.warn(
                srv.gw,
                format!("{at}.cipherSuites"),
                "cipher suites are not configurable here; rustls' TLS 1.2 AEAD suites are used",
            );
        }
        let mut versions = [12u8, 13u8];
        for (i, (v, field)) in [
            (&t.min_protocol_version, "minProtocolVersion"),
            (&t.max_protocol_version, "maxProtocolVersion"),
        ]
        .into_iter()
        .enumerate()
        {
            match version(v.as_deref(), versions[i]) {
                Ok(n) => versions[i] = n,
                Err(msg) => self.warn(srv.gw, format!("{at}.{field}"), msg),
            }
        }
        if versions[0] > versions[1] {
            self.warn(
                srv.gw,
                format!("{at}.maxProtocolVersion"),
                "maxProtocolVersion is below minProtocolVersion; server not served",
            );
            return None;
        }
        let file = |path: &str, field: &str| p::Pem::File {
            path: PathBuf::from(path),
            origin: format!("{} {at}.{field}", srv.gw.id()),
        };
        let needs_ca = mode != p::TlsMode::Simple;
        let (certificate, private_key, ca) = if !t.credential_name.is_empty() {
            self.credential(srv, &at, &t.credential_name, needs_ca)?
        } else {
            let ca =
                (!t.ca_certificates.is_empty()).then(|| file(&t.ca_certificates, "caCertificates"));
            (
                file(&t.server_certificate, "serverCertificate"),
                file(&t.private_key, "privateKey"),
                ca,
            )
        };
        if needs_ca && ca.is_none() {
            self.warn(
                srv.gw,
                format!("{at}.caCertificates"),
                "MUTUAL TLS requires a client CA bundle; server not served",
            );
            return None;
        }
        Some(p::TlsSettings {
            mode,
            certificate,
            private_key,
            ca_certificates: if needs_ca { ca } else { None },
            min_version: versions[0],
            max_version: versions[1],
        })
    }

    /// Istio's SDS lookup for `credentialName`: a Secret in the gateway proxy's namespace with
    /// `tls.crt`/`tls.key`[/`ca.crt`] (or `cert`/`key`[/`cacert`]); the CA may also come from a
    /// Secret `<name>-cacert`.
    fn credential(
        &mut self,
        srv: &HttpServer<'a>,
        at: &str,
        name: &str,
        needs_ca: bool,
    ) -> Option<(p::Pem, p::Pem, Option<p::Pem>)> {
        let ns = self.input.namespace.clone();
        let find = |n: &str| {
            self.m
                .secrets
                .iter()
                .find(|s| s.name() == n && s.namespace() == ns)
        };
        let Some(secret) = find(name) else {
            self.warn(srv.gw, format!("{at}.credentialName"), format!("Secret {ns}/{name} not found (credentialName looks in the gateway's namespace {ns}); server not served"));
            return None;
        };
        let get = |s: &Secret, keys: &[&str]| -> Result<Option<p::Pem>, String> {
            for k in keys {
                if let Some(data) = s.value(k).map_err(|e| format!("{}: {e}", s.id()))? {
                    return Ok(Some(p::Pem::Secret {
                        origin: format!("{} key {k}", s.id()),
                        data,
                    }));
                }
            }
            Ok(None)
        };
        let ca_secret = find(&format!("{name}-cacert"));
        let got = (|| -> Result<_, String> {
            let cert = get(secret, &["tls.crt", "cert"])?
                .ok_or_else(|| format!("{} has no tls.crt (or cert)", secret.id()))?;
            let key = get(secret, &["tls.key", "key"])?
                .ok_or_else(|| format!("{} has no tls.key (or key)", secret.id()))?;
            let mut ca = get(secret, &["ca.crt", "cacert"])?;
            if needs_ca {
                if let Some(cs) = ca_secret {
                    ca = get(cs, &["ca.crt", "cacert"])?.or(ca);
                }
            }
            Ok((cert, key, ca))
        })();
        match got {
            Ok(x) => Some(x),
            Err(msg) => {
                self.warn(
                    srv.gw,
                    format!("{at}.credentialName"),
                    format!("{msg}; server not served"),
                );
                None
            }
        }
    }
}

/// Relative certificate paths are relative to the config directory (where `gateway run
/// --config` points), so a config tree with its certificates can be moved as a whole.
pub fn resolve_paths(plan: &mut crate::plan::Plan, config_dir: &Path) {
    let https = plan
        .http
        .listeners
        .iter_mut()
        .flat_map(|l| l.tls.iter_mut());
    let https = https.map(|c| &mut c.settings);
    let streams = plan
        .streams
        .listeners
        .iter_mut()
        .flat_map(|l| l.chains.iter_mut());
    let streams = streams.filter_map(|c| c.terminate.as_mut());
    for s in https.chain(streams) {
        for pem in [&mut s.certificate, &mut s.private_key]
            .into_iter()
            .chain(s.ca_certificates.as_mut())
        {
            if let p::Pem::File { path, .. } = pem {
                if path.is_relative() {
                    *path = config_dir.join(&*path);
                }
            }
        }
    }
}
