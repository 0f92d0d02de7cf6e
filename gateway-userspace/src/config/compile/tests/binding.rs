//! Which rules bind: rule order, gateway selection and binding, ports, exportTo and servers.

use std::net::{IpAddr, Ipv4Addr};

use super::{b, gateway, input, plan, plan_with, se, se_a, tcp_gw, vs, ROUTE_A, VIP1, VIP2};
use crate::config::CompileInput;
use crate::plan::{Plan, Proto};

#[test]
fn only_the_first_matching_tcp_rule_is_used() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - match: [{port: 1234}]\n    route: [{destination: {host: b.example.com}}]\n  - match: [{port: 31400}]\n    route: [{destination: {host: a.example.com}}]\n  - route: [{destination: {host: b.example.com}}]\n";
    let y = format!(
        "{}{}{}{}",
        tcp_gw(),
        vs("echo", "default", route),
        se_a(),
        se("b", "b.example.com", "  - {address: 10.0.0.2}\n")
    );
    let p = plan(&y);
    assert_eq!(p.l4[0].backends, [b("10.0.0.1", 9000, 100_000)]);
    assert!(p.l4[0]
        .origin
        .ends_with("VirtualService default/echo tcp[1]"));
}

#[test]
fn first_virtual_service_in_creation_order_wins() {
    let a = vs("v-a", "default", ROUTE_A).replace(
        "namespace: default}",
        "namespace: default, creationTimestamp: \"2024-02-01T00:00:00Z\"}",
    );
    let b_route = ROUTE_A.replace("a.example.com", "b.example.com");
    let b_vs = vs("v-b", "default", &b_route).replace(
        "namespace: default}",
        "namespace: default, creationTimestamp: \"2024-01-01T00:00:00Z\"}",
    );
    let y = format!(
        "{}{a}{b_vs}{}{}",
        tcp_gw(),
        se_a(),
        se("b", "b.example.com", "  - {address: 10.0.0.2}\n")
    );
    let p = plan(&y);
    assert_eq!(p.l4[0].backends, [b("10.0.0.2", 9000, 100_000)]);
    assert!(p.l4[0].origin.contains("VirtualService default/v-b"));
}

#[test]
fn port_match_selects_per_server() {
    let gw = gateway(
        "gw",
        "",
        "  - port: {number: 31400, name: a, protocol: TCP}\n    hosts: [\"*\"]\n  - port: {number: 31401, name: b, protocol: TCP}\n    hosts: [\"*\"]\n  - port: {number: 31402, name: c, protocol: TCP}\n    hosts: [\"*\"]\n",
    );
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - match: [{port: 31400}]\n    route: [{destination: {host: a.example.com}}]\n  - match: [{port: 31401}]\n    route: [{destination: {host: b.example.com}}]\n";
    let y = format!(
        "{gw}{}{}{}",
        vs("echo", "default", route),
        se_a(),
        se("b", "b.example.com", "  - {address: 10.0.0.2}\n")
    );
    let (p, w) = plan_with(&y, &input());
    let got: Vec<_> =
        p.l4.iter()
            .map(|s| (s.port, s.backends[0].addr.to_string()))
            .collect();
    assert_eq!(
        got,
        [
            (31400, "10.0.0.1".to_string()),
            (31401, "10.0.0.2".to_string())
        ]
    );
    // 31402 has no rule: not served, with a warning.
    assert!(
        w.iter()
            .any(|w| w.field == "spec.servers[2]" && w.message.contains("port not served")),
        "{w:#?}"
    );
}

#[test]
fn destination_subnets_per_vip() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - match: [{destinationSubnets: [192.0.2.2/32]}]\n    route: [{destination: {host: b.example.com}}]\n  - route: [{destination: {host: a.example.com}}]\n";
    let y = format!(
        "{}{}{}{}",
        tcp_gw(),
        vs("echo", "default", route),
        se_a(),
        se("b", "b.example.com", "  - {address: 10.0.0.2}\n")
    );
    let inp = CompileInput {
        vips: vec![VIP2, VIP1],
        ..input()
    };
    let (p, _) = plan_with(&y, &inp);
    let got: Vec<_> =
        p.l4.iter()
            .map(|s| (s.vip, s.backends[0].addr.to_string()))
            .collect();
    assert_eq!(
        got,
        [
            (VIP1, "10.0.0.1".to_string()),
            (VIP2, "10.0.0.2".to_string())
        ]
    );
}

