//! Downstream TLS of HTTPS Gateway servers (§2.1 `tls.*`, §3.7, §4 TLS notes): where the
//! certificates, keys, client CA and CRL come from (file paths, or `kind: Secret`s named by
//! `credentialName(s)` / `caCertCredentialName` in the agent's namespace), the client-certificate
//! pins, and the protocol versions. Pure: files are only
//! named here; `l7::tls` reads them when it builds the listener.

use crate::config::model::Secret;
use std::path::{Path, PathBuf};

use super::http::HttpServer;
use super::Compiler;
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

/// A client CA bundle and the CRL that goes with it.
type ClientCa = (p::Pem, Option<p::Pem>);

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
        let needs_ca = mode != p::TlsMode::Simple;
        let pins = p::ClientPins {
            subject_alt_names: t.subject_alt_names.clone(),
            spki: t.verify_certificate_spki.clone(),
            hash: t.verify_certificate_hash.clone(),
            origin: format!("{} {at}", srv.gw.id()),
        };
        // Envoy checks these only on a client certificate it asked for (§2.1).
        let pins = if !needs_ca && !pins.is_empty() {
            self.warn(
                srv.gw,
                at.clone(),
                "subjectAltNames/verifyCertificate* only apply to MUTUAL and OPTIONAL_MUTUAL; ignored",
            );
            p::ClientPins::default()
        } else {
            pins
        };
        if t.insecure_skip_verify == Some(true) && needs_ca {
            // Stricter than asked: the client certificate is still verified.
            self.warn(
                srv.gw,
                format!("{at}.insecureSkipVerify"),
                "insecureSkipVerify is not implemented; client certificates are verified",
            );
        }
        let mut cipher_suites = Vec::new();
        for (i, name) in t.cipher_suites.iter().enumerate() {
            match cipher_suite(name) {
                Suite::Supported(iana) => {
                    if !cipher_suites.contains(&iana.to_string()) {
                        cipher_suites.push(iana.to_string());
                    }
                }
                Suite::Unsupported => self.warn(
                    srv.gw,
                    format!("{at}.cipherSuites[{i}]"),
                    format!("cipher suite {name} is not supported here (only ECDHE with AES-GCM or CHACHA20-POLY1305); ignored"),
                ),
                // Istio's validation warns and ignores these too.
                Suite::Invalid => self.warn(
                    srv.gw,
                    format!("{at}.cipherSuites[{i}]"),
                    format!("ignoring invalid cipher suite: {name}"),
                ),
            }
        }
        if !t.cipher_suites.is_empty() && cipher_suites.is_empty() {
            self.warn(
                srv.gw,
                format!("{at}.cipherSuites"),
                "none of the cipher suites is supported: TLS 1.2 clients cannot connect (TLS 1.3 is unaffected)",
            );
            // An empty list would mean the defaults: offer none instead.
            cipher_suites.push(NO_TLS12_SUITE.to_string());
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
        // Certificates, and the client CA (with its CRL) that comes with them.
        let (certificates, mut ca) = if !t.credential_name.is_empty() {
            let (cert, ca) = self.credential(srv, &at, "credentialName", &t.credential_name)?;
            (vec![cert], ca)
        } else if !t.credential_names.is_empty() {
            // Istio: the CA of a MUTUAL server comes from the first credential.
            let mut certs = Vec::new();
            let mut first_ca = None;
            for (i, name) in t.credential_names.iter().enumerate() {
                let field = format!("credentialNames[{i}]");
                let (cert, ca) = self.credential(srv, &at, &field, name)?;
                certs.push(cert);
                if i == 0 {
                    first_ca = ca;
                }
            }
            (certs, first_ca)
        } else if !t.tls_certificates.is_empty() {
            let certs = t
                .tls_certificates
                .iter()
                .enumerate()
                .map(|(i, c)| p::ServerCertificate {
                    certificate: file(
                        &c.server_certificate,
                        &format!("tlsCertificates[{i}].serverCertificate"),
                    ),
                    private_key: file(&c.private_key, &format!("tlsCertificates[{i}].privateKey")),
                })
                .collect();
            (certs, None)
        } else {
            let cert = p::ServerCertificate {
                certificate: file(&t.server_certificate, "serverCertificate"),
                private_key: file(&t.private_key, "privateKey"),
            };
            (vec![cert], None)
        };
        if !t.ca_certificates.is_empty() && ca.is_none() {
            ca = Some((file(&t.ca_certificates, "caCertificates"), None));
        }
        // caCertCredentialName takes precedence over any other CA source.
        if !t.ca_cert_credential_name.is_empty() && needs_ca {
            ca = Some(self.ca_credential(srv, &at, &t.ca_cert_credential_name)?);
        }
        let (ca_certificates, mut ca_crl) = match ca {
            Some((ca, crl)) if needs_ca => (Some(ca), crl),
            _ => (None, None),
        };
        let from_secret = !t.credential_name.is_empty() || !t.credential_names.is_empty();
        if !t.ca_crl.is_empty() && needs_ca {
            if from_secret {
                // istiod's SDS path never reads the file: the CRL comes with the credential.
                self.warn(
                    srv.gw,
                    format!("{at}.caCrl"),
                    "caCrl is ignored with credentialName(s); put ca.crl in the CA Secret",
                );
            } else {
                ca_crl = Some(file(&t.ca_crl, "caCrl"));
            }
        }
        if needs_ca && ca_certificates.is_none() {
            self.warn(
                srv.gw,
                format!("{at}.caCertificates"),
                "MUTUAL TLS requires a client CA bundle; server not served",
            );
            return None;
        }
        Some(p::TlsSettings {
            mode,
            certificates,
            ca_certificates,
            ca_crl,
            pins,
            min_version: versions[0],
            max_version: versions[1],
            cipher_suites,
        })
    }

    pub(super) fn secret(&self, name: &str) -> Option<&'a Secret> {
        let ns = &self.input.namespace;
        let secrets: &'a [Secret] = &self.m.secrets;
        secrets
            .iter()
            .find(|s| s.name() == name && s.namespace() == *ns)
    }

    fn not_found(&mut self, srv: &HttpServer<'a>, at: &str, field: &str, name: &str) {
        let ns = self.input.namespace.clone();
        self.warn(srv.gw, format!("{at}.{field}"), format!("Secret {ns}/{name} not found ({field} looks in the gateway's namespace {ns}); server not served"));
    }

    /// Istio's SDS lookup for `credentialName` (and each of `credentialNames`): a Secret in the
    /// gateway proxy's namespace with `tls.crt`/`tls.key`[/`ca.crt`[/`ca.crl`]] (or
    /// `cert`/`key`[/`cacert`[/`crl`]]); the CA may also come from a Secret `<name>-cacert`,
    /// which wins, as istiod asks SDS for `<name>-cacert` and the agent falls back to `<name>`.
    fn credential(
        &mut self,
        srv: &HttpServer<'a>,
        at: &str,
        field: &str,
        name: &str,
    ) -> Option<(p::ServerCertificate, Option<ClientCa>)> {
        let Some(secret) = self.secret(name) else {
            self.not_found(srv, at, field, name);
            return None;
        };
        let ca_secret = self.secret(&format!("{name}-cacert"));
        let got = (|| -> Result<_, String> {
            let certificate = secret_pem(secret, &["tls.crt", "cert"])?
                .ok_or_else(|| format!("{} has no tls.crt (or cert)", secret.id()))?;
            let private_key = secret_pem(secret, &["tls.key", "key"])?
                .ok_or_else(|| format!("{} has no tls.key (or key)", secret.id()))?;
            let mut ca = secret_ca(secret)?;
            if let Some(cs) = ca_secret {
                ca = secret_ca(cs)?.or(ca);
            }
            let cert = p::ServerCertificate {
                certificate,
                private_key,
            };
            Ok((cert, ca))
        })();
        match got {
            Ok(x) => Some(x),
            Err(msg) => {
                self.warn(
                    srv.gw,
                    format!("{at}.{field}"),
                    format!("{msg}; server not served"),
                );
                None
            }
        }
    }

    /// `caCertCredentialName`: a Secret in the gateway's namespace with `ca.crt` (or
    /// `cacert`) and optionally `ca.crl` (or `crl`).
    fn ca_credential(&mut self, srv: &HttpServer<'a>, at: &str, name: &str) -> Option<ClientCa> {
        const FIELD: &str = "caCertCredentialName";
        let Some(secret) = self.secret(name) else {
            self.not_found(srv, at, FIELD, name);
            return None;
        };
        let got = secret_ca(secret)
            .and_then(|ca| ca.ok_or_else(|| format!("{} has no ca.crt (or cacert)", secret.id())));
        match got {
            Ok(x) => Some(x),
            Err(msg) => {
                self.warn(
                    srv.gw,
                    format!("{at}.{FIELD}"),
                    format!("{msg}; server not served"),
                );
                None
            }
        }
    }
}

