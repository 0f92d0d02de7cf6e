//! What operators see of the L7 path: an Envoy-style access log line per request (optional) and
//! request counters by listener port, route and status for /metrics.
//!
//! Process-global on purpose, as Envoy's stats are: every listener and generation of the route
//! table adds to the same counters, so a config swap does not reset them.

use std::{
    collections::BTreeMap,
    io::Write,
    path::Path,
    sync::{Arc, LazyLock, Mutex, OnceLock},
    time::{Duration, SystemTime},
};

use hyper::{Request, Response};

use super::proxy::ConnInfo;

static ACCESS_LOG: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();

#[derive(Default)]
struct Stat {
    requests: u64,
    seconds: f64,
}

/// (listener port, status code) -> route origin ("" for no route) -> counters. The route is the
/// inner key so that counting an existing series needs no allocation.
type Stats = BTreeMap<(u16, u16), BTreeMap<String, Stat>>;

/// One shard per thread that served requests: counting locks only the thread's own shard (never
/// contended but by a scrape); /metrics sums them.
static SHARDS: LazyLock<Mutex<Vec<Arc<Mutex<Stats>>>>> = LazyLock::new(Default::default);

thread_local! {
    static SHARD: Arc<Mutex<Stats>> = {
        let s: Arc<Mutex<Stats>> = Arc::default();
        SHARDS.lock().unwrap().push(s.clone());
        s
    };
}

/// Sends access log lines to `path` ("-" is standard output). Called once at start-up.
pub fn init_access_log(path: &Path) -> std::io::Result<()> {
    let w: Box<dyn Write + Send> = if path == Path::new("-") {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )
    };
    let _ = ACCESS_LOG.set(Mutex::new(w));
    Ok(())
}

/// The request fields the access log prints, captured before the request is consumed; None when
/// there is no access log (no allocation then).
pub struct RequestInfo {
    line: String,
    xff: String,
    user_agent: String,
    authority: String,
}

pub fn capture<B>(req: &Request<B>) -> Option<RequestInfo> {
    ACCESS_LOG.get()?;
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| h("host"));
    Some(RequestInfo {
        line: format!(
            "{} {} {:?}",
            req.method(),
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
            req.version()
        ),
        xff: h("x-forwarded-for"),
        user_agent: h("user-agent"),
        authority,
    })
}

/// Envoy's response flags for the local replies this gateway makes.
fn flags<B>(resp: &Response<B>, routed: bool) -> &'static str {
    let upstream = resp.headers().contains_key("x-envoy-upstream-service-time");
    match resp.status().as_u16() {
        _ if resp.headers().contains_key("x-envoy-overloaded") => "UO",
        404 if !routed => "NR",
        504 if !upstream => "UT",
        503 if !upstream => "UH",
        _ => "-",
    }
}

/// Counts the request and writes its access log line. `took` is the time to response headers.
/// `route` is the origin of the route that answered, None when none did.
pub fn record<B>(
    conn: &ConnInfo,
    info: Option<RequestInfo>,
    resp: &Response<B>,
    route: Option<&str>,
    took: Duration,
    started: SystemTime,
) {
    let status = resp.status().as_u16();
    SHARD.with(|shard| {
        let mut st = shard.lock().unwrap();
        let routes = st.entry((conn.port, status)).or_default();
        let r = route.unwrap_or("");
        let s = match routes.get_mut(r) {
            Some(s) => s,
            None => routes.entry(r.to_string()).or_default(),
        };
        s.requests += 1;
        s.seconds += took.as_secs_f64();
    });
    let (Some(info), Some(log)) = (info, ACCESS_LOG.get()) else {
        return;
    };
    let upstream_time = resp
        .headers()
        .get("x-envoy-upstream-service-time")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let line = format!(
        "[{}] \"{}\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"\n",
        iso8601(started),
        info.line,
        status,
        flags(resp, route.is_some()),
        took.as_millis(),
        upstream_time,
        info.xff,
        info.user_agent,
        info.authority,
        conn.peer,
        route.unwrap_or("-"),
    );
    let _ = log.lock().unwrap().write_all(line.as_bytes());
}

/// Prometheus text for /metrics.
pub fn prometheus() -> String {
    let mut st = Stats::new();
    for shard in SHARDS.lock().unwrap().iter() {
        for (k, routes) in shard.lock().unwrap().iter() {
            let into = st.entry(*k).or_default();
            for (route, s) in routes {
                let t = into.entry(route.clone()).or_default();
                t.requests += s.requests;
                t.seconds += s.seconds;
            }
        }
    }
    let mut out = String::from(
        "# TYPE gateway_http_requests_total counter\n# TYPE gateway_http_request_seconds_sum counter\n",
    );
    for ((port, code), routes) in st.iter() {
        for (route, s) in routes {
            let labels = format!(
                "listener_port=\"{port}\",route=\"{}\",code=\"{code}\"",
                route.replace('"', "'")
            );
            out.push_str(&format!(
                "gateway_http_requests_total{{{labels}}} {}\n",
                s.requests
            ));
            out.push_str(&format!(
                "gateway_http_request_seconds_sum{{{labels}}} {:.6}\n",
                s.seconds
            ));
        }
    }
    out
}

/// UTC timestamp with milliseconds, as Envoy's %START_TIME% prints it.
fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(iso8601(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(iso8601(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
