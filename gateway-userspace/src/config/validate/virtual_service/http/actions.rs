//! Istio's validation of an HTTP route's actions: destinations and mirrors, redirect, direct
//! response, rewrite, retries, fault injection and CORS (`virtualservice.go`).

use crate::config::model::{
    CorsPolicy, Destination, FaultAbort, FaultDelay, HttpDirectResponse, HttpFault, HttpMatch,
    HttpMirrorPolicy, HttpRedirect, HttpRetry, HttpRewrite, HttpRouteDestination, RegexRewrite,
    StringMatch, GRPC_CODES,
};
use crate::config::names::{is_dns1123_label, validate_wildcard_domain};
use crate::config::syntax::{base64_decode, parse_duration};

use super::super::super::{validate_duration, validate_port, Findings};
use super::{
    go_status_text_known, is_token, match_type, string_match_oneof, validate_headers,
    validate_string_match_regexp, validate_string_regexp, MatchType, CORS_METHODS, RETRY_ON,
};
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
pub(super) fn http_redirect_extras(f: &mut Findings, at: &str, r: &HttpRedirect) {
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
