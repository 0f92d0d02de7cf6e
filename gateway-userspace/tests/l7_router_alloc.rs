//! Route selection allocates nothing for a plain request: a counting global allocator watches
//! `normalize_path` + vhost lookup + first-match route selection (exact, prefix, regex and
//! header routes, wildcard and upper-case hosts with ports) on the test's own thread.

use std::net::Ipv4Addr;

use gateway::l7::router::{normalize_path, Decision, RequestView, Table};
use http::{HeaderMap, HeaderValue};

mod support;
use support::alloc::{allocations, Counting};
use support::gateway::{compile_valid, input};

#[global_allocator]
static A: Counting = Counting;

/// One HTTP Gateway on 80, a `web.internal` service, and exact, regex, header, method and
/// wildcard-host routes.
const YAML: &str = include_str!("manifests/router_alloc.yaml");

fn table() -> Table {
    Table::build(&compile_valid(YAML, &input()).0.http)
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
