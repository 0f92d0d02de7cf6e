//! Istio `ValidateServiceEntry`.

use std::collections::BTreeSet;

use serde_yaml::Value;

use super::{export_to, metadata, validate_port, Diag, Findings};
use crate::config::model::{ServiceEntry, ServiceEntrySpec, WorkloadEntry};
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

/// The label that opts a ServiceEntry out of Istio's IP auto-allocation.
const AUTOALLOCATE_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";
const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";

fn upper(p: &str) -> String {
    p.to_ascii_uppercase()
}

fn is_http(p: &str) -> bool {
    matches!(
        upper(p).as_str(),
        "HTTP" | "HTTP_PROXY" | "HTTP2" | "GRPC" | "GRPC-WEB"
    )
}

fn is_tls(p: &str) -> bool {
    matches!(upper(p).as_str(), "HTTPS" | "TLS")
}

/// Istio `Instance.IsTCP`: the opaque protocols (TCP, HTTPS, TLS, Mongo, Redis, MySQL).
fn is_tcp(p: &str) -> bool {
    matches!(
        upper(p).as_str(),
        "TCP" | "HTTPS" | "TLS" | "MONGO" | "REDIS" | "MYSQL"
    )
}

pub(super) fn service_entry(d: &mut Diag<'_>, se: &ServiceEntry) {
    metadata(d, se);
    let mut f = Findings::default();
    validate_service_entry(&mut f, se);
    d.take(f);
}

