//! The agent's own HTTP endpoints, on the ports an Istio operator knows:
//! - admin (default 127.0.0.1:15000, like Envoy's): /config_dump, /stats, /conntrack?limit=N
//!   (the connection tables, for `gateway dump bpf`), /metrics, /ready, and POST /drain,
//!   POST /logging?level=; local only, since it shows the whole config and can
//!   start a drain. What changes state is POST only (GET answers 405), as in Envoy's admin;
//! - status (default 0.0.0.0:15021, like istio-proxy's): /healthz/ready and /healthz/live, for
//!   kubelet probes and load balancers' health checks;
//! - metrics (default 0.0.0.0:15090): /stats/prometheus, for scraping.
//!
//! Served by hyper over HTTP/1.1 and h2c; every response is built from one snapshot load.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, UnixListener},
    sync::Mutex,
};

use super::{L4Path, Snapshot};
use crate::dataplane;

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Status,
    Metrics,
}

/// Readiness as probes see it: ready once a config has been applied, until a drain starts.
#[derive(Debug)]
pub struct Health {
    applied: AtomicBool,
    draining: AtomicBool,
    /// When the drain started (by /drain or SIGTERM).
    drain_started: std::sync::Mutex<Option<std::time::Instant>>,
    /// How long /drain keeps the agent serving while reporting not-ready, so that load
    /// balancers and kube-proxy stop sending new connections before the process exits.
    pub drain_for: Duration,
}

impl Health {
    pub fn new(drain_for: Duration) -> Self {
        Health {
            applied: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain_started: std::sync::Mutex::new(None),
            drain_for,
        }
    }

    pub fn set_applied(&self) {
        self.applied.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.applied.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts the drain (once): readiness fails from now, HTTP/1.1 responses carry
    /// `connection: close`, HTTP/2 connections get GOAWAY. Returns when it started.
    pub fn start_drain(&self) -> std::time::Instant {
        let mut started = self.drain_started.lock().unwrap_or_else(|e| e.into_inner());
        if started.is_none() {
            log::info!(
                "draining: readiness fails from now; serving on for {:?} with connection: close / GOAWAY",
                self.drain_for
            );
            self.draining.store(true, Ordering::Release);
            crate::l7::drain(crate::l7::DRAINING);
        }
        *started.get_or_insert_with(std::time::Instant::now)
    }
}

/// What every endpoint reads.
pub struct State {
    /// The L7 runtime being served (clusters with their endpoints' live state).
    pub l7: Arc<ArcSwap<crate::l7::proxy::Runtime>>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub path: Arc<Mutex<L4Path>>,
    pub health: Arc<Health>,
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, ctype.parse().expect("static"));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    reply(status, "text/plain", body)
}

/// Accepts connections until the task is aborted.
pub async fn serve(l: TcpListener, role: Role, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(serve_conn(stream, role, state.clone()));
    }
}

/// The admin endpoints on this agent's own Unix socket (`--admin-socket`), until aborted.
pub async fn serve_unix(l: UnixListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(serve_conn(stream, Role::Admin, state.clone()));
    }
}

/// Binds `path`, replacing a socket file left by an agent that is gone (a restarted container
/// keeps its emptyDir), but never one a live agent still answers on.
pub fn bind_unix(path: &std::path::Path) -> std::io::Result<UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another agent answers on it",
        ));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let l = UnixListener::bind(path)?;
    // Only this user (the probes and preStop hook run as the agent's user).
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

async fn serve_conn<I>(io: I, role: Role, state: Arc<State>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(role, &state, req).await) }
    });
    let mut b = auto::Builder::new(TokioExecutor::new());
    // Probes and scrapers are well-behaved; a stuck client still must not pin a task.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5));
    let _ = b.serve_connection(TokioIo::new(io), svc).await;
}

