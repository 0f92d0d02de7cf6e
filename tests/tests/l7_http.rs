//! End-to-end tests of the L7 path: the real `gateway` binary in the node namespace with XDP
//! attached and kernel forwarding off (the XDP program hands the HTTP ports to the local stack,
//! counted as `pass_local`), real clients (curl over HTTP/1.1 and h2c prior knowledge) in the
//! client namespace, and backends that report who answered and what they received
//! (`test-backend --http`, nginx, and Istio's own gateway samples applied unmodified).
//!
//! Each test builds its own topology, so they run in parallel; everything is removed on drop.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    http::{expect, Response},
    manifests::GATEWAY_HEAD,
    topology::{Topology, BACKEND_HTTP_PORT, CLIENT_ADDR, VIP},
    Agent, Opts,
};

#[path = "l7_http/https.rs"]
mod https;
#[path = "l7_http/samples.rs"]
mod samples;

const HOST: &str = "web.example.com";

fn opts() -> Opts {
    Opts::http_backends()
}

fn url(path: &str) -> String {
    format!("http://{VIP}{path}")
}

/// Gateway `gw` (HTTP 80, any host), ServiceEntry `web.example.com` with every backend
/// (`bN` labelled `version: vN`, `app: web`), the given DestinationRule subsets/policies
/// and VirtualServices.
fn files(topo: &Topology, dr_extra: &str, vs: &[&str]) -> Vec<(&'static str, String)> {
    let gateway = format!(
        "{GATEWAY_HEAD}  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n"
    );
    let mut eps = String::new();
    let mut subsets = String::new();
    for b in &topo.backends {
        let v = b.name.replacen('b', "v", 1);
        eps += &format!(
            "  - address: {}\n    labels: {{version: {v}, app: web}}\n",
            b.addr
        );
        subsets += &format!("  - name: {v}\n    labels: {{version: {v}}}\n");
    }
    let se = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [{HOST}]
  resolution: STATIC
  ports: [{{number: {BACKEND_HTTP_PORT}, name: http, protocol: HTTP}}]
  endpoints:
{eps}"
    );
    let dr = format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: default}}
spec:
  host: {HOST}
  subsets:
{subsets}{dr_extra}"
    );
    let mut out = vec![
        ("gateway.yaml", gateway),
        ("service-entry.yaml", se),
        ("destination-rule.yaml", dr),
    ];
    let names = ["vs-0.yaml", "vs-1.yaml", "vs-2.yaml"];
    for (i, v) in vs.iter().enumerate() {
        out.push((names[i], v.to_string()));
    }
    out
}

/// A VirtualService `name` bound to `gw` for `hosts` with the given `http:` list (YAML, indented
/// by two spaces).
fn vs(name: &str, hosts: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: {hosts}
  gateways: [gw]
  http:
{http}"
    )
}

fn count(hits: &[(u16, String)]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (st, b) in hits {
        *m.entry(format!("{st} {b}")).or_insert(0) += 1;
    }
    m
}

