//! Compiler tests: manifests in, plan and warnings out.

use crate::config::CompileInput;

use super::compile;

use crate::plan::NatMode;

use crate::plan::Plan;

use crate::plan::Proto;

use std::net::IpAddr;

use crate::config::load::load_str;
use crate::config::model::{Manifests, Warning};
use crate::config::validate::validate;
use crate::plan::{Backend, HashMode, L4Service};
use std::net::Ipv4Addr;

const VIP1: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const VIP2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

fn input() -> CompileInput {
    CompileInput {
        vips: vec![VIP1],
        ..CompileInput::default()
    }
}

fn manifests(yaml: &str) -> Manifests {
    let m = load_str("t.yaml", yaml).expect("loads");
    let (errs, _) = validate(&m);
    assert!(errs.is_empty(), "{errs:#?}");
    m
}

fn plan_with(yaml: &str, input: &CompileInput) -> (Plan, Vec<Warning>) {
    compile(&manifests(yaml), input)
}

fn plan(yaml: &str) -> Plan {
    plan_with(yaml, &input()).0
}

fn b(addr: &str, port: u16, weight: u32) -> Backend {
    Backend {
        addr: addr.parse().unwrap(),
        port,
        weight,
    }
}

fn gateway(name: &str, extra_meta: &str, servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: istio-system{extra_meta}}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}---\n"
    )
}

fn tcp_gw() -> String {
    gateway(
        "gw",
        "",
        "  - port: {number: 31400, name: tcp-echo, protocol: TCP}\n    hosts: [\"*\"]\n",
    )
}

fn vs(name: &str, ns: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [\"*\"]\n{body}---\n"
    )
}

fn se(name: &str, host: &str, endpoints: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  endpoints:\n{endpoints}---\n"
    )
}

const ROUTE_A: &str =
    "  gateways: [istio-system/gw]\n  tcp:\n  - route:\n    - destination: {host: a.example.com}\n";

fn se_a() -> String {
    se("a", "a.example.com", "  - {address: 10.0.0.1}\n")
}

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

fn dr(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}---\n"
    )
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

fn kube_echo(ready2: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: apps}}
spec:
  selector: {{app: echo}}
  ports:
  - {{name: tcp, port: 9000, targetPort: tcp-port}}
  - {{name: admin, port: 9001, targetPort: 8081}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-x1
  namespace: apps
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports:
- {{name: tcp, port: 5000, protocol: TCP}}
- {{name: admin, port: 8081, protocol: TCP}}
endpoints:
- addresses: [10.1.0.1]
  targetRef: {{kind: Pod, name: echo-1, namespace: apps}}
- addresses: [10.1.0.2]
  conditions: {{ready: {ready2}}}
  targetRef: {{kind: Pod, name: echo-2}}
- addresses: [10.1.0.3]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: echo-3}}
---
apiVersion: v1
kind: Pod
metadata: {{name: echo-1, namespace: apps, labels: {{app: echo, version: v1}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: echo-2, namespace: apps, labels: {{app: echo, version: v2}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: echo-3, namespace: apps, labels: {{app: echo, version: v2}}}}
---
"#
    )
}

/// A dual-stack Service: an IPv6 EndpointSlice beside the IPv4 one; each VIP family gets its
/// own family's endpoints, with the same port mapping and readiness rules.
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