async fn handle<B>(role: Role, st: &State, req: Request<B>) -> Resp {
    let path = req.uri().path();
    match (role, path) {
        (_, "/healthz/ready") | (Role::Admin, "/ready") => {
            if st.health.is_ready() {
                text(StatusCode::OK, "LIVE\n")
            } else if st.health.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "NO CONFIG APPLIED\n")
            }
        }
        (Role::Admin | Role::Status, "/healthz/live") => text(StatusCode::OK, "LIVE\n"),
        (Role::Admin, "/explain") => explain(st, req.uri().query().unwrap_or("")),
        (Role::Admin | Role::Metrics, "/stats/prometheus") | (Role::Admin, "/metrics") => {
            metrics(st).await
        }
        (Role::Admin, "/clusters") => clusters(st, req.uri().query() == Some("format=json")),
        (Role::Admin, "/certs") => certs(st),
        (Role::Admin, "/config_dump") => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&**st.snapshot.load()).unwrap_or_default(),
        ),
        (Role::Admin, "/stats") => match &*st.path.lock().await {
            L4Path::Xdp(dp) => match dp.stats() {
                Ok(s) => reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string_pretty(&s).unwrap_or_default(),
                ),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            },
            L4Path::User(_) => reply(StatusCode::OK, "application/json", "{}"),
        },
        (Role::Admin, "/conntrack") => {
            // `?limit=N`: flows listed (100 by default); the counts always cover every entry.
            let limit = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("limit="))
                .map(str::parse::<usize>);
            let limit = match limit {
                None => 100,
                Some(Ok(n)) => n,
                Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "expected ?limit=N\n"),
            };
            match &*st.path.lock().await {
                L4Path::Xdp(dp) => reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string_pretty(&dp.conntrack_dump(limit)).unwrap_or_default(),
                ),
                L4Path::User(_) => reply(StatusCode::OK, "application/json", "{}"),
            }
        }
        (Role::Admin, "/drain" | "/logging") if req.method() != Method::POST => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            r.headers_mut()
                .insert(hyper::header::ALLOW, "POST".parse().expect("static"));
            r
        }
        (Role::Admin, "/drain") => {
            let started = st.health.start_drain();
            tokio::time::sleep_until((started + st.health.drain_for).into()).await;
            text(StatusCode::OK, "drained\n")
        }
        (Role::Admin, "/logging") => {
            let level = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("level="));
            match level.map(crate::logging::set_filter) {
                Some(Ok(max)) => {
                    log::warn!("log filter now {:?} (max level {max})", level.unwrap_or(""));
                    text(StatusCode::OK, format!("level: {max}\n"))
                }
                Some(Err(e)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                None => text(StatusCode::BAD_REQUEST, "expected ?level=LEVEL\n"),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Envoy's `/clusters`: per endpoint of every L7 cluster its weight, requests in flight and
/// outlier state, as `cluster::host::stat::value` lines (or JSON with `?format=json`).
fn clusters(st: &State, json: bool) -> Resp {
    let rt = st.l7.load();
    if json {
        let v: Vec<serde_json::Value> = rt
            .clusters
            .iter()
            .map(|c| {
                let hosts: Vec<serde_json::Value> = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let s = e.status();
                        serde_json::json!({
                            "address": s.addr.to_string(),
                            "weight": s.weight,
                            "rq_active": s.active_requests,
                            "health": if s.ejected_for_ms > 0 { "failed_outlier_check" } else { "healthy" },
                            "ejected_for_ms": s.ejected_for_ms,
                            "ejections": s.ejections,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": c.plan.name,
                    "lb": format!("{:?}", c.plan.lb),
                    "rq_active": c.active_requests.load(Ordering::Relaxed),
                    "hosts": hosts,
                })
            })
            .collect();
        return reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&serde_json::json!({ "clusters": v })).unwrap_or_default(),
        );
    }
    let mut out = String::new();
    for c in &rt.clusters {
        let name = &c.plan.name;
        out.push_str(&format!(
            "{name}::rq_active::{}\n",
            c.active_requests.load(Ordering::Relaxed)
        ));
        for e in &c.endpoints {
            let s = e.status();
            let health = if s.ejected_for_ms > 0 {
                "/failed_outlier_check"
            } else {
                "healthy"
            };
            out.push_str(&format!(
                "{name}::{a}::weight::{}\n{name}::{a}::rq_active::{}\n{name}::{a}::health_flags::{health}\n{name}::{a}::outlier_ejections::{}\n",
                s.weight,
                s.active_requests,
                s.ejections,
                a = s.addr
            ));
        }
    }
    text(StatusCode::OK, out)
}

