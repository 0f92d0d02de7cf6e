//! Parts 1 and 5: the XDP program's own cost per packet, and what happens when its connection
//! table is full (`pressure`). Both drive the real program through BPF_PROG_TEST_RUN in a private network
//! namespace (unshare on a dedicated thread), with maps filled by the agent's own apply path.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context as _};
use gateway::{
    dataplane::{Dataplane, Mode},
    plan::{Backend, HashMode, L4Service, LocalPort, NatMode, Plan, Proto},
};

use gateway_testpkt::{v4, v6, ACK, SYN, TCP};

use super::{
    baseline::Baseline,
    util::{check_interrupt, median},
    Section,
};

mod pressure;
pub use pressure::pressure;

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const VIP: [u8; 4] = [198, 18, 0, 1];
/// The IPv6 services' VIP (the same ports as IPv4's), backends 2001:db8:1::2...
const VIP6: &str = "2001:db8::1";
const CLIENT: [u8; 4] = [198, 18, 0, 2];
const SNAT_PORT: u16 = 31400;
const PRESERVE_PORT: u16 = 31401;
const L7_PORT: u16 = 80;
const BACKEND_PORT: u16 = 9000;

/// Reference figures for Katran's balancer on this VM kind, measured the same way (issue 4).
pub const KATRAN_ESTABLISHED_NS: f64 = 53.8;
pub const KATRAN_NOT_OURS_NS: f64 = 23.0;
pub const KATRAN_NEW_FLOW_NS: f64 = 310.0;

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Opts {
    /// Packets timed per case and round.
    pub packets: usize,
    pub rounds: usize,
    /// Runs of the one BPF_PROG_TEST_RUN call per case and round whose kernel-measured mean is
    /// reported beside the medians (10^6, as Katran's tester does).
    pub repeat: u32,
    /// Run the connection-table fill (part 5) to 1.5 x its capacity.
    pub fill: bool,
}

/// Runs `f` on a new thread inside a fresh network namespace that dies with the thread: a
/// veth whose address is the backends' subnet and permanent neighbour entries for `n_backends`
/// backends (198.18.1.2 ...), so FIB lookups resolve without traffic.
fn in_private_netns<R: Send + 'static>(
    n_backends: u8,
    f: impl FnOnce() -> anyhow::Result<R> + Send + 'static,
) -> anyhow::Result<R> {
    let h = std::thread::Builder::new()
        .name("bench-xdp".into())
        .spawn(move || -> anyhow::Result<R> {
            // Safety: unshare affects only this thread, which owns the namespace until it ends.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
            }
            let mut script = String::from(
                "ip link set lo up && ip link add gwd0 type veth peer name gwd1 && ip link set gwd1 up \
                 && ip link set gwd0 address 02:00:00:00:00:01 && ip addr add 198.18.1.1/24 dev gwd0 \
                 && ip -6 addr add 2001:db8:1::1/64 dev gwd0 nodad && ip link set gwd0 up",
            );
            for i in 0..n_backends {
                let _ = write!(
                    script,
                    " && ip neigh add 198.18.1.{} lladdr 02:00:00:00:01:{:02x} dev gwd0 nud permanent \
                     && ip -6 neigh add 2001:db8:1::{:x} lladdr 02:00:00:00:01:{:02x} dev gwd0 nud permanent",
                    i + 2,
                    i + 2,
                    i + 2,
                    i + 2
                );
            }
            let st = Command::new("sh").arg("-c").arg(&script).status()?;
            anyhow::ensure!(st.success(), "setting up the private namespace: {script}");
            f()
        })?;
    match h.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// A dataplane with no interface attached; its pins are removed on drop.
struct Dp {
    dp: Dataplane,
    pin_root: PathBuf,
}

impl Drop for Dp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}

