//! What operators see of the L7 path: Istio's standard metrics for each request and stream, and
//! an access log line in Istio's default format (text or JSON), both written when the response
//! stream ends, as Envoy writes them: duration, bytes and a downstream disconnect are known
//! only then.

use std::{
    io::Write,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::{Request, Response};

use super::conn::{Body, BoxError, ConnInfo};
use crate::metrics::{self, Dest, HttpSample, Labels, RouteLabels};

/// `--access-log-format`: Istio's `accessLogEncoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Istio's default text format (`EnvoyTextLogFormat`).
    Text,
    /// Istio's default JSON keys, one object per line.
    Json,
}

struct AccessLog {
    /// Buffered, as Envoy's file sink is: a line is a copy into the buffer, and the buffer is
    /// written when full or every [`FLUSH_EVERY`] (Envoy's `file_flush_interval_msec`, 1 s),
    /// instead of one write(2) per request under this lock.
    out: Mutex<std::io::BufWriter<Box<dyn Write + Send>>>,
    format: LogFormat,
}

static ACCESS_LOG: OnceLock<AccessLog> = OnceLock::new();

const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Writes out what the access log holds (also done every second, and at exit).
pub fn flush_access_log() {
    if let Some(l) = ACCESS_LOG.get() {
        let _ = l.out.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

/// Sends access log lines to `path` ("-" is standard output). Called once at start-up.
pub fn init_access_log(path: &Path, format: LogFormat) -> std::io::Result<()> {
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
    if ACCESS_LOG
        .set(AccessLog {
            out: Mutex::new(std::io::BufWriter::with_capacity(64 * 1024, w)),
            format,
        })
        .is_ok()
    {
        std::thread::Builder::new()
            .name("access-log-flush".into())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_EVERY);
                flush_access_log();
            })?;
    }
    Ok(())
}

/// How the proxy came to its response, set on the response's extensions (never sent): the
/// upstream cluster and host, Envoy's response flags and `%RESPONSE_CODE_DETAILS%`.
#[derive(Clone, Debug)]
pub struct Served {
    pub cluster: Option<Arc<str>>,
    pub dest: Arc<Dest>,
    pub upstream_host: Option<SocketAddr>,
    pub flags: &'static str,
    pub details: &'static str,
}

impl Default for Served {
    fn default() -> Served {
        Served {
            cluster: None,
            dest: metrics::unknown_dest(),
            upstream_host: None,
            flags: "-",
            details: "-",
        }
    }
}

/// Marks a local reply with its flags and details (`NR route_not_found`, `UH`, ...).
pub fn flag(mut r: Response<Body>, flags: &'static str, details: &'static str) -> Response<Body> {
    let s = r.extensions_mut().get_or_insert_default::<Served>();
    s.flags = flags;
    s.details = details;
    r
}

/// The request fields the metrics and the access log need, captured before the proxy
/// consumes the request. The access log's fields only when there is one (no allocation then).
pub struct RequestInfo {
    start: Instant,
    started: SystemTime,
    grpc: bool,
    /// Header bytes (as Envoy counts `%BYTES_RECEIVED%`: the body only; headers go in
    /// `istio_request_bytes`) and the body's declared length.
    header_bytes: u64,
    body_bytes: u64,
    log: Option<Box<LogFields>>,
}

struct LogFields {
    method: String,
    path: String,
    protocol: &'static str,
    xff: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    authority: Option<String>,
}

pub fn capture<B>(req: &Request<B>) -> RequestInfo {
    let h = req.headers();
    let grpc = h
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let header_bytes: usize = h
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req.method().as_str().len();
    let body_bytes = h
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    let log = ACCESS_LOG.get().map(|_| {
        let s = |n: http::header::HeaderName| {
            h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string)
        };
        Box::new(LogFields {
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".into(), |p| p.as_str().to_string()),
            protocol: protocol_name(req.version()),
            xff: s(http::header::HeaderName::from_static("x-forwarded-for")),
            user_agent: s(http::header::USER_AGENT),
            request_id: s(http::header::HeaderName::from_static("x-request-id")),
            authority: req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| s(http::header::HOST)),
        })
    });
    RequestInfo {
        start: Instant::now(),
        started: SystemTime::now(),
        grpc,
        header_bytes: header_bytes as u64,
        body_bytes,
        log,
    }
}

fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

/// Everything recorded once the response stream ends.
struct Pending {
    info: RequestInfo,
    port: u16,
    local: SocketAddr,
    peer: SocketAddr,
    sni: Option<Arc<str>>,
    status: u16,
    grpc_status: Option<u16>,
    served: Served,
    route: Option<Arc<str>>,
    route_name: Option<Arc<str>>,
    upstream_time: Option<String>,
    /// Time to response headers (the gateway's own route series).
    headers_after: Duration,
    header_bytes: u64,
}

/// Wraps the response so that metrics and the access log are written when its body ends (or
/// is dropped early: a downstream disconnect, `DC`).
pub fn finish(
    conn: &ConnInfo,
    info: RequestInfo,
    mut resp: Response<Body>,
    route: Option<(Arc<str>, Option<Arc<str>>)>,
) -> Response<Body> {
    let served = resp.extensions_mut().remove::<Served>().unwrap_or_default();
    let h = resp.headers();
    let grpc_status = h
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let header_bytes = h
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>() as u64;
    let upstream_time = info.log.as_ref().and_then(|_| {
        h.get("x-envoy-upstream-service-time")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let (route, route_name) = match route {
        Some((o, n)) => (Some(o), n),
        None => (None, None),
    };
    let pending = Pending {
        headers_after: info.start.elapsed(),
        info,
        port: conn.port,
        local: conn.local,
        peer: conn.peer,
        sni: conn.sni.clone(),
        status: resp.status().as_u16(),
        grpc_status,
        served,
        route,
        route_name,
        upstream_time,
        header_bytes,
    };
    let (parts, body) = resp.into_parts();
    let tail = Tail {
        inner: body,
        bytes: 0,
        ended: false,
        pending: Some(Box::new(pending)),
    };
    Response::from_parts(parts, tail.boxed())
}

/// A response body that counts what it carried and records the request when it ends.
struct Tail {
    inner: Body,
    bytes: u64,
    ended: bool,
    pending: Option<Box<Pending>>,
}

impl HttpBody for Tail {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                } else if let (Some(t), Some(p)) = (f.trailers_ref(), this.pending.as_mut()) {
                    if let Some(g) = t
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                    {
                        p.grpc_status = Some(g);
                    }
                }
                if this.inner.is_end_stream() {
                    this.ended = true;
                }
            }
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) => {
                // The body was cut (route timeout on the body, upstream reset).
                if let Some(p) = this.pending.as_mut() {
                    if p.served.flags == "-" {
                        p.served.flags = "UT";
                        p.served.details = "response_timeout";
                    }
                }
                this.ended = true;
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let Some(mut p) = self.pending.take() else {
            return;
        };
        if !self.ended && !self.inner.is_end_stream() {
            p.served.flags = "DC";
            p.served.details = "downstream_remote_disconnect";
        }
        record(*p, self.bytes);
    }
}

