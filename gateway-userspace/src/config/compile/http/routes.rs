//! One VirtualService's routes for one server: config-time match conditions, the compiled
//! match, and the route's actions (headers, rewrite, redirect, direct response, retries,
//! timeouts, faults, mirrors, CORS).

use crate::config::model::{
    HeaderOperations, HttpMatch, HttpRedirect, HttpRetry, HttpRoute, StringMatch, VirtualService,
    GRPC_CODES,
};
use crate::config::names::{labels_subset, resolve_gateway_name};
use crate::config::syntax::{base64_decode, parse_duration};
use std::collections::BTreeMap;

use super::{duration_ms, is_authority_header, ppm, HttpServer};
use crate::config::compile::{Compiler, IstioVersion};
use crate::plan::http as p;

/// Istio's mesh default `retry_on` (RETRY `DefaultPolicy`).
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

fn string_match_plan(m: &StringMatch) -> p::StrMatch {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), _, _) => p::StrMatch::Exact(e.clone()),
        (_, Some(pr), _) => p::StrMatch::Prefix(pr.clone()),
        // `regex: "*"` is Istio's spelling of "present" (ROUTE `canBeConvertedToPresentMatch`).
        (_, _, Some(r)) if r == "*" => p::StrMatch::Present,
        (_, _, Some(r)) => p::StrMatch::Regex(r.clone()),
        _ => p::StrMatch::Present,
    }
}

fn header_ops(ops: &Option<HeaderOperations>) -> p::HeaderOps {
    let Some(o) = ops else {
        return p::HeaderOps::default();
    };
    p::HeaderOps {
        remove: o.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
        set: o
            .set
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        add: o
            .add
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
    }
}

/// Istio `IsCatchAllRoute` on a compiled match.
pub fn is_catch_all(m: &p::RouteMatch) -> bool {
    let path_all = match &m.path {
        p::PathMatch::Prefix(s) => s == "/",
        p::PathMatch::Regex(r) => r == "*" || r == ".*",
        p::PathMatch::Exact(_) => false,
    };
    path_all
        && m.method.is_none()
        && m.scheme.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.query.is_empty()
}

fn route_match(m: Option<&HttpMatch>) -> p::RouteMatch {
    let Some(m) = m else {
        return p::RouteMatch {
            path: p::PathMatch::Prefix("/".into()),
            ignore_case: false,
            method: None,
            scheme: None,
            authority: None,
            headers: Vec::new(),
            query: Vec::new(),
        };
    };
    let path = match &m.uri {
        Some(StringMatch { exact: Some(e), .. }) => p::PathMatch::Exact(e.clone()),
        Some(StringMatch {
            prefix: Some(pr), ..
        }) => p::PathMatch::Prefix(pr.clone()),
        Some(StringMatch { regex: Some(r), .. }) => p::PathMatch::Regex(r.clone()),
        _ => p::PathMatch::Prefix("/".into()),
    };
    let mut headers = Vec::new();
    for (name, sm) in &m.headers {
        let Some(sm) = sm else { continue };
        headers.push(p::HeaderMatch {
            name: name.to_ascii_lowercase(),
            value: string_match_plan(sm),
            invert: false,
        });
    }
    for (name, sm) in &m.without_headers {
        let Some(sm) = sm else { continue };
        headers.push(p::HeaderMatch {
            name: name.to_ascii_lowercase(),
            value: string_match_plan(sm),
            invert: true,
        });
    }
    p::RouteMatch {
        path,
        ignore_case: m.ignore_uri_case,
        method: m.method.as_ref().map(string_match_plan),
        scheme: m.scheme.as_ref().map(string_match_plan),
        authority: m.authority.as_ref().map(string_match_plan),
        headers,
        query: m
            .query_params
            .iter()
            .filter_map(|(k, v)| {
                Some(p::QueryMatch {
                    name: k.clone(),
                    value: string_match_plan(v.as_ref()?),
                })
            })
            .collect(),
    }
}