impl Dp {
    fn open(plan: &Plan) -> anyhow::Result<Dp> {
        let pin_root = PathBuf::from(format!(
            "/sys/fs/bpf/gwbench-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let dp = Dataplane::open(&pin_root, &[], Mode::Auto)
            .with_context(|| format!("loading the XDP object (pins {})", pin_root.display()))?;
        let mut d = Dp { dp, pin_root };
        d.dp.apply(plan).context("applying the bench plan")?;
        Ok(d)
    }

    fn verdicts(&self) -> anyhow::Result<BTreeMap<&'static str, u64>> {
        Ok(self
            .dp
            .stats()?
            .verdicts
            .into_iter()
            .map(|(k, v)| (k, v.packets))
            .collect())
    }
}

fn backends(n: u8) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend {
            addr: Ipv4Addr::new(198, 18, 1, i + 2).into(),
            port: BACKEND_PORT,
            weight: 1,
        })
        .collect()
}

fn backends6(n: u8) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend {
            addr: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i as u16 + 2).into(),
            port: BACKEND_PORT,
            weight: 1,
        })
        .collect()
}

/// Both NAT modes in both families (IPv6 on `VIP6`, same ports), and an L7 port.
fn plan(n_backends: u8) -> Plan {
    let svc = |port, nat| L4Service {
        vip: Ipv4Addr::from(VIP).into(),
        port,
        proto: Proto::Tcp,
        nat,
        hash: HashMode::FiveTuple,
        backends: backends(n_backends),
        origin: "bench".into(),
    };
    let svc6 = |port, nat| L4Service {
        vip: VIP6.parse::<Ipv6Addr>().expect("VIP6").into(),
        backends: backends6(n_backends),
        ..svc(port, nat)
    };
    Plan {
        l4: vec![
            svc(SNAT_PORT, NatMode::Snat),
            svc(PRESERVE_PORT, NatMode::PreserveSource),
            svc6(SNAT_PORT, NatMode::Snat),
            svc6(PRESERVE_PORT, NatMode::PreserveSource),
        ],
        local: vec![LocalPort {
            vip: Ipv4Addr::from(VIP).into(),
            port: L7_PORT,
            origin: "bench".into(),
        }],
        ..Plan::default()
    }
}

/// The source of the `i`-th distinct new flow: 198.19.x.y, port 1024..61023.
fn flow_src(i: usize) -> ([u8; 4], u16) {
    let host = i / 60000;
    (
        [198, 19, (host >> 8) as u8, (host & 0xff) as u8],
        1024 + (i % 60000) as u16,
    )
}

/// The IPv6 source of the `i`-th distinct new flow: 2001:db8:2::x:y, port 1024..61023.
fn flow_src6(i: usize) -> ([u8; 16], u16) {
    let host = (i / 60000) as u16;
    (
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 1, host).octets(),
        1024 + (i % 60000) as u16,
    )
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Case {
    Established,
    NewFlow,
    Established6,
    NewFlow6,
    NotOurs,
    NotOursSyn,
    L7Port,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Established => "established-flow forward (ACK of a primed flow)",
            Case::NewFlow => {
                "new flow (SYN: Maglev pick + 2 conntrack inserts, next hop resolved in advance)"
            }
            Case::NotOurs => {
                "packet not ours (ACK to the VIP's port 22, no service on the port; passes)"
            }
            Case::NotOursSyn => "packet not ours, SYN (the same, as a SYN; passes)",
            Case::Established6 => "IPv6 established-flow forward (ACK of a primed flow)",
            Case::NewFlow6 => {
                "IPv6 new flow (SYN: as for IPv4, the entries built in a per-CPU map)"
            }
            Case::L7Port => "packet to an L7 port (passed to the local stack)",
        }
    }
    fn verdict(self) -> &'static str {
        match self {
            Case::Established | Case::Established6 => "fwd_established",
            Case::NewFlow | Case::NewFlow6 => "fwd_new",
            Case::NotOurs | Case::NotOursSyn => "pass_not_ours",
            Case::L7Port => "pass_local",
        }
    }
    fn action(self) -> u32 {
        match self {
            Case::Established | Case::NewFlow | Case::Established6 | Case::NewFlow6 => XDP_REDIRECT,
            _ => XDP_PASS,
        }
    }
    /// Katran's figure for the case. IPv6 cases are set against Katran's IPv4 figures: no IPv6
    /// reference was measured (Katran's IPv6 path parses a longer header and hashes a longer
    /// key too, so its own IPv6 figures would be higher, not lower).
    fn katran(self) -> Option<f64> {
        match self {
            Case::Established | Case::Established6 => Some(KATRAN_ESTABLISHED_NS),
            Case::NewFlow | Case::NewFlow6 => Some(KATRAN_NEW_FLOW_NS),
            Case::NotOurs => Some(KATRAN_NOT_OURS_NS),
            Case::NotOursSyn | Case::L7Port => None,
        }
    }
}