/// Routing by path, header, method and host, over HTTP/1.1 and h2c; 404 when nothing matches;
/// the headers the gateway adds on both sides; the XDP program passing the port to the stack.
#[test]
fn routing_by_path_header_method_and_host() -> Result<()> {
    let topo = Topology::new("rt", 3, opts())?;
    let main = vs(
        "web",
        "[\"*\"]",
        &format!(
            "  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
  - match: [{{method: {{exact: POST}}}}]
    route: [{{destination: {{host: {HOST}, subset: v3}}}}]
  - match: [{{uri: {{prefix: /v2}}}}]
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
  - match: [{{uri: {{exact: /v1}}}}, {{uri: {{prefix: /v1/}}}}]
    route: [{{destination: {{host: {HOST}, subset: v1}}}}]
"
        ),
    );
    let other = vs(
        "other",
        "[other.example.com]",
        &format!("  - route: [{{destination: {{host: {HOST}, subset: v3}}}}]\n"),
    );
    let agent = Agent::start(&topo, &files(&topo, "", &[&main, &other]))?;
    let passed_before = agent.verdict_packets("pass_local")?;
    let c = topo.http_client();

    for h2 in [false, true] {
        let mut base: Vec<&str> = Vec::new();
        if h2 {
            base.push("--http2-prior-knowledge");
        }
        let want_version = if h2 { "2" } else { "1.1" };
        let get = |path: &str, extra: &[&str]| -> Result<Response> {
            let mut a = base.clone();
            a.extend_from_slice(extra);
            let u = url(path);
            a.push(&u);
            let r = c.curl(&a)?;
            ensure!(
                r.version == want_version,
                "{path}: answered with HTTP/{}, want {want_version}",
                r.version
            );
            Ok(r)
        };
        let r = get("/v1/x?q=1", &[])?;
        expect(&r, 200, "b1", "prefix /v1/")?;
        ensure!(r.upstream_request_line() == "GET /v1/x?q=1", "{r:#?}");
        ensure!(
            r.header("server") == Some("istio-envoy"),
            "server header: {r:#?}"
        );
        ensure!(
            r.header("x-envoy-upstream-service-time").is_some(),
            "no x-envoy-upstream-service-time: {r:#?}"
        );
        ensure!(
            r.upstream_header("x-forwarded-proto") == Some("http"),
            "{r:#?}"
        );
        ensure!(
            r.upstream_header("x-forwarded-for") == Some(&CLIENT_ADDR.to_string()),
            "{r:#?}"
        );
        ensure!(
            r.upstream_header("x-envoy-attempt-count") == Some("1"),
            "{r:#?}"
        );
        ensure!(
            r.upstream_header("x-request-id")
                .is_some_and(|v| v.len() == 36),
            "{r:#?}"
        );
        // The Host goes upstream as the client sent it (Envoy keeps :authority).
        ensure!(
            r.upstream_header("host") == Some(&VIP.to_string()),
            "{r:#?}"
        );

        expect(&get("/v1", &[])?, 200, "b1", "exact /v1")?;
        expect(&get("/v2example", &[])?, 200, "b2", "plain prefix /v2")?;
        expect(
            &get("/v1", &["-H", "end-user: jason"])?,
            200,
            "b2",
            "header end-user: jason (first rule wins)",
        )?;
        expect(
            &get("/v1", &["-X", "POST", "-d", "x"])?,
            200,
            "b3",
            "method POST",
        )?;
        expect(
            &get("/v1", &["-H", "Host: other.example.com:80"])?,
            200,
            "b3",
            "host other.example.com (exact vhost beats *)",
        )?;
        let r = get("/v1x", &[])?;
        expect(&r, 404, "", "no route")?;
        ensure!(r.body.is_empty(), "404 has a body: {r:#?}");
        ensure!(r.header("server") == Some("istio-envoy"), "{r:#?}");
        expect(
            &get("/v2", &["-H", "Host: other.example.com"])?,
            200,
            "b3",
            "other host ignores the * vhost's rules",
        )?;
    }
    let passed = agent.verdict_packets("pass_local")? - passed_before;
    ensure!(
        passed > 0,
        "the XDP program did not count the HTTP port as pass_local"
    );
    Ok(())
}

