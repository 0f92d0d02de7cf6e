//! Operability of the L7 path through the real agent: the access log line of each request and
//! the request counters on /metrics, for a routed request and for one that matches nothing.

use anyhow::{ensure, Context as _, Result};
use std::time::Duration;

use gateway_tests::{http::HttpClient, wait_until, Agent, Opts, Topology};

#[test]
fn access_log_and_metrics() -> Result<()> {
    let log = tempfile::NamedTempFile::new()?;
    let log_path = log.path().to_string_lossy().to_string();
    let (topo, agent) = demo_agent("ob", 3, &["--access-log", &log_path])?;

    let http = HttpClient::new(topo.client.name());
    let ok = http.get("http://198.18.0.1:8080/v1/x", &["user-agent: observe-test"])?;
    ensure!(ok.status == 200, "routed request: {}", ok.status);
    let teapot = http.get("http://198.18.0.1:8080/teapot", &[])?;
    ensure!(teapot.status == 418);

    // Lines are written when the response stream ends: wait for both.
    let text = wait_lines(log.path(), 2)?;
    let lines: Vec<&str> = text.lines().collect();
    // Istio's default text format: [start] "method path protocol" code flags details
    // termination "failure" received sent duration upstream_time "xff" "ua" "id" "authority"
    // "upstream host" cluster upstream_local downstream_local downstream_remote sni route.
    let f = fields(lines[0]);
    ensure!(f.len() == 22, "{} fields in {}", f.len(), lines[0]);
    ensure!(
        f[1] == "GET /v1/x HTTP/1.1" && f[2] == "200" && f[3] == "-" && f[4] == "via_upstream",
        "first line: {}",
        lines[0]
    );
    ensure!(
        f[12] == "observe-test" && f[14] == "198.18.0.1:8080",
        "{}",
        lines[0]
    );
    ensure!(
        f[13].len() == 36 && f[13] == ok.upstream_header("x-request-id").unwrap_or_default(),
        "the logged request id is the one sent upstream: {} vs {:?}",
        f[13],
        ok.upstream_header("x-request-id")
    );
    ensure!(
        f[15]
            .parse::<std::net::SocketAddrV4>()
            .is_ok_and(|a| a.port() == 8000)
            && f[16] == "outbound|8000|v1|web.demo.local",
        "upstream host and cluster: {}",
        lines[0]
    );
    ensure!(
        f[18] == "198.18.0.1:8080" && f[21] == "v1-only",
        "{}",
        lines[0]
    );
    let t = fields(lines[1]);
    ensure!(
        t[1] == "GET /teapot HTTP/1.1"
            && t[2] == "418"
            && t[4] == "direct_response"
            && t[21] == "teapot",
        "second line: {}",
        lines[1]
    );

    // The scrape, through a Prometheus text-format parser: names, types and Istio's labels.
    let (code, metrics) = agent.get_at("127.0.0.1:15090".parse()?, "/stats/prometheus")?;
    ensure!(code == 200);
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string())))?;
    let series = |name: &str| -> Vec<&prometheus_parse::Sample> {
        scrape.samples.iter().filter(|s| s.metric == name).collect()
    };
    let routed = series("istio_requests_total")
        .into_iter()
        .find(|s| s.labels.get("response_code") == Some("200"))
        .with_context(|| format!("no 200 in istio_requests_total:\n{metrics}"))?;
    ensure!(
        matches!(routed.value, prometheus_parse::Value::Counter(n) if n >= 1.0),
        "istio_requests_total is a counter: {:?}",
        routed.value
    );
    for (k, v) in [
        ("reporter", "source"),
        ("destination_service", "web.demo.local"),
        ("destination_service_name", "web.demo.local"),
        ("destination_service_namespace", "demo"),
        ("destination_version", "v1"),
        ("request_protocol", "http"),
        ("response_flags", "-"),
        ("grpc_response_status", ""),
        ("connection_security_policy", "unknown"),
        ("destination_workload", "unknown"),
        ("source_workload", "gateway"),
    ] {
        ensure!(
            routed.labels.get(k) == Some(v),
            "{k}={:?}, want {v:?}: {routed:?}",
            routed.labels.get(k)
        );
    }
    let direct = series("istio_requests_total")
        .into_iter()
        .find(|s| s.labels.get("response_code") == Some("418"))
        .context("no 418 series")?;
    ensure!(direct.labels.get("destination_service") == Some("unknown"));
    let hist = series("istio_request_duration_milliseconds")
        .into_iter()
        .find(|s| s.labels.get("response_code") == Some("200"))
        .context("no duration histogram")?;
    match &hist.value {
        prometheus_parse::Value::Histogram(b) => ensure!(
            b.len() == 20 && b[0].less_than == 0.5 && b.last().is_some_and(|b| b.count >= 1.0),
            "Envoy's 19 buckets and +Inf: {b:?}"
        ),
        v => anyhow::bail!("duration is not a histogram: {v:?}"),
    }
    for h in ["istio_request_bytes", "istio_response_bytes"] {
        ensure!(
            series(h)
                .iter()
                .any(|s| matches!(s.value, prometheus_parse::Value::Histogram(_))),
            "{h} missing or untyped"
        );
    }
    let own = series("gateway_http_requests_total")
        .into_iter()
        .find(|s| s.labels.get("code") == Some("200"))
        .context("no gateway_http_requests_total 200")?;
    ensure!(own.labels.get("listener_port") == Some("8080"), "{own:?}");
    ensure!(
        series("gateway_xdp_packets_total")
            .iter()
            .any(|s| s.labels.get("verdict") == Some("pass_local")),
        "XDP counters missing"
    );

    // `gateway dump` shows the live plan and the XDP path as tables, and as JSON.
    let out = agent.cli(&["dump"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "dump: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "ROUTES",
        "exact /teapot",
        "VirtualService demo/web http[2].match[0]",
        "outbound|8000|v1|web.demo.local",
        "XDP SERVICES",
        "198.18.0.1:31400/tcp",
    ] {
        ensure!(text.contains(want), "dump lacks {want:?}:\n{text}");
    }
    let out = agent.cli(&["dump", "endpoints", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        v["endpoints"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.iter().all(|e| e["status"] == "healthy")),
        "dump endpoints -o json: {v}"
    );
    Ok(())
}

/// The fields of an access log line: the bracketed time, quoted strings, bare words.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line.trim_end();
    while !rest.is_empty() {
        let (f, r) = match rest.as_bytes()[0] {
            b'[' => rest[1..].split_once(']').unwrap_or((&rest[1..], "")),
            b'"' => rest[1..].split_once('"').unwrap_or((&rest[1..], "")),
            _ => rest.split_once(' ').unwrap_or((rest, "")),
        };
        out.push(f.to_string());
        rest = r.trim_start();
    }
    out
}

