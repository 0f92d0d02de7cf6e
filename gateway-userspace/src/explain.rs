//! `gateway explain`: how the compiled plan answers one HTTP request, step by step, with the
//! same route table the proxy serves from (`l7::router`), so the explanation cannot drift from
//! what the gateway does. Answers the question behind most 404 reports: which listener, which
//! virtual host, which rules were tried and which condition each one failed.

use std::fmt::Write as _;

use http::HeaderMap;

use crate::l7::router::{normalize_path, Decision, Listener, RequestView, Route, Table};
use crate::plan::{http as p, Plan, Proto};

/// A request as the operator writes it: `GET http://host:port/path?query` plus headers.
pub struct Request {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub port: u16,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The TLS server name for https (default: the host).
    pub sni: Option<String>,
}

impl Request {
    /// Parses `METHOD URL` (the method may be left out: GET) and `name: value` headers.
    pub fn parse(line: &str, headers: &[String], sni: Option<String>) -> Result<Request, String> {
        let (method, url) = match line.trim().split_once(' ') {
            Some((m, u)) => (m.to_string(), u.trim()),
            None => ("GET".to_string(), line.trim()),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?}: expected http://host[:port]/path or https://..."))?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("{url:?}: scheme must be http or https")),
        };
        let (authority, path_query) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let port = match authority.rsplit_once(':') {
            Some((_, p)) if !authority.ends_with(']') => {
                p.parse().map_err(|_| format!("{authority:?}: bad port"))?
            }
            _ => default_port,
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (path_query.to_string(), None),
        };
        let mut map = HeaderMap::new();
        for h in headers {
            let (n, v) = h
                .split_once(':')
                .ok_or_else(|| format!("header {h:?}: expected 'name: value'"))?;
            let name = http::HeaderName::from_bytes(n.trim().as_bytes())
                .map_err(|e| format!("header {n:?}: {e}"))?;
            let value =
                http::HeaderValue::from_str(v.trim()).map_err(|e| format!("header {n:?}: {e}"))?;
            map.append(name, value);
        }
        // An explicit Host header wins, as it would on the wire for HTTP/1.1.
        let authority = match map.get(http::header::HOST).and_then(|v| v.to_str().ok()) {
            Some(h) => h.to_string(),
            None => authority.to_string(),
        };
        Ok(Request {
            method,
            scheme: scheme.to_string(),
            authority,
            port,
            path,
            query,
            headers: map,
            sni,
        })
    }
}

/// The explanation as text, and the HTTP status the gateway would answer with (0 when the
/// request would not reach the HTTP router at all: no listener).
pub fn explain(plan: &Plan, req: &Request) -> (String, u16) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "request: {} {}://{}{}{}",
        req.method,
        req.scheme,
        req.authority,
        req.path,
        req.query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    );
    let table = Table::build(&plan.http);
    let Some(listener) = table.listeners.iter().find(|l| l.port == req.port) else {
        let l4: Vec<String> = plan
            .l4
            .iter()
            .filter(|s| s.port == req.port)
            .map(|s| format!("{} {}", proto(s.proto), s.vip))
            .collect();
        if l4.is_empty() {
            let ports: Vec<String> = table.listeners.iter().map(|l| l.port.to_string()).collect();
            let _ = writeln!(
                out,
                "no HTTP listener on port {}: nothing listens there (HTTP listeners: {}). A Gateway server on that port, with a VirtualService bound to it, is needed.",
                req.port,
                if ports.is_empty() { "none".to_string() } else { ports.join(", ") }
            );
        } else {
            let _ = writeln!(
                out,
                "port {} is an L4 service ({}): routed by VirtualService tcp rules, not HTTP routes",
                req.port,
                l4.join(", ")
            );
        }
        return (out, 0);
    };
    let _ = writeln!(out, "listener: {}:{}", listener.bind, listener.port);
    let Some(path) = normalize_path(&req.path) else {
        let _ = writeln!(out, "the path is not a valid origin-form path: 400");
        return (out, 400);
    };
    let view = RequestView {
        method: &req.method,
        scheme: &req.scheme,
        authority: &req.authority,
        path: &path,
        query: req.query.as_deref(),
        headers: &req.headers,
    };
    let chosen: &Listener = if listener.chains.is_empty() {
        listener
    } else {
        // HTTPS: the chain is chosen by SNI; each has its own route table (Istio, §3.7).
        let sni = req
            .sni
            .clone()
            .unwrap_or_else(|| crate::l7::router::strip_port(&req.authority).to_string());
        let sni_view = RequestView {
            authority: &sni,
            ..view
        };
        match listener
            .chains
            .iter()
            .find(|c| c.explain(&sni_view).vhost.is_some())
        {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "TLS: SNI {sni} selects the server for {:?}",
                    c.domains()
                );
                c
            }
            None => {
                let _ = writeln!(
                    out,
                    "TLS: no server on this port for SNI {sni}: the handshake fails (servers: {:?})",
                    listener.chains.iter().map(|c| c.domains()).collect::<Vec<_>>()
                );
                return (out, 0);
            }
        }
    };
    let e = chosen.explain(&view);
    let Some(vhost) = e.vhost else {
        let _ = writeln!(
            out,
            "no virtual host for {:?} on this listener (domains: {:?}): 404. A VirtualService with this host, bound to the Gateway of this port, is needed.",
            crate::l7::router::strip_port(&req.authority),
            chosen.domains()
        );
        return (out, 404);
    };
    let _ = writeln!(
        out,
        "virtual host: {vhost} (domains: {:?})",
        chosen.domains()
    );
    for (i, (r, failed)) in e.routes.iter().enumerate() {
        match failed {
            Some(cond) => {
                let _ = writeln!(
                    out,
                    "  rule {}: {}: no match ({cond}: {})",
                    i + 1,
                    r.origin,
                    condition(r, cond)
                );
            }
            None => {
                let _ = writeln!(out, "  rule {}: {}: MATCH", i + 1, r.origin);
            }
        }
    }
    let status = match e.decision {
        Decision::NoRoute => {
            let _ = writeln!(out, "no rule matched: 404 (Envoy's response flag NR)");
            404
        }
        Decision::HttpsRedirect => {
            let _ = writeln!(out, "the server sets tls.httpsRedirect: 301 to https");
            301
        }
        Decision::Route(r) => action(&mut out, &table, r),
    };
    (out, status)
}