/// Istio `ValidateServiceEntry`, plus this gateway's warnings where a valid object cannot
/// be served here (no DNS resolution, no workload registry).
fn validate_service_entry(f: &mut Findings, se: &ServiceEntry) {
    let s: &ServiceEntrySpec = &se.spec;
    let raw_resolution = s.resolution.as_deref().unwrap_or("NONE");
    let resolution = s.resolution();
    if let Some(ws) = &s.workload_selector {
        alpha_workload_selector(f, "spec.workloadSelector", ws);
    }
    if s.workload_selector.is_some() && s.endpoints.is_some() {
        f.err(
            "spec",
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }
    if s.hosts.is_empty() {
        f.err("spec.hosts", "service entry must have at least one host");
    }
    for (j, h) in s.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{j}]");
        if h == "*" {
            f.err(&at, format!("invalid host {h}"));
        } else {
            f.check(&at, validate_wildcard_domain(h));
            if resolution != "DYNAMIC_DNS" {
                if let Err(e) = validate_partial_wildcard(h) {
                    f.warn(&at, e);
                }
            }
        }
    }
    let mut cidr = false;
    for (j, a) in s.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        f.check(&format!("spec.addresses[{j}]"), validate_ip_subnet(a));
    }
    if cidr && resolution != "NONE" && resolution != "STATIC" {
        f.err(
            "spec.addresses",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }

    // Istio allocates addresses itself (PILOT_ENABLE_IP_AUTOALLOCATE, on by default) unless
    // the resolution is NONE or the label opts out.
    let opted_out = se
        .metadata
        .labels
        .get(AUTOALLOCATE_LABEL)
        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    let auto_allocation = resolution != "NONE" && !opted_out && s.addresses.is_empty();
    let mut port_names = BTreeSet::new();
    let mut port_numbers = BTreeSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        if !port_names.insert(p.name.clone()) {
            f.err(
                format!("{at}.name"),
                format!("service entry port name {:?} already defined", p.name),
            );
        }
        if !port_numbers.insert(p.number) {
            f.err(
                format!("{at}.number"),
                format!("service entry port {} already defined", p.number),
            );
        }
        if p.target_port != 0 {
            f.check(&format!("{at}.targetPort"), validate_port(p.target_port));
        }
        if s.addresses.is_empty()
            && !auto_allocation
            && (p.protocol.is_empty() || p.protocol == "TCP")
        {
            f.warn(
                &at,
                "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled",
            );
        }
        if !is_dns1123_label(&p.name) {
            f.err(
                format!("{at}.name"),
                format!("invalid port name: {}", p.name),
            );
        }
        if !p.protocol.is_empty() && !service_protocol_known(&p.protocol) {
            f.err(
                format!("{at}.protocol"),
                format!("unsupported protocol: {}", p.protocol),
            );
        }
        f.check(&format!("{at}.number"), validate_port(p.number));
    }

    let endpoints = s.endpoints();
    match raw_resolution {
        "NONE" => {
            if !endpoints.is_empty() {
                f.err(
                    "spec.endpoints",
                    "no endpoints should be provided for resolution type none",
                );
            }
            if s.workload_selector.is_some() {
                f.warn(
                    "spec.workloadSelector",
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
            f.warn(
                "spec.resolution",
                "resolution NONE forwards to the original destination, which is this gateway itself; the service has no endpoints here",
            );
        }
        "STATIC" => {
            for (i, e) in endpoints.iter().enumerate() {
                validate_workload_entry(
                    f,
                    &format!("spec.endpoints[{i}]"),
                    e,
                    Some(&port_names),
                    false,
                );
            }
        }
        "DNS" | "DNS_ROUND_ROBIN" => {
            if endpoints.is_empty() {
                if let Some(e) = s.hosts.iter().find_map(|h| validate_fqdn(h).err()) {
                    f.err(
                        "spec.hosts",
                        format!("hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode {resolution}, {e}"),
                    );
                }
            }
            if resolution == "DNS_ROUND_ROBIN" && endpoints.len() > 1 {
                f.err(
                    "spec.endpoints",
                    format!("there must only be 0 or 1 endpoint for resolution mode {resolution}"),
                );
            }
            for (i, e) in endpoints.iter().enumerate() {
                dns_endpoint(f, &format!("spec.endpoints[{i}]"), e, &port_names);
            }
            if !s.addresses.is_empty() && s.hosts.len() > 1 {
                // Istio looks at the first TCP port only, and only warns (a TODO there).
                if s.ports.iter().any(|p| is_tcp(&p.protocol)) {
                    f.warn(
                        "spec.hosts",
                        "service entry can not have more than one host specified simultaneously with address and tcp port",
                    );
                }
            }
            f.warn(
                "spec.resolution",
                format!("resolution {resolution}: this gateway resolves no DNS; the service has no endpoints"),
            );
        }
        "DYNAMIC_DNS" => {
            if s.hosts.is_empty() {
                f.err(
                    "spec.hosts",
                    format!("at least one wildcard host must be provided for resolution type {resolution}"),
                );
            }
            for (j, h) in s.hosts.iter().enumerate() {
                if !h.starts_with('*') {
                    f.err(
                        format!("spec.hosts[{j}]"),
                        format!("host must be wildcarded for resolution mode {resolution}"),
                    );
                }
            }
            // The missing spaces are Istio's.
            if !s.addresses.is_empty() {
                f.err(
                    "spec.addresses",
                    format!("addresses cannot be set for resolution type {resolution}. HTTP route domains will only be generatedfrom the hosts field values"),
                );
            }
            if !endpoints.is_empty() {
                f.err(
                    "spec.endpoints",
                    format!("endpoints cannot be set for resolution type {resolution}. Destination IP address determined from hostsfield values"),
                );
            }
            for (i, p) in s.ports.iter().enumerate() {
                let ok = matches!(
                    upper(&p.protocol).as_str(),
                    "HTTP" | "TLS" | "GRPC" | "HTTP2"
                );
                if !ok {
                    f.err(
                        format!("spec.ports[{i}].protocol"),
                        format!("only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type {resolution}"),
                    );
                }
            }
            let location = s.location.as_deref().unwrap_or("MESH_EXTERNAL");
            let waypoint = se
                .metadata
                .labels
                .get(USE_WAYPOINT_LABEL)
                .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("none"));
            if location == "MESH_INTERNAL" && waypoint {
                f.err(
                    "spec.location",
                    format!("location MESH_INTERNAL with resolution type {resolution} is not supported when using waypoints"),
                );
            }
            f.warn(
                "spec.resolution",
                format!("resolution {resolution}: this gateway resolves no DNS; the service has no endpoints"),
            );
        }
        other => f.err(
            "spec.resolution",
            format!("unsupported resolution type {other}"),
        ),
    }

    // Plain TCP cannot tell hosts apart (no Host header, no SNI).
    if resolution != "NONE"
        && s.hosts.len() > 1
        && s.ports
            .iter()
            .any(|p| !is_http(&p.protocol) && !is_tls(&p.protocol))
    {
        f.err(
            "spec.hosts",
            "multiple hosts provided with non-HTTP, non-TLS ports",
        );
    }
    if let Some(loc) = &s.location {
        if loc != "MESH_EXTERNAL" && loc != "MESH_INTERNAL" {
            f.err("spec.location", format!("invalid location {loc:?}"));
        }
    }
    if s.workload_selector.is_some() {
        f.warn(
            "spec.workloadSelector",
            "workloadSelector is not supported by this gateway (no workload registry); the service has no endpoints",
        );
    }
    f.errs(
        "spec.exportTo",
        export_to(&se.metadata.namespace, &s.export_to, true, false),
    );
}

