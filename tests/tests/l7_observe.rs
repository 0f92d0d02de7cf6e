//! Operability of the L7 path through the real agent: the access log line of each request and
//! the request counters on /metrics, for a routed request and for one that matches nothing.

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{http::HttpClient, Agent, Opts, Topology};

#[test]
fn access_log_and_metrics() -> Result<()> {
    let topo = Topology::new(
        "ob",
        3,
        Opts {
            http_backends: true,
            ..Opts::default()
        },
    )?;
    let log = tempfile::NamedTempFile::new()?;
    let log_path = log.path().to_string_lossy().to_string();
    let files = gateway_tests::manifests::demo_files()?;
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let agent = Agent::start_with(
        &topo,
        &files,
        &["--vip", "198.18.0.1", "--access-log", &log_path],
    )?;

    let http = HttpClient::new(topo.client.name());
    let ok = http.get("http://198.18.0.1:8080/v1/x", &["user-agent: observe-test"])?;
    ensure!(ok.status == 200, "routed request: {}", ok.status);
    let teapot = http.get("http://198.18.0.1:8080/teapot", &[])?;
    ensure!(teapot.status == 418);

    let text = std::fs::read_to_string(log.path())?;
    let lines: Vec<&str> = text.lines().collect();
    ensure!(lines.len() == 2, "two access log lines expected:\n{text}");
    ensure!(
        lines[0].contains("\"GET /v1/x HTTP/1.1\" 200 - ")
            && lines[0].contains("\"observe-test\"")
            && lines[0].contains("VirtualService demo/web"),
        "first line: {}",
        lines[0]
    );
    ensure!(
        lines[1].contains("\"GET /teapot HTTP/1.1\" 418 "),
        "second line: {}",
        lines[1]
    );

    let (code, metrics) = agent.get("/metrics")?;
    ensure!(code == 200);
    let routed = metrics
        .lines()
        .find(|l| l.starts_with("gateway_http_requests_total") && l.contains("code=\"200\""))
        .with_context(|| format!("no 200 counter in /metrics:\n{metrics}"))?;
    ensure!(
        routed.contains("listener_port=\"8080\"") && routed.ends_with(" 1"),
        "{routed}"
    );
    ensure!(
        metrics.contains("code=\"418\""),
        "no 418 counter:\n{metrics}"
    );
    ensure!(
        metrics.contains("gateway_xdp_packets_total{verdict=\"pass_local\"}"),
        "XDP counters missing"
    );
    Ok(())
}

/// The ports Istio's operators probe and scrape: 15021 answers readiness from the network (as a
/// kubelet or a load balancer reaches a hostNetwork pod), 15090 serves Prometheus text, neither
/// exposes the admin endpoints, and a drain (the preStop hook) fails readiness while L7 keeps
/// serving.
#[test]
fn status_metrics_ports_and_drain() -> Result<()> {
    let topo = Topology::new(
        "pr",
        1,
        Opts {
            http_backends: true,
            ..Opts::default()
        },
    )?;
    let files = gateway_tests::manifests::demo_files()?;
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let agent = Agent::start_with(
        &topo,
        &files,
        &["--vip", "198.18.0.1", "--drain-duration", "700ms"],
    )?;
    let http = HttpClient::new(topo.client.name());
    let ready = http.get("http://198.18.0.1:15021/healthz/ready", &[])?;
    ensure!(
        ready.status == 200,
        "readiness from the client: {}",
        ready.status
    );
    let live = http.get("http://198.18.0.1:15021/healthz/live", &[])?;
    ensure!(live.status == 200, "liveness: {}", live.status);
    let dump = http.get("http://198.18.0.1:15021/config_dump", &[])?;
    ensure!(
        dump.status == 404,
        "status port must not expose config_dump: {}",
        dump.status
    );
    let (code, text) = agent.get_at("127.0.0.1:15090".parse()?, "/stats/prometheus")?;
    ensure!(
        code == 200 && text.contains("gateway_config_generation 1"),
        "15090: {code}: {text}"
    );

    // What changes state is POST only, as in Envoy's admin.
    let (code, _) = agent.get("/drain")?;
    ensure!(code == 405, "GET /drain: {code}");
    ensure!(
        agent.get("/healthz/ready")?.0 == 200,
        "a refused GET /drain drained"
    );
    // The log level changes at run time; a bad level is refused.
    let (code, body) = agent.post("/logging?level=debug")?;
    ensure!(
        code == 200 && body.contains("DEBUG"),
        "/logging: {code} {body}"
    );
    let (code, _) = agent.post("/logging?level=loud")?;
    ensure!(code == 400, "/logging?level=loud: {code}");
    agent.post("/logging?level=info")?;
    // `gateway drain` (the preStop hook) returns once the drain duration has passed.
    let started = std::time::Instant::now();
    let out = agent.cli(&["drain"])?;
    ensure!(
        out.status.success(),
        "gateway drain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        started.elapsed() >= std::time::Duration::from_millis(700),
        "/drain answered before the drain duration: {:?}",
        started.elapsed()
    );
    let ready = http.get("http://198.18.0.1:15021/healthz/ready", &[])?;
    ensure!(
        ready.status == 503,
        "readiness while draining: {}",
        ready.status
    );
    let live = http.get("http://198.18.0.1:15021/healthz/live", &[])?;
    ensure!(
        live.status == 200,
        "liveness while draining: {}",
        live.status
    );
    let ok = http.get("http://198.18.0.1:8080/v1/x", &[])?;
    ensure!(ok.status == 200, "L7 while draining: {}", ok.status);
    Ok(())
}
