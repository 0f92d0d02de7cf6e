//! Where backends come from: ServiceEntry and Kubernetes endpoints, subsets, short names,
//! weights and families.

use std::net::IpAddr;

use super::{b, dr, input, kube_echo, plan, plan_with, se, se_a, tcp_gw, vs, ROUTE_A, VIP1};
use crate::config::CompileInput;
use crate::plan::{HashMode, L4Service, NatMode, Proto};

#[test]
fn single_destination_origin_and_defaults() {
    let p = plan(&format!(
        "{}{}{}",
        tcp_gw(),
        vs("echo", "default", ROUTE_A),
        se_a()
    ));
    assert!(p.local.is_empty());
    assert_eq!(
        p.l4,
        [L4Service {
            vip: VIP1,
            port: 31400,
            proto: Proto::Tcp,
            nat: NatMode::Snat,
            hash: HashMode::FiveTuple,
            backends: vec![b("10.0.0.1", 9000, 100_000)],
            origin: "Gateway istio-system/gw server tcp-echo:31400 -> VirtualService default/echo tcp[0]".into(),
        }]
    );
}

#[test]
fn weighted_split_across_two_service_entries() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: a.example.com}\n      weight: 80\n    - destination: {host: b.example.com}\n      weight: 20\n";
    let y = format!(
        "{}{}{}{}",
        tcp_gw(),
        vs("echo", "default", route),
        se_a(),
        se(
            "b",
            "b.example.com",
            "  - {address: 10.0.0.2, weight: 1}\n  - {address: 10.0.0.3, weight: 3}\n"
        )
    );
    let p = plan(&y);
    assert_eq!(
        p.l4[0].backends,
        [
            b("10.0.0.1", 9000, 80_000),
            b("10.0.0.2", 9000, 5_000),
            b("10.0.0.3", 9000, 15_000)
        ]
    );
}

#[test]
fn zero_weight_destination_dropped_and_shared_endpoint_sums() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: a.example.com}\n    - destination: {host: b.example.com}\n      weight: 50\n    - destination: {host: c.example.com}\n      weight: 50\n";
    let y = format!(
        "{}{}{}{}{}",
        tcp_gw(),
        vs("echo", "default", route),
        se_a(),
        se("b", "b.example.com", "  - {address: 10.0.0.2}\n"),
        se(
            "c",
            "c.example.com",
            "  - {address: 10.0.0.2}\n  - {address: 10.0.0.4}\n"
        )
    );
    let p = plan(&y);
    // a has no weight: nothing. 10.0.0.2 gets 50*1000 from b plus 25*1000 from c.
    assert_eq!(
        p.l4[0].backends,
        [b("10.0.0.2", 9000, 75_000), b("10.0.0.4", 9000, 25_000)]
    );
}

#[test]
fn se_endpoint_ports_target_port_and_families() {
    let y = format!(
        "{}{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: a, namespace: default}}\nspec:\n  hosts: [a.example.com]\n  resolution: STATIC\n  ports: [{{number: 9000, name: tcp, targetPort: 7000}}]\n  endpoints:\n  - {{address: 10.0.0.1, ports: {{tcp: 7001}}}}\n  - {{address: 10.0.0.2}}\n  - {{address: \"2001:db8::1\"}}\n",
        tcp_gw(),
        vs("echo", "default", ROUTE_A)
    );
    // An IPv4 VIP is served by the IPv4 endpoints only.
    let (p, w) = plan_with(&y, &input());
    assert_eq!(
        p.l4[0].backends,
        [b("10.0.0.1", 7001, 50_000), b("10.0.0.2", 7000, 50_000)]
    );
    assert!(w.is_empty(), "{w:#?}");
    // Dual stack: each family's VIP gets its own family's endpoints.
    let v6: IpAddr = "2001:db8::100".parse().unwrap();
    let inp = CompileInput {
        vips: vec![VIP1, v6],
        ..input()
    };
    let (p, w) = plan_with(&y, &inp);
    let got: Vec<_> = p.l4.iter().map(|s| (s.vip, s.backends.clone())).collect();
    assert_eq!(
        got,
        [
            (
                VIP1,
                vec![b("10.0.0.1", 7001, 50_000), b("10.0.0.2", 7000, 50_000)]
            ),
            (v6, vec![b("2001:db8::1", 7000, 100_000)]),
        ]
    );
    assert!(w.is_empty(), "{w:#?}");
}

