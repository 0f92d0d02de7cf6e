//! Istio's standard metrics, as an ingress gateway reports them (`reporter="source"`), and the
//! exposition of every series the agent serves on /stats/prometheus.
//!
//! The families are process-wide, as Envoy's stats are: every listener and every generation of
//! the route table adds to the same series, so a config swap resets nothing. A scrape builds one
//! registry from them plus the values read at scrape time (config, XDP counters).

use std::{
    hash::Hash,
    sync::{Arc, LazyLock, OnceLock},
};

use prometheus_client::{
    encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Envoy's default histogram buckets, which Istio keeps for the duration and size histograms.
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Who reports: this gateway workload (Istio's `source_*` labels at a gateway).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    workload: String,
    namespace: String,
    cluster: String,
}

static SOURCE: OnceLock<Arc<Source>> = OnceLock::new();

/// The gateway's identity from the downward-API environment the DaemonSet sets (`POD_NAMESPACE`,
/// and `ISTIO_META_WORKLOAD_NAME` or the default workload name `gateway`).
fn source() -> Arc<Source> {
    SOURCE
        .get_or_init(|| {
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let namespace = env("POD_NAMESPACE");
            Arc::new(Source {
                workload: env("ISTIO_META_WORKLOAD_NAME").unwrap_or_else(|| "gateway".into()),
                cluster: match (&namespace, env("ISTIO_META_CLUSTER_ID")) {
                    (_, Some(c)) => c,
                    (Some(_), None) => "Kubernetes".into(),
                    (None, None) => "unknown".into(),
                },
                namespace: namespace.unwrap_or_else(|| "unknown".into()),
            })
        })
        .clone()
}

/// The destination labels of one cluster (`outbound|port|subset|host`), computed once per
/// cluster build and shared by every request to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dest {
    service: String,
    name: String,
    namespace: String,
    version: String,
}

impl Dest {
    /// Labels for a cluster name and its service's namespace (empty: not known); `unknown`
    /// where Istio has nothing (no cluster: a local reply).
    pub fn from_cluster(cluster: &str, svc_namespace: &str) -> Arc<Dest> {
        let mut parts = cluster.splitn(4, '|');
        let (_, _, subset, host) = (parts.next(), parts.next(), parts.next(), parts.next());
        let Some(host) = host else {
            return unknown_dest();
        };
        // `name.namespace.svc.<domain>` is a Kubernetes Service; any other host (a ServiceEntry)
        // is its own name, as Istio labels it.
        let labels: Vec<&str> = host.split('.').collect();
        let (name, namespace) = if labels.len() >= 3 && labels[2] == "svc" {
            (labels[0].to_string(), labels[1].to_string())
        } else if svc_namespace.is_empty() {
            (host.to_string(), "unknown".to_string())
        } else {
            (host.to_string(), svc_namespace.to_string())
        };
        Arc::new(Dest {
            service: host.to_string(),
            name,
            namespace,
            version: match subset {
                Some(s) if !s.is_empty() => s.to_string(),
                _ => "unknown".into(),
            },
        })
    }
}

pub fn unknown_dest() -> Arc<Dest> {
    static U: LazyLock<Arc<Dest>> = LazyLock::new(|| {
        Arc::new(Dest {
            service: "unknown".into(),
            name: "unknown".into(),
            namespace: "unknown".into(),
            version: "unknown".into(),
        })
    });
    U.clone()
}

/// Istio's label set for the HTTP and TCP series, in Istio's order. HTTP-only labels are None
/// for TCP series, which Istio labels without them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Labels {
    src: Arc<Source>,
    dst: Arc<Dest>,
    protocol: &'static str,
    /// HTTP series only: (response_code, grpc_response_status).
    http: Option<(u16, Option<u16>)>,
    flags: &'static str,
    security: &'static str,
}

impl Labels {
    pub fn http(
        dst: Arc<Dest>,
        protocol: &'static str,
        code: u16,
        grpc: Option<u16>,
        flags: &'static str,
    ) -> Labels {
        Labels {
            src: source(),
            dst,
            protocol,
            http: Some((code, grpc)),
            flags,
            // A gateway reporting as source of a plain-text upstream connection.
            security: "unknown",
        }
    }