impl<'a> Compiler<'a> {
    /// ROUTE `BuildHTTPRoutesForVirtualService` for one server (its gateway and port), over
    /// the VirtualService's routes with delegates merged in (PUSH `mergeVirtualServices`).
    pub(super) fn http_routes(
        &mut self,
        vs: &'a VirtualService,
        srv: &HttpServer<'a>,
        port: u16,
        clusters: &mut BTreeMap<String, Option<p::Cluster>>,
    ) -> Vec<p::Route> {
        let ns = vs.namespace();
        let mut out = Vec::new();
        let rules = self.merged_http(vs);
        'rules: for f in &rules {
            let rule = &f.rule;
            let blocks: Vec<(Option<usize>, Option<&HttpMatch>)> = if rule.matches.is_empty() {
                vec![(None, None)]
            } else {
                rule.matches
                    .iter()
                    .enumerate()
                    .map(|(k, m)| (Some(k), Some(m)))
                    .collect()
            };
            for (k, m) in blocks {
                if let Some(m) = m {
                    // Config-time conditions (ROUTE `sourceMatchHTTP`): drop the block.
                    if m.port != 0 && m.port != i64::from(port) {
                        continue;
                    }
                    if !m.gateways.is_empty() {
                        if !m
                            .gateways
                            .iter()
                            .any(|g| resolve_gateway_name(g, ns) == srv.gw_key)
                        {
                            continue;
                        }
                    } else {
                        if !labels_subset(&m.source_labels, &self.input.labels) {
                            continue;
                        }
                        if !m.source_namespace.is_empty()
                            && m.source_namespace != self.input.namespace
                        {
                            continue;
                        }
                    }
                }
                let origin = match k {
                    Some(k) => format!("{}.match[{k}]", f.origin),
                    None => f.origin.clone(),
                };
                let matcher = route_match(m);
                let catch_all = is_catch_all(&matcher);
                let mut r = self.http_route(f.vs, &f.at, rule, matcher, origin, port, clusters);
                // Envoy's route name (%ROUTE_NAME%), as Istio sets it: the rule's name, joined
                // with the match's.
                r.name = match (rule.name.as_str(), m.map_or("", |m| m.name.as_str())) {
                    ("", "") => None,
                    (n, "") => Some(n.to_string()),
                    (n, m) => Some(format!("{n}.{m}")),
                };
                out.push(r);
                if catch_all {
                    break 'rules;
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn http_route(
        &mut self,
        vs: &'a VirtualService,
        at: &str,
        rule: &HttpRoute,
        matcher: p::RouteMatch,
        origin: String,
        port: u16,
        clusters: &mut BTreeMap<String, Option<p::Cluster>>,
    ) -> p::Route {
        let mut request_headers = rule
            .headers
            .as_ref()
            .map(|h| header_ops(&h.request))
            .unwrap_or_default();
        let response_headers = rule
            .headers
            .as_ref()
            .map(|h| header_ops(&h.response))
            .unwrap_or_default();
        // Setting `host` or `:authority` is an authority rewrite (§3.14), not a header operation.
        let mut authority = rule.rewrite.as_ref().and_then(|w| w.authority.clone());
        request_headers.set.retain(|(k, v)| {
            if is_authority_header(k) {
                authority = Some(v.clone());
                false
            } else {
                true
            }
        });
        request_headers.add.retain(|(k, v)| {
            if is_authority_header(k) {
                authority = Some(v.clone());
                false
            } else {
                true
            }
        });

        let action = if let Some(rd) = &rule.redirect {
            p::Action::Redirect(redirect_plan(rd, port))
        } else if let Some(dr) = &rule.direct_response {
            let body = dr.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(bs)) => {
                    base64_decode(bs).map(|v| String::from_utf8_lossy(&v).into_owned())
                }
                _ => None,
            });
            p::Action::Direct {
                status: u16::try_from(dr.status).unwrap_or(200),
                body,
            }
        } else {
            let several = rule.route.len() > 1;
            let mut wcs = Vec::new();
            let mut hash_lb = false;
            for (k, rd) in rule.route.iter().enumerate() {
                // §3.9: one destination takes everything; with several, weight 0 is dropped.
                if several && rd.weight <= 0 {
                    continue;
                }
                let Some(dest) = &rd.destination else {
                    continue;
                };
                let field = format!("{at}.route[{k}].destination");
                let name = self.http_cluster(vs, &field, dest, port, clusters);
                if let Some(Some(c)) = clusters.get(&name) {
                    hash_lb |= c.lb.is_hash();
                }
                let (mut rq, rs) = rd
                    .headers
                    .as_ref()
                    .map(|h| (header_ops(&h.request), header_ops(&h.response)))
                    .unwrap_or_default();
                // A destination-level authority applies only if the route has none.
                rq.set.retain(|(k, v)| {
                    if is_authority_header(k) {
                        if authority.is_none() {
                            authority = Some(v.clone());
                        }
                        false
                    } else {
                        true
                    }
                });
                wcs.push(p::WeightedCluster {
                    cluster: name,
                    weight: if several {
                        u32::try_from(rd.weight).unwrap_or(u32::MAX)
                    } else {
                        1
                    },
                    request_headers: rq,
                    response_headers: rs,
                });
            }
            let rewrite = rule.rewrite.as_ref().and_then(|w| {
                if let Some(u) = &w.uri {
                    Some(p::Rewrite::Prefix(u.clone()))
                } else {
                    w.uri_regex_rewrite.as_ref().map(|rr| p::Rewrite::Regex {
                        pattern: rr.pattern.clone(),
                        substitution: regex_substitution(&rr.rewrite),
                    })
                }
            });
            p::Action::Forward(p::Forward {
                clusters: wcs,
                rewrite,
                authority: authority.clone(),
                timeout_ms: duration_ms(&rule.timeout).filter(|t| *t > 0),
                retry: retry_plan(rule.retries.as_ref(), hash_lb, self.input.compat),
            })
        };
        let fault = rule.fault.as_ref().map(|f| p::Fault {
            delay: f.delay.as_ref().and_then(|d| {
                Some(p::FaultDelay {
                    delay_ms: duration_ms(&d.fixed_delay)?,
                    ppm: match (&d.percentage, d.percent) {
                        (Some(pc), _) => ppm(pc.value),
                        (None, Some(i)) => ppm(i as f64),
                        (None, None) => 0,
                    },
                })
            }),
            abort: f.abort.as_ref().and_then(|a| {
                let grpc = a
                    .grpc_status
                    .as_ref()
                    .and_then(|g| GRPC_CODES.iter().position(|c| c == g))
                    .map(|c| c as u32);
                let http = a.http_status.and_then(|s| u16::try_from(s).ok());
                if http.is_none() && grpc.is_none() {
                    return None;
                }
                Some(p::FaultAbort {
                    http_status: http,
                    grpc_status: if http.is_some() { None } else { grpc },
                    ppm: a.percentage.as_ref().map_or(0, |pc| ppm(pc.value)),
                })
            }),
        });
        let mut mirrors = Vec::new();
        let forwards = matches!(action, p::Action::Forward(_));
        if forwards {
            if let Some(d) = &rule.mirror {
                let pct = match (&rule.mirror_percentage, rule.mirror_percent) {
                    (Some(pc), _) => pc.value,
                    (None, Some(i)) => i as f64,
                    (None, None) => 100.0,
                };
                let name = self.http_cluster(vs, &format!("{at}.mirror"), d, port, clusters);
                mirrors.push(p::Mirror {
                    cluster: name,
                    ppm: ppm(pct),
                    shadow_host: self.input.compat.shadow_host_suffix(),
                });
            }
            for (k, m) in rule.mirrors.iter().flatten().enumerate() {
                let Some(d) = &m.destination else { continue };
                let name = self.http_cluster(
                    vs,
                    &format!("{at}.mirrors[{k}].destination"),
                    d,
                    port,
                    clusters,
                );
                mirrors.push(p::Mirror {
                    cluster: name,
                    ppm: ppm(m.percentage.as_ref().map_or(100.0, |pc| pc.value)),
                    shadow_host: self.input.compat.shadow_host_suffix(),
                });
            }
        }
        let cors = rule.cors_policy.as_ref().map(|c| {
            let mut origins: Vec<p::StrMatch> =
                c.allow_origins.iter().map(string_match_plan).collect();
            origins.extend(c.allow_origin.iter().map(|o| p::StrMatch::Exact(o.clone())));
            p::Cors {
                allow_origins: origins,
                allow_methods: c.allow_methods.join(","),
                allow_headers: c.allow_headers.join(","),
                expose_headers: c.expose_headers.join(","),
                max_age: c
                    .max_age
                    .as_deref()
                    .and_then(parse_duration)
                    .map(|d| d.as_secs().to_string()),
                allow_credentials: c.allow_credentials == Some(true),
                ignore_unmatched_preflights: c.unmatched_preflights.as_deref() == Some("IGNORE"),
            }
        });
        p::Route {
            origin,
            name: None,
            matcher,
            action,
            request_headers,
            response_headers,
            fault,
            mirrors,
            cors,
        }
    }
}

