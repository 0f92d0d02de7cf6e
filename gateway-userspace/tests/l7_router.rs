//! Pure tests of the HTTP compile step and the router: manifests -> plan::http -> Table ->
//! decisions, against Istio's semantics (istio-semantics.md §3.1–3.9, 3.14–3.16). No sockets.

use std::net::Ipv4Addr;

use gateway::config::{load_str, validate};
use gateway::l7::router::{Decision, RequestView, Table};
use gateway::plan::http::{Action, HttpPlan, Lb, Rewrite};
use http::HeaderMap;

mod support;
use support::gateway::{compile_valid, input};

/// The manifests the router table is checked against: Gateways on 80 and 8080, ServiceEntries,
/// DestinationRules and VirtualServices (two for bookinfo hosts, wildcard and mesh-only ones).
const GW: &str = include_str!("manifests/router.yaml");

fn plan_of(yaml: &str) -> (HttpPlan, Vec<String>) {
    let (plan, warnings) = compile_valid(yaml, &input());
    (plan.http, warnings.iter().map(|w| w.to_string()).collect())
}

#[derive(Clone, Copy)]
struct Req<'a> {
    port: u16,
    host: &'a str,
    method: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

const fn get(host: &'static str, path: &'static str) -> Req<'static> {
    Req {
        port: 80,
        host,
        method: "GET",
        path,
        headers: &[],
    }
}

/// "404", "301-https", or the origin of the chosen route.
fn decide(t: &Table, r: Req<'_>) -> String {
    let mut hm = HeaderMap::new();
    for (k, v) in r.headers {
        hm.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (path, query) = match r.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (r.path, None),
    };
    let norm = gateway::l7::router::normalize_path(path).expect("valid path");
    let l = t.listener(Ipv4Addr::UNSPECIFIED, r.port).expect("listener");
    let view = RequestView {
        method: r.method,
        scheme: "http",
        authority: r.host,
        path: &norm,
        query,
        headers: &hm,
    };
    match l.select(&view) {
        Decision::NoRoute => "404".into(),
        Decision::HttpsRedirect => "301-https".into(),
        Decision::Route(route) => route.plan.origin.clone(),
    }
}

