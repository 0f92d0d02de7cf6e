//! What Istio's admission webhook would reject (istio `pkg/config/validation`), for the fields
//! this gateway models, plus basic shape checks on the Kubernetes kinds. Every problem is
//! collected; nothing stops at the first. Messages reuse Istio's wording so that they can be
//! recognised and grepped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::model::*;
use super::names::*;

/// Checks everything; returns all errors and all warnings (the loader's warnings first).
pub fn validate(m: &Manifests) -> (Vec<ConfigError>, Vec<Warning>) {
    let (mut errors, warnings) = validate_objects(m);
    errors.extend(duplicate_errors(m));
    (errors, warnings)
}

/// The checks that look at one object at a time (what a validating webhook sees).
pub fn validate_objects(m: &Manifests) -> (Vec<ConfigError>, Vec<Warning>) {
    let mut d = Diags {
        errors: Vec::new(),
        warnings: m.warnings.clone(),
    };
    for r in &m.gateways {
        gateway(&mut d.on(r), r);
    }
    for r in &m.virtual_services {
        virtual_service(&mut d.on(r), r);
    }
    for r in &m.destination_rules {
        destination_rule(&mut d.on(r), r);
    }
    for r in &m.service_entries {
        service_entry(&mut d.on(r), r);
    }
    for r in &m.services {
        service(&mut d.on(r), r);
    }
    for r in &m.endpoint_slices {
        endpoint_slice(&mut d.on(r), r);
    }
    for r in &m.pods {
        pod(&mut d.on(r), r);
    }
    (d.errors, d.warnings)
}

/// Objects defined twice (same kind, namespace, name): the first one in file order is the
/// object, each later one is an error, as the API server would refuse to create it.
pub fn duplicate_errors(m: &Manifests) -> Vec<ConfigError> {
    let mut d = Diags {
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    duplicates(&mut d, m);
    d.errors
}

struct Diags {
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

impl Diags {
    fn on<S: Kind>(&mut self, r: &Resource<S>) -> Diag<'_> {
        Diag {
            out: self,
            file: r.source.file.clone(),
            resource: r.id(),
            doc: r.source.index,
        }
    }
}

/// Diagnostics about one resource.
struct Diag<'a> {
    out: &'a mut Diags,
    file: PathBuf,
    resource: String,
    doc: usize,
}

impl Diag<'_> {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.errors.push(ConfigError {
            file: self.file.clone(),
            resource: self.resource.clone(),
            field: field.into(),
            message: message.into(),
            doc: Some(self.doc),
        });
    }

    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.warnings.push(Warning {
            file: self.file.clone(),
            resource: self.resource.clone(),
            field: field.into(),
            message: message.into(),
        });
    }

    fn errs(&mut self, field: &str, messages: Vec<String>) {
        for m in messages {
            self.err(field, m);
        }
    }

    fn check(&mut self, field: &str, r: Result<(), String>) {
        if let Err(m) = r {
            self.err(field, m);
        }
    }
}

fn validate_port(n: i64) -> Result<(), String> {
    if (1..=65535).contains(&n) {
        Ok(())
    } else {
        Err(format!("port number {n} must be in the range 1..65535"))
    }
}

