//! Choosing the upstream: the consistent-hash key of a request (header, cookie, source IP,
//! query parameter), as the DestinationRule's load balancer asks.

use http::header::{self, HeaderMap};
use rand::Rng;

use crate::l7::cluster::{fnv, Cluster};
use crate::l7::conn::ConnInfo;
use crate::plan::http as p;

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
