//! The XDP path's connection tables through the real binary: closed flows' entries are deleted
//! by the agent's garbage collector within seconds (counted on the scrape), Istio's TCP
//! connection series count XDP-served connections, a SNAT pool gives one backend more than
//! one source address, and `gateway dump bpf` lists the open flows and the pool's ports in use.
//! Needs root; fails (does not skip) without it.

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

    // Open flows as `gateway dump bpf` lists them: each with its client, VIP, backend, the
    // pool source the backend saw, and state; the pool's ports in use per address.
    const OPEN: usize = 3;
    let vip = SocketAddr::new(VIP.into(), TCP_PORT);
    let mut streams = Vec::new();
    for _ in 0..OPEN {
        let mut s = topo.client_api().open_stream(vip)?;
        // A packet after the handshake: the flow is confirmed (main table), established.
        s.echo(b"ping")?;
        streams.push(s);
    }
    let out = agent.cli(&["dump", "bpf", "-o", "json", "--limit", "2"])?;
    ensure!(out.status.success(), "gateway dump bpf: {out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let entries: u64 = j["xdp_conntrack_entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["family"] == "ipv4" && e["table"] == "main" && e["state"] == "established")
        .filter_map(|e| e["entries"].as_str()?.parse::<u64>().ok())
        .sum();
    ensure!(
        entries == 2 * OPEN as u64,
        "{OPEN} open flows: want {} established main-table entries: {j:#}",
        2 * OPEN
    );
    ensure!(
        j["xdp_conntrack_flows_total"] == OPEN as u64
            && j["xdp_conntrack_flows_left_out"] == (OPEN - 2) as u64
            && j["xdp_conntrack_flows"].as_array().map(Vec::len) == Some(2),
        "--limit 2 of {OPEN} flows: {j:#}"
    );
    let text = agent.cli(&["dump", "bpf"])?;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    for s in &streams {
        let client = s.stream.local_addr()?.to_string();
        let row = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(client.as_str()))
            .with_context(|| format!("no flow of client {client} in:\n{text}"))?;
        let cells: Vec<&str> = row.split_whitespace().collect();
        let snat_ip = cells[4].rsplit_once(':').map(|(a, _)| a).unwrap_or("");
        ensure!(
            cells[0] == "TCP"
                && cells[2] == vip.to_string()
                && cells[3].starts_with(&b.addr.to_string())
                && snat_ip == s.greeting.peer.to_string()
                && cells[5] == "established"
                && cells[7] == "main",
            "flow of {client} (backend saw {}): {row}",
            s.greeting.peer
        );
    }
    let used: u64 = pool
        .iter()
        .map(|a| {
            let row = text
                .lines()
                .find(|l| {
                    l.split_whitespace()
                        .take(3)
                        .eq([b.node_iface.as_str(), a, "pool"])
                })
                .with_context(|| format!("no SNAT row for pool address {a}:\n{text}"))?;
            let cells: Vec<&str> = row.split_whitespace().collect();
            ensure!(cells[4].ends_with("/4536"), "default range: {row}");
            Ok(cells[3].parse::<u64>()?)
        })
        .sum::<Result<u64>>()?;
    ensure!(
        used == OPEN as u64,
        "pool flows {used}, want {OPEN}:\n{text}"
    );

    // The same fill on the scrape, as of the collector's next pass (every second here).
    let iface = format!("interface=\"{}\"", b.node_iface);
    let on_scrape = wait_until(Duration::from_secs(5), "SNAT fill scraped", || {
        last = scrape(&agent)?;
        Ok(sample(&last, "gateway_snat_flows", &[&iface, "pool=\"true\""]) == OPEN as f64)
    });
    let snat_lines = || {
        last.lines()
            .filter(|l| l.starts_with("gateway_snat"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    ensure!(
        on_scrape.is_ok(),
        "{on_scrape:?}: want {OPEN} pool flows in gateway_snat_flows:\n{}",
        snat_lines()
    );
    for a in &pool {
        let addr = format!("address=\"{a}\"");
        let cap = sample(&last, "gateway_snat_port_capacity", &[&iface, &addr]);
        ensure!(cap == 4536.0, "capacity of {a}: {cap}:\n{}", snat_lines());
    }
    let ports = sample(
        &last,
        "gateway_snat_ports_in_use",
        &[&iface, "pool=\"true\""],
    );
    let busiest = sample(&last, "gateway_snat_busiest_backend_flows", &[&iface]);
    ensure!(
        ports == used as f64 && busiest == used as f64,
        "one backend, {OPEN} flows: ports in use {ports}, busiest backend {busiest}:\n{}",
        snat_lines()
    );
    // Through a Prometheus text parser: gauges, with their labels.
    let scrape = prometheus_parse::Scrape::parse(last.lines().map(|l| Ok(l.to_string())))?;
    for name in [
        "gateway_snat_flows",
        "gateway_snat_ports_in_use",
        "gateway_snat_port_capacity",
        "gateway_snat_busiest_backend_flows",
        "gateway_conntrack_capacity_entries",
    ] {
        let samples: Vec<_> = scrape.samples.iter().filter(|s| s.metric == name).collect();
        let labels: &[&str] = if name.starts_with("gateway_snat") {
            &["interface", "address", "pool"]
        } else {
            &["family", "table"]
        };
        ensure!(
            !samples.is_empty()
                && samples.iter().all(|s| {
                    matches!(s.value, prometheus_parse::Value::Gauge(_))
                        && labels.iter().all(|l| s.labels.get(l).is_some())
                }),
            "{name}: want gauges labelled {labels:?}: {samples:?}"
        );
    }
    let cap = sample(
        &last,
        "gateway_conntrack_capacity_entries",
        &["family=\"ipv4\"", "table=\"main\""],
    );
    ensure!(cap == 262144.0, "gateway_conntrack_capacity_entries: {cap}");
    drop(streams);
    Ok(())
}
