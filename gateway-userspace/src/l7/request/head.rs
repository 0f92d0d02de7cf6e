//! The upstream request head: hop-by-hop headers gone, header operations applied, the Host
//! and path rewritten as the route says (§3.13–3.15).

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;

use crate::l7::conn::ConnInfo;
use crate::l7::proxy::Head;
use crate::l7::request::headers::{apply_ops, strip_hop_by_hop, X_ENVOY_ORIGINAL_PATH};
use crate::l7::router::Route;
use crate::plan::http as p;

/// Rewrites `headers` (the downstream request's) into the upstream's and returns the path and
/// query to send (None: the path is no valid URI path any more); `upgrade` is the WebSocket
/// `Upgrade` value to keep.
pub(crate) fn upstream_head(
    headers: &mut HeaderMap,
    route: &Route,
    fwd: &p::Forward,
    wc: &p::WeightedCluster,
    conn: &ConnInfo,
    head: &Head<'_>,
    upgrade: Option<HeaderValue>,
) -> Option<PathAndQuery> {
    strip_hop_by_hop(headers);
    if fwd.clusters.len() > 1 {
        apply_ops(headers, &wc.request_headers, conn);
        apply_ops(headers, &route.plan.request_headers, conn);
    } else {
        apply_ops(headers, &route.plan.request_headers, conn);
        apply_ops(headers, &wc.request_headers, conn);
    }
    let up_authority = fwd.authority.as_deref().unwrap_or(head.authority);
    // An HTTP/1.1 request usually carries the right Host already.
    if headers.get(header::HOST).map(HeaderValue::as_bytes) != Some(up_authority.as_bytes()) {
        if let Ok(v) = HeaderValue::from_str(up_authority) {
            headers.insert(header::HOST, v);
        }
    }
    let path: &str = &head.path;
    let rewritten: Option<String> = match &fwd.rewrite {
        None => None,
        Some(p::Rewrite::Prefix(r)) => {
            let n = route.matched_prefix_len(path);
            Some(format!("{r}{}", &path[n..]))
        }
        Some(p::Rewrite::Regex { substitution, .. }) => route
            .rewrite_regex
            .as_ref()
            .map(|re| re.replace_all(path, substitution.as_str()).into_owned()),
    };
    if rewritten.as_deref().is_some_and(|n| n != path) {
        // Envoy copies the whole :path, query string included.
        let original = match head.query {
            Some(q) => HeaderValue::from_str(&format!("{path}?{q}")),
            None => HeaderValue::from_str(path),
        };
        if let Ok(v) = original {
            headers.insert(X_ENVOY_ORIGINAL_PATH, v);
        }
    }
    // The received path and query go upstream as they are unless normalised or rewritten.
    let path_and_query = match (&rewritten, &head.path, head.original) {
        (None, Cow::Borrowed(_), Some(pq)) => pq.clone(),
        _ => {
            let new_path = rewritten.as_deref().unwrap_or(path);
            let s = match head.query {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path.to_string(),
            };
            PathAndQuery::from_maybe_shared(Bytes::from(s)).ok()?
        }
    };
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
    Some(path_and_query)
}