    pub fn tcp(dst: Arc<Dest>, flags: &'static str) -> Labels {
        Labels {
            src: source(),
            dst,
            protocol: "tcp",
            http: None,
            flags,
            security: "unknown",
        }
    }
}

impl EncodeLabelSet for Labels {
    fn encode(&self, enc: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let (s, d) = (&*self.src, &*self.dst);
        let code = self.http.map(|(c, _)| c.to_string());
        let grpc = self
            .http
            .map(|(_, g)| g.map_or_else(|| String::from(""), |g| g.to_string()));
        let mut pairs: Vec<(&str, &str)> = vec![
            ("reporter", "source"),
            ("source_workload", &s.workload),
            ("source_canonical_service", &s.workload),
            ("source_canonical_revision", "latest"),
            ("source_workload_namespace", &s.namespace),
            ("source_principal", "unknown"),
            ("source_app", &s.workload),
            ("source_version", "unknown"),
            ("source_cluster", &s.cluster),
            ("destination_workload", "unknown"),
            ("destination_workload_namespace", &d.namespace),
            ("destination_principal", "unknown"),
            ("destination_app", "unknown"),
            ("destination_version", &d.version),
            ("destination_service", &d.service),
            ("destination_canonical_service", &d.name),
            ("destination_canonical_revision", "latest"),
            ("destination_service_name", &d.name),
            ("destination_service_namespace", &d.namespace),
            ("destination_cluster", "unknown"),
            ("request_protocol", self.protocol),
        ];
        if let (Some(code), Some(grpc)) = (&code, &grpc) {
            pairs.push(("response_code", code));
            pairs.push(("grpc_response_status", grpc));
        }
        pairs.push(("response_flags", self.flags));
        pairs.push(("connection_security_policy", self.security));
        for p in pairs {
            p.encode(enc.encode_label())?;
        }
        Ok(())
    }
}

type Hist = Family<Labels, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The gateway's own L7 series (kept beside Istio's: they name the listener and the route).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteLabels {
    pub listener_port: u16,
    pub route: Arc<str>,
    pub code: u16,
}

impl EncodeLabelSet for RouteLabels {
    fn encode(&self, enc: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("listener_port", self.listener_port.to_string().as_str()).encode(enc.encode_label())?;
        ("route", &*self.route).encode(enc.encode_label())?;
        ("code", self.code.to_string().as_str()).encode(enc.encode_label())
    }
}

/// TLS-stream connections (passthrough, terminated `tcp` routes) by listener, chain, outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamLabels {
    pub listener_port: u16,
    pub chain: String,
    pub outcome: &'static str,
}

impl EncodeLabelSet for StreamLabels {
    fn encode(&self, enc: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("listener_port", self.listener_port.to_string().as_str()).encode(enc.encode_label())?;
        ("chain", self.chain.as_str()).encode(enc.encode_label())?;
        ("outcome", self.outcome).encode(enc.encode_label())
    }
}

pub struct Istio {
    pub tls_streams: Family<StreamLabels, Counter>,
    pub requests: Family<Labels, Counter>,
    pub duration_ms: Hist,
    pub request_bytes: Hist,
    pub response_bytes: Hist,
    pub tcp_opened: Family<Labels, Counter>,
    pub tcp_closed: Family<Labels, Counter>,
    pub tcp_sent: Family<Labels, Counter>,
    pub tcp_received: Family<Labels, Counter>,
    pub route_requests: Family<RouteLabels, Counter>,
    pub route_seconds: Family<RouteLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Downstream connections closed at accept by `--max-connections`.
    pub overload_rejected: Counter,
}