/// The first of `keys` present in the Secret.
pub(super) fn secret_pem(s: &Secret, keys: &[&str]) -> Result<Option<p::Pem>, String> {
    for k in keys {
        if let Some(data) = s.value(k).map_err(|e| format!("{}: {e}", s.id()))? {
            return Ok(Some(p::Pem::Secret {
                origin: format!("{} key {k}", s.id()),
                data,
            }));
        }
    }
    Ok(None)
}

/// A Secret's client CA and the CRL that goes with it.
pub(super) fn secret_ca(s: &Secret) -> Result<Option<ClientCa>, String> {
    let Some(ca) = secret_pem(s, &["ca.crt", "cacert"])? else {
        return Ok(None);
    };
    Ok(Some((ca, secret_pem(s, &["ca.crl", "crl"])?)))
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
        let certs = s
            .certificates
            .iter_mut()
            .flat_map(|c| [&mut c.certificate, &mut c.private_key]);
        for pem in certs
            .chain(s.ca_certificates.as_mut())
            .chain(s.ca_crl.as_mut())
        {
            if let p::Pem::File { path, .. } = pem {
                if path.is_relative() {
                    *path = config_dir.join(&*path);
                }
            }
        }
    }
    let upstream = plan
        .http
        .clusters
        .iter_mut()
        .chain(plan.streams.clusters.iter_mut())
        .filter_map(|c| c.tls.as_mut());
    for t in upstream {
        for pem in [
            &mut t.ca_certificates,
            &mut t.ca_crl,
            &mut t.client_certificate,
            &mut t.private_key,
        ]
        .into_iter()
        .flatten()
        {
            if let p::Pem::File { path, .. } = pem {
                if path.is_relative() {
                    *path = config_dir.join(&*path);
                }
            }
        }
    }
}