fn record(p: Pending, body_sent: u64) {
    let duration = p.info.start.elapsed();
    let protocol = if p.info.grpc { "grpc" } else { "http" };
    let labels = Labels::http(
        p.served.dest.clone(),
        protocol,
        p.status,
        p.grpc_status,
        p.served.flags,
    );
    metrics::record_http(HttpSample {
        labels: &labels,
        duration_ms: duration.as_secs_f64() * 1000.0,
        request_bytes: p.info.header_bytes + p.info.body_bytes,
        response_bytes: p.header_bytes + body_sent,
    });
    let route_labels = RouteLabels {
        listener_port: p.port,
        route: p.route.clone().unwrap_or_else(|| Arc::from("")),
        code: p.status,
    };
    let m = &*metrics::ISTIO;
    m.route_requests.get_or_create(&route_labels).inc();
    m.route_seconds
        .get_or_create(&route_labels)
        .inc_by(p.headers_after.as_secs_f64());

    let (Some(log), Some(f)) = (ACCESS_LOG.get(), p.info.log.as_deref()) else {
        return;
    };
    let line = Line {
        started: p.info.started,
        method: Some(&f.method),
        path: Some(&f.path),
        protocol: Some(f.protocol),
        code: p.status,
        flags: p.served.flags,
        details: p.served.details,
        bytes_received: p.info.body_bytes,
        bytes_sent: body_sent,
        duration,
        upstream_time: p.upstream_time.as_deref(),
        xff: f.xff.as_deref(),
        user_agent: f.user_agent.as_deref(),
        request_id: f.request_id.as_deref(),
        authority: f.authority.as_deref(),
        upstream_host: p.served.upstream_host,
        cluster: p.served.cluster.as_deref(),
        local: p.local,
        peer: p.peer,
        sni: p.sni.as_deref(),
        route_name: p.route_name.as_deref(),
    };
    log.write(&line);
}

/// One access log entry: the fields of Istio's default format.
struct Line<'a> {
    started: SystemTime,
    method: Option<&'a str>,
    path: Option<&'a str>,
    protocol: Option<&'a str>,
    code: u16,
    flags: &'a str,
    details: &'a str,
    bytes_received: u64,
    bytes_sent: u64,
    duration: Duration,
    upstream_time: Option<&'a str>,
    xff: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    authority: Option<&'a str>,
    upstream_host: Option<SocketAddr>,
    cluster: Option<&'a str>,
    local: SocketAddr,
    peer: SocketAddr,
    sni: Option<&'a str>,
    route_name: Option<&'a str>,
}

impl AccessLog {
    fn write(&self, l: &Line<'_>) {
        let s = match self.format {
            LogFormat::Text => l.text(),
            LogFormat::Json => l.json(),
        };
        let _ = self
            .out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(s.as_bytes());
    }
}

impl Line<'_> {
    /// Istio's `EnvoyTextLogFormat`, field for field.
    fn text(&self) -> String {
        let d = |v: Option<&str>| v.unwrap_or("-").to_string();
        let host = self.upstream_host.map(|a| a.to_string());
        format!(
            "[{}] \"{} {} {}\" {} {} {} - \"-\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} {} {}\n",
            iso8601(self.started),
            d(self.method),
            d(self.path),
            d(self.protocol),
            self.code,
            self.flags,
            self.details,
            self.bytes_received,
            self.bytes_sent,
            self.duration.as_millis(),
            d(self.upstream_time),
            d(self.xff),
            d(self.user_agent),
            d(self.request_id),
            d(self.authority),
            d(host.as_deref()),
            d(self.cluster),
            self.local,
            self.peer,
            d(self.sni),
            d(self.route_name),
        )
    }

    /// Istio's JSON encoding: its default keys, `null` where the text form has `-`, numbers as
    /// numbers; keys sorted, as Envoy writes them. Serialized straight from borrowed fields (no
    /// intermediate `Value` tree: that cost 3.2 µs a line, most of it allocation).
    fn json(&self) -> String {
        fn display<T: std::fmt::Display, S: serde::Serializer>(
            v: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.collect_str(v),
                None => s.serialize_none(),
            }
        }
        #[derive(serde::Serialize)]
        struct Json<'a> {
            authority: Option<&'a str>,
            bytes_received: u64,
            bytes_sent: u64,
            connection_termination_details: Option<&'a str>,
            #[serde(serialize_with = "display")]
            downstream_local_address: Option<SocketAddr>,
            #[serde(serialize_with = "display")]
            downstream_remote_address: Option<SocketAddr>,
            duration: u64,
            method: Option<&'a str>,
            path: Option<&'a str>,
            protocol: Option<&'a str>,
            request_id: Option<&'a str>,
            requested_server_name: Option<&'a str>,
            response_code: u16,
            response_code_details: Option<&'a str>,
            response_flags: &'a str,
            route_name: Option<&'a str>,
            #[serde(serialize_with = "display")]
            start_time: Option<Iso8601>,
            upstream_cluster: Option<&'a str>,
            #[serde(serialize_with = "display")]
            upstream_host: Option<SocketAddr>,
            upstream_local_address: Option<&'a str>,
            upstream_service_time: Option<u64>,
            upstream_transport_failure_reason: Option<&'a str>,
            user_agent: Option<&'a str>,
            x_forwarded_for: Option<&'a str>,
        }
        let v = Json {
            authority: self.authority,
            bytes_received: self.bytes_received,
            bytes_sent: self.bytes_sent,
            connection_termination_details: None,
            downstream_local_address: Some(self.local),
            downstream_remote_address: Some(self.peer),
            duration: self.duration.as_millis() as u64,
            method: self.method,
            path: self.path,
            protocol: self.protocol,
            request_id: self.request_id,
            requested_server_name: self.sni,
            response_code: self.code,
            response_code_details: Some(self.details).filter(|d| *d != "-"),
            response_flags: self.flags,
            route_name: self.route_name,
            start_time: Some(Iso8601(self.started)),
            upstream_cluster: self.cluster,
            upstream_host: self.upstream_host,
            upstream_local_address: None,
            upstream_service_time: self.upstream_time.and_then(|t| t.parse::<u64>().ok()),
            upstream_transport_failure_reason: None,
            user_agent: self.user_agent,
            x_forwarded_for: self.xff,
        };
        let mut out = Vec::with_capacity(640);
        // Writing into a Vec cannot fail, and every field serializes.
        let _ = serde_json::to_writer(&mut out, &v);
        out.push(b'\n');
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A timestamp shown as `iso8601` does, without building the string first.
struct Iso8601(SystemTime);

