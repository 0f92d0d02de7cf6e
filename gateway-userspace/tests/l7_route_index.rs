//! The per-vhost route index against the linear scan it replaces: the same decision for every
//! request over many random route tables (seeded, so a failure reproduces), and no allocation
//! per lookup (a counting global allocator).

use std::net::Ipv4Addr;

use gateway::l7::router::{Decision, Listener, RequestView, Strategy, Table};
use gateway::plan::http as p;
use http::{HeaderMap, HeaderValue};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod support;
use support::alloc::{allocs, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

const SEGS: [&str; 9] = ["a", "b", "A", "B", "ab", "api", "v1", "x1", "Ab"];

fn pick<'a, T: ?Sized>(rng: &mut SmallRng, xs: &[&'a T]) -> &'a T {
    xs[rng.gen_range(0..xs.len())]
}

/// `/seg/seg...` over a tiny alphabet (mixed case), so routes and requests collide often.
fn rand_path(rng: &mut SmallRng) -> String {
    let mut s = String::new();
    for _ in 0..rng.gen_range(0..4) {
        s.push('/');
        s.push_str(pick(rng, &SEGS));
    }
    if s.is_empty() || rng.gen_bool(0.2) {
        s.push('/');
    }
    s
}

fn rand_str_match(rng: &mut SmallRng, values: &[&str]) -> p::StrMatch {
    let v = pick(rng, values).to_string();
    match rng.gen_range(0..5) {
        0 => p::StrMatch::Prefix(v[..1].to_string()),
        1 => p::StrMatch::Present,
        2 => p::StrMatch::Regex(format!("{v}|9")),
        _ => p::StrMatch::Exact(v),
    }
}

/// The kinds of URI condition, to check that the requests reach each of them.
const KINDS: [&str; 6] = [
    "exact",
    "prefix",
    "exact-ignorecase",
    "prefix-ignorecase",
    "regex",
    "regex-unprefixed",
];

fn rand_route(rng: &mut SmallRng, i: usize) -> p::Route {
    let base = rand_path(rng);
    let (path, ignore_case, kind) = match rng.gen_range(0..10) {
        0 | 1 => {
            let ic = rng.gen_bool(0.3);
            (p::PathMatch::Exact(base), ic, if ic { 2 } else { 0 })
        }
        2..=4 => {
            // Cut anywhere, also inside a segment (Istio prefixes are not segment-aware).
            let cut = rng.gen_range(1..=base.len());
            let ic = rng.gen_bool(0.3);
            let pre = base[..cut].to_string();
            (p::PathMatch::Prefix(pre), ic, if ic { 3 } else { 1 })
        }
        5 => (p::PathMatch::Prefix("/".into()), false, 1),
        _ => {
            let seg = pick(rng, &SEGS);
            let re = match rng.gen_range(0..10) {
                0 => format!("{}.*", regex_escape(&base)),
                1 => format!("{}[a-z0-9/]*", regex_escape(&base)),
                2 => format!("(?i){}.*", regex_escape(&base)),
                3 => format!(".*/{seg}"),
                4 => format!("/({seg}|api)/.*"),
                5 => format!("{}(/.*)?", regex_escape(&base)),
                6 => "[^\\s\\S]".to_string(),
                7 => ".*".to_string(),
                8 => "/[aA][bB]?(/.*)?".to_string(),
                _ => "/\\w+/v1".to_string(),
            };
            let kind = if matches!(re.as_bytes()[0], b'.') {
                5
            } else {
                4
            };
            // ignoreUriCase is carried but does not apply to regex.
            (p::PathMatch::Regex(re), rng.gen_bool(0.2), kind)
        }
    };
    let mut headers = Vec::new();
    for _ in 0..rng.gen_range(0..4usize).saturating_sub(1) {
        headers.push(p::HeaderMatch {
            name: pick(rng, &["x-a", "x-b"]).to_string(),
            value: rand_str_match(rng, &["1", "2"]),
            invert: rng.gen_bool(0.2),
        });
    }
    let method = rng
        .gen_bool(0.3)
        .then(|| rand_str_match(rng, &["GET", "POST"]));
    let query = if rng.gen_bool(0.1) {
        vec![p::QueryMatch {
            name: "q".into(),
            value: rand_str_match(rng, &["1", "2"]),
        }]
    } else {
        Vec::new()
    };
    let authority = rng.gen_bool(0.1).then(|| p::StrMatch::Prefix("h1".into()));
    let scheme = rng
        .gen_bool(0.05)
        .then(|| p::StrMatch::Exact("https".into()));
    p::Route {
        // The kind travels in the origin, for the coverage count.
        origin: format!("r{i} {}", KINDS[kind]),
        name: None,
        matcher: p::RouteMatch {
            path,
            ignore_case,
            method,
            scheme,
            authority,
            headers,
            query,
        },
        action: p::Action::Direct {
            status: 200,
            body: None,
        },
        request_headers: p::HeaderOps::default(),
        response_headers: p::HeaderOps::default(),
        fault: None,
        mirrors: Vec::new(),
        cors: None,
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

fn table(routes: Vec<p::Route>) -> Table {
    Table::build(&p::HttpPlan {
        listeners: vec![p::Listener {
            bind: Ipv4Addr::UNSPECIFIED,
            port: 80,
            vhosts: vec![p::VirtualHost {
                domain: "*".into(),
                require_tls: false,
                routes: routes.into_iter().map(std::sync::Arc::new).collect(),
            }],
            origin: "test".into(),
            tls: Vec::new(),
        }],
        clusters: Vec::new(),
    })
}

struct Req {
    method: &'static str,
    scheme: &'static str,
    authority: &'static str,
    path: String,
    query: Option<&'static str>,
    headers: HeaderMap,
}

impl Req {
    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: self.method,
            scheme: self.scheme,
            authority: self.authority,
            path: &self.path,
            query: self.query,
            headers: &self.headers,
        }
    }
}

