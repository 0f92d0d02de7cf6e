//! Istio `ValidateGateway`.

use std::collections::BTreeSet;

use super::{metadata, validate_port, Diag};
use crate::config::model::{Gateway, Server, ServerTls, NAT_MODE_ANNOTATION};
use crate::config::names::{
    is_dns1123_label, is_ip, validate_ip, validate_partial_wildcard, validate_wildcard_domain,
};

/// Server protocols the gateway accepts: Istio's list plus UDP (our extension; Istio parses it
/// too but has no UDP listener at the gateway).
pub(crate) const HTTP_PROTOCOLS: [&str; 4] = ["HTTP", "HTTP2", "GRPC", "GRPC-WEB"];
pub(crate) const TLS_PROTOCOLS: [&str; 2] = ["HTTPS", "TLS"];
pub(crate) const TCP_PROTOCOLS: [&str; 4] = ["TCP", "MONGO", "REDIS", "MYSQL"];

pub(crate) fn server_protocol_known(p: &str) -> bool {
    let p = p.to_ascii_uppercase();
    HTTP_PROTOCOLS.contains(&p.as_str())
        || TLS_PROTOCOLS.contains(&p.as_str())
        || TCP_PROTOCOLS.contains(&p.as_str())
        || p == "UDP"
}

const TLS_MODES: [&str; 6] = [
    "PASSTHROUGH",
    "SIMPLE",
    "MUTUAL",
    "AUTO_PASSTHROUGH",
    "ISTIO_MUTUAL",
    "OPTIONAL_MUTUAL",
];

const TLS_VERSIONS: [&str; 5] = ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];

