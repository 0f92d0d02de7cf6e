//! `--node-ip` (the DaemonSet's `status.hostIP`): with no `--iface`, the agent attaches XDP to
//! the interfaces holding the node's addresses, so one pod spec fits nodes whose interface
//! names differ; an address no interface holds is refused, naming it.

use std::net::SocketAddr;

use anyhow::{ensure, Result};
use gateway_tests::{
    manifests::{L4Config, TCP_PORT},
    topology::VIP,
    Agent, Opts, Topology,
};

#[test]
fn xdp_attaches_to_the_interfaces_holding_the_node_ips() -> Result<()> {
    let topo = Topology::new("nip", 1, Opts::default())?;
    let cfg = L4Config::for_topology(&topo);
    // The client-facing address (the node's hostIP) and the backend-facing one, as a node
    // whose hostIPs name both links; no interface named.
    let node_ips = format!("{VIP},{}", topo.backends[0].node_addr);
    let agent = Agent::start_on(
        &topo,
        &cfg.files(),
        &[],
        &["--node-ip", &node_ips, "--vip", &VIP.to_string()],
        "xdp",
    )?;
    let hits = topo
        .client_api()
        .tcp_hits(SocketAddr::new(VIP.into(), TCP_PORT), 20)?;
    ensure!(hits.iter().all(|h| h.name == "b1"), "{hits:?}");
    ensure!(
        agent.verdict_packets("fwd_new")? >= 20,
        "the XDP program did not carry the connections"
    );
    let attached = &agent.config_dump()?["l4_path_reason"];
    ensure!(
        agent
            .log()
            .contains("the interfaces holding the node's addresses"),
        "the choice is logged ({attached})"
    );
    drop(agent);

    // An address no interface holds: a clear refusal, not a userspace fallback.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", topo.node.name()])
        .arg(gateway_tests::gateway_bin()?)
        .args([
            "run",
            "--config",
            "/nonexistent",
            "--node-ip",
            "198.18.250.1",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2) && err.contains("--node-ip 198.18.250.1"),
        "{:?}: {err}",
        out.status
    );
    Ok(())
}
