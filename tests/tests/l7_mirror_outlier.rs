//! End-to-end through the real agent: a mirrored request reaches its shadow backend while the
//! client is answered by the primary, and an ejected endpoint comes back after its ejection time.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use gateway_tests::{
    manifests::{self, GATEWAY_HEAD},
    test_backend_bin,
    topology::{start_backend, Topology, BACKEND_HTTP_PORT, VIP},
    Agent, Opts,
};

fn opts() -> Opts {
    Opts::http_backends()
}

/// Gateway on port 80, ServiceEntry `web.example.com` with b1 (v1) and b2 (v2), the given
/// DestinationRule body and VirtualService http rules.
fn files(topo: &Topology, dr: &str, http: &str) -> Vec<(&'static str, String)> {
    let (b1, b2) = (topo.backend("b1").addr, topo.backend("b2").addr);
    let se = manifests::service_entry(
        "web",
        "default",
        "web.example.com",
        &format!("{{number: {BACKEND_HTTP_PORT}, name: http, protocol: HTTP}}"),
        &[
            format!("{{address: {b1}, labels: {{version: v1}}}}"),
            format!("{{address: {b2}, labels: {{version: v2}}}}"),
        ],
    );
    vec![(
        "all.yaml",
        format!(
            "{GATEWAY_HEAD}  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [\"*\"]
---
{se}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: default}}
spec:
  host: web.example.com
{dr}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
{http}"
        ),
    )]
}

#[test]
fn mirror_reaches_the_shadow_backend() -> Result<()> {
    let mut topo = Topology::new("mi", 2, opts())?;
    // Our own server on b2, whose request log we read.
    topo.backends[1].stop_server();
    let bin = test_backend_bin()?;
    let mut shadow = start_backend(
        &topo.backend("b2").ns,
        bin.to_str().unwrap(),
        "b2",
        None,
        None,
        Some(BACKEND_HTTP_PORT),
    )?;
    let dr = "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";
    let http = "  - route: [{destination: {host: web.example.com, subset: v1}}]\n    mirror: {host: web.example.com, subset: v2}\n";
    let _agent = Agent::start(&topo, &files(&topo, dr, http))?;
    let c = topo.http_client();
    for i in 0..5 {
        let r = c.get(
            &format!("http://{VIP}/m{i}"),
            &["-H", "Host: shop.example.com"],
        )?;
        ensure!(
            r.status == 200 && r.backend() == "b1",
            "answered by {:?} ({})",
            r.backend(),
            r.status
        );
    }
    // Fire and forget: the shadow sees every request, with the original Host (Istio >= 1.28).
    for i in 0..5 {
        shadow.wait_for_line(
            &format!("request GET /m{i} host=shop.example.com"),
            Duration::from_secs(5),
        )?;
    }
    Ok(())
}

#[test]
fn ejected_endpoint_returns_after_its_ejection_time() -> Result<()> {
    let mut topo = Topology::new("oe", 2, opts())?;
    topo.backends[0].stop_server();
    let dr = "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 100}\n";
    let http = "  - route: [{destination: {host: web.example.com}}]\n    retries: {attempts: 0}\n";
    let agent = Agent::start(&topo, &files(&topo, dr, http))?;
    let c = topo.http_client();
    let url = format!("http://{VIP}/");
    let b1_addr = format!("{}:{BACKEND_HTTP_PORT}", topo.backend("b1").addr);
    // b1 refuses connections: the first failure ejects it.
    let mut failed = false;
    for _ in 0..20 {
        if c.get(&url, &[])?.status == 503 {
            failed = true;
            break;
        }
    }
    ensure!(failed, "b1 was never tried");
    let hits = c.many(&url, 10, &[])?;
    ensure!(hits.iter().all(|h| h.1 == "b2"), "while ejected: {hits:?}");
    // The admin's /clusters shows the ejection, as Envoy's does.
    let (_, clusters) = agent.get("/clusters")?;
    ensure!(
        clusters
            .lines()
            .any(|l| l.ends_with(&format!("::{b1_addr}::health_flags::/failed_outlier_check"))),
        "/clusters does not show b1 ejected:\n{clusters}"
    );
    let json = agent.get_json_at("/clusters?format=json")?;
    ensure!(
        json["clusters"][0]["hosts"]
            .as_array()
            .is_some_and(|h| h.len() == 2),
        "{json}"
    );
    // b1 comes back; once its ejection time is over it is balanced to again.
    let bin = test_backend_bin()?;
    let _b1 = start_backend(
        &topo.backend("b1").ns,
        bin.to_str().unwrap(),
        "b1",
        None,
        None,
        Some(BACKEND_HTTP_PORT),
    )?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let hits = c.many(&url, 10, &[])?;
        if hits.iter().any(|h| h.1 == "b1") {
            ensure!(hits.iter().all(|h| h.0 == 200), "after return: {hits:?}");
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "b1 never returned: {hits:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