#[test]
fn ipv6_vip_without_ipv6_endpoints_is_reported() {
    let y = format!("{}{}{}", tcp_gw(), vs("echo", "default", ROUTE_A), se_a());
    let v6: IpAddr = "2001:db8::100".parse().unwrap();
    let inp = CompileInput {
        vips: vec![v6],
        ..input()
    };
    let (p, w) = plan_with(&y, &inp);
    assert_eq!(p.l4.len(), 1);
    assert!(p.l4[0].backends.is_empty());
    assert!(
        w.iter()
            .any(|w| w.message.contains("no ready IPv6 endpoints")),
        "{w:#?}"
    );
}

#[test]
fn subsets_by_service_entry_labels() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: a.example.com, subset: v2}\n";
    let y = format!(
        "{}{}{}{}",
        tcp_gw(),
        vs("echo", "default", route),
        se("a", "a.example.com", "  - {address: 10.0.0.1, labels: {version: v1}}\n  - {address: 10.0.0.2, labels: {version: v2, zone: a}}\n"),
        dr("a", "default", "  host: a.example.com\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n")
    );
    assert_eq!(plan(&y).l4[0].backends, [b("10.0.0.2", 9000, 100_000)]);
}

#[test]
fn kube_ipv6_endpoint_slice_serves_the_ipv6_vip() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: echo, port: {number: 9000}}\n";
    let v6_slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-y1\n  namespace: apps\n  labels: {kubernetes.io/service-name: echo}\naddressType: IPv6\nports:\n- {name: tcp, port: 5000, protocol: TCP}\nendpoints:\n- addresses: [\"2001:db8:a::1\"]\n- addresses: [\"2001:db8:a::2\"]\n  conditions: {ready: false}\n---\n";
    let y = format!(
        "{}{}{}{}",
        tcp_gw(),
        vs("echo", "apps", route),
        kube_echo("false"),
        v6_slice
    );
    let v6: IpAddr = "2001:db8::100".parse().unwrap();
    let inp = CompileInput {
        vips: vec![VIP1, v6],
        ..input()
    };
    let (p, w) = plan_with(&y, &inp);
    assert!(w.is_empty(), "{w:#?}");
    let got: Vec<_> = p.l4.iter().map(|s| (s.vip, s.backends.clone())).collect();
    assert_eq!(
        got,
        [
            (
                VIP1,
                vec![b("10.1.0.1", 5000, 50_000), b("10.1.0.3", 5000, 50_000)]
            ),
            (v6, vec![b("2001:db8:a::1", 5000, 100_000)]),
        ]
    );
}

#[test]
fn kube_service_short_name_target_port_and_readiness() {
    // `echo` in a VS of namespace apps means echo.apps.svc.cluster.local; service port
    // 9000 maps to the slice port named `tcp` (5000); the not-ready endpoint is left out.
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: echo, port: {number: 9000}}\n";
    let y = format!(
        "{}{}{}",
        tcp_gw(),
        vs("echo", "apps", route),
        kube_echo("false")
    );
    assert_eq!(
        plan(&y).l4[0].backends,
        [b("10.1.0.1", 5000, 50_000), b("10.1.0.3", 5000, 50_000)]
    );
    // Port by name: 9001 -> admin -> 8081; all ready.
    let route = route.replace("9000", "9001");
    let y = format!(
        "{}{}{}",
        tcp_gw(),
        vs("echo", "apps", &route),
        kube_echo("true")
    );
    let backends = &plan(&y).l4[0].backends;
    assert_eq!(backends.len(), 3);
    assert!(backends.iter().all(|b| b.port == 8081));
}

