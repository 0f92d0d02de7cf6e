//! Request and response header handling of the proxy: the headers Envoy adds, strips and
//! rewrites, and the VirtualService header operations.

use std::sync::LazyLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

use crate::l7::conn::ConnInfo;
use crate::plan::http as p;

/// `x-request-id`: a random UUID v4 in its canonical 8-4-4-4-12 lower-case hex form.
pub(crate) fn request_id() -> HeaderValue {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[usize::from(x >> 4)];
        out[o + 1] = HEX[usize::from(x & 0xf)];
        o += 2;
    }
    HeaderValue::from_bytes(&out).expect("hex is a valid header value")
}

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

pub(crate) const X_FORWARDED_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-client-cert");

pub(crate) const X_ENVOY_EXTERNAL_ADDRESS: HeaderName =
    HeaderName::from_static("x-envoy-external-address");

pub(crate) const X_ENVOY_ORIGINAL_PATH: HeaderName =
    HeaderName::from_static("x-envoy-original-path");

pub(crate) const X_ENVOY_ATTEMPT_COUNT: HeaderName =
    HeaderName::from_static("x-envoy-attempt-count");

pub(crate) const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");

/// Edge requests may not steer Envoy (§3.13): these are removed before routing.
pub(crate) const EDGE_STRIPPED: [&str; 20] = [
    "x-envoy-internal",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-original-path",
    "x-envoy-original-host",
];

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Removes hop-by-hop headers (and those the Connection header names); `te` is kept only as
/// `trailers` (gRPC needs it).
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        strip_connection_named(h);
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
    if h.contains_key(header::TE) {
        let te_trailers = h.get_all(header::TE).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim() == "trailers"))
        });
        h.remove(header::TE);
        if te_trailers {
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Removes the headers the Connection header names.
fn strip_connection_named(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
}

/// %DOWNSTREAM_*% and %% formatters in header values (§3.17); others are passed verbatim.
fn format_value(v: &str, conn: &ConnInfo) -> Option<HeaderValue> {
    if !v.contains('%') {
        return HeaderValue::from_str(v).ok();
    }
    let out = v
        .replace("%%", "\u{0}")
        .replace(
            "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
            &conn.peer.ip().to_string(),
        )
        .replace("%DOWNSTREAM_REMOTE_ADDRESS%", &conn.peer.to_string())
        .replace(
            "%DOWNSTREAM_LOCAL_ADDRESS%",
            &format!("{}:{}", conn.bind, conn.port),
        )
        .replace('\u{0}', "%");
    HeaderValue::from_str(&out).ok()
}

/// remove, then set, then add (§3.17).
pub(crate) fn apply_ops(h: &mut HeaderMap, ops: &p::HeaderOps, conn: &ConnInfo) {
    for n in &ops.remove {
        h.remove(n.as_str());
    }
    for (k, v) in &ops.set {
        if let (Ok(n), Some(v)) = (HeaderName::from_bytes(k.as_bytes()), format_value(v, conn)) {
            h.insert(n, v);
        }
    }
    for (k, v) in &ops.add {
        if let (Ok(n), Some(v)) = (HeaderName::from_bytes(k.as_bytes()), format_value(v, conn)) {
            h.append(n, v);
        }
    }
}

/// A decimal header value without an allocation for the values that matter per request
/// (attempt counts, upstream milliseconds below 1000).
pub(crate) fn small_number(n: u64) -> HeaderValue {
    static SMALL: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
        (0..1000u64)
            .map(|n| HeaderValue::from_static(Box::leak(n.to_string().into_boxed_str())))
            .collect()
    });
    match SMALL.get(n as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(n),
    }
}

/// Edge hygiene before routing (§3.13): the `x-envoy-*` a client may not set are removed,
/// `x-forwarded-client-cert` is set from the verified client certificate only, the client's
/// address is appended to `x-forwarded-for`, and the forwarded protocol and external address
/// are set.
pub(crate) fn sanitize_edge(h: &mut HeaderMap, conn: &ConnInfo) {
    // One scan instead of twenty removals for the usual request that has none of them.
    if h.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
        for n in EDGE_STRIPPED {
            h.remove(n);
        }
    }
    // Sanitise, then set from the verified client certificate (Istio's gateway default).
    h.remove(X_FORWARDED_CLIENT_CERT);
    if let Some(v) = conn
        .xfcc
        .as_deref()
        .and_then(|x| HeaderValue::from_str(x).ok())
    {
        h.insert(X_FORWARDED_CLIENT_CERT, v);
    }
    let xff = match h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 1 + conn.peer_ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.push(b',');
            v.extend_from_slice(conn.peer_ip.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        _ => Some(conn.peer_ip.clone()),
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(conn.scheme()));
    h.insert(X_ENVOY_EXTERNAL_ADDRESS, conn.peer_ip.clone());
}
