//! Istio `ValidateDestinationRule`.

use std::collections::BTreeSet;

use super::{export_to, metadata, Diag};
use crate::config::model::{DestinationRule, LoadBalancer, TrafficPolicy};
use crate::config::names::{is_dns1123_label, validate_labels, validate_wildcard_domain};

const SIMPLE_LB: [&str; 6] = [
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
];

pub(super) fn destination_rule(d: &mut Diag<'_>, dr: &DestinationRule) {
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
