//! Istio `ValidateServiceEntry`.

use std::collections::BTreeSet;

use super::{export_to, metadata, validate_port, Diag};
use crate::config::model::{ServiceEntry, WorkloadEntry};
use crate::config::names::{
    is_dns1123_label, is_ip, validate_fqdn, validate_ip_subnet, validate_labels,
    validate_partial_wildcard, validate_wildcard_domain,
};

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

pub(super) fn service_entry(d: &mut Diag<'_>, se: &ServiceEntry) {
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
        export_to(&se.metadata.namespace, &s.export_to, true, false),
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
