//! Istio's validation of VirtualService `http[]` routes (`validateHTTPRoute` and friends).
//!
//! Semantics follow `istio-semantics.md` §3.1–3.26.

use crate::config::model::{
    CorsPolicy, Destination, Headers, HttpFault, HttpMatch, HttpRedirect, HttpRoute,
    HttpRouteDestination, StringMatch, GRPC_CODES,
};
use crate::config::names::{is_dns1123_label, validate_labels, validate_wildcard_domain};
use crate::config::syntax::{anchored, base64_decode, parse_duration};

use super::super::{validate_duration, Findings};

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

const RETRY_ON: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

// ---------------------------------------------------------------------------------------------
// Validation (Istio `validateHTTPRoute` and friends)

pub(crate) fn validate_http(routes: &[Option<HttpRoute>], delegate_vs: bool) -> Findings {
    let mut f = Findings::default();
    let mut catch_all_before: Option<usize> = None;
    for (i, r) in routes.iter().enumerate() {
        let at = format!("spec.http[{i}]");
        let Some(r) = r else {
            f.err(&at, "http route may not be null");
            continue;
        };
        route(&mut f, &at, r, delegate_vs);
        if let Some(c) = catch_all_before {
            f.warn(
                &at,
                format!("virtualService rule #{i} not used (route without matches defined before, rule #{c})"),
            );
        } else if r.matches.is_empty() || r.matches.iter().any(is_catch_all_match) {
            catch_all_before = Some(i);
        }
    }
    f
}

/// Istio `IsCatchAllRoute` on the source form of one match block.
fn is_catch_all_match(m: &HttpMatch) -> bool {
    let uri_all = match &m.uri {
        None => true,
        Some(u) => {
            u.prefix.as_deref() == Some("/")
                || matches!(u.regex.as_deref(), Some("*") | Some(".*"))
                || (u.exact.is_none() && u.prefix.is_none() && u.regex.is_none())
        }
    };
    uri_all
        && m.headers.is_empty()
        && m.without_headers.is_empty()
        && m.query_params.is_empty()
        && m.method.is_none()
        && m.scheme.is_none()
        && m.authority.is_none()
}