/// `\1`..`\9` (RE2/Envoy) -> `${1}` (regex crate); a literal `$` is escaped.
fn regex_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' if it.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let d = it.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn redirect_plan(r: &HttpRedirect, listener_port: u16) -> p::Redirect {
    let (port, strip_port) = match (r.port, r.derive_port.as_deref()) {
        (Some(n), _) => (u16::try_from(n).ok(), false),
        (None, Some("FROM_REQUEST_PORT")) => (Some(listener_port), false),
        (None, Some("FROM_PROTOCOL_DEFAULT")) => (None, true),
        _ => (None, false),
    };
    p::Redirect {
        scheme: r.scheme.clone(),
        authority: r.authority.clone(),
        port,
        strip_port,
        path: r.uri.clone(),
        prefix_rewrite: r.prefix_rewrite.clone(),
        code: if r.redirect_code == 0 {
            301
        } else {
            r.redirect_code as u16
        },
    }
}

/// RETRY `ConvertPolicy`: absent = Istio's default; `attempts: 0` = none.
fn retry_plan(
    r: Option<&HttpRetry>,
    hash_lb: bool,
    compat: IstioVersion,
) -> Option<p::RetryPolicy> {
    let default_on = || -> Vec<String> { DEFAULT_RETRY_ON.split(',').map(String::from).collect() };
    let Some(r) = r else {
        return Some(p::RetryPolicy {
            num_retries: 2,
            retry_on: default_on(),
            // Istio >= 1.24 no longer retries 503 by default (EXCLUDE_UNSAFE_503...).
            retriable_status_codes: if compat.retries_503_by_default() {
                vec![503]
            } else {
                Vec::new()
            },
            per_try_timeout_ms: None,
            backoff_base_ms: 25,
            previous_hosts: !hash_lb,
        });
    };
    if r.attempts <= 0 {
        return None;
    }
    let mut on = Vec::new();
    let mut codes = Vec::new();
    match &r.retry_on {
        None => on = default_on(),
        Some(s) => {
            for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if let Ok(c) = t.parse::<u16>() {
                    codes.push(c);
                } else {
                    on.push(t.to_string());
                }
            }
            if !codes.is_empty() && !on.iter().any(|o| o == "retriable-status-codes") {
                on.push("retriable-status-codes".into());
            }
        }
    }
    Some(p::RetryPolicy {
        num_retries: u32::try_from(r.attempts).unwrap_or(u32::MAX),
        retry_on: on,
        retriable_status_codes: codes,
        per_try_timeout_ms: duration_ms(&r.per_try_timeout),
        backoff_base_ms: duration_ms(&r.backoff).unwrap_or(25),
        previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(!hash_lb),
    })
}
