//! What the veths offload: checksums left to the device (CHECKSUM_PARTIAL) that must stay
//! valid through the rewrite, in generic and native mode, and GSO packets bigger than the MTU.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    manifests::{L4Config, TCP_PORT},
    topology::VIP,
    wait_until, Agent, Opts, Topology,
};

/// How long a reload may take to show up in /config_dump (the agent polls every 200 ms).
use super::vip;

/// Starts tcpdump on `eth0` of `ns` writing `file`; returns once it captures (the file has its
/// header: `-U` writes it, and each packet, at once).
fn capture(
    ns: &gateway_tests::netns::Netns,
    file: &std::path::Path,
    filter: &str,
) -> Result<gateway_tests::proc::ChildGuard> {
    let f = file.to_str().context("path")?;
    let child = ns.spawn(
        "tcpdump",
        &[
            "-i",
            "eth0",
            "-n",
            "--immediate-mode",
            "-U",
            "-w",
            f,
            filter,
        ],
        false,
    )?;
    wait_until(Duration::from_secs(10), "tcpdump to start", || {
        Ok(std::fs::metadata(file).is_ok_and(|m| m.len() >= 24))
    })?;
    Ok(child)
}

/// The IPv4 TCP packets of a pcap file (Ethernet link type), from their IP header on.
fn pcap_ip_packets(file: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    let d = std::fs::read(file)?;
    ensure!(
        d.len() >= 24 && d[0..4] == [0xd4, 0xc3, 0xb2, 0xa1],
        "not a pcap file"
    );
    let mut out = Vec::new();
    let mut o = 24;
    while o + 16 <= d.len() {
        let incl = u32::from_le_bytes(d[o + 8..o + 12].try_into()?) as usize;
        let (orig, rec) = (
            u32::from_le_bytes(d[o + 12..o + 16].try_into()?) as usize,
            &d[o + 16..(o + 16 + incl).min(d.len())],
        );
        ensure!(incl == orig, "truncated capture");
        if rec.len() > 34 && rec[12..14] == [0x08, 0x00] && rec[23] == 6 {
            out.push(rec[14..].to_vec());
        }
        o += 16 + incl;
    }
    Ok(out)
}

