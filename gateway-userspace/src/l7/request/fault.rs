//! The fault filter (§3.12): delay first, then abort; an abort skips the router, retries and
//! mirrors.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::Response;
use rand::Rng;

use crate::l7::conn::{local_reply, Body};
use crate::l7::observe::flag;
use crate::plan::http as p;

/// True for `ppm` parts per million of the calls.
pub(crate) fn sample(ppm: u32) -> bool {
    ppm >= 1_000_000 || (ppm > 0 && rand::thread_rng().gen_range(0..1_000_000) < ppm)
}

/// Sleeps the sampled delay; returns the abort's reply if the abort is sampled.
pub(crate) async fn inject(f: &p::Fault) -> Option<Response<Body>> {
    if let Some(d) = &f.delay {
        if sample(d.ppm) {
            tokio::time::sleep(Duration::from_millis(d.delay_ms)).await;
        }
    }
    let a = f.abort.as_ref()?;
    if !sample(a.ppm) {
        return None;
    }
    Some(match (a.http_status, a.grpc_status) {
        (Some(s), _) => flag(
            local_reply(s, "fault filter abort"),
            "FI",
            "fault_filter_abort",
        ),
        (None, Some(g)) => {
            let mut r = local_reply(200, "");
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(g));
            h.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            flag(r, "FI", "fault_filter_abort")
        }
        (None, None) => flag(
            local_reply(500, "fault filter abort"),
            "FI",
            "fault_filter_abort",
        ),
    })
}