/// Every certificate, key, CA and CRL file the plan reads (resolved paths): the agent watches
/// them too, so that a rotated certificate outside the config directory is picked up.
pub fn file_paths(plan: &crate::plan::Plan) -> Vec<PathBuf> {
    let https = plan
        .http
        .listeners
        .iter()
        .flat_map(|l| l.tls.iter())
        .map(|c| &c.settings);
    let streams = plan
        .streams
        .listeners
        .iter()
        .flat_map(|l| l.chains.iter())
        .filter_map(|c| c.terminate.as_ref());
    let mut out = Vec::new();
    for s in https.chain(streams) {
        let certs = s
            .certificates
            .iter()
            .flat_map(|c| [&c.certificate, &c.private_key]);
        for pem in certs
            .chain(s.ca_certificates.as_ref())
            .chain(s.ca_crl.as_ref())
        {
            if let p::Pem::File { path, .. } = pem {
                out.push(path.clone());
            }
        }
    }
    let upstream = plan
        .http
        .clusters
        .iter()
        .chain(plan.streams.clusters.iter())
        .filter_map(|c| c.tls.as_ref());
    for t in upstream {
        for pem in [
            &t.ca_certificates,
            &t.ca_crl,
            &t.client_certificate,
            &t.private_key,
        ]
        .into_iter()
        .flatten()
        {
            if let p::Pem::File { path, .. } = pem {
                out.push(path.clone());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Stands for "no TLS 1.2 suite" in `TlsSettings::cipher_suites` (it matches no real suite).
pub const NO_TLS12_SUITE: &str = "NONE";

enum Suite {
    /// The IANA name of a TLS 1.2 suite rustls implements.
    Supported(&'static str),
    /// A name Istio accepts that rustls does not implement (CBC, RSA key exchange).
    Unsupported,
    /// Not a cipher suite name Istio knows.
    Invalid,
}

/// Envoy's (BoringSSL's) cipher suite names, as Istio's `cipherSuites` takes them.
fn cipher_suite(name: &str) -> Suite {
    let supported = [
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
    ];
    // Istio's security.ValidCipherSuites beyond those: valid, but not in rustls.
    let unsupported = [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "AES256-SHA",
        "DES-CBC3-SHA",
    ];
    if let Some((_, iana)) = supported.iter().find(|(n, _)| *n == name) {
        Suite::Supported(iana)
    } else if unsupported.contains(&name) {
        Suite::Unsupported
    } else {
        Suite::Invalid
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load::load_str;
    use crate::config::validate::validate;
    use crate::config::{compile, CompileInput, Warning};
    use crate::plan::http as p;
    use std::net::Ipv4Addr;

    fn b64(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// The TLS settings of the only HTTPS server of `tls` (None: not served), and warnings.
    fn settings(tls: &str, extra: &str) -> (Option<p::TlsSettings>, Vec<Warning>) {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [\"*\"]\n    tls: {{{tls}}}\n{extra}"
        );
        let m = load_str("t.yaml", &yaml).expect("loads");
        let (errs, _) = validate(&m);
        assert!(errs.is_empty(), "{errs:#?}");
        let input = CompileInput {
            vips: vec![Ipv4Addr::new(192, 0, 2, 1).into()],
            ..CompileInput::default()
        };
        let (plan, warnings) = compile(&m, &input);
        let s = plan
            .http
            .listeners
            .first()
            .and_then(|l| l.tls.first())
            .map(|c| c.settings.clone());
        (s, warnings)
    }

    fn secret(name: &str, keys: &[&str]) -> String {
        let mut s = format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ndata:\n");
        for k in keys {
            s += &format!("  {k}: {}\n", b64(&format!("{name}/{k}")));
        }
        s
    }

    fn origin(p: &p::Pem) -> &str {
        match p {
            p::Pem::File { origin, .. } | p::Pem::Secret { origin, .. } => origin,
        }
    }

    #[test]
    fn credential_names_and_separate_ca_secret() {
        let extra = secret("rsa", &["tls.crt", "tls.key", "ca.crt"])
            + &secret("ec", &["cert", "key"])
            + &secret("client-ca", &["ca.crt", "ca.crl"]);
        let (s, w) = settings(
            "mode: MUTUAL, credentialNames: [rsa, ec], caCertCredentialName: client-ca",
            &extra,
        );
        let s = s.unwrap_or_else(|| panic!("{w:#?}"));
        let got: Vec<_> = s
            .certificates
            .iter()
            .map(|c| (origin(&c.certificate), origin(&c.private_key)))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "Secret istio-system/rsa key tls.crt",
                    "Secret istio-system/rsa key tls.key"
                ),
                (
                    "Secret istio-system/ec key cert",
                    "Secret istio-system/ec key key"
                ),
            ]
        );
        // caCertCredentialName wins over the first credential's ca.crt.
        assert_eq!(
            origin(s.ca_certificates.as_ref().unwrap()),
            "Secret istio-system/client-ca key ca.crt"
        );
        assert_eq!(
            origin(s.ca_crl.as_ref().unwrap()),
            "Secret istio-system/client-ca key ca.crl"
        );
        // Without it, the CA of the first credential.
        let (s, _) = settings("mode: MUTUAL, credentialNames: [rsa, ec]", &extra);
        assert_eq!(
            origin(s.unwrap().ca_certificates.as_ref().unwrap()),
            "Secret istio-system/rsa key ca.crt"
        );
    }

    #[test]
    fn files_pins_and_crl() {
        let (s, w) = settings(
            "mode: OPTIONAL_MUTUAL, tlsCertificates: [{serverCertificate: a.crt, privateKey: a.key}, {serverCertificate: b.crt, privateKey: b.key}], caCertificates: ca.crt, caCrl: ca.crl, subjectAltNames: [x.example.com], verifyCertificateSpki: [abc], verifyCertificateHash: [\"AB:CD\"]",
            "",
        );
        let s = s.unwrap_or_else(|| panic!("{w:#?}"));
        assert_eq!(s.certificates.len(), 2);
        assert_eq!(
            origin(&s.certificates[1].private_key),
            "Gateway istio-system/gw spec.servers[0].tls.tlsCertificates[1].privateKey"
        );
        assert_eq!(
            origin(s.ca_crl.as_ref().unwrap()),
            "Gateway istio-system/gw spec.servers[0].tls.caCrl"
        );
        // Pins are carried as written; l7::tls parses them (a malformed one fails the apply).
        assert_eq!(s.pins.subject_alt_names, ["x.example.com"]);
        assert_eq!(s.pins.spki, ["abc"]);
        assert_eq!(s.pins.hash, ["AB:CD"]);
        assert_eq!(s.pins.origin, "Gateway istio-system/gw spec.servers[0].tls");
    }

    #[test]
    fn ca_crl_file_is_ignored_with_a_credential() {
        let extra = secret("srv", &["tls.crt", "tls.key", "ca.crt", "ca.crl"]);
        let (s, w) = settings(
            "mode: MUTUAL, credentialName: srv, caCrl: other.crl, insecureSkipVerify: true",
            &extra,
        );
        assert_eq!(
            origin(s.unwrap().ca_crl.as_ref().unwrap()),
            "Secret istio-system/srv key ca.crl"
        );
        for field in ["caCrl", "insecureSkipVerify"] {
            let f = format!("spec.servers[0].tls.{field}");
            assert!(w.iter().any(|w| w.field == f), "{field}: {w:#?}");
        }
    }

    #[test]
    fn pins_on_simple_are_ignored_with_a_warning() {
        let (s, w) = settings(
            "mode: SIMPLE, serverCertificate: a.crt, privateKey: a.key, subjectAltNames: [x]",
            "",
        );
        assert!(s.unwrap().pins.is_empty());
        assert!(
            w.iter()
                .any(|w| w.field == "spec.servers[0].tls"
                    && w.message.contains("only apply to MUTUAL")),
            "{w:#?}"
        );
    }

    #[test]
    fn missing_ca_secret_is_not_served_naming_the_field() {
        let extra = secret("srv", &["tls.crt", "tls.key"]);
        let (s, w) = settings(
            "mode: MUTUAL, credentialName: srv, caCertCredentialName: nope",
            &extra,
        );
        assert!(s.is_none());
        assert!(
            w.iter()
                .any(|w| w.field == "spec.servers[0].tls.caCertCredentialName"
                    && w.message.contains("Secret istio-system/nope not found")),
            "{w:#?}"
        );
        // A CA Secret without ca.crt.
        let extra = extra + &secret("empty", &["tls.crt"]);
        let (s, w) = settings(
            "mode: MUTUAL, credentialName: srv, caCertCredentialName: empty",
            &extra,
        );
        assert!(s.is_none());
        assert!(
            w.iter().any(|w| w.message.contains("has no ca.crt")),
            "{w:#?}"
        );
        // A file-based MUTUAL server with only caCertCredentialName is rejected by validation
        // (Istio requires caCertificates there): see validate::gateway validate_tls_options.
    }
}
