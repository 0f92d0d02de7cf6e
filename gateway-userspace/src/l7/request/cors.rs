//! CORS (§3.18): the filter runs before the router. A preflight is answered here; for other
//! requests from an allowed origin the routed response gets the `access-control-*` headers.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};

use crate::l7::conn::{local_reply, Body};
use crate::l7::router::Route;
use crate::plan::http as p;

/// What the CORS filter decided before routing.
pub(crate) enum Cors {
    /// A preflight, answered here.
    Preflight(Response<Body>),
    /// The request's origin, when the route's policy allows it (echoed on the response).
    Pass(Option<HeaderValue>),
}

/// Before the router: answers a preflight the route's policy answers, or says which origin
/// the response is to allow.
pub(crate) fn before(route: &Route, method: &Method, headers: &HeaderMap) -> Cors {
    let origin_value = headers
        .get(header::ORIGIN)
        .filter(|v| !v.is_empty() && v.to_str().is_ok())
        .cloned();
    let origin = origin_value.as_ref().and_then(|v| v.to_str().ok());
    let mut cors_allowed = false;
    if let (Some(cors), Some(origin)) = (&route.plan.cors, origin) {
        cors_allowed = route
            .cors_origins
            .iter()
            .any(|m| m.matches(origin) || m.matches("*"));
        let acrm = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .filter(|v| !v.is_empty())
            .cloned();
        if method == Method::OPTIONS {
            if let Some(acrm) = acrm {
                if cors_allowed || cors.ignore_unmatched_preflights {
                    return Cors::Preflight(preflight(
                        cors,
                        cors_allowed.then_some(origin_value).flatten(),
                        acrm,
                        headers,
                    ));
                }
            }
        }
    }
    Cors::Pass(if cors_allowed { origin_value } else { None })
}

/// The preflight's answer: `origin` is set when the policy allows the request's origin.
fn preflight(
    cors: &p::Cors,
    origin: Option<HeaderValue>,
    acrm: HeaderValue,
    headers: &HeaderMap,
) -> Response<Body> {
    let mut r = local_reply(200, "");
    let h = r.headers_mut();
    if let Some(v) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    let methods = if cors.allow_methods == "*" {
        Some(acrm)
    } else {
        HeaderValue::from_str(&cors.allow_methods).ok()
    };
    if let Some(m) = methods.filter(|m| !m.is_empty()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
    }
    let allow_headers = if cors.allow_headers == "*" {
        headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned()
    } else {
        HeaderValue::from_str(&cors.allow_headers).ok()
    };
    if let Some(v) = allow_headers.filter(|v| !v.is_empty()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(v) = cors
        .max_age
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
    {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, v);
    }
    r
}

/// After the router: the allowed origin and the policy's credentials and exposed headers.
pub(crate) fn after(resp: &mut Response<Body>, route: &Route, origin: HeaderValue) {
    let Some(cors) = &route.plan.cors else { return };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !cors.expose_headers.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cors.expose_headers) {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
}
