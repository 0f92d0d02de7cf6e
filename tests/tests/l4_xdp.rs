//! End-to-end tests of the L4 XDP path: real packets from a client namespace through veths into
//! the node, where IPv4 forwarding is off, so only the gateway's XDP program can carry them to
//! the backends and back.
//!
//! Each test builds its own topology (unique names), so they run in parallel. They need root and
//! fail (not skip) without it. Everything is removed on drop, also on failure.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    agent::gateway_check,
    client::{Client, Greeting},
    manifests::{self, L4Config, TCP_PORT, UDP_PORT},
    test_backend_bin,
    topology::{start_server, CLIENT_ADDR, CLIENT_ADDR6, VIP, VIP6},
    wait_until, Agent, Opts, Topology,
};

#[path = "l4_xdp/offload.rs"]
mod offload;

/// How long a reload may take to show up in /config_dump (the agent polls every 200 ms).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.into(), port)
}

fn count_by_name(hits: &[Greeting]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for h in hits {
        *m.entry(h.name.clone()).or_insert(0) += 1;
    }
    m
}

fn backend_packets(agent: &Agent, addr: &str) -> Result<u64> {
    let st = agent.stats()?;
    st["backends"][addr]["packets"]
        .as_u64()
        .with_context(|| format!("no backend {addr} in /stats: {st}"))
}

/// `n` UDP requests to `to` (payloads `{tag} {i}`), each answered by b1 or b2 with its name and
/// the payload; then XDP has counted at least `n` packets for the service (`to` as the stats
/// key names it).
fn udp_round_trips(
    client: &Client,
    agent: &Agent,
    to: SocketAddr,
    tag: &str,
    n: u64,
) -> Result<()> {
    for i in 0..n {
        let payload = format!("{tag} {i}");
        let reply = client.udp_request(to, payload.as_bytes())?;
        let reply = String::from_utf8_lossy(&reply);
        let (name, echoed) = reply
            .split_once(':')
            .with_context(|| format!("bad reply {reply:?}"))?;
        ensure!(
            ["b1", "b2"].contains(&name) && echoed == payload,
            "bad reply {reply:?} to {payload:?}"
        );
    }
    let st = agent.stats()?;
    let svc = format!("{to}/udp");
    ensure!(
        st["services"][&svc]["packets"].as_u64().unwrap_or(0) >= n,
        "XDP counted no UDP packets for {svc}: {st}"
    );
    Ok(())
}

/// (a) Weighted routes: 80/20 over two subsets.
#[test]
fn weights() -> Result<()> {
    let topo = Topology::new("wt", 2, Opts::default())?;
    let cfg = L4Config::for_topology(&topo).weighted(&[("v1", 80), ("v2", 20)]);
    let agent = Agent::start(&topo, &cfg.files())?;

    const N: usize = 400;
    let hits = topo.client_api().tcp_hits(vip(TCP_PORT), N)?;
    let counts = count_by_name(&hits);
    let b1 = *counts.get("b1").unwrap_or(&0);
    let b2 = *counts.get("b2").unwrap_or(&0);
    ensure!(
        b1 + b2 == N,
        "connections reached unexpected backends: {counts:?}"
    );
    // Tolerance: each connection has a new source port, so the 5-tuple hash picks a uniformly
    // random slot of the 4099-slot Maglev ring; the ring holds each backend within ~1 point of
    // its weight, and 400 draws at p = 0.8 have a standard deviation of 2 points, so +-8 points is
    // about 4 sigma: a failure means a wrong ring or hash, not bad luck.
    let share = 100.0 * b1 as f64 / N as f64;
    eprintln!("weights 80/20 over {N} connections: {counts:?} (b1 {share:.1}%)");
    ensure!(
        (72.0..=88.0).contains(&share),
        "b1 got {share:.1}% of {N} connections (want 80 +- 8): {counts:?}"
    );

    // The XDP program, not the kernel, carried them: its per-backend counters saw both.
    ensure!(
        backend_packets(&agent, "198.18.11.2:9000")? > 0,
        "no XDP packets counted for b1"
    );
    ensure!(
        backend_packets(&agent, "198.18.12.2:9000")? > 0,
        "no XDP packets counted for b2"
    );
    ensure!(
        agent.verdict_packets("fwd_new")? >= N as u64,
        "fewer fwd_new verdicts than connections"
    );
    Ok(())
}