/// Name and namespace checks common to every kind.
fn metadata<S: Kind>(d: &mut Diag<'_>, r: &Resource<S>) {
    if r.metadata.name.is_empty() {
        d.err("metadata.name", "name is required");
    }
    if !is_dns1123_label(&r.metadata.namespace) {
        d.err(
            "metadata.namespace",
            format!("invalid namespace {:?}", r.metadata.namespace),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway

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

fn gateway(d: &mut Diag<'_>, g: &Gateway) {
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
        if mode != "SIMPLE" && t.ca_certificates.is_empty() && t.ca_cert_credential_name.is_empty()
        {
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

// ---------------------------------------------------------------------------------------------
// VirtualService

fn virtual_service(d: &mut Diag<'_>, vs: &VirtualService) {
    metadata(d, vs);
    let s = &vs.spec;
    if s.hosts.is_empty() {
        // A delegate VS (routes inserted by another VS's `delegate`).
        if !s.gateways.is_empty() {
            d.err(
                "spec.gateways",
                "delegate virtual service must have no gateways specified",
            );
        }
        if !s.tls.is_empty() {
            d.err(
                "spec.tls",
                "delegate virtual service must have no tls route specified",
            );
        }
        if !s.tcp.is_empty() {
            d.err(
                "spec.tcp",
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    for (k, g) in s.gateways.iter().enumerate() {
        gateway_name(d, &format!("spec.gateways[{k}]"), g);
    }
    let applies_to_gateway = !s.gateways.is_empty() && !s.gateways.iter().any(|g| g == "mesh");
    let applies_to_mesh = !applies_to_gateway;

    let mut all_hosts_valid = true;
    for (j, h) in s.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{j}]");
        match validate_wildcard_domain(h) {
            Err(e) => {
                if !is_ip(h) {
                    d.err(&at, e);
                    all_hosts_valid = false;
                }
            }
            Ok(()) if applies_to_mesh && h == "*" => {
                d.err(
                    &at,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_hosts_valid = false;
            }
            Ok(()) => {}
        }
    }
    if all_hosts_valid {
        for i in 0..s.hosts.len() {
            for j in i + 1..s.hosts.len() {
                if host_matches(&s.hosts[i], &s.hosts[j]) {
                    d.err(
                        format!("spec.hosts[{j}]"),
                        format!(
                            "duplicate hosts in virtual service: {} & {}",
                            s.hosts[i], s.hosts[j]
                        ),
                    );
                }
            }
        }
    }

    if s.http.is_empty() && s.tcp.is_empty() && s.tls.is_empty() {
        d.err(
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    let f = super::validate_http::validate_http(&s.http, s.hosts.is_empty());
    for (at, msg) in f.errors {
        d.err(at, msg);
    }
    for (at, msg) in f.warnings {
        d.warn(at, msg);
    }
    for (i, t) in s.tls.iter().enumerate() {
        let at = format!("spec.tls[{i}]");
        if t.matches.is_empty() {
            d.err(
                format!("{at}.match"),
                "TLS route must have at least one match condition",
            );
        }
        for (k, m) in t.matches.iter().enumerate() {
            let mat = format!("{at}.match[{k}]");
            if m.sni_hosts.is_empty() {
                d.err(
                    format!("{mat}.sniHosts"),
                    "TLS match must have at least one SNI host",
                );
            }
            for (n, sni) in m.sni_hosts.iter().enumerate() {
                sni_host(d, &format!("{mat}.sniHosts[{n}]"), sni, &s.hosts);
            }
            l4_match_common(
                d,
                &mat,
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
            );
        }
        if t.route.is_empty() {
            d.err(format!("{at}.route"), "TLS route is required");
        }
        route_destinations(d, &format!("{at}.route"), &t.route);
    }
    for (i, t) in s.tcp.iter().enumerate() {
        let at = format!("spec.tcp[{i}]");
        for (k, m) in t.matches.iter().enumerate() {
            l4_match_common(
                d,
                &format!("{at}.match[{k}]"),
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
            );
        }
        if t.route.is_empty() {
            d.err(format!("{at}.route"), "TCP route is required");
        }
        route_destinations(d, &format!("{at}.route"), &t.route);
    }
    d.errs(
        "spec.exportTo",
        export_to(&vs.metadata.namespace, &s.export_to, false),
    );
    unreachable_tcp_rules(d, &s.tcp);
}

/// Istio `validateGatewayNames`.
fn gateway_name(d: &mut Diag<'_>, at: &str, g: &str) {
    match g.split_once('/') {
        None => {
            if g.contains('.') {
                let parts: Vec<&str> = g.split('.').collect();
                d.warn(
                    at,
                    format!(
                        "using legacy gatewayName format {g:?}; prefer the <namespace>/<name> format: \"{}/{}\"",
                        parts[1], parts[0]
                    ),
                );
            }
            d.check(at, validate_fqdn(g));
        }
        Some((ns, name)) => {
            if ns.is_empty() || name.is_empty() {
                d.err(at, "config namespace and gateway name cannot be empty");
            }
            // `./name` is resolved by Istio before validation sees it.
            if ns != "." && !is_dns1123_label(ns) {
                d.err(at, format!("invalid value for namespace: {ns:?}"));
            }
            if !is_dns1123_label(name) {
                d.err(at, format!("invalid value for gateway name: {name:?}"));
            }
        }
    }
}

fn sni_host(d: &mut Diag<'_>, at: &str, sni: &str, hosts: &[String]) {
    if let Err(e) = validate_wildcard_domain(sni) {
        if is_ip(sni) {
            d.warn(
                at,
                format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"),
            );
        } else {
            d.err(at, e);
        }
        return;
    }
    if !hosts.iter().any(|h| host_subset_of(sni, h)) {
        d.err(
            at,
            format!(
                "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                hosts.join(", ")
            ),
        );
    }
}

fn l4_match_common(
    d: &mut Diag<'_>,
    at: &str,
    subnets: &[String],
    port: i64,
    source_labels: &Labels,
    gateways: &[String],
) {
    for (n, s) in subnets.iter().enumerate() {
        d.check(
            &format!("{at}.destinationSubnets[{n}]"),
            validate_ip_subnet(s),
        );
    }
    if port != 0 {
        d.check(&format!("{at}.port"), validate_port(port));
    }
    d.errs(
        &format!("{at}.sourceLabels"),
        validate_labels(source_labels),
    );
    for (n, g) in gateways.iter().enumerate() {
        gateway_name(d, &format!("{at}.gateways[{n}]"), g);
    }
}

/// Istio `validateRouteDestinations`.
fn route_destinations(d: &mut Diag<'_>, at: &str, routes: &[RouteDestination]) {
    let mut total = 0i64;
    for (k, r) in routes.iter().enumerate() {
        let rat = format!("{at}[{k}]");
        match &r.destination {
            None => d.err(format!("{rat}.destination"), "destination is required"),
            Some(dest) => {
                let host_at = format!("{rat}.destination.host");
                if dest.host == "*" {
                    d.err(&host_at, "invalid destination host *");
                } else {
                    d.check(&host_at, validate_wildcard_domain(&dest.host));
                }
                if !dest.subset.is_empty() && !is_dns1123_label(&dest.subset) {
                    d.err(
                        format!("{rat}.destination.subset"),
                        format!("subset name is invalid: {}", dest.subset),
                    );
                }
                if let Some(p) = &dest.port {
                    d.check(
                        &format!("{rat}.destination.port.number"),
                        validate_port(p.number),
                    );
                }
            }
        }
        if r.weight < 0 {
            d.err(format!("{rat}.weight"), format!("weight {} < 0", r.weight));
        }
        total = total.saturating_add(r.weight);
    }
    if routes.len() > 1 && total == 0 {
        d.err(at, "total destination weight = 0");
    }
}

/// Istio `analyzeUnreachableTCPRules` (warnings only).
fn unreachable_tcp_rules(d: &mut Diag<'_>, routes: &[TcpRoute]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut empty_match: Option<usize> = None;
    for (i, r) in routes.iter().enumerate() {
        if r.matches.is_empty() {
            if empty_match.is_some() {
                d.warn(
                    format!("spec.tcp[{i}]"),
                    format!("virtualService rule #{i} not used (only the last rule can have no matches)"),
                );
            }
            empty_match = Some(i);
            continue;
        }
        let mut dups = 0;
        for (k, m) in r.matches.iter().enumerate() {
            if empty_match.is_some() {
                d.warn(
                    format!("spec.tcp[{i}]"),
                    format!(
                        "virtualService rule #{i} not used (route without matches defined before)"
                    ),
                );
                continue;
            }
            let key = format!("{m:?}");
            if let Some(prev) = seen.get(&key) {
                d.warn(
                    format!("spec.tcp[{i}].match[{k}]"),
                    format!("virtualService rule #{i} match #{k} is not used (duplicate/overlapping match in rule #{prev})"),
                );
                dups += 1;
            } else {
                seen.insert(key, i);
            }
        }
        if dups == r.matches.len() {
            d.warn(
                format!("spec.tcp[{i}]"),
                format!("virtualService rule #{i} not used (all matches used by prior rules)"),
            );
        }
    }
}

/// Istio `validateExportTo`.
fn export_to(namespace: &str, export_to: &[String], is_service_entry: bool) -> Vec<String> {
    let mut errs = Vec::new();
    let mut set = BTreeSet::new();
    for e in export_to {
        let key = if e == "." { namespace } else { e.as_str() };
        if set.contains(key) {
            if key != e {
                errs.push(format!(
                    "duplicate entries in exportTo: . and current namespace {namespace}"
                ));
            } else {
                errs.push(format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        if is_service_entry && e == "~" {
            set.insert(key.to_string());
            continue;
        }
        match key {
            "*" | "." => {
                set.insert(key.to_string());
            }
            "~" => errs.push(
                "exportTo ~ (none) is not allowed for Istio configuration objects".to_string(),
            ),
            ns if is_dns1123_label(ns) => {
                set.insert(key.to_string());
            }
            _ => errs.push(
                "only .,*, or a valid DNS 1123 label is allowed as exportTo entry".to_string(),
            ),
        }
    }
    if set.contains("*") && export_to.len() > 1 {
        errs.push(
            "cannot have both public (*) and non-public exportTo values for a resource".to_string(),
        );
    }
    if set.contains("~") && export_to.len() > 1 {
        errs.push("cannot export service entry to no one (~) and someone".to_string());
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// DestinationRule

const SIMPLE_LB: [&str; 6] = [
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
];

fn destination_rule(d: &mut Diag<'_>, dr: &DestinationRule) {
    metadata(d, dr);
    let s = &dr.spec;
    d.check("spec.host", validate_wildcard_domain(&s.host));
    if let Some(tp) = &s.traffic_policy {
        traffic_policy(d, "spec.trafficPolicy", tp);
    }
    let mut names = BTreeSet::new();
    for (i, sub) in s.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if !names.insert(sub.name.clone()) {
            d.err(
                format!("{at}.name"),
                format!("duplicate subset names: {}", sub.name),
            );
        }
        if sub.name.is_empty() {
            d.err(format!("{at}.name"), "subset name cannot be empty");
        } else if !is_dns1123_label(&sub.name) {
            d.err(
                format!("{at}.name"),
                format!("subset name is invalid: {}", sub.name),
            );
        }
        d.errs(&format!("{at}.labels"), validate_labels(&sub.labels));
        if let Some(tp) = &sub.traffic_policy {
            traffic_policy(d, &format!("{at}.trafficPolicy"), tp);
        }
    }
    d.errs(
        "spec.exportTo",
        export_to(&dr.metadata.namespace, &s.export_to, false),
    );
}

fn traffic_policy(d: &mut Diag<'_>, at: &str, tp: &TrafficPolicy) {
    if tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_none()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        d.err(at, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        d.err(at, "tunnel and proxyProtocol must not be set together");
        return;
    }
    if let Some(lb) = &tp.load_balancer {
        load_balancer(d, &format!("{at}.loadBalancer"), lb);
    }
    for (i, p) in tp.port_level_settings.iter().flatten().enumerate() {
        let pat = format!("{at}.portLevelSettings[{i}]");
        if p.port.is_none() {
            d.err(
                format!("{pat}.port"),
                "portTrafficPolicy must have valid port",
            );
        }
        if p.load_balancer.is_none()
            && p.connection_pool.is_none()
            && p.outlier_detection.is_none()
            && p.tls.is_none()
        {
            d.err(&pat, "port traffic policy must have at least one field");
        } else if let Some(lb) = &p.load_balancer {
            load_balancer(d, &format!("{pat}.loadBalancer"), lb);
        }
    }
}

fn load_balancer(d: &mut Diag<'_>, at: &str, lb: &LoadBalancer) {
    if let Some(simple) = &lb.simple {
        if !SIMPLE_LB.contains(&simple.as_str()) {
            d.err(
                format!("{at}.simple"),
                format!("invalid load balancer {simple:?}"),
            );
        }
        if lb.consistent_hash.is_some() {
            // A protobuf oneof: Istio's parser refuses both.
            d.err(at, "only one of simple or consistentHash can be set");
        }
    }
    if let Some(ch) = &lb.consistent_hash {
        let cat = format!("{at}.consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if keys > 1 {
            d.err(
                &cat,
                "only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName can be set",
            );
        }
        if let Some(cookie) = &ch.http_cookie {
            let named = cookie
                .get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| !n.is_empty());
            if !named {
                d.err(
                    format!("{cat}.httpCookie.name"),
                    "name required for HttpCookie",
                );
            }
        }
        if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
            d.err(
                &cat,
                "only one of MinimumRingSize or Maglev/Ringhash can be specified",
            );
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            d.err(&cat, "only one of ringHash or maglev can be set");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ServiceEntry

/// Istio `protocol.Parse` (case-insensitive), for service ports.
fn service_protocol_known(p: &str) -> bool {
    matches!(
        p.to_ascii_uppercase().as_str(),
        "TCP"
            | "UDP"
            | "GRPC"
            | "GRPC-WEB"
            | "HTTP"
            | "HTTP_PROXY"
            | "HTTP2"
            | "HTTPS"
            | "TLS"
            | "MONGO"
            | "REDIS"
            | "MYSQL"
    )
}

fn service_entry(d: &mut Diag<'_>, se: &ServiceEntry) {
    metadata(d, se);
    let s = &se.spec;
    let resolution = s.resolution();
    if s.workload_selector.is_some() && s.endpoints.is_some() {
        d.err(
            "spec",
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }
    if s.hosts.is_empty() {
        d.err("spec.hosts", "service entry must have at least one host");
    }
    for (j, h) in s.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{j}]");
        if h == "*" {
            d.err(&at, "invalid host *");
        } else {
            d.check(&at, validate_wildcard_domain(h));
            if resolution != "DYNAMIC_DNS" {
                if let Err(e) = validate_partial_wildcard(h) {
                    d.warn(&at, e);
                }
            }
        }
    }
    let mut cidr = false;
    for (j, a) in s.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        d.check(&format!("spec.addresses[{j}]"), validate_ip_subnet(a));
    }
    if cidr && resolution != "NONE" && resolution != "STATIC" {
        d.err(
            "spec.addresses",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }

    let mut port_names = BTreeSet::new();
    let mut port_numbers = BTreeSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        if !port_names.insert(p.name.clone()) {
            d.err(
                format!("{at}.name"),
                format!("service entry port name {:?} already defined", p.name),
            );
        }
        if !port_numbers.insert(p.number) {
            d.err(
                format!("{at}.number"),
                format!("service entry port {} already defined", p.number),
            );
        }
        if p.target_port != 0 {
            d.check(&format!("{at}.targetPort"), validate_port(p.target_port));
        }
        if !is_dns1123_label(&p.name) {
            d.err(
                format!("{at}.name"),
                format!("invalid port name: {}", p.name),
            );
        }
        if !p.protocol.is_empty() && !service_protocol_known(&p.protocol) {
            d.err(
                format!("{at}.protocol"),
                format!("unsupported protocol: {}", p.protocol),
            );
        }
        d.check(&format!("{at}.number"), validate_port(p.number));
    }

    let endpoints = s.endpoints();
    match resolution.as_str() {
        "NONE" => {
            if !endpoints.is_empty() {
                d.err(
                    "spec.endpoints",
                    "no endpoints should be provided for resolution type none",
                );
            }
            d.warn(
                "spec.resolution",
                "resolution NONE forwards to the original destination, which is this gateway itself; the service has no endpoints here",
            );
        }
        "STATIC" => {
            for (i, e) in endpoints.iter().enumerate() {
                workload_entry(d, &format!("spec.endpoints[{i}]"), e, &port_names, false);
            }
        }
        "DNS" | "DNS_ROUND_ROBIN" => {
            if endpoints.is_empty() {
                if let Some(e) = s.hosts.iter().find_map(|h| validate_fqdn(h).err()) {
                    d.err(
                        "spec.hosts",
                        format!("hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode {resolution}, {e}"),
                    );
                }
            }
            if resolution == "DNS_ROUND_ROBIN" && endpoints.len() > 1 {
                d.err(
                    "spec.endpoints",
                    format!("there must only be 0 or 1 endpoint for resolution mode {resolution}"),
                );
            }
            for (i, e) in endpoints.iter().enumerate() {
                workload_entry(d, &format!("spec.endpoints[{i}]"), e, &port_names, true);
            }
            d.warn(
                "spec.resolution",
                format!("resolution {resolution}: this gateway resolves no DNS; the service has no endpoints"),
            );
        }
        "DYNAMIC_DNS" => {
            for (j, h) in s.hosts.iter().enumerate() {
                if !h.starts_with('*') {
                    d.err(
                        format!("spec.hosts[{j}]"),
                        format!("host must be wildcarded for resolution mode {resolution}"),
                    );
                }
            }
            if !s.addresses.is_empty() {
                d.err(
                    "spec.addresses",
                    format!("addresses cannot be set for resolution type {resolution}"),
                );
            }
            if !endpoints.is_empty() {
                d.err(
                    "spec.endpoints",
                    format!("endpoints cannot be set for resolution type {resolution}"),
                );
            }
            d.warn(
                "spec.resolution",
                format!("resolution {resolution}: this gateway resolves no DNS; the service has no endpoints"),
            );
        }
        other => d.err(
            "spec.resolution",
            format!("unsupported resolution type {other}"),
        ),
    }

    if resolution != "NONE" && s.hosts.len() > 1 {
        let opaque = s.ports.iter().any(|p| {
            let p = p.protocol.to_ascii_uppercase();
            let http = matches!(
                p.as_str(),
                "HTTP" | "HTTP_PROXY" | "HTTP2" | "GRPC" | "GRPC-WEB"
            );
            let tls = matches!(p.as_str(), "HTTPS" | "TLS");
            !http && !tls
        });
        if opaque {
            d.err(
                "spec.hosts",
                "multiple hosts provided with non-HTTP, non-TLS ports",
            );
        }
    }
    if let Some(loc) = &s.location {
        if loc != "MESH_EXTERNAL" && loc != "MESH_INTERNAL" {
            d.err("spec.location", format!("invalid location {loc:?}"));
        }
    }
    if s.workload_selector.is_some() {
        d.warn(
            "spec.workloadSelector",
            "workloadSelector is not supported by this gateway (no workload registry); the service has no endpoints",
        );
    }
    d.errs(
        "spec.exportTo",
        export_to(&se.metadata.namespace, &s.export_to, true),
    );
}

/// Istio `validateWorkloadEntry` as used by ServiceEntry endpoints.
fn workload_entry(
    d: &mut Diag<'_>,
    at: &str,
    e: &WorkloadEntry,
    service_ports: &BTreeSet<String>,
    allow_fqdn: bool,
) {
    let addr = &e.address;
    if addr.is_empty() {
        if e.network.is_empty() {
            d.err(format!("{at}.address"), "address is required");
            return;
        }
        d.warn(
            format!("{at}.address"),
            format!("address is unset with network {:?}", e.network),
        );
    }
    if let Some(path) = addr.strip_prefix("unix://") {
        if path.is_empty() {
            d.err(format!("{at}.address"), "unix address must not be empty");
        }
        if !e.ports.is_empty() {
            d.err(
                format!("{at}.ports"),
                format!("unix endpoint {addr} must not include ports"),
            );
        }
    } else if !addr.is_empty() && !is_ip(addr) {
        if !allow_fqdn {
            d.err(
                format!("{at}.address"),
                format!("endpoint address {addr:?} is not a valid IP address"),
            );
        } else if validate_fqdn(addr).is_err() {
            d.err(
                format!("{at}.address"),
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    for (name, port) in &e.ports {
        let pat = format!("{at}.ports.{name}");
        if !service_ports.contains(name) {
            d.err(
                &pat,
                format!("endpoint port {port} is not defined by the service entry"),
            );
        }
        if !is_dns1123_label(name) {
            d.err(&pat, format!("invalid port name: {name}"));
        }
        d.check(&pat, validate_port(*port));
    }
    d.errs(&format!("{at}.labels"), validate_labels(&e.labels));
    if e.weight < 0 || e.weight > i64::from(u32::MAX) {
        d.err(
            format!("{at}.weight"),
            format!("weight {} out of range", e.weight),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes kinds: basic shape only (the API server validated them in a real cluster).

fn k8s_protocol_ok(p: &Option<String>) -> bool {
    matches!(p.as_deref(), None | Some("TCP" | "UDP" | "SCTP"))
}

/// Kubernetes IANA_SVC_NAME: at most 15 characters, lower-case letters, digits and '-', at least
/// one letter, no leading, trailing or doubled '-'.
fn is_iana_svc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn service(d: &mut Diag<'_>, svc: &Service) {
    metadata(d, svc);
    if !svc.metadata.name.is_empty() && !is_dns1123_label(&svc.metadata.name) {
        d.err(
            "metadata.name",
            format!("invalid service name {:?}", svc.metadata.name),
        );
    }
    let ports = &svc.spec.ports;
    let mut names = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        d.check(&format!("{at}.port"), validate_port(p.port));
        if p.name.is_empty() {
            if ports.len() > 1 {
                d.err(
                    format!("{at}.name"),
                    "port name is required when a Service has more than one port",
                );
            }
        } else {
            if !is_dns1123_label(&p.name) {
                d.err(
                    format!("{at}.name"),
                    format!("invalid port name: {}", p.name),
                );
            }
            if !names.insert(p.name.clone()) {
                d.err(
                    format!("{at}.name"),
                    format!("duplicate port name {}", p.name),
                );
            }
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) => {
                d.check(&format!("{at}.targetPort"), validate_port(*n));
            }
            Some(IntOrString::String(s)) if !is_iana_svc_name(s) => d.err(
                format!("{at}.targetPort"),
                format!("invalid targetPort name {s:?}"),
            ),
            _ => {}
        }
        if !k8s_protocol_ok(&p.protocol) {
            d.err(
                format!("{at}.protocol"),
                format!(
                    "unsupported protocol {:?} (TCP, UDP or SCTP)",
                    p.protocol.as_deref().unwrap_or_default()
                ),
            );
        }
        let key = (p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into()));
        if !keys.insert(key) {
            d.err(
                format!("{at}.port"),
                format!("duplicate port {} for this protocol", p.port),
            );
        }
    }
}

fn endpoint_slice(d: &mut Diag<'_>, es: &EndpointSlice) {
    metadata(d, es);
    let s = &es.spec;
    match s.address_type.as_str() {
        "IPv4" => {}
        "IPv6" | "FQDN" => d.warn(
            "addressType",
            format!(
                "addressType {} is not supported (IPv4 only); slice ignored",
                s.address_type
            ),
        ),
        "" => d.err("addressType", "addressType is required"),
        other => d.err("addressType", format!("invalid addressType {other:?}")),
    }
    if es.service_name().is_none_or(str::is_empty) {
        d.warn(
            format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
            "no service-name label: the slice belongs to no Service; ignored",
        );
    }
    let mut names = BTreeSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        let at = format!("ports[{i}]");
        match p.port {
            Some(n) => d.check(&format!("{at}.port"), validate_port(n)),
            None => d.warn(
                format!("{at}.port"),
                "port without a number is not supported; ignored",
            ),
        }
        if !k8s_protocol_ok(&p.protocol) {
            d.err(
                format!("{at}.protocol"),
                format!(
                    "unsupported protocol {:?} (TCP, UDP or SCTP)",
                    p.protocol.as_deref().unwrap_or_default()
                ),
            );
        }
        if !names.insert(p.name.clone()) {
            d.err(
                format!("{at}.name"),
                format!("duplicate port name {:?}", p.name),
            );
        }
    }
    if s.address_type == "IPv4" {
        for (i, e) in s.endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}].addresses");
            if e.addresses.is_empty() {
                d.err(&at, "endpoint must have at least one address");
            }
            for (k, a) in e.addresses.iter().enumerate() {
                if a.parse::<std::net::Ipv4Addr>().is_err() {
                    d.err(
                        format!("{at}[{k}]"),
                        format!("{a} is not a valid IPv4 address"),
                    );
                }
            }
        }
    }
}

fn pod(d: &mut Diag<'_>, p: &Pod) {
    metadata(d, p);
    if let Some(ip) = &p.spec.pod_ip {
        d.check("status.podIP", validate_ip(ip));
    }
}

// ---------------------------------------------------------------------------------------------

/// The same kind/namespace/name twice: an error on the second, naming the first.
fn duplicates(d: &mut Diags, m: &Manifests) {
    fn check<S: Kind>(d: &mut Diags, list: &[Resource<S>]) {
        let mut seen: BTreeMap<String, &Source> = BTreeMap::new();
        for r in list {
            if r.metadata.name.is_empty() {
                continue; // already an error
            }
            match seen.get(&r.key()) {
                Some(first) => {
                    let msg = format!(
                        "duplicate {}: also defined in {} (document {})",
                        r.id(),
                        first.file.display(),
                        first.index
                    );
                    d.on(r).err("metadata.name", msg);
                }
                None => {
                    seen.insert(r.key(), &r.source);
                }
            }
        }
    }
    check(d, &m.gateways);
    check(d, &m.virtual_services);
    check(d, &m.destination_rules);
    check(d, &m.service_entries);
    check(d, &m.services);
    check(d, &m.endpoint_slices);
    check(d, &m.pods);
}

#[cfg(test)]
mod tests {
    use super::super::load::load_str;
    use super::*;

    fn errors_of(yaml: &str) -> Vec<ConfigError> {
        let m = load_str("t.yaml", yaml).expect("loads");
        validate(&m).0
    }

    fn warnings_of(yaml: &str) -> Vec<Warning> {
        let m = load_str("t.yaml", yaml).expect("loads");
        let (e, w) = validate(&m);
        assert!(e.is_empty(), "{e:?}");
        w
    }

    /// Asserts exactly one error, with this field and a message containing `msg`.
    #[track_caller]
    fn one_error(yaml: &str, resource: &str, field: &str, msg: &str) {
        let errs = errors_of(yaml);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let e = &errs[0];
        assert_eq!(e.file, PathBuf::from("t.yaml"));
        assert_eq!(e.resource, resource);
        assert_eq!(e.field, field);
        assert!(
            e.message.contains(msg),
            "{:?} does not contain {msg:?}",
            e.message
        );
    }

    #[track_caller]
    fn has_error(yaml: &str, field: &str, msg: &str) {
        let errs = errors_of(yaml);
        assert!(
            errs.iter()
                .any(|e| e.field == field && e.message.contains(msg)),
            "no {field}: {msg} in {errs:#?}"
        );
    }

    fn gw(servers: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
        )
    }

    const TCP_SERVER: &str =
        "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n";
    const GWR: &str = "Gateway istio-system/gw";

    #[test]
    fn valid_gateway() {
        assert!(errors_of(&gw(TCP_SERVER)).is_empty());
        let https = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"ns/a.example.com\", \"./b.example.com\", \"*/*.c.com\", \"10.0.0.1\"]\n    tls: {mode: SIMPLE, credentialName: cert}\n";
        assert!(errors_of(&gw(https)).is_empty());
    }

    #[test]
    fn gateway_name_and_servers() {
        let y = gw(TCP_SERVER).replace("name: gw,", "name: gw.x,");
        one_error(
            &y,
            "Gateway istio-system/gw.x",
            "metadata.name",
            "invalid gateway name",
        );
        let y = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec: {}\n";
        one_error(
            y,
            GWR,
            "spec.servers",
            "gateway must have at least one server",
        );
    }

    #[test]
    fn gateway_hosts() {
        let y = gw("  - port: {number: 1, name: tcp, protocol: TCP}\n    hosts: []\n");
        one_error(
            &y,
            GWR,
            "spec.servers[0].hosts",
            "server config must contain at least one host",
        );
        for (host, msg) in [
            ("foo", "short names (non FQDN) are not allowed"),
            ("*foo.com", "partial wildcard \"*foo.com\" not allowed"),
            (
                "a..com",
                "domain name \".com\" invalid (label \"\" invalid)",
            ),
            (
                "bad_ns/a.com",
                "invalid namespace value \"bad_ns\" in gateway",
            ),
        ] {
            let y = gw(&format!(
                "  - port: {{number: 1, name: tcp, protocol: TCP}}\n    hosts: [\"ok.com\", \"{host}\"]\n"
            ));
            has_error(&y, "spec.servers[0].hosts[1]", msg);
        }
    }

    #[test]
    fn gateway_ports() {
        let y = gw("  - hosts: [\"*\"]\n");
        one_error(&y, GWR, "spec.servers[0].port", "port is required");
        let y = gw(&TCP_SERVER.replace("protocol: TCP", "protocol: SCTP"));
        one_error(
            &y,
            GWR,
            "spec.servers[0].port.protocol",
            "invalid protocol \"SCTP\"",
        );
        let y = gw(&TCP_SERVER.replace("31400", "70000"));
        one_error(
            &y,
            GWR,
            "spec.servers[0].port.number",
            "port number 70000 must be in the range 1..65535",
        );
        let y = gw(&TCP_SERVER.replace("protocol: TCP", "protocol: TCP, targetPort: 8080"));
        one_error(
            &y,
            GWR,
            "spec.servers[0].port.targetPort",
            "targetPort has no impact on Gateways",
        );
        let y = gw(&TCP_SERVER.replace("name: tcp, ", ""));
        one_error(
            &y,
            GWR,
            "spec.servers[0].port.name",
            "port name must be set",
        );
        let y = gw(&format!(
            "{TCP_SERVER}{}",
            TCP_SERVER.replace("31400", "31401")
        ));
        one_error(
            &y,
            GWR,
            "spec.servers[1].port.name",
            "port names in servers must be unique: duplicate name tcp",
        );
        // Protocols are case-insensitive, and UDP is accepted.
        assert!(errors_of(&gw(&TCP_SERVER.replace("protocol: TCP", "protocol: udp"))).is_empty());
    }

    #[test]
    fn gateway_bind() {
        let y = gw(&format!("{TCP_SERVER}    bind: not-an-ip\n"));
        one_error(
            &y,
            GWR,
            "spec.servers[0].bind",
            "not-an-ip is not a valid IP",
        );
        assert!(errors_of(&gw(&format!("{TCP_SERVER}    bind: 10.0.0.1\n"))).is_empty());
    }

    #[test]
    fn gateway_tls_rules() {
        let https = |tls: &str| {
            gw(&format!(
                "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [\"*\"]\n{tls}"
            ))
        };
        one_error(
            &https(""),
            GWR,
            "spec.servers[0].tls",
            "server must have TLS settings for HTTPS/TLS protocols",
        );
        has_error(
            &https("    tls: {mode: SIMPLE}\n"),
            "spec.servers[0].tls.serverCertificate",
            "SIMPLE TLS requires a server certificate",
        );
        has_error(
            &https("    tls: {mode: SIMPLE}\n"),
            "spec.servers[0].tls.privateKey",
            "SIMPLE TLS requires a private key",
        );
        one_error(
            &https("    tls: {mode: MUTUAL, serverCertificate: c, privateKey: k}\n"),
            GWR,
            "spec.servers[0].tls.caCertificates",
            "MUTUAL TLS requires a client CA bundle",
        );
        one_error(
            &https("    tls: {mode: SIMPLE, credentialName: a, serverCertificate: c, privateKey: k}\n"),
            GWR,
            "spec.servers[0].tls",
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        );
        one_error(
            &https("    tls: {mode: ISTIO_MUTUAL, credentialName: a}\n"),
            GWR,
            "spec.servers[0].tls",
            "ISTIO_MUTUAL TLS cannot have associated credentialName",
        );
        one_error(
            &https("    tls: {mode: SIMPLE, serverCertificate: c, privateKey: k, caCrl: x}\n"),
            GWR,
            "spec.servers[0].tls.caCrl",
            "CRL is not supported with SIMPLE TLS",
        );
        // caCertCredentialName stands in for caCertificates.
        assert!(errors_of(&https(
            "    tls: {mode: MUTUAL, serverCertificate: c, privateKey: k, caCertCredentialName: ca}\n"
        ))
        .is_empty());
        // Secrets: no file fields needed, caCrl not checked (as Istio); a third credential warns.
        let w = warnings_of(&https(
            "    tls: {mode: MUTUAL, credentialNames: [a, b, c], caCrl: x}\n",
        ));
        assert!(
            w.iter()
                .any(|w| w.field == "spec.servers[0].tls.credentialNames"),
            "{w:#?}"
        );
        one_error(
            &https("    tls: {mode: BOGUS}\n"),
            GWR,
            "spec.servers[0].tls.mode",
            "invalid TLS mode",
        );
        // No mode = PASSTHROUGH: certificates only warn.
        let w = warnings_of(&https("    tls: {credentialName: x}\n"));
        assert!(w.iter().any(
            |w| w.message == "PASSTHROUGH mode does not use certificates, they will be ignored"
        ));

        let http = |tls: &str| {
            gw(&format!(
                "  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n{tls}"
            ))
        };
        assert!(errors_of(&http("    tls: {httpsRedirect: true}\n")).is_empty());
        one_error(
            &http("    tls: {mode: SIMPLE, credentialName: x}\n"),
            GWR,
            "spec.servers[0].tls",
            "server cannot have TLS settings for plain text HTTP ports",
        );
        one_error(
            &gw(&format!("{TCP_SERVER}    tls: {{httpsRedirect: true}}\n")),
            GWR,
            "spec.servers[0].tls",
            "server cannot have TLS settings for non HTTPS/TLS ports",
        );
    }

    #[test]
    fn gateway_nat_annotation() {
        let y = gw(TCP_SERVER).replace(
            "namespace: istio-system}",
            "namespace: istio-system, annotations: {gateway.dataplane/nat-mode: dsr}}",
        );
        one_error(
            &y,
            GWR,
            "metadata.annotations[gateway.dataplane/nat-mode]",
            "invalid NAT mode \"dsr\"",
        );
    }

    fn vs(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: echo, namespace: default}}\nspec:\n{spec}"
        )
    }

    const VSR: &str = "VirtualService default/echo";
    const TCP_OK: &str = "  tcp:\n  - route:\n    - destination: {host: echo}\n";

    #[test]
    fn valid_virtual_service() {
        let y = vs(&format!(
            "  hosts: [\"*\"]\n  gateways: [istio-system/gw]\n{TCP_OK}"
        ));
        assert!(errors_of(&y).is_empty(), "{:?}", errors_of(&y));
    }

    #[test]
    fn vs_routes_required() {
        let y = vs("  hosts: [a.com]\n  gateways: [gw]\n");
        one_error(
            &y,
            VSR,
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
        let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  http: [null]\n");
        one_error(&y, VSR, "spec.http[0]", "http route may not be null");
        let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  tcp:\n  - match: [{port: 1}]\n");
        one_error(&y, VSR, "spec.tcp[0].route", "TCP route is required");
    }

    #[test]
    fn vs_hosts() {
        let y = vs(&format!("  hosts: [\"*\"]\n{TCP_OK}"));
        one_error(
            &y,
            VSR,
            "spec.hosts[0]",
            "wildcard host * is not allowed for virtual services bound to the mesh gateway",
        );
        let y = vs(&format!(
            "  hosts: [\"*\"]\n  gateways: [gw, mesh]\n{TCP_OK}"
        ));
        one_error(&y, VSR, "spec.hosts[0]", "wildcard host * is not allowed");
        let y = vs(&format!("  hosts: [\"a..b\"]\n  gateways: [gw]\n{TCP_OK}"));
        one_error(&y, VSR, "spec.hosts[0]", "invalid (label \"\" invalid)");
        let y = vs(&format!(
            "  hosts: [\"*.a.com\", b.a.com]\n  gateways: [gw]\n{TCP_OK}"
        ));
        one_error(
            &y,
            VSR,
            "spec.hosts[1]",
            "duplicate hosts in virtual service: *.a.com & b.a.com",
        );
        // IPs are fine.
        let y = vs(&format!(
            "  hosts: [\"10.0.0.1\"]\n  gateways: [gw]\n{TCP_OK}"
        ));
        assert!(errors_of(&y).is_empty());
    }

    #[test]
    fn vs_gateway_refs() {
        let y = vs(&format!(
            "  hosts: [a.com]\n  gateways: [\"Bad_Ns/gw\"]\n{TCP_OK}"
        ));
        one_error(
            &y,
            VSR,
            "spec.gateways[0]",
            "invalid value for namespace: \"Bad_Ns\"",
        );
        let y = vs(&format!(
            "  hosts: [a.com]\n  gateways: [\"ns/gw.x\"]\n{TCP_OK}"
        ));
        one_error(
            &y,
            VSR,
            "spec.gateways[0]",
            "invalid value for gateway name: \"gw.x\"",
        );
        let y = vs(
            "  hosts: [a.com]\n  gateways: [gw]\n  tcp:\n  - match: [{gateways: [\"x/y/z\"]}]\n    route: [{destination: {host: a}}]\n",
        );
        one_error(
            &y,
            VSR,
            "spec.tcp[0].match[0].gateways[0]",
            "invalid value for gateway name",
        );
    }

    #[test]
    fn vs_destinations() {
        let route = |r: &str| {
            vs(&format!(
                "  hosts: [a.com]\n  gateways: [gw]\n  tcp:\n  - route:\n{r}"
            ))
        };
        one_error(
            &route("    - weight: 1\n"),
            VSR,
            "spec.tcp[0].route[0].destination",
            "destination is required",
        );
        one_error(
            &route("    - destination: {host: \"*\"}\n"),
            VSR,
            "spec.tcp[0].route[0].destination.host",
            "invalid destination host *",
        );
        one_error(
            &route("    - destination: {port: {number: 80}}\n"),
            VSR,
            "spec.tcp[0].route[0].destination.host",
            "empty domain name not allowed",
        );
        one_error(
            &route("    - destination: {host: a, subset: v1.0}\n"),
            VSR,
            "spec.tcp[0].route[0].destination.subset",
            "subset name is invalid: v1.0",
        );
        one_error(
            &route("    - destination: {host: a, port: {number: 0}}\n"),
            VSR,
            "spec.tcp[0].route[0].destination.port.number",
            "port number 0 must be in the range 1..65535",
        );
        let y = route("    - destination: {host: a}\n      weight: 100\n    - destination: {host: b}\n      weight: -1\n");
        one_error(&y, VSR, "spec.tcp[0].route[1].weight", "weight -1 < 0");
        let y = route("    - destination: {host: a}\n    - destination: {host: b}\n");
        one_error(&y, VSR, "spec.tcp[0].route", "total destination weight = 0");
        // A single destination may have weight 0.
        assert!(errors_of(&route("    - destination: {host: a}\n      weight: 0\n")).is_empty());
    }

    #[test]
    fn vs_match_fields() {
        let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  tcp:\n  - match:\n    - port: 70000\n      destinationSubnets: [\"10.0.0.0/40\", \"10.0.0.1\"]\n      sourceLabels: {\"bad key\": v}\n    route: [{destination: {host: a}}]\n");
        let errs = errors_of(&y);
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert_eq!(errs[0].field, "spec.tcp[0].match[0].destinationSubnets[0]");
        assert!(errs[0].message.contains("is not a valid CIDR block"));
        assert_eq!(errs[1].field, "spec.tcp[0].match[0].port");
        assert_eq!(errs[2].field, "spec.tcp[0].match[0].sourceLabels");
    }

    #[test]
    fn vs_tls_routes() {
        let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  tls:\n  - match: [{sniHosts: [b.com]}]\n    route: [{destination: {host: a}}]\n");
        one_error(
            &y,
            VSR,
            "spec.tls[0].match[0].sniHosts[0]",
            "SNI host \"b.com\" is not a compatible subset of any of the virtual service hosts",
        );
        let y = vs(
            "  hosts: [a.com]\n  gateways: [gw]\n  tls:\n  - route: [{destination: {host: a}}]\n",
        );
        one_error(
            &y,
            VSR,
            "spec.tls[0].match",
            "TLS route must have at least one match condition",
        );
        let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  tls:\n  - match: [{port: 443}]\n    route: [{destination: {host: a}}]\n");
        one_error(
            &y,
            VSR,
            "spec.tls[0].match[0].sniHosts",
            "TLS match must have at least one SNI host",
        );
        let y =
            vs("  hosts: [a.com]\n  gateways: [gw]\n  tls:\n  - match: [{sniHosts: [a.com]}]\n");
        one_error(&y, VSR, "spec.tls[0].route", "TLS route is required");
    }

    #[test]
    fn vs_export_to_and_delegate() {
        let y = vs(&format!(
            "  hosts: [a.com]\n  gateways: [gw]\n  exportTo: [\"*\", ns]\n{TCP_OK}"
        ));
        one_error(
            &y,
            VSR,
            "spec.exportTo",
            "cannot have both public (*) and non-public exportTo values",
        );
        let y = vs(&format!("  gateways: [gw]\n{TCP_OK}"));
        has_error(
            &y,
            "spec.gateways",
            "delegate virtual service must have no gateways specified",
        );
        has_error(
            &y,
            "spec.tcp",
            "delegate virtual service must have no tcp route specified",
        );
    }

    #[test]
    fn vs_unreachable_rule_warns() {
        let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  tcp:\n  - route: [{destination: {host: a}}]\n  - match: [{port: 1}]\n    route: [{destination: {host: b}}]\n");
        let w = warnings_of(&y);
        assert!(
            w.iter()
                .any(|w| w.field == "spec.tcp[1]" && w.message.contains("not used")),
            "{w:?}"
        );
    }

    fn dr(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: r, namespace: default}}\nspec:\n{spec}"
        )
    }
    const DRR: &str = "DestinationRule default/r";

    #[test]
    fn destination_rules() {
        assert!(errors_of(&dr("  host: echo\n  subsets: [{name: v1, labels: {version: v1}}]\n  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}, connectionPool: {tcp: {maxConnections: 1}}}\n")).is_empty());
        one_error(
            &dr("  subsets: []\n"),
            DRR,
            "spec.host",
            "empty domain name not allowed",
        );
        one_error(&dr("  host: a..b\n"), DRR, "spec.host", "invalid");
        one_error(
            &dr("  host: a\n  subsets: [{name: v1}, {name: v1}]\n"),
            DRR,
            "spec.subsets[1].name",
            "duplicate subset names: v1",
        );
        one_error(
            &dr("  host: a\n  subsets: [{name: V_1}]\n"),
            DRR,
            "spec.subsets[0].name",
            "subset name is invalid: V_1",
        );
        one_error(
            &dr("  host: a\n  subsets: [{labels: {a: b}}]\n"),
            DRR,
            "spec.subsets[0].name",
            "subset name cannot be empty",
        );
        one_error(
            &dr("  host: a\n  subsets: [{name: v1, labels: {version: \"-x\"}}]\n"),
            DRR,
            "spec.subsets[0].labels",
            "invalid tag value",
        );
        one_error(
            &dr("  host: a\n  trafficPolicy: {}\n"),
            DRR,
            "spec.trafficPolicy",
            "traffic policy must have at least one field",
        );
        one_error(
            &dr("  host: a\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n"),
            DRR,
            "spec.trafficPolicy.loadBalancer.simple",
            "invalid load balancer",
        );
        one_error(
            &dr("  host: a\n  trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 0s}}}}\n"),
            DRR,
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
            "name required for HttpCookie",
        );
        one_error(
            &dr("  host: a\n  trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}\n"),
            DRR,
            "spec.trafficPolicy.portLevelSettings[0].port",
            "portTrafficPolicy must have valid port",
        );
    }

    fn se(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext, namespace: default}}\nspec:\n{spec}"
        )
    }
    const SER: &str = "ServiceEntry default/ext";

    #[test]
    fn service_entries() {
        let ok = "  hosts: [a.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: tcp, protocol: TCP}]\n  endpoints: [{address: 10.0.0.1, ports: {tcp: 8080}, labels: {v: a}}]\n";
        assert!(errors_of(&se(ok)).is_empty());
        one_error(
            &se("  resolution: STATIC\n"),
            SER,
            "spec.hosts",
            "service entry must have at least one host",
        );
        one_error(
            &se("  hosts: [\"*\"]\n  resolution: STATIC\n"),
            SER,
            "spec.hosts[0]",
            "invalid host *",
        );
        one_error(
            &se("  hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: tcp}, {number: 81, name: tcp}]\n"),
            SER,
            "spec.ports[1].name",
            "service entry port name \"tcp\" already defined",
        );
        one_error(
            &se("  hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: a}, {number: 80, name: b}]\n"),
            SER,
            "spec.ports[1].number",
            "service entry port 80 already defined",
        );
        one_error(
            &se("  hosts: [a.com]\n  resolution: STATIC\n  endpoints: [{address: db.example.com}]\n"),
            SER,
            "spec.endpoints[0].address",
            "endpoint address \"db.example.com\" is not a valid IP address",
        );
        one_error(
            &se("  hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: tcp}]\n  endpoints: [{address: 10.0.0.1, ports: {http: 8080}}]\n"),
            SER,
            "spec.endpoints[0].ports.http",
            "endpoint port 8080 is not defined by the service entry",
        );
        one_error(
            &se("  hosts: [a.com]\n  resolution: MAGIC\n"),
            SER,
            "spec.resolution",
            "unsupported resolution type MAGIC",
        );
        one_error(
            &se("  hosts: [a.com]\n  resolution: NONE\n  endpoints: [{address: 10.0.0.1}]\n"),
            SER,
            "spec.endpoints",
            "no endpoints should be provided for resolution type none",
        );
        one_error(
            &se("  hosts: [a.com, b.com]\n  resolution: STATIC\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n"),
            SER,
            "spec.hosts",
            "multiple hosts provided with non-HTTP, non-TLS ports",
        );
    }

    #[test]
    fn service_entry_dns_warns() {
        let w = warnings_of(&se("  hosts: [a.example.com]\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n"));
        assert!(
            w.iter()
                .any(|w| w.field == "spec.resolution" && w.message.contains("resolves no DNS")),
            "{w:?}"
        );
        let w = warnings_of(&se(
            "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
        ));
        assert!(
            w.iter().any(|w| w.message.contains("resolution NONE")),
            "{w:?}"
        );
    }

    #[test]
    fn kubernetes_shapes() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: apps}\nspec:\n  ports:\n  - {name: a, port: 0}\n  - {port: 81, targetPort: Bad_Name, protocol: HTTP}\n";
        let errs = errors_of(svc);
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.ports[0].port",
                "spec.ports[1].name",
                "spec.ports[1].targetPort",
                "spec.ports[1].protocol"
            ],
            "{errs:#?}"
        );
        assert!(errs.iter().all(|e| e.resource == "Service apps/s"));

        let es = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-1, namespace: apps, labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\nendpoints: [{addresses: [\"10.0.0.300\"]}]\nports: [{name: a, port: 99999}]\n";
        let errs = errors_of(es);
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["ports[0].port", "endpoints[0].addresses[0]"],
            "{errs:#?}"
        );

        let v6 = es.replace("IPv4", "IPv6").replace("99999", "80");
        let w = warnings_of(&v6);
        assert!(w.iter().any(|w| w.field == "addressType"), "{w:?}");
    }

    #[test]
    fn duplicates_name_both_files() {
        let a = load_str("a.yaml", &gw(TCP_SERVER)).unwrap();
        let mut m = load_str("b.yaml", &gw(TCP_SERVER)).unwrap();
        m.extend(a);
        let (errs, _) = validate(&m);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].file, PathBuf::from("a.yaml"));
        assert_eq!(errs[0].resource, GWR);
        assert_eq!(errs[0].field, "metadata.name");
        assert!(
            errs[0]
                .message
                .contains("also defined in b.yaml (document 0)"),
            "{}",
            errs[0]
        );
        // Same name, other kind or namespace: fine.
        let other = gw(TCP_SERVER).replace("namespace: istio-system", "namespace: other");
        let mut m = load_str("b.yaml", &gw(TCP_SERVER)).unwrap();
        m.extend(load_str("c.yaml", &other).unwrap());
        assert!(validate(&m).0.is_empty());
    }

    #[test]
    fn all_errors_collected_and_displayed() {
        let y = format!(
            "{}---\n{}",
            gw(&TCP_SERVER.replace("31400", "0")),
            vs("  hosts: [a.com]\n  gateways: [gw]\n")
        );
        let errs = errors_of(&y);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert_eq!(
            errs[0].to_string(),
            "t.yaml: Gateway istio-system/gw: spec.servers[0].port.number: port number 0 must be in the range 1..65535"
        );
        assert_eq!(
            errs[1].to_string(),
            "t.yaml: VirtualService default/echo: spec: http, tcp or tls must be provided in virtual service"
        );
    }

    #[test]
    fn load_warnings_are_passed_on() {
        let y = gw(TCP_SERVER) + "    extra: 1\n";
        let w = warnings_of(&y);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].field, "spec.servers[0].extra");
    }
}
