//! Choosing the upstream: the weighted destination (§3.9), the consistent-hash key of a
//! request (header, cookie, source IP, query parameter) as the DestinationRule's load balancer
//! asks, and the request one attempt sends to the endpoint picked.

use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri, Version};
use rand::Rng;

use crate::l7::body::UpBody;
use crate::l7::cluster::{fnv, Cluster};
use crate::l7::conn::ConnInfo;
use crate::l7::proxy::Runtime;
use crate::l7::request::headers::{small_number, X_ENVOY_ATTEMPT_COUNT};
use crate::l7::router::Route;
use crate::plan::http as p;

/// The weighted destination, chosen per request (§3.9), and its cluster; None when the
/// destination names no known host, port or subset (Envoy's "cluster not found").
pub(crate) fn pick_cluster<'a>(
    rt: &'a Runtime,
    route: &Route,
    fwd: &'a p::Forward,
) -> Option<(&'a p::WeightedCluster, &'a Cluster)> {
    let k = if fwd.clusters.len() <= 1 || route.total_weight == 0 {
        0
    } else {
        let mut x = rand::thread_rng().gen_range(0..route.total_weight);
        let mut k = 0;
        for (i, c) in fwd.clusters.iter().enumerate() {
            if x < u64::from(c.weight) {
                k = i;
                break;
            }
            x -= u64::from(c.weight);
        }
        k
    };
    let wc = fwd.clusters.get(k)?;
    let ci = route.clusters[k]?;
    Some((wc, &*rt.clusters[ci]))
}

/// The consistent-hash key of a request, if the cluster hashes and the key is present.
pub(crate) fn hash_key(
    c: &Cluster,
    h: &HeaderMap,
    query: Option<&str>,
    conn: &ConnInfo,
) -> (Option<u64>, Option<String>) {
    match &c.plan.lb {
        p::Lb::HashHeader(n) => (h.get(n.as_str()).map(|v| fnv(v.as_bytes())), None),
        p::Lb::HashSourceIp => (Some(fnv(conn.peer.ip().to_string().as_bytes())), None),
        p::Lb::HashQuery(n) => (
            query.and_then(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| fnv(v.as_bytes()))
            }),
            None,
        ),
        p::Lb::HashCookie { name, path, ttl_s } => {
            let found = h
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| fnv(v.as_bytes()));
            match (found, ttl_s) {
                (Some(hh), _) => (Some(hh), None),
                // Envoy generates the cookie when it is absent and a ttl is configured.
                (None, Some(ttl)) => {
                    let v = format!("{:016x}", rand::thread_rng().gen::<u64>());
                    let mut cookie = format!("{name}=\"{v}\"");
                    if *ttl > 0 {
                        cookie.push_str(&format!("; Max-Age={ttl}"));
                    }
                    if !path.is_empty() {
                        cookie.push_str(&format!("; Path={path}"));
                    }
                    cookie.push_str("; HttpOnly");
                    (Some(fnv(format!("\"{v}\"").as_bytes())), Some(cookie))
                }
                (None, None) => (None, None),
            }
        }
        _ => (None, None),
    }
}

/// The request of one attempt to endpoint `i` of `c`.
pub(crate) fn build_upstream(
    c: &Cluster,
    i: usize,
    method: &Method,
    headers: HeaderMap,
    path_and_query: &PathAndQuery,
    body: UpBody,
    attempt: u32,
) -> Result<Request<UpBody>, http::Error> {
    let ep = &c.endpoints[i];
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if c.tls.is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    uri.authority = Some(ep.authority.clone());
    uri.path_and_query = Some(path_and_query.clone());
    let mut r = Request::new(body);
    *r.method_mut() = method.clone();
    *r.uri_mut() = Uri::from_parts(uri)?;
    if c.plan.http2 {
        *r.version_mut() = Version::HTTP_2;
    }
    *r.headers_mut() = headers;
    r.headers_mut()
        .insert(X_ENVOY_ATTEMPT_COUNT, small_number(u64::from(attempt)));
    Ok(r)
}
