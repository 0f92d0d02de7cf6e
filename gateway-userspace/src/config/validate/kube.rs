//! Kubernetes kinds: basic shape only (the API server validated them in a real cluster).

use std::collections::BTreeSet;

use super::{metadata, validate_port, Diag};
use crate::config::model::{EndpointSlice, IntOrString, Pod, Service, SERVICE_NAME_LABEL};
use crate::config::names::{is_dns1123_label, validate_ip};

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

pub(super) fn service(d: &mut Diag<'_>, svc: &Service) {
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

pub(super) fn endpoint_slice(d: &mut Diag<'_>, es: &EndpointSlice) {
    metadata(d, es);
    let s = &es.spec;
    match s.address_type.as_str() {
        "IPv4" | "IPv6" => {}
        "FQDN" => d.warn(
            "addressType",
            "addressType FQDN is not supported (IPv4 and IPv6 only); slice ignored",
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
    let v6 = s.address_type == "IPv6";
    if v6 || s.address_type == "IPv4" {
        for (i, e) in s.endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}].addresses");
            if e.addresses.is_empty() {
                d.err(&at, "endpoint must have at least one address");
            }
            for (k, a) in e.addresses.iter().enumerate() {
                let ok = match a.parse::<std::net::IpAddr>() {
                    Ok(ip) => ip.is_ipv6() == v6,
                    Err(_) => false,
                };
                if !ok {
                    d.err(
                        format!("{at}[{k}]"),
                        format!("{a} is not a valid {} address", s.address_type),
                    );
                }
            }
        }
    }
}

pub(super) fn pod(d: &mut Diag<'_>, p: &Pod) {
    metadata(d, p);
    if let Some(ip) = &p.spec.pod_ip {
        d.check("status.podIP", validate_ip(ip));
    }
}
