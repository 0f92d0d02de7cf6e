//! The userspace L4 path: the same TCP and UDP routes served from sockets when the agent runs
//! without XDP (no --iface), or when XDP cannot attach. Same topology as the XDP tests, with
//! kernel forwarding off in the node: the agent's own sockets carry the traffic.

use std::{collections::BTreeMap, net::SocketAddr};

use anyhow::{ensure, Result};
use gateway_tests::{
    manifests::{L4Config, TCP_PORT, UDP_PORT},
    topology::VIP,
    Agent, Opts, Topology,
};

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.into(), port)
}

/// No --iface: userspace path; weighted TCP routes and UDP work, backends see the node.
#[test]
fn userspace_without_iface() -> Result<()> {
    let topo = Topology::new("us", 2, Opts::default())?;
    let cfg = L4Config::for_topology(&topo).weighted(&[("v1", 80), ("v2", 20)]);
    let agent = Agent::start_on(
        &topo,
        &cfg.files(),
        &[],
        &["--vip", &VIP.to_string()],
        "userspace",
    )?;
    let dump = agent.config_dump()?;
    ensure!(
        dump["l4_path_reason"] == "no --iface given",
        "reason: {}",
        dump["l4_path_reason"]
    );

    let hits = topo.client_api().tcp_hits(vip(TCP_PORT), 200)?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for h in &hits {
        *counts.entry(h.name.clone()).or_default() += 1;
        // The kernel picks the source: the node's address on the backend's link.
        let b = topo.backend(&h.name);
        ensure!(
            h.peer == std::net::IpAddr::V4(b.node_addr),
            "{} saw {}",
            h.name,
            h.peer
        );
    }
    let b1 = *counts.get("b1").unwrap_or(&0) as f64 / hits.len() as f64;
    // Same Maglev ring and hash as XDP: 80% within ±10 points over 200 connections.
    ensure!((b1 - 0.8).abs() < 0.10, "b1 share {b1}: {counts:?}");

    let r = topo.client_api().udp_request(vip(UDP_PORT), b"hello")?;
    let r = String::from_utf8_lossy(&r);
    ensure!(
        r.ends_with(":hello") && r.starts_with('b'),
        "udp reply {r:?}"
    );
    Ok(())
}

/// XDP cannot attach (native mode on loopback, which has no XDP driver support): the agent says
/// why and serves the same routes from userspace.
#[test]
fn userspace_when_xdp_cannot_attach() -> Result<()> {
    let topo = Topology::new("ux", 1, Opts::default())?;
    let cfg = L4Config::for_topology(&topo);
    let agent = Agent::start_on(
        &topo,
        &cfg.files(),
        &["lo"],
        &["--vip", &VIP.to_string(), "--xdp-mode", "native"],
        "userspace",
    )?;
    let dump = agent.config_dump()?;
    let reason = dump["l4_path_reason"].as_str().unwrap_or("");
    ensure!(
        reason.contains("XDP unavailable") && reason.contains("lo"),
        "reason: {reason}"
    );
    let hit = topo.client_api().tcp_hit(vip(TCP_PORT))?;
    ensure!(hit.name == "b1", "hit {hit:?}");
    Ok(())
}

/// No --iface, an IPv6 VIP beside the IPv4 one: the userspace path listens on both, and each
/// family's connections go to that family's endpoints of the dual-stack service.
#[test]
fn userspace_ipv6_vip() -> Result<()> {
    use gateway_tests::topology::VIP6;
    let topo = Topology::new("u6", 2, Opts::default().dual_stack())?;
    let cfg = L4Config::for_topology(&topo).dual_stack(&topo);
    let agent = Agent::start_on(
        &topo,
        &cfg.files(),
        &[],
        &["--vip", &VIP.to_string(), "--vip", &VIP6.to_string()],
        "userspace",
    )?;
    let dump = agent.config_dump()?;
    ensure!(
        dump["l4_path_reason"] == "no --iface given",
        "reason: {}",
        dump["l4_path_reason"]
    );
    let v6 = SocketAddr::new(VIP6.into(), TCP_PORT);
    let hits = topo.client_api().tcp_hits(v6, 40)?;
    for h in &hits {
        let b = topo.backend(&h.name);
        ensure!(
            h.peer == std::net::IpAddr::V6(b.node_addr6),
            "{} saw {} over IPv6",
            h.name,
            h.peer
        );
    }
    let hits4 = topo.client_api().tcp_hits(vip(TCP_PORT), 10)?;
    for h in &hits4 {
        let b = topo.backend(&h.name);
        ensure!(h.peer == std::net::IpAddr::V4(b.node_addr), "{h:?}");
    }
    let r = topo
        .client_api()
        .udp_request(SocketAddr::new(VIP6.into(), UDP_PORT), b"hello6")?;
    let r = String::from_utf8_lossy(&r);
    ensure!(r.ends_with(":hello6"), "udp reply {r:?}");
    Ok(())
}