/// One timed case of one round: program and baseline medians over its packets.
struct Timed {
    prog: f64,
    base: f64,
    wrong_action: usize,
    verdict_ok: bool,
    /// Every single-call duration (program and baseline), for the clock's resolution.
    durations: Vec<u64>,
}

/// One call of `repeat` runs on one packet: the kernel's mean per run for the program and for
/// the empty program, and the program's verdicts over the runs.
struct Repeated {
    prog: f64,
    base: f64,
    /// Verdict counter deltas over the runs: which packets the mean is of (the runs share one
    /// buffer, so a program that rewrites the packet sees its own output from the second run on).
    verdicts: BTreeMap<&'static str, u64>,
}

/// Times `repeat` runs of `packet` in one BPF_PROG_TEST_RUN call each for the program and the
/// empty one, as Katran's tester does.
fn time_repeated(
    d: &mut Dp,
    base: &mut Baseline,
    packet: &[u8],
    repeat: u32,
) -> anyhow::Result<Repeated> {
    let before = d.verdicts()?;
    let (_, prog) = d.dp.test_run_repeat(packet, repeat)?;
    let after = d.verdicts()?;
    let (_, bl) = base.run_repeat(packet, repeat)?;
    let verdicts = after
        .iter()
        .map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(Repeated {
        prog: prog.as_nanos() as f64,
        base: bl.as_nanos() as f64,
        verdicts,
    })
}

/// The smallest step between distinct durations seen: what the clock behind single
/// BPF_PROG_TEST_RUN calls can tell apart (None with fewer than two distinct values).
fn resolution(durations: &[u64]) -> Option<u64> {
    let mut v = durations.to_vec();
    v.sort_unstable();
    v.dedup();
    v.windows(2).map(|w| w[1] - w[0]).min()
}

