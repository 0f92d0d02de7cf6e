//! Istio `validateLoadBalancer`: simple and consistent-hash balancers, warmup, and the locality
//! and zone-aware settings.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use super::show_plain;
use crate::config::model::LoadBalancer;
use crate::config::syntax::parse_duration;
use crate::config::validate::value::{
    boolean, duration, get, int, int_of, list, object, show, string,
};
use crate::config::validate::Findings;

const SIMPLE_LB: [&str; 6] = [
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
];
/// Kubernetes topology labels, which `failoverPriority` may not name next to `failover`.
const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

pub(super) fn is_prime(x: u64) -> bool {
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
pub(super) fn validate_load_balancer(f: &mut Findings, at: &str, lb: &LoadBalancer, outlier: bool) {
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
pub(super) fn validate_warmup(f: &mut Findings, at: &str, w: &Value) {
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
pub(super) fn validate_locality_lb_setting(f: &mut Findings, at: &str, lb: &Value, outlier: bool) {
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
pub(super) fn validate_zone_aware_lb_setting(
    f: &mut Findings,
    at: &str,
    lb: &Value,
    outlier: bool,
) {
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
