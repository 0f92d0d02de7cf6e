//! Destinations -> clusters (`outbound|port|subset|host`) with their DestinationRule policy:
//! load balancer, connection pool, outlier detection (§3.20, §3.21).

use crate::config::model::{
    ConnectionPool, Destination, Kind, LoadBalancer, OutlierDetection, Protocol, Resource,
    TrafficPolicy,
};
use crate::config::names::resolve_short_name;
use crate::config::syntax::parse_duration;
use std::collections::BTreeMap;

use serde_yaml::Value;

use super::duration_ms;
use crate::config::compile::upstream_tls::effective_tls;
use crate::config::compile::Compiler;
use crate::plan::http as p;

impl<'a> Compiler<'a> {
    /// Resolves a destination to its cluster name (`outbound|port|subset|host`) and builds the
    /// cluster once. Unknown host/port/subset: the name is returned but no cluster exists, so
    /// requests get 503 (Envoy "cluster not found"), as in Istio.
    pub(in crate::config::compile) fn http_cluster<S: Kind>(
        &mut self,
        vs: &Resource<S>,
        field: &str,
        dest: &Destination,
        listener_port: u16,
        clusters: &mut BTreeMap<String, Option<p::Cluster>>,
    ) -> String {
        let host = resolve_short_name(&dest.host, vs.namespace());
        let want_port = dest.port.as_ref().map(|p| p.number);
        let resolved = self.resolve_destination(vs, field, dest, listener_port, "");
        let Some(r) = resolved else {
            let port = want_port.unwrap_or(i64::from(listener_port));
            let name = format!("outbound|{port}|{}|{host}", dest.subset);
            clusters.entry(name.clone()).or_insert(None);
            return name;
        };
        let name = format!("outbound|{}|{}|{host}", r.port.number, dest.subset);
        if clusters.contains_key(&name) {
            return name;
        }
        if r.eps.is_empty() {
            self.warn(
                vs,
                field.to_string(),
                format!("{name} has no endpoints: requests get 503 no healthy upstream"),
            );
        }
        let policy = effective_policy(r.dr_policy, r.subset_policy, r.port.number);
        let mut endpoints: Vec<p::Endpoint> = r
            .eps
            .iter()
            .map(|e| p::Endpoint {
                addr: e.addr,
                port: e.port,
                weight: u32::try_from(e.weight).unwrap_or(u32::MAX),
            })
            .collect();
        endpoints.sort();
        endpoints.dedup();
        let proto = r.port.protocol.to_ascii_uppercase();
        let subset = r.subset.map(|s| s.name.as_str());
        let tls = effective_tls(r.dr_policy, subset.zip(r.subset_policy), r.port.number);
        // `file: DestinationRule ns/name`, as every config message starts: the agent logs
        // upstream TLS problems at apply time, away from the compiler's warnings.
        let dr_id =
            r.dr.as_ref()
                .and_then(|d| {
                    let id = d.ids.first()?;
                    Some(match d.files.first() {
                        Some(f) => format!("{}: {id}", f.display()),
                        None => id.clone(),
                    })
                })
                .unwrap_or_default();
        let tls = tls.and_then(|(v, f)| {
            self.upstream_tls(vs, field, v, &dr_id, &f, &host, &proto, r.entry_sans)
        });
        let cluster = p::Cluster {
            name: name.clone(),
            namespace: r.namespace.to_string(),
            http2: Protocol::parse(&r.port.protocol).is_http2(),
            endpoints,
            lb: policy.0,
            connect_timeout_ms: policy.1,
            limits: policy.2,
            outlier: policy.3,
            tls,
        };
        clusters.insert(name.clone(), Some(cluster));
        name
    }
}