#[test]
fn router_table() {
    let (plan, _) = plan_of(GW);
    let t = Table::build(&plan);
    let a = "VirtualService default/a";
    let cases: Vec<(Req, String)> = vec![
        // uri exact / prefix, query ignored, blocks OR'ed (§3.2, §3.4)
        (
            get("bookinfo.example.com", "/productpage"),
            format!("{a} http[0].match[0]"),
        ),
        (
            get("bookinfo.example.com", "/productpage?x=1"),
            format!("{a} http[0].match[0]"),
        ),
        (
            get("bookinfo.example.com", "/static/x.css"),
            format!("{a} http[0].match[1]"),
        ),
        // exact is exact
        (
            get("bookinfo.example.com", "/productpage/x"),
            format!("{a} http[13]"),
        ),
        // path normalised before matching: no bypass with dot segments
        (
            get("bookinfo.example.com", "/x/../productpage"),
            format!("{a} http[0].match[0]"),
        ),
        // vhost: port stripped, case-insensitive
        (
            get("BookInfo.Example.COM:80", "/productpage"),
            format!("{a} http[0].match[0]"),
        ),
        // header AND uri; values case-sensitive
        (
            Req {
                headers: &[("end-user", "jason")],
                ..get("bookinfo.example.com", "/reviews/1")
            },
            format!("{a} http[1].match[0]"),
        ),
        (
            Req {
                headers: &[("End-User", "Jason")],
                ..get("bookinfo.example.com", "/reviews/1")
            },
            format!("{a} http[13]"),
        ),
        // repeated headers match as the ,-joined value (§3.3)
        (
            Req {
                headers: &[("end-user", "jason"), ("end-user", "jason")],
                ..get("bookinfo.example.com", "/reviews/1")
            },
            format!("{a} http[13]"),
        ),
        (
            Req {
                headers: &[("x-multi", "a"), ("x-multi", "b")],
                ..get("bookinfo.example.com", "/zzz")
            },
            format!("{a} http[12].match[0]"),
        ),
        // regex is a full match
        (
            get("bookinfo.example.com", "/api/v2/items"),
            format!("{a} http[2].match[0]"),
        ),
        (
            get("bookinfo.example.com", "/xapi/v2/items"),
            format!("{a} http[13]"),
        ),
        // ignoreUriCase
        (
            get("bookinfo.example.com", "/ci/thing"),
            format!("{a} http[3].match[0]"),
        ),
        // method
        (
            Req {
                method: "POST",
                ..get("bookinfo.example.com", "/post")
            },
            format!("{a} http[4].match[0]"),
        ),
        (
            get("bookinfo.example.com", "/post"),
            format!("{a} http[13]"),
        ),
        // query params: exact on first value
        (
            get("bookinfo.example.com", "/anything?debug=1"),
            format!("{a} http[5].match[0]"),
        ),
        (
            get("bookinfo.example.com", "/anything?debug=2&debug=1"),
            format!("{a} http[13]"),
        ),
        // withoutHeaders {}: absent only
        (
            get("bookinfo.example.com", "/wh"),
            format!("{a} http[6].match[0]"),
        ),
        (
            Req {
                headers: &[("x-skip", "")],
                ..get("bookinfo.example.com", "/wh")
            },
            format!("{a} http[13]"),
        ),
        // withoutHeaders value: absent or different
        (
            get("bookinfo.example.com", "/neg"),
            format!("{a} http[7].match[0]"),
        ),
        (
            Req {
                headers: &[("x-v", "good")],
                ..get("bookinfo.example.com", "/neg")
            },
            format!("{a} http[7].match[0]"),
        ),
        (
            Req {
                headers: &[("x-v", "bad")],
                ..get("bookinfo.example.com", "/neg")
            },
            format!("{a} http[13]"),
        ),
        // authority includes the port
        (
            get("bookinfo.example.com:8080", "/q"),
            format!("{a} http[8].match[0]"),
        ),
        // match.port 8080 block dropped on port 80
        (
            get("bookinfo.example.com", "/only8080"),
            format!("{a} http[13]"),
        ),
        (
            Req {
                port: 8080,
                ..get("bookinfo.example.com", "/only8080")
            },
            format!("{a} http[9].match[0]"),
        ),
        // merged VSs: b's /b is before a's catch-all; rules after a catch-all are dropped
        (
            get("bookinfo.example.com", "/b"),
            "VirtualService default/b http[0].match[0]".into(),
        ),
        (
            get("bookinfo.example.com", "/never"),
            format!("{a} http[13]"),
        ),
        // wildcard vhosts: longest suffix wins, *.example.com does not cover example.com
        (
            get("x.example.com", "/"),
            "VirtualService default/wild http[0]".into(),
        ),
        (
            get("a.b.deep.example.com", "/"),
            "VirtualService default/deeper http[0].match[0]".into(),
        ),
        (
            get("example.com", "/star"),
            "VirtualService other/star http[0].match[0]".into(),
        ),
        (get("example.com", "/"), "404".into()),
        // unbound (mesh-only) VS: falls to `*` vhost, no route
        (get("mesh.example.org", "/"), "404".into()),
        // httpsRedirect vhost
        (get("secure.example.com", "/x"), "301-https".into()),
        // port 8080 server hosts `default/*.example.com`: the VS in `other` does not bind
        (
            Req {
                port: 8080,
                ..get("zzz.org", "/star")
            },
            "404".into(),
        ),
    ];
    let mut failures = Vec::new();
    for (i, (req, want)) in cases.iter().enumerate() {
        let got = decide(&t, *req);
        if &got != want {
            failures.push(format!(
                "case {i}: {} {}{} {:?}: got {got}, want {want}",
                req.method, req.host, req.path, req.headers
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn compiled_actions_and_clusters() {
    let (plan, warnings) = plan_of(GW);
    let l80 = &plan.listeners[0];
    assert_eq!((l80.bind, l80.port), (Ipv4Addr::UNSPECIFIED, 80));
    let vh = l80
        .vhosts
        .iter()
        .find(|v| v.domain == "bookinfo.example.com")
        .unwrap();
    // Weighted split: absent weight dropped (§3.9).
    let split = vh
        .routes
        .iter()
        .find(|r| r.origin.ends_with("http[10].match[0]"))
        .unwrap();
    let Action::Forward(f) = &split.action else {
        panic!()
    };
    let w: Vec<_> = f
        .clusters
        .iter()
        .map(|c| (c.cluster.as_str(), c.weight))
        .collect();
    assert_eq!(
        w,
        [
            ("outbound|9080|v1|reviews.default.svc.cluster.local", 80),
            ("outbound|9080|v2|reviews.default.svc.cluster.local", 20)
        ]
    );
    // Default retry policy applies without `retries`; no timeout by default.
    let r = f.retry.as_ref().unwrap();
    assert_eq!((r.num_retries, r.retriable_status_codes.len()), (2, 0));
    assert!(f.timeout_ms.is_none());
    // Explicit retries: status codes split out.
    let b = vh
        .routes
        .iter()
        .find(|r| r.origin.starts_with("VirtualService default/b"))
        .unwrap();
    let Action::Forward(f) = &b.action else {
        panic!()
    };
    let r = f.retry.as_ref().unwrap();
    assert_eq!(r.num_retries, 3);
    assert_eq!(r.retriable_status_codes, [503]);
    assert!(r.retry_on.contains(&"retriable-status-codes".to_string()));
    assert_eq!(
        (r.per_try_timeout_ms, f.timeout_ms),
        (Some(2000), Some(5000))
    );
    // regex route rewrite is prefix_rewrite of the whole path.
    let rx = vh
        .routes
        .iter()
        .find(|r| r.origin.ends_with("http[2].match[0]"))
        .unwrap();
    let Action::Forward(f) = &rx.action else {
        panic!()
    };
    assert_eq!(f.rewrite, Some(Rewrite::Prefix("/whole".into())));
    // Clusters: subsets filter endpoints; endpoint port by name; policies per §3.21.
    let c = |n: &str| {
        plan.clusters
            .iter()
            .find(|c| c.name == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let v2 = c("outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_eq!(
        v2.endpoints
            .iter()
            .map(|e| (e.addr.to_string(), e.port))
            .collect::<Vec<_>>(),
        [
            ("10.0.0.2".to_string(), 9080),
            ("10.0.0.3".to_string(), 9999)
        ]
    );
    assert_eq!(v2.lb, Lb::HashHeader("x-user".into()));
    assert_eq!(v2.limits.max_connections, 10); // inherited: the subset sets only loadBalancer
    let v1 = c("outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_eq!(v1.lb, Lb::RoundRobin);
    assert_eq!(v1.connect_timeout_ms, 250);
    assert_eq!(v1.outlier.as_ref().unwrap().consecutive_5xx, 2);
    // The weightless v3 destination was dropped, so its cluster was never built.
    assert!(!plan.clusters.iter().any(|c| c.name.contains("|v3|")));
    assert!(c("outbound|7070||grpc.example.internal").http2);
    // Unknown host: no cluster (503 at request time), with a warning naming the field.
    assert!(!plan.clusters.iter().any(|c| c.name.contains("ghost")));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("spec.http[11].route[0].destination.host")),
        "{warnings:#?}"
    );
}

#[test]
fn golden_route_table() {
    let (plan, _) = plan_of(GW);
    let got = serde_json::to_string_pretty(&plan).unwrap() + "\n";
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/l7_route_table.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        got == want,
        "compiled route table differs from {} (UPDATE_GOLDEN=1 to accept):\n{got}",
        path.display()
    );
}

fn errors_of(yaml: &str) -> Vec<String> {
    let m = load_str("t.yaml", yaml).expect("loads");
    validate(&m).0.iter().map(|e| e.to_string()).collect()
}

fn vs_http(http: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v, namespace: default}}\nspec:\n  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n{http}")
}

#[test]
fn validation_errors_name_the_field() {
    let cases = [
        ("  - match: [{uri: {prefix: /}}]\n", "spec.http[0]: HTTP route, redirect or direct_response is required"),
        ("  - route: [{destination: {host: a}}]\n    redirect: {uri: /x}\n", "HTTP route cannot contain both route and redirect"),
        ("  - match: [{headers: {x: {prefix: \"\"}}}]\n    route: [{destination: {host: a}}]\n", "spec.http[0].match[0].headers.x: \"headers\": prefix string match should not be empty"),
        ("  - match: [{uri: {regex: \"(\"}}]\n    route: [{destination: {host: a}}]\n", "spec.http[0].match[0].uri: \"uri\": error parsing regexp: "),
        ("  - route: [{destination: {host: a}}]\n    timeout: 0.0001s\n", "spec.http[0].timeout: duration must be greater than 1ms"),
        ("  - route: [{destination: {host: a}}]\n    retries: {attempts: 0, perTryTimeout: 1s}\n", "http retry policy configured when attempts are set to 0 (disabled)"),
        ("  - route: [{destination: {host: a}}]\n    retries: {attempts: 1, retryOn: bogus}\n", "\"bogus\" is not a valid retryOn policy"),
        ("  - route: [{destination: {host: a}}]\n    fault: {}\n", "HTTP fault injection must have an abort and/or a delay"),
        ("  - route: [{destination: {host: a}}]\n    fault: {abort: {httpStatus: 700, percentage: {value: 10}}}\n", "spec.http[0].fault.abort.httpStatus: HTTP status 700 is not in range 200-599"),
        ("  - redirect: {uri: /x, redirectCode: 200}\n", "spec.http[0].redirect.redirectCode: 200 is not a valid redirect code, must be 3xx"),
        ("  - redirect: {}\n", "redirect must specify URI, authority, scheme, or port"),
        ("  - route: [{destination: {host: a}}]\n    rewrite: {uri: /x, uriRegexRewrite: {match: a, rewrite: b}}\n", "rewrite may only contain one of URI or UriRegexRewrite"),
        ("  - route: [{destination: {host: a}}]\n    mirror: {host: b}\n    mirrors: [{destination: {host: c}}]\n", "HTTP route cannot contain both mirror and mirrors"),
        ("  - route: [{destination: {host: a}}]\n    headers: {request: {remove: [host]}}\n", "cannot set Host header"),
        ("  - route: [{destination: {host: a}}]\n    corsPolicy: {allowMethods: [FETCH]}\n", "\"FETCH\" is not a supported HTTP method"),
        ("  - route: [{destination: {host: a}, weight: 0}, {destination: {host: b}}]\n", "spec.http[0].route: total destination weight = 0"),
        ("  - null\n", "spec.http[0]: http route may not be null"),
        ("  - directResponse: {status: 700}\n", "spec.http[0].directResponse.status: HTTP status 700 is not in range 200-599"),
    ];
    for (http, want) in cases {
        let errs = errors_of(&vs_http(http));
        assert!(
            errs.iter()
                .any(|e| e.contains(want) && e.contains("VirtualService default/v")),
            "{http}\nwant {want:?}\ngot {errs:#?}"
        );
    }
    // Valid: must give no error.
    let ok = "  - match: [{uri: {prefix: /}, headers: {x: {}}}]\n    route: [{destination: {host: a}}]\n    corsPolicy: {allowOrigins: [{exact: \"*\"}], allowMethods: [GET], maxAge: 24h}\n    fault: {delay: {fixedDelay: 1s, percentage: {value: 0.5}}}\n    retries: {attempts: 2, retryOn: \"5xx,503\"}\n";
    assert_eq!(errors_of(&vs_http(ok)), Vec::<String>::new());
}

/// Istio `isAuthorityHeader`: a request `set`/`add` of `:authority` (as of `host`) rewrites
/// the authority instead of adding a header.
#[test]
fn authority_header_set_is_an_authority_rewrite() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\n";
    for (name, ops) in [
        (":authority", "set: {\":authority\": up.example.com}"),
        ("Host", "add: {Host: up.example.com}"),
    ] {
        let yaml = format!(
            "{gw}{}",
            vs_http(&format!(
                "  - route: [{{destination: {{host: a}}}}]\n    headers: {{request: {{{ops}}}}}\n"
            ))
        );
        assert_eq!(errors_of(&yaml), Vec::<String>::new(), "{name}");
        let (plan, _) = plan_of(&yaml);
        let route = &plan.listeners[0].vhosts[0].routes[0];
        let Action::Forward(f) = &route.action else {
            panic!("{name}: {route:?}")
        };
        assert_eq!(f.authority.as_deref(), Some("up.example.com"), "{name}");
    }
}
