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
