//! Istio `ValidateTLS` for a destination's client TLS settings.

use serde_yaml::Value;

use crate::config::validate::value::{boolean, enumeration, list, object, string};
use crate::config::validate::Findings;

const TLS_MODES: [&str; 4] = ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];

/// Istio `ValidateTLS` (client TLS settings), plus the mode enum its parser enforces.
pub(super) fn validate_tls(f: &mut Findings, at: &str, ns: &str, tls: &Value) {
    if !object(f, at, tls) {
        return;
    }
    let mode = enumeration(f, at, tls, "mode", &TLS_MODES).unwrap_or("DISABLE");
    let cred = string(f, at, tls, "credentialName").unwrap_or_default();
    let client_cert = string(f, at, tls, "clientCertificate").unwrap_or_default();
    let key = string(f, at, tls, "privateKey").unwrap_or_default();
    let ca = string(f, at, tls, "caCertificates").unwrap_or_default();
    let crl = string(f, at, tls, "caCrl").unwrap_or_default();
    string(f, at, tls, "sni");
    let sans = list(f, at, tls, "subjectAltNames").is_some();
    let insecure = boolean(f, at, tls, "insecureSkipVerify").unwrap_or(false);
    if mode == "ISTIO_MUTUAL" {
        // Beyond Istio's webhook: istiod-issued workload certificates do not exist here.
        f.err(
            format!("{at}.mode"),
            "ISTIO_MUTUAL is not supported: this gateway has no mesh identity (no istiod-issued workload certificate); use SIMPLE or MUTUAL with certificates",
        );
    }

    if let Some(rest) = cred.strip_prefix("configmap://") {
        let cat = format!("{at}.credentialName");
        match rest.split_once('/') {
            None => f.err(&cat, format!("invalid configmap:// credentialName: invalid resource name {cred:?}. Expected namespace and name")),
            Some(("", _)) => f.err(&cat, format!("invalid configmap:// credentialName: invalid resource name {cred:?}. Expected namespace")),
            Some((_, name)) if name.split('/').next().unwrap_or_default().is_empty() => f.err(&cat, format!("invalid configmap:// credentialName: invalid resource name {cred:?}. Expected name")),
            Some((cns, _)) if cns != ns || ns.is_empty() => f.err(
                &cat,
                format!("invalid configmap:// credentialName: namespace must match the configuration namespace {ns:?}"),
            ),
            Some(_) => {}
        }
    }
    if insecure {
        if mode == "SIMPLE" && (!ca.is_empty() || !cred.is_empty() || sans) {
            f.err(at, "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true");
        }
        if mode == "MUTUAL" && (!ca.is_empty() || sans) {
            f.err(
                at,
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
            );
        }
    }
    if (mode == "SIMPLE" || mode == "MUTUAL") && !cred.is_empty() {
        if !client_cert.is_empty() || !ca.is_empty() || !key.is_empty() || !crl.is_empty() {
            f.err(at, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set");
        }
        return;
    }
    if mode == "MUTUAL" {
        if client_cert.is_empty() {
            f.err(
                format!("{at}.clientCertificate"),
                "client certificate required for mutual tls",
            );
        }
        if key.is_empty() {
            f.err(
                format!("{at}.privateKey"),
                "private key required for mutual tls",
            );
        }
    }
}
