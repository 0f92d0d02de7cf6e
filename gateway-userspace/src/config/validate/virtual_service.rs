//! Istio `ValidateVirtualService` (istio `pkg/config/validation/validation.go`): hosts,
//! gateways, delegates, tcp and tls routes and the unreachable-rule analysis; the http routes
//! are in `http`. One function per Istio function, named after it; messages are Istio's.

use std::collections::BTreeMap;

use super::{export_to, metadata, validate_port, Diag, Findings};
use crate::config::model::{
    Labels, RouteDestination, TcpRoute, TlsMatch, TlsRoute, VirtualService, VirtualServiceSpec,
};
use crate::config::names::{
    host_matches, host_subset_of, is_dns1123_label, is_ip, validate_fqdn, validate_ip_subnet,
    validate_labels, validate_wildcard_domain,
};

mod http;

pub(super) fn virtual_service(d: &mut Diag<'_>, vs: &VirtualService) {
    metadata(d, vs);
    let mut f = Findings::default();
    validate_virtual_service(&mut f, &vs.metadata.namespace, &vs.spec);
    d.take(f);
}

/// Istio `isGateway`: true unless `mesh` is listed (so also for an empty list).
fn is_gateway(s: &VirtualServiceSpec) -> bool {
    !s.gateways.iter().any(|g| g == "mesh")
}

/// Istio `isSniHost`: some tls match names SNI hosts.
fn is_sni_host(s: &VirtualServiceSpec) -> bool {
    s.tls
        .iter()
        .any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty()))
}

/// Istio `ValidateVirtualService`.
pub(crate) fn validate_virtual_service(f: &mut Findings, namespace: &str, s: &VirtualServiceSpec) {
    if s.hosts.is_empty() {
        // A delegate: its routes are inserted by a root VirtualService's `delegate`.
        if !s.gateways.is_empty() {
            f.err(
                "spec.gateways",
                "delegate virtual service must have no gateways specified",
            );
        }
        if !s.tls.is_empty() {
            f.err(
                "spec.tls",
                "delegate virtual service must have no tls route specified",
            );
        }
        if !s.tcp.is_empty() {
            f.err(
                "spec.tcp",
                "delegate virtual service must have no tcp route specified",
            );
        }
    }

    let applies_to_gateway;
    let applies_to_mesh;
    if s.gateways.is_empty() {
        applies_to_gateway = false;
        applies_to_mesh = true;
    } else {
        validate_gateway_names(f, "spec.gateways", &s.gateways);
        applies_to_gateway = is_gateway(s);
        applies_to_mesh = !applies_to_gateway;
    }

    for (i, r) in s.http.iter().enumerate() {
        let Some(r) = r else { continue };
        for (k, m) in r.matches.iter().enumerate() {
            for (what, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
            ] {
                for key in map.keys().filter(|k| http::is_jwt_claim_route(k)) {
                    let at = format!("spec.http[{i}].match[{k}].{what}.{key}");
                    if applies_to_gateway {
                        // Extra: Istio matches claims that its jwt_authn filter verified.
                        f.warn(
                            &at,
                            format!("JWT claim based routing (key: {key}) needs a RequestAuthentication, which this gateway does not implement: no request carries the claim"),
                        );
                    } else {
                        f.err(
                            &at,
                            format!(
                                "JWT claim based routing (key: {key}) is only supported for gateway, found no gateways: [{}]",
                                s.gateways.join(" ")
                            ),
                        );
                    }
                }
            }
        }
    }

    let sni = is_sni_host(s);
    let mut all_hosts_valid = true;
    for (j, h) in s.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{j}]");
        let r = if applies_to_gateway {
            validate_wildcard_domain_for_virtual_service_bound_to_gateway(sni, h)
        } else {
            validate_wildcard_domain(h)
        };
        match r {
            Err(e) => {
                if !is_ip(h) {
                    f.err(&at, e);
                    all_hosts_valid = false;
                }
            }
            Ok(()) if applies_to_mesh && h == "*" => {
                f.err(
                    &at,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_hosts_valid = false;
            }
            Ok(()) => {}
        }
    }
    // Duplicates are literal ones and overlapping wildcards (`*.foo.com` and `*.com`).
    if all_hosts_valid {
        for i in 0..s.hosts.len() {
            for j in i + 1..s.hosts.len() {
                if host_matches(&s.hosts[i], &s.hosts[j]) {
                    f.err(
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
        f.err(
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    for (i, r) in s.http.iter().enumerate() {
        let at = format!("spec.http[{i}]");
        match r {
            None => f.err(&at, "http route may not be null"),
            Some(r) => http::validate_http_route(f, &at, r, s.hosts.is_empty()),
        }
    }
    for (i, t) in s.tls.iter().enumerate() {
        validate_tls_route(f, &format!("spec.tls[{i}]"), t, s);
    }
    for (i, t) in s.tcp.iter().enumerate() {
        validate_tcp_route(f, &format!("spec.tcp[{i}]"), t);
    }
    f.errs(
        "spec.exportTo",
        export_to(namespace, &s.export_to, false, false),
    );

    http::analyze_unreachable_http_rules(f, &s.http);
    analyze_unreachable_l4_rules(f, "tcp", &s.tcp, |r| &r.matches);
    analyze_unreachable_l4_rules(f, "tls", &s.tls, |r| &r.matches);
}

/// Istio `ValidateWildcardDomainForVirtualServiceBoundToGateway`: with SNI hosts, the
/// `outbound_.<PORT>_._.<HOSTNAME>` names of AUTO_PASSTHROUGH are hosts too.
pub(crate) fn validate_wildcard_domain_for_virtual_service_bound_to_gateway(
    sni: bool,
    domain: &str,
) -> Result<(), String> {
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if sni && domain.starts_with("outbound_") {
        const FORMAT: &str = "outbound_.<PORT>_._.<HOSTNAME>";
        let (direction, port, hostname) = parse_auto_generated_sni_domain(domain)?;
        if direction != "outbound" {
            return Err(format!(
                "domain name {domain:?} invalid (label {direction:?} invalid)"
            ));
        }
        if !port.bytes().any(|b| b.is_ascii_digit()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {port:?} invalid). should follow {FORMAT} format"
            ));
        }
        if !hostname.bytes().any(|b| b.is_ascii_alphabetic()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {hostname:?} invalid). should follow {FORMAT} format"
            ));
        }
        return Ok(());
    }
    validate_wildcard_domain(domain)
}