fn wait_lines(path: &std::path::Path, n: usize) -> Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path)?;
        if text.lines().count() >= n || std::time::Instant::now() > deadline {
            ensure!(
                text.lines().count() == n,
                "{n} access log lines expected:\n{text}"
            );
            return Ok(text);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The ports Istio's operators probe and scrape: 15021 answers readiness from the network (as a
/// kubelet or a load balancer reaches a hostNetwork pod), 15090 serves Prometheus text, neither
/// exposes the admin endpoints, and a drain (the preStop hook) fails readiness while L7 keeps
/// serving.
#[test]
fn status_metrics_ports_and_drain() -> Result<()> {
    // Three backends: the demo's default route sends 10% to v2 (198.18.13.2), and with fewer
    // backends that endpoint does not exist, so /debug-me below got a 503 one time in ten.
    let (topo, agent) = demo_agent("pr", 3, &["--drain-duration", "700ms"])?;
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
    // At debug, a request is logged inside its connection's span (peer and listener port).
    let dbg = http.get("http://198.18.0.1:8080/debug-me", &[])?;
    ensure!(dbg.status == 200, "{dbg:#?}");
    wait_until(Duration::from_secs(5), "the request's debug line", || {
        Ok(agent
            .log()
            .lines()
            .any(|l| l.contains("conn{peer=198.18.0.2:") && l.contains("/debug-me: 200")))
    })?;
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

/// SIGTERM drains as Envoy does: readiness fails at once, the gateway serves on for the drain
/// duration with `connection: close` on every HTTP/1.1 response, then stops accepting; the
/// requests in flight all complete before the agent exits, and it exits without waiting for
/// the shutdown timeout.
#[test]
fn sigterm_drains_requests_in_flight() -> Result<()> {
    let (topo, mut agent) = demo_agent(
        "st",
        3,
        &["--drain-duration", "1s", "--shutdown-timeout", "8s"],
    )?;
    let http = HttpClient::new(topo.client.name());
    ensure!(http.get("http://198.18.0.1:8080/x", &[])?.status == 200);
    ensure!(
        http.get("http://198.18.0.1:8080/x", &[])?
            .header("connection")
            != Some("close"),
        "no connection: close before the drain"
    );

    // Three requests the backend answers after 2.5 s: still in flight when the drain ends.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let http = http.clone();
            std::thread::spawn(move || http.get("http://198.18.0.1:8080/delay/2500", &[]))
        })
        .collect();
    // An idle HTTP/2 connection: the drain's start sends it GOAWAY, and it ends cleanly then,
    // not when the listeners close at the end of the drain.
    let (term_tx, term_rx) = std::sync::mpsc::channel::<std::time::Instant>();
    let h2 = {
        let client = topo.client_api();
        std::thread::spawn(move || -> Result<Duration> {
            client.run(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let tcp = tokio::net::TcpStream::connect("198.18.0.1:8080").await?;
                    let (send, conn) = h2::client::handshake(tcp).await?;
                    let conn = tokio::spawn(conn);
                    let mut send = send.ready().await?;
                    let req = http::Request::get("http://198.18.0.1:8080/x").body(())?;
                    let (resp, _) = send.send_request(req, true)?;
                    ensure!(
                        resp.await?.status() == 200,
                        "HTTP/2 request before the drain"
                    );
                    // Kept: a client connection whose handles are all dropped ends by itself.
                    let _keep = send;
                    let term = tokio::task::spawn_blocking(move || term_rx.recv()).await??;
                    conn.await?.context("the HTTP/2 connection at the drain")?;
                    Ok(term.elapsed())
                })
            })
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = agent.pid().context("agent pid")?;
    let sent = std::time::Instant::now();
    term_tx.send(sent)?;
    // SAFETY: kill(2) on the agent's own pid, which this test started.
    ensure!(unsafe { libc::kill(pid as i32, libc::SIGTERM) } == 0);
    std::thread::sleep(std::time::Duration::from_millis(200));

    let ready = http.get("http://198.18.0.1:15021/healthz/ready", &[])?;
    ensure!(
        ready.status == 503,
        "readiness while draining: {}",
        ready.status
    );
    let during = http.get("http://198.18.0.1:8080/x", &[])?;
    ensure!(
        during.status == 200 && during.header("connection") == Some("close"),
        "a request during the drain is served, its connection closed: {during:?}"
    );

    let h2_closed = h2.join().map_err(|_| anyhow::anyhow!("h2 thread"))??;
    ensure!(
        h2_closed < Duration::from_millis(800),
        "the idle HTTP/2 connection ended {h2_closed:?} after SIGTERM: no GOAWAY at the drain's start (drain 1 s)"
    );
    for t in slow {
        let r = t.join().map_err(|_| anyhow::anyhow!("client thread"))??;
        ensure!(r.status == 200, "in-flight request: {r:?}");
    }
    let status = agent.stop()?;
    let took = sent.elapsed();
    ensure!(status.success(), "agent exit: {status:?}");
    ensure!(
        took < std::time::Duration::from_secs(6),
        "the agent exits once the requests are done, not at the shutdown timeout: {took:?}"
    );
    ensure!(
        agent.log().contains("drained: no HTTP connection left"),
        "{}",
        agent.log()
    );
    Ok(())
}

