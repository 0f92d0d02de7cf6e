//! Istio's validation of VirtualService `http[]` routes: `validateHTTPRoute` and everything it
//! calls (istio `pkg/config/validation/virtualservice.go`, `validation.go`,
//! `header_value_validator.go`, `agent/validation.go`), one function per Istio function with
//! the same name in snake case. Messages are Istio's. Checks Istio leaves to its protobuf
//! parser (a oneof set twice, an enum name) are marked "protobuf parse".

use std::collections::BTreeMap;

use crate::config::model::{
    CorsPolicy, Destination, FaultAbort, FaultDelay, HeaderOperations, Headers, HttpDirectResponse,
    HttpFault, HttpMatch, HttpMirrorPolicy, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute,
    HttpRouteDestination, RegexRewrite, StringMatch, GRPC_CODES,
};
use crate::config::names::{is_dns1123_label, validate_labels, validate_wildcard_domain};
use crate::config::syntax::{base64_decode, parse_duration};

use super::super::{validate_duration, validate_port, Findings};
use super::validate_gateway_names;

/// RFC 7230 `token` (Istio `validHeaderNameRegex`).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Istio `supportedRetryOnPolicies` (Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on`).
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

/// Istio `supportedCORSMethods`: Go's `net/http` method constants and `*`.
const CORS_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// The codes Go's `net/http.StatusText` names: Istio accepts a number in `retryOn` only when
/// it is one of them (so 418 is fine and 499 is not).
fn go_status_text_known(code: i64) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

/// Istio `pseudoHeaders`.
const PSEUDO_HEADERS: [&str; 5] = [":method", ":scheme", ":authority", ":path", ":status"];

/// Istio `jwt.ToRoutingClaim(name).Match`: `@request.auth.claims.a.b` or
/// `@request.auth.claims[a][b]` (prefix compared case-insensitively).
pub(super) fn is_jwt_claim_route(name: &str) -> bool {
    const P: &str = "@request.auth.claims";
    if name.len() < P.len() || !name[..P.len()].eq_ignore_ascii_case(P) {
        return false;
    }
    let rest = &name[P.len()..];
    (rest.starts_with('.') && rest.len() > 1)
        || (rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
}

/// Which branch of the `StringMatch` oneof is set (the first one, when the protobuf parse
/// error of setting several was already reported).
enum MatchType<'a> {
    Unset,
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

fn match_type(sm: &StringMatch) -> MatchType<'_> {
    match (&sm.exact, &sm.prefix, &sm.regex) {
        (Some(e), _, _) => MatchType::Exact(e),
        (None, Some(p), _) => MatchType::Prefix(p),
        (None, None, Some(r)) => MatchType::Regex(r),
        (None, None, None) => MatchType::Unset,
    }
}

/// Protobuf parse: `StringMatch` is a oneof.
fn string_match_oneof(f: &mut Findings, at: &str, sm: &StringMatch) {
    let n = [sm.exact.is_some(), sm.prefix.is_some(), sm.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if n > 1 {
        f.err(at, "only one of exact, prefix or regex may be set");
    }
}

// ---------------------------------------------------------------------------------------------
// validateHTTPRoute

/// Istio `HTTPRouteType`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HttpRouteType {
    Independent,
    /// A route of a root VirtualService that names a `delegate`.
    Root,
    /// A route of a delegate VirtualService (one without hosts).
    Delegate,
}

/// Istio `getHTTPRouteType`.
fn get_http_route_type(r: &HttpRoute, is_delegate: bool) -> HttpRouteType {
    if is_delegate {
        HttpRouteType::Delegate
    } else if r.delegate.is_some() {
        HttpRouteType::Root
    } else {
        HttpRouteType::Independent
    }
}