/// One's-complement sum of `data` (big-endian words) on top of `init`, folded.
fn ones_sum(data: &[u8], init: u32) -> u16 {
    let mut s = init;
    for c in data.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Whether a TCP packet (from its IP header) carries a valid checksum: a full one, or the
/// seed a CHECKSUM_PARTIAL skb carries (the pseudo-header sum of its own addresses and length),
/// which the last transmitting device completes. Returns (valid, is_seed).
fn tcp_checksum_state(ip: &[u8]) -> (bool, bool) {
    let tcp = &ip[20..];
    let pseudo = ones_sum(&ip[12..20], 6 + tcp.len() as u32);
    let field = u16::from_be_bytes([tcp[16], tcp[17]]);
    let full_ok = ones_sum(tcp, pseudo as u32) == 0xffff;
    let seed = field == pseudo;
    (full_ok || seed, seed && !full_ok)
}

/// (i) Veths with their default settings: clients and backends offload TCP checksums, so the
/// node receives CHECKSUM_PARTIAL packets. What reaches the backend and, the other way, the
/// client must carry a checksum that is valid for the rewritten header: a full one, or a seed
/// over the new addresses (a stale seed would be completed into a wrong checksum by any NIC on
/// the way). Captured on the receivers' own interfaces.
#[test]
fn offloaded_checksums_arrive_valid_after_the_rewrite() -> Result<()> {
    let topo = Topology::new("ck", 1, Opts::no_backend_routes())?;
    let cfg = L4Config::for_topology(&topo);
    let _agent = Agent::start(&topo, &cfg.files())?;
    let dir = tempfile::tempdir()?;
    let (at_backend, at_client) = (dir.path().join("b.pcap"), dir.path().join("c.pcap"));
    let b = topo.backend("b1");
    let cap_b = capture(&b.ns, &at_backend, "tcp port 9000")?;
    let cap_c = capture(&topo.client, &at_client, &format!("tcp port {TCP_PORT}"))?;
    let hits = topo.client_api().tcp_hits(vip(TCP_PORT), 5)?;
    ensure!(hits.len() == 5, "5 connections");
    // SIGINT: tcpdump writes what it holds and exits.
    for mut c in [cap_b, cap_c] {
        c.signal(libc::SIGINT)?;
        c.wait_timeout(Duration::from_secs(5))?;
    }

    let node = b.node_addr.octets();
    for (file, from, what) in [
        (&at_backend, node, "node -> backend"),
        (&at_client, VIP.octets(), "VIP -> client"),
    ] {
        let pkts: Vec<Vec<u8>> = pcap_ip_packets(file)?
            .into_iter()
            .filter(|p| p[12..16] == from)
            .collect();
        ensure!(
            pkts.len() >= 10,
            "{what}: only {} packets captured",
            pkts.len()
        );
        let mut seeds = 0;
        for p in &pkts {
            let (valid, seed) = tcp_checksum_state(p);
            ensure!(valid, "{what}: invalid TCP checksum in {p:02x?}");
            seeds += usize::from(seed);
        }
        // The senders offload (the veth default): the path under test was taken.
        ensure!(
            seeds > 0,
            "{what}: no partial checksum seen; is TX offload off?"
        );
    }
    Ok(())
}

/// (j) `--xdp-mode native` on default veths: the offloaded checksums cannot survive a native
/// redirect, so those packets are passed to the kernel and counted, never forwarded broken (the
/// node has no listener: the client is refused). A restart in auto mode replaces the pinned
/// native links with generic ones and the same traffic goes through.
#[test]
fn native_veth_passes_partial_checksums_and_auto_reattaches_generic() -> Result<()> {
    let topo = Topology::new("nv", 1, Opts::default())?;
    let cfg = L4Config::for_topology(&topo);
    let mut agent = Agent::start_with(&topo, &cfg.files(), &["--xdp-mode", "native"])?;
    let dump = agent.config_dump()?;
    for i in dump["xdp_interfaces"]
        .as_array()
        .context("xdp_interfaces")?
    {
        ensure!(i["mode"] == "native", "asked for native: {i}");
        ensure!(
            i["reason"]
                .as_str()
                .is_some_and(|r| r.contains("pass_csum_partial")),
            "the reason warns about partial checksums: {i}"
        );
    }
    let r = topo.client_api().tcp_hit(vip(TCP_PORT));
    ensure!(
        r.is_err(),
        "a native veth forwarded a partial checksum: {r:?}"
    );
    let passed = agent.verdict_packets("pass_csum_partial")?;
    ensure!(passed > 0, "pass_csum_partial not counted");
    ensure!(
        agent.verdict_packets("fwd_new")? == 0,
        "packets forwarded in native mode"
    );

    agent.set_extra_args(&[]);
    agent.restart()?;
    let dump = agent.config_dump()?;
    for i in dump["xdp_interfaces"]
        .as_array()
        .context("xdp_interfaces")?
    {
        ensure!(i["mode"] == "generic", "auto on a veth: {i}");
    }
    ensure!(
        agent.log().contains("re-attaching"),
        "the mode change is not logged:\n{}",
        agent.log()
    );
    let hits = topo.client_api().tcp_hits(vip(TCP_PORT), 5)?;
    ensure!(hits.len() == 5, "after the re-attach");
    Ok(())
}

/// (k) Bulk data on default veths: the client's and the backend's TSO hand the node GSO packets
/// of up to 64 KiB, which generic XDP sees whole and an XDP redirect would drop (over the MTU).
/// The program rewrites them and passes them to the kernel (`pass_oversize`), which forwards and
/// segments them: this test turns the node's forwarding on for that (as on any Kubernetes node);
/// the agent has set `accept_local` so the SNATed source is not dropped as a martian. Smaller
/// packets still take the XDP redirect.
#[test]
fn bulk_stream_with_gso_packets() -> Result<()> {
    let topo = Topology::new("bk", 1, Opts::default())?;
    topo.node
        .exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
    let cfg = L4Config::for_topology(&topo);
    let agent = Agent::start(&topo, &cfg.files())?;
    let mut s = topo.client_api().open_stream(vip(TCP_PORT))?;
    s.stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let data: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let started = std::time::Instant::now();
    s.echo(&data).context("1 MiB echo")?;
    let took = started.elapsed();
    // Lost GSO packets would show as retransmission time-outs (hundreds of ms each).
    ensure!(took < Duration::from_secs(2), "1 MiB echo took {took:?}");
    let oversize = agent.verdict_packets("pass_oversize")?;
    let fwd = agent.verdict_packets("fwd_established")?;
    ensure!(oversize > 0, "no GSO packet seen: is TSO off on the peers?");
    ensure!(fwd > 0, "nothing took the XDP redirect");
    Ok(())
}
