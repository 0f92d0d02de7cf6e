//! Istio `ValidateVirtualService`: hosts, gateways, tcp and tls routes; the http routes are in
//! `http`.

use std::collections::BTreeMap;

use super::{export_to, metadata, validate_port, Diag};
use crate::config::model::{Labels, RouteDestination, TcpRoute, VirtualService};
use crate::config::names::{
    host_matches, host_subset_of, is_dns1123_label, is_ip, validate_fqdn, validate_ip_subnet,
    validate_labels, validate_wildcard_domain,
};

mod http;

pub(super) fn virtual_service(d: &mut Diag<'_>, vs: &VirtualService) {
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
    let f = http::validate_http(&s.http, s.hosts.is_empty());
    d.take(f);
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
        export_to(&vs.metadata.namespace, &s.export_to, false, false),
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
