//! The attempts of one request: endpoint pick, per-try timeout, retries with back-off under
//! the retry breaker, and the route timeout over all of them (§3.10, §3.11).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http::{Method, Response};
use hyper::body::Incoming;
use rand::Rng;

use crate::l7::body::{Source, UpBody};
use crate::l7::cluster::{try_acquire, Cluster, Counted, Outcome};
use crate::l7::conn::{local_reply, Body};
use crate::l7::observe::flag;
use crate::l7::request::breaker;
use crate::l7::request::retry::{
    classify, grpc_retriable, retriable_error, retriable_status, AttemptError, Tried,
};
use crate::l7::request::upstream::build_upstream;
use crate::plan::http as p;

/// The upstream's response head, how long it took from the last attempt's send, and the
/// endpoint that gave it.
pub(crate) type Answer = (Response<Incoming>, Duration, SocketAddr);

/// What every attempt of one request sends.
pub(crate) struct Attempts<'a> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) policy: Option<&'a p::RetryPolicy>,
    pub(crate) max_attempts: u32,
    pub(crate) method: &'a Method,
    pub(crate) path_and_query: &'a PathAndQuery,
    /// The request body, if it has one.
    pub(crate) src: &'a Option<Arc<Source>>,
    /// The consistent-hash key, if the cluster hashes.
    pub(crate) hash: Option<u64>,
}

impl Attempts<'_> {
    /// Runs the attempts under the route timeout. The timeout starts once the downstream
    /// request is complete and covers the whole response, body included: the deadline returned
    /// is for the response body (if the headers came before the request was complete, it
    /// counts from now).
    pub(crate) async fn run_with_timeout(
        self,
        timeout_ms: Option<u64>,
        headers: HeaderMap,
    ) -> (Result<Answer, Response<Body>>, Option<tokio::time::Instant>) {
        let src = self.src;
        let t0 = tokio::time::Instant::now();
        let outcome = match timeout_ms {
            Some(ms) => {
                let timer = async {
                    if let Some(s) = src {
                        s.finished().await;
                    }
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                };
                tokio::select! {
                    r = self.run(headers) => r,
                    () = timer => Err(flag(
                        local_reply(504, "upstream request timeout"),
                        "UT",
                        "response_timeout",
                    )),
                }
            }
            None => self.run(headers).await,
        };
        let deadline = timeout_ms.map(|ms| {
            let start = match src {
                None => t0,
                Some(s) => s.finished_at().unwrap_or_else(tokio::time::Instant::now),
            };
            start + Duration::from_millis(ms)
        });
        (outcome, deadline)
    }

    /// The attempts: the first to an endpoint the load balancer picks, each retry (as the
    /// policy allows) after a jittered back-off, avoiding the hosts tried if asked to.
    async fn run(self, mut headers: HeaderMap) -> Result<Answer, Response<Body>> {
        let Attempts {
            cluster,
            policy,
            max_attempts,
            method,
            path_and_query,
            src,
            hash,
        } = self;
        let _conn = breaker::connection(cluster).await?;
        let mut tried = Tried::default();
        let mut last_err: Option<AttemptError> = None;
        let mut retry_guard: Option<Counted<'_>> = None;
        for attempt in 1..=max_attempts {
            if attempt > 1 {
                let pol = policy.expect("retries imply a policy");
                match try_acquire(&cluster.active_retries, cluster.plan.limits.max_retries) {
                    Some(g) => retry_guard = Some(g),
                    None => return Err(breaker::overflow()),
                }
                // Fully jittered exponential back-off, capped at 10x base.
                let base = pol.backoff_base_ms.max(1);
                let cap = (((1u64 << (attempt - 1).min(20)) - 1) * base)
                    .min(10 * base)
                    .max(1);
                let wait = rand::thread_rng().gen_range(0..cap);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                // The body outgrew the retry buffer during the back-off (Envoy: 507).
                if src.as_ref().is_some_and(|s| !s.replayable()) {
                    return Err(local_reply(
                        507,
                        "exceeded request buffer limit while retrying upstream",
                    ));
                }
            }
            let avoid: &[usize] = if policy.is_some_and(|p| p.previous_hosts) {
                tried.as_slice()
            } else {
                &[]
            };
            let picked = if tried.count == 0 {
                cluster.pick(hash, avoid)
            } else {
                cluster.pick_retry(hash, avoid)
            };
            let Some(i) = picked else {
                return Err(flag(
                    local_reply(503, "no healthy upstream"),
                    "UH",
                    "no_healthy_upstream",
                ));
            };
            tried.push(i);
            let ep = &cluster.endpoints[i];
            ep.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ep_guard = Counted(&ep.active);
            // The last possible attempt takes the headers; earlier ones copy them for a retry.
            let hd = if attempt == max_attempts {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };
            let body = match src {
                Some(s) => s.body(attempt),
                None => UpBody::Empty,
            };
            let up = match build_upstream(cluster, i, method, hd, path_and_query, body, attempt) {
                Ok(r) => r,
                Err(_) => return Err(local_reply(400, "")),
            };
            let sent = Instant::now();
            let host = up.headers().get(header::HOST).and_then(|h| h.to_str().ok());
            let fut = cluster.client(host).request(up);
            let res = match policy.and_then(|p| p.per_try_timeout_ms) {
                Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), fut).await {
                    Ok(r) => r.map_err(classify),
                    Err(_) => Err(AttemptError::Timeout),
                },
                None => fut.await.map_err(classify),
            };
            match res {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    cluster.record(i, Outcome::Status(status));
                    let retry = policy.is_some_and(|p| {
                        retriable_status(p, status)
                            || (status == 200 && grpc_retriable(p, resp.headers()))
                    }) && replayable(src);
                    if retry && attempt < max_attempts {
                        continue;
                    }
                    drop(retry_guard);
                    return Ok((resp, sent.elapsed(), ep.addr));
                }
                Err(e) => {
                    cluster.record(i, Outcome::LocalFailure);
                    let retry = policy.is_some_and(|p| retriable_error(p, &e)) && replayable(src);
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(failure(
            last_err.unwrap_or(AttemptError::Reset),
            tried.count > 1,
        ))
    }
}

