//! Compiler tests: manifests in, plan and warnings out. The helpers here build the manifests;
//! the tests are grouped by what they decide.

use std::net::{IpAddr, Ipv4Addr};

use super::compile;
use crate::config::load::load_str;
use crate::config::model::{Manifests, Warning};
use crate::config::validate::validate;
use crate::config::CompileInput;
use crate::plan::{Backend, Plan};

mod binding;
mod endpoints;
mod policy;

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

fn dr(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}---\n"
    )
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
