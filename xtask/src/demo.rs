//! `cargo xtask demo`: the gateway on its embedded default. Builds a namespace topology (client,
//! node with kernel forwarding off, three backends running real TCP/UDP echo servers), runs the
//! real agent in the node with examples/demo, sends traffic through it, prints what happened and
//! keeps running until Ctrl-C; everything it created is removed on the way out.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use gateway_tests::{http::HttpClient, Agent, Opts, Topology};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

pub fn run() -> Result<()> {
    crate::require_root()?;
    crate::cargo(&["build", "--workspace", "--bins"])?;

    let manifests = read_manifests("examples/demo")?;
    // Set the handler before anything is created, so Ctrl-C always reaches the cleanup below.
    let (stop_tx, stop_rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    println!("== building the topology");
    let topo = Topology::new(
        "dm",
        3,
        Opts {
            http_backends: true,
            ..Opts::default()
        },
    )?;
    println!(
        "   client {} (ns {})  ->  node {VIP} (ns {}, net.ipv4.ip_forward=0)",
        Ipv4Addr::new(198, 18, 0, 2),
        topo.client.name(),
        topo.node.name()
    );
    for b in &topo.backends {
        println!(
            "   backend {} {} (ns {}): TCP 9000 and UDP 9001 echo, HTTP 8000",
            b.name,
            b.addr,
            b.ns.name()
        );
    }

    println!("== starting `gateway run` in the node with examples/demo");
    let files: Vec<(&str, String)> = manifests
        .iter()
        .map(|(n, c)| (n.as_str(), c.clone()))
        .collect();
    let agent = Agent::start_with(&topo, &files, &["--vip", "198.18.0.1"])?;
    let dump = agent.config_dump()?;
    println!(
        "   L4 path: {} ({})",
        dump["l4_path"].as_str().unwrap_or("?"),
        dump["l4_path_reason"].as_str().unwrap_or("?")
    );
    println!(
        "   admin: {} in the node namespace; log: {}",
        agent.admin,
        agent.log_path().display()
    );
    for s in dump["plan"]["l4"].as_array().into_iter().flatten() {
        println!(
            "   L4 {}:{}/{} <- {}",
            s["vip"].as_str().unwrap_or(""),
            s["port"],
            s["proto"].as_str().unwrap_or(""),
            s["origin"].as_str().unwrap_or("")
        );
    }

    let client = topo.client_api();
    println!("== traffic from the client through the XDP program");
    for (port, what) in [
        (31400u16, "80% subset v1 (b1, b2) / 20% subset v2 (b3)"),
        (31401, "Kubernetes Service tcp-echo (b1, b2)"),
    ] {
        let hits = client.tcp_hits(SocketAddr::from((VIP, port)), 50)?;
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for h in &hits {
            *by.entry(h.name.clone()).or_default() += 1;
        }
        let seen: Vec<String> = hits.iter().take(1).map(|h| h.peer.to_string()).collect();
        println!(
            "   TCP {VIP}:{port} [{what}], 50 connections: {by:?} (backends saw source {})",
            seen.join("")
        );
    }
    let mut udp: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..10 {
        let r = client.udp_request(SocketAddr::from((VIP, 5353)), format!("ping{i}").as_bytes())?;
        let r = String::from_utf8_lossy(&r).to_string();
        *udp.entry(r.split(':').next().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    println!("   UDP {VIP}:5353, 10 requests: {udp:?}");
    println!("== HTTP through the agent's L7 path (XDP hands port 8080 to the local stack)");
    let http = HttpClient::new(topo.client.name());
    let url = "http://198.18.0.1:8080";
    let split = http.many(&format!("{url}/"), 50, &[])?;
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for (code, b) in &split {
        *by.entry(format!("{code} {b}")).or_default() += 1;
    }
    println!(
        "   GET /, 50 requests on one keep-alive connection (90% v1 / 10% v2, round robin): {by:?}"
    );
    let canary = http.get(&format!("{url}/"), &["x-canary: true"])?;
    println!(
        "   GET / with x-canary: true -> {} from {}",
        canary.status,
        canary.backend()
    );
    let v1 = http.curl(&["--http2-prior-knowledge", &format!("{url}/v1/hello")])?;
    println!(
        "   GET /v1/hello over h2c -> {} from {}, upstream saw `{}`",
        v1.status,
        v1.backend(),
        v1.upstream_request_line()
    );
    let teapot = http.get(&format!("{url}/teapot"), &[])?;
    println!(
        "   GET /teapot -> {} (direct response, server: {})",
        teapot.status,
        teapot.header("server").unwrap_or("")
    );

    println!("== data-path counters (/stats)");
    let st = agent.stats()?;
    for (k, v) in st["verdicts"].as_object().into_iter().flatten() {
        if v["packets"].as_u64().unwrap_or(0) > 0 {
            println!("   verdict {k:<18} {:>6} packets", v["packets"]);
        }
    }
    for (k, v) in st["backends"].as_object().into_iter().flatten() {
        println!(
            "   backend {k:<18} {:>6} packets {:>8} bytes",
            v["packets"], v["bytes"]
        );
    }

    println!("== running; try from another shell:");
    println!(
        "   ip netns exec {} nc 198.18.0.1 31400",
        topo.client.name()
    );
    println!(
        "   ip netns exec {} curl -s http://127.0.0.1:{}/metrics",
        topo.node.name(),
        agent.admin.port()
    );
    println!(
        "   ip netns exec {} curl -s http://198.18.0.1:15021/healthz/ready   # the status port, as a kubelet probes it",
        topo.client.name()
    );
    println!(
        "   ip netns exec {} curl -s http://127.0.0.1:{}/clusters",
        topo.node.name(),
        agent.admin.port()
    );
    println!(
        "   target/debug/gateway explain --config examples/demo 'GET http://web.example.com:8080/v1/x' -H 'x-canary: true'"
    );
    println!("   Ctrl-C stops the demo and removes the namespaces and pins.");
    let _ = stop_rx.recv();
    println!("\n== cleaning up");
    drop(agent);
    drop(topo);
    std::thread::sleep(Duration::from_millis(100));
    println!("   done");
    Ok(())
}

fn read_manifests(dir: &str) -> Result<Vec<(String, String)>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            out.push((name, std::fs::read_to_string(&p)?));
        }
    }
    out.sort();
    Ok(out)
}
