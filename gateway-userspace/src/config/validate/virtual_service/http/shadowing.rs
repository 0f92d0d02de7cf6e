//! Istio's `analyzeUnreachableHTTPRules`: warnings for rules an earlier rule always wins over.

use std::collections::BTreeMap;

use crate::config::model::{HttpMatch, HttpRoute, StringMatch};

use super::super::super::Findings;
use super::{match_type, MatchType};
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