#[test]
fn destination_subnets_ignored_on_unspecified_vip() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - match: [{destinationSubnets: [192.0.2.2/32]}]\n    route: [{destination: {host: a.example.com}}]\n";
    let y = format!("{}{}{}", tcp_gw(), vs("echo", "default", route), se_a());
    let inp = CompileInput {
        vips: vec![Ipv4Addr::UNSPECIFIED.into()],
        ..input()
    };
    let (p, _) = plan_with(&y, &inp);
    assert_eq!(p.l4.len(), 1);
    assert_eq!(p.l4[0].vip, IpAddr::from(Ipv4Addr::UNSPECIFIED));
}

#[test]
fn match_gateways_restricts_the_rule() {
    let route = "  gateways: [istio-system/gw, other]\n  tcp:\n  - match: [{gateways: [other]}]\n    route: [{destination: {host: b.example.com}}]\n  - route: [{destination: {host: a.example.com}}]\n";
    let other = gateway(
        "other",
        "",
        "  - port: {number: 1, name: x, protocol: TCP}\n    hosts: [\"*\"]\n",
    )
    .replace("namespace: istio-system", "namespace: default")
    .replace("istio: ingressgateway", "app: none");
    let y = format!(
        "{}{other}{}{}{}",
        tcp_gw(),
        vs("echo", "default", route),
        se_a(),
        se("b", "b.example.com", "  - {address: 10.0.0.2}\n")
    );
    assert_eq!(plan(&y).l4[0].backends, [b("10.0.0.1", 9000, 100_000)]);
}

#[test]
fn gateway_selector_not_matching_gives_nothing() {
    let y = format!(
        "{}{}{}",
        tcp_gw().replace("istio: ingressgateway", "istio: egressgateway"),
        vs("echo", "default", ROUTE_A),
        se_a()
    );
    let (p, _) = plan_with(&y, &input());
    assert_eq!(p, Plan::default());
    // An empty selector selects every workload.
    let y = format!(
        "{}{}{}",
        tcp_gw().replace("selector: {istio: ingressgateway}", "selector: {}"),
        vs("echo", "default", ROUTE_A),
        se_a()
    );
    assert_eq!(plan(&y).l4.len(), 1);
}

#[test]
fn vs_without_gateways_is_not_bound() {
    let route = "  tcp:\n  - route:\n    - destination: {host: a.example.com}\n";
    let y = format!(
        "{}{}{}",
        tcp_gw(),
        vs("echo", "default", route).replace("hosts: [\"*\"]", "hosts: [a.example.com]"),
        se_a()
    );
    let (p, w) = plan_with(&y, &input());
    assert!(p.l4.is_empty());
    assert!(w.iter().any(|w| w.message.contains("port not served")));
}

#[test]
fn export_to_and_host_namespace_binding() {
    // exportTo: [.] from namespace default is not visible to istio-system.
    let y = format!(
        "{}{}{}",
        tcp_gw(),
        vs(
            "echo",
            "default",
            &format!("  exportTo: [\".\"]\n{ROUTE_A}")
        ),
        se_a()
    );
    assert!(plan(&y).l4.is_empty());
    // Server host restricted to namespace apps: a VS in default does not bind...
    let gw = tcp_gw().replace("hosts: [\"*\"]", "hosts: [\"apps/*\"]");
    let y = format!("{gw}{}{}", vs("echo", "default", ROUTE_A), se_a());
    assert!(plan(&y).l4.is_empty());
    // ...one in apps does.
    let y = format!("{gw}{}{}", vs("echo", "apps", ROUTE_A), se_a());
    assert_eq!(plan(&y).l4.len(), 1);
    // VS hosts must overlap the server hosts.
    let gw = tcp_gw().replace("hosts: [\"*\"]", "hosts: [\"*.example.com\"]");
    let other = vs("echo", "default", ROUTE_A).replace("hosts: [\"*\"]", "hosts: [x.other.org]");
    assert!(plan(&format!("{gw}{other}{}", se_a())).l4.is_empty());
    let ok = vs("echo", "default", ROUTE_A).replace("hosts: [\"*\"]", "hosts: [tcp.example.com]");
    assert_eq!(plan(&format!("{gw}{ok}{}", se_a())).l4.len(), 1);
}