impl std::fmt::Display for Iso8601 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&iso8601(self.0))
    }
}

/// A TCP connection proxied in userspace (TLS passthrough, a `tls`/`tcp` route): Istio's
/// `istio_tcp_*` series and, with an access log, its line (`"- - -" 0`).
pub struct TcpConn {
    start: Instant,
    started: SystemTime,
    labels: Labels,
    cluster: Option<Arc<str>>,
    local: SocketAddr,
    peer: SocketAddr,
    sni: Option<Arc<str>>,
}

impl TcpConn {
    /// The connection was forwarded to `cluster` (opened toward an upstream).
    pub fn opened(
        cluster: &super::cluster::Cluster,
        local: SocketAddr,
        peer: SocketAddr,
        sni: Option<Arc<str>>,
    ) -> TcpConn {
        let labels = Labels::tcp(cluster.dest.clone(), "-");
        metrics::tcp_opened(&labels);
        TcpConn {
            start: Instant::now(),
            started: SystemTime::now(),
            labels,
            cluster: Some(cluster.name.clone()),
            local,
            peer,
            sni,
        }
    }

    /// The connection ended: bytes received from and sent to the downstream.
    pub fn closed(self, upstream: Option<SocketAddr>, received: u64, sent: u64) {
        metrics::tcp_closed(&self.labels, sent, received);
        let Some(log) = ACCESS_LOG.get() else {
            return;
        };
        log.write(&Line {
            started: self.started,
            method: None,
            path: None,
            protocol: None,
            code: 0,
            flags: "-",
            details: "-",
            bytes_received: received,
            bytes_sent: sent,
            duration: self.start.elapsed(),
            upstream_time: None,
            xff: None,
            user_agent: None,
            request_id: None,
            authority: None,
            upstream_host: upstream,
            cluster: self.cluster.as_deref(),
            local: self.local,
            peer: self.peer,
            sni: self.sni.as_deref(),
            route_name: None,
        });
    }
}

