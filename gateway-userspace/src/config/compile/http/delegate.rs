//! Delegate VirtualServices (PUSH `mergeVirtualServices`, notes §3.19): each root route with a
//! `delegate` is replaced by the delegate's routes merged with it.

use crate::config::model::{Destination, HttpMatch, HttpRoute, StringMatch, VirtualService};
use crate::config::names::{resolve_gateway_name, resolve_short_name};
use std::collections::BTreeMap;

use crate::config::compile::{exported_to, Compiler};

/// One route of a VirtualService after delegate merging: `vs` resolves its destinations and
/// names it in warnings (the delegate, for delegate routes), `at` is its field there.
pub(super) struct FlatRoute<'a> {
    pub(super) vs: &'a VirtualService,
    pub(super) at: String,
    pub(super) rule: std::borrow::Cow<'a, HttpRoute>,
    pub(super) origin: String,
}

/// A route with its short names resolved in its own namespace (destination hosts, match
/// gateways), so that merging a root route with a delegate's from another namespace keeps
/// each side's meaning (Istio resolves both before merging).
fn qualified(r: &HttpRoute, ns: &str) -> HttpRoute {
    let mut r = r.clone();
    let fix = |d: &mut Destination| d.host = resolve_short_name(&d.host, ns);
    for rd in &mut r.route {
        if let Some(d) = rd.destination.as_mut() {
            fix(d);
        }
    }
    if let Some(d) = r.mirror.as_mut() {
        fix(d);
    }
    for m in r.mirrors.iter_mut().flatten() {
        if let Some(d) = m.destination.as_mut() {
            fix(d);
        }
    }
    for m in &mut r.matches {
        for g in &mut m.gateways {
            *g = resolve_gateway_name(g, ns);
        }
    }
    r
}

/// PUSH `mergeHTTPRoute`: None when the delegate's match conflicts with the root's.
fn merge_delegate_route(root: &HttpRoute, mut leaf: HttpRoute) -> Option<HttpRoute> {
    leaf.matches = merge_matches(&root.matches, &leaf.matches)?;
    leaf.name = match (root.name.is_empty(), leaf.name.is_empty()) {
        (_, true) => root.name.clone(),
        (false, false) => format!("{}-{}", root.name, leaf.name),
        (true, false) => leaf.name,
    };
    macro_rules! inherit {
        ($($f:ident),*) => {$(
            if leaf.$f.is_none() {
                leaf.$f = root.$f.clone();
            }
        )*};
    }
    inherit!(
        rewrite,
        direct_response,
        timeout,
        retries,
        fault,
        mirror,
        mirror_percent,
        mirror_percentage,
        cors_policy,
        mirrors,
        headers
    );
    Some(leaf)
}