fn route(f: &mut Findings, at: &str, r: &HttpRoute, delegate_vs: bool) {
    if r.delegate.is_some() {
        if delegate_vs {
            f.err(
                format!("{at}.delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if !r.route.is_empty() {
            f.err(
                format!("{at}.route"),
                "root HTTP route must not specify route",
            );
        }
        if r.redirect.is_some() {
            f.err(
                format!("{at}.redirect"),
                "root HTTP route must not specify redirect",
            );
        }
    } else if r.route.is_empty() && r.redirect.is_none() && r.direct_response.is_none() {
        f.err(at, "HTTP route, redirect or direct_response is required");
    }
    let pairs = [
        (
            !r.route.is_empty(),
            r.redirect.is_some(),
            "route and redirect",
        ),
        (
            r.fault.is_some(),
            r.redirect.is_some(),
            "fault and redirect",
        ),
        (
            r.rewrite.is_some(),
            r.redirect.is_some(),
            "rewrite and redirect",
        ),
        (
            r.direct_response.is_some(),
            r.redirect.is_some(),
            "direct_response and redirect",
        ),
        (
            !r.route.is_empty(),
            r.direct_response.is_some(),
            "route and direct_response",
        ),
        (
            r.fault.is_some(),
            r.direct_response.is_some(),
            "fault and direct_response",
        ),
        (
            r.rewrite.is_some(),
            r.direct_response.is_some(),
            "rewrite and direct_response",
        ),
    ];
    for (a, b, what) in pairs {
        if a && b {
            f.err(at, format!("HTTP route cannot contain both {what}"));
        }
    }
    if r.mirror.is_some() && r.mirrors.as_ref().is_some_and(|m| !m.is_empty()) {
        f.err(at, "HTTP route cannot contain both mirror and mirrors");
    }

    for (k, m) in r.matches.iter().enumerate() {
        http_match(f, &format!("{at}.match[{k}]"), m);
    }
    // Authority may be set in one place only (rewrite, or request set/add of host).
    let mut authority_setters =
        usize::from(r.rewrite.as_ref().is_some_and(|w| w.authority.is_some()));
    if let Some(h) = &r.headers {
        authority_setters += headers(f, &format!("{at}.headers"), h);
    }
    if authority_setters > 1 {
        f.err(
            format!("{at}.headers"),
            "authority header cannot be set multiple times",
        );
    }
    destinations(f, &format!("{at}.route"), &r.route);
    if let Some(rd) = &r.redirect {
        redirect(f, &format!("{at}.redirect"), rd, &r.matches);
    }
    if let Some(dr) = &r.direct_response {
        let dat = format!("{at}.directResponse");
        if !(200..=599).contains(&dr.status) {
            f.err(
                format!("{dat}.status"),
                format!(
                    "directResponse.status must be between 200 and 599, got {}",
                    dr.status
                ),
            );
        }
        if let Some(b) = &dr.body {
            let len = match (&b.string, &b.bytes) {
                (Some(s), None) => Some(s.len()),
                (None, Some(bs)) => match base64_decode(bs) {
                    Some(v) => Some(v.len()),
                    None => {
                        f.err(
                            format!("{dat}.body.bytes"),
                            "body.bytes is not valid base64",
                        );
                        None
                    }
                },
                (Some(_), Some(_)) => {
                    f.err(
                        format!("{dat}.body"),
                        "only one of string or bytes may be set",
                    );
                    None
                }
                (None, None) => None,
            };
            if let Some(n) = len {
                if n > 1 << 20 {
                    f.err(format!("{dat}.body"), format!("large direct_responses may impact control plane performance, must be less than 1048576 bytes, got {n}"));
                } else if n > 100 << 10 {
                    f.warn(format!("{dat}.body"), format!("large direct_responses may impact control plane performance, got {n} bytes"));
                }
            }
        }
    }
    if let Some(w) = &r.rewrite {
        let wat = format!("{at}.rewrite");
        if w.uri.is_some() && w.uri_regex_rewrite.is_some() {
            f.err(
                &wat,
                "rewrite may only contain one of URI or UriRegexRewrite",
            );
        }
        if w.uri.is_none() && w.uri_regex_rewrite.is_none() && w.authority.is_none() {
            f.err(
                &wat,
                "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
            );
        }
        if let Some(rr) = &w.uri_regex_rewrite {
            if rr.pattern.is_empty() || rr.rewrite.is_empty() {
                f.err(
                    format!("{wat}.uriRegexRewrite"),
                    "UriRegexRewrite requires both Rewrite and Match fields to be specified",
                );
            } else {
                regex_ok(f, &format!("{wat}.uriRegexRewrite.match"), &rr.pattern);
            }
        }
    }
    if let Some(t) = &r.timeout {
        if let Err(e) = validate_duration(t) {
            f.err(format!("{at}.timeout"), e);
        }
    }
    if let Some(rt) = &r.retries {
        let rat = format!("{at}.retries");
        if rt.attempts < 0 {
            f.err(format!("{rat}.attempts"), "attempts cannot be negative");
        }
        if rt.attempts == 0
            && (rt.per_try_timeout.is_some()
                || rt.retry_on.is_some()
                || rt.retry_remote_localities.is_some())
        {
            f.err(
                &rat,
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        if let Some(t) = &rt.per_try_timeout {
            if let Err(e) = validate_duration(t) {
                f.err(format!("{rat}.perTryTimeout"), e);
            }
        }
        if let Some(t) = &rt.backoff {
            if let Err(e) = validate_duration(t) {
                f.err(format!("{rat}.backoff"), e);
            }
        }
        if let Some(on) = &rt.retry_on {
            for tok in on.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let code_ok = tok.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
                if !code_ok && !RETRY_ON.contains(&tok) {
                    f.err(
                        format!("{rat}.retryOn"),
                        format!("{tok:?} is not a valid retryOn policy"),
                    );
                }
            }
        }
    }
    if let Some(fa) = &r.fault {
        fault(f, &format!("{at}.fault"), fa);
    }
    if let Some(d) = &r.mirror {
        destination(f, &format!("{at}.mirror"), d);
    }
    if let Some(pct) = &r.mirror_percentage {
        mirror_pct(f, &format!("{at}.mirrorPercentage"), pct.value);
    }
    if r.mirror_percent.is_some() {
        f.warn(
            format!("{at}.mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    for (k, m) in r.mirrors.iter().flatten().enumerate() {
        let mat = format!("{at}.mirrors[{k}]");
        match &m.destination {
            None => f.err(
                format!("{mat}.destination"),
                "destination is required for mirrors",
            ),
            Some(d) => destination(f, &format!("{mat}.destination"), d),
        }
        if let Some(pct) = &m.percentage {
            mirror_pct(f, &format!("{mat}.percentage"), pct.value);
        }
    }
    if let Some(c) = &r.cors_policy {
        cors(f, &format!("{at}.corsPolicy"), c);
    }
}

fn mirror_pct(f: &mut Findings, at: &str, v: f64) {
    if v > 100.0 {
        f.err(at, "mirror_percentage must have a max value of 100");
    }
    if v < 0.0 {
        f.err(at, "mirror_percentage must have a min value of 0");
    }
}

fn regex_ok(f: &mut Findings, at: &str, re: &str) {
    if re.len() > 1024 {
        f.err(at, "regex is too large, max length allowed is 1024");
    } else if let Err(e) = regex::Regex::new(&anchored(re)) {
        f.err(
            at,
            format!("{re:?} is not a valid regex, Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax): {e}"),
        );
    }
}

/// `what` names the field in Istio's message (`"headers"`, `"scheme"`, ...); uri allows an
/// empty prefix.
fn string_match(f: &mut Findings, at: &str, what: &str, m: &StringMatch) {
    let n = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if n > 1 {
        f.err(at, "only one of exact, prefix or regex may be set");
    }
    if what != "uri" && m.prefix.as_deref() == Some("") {
        f.err(
            at,
            format!("{what:?}: prefix string match should not be empty"),
        );
    }
    if let Some(re) = &m.regex {
        if re.is_empty() {
            f.err(
                at,
                format!("{what:?}: regex string match should not be empty"),
            );
        } else if re != "*" {
            regex_ok(f, at, re);
        }
    }
}

fn http_match(f: &mut Findings, at: &str, m: &HttpMatch) {
    if let Some(u) = &m.uri {
        string_match(f, &format!("{at}.uri"), "uri", u);
    }
    for (what, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            string_match(f, &format!("{at}.{what}"), what, sm);
        }
    }
    for (what, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (name, sm) in map {
            let hat = format!("{at}.{what}.{name}");
            match sm {
                None => f.err(&hat, format!("header match {name} cannot be null")),
                Some(sm) => string_match(f, &hat, "headers", sm),
            }
            if !name.starts_with("@request.auth.claims") && !is_token(name) {
                f.err(
                    &hat,
                    format!("header name {name} is not a valid header name"),
                );
            }
            if name.starts_with("@request.auth.claims") {
                f.err(
                    &hat,
                    "JWT claim based routing (@request.auth.claims) is not supported by this gateway",
                );
            }
        }
    }
    for (name, sm) in &m.query_params {
        let qat = format!("{at}.queryParams.{name}");
        match sm {
            None => f.err(&qat, format!("query param match {name} cannot be null")),
            Some(sm) => string_match(f, &qat, "queryParams", sm),
        }
    }
    if m.port != 0 && !(1..=65535).contains(&m.port) {
        f.err(
            format!("{at}.port"),
            format!("port number {} must be in the range 1..65535", m.port),
        );
    }
    for e in validate_labels(&m.source_labels) {
        f.err(format!("{at}.sourceLabels"), e);
    }
    if !m.source_namespace.is_empty() && !is_dns1123_label(&m.source_namespace) {
        f.err(
            format!("{at}.sourceNamespace"),
            format!("sourceNamespace match {} is invalid", m.source_namespace),
        );
    }
}

/// Returns how many times the request ops set the authority (`host`).
fn headers(f: &mut Findings, at: &str, h: &Headers) -> usize {
    let mut authority = 0;
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        let oat = format!("{at}.{side}");
        for (op, names) in [
            ("set", ops.set.keys().collect::<Vec<_>>()),
            ("add", ops.add.keys().collect()),
            ("remove", ops.remove.iter().collect()),
        ] {
            for name in names {
                let lname = name.to_ascii_lowercase();
                let nat = format!("{oat}.{op}.{name}");
                if lname.starts_with(':') {
                    f.err(
                        &nat,
                        format!("invalid header {name:?}: header cannot have \":\" prefix"),
                    );
                } else if !is_token(name) {
                    f.err(
                        &nat,
                        format!("header name {name} is not a valid header name"),
                    );
                }
                if lname == "host" && (side == "response" || op == "remove") {
                    f.err(
                        &nat,
                        format!("invalid header {name:?}: cannot set Host header"),
                    );
                } else if lname == "host" {
                    authority += 1;
                }
            }
        }
        for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, v) in map {
                if let Err(e) = header_value(v) {
                    f.err(format!("{oat}.{op}.{name}"), e);
                }
            }
        }
    }
    authority
}

/// Control characters and malformed `%` formatters are rejected (Istio
/// `ValidateHTTPHeaderValue`).
fn header_value(v: &str) -> Result<(), String> {
    if v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!("header value {v:?} contains control characters"));
    }
    let mut rest = v;
    while let Some(i) = rest.find('%') {
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('%') {
            rest = r;
            continue;
        }
        match after.find('%') {
            Some(j)
                if j > 0
                    && after[..j]
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_uppercase()) =>
            {
                rest = &after[j + 1..];
            }
            _ => {
                return Err(format!(
                    "header value {v:?} has an invalid % formatter (write %% for a literal %)"
                ))
            }
        }
    }
    Ok(())
}

