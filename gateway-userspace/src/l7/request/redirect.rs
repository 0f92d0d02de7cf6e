//! `redirect` routes: the Location Envoy builds from the request and the route's
//! scheme, authority, port and path parts.

use http::header::{self, HeaderValue};
use http::Response;

use crate::l7::conn::{local_reply, Body};
use crate::l7::router::Route;
use crate::plan::http as p;

/// Location per §3.15.
pub(crate) fn redirect(
    rd: &p::Redirect,
    route: &Route,
    req_scheme: &str,
    authority: &str,
    path: &str,
    query: Option<&str>,
) -> Response<Body> {
    let scheme = rd.scheme.as_deref().unwrap_or(req_scheme);
    let (req_host, req_port) = match authority.rsplit_once(':') {
        Some((h, p))
            if !h.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) || h.ends_with(']') =>
        {
            (h, Some(p))
        }
        _ => (authority, None),
    };
    let (mut host, mut port): (String, Option<String>) = match &rd.authority {
        Some(a) => match a.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h.into(), Some(p.into())),
            _ => (a.clone(), None),
        },
        None => (req_host.to_string(), req_port.map(String::from)),
    };
    if let Some(np) = rd.port {
        port = Some(np.to_string());
    } else if rd.strip_port {
        port = None;
    } else if scheme != req_scheme
        && port.as_deref() == Some(if req_scheme == "https" { "443" } else { "80" })
    {
        // Scheme change drops the original scheme's default port (Envoy processRequestHost).
        port = None;
    }
    if matches!(
        (scheme, port.as_deref()),
        ("http", Some("80")) | ("https", Some("443"))
    ) {
        port = None;
    }
    if let Some(p) = port {
        host = format!("{host}:{p}");
    }
    let (new_path, new_query) = match (&rd.path, &rd.prefix_rewrite) {
        (Some(u), _) => match u.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (u.clone(), query.map(String::from)),
        },
        (None, Some(pr)) => {
            let n = route.matched_prefix_len(path);
            (format!("{pr}{}", &path[n..]), query.map(String::from))
        }
        (None, None) => (path.to_string(), query.map(String::from)),
    };
    let new_path = if new_path.starts_with('/') {
        new_path
    } else {
        format!("/{new_path}")
    };
    let q = new_query.map(|q| format!("?{q}")).unwrap_or_default();
    let mut r = local_reply(rd.code, "");
    if let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{host}{new_path}{q}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
