//! A config that validates but cannot be applied (its new HTTP port is taken on the node) is
//! reported in /config_dump like a rejected one, and the running generation keeps serving both
//! paths untouched.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{http::HttpClient, Agent, Opts, Topology};

const GATEWAY: &str = "gateway.yaml";
const TAKEN_PORT: u16 = 8089;

#[test]
fn unappliable_config_keeps_last_good() -> Result<()> {
    let topo = Topology::new("ra", 3, Opts::http_backends())?;
    let files = gateway_tests::manifests::demo_files()?;
    let borrowed: Vec<(&str, String)> =
        files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let agent = Agent::start_with(&topo, &borrowed, &["--vip", "198.18.0.1"])?;
    let http = HttpClient::new(topo.client.name());
    ensure!(http.get("http://198.18.0.1:8080/v1/x", &[])?.status == 200);
    let g0 = agent.generation()?;

    // Something else on the node owns the port the new server wants.
    let squatter = topo.node.run_in(|| {
        std::net::TcpListener::bind(("0.0.0.0", TAKEN_PORT)).context("binding the squatter")
    })?;
    let gateway = &files
        .iter()
        .find(|(n, _)| n == GATEWAY)
        .context("demo gateway")?
        .1;
    let extended = format!(
        "{gateway}  - port: {{number: {TAKEN_PORT}, name: http-extra, protocol: HTTP}}\n    hosts: [\"*\"]\n"
    );
    agent.write_config(&[(GATEWAY, extended)])?;

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let rejected = loop {
        let dump = agent.config_dump()?;
        if let Some(r) = dump["rejected"].as_array().filter(|r| !r.is_empty()) {
            break r.clone();
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no rejection reported; generation {} (was {g0})",
            dump["generation"]
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(
        rejected.iter().any(|e| e
            .as_str()
            .is_some_and(|e| e.contains(&TAKEN_PORT.to_string()))),
        "the rejection does not name port {TAKEN_PORT}: {rejected:?}"
    );
    ensure!(
        agent.generation()? == g0,
        "generation moved on a failed apply"
    );
    // Both paths still serve the old generation.
    ensure!(http.get("http://198.18.0.1:8080/v1/x", &[])?.status == 200);
    let hits = topo.client_api().tcp_hits("198.18.0.1:31400".parse()?, 5)?;
    ensure!(hits.len() == 5, "TCP service not served: {hits:?}");

    // Once the port is free the same files apply (the agent retries on the next change).
    drop(squatter);
    let gateway2 = format!(
        "{gateway}  - port: {{number: {TAKEN_PORT}, name: http-extra2, protocol: HTTP}}\n    hosts: [\"*\"]\n"
    );
    agent.write_config(&[(GATEWAY, gateway2)])?;
    agent.wait_generation_above(g0, Duration::from_secs(20))?;
    let r = http.get(&format!("http://198.18.0.1:{TAKEN_PORT}/v1/x"), &[])?;
    ensure!(
        r.status == 200,
        "new port after the squatter left: {}",
        r.status
    );
    ensure!(agent.config_dump()?["rejected"]
        .as_array()
        .is_some_and(|r| r.is_empty()));
    Ok(())
}

/// A reload never breaks a connection: 200 HTTP/1.1 keep-alive connections (wrk) and HTTP/2
/// connections with concurrent streams (h2load) run while the config changes 100 times; not
/// one request fails and not one connection is reset.
#[test]
fn reloads_under_load_drop_nothing() -> Result<()> {
    let topo = Topology::new("rl", 3, Opts::http_backends())?;
    let files = gateway_tests::manifests::demo_files()?;
    let borrowed: Vec<(&str, String)> =
        files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let agent = Agent::start_with(
        &topo,
        &borrowed,
        &["--vip", "198.18.0.1", "--reload-ms", "50"],
    )?;
    let http = HttpClient::new(topo.client.name());
    ensure!(http.get("http://198.18.0.1:8080/x", &[])?.status == 200);
    let g0 = agent.generation()?;
    let (web_name, web) = gateway_tests::manifests::demo_web(&files)?;

    let secs = "14";
    let wrk = topo.client.spawn(
        "wrk",
        &[
            "-t2",
            "-c200",
            "-d",
            secs,
            "--timeout",
            "5s",
            "http://198.18.0.1:8080/x",
        ],
        true,
    )?;
    let h2 = topo.client.spawn(
        "h2load",
        &["-c20", "-m10", "-D", secs, "http://198.18.0.1:8080/x"],
        true,
    )?;
    std::thread::sleep(Duration::from_secs(1));
    // 100 different plans: the default route's response header changes each time.
    for i in 0..100 {
        let changed = web.replace(
            "  - name: default\n    route:\n",
            &format!(
                "  - name: default\n    headers: {{response: {{set: {{x-revision: \"{i}\"}}}}}}\n    route:\n"
            ),
        );
        agent.write_config(&[(web_name, changed)])?;
        std::thread::sleep(Duration::from_millis(110));
    }
    let applied = agent.generation()? - g0;
    let wrk_out = wrk.wait_output(Duration::from_secs(30))?;
    let h2_out = h2.wait_output(Duration::from_secs(30))?;
    ensure!(
        applied >= 50,
        "only {applied} of 100 changes were applied as new generations"
    );
    ensure!(
        wrk_out.contains("Requests/sec:")
            && !wrk_out.contains("Socket errors")
            && !wrk_out.contains("Non-2xx"),
        "wrk saw errors across {applied} reloads:\n{wrk_out}"
    );
    let line = h2_out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .with_context(|| format!("h2load output:\n{h2_out}"))?;
    ensure!(
        line.contains(" 0 failed, 0 errored, 0 timeout"),
        "h2load across {applied} reloads: {line}\n{h2_out}"
    );
    ensure!(
        h2_out.contains(" 0 3xx, 0 4xx, 0 5xx"),
        "h2load statuses:\n{h2_out}"
    );
    eprintln!("{applied} generations applied under load");
    Ok(())
}
