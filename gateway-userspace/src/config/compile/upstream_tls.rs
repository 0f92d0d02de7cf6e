//! Upstream TLS origination from DestinationRule `trafficPolicy.tls` (§2.3 `tls.*`): which
//! `tls` block applies to a cluster (subset port-level > subset > port-level > top-level, as
//! Istio's `MergeTrafficPolicy`), and where its CA, client certificate and key come from (file
//! paths, or a `kind: Secret` named by `credentialName` in the agent's namespace, as for
//! downstream credentials). Pure: `l7::upstream_tls` reads the files when it builds the cluster.

use serde::Deserialize;
use serde_yaml::Value;

use super::tls::{secret_ca, secret_pem};
use super::Compiler;
use crate::config::model::{Kind, Resource, TrafficPolicy};
use crate::plan::http as p;

/// `ClientTLSSettings`, the fields this gateway uses.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientTls {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    client_certificate: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    ca_certificates: Option<String>,
    #[serde(default)]
    credential_name: Option<String>,
    #[serde(default)]
    subject_alt_names: Option<Vec<String>>,
    #[serde(default)]
    sni: Option<String>,
    #[serde(default)]
    insecure_skip_verify: Option<bool>,
    #[serde(default)]
    ca_crl: Option<String>,
}

/// The `tls` block that applies to `port` of a cluster, with the field it came from:
/// a subset's port-level entry, else the subset's own `tls`, else the top-level port-level
/// entry, else the top-level `tls`. A port-level entry without `tls` replaces the inherited one
/// by nothing (plain text), as port-level policies do not inherit (§3.21).
pub(super) fn effective_tls<'b>(
    top: Option<&'b TrafficPolicy>,
    subset: Option<(&str, &'b TrafficPolicy)>,
    port: u16,
) -> Option<(&'b Value, String)> {
    let mut out: Option<(&'b Value, String)> = None;
    if let Some(tp) = top {
        match tp.port_level(port) {
            Some(pl) => {
                out = pl.tls.as_ref().map(|v| {
                    (
                        v,
                        format!("spec.trafficPolicy.portLevelSettings[port {port}].tls"),
                    )
                })
            }
            None => {
                out = tp
                    .tls
                    .as_ref()
                    .map(|v| (v, "spec.trafficPolicy.tls".to_string()))
            }
        }
    }
    if let Some((name, stp)) = subset {
        if let Some(pl) = stp.port_level(port) {
            out = pl.tls.as_ref().map(|v| {
                (
                    v,
                    format!(
                        "spec.subsets[{name}].trafficPolicy.portLevelSettings[port {port}].tls"
                    ),
                )
            });
        } else if let Some(v) = &stp.tls {
            out = Some((v, format!("spec.subsets[{name}].trafficPolicy.tls")));
        }
    }
    out
}

/// ALPN offered upstream for a service port protocol: `h2` for HTTP2/GRPC, nothing else
/// (Istio sets ALPN only on HTTP/2 clusters; an HTTP/1.1 server needs none).
pub(super) fn alpn_for(protocol: &str) -> Vec<String> {
    match protocol.to_ascii_uppercase().as_str() {
        "HTTP2" | "GRPC" | "GRPC-WEB" => vec!["h2".into()],
        _ => Vec::new(),
    }
}

impl<'a> Compiler<'a> {
    /// The upstream TLS of a cluster for `host`, from its effective DestinationRule `tls`
    /// (`dr_id` + `field` name it), or None for DISABLE / no tls. Without `subjectAltNames`
    /// the ServiceEntry's (`entry_sans`) apply, as Istio's cluster builder does. A `credentialName` Secret that
    /// is missing or incomplete warns (on the route that uses the cluster) and gives settings
    /// with `error` set: every connection then fails, as Envoy's cluster without its secret.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn upstream_tls<S: Kind>(
        &mut self,
        user: &Resource<S>,
        user_field: &str,
        tls: &Value,
        dr_id: &str,
        field: &str,
        host: &str,
        protocol: &str,
        entry_sans: &[String],
    ) -> Option<p::UpstreamTls> {
        let t: ClientTls = serde_yaml::from_value(tls.clone()).unwrap_or_default();
        let mode = t.mode.as_deref().unwrap_or("DISABLE").to_ascii_uppercase();
        if mode != "SIMPLE" && mode != "MUTUAL" {
            // DISABLE; ISTIO_MUTUAL never gets here (rejected by validation).
            return None;
        }
        let origin = format!("{dr_id} {field}");
        let file = |v: &Option<String>, what: &str| {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .map(|path| p::Pem::File {
                    path: path.into(),
                    origin: format!("{origin}.{what}"),
                })
        };
        let mut out = p::UpstreamTls {
            mode: mode.clone(),
            sni: t.sni.clone().filter(|s| !s.is_empty()),
            destination: host.trim_start_matches("*.").to_string(),
            ca_certificates: file(&t.ca_certificates, "caCertificates"),
            ca_crl: file(&t.ca_crl, "caCrl"),
            client_certificate: None,
            private_key: None,
            subject_alt_names: t
                .subject_alt_names
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| entry_sans.to_vec()),
            insecure_skip_verify: t.insecure_skip_verify == Some(true),
            alpn: alpn_for(protocol),
            origin: origin.clone(),
            error: None,
        };
        if mode == "MUTUAL" {
            out.client_certificate = file(&t.client_certificate, "clientCertificate");
            out.private_key = file(&t.private_key, "privateKey");
        }
        if let Some(name) = t.credential_name.as_deref().filter(|s| !s.is_empty()) {
            let name = name.strip_prefix("kubernetes://").unwrap_or(name);
            match self.upstream_credential(name, mode == "MUTUAL") {
                Ok((cert, key, ca)) => {
                    out.client_certificate = cert;
                    out.private_key = key;
                    if let Some((ca, crl)) = ca {
                        out.ca_certificates = Some(ca);
                        out.ca_crl = crl;
                    }
                }
                Err(msg) => {
                    self.warn(
                        user,
                        user_field.to_string(),
                        format!("{origin}.credentialName: {msg}; connections to {host} fail"),
                    );
                    out.error = Some(msg);
                }
            }
        }
        Some(out)
    }

    /// A `credentialName` Secret in the agent's namespace: `tls.crt`/`tls.key` (MUTUAL) and
    /// `ca.crt` with its `ca.crl` (or `cert`/`key`/`cacert`/`crl`); the CA (and its CRL) may
    /// also come from `<name>-cacert`, as istiod asks SDS for it.
    #[allow(clippy::type_complexity)]
    fn upstream_credential(
        &self,
        name: &str,
        mutual: bool,
    ) -> Result<
        (
            Option<p::Pem>,
            Option<p::Pem>,
            Option<(p::Pem, Option<p::Pem>)>,
        ),
        String,
    > {
        let ns = &self.input.namespace;
        let Some(secret) = self.secret(name) else {
            return Err(format!(
                "Secret {ns}/{name} not found (credentialName looks in the gateway's namespace {ns})"
            ));
        };
        let mut ca = secret_ca(secret)?;
        if let Some(cs) = self.secret(&format!("{name}-cacert")) {
            ca = secret_ca(cs)?.or(ca);
        }
        if !mutual {
            return Ok((None, None, ca));
        }
        let cert = secret_pem(secret, &["tls.crt", "cert"])?
            .ok_or_else(|| format!("{} has no tls.crt (or cert)", secret.id()))?;
        let key = secret_pem(secret, &["tls.key", "key"])?
            .ok_or_else(|| format!("{} has no tls.key (or key)", secret.id()))?;
        Ok((Some(cert), Some(key), ca))
    }
}