/// (b) A route to subset v2 only sends every connection to the v2-labelled backend.
#[test]
fn subsets() -> Result<()> {
    let topo = Topology::new("sb", 2, Opts::default())?;
    let cfg = L4Config::for_topology(&topo).weighted(&[("v2", 100)]);
    let _agent = Agent::start(&topo, &cfg.files())?;

    let hits = topo.client_api().tcp_hits(vip(TCP_PORT), 60)?;
    let counts = count_by_name(&hits);
    ensure!(
        counts.len() == 1 && counts.get("b2") == Some(&60),
        "want all 60 on b2 (v2): {counts:?}"
    );
    Ok(())
}

/// (c) Removing another backend does not disturb an established flow; new flows avoid the
/// removed backend.
#[test]
fn flow_stickiness() -> Result<()> {
    let topo = Topology::new("st", 3, Opts::default())?;
    let cfg = L4Config::for_topology(&topo);
    let agent = Agent::start(&topo, &cfg.files())?;
    let client = topo.client_api();

    let mut stream = client.open_stream(vip(TCP_PORT))?;
    let x = stream.greeting.name.clone();
    stream.echo(b"before reload\n")?;
    let removed = topo
        .backends
        .iter()
        .find(|b| b.name != x)
        .context("need another backend")?;
    let g0 = agent.generation()?;
    agent.write_config(&[(
        manifests::SERVICE_ENTRY_FILE,
        cfg.clone().without_endpoint(removed.addr).service_entry(),
    )])?;
    let g1 = agent.wait_generation_above(g0, RELOAD_TIMEOUT)?;
    let dump = agent.config_dump()?;
    ensure!(
        dump["rejected"].as_array().is_some_and(|r| r.is_empty()),
        "reload rejected: {}",
        dump["rejected"]
    );

    for i in 0..50 {
        stream
            .echo(format!("after reload {i}\n").as_bytes())
            .with_context(|| format!("stream to {x} after generation {g1}"))?;
    }
    let hits = client.tcp_hits(vip(TCP_PORT), 120)?;
    let counts = count_by_name(&hits);
    ensure!(
        !counts.contains_key(&removed.name),
        "new connections reached removed backend {}: {counts:?}",
        removed.name
    );
    ensure!(
        counts.len() == 2,
        "want both remaining backends used: {counts:?}"
    );
    stream.echo(b"still there\n")?;
    Ok(())
}

/// (d) Default SNAT: backends with no route to the client still answer, and see the node's
/// address on their link as the source.
#[test]
fn snat() -> Result<()> {
    let topo = Topology::new("sn", 2, Opts::no_backend_routes())?;
    let cfg = L4Config::for_topology(&topo);
    let agent = Agent::start(&topo, &cfg.files())?;
    // Default veths (TX checksum offload on): the agent picks generic XDP on each, says why,
    // and the traffic below proves that mode forwards them.
    let dump = agent.config_dump()?;
    let ifs = dump["xdp_interfaces"]
        .as_array()
        .context("xdp_interfaces")?;
    ensure!(ifs.len() == 3, "one entry per interface: {ifs:?}");
    for i in ifs {
        ensure!(
            i["driver"] == "veth" && i["mode"] == "generic",
            "veth not in generic mode: {i}"
        );
        ensure!(
            i["reason"].as_str().is_some_and(|r| r.contains("checksum")),
            "no reason given: {i}"
        );
    }
    ensure!(
        agent.log().contains("generic mode (driver \"veth\""),
        "the chosen mode is not logged:\n{}",
        agent.log()
    );

    let hits = topo.client_api().tcp_hits(vip(TCP_PORT), 40)?;
    for h in &hits {
        let want: IpAddr = topo.backend(&h.name).node_addr.into();
        ensure!(
            h.peer == want,
            "backend {} saw source {}, want the node's {want}",
            h.name,
            h.peer
        );
    }
    ensure!(
        count_by_name(&hits).len() == 2,
        "want both backends used: {:?}",
        count_by_name(&hits)
    );
    Ok(())
}