/// An 80/20 split within +-5 points over 500 requests (one keep-alive connection: the choice
/// is per request), then one subset per LB policy.
#[test]
fn weights_subsets_and_load_balancers() -> Result<()> {
    let topo = Topology::new("lb", 3, opts())?;
    let policies = "  - name: rr
    labels: {app: web}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  - name: random
    labels: {app: web}
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
  - name: least
    labels: {app: web}
    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  - name: hash
    labels: {app: web}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
";
    let route = |prefix: &str, subset: &str| {
        format!(
            "  - match: [{{uri: {{prefix: {prefix}}}}}]\n    route: [{{destination: {{host: {HOST}, subset: {subset}}}}}]\n"
        )
    };
    let mut http = format!(
        "  - match: [{{uri: {{prefix: /split}}}}]
    route:
    - destination: {{host: {HOST}, subset: v1}}
      weight: 80
    - destination: {{host: {HOST}, subset: v2}}
      weight: 20
"
    );
    for (p, s) in [
        ("/rr", "rr"),
        ("/random", "random"),
        ("/least", "least"),
        ("/hash", "hash"),
        ("/v3", "v3"),
    ] {
        http += &route(p, s);
    }
    let _agent = Agent::start(
        &topo,
        &files(&topo, policies, &[&vs("web", "[\"*\"]", &http)]),
    )?;
    let c = topo.http_client();

    const N: usize = 500;
    let hits = c.many(&url("/split"), N, &[])?;
    let counts = count(&hits);
    let b1 = counts.get("200 b1").copied().unwrap_or(0);
    let b2 = counts.get("200 b2").copied().unwrap_or(0);
    ensure!(b1 + b2 == N, "split reached others: {counts:?}");
    let share = 100.0 * b1 as f64 / N as f64;
    eprintln!("80/20 over {N} requests: {counts:?}");
    ensure!(
        (75.0..=85.0).contains(&share),
        "v1 got {share:.1}% (want 80 +- 5): {counts:?}"
    );

    let hits = c.many(&url("/v3"), 20, &["--http2-prior-knowledge"])?;
    ensure!(
        hits.iter().all(|h| *h == (200, "b3".to_string())),
        "subset v3: {hits:?}"
    );

    // ROUND_ROBIN: every window of three sees each backend once, in a fixed cycle.
    let rr: Vec<String> = c
        .many(&url("/rr"), 30, &[])?
        .into_iter()
        .map(|h| h.1)
        .collect();
    let mut first: Vec<&String> = rr[..3].iter().collect();
    first.sort();
    first.dedup();
    ensure!(
        first.len() == 3,
        "round robin did not start with 3 distinct: {rr:?}"
    );
    ensure!(
        (3..rr.len()).all(|i| rr[i] == rr[i - 3]),
        "round robin is not an exact cycle: {rr:?}"
    );

    for p in ["/random", "/least"] {
        let hits = c.many(&url(p), 60, &[])?;
        let counts = count(&hits);
        ensure!(
            counts.len() == 3 && counts.keys().all(|k| k.starts_with("200 b")),
            "{p}: 60 requests should reach all 3 backends: {counts:?}"
        );
    }

    // consistentHash on x-user: each user sticks to one backend; users spread.
    let mut seen = BTreeMap::new();
    for u in 0..12 {
        let h = format!("x-user: user-{u}");
        let hits = c.many(&url("/hash"), 8, &["-H", &h])?;
        let counts = count(&hits);
        ensure!(counts.len() == 1, "user-{u} not sticky: {counts:?}");
        *seen.entry(hits[0].1.clone()).or_insert(0) += 1;
    }
    ensure!(
        seen.len() >= 2,
        "12 users all hashed to one backend: {seen:?}"
    );
    Ok(())
}

/// The default retry policy hides a refused endpoint; `attempts: 0` does not; route timeout
/// gives 504; fault abort and delay; a CORS preflight answered by the gateway; outlier
/// detection ejecting the refusing endpoint.
#[test]
fn retries_timeouts_faults_cors_and_outlier_detection() -> Result<()> {
    let mut topo = Topology::new("rs", 2, opts())?;
    // b1 has no server: connections to it are refused.
    topo.backends[0].stop_server();
    let policies = "  - name: od
    labels: {app: web}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}
