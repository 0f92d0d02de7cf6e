//! Shared leaf types of the L7 path: where a connection came in, the body and error types every
//! module passes around, and Envoy-style local replies. Imports nothing from the rest of `l7`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Where a connection came in: the listener key and the peer.
#[derive(Clone)]
pub struct ConnInfo {
    pub bind: std::net::Ipv4Addr,
    pub port: u16,
    pub peer: SocketAddr,
    /// The TLS chain (HTTPS server) the handshake selected; None on plain-text listeners.
    pub chain: Option<usize>,
    /// `x-forwarded-client-cert` for a verified client certificate (MUTUAL, OPTIONAL_MUTUAL).
    pub xfcc: Option<std::sync::Arc<str>>,
    /// The peer's address without port (`x-forwarded-for`, `x-envoy-external-address`),
    /// formatted once per connection.
    pub peer_ip: HeaderValue,
    /// The SNI the client sent (%REQUESTED_SERVER_NAME%); None on plain-text listeners.
    pub sni: Option<std::sync::Arc<str>>,
    /// The address the client connected to (%DOWNSTREAM_LOCAL_ADDRESS%): the listener's
    /// unless the accept loop knows the socket's own.
    pub local: SocketAddr,
}

impl ConnInfo {
    /// A plain-text connection from `peer` to the listener (bind, port).
    pub fn new(bind: std::net::Ipv4Addr, port: u16, peer: SocketAddr) -> ConnInfo {
        ConnInfo {
            bind,
            port,
            peer,
            chain: None,
            xfcc: None,
            sni: None,
            local: SocketAddr::from((bind, port)),
            peer_ip: HeaderValue::from_str(&peer.ip().to_string())
                .expect("an IP address is a valid header value"),
        }
    }

    /// `:scheme` and `x-forwarded-proto` come from the downstream connection (§3.13).
    pub fn scheme(&self) -> &'static str {
        if self.chain.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// A local reply as Envoy sends it: `server: istio-envoy`, `date`, text/plain when non-empty.
pub fn local_reply(status: u16, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    if !body.is_empty() {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::DATE, httpdate_now());
    h.insert(header::SERVER, HeaderValue::from_static("istio-envoy"));
    r
}

fn httpdate_now() -> HeaderValue {
    // RFC 7231 IMF-fixdate without pulling in a date crate.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil from days (Howard Hinnant).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    HeaderValue::from_str(&format!("{wd}, {d:02} {mon} {y} {h:02}:{m:02}:{s:02} GMT"))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}
