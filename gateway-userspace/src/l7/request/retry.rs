//! Retry decisions: what failed in an attempt, and whether the route's retry policy retries it
//! (Envoy's `retry_on` conditions), plus the hosts a request has tried.

use http::header::HeaderMap;

use crate::plan::http as p;

pub(crate) enum AttemptError {
    /// With the upstream TLS handshake's failure reason (`TLS_error:|...:TLS_error_end`).
    Connect(Option<&'static str>),
    Reset,
    /// The h2 upstream reset the stream with REFUSED_STREAM: it never processed the request.
    RefusedStream,
    Timeout,
}

impl AttemptError {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            AttemptError::Connect(_) => "connection failure",
            AttemptError::Reset => "connection termination",
            AttemptError::RefusedStream => "remote refused stream reset",
            AttemptError::Timeout => "timeout",
        }
    }
}

pub(crate) fn retriable_status(policy: &p::RetryPolicy, status: u16) -> bool {
    policy.retry_on.iter().any(|c| match c.as_str() {
        "5xx" => status >= 500,
        "gateway-error" => matches!(status, 502..=504),
        "retriable-4xx" => status == 409,
        "retriable-status-codes" => policy.retriable_status_codes.contains(&status),
        _ => false,
    })
}

pub(crate) fn retriable_error(policy: &p::RetryPolicy, e: &AttemptError) -> bool {
    policy.retry_on.iter().any(|c| {
        matches!(
            (c.as_str(), e),
            ("5xx" | "gateway-error", _)
                | ("connect-failure", AttemptError::Connect(_))
                | (
                    "reset",
                    AttemptError::Reset | AttemptError::RefusedStream | AttemptError::Timeout
                )
                | (
                    "reset-before-request",
                    AttemptError::Connect(_) | AttemptError::RefusedStream
                )
                | ("refused-stream", AttemptError::RefusedStream)
        )
    })
}

/// gRPC status in a trailers-only response (HTTP 200), for the gRPC retry conditions.
pub(crate) fn grpc_retriable(policy: &p::RetryPolicy, h: &HeaderMap) -> bool {
    let Some(code) = h
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
    else {
        return false;
    };
    policy.retry_on.iter().any(|c| {
        matches!(
            (c.as_str(), code),
            ("cancelled", 1)
                | ("deadline-exceeded", 4)
                | ("resource-exhausted", 8)
                | ("internal", 13)
                | ("unavailable", 14)
        )
    })
}

pub(crate) fn classify(e: hyper_util::client::legacy::Error) -> AttemptError {
    if e.is_connect() {
        return AttemptError::Connect(crate::l7::upstream_tls::tls_reason(&e));
    }
    // hyper wraps h2's error: find it in the chain to tell a refused stream from other resets.
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(err) = src {
        if let Some(h2e) = err.downcast_ref::<h2::Error>() {
            if h2e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return AttemptError::RefusedStream;
            }
        }
        src = err.source();
    }
    AttemptError::Reset
}

/// Endpoints already tried by this request (Envoy `previous_hosts`), without a heap allocation
/// for the first few.
#[derive(Default)]
pub(crate) struct Tried {
    inline: [usize; 4],
    more: Vec<usize>,
    pub(crate) count: usize,
}

impl Tried {
    pub(crate) fn push(&mut self, i: usize) {
        if self.count < self.inline.len() {
            self.inline[self.count] = i;
        } else {
            if self.more.is_empty() {
                self.more.extend_from_slice(&self.inline);
            }
            self.more.push(i);
        }
        self.count += 1;
    }

    pub(crate) fn as_slice(&self) -> &[usize] {
        if self.count <= self.inline.len() {
            &self.inline[..self.count]
        } else {
            &self.more
        }
    }
}