fn destination(f: &mut Findings, at: &str, d: &Destination) {
    let host_at = format!("{at}.host");
    if d.host == "*" {
        f.err(&host_at, "invalid destination host *");
    } else if let Err(e) = validate_wildcard_domain(&d.host) {
        f.err(&host_at, e);
    }
    if !d.subset.is_empty() && !is_dns1123_label(&d.subset) {
        f.err(
            format!("{at}.subset"),
            format!("subset name is invalid: {}", d.subset),
        );
    }
    if let Some(port) = &d.port {
        if !(1..=65535).contains(&port.number) {
            f.err(
                format!("{at}.port.number"),
                format!("port number {} must be in the range 1..65535", port.number),
            );
        }
    }
}

fn destinations(f: &mut Findings, at: &str, routes: &[HttpRouteDestination]) {
    let mut total = 0i64;
    for (k, r) in routes.iter().enumerate() {
        let rat = format!("{at}[{k}]");
        match &r.destination {
            None => f.err(format!("{rat}.destination"), "destination is required"),
            Some(d) => destination(f, &format!("{rat}.destination"), d),
        }
        if r.weight < 0 {
            f.err(format!("{rat}.weight"), format!("weight {} < 0", r.weight));
        }
        total = total.saturating_add(r.weight);
        if let Some(h) = &r.headers {
            headers(f, &format!("{rat}.headers"), h);
        }
    }
    if routes.len() > 1 && total == 0 {
        f.err(at, "total destination weight = 0");
    }
}