/// Istio `parseAutoGeneratedSNIDomain`: (direction, port, hostname).
fn parse_auto_generated_sni_domain(domain: &str) -> Result<(&str, &str, &str), String> {
    let parts: Vec<&str> = domain.split('_').collect();
    if parts.len() < 4 {
        return Err(format!(
            "domain name {domain} invalid, should follow 'outbound_.<PORT>_._.<HOSTNAME>' format"
        ));
    }
    Ok((
        parts[0],
        parts[1].trim_matches('.'),
        parts[3].trim_matches('.'),
    ))
}

/// Istio `validateGatewayNames` (`gatewaySemantics` false: no Gateway API objects here).
/// Like Istio, it stops at the first name without a `/`.
pub(crate) fn validate_gateway_names(f: &mut Findings, at: &str, names: &[String]) {
    for (k, g) in names.iter().enumerate() {
        let gat = format!("{at}[{k}]");
        let Some((ns, name)) = g.split_once('/') else {
            if g.contains('.') {
                let parts: Vec<&str> = g.split('.').collect();
                f.warn(
                    &gat,
                    format!(
                        "using legacy gatewayName format {g:?}; prefer the <namespace>/<name> format: \"{}/{}\"",
                        parts[1], parts[0]
                    ),
                );
            }
            f.check(&gat, validate_fqdn(g));
            return;
        };
        if ns.is_empty() || name.is_empty() {
            f.err(&gat, "config namespace and gateway name cannot be empty");
        }
        // `./name` too: Istio resolves it when binding, but its webhook refuses it.
        if !is_dns1123_label(ns) {
            f.err(&gat, format!("invalid value for namespace: {ns:?}"));
        }
        if !is_dns1123_label(name) {
            f.err(&gat, format!("invalid value for gateway name: {name:?}"));
        }
    }
}

/// Istio `validateTLSRoute`.
pub(crate) fn validate_tls_route(
    f: &mut Findings,
    at: &str,
    t: &TlsRoute,
    vs: &VirtualServiceSpec,
) {
    if t.matches.is_empty() {
        f.err(
            format!("{at}.match"),
            "TLS route must have at least one match condition",
        );
    }
    for (k, m) in t.matches.iter().enumerate() {
        validate_tls_match(f, &format!("{at}.match[{k}]"), m, vs);
    }
    if t.route.is_empty() {
        f.err(format!("{at}.route"), "TLS route is required");
    }
    validate_route_destinations(f, &format!("{at}.route"), &t.route);
}

/// Istio `validateTLSMatch`.
pub(crate) fn validate_tls_match(
    f: &mut Findings,
    at: &str,
    m: &TlsMatch,
    vs: &VirtualServiceSpec,
) {
    if m.sni_hosts.is_empty() {
        f.err(
            format!("{at}.sniHosts"),
            "TLS match must have at least one SNI host",
        );
    }
    for (n, sni) in m.sni_hosts.iter().enumerate() {
        validate_sni_host(f, &format!("{at}.sniHosts[{n}]"), sni, vs);
    }
    l4_match_attributes(
        f,
        at,
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
    );
}

