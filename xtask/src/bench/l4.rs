//! Part 2: L4 through network namespaces. One topology per peer (client, node, two backends
//! running `test-backend` on 9000 and `iperf3 -s` on b1:5201), the same VIP, ports and backends:
//!
//! - the gateway agent with XDP on every node interface, node forwarding off (snat and
//!   preserve-source);
//! - the kernel's IPVS (`ipvsadm`, NAT mode, round robin), node forwarding on;
//! - iptables DNAT (statistic random) + MASQUERADE, node forwarding on;
//! - HAProxy in TCP mode in the node namespace (a userspace proxy), node forwarding off.
//!
//! Short connections/s (connect, read the greeting, 5-byte echo, close) and iperf3 throughput,
//! medians of several runs; machine CPU from /proc/stat around each run.

use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use gateway_tests::{
    proc::{output_timeout, ChildGuard},
    topology::{Topology, VIP},
    Agent, Opts,
};

use super::{
    util::{self, check_interrupt, median},
    Ctx, Section,
};

pub const ECHO_PORT: u16 = 31400;
pub const IPERF_PORT: u16 = 5201;

pub struct Params {
    pub conns: usize,
    pub threads: usize,
    pub runs: usize,
    pub iperf_secs: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    XdpSnat,
    XdpPreserve,
    Ipvs,
    Iptables,
    Haproxy,
}

impl Peer {
    fn label(self) -> &'static str {
        match self {
            Peer::XdpSnat => "gateway XDP (snat)",
            Peer::XdpPreserve => "gateway XDP (preserve-source)",
            Peer::Ipvs => "IPVS (ipvsadm, NAT mode)",
            Peer::Iptables => "iptables DNAT + MASQUERADE",
            Peer::Haproxy => "HAProxy (mode tcp)",
        }
    }
}

#[derive(Default)]
struct Figures {
    conn_rate: Vec<f64>,
    conn_failed: usize,
    conn_cpu_us: Vec<f64>,
    gbps: Vec<f64>,
    gb_cpu_s: Vec<f64>,
    /// CPU of the peer's own process (HAProxy) per run, seconds.
    proc_cpu: Vec<f64>,
    note: String,
}

