//! Istio's validation of VirtualService `http[]` routes: `validateHTTPRoute` and everything it
//! calls (istio `pkg/config/validation/virtualservice.go`, `validation.go`,
//! `header_value_validator.go`, `agent/validation.go`), one function per Istio function with
//! the same name in snake case. Messages are Istio's. Checks Istio leaves to its protobuf
//! parser (a oneof set twice, an enum name) are marked "protobuf parse".

use crate::config::model::{HeaderOperations, Headers, HttpRewrite, HttpRoute, StringMatch};
use crate::config::names::{is_dns1123_label, validate_labels};

use super::super::{validate_duration, validate_port, Findings};
use super::validate_gateway_names;

pub(super) mod actions;
mod shadowing;

pub(crate) use actions::validate_destination;
use actions::{
    http_redirect_extras, validate_cors_policy, validate_http_direct_response,
    validate_http_fault_injection, validate_http_mirrors, validate_http_redirect,
    validate_http_retry, validate_http_rewrite, validate_http_route_destinations,
};
pub(crate) use shadowing::analyze_unreachable_http_rules;

/// RFC 7230 `token` (Istio `validHeaderNameRegex`).
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Istio `supportedRetryOnPolicies` (Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on`).
pub(super) const RETRY_ON: [&str; 16] = [
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
pub(super) const CORS_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// The codes Go's `net/http.StatusText` names: Istio accepts a number in `retryOn` only when
/// it is one of them (so 418 is fine and 499 is not).
pub(super) fn go_status_text_known(code: i64) -> bool {
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
pub(super) enum MatchType<'a> {
    Unset,
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

pub(super) fn match_type(sm: &StringMatch) -> MatchType<'_> {
    match (&sm.exact, &sm.prefix, &sm.regex) {
        (Some(e), _, _) => MatchType::Exact(e),
        (None, Some(p), _) => MatchType::Prefix(p),
        (None, None, Some(r)) => MatchType::Regex(r),
        (None, None, None) => MatchType::Unset,
    }
}

/// Protobuf parse: `StringMatch` is a oneof.
pub(super) fn string_match_oneof(f: &mut Findings, at: &str, sm: &StringMatch) {
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