";
    let http = format!(
        "  - match: [{{uri: {{prefix: /retry}}}}]
    route: [{{destination: {{host: {HOST}}}}}]
  - match: [{{uri: {{prefix: /noretry}}}}]
    route: [{{destination: {{host: {HOST}}}}}]
    retries: {{attempts: 0}}
  - match: [{{uri: {{prefix: /od}}}}]
    route: [{{destination: {{host: {HOST}, subset: od}}}}]
    retries: {{attempts: 0}}
  - match: [{{uri: {{prefix: /delay}}}}]
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
    timeout: 0.5s
  - match: [{{uri: {{prefix: /abort}}}}]
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
  - match: [{{uri: {{prefix: /slowed}}}}]
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
    fault: {{delay: {{fixedDelay: 1s, percentage: {{value: 100}}}}}}
  - match: [{{uri: {{prefix: /cors}}}}]
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
    corsPolicy:
      allowOrigins: [{{exact: \"https://app.example.org\"}}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      maxAge: 24h
"
    );
    let _agent = Agent::start(
        &topo,
        &files(&topo, policies, &[&vs("web", "[\"*\"]", &http)]),
    )?;
    let c = topo.http_client();

    // Retries: every request lands on b2, some after a refused first attempt on b1.
    let mut retried = 0;
    for i in 0..30 {
        let r = c.get(&url(&format!("/retry/{i}")), &[])?;
        expect(&r, 200, "b2", "default retry policy")?;
        if r.upstream_header("x-envoy-attempt-count") == Some("2") {
            retried += 1;
        }
    }
    ensure!(
        retried > 0,
        "no request needed a retry: was b1 ever picked (30 requests, 2 endpoints)?"
    );
    let hits = c.many(&url("/noretry"), 30, &[])?;
    let counts = count(&hits);
    ensure!(
        counts.contains_key("503 ") && counts.contains_key("200 b2"),
        "attempts: 0 should expose the refused endpoint: {counts:?}"
    );
    let r = (0..30)
        .map(|_| c.get(&url("/noretry"), &[]))
        .find(|r| r.as_ref().map_or(true, |r| r.status == 503))
        .context("no 503 in 30 requests")??;
    ensure!(
        r.body.starts_with(
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
        ),
        "503 body: {:?}",
        r.body
    );

    // Timeout.
    let t0 = Instant::now();
    let r = c.get(&url("/delay/3000"), &[])?;
    let took = t0.elapsed();
    expect(&r, 504, "", "route timeout 0.5s")?;
    ensure!(r.body == "upstream request timeout", "{r:#?}");
    ensure!(
        took < Duration::from_millis(2500),
        "504 after {took:?}, want about 0.5 s"
    );
    expect(&c.get(&url("/delay/10"), &[])?, 200, "b2", "fast enough")?;

    // Faults.
    let r = c.get(&url("/abort"), &[])?;
    expect(&r, 418, "", "fault abort")?;
    ensure!(r.body == "fault filter abort", "{r:#?}");
    let t0 = Instant::now();
    expect(&c.get(&url("/slowed"), &[])?, 200, "b2", "fault delay")?;
    ensure!(
        t0.elapsed() >= Duration::from_millis(950),
        "fault delay of 1 s took {:?}",
        t0.elapsed()
    );

    // CORS preflight: answered by the gateway for an allowed origin.
    let preflight = |origin: &str| {
        let o = format!("Origin: {origin}");
        c.curl(&[
            "-X",
            "OPTIONS",
            "-H",
            &o,
            "-H",
            "Access-Control-Request-Method: POST",
            &url("/cors"),
        ])
    };
    let r = preflight("https://app.example.org")?;
    expect(&r, 200, "", "CORS preflight")?;
    ensure!(
        r.header("access-control-allow-origin") == Some("https://app.example.org")
            && r.header("access-control-allow-methods") == Some("GET,POST")
            && r.header("access-control-allow-headers") == Some("x-custom")
            && r.header("access-control-max-age") == Some("86400"),
        "preflight headers: {r:#?}"
    );
    // An unknown origin's preflight is forwarded (unmatchedPreflights FORWARD), no CORS headers.
    let r = preflight("https://evil.example")?;
    expect(&r, 200, "b2", "preflight of a foreign origin")?;
    ensure!(r.upstream_request_line() == "OPTIONS /cors", "{r:#?}");
    ensure!(r.header("access-control-allow-origin").is_none(), "{r:#?}");
    let r = c.get(&url("/cors"), &["-H", "Origin: https://app.example.org"])?;
    expect(&r, 200, "b2", "CORS actual request")?;
    ensure!(
        r.header("access-control-allow-origin") == Some("https://app.example.org"),
        "{r:#?}"
    );

    // Outlier detection: the first failure on b1 ejects it; then only b2 answers.
    let mut first_failure = None;
    for i in 0..40 {
        if c.get(&url("/od"), &[])?.status == 503 {
            first_failure = Some(i);
            break;
        }
    }
    ensure!(
        first_failure.is_some(),
        "b1 was never picked in 40 requests"
    );
    let hits = c.many(&url("/od"), 40, &[])?;
    ensure!(
        hits.iter().all(|h| *h == (200, "b2".to_string())),
        "after ejection only b2 should answer: {:?}",
        count(&hits)
    );
    Ok(())
}