#[test]
fn short_name_resolves_in_vs_namespace_only() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: echo, port: {number: 9000}}\n";
    // From namespace default, `echo` is echo.default...: unknown, empty backends.
    let y = format!(
        "{}{}{}",
        tcp_gw(),
        vs("echo", "default", route),
        kube_echo("true")
    );
    let (p, w) = plan_with(&y, &input());
    assert_eq!(p.l4.len(), 1);
    assert!(p.l4[0].backends.is_empty());
    assert!(
        w.iter().any(|w| w.resource == "VirtualService default/echo"
            && w.field == "spec.tcp[0].route[0].destination.host"
            && w.message
                .contains("unknown host echo.default.svc.cluster.local")),
        "{w:#?}"
    );
    // The FQDN works from anywhere.
    let route = route.replace("host: echo", "host: echo.apps.svc.cluster.local");
    let y = format!(
        "{}{}{}",
        tcp_gw(),
        vs("echo", "default", &route),
        kube_echo("true")
    );
    assert_eq!(plan(&y).l4[0].backends.len(), 3);
}

#[test]
fn subsets_by_pod_labels_via_target_ref() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: echo, subset: v2, port: {number: 9000}}\n";
    let y = format!(
        "{}{}{}{}",
        tcp_gw(),
        vs("echo", "apps", route),
        kube_echo("true"),
        dr(
            "echo",
            "apps",
            "  host: echo\n  subsets: [{name: v2, labels: {version: v2}}]\n"
        )
    );
    assert_eq!(
        plan(&y).l4[0].backends,
        [b("10.1.0.2", 5000, 50_000), b("10.1.0.3", 5000, 50_000)]
    );
}

#[test]
fn unknown_subset_and_no_endpoints_warn_and_keep_service() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: a.example.com, subset: nope}\n";
    let y = format!("{}{}{}", tcp_gw(), vs("echo", "default", route), se_a());
    let (p, w) = plan_with(&y, &input());
    assert_eq!(p.l4.len(), 1);
    assert!(p.l4[0].backends.is_empty());
    assert!(
        w.iter()
            .any(|w| w.field == "spec.tcp[0].route[0].destination.subset"
                && w.message.contains("unknown subset nope")),
        "{w:#?}"
    );
}

#[test]
fn dns_service_entry_has_no_endpoints() {
    let y = format!(
        "{}{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: a, namespace: default}}\nspec:\n  hosts: [a.example.com]\n  resolution: DNS\n  ports: [{{number: 9000, name: http, protocol: HTTP}}]\n",
        tcp_gw(),
        vs("echo", "default", ROUTE_A)
    );
    let (p, w) = plan_with(&y, &input());
    assert!(p.l4[0].backends.is_empty());
    assert!(
        w.iter().any(|w| w.message.contains("no ready endpoints")),
        "{w:#?}"
    );
}

#[test]
fn dotted_short_name_is_not_expanded() {
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: echo.apps, port: {number: 9000}}\n";
    let y = format!(
        "{}{}{}",
        tcp_gw(),
        vs("echo", "default", route),
        kube_echo("true")
    );
    let (p, w) = plan_with(&y, &input());
    assert!(p.l4[0].backends.is_empty());
    assert!(
        w.iter()
            .any(|w| w.message.contains("echo.apps.svc.cluster.local")),
        "{w:#?}"
    );
}

#[test]
fn destination_port_rules() {
    // No port and several service ports: the server port is used (here: not a service
    // port, so nothing).
    let route = "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: echo.apps.svc.cluster.local}\n";
    let y = format!(
        "{}{}{}",
        tcp_gw(),
        vs("echo", "default", route),
        kube_echo("true")
    );
    let (p, w) = plan_with(&y, &input());
    assert!(p.l4[0].backends.is_empty());
    assert!(
        w.iter()
            .any(|w| w.field == "spec.tcp[0].route[0].destination.port"
                && w.message.contains("has no port 31400")),
        "{w:#?}"
    );
    // A single-port service needs no port.
    let y = format!("{}{}{}", tcp_gw(), vs("echo", "default", ROUTE_A), se_a());
    assert_eq!(plan(&y).l4[0].backends.len(), 1);
}