/// Istio `validateHTTPRoute` (`gatewaySemantics` is always false: this gateway reads no
/// Gateway API objects).
pub(crate) fn validate_http_route(f: &mut Findings, at: &str, r: &HttpRoute, delegate: bool) {
    let route_type = get_http_route_type(r, delegate);
    validate_http_route_conflict(f, at, r, route_type);
    validate_http_route_match_request(f, at, r);
    validate_headers(f, &format!("{at}.headers"), r.headers.as_ref());
    if let Some(c) = &r.cors_policy {
        validate_cors_policy(f, &format!("{at}.corsPolicy"), c);
    }
    if let Some(fa) = &r.fault {
        validate_http_fault_injection(f, &format!("{at}.fault"), fa);
    }
    if let Some(v) = r.mirror_percent {
        if v > 100 {
            f.err(
                format!("{at}.mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {v})"),
            );
        }
        if v < 0 {
            // Protobuf parse: a UInt32Value.
            f.err(
                format!("{at}.mirrorPercent"),
                format!("invalid value {v}: expected an unsigned integer"),
            );
        }
        f.warn(
            format!("{at}.mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(p) = &r.mirror_percentage {
        let v = p.value;
        if v > 100.0 {
            f.err(
                format!("{at}.mirrorPercentage"),
                format!("mirror_percentage must have a max value of 100 (it has {v:.6})"),
            );
        }
        if v < 0.0 {
            f.err(
                format!("{at}.mirrorPercentage"),
                format!("mirror_percentage must have a min value of 0 (it has {v:.6})"),
            );
        }
    }
    if let Some(m) = &r.mirror {
        validate_destination(f, &format!("{at}.mirror"), m);
    }
    if let Some(ms) = &r.mirrors {
        validate_http_mirrors(f, &format!("{at}.mirrors"), ms);
    }
    if let Some(rd) = &r.redirect {
        let rat = format!("{at}.redirect");
        if let Err((sub, m)) = validate_http_redirect(rd, &r.matches) {
            f.err(
                if sub.is_empty() {
                    rat.clone()
                } else {
                    format!("{rat}.{sub}")
                },
                m,
            );
        }
        http_redirect_extras(f, &rat, rd);
    }
    if let Some(dr) = &r.direct_response {
        validate_http_direct_response(f, &format!("{at}.directResponse"), dr);
    }
    if let Some(rt) = &r.retries {
        validate_http_retry(f, &format!("{at}.retries"), rt);
    }
    if let Some(w) = &r.rewrite {
        f.check(&format!("{at}.rewrite"), validate_http_rewrite(w));
    }
    f.check(
        &format!("{at}.headers"),
        validate_authority_rewrite(r.rewrite.as_ref(), r.headers.as_ref()),
    );
    validate_http_route_destinations(f, &format!("{at}.route"), &r.route);
    if let Some(t) = &r.timeout {
        f.check(&format!("{at}.timeout"), validate_duration(t));
    }
}

/// Istio `validateHTTPRouteConflict`.
pub(crate) fn validate_http_route_conflict(
    f: &mut Findings,
    at: &str,
    r: &HttpRoute,
    route_type: HttpRouteType,
) {
    if route_type == HttpRouteType::Root {
        // A root route may only delegate; nothing else of the route is checked here.
        if r.redirect.is_some() {
            f.err(
                format!("{at}.redirect"),
                format!("root HTTP route {} must not specify redirect", r.name),
            );
        }
        if !r.route.is_empty() {
            f.err(
                format!("{at}.route"),
                format!("root HTTP route {} must not specify route", r.name),
            );
        }
        return;
    }
    if route_type == HttpRouteType::Delegate && r.delegate.is_some() {
        f.err(
            format!("{at}.delegate"),
            "delegate HTTP route cannot contain delegate",
        );
    }
    if r.redirect.is_some() {
        if !r.route.is_empty() {
            f.err(at, "HTTP route cannot contain both route and redirect");
        }
        if r.fault.is_some() {
            f.err(at, "HTTP route cannot contain both fault and redirect");
        }
        if r.rewrite.is_some() {
            f.err(
                at,
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
        if r.direct_response.is_some() {
            f.err(
                at,
                "HTTP route rule cannot contain both direct_response and redirect",
            );
        }
    } else if r.direct_response.is_some() {
        if !r.route.is_empty() {
            f.err(
                at,
                "HTTP route cannot contain both route and direct_response",
            );
        }
        if r.fault.is_some() {
            f.err(
                at,
                "HTTP route cannot contain both fault and direct_response",
            );
        }
        if r.rewrite.is_some() {
            f.err(
                at,
                "HTTP route rule cannot contain both rewrite and direct_response",
            );
        }
    } else if r.route.is_empty() {
        f.err(at, "HTTP route, redirect or direct_response is required");
    }
    if r.mirror.is_some() && r.mirrors.as_ref().is_some_and(|m| !m.is_empty()) {
        f.err(at, "HTTP route cannot contain both mirror and mirrors");
    }
}

/// Istio `validateHTTPRouteMatchRequest`.
pub(crate) fn validate_http_route_match_request(f: &mut Findings, at: &str, r: &HttpRoute) {
    for (k, m) in r.matches.iter().enumerate() {
        let mat = format!("{at}.match[{k}]");
        for (name, sm) in &m.headers {
            let hat = format!("{mat}.headers.{name}");
            if sm.is_none() {
                f.err(&hat, format!("header match {name} cannot be null"));
            }
            f.check(&hat, validate_http_header_name_or_jwt_claim_route(name));
            if let Some(sm) = sm {
                string_match_oneof(f, &hat, sm);
                f.check(&hat, validate_string_match(sm, "headers"));
            }
        }
        for (name, sm) in &m.without_headers {
            let hat = format!("{mat}.withoutHeaders.{name}");
            f.check(&hat, validate_http_header_name_or_jwt_claim_route(name));
            if let Some(sm) = sm {
                string_match_oneof(f, &hat, sm);
                // `*` is not a regex here: it means "header absent".
                if sm.regex.as_deref() != Some("*") {
                    f.check(&hat, validate_string_match(sm, "withoutHeaders"));
                }
            }
        }
        // The uri allows an empty prefix (Envoy's path prefix may be empty); the others
        // do not (Envoy's StringMatcher prefix has min_len 1).
        if let Some(u) = &m.uri {
            string_match_oneof(f, &format!("{mat}.uri"), u);
            f.check(
                &format!("{mat}.uri"),
                validate_string_match_regexp(u, "uri"),
            );
        }
        for (what, sm) in [
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                let sat = format!("{mat}.{what}");
                string_match_oneof(f, &sat, sm);
                f.check(&sat, validate_string_match(sm, what));
            }
        }
        for (name, sm) in &m.query_params {
            if let Some(sm) = sm {
                let qat = format!("{mat}.queryParams.{name}");
                string_match_oneof(f, &qat, sm);
                f.check(&qat, validate_string_match(sm, "queryParams"));
            }
        }
    }
    for (k, m) in r.matches.iter().enumerate() {
        let mat = format!("{at}.match[{k}]");
        if m.port != 0 {
            f.check(&format!("{mat}.port"), validate_port(m.port));
        }
        f.errs(
            &format!("{mat}.sourceLabels"),
            validate_labels(&m.source_labels),
        );
        validate_gateway_names(f, &format!("{mat}.gateways"), &m.gateways);
        if !m.source_namespace.is_empty() && !is_dns1123_label(&m.source_namespace) {
            f.err(
                format!("{mat}.sourceNamespace"),
                format!("sourceNamespace match {} is invalid", m.source_namespace),
            );
        }
    }
}

/// Istio `validateAuthorityRewrite`: the authority is set in one place only (the rewrite, or
/// one request `set`/`add` of `host` / `:authority`).
pub(crate) fn validate_authority_rewrite(
    rewrite: Option<&HttpRewrite>,
    headers: Option<&Headers>,
) -> Result<(), String> {
    let mut current = rewrite
        .and_then(|w| w.authority.as_deref())
        .unwrap_or("")
        .to_string();
    let Some(req) = headers.and_then(|h| h.request.as_ref()) else {
        return Ok(());
    };
    for map in [&req.set, &req.add] {
        for (k, v) in map {
            if !is_authority_header(k) {
                continue;
            }
            if !current.is_empty() {
                return Err(format!(
                    "authority header cannot be set multiple times: have {current:?}, attempting to set {v:?}"
                ));
            }
            current = v.clone();
        }
    }
    Ok(())
}

/// Istio `isInternalHeader`.
fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

/// Istio `isAuthorityHeader`.
fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Istio `ValidateHTTPHeaderNameOrJwtClaimRoute`.
pub(crate) fn validate_http_header_name_or_jwt_claim_route(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_jwt_claim_route(name) || PSEUDO_HEADERS.contains(&name) {
        return Ok(());
    }
    if !is_token(name) {
        return Err(format!("header name {name} is not a valid header name"));
    }
    Ok(())
}

/// Istio `ValidateHTTPHeaderWithAuthorityOperationName` (request `set` / `add`).
pub(crate) fn validate_http_header_with_authority_operation_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_internal_header(name) && !is_authority_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Istio `ValidateHTTPHeaderOperationName` (request `remove`, every response operation).
pub(crate) fn validate_http_header_operation_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if is_internal_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Extra: a header this gateway adds must have a token name, since its HTTP stack cannot
/// write any other (Envoy would write it). `:authority`/`host` are the authority rewrite.
fn header_name_sendable(name: &str) -> Result<(), String> {
    if name.is_empty() || is_internal_header(name) || is_token(name) {
        Ok(())
    } else {
        Err(format!("header name {name} is not a valid header name"))
    }
}

/// The header operations of a route or of a route destination: the loops of Istio's
/// `validateHTTPRoute` and `validateHTTPRouteDestinations`.
pub(crate) fn validate_headers(f: &mut Findings, at: &str, h: Option<&Headers>) {
    let Some(h) = h else { return };
    let empty = HeaderOperations::default();
    let req = h.request.as_ref().unwrap_or(&empty);
    let resp = h.response.as_ref().unwrap_or(&empty);
    let named = |f: &mut Findings, at: String, r: Result<(), String>, name: &str| {
        f.check(&at, r);
        f.check(&at, header_name_sendable(name));
    };
    for (op, map) in [("add", &req.add), ("set", &req.set)] {
        for (name, v) in map {
            let nat = format!("{at}.request.{op}.{name}");
            named(
                f,
                nat.clone(),
                validate_http_header_with_authority_operation_name(name),
                name,
            );
            f.check(&nat, validate_http_header_value(v));
        }
    }
    for (k, name) in req.remove.iter().enumerate() {
        let nat = format!("{at}.request.remove[{k}]");
        named(f, nat, validate_http_header_operation_name(name), name);
    }
    for (op, map) in [("add", &resp.add), ("set", &resp.set)] {
        for (name, v) in map {
            let nat = format!("{at}.response.{op}.{name}");
            named(
                f,
                nat.clone(),
                validate_http_header_operation_name(name),
                name,
            );
            f.check(&nat, validate_http_header_value(v));
        }
    }
    for (k, name) in resp.remove.iter().enumerate() {
        let nat = format!("{at}.response.remove[{k}]");
        named(f, nat, validate_http_header_operation_name(name), name);
    }
}

/// Istio `ValidateHTTPHeaderValue`: no control characters but tab, and `%` formatters that
/// Envoy's header parser accepts.
pub(crate) fn validate_http_header_value(v: &str) -> Result<(), String> {
    if v.bytes()
        .any(|b| (b <= 0x08) || (0x0a..=0x1f).contains(&b) || b == 0x7f)
    {
        return Err(format!("header value configuration {v} is invalid"));
    }
    validate_header_value(v).map_err(|e| format!("header value configuration: {e}"))
}

/// Istio `validateHeaderValue`, the port of Envoy's `HeaderParser` state machine.
fn validate_header_value(v: &str) -> Result<(), String> {
    #[derive(PartialEq)]
    enum S {
        Literal,
        VariableName,
        ExpectArray,
        ExpectString,
        String,
        ExpectArrayDelimiterOrEnd,
        ExpectArgsEnd,
        ExpectVariableEnd,
    }
    let b = v.as_bytes();
    let mut pos = 0;
    let mut state = S::Literal;
    while pos < b.len() {
        let ch = b[pos];
        let has_next = pos + 1 < b.len();
        match state {
            S::Literal => {
                if ch == b'%' {
                    if !has_next {
                        return Err("invalid header configuration. Un-escaped %".into());
                    }
                    if b[pos + 1] == b'%' {
                        pos += 1;
                    } else {
                        state = S::VariableName;
                    }
                }
            }
            S::VariableName => {
                if ch == b'%' {
                    state = S::Literal;
                } else if ch == b'(' {
                    state = S::ExpectArray;
                }
            }
            S::ExpectArray => {
                if ch == b'[' {
                    state = S::ExpectString;
                } else if ch != b' ' {
                    state = S::String;
                }
            }
            S::ExpectArrayDelimiterOrEnd => {
                if ch == b',' {
                    state = S::ExpectString;
                } else if ch == b']' {
                    state = S::ExpectArgsEnd;
                } else if ch != b' ' {
                    return Err(
                        "invalid header configuration. Expecting ',', ']', or whitespace".into(),
                    );
                }
            }
            S::ExpectString => {
                if ch == b'"' {
                    state = S::String;
                } else if ch != b' ' {
                    return Err("invalid header configuration. Expecting '\"'".into());
                }
            }
            S::String => {
                if ch == b'\\' {
                    if !has_next {
                        return Err(
                            "invalid header configuration. Un-terminated backslash in JSON string"
                                .into(),
                        );
                    }
                    pos += 1;
                } else if ch == b')' {
                    state = S::ExpectVariableEnd;
                } else if ch == b'"' {
                    state = S::ExpectArrayDelimiterOrEnd;
                }
            }
            S::ExpectArgsEnd => {
                if ch == b')' {
                    state = S::ExpectVariableEnd;
                } else if ch != b' ' {
                    return Err("invalid header configuration. Expecting ')' or whitespace after '{}', but found '{}'".into());
                }
            }
            S::ExpectVariableEnd => {
                if ch == b'%' {
                    state = S::Literal;
                } else if ch != b' ' {
                    return Err(
                        "invalid header configuration. Expecting '%' or whitespace after".into(),
                    );
                }
            }
        }
        pos += 1;
    }
    if state != S::Literal {
        return Err(format!(
            "invalid header configuration. Un-terminated variable expression '{v}'"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// String matches

/// Istio `validateStringMatch`: `where` names the field in the message.
pub(crate) fn validate_string_match(sm: &StringMatch, where_: &str) -> Result<(), String> {
    match match_type(sm) {
        MatchType::Prefix("") => Err(format!(
            "{where_:?}: prefix string match should not be empty"
        )),
        MatchType::Regex(_) => validate_string_match_regexp(sm, where_),
        _ => Ok(()),
    }
}

/// Istio `validateStringMatchRegexp`: only the regex branch is checked.
pub(crate) fn validate_string_match_regexp(sm: &StringMatch, where_: &str) -> Result<(), String> {
    let MatchType::Regex(re) = match_type(sm) else {
        return Ok(());
    };
    if re.is_empty() {
        return Err(format!(
            "{where_:?}: regex string match should not be empty"
        ));
    }
    validate_string_regexp(re, where_)
}

/// Istio `validateStringRegexp`: at most 1024 bytes (Envoy's RE2 program size limit,
/// approximated by length) and a valid RE2 expression.
pub(crate) fn validate_string_regexp(re: &str, where_: &str) -> Result<(), String> {
    if re.len() > 1024 {
        return Err(format!(
            "{where_:?}: regex is too large, max length allowed is 1024"
        ));
    }
    regex::Regex::new(re).map(|_| ()).map_err(|e| {
        // The regex crate's message spans lines; its last line names the problem.
        let text = e.to_string();
        let why = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        format!(
            "{where_:?}: error parsing regexp: {why}: `{re}`; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Destinations, mirrors

/// Istio `validateDestination`.
pub(crate) fn validate_destination(f: &mut Findings, at: &str, d: &Destination) {
    let host_at = format!("{at}.host");
    if d.host == "*" {
        f.err(&host_at, format!("invalid destination host {}", d.host));
    } else {
        f.check(&host_at, validate_wildcard_domain(&d.host));
    }
    if !d.subset.is_empty() {
        f.check(&format!("{at}.subset"), validate_subset_name(&d.subset));
    }
    if let Some(p) = &d.port {
        f.check(&format!("{at}.port.number"), validate_port(p.number));
    }
}

/// Istio `validateSubsetName`.
fn validate_subset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("subset name cannot be empty".into());
    }
    if !is_dns1123_label(name) {
        return Err(format!("subset name is invalid: {name}"));
    }
    Ok(())
}

/// Istio `validateHTTPRouteDestinations`.
pub(crate) fn validate_http_route_destinations(
    f: &mut Findings,
    at: &str,
    routes: &[HttpRouteDestination],
) {
    let mut total = 0i64;
    for (k, r) in routes.iter().enumerate() {
        let rat = format!("{at}[{k}]");
        match &r.destination {
            None => f.err(format!("{rat}.destination"), "destination is required"),
            Some(d) => validate_destination(f, &format!("{rat}.destination"), d),
        }
        validate_headers(f, &format!("{rat}.headers"), r.headers.as_ref());
        if r.weight < 0 {
            f.err(format!("{rat}.weight"), format!("weight {} < 0", r.weight));
        }
        total = total.saturating_add(r.weight);
    }
    if routes.len() > 1 && total == 0 {
        f.err(at, "total destination weight = 0");
    }
}

/// Istio `validateHTTPMirrors`.
pub(crate) fn validate_http_mirrors(f: &mut Findings, at: &str, mirrors: &[HttpMirrorPolicy]) {
    for (k, m) in mirrors.iter().enumerate() {
        let mat = format!("{at}[{k}]");
        let Some(d) = &m.destination else {
            f.err(
                format!("{mat}.destination"),
                "destination is required for mirrors",
            );
            continue;
        };
        validate_destination(f, &format!("{mat}.destination"), d);
        if let Some(p) = &m.percentage {
            let v = p.value;
            if v > 100.0 {
                f.err(
                    format!("{mat}.percentage"),
                    format!("mirror percentage must have a max value of 100 (it has {v:.6})"),
                );
            }
            if v < 0.0 {
                f.err(
                    format!("{mat}.percentage"),
                    format!("mirror percentage must have a min value of 0 (it has {v:.6})"),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Redirect, direct response, rewrite, retry

fn set(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// Istio `validateHTTPRedirect`: the first problem only, as Istio returns, with the field
/// (under the redirect) it is about.
pub(crate) fn validate_http_redirect(
    r: &HttpRedirect,
    matches: &[HttpMatch],
) -> Result<(), (&'static str, String)> {
    if set(&r.uri) && set(&r.prefix_rewrite) {
        return Err((
            "",
            "redirect may only specify one of uri or prefix_rewrite".into(),
        ));
    }
    if set(&r.prefix_rewrite)
        && matches.iter().any(|m| {
            m.uri
                .as_ref()
                .is_some_and(|u| !matches!(match_type(u), MatchType::Prefix(_)))
        })
    {
        return Err((
            "prefixRewrite",
            "redirect prefix_rewrite requires all URI matches to use prefix match type".into(),
        ));
    }
    // `port` and `derivePort` are the `redirect_port` oneof: either one counts, even 0.
    if !set(&r.uri)
        && !set(&r.prefix_rewrite)
        && !set(&r.authority)
        && r.port.is_none()
        && r.derive_port.is_none()
        && !set(&r.scheme)
    {
        return Err((
            "",
            "redirect must specify URI, authority, scheme, or port".into(),
        ));
    }
    if r.redirect_code != 0 && !(300..=399).contains(&r.redirect_code) {
        return Err((
            "redirectCode",
            format!(
                "{} is not a valid redirect code, must be 3xx",
                r.redirect_code
            ),
        ));
    }
    if set(&r.scheme) && !matches!(r.scheme.as_deref(), Some("http" | "https")) {
        return Err((
            "scheme",
            "invalid redirect scheme, must be \"http\" or \"https\"".into(),
        ));
    }
    if let Some(p) = r.port.filter(|p| *p > 0) {
        validate_port(p).map_err(|e| ("port", e))?;
    }
    Ok(())
}

/// Checks on a redirect Istio does not make.
fn http_redirect_extras(f: &mut Findings, at: &str, r: &HttpRedirect) {
    // Istio admits 300, 304, 305, 306 and then builds a route without an action, which
    // Envoy refuses (the whole route table is NACKed): refuse the object instead.
    if (300..=399).contains(&r.redirect_code)
        && ![301, 302, 303, 307, 308].contains(&r.redirect_code)
    {
        f.err(
            format!("{at}.redirectCode"),
            format!(
                "redirect code {} is not supported (Envoy emits only 301, 302, 303, 307, 308)",
                r.redirect_code
            ),
        );
    }
    // Protobuf parse: `redirect_port` is a oneof, `derivePort` an enum, `port` a uint32.
    if r.port.is_some() && r.derive_port.is_some() {
        f.err(at, "only one of port or derivePort may be set");
    }
    if let Some(d) = &r.derive_port {
        if !matches!(d.as_str(), "FROM_PROTOCOL_DEFAULT" | "FROM_REQUEST_PORT") {
            f.err(
                format!("{at}.derivePort"),
                format!("invalid derivePort {d:?}"),
            );
        }
    }
    if let Some(p) = r.port.filter(|p| *p < 0) {
        f.err(
            format!("{at}.port"),
            format!("invalid value {p}: expected an unsigned integer"),
        );
    }
}

/// Istio `validateHTTPDirectResponse`.
pub(crate) fn validate_http_direct_response(f: &mut Findings, at: &str, dr: &HttpDirectResponse) {
    if let Some(b) = &dr.body {
        let size = match (&b.string, &b.bytes) {
            (Some(_), Some(_)) => {
                // Protobuf parse: `body` is a oneof.
                f.err(
                    format!("{at}.body"),
                    "only one of string or bytes may be set",
                );
                None
            }
            (Some(s), None) => Some(s.len()),
            (None, Some(bs)) => match base64_decode(bs) {
                Some(v) => Some(v.len()),
                None => {
                    // Protobuf parse: `bytes` is base64 in JSON.
                    f.err(format!("{at}.body.bytes"), "body.bytes is not valid base64");
                    None
                }
            },
            (None, None) => Some(0),
        };
        if let Some(n) = size {
            if n > 1 << 20 {
                f.err(
                    format!("{at}.body"),
                    "large direct_responses may impact control plane performance, must be less than 1MB",
                );
            } else if n > 100 << 10 {
                f.warn(
                    format!("{at}.body"),
                    "large direct_responses may impact control plane performance",
                );
            }
        }
    }
    f.check(&format!("{at}.status"), validate_http_status(dr.status));
}

/// Istio `validateHTTPStatus` (its message says 599, its check allows 600).
pub(crate) fn validate_http_status(status: i64) -> Result<(), String> {
    if !(200..=600).contains(&status) {
        return Err(format!("HTTP status {status} is not in range 200-599"));
    }
    Ok(())
}

/// Istio `validateHTTPRewrite`: the first problem only, as Istio returns.
pub(crate) fn validate_http_rewrite(w: &HttpRewrite) -> Result<(), String> {
    if set(&w.uri) && w.uri_regex_rewrite.is_some() {
        return Err("rewrite may only contain one of URI or UriRegexRewrite".into());
    }
    if !set(&w.uri) && w.uri_regex_rewrite.is_none() && !set(&w.authority) {
        return Err("rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified".into());
    }
    if let Some(rr) = &w.uri_regex_rewrite {
        // Istio joins the two with a newline (errors.Join); one line reads better here.
        validate_uri_regex_rewrite(rr).map_err(|e| format!("UriRegexRewrite has errors: {e}"))?;
    }
    Ok(())
}

/// Istio `validateURIRegexRewrite`.
pub(crate) fn validate_uri_regex_rewrite(rr: &RegexRewrite) -> Result<(), String> {
    if rr.pattern.is_empty() || rr.rewrite.is_empty() {
        return Err(
            "UriRegexRewrite requires both Rewrite and Match fields to be specified".into(),
        );
    }
    validate_string_regexp(&rr.pattern, "HTTPRewrite.UriRegexRewrite.Match")
}

/// Istio `ValidateHTTPRetry` (`agent/validation.go`).
pub(crate) fn validate_http_retry(f: &mut Findings, at: &str, rt: &HttpRetry) {
    if rt.attempts < 0 {
        f.err(format!("{at}.attempts"), "attempts cannot be negative");
    }
    if rt.attempts == 0
        && (rt.per_try_timeout.is_some()
            || set(&rt.retry_on)
            || rt.retry_remote_localities.is_some())
    {
        f.err(
            at,
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    if let Some(t) = &rt.per_try_timeout {
        f.check(&format!("{at}.perTryTimeout"), validate_duration(t));
    }
    if let Some(on) = rt.retry_on.as_deref().filter(|s| !s.is_empty()) {
        // Split on commas only: Istio does not trim, so " 5xx" is refused.
        for policy in on.split(',') {
            // Go's strconv.Atoi: an optional sign, then digits.
            let code = policy.parse::<i64>().unwrap_or(0);
            if !go_status_text_known(code) && !RETRY_ON.contains(&policy) {
                f.err(
                    format!("{at}.retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
    if let Some(t) = &rt.backoff {
        f.check(&format!("{at}.backoff"), validate_duration(t));
    }
}

// ---------------------------------------------------------------------------------------------
// Fault injection, CORS

/// Istio `validateHTTPFaultInjection`.
pub(crate) fn validate_http_fault_injection(f: &mut Findings, at: &str, fa: &HttpFault) {
    if fa.abort.is_none() && fa.delay.is_none() {
        f.err(at, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = &fa.abort {
        validate_http_fault_injection_abort(f, &format!("{at}.abort"), a);
    }
    if let Some(d) = &fa.delay {
        validate_http_fault_injection_delay(f, &format!("{at}.delay"), d);
    }
}

/// Istio `validatePercentage`.
fn validate_percentage(v: f64) -> Result<(), String> {
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        return Err(format!(
            "percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"
        ));
    }
    Ok(())
}

/// Istio `validateHTTPFaultInjectionAbort`.
pub(crate) fn validate_http_fault_injection_abort(f: &mut Findings, at: &str, a: &FaultAbort) {
    if let Some(p) = &a.percentage {
        f.check(&format!("{at}.percentage"), validate_percentage(p.value));
    }
    let types = [
        a.grpc_status.is_some(),
        a.http2_error.is_some(),
        a.http_status.is_some(),
    ];
    if types.iter().filter(|b| **b).count() > 1 {
        // Protobuf parse: `error_type` is a oneof.
        f.err(
            at,
            "only one of httpStatus, grpcStatus or http2Error may be set",
        );
    }
    if let Some(g) = &a.grpc_status {
        f.check(&format!("{at}.grpcStatus"), validate_grpc_status(g));
    } else if a.http2_error.is_some() {
        f.err(
            format!("{at}.http2Error"),
            "HTTP/2 abort fault injection not supported yet",
        );
    } else if let Some(s) = a.http_status {
        f.check(&format!("{at}.httpStatus"), validate_http_status(s));
    } else {
        f.warn(at, "abort configured, but error type not set");
    }
}

/// Istio `validateGRPCStatus`.
fn validate_grpc_status(s: &str) -> Result<(), String> {
    if GRPC_CODES.contains(&s) {
        Ok(())
    } else {
        Err(format!("gRPC status {s:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"))
    }
}

/// Istio `validateHTTPFaultInjectionDelay`. A delay without a type is admitted (and, as
/// Istio's `TranslateFault` does, dropped when compiled).
pub(crate) fn validate_http_fault_injection_delay(f: &mut Findings, at: &str, d: &FaultDelay) {
    if let Some(p) = &d.percentage {
        f.check(&format!("{at}.percentage"), validate_percentage(p.value));
    }
    if d.fixed_delay.is_some() && d.exponential_delay.is_some() {
        // Protobuf parse: `http_delay_type` is a oneof.
        f.err(at, "only one of fixedDelay or exponentialDelay may be set");
    }
    if let Some(fd) = &d.fixed_delay {
        f.check(&format!("{at}.fixedDelay"), validate_duration(fd));
    } else if let Some(ed) = &d.exponential_delay {
        let eat = format!("{at}.exponentialDelay");
        f.check(&eat, validate_duration(ed));
        f.err(&eat, "exponentialDelay not supported yet");
    }
}

/// Istio `validateCORSPolicy`.
pub(crate) fn validate_cors_policy(f: &mut Findings, at: &str, c: &CorsPolicy) {
    for (k, o) in c.allow_origins.iter().enumerate() {
        let oat = format!("{at}.allowOrigins[{k}]");
        string_match_oneof(f, &oat, o);
        f.check(&oat, validate_allow_origins(o));
    }
    for (k, m) in c.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&m.as_str()) {
            f.err(
                format!("{at}.allowMethods[{k}]"),
                format!("{m:?} is not a supported HTTP method"),
            );
        }
    }
    for (what, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (k, h) in list.iter().enumerate() {
            f.check(
                &format!("{at}.{what}[{k}]"),
                validate_cors_http_header_name(h),
            );
        }
    }
    if let Some(m) = &c.max_age {
        let mat = format!("{at}.maxAge");
        f.check(&mat, validate_duration(m));
        if parse_duration(m).is_some_and(|d| d.subsec_nanos() > 0) {
            f.err(
                &mat,
                "max_age duration is accurate only to seconds precision",
            );
        }
    }
    if let Some(u) = &c.unmatched_preflights {
        // Protobuf parse: an enum.
        if !matches!(u.as_str(), "UNSPECIFIED" | "FORWARD" | "IGNORE") {
            f.err(
                format!("{at}.unmatchedPreflights"),
                format!("invalid unmatchedPreflights {u:?}"),
            );
        }
    }
}

/// Istio `validateAllowOrigins`.
fn validate_allow_origins(o: &StringMatch) -> Result<(), String> {
    let m = match match_type(o) {
        MatchType::Exact(s) | MatchType::Prefix(s) | MatchType::Regex(s) => s,
        MatchType::Unset => "",
    };
    if m.is_empty() {
        return Err(format!(
            "'{m}' is not a valid match type for CORS allow origins"
        ));
    }
    validate_string_match_regexp(o, "corsPolicy.allowOrigins")
}

/// Istio `ValidateCORSHTTPHeaderName`.
fn validate_cors_http_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name == "*" || is_token(name) {
        return Ok(());
    }
    Err(format!("header name {name} is not a valid header name"))
}

// ---------------------------------------------------------------------------------------------
// analyzeUnreachableHTTPRules (warnings)

/// Istio `routeName`: `"name"` or `#n`.
fn route_name(r: &HttpRoute, n: usize) -> String {
    if r.name.is_empty() {
        format!("#{n}")
    } else {
        format!("{:?}", r.name)
    }
}

/// Istio `requestName`: `"name"` or `#n`.
fn request_name(m: &HttpMatch, n: usize) -> String {
    if m.name.is_empty() {
        format!("#{n}")
    } else {
        format!("{:?}", m.name)
    }
}

/// Istio `OverlappingMatchValidationForHTTPRoute`.
struct Overlap {
    route_str: String,
    match_str: String,
    prefix: String,
    port: i64,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query_params: BTreeMap<String, String>,
    without_headers: BTreeMap<String, String>,
}

/// Istio `assignExactOrPrefix`.
fn exact_or_prefix(sm: Option<&StringMatch>) -> String {
    match sm.map(match_type) {
        Some(MatchType::Exact(e)) if !e.is_empty() => format!("exact:{e}"),
        Some(MatchType::Prefix(p)) if !p.is_empty() => format!("prefix:{p}"),
        _ => String::new(),
    }
}

fn exact_or_prefix_map(m: &BTreeMap<String, Option<StringMatch>>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.clone(), exact_or_prefix(v.as_ref())))
        .collect()
}

/// Istio `genMatchHTTPRoutes`: only matches with a non-empty uri prefix take part.
fn gen_match_http_routes(r: &HttpRoute, m: &HttpMatch, rn: usize, mn: usize) -> Option<Overlap> {
    let MatchType::Prefix(prefix) = match_type(m.uri.as_ref()?) else {
        return None;
    };
    if prefix.is_empty() {
        return None;
    }
    let mut method = exact_or_prefix(m.method.as_ref());
    if method.is_empty() {
        // Istio's assumption, kept so the same rules warn.
        method = "exact:GET".into();
    }
    Some(Overlap {
        route_str: route_name(r, rn),
        match_str: request_name(m, mn),
        prefix: prefix.to_string(),
        port: m.port,
        method,
        authority: exact_or_prefix(m.authority.as_ref()),
        headers: exact_or_prefix_map(&m.headers),
        query_params: exact_or_prefix_map(&m.query_params),
        without_headers: exact_or_prefix_map(&m.without_headers),
    })
}

/// Istio `coveredValidation`: does the earlier match `a` cover the later `b`?
fn covered_validation(a: &Overlap, b: &Overlap) -> bool {
    fn maps_cover(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
        a.len() == b.len()
            && a.iter().all(|(k, va)| match b.get(k) {
                None => false,
                Some(vb) => va == vb || va.starts_with(vb.as_str()),
            })
    }
    b.prefix.starts_with(&a.prefix)
        && b.port == a.port
        && (a.method == b.method || a.method.starts_with(&b.method))
        && (a.authority == b.authority || a.authority.starts_with(&b.authority))
        && maps_cover(&a.headers, &b.headers)
        && maps_cover(&a.query_params, &b.query_params)
        && maps_cover(&a.without_headers, &b.without_headers)
}

/// The match as Istio's `asJSON` compares it: everything but its name.
fn match_key(m: &HttpMatch) -> String {
    let mut c = m.clone();
    c.name.clear();
    format!("{c:?}")
}

/// Istio `analyzeUnreachableHTTPRules`: warnings for rules and matches that can never be
/// used, under `spec.http[i]`.
pub(crate) fn analyze_unreachable_http_rules(f: &mut Findings, routes: &[Option<HttpRoute>]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut empty_match: Option<usize> = None;
    let mut prefixed: Vec<(usize, Overlap)> = Vec::new();
    for (rn, r) in routes.iter().enumerate() {
        let Some(r) = r else { continue };
        let at = format!("spec.http[{rn}]");
        if r.matches.is_empty() {
            if empty_match.is_some() {
                f.warn(
                    &at,
                    format!(
                        "virtualService rule {} not used (only the last rule can have no matches)",
                        route_name(r, rn)
                    ),
                );
            }
            empty_match = Some(rn);
            continue;
        }
        let mut dups = 0;
        for (mn, m) in r.matches.iter().enumerate() {
            if empty_match.is_some() {
                f.warn(
                    &at,
                    format!(
                        "virtualService rule {} not used (route without matches defined before)",
                        route_name(r, rn)
                    ),
                );
                continue;
            }
            let key = match_key(m);
            if let Some(&dn) = seen.get(&key) {
                let prev = routes[dn]
                    .as_ref()
                    .map_or(format!("#{dn}"), |p| route_name(p, dn));
                f.warn(
                    format!("{at}.match[{mn}]"),
                    format!(
                        "virtualService rule {} match {} is not used (duplicate/overlapping match in rule {prev})",
                        route_name(r, rn),
                        request_name(m, mn)
                    ),
                );
                dups += 1;
                continue;
            }
            seen.insert(key, rn);
            if let Some(o) = gen_match_http_routes(r, m, rn, mn) {
                prefixed.push((rn, o));
            }
        }
        if dups == r.matches.len() {
            f.warn(
                &at,
                format!(
                    "virtualService rule {} not used (all matches used by prior rules)",
                    route_name(r, rn)
                ),
            );
        }
    }
    for (i, (_, a)) in prefixed.iter().enumerate() {
        for (bn, b) in &prefixed[i + 1..] {
            if b.prefix == a.prefix {
                continue; // a duplicate, reported above
            }
            if covered_validation(a, b) {
                f.warn(
                    format!("spec.http[{bn}]"),
                    format!(
                        "virtualService rule {} match {} of prefix {} is not used (duplicate/overlapping match in rule {} of prefix {} on {})",
                        b.route_str, b.match_str, b.prefix, a.match_str, a.prefix, a.route_str
                    ),
                );
            }
        }
    }
}
