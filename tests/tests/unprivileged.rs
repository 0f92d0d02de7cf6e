//! The privilege set deploy/ grants the DaemonSet is enough: the agent runs as `nobody` with
//! only CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON and CAP_NET_BIND_SERVICE, loads and attaches XDP,
//! forwards L4 flows through it and serves L7, as it does as root.

use std::net::SocketAddr;

use anyhow::{ensure, Result};
use gateway_tests::{
    agent::Unprivileged, http::HttpClient, manifests::TCP_PORT, topology::VIP, Agent, Opts,
    Topology,
};

#[test]
fn daemonset_capabilities_are_enough() -> Result<()> {
    let topo = Topology::new("up", 3, Opts::http_backends())?;
    let files = gateway_tests::manifests::demo_files()?;
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    // start_unprivileged checks /ready and that the L4 path is XDP (not the userspace fallback).
    let agent = Agent::start_unprivileged(
        &topo,
        &files,
        &["--vip", "198.18.0.1"],
        Unprivileged::daemonset(),
    )?;

    let status = std::fs::read_to_string(format!("/proc/{}/status", agent_pid(&agent)?))?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    ensure!(
        field("Uid:").starts_with("65534"),
        "agent uid: {}",
        field("Uid:")
    );
    // bpf(39) | perfmon(38) | net_admin(12) | net_bind_service(10), nothing else.
    let want = (1u64 << 39) | (1 << 38) | (1 << 12) | (1 << 10);
    let eff = u64::from_str_radix(&field("CapEff:"), 16)?;
    ensure!(
        eff == want,
        "effective capabilities {eff:#x}, want {want:#x}"
    );

    let before = agent.verdict_packets("fwd_new").unwrap_or(0);
    let hits = topo
        .client_api()
        .tcp_hits(SocketAddr::new(VIP.into(), TCP_PORT), 20)?;
    ensure!(hits.len() == 20, "{} of 20 TCP flows answered", hits.len());
    let after = agent.verdict_packets("fwd_new")?;
    ensure!(
        after > before,
        "XDP forwarded no new flow ({before} -> {after})"
    );

    let http = HttpClient::new(topo.client.name());
    let r = http.get("http://198.18.0.1:8080/v1/x", &[])?;
    ensure!(
        r.status == 200,
        "L7 request through the agent: {}",
        r.status
    );
    Ok(())
}

fn agent_pid(agent: &Agent) -> Result<u32> {
    agent
        .pid()
        .ok_or_else(|| anyhow::anyhow!("agent not running"))
}