pub static ISTIO: LazyLock<Istio> = LazyLock::new(|| Istio {
    tls_streams: Family::default(),
    requests: Family::default(),
    duration_ms: Family::new_with_constructor(histogram as fn() -> Histogram),
    request_bytes: Family::new_with_constructor(histogram as fn() -> Histogram),
    response_bytes: Family::new_with_constructor(histogram as fn() -> Histogram),
    tcp_opened: Family::default(),
    tcp_closed: Family::default(),
    tcp_sent: Family::default(),
    tcp_received: Family::default(),
    route_requests: Family::default(),
    route_seconds: Family::default(),
    overload_rejected: Counter::default(),
});

/// One finished HTTP request.
pub struct HttpSample<'a> {
    pub labels: &'a Labels,
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

pub fn record_http(s: HttpSample<'_>) {
    let m = &*ISTIO;
    m.requests.get_or_create(s.labels).inc();
    m.duration_ms.get_or_create(s.labels).observe(s.duration_ms);
    m.request_bytes
        .get_or_create(s.labels)
        .observe(s.request_bytes as f64);
    m.response_bytes
        .get_or_create(s.labels)
        .observe(s.response_bytes as f64);
}

/// A TCP connection (proxied in userspace: TLS passthrough, L4 fallback) opened.
pub fn tcp_opened(labels: &Labels) {
    ISTIO.tcp_opened.get_or_create(labels).inc();
}

/// A TCP connection closed, with the bytes it carried each way.
pub fn tcp_closed(labels: &Labels, sent: u64, received: u64) {
    let m = &*ISTIO;
    m.tcp_closed.get_or_create(labels).inc();
    m.tcp_sent.get_or_create(labels).inc_by(sent);
    m.tcp_received.get_or_create(labels).inc_by(received);
}

/// The XDP path's TCP connection counters (read from the kernel at a scrape) added to Istio's
/// `istio_tcp_*` series, labelled by each service's destination: only what grew since the last
/// scrape is added, so the series stay counters across scrapes; a counter that went down (its
/// service id was reused) counts from zero again.
pub fn xdp_tcp(
    flows: &std::collections::BTreeMap<String, crate::dataplane::FlowStats>,
    dests: &std::collections::BTreeMap<String, crate::plan::L4Dest>,
) {
    use std::collections::HashMap;
    static LAST: LazyLock<std::sync::Mutex<HashMap<String, crate::dataplane::FlowStats>>> =
        LazyLock::new(Default::default);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let m = &*ISTIO;
    for (name, f) in flows.iter().filter(|(n, _)| n.ends_with("/tcp")) {
        let dst = match dests.get(name) {
            Some(d) if !d.cluster.is_empty() => Dest::from_cluster(&d.cluster, &d.namespace),
            _ => unknown_dest(),
        };
        let labels = Labels::tcp(dst, "-");
        let prev = last.get(name).copied().unwrap_or_default();
        let grow = |now: u64, before: u64| if now >= before { now - before } else { now };
        let d = (
            grow(f.opened, prev.opened),
            grow(f.closed, prev.closed),
            grow(f.sent_bytes, prev.sent_bytes),
            grow(f.received_bytes, prev.received_bytes),
        );
        if d != (0, 0, 0, 0) || !last.contains_key(name) {
            m.tcp_opened.get_or_create(&labels).inc_by(d.0);
            m.tcp_closed.get_or_create(&labels).inc_by(d.1);
            m.tcp_sent.get_or_create(&labels).inc_by(d.2);
            m.tcp_received.get_or_create(&labels).inc_by(d.3);
        }
        last.insert(name.clone(), *f);
    }
}

