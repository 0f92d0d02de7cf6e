//! The HTTP route matcher: for any request (method, authority, path, query and headers taken
//! from the input, one per line), the per-vhost index selects exactly the route the linear scan
//! in Istio's order selects, on every listener of the router tests' config; neither panics.
#![no_main]

use std::sync::OnceLock;

use gateway::config;
use gateway::l7::router::{Decision, RequestView, Strategy, Table};
use libfuzzer_sys::fuzz_target;

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let text = include_str!("../../gateway-userspace/tests/manifests/router.yaml");
        let m = config::load_str("router.yaml", text).expect("router.yaml loads");
        let a = config::admit(m, Vec::new(), None, false);
        let (plan, _) = config::compile(&a.manifests, &config::CompileInput::default());
        Table::build(&plan.http)
    })
}

fn same(a: &Decision<'_>, b: &Decision<'_>) -> bool {
    match (a, b) {
        (Decision::NoRoute, Decision::NoRoute) => true,
        (Decision::HttpsRedirect, Decision::HttpsRedirect) => true,
        (Decision::Route(x), Decision::Route(y)) => std::ptr::eq(*x, *y),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or("GET");
    let authority = lines.next().unwrap_or("");
    let raw_path = lines.next().unwrap_or("/");
    let query = lines.next().filter(|q| !q.is_empty());
    let mut headers = http::HeaderMap::new();
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) else {
            continue;
        };
        headers.append(n, v);
    }
    // The proxy matches the normalised path; an unnormalisable one is refused before routing.
    let Some(path) = gateway::l7::router::normalize_path(raw_path) else {
        return;
    };
    for scheme in ["http", "https"] {
        let req = RequestView {
            method,
            scheme,
            authority,
            path: &path,
            query,
            headers: &headers,
        };
        for l in &table().listeners {
            let indexed = l.select_with(&req, Strategy::Indexed);
            let linear = l.select_with(&req, Strategy::Linear);
            assert!(
                same(&indexed, &linear),
                "index {indexed:?} != linear {linear:?} for {method} {scheme}://{authority}{path}"
            );
        }
    }
});
