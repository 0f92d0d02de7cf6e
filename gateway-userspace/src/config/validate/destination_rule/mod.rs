//! Istio `ValidateDestinationRule`: the resource, subsets, the traffic policy and its port-level
//! settings, tunnel and PROXY protocol; load balancing, the connection pool with outlier detection
//! and client TLS each have a file.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use super::value::{get, int, object, show, string};
use super::{export_to, metadata, validate_port, Diag, Findings};
use crate::config::model::{DestinationRule, PortTrafficPolicy, TrafficPolicy};
use crate::config::names::{
    is_dns1123_label, validate_fqdn, validate_ip, validate_labels, validate_wildcard_domain,
};
use load_balancer::validate_load_balancer;
use pool::{validate_connection_pool, validate_outlier_detection};
use tls::validate_tls;

mod load_balancer;
mod pool;
#[cfg(test)]
mod tests;
mod tls;

const PROXY_PROTOCOL_VERSIONS: [&str; 2] = ["V1", "V2"];

pub(super) fn destination_rule(d: &mut Diag<'_>, dr: &DestinationRule) {
    metadata(d, dr);
    let s = &dr.spec;
    let ns = dr.metadata.namespace.as_str();
    let mut f = Findings::default();
    f.check("spec.host", validate_wildcard_domain(&s.host));
    if let Some(tp) = &s.traffic_policy {
        validate_traffic_policy(&mut f, "spec.trafficPolicy", ns, tp);
    }
    let mut names = BTreeSet::new();
    for (i, sub) in s.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if !names.insert(sub.name.clone()) {
            f.err(
                format!("{at}.name"),
                format!("duplicate subset names: {}", sub.name),
            );
        }
        // Istio `validateSubset`.
        f.check(&format!("{at}.name"), validate_subset_name(&sub.name));
        f.errs(&format!("{at}.labels"), validate_labels(&sub.labels));
        if let Some(tp) = &sub.traffic_policy {
            validate_traffic_policy(&mut f, &format!("{at}.trafficPolicy"), ns, tp);
        }
    }
    f.errs(
        "spec.exportTo",
        export_to(ns, &s.export_to, false, s.workload_selector.is_some()),
    );
    if let Some(ws) = &s.workload_selector {
        validate_workload_selector(&mut f, "spec.workloadSelector", ws);
    }
    d.take(f);
}

/// Istio `validateSubsetName` (also used for route destinations).
pub(super) fn validate_subset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("subset name cannot be empty".into())
    } else if !is_dns1123_label(name) {
        Err(format!("subset name is invalid: {name}"))
    } else {
        Ok(())
    }
}

/// Istio `validateWorkloadSelector` (the `type.v1beta1.WorkloadSelector` form).
fn validate_workload_selector(f: &mut Findings, at: &str, ws: &Value) {
    if !object(f, at, ws) {
        return;
    }
    let labels = match get(ws, "matchLabels") {
        None => BTreeMap::new(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| (show_plain(k), show_plain(v)))
            .collect(),
        Some(other) => {
            f.err(
                format!("{at}.matchLabels"),
                format!("invalid value {}: expected a map", show(other)),
            );
            return;
        }
    };
    for (k, v) in &labels {
        if k.is_empty() {
            f.err(
                format!("{at}.matchLabels"),
                format!("empty key is not supported in selector: \"{k}={v}\""),
            );
        }
        if k.contains('*') || v.contains('*') {
            f.err(
                format!("{at}.matchLabels"),
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
    }
    if labels.is_empty() {
        f.warn(at, "workload selector specified without labels");
    }
}

pub(super) fn show_plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => show(other),
    }
}