/// (e) preserve-source (Gateway annotation): backends see the client's own address.
#[test]
fn preserve_source() -> Result<()> {
    let topo = Topology::new("ps", 2, Opts::default())?;
    let cfg = L4Config::for_topology(&topo).nat("preserve-source");
    let _agent = Agent::start(&topo, &cfg.files())?;

    let hits = topo.client_api().tcp_hits(vip(TCP_PORT), 20)?;
    for h in &hits {
        ensure!(
            h.peer == IpAddr::from(CLIENT_ADDR),
            "backend {} saw source {}, want client {CLIENT_ADDR}",
            h.name,
            h.peer
        );
    }
    // Backends route to the client through the node here, yet the node's kernel still forwards
    // nothing (the agent enables forwarding on `lo` for its FIB lookups): only the VIP works.
    let direct = SocketAddr::new(topo.backend("b1").addr.into(), 9000);
    let r = topo.client_api().tcp_hit(direct);
    ensure!(
        r.is_err(),
        "client reached {direct} directly: the node's kernel forwards ({r:?})"
    );
    Ok(())
}

/// (f) The data path outlives the agent: a stream keeps echoing while the agent is stopped
/// (pins kept) and after a new agent adopts the pinned state. The agent runs under
/// `ip netns exec`, whose private mount namespace has no bpffs: the pins must land in the host's
/// (visible from this test's mount namespace) to survive.
#[test]
fn restart() -> Result<()> {
    restart_on("rs", false)
}

/// The same over IPv6: the IPv6 maps are pinned and adopted like the IPv4 ones.
#[test]
fn ipv6_restart() -> Result<()> {
    restart_on("6r", true)
}