fn lb_plan(lb: Option<&LoadBalancer>) -> p::Lb {
    let Some(lb) = lb else {
        return p::Lb::LeastRequest;
    };
    if let Some(ch) = &lb.consistent_hash {
        if let Some(h) = &ch.http_header_name {
            return p::Lb::HashHeader(h.to_ascii_lowercase());
        }
        if let Some(c) = &ch.http_cookie {
            let get = |k: &str| c.get(k).and_then(Value::as_str).map(String::from);
            return p::Lb::HashCookie {
                name: get("name").unwrap_or_default(),
                path: get("path").unwrap_or_default(),
                ttl_s: get("ttl")
                    .as_deref()
                    .and_then(parse_duration)
                    .map(|d| d.as_secs()),
            };
        }
        if ch.use_source_ip == Some(true) {
            return p::Lb::HashSourceIp;
        }
        if let Some(q) = &ch.http_query_parameter_name {
            return p::Lb::HashQuery(q.clone());
        }
    }
    match lb.simple.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("ROUND_ROBIN") => p::Lb::RoundRobin,
        Some("RANDOM") => p::Lb::Random,
        _ => p::Lb::LeastRequest,
    }
}

fn pool_plan(cp: Option<&Value>) -> (u64, p::Limits) {
    let mut limits = p::Limits::default();
    let mut connect_ms = 10_000;
    let Some(cp) = cp.and_then(|v| serde_yaml::from_value::<ConnectionPool>(v.clone()).ok()) else {
        return (connect_ms, limits);
    };
    let lim = |v: Option<i64>| {
        v.filter(|n| *n > 0)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    if let Some(t) = &cp.tcp {
        if let Some(n) = lim(t.max_connections) {
            limits.max_connections = n;
        }
        if let Some(ms) = duration_ms(&t.connect_timeout) {
            connect_ms = ms;
        }
    }
    if let Some(h) = &cp.http {
        if let Some(n) = lim(h.http1_max_pending_requests) {
            limits.max_pending_requests = n;
        }
        if let Some(n) = lim(h.http2_max_requests) {
            limits.max_requests = n;
        }
        if let Some(n) = lim(h.max_retries) {
            limits.max_retries = n;
        }
        if let Some(n) = lim(h.max_requests_per_connection) {
            limits.max_requests_per_connection = n;
        }
    }
    (connect_ms, limits)
}

fn outlier_plan(od: Option<&Value>) -> Option<p::Outlier> {
    let od: OutlierDetection = serde_yaml::from_value(od?.clone()).unwrap_or_default();
    let n = |v: Option<i64>, d: u32| v.map_or(d, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
    Some(p::Outlier {
        consecutive_5xx: n(od.consecutive5xx_errors, 5),
        consecutive_gateway_errors: n(od.consecutive_gateway_errors, 0),
        interval_ms: duration_ms(&od.interval).unwrap_or(10_000),
        base_ejection_ms: duration_ms(&od.base_ejection_time).unwrap_or(30_000),
        max_ejection_percent: n(od.max_ejection_percent, 10),
    })
}

/// §3.21: top level, replaced whole by its port-level entry; then each component the subset
/// sets replaces the inherited one; a subset port-level entry replaces all of them.
fn effective_policy(
    top: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u16,
) -> (p::Lb, u64, p::Limits, Option<p::Outlier>) {
    let mut lb: Option<&LoadBalancer> = None;
    let mut cp: Option<&Value> = None;
    let mut od: Option<&Value> = None;
    if let Some(tp) = top {
        match tp.port_level(port) {
            Some(pl) => {
                lb = pl.load_balancer.as_ref();
                cp = pl.connection_pool.as_ref();
                od = pl.outlier_detection.as_ref();
            }
            None => {
                lb = tp.load_balancer.as_ref();
                cp = tp.connection_pool.as_ref();
                od = tp.outlier_detection.as_ref();
            }
        }
    }
    if let Some(stp) = subset {
        if let Some(pl) = stp.port_level(port) {
            lb = pl.load_balancer.as_ref();
            cp = pl.connection_pool.as_ref();
            od = pl.outlier_detection.as_ref();
        } else {
            if stp.load_balancer.is_some() {
                lb = stp.load_balancer.as_ref();
            }
            if stp.connection_pool.is_some() {
                cp = stp.connection_pool.as_ref();
            }
            if stp.outlier_detection.is_some() {
                od = stp.outlier_detection.as_ref();
            }
        }
    }
    let (connect_ms, limits) = pool_plan(cp);
    (lb_plan(lb), connect_ms, limits, outlier_plan(od))
}