/// `gateway explain --admin`: the same explanation, from the live plan. Query: `request=`
/// (`GET http://host:port/path`), `header=` (repeatable), `sni=`; or `tcp=`/`udp=` `VIP:PORT`.
/// The status the gateway would answer with is in `x-explain-status`.
/// Envoy's `/certs`, flattened: one object per loaded certificate with its source and users.
fn certs(st: &State) -> Resp {
    let now = crate::l7::certs::now();
    let rt = st.l7.load();
    let list: Vec<serde_json::Value> = rt
        .certs
        .certificates
        .iter()
        .map(|c| c.to_json(now))
        .collect();
    let crls: Vec<serde_json::Value> = rt.certs.crls.iter().map(|c| c.to_json(now)).collect();
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec_pretty(
            &serde_json::json!({ "certificates": list, "revocation_lists": crls }),
        )
        .unwrap_or_default(),
    )
}

fn explain(st: &State, query: &str) -> Resp {
    use crate::explain::{explain, explain_l4, query_pairs, Request};
    let pairs = query_pairs(query);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let snap = st.snapshot.load();
    let (out, status) = if let Some((addr, proto)) = get("tcp")
        .map(|a| (a, crate::plan::Proto::Tcp))
        .or_else(|| get("udp").map(|a| (a, crate::plan::Proto::Udp)))
    {
        match addr.parse::<std::net::SocketAddr>() {
            Ok(a) => explain_l4(&snap.plan, a.ip(), a.port(), proto),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("{addr}: {e}\n")),
        }
    } else {
        let headers: Vec<String> = pairs
            .iter()
            .filter(|(n, _)| n == "header")
            .map(|(_, v)| v.clone())
            .collect();
        let line = get("request").unwrap_or_default();
        match Request::parse(&line, &headers, get("sni")) {
            Ok(r) => explain(&snap.plan, &r),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        }
    };
    let mut r = text(
        StatusCode::OK,
        format!(
            "generation {} (hash {})\n{out}",
            snap.generation, snap.revision.hash
        ),
    );
    r.headers_mut()
        .insert("x-explain-status", hyper::header::HeaderValue::from(status));
    r
}

