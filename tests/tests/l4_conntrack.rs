//! The XDP path's connection tables through the real binary: closed flows' entries are deleted
//! by the agent's garbage collector within seconds (counted on the scrape), Istio's TCP
//! connection series count XDP-served connections, and a SNAT pool gives one backend more than
//! one source address. Needs root; fails (does not skip) without it.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    manifests::{L4Config, TCP_PORT},
    topology::VIP,
    wait_until, Agent, Opts, Topology,
};

/// The sum of the samples of `name` whose labels contain every one of `having`.
fn sample(metrics: &str, name: &str, having: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter(|l| having.iter().all(|h| l.contains(h)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(agent: &Agent) -> Result<String> {
    let (code, m) = agent.get_at("127.0.0.1:15090".parse()?, "/stats/prometheus")?;
    ensure!(code == 200, "scrape: {code}");
    Ok(m)
}

#[test]
fn closed_flows_expire_and_a_snat_pool_spreads_sources() -> Result<()> {
    let topo = Topology::new("ct", 1, Opts::no_backend_routes())?;
    let b = topo.backend("b1");
    // Two more node addresses on the backend's link: the pool.
    let net = b.node_addr.octets();
    let pool: Vec<String> = [10u8, 11]
        .iter()
        .map(|h| format!("{}.{}.{}.{h}", net[0], net[1], net[2]))
        .collect();
    for a in &pool {
        topo.node
            .ip(&["addr", "add", &format!("{a}/24"), "dev", &b.node_iface])?;
    }
    let cfg = L4Config::for_topology(&topo);
    let pool_flag = format!("{}={}", b.node_iface, pool.join(","));
    let agent = Agent::start_with(
        &topo,
        &cfg.files(),
        &[
            "--ct-timeout-tcp-fin",
            "1s",
            "--ct-gc-interval",
            "1s",
            "--snat-pool",
            &pool_flag,
        ],
    )?;

    const N: usize = 40;
    let hits = topo
        .client_api()
        .tcp_hits(SocketAddr::new(VIP.into(), TCP_PORT), N)?;
    let peers: BTreeSet<String> = hits.iter().map(|h| h.peer.to_string()).collect();
    let want: BTreeSet<String> = pool.iter().cloned().collect();
    ensure!(
        peers == want,
        "the backend saw sources {peers:?}, want both pool addresses {want:?}"
    );

    // Every connection closed (FIN both ways): both entries deleted within the FIN timeout
    // plus a collection or two.
    let mut last = String::new();
    let gone = wait_until(Duration::from_secs(8), "closed flows collected", || {
        last = scrape(&agent)?;
        Ok(sample(
            &last,
            "gateway_conntrack_deleted_entries_total",
            &["family=\"ipv4\"", "reason=\"closed\""],
        ) >= (2 * N) as f64
            && sample(&last, "gateway_conntrack_entries", &["table=\"main\""]) == 0.0)
    });
    ensure!(
        gone.is_ok(),
        "{gone:?}: closed flows' entries not collected within 8 s:\n{}",
        last.lines()
            .filter(|l| l.contains("conntrack"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let opened = sample(
        &last,
        "istio_tcp_connections_opened_total",
        &[
            "reporter=\"source\"",
            "destination_service=\"echo.example.com\"",
        ],
    );
    let closed = sample(
        &last,
        "istio_tcp_connections_closed_total",
        &["destination_service=\"echo.example.com\""],
    );
    let received = sample(
        &last,
        "istio_tcp_received_bytes_total",
        &["destination_service=\"echo.example.com\""],
    );
    ensure!(
        opened == N as f64 && closed == N as f64 && received > 0.0,
        "istio_tcp_* for the XDP service: opened {opened}, closed {closed}, received {received}; \
         want {N}, {N}, > 0:\n{}",
        last.lines()
            .filter(|l| l.starts_with("istio_tcp"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let dump = agent.stats().context("/stats")?;
    ensure!(
        dump["conntrack"]["deleted"]["ipv4/closed"].as_u64() >= Some(2 * N as u64),
        "/stats has the collector's counts: {dump}"
    );
    Ok(())
}