fn rand_req(rng: &mut SmallRng) -> Req {
    let mut headers = HeaderMap::new();
    for name in ["x-a", "x-b"] {
        if rng.gen_bool(0.6) {
            let v = pick(rng, &["1", "2", "3"]);
            headers.insert(name, HeaderValue::from_static(v));
        }
    }
    Req {
        method: pick(rng, &["GET", "POST", "PUT"]),
        scheme: pick(rng, &["http", "https"]),
        authority: pick(rng, &["h1.example", "h2.example:8080"]),
        path: rand_path(rng),
        query: *pick(rng, &[&None, &Some("q=1"), &Some("q=2&q=1")]),
        headers,
    }
}

fn same(a: &Decision<'_>, b: &Decision<'_>) -> bool {
    match (a, b) {
        (Decision::Route(x), Decision::Route(y)) => std::ptr::eq(*x, *y),
        (Decision::NoRoute, Decision::NoRoute) => true,
        (Decision::HttpsRedirect, Decision::HttpsRedirect) => true,
        _ => false,
    }
}

fn origin<'a>(d: &Decision<'a>) -> &'a str {
    match d {
        Decision::Route(r) => &r.plan.origin,
        _ => "-",
    }
}

#[test]
fn indexed_lookup_equals_linear_scan() {
    let mut rng = SmallRng::seed_from_u64(20_261_122);
    let mut hits_by_kind = [0usize; KINDS.len()];
    let (mut lookups, mut hits) = (0usize, 0usize);
    for t in 0..400 {
        // Mostly small tables (dense collisions), some large ones.
        let n = if t % 10 == 0 {
            rng.gen_range(100..400)
        } else {
            rng.gen_range(1..40)
        };
        let routes: Vec<p::Route> = (0..n).map(|i| rand_route(&mut rng, i)).collect();
        let table = table(routes);
        let l: &Listener = &table.listeners[0];
        for _ in 0..200 {
            let req = rand_req(&mut rng);
            let v = req.view();
            let lin = l.select_with(&v, Strategy::Linear);
            let idx = l.select_with(&v, Strategy::Indexed);
            let auto = l.select(&v);
            assert!(
                same(&lin, &idx) && same(&lin, &auto),
                "table {t} ({n} routes), {} {} {} ?{:?} {:?}: linear {}, indexed {}, auto {}",
                req.method,
                req.authority,
                req.path,
                req.query,
                req.headers,
                origin(&lin),
                origin(&idx),
                origin(&auto),
            );
            lookups += 1;
            if let Decision::Route(r) = lin {
                hits += 1;
                let kind = r.plan.origin.split(' ').nth(1).unwrap();
                hits_by_kind[KINDS.iter().position(|k| *k == kind).unwrap()] += 1;
            }
        }
    }
    // The comparison means something only if requests hit routes of every kind, and miss too.
    assert!(
        hits > lookups / 4 && hits < lookups,
        "{hits} hits of {lookups}"
    );
    for (k, n) in KINDS.iter().zip(hits_by_kind) {
        assert!(n > 100, "only {n} hits on {k} routes: {hits_by_kind:?}");
    }
}

#[test]
fn indexed_lookup_does_not_allocate() {
    // A large vhost with every kind of URI condition, including unindexed regexes (the gate).
    let mut rng = SmallRng::seed_from_u64(7);
    let mut routes: Vec<p::Route> = (0..2000).map(|i| rand_route(&mut rng, i)).collect();
    for (i, r) in routes.iter_mut().enumerate().take(50) {
        r.matcher.path = p::PathMatch::Regex(format!(".*/u{i}"));
    }
    let table = table(routes);
    let l = &table.listeners[0];
    // Repeated headers are joined into a new string (Envoy's rule): keep them single here.
    let reqs: Vec<Req> = (0..500)
        .map(|_| {
            let mut r = rand_req(&mut rng);
            r.query = None;
            r
        })
        .collect();
    let extra = Req {
        path: "/x/u3".into(),
        ..rand_req(&mut rng)
    };
    // Warm-up: the regex engines fill their per-thread caches on first use.
    for _ in 0..3 {
        for r in reqs.iter().chain([&extra]) {
            l.select_with(&r.view(), Strategy::Indexed);
        }
    }
    let before = allocs();
    let mut hits = 0;
    for r in reqs.iter().chain([&extra]) {
        if let Decision::Route(_) = l.select_with(&r.view(), Strategy::Indexed) {
            hits += 1;
        }
    }
    let after = allocs();
    assert_eq!(
        after - before,
        0,
        "allocations in {} lookups",
        reqs.len() + 1
    );
    assert!(hits > reqs.len() / 4, "only {hits} hits");
    // The counter does count.
    let s = std::hint::black_box(String::from("x"));
    assert!(allocs() > after);
    drop(s);
}