async fn metrics(st: &State) -> Resp {
    let xdp = match &*st.path.lock().await {
        L4Path::Xdp(dp) => Some(dp.stats()),
        L4Path::User(_) => None,
    };
    match xdp.transpose() {
        Ok(s) => reply(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            prometheus(s.as_ref(), &st.snapshot.load(), &st.l7.load().certs),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// The scrape: Istio's request and TCP series and the gateway's own (config, XDP counters read
/// now), through one registry.
fn prometheus(
    st: Option<&dataplane::Stats>,
    snap: &Snapshot,
    inventory: &crate::l7::certs::Inventory,
) -> String {
    use crate::metrics::Pairs;
    use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
    if let Some(st) = st {
        // Before the registry takes its copy of the istio_* families.
        crate::metrics::xdp_tcp(&st.flows, &snap.plan.l4_dests);
    }
    let mut reg = prometheus_client::registry::Registry::default();
    crate::metrics::register(&mut reg);
    let gauge = |v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        g
    };
    reg.register(
        "gateway_config_generation",
        "Generation of the plan serving (moves only when the plan changes)",
        gauge(snap.generation as i64),
    );
    reg.register(
        "gateway_downstream_connections",
        "Downstream connections open now (HTTP, HTTPS, TLS streams; Envoy's downstream_cx_active)",
        gauge(crate::l7::limits::downstream_connections() as i64),
    );
    // The overload manager's inputs and actions (Envoy: overload.<action>.active).
    let (heap, limit) = crate::l7::overload::heap();
    reg.register(
        "gateway_overload_heap_bytes",
        "Heap in use at the overload monitor's last sample",
        gauge(heap as i64),
    );
    reg.register(
        "gateway_overload_heap_limit_bytes",
        "--overload-max-heap (0: no overload actions)",
        gauge(limit as i64),
    );
    let actions: Family<Pairs, Gauge> = Family::default();
    let level = crate::l7::overload::state();
    for (action, from) in [
        ("disable_http_keepalive", crate::l7::overload::KEEPALIVE_OFF),
        ("stop_accepting_connections", crate::l7::overload::REFUSING),
    ] {
        actions
            .get_or_create(&Pairs(vec![("action", action.to_string())]))
            .set(i64::from(level >= from));
    }
    reg.register(
        "gateway_overload_action_active",
        "1 while an overload action is in force",
        actions,
    );
    // Objects the newest config left out (Istio's webhook would have refused them), by kind;
    // 1 when the newest config is not the one serving (--strict, or it failed to apply).
    let rejected: Family<Pairs, Gauge> = Family::default();
    for (kind, n) in &snap.rejected_by_kind {
        rejected
            .get_or_create(&Pairs(vec![("kind", kind.to_string())]))
            .set(*n as i64);
    }
    reg.register(
        "gateway_config_rejected_objects",
        "Objects the newest config left out, by kind",
        rejected,
    );
    let rev = &snap.revision;
    let info: Family<Pairs, Gauge> = Family::default();
    if rev.generation > 0 {
        info.get_or_create(&Pairs(vec![
            ("generation", rev.generation.to_string()),
            ("hash", rev.hash.clone()),
            ("applied_at", rev.applied_at.clone()),
        ]))
        .set(1);
    }
    reg.register(
        "gateway_config_revision",
        "The serving revision (value 1), by generation, content hash and apply time",
        info,
    );
    let stages: Family<Pairs, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
    for (stage, ms) in [
        ("parse", rev.parse_ms),
        ("admit", rev.admit_ms),
        ("compile", rev.compile_ms),
        ("apply", rev.apply_ms),
    ] {
        stages
            .get_or_create(&Pairs(vec![("stage", stage.to_string())]))
            .set(ms / 1e3);
    }
    reg.register(
        "gateway_config_stage_seconds",
        "How long each stage of the serving revision took",
        stages,
    );
    reg.register(
        "gateway_config_last_rejected",
        "1 when the newest config is not the one serving",
        gauge(i64::from(!snap.applied)),
    );
    // Computed at scrape time, so it counts down between reloads.
    let now = crate::l7::certs::now();
    let certs = &inventory.certificates;
    let expiry: Family<Pairs, Gauge> = Family::default();
    for c in certs {
        expiry
            .get_or_create(&Pairs(vec![
                ("kind", c.kind.as_str().to_string()),
                ("source", c.source.clone()),
                ("serial_number", c.serial_number.clone()),
                ("subject", c.subject.clone()),
            ]))
            .set(c.days_left(now));
    }
    reg.register(
        "gateway_certificate_expiration_days",
        "Whole days until each loaded certificate expires (negative: expired)",
        expiry,
    );
    // Envoy's own summary, which Istio's dashboards alert on.
    if let Some(first) = certs.iter().map(|c| c.days_left(now)).min() {
        reg.register(
            "envoy_server_days_until_first_cert_expiring",
            "Days until the first loaded certificate expires",
            gauge(first),
        );
    }
    // A CRL past its nextUpdate refuses every certificate it covers (--crl-expiration=enforce).
    let crl_expiry: Family<Pairs, Gauge> = Family::default();
    let crl_revoked: Family<Pairs, Gauge> = Family::default();
    for c in &inventory.crls {
        let labels = Pairs(vec![
            ("kind", c.kind.to_string()),
            ("source", c.source.clone()),
            ("issuer", c.issuer.clone()),
        ]);
        if let Some(days) = c.days_left(now) {
            crl_expiry.get_or_create(&labels).set(days);
        }
        crl_revoked
            .get_or_create(&labels)
            .set(i64::try_from(c.revoked).unwrap_or(i64::MAX));
    }
    if !inventory.crls.is_empty() {
        reg.register(
            "gateway_crl_expiration_days",
            "Whole days until each loaded CRL's nextUpdate (negative: expired)",
            crl_expiry,
        );
        reg.register(
            "gateway_crl_revoked_certificates",
            "Serials each loaded CRL revokes",
            crl_revoked,
        );
    }
    if let Some(st) = st {
        let verdicts: Family<Pairs, Counter> = Family::default();
        for (reason, c) in &st.verdicts {
            verdicts
                .get_or_create(&Pairs(vec![("verdict", reason.to_string())]))
                .inc_by(c.packets);
        }
        reg.register(
            "gateway_xdp_packets",
            "Packets the XDP program handled, by verdict",
            verdicts,
        );
        packets_and_bytes(&mut reg, "service", &st.services);
        packets_and_bytes(&mut reg, "backend", &st.backends);
        // The connection tables as the garbage collector last saw them.
        let entries: Family<Pairs, Gauge> = Family::default();
        for ((family, table, state), n) in &st.conntrack.entries {
            entries
                .get_or_create(&Pairs(vec![
                    ("family", family.to_string()),
                    ("table", table.to_string()),
                    ("state", state.to_string()),
                ]))
                .set(*n as i64);
        }
        reg.register(
            "gateway_conntrack_entries",
            "Connection-table entries (two per flow) at the last garbage collection, by family, \
             table (main: confirmed flows; new: the client's first packet only) and state",
            entries,
        );
        let deleted: Family<Pairs, Counter> = Family::default();
        for ((family, reason), n) in &st.conntrack.deleted {
            deleted
                .get_or_create(&Pairs(vec![
                    ("family", family.to_string()),
                    ("reason", reason.to_string()),
                ]))
                .inc_by(*n);
        }
        reg.register(
            "gateway_conntrack_deleted_entries",
            "Connection-table entries the garbage collector deleted, by family and reason",
            deleted,
        );
        let orphans: Counter = Counter::default();
        orphans.inc_by(st.conntrack.orphans);
        reg.register(
            "gateway_conntrack_orphan_flows",
            "Flows the collector found with one entry only (the other evicted by the LRU)",
            orphans,
        );
        // What the tables can hold, so that fill is entries / capacity.
        let capacity: Family<Pairs, Gauge> = Family::default();
        for (family, table, n) in [
            ("ipv4", "main", gateway_common::CONNTRACK_MAX),
            ("ipv4", "new", gateway_common::CONNTRACK_NEW_MAX),
            ("ipv6", "main", gateway_common::CONNTRACK6_MAX),
            ("ipv6", "new", gateway_common::CONNTRACK6_NEW_MAX),
        ] {
            capacity
                .get_or_create(&Pairs(vec![
                    ("family", family.to_string()),
                    ("table", table.to_string()),
                ]))
                .set(i64::from(n));
        }
        reg.register(
            "gateway_conntrack_capacity_entries",
            "Entries each connection table holds before its LRU evicts",
            capacity,
        );
        snat_series(&mut reg, &st.conntrack.snat);
    }
    crate::metrics::encode(&reg)
}

/// The SNAT sources' fill at the last garbage collection, per egress interface and address:
/// a backend runs out when its flows on one address reach that address's port range.
fn snat_series(
    reg: &mut prometheus_client::registry::Registry,
    snat: &[dataplane::ct_dump::SnatUse],
) {
    use crate::metrics::Pairs;
    use prometheus_client::metrics::{family::Family, gauge::Gauge};
    type Get = fn(&dataplane::ct_dump::SnatUse) -> u64;
    let series: [(&str, &str, Get); 4] = [
        (
            "gateway_snat_flows",
            "Flows masqueraded to this source address",
            |u| u.flows,
        ),
        (
            "gateway_snat_ports_in_use",
            "Distinct source ports those flows hold",
            |u| u.ports_used,
        ),
        (
            "gateway_snat_port_capacity",
            "Ports of the address's range: the flows one backend can take from it",
            |u| u.capacity,
        ),
        (
            "gateway_snat_busiest_backend_flows",
            "Flows of the backend holding the most on this address (it exhausts first)",
            |u| u.busiest_backend,
        ),
    ];
    for (name, help, get) in series {
        let fam: Family<Pairs, Gauge> = Family::default();
        for u in snat {
            fam.get_or_create(&Pairs(vec![
                ("interface", u.iface.clone()),
                ("address", u.addr.to_string()),
                ("pool", u.pool.to_string()),
            ]))
            .set(get(u) as i64);
        }
        reg.register(name, help, fam);
    }
}

/// `gateway_{what}_packets_total` and `gateway_{what}_bytes_total`, labelled `{what}`.
fn packets_and_bytes(
    reg: &mut prometheus_client::registry::Registry,
    what: &'static str,
    counters: &std::collections::BTreeMap<String, dataplane::Counters2>,
) {
    use crate::metrics::Pairs;
    use prometheus_client::metrics::{counter::Counter, family::Family};
    let (packets, bytes): (Family<Pairs, Counter>, Family<Pairs, Counter>) = Default::default();
    for (k, c) in counters {
        let l = Pairs(vec![(what, k.clone())]);
        packets.get_or_create(&l).inc_by(c.packets);
        bytes.get_or_create(&l).inc_by(c.bytes);
    }
    reg.register(
        format!("gateway_{what}_packets"),
        format!("XDP-forwarded packets by {what}"),
        packets,
    );
    reg.register(
        format!("gateway_{what}_bytes"),
        format!("XDP-forwarded bytes by {what}"),
        bytes,
    );
}