/// Istio `ValidateAlphaWorkloadSelector` (`labels`, the networking.v1 form).
fn alpha_workload_selector(f: &mut Findings, at: &str, ws: &Value) {
    let labels: Vec<(String, String)> = match ws.get("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                let s = |x: &Value| x.as_str().map(str::to_string).unwrap_or_default();
                (s(k), s(v))
            })
            .collect(),
        Some(_) => {
            f.err(format!("{at}.labels"), "labels must be a map");
            return;
        }
    };
    for (k, v) in &labels {
        if k.is_empty() {
            f.err(
                format!("{at}.labels"),
                format!("empty key is not supported in selector: \"{k}={v}\""),
            );
        }
        if k.contains('*') || v.contains('*') {
            f.err(
                format!("{at}.labels"),
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
    }
    if labels.is_empty() {
        f.warn(
            at,
            "service entry: workload selector specified without labels, will be applied to all services in namespace",
        );
    }
}

/// The DNS branch of Istio `ValidateServiceEntry` checks endpoints itself, not with
/// `validateWorkloadEntry`: an address must be an IP or an FQDN (so never empty or unix://).
fn dns_endpoint(f: &mut Findings, at: &str, e: &WorkloadEntry, service_ports: &BTreeSet<String>) {
    if !is_ip(&e.address) && validate_fqdn(&e.address).is_err() {
        f.err(
            format!("{at}.address"),
            format!(
                "endpoint address {:?} is not a valid FQDN or an IP address",
                e.address
            ),
        );
    }
    f.errs(&format!("{at}.labels"), validate_labels(&e.labels));
    endpoint_ports(f, at, e, Some(service_ports));
    endpoint_weight(f, at, e);
}

fn endpoint_ports(
    f: &mut Findings,
    at: &str,
    e: &WorkloadEntry,
    service_ports: Option<&BTreeSet<String>>,
) {
    for (name, port) in &e.ports {
        let pat = format!("{at}.ports.{name}");
        if service_ports.is_some_and(|sp| !sp.contains(name)) {
            f.err(
                &pat,
                format!("endpoint port {port} is not defined by the service entry"),
            );
        }
        if !is_dns1123_label(name) {
            f.err(&pat, format!("invalid port name: {name}"));
        }
        f.check(&pat, validate_port(*port));
    }
}

/// `weight` is a uint32: anything else fails Istio's parser.
fn endpoint_weight(f: &mut Findings, at: &str, e: &WorkloadEntry) {
    if e.weight < 0 || e.weight > i64::from(u32::MAX) {
        f.err(
            format!("{at}.weight"),
            format!("weight {} out of range", e.weight),
        );
    }
}

/// Istio `ValidateUnixAddress` (the part after `unix://`).
fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    // Abstract sockets (`@name`) are allowed.
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// Istio `validateWorkloadEntry`, as ServiceEntry STATIC endpoints use it (`service_ports`
/// set) and as a WorkloadEntry would (`None`).
fn validate_workload_entry(
    f: &mut Findings,
    at: &str,
    e: &WorkloadEntry,
    service_ports: Option<&BTreeSet<String>>,
    allow_fqdn: bool,
) {
    let addr = &e.address;
    if addr.is_empty() {
        if e.network.is_empty() {
            f.err(format!("{at}.address"), "address is required");
            return;
        }
        f.warn(
            format!("{at}.address"),
            format!("address is unset with network {:?}", e.network),
        );
    }
    let mut unix = false;
    if let Some(path) = addr.strip_prefix("unix://") {
        unix = true;
        f.check(&format!("{at}.address"), validate_unix_address(path));
        if !e.ports.is_empty() {
            f.err(
                format!("{at}.ports"),
                format!("unix endpoint {addr} must not include ports"),
            );
        }
    } else if !addr.is_empty() && !is_ip(addr) {
        if !allow_fqdn {
            f.err(
                format!("{at}.address"),
                format!("endpoint address {addr:?} is not a valid IP address"),
            );
        } else if validate_fqdn(addr).is_err() {
            f.err(
                format!("{at}.address"),
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    endpoint_ports(f, at, e, service_ports);
    f.errs(&format!("{at}.labels"), validate_labels(&e.labels));
    if unix && service_ports.is_some_and(|sp| sp.len() != 1) {
        f.err(at, "exactly 1 service port required for unix endpoints");
    }
    endpoint_weight(f, at, e);
}

#[cfg(test)]
mod tests {
    use crate::config::load::load_str;
    use crate::config::validate::validate;
    use crate::config::validate::Findings;
    use crate::config::WorkloadEntry;

    /// (errors, warnings) of one ServiceEntry through `validate`, the path `gateway check`
    /// takes. `meta` is extra metadata YAML (labels).
    fn check(meta: &str, spec: &str) -> (Vec<String>, Vec<String>) {
        let y = format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se, namespace: ns{meta}}}\nspec:\n{spec}");
        let m = load_str("t.yaml", &y).expect("loads");
        let (e, w) = validate(&m);
        let show = |f: &str, m: &str| format!("{f}: {m}");
        (
            e.iter().map(|e| show(&e.field, &e.message)).collect(),
            w.iter().map(|w| show(&w.field, &w.message)).collect(),
        )
    }

    /// Istio-level warnings only: this gateway's own notes (no DNS, no workload registry,
    /// NONE forwarding to itself) are left out.
    fn istio_warnings(w: &[String]) -> Vec<&String> {
        w.iter()
            .filter(|w| !w.contains("this gateway") && !w.contains("resolution NONE forwards"))
            .collect()
    }

    const P80: &str = "  ports: [{number: 80, name: http, protocol: HTTP}]\n";
    const P443: &str = "  ports: [{number: 443, name: https, protocol: HTTPS}]\n";
    const PTCP: &str = "  ports: [{number: 5432, name: tcp, protocol: TCP}]\n";

    #[test]
    fn validate_service_entry() {
        let cases: Vec<(&str, &str, String, bool, bool)> = vec![
            ("discovery type DNS", "", format!("  hosts: [google.com]\n{P80}  resolution: DNS\n  endpoints: [{{address: lon.google.com, ports: {{http: 8080}}}}, {{address: 1.2.3.4}}]"), true, false),
            ("discovery type DNS Round Robin", "", format!("  hosts: [google.com]\n{P80}  resolution: DNS_ROUND_ROBIN\n  endpoints: [{{address: lon.google.com}}]"), true, false),
            ("DNS, one host with IP address and https port", "", format!("  hosts: [google.com]\n  addresses: [10.10.10.10]\n{P443}  resolution: DNS"), true, false),
            ("DNS, multi hosts with IP address and https port", "", format!("  hosts: [google.com, istio.io]\n  addresses: [10.10.10.10]\n{P443}  resolution: DNS"), true, true),
            ("DNS, IP in endpoints", "", format!("  hosts: [google.com]\n{P80}  resolution: DNS\n  endpoints: [{{address: 1.1.1.1}}]"), true, false),
            ("DYNAMIC_DNS", "", format!("  hosts: ['*.google.com']\n{P80}  resolution: DYNAMIC_DNS"), true, false),
            ("empty hosts", "", format!("{P80}  resolution: DNS"), false, false),
            ("bad hosts", "", format!("  hosts: ['-']\n{P80}  resolution: DNS"), false, false),
            ("full wildcard host", "", format!("  hosts: [google.com, '*']\n{P80}  resolution: DNS"), false, false),
            ("short name host", "", format!("  hosts: [foo, bar.com]\n{P80}  resolution: DNS"), true, false),
            ("undefined endpoint port", "", format!("  hosts: [google.com]\n{P80}  resolution: DNS\n  endpoints: [{{address: lon.google.com, ports: {{http-dummy: 8080}}}}]"), false, false),
            ("DNS, non-FQDN endpoint", "", format!("  hosts: [google.com]\n{P80}  resolution: DNS\n  endpoints: [{{address: '*.lon.google.com'}}]"), false, false),
            ("DNS, non-FQDN host", "", format!("  hosts: ['*.google.com']\n{P80}  resolution: DNS"), false, false),
            ("DNS, unix endpoint", "", format!("  hosts: ['*.google.com']\n{P80}  resolution: DNS\n  endpoints: [{{address: 'unix:///lon/google/com'}}]"), false, false),
            ("discovery type none", "", format!("  hosts: [google.com]\n{P80}  resolution: NONE"), true, false),
            ("none, endpoints provided", "", format!("  hosts: [google.com]\n{P80}  resolution: NONE\n  endpoints: [{{address: 1.1.1.1}}]"), false, false),
            ("none, cidr addresses", "", format!("  hosts: [google.com]\n  addresses: [172.1.2.16/16]\n{P80}  resolution: NONE"), true, false),
            ("static, cidr addresses with endpoints", "", format!("  hosts: [google.com]\n  addresses: [172.1.2.16/16]\n{P80}  resolution: STATIC\n  endpoints: [{{address: 1.1.1.1}}]"), true, false),
            ("static", "", format!("  hosts: [google.com]\n  addresses: [172.1.2.16]\n{P80}  resolution: STATIC\n  endpoints: [{{address: 1.1.1.1}}]"), true, false),
            ("static, FQDN in endpoints", "", format!("  hosts: [google.com]\n  addresses: [172.1.2.16]\n{P80}  resolution: STATIC\n  endpoints: [{{address: google.com}}]"), false, false),
            ("static, bad endpoint port name", "", format!("  hosts: [google.com]\n  addresses: [172.1.2.16]\n{P80}  resolution: STATIC\n  endpoints: [{{address: 1.1.1.1, ports: {{bad-name: 80}}}}]"), false, false),
            ("none, conflicting port names", "", "  hosts: [google.com]\n  ports: [{number: 80, name: http-dup, protocol: HTTP}, {number: 81, name: http-dup, protocol: HTTP}]\n  resolution: NONE".to_string(), false, false),
            ("none, conflicting port numbers", "", "  hosts: [google.com]\n  ports: [{number: 80, name: http, protocol: HTTP}, {number: 80, name: http2, protocol: HTTP}]\n  resolution: NONE".to_string(), false, false),
            ("unix socket", "", format!("  hosts: [uds.cluster.local]\n{P80}  resolution: STATIC\n  endpoints: [{{address: 'unix:///path/to/socket'}}]"), true, false),
            ("unix socket, relative path", "", format!("  hosts: [uds.cluster.local]\n{P80}  resolution: STATIC\n  endpoints: [{{address: 'unix://./path/to/socket'}}]"), false, false),
            ("unix socket, endpoint ports", "", format!("  hosts: [uds.cluster.local]\n{P80}  resolution: STATIC\n  endpoints: [{{address: 'unix:///path/to/socket', ports: {{http: 270}}}}]"), false, false),
            ("unix socket, multiple service ports", "", "  hosts: [uds.cluster.local]\n  ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http2, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 'unix:///path/to/socket'}]".to_string(), false, false),
            ("empty protocol", "", "  hosts: [google.com]\n  addresses: [172.1.2.16/16]\n  ports: [{number: 80, name: http}]\n  resolution: NONE".to_string(), true, false),
            ("selector", "", format!("  hosts: [google.com]\n{P80}  workloadSelector: {{labels: {{app: foo}}}}\n  resolution: STATIC"), true, false),
            ("workload selector without labels", "", format!("  hosts: [google.com]\n{P80}  workloadSelector: {{}}\n  resolution: STATIC"), true, true),
            ("selector and endpoints", "", format!("  hosts: [google.com]\n{P80}  workloadSelector: {{labels: {{app: foo}}}}\n  resolution: STATIC\n  endpoints: [{{address: 1.1.1.1}}]"), false, false),
            ("selector and resolution NONE", "", format!("  hosts: [google.com]\n{P80}  workloadSelector: {{labels: {{app: foo}}}}\n  resolution: NONE"), true, true),
            ("bad selector key", "", format!("  hosts: [google.com]\n{P80}  workloadSelector: {{labels: {{'': foo}}}}\n  resolution: STATIC"), false, false),
            ("valid target port", "", "  hosts: [google.com]\n  ports: [{number: 80, targetPort: 8080, name: http, protocol: HTTP}]\n  resolution: DNS".to_string(), true, false),
            ("invalid target port", "", "  hosts: [google.com]\n  ports: [{number: 80, targetPort: 65536, name: http, protocol: HTTP}]\n  resolution: DNS".to_string(), false, false),
            ("valid endpoint port", "", format!("  hosts: [google.com]\n{P80}  resolution: STATIC\n  endpoints: [{{address: 1.1.1.1, ports: {{http: 8080}}}}]"), true, false),
            ("invalid endpoint port", "", format!("  hosts: [google.com]\n{P80}  resolution: STATIC\n  endpoints: [{{address: 1.1.1.1, ports: {{http: 65536}}}}]"), false, false),
            ("protocol unset, addresses empty, NONE", "", "  hosts: [google.com]\n  ports: [{number: 80, name: tcp}]\n  resolution: NONE".to_string(), true, true),
            ("protocol TCP, addresses empty, NONE", "", format!("  hosts: [google.com]\n{PTCP}  resolution: NONE"), true, true),
            ("protocol TCP, addresses empty, auto-allocated", "", format!("  hosts: [google.com]\n{PTCP}  resolution: DNS"), true, false),
            ("protocol TCP, addresses empty, auto-allocation opted out", ", labels: {networking.istio.io/enable-autoallocate-ip: 'false'}", format!("  hosts: [google.com]\n{PTCP}  resolution: DNS"), true, true),
            ("dns round robin with more than one endpoint", "", format!("  hosts: [google.com]\n{P80}  resolution: DNS_ROUND_ROBIN\n  endpoints: [{{address: a.example.com}}, {{address: b.example.com}}]"), false, false),
            ("dns round robin with 0 endpoints", "", format!("  hosts: [google.com]\n{P80}  resolution: DNS_ROUND_ROBIN"), true, false),
            ("partial wildcard hosts", "", format!("  hosts: ['*.nytimes.com', '*washingtonpost.com']\n{P80}  resolution: NONE"), true, true),
            ("network set with no address on endpoint", "", format!("  hosts: [www.example.com]\n{P80}  resolution: STATIC\n  endpoints: [{{network: network-2}}]"), true, true),
            ("DYNAMIC_DNS, unsupported TCP protocol", "", format!("  hosts: ['*.google.com']\n{PTCP}  resolution: DYNAMIC_DNS"), false, false),
            ("DYNAMIC_DNS, GRPC protocol", "", "  hosts: ['*.google.com']\n  ports: [{number: 80, name: grpc, protocol: GRPC}]\n  resolution: DYNAMIC_DNS".to_string(), true, false),
            ("DYNAMIC_DNS, FQDN host", "", format!("  hosts: [google.com]\n{P80}  resolution: DYNAMIC_DNS"), false, false),
            ("DYNAMIC_DNS, endpoints set", "", format!("  hosts: ['*.google.com']\n{P80}  resolution: DYNAMIC_DNS\n  endpoints: [{{address: 1.1.1.1}}]"), false, false),
            ("DYNAMIC_DNS, IP address set", "", format!("  hosts: ['*.google.com']\n  addresses: [10.0.0.1]\n{P80}  resolution: DYNAMIC_DNS"), false, false),
            ("DYNAMIC_DNS, empty hosts", "", format!("{P80}  resolution: DYNAMIC_DNS"), false, false),
            ("DYNAMIC_DNS, multiple wildcarded hosts", "", format!("  hosts: ['*.google.com', '*.istio.io']\n{P80}  resolution: DYNAMIC_DNS"), true, false),
            ("DYNAMIC_DNS, internal mesh location", "", format!("  hosts: ['*.google.com']\n{P80}  location: MESH_INTERNAL\n  resolution: DYNAMIC_DNS"), true, false),
            ("DYNAMIC_DNS, MESH_INTERNAL with waypoint", ", labels: {istio.io/use-waypoint: wp}", format!("  hosts: ['*.google.com']\n{P80}  location: MESH_INTERNAL\n  resolution: DYNAMIC_DNS"), false, false),
            ("multiple hosts with a TCP port", "", format!("  hosts: [a.example.com, b.example.com]\n  addresses: [10.0.0.1]\n{PTCP}  resolution: STATIC\n  endpoints: [{{address: 1.1.1.1}}]"), false, false),
            ("lower-case resolution (enum names are case-sensitive)", "", format!("  hosts: [google.com]\n{P80}  resolution: dns"), false, false),
        ];
        for (name, meta, spec, valid, warns) in &cases {
            let (errs, w) = check(meta, spec);
            assert_eq!(errs.is_empty(), *valid, "{name}: {errs:#?}");
            let w = istio_warnings(&w);
            assert_eq!(!w.is_empty(), *warns, "{name}: {w:#?}");
        }
    }

    #[test]
    fn validate_workload_entry() {
        let cases: &[(&str, &str, bool, bool)] = &[
            ("valid", "{address: 1.2.3.4}", true, false),
            ("missing address", "{}", false, false),
            (
                "missing address with network",
                "{network: network-2}",
                true,
                true,
            ),
            (
                "valid unix endpoint",
                "{address: 'unix:///lon/google/com'}",
                true,
                false,
            ),
            (
                "invalid unix endpoint",
                "{address: 'unix:///lon/google/com', ports: {'7777': 7777}}",
                false,
                false,
            ),
            (
                "valid FQDN",
                "{address: validdns.com, ports: {'7777': 7777}}",
                true,
                false,
            ),
            (
                "invalid FQDN",
                "{address: 'invaliddns.com:9443', ports: {'7777': 7777}}",
                false,
                false,
            ),
            (
                "valid IP",
                "{address: 172.16.1.1, ports: {'7777': 7777}}",
                true,
                false,
            ),
            (
                "abstract unix socket",
                "{address: 'unix://@sock'}",
                true,
                false,
            ),
            (
                "weight beyond uint32",
                "{address: 1.2.3.4, weight: 4294967296}",
                false,
                false,
            ),
        ];
        for (name, src, valid, warns) in cases {
            let e: WorkloadEntry = serde_yaml::from_str(src).expect("entry");
            let mut f = Findings::default();
            super::validate_workload_entry(&mut f, "e", &e, None, true);
            assert_eq!(f.errors.is_empty(), *valid, "{name}: {f:?}");
            assert_eq!(!f.warnings.is_empty(), *warns, "{name}: {f:?}");
        }
    }
}