#[cfg(test)]
mod tests {
    use super::{alpn_for, effective_tls, p, TrafficPolicy, Value};

    fn tp(s: &str) -> TrafficPolicy {
        serde_yaml::from_str(s).expect("policy")
    }

    fn mode(v: Option<(&Value, String)>) -> Option<(String, String)> {
        v.map(|(v, f)| (v["mode"].as_str().unwrap_or_default().to_string(), f))
    }

    #[test]
    fn precedence_subset_port_level_over_subset_over_port_level_over_top() {
        let top = tp("tls: {mode: SIMPLE}\nportLevelSettings:\n- port: {number: 8443}\n  tls: {mode: MUTUAL}\n- port: {number: 9000}\n  loadBalancer: {simple: RANDOM}\n");
        let sub = tp("tls: {mode: DISABLE}\nportLevelSettings:\n- port: {number: 7443}\n  tls: {mode: SIMPLE, sni: x}\n");
        let s = |m: &str, f: &str| Some((m.to_string(), f.to_string()));
        // Top level only.
        assert_eq!(
            mode(effective_tls(Some(&top), None, 80)),
            s("SIMPLE", "spec.trafficPolicy.tls")
        );
        // Port level replaces the top level.
        assert_eq!(
            mode(effective_tls(Some(&top), None, 8443)),
            s(
                "MUTUAL",
                "spec.trafficPolicy.portLevelSettings[port 8443].tls"
            )
        );
        // A port-level entry without tls: plain text (no inheritance).
        assert_eq!(mode(effective_tls(Some(&top), None, 9000)), None);
        // The subset's tls wins over both.
        assert_eq!(
            mode(effective_tls(Some(&top), Some(("v1", &sub)), 8443)),
            s("DISABLE", "spec.subsets[v1].trafficPolicy.tls")
        );
        // The subset's port level wins over everything.
        assert_eq!(
            mode(effective_tls(Some(&top), Some(("v1", &sub)), 7443)),
            s(
                "SIMPLE",
                "spec.subsets[v1].trafficPolicy.portLevelSettings[port 7443].tls"
            )
        );
        // A subset without tls inherits.
        let lb_only = tp("loadBalancer: {simple: RANDOM}");
        assert_eq!(
            mode(effective_tls(Some(&top), Some(("v2", &lb_only)), 8443)),
            s(
                "MUTUAL",
                "spec.trafficPolicy.portLevelSettings[port 8443].tls"
            )
        );
        assert_eq!(mode(effective_tls(None, None, 80)), None);
    }

