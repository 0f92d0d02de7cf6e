//! Istio `ValidateDestinationRule`.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use super::value::{boolean, duration, enumeration, get, int, int_of, list, object, show, string};
use super::{export_to, metadata, validate_port, Diag, Findings};
use crate::config::model::{DestinationRule, LoadBalancer, PortTrafficPolicy, TrafficPolicy};
use crate::config::names::{
    is_dns1123_label, validate_fqdn, validate_ip, validate_labels, validate_wildcard_domain,
};
use crate::config::syntax::parse_duration;

const SIMPLE_LB: [&str; 6] = [
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
];

const TLS_MODES: [&str; 4] = ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];
const H2_UPGRADE: [&str; 3] = ["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"];
const PROXY_PROTOCOL_VERSIONS: [&str; 2] = ["V1", "V2"];
/// Kubernetes topology labels, which `failoverPriority` may not name next to `failover`.
const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

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

fn show_plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => show(other),
    }
}

/// Istio `validateTrafficPolicy`.
fn validate_traffic_policy(f: &mut Findings, at: &str, ns: &str, tp: &TrafficPolicy) {
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
fn validate_proxy_protocol(f: &mut Findings, at: &str, p: &Value) {
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
fn validate_tunnel_settings(f: &mut Findings, at: &str, t: &Value) {
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

/// Istio `ValidatePercent`.
fn validate_percent(v: i64) -> Result<(), String> {
    if (0..=100).contains(&v) {
        Ok(())
    } else {
        Err(format!("percentage {v} is not in range 0..100"))
    }
}

/// Istio `validateOutlierDetection`.
fn validate_outlier_detection(f: &mut Findings, at: &str, od: &Value) {
    if !object(f, at, od) {
        return;
    }
    duration(f, at, od, "baseEjectionTime");
    if int(f, at, od, "consecutiveErrors").is_some_and(|n| n != 0) {
        f.warn(
            format!("{at}.consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    int(f, at, od, "consecutive5xxErrors");
    int(f, at, od, "consecutiveGatewayErrors");
    let split = boolean(f, at, od, "splitExternalLocalOriginErrors").unwrap_or(false);
    if !split && int(f, at, od, "consecutiveLocalOriginFailures").is_some_and(|n| n > 0) {
        f.err(
            format!("{at}.consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    duration(f, at, od, "interval");
    for key in ["maxEjectionPercent", "minHealthPercent"] {
        if let Some(n) = int(f, at, od, key) {
            f.check(&format!("{at}.{key}"), validate_percent(n));
        }
    }
}

/// Istio `validateConnectionPool`.
fn validate_connection_pool(f: &mut Findings, at: &str, cp: &Value) {
    if !object(f, at, cp) {
        return;
    }
    let http = get(cp, "http");
    let tcp = get(cp, "tcp");
    if http.is_none() && tcp.is_none() {
        f.err(at, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = http {
        let at = format!("{at}.http");
        if object(f, &at, h) {
            for (key, what) in [
                ("http1MaxPendingRequests", "http1 max pending requests"),
                ("http2MaxRequests", "http2 max requests"),
                ("maxRequestsPerConnection", "max requests per connection"),
                ("maxRetries", "max retries"),
                ("maxConcurrentStreams", "max concurrent streams"),
            ] {
                if int(f, &at, h, key).is_some_and(|n| n < 0) {
                    f.err(
                        format!("{at}.{key}"),
                        format!("{what} must be non-negative"),
                    );
                }
            }
            duration(f, &at, h, "idleTimeout");
            let upgrade = enumeration(f, &at, h, "h2UpgradePolicy", &H2_UPGRADE);
            let client = boolean(f, &at, h, "useClientProtocol").unwrap_or(false);
            if upgrade == Some("UPGRADE") && client {
                f.err(
                    format!("{at}.useClientProtocol"),
                    "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                );
            }
            if let Some(ka) = get(h, "http2KeepAlive") {
                let kat = format!("{at}.http2KeepAlive");
                if object(f, &kat, ka) {
                    for key in ["interval", "timeout"] {
                        if get(ka, key).is_none() {
                            f.err(
                                format!("{kat}.{key}"),
                                format!("http2 keepalive {key} is required"),
                            );
                        } else {
                            duration(f, &kat, ka, key);
                        }
                    }
                }
            }
        }
    }
    if let Some(t) = tcp {
        let at = format!("{at}.tcp");
        if object(f, &at, t) {
            if int(f, &at, t, "maxConnections").is_some_and(|n| n < 0) {
                f.err(
                    format!("{at}.maxConnections"),
                    "max connections must be non-negative",
                );
            }
            duration(f, &at, t, "connectTimeout");
            duration(f, &at, t, "maxConnectionDuration");
            // 0s disables the idle timeout, so it is exempt from the 1ms minimum.
            if let Some(s) = string(f, &at, t, "idleTimeout") {
                let zero = parse_duration(s).is_some_and(|d| d.as_millis() == 0);
                if !zero {
                    duration(f, &at, t, "idleTimeout");
                }
            }
            if let Some(ka) = get(t, "tcpKeepalive") {
                let kat = format!("{at}.tcpKeepalive");
                if object(f, &kat, ka) {
                    int(f, &kat, ka, "probes");
                    duration(f, &kat, ka, "time");
                    duration(f, &kat, ka, "interval");
                }
            }
        }
    }
}

/// Envoy's `Primes::isPrime`, as Istio's `isPrime` mirrors it for Maglev table sizes.
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x.is_multiple_of(2) {
        return false;
    }
    let mut factor = 3;
    while factor * factor <= x {
        if x.is_multiple_of(factor) {
            return false;
        }
        factor += 2;
    }
    true
}

/// Istio `validateLoadBalancer`, plus the protobuf oneofs its parser enforces (`simple` or
/// `consistentHash`; one hash key; `ringHash` or `maglev`).
fn validate_load_balancer(f: &mut Findings, at: &str, lb: &LoadBalancer, outlier: bool) {
    if let Some(simple) = &lb.simple {
        if !SIMPLE_LB.contains(&simple.as_str()) {
            f.err(
                format!("{at}.simple"),
                format!("invalid load balancer {simple:?}"),
            );
        }
        if lb.consistent_hash.is_some() {
            f.err(at, "only one of simple or consistentHash can be set");
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
            f.err(
                &cat,
                "only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName can be set",
            );
        }
        if let Some(cookie) = &ch.http_cookie {
            http_cookie(f, &format!("{cat}.httpCookie"), cookie);
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            f.err(&cat, "only one of ringHash or maglev can be set");
        }
        let min_ring = ch
            .minimum_ring_size
            .as_ref()
            .and_then(|x| int_of(f, &format!("{cat}.minimumRingSize"), x))
            .unwrap_or(0);
        if min_ring != 0 {
            f.warn(
                format!("{cat}.minimumRingSize"),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            );
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                f.err(
                    &cat,
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                );
            }
        }
        if let Some(rh) = &ch.ring_hash {
            let rat = format!("{cat}.ringHash");
            if object(f, &rat, rh) {
                int(f, &rat, rh, "minimumRingSize");
            }
        }
        if let Some(ml) = &ch.maglev {
            let mat = format!("{cat}.maglev");
            if object(f, &mat, ml) {
                let size = int(f, &mat, ml, "tableSize").unwrap_or(0);
                let tat = format!("{mat}.tableSize");
                if size == 0 {
                    f.err(&tat, "tableSize must be set for maglev");
                }
                if size >= 5_000_011 {
                    f.err(&tat, "tableSize must be less than 5000011 for maglev");
                }
                if !u64::try_from(size).is_ok_and(is_prime) {
                    f.err(&tat, "tableSize must be a prime number for maglev");
                }
            }
        }
    }
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        f.err(
            at,
            "only one of localityLbSetting and zoneAwareLbSetting can be set",
        );
    }
    if let Some(l) = &lb.locality_lb_setting {
        validate_locality_lb_setting(f, &format!("{at}.localityLbSetting"), l, outlier);
    }
    if let Some(z) = &lb.zone_aware_lb_setting {
        validate_zone_aware_lb_setting(f, &format!("{at}.zoneAwareLbSetting"), z, outlier);
    }
    if let Some(w) = &lb.warmup_duration_secs {
        let wat = format!("{at}.warmupDurationSecs");
        if w.as_str().is_none_or(|s| parse_duration(s).is_none()) {
            f.err(wat, format!("invalid duration {}", show(w)));
        }
    }
    if let Some(w) = &lb.warmup {
        validate_warmup(f, &format!("{at}.warmup"), w);
    }
}

/// The warmup part of Istio `validateLoadBalancer`.
fn validate_warmup(f: &mut Findings, at: &str, w: &Value) {
    if !object(f, at, w) {
        return;
    }
    if get(w, "duration").is_none() {
        f.err(format!("{at}.duration"), "duration is required");
    } else {
        duration(f, at, w, "duration");
    }
    if int(f, at, w, "minimumPercent").is_some_and(|p| p > 100) {
        f.err(
            format!("{at}.minimumPercent"),
            "minimumPercent value should be less than or equal to 100",
        );
    }
    if let Some(x) = get(w, "aggression") {
        match x.as_f64() {
            Some(a) if a <= 0.0 => f.err(
                format!("{at}.aggression"),
                "aggression should be greater than 0",
            ),
            Some(_) => {}
            None => f.err(
                format!("{at}.aggression"),
                format!("invalid value {}: expected a number", show(x)),
            ),
        }
    }
}

/// The cookie part of Istio `validateLoadBalancer`.
fn http_cookie(f: &mut Findings, at: &str, c: &Value) {
    if !object(f, at, c) {
        return;
    }
    if string(f, at, c, "name").is_none_or(str::is_empty) {
        f.err(format!("{at}.name"), "name required for HttpCookie");
    }
    duration_any(f, at, c, "ttl");
    let mut seen = BTreeSet::new();
    for (i, a) in list(f, at, c, "attributes")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let aat = format!("{at}.attributes[{i}]");
        if !object(f, &aat, a) {
            continue;
        }
        let name = string(f, &aat, a, "name").unwrap_or_default();
        if name.is_empty() {
            f.err(
                format!("{aat}.name"),
                "cookie attribute name cannot be empty",
            );
        } else if !seen.insert(name) {
            f.err(
                format!("{aat}.name"),
                format!("duplicate cookie attribute name: {name}"),
            );
        }
    }
}

/// A duration that only has to parse (Istio checks nothing more, e.g. a cookie TTL of 0s).
fn duration_any(f: &mut Findings, at: &str, v: &Value, key: &str) {
    if let Some(s) = string(f, at, v, key) {
        if parse_duration(s).is_none() {
            f.err(format!("{at}.{key}"), format!("invalid duration {s:?}"));
        }
    }
}

/// Istio `ValidateLocalityLbSetting`.
fn validate_locality_lb_setting(f: &mut Findings, at: &str, lb: &Value, outlier: bool) {
    if !object(f, at, lb) {
        return;
    }
    let distribute = list(f, at, lb, "distribute").unwrap_or_default();
    let failover = list(f, at, lb, "failover").unwrap_or_default();
    let priority = strings(f, at, lb, "failoverPriority");
    boolean(f, at, lb, "enabled");
    if !distribute.is_empty() && !failover.is_empty() {
        f.err(
            at,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    if !failover.is_empty() {
        if let Some(l) = priority
            .iter()
            .find(|l| TOPOLOGY_LABELS.contains(&l.as_str()))
        {
            f.err(
                format!("{at}.failoverPriority"),
                format!("can not simultaneously set 'failover' and topology label '{l}' in 'failover_priority'"),
            );
            return;
        }
    }
    let mut sources = Vec::new();
    for (i, d) in distribute.iter().enumerate() {
        let dat = format!("{at}.distribute[{i}]");
        if !object(f, &dat, d) {
            continue;
        }
        sources.push(string(f, &dat, d, "from").unwrap_or_default().to_string());
        let mut total: i64 = 0;
        let mut dests = Vec::new();
        if let Some(Value::Mapping(to)) = get(d, "to") {
            for (loc, w) in to {
                dests.push(show_plain(loc));
                let w = w.as_i64().unwrap_or(0);
                if w <= 0 || w > 100 {
                    f.err(
                        format!("{dat}.to"),
                        "locality weight must be in range [1, 100]",
                    );
                    return;
                }
                total += w;
            }
        }
        if total != 100 {
            f.err(
                format!("{dat}.to"),
                format!("total locality weight {total} != 100"),
            );
            return;
        }
        f.check(&format!("{dat}.to"), validate_localities(&dests));
    }
    f.check(&format!("{at}.distribute"), validate_localities(&sources));
    if (!failover.is_empty() || !priority.is_empty()) && !outlier {
        f.warn(at, "outlier detection policy must be provided for failover");
    }
    for (i, fo) in failover.iter().enumerate() {
        let fat = format!("{at}.failover[{i}]");
        if !object(f, &fat, fo) {
            continue;
        }
        let from = string(f, &fat, fo, "from").unwrap_or_default();
        let to = string(f, &fat, fo, "to").unwrap_or_default();
        if from == to {
            f.err(
                &fat,
                "locality lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            f.err(&fat, "locality lb failover only specify region");
        }
        if from.contains('*') || to.contains('*') {
            f.err(
                &fat,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// Istio `ValidateZoneAwareLbSetting`.
fn validate_zone_aware_lb_setting(f: &mut Findings, at: &str, lb: &Value, outlier: bool) {
    if !object(f, at, lb) {
        return;
    }
    let failover = list(f, at, lb, "failover").unwrap_or_default();
    let priority = strings(f, at, lb, "failoverPriority");
    for l in priority
        .iter()
        .filter(|l| TOPOLOGY_LABELS.contains(&l.as_str()))
    {
        f.err(
            format!("{at}.failoverPriority"),
            format!("'failover_priority' for zone aware lb must not use topology label '{l}'; region- and zone-level routing are handled automatically"),
        );
    }
    if (!failover.is_empty() || !priority.is_empty()) && !outlier {
        f.warn(at, "outlier detection policy must be provided for failover");
    }
    for (i, fo) in failover.iter().enumerate() {
        let fat = format!("{at}.failover[{i}]");
        if !object(f, &fat, fo) {
            continue;
        }
        let from = string(f, &fat, fo, "from").unwrap_or_default();
        let to = string(f, &fat, fo, "to").unwrap_or_default();
        if from == to {
            f.err(
                &fat,
                "zone aware lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            f.err(&fat, "zone aware lb failover only specifies region; zone and subzone failover are handled automatically");
        }
        if from.contains('*') || to.contains('*') {
            f.err(
                &fat,
                "zone aware lb failover region should not contain '*' wildcard",
            );
        }
    }
}

fn strings(f: &mut Findings, at: &str, v: &Value, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, x) in list(f, at, v, key).unwrap_or_default().iter().enumerate() {
        match x.as_str() {
            Some(s) => out.push(s.to_string()),
            None => f.err(
                format!("{at}.{key}[{i}]"),
                format!("invalid value {}: expected a string", show(x)),
            ),
        }
    }
    out
}

/// Istio `validateLocalities`: `region[/zone[/subzone]]`, a `*` only last, no overlaps.
fn validate_localities(localities: &[String]) -> Result<(), String> {
    // region -> zone -> subzones; "*" stands for "all of them".
    let mut seen: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    let overlap = |l: &str| Err(format!("locality {l} overlap with previous specified ones"));
    for l in localities {
        let stars = l.matches('*').count();
        if stars > 1 || (stars == 1 && !l.ends_with('*')) {
            return Err(format!(
                "locality {l} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        if seen.contains_key("*") {
            return overlap(l);
        }
        let items: Vec<&str> = l.splitn(3, '/').collect();
        if items.iter().any(|i| i.is_empty()) {
            return Err(format!(
                "locality {l} must not contain empty region/zone/subzone info"
            ));
        }
        match items[..] {
            [region] => {
                if seen.contains_key(region) {
                    return overlap(l);
                }
                seen.insert(region, BTreeMap::from([("*", BTreeSet::from(["*"]))]));
            }
            [region, zone] => match seen.get_mut(region) {
                Some(zones) => {
                    if zones.contains_key("*") || zones.contains_key(zone) {
                        return overlap(l);
                    }
                    zones.insert(zone, BTreeSet::from(["*"]));
                }
                None => {
                    seen.insert(region, BTreeMap::from([(zone, BTreeSet::from(["*"]))]));
                }
            },
            [region, zone, sub] => match seen.get_mut(region) {
                Some(zones) => {
                    if zones.contains_key("*") {
                        return overlap(l);
                    }
                    match zones.get_mut(zone) {
                        Some(subs) => {
                            if subs.contains("*") || !subs.insert(sub) {
                                return overlap(l);
                            }
                        }
                        None => {
                            zones.insert(zone, BTreeSet::from([sub]));
                        }
                    }
                }
                None => {
                    seen.insert(region, BTreeMap::from([(zone, BTreeSet::from([sub]))]));
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// Istio `ValidateTLS` (client TLS settings), plus the mode enum its parser enforces.
fn validate_tls(f: &mut Findings, at: &str, ns: &str, tls: &Value) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::{errors_of, warnings_of};

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).expect("test YAML parses")
    }

    /// Runs `check` on each case: (name, YAML, valid, warns).
    #[track_caller]
    fn table(check: impl Fn(&mut Findings, &Value), cases: &[(&str, &str, bool, bool)]) {
        for (name, src, valid, warns) in cases {
            let mut f = Findings::default();
            check(&mut f, &yaml(src));
            assert_eq!(f.errors.is_empty(), *valid, "{name}: {f:?}");
            assert_eq!(!f.warnings.is_empty(), *warns, "{name}: {f:?}");
        }
    }

    #[test]
    fn validate_traffic_policy() {
        table(
            |f, v| {
                let tp: TrafficPolicy = serde_yaml::from_value(v.clone()).expect("policy");
                super::validate_traffic_policy(f, "tp", "ns", &tp)
            },
            &[
                ("valid traffic policy", "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}, http: {http2MaxRequests: 11}}, outlierDetection: {minHealthPercent: 20}}", true, false),
                ("nil entries", "{}", false, false),
                ("missing port in port level settings", "{portLevelSettings: [{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}}, outlierDetection: {minHealthPercent: 20}}]}", false, false),
                ("bad connection pool", "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {}, outlierDetection: {minHealthPercent: 20}}", false, false),
                ("bad max connection duration", "{connectionPool: {tcp: {maxConnectionDuration: 500ns}}}", false, false),
                ("panic threshold too low", "{connectionPool: {tcp: {maxConnections: 7}}, outlierDetection: {minHealthPercent: -1}}", false, false),
                ("both upgrade and use client protocol set", "{connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}", false, false),
                ("tunnel and proxyProtocol together", "{tunnel: {targetHost: a.example.com, targetPort: 80}, proxyProtocol: {version: V1}}", false, false),
                ("retryBudget alone is a field", "{retryBudget: {percent: {value: 10}}}", true, false),
                ("port level outlier checked", "{portLevelSettings: [{port: {number: 80}, outlierDetection: {maxEjectionPercent: 105}}]}", false, false),
                ("port level without fields", "{portLevelSettings: [{port: {number: 80}}]}", false, false),
            ],
        );
    }

    #[test]
    fn validate_connection_pool() {
        table(
            |f, v| super::validate_connection_pool(f, "cp", v),
            &[
                ("tcp and http", "{tcp: {maxConnections: 7, connectTimeout: 2s}, http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4, idleTimeout: 30s, maxConcurrentStreams: 5}}", true, false),
                ("tcp only", "{tcp: {maxConnections: 7, connectTimeout: 2s}}", true, false),
                ("http only", "{http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4, idleTimeout: 30s, maxConcurrentStreams: 5}}", true, false),
                ("http only with empty idle timeout", "{http: {http1MaxPendingRequests: 2, maxRetries: 4}}", true, false),
                ("http2 keepalive", "{http: {http2KeepAlive: {interval: 15s, timeout: 5s}}}", true, false),
                ("empty", "{}", false, false),
                ("bad max connections", "{tcp: {maxConnections: -1}}", false, false),
                ("bad connect timeout", "{tcp: {connectTimeout: 2.000000005s}}", false, false),
                ("bad max pending requests", "{http: {http1MaxPendingRequests: -1}}", false, false),
                ("bad max requests", "{http: {http2MaxRequests: -1}}", false, false),
                ("bad max requests per connection", "{http: {maxRequestsPerConnection: -1}}", false, false),
                ("bad max retries", "{http: {maxRetries: -1}}", false, false),
                ("bad idle timeout", "{http: {idleTimeout: 30.000000005s}}", false, false),
                ("tcp timeout disabled", "{tcp: {idleTimeout: 0s}}", true, false),
                ("bad max concurrent streams", "{http: {maxConcurrentStreams: -1}}", false, false),
                ("http2 keepalive without interval", "{http: {http2KeepAlive: {timeout: 5s}}}", false, false),
                ("http2 keepalive without timeout", "{http: {http2KeepAlive: {interval: 15s}}}", false, false),
                ("bad http2 keepalive interval", "{http: {http2KeepAlive: {interval: 15.000000005s, timeout: 5s}}}", false, false),
                ("tcp keepalive below 1ms", "{tcp: {tcpKeepalive: {time: 500us}}}", false, false),
                ("not a number", "{tcp: {maxConnections: many}}", false, false),
                ("unknown h2UpgradePolicy", "{http: {h2UpgradePolicy: SOMETIMES}}", false, false),
            ],
        );
    }

    #[test]
    fn validate_load_balancer() {
        table(
            |f, v| {
                let lb: LoadBalancer = serde_yaml::from_value(v.clone()).expect("lb");
                super::validate_load_balancer(f, "lb", &lb, false)
            },
            &[
                ("simple", "{simple: ROUND_ROBIN}", true, false),
                ("consistentHash with cookie and minimumRingSize (deprecated)", "{consistentHash: {minimumRingSize: 1024, httpCookie: {name: test, ttl: 3600s}}}", true, true),
                ("cookie missing name", "{consistentHash: {minimumRingSize: 1024, httpCookie: {ttl: 3600s}}}", false, true),
                ("maglev not prime", "{consistentHash: {maglev: {tableSize: 1000}}}", false, false),
                ("maglev prime", "{consistentHash: {maglev: {tableSize: 65537}}}", true, false),
                ("maglev without tableSize", "{consistentHash: {maglev: {}}}", false, false),
                ("maglev too large", "{consistentHash: {maglev: {tableSize: 5000011}}}", false, false),
                ("minimumRingSize and ringHash", "{consistentHash: {minimumRingSize: 1024, ringHash: {minimumRingSize: 1024}}}", false, true),
                ("unique cookie attributes", "{consistentHash: {httpCookie: {name: c, ttl: 3600s, attributes: [{name: SameSite, value: Strict}, {name: Secure, value: 'true'}, {name: HttpOnly, value: 'true'}]}}}", true, false),
                ("duplicate cookie attribute names", "{consistentHash: {httpCookie: {name: c, attributes: [{name: SameSite, value: Strict}, {name: SameSite, value: Lax}]}}}", false, false),
                ("empty cookie attribute name", "{consistentHash: {httpCookie: {name: c, attributes: [{name: '', value: v}]}}}", false, false),
                ("localityLbSetting and zoneAwareLbSetting both set", "{localityLbSetting: {}, zoneAwareLbSetting: {}}", false, false),
                ("zoneAwareLbSetting only (no outlier detection: warns)", "{zoneAwareLbSetting: {failover: [{from: us-east, to: eu-west}]}}", true, true),
                ("unknown simple", "{simple: FASTEST}", false, false),
                ("simple and consistentHash (oneof)", "{simple: RANDOM, consistentHash: {useSourceIp: true}}", false, false),
                ("two hash keys (oneof)", "{consistentHash: {useSourceIp: true, httpHeaderName: x}}", false, false),
            ],
        );
    }

    #[test]
    fn validate_warmup() {
        table(
            |f, v| super::validate_warmup(f, "w", v),
            &[
                ("duration only", "{duration: 60s}", true, false),
                (
                    "all fields",
                    "{duration: 60s, minimumPercent: 10, aggression: 1.5}",
                    true,
                    false,
                ),
                ("duration missing", "{minimumPercent: 10}", false, false),
                ("duration below 1ms", "{duration: 0s}", false, false),
                (
                    "minimumPercent above 100",
                    "{duration: 1s, minimumPercent: 101}",
                    false,
                    false,
                ),
                (
                    "aggression zero",
                    "{duration: 1s, aggression: 0}",
                    false,
                    false,
                ),
                (
                    "aggression negative",
                    "{duration: 1s, aggression: -1}",
                    false,
                    false,
                ),
            ],
        );
    }

    #[test]
    fn validate_outlier_detection() {
        table(
            |f, v| super::validate_outlier_detection(f, "od", v),
            &[
                (
                    "valid",
                    "{interval: 2s, baseEjectionTime: 2s, maxEjectionPercent: 50}",
                    true,
                    false,
                ),
                ("bad interval", "{interval: 2.000000005s}", false, false),
                (
                    "bad base ejection time",
                    "{baseEjectionTime: 2.000000005s}",
                    false,
                    false,
                ),
                (
                    "bad max ejection percent",
                    "{maxEjectionPercent: 105}",
                    false,
                    false,
                ),
                (
                    "panic threshold too low",
                    "{minHealthPercent: -1}",
                    false,
                    false,
                ),
                (
                    "panic threshold too high",
                    "{minHealthPercent: 101}",
                    false,
                    false,
                ),
                (
                    "deprecated consecutiveErrors",
                    "{consecutiveErrors: 101}",
                    true,
                    true,
                ),
                (
                    "local origin failures without split",
                    "{consecutiveLocalOriginFailures: 10}",
                    false,
                    false,
                ),
                (
                    "local origin failures with split",
                    "{consecutiveLocalOriginFailures: 10, splitExternalLocalOriginErrors: true}",
                    true,
                    false,
                ),
            ],
        );
    }

    #[test]
    fn validate_tls() {
        table(
            |f, v| super::validate_tls(f, "tls", "ns", v),
            &[
                ("SIMPLE: credentialName set", "{mode: SIMPLE, credentialName: c}", true, false),
                ("SIMPLE: credentialName with clientCertificate", "{mode: SIMPLE, credentialName: c, clientCertificate: cert}", false, false),
                ("SIMPLE: credentialName with privateKey", "{mode: SIMPLE, credentialName: c, privateKey: key}", false, false),
                ("SIMPLE: credentialName with caCertificates", "{mode: SIMPLE, credentialName: c, caCertificates: ca}", false, false),
                ("MUTUAL: credentialName set", "{mode: MUTUAL, credentialName: c}", true, false),
                ("MUTUAL: credentialName with clientCertificate", "{mode: MUTUAL, credentialName: c, clientCertificate: cert}", false, false),
                ("MUTUAL: credentialName with privateKey", "{mode: MUTUAL, credentialName: c, privateKey: key}", false, false),
                ("MUTUAL: credentialName with caCertificates", "{mode: MUTUAL, credentialName: c, caCertificates: ca}", false, false),
                ("MUTUAL: credentialName with caCrl", "{mode: MUTUAL, credentialName: c, caCrl: ca}", false, false),
                ("MUTUAL: certificate and key", "{mode: MUTUAL, clientCertificate: cert, privateKey: key}", true, false),
                ("MUTUAL: key missing", "{mode: MUTUAL, clientCertificate: cert}", false, false),
                ("MUTUAL: certificate missing", "{mode: MUTUAL, privateKey: key}", false, false),
                ("SIMPLE: insecureSkipVerify with caCertificates", "{mode: SIMPLE, insecureSkipVerify: true, caCertificates: ca}", false, false),
                ("SIMPLE: insecureSkipVerify with credentialName", "{mode: SIMPLE, insecureSkipVerify: true, credentialName: c}", false, false),
                ("SIMPLE: insecureSkipVerify with subjectAltNames", "{mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a]}", false, false),
                ("SIMPLE: insecureSkipVerify false with caCertificates", "{mode: SIMPLE, insecureSkipVerify: false, caCertificates: ca}", true, false),
                ("MUTUAL: insecureSkipVerify with credentialName only", "{mode: MUTUAL, insecureSkipVerify: true, credentialName: c}", true, false),
                ("MUTUAL: insecureSkipVerify with subjectAltNames", "{mode: MUTUAL, insecureSkipVerify: true, credentialName: c, subjectAltNames: [a]}", false, false),
                ("configmap in own namespace", "{mode: SIMPLE, credentialName: 'configmap://ns/ca'}", true, false),
                ("configmap in another namespace", "{mode: SIMPLE, credentialName: 'configmap://other/ca'}", false, false),
                ("configmap without namespace", "{mode: SIMPLE, credentialName: 'configmap://ca'}", false, false),
                ("unknown mode", "{mode: STRICT}", false, false),
            ],
        );
    }

    #[test]
    fn validate_locality_lb_setting() {
        table(
            |f, v| super::validate_locality_lb_setting(f, "l", v, true),
            &[
                ("distribute", "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 20}}]}", true, false),
                ("total weight > 100", "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 25}}]}", false, false),
                ("total weight < 100", "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 15}}]}", false, false),
                ("weight = 0", "{distribute: [{from: a/b/c, to: {a/b/c: 0, a/b1: 100}}]}", false, false),
                ("distribute and failover", "{distribute: [{from: a, to: {b: 100}}], failover: [{from: a, to: b}]}", false, false),
                ("failover same region", "{failover: [{from: r1, to: r1}]}", false, false),
                ("failover src with '*'", "{failover: [{from: 'r*', to: r2}]}", false, false),
                ("failover dst with '*'", "{failover: [{from: r1, to: 'r*'}]}", false, false),
                ("failover src with '/'", "{failover: [{from: r1/z1, to: r2}]}", false, false),
                ("failover dst with '/'", "{failover: [{from: r1, to: r2/z1}]}", false, false),
                ("failoverPriority with failover and region label", "{failover: [{from: r1, to: r2}], failoverPriority: [topology.kubernetes.io/region]}", false, false),
                ("overlapping sources", "{distribute: [{from: a, to: {b: 100}}, {from: a/z, to: {b: 100}}]}", false, false),
                ("wildcard not last", "{distribute: [{from: '*/z', to: {b: 100}}]}", false, false),
            ],
        );
        // Without outlier detection, failover warns (Istio: a warning, not an error).
        table(
            |f, v| super::validate_locality_lb_setting(f, "l", v, false),
            &[
                (
                    "failover priority without outlier detection",
                    "{failoverPriority: [a]}",
                    true,
                    true,
                ),
                (
                    "failover without outlier detection",
                    "{failover: [{from: r1, to: r2}]}",
                    true,
                    true,
                ),
            ],
        );
    }

    #[test]
    fn validate_zone_aware_lb_setting() {
        table(
            |f, v| super::validate_zone_aware_lb_setting(f, "z", v, true),
            &[
                (
                    "failover",
                    "{failover: [{from: us-east, to: eu-west}]}",
                    true,
                    false,
                ),
                (
                    "failoverPriority with zone label",
                    "{failoverPriority: [topology.kubernetes.io/zone]}",
                    false,
                    false,
                ),
                (
                    "custom failoverPriority",
                    "{failoverPriority: [network]}",
                    true,
                    false,
                ),
                (
                    "same region",
                    "{failover: [{from: r1, to: r1}]}",
                    false,
                    false,
                ),
                (
                    "zone in failover",
                    "{failover: [{from: r1/z, to: r2}]}",
                    false,
                    false,
                ),
                (
                    "wildcard",
                    "{failover: [{from: r1, to: '*'}]}",
                    false,
                    false,
                ),
            ],
        );
    }

    #[test]
    fn validate_tunnel_settings() {
        table(
            |f, v| super::validate_tunnel_settings(f, "t", v),
            &[
                (
                    "CONNECT to FQDN",
                    "{protocol: CONNECT, targetHost: example.com, targetPort: 443}",
                    true,
                    false,
                ),
                (
                    "POST to IP",
                    "{protocol: POST, targetHost: 192.0.2.1, targetPort: 80}",
                    true,
                    false,
                ),
                (
                    "default protocol",
                    "{targetHost: example.com, targetPort: 80}",
                    true,
                    false,
                ),
                (
                    "bad protocol",
                    "{protocol: GET, targetHost: example.com, targetPort: 80}",
                    false,
                    false,
                ),
                (
                    "bad host",
                    "{targetHost: 'not a host', targetPort: 80}",
                    false,
                    false,
                ),
                ("no port", "{targetHost: example.com}", false, false),
                (
                    "port out of range",
                    "{targetHost: example.com, targetPort: 70000}",
                    false,
                    false,
                ),
            ],
        );
    }

    #[test]
    fn validate_proxy_protocol() {
        table(
            |f, v| super::validate_proxy_protocol(f, "p", v),
            &[
                ("V1", "{version: V1}", true, false),
                ("V2", "{version: V2}", true, false),
                ("default", "{}", true, false),
                ("V3", "{version: V3}", false, false),
            ],
        );
    }

    #[test]
    fn is_prime_matches_envoy() {
        let primes: Vec<u64> = (0..30).filter(|n| is_prime(*n)).collect();
        // Envoy's quirk, kept: 1 counts as prime, 0 does not.
        assert_eq!(primes, [1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537));
        assert!(!is_prime(65535));
    }

    fn dr(spec: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r, namespace: ns}}\nspec:\n{spec}")
    }

    /// Whole objects through `validate`, the path `gateway check` takes.
    #[test]
    fn validate_destination_rule() {
        let cases: &[(&str, &str, bool, bool)] = &[
            ("simple", "  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}]", true, false),
            ("selector without labels warns", "  host: reviews\n  workloadSelector: {}", true, true),
            ("missing host", "  subsets: [{name: v1}]", false, false),
            ("missing subset name", "  host: reviews\n  subsets: [{labels: {version: v1}}]", false, false),
            ("duplicate subset names", "  host: reviews\n  subsets: [{name: v1}, {name: v1}]", false, false),
            ("valid traffic policy, top level", "  host: reviews\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}}, outlierDetection: {minHealthPercent: 20}}", true, false),
            ("invalid traffic policy, top level", "  host: reviews\n  trafficPolicy: {outlierDetection: {minHealthPercent: -1}}", false, false),
            ("invalid traffic policy, subset level", "  host: reviews\n  subsets: [{name: v1, trafficPolicy: {connectionPool: {}}}]", false, false),
            ("insecureSkipVerify with caCertificates", "  host: reviews\n  trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: ca}}", false, false),
            ("selector with exportTo beyond own namespace", "  host: reviews\n  workloadSelector: {matchLabels: {app: a}}\n  exportTo: ['*']", false, false),
            ("selector with exportTo .", "  host: reviews\n  workloadSelector: {matchLabels: {app: a}}\n  exportTo: ['.']", true, false),
            ("selector with two exportTo entries", "  host: reviews\n  workloadSelector: {matchLabels: {app: a}}\n  exportTo: ['.', other]", false, false),
            ("selector with wildcard label", "  host: reviews\n  workloadSelector: {matchLabels: {app: 'a*'}}", false, false),
        ];
        for (name, spec, valid, warns) in cases {
            let y = dr(spec);
            let errs = errors_of(&y);
            assert_eq!(errs.is_empty(), *valid, "{name}: {errs:#?}");
            if *valid {
                let w = warnings_of(&y);
                assert_eq!(!w.is_empty(), *warns, "{name}: {w:#?}");
            }
        }
    }
}