/// PUSH `mergeHTTPMatchRequests`: every delegate block must fit (not conflict with) some root
/// block; it is merged with each root block it fits.
fn merge_matches(root: &[HttpMatch], leaf: &[HttpMatch]) -> Option<Vec<HttpMatch>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let mut found = false;
        for r in root {
            if has_conflict(r, l) {
                continue;
            }
            out.push(merge_match(r, l));
            found = true;
        }
        if !found {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// PUSH `mergeHTTPMatchRequest`: the delegate's fields win, the root's fill the gaps, maps
/// are unioned (the delegate's value wins on a shared key).
fn merge_match(root: &HttpMatch, leaf: &HttpMatch) -> HttpMatch {
    let mut out = leaf.clone();
    out.name = match (root.name.is_empty(), leaf.name.is_empty()) {
        (_, true) => root.name.clone(),
        (false, false) => format!("{}-{}", root.name, leaf.name),
        (true, false) => leaf.name.clone(),
    };
    for (o, r) in [
        (&mut out.uri, &root.uri),
        (&mut out.scheme, &root.scheme),
        (&mut out.method, &root.method),
        (&mut out.authority, &root.authority),
    ] {
        if o.is_none() {
            *o = r.clone();
        }
    }
    let union = |r: &BTreeMap<String, Option<StringMatch>>,
                 l: &BTreeMap<String, Option<StringMatch>>| {
        let mut m = r.clone();
        m.extend(l.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    };
    out.headers = union(&root.headers, &leaf.headers);
    out.without_headers = union(&root.without_headers, &leaf.without_headers);
    out.query_params = union(&root.query_params, &leaf.query_params);
    let mut labels = root.source_labels.clone();
    labels.extend(
        leaf.source_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    out.source_labels = labels;
    if out.port == 0 {
        out.port = root.port;
    }
    if out.source_namespace.is_empty() {
        out.source_namespace = root.source_namespace.clone();
    }
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    if out.stat_prefix.as_deref().unwrap_or("").is_empty() {
        out.stat_prefix = root.stat_prefix.clone();
    }
    out
}

/// PUSH `hasConflict`: the delegate block is not a narrowing of the root block.
fn has_conflict(root: &HttpMatch, leaf: &HttpMatch) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let map_conflict = |r: &BTreeMap<String, Option<StringMatch>>,
                        l: &BTreeMap<String, Option<StringMatch>>| {
        l.iter()
            .any(|(k, lv)| string_match_conflict(r.get(k).and_then(Option::as_ref), lv.as_ref()))
    };
    if map_conflict(&root.headers, &leaf.headers)
        || map_conflict(&root.without_headers, &leaf.without_headers)
        || map_conflict(&root.query_params, &leaf.query_params)
    {
        return true;
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    if root.port > 0 && leaf.port > 0 && root.port != leaf.port {
        return true;
    }
    if !root.source_namespace.is_empty() && leaf.source_namespace != root.source_namespace {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
    {
        return true;
    }
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        if root.gateways.len() < leaf.gateways.len() {
            return true;
        }
        if leaf.gateways.iter().any(|g| !root.gateways.contains(g)) {
            return true;
        }
    }
    false
}

/// PUSH `stringMatchConflict`: a delegate string match must be the same exact value, or an
/// exact/prefix under the root's prefix; regex on either side conflicts with anything.
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let get = |o: &Option<String>| o.clone().unwrap_or_default();
    let (re, rp, rr) = (get(&root.exact), get(&root.prefix), get(&root.regex));
    let (le, lp, lr) = (get(&leaf.exact), get(&leaf.prefix), get(&leaf.regex));
    if !rr.is_empty() && (!lr.is_empty() || !lp.is_empty() || !le.is_empty()) {
        return true;
    }
    if !lr.is_empty() && (!rr.is_empty() || !rp.is_empty() || !re.is_empty()) {
        return true;
    }
    if !re.is_empty() {
        return !lp.is_empty() || le != re;
    }
    if !rp.is_empty() {
        if !lp.is_empty() {
            return !lp.starts_with(&rp);
        }
        if !le.is_empty() {
            return !le.starts_with(&rp);
        }
    }
    true
}

impl<'a> Compiler<'a> {
    /// The root's `http[]` with each `delegate` route replaced by the delegate's routes merged
    /// with it (PUSH `mergeVirtualServices`, `MergeHTTPRoutes`, notes §3.19). The delegate is
    /// the VirtualService `namespace/name` (namespace defaulting to the root's) without hosts,
    /// exported to the root's namespace; otherwise that root route is dropped with a warning,
    /// as Istio does. One level only (validation rejects a delegate in a delegate).
    pub(super) fn merged_http(&mut self, vs: &'a VirtualService) -> Vec<FlatRoute<'a>> {
        let mut out = Vec::new();
        for (i, rule) in vs.spec.http.iter().enumerate() {
            let Some(rule) = rule else { continue };
            let at = format!("spec.http[{i}]");
            let Some(d) = &rule.delegate else {
                out.push(FlatRoute {
                    vs,
                    at,
                    rule: std::borrow::Cow::Borrowed(rule),
                    origin: format!("{} http[{i}]", vs.id()),
                });
                continue;
            };
            let dns = if d.namespace.is_empty() {
                vs.namespace()
            } else {
                d.namespace.as_str()
            };
            let m = self.m;
            let found = m
                .virtual_services
                .iter()
                .filter(|v| v.name() == d.name && v.namespace() == dns)
                .min_by(|a, b| a.source.cmp(&b.source));
            let dvs = match found {
                Some(v) if v.spec.hosts.is_empty() => v,
                Some(v) => {
                    let msg = format!(
                        "delegate {} has hosts, so it is a root VirtualService, not a delegate; this route is dropped",
                        v.id()
                    );
                    self.warn(vs, format!("{at}.delegate"), msg);
                    continue;
                }
                None => {
                    let msg = format!(
                        "delegate VirtualService {dns}/{} not found; this route is dropped",
                        d.name
                    );
                    self.warn(vs, format!("{at}.delegate"), msg);
                    continue;
                }
            };
            if !exported_to(&dvs.spec.export_to, dns, vs.namespace()) {
                let msg = format!(
                    "delegate {} is not exported to namespace {}; this route is dropped",
                    dvs.id(),
                    vs.namespace()
                );
                self.warn(vs, format!("{at}.delegate"), msg);
                continue;
            }
            let root = qualified(rule, vs.namespace());
            for (j, leaf) in dvs.spec.http.iter().enumerate() {
                let Some(leaf) = leaf else { continue };
                if leaf.delegate.is_some() {
                    continue; // validation rejects it; one level only
                }
                let leaf_q = qualified(leaf, dvs.namespace());
                match merge_delegate_route(&root, leaf_q) {
                    Some(merged) => out.push(FlatRoute {
                        vs: dvs,
                        at: format!("spec.http[{j}]"),
                        rule: std::borrow::Cow::Owned(merged),
                        origin: format!("{} http[{i}] -> {} http[{j}]", vs.id(), dvs.id()),
                    }),
                    None => {
                        let msg = format!(
                            "match conflicts with root route {} {at} (each delegate match must narrow a root match); this route is dropped there",
                            vs.id()
                        );
                        self.warn(dvs, format!("spec.http[{j}].match"), msg);
                    }
                }
            }
        }
        out
    }
}