/// Registers the process-wide families into a scrape's registry.
pub fn register(reg: &mut Registry) {
    let m = &*ISTIO;
    reg.register("istio_requests", "Requests", m.requests.clone());
    reg.register(
        "istio_request_duration_milliseconds",
        "Request duration",
        m.duration_ms.clone(),
    );
    reg.register(
        "istio_request_bytes",
        "Request size",
        m.request_bytes.clone(),
    );
    reg.register(
        "istio_response_bytes",
        "Response size",
        m.response_bytes.clone(),
    );
    reg.register(
        "istio_tcp_connections_opened",
        "TCP connections opened",
        m.tcp_opened.clone(),
    );
    reg.register(
        "istio_tcp_connections_closed",
        "TCP connections closed",
        m.tcp_closed.clone(),
    );
    reg.register(
        "istio_tcp_sent_bytes",
        "Bytes sent to the downstream of TCP connections",
        m.tcp_sent.clone(),
    );
    reg.register(
        "istio_tcp_received_bytes",
        "Bytes received from the downstream of TCP connections",
        m.tcp_received.clone(),
    );
    reg.register(
        "gateway_http_requests",
        "L7 requests by listener port, route and status",
        m.route_requests.clone(),
    );
    reg.register(
        "gateway_http_request_seconds",
        "Time to response headers, summed, by listener port, route and status",
        m.route_seconds.clone(),
    );
    reg.register(
        "gateway_overload_rejected_connections",
        "Downstream connections closed at accept: --max-connections open, or over 95 % of --overload-max-heap",
        m.overload_rejected.clone(),
    );
    reg.register(
        "gateway_tls_stream_connections",
        "TLS-stream connections by listener port, chain and outcome",
        m.tls_streams.clone(),
    );
}

/// A label set of (name, value) pairs known only at scrape time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pairs(pub Vec<(&'static str, String)>);

impl EncodeLabelSet for Pairs {
    fn encode(&self, enc: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for (k, v) in &self.0 {
            (*k, v.as_str()).encode(enc.encode_label())?;
        }
        Ok(())
    }
}

/// Prometheus text (0.0.4) of a registry, the format Envoy serves on Istio's 15090: the
/// crate writes OpenMetrics, whose counter families are named without `_total` and which ends
/// in `# EOF`; both are rewritten so that 0.0.4 parsers type every sample.
pub fn encode(reg: &Registry) -> String {
    let mut om = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut om, reg);
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some(h) = help.take() {
                let doc = h.splitn(4, ' ').nth(3).unwrap_or("");
                out.push_str(&format!("# HELP {name} {doc}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::{encode, record_http, register, unknown_dest, Dest, HttpSample, Labels, Registry};

    #[test]
    fn destination_labels_from_cluster_names() {
        let d = Dest::from_cluster(
            "outbound|9080|v1|reviews.bookinfo.svc.cluster.local",
            "bookinfo",
        );
        assert_eq!(
            (&*d.service, &*d.name, &*d.namespace, &*d.version),
            (
                "reviews.bookinfo.svc.cluster.local",
                "reviews",
                "bookinfo",
                "v1"
            )
        );
        let d = Dest::from_cluster("outbound|443||api.example.com", "");
        assert_eq!(
            (&*d.name, &*d.namespace, &*d.version),
            ("api.example.com", "unknown", "unknown")
        );
        let d = Dest::from_cluster("outbound|443||api.example.com", "edge");
        assert_eq!(&*d.namespace, "edge");
        assert_eq!(Dest::from_cluster("garbage", ""), unknown_dest());
    }

    #[test]
    fn http_series_carry_istio_labels_in_order() {
        let l = Labels::http(
            Dest::from_cluster("outbound|80||web.demo.svc.cluster.local", "demo"),
            "http",
            200,
            None,
            "-",
        );
        record_http(HttpSample {
            labels: &l,
            duration_ms: 3.0,
            request_bytes: 100,
            response_bytes: 2000,
        });
        let mut reg = Registry::default();
        register(&mut reg);
        let text = encode(&reg);
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .expect("a request series");
        let keys: Vec<&str> = line
            .trim_start_matches("istio_requests_total{")
            .split("\",")
            .map(|kv| kv.split('=').next().unwrap())
            .collect();
        assert_eq!(keys[0], "reporter");
        assert!(line.contains("destination_service_name=\"web\""), "{line}");
        assert!(line.contains("response_code=\"200\""), "{line}");
        assert!(line.contains("grpc_response_status=\"\""), "{line}");
        assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram"));
        assert!(text.contains("istio_request_duration_milliseconds_bucket{"));
        assert!(text.contains("# TYPE istio_requests_total counter"));
        assert!(!text.contains("# EOF"));
    }
}