pub(super) fn gateway(d: &mut Diag<'_>, g: &Gateway) {
    metadata(d, g);
    if !g.metadata.name.is_empty() && !is_dns1123_label(&g.metadata.name) {
        d.err(
            "metadata.name",
            format!("invalid gateway name: {:?}", g.metadata.name),
        );
    }
    if let Some(mode) = g.metadata.annotations.get(NAT_MODE_ANNOTATION) {
        if !matches!(mode.as_str(), "snat" | "preserve-source") {
            d.err(
                format!("metadata.annotations[{NAT_MODE_ANNOTATION}]"),
                format!("invalid NAT mode {mode:?}: expected snat or preserve-source"),
            );
        }
    }
    let servers = &g.spec.servers;
    if servers.is_empty() {
        d.err("spec.servers", "gateway must have at least one server");
    }
    let mut port_names = BTreeSet::new();
    for (i, s) in servers.iter().enumerate() {
        let at = format!("spec.servers[{i}]");
        server(d, &at, s);
        if let Some(port) = &s.port {
            if !port.name.is_empty() && !port_names.insert(port.name.clone()) {
                d.err(
                    format!("{at}.port.name"),
                    format!(
                        "port names in servers must be unique: duplicate name {}",
                        port.name
                    ),
                );
            }
            let proto = port.protocol.to_ascii_uppercase();
            if !HTTP_PROTOCOLS.contains(&proto.as_str())
                && s.tls.as_ref().is_some_and(|t| t.https_redirect)
            {
                d.warn(
                    format!("{at}.tls.httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }
}

fn server(d: &mut Diag<'_>, at: &str, s: &Server) {
    if s.hosts.is_empty() {
        d.err(
            format!("{at}.hosts"),
            "server config must contain at least one host",
        );
    }
    for (j, h) in s.hosts.iter().enumerate() {
        d.errs(&format!("{at}.hosts[{j}]"), gateway_host(h));
    }

    let mut port_ok = false;
    match &s.port {
        None => d.err(format!("{at}.port"), "port is required"),
        Some(p) => {
            let before = d.out.errors.len();
            if !server_protocol_known(&p.protocol) {
                d.err(
                    format!("{at}.port.protocol"),
                    format!(
                        "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, HTTPS, TLS (and UDP)",
                        p.protocol
                    ),
                );
            }
            if p.number > 0 || !s.bind.starts_with("unix://") {
                d.check(&format!("{at}.port.number"), validate_port(p.number));
            }
            if p.target_port != 0 {
                d.err(
                    format!("{at}.port.targetPort"),
                    "targetPort has no impact on Gateways",
                );
            }
            if p.name.is_empty() {
                d.err(format!("{at}.port.name"), "port name must be set");
            }
            port_ok = d.out.errors.len() == before;
        }
    }

    if let Some(path) = s.bind.strip_prefix("unix://") {
        if path.is_empty() {
            d.err(format!("{at}.bind"), "unix address must not be empty");
        } else if !path.starts_with('@') && (!path.starts_with('/') || path.ends_with('/')) {
            d.err(
                format!("{at}.bind"),
                format!("{path} is not an absolute path to a file"),
            );
        }
        if s.port.as_ref().is_some_and(|p| p.number != 0) {
            d.err(
                format!("{at}.port.number"),
                "port number must be 0 for unix domain socket",
            );
        }
    } else if !s.bind.is_empty() {
        d.check(&format!("{at}.bind"), validate_ip(&s.bind));
    }

    if let Some(tls) = &s.tls {
        tls_options(d, &format!("{at}.tls"), tls);
    }

    if port_ok {
        let proto = s
            .port
            .as_ref()
            .map(|p| p.protocol.to_ascii_uppercase())
            .unwrap_or_default();
        let is_tls = TLS_PROTOCOLS.contains(&proto.as_str());
        match &s.tls {
            None if is_tls => d.err(
                format!("{at}.tls"),
                "server must have TLS settings for HTTPS/TLS protocols",
            ),
            Some(tls) if !is_tls => {
                if HTTP_PROTOCOLS.contains(&proto.as_str()) {
                    // Only an httpsRedirect-style block (passthrough, no certs) is allowed.
                    if !tls.is_passthrough()
                        || !tls.ca_certificates.is_empty()
                        || !tls.private_key.is_empty()
                        || !tls.server_certificate.is_empty()
                    {
                        d.err(
                            format!("{at}.tls"),
                            "server cannot have TLS settings for plain text HTTP ports",
                        );
                    }
                } else {
                    d.err(
                        format!("{at}.tls"),
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                }
            }
            _ => {}
        }
    }
}

/// Istio `ValidateNamespaceSlashWildcardHostname` for gateways: `[ns/]host`.
fn gateway_host(h: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let host = match h.split_once('/') {
        None => h,
        Some((ns, host)) => {
            if ns.is_empty() || host.is_empty() {
                errs.push("config namespace and dnsName in host entry cannot be empty".to_string());
            }
            if ns != "*" && ns != "." && !is_dns1123_label(ns) {
                errs.push(format!("invalid namespace value {ns:?} in gateway"));
            }
            host
        }
    };
    if host != "*" && !host.contains('.') {
        errs.push("short names (non FQDN) are not allowed".to_string());
    }
    if let Err(e) = validate_wildcard_domain(host) {
        // A gateway host may also be an IP.
        if !is_ip(host) {
            errs.push(e);
        }
    }
    if let Err(e) = validate_partial_wildcard(host) {
        errs.push(e);
    }
    errs
}

fn tls_options(d: &mut Diag<'_>, at: &str, t: &ServerTls) {
    if let Some(mode) = &t.mode {
        if !TLS_MODES.contains(&mode.as_str()) {
            d.err(format!("{at}.mode"), format!("invalid TLS mode {mode:?}"));
        }
    }
    for (field, v) in [
        ("minProtocolVersion", &t.min_protocol_version),
        ("maxProtocolVersion", &t.max_protocol_version),
    ] {
        if let Some(v) = v {
            if !TLS_VERSIONS.contains(&v.as_str()) {
                d.err(
                    format!("{at}.{field}"),
                    format!("invalid TLS protocol version {v:?}"),
                );
            }
        }
    }
    if matches!(
        t.min_protocol_version.as_deref(),
        Some("TLSV1_0" | "TLSV1_1")
    ) && t.cipher_suites.is_empty()
    {
        d.warn(
            format!("{at}.minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        );
    }
    let mode = t.mode();
    if mode == "ISTIO_MUTUAL" {
        let checks = [
            (!t.server_certificate.is_empty(), "server certificate"),
            (!t.private_key.is_empty(), "private key"),
            (!t.ca_certificates.is_empty(), "CA bundle"),
            (!t.tls_certificates.is_empty(), "tlsCertificates"),
            (!t.credential_name.is_empty(), "credentialName"),
            (!t.credential_names.is_empty(), "credentialNames"),
        ];
        for (set, what) in checks {
            if set {
                d.err(
                    at,
                    format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                );
            }
        }
        return;
    }
    let has_certs = !t.ca_crl.is_empty()
        || !t.server_certificate.is_empty()
        || !t.private_key.is_empty()
        || !t.ca_certificates.is_empty()
        || !t.tls_certificates.is_empty()
        || !t.credential_name.is_empty()
        || !t.credential_names.is_empty();
    if t.is_passthrough() && has_certs {
        d.warn(
            at,
            format!("{mode} mode does not use certificates, they will be ignored"),
        );
    }
    let sources = [
        !t.server_certificate.is_empty() && !t.private_key.is_empty(),
        !t.credential_name.is_empty(),
        !t.credential_names.is_empty(),
        !t.tls_certificates.is_empty(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources > 1 {
        d.err(
            at,
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        );
    }
    let terminating = matches!(mode.as_str(), "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL");
    // Credentials from a Secret: no file fields required.
    let from_secret = !t.credential_name.is_empty() || !t.credential_names.is_empty();
    if terminating && from_secret {
        if t.credential_names.len() > 2 {
            d.warn(
                format!("{at}.credentialNames"),
                "at most 2 credential names (RSA and ECDSA) are supported",
            );
        }
        // Istio stops here: no file fields required (and caCrl is not checked).
        return;
    }
    if terminating {
        let prefix = if mode == "SIMPLE" {
            "SIMPLE TLS"
        } else {
            "MUTUAL TLS"
        };
        // Istio looks at caCertificates only: caCertCredentialName does not stand in for it.
        if mode != "SIMPLE" && t.ca_certificates.is_empty() {
            d.err(
                format!("{at}.caCertificates"),
                format!("{prefix} requires a client CA bundle"),
            );
        }
        if t.tls_certificates.len() > 2 {
            d.warn(
                format!("{at}.tlsCertificates"),
                format!("{prefix} can support up to 2 server certificates"),
            );
        }
        let certs: Vec<(String, &str, &str)> = if t.tls_certificates.is_empty() {
            vec![(at.to_string(), &t.server_certificate, &t.private_key)]
        } else {
            t.tls_certificates
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        format!("{at}.tlsCertificates[{i}]"),
                        c.server_certificate.as_str(),
                        c.private_key.as_str(),
                    )
                })
                .collect()
        };
        for (path, cert, key) in certs {
            if cert.is_empty() {
                d.err(
                    format!("{path}.serverCertificate"),
                    format!("{prefix} requires a server certificate"),
                );
            }
            if key.is_empty() {
                d.err(
                    format!("{path}.privateKey"),
                    format!("{prefix} requires a private key"),
                );
            }
        }
    }
    if !t.ca_crl.is_empty() {
        if !t.credential_name.is_empty() {
            d.err(
                format!("{at}.caCrl"),
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        }
        if mode == "SIMPLE" {
            d.err(
                format!("{at}.caCrl"),
                "CRL is not supported with SIMPLE TLS",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::errors_of;
    use crate::config::validate::tests::warnings_of;

    fn gw(servers: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: ns}}\nspec:\n  servers:\n{servers}")
    }

    /// Each case: (name, server YAML, valid, warns), through `validate`.
    #[track_caller]
    fn table(cases: &[(&str, &str, bool, bool)]) {
        for (name, server, valid, warns) in cases {
            let y = gw(server);
            let errs = errors_of(&y);
            assert_eq!(errs.is_empty(), *valid, "{name}: {errs:#?}");
            if *valid {
                let w = warnings_of(&y);
                assert_eq!(!w.is_empty(), *warns, "{name}: {w:#?}");
            }
        }
    }

    const HTTPS: &str = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [example.com]\n    tls: ";

    #[test]
    fn validate_tls_options() {
        let c = |tls: &str| format!("{HTTPS}{tls}\n");
        table(&[
            ("SIMPLE with files", &c("{mode: SIMPLE, serverCertificate: c, privateKey: k}"), true, false),
            ("SIMPLE with credentialName", &c("{mode: SIMPLE, credentialName: sds}"), true, false),
            ("SIMPLE without certificate", &c("{mode: SIMPLE, privateKey: k}"), false, false),
            ("SIMPLE without key", &c("{mode: SIMPLE, serverCertificate: c}"), false, false),
            ("SIMPLE with credentialName and files", &c("{mode: SIMPLE, credentialName: sds, serverCertificate: c, privateKey: k}"), false, false),
            ("MUTUAL with files and CA", &c("{mode: MUTUAL, serverCertificate: c, privateKey: k, caCertificates: ca}"), true, false),
            ("MUTUAL without CA", &c("{mode: MUTUAL, serverCertificate: c, privateKey: k}"), false, false),
            ("MUTUAL with caCertCredentialName but no caCertificates", &c("{mode: MUTUAL, serverCertificate: c, privateKey: k, caCertCredentialName: ca}"), false, false),
            ("MUTUAL with credentialName", &c("{mode: MUTUAL, credentialName: sds}"), true, false),
            ("OPTIONAL_MUTUAL without CA", &c("{mode: OPTIONAL_MUTUAL, serverCertificate: c, privateKey: k}"), false, false),
            ("ISTIO_MUTUAL with certificate", &c("{mode: ISTIO_MUTUAL, serverCertificate: c}"), false, false),
            ("ISTIO_MUTUAL with credentialName", &c("{mode: ISTIO_MUTUAL, credentialName: sds}"), false, false),
            ("PASSTHROUGH with certificates warns", "  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [example.com]\n    tls: {mode: PASSTHROUGH, serverCertificate: c}\n", true, true),
            ("CRL with SIMPLE", &c("{mode: SIMPLE, serverCertificate: c, privateKey: k, caCrl: crl}"), false, false),
            ("CRL with credentialName", &c("{mode: MUTUAL, credentialName: sds, caCrl: crl}"), true, false),
            ("TLSV1_0 without cipher suites warns", &c("{mode: SIMPLE, credentialName: sds, minProtocolVersion: TLSV1_0}"), true, true),
            ("unknown mode", &c("{mode: STRICT}"), false, false),
        ]);
    }

    #[test]
    fn validate_server_port() {
        let s = |port: &str| format!("  - port: {port}\n    hosts: [example.com]\n");
        table(&[
            (
                "http",
                &s("{number: 80, name: http, protocol: HTTP}"),
                true,
                false,
            ),
            (
                "lower-case protocol",
                &s("{number: 80, name: http, protocol: http}"),
                true,
                false,
            ),
            (
                "unknown protocol",
                &s("{number: 80, name: http, protocol: SMTP}"),
                false,
                false,
            ),
            (
                "port 0",
                &s("{number: 0, name: http, protocol: HTTP}"),
                false,
                false,
            ),
            (
                "port too large",
                &s("{number: 65536, name: http, protocol: HTTP}"),
                false,
                false,
            ),
            ("no name", &s("{number: 80, protocol: HTTP}"), false, false),
            (
                "targetPort",
                &s("{number: 80, name: http, protocol: HTTP, targetPort: 8080}"),
                false,
                false,
            ),
        ]);
    }

    #[test]
    fn validate_server() {
        table(&[
            ("no hosts", "  - port: {number: 80, name: http, protocol: HTTP}\n", false, false),
            ("namespace/host", "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [ns1/example.com, ./a.example.com, '*/b.example.com']\n", true, false),
            ("short name", "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [foo]\n", false, false),
            ("partial wildcard", "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*bar.example.com']\n", false, false),
            ("IP host", "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [192.0.2.1]\n", true, false),
            ("bad namespace", "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['~/example.com']\n", false, false),
            ("HTTPS without tls", "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [example.com]\n", false, false),
            ("HTTP with httpsRedirect", "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [example.com]\n    tls: {httpsRedirect: true}\n", true, false),
            ("HTTP with certificates", "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [example.com]\n    tls: {httpsRedirect: true, serverCertificate: c}\n", false, false),
            ("TCP with tls", "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [example.com]\n    tls: {httpsRedirect: true}\n", false, true),
            ("bind IP", "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [example.com]\n    bind: 192.0.2.1\n", true, false),
            ("bind not an IP", "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [example.com]\n    bind: localhost\n", false, false),
            ("duplicate port names", "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [example.com]\n  - port: {number: 81, name: http, protocol: HTTP}\n    hosts: [example.com]\n", false, false),
        ]);
    }
}
