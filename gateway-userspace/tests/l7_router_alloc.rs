//! Route selection allocates nothing for a plain request: a counting global allocator watches
//! `normalize_path` + vhost lookup + first-match route selection (exact, prefix, regex and
//! header routes, wildcard and upper-case hosts with ports) on the test's own thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv4Addr;

use gateway::config::{compile, load_str, validate, CompileInput};
use gateway::l7::router::{normalize_path, Decision, RequestView, Table};
use http::{HeaderMap, HeaderValue};

/// Counts allocations made by the current thread while `COUNTING` is set on it; other test
/// threads of this binary are not counted.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        System.realloc(p, l, n)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

fn note() {
    // try_with: the allocator may run while thread-locals are being torn down.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

#[global_allocator]
static A: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> (usize, R) {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCS.with(Cell::get), r)
}

const YAML: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.internal]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {exact: /health}}]
    route: [{destination: {host: web.internal}}]
  - match: [{uri: {regex: "/api/v[0-9]+/items/.*"}, headers: {x-tenant: {prefix: gold}}}]
    route: [{destination: {host: web.internal}}]
  - match: [{uri: {prefix: /cart}, method: {exact: POST}}]
    route: [{destination: {host: web.internal}}]
  - match: [{uri: {prefix: /}}]
    route: [{destination: {host: web.internal}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wild, namespace: default}
spec:
  hosts: ["*.api.example.com"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /v1/}}]
    route: [{destination: {host: web.internal}}]
"#;

fn table() -> Table {
    let m = load_str("t.yaml", YAML).expect("loads");
    let (errs, _) = validate(&m);
    assert!(errs.is_empty(), "{errs:#?}");
    let input = CompileInput {
        vips: vec![Ipv4Addr::UNSPECIFIED],
        ..CompileInput::default()
    };
    Table::build(&compile(&m, &input).0.http)
}

#[test]
fn route_selection_allocates_nothing() {
    let table = table();
    let l = table.listener(Ipv4Addr::UNSPECIFIED, 80).expect("listener");
    let mut gold = HeaderMap::new();
    gold.insert("x-tenant", HeaderValue::from_static("gold-7"));
    let plain = HeaderMap::new();
    // (host, method, path, headers, origin of the expected route)
    let cases: [(&str, &str, &str, &HeaderMap, &str); 5] = [
        ("shop.example.com", "GET", "/health", &plain, "shop http[0]"),
        (
            "Shop.Example.COM:80",
            "GET",
            "/api/v2/items/9",
            &gold,
            "shop http[1]",
        ),
        (
            "shop.example.com",
            "POST",
            "/cart/add",
            &plain,
            "shop http[2]",
        ),
        (
            "shop.example.com",
            "GET",
            "/anything/else",
            &plain,
            "shop http[3]",
        ),
        (
            "eu.api.example.com:8080",
            "GET",
            "/v1/x",
            &plain,
            "wild http[0]",
        ),
    ];
    for (host, method, path, headers, origin) in cases {
        // Warm-up outside the count: the regex engine fills its lazy caches on first use.
        let view = RequestView {
            method,
            scheme: "http",
            authority: host,
            path,
            query: None,
            headers,
        };
        assert!(matches!(l.select(&view), Decision::Route(_)));
        let (n, hit) = allocations(|| {
            let path = normalize_path(path).expect("origin-form path");
            let view = RequestView {
                method,
                scheme: "http",
                authority: host,
                path: &path,
                query: None,
                headers,
            };
            match l.select(&view) {
                Decision::Route(r) => Some(r.origin.clone()),
                _ => None,
            }
        });
        let hit = hit.unwrap_or_else(|| panic!("{host}{path}: no route"));
        assert!(
            hit.contains(origin),
            "{host}{path}: route {hit} is not from {origin}"
        );
        assert_eq!(
            n, 0,
            "{method} {host}{path}: {n} allocations in route selection"
        );
    }
    // The counter works: a lookup that must lower-case a host longer than the stack buffer
    // allocates, and is seen doing so.
    let long = format!("{}.API.example.com", "a".repeat(300));
    let (n, _) = allocations(|| {
        let view = RequestView {
            method: "GET",
            scheme: "http",
            authority: &long,
            path: "/v1/",
            query: None,
            headers: &plain,
        };
        matches!(l.select(&view), Decision::Route(_))
    });
    assert!(n > 0, "the counting allocator saw nothing");
}