fn restart_on(tag: &str, ipv6: bool) -> Result<()> {
    let opts = if ipv6 {
        Opts::default().dual_stack()
    } else {
        Opts::default()
    };
    let topo = Topology::new(tag, 2, opts)?;
    let mut cfg = L4Config::for_topology(&topo);
    if ipv6 {
        cfg = cfg.dual_stack(&topo);
    }
    let to = if ipv6 {
        SocketAddr::new(VIP6.into(), TCP_PORT)
    } else {
        vip(TCP_PORT)
    };
    let mut agent = Agent::start(&topo, &cfg.files())?;

    let mut stream = topo.client_api().open_stream(to)?;
    let echoed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Streams a counter, checking each echo byte for byte; any loss or reset ends it with an error.
    let pump = {
        let (echoed, stop) = (echoed.clone(), stop.clone());
        thread::spawn(move || -> Result<u64> {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                stream
                    .echo(format!("{i:012}\n").as_bytes())
                    .with_context(|| format!("echo #{i}"))?;
                i += 1;
                echoed.store(i, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
            Ok(i)
        })
    };
    let progress = |what: &str| -> Result<()> {
        let before = echoed.load(Ordering::Relaxed);
        wait_until(Duration::from_secs(5), what, || {
            Ok(echoed.load(Ordering::Relaxed) > before + 10 || pump.is_finished())
        })?;
        ensure!(!pump.is_finished(), "stream ended while {what}");
        Ok(())
    };

    progress("streaming before the stop")?;
    ensure!(
        agent.log().contains("pinning in the host's"),
        "the agent did not find the host's bpffs:\n{}",
        agent.log()
    );
    let st = agent.stop()?;
    ensure!(st.success(), "agent exited with {st} on SIGTERM");
    ensure!(
        agent.pin_root.exists(),
        "pins at {} gone after SIGTERM",
        agent.pin_root.display()
    );
    thread::sleep(Duration::from_secs(1));
    progress("streaming with the agent down")?;
    agent.restart()?;
    progress("streaming after the restart")?;
    stop.store(true, Ordering::Relaxed);
    let n = pump.join().expect("pump thread panicked")?;
    ensure!(n > 100, "only {n} echoes");

    let hits = topo.client_api().tcp_hits(to, 20)?;
    ensure!(hits.len() == 20, "new connections after restart");
    Ok(())
}

/// (g) Traffic to a port the gateway does not own passes to the node's own stack untouched.
#[test]
fn untouched_port() -> Result<()> {
    let topo = Topology::new("ut", 1, Opts::default())?;
    let cfg = L4Config::for_topology(&topo);
    let agent = Agent::start(&topo, &cfg.files())?;
    let bin = test_backend_bin()?;
    let _local = start_server(
        &topo.node,
        bin.to_str().context("path")?,
        "node",
        8080,
        None,
    )?;

    let before = agent.verdict_packets("pass_not_ours")?;
    let hit = topo.client_api().tcp_hit(vip(8080))?;
    ensure!(
        hit.name == "node" && hit.peer == IpAddr::from(CLIENT_ADDR),
        "unexpected answer {hit:?}"
    );
    let after = agent.verdict_packets("pass_not_ours")?;
    ensure!(
        after > before,
        "pass_not_ours did not increase ({before} -> {after})"
    );
    Ok(())
}

/// (h) UDP request/response through the Gateway's UDP port.
#[test]
fn udp() -> Result<()> {
    let topo = Topology::new("ud", 2, Opts::default())?;
    let cfg = L4Config::for_topology(&topo);
    let agent = Agent::start(&topo, &cfg.files())?;
    let client = topo.client_api();
    udp_round_trips(&client, &agent, vip(UDP_PORT), "ping", 10)
}

/// (i) Invalid manifests: `gateway check` names file, resource and field; the running agent
/// rejects the new config and keeps serving the last good one.
#[test]
fn invalid_manifests() -> Result<()> {
    let topo = Topology::new("iv", 1, Opts::default())?;
    let cfg = L4Config::for_topology(&topo);
    let agent = Agent::start(&topo, &cfg.files())?;

    let bad_weight = cfg.clone().weighted(&[("v1", -5)]);
    let bad_port = L4Config {
        gateway_tcp_port: 70000,
        ..cfg.clone()
    };
    let cases = [
        (
            manifests::VIRTUAL_SERVICE_FILE,
            bad_weight.virtual_service(),
            "VirtualService default/echo",
            ["spec.tcp", "weight"],
        ),
        (
            manifests::GATEWAY_FILE,
            bad_port.gateway(),
            "Gateway default/gw",
            ["spec.servers", "port"],
        ),
    ];
    for (file, yaml, resource, fields) in &cases {
        let dir = tempfile::tempdir()?;
        for (name, content) in cfg.files() {
            std::fs::write(
                dir.path().join(name),
                if name == *file { yaml } else { &content },
            )?;
        }
        let (ok, stdout, stderr) = gateway_check(dir.path())?;
        ensure!(
            !ok,
            "`gateway check` accepted an invalid {file}:\n{stdout}{stderr}"
        );
        ensure!(
            stdout.lines().any(|l| l.contains(file) && l.contains(resource) && fields.iter().all(|f| l.contains(f))),
            "`gateway check` printed no line naming {file}, {resource} and {fields:?}:\nstdout:\n{stdout}stderr:\n{stderr}"
        );
    }

    let g0 = agent.generation()?;
    agent.write_config(&[(
        manifests::VIRTUAL_SERVICE_FILE,
        bad_weight.virtual_service(),
    )])?;
    wait_until(
        RELOAD_TIMEOUT,
        "/config_dump to list the rejected config",
        || {
            Ok(agent.config_dump()?["rejected"]
                .as_array()
                .is_some_and(|r| !r.is_empty()))
        },
    )?;
    let dump = agent.config_dump()?;
    ensure!(
        dump["generation"].as_u64() == Some(g0),
        "generation moved from {g0} to {} on a rejected config",
        dump["generation"]
    );
    let hits = topo.client_api().tcp_hits(vip(TCP_PORT), 10)?;
    ensure!(
        hits.iter().all(|h| h.name == "b1"),
        "old config not served: {hits:?}"
    );
    Ok(())
}

/// The topology itself, without an agent: the client reaches the node, the node reaches the
/// backends, but the client cannot reach a backend (no kernel forwarding on the node), so the
/// tests above prove the XDP path. Also checks that everything is gone after drop.
#[test]
fn topology_needs_xdp() -> Result<()> {
    let topo = Topology::new("tp", 1, Opts::default())?;
    let b1 = SocketAddr::new(topo.backend("b1").addr.into(), 9000);
    let from_node = gateway_tests::netns::run_in_path(topo.node.path(), move || {
        gateway_tests::client::tcp_hit_here(b1)
    })?;
    ensure!(from_node.name == "b1", "node -> b1: {from_node:?}");
    let direct = topo.client_api().tcp_hit(b1);
    ensure!(
        direct.is_err(),
        "client reached {b1} without XDP: the node forwards in the kernel ({direct:?})"
    );

    let names: Vec<String> = [&topo.client, &topo.node, &topo.backend("b1").ns]
        .iter()
        .map(|n| n.name().to_string())
        .collect();
    drop(topo);
    let left = gateway_tests::proc::run("ip", &["netns", "list"])?;
    for n in names {
        ensure!(
            !left
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str())),
            "netns {n} left behind"
        );
    }
    Ok(())
}