    /// The whole pipeline on files: an HTTP route's cluster gets the DestinationRule's TLS
    /// (auto-SNI, the CA file resolved against the config directory, ALPN h2 on HTTP2, the
    /// ServiceEntry's SANs); a TCP server whose route needs TLS moves from the XDP path to the
    /// agent, as a plain stream listener.
    #[test]
    fn clusters_get_tls_and_tcp_servers_say_they_cannot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: up, namespace: default}
spec:
  hosts: [up.internal]
  resolution: STATIC
  ports: [{number: 443, name: http2, protocol: HTTP2}, {number: 9000, name: tcp, protocol: TCP}]
  endpoints: [{address: 198.18.1.2}]
  subjectAltNames: [spiffe://up.internal/sa]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: up, namespace: default}
spec:
  host: up.internal
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: ca.pem}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: up, namespace: default}
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - route: [{destination: {host: up.internal, port: {number: 443}}}]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: up.internal, port: {number: 9000}}}]
";
        std::fs::write(dir.path().join("all.yaml"), yaml).expect("write");
        let input = crate::config::CompileInput {
            vips: vec!["198.18.0.1".parse().expect("ip")],
            ..crate::config::CompileInput::default()
        };
        let (_, compiled, _) = crate::config::load_admit_compile(dir.path(), &input, None, false);
        let (plan, warnings) = compiled.expect("compiles");
        let c = plan
            .http
            .clusters
            .iter()
            .find(|c| c.name == "outbound|443||up.internal")
            .expect("cluster");
        let t = c.tls.as_ref().expect("tls");
        assert_eq!((t.mode.as_str(), t.sni.as_deref()), ("SIMPLE", None));
        assert_eq!(t.destination, "up.internal");
        assert_eq!(t.alpn, vec!["h2"]);
        // No DestinationRule SANs: the ServiceEntry's.
        assert_eq!(t.subject_alt_names, vec!["spiffe://up.internal/sa"]);
        assert!(
            matches!(&t.ca_certificates, Some(p::Pem::File { path, .. }) if *path == dir.path().join("ca.pem")),
            "{t:?}"
        );
        // The TCP server cannot stay on the XDP path: the agent serves it as a plain stream
        // whose cluster originates TLS (no SNI rule other than the DestinationRule's).
        assert!(plan.l4.is_empty(), "{:?}", plan.l4);
        assert!(
            plan.local.iter().any(|l| l.port == 31400),
            "{:?}",
            plan.local
        );
        let l = &plan.streams.listeners[0];
        assert!(
            l.plain && l.port == 31400 && l.chains[0].terminate.is_none(),
            "{l:?}"
        );
        assert_eq!(l.chains[0].routes[0].cluster, "outbound|9000||up.internal");
        let tcp = plan
            .streams
            .clusters
            .iter()
            .find(|c| c.name == "outbound|9000||up.internal")
            .expect("stream cluster");
        assert!(
            tcp.tls.as_ref().is_some_and(|t| t.alpn.is_empty()),
            "{tcp:?}"
        );
        assert!(warnings.is_empty(), "{warnings:#?}");
    }

    #[test]
    fn alpn_follows_the_port_protocol() {
        assert_eq!(alpn_for("GRPC"), vec!["h2"]);
        assert_eq!(alpn_for("http2"), vec!["h2"]);
        assert!(alpn_for("HTTP").is_empty());
        assert!(alpn_for("TCP").is_empty());
    }
}
