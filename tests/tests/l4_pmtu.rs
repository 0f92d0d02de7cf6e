//! Path-MTU discovery through the gateway's XDP path, with the real binary.
//!
//! ```text
//!  client --- node (XDP, forwarding off) --- b1 (a router) ==MTU 1280== server
//! ```
//!
//! The server advertises the MSS of a 1500-byte path (`advmss` on its routes, as behind a
//! tunnel or an MSS-clamping middlebox), so the client sends full-size segments (TSO off on the
//! endpoints, so what leaves is what the MTU allows). The router b1 cannot forward them onto
//! its 1280-byte link and answers with fragmentation needed (ICMPv6 packet too big), addressed
//! to the packet's source: the node's SNAT address, or the client itself with preserve-source.
//! Only if the gateway translates that error into one about the client's own connection to the
//! VIP does the client lower its path MTU and the transfer complete; untranslated, the node's
//! kernel discards it (no socket of its own matches) and the client retransmits the same large
//! segment until the read times out.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    manifests::{L4Config, TCP_PORT},
    netns::Netns,
    test_backend_bin,
    topology::{start_server, BACKEND_TCP_PORT, VIP, VIP6},
    Agent, Opts, Topology,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 21, 2);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x21, 0, 0, 0, 0, 2);
const NARROW_MTU: &str = "1280";

fn pmtu(tag: &str, ipv6: bool, nat: &str) -> Result<()> {
    let topo = Topology::new(tag, 1, Opts::no_backends().dual_stack())?;
    let b1 = &topo.backends[0];
    let server = Netns::new(&format!("{}s", topo.prefix))?;
    // b1 becomes a router: its link to the server is the narrow one (its side only).
    b1.ns.ip(&[
        "link",
        "add",
        "srv0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        server.name(),
    ])?;
    b1.ns.ip(&["link", "set", "srv0", "mtu", NARROW_MTU])?;
    server.ip(&["link", "set", "eth0", "mtu", NARROW_MTU])?;
    b1.ns
        .ip(&["addr", "add", "198.18.21.1/24", "dev", "srv0"])?;
    b1.ns.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:21::1/64",
        "dev",
        "srv0",
        "nodad",
    ])?;
    server.ip(&["addr", "add", &format!("{SERVER}/24"), "dev", "eth0"])?;
    server.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{SERVER6}/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    for ns in [&b1.ns, &server] {
        ns.ip(&["link", "set", "lo", "up"])?;
    }
    b1.ns.ip(&["link", "set", "srv0", "up"])?;
    server.ip(&["link", "set", "eth0", "up"])?;
    server.ip(&[
        "route",
        "add",
        "default",
        "via",
        "198.18.21.1",
        "advmss",
        "1460",
    ])?;
    server.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:21::1",
        "advmss",
        "1440",
    ])?;
    b1.ns
        .exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
    b1.ns
        .exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])?;
    topo.node.ip(&[
        "route",
        "add",
        "198.18.21.0/24",
        "via",
        &b1.addr.to_string(),
    ])?;
    topo.node.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:21::/64",
        "via",
        &b1.addr6.to_string(),
    ])?;
    // Segments as the MTU makes them: no TSO super-packets from the endpoints.
    for ns in [&topo.client, &server] {
        ns.exec(&["ethtool", "-K", "eth0", "tso", "off", "gso", "off"])?;
    }
    let bin = test_backend_bin()?;
    let _srv = start_server(
        &server,
        bin.to_str().context("non-UTF-8 path")?,
        "s1",
        BACKEND_TCP_PORT,
        None,
    )?;

    let mut cfg = L4Config::for_topology(&topo).nat(nat);
    let addr: IpAddr = if ipv6 { SERVER6.into() } else { SERVER.into() };
    cfg.endpoints = vec![(addr, "v1".into())];
    let agent = Agent::start(&topo, &cfg.files())?;

    let vip: IpAddr = if ipv6 { VIP6.into() } else { VIP.into() };
    let mut s = topo
        .client_api()
        .open_stream(SocketAddr::new(vip, TCP_PORT))?;
    ensure!(s.greeting.name == "s1", "greeting {:?}", s.greeting);
    s.stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let fam = if ipv6 { "-6" } else { "-4" };
    s.echo(&data).with_context(|| {
        format!(
            "256 KiB echo through a {NARROW_MTU}-byte hop ({nat}, {}): verdicts {}; client route {:?}; \
             client ICMP/TCP counters {:?}",
            if ipv6 { "IPv6" } else { "IPv4" },
            agent.stats().map(|s| s["verdicts"].to_string()).unwrap_or_default(),
            topo.client.ip(&[fam, "route", "get", &vip.to_string()]),
            topo.client.exec(&["nstat", "-az", "Icmp*InDestUnreachs", "Icmp6InPktTooBigs", "IcmpInErrors", "Icmp6InErrors", "IcmpInCsumErrors", "Icmp6InCsumErrors", "TcpRetransSegs"]),
        )
    })?;
    let took = started.elapsed();
    ensure!(
        agent.verdict_packets("fwd_icmp_error")? > 0,
        "the echo passed without any translated ICMP error: was the narrow hop in the path?"
    );
    // The client learned the narrow hop for the VIP.
    let route = topo.client.ip(&[fam, "route", "get", &vip.to_string()])?;
    ensure!(
        route.contains(&format!("mtu {NARROW_MTU}")),
        "the client has no path MTU of {NARROW_MTU} for the VIP: {route}"
    );
    eprintln!(
        "pmtu {nat} ipv6={ipv6}: 256 KiB echoed in {took:?}; client: {}",
        route.trim()
    );
    Ok(())
}

#[test]
fn pmtu_discovery_ipv4_snat() -> Result<()> {
    pmtu("p4", false, "snat")
}

#[test]
fn pmtu_discovery_ipv4_preserve_source() -> Result<()> {
    pmtu("p5", false, "preserve-source")
}

#[test]
fn pmtu_discovery_ipv6_snat() -> Result<()> {
    pmtu("p6", true, "snat")
}

#[test]
fn pmtu_discovery_ipv6_preserve_source() -> Result<()> {
    pmtu("p7", true, "preserve-source")
}
