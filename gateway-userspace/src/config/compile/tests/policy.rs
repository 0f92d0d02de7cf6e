//! Load-balancing policy from DestinationRules, NAT mode and deterministic output.

use super::{
    dr, gateway, input, manifests, plan, plan_with, se, se_a, tcp_gw, vs, ROUTE_A, VIP1, VIP2,
};
use crate::config::compile::compile;
use crate::config::CompileInput;
use crate::plan::{HashMode, NatMode};

#[test]
fn use_source_ip_gives_source_ip_hash() {
    let y = format!(
        "{}{}{}{}",
        tcp_gw(),
        vs("echo", "default", ROUTE_A),
        se_a(),
        dr("a", "default", "  host: a.example.com\n  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}\n")
    );
    assert_eq!(plan(&y).l4[0].hash, HashMode::SourceIp);
    // A subset policy overrides the top-level one.
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: a.example.com, subset: s}\n";
    let y = format!(
        "{}{}{}{}",
        tcp_gw(),
        vs("echo", "default", route),
        se_a(),
        dr("a", "default", "  host: a.example.com\n  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}\n  subsets: [{name: s, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}]\n")
    );
    assert_eq!(plan(&y).l4[0].hash, HashMode::FiveTuple);
    // A port-level entry replaces the top-level load balancer for its port.
    let y = format!(
        "{}{}{}{}",
        tcp_gw(),
        vs("echo", "default", ROUTE_A),
        se_a(),
        dr("a", "default", "  host: a.example.com\n  trafficPolicy:\n    loadBalancer: {simple: RANDOM}\n    portLevelSettings: [{port: {number: 9000}, loadBalancer: {consistentHash: {useSourceIp: true}}}]\n")
    );
    assert_eq!(plan(&y).l4[0].hash, HashMode::SourceIp);
}

#[test]
fn destination_rule_lookup_order() {
    // A DR in the agent namespace (not the root one) beats the service's namespace.
    let y = format!(
        "{}{}{}{}{}",
        tcp_gw(),
        vs("echo", "default", ROUTE_A),
        se_a(),
        dr("a", "default", "  host: a.example.com\n  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}\n"),
        dr("a-local", "gw-ns", "  host: \"*.example.com\"\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n")
    );
    let inp = CompileInput {
        namespace: "gw-ns".into(),
        ..input()
    };
    assert_eq!(plan_with(&y, &inp).0.l4[0].hash, HashMode::FiveTuple);
    // In the root namespace only `exportTo: .` rules come first; others rank after the
    // service's namespace.
    let y = format!(
        "{}{}{}{}{}",
        tcp_gw(),
        vs("echo", "default", ROUTE_A),
        se_a(),
        dr("a", "default", "  host: a.example.com\n  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}\n"),
        dr("a-root", "istio-system", "  host: a.example.com\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n")
    );
    assert_eq!(plan(&y).l4[0].hash, HashMode::SourceIp);
    let y = y.replace("  host: a.example.com\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}", "  host: a.example.com\n  exportTo: [\".\"]\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}");
    assert_eq!(plan(&y).l4[0].hash, HashMode::FiveTuple);
}

#[test]
fn disagreeing_hash_policies_fall_back_with_warning() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: a.example.com}\n      weight: 1\n    - destination: {host: b.example.com}\n      weight: 1\n";
    let y = format!(
        "{}{}{}{}{}",
        tcp_gw(),
        vs("echo", "default", route),
        se_a(),
        se("b", "b.example.com", "  - {address: 10.0.0.2}\n"),
        dr("a", "default", "  host: a.example.com\n  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}\n")
    );
    let (p, w) = plan_with(&y, &input());
    assert_eq!(p.l4[0].hash, HashMode::FiveTuple);
    assert!(w.iter().any(|w| w.message.contains("disagree")));
}

#[test]
fn nat_annotation_overrides_default() {
    let gw = gateway(
        "gw",
        ", annotations: {gateway.dataplane/nat-mode: preserve-source}",
        "  - port: {number: 31400, name: tcp-echo, protocol: TCP}\n    hosts: [\"*\"]\n",
    );
    let y = format!("{gw}{}{}", vs("echo", "default", ROUTE_A), se_a());
    assert_eq!(plan(&y).l4[0].nat, NatMode::PreserveSource);
    let inp = CompileInput {
        default_nat: NatMode::PreserveSource,
        ..input()
    };
    let gw = gw.replace("preserve-source", "snat");
    let y = format!("{gw}{}{}", vs("echo", "default", ROUTE_A), se_a());
    assert_eq!(plan_with(&y, &inp).0.l4[0].nat, NatMode::Snat);
    let y = format!("{}{}{}", tcp_gw(), vs("echo", "default", ROUTE_A), se_a());
    assert_eq!(plan_with(&y, &inp).0.l4[0].nat, NatMode::PreserveSource);
}

#[test]
fn deterministic_regardless_of_file_order() {
    let docs = [
        gateway("gw", "", "  - port: {number: 31400, name: a, protocol: TCP}\n    hosts: [\"*\"]\n  - port: {number: 80, name: h, protocol: HTTP}\n    hosts: [\"*\"]\n  - port: {number: 5000, name: u, protocol: UDP}\n    hosts: [\"*\"]\n"),
        vs("v1", "default", "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: a.example.com}\n      weight: 30\n    - destination: {host: b.example.com}\n      weight: 70\n"),
        vs("v2", "default", "  gateways: [istio-system/gw]\n  tcp:\n  - route: [{destination: {host: b.example.com}}]\n"),
        se_a(),
        se("b", "b.example.com", "  - {address: 10.0.0.9}\n  - {address: 10.0.0.2}\n"),
    ];
    let inp = CompileInput {
        vips: vec![VIP2, VIP1],
        ..input()
    };
    let forward: String = docs.concat();
    let backward: String = docs.iter().rev().cloned().collect();
    let (p1, w1) = compile(&manifests(&forward), &inp);
    let (p2, w2) = compile(&manifests(&backward), &inp);
    assert_eq!(p1, p2);
    assert_eq!(w1.len(), w2.len());
    // Sorted output, and v1 (name order) wins.
    let keys: Vec<_> = p1.l4.iter().map(|s| (s.vip, s.port, s.proto)).collect();
    let mut sorted_keys = keys.clone();
    sorted_keys.sort();
    assert_eq!(keys, sorted_keys);
    assert_eq!(keys.len(), 4);
    assert!(p1
        .l4
        .iter()
        .all(|s| s.origin.contains("VirtualService default/v1")));
    assert_eq!(
        p1.l4[0]
            .backends
            .iter()
            .map(|b| b.addr.to_string())
            .collect::<Vec<_>>(),
        ["10.0.0.1", "10.0.0.2", "10.0.0.9"]
    );
    assert_eq!(p1.local.len(), 2);
}