/// What a running peer holds; dropped (killed by PID) when the peer's measurement ends.
// One per measured peer: the Agent variant's size costs nothing.
#[allow(clippy::large_enum_variant)]
enum Running {
    Agent(Agent),
    Child(ChildGuard, #[allow(dead_code)] tempfile::TempDir),
    Kernel,
}

impl Running {
    fn pid(&self) -> Option<u32> {
        match self {
            Running::Child(c, _) => c.pid(),
            _ => None,
        }
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<(Section, Vec<String>)> {
    let p = if ctx.quick {
        Params {
            conns: 100,
            threads: 2,
            runs: 1,
            iperf_secs: 1,
        }
    } else {
        Params {
            conns: 1000,
            threads: 4,
            runs: 5,
            iperf_secs: 3,
        }
    };
    run_with(ctx, &p)
}

/// [`run`] with the given counts (part 2b runs it in a guest, with smaller ones).
pub fn run_with(ctx: &Ctx, p: &Params) -> anyhow::Result<(Section, Vec<String>)> {
    let iperf = util::ensure_tool("iperf3", "iperf3");
    let peers = [
        Peer::XdpSnat,
        Peer::XdpPreserve,
        Peer::Ipvs,
        Peer::Iptables,
        Peer::Haproxy,
    ];
    // Every peer is set up first and the runs are interleaved (run 1 of each peer, then run 2 ...),
    // so a noisy moment on this shared machine hits all peers alike instead of one.
    let mut setups: Vec<(Peer, Result<Setup, String>)> = Vec::new();
    for peer in peers {
        check_interrupt()?;
        eprintln!("bench:   L4 setting up {}", peer.label());
        let r = match &iperf {
            Ok(iperf) => setup(ctx, peer, iperf).map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("iperf3 missing: {e}")),
        };
        setups.push((peer, r));
    }
    let mut figures: Vec<Result<Figures, String>> = setups
        .iter()
        .map(|(_, s)| s.as_ref().map(|_| Figures::default()).map_err(Clone::clone))
        .collect();
    for run in 0..p.runs {
        eprintln!("bench:   L4 run {}/{}", run + 1, p.runs);
        // Each run starts with the next peer, so none is always measured first after set-up.
        let n = setups.len();
        for i in (0..n).map(|k| (k + run) % n) {
            check_interrupt()?;
            let (s, f) = (&setups[i].1, &mut figures[i]);
            if let (Ok(s), Ok(fig)) = (s, &mut *f) {
                let iperf = iperf.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                if let Err(e) = one_run(s, p, iperf, fig) {
                    *f = Err(format!("{e:#}"));
                }
            }
        }
    }
    let mut rows: Vec<(Peer, Result<Figures, String>)> = Vec::new();
    for ((peer, s), mut f) in setups.into_iter().zip(figures) {
        if let (Ok(s), Ok(fig)) = (&s, &mut f) {
            fig.note = verdict_note(s);
        }
        drop(s);
        rows.push((peer, f));
    }

    let mut body = String::new();
    let _ = writeln!(
        body,
        "Topology (`tests/src/topology.rs`): client 198.18.0.2 -- node (VIP 198.18.0.1) -- backends \
         198.18.11.2 and 198.18.12.2, each in its own network namespace, joined by veth pairs with their \
         default settings (checksum and segmentation offload on; the gateway attaches generic XDP \
         there and hands GSO packets to the kernel, which, with the node's forwarding off, drops \
         them: see docs/architecture.md). Service VIP:{ECHO_PORT} -> both backends' `test-backend` on 9000; \
         VIP:{IPERF_PORT} -> `iperf3 -s` on the first backend. A fresh topology per peer.\n\n\
         - **connections/s**: {} short connections per run from the client namespace, {} threads; each \
         connects, reads the backend's greeting line, echoes 5 bytes and closes. The client uses \
         ports 40000-42999 with `tcp_tw_reuse=1` for every peer.\n\
         - **throughput**: `ip netns exec <client> iperf3 -c 198.18.0.1 -p {IPERF_PORT} -t {} -J` \
         (received bits/s).\n\
         - **CPU**: /proc/stat busy time of the whole machine during the run (all namespaces share the \
         2 cores: client, node and backends together), per connection and per GB moved; for HAProxy \
         also its own process time.\n\
         - Medians of {} runs; all peers are set up at once and their runs interleaved (run 1 of each \
         peer, then run 2, ..., each run starting with the next peer), so noise from other work on the \
         machine spreads over all of them.\n",
        p.conns, p.threads, p.iperf_secs, p.runs
    );
    let _ = writeln!(
        body,
        "| path | node forwarding | connections/s | runs min-max | failed conns | machine CPU us/conn | throughput Gbit/s | machine CPU s/GB | peer process CPU s/run |"
    );
    let _ = writeln!(body, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (peer, r) in &rows {
        let fwd = match peer {
            Peer::Ipvs | Peer::Iptables => "on",
            _ => "off",
        };
        match r {
            Ok(f) => {
                let _ = writeln!(
                    body,
                    "| {} | {fwd} | {:.0} | {:.0}-{:.0} | {} | {:.0} | {:.2} | {:.2} | {} |",
                    peer.label(),
                    median(&f.conn_rate),
                    f.conn_rate.iter().cloned().fold(f64::INFINITY, f64::min),
                    f.conn_rate.iter().cloned().fold(0.0, f64::max),
                    f.conn_failed,
                    median(&f.conn_cpu_us),
                    median(&f.gbps),
                    median(&f.gb_cpu_s),
                    if f.proc_cpu.is_empty() {
                        "-".into()
                    } else {
                        format!("{:.2}", median(&f.proc_cpu))
                    }
                );
            }
            Err(e) => {
                let _ = writeln!(
                    body,
                    "| {} | {fwd} | **not available: {}** | | | | | | |",
                    peer.label(),
                    e.replace('|', "/").replace('\n', " ")
                );
            }
        }
    }
    for (peer, r) in &rows {
        if let Ok(f) = r {
            if !f.note.is_empty() {
                let _ = writeln!(body, "\n{}: {}", peer.label(), f.note);
            }
        }
    }

    // Ratios of the XDP path (snat, the default) against each peer.
    let mut headline = Vec::new();
    let ours = rows
        .iter()
        .find(|(p, _)| *p == Peer::XdpSnat)
        .and_then(|(_, r)| r.as_ref().ok());
    let _ = writeln!(
        body,
        "\nRatios, gateway XDP (snat) / peer (above 1.00: we are faster):\n"
    );
    let _ = writeln!(body, "| peer | connections/s ratio | throughput ratio | CPU per connection ratio (below 1: we use less) |");
    let _ = writeln!(body, "|---|---:|---:|---:|");
    for (peer, r) in &rows {
        if *peer == Peer::XdpSnat {
            continue;
        }
        let in_headline = *peer != Peer::XdpPreserve;
        match (ours, r) {
            (Some(o), Ok(f)) => {
                let cr = median(&o.conn_rate) / median(&f.conn_rate);
                let tr = median(&o.gbps) / median(&f.gbps);
                let cpu = median(&o.conn_cpu_us) / median(&f.conn_cpu_us);
                let _ = writeln!(body, "| {} | {cr:.2} | {tr:.2} | {cpu:.2} |", peer.label());
                if in_headline {
                    headline.push(format!(
                        "L4, gateway XDP (snat) vs {}: {cr:.2}x connections/s, {tr:.2}x throughput, {cpu:.2}x machine CPU per connection",
                        peer.label()
                    ));
                }
            }
            (None, _) => {
                let _ = writeln!(body, "| {} | ours not measured | | |", peer.label());
            }
            (_, Err(e)) => {
                let _ = writeln!(
                    body,
                    "| {} | peer not available: {} | | |",
                    peer.label(),
                    e.replace('|', "/").replace('\n', " ")
                );
                headline.push(format!(
                    "L4 vs {}: not available ({})",
                    peer.label(),
                    e.replace('\n', " ")
                ));
            }
        }
    }
    let mut losses = Vec::new();
    for (peer, r) in &rows {
        let (Some(o), Ok(f)) = (ours, r) else {
            continue;
        };
        if *peer == Peer::XdpSnat || *peer == Peer::XdpPreserve {
            continue;
        }
        if median(&o.gbps) < median(&f.gbps) {
            let why = if *peer == Peer::Haproxy {
                "HAProxy terminates both TCP connections on the node, so the node's stack receives \
                 GRO-merged segments of up to 64 KiB and sends GSO-sized ones: its per-packet costs are paid \
                 per 64 KiB, while the XDP program sees and redirects every wire-sized frame and the receiving \
                 veth builds an skb for each before GRO merges them again"
            } else {
                "on veth the kernel's forwarding path moves GRO-merged packets of up to 64 KiB, one routing \
                 and netfilter pass each, while the XDP program sees and redirects every wire-sized frame and \
                 the receiving veth builds an skb for each before GRO merges them again"
            };
            losses.push(format!(
                "**Throughput vs {}: we lose ({:.2} vs {:.2} Gbit/s).** The likely reason (not profiled): {why}. \
                 On a physical NIC XDP runs before any skb exists, which is where it pays off; these namespaces \
                 cannot show that.",
                peer.label(),
                median(&o.gbps),
                median(&f.gbps)
            ));
        }
        if median(&o.conn_rate) < median(&f.conn_rate) {
            losses.push(format!(
                "**Connections/s vs {}: we lose ({:.0} vs {:.0}/s).** A short connection here is mostly the TCP \
                 stacks of the client and the backend (they share the same 2 cores; see the machine CPU per \
                 connection), so the node's part is small and runs vary (min-max column). Per new flow the XDP \
                 program pays a Maglev pick, a SNAT port claim and two connection-table inserts (part 1).",
                peer.label(),
                median(&o.conn_rate),
                median(&f.conn_rate)
            ));
        }
    }
    if !losses.is_empty() {
        let _ = writeln!(body, "\n### Where we lose, and why\n");
        for l in losses {
            let _ = writeln!(body, "- {l}");
        }
    }
    Ok((
        Section::new("2. L4 through network namespaces", body),
        headline,
    ))
}

/// One peer, set up and answering. Field order is drop order: the peer's process, the iperf3
/// server, then the namespaces.
struct Setup {
    running: Running,
    _iperf_srv: ChildGuard,
    topo: Topology,
}

fn setup(ctx: &Ctx, peer: Peer, iperf: &str) -> anyhow::Result<Setup> {
    // Check the peer's tool before building anything.
    let tool = match peer {
        Peer::Ipvs => Some(util::ensure_tool("ipvsadm", "ipvsadm").map_err(anyhow::Error::msg)?),
        Peer::Iptables => {
            Some(util::ensure_tool("iptables", "iptables").map_err(anyhow::Error::msg)?)
        }
        Peer::Haproxy => Some(util::ensure_tool("haproxy", "haproxy").map_err(anyhow::Error::msg)?),
        _ => None,
    };
    let topo = Topology::new("bl", 2, Opts::default())?;
    for (k, v) in [
        ("net.ipv4.ip_local_port_range", "40000 42999"),
        ("net.ipv4.tcp_tw_reuse", "1"),
    ] {
        topo.client
            .exec(&["sysctl", "-q", "-w", &format!("{k}={v}")])?;
    }
    let iperf_srv =
        topo.backends[0]
            .ns
            .spawn(iperf, &["-s", "-p", &IPERF_PORT.to_string()], false)?;
    let running = start_peer(ctx, peer, &topo, tool.as_deref())?;
    let echo = SocketAddr::from((VIP, ECHO_PORT));
    // Wait until the service answers (and iperf3 -s listens behind it). Generous, since under
    // emulation (part 2b) a peer can take several seconds to come up on a loaded machine.
    let mut last = String::new();
    gateway_tests::wait_until(
        Duration::from_secs(30),
        "the service to answer",
        || match topo.client_api().tcp_hit(echo) {
            Ok(_) => Ok(true),
            Err(e) => {
                last = format!("{e:#}");
                Ok(false)
            }
        },
    )
    .with_context(|| format!("last attempt: {last}"))?;
    Ok(Setup {
        running,
        _iperf_srv: iperf_srv,
        topo,
    })
}

/// One run against one peer: a burst of short connections, then one iperf3 run.
fn one_run(s: &Setup, p: &Params, iperf: &str, f: &mut Figures) -> anyhow::Result<()> {
    let echo = SocketAddr::from((VIP, ECHO_PORT));
    let cores = num_cores() as f64;
    let pc0 = s.running.pid().and_then(util::proc_cpu);
    let c0 = util::cpu_sample();
    let (ok, failed, took) = conn_burst(&s.topo, echo, p.conns, p.threads)?;
    let c1 = util::cpu_sample();
    let (busy, _) = util::cpu_delta(c0, c1);
    f.conn_rate.push(ok as f64 / took.as_secs_f64());
    f.conn_failed += failed;
    f.conn_cpu_us
        .push(busy / 100.0 * cores * took.as_secs_f64() * 1e6 / ok.max(1) as f64);
    check_interrupt()?;
    let c0 = util::cpu_sample();
    let t0 = Instant::now();
    let bps = iperf_run(&s.topo, iperf, p.iperf_secs)?;
    let took = t0.elapsed();
    let c1 = util::cpu_sample();
    let (busy, _) = util::cpu_delta(c0, c1);
    f.gbps.push(bps / 1e9);
    let gb = bps / 8.0 * p.iperf_secs as f64 / 1e9;
    f.gb_cpu_s
        .push(busy / 100.0 * cores * took.as_secs_f64() / gb.max(1e-9));
    if let (Some(a), Some(b)) = (pc0, s.running.pid().and_then(util::proc_cpu)) {
        f.proc_cpu.push((b - a).as_secs_f64());
    }
    Ok(())
}

fn verdict_note(s: &Setup) -> String {
    let Running::Agent(a) = &s.running else {
        return String::new();
    };
    let Ok(st) = a.stats() else {
        return String::new();
    };
    let v = &st["verdicts"];
    let get = |k: &str| v[k]["packets"].as_u64().unwrap_or(0);
    format!(
        "XDP verdicts over the whole run: fwd_new {}, fwd_established {}, pass_fib_miss {}, drop_nat_exhausted {}, drop_ct_full {}, pass_not_ours {}.",
        get("fwd_new"),
        get("fwd_established"),
        get("pass_fib_miss"),
        get("drop_nat_exhausted"),
        get("drop_ct_full"),
        get("pass_not_ours")
    )
}

fn num_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn manifests(nat: &str, topo: &Topology) -> Vec<(&'static str, String)> {
    let b: Vec<String> = topo.backends.iter().map(|b| b.addr.to_string()).collect();
    let gw = format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench
  namespace: istio-system
  annotations:
    gateway.dataplane/nat-mode: {nat}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {ECHO_PORT}, name: tcp-echo, protocol: TCP}}
    hosts: [\"*\"]
  - port: {{number: {IPERF_PORT}, name: tcp-iperf, protocol: TCP}}
    hosts: [\"*\"]
"
    );
    let eps: String = b.iter().map(|a| format!("  - address: {a}\n")).collect();
    let se = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: bench}}
spec:
  hosts: [echo.bench.local]
  resolution: STATIC
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  endpoints:
{eps}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: iperf, namespace: bench}}
spec:
  hosts: [iperf.bench.local]
  resolution: STATIC
  ports: [{{number: {IPERF_PORT}, name: tcp, protocol: TCP}}]
  endpoints:
  - address: {}