/// The kernel's clock source (/sys), which BPF_PROG_TEST_RUN's timer reads through ktime.
fn clocksource() -> String {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Times `packets` one BPF_PROG_TEST_RUN call each, interleaving program and baseline on the
/// same packet so drift of the machine hits both alike.
fn time_packets(
    d: &mut Dp,
    base: &mut Baseline,
    case: Case,
    packets: &[Vec<u8>],
) -> anyhow::Result<Timed> {
    let before = d.verdicts()?;
    let mut prog = Vec::with_capacity(packets.len());
    let mut bl = Vec::with_capacity(packets.len());
    let mut wrong = 0;
    let mut durations = Vec::with_capacity(2 * packets.len());
    for p in packets {
        let (action, _out, dur) = d.dp.test_run(p)?;
        if action != case.action() {
            wrong += 1;
        }
        prog.push(dur.as_nanos() as f64);
        let (_, bdur) = base.run(p)?;
        bl.push(bdur.as_nanos() as f64);
        durations.extend([dur.as_nanos() as u64, bdur.as_nanos() as u64]);
    }
    let after = d.verdicts()?;
    let delta = after[case.verdict()] - before[case.verdict()];
    Ok(Timed {
        prog: median(&prog),
        base: median(&bl),
        wrong_action: wrong,
        verdict_ok: delta == packets.len() as u64,
        durations,
    })
}

pub struct PerPacket {
    pub section: Section,
    /// (case label, mode, net ns, Katran ns) for the headline.
    pub headline: Vec<String>,
}

/// Part 1.
pub fn per_packet(opts: &Opts) -> anyhow::Result<PerPacket> {
    let (packets, rounds, repeat) = (opts.packets, opts.rounds, opts.repeat);
    in_private_netns(8, move || {
        let mut base = Baseline::load()?;
        // results[(mode, case)] = per-round (prog, base) medians
        let mut results: BTreeMap<(&'static str, Case), Vec<(f64, f64)>> = BTreeMap::new();
        // repeated[(mode, case)] = per-round means of `repeat` runs
        let mut repeated: BTreeMap<(&'static str, Case), Vec<Repeated>> = BTreeMap::new();
        let mut durations: Vec<u64> = Vec::new();
        let mut problems = Vec::new();
        let mut flow = 0usize;
        let mut program = None;
        for round in 0..rounds {
            check_interrupt()?;
            // A fresh dataplane per round: new flows of earlier rounds never fill SNAT ports.
            let mut d = Dp::open(&plan(8))?;
            program.get_or_insert_with(|| d.dp.program().clone());
            for (mode, port) in [("snat", SNAT_PORT), ("preserve-source", PRESERVE_PORT)] {
                // (a) established: prime the flow with a SYN, then time ACKs of it.
                let (src, sport) = flow_src(flow);
                flow += 1;
                let syn = v4::packet(TCP, src, sport, VIP, port, SYN, b"");
                let (a, _, _) = d.dp.test_run(&syn)?;
                anyhow::ensure!(a == XDP_REDIRECT, "priming SYN not forwarded (action {a})");
                let ack = v4::packet(TCP, src, sport, VIP, port, ACK, b"");
                let est: Vec<Vec<u8>> = (0..packets).map(|_| ack.clone()).collect();
                // (b) SYNs of distinct new flows.
                let syns: Vec<Vec<u8>> = (0..packets)
                    .map(|_| {
                        let (src, sport) = flow_src(flow);
                        flow += 1;
                        v4::packet(TCP, src, sport, VIP, port, SYN, b"")
                    })
                    .collect();
                // (c) not ours: a port no service has. (d) an L7 port.
                let other = v4::packet(TCP, CLIENT, 40000, VIP, 22, ACK, b"");
                let other_syn = v4::packet(TCP, CLIENT, 40000, VIP, 22, SYN, b"");
                let l7 = v4::packet(TCP, CLIENT, 40000, VIP, L7_PORT, ACK, b"");
                // (e) and (f): (a) and (b) for IPv6.
                let vip6 = VIP6.parse::<Ipv6Addr>()?.octets();
                let (src6, sport6) = flow_src6(flow);
                flow += 1;
                let syn6 = v6::packet(TCP, src6, sport6, vip6, port, SYN, b"", &[]);
                let (a, _, _) = d.dp.test_run(&syn6)?;
                anyhow::ensure!(
                    a == XDP_REDIRECT,
                    "priming IPv6 SYN not forwarded (action {a})"
                );
                let ack6 = v6::packet(TCP, src6, sport6, vip6, port, ACK, b"", &[]);
                let est6: Vec<Vec<u8>> = (0..packets).map(|_| ack6.clone()).collect();
                let syns6: Vec<Vec<u8>> = (0..packets)
                    .map(|_| {
                        let (src, sport) = flow_src6(flow);
                        flow += 1;
                        v6::packet(TCP, src, sport, vip6, port, SYN, b"", &[])
                    })
                    .collect();
                // The repeated call's packet: the case's own, a SYN of one more new flow for the
                // new-flow cases.
                let (src, sport) = flow_src(flow);
                let (src6, sport6) = flow_src6(flow);
                flow += 1;
                let rep_syn = v4::packet(TCP, src, sport, VIP, port, SYN, b"");
                let rep_syn6 = v6::packet(TCP, src6, sport6, vip6, port, SYN, b"", &[]);
                let cases = [
                    (Case::Established, ack.clone(), est),
                    (Case::NewFlow, rep_syn, syns),
                    (Case::Established6, ack6.clone(), est6),
                    (Case::NewFlow6, rep_syn6, syns6),
                    (
                        Case::NotOurs,
                        other.clone(),
                        (0..packets).map(|_| other.clone()).collect(),
                    ),
                    (
                        Case::NotOursSyn,
                        other_syn.clone(),
                        (0..packets).map(|_| other_syn.clone()).collect(),
                    ),
                    (
                        Case::L7Port,
                        l7.clone(),
                        (0..packets).map(|_| l7.clone()).collect(),
                    ),
                ];
                for (case, rep_pkt, pkts) in cases {
                    check_interrupt()?;
                    let t = time_packets(&mut d, &mut base, case, &pkts)?;
                    durations.extend_from_slice(&t.durations);
                    let r = time_repeated(&mut d, &mut base, &rep_pkt, repeat)?;
                    repeated.entry((mode, case)).or_default().push(r);
                    if t.wrong_action > 0 || !t.verdict_ok {
                        problems.push(format!(
                            "round {round}, {mode}, {}: {} packets with an unexpected action, verdict counter {}",
                            case.label(),
                            t.wrong_action,
                            if t.verdict_ok { "ok" } else { "off" }
                        ));
                    }
                    results
                        .entry((mode, case))
                        .or_default()
                        .push((t.prog, t.base));
                }
            }
        }

        let mut body = String::new();
        let _ = writeln!(
            body,
            "Each packet is one `BPF_PROG_TEST_RUN` call (repeat = 1; a forwarding program rewrites its \
             input, so a repeat would time a different packet). Every call of the gateway program is \
             followed by a call of an empty XDP program (`r0 = XDP_PASS; exit`) on the same packet; \
             *net* = median(program) - median(empty), per round, then the median over {rounds} rounds of \
             {packets} packets per case. Katran's reference figures were measured the same way on this VM \
             kind (issue 4); no IPv6 figure of Katran's was measured, so the IPv6 lines are set against \
             its IPv4 ones. A ratio below 1.00 means we are faster.\n"
        );
        let _ = writeln!(
            body,
            "*Mean over {repeat} runs* (the last three columns): per case and round, one more \
             `BPF_PROG_TEST_RUN` call with repeat = {repeat} for the program and one for the empty \
             program, each on the case's packet (a SYN of one more new flow for the new-flow cases); \
             the kernel reports total time / repeat. *net* = program mean - empty mean, median over the \
             rounds. The runs of one call share one packet buffer, so a program that rewrites its \
             packet sees its own output from the second run on: the last column gives the verdicts \
             counted over the runs of the last round, i.e. which packets the mean is of. Katran's \
             tester (repeat = 10^6 on each fixture packet) has the same property for the packets it \
             encapsulates.\n"
        );
        let res = resolution(&durations);
        let _ = writeln!(
            body,
            "Clock: the kernel times test runs with ktime (clock source `{}` here). Over the {} \
             single-call durations of this run (program and empty), the smallest step between \
             distinct values was {}, so single-call figures are quantised to that; the repeated \
             calls' means are whole ns of a total over {repeat} runs.\n",
            clocksource(),
            durations.len(),
            res.map(|r| format!("{r} ns"))
                .unwrap_or_else(|| "not seen (one value only)".into())
        );
        if let Some(p) = &program {
            let _ = writeln!(
                body,
                "Program: `{}`, {}; {} instructions after the verifier's rewrites, {} bytes \
                 JIT-compiled (`bpf_prog_info`, as the agent logs at load and shows in `gateway dump \
                 bpf`).\n",
                p.name,
                match p.verified_insns {
                    Some(n) => format!(
                        "the verifier processed {n} instructions of the kernel's limit of {} \
                         ({:.1}% used, headroom {})",
                        p.verifier_limit,
                        100.0 * n as f64 / p.verifier_limit as f64,
                        p.verifier_limit.saturating_sub(n)
                    ),
                    None => "no verifier count from this kernel (Linux 5.16+)".into(),
                },
                p.insns.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                p.jited_bytes
            );
        }
        let _ = writeln!(
            body,
            "| case | NAT mode | net ns/packet (median of rounds) | rounds min-max | program ns | empty ns | Katran net ns | ours / Katran | net ns, mean of {repeat} runs | program / empty ns, mean of {repeat} runs | verdicts over the {repeat} runs |"
        );
        let _ = writeln!(
            body,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        let mut headline = Vec::new();
        for ((mode, case), v) in &results {
            let nets: Vec<f64> = v.iter().map(|(p, b)| p - b).collect();
            let net = median(&nets);
            let lo = nets.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = nets.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let prog = median(&v.iter().map(|x| x.0).collect::<Vec<_>>());
            let bl = median(&v.iter().map(|x| x.1).collect::<Vec<_>>());
            let (k, ratio) = match case.katran() {
                Some(k) => (format!("{k}"), format!("{:.2}", net / k)),
                None => ("n/a".into(), "n/a".into()),
            };
            let (rnet, rprog, rbase, rverd) = match repeated.get(&(*mode, *case)) {
                Some(r) if !r.is_empty() => {
                    let nets: Vec<f64> = r.iter().map(|x| x.prog - x.base).collect();
                    let last = &r[r.len() - 1];
                    let verd = last
                        .verdicts
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    (
                        format!("{:.0}", median(&nets)),
                        format!(
                            "{:.0}",
                            median(&r.iter().map(|x| x.prog).collect::<Vec<_>>())
                        ),
                        format!(
                            "{:.0}",
                            median(&r.iter().map(|x| x.base).collect::<Vec<_>>())
                        ),
                        verd,
                    )
                }
                _ => Default::default(),
            };
            let _ = writeln!(
                body,
                "| {} | {mode} | {net:.0} | {lo:.0}-{hi:.0} | {prog:.0} | {bl:.0} | {k} | {ratio} | {rnet} | {rprog} / {rbase} | {rverd} |",
                case.label()
            );
            if let Some(k) = case.katran() {
                headline.push(format!(
                    "XDP {} ({mode}): {net:.0} ns net vs Katran {k} ns = {:.2}x",
                    case.verdict(),
                    net / k
                ));
            }
        }
        // Where we lose, and why (the causes are read off the program's code path; it has not been
        // profiled instruction by instruction).
        let net_of = |mode: &'static str, case: Case| {
            results
                .get(&(mode, case))
                .map(|v| median(&v.iter().map(|(p, b)| p - b).collect::<Vec<_>>()))
        };
        let mut losses = Vec::new();
        if let Some(est) = net_of("snat", Case::Established).filter(|n| *n > KATRAN_ESTABLISHED_NS)
        {
            losses.push(format!(
                "**Established flow: we lose ({est:.0} ns vs {KATRAN_ESTABLISHED_NS} ns).** Per packet the program \
                 checks the port array (inlined), looks the 5-tuple up in one *shared* LRU hash (Katran uses a per-CPU LRU), \
                 bumps three per-CPU counters (verdict, service, backend), reads the backend's next hop resolved in \
                 advance (an inlined array lookup), rewrites addresses and ports with incremental checksums and \
                 redirects. Candidates to win it back: a per-CPU LRU (replies may land on another CPU, so it needs \
                 care), fewer counters on the fast path."
            ));
        }
        if let (Some(no), Some(syn)) = (
            net_of("snat", Case::NotOurs),
            net_of("snat", Case::NotOursSyn),
        ) {
            if no > KATRAN_NOT_OURS_NS {
                losses.push(format!(
                    "**Packet not ours: we lose ({no:.0} ns vs {KATRAN_NOT_OURS_NS} ns; {syn:.0} ns as a SYN).** \
                     The path is a parse, inlined array checks of the destination and source ports and the per-CPU \
                     verdict counter; what remains is the difference between our test-run baseline and \
                     Katran's measurement."
                ));
            }
        }
        if let Some(new) = net_of("snat", Case::NewFlow).filter(|n| *n > KATRAN_NEW_FLOW_NS) {
            let pre = net_of("preserve-source", Case::NewFlow).unwrap_or(f64::NAN);
            losses.push(format!(
                "**New flow: we lose ({new:.0} ns snat, {pre:.0} ns preserve-source, vs ~{KATRAN_NEW_FLOW_NS} ns).** \
                 A SYN costs two inserts into \
                 the shared LRU connection table (one per direction, so replies need no route; Katran keeps one \
                 per-CPU entry and does not NAT), and in SNAT mode an insert-if-absent per SNAT port candidate. \
                 In exchange we do NAT in both directions, which Katran (DSR with IPIP) does not."
            ));
        }
        if !losses.is_empty() {
            let _ = writeln!(body, "\n### Where we lose, and why\n");
            for l in losses {
                let _ = writeln!(body, "- {l}");
            }
        }
        if problems.is_empty() {
            let _ = writeln!(
                body,
                "\nEvery timed packet got the expected XDP action, and the program's verdict counters \
                 (`Dataplane::stats()`) moved by exactly the number of packets of each case."
            );
        } else {
            let _ = writeln!(
                body,
                "\n**Unexpected results (figures above are suspect):**\n"
            );
            for p in problems {
                let _ = writeln!(body, "- {p}");
            }
        }
        let _ = writeln!(
            body,
            "\nSet-up: a fresh dataplane per round (`Dataplane::open` with no interface, `apply` of a \
             plan with four L4 services over 8 backends, one per NAT mode and family, and an L7 port), \
             in a private network namespace whose veth carries the backends' subnets (IPv4 and IPv6) \
             with permanent neighbour entries. Packets are TCP frames without payload (SYN or ACK): \
             54 bytes for IPv4, 74 for IPv6 (no extension headers)."
        );
        Ok(PerPacket {
            section: Section::new("1. XDP per-packet cost (BPF_PROG_TEST_RUN)", body),
            headline,
        })
    })
}

/// What `time_apply` measures, in ms.
pub struct ApplyTimes {
    /// The first apply to a fresh dataplane (Maglev rings through the mapping of `MAGLEV`).
    pub first: f64,
    /// The same plan again.
    pub again: f64,
    /// The first apply to another fresh dataplane with the rings written by syscall (one
    /// BPF_MAP_UPDATE_BATCH per ring), for the same-run comparison; None if the plan has no ring.
    pub first_by_syscall: Option<f64>,
    /// Whether `first` really went through the mapping (false: the map was not mmapable).
    pub mapped: bool,
}

/// Times `Dataplane::apply` of the plan `make` returns, in a private namespace.
pub fn time_apply(
    make: impl FnOnce() -> anyhow::Result<Plan> + Send + 'static,
) -> anyhow::Result<ApplyTimes> {
    in_private_netns(0, move || {
        let plan = make()?;
        let mut d = Dp::open(&Plan::default())?;
        let before = d.dp.ring_writes();
        let t = std::time::Instant::now();
        d.dp.apply(&plan).context("apply")?;
        let first = t.elapsed().as_secs_f64() * 1e3;
        let after = d.dp.ring_writes();
        let t = std::time::Instant::now();
        d.dp.apply(&plan).context("apply (again)")?;
        let again = t.elapsed().as_secs_f64() * 1e3;
        drop(d);
        let first_by_syscall = if after.mapped + after.syscall > before.mapped + before.syscall {
            let mut d = Dp::open(&Plan::default())?;
            d.dp.set_ring_mapping(false);
            let t = std::time::Instant::now();
            d.dp.apply(&plan).context("apply (rings by syscall)")?;
            Some(t.elapsed().as_secs_f64() * 1e3)
        } else {
            None
        };
        Ok(ApplyTimes {
            first,
            again,
            first_by_syscall,
            mapped: after.syscall == before.syscall,
        })
    })
}