/// IPv6, SNAT, dual stack: one Gateway and one ServiceEntry with both families' endpoints.
/// Backends have no route beyond their own links (neither family), so every answer proves the
/// rewrite to the node's address on the backend's link; IPv6 forwarding is off on the node.
/// Each VIP's connections reach only endpoints of its own family.
#[test]
fn ipv6_snat_dual_stack() -> Result<()> {
    let topo = Topology::new("6s", 2, Opts::no_backend_routes().dual_stack())?;
    let cfg = L4Config::for_topology(&topo).dual_stack(&topo);
    let agent = Agent::start(&topo, &cfg.files())?;
    let client = topo.client_api();

    let hits6 = client.tcp_hits(SocketAddr::new(VIP6.into(), TCP_PORT), 40)?;
    for h in &hits6 {
        let want: IpAddr = topo.backend(&h.name).node_addr6.into();
        ensure!(
            h.peer == want,
            "backend {} saw source {} over IPv6, want the node's {want}",
            h.name,
            h.peer
        );
    }
    ensure!(
        count_by_name(&hits6).len() == 2,
        "want both backends used over IPv6: {:?}",
        count_by_name(&hits6)
    );
    // The same port over IPv4 at the same time: IPv4 endpoints, IPv4 SNAT.
    let hits4 = client.tcp_hits(vip(TCP_PORT), 20)?;
    for h in &hits4 {
        let want: IpAddr = topo.backend(&h.name).node_addr.into();
        ensure!(h.peer == want, "IPv4 hit {h:?}: want source {want}");
    }
    // A long-lived IPv6 stream echoes both ways (established and reply entries).
    let mut s = client.open_stream(SocketAddr::new(VIP6.into(), TCP_PORT))?;
    for i in 0..20 {
        s.echo(format!("line {i}\n").as_bytes())?;
    }

    let st = agent.stats()?;
    let svc = format!("[{VIP6}]:{TCP_PORT}/tcp");
    ensure!(
        st["services"][&svc]["packets"].as_u64().unwrap_or(0) > 40,
        "XDP counted too few packets for {svc}: {st}"
    );
    for b in &topo.backends {
        let k = format!("[{}]:9000", b.addr6);
        ensure!(
            st["backends"][&k]["packets"].as_u64().unwrap_or(0) > 0,
            "no XDP packets counted for {k}: {st}"
        );
    }
    // Nothing reached the kernel's forwarding path: the node has it off for both families.
    let fwd = topo
        .node
        .exec(&["sysctl", "-n", "net.ipv6.conf.all.forwarding"])?;
    ensure!(fwd.trim() == "0", "IPv6 forwarding on in the node: {fwd}");

    // UDP over IPv6 too.
    udp_round_trips(
        &client,
        &agent,
        SocketAddr::new(VIP6.into(), UDP_PORT),
        "ping6",
        5,
    )
}

/// IPv6, preserve-source: backends see the client's own IPv6 address and route their replies
/// through the node, whose kernel forwards nothing (the backend is not reachable directly).
#[test]
fn ipv6_preserve_source() -> Result<()> {
    let topo = Topology::new("6p", 2, Opts::default().dual_stack())?;
    let cfg = L4Config::for_topology(&topo)
        .dual_stack(&topo)
        .nat("preserve-source");
    let agent = Agent::start(&topo, &cfg.files())?;
    let client = topo.client_api();

    let hits = client.tcp_hits(SocketAddr::new(VIP6.into(), TCP_PORT), 20)?;
    for h in &hits {
        ensure!(
            h.peer == IpAddr::from(CLIENT_ADDR6),
            "backend {} saw source {}, want client {CLIENT_ADDR6}",
            h.name,
            h.peer
        );
    }
    for i in 0..5 {
        let payload = format!("ps6 {i}");
        let reply =
            client.udp_request(SocketAddr::new(VIP6.into(), UDP_PORT), payload.as_bytes())?;
        ensure!(
            String::from_utf8_lossy(&reply).ends_with(&payload),
            "bad UDP reply {reply:?}"
        );
    }
    // The XDP program carried them (both directions count on the service).
    let st = agent.stats()?;
    let svc = format!("[{VIP6}]:{TCP_PORT}/tcp");
    ensure!(
        st["services"][&svc]["packets"].as_u64().unwrap_or(0) > 40,
        "XDP counted too few packets for {svc}: {st}"
    );
    let direct = SocketAddr::new(topo.backend("b1").addr6.into(), 9000);
    let r = client.tcp_hit(direct);
    ensure!(
        r.is_err(),
        "client reached {direct} directly: the node's kernel forwards IPv6 ({r:?})"
    );
    Ok(())
}