",
        b[0]
    );
    let vs = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench, namespace: bench}}
spec:
  hosts: [\"*\"]
  gateways: [istio-system/bench]
  tcp:
  - match: [{{port: {ECHO_PORT}}}]
    route: [{{destination: {{host: echo.bench.local, port: {{number: 9000}}}}}}]
  - match: [{{port: {IPERF_PORT}}}]
    route: [{{destination: {{host: iperf.bench.local, port: {{number: {IPERF_PORT}}}}}}}]
"
    );
    vec![
        ("gateway.yaml", gw),
        ("services.yaml", se),
        ("routes.yaml", vs),
    ]
}

fn start_peer(
    _ctx: &Ctx,
    peer: Peer,
    topo: &Topology,
    tool: Option<&str>,
) -> anyhow::Result<Running> {
    let node = &topo.node;
    let (b1, b2) = (topo.backends[0].addr, topo.backends[1].addr);
    match peer {
        Peer::XdpSnat | Peer::XdpPreserve => {
            let nat = if peer == Peer::XdpSnat {
                "snat"
            } else {
                "preserve-source"
            };
            Ok(Running::Agent(Agent::start(topo, &manifests(nat, topo))?))
        }
        Peer::Ipvs => {
            let ipvsadm = tool.context("ipvsadm")?;
            node.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
            let vip = format!("{VIP}:{ECHO_PORT}");
            let vip_iperf = format!("{VIP}:{IPERF_PORT}");
            if let Err(e) = node.exec(&[ipvsadm, "-A", "-t", &vip, "-s", "rr"]) {
                if !std::path::Path::new("/proc/net/ip_vs").exists() {
                    bail!("this kernel has no IPVS (CONFIG_IP_VS not built in, no ip_vs module; `ipvsadm -A` fails with `Protocol not available`)");
                }
                bail!("`ipvsadm -A` failed: {e:#}");
            }
            for b in [b1, b2] {
                node.exec(&[ipvsadm, "-a", "-t", &vip, "-r", &format!("{b}:9000"), "-m"])?;
            }
            node.exec(&[ipvsadm, "-A", "-t", &vip_iperf, "-s", "rr"])?;
            node.exec(&[
                ipvsadm,
                "-a",
                "-t",
                &vip_iperf,
                "-r",
                &format!("{b1}:{IPERF_PORT}"),
                "-m",
            ])?;
            Ok(Running::Kernel)
        }
        Peer::Iptables => {
            let ipt = tool.context("iptables")?;
            node.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
            let port = ECHO_PORT.to_string();
            let vip = VIP.to_string();
            node.exec(&[
                ipt,
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                &vip,
                "-p",
                "tcp",
                "--dport",
                &port,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.5",
                "-j",
                "DNAT",
                "--to-destination",
                &format!("{b1}:9000"),
            ])?;
            node.exec(&[
                ipt,
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                &vip,
                "-p",
                "tcp",
                "--dport",
                &port,
                "-j",
                "DNAT",
                "--to-destination",
                &format!("{b2}:9000"),
            ])?;
            node.exec(&[
                ipt,
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                &vip,
                "-p",
                "tcp",
                "--dport",
                &IPERF_PORT.to_string(),
                "-j",
                "DNAT",
                "--to-destination",
                &format!("{b1}:{IPERF_PORT}"),
            ])?;
            for b in &topo.backends {
                node.exec(&[
                    ipt,
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    &b.node_iface,
                    "-j",
                    "MASQUERADE",
                ])?;
            }
            Ok(Running::Kernel)
        }
        Peer::Haproxy => {
            let haproxy = tool.context("haproxy")?;
            let dir = tempfile::Builder::new()
                .prefix("gwbench-haproxy-")
                .tempdir()?;
            let cfg = dir.path().join("haproxy.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "global\n  maxconn 4000\n  nbthread {}\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
                     frontend echo\n  bind {VIP}:{ECHO_PORT}\n  default_backend echo\n\
                     backend echo\n  balance roundrobin\n  server b1 {b1}:9000\n  server b2 {b2}:9000\n\
                     frontend iperf\n  bind {VIP}:{IPERF_PORT}\n  default_backend iperf\n\
                     backend iperf\n  server b1 {b1}:{IPERF_PORT}\n",
                    num_cores()
                ),
            )?;
            let cfg = cfg.to_str().context("path")?.to_string();
            // -db: stay in the foreground, so the guard's PID is HAProxy's own.
            let child = node.spawn(haproxy, &["-f", &cfg, "-db"], false)?;
            Ok(Running::Child(child, dir))
        }
    }
}