/// SIGHUP reloads at once: with an hour-long reload interval, a changed config is applied
/// right after the signal.
#[test]
fn sighup_reloads_now() -> Result<()> {
    let (topo, agent) = demo_agent("hu", 3, &["--reload-ms", "3600000", "--log-format", "json"])?;
    // --log-format json: every line of the agent's own log is one JSON object.
    let log = agent.log();
    ensure!(
        log.lines().count() > 3
            && log
                .lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l)
                    .is_ok_and(|v| v["level"].is_string() && v["fields"]["message"].is_string())),
        "not JSON lines:\n{log}"
    );
    let http = HttpClient::new(topo.client.name());
    ensure!(http.get("http://198.18.0.1:8080/teapot", &[])?.status == 418);
    let gen = agent.generation()?;
    let rev = |agent: &Agent| -> Result<serde_json::Value> {
        Ok(agent.config_dump()?["revision"].clone())
    };
    let first = rev(&agent)?;
    ensure!(
        first["generation"] == gen
            && first["hash"].as_str().is_some_and(|h| h.len() == 16)
            && first["applied_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
            && first["compile_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "revision: {first}"
    );
    let files = gateway_tests::manifests::demo_files()?;
    let changed: Vec<(&str, String)> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.replace("status: 418", "status: 419")))
        .collect();
    ensure!(changed.iter().any(|(_, c)| c.contains("status: 419")));
    agent.write_config(&changed)?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    ensure!(
        agent.generation()? == gen,
        "no reload before the signal (interval is an hour)"
    );
    let pid = agent.pid().context("agent pid")?;
    // SAFETY: kill(2) on the agent's own pid, which this test started.
    ensure!(unsafe { libc::kill(pid as i32, libc::SIGHUP) } == 0);
    agent.wait_generation_above(gen, std::time::Duration::from_secs(5))?;
    let r = http.get("http://198.18.0.1:8080/teapot", &[])?;
    ensure!(r.status == 419, "after SIGHUP: {}", r.status);
    // `explain --admin` answers from the live plan (the new generation), for HTTP and TCP.
    let out = agent.cli(&["explain", "GET http://198.18.0.1:8080/teapot"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success()
            && text.contains(&format!("generation {}", gen + 1))
            && text.contains("action: direct response 419"),
        "explain --admin: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agent.cli(&[
        "explain",
        "GET http://198.18.0.1:8080/x",
        "-H",
        "x-canary: true",
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("http[0].match[0]: MATCH"),
        "explain --admin with a header: {text}"
    );
    let out = agent.cli(&["explain", "--tcp", "198.18.0.1:31400"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("L4 service") && text.contains("backend "),
        "explain --admin --tcp: {text}"
    );
    let out = agent.cli(&["explain", "--tcp", "198.18.0.1:1"])?;
    ensure!(
        out.status.code() == Some(1),
        "nothing on port 1: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let second = rev(&agent)?;
    ensure!(
        second["hash"] != first["hash"] && second["generation"] == gen + 1,
        "{first} -> {second}"
    );
    let (_, metrics) = agent.get_at("127.0.0.1:15090".parse()?, "/stats/prometheus")?;
    let hash = second["hash"].as_str().unwrap_or_default();
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_config_revision{")
                && l.contains(&format!("hash=\"{hash}\""))
                && l.ends_with(" 1")),
        "revision metric:\n{metrics}"
    );
    Ok(())
}

/// A surge hand-over, as the DaemonSet's `maxSurge` upgrade runs it: the next agent starts
/// beside the running one and shares its TCP ports (status, admin, L7), so a probe on 15021
/// may reach either process. Each agent's own `--admin-socket` answers for that agent only:
/// `gateway ready` (the exec probes) reports each one's own state, and `gateway drain` (the
/// preStop hook) drains only the one it is pointed at, while the other keeps serving.
#[test]
fn hand_over_each_agent_answers_for_itself_on_its_own_socket() -> Result<()> {
    let (topo, mut agent) = demo_agent("sg", 1, &[])?;
    let http = HttpClient::new(topo.client.name());
    let url = "http://198.18.0.1:8080/v1/x";
    let old_socket = format!("unix:{}", agent.own_socket().display());
    ensure!(
        ready(&agent, &old_socket)? == 0,
        "the running agent is ready"
    );

    let (next, next_socket) = agent.launch_next()?;
    let next_admin = format!("unix:{}", next_socket.display());
    wait_until(Duration::from_secs(30), "the next agent ready", || {
        Ok(next_socket.exists() && ready(&agent, &next_admin)? == 0)
    })?;
    // The preStop hook of the old pod: drains the old agent only.
    let out = agent.cli_at(&old_socket, &["drain"])?;
    ensure!(
        out.status.success(),
        "gateway drain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        ready(&agent, &old_socket)? == 1,
        "the drained agent reports not ready"
    );
    ensure!(
        ready(&agent, &next_admin)? == 0,
        "the next agent is not drained"
    );
    let mut old = agent.adopt(next, next_socket).context("the old agent")?;
    old.signal(libc::SIGTERM)?;
    ensure!(old.wait_timeout(Duration::from_secs(20))?.success());
    ensure!(
        ready(&agent, &agent_admin(&agent))? == 0,
        "the next agent serves on"
    );
    for _ in 0..20 {
        let r = http.get(url, &[])?;
        ensure!(r.status == 200, "after the hand-over: {}", r.status);
    }
    // Liveness on the socket too (the exec liveness probe).
    ensure!(agent
        .cli_at(&agent_admin(&agent), &["ready", "--live"])?
        .status
        .success());
    Ok(())
}

/// `gateway ready --admin ADMIN`'s exit status.
fn ready(agent: &Agent, admin: &str) -> Result<i32> {
    Ok(agent.cli_at(admin, &["ready"])?.status.code().unwrap_or(-1))
}

fn agent_admin(agent: &Agent) -> String {
    format!("unix:{}", agent.own_socket().display())
}

/// A topology `tag` with `backends` HTTP backends, and an agent on the demo config for the VIP
/// 198.18.0.1 with the flags `extra`.
fn demo_agent(tag: &str, backends: usize, extra: &[&str]) -> Result<(Topology, Agent)> {
    let topo = Topology::new(tag, backends, Opts::http_backends())?;
    let files = gateway_tests::manifests::demo_files()?;
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let mut args = vec!["--vip", "198.18.0.1"];
    args.extend_from_slice(extra);
    let agent = Agent::start_with(&topo, &files, &args)?;
    Ok((topo, agent))
}