#[test]
fn udp_server_uses_tcp_rules() {
    let gw = gateway(
        "gw",
        "",
        "  - port: {number: 5353, name: dns, protocol: UDP}\n    hosts: [\"*\"]\n  - port: {number: 5353, name: dns-tcp, protocol: TCP}\n    hosts: [\"*\"]\n",
    );
    let y = format!("{gw}{}{}", vs("echo", "default", ROUTE_A), se_a());
    let p = plan(&y);
    let got: Vec<_> = p.l4.iter().map(|s| (s.port, s.proto)).collect();
    assert_eq!(got, [(5353, Proto::Tcp), (5353, Proto::Udp)]);
    assert_eq!(p.l4[1].backends, [b("10.0.0.1", 9000, 100_000)]);
}

#[test]
fn l7_servers_become_local_ports() {
    let gw = gateway(
        "gw",
        "",
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: c}\n  - port: {number: 443, name: https-2, protocol: HTTPS}\n    hosts: [\"b.example.com\"]\n    tls: {mode: PASSTHROUGH}\n",
    );
    let inp = CompileInput {
        vips: vec![VIP1, VIP2],
        ..input()
    };
    let (p, _) = plan_with(&gw, &inp);
    assert!(p.l4.is_empty());
    let got: Vec<_> = p.local.iter().map(|l| (l.vip, l.port)).collect();
    assert_eq!(got, [(VIP1, 80), (VIP1, 443), (VIP2, 80), (VIP2, 443)]);
    assert_eq!(
        p.local[1].origin,
        "Gateway istio-system/gw server https:443; Gateway istio-system/gw server https-2:443"
    );
}

#[test]
fn later_conflicting_server_is_dropped() {
    let first = gateway(
        "a",
        ", creationTimestamp: \"2024-01-01T00:00:00Z\"",
        "  - port: {number: 31400, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
    );
    let second = gateway(
        "b",
        ", creationTimestamp: \"2024-02-01T00:00:00Z\"",
        "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n",
    );
    let route = "  gateways: [istio-system/a, istio-system/b]\n  tcp:\n  - route: [{destination: {host: a.example.com}}]\n";
    let y = format!("{second}{first}{}{}", vs("echo", "default", route), se_a());
    let (p, w) = plan_with(&y, &input());
    assert!(p.l4.is_empty());
    assert_eq!(p.local.len(), 1);
    assert!(
        w.iter()
            .any(|w| w.resource == "Gateway istio-system/b" && w.message.contains("already taken")),
        "{w:#?}"
    );
}

#[test]
fn bind_limits_server_to_one_vip() {
    let gw = gateway(
        "gw",
        "",
        "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n    bind: 192.0.2.2\n  - port: {number: 31401, name: other, protocol: TCP}\n    hosts: [\"*\"]\n    bind: 10.9.9.9\n",
    );
    let inp = CompileInput {
        vips: vec![VIP1, VIP2],
        ..input()
    };
    let (p, w) = plan_with(
        &format!("{gw}{}{}", vs("echo", "default", ROUTE_A), se_a()),
        &inp,
    );
    let got: Vec<_> = p.l4.iter().map(|s| (s.vip, s.port)).collect();
    assert_eq!(got, [(VIP2, 31400)]);
    assert!(
        w.iter().any(|w| w.field == "spec.servers[1].bind"),
        "{w:#?}"
    );
}