/// Istio `validateSniHost`: a valid (wildcard) name, or an IP (a warning), and a subset of
/// one of the VirtualService's hosts.
pub(crate) fn validate_sni_host(f: &mut Findings, at: &str, sni: &str, vs: &VirtualServiceSpec) {
    let r = if is_gateway(vs) {
        validate_wildcard_domain_for_virtual_service_bound_to_gateway(true, sni)
    } else {
        validate_wildcard_domain(sni)
    };
    if let Err(e) = r {
        if is_ip(sni) {
            f.warn(
                at,
                format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"),
            );
        } else {
            f.err(at, e);
        }
        return;
    }
    if !vs.hosts.iter().any(|h| host_subset_of(sni, h)) {
        f.err(
            at,
            format!(
                "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                vs.hosts.join(", ")
            ),
        );
    }
}

/// Istio `validateTCPRoute` (its `validateTCPMatch` is `l4_match_attributes`).
pub(crate) fn validate_tcp_route(f: &mut Findings, at: &str, t: &TcpRoute) {
    for (k, m) in t.matches.iter().enumerate() {
        l4_match_attributes(
            f,
            &format!("{at}.match[{k}]"),
            &m.destination_subnets,
            m.port,
            &m.source_labels,
            &m.gateways,
        );
    }
    if t.route.is_empty() {
        f.err(format!("{at}.route"), "TCP route is required");
    }
    validate_route_destinations(f, &format!("{at}.route"), &t.route);
}

/// The part `validateTCPMatch` and `validateTLSMatch` share.
fn l4_match_attributes(
    f: &mut Findings,
    at: &str,
    subnets: &[String],
    port: i64,
    source_labels: &Labels,
    gateways: &[String],
) {
    for (n, s) in subnets.iter().enumerate() {
        f.check(
            &format!("{at}.destinationSubnets[{n}]"),
            validate_ip_subnet(s),
        );
    }
    if port != 0 {
        f.check(&format!("{at}.port"), validate_port(port));
    }
    f.errs(
        &format!("{at}.sourceLabels"),
        validate_labels(source_labels),
    );
    validate_gateway_names(f, &format!("{at}.gateways"), gateways);
}

/// Istio `validateRouteDestinations` (tcp and tls routes).
pub(crate) fn validate_route_destinations(f: &mut Findings, at: &str, routes: &[RouteDestination]) {
    let mut total = 0i64;
    for (k, r) in routes.iter().enumerate() {
        let rat = format!("{at}[{k}]");
        match &r.destination {
            None => f.err(format!("{rat}.destination"), "destination is required"),
            Some(dest) => http::validate_destination(f, &format!("{rat}.destination"), dest),
        }
        if r.weight < 0 {
            f.err(format!("{rat}.weight"), format!("weight {} < 0", r.weight));
        }
        total = total.saturating_add(r.weight);
    }
    if routes.len() > 1 && total == 0 {
        f.err(at, "total destination weight = 0");
    }
}

/// Istio `analyzeUnreachableTCPRules` and `analyzeUnreachableTLSRules` (the same code):
/// warnings. Their rules and matches have no names, so they are `#n`.
fn analyze_unreachable_l4_rules<R, M: std::fmt::Debug>(
    f: &mut Findings,
    kind: &str,
    routes: &[R],
    matches: impl Fn(&R) -> &Vec<M>,
) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut empty_match: Option<usize> = None;
    for (i, r) in routes.iter().enumerate() {
        let ms = matches(r);
        let at = format!("spec.{kind}[{i}]");
        if ms.is_empty() {
            if empty_match.is_some() {
                f.warn(
                    &at,
                    format!("virtualService rule #{i} not used (only the last rule can have no matches)"),
                );
            }
            empty_match = Some(i);
            continue;
        }
        let mut dups = 0;
        for (k, m) in ms.iter().enumerate() {
            if empty_match.is_some() {
                f.warn(
                    &at,
                    format!(
                        "virtualService rule #{i} not used (route without matches defined before)"
                    ),
                );
                continue;
            }
            let key = format!("{m:?}");
            if let Some(prev) = seen.get(&key) {
                f.warn(
                    format!("{at}.match[{k}]"),
                    format!("virtualService rule #{i} match #{k} is not used (duplicate/overlapping match in rule #{prev})"),
                );
                dups += 1;
            } else {
                seen.insert(key, i);
            }
        }
        if dups == ms.len() {
            f.warn(
                &at,
                format!("virtualService rule #{i} not used (all matches used by prior rules)"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