/// Istio `validateTrafficPolicy`.
pub(super) fn validate_traffic_policy(f: &mut Findings, at: &str, ns: &str, tp: &TrafficPolicy) {
    if tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_none()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        f.err(at, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        f.err(at, "tunnel and proxyProtocol must not be set together");
        return;
    }
    if let Some(od) = &tp.outlier_detection {
        validate_outlier_detection(f, &format!("{at}.outlierDetection"), od);
    }
    if let Some(cp) = &tp.connection_pool {
        validate_connection_pool(f, &format!("{at}.connectionPool"), cp);
    }
    if let Some(lb) = &tp.load_balancer {
        validate_load_balancer(
            f,
            &format!("{at}.loadBalancer"),
            lb,
            tp.outlier_detection.is_some(),
        );
    }
    if let Some(tls) = &tp.tls {
        validate_tls(f, &format!("{at}.tls"), ns, tls);
    }
    if let Some(pls) = &tp.port_level_settings {
        validate_port_traffic_policies(f, &format!("{at}.portLevelSettings"), ns, pls);
    }
    if let Some(t) = &tp.tunnel {
        validate_tunnel_settings(f, &format!("{at}.tunnel"), t);
    }
    if let Some(p) = &tp.proxy_protocol {
        validate_proxy_protocol(f, &format!("{at}.proxyProtocol"), p);
    }
}

/// Istio `validatePortTrafficPolicies`.
fn validate_port_traffic_policies(f: &mut Findings, at: &str, ns: &str, pls: &[PortTrafficPolicy]) {
    for (i, p) in pls.iter().enumerate() {
        let pat = format!("{at}[{i}]");
        if p.port.is_none() {
            f.err(
                format!("{pat}.port"),
                "portTrafficPolicy must have valid port",
            );
        }
        if p.load_balancer.is_none()
            && p.connection_pool.is_none()
            && p.outlier_detection.is_none()
            && p.tls.is_none()
        {
            f.err(&pat, "port traffic policy must have at least one field");
            continue;
        }
        if let Some(od) = &p.outlier_detection {
            validate_outlier_detection(f, &format!("{pat}.outlierDetection"), od);
        }
        if let Some(cp) = &p.connection_pool {
            validate_connection_pool(f, &format!("{pat}.connectionPool"), cp);
        }
        if let Some(lb) = &p.load_balancer {
            validate_load_balancer(
                f,
                &format!("{pat}.loadBalancer"),
                lb,
                p.outlier_detection.is_some(),
            );
        }
        if let Some(tls) = &p.tls {
            validate_tls(f, &format!("{pat}.tls"), ns, tls);
        }
    }
}

/// Istio `validateProxyProtocol`.
pub(super) fn validate_proxy_protocol(f: &mut Findings, at: &str, p: &Value) {
    if !object(f, at, p) {
        return;
    }
    if let Some(x) = get(p, "version") {
        let ok = match x {
            Value::String(s) => PROXY_PROTOCOL_VERSIONS.contains(&s.as_str()),
            Value::Number(n) => matches!(n.as_u64(), Some(0 | 1)),
            _ => false,
        };
        if !ok {
            f.err(
                format!("{at}.version"),
                format!("proxy protocol version is invalid: {}", show(x)),
            );
        }
    }
}

/// Istio `validateTunnelSettings`.
pub(super) fn validate_tunnel_settings(f: &mut Findings, at: &str, t: &Value) {
    if !object(f, at, t) {
        return;
    }
    if let Some(p) = string(f, at, t, "protocol") {
        if !p.is_empty() && p != "CONNECT" && p != "POST" {
            f.err(
                format!("{at}.protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
    }
    let host = string(f, at, t, "targetHost").unwrap_or_default();
    if let (Err(fqdn), Err(ip)) = (validate_fqdn(host), validate_ip(host)) {
        f.err(
            format!("{at}.targetHost"),
            format!("tunnel target host must be valid FQDN or IP address: {fqdn}; {ip}"),
        );
    }
    let port = int(f, at, t, "targetPort").unwrap_or(0);
    if let Err(e) = validate_port(port) {
        f.err(
            format!("{at}.targetPort"),
            format!("tunnel target port is invalid: {e}"),
        );
    }
}