fn redirect(f: &mut Findings, at: &str, r: &HttpRedirect, matches: &[HttpMatch]) {
    if r.uri.is_some() && r.prefix_rewrite.is_some() {
        f.err(at, "redirect may only specify one of uri or prefix_rewrite");
    }
    if r.prefix_rewrite.is_some()
        && (matches.is_empty()
            || matches
                .iter()
                .any(|m| m.uri.as_ref().is_none_or(|u| u.prefix.is_none())))
    {
        f.err(
            format!("{at}.prefixRewrite"),
            "redirect prefix_rewrite requires all URI matches to use prefix match type",
        );
    }
    if r.uri.is_none()
        && r.authority.is_none()
        && r.scheme.is_none()
        && r.port.is_none()
        && r.derive_port.is_none()
        && r.prefix_rewrite.is_none()
    {
        f.err(at, "redirect must specify URI, authority, scheme, or port");
    }
    if r.redirect_code != 0 {
        if !(300..=399).contains(&r.redirect_code) {
            f.err(
                format!("{at}.redirectCode"),
                format!(
                    "{} is not a valid redirect code, must be 3xx",
                    r.redirect_code
                ),
            );
        } else if ![301, 302, 303, 307, 308].contains(&r.redirect_code) {
            // Istio accepts it, then emits a route without an action (§3.15): refuse it.
            f.err(
                format!("{at}.redirectCode"),
                format!(
                    "redirect code {} is not supported (Envoy emits only 301, 302, 303, 307, 308)",
                    r.redirect_code
                ),
            );
        }
    }
    if let Some(s) = &r.scheme {
        if s != "http" && s != "https" {
            f.err(
                format!("{at}.scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
        }
    }
    if let Some(port) = r.port {
        if !(1..=65535).contains(&port) {
            f.err(
                format!("{at}.port"),
                format!("port number {port} must be in the range 1..65535"),
            );
        }
    }
    if let Some(d) = &r.derive_port {
        if !matches!(d.as_str(), "FROM_PROTOCOL_DEFAULT" | "FROM_REQUEST_PORT") {
            f.err(
                format!("{at}.derivePort"),
                format!("invalid derivePort {d:?}"),
            );
        }
    }
}

fn fault_pct(f: &mut Findings, at: &str, v: f64) {
    if !(v == 0.0 || (0.0001..=100.0).contains(&v)) {
        f.err(
            at,
            format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
    }
}

fn fault(f: &mut Findings, at: &str, fa: &HttpFault) {
    if fa.delay.is_none() && fa.abort.is_none() {
        f.err(at, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(d) = &fa.delay {
        let dat = format!("{at}.delay");
        if let Some(p) = &d.percentage {
            fault_pct(f, &format!("{dat}.percentage"), p.value);
        }
        if let Some(p) = d.percent {
            if !(0..=100).contains(&p) {
                f.err(
                    format!("{dat}.percent"),
                    format!("percentage {p} is not in range 0..100"),
                );
            }
        }
        match (&d.fixed_delay, &d.exponential_delay) {
            (_, Some(_)) => f.err(
                format!("{dat}.exponentialDelay"),
                "exponentialDelay not supported yet",
            ),
            (Some(fd), None) => {
                if let Err(e) = validate_duration(fd) {
                    f.err(format!("{dat}.fixedDelay"), e);
                }
            }
            (None, None) => f.err(&dat, "delay fixedDelay is required"),
        }
    }
    if let Some(a) = &fa.abort {
        let aat = format!("{at}.abort");
        if let Some(p) = &a.percentage {
            fault_pct(f, &format!("{aat}.percentage"), p.value);
        }
        if a.http2_error.is_some() {
            f.err(
                format!("{aat}.http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
        }
        if let Some(s) = a.http_status {
            if !(200..=600).contains(&s) {
                f.err(
                    format!("{aat}.httpStatus"),
                    format!("HTTP status {s} is not in range 200-599"),
                );
            }
        }
        if let Some(g) = &a.grpc_status {
            if !GRPC_CODES.contains(&g.as_str()) {
                f.err(
                    format!("{aat}.grpcStatus"),
                    format!("{g} is not a valid gRPC status code"),
                );
            }
        }
        if a.http_status.is_none() && a.grpc_status.is_none() && a.http2_error.is_none() {
            f.warn(&aat, "abort configured, but error type not set");
        }
    }
}

fn cors(f: &mut Findings, at: &str, c: &CorsPolicy) {
    for (k, o) in c.allow_origins.iter().enumerate() {
        let oat = format!("{at}.allowOrigins[{k}]");
        if o.exact.is_none() && o.prefix.is_none() && o.regex.is_none() {
            f.err(&oat, "'allowOrigins' has an empty string match");
        } else {
            string_match(f, &oat, "allowOrigins", o);
        }
    }
    for (k, m) in c.allow_methods.iter().enumerate() {
        if !STANDARD_METHODS.contains(&m.as_str()) {
            f.err(
                format!("{at}.allowMethods[{k}]"),
                format!("{m} is not a supported HTTP method"),
            );
        }
    }
    for (what, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (k, h) in list.iter().enumerate() {
            if h != "*" && !is_token(h) {
                f.err(
                    format!("{at}.{what}[{k}]"),
                    format!("header name {h} is not a valid header name"),
                );
            }
        }
    }
    if let Some(m) = &c.max_age {
        match parse_duration(m) {
            None => f.err(format!("{at}.maxAge"), format!("invalid duration {m:?}")),
            Some(d) if d.subsec_nanos() != 0 => f.err(
                format!("{at}.maxAge"),
                "max_age duration is accurate only to seconds precision",
            ),
            Some(_) => {}
        }
    }
    if let Some(u) = &c.unmatched_preflights {
        if !matches!(u.as_str(), "UNSPECIFIED" | "FORWARD" | "IGNORE") {
            f.err(
                format!("{at}.unmatchedPreflights"),
                format!("invalid unmatchedPreflights {u:?}"),
            );
        }
    }
}