/// Whether another attempt can carry the request body (none, or a copy within the limit).
fn replayable(src: &Option<Arc<Source>>) -> bool {
    src.as_ref().is_none_or(|s| s.replayable())
}

/// The local reply for the last attempt's failure, with Envoy's body, flags and details.
fn failure(e: AttemptError, retried: bool) -> Response<Body> {
    if matches!(e, AttemptError::Timeout) {
        return flag(
            local_reply(504, "upstream request timeout"),
            "UT",
            "response_timeout",
        );
    }
    // Envoy: a TLS handshake failure is told as the transport failure reason.
    let transport = match &e {
        AttemptError::Connect(Some(t)) => format!(", transport failure reason: {t}"),
        _ => String::new(),
    };
    let msg = if retried {
        format!("upstream connect error or disconnect/reset before headers. retried and the latest reset reason: {}{transport}", e.reason())
    } else {
        format!(
            "upstream connect error or disconnect/reset before headers. reset reason: {}{transport}",
            e.reason()
        )
    };
    let (flags, details) = match (&e, retried) {
        (AttemptError::Connect(Some(t)), retried) => (
            if retried { "UF,URX" } else { "UF" },
            crate::l7::upstream_tls::connection_failure_details(t),
        ),
        (AttemptError::Connect(None), false) => (
            "UF",
            "upstream_reset_before_response_started{connection_failure}",
        ),
        (AttemptError::Connect(None), true) => (
            "UF,URX",
            "upstream_reset_before_response_started{connection_failure}",
        ),
        (_, false) => (
            "UC",
            "upstream_reset_before_response_started{connection_termination}",
        ),
        (_, true) => (
            "UC,URX",
            "upstream_reset_before_response_started{connection_termination}",
        ),
    };
    flag(local_reply(503, &msg), flags, details)
}