fn proto(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
    }
}

/// What the failed condition asked for, from the plan.
fn condition(r: &Route, cond: &str) -> String {
    let m = &r.plan.matcher;
    match cond {
        "uri" => format!("{:?}", m.path),
        "method" => format!("{:?}", m.method),
        "scheme" => format!("{:?}", m.scheme),
        "authority" => format!("{:?}", m.authority),
        "headers" => format!("{:?}", m.headers),
        "queryParams" => format!("{:?}", m.query),
        _ => String::new(),
    }
}

fn action(out: &mut String, table: &Table, r: &Route) -> u16 {
    match &r.plan.action {
        p::Action::Direct { status, .. } => {
            let _ = writeln!(out, "action: direct response {status}");
            *status
        }
        p::Action::Redirect(rd) => {
            let _ = writeln!(out, "action: redirect {:?}", rd);
            rd.code
        }
        p::Action::Forward(f) => {
            let _ = writeln!(out, "action: forward");
            let mut any = false;
            for (wc, idx) in f.clusters.iter().zip(&r.clusters) {
                let share = (u64::from(wc.weight) * 100)
                    .checked_div(r.total_weight)
                    .unwrap_or(0);
                match idx.map(|i| &table.clusters[i]) {
                    Some(c) => {
                        let eps: Vec<String> = c
                            .endpoints
                            .iter()
                            .map(|e| format!("{}:{}", e.addr, e.port))
                            .collect();
                        any |= !eps.is_empty() && wc.weight > 0;
                        let _ = writeln!(
                            out,
                            "  {share}% -> {} ({:?}): endpoints [{}]",
                            wc.cluster,
                            c.lb,
                            eps.join(", ")
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "  {share}% -> {}: unknown cluster (host, port or subset not found): 503 NR",
                            wc.cluster
                        );
                    }
                }
            }
            if any {
                200
            } else {
                let _ = writeln!(out, "no destination has endpoints: 503 (Envoy's UH)");
                503
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{explain, Plan, Request};
    use crate::config::{compile, load_str, CompileInput};

    const YAML: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: web, namespace: demo}\nspec:\n  hosts: [web.demo.local]\n  resolution: STATIC\n  ports: [{number: 8000, name: http, protocol: HTTP}]\n  endpoints: [{address: 198.18.11.2}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: demo}\nspec:\n  hosts: [web.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - name: canary\n    match: [{headers: {x-canary: {exact: \"true\"}}}]\n    directResponse: {status: 299}\n  - match: [{uri: {prefix: /api/}}]\n    route: [{destination: {host: web.demo.local}}]\n";

    fn plan() -> Plan {
        let m = load_str("t.yaml", YAML).unwrap();
        let input = CompileInput {
            vips: vec![std::net::Ipv4Addr::UNSPECIFIED.into()],
            ..CompileInput::default()
        };
        let (plan, warnings) = compile(&m, &input);
        assert!(!plan.http.listeners.is_empty(), "{warnings:#?}");
        plan
    }

    fn run(line: &str, headers: &[&str]) -> (String, u16) {
        let h: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        explain(&plan(), &Request::parse(line, &h, None).unwrap())
    }

    #[test]
    fn explains_the_match_and_the_rules_before_it() {
        let (text, status) = run("GET http://web.example.com:8080/api/x", &[]);
        println!("{text}");
        assert_eq!(status, 200, "{text}");
        assert!(
            text.contains("rule 1: VirtualService demo/web") && text.contains("no match (headers"),
            "{text}"
        );
        assert!(
            text.contains("rule 2: VirtualService demo/web") && text.contains("MATCH"),
            "{text}"
        );
        assert!(text.contains("198.18.11.2:8000"), "{text}");
        let (text, status) = run("http://web.example.com:8080/x", &["x-canary: true"]);
        assert_eq!(status, 299, "{text}");
    }

    #[test]
    fn explains_each_kind_of_404() {
        let (text, status) = run("GET http://web.example.com:8080/other", &[]);
        assert_eq!(status, 404);
        assert!(
            text.contains("no match (uri") && text.contains("no rule matched"),
            "{text}"
        );
        let (text, status) = run("GET http://nope.example.com:8080/api/x", &[]);
        assert_eq!(status, 404);
        assert!(
            text.contains("no virtual host for \"nope.example.com\""),
            "{text}"
        );
        let (text, status) = run("GET http://web.example.com:9999/", &[]);
        assert_eq!(status, 0);
        assert!(text.contains("no HTTP listener on port 9999"), "{text}");
    }
}

/// How the plan serves TCP or UDP to `vip:port`: the L4 service on the XDP path (its
/// backends, weights and NAT), a port the agent serves itself (HTTP, TLS), or nothing.
/// The status is 200 when something serves it, 404 when nothing does, 503 for a service
/// without backends.
pub fn explain_l4(plan: &Plan, vip: std::net::IpAddr, port: u16, proto: Proto) -> (String, u16) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "flow: {proto:?} to {}",
        std::net::SocketAddr::new(vip, port)
    );
    // A wildcard matches any address of its own family (a VIP serves its family's endpoints).
    let matches = |v: std::net::IpAddr| {
        v == vip || (v.is_ipv6() == vip.is_ipv6() && (v.is_unspecified() || vip.is_unspecified()))
    };
    if let Some(s) = plan
        .l4
        .iter()
        .find(|s| matches(s.vip) && s.port == port && s.proto == proto)
    {
        let _ = writeln!(
            out,
            "L4 service {} {:?} (XDP fast path)",
            std::net::SocketAddr::new(s.vip, s.port),
            s.proto
        );
        let _ = writeln!(out, "  from: {}", s.origin);
        let _ = writeln!(out, "  NAT: {:?}, hash: {:?}", s.nat, s.hash);
        if s.backends.is_empty() {
            let _ = writeln!(
                out,
                "  no backends: packets are dropped and counted (no_backend)"
            );
            return (out, 503);
        }
        let total: u64 = s.backends.iter().map(|b| u64::from(b.weight)).sum();
        for b in &s.backends {
            let _ = writeln!(
                out,
                "  backend {} weight {} ({:.1}% of the Maglev table)",
                std::net::SocketAddr::new(b.addr, b.port),
                b.weight,
                100.0 * f64::from(b.weight) / total.max(1) as f64
            );
        }
        return (out, 200);
    }
    if proto == Proto::Tcp {
        if let Some(l) = plan.local.iter().find(|l| matches(l.vip) && l.port == port) {
            let _ = writeln!(
                out,
                "served by the agent itself (passed to the local stack): {}",
                l.origin
            );
            let _ = writeln!(
                out,
                "  explain a request on it: gateway explain 'GET http://HOST:{port}/PATH'"
            );
            return (out, 200);
        }
    }
    let ports: Vec<String> = plan
        .l4
        .iter()
        .filter(|s| s.proto == proto)
        .map(|s| std::net::SocketAddr::new(s.vip, s.port).to_string())
        .collect();
    let _ = writeln!(
        out,
        "nothing serves it: the XDP program passes such packets to the kernel; {proto:?} services: {}",
        if ports.is_empty() { "none".to_string() } else { ports.join(", ") }
    );
    (out, 404)
}

/// `%XX`-encodes everything but RFC 3986's unreserved characters (a query value).
pub fn query_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The (name, value) pairs of a query string, `%XX` and `+` decoded.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (b[i], hex) {
                (b'%', Some(v)) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                (b'+', _) => out.push(b' '),
                (c, _) => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod query_tests {
    use super::{query_encode, query_pairs};

    #[test]
    fn query_round_trip() {
        for s in [
            "GET http://a.example:8080/x?y=1&z=%2F",
            "x-user: ä b+c",
            "100%",
            "%zz%4",
        ] {
            let q = format!("k={}", query_encode(s));
            assert_eq!(
                query_pairs(&q),
                vec![("k".to_string(), s.to_string())],
                "{s}"
            );
        }
        assert_eq!(
            query_pairs("a=1+2&b"),
            vec![("a".into(), "1 2".into()), ("b".into(), String::new())]
        );
    }
}