/// `n` short connections from the client namespace over `threads` threads:
/// (succeeded, failed, wall time).
fn conn_burst(
    topo: &Topology,
    addr: SocketAddr,
    n: usize,
    threads: usize,
) -> anyhow::Result<(usize, usize, Duration)> {
    topo.client_api().run(move || {
        let next = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(30);
        // Threads started here inherit this thread's network namespace.
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (next, failed) = (next.clone(), failed.clone());
                std::thread::spawn(move || {
                    while next.fetch_add(1, Ordering::Relaxed) < n && Instant::now() < deadline {
                        if one_conn(addr).is_err() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            let _ = h.join();
        }
        let took = t0.elapsed();
        let failed = failed.load(Ordering::Relaxed);
        let done = next.load(Ordering::Relaxed).min(n);
        Ok((done.saturating_sub(failed), failed, took))
    })
}

fn one_conn(addr: SocketAddr) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_nodelay(true)?;
    let mut line = Vec::with_capacity(32);
    let mut b = [0u8; 1];
    while b[0] != b'\n' {
        s.read_exact(&mut b)?;
        line.push(b[0]);
    }
    s.write_all(b"ping\n")?;
    let mut back = [0u8; 5];
    s.read_exact(&mut back)?;
    anyhow::ensure!(&back == b"ping\n", "bad echo");
    Ok(())
}

/// One iperf3 run from the client namespace: received bits per second.
fn iperf_run(topo: &Topology, iperf: &str, secs: u32) -> anyhow::Result<f64> {
    let out = output_timeout(
        Command::new("ip").args([
            "netns",
            "exec",
            topo.client.name(),
            iperf,
            "-c",
            &VIP.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &secs.to_string(),
            "-J",
        ]),
        Duration::from_secs(secs as u64 + 20),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_received.bits_per_second")
}