/// UTC timestamp with milliseconds, as Envoy's %START_TIME% prints it.
pub fn iso8601(t: SystemTime) -> String {
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

/// A typical request's line (the unit tests' and the bench's).
fn sample_line() -> Line<'static> {
    Line {
        started: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
        method: Some("GET"),
        path: Some("/v1/x?a=1"),
        protocol: Some("HTTP/1.1"),
        code: 200,
        flags: "-",
        details: "via_upstream",
        bytes_received: 0,
        bytes_sent: 12,
        duration: Duration::from_millis(3),
        upstream_time: Some("2"),
        xff: Some("198.18.0.2"),
        user_agent: Some("curl/7.88.1"),
        request_id: Some("4f6c1a2e-0000-4000-8000-000000000000"),
        authority: Some("web.example.com"),
        upstream_host: Some("198.19.0.2:8080".parse().unwrap()),
        cluster: Some("outbound|8080||web.demo.svc.cluster.local"),
        local: "198.18.0.1:8080".parse().unwrap(),
        peer: "198.18.0.2:41000".parse().unwrap(),
        sni: None,
        route_name: None,
    }
}

/// The per-request cost of what this module adds, in ns: (Istio's metrics for one request,
/// one text access-log line, one JSON line), each the median of 5 runs of `n`. Formatting only:
/// the write to the log's file is measured end to end by `cargo xtask bench --only l7`.
pub fn bench_observe(n: usize) -> (f64, f64, f64) {
    let dst = metrics::Dest::from_cluster("outbound|8000|v1|web.demo.local", "demo");
    let labels = Labels::http(dst, "http", 200, None, "-");
    let line = sample_line();
    let time = |f: &mut dyn FnMut()| {
        let mut runs: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..n {
                    f();
                }
                t.elapsed().as_nanos() as f64 / n as f64
            })
            .collect();
        runs.sort_by(|a, b| a.total_cmp(b));
        runs[2]
    };
    let m = time(&mut || {
        metrics::record_http(HttpSample {
            labels: std::hint::black_box(&labels),
            duration_ms: 1.5,
            request_bytes: 0,
            response_bytes: 12,
        })
    });
    let t = time(&mut || {
        std::hint::black_box(line.text());
    });
    let j = time(&mut || {
        std::hint::black_box(line.json());
    });
    (m, t, j)
}

#[cfg(test)]
mod tests {
    use super::{iso8601, sample_line, Line};
    use std::time::Duration;
    use std::time::SystemTime;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(iso8601(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(iso8601(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    fn line() -> Line<'static> {
        sample_line()
    }

    /// The text line reads field for field as Istio's default format.
    #[test]
    fn text_line_is_istios_default_format() {
        assert_eq!(
            line().text(),
            "[2026-11-18T11:06:40.123Z] \"GET /v1/x?a=1 HTTP/1.1\" 200 - via_upstream - \"-\" 0 12 3 2 \
             \"198.18.0.2\" \"curl/7.88.1\" \"4f6c1a2e-0000-4000-8000-000000000000\" \"web.example.com\" \
             \"198.19.0.2:8080\" outbound|8080||web.demo.svc.cluster.local - 198.18.0.1:8080 \
             198.18.0.2:41000 - -\n"
        );
    }

    #[test]
    fn json_line_has_istios_keys() {
        let v: serde_json::Value = serde_json::from_str(&line().json()).unwrap();
        assert_eq!(v["response_code"], 200);
        assert_eq!(v["upstream_service_time"], 2);
        assert_eq!(v["response_flags"], "-");
        assert!(v["requested_server_name"].is_null());
        assert_eq!(v["downstream_local_address"], "198.18.0.1:8080");
        assert_eq!(v["upstream_host"], "198.19.0.2:8080");
        assert_eq!(v["start_time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["response_code_details"], "via_upstream");
        assert!(v["upstream_local_address"].is_null());
        assert_eq!(v.as_object().unwrap().len(), 24);
        // Keys in Envoy's (sorted) order.
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        let line = line().json();
        let mut at = 0;
        for k in keys {
            let p = line[at..].find(&format!("\"{k}\":")).expect(k) + at;
            at = p;
        }
    }
}
