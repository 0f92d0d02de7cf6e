//! Packet-level tests of the real XDP program through BPF_PROG_TEST_RUN: build a packet, fill the
//! maps through the agent's own apply path, run the program once, check the verdict, the output
//! packet (addresses, ports, MACs, checksums) and the counters.
//!
//! Each test runs in a private network namespace (unshare on its own thread) holding a dummy
//! interface towards the backends with permanent neighbour entries, so FIB lookups resolve
//! without any traffic. Needs root; fails (does not skip) without it.

use std::{
    net::{IpAddr, Ipv4Addr},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use gateway::{
    dataplane::{Dataplane, Mode},
    plan::{Backend, HashMode, L4Service, LocalPort, NatMode, Plan, Proto},
};

#[path = "xdp_prog/conntrack.rs"]
mod conntrack;
#[path = "xdp_prog/icmp.rs"]
mod icmp;
#[path = "xdp_prog/ipv6.rs"]
mod ipv6;
#[path = "xdp_prog/maglev_mmap.rs"]
mod maglev_mmap;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const CLIENT: [u8; 4] = [198, 18, 0, 2];
const VIP: [u8; 4] = [198, 18, 0, 1];
const NODE_B: [u8; 4] = [198, 18, 1, 1];
const B1: [u8; 4] = [198, 18, 1, 2];
const B2: [u8; 4] = [198, 18, 1, 3];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0c];
const NODE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x01];

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A dataplane with no interfaces attached, in a fresh network namespace; pins removed on drop.
struct Env {
    dp: Dataplane,
    pin_root: std::path::PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}

fn sh(args: &str) {
    let st = Command::new("sh").arg("-c").arg(args).status().expect("sh");
    assert!(st.success(), "command failed: {args}");
}

fn env(plan: &Plan) -> Env {
    env_on(plan, &[], Mode::Auto)
}

/// [`env`] with XDP attached to `ifaces` of the test namespace (`gwd0`: a veth) in `mode`.
fn env_on(plan: &Plan, ifaces: &[&str], mode: Mode) -> Env {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "these tests load BPF programs: run them as root");
    // SAFETY: unshare only affects this test's thread, which owns the namespace until it ends.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET)");
    sh("ip link set lo up && ip link add gwd0 type veth peer name gwd1 && ip link set gwd1 up && ip link set gwd0 address 02:00:00:00:00:01 \
        && ip addr add 198.18.1.1/24 dev gwd0 && ip link set gwd0 up \
        && ip neigh add 198.18.1.2 lladdr 02:00:00:00:01:02 dev gwd0 nud permanent \
        && ip neigh add 198.18.1.3 lladdr 02:00:00:00:01:03 dev gwd0 nud permanent");
    let pin_root = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/gwunit-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let ifaces: Vec<String> = ifaces.iter().map(|s| s.to_string()).collect();
    let mut dp = Dataplane::open(&pin_root, &ifaces, mode).expect("load the XDP object");
    dp.apply(plan).expect("apply plan");
    Env { dp, pin_root }
}

fn svc(port: u16, proto: Proto, nat: NatMode, backends: &[([u8; 4], u32)]) -> L4Service {
    L4Service {
        vip: Ipv4Addr::from(VIP).into(),
        port,
        proto,
        nat,
        hash: HashMode::FiveTuple,
        backends: backends
            .iter()
            .map(|(a, w)| Backend {
                addr: Ipv4Addr::from(*a).into(),
                port: 9000,
                weight: *w,
            })
            .collect(),
        origin: "test".into(),
    }
}

fn plan() -> Plan {
    Plan {
        l4: vec![
            svc(31400, Proto::Tcp, NatMode::Snat, &[(B1, 1), (B2, 1)]),
            svc(31401, Proto::Tcp, NatMode::PreserveSource, &[(B1, 1)]),
            svc(31402, Proto::Tcp, NatMode::Snat, &[]),
            svc(5353, Proto::Udp, NatMode::Snat, &[(B2, 1)]),
        ],
        local: vec![LocalPort {
            vip: Ipv4Addr::from(VIP).into(),
            port: 80,
            origin: "test".into(),
        }],
        ..Default::default()
    }
}

// ---- packets ----

fn csum(data: &[u8], init: u32) -> u16 {
    let mut sum = init;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut s = 0u32;
    for c in src.chunks(2).chain(dst.chunks(2)) {
        s += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    s + proto as u32 + len as u32
}

/// Ethernet + IPv4 (no options) + TCP or UDP with correct checksums.
fn packet(
    proto: u8,
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    tcp_flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let l4_len = if proto == 6 { 20 } else { 8 } + payload.len();
    let mut p = Vec::new();
    p.extend_from_slice(&NODE_MAC);
    p.extend_from_slice(&CLIENT_MAC);
    p.extend_from_slice(&[0x08, 0x00]);
    let tot = (20 + l4_len) as u16;
    let mut ip = vec![
        0x45,
        0,
        (tot >> 8) as u8,
        tot as u8,
        0,
        1,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&ip);
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        l4.extend_from_slice(&[
            0, 0, 0, 1, 0, 0, 0, 0, 0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0,
        ]);
    } else {
        l4.extend_from_slice(&(l4_len as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    let c = csum(&l4, pseudo(&src, &dst, proto, l4_len));
    let off = if proto == 6 { 16 } else { 6 };
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&l4);
    p
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

struct Parsed {
    smac: [u8; 6],
    dmac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
}

/// Parses an output packet and asserts both checksums are valid.
fn parse(p: &[u8]) -> Parsed {
    let ip = &p[14..34];
    assert_eq!(csum(ip, 0), 0, "IPv4 header checksum invalid");
    let proto = ip[9];
    let l4 = &p[34..];
    let (src, dst): ([u8; 4], [u8; 4]) = (
        ip[12..16].try_into().unwrap(),
        ip[16..20].try_into().unwrap(),
    );
    let udp_no_csum = proto == 17 && l4[6] == 0 && l4[7] == 0;
    if !udp_no_csum {
        assert_eq!(
            csum(l4, pseudo(&src, &dst, proto, l4.len())),
            0,
            "L4 checksum invalid"
        );
    }
    Parsed {
        dmac: p[0..6].try_into().unwrap(),
        smac: p[6..12].try_into().unwrap(),
        src,
        dst,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
    }
}

fn verdict(e: &Env, name: &str) -> u64 {
    e.dp.stats().unwrap().verdicts[name].packets
}

// ---- tests ----

#[test]
fn not_ours_passes_untouched() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        for pkt in [
            packet(6, CLIENT, 40000, VIP, 22, SYN, b""),
            packet(17, CLIENT, 40000, VIP, 53, 0, b"q"),
            packet(6, CLIENT, 40000, [198, 18, 0, 9], 31400, SYN, b""),
        ] {
            let (action, out, _) = e.dp.test_run(&pkt).unwrap();
            assert_eq!(action, XDP_PASS);
            assert_eq!(out, pkt, "a packet we do not own must not change");
        }
        assert_eq!(verdict(&e, "pass_not_ours"), 3);
    })
    .join()
    .unwrap();
}

#[test]
fn snat_new_flow_reply_and_established() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let syn = packet(6, CLIENT, 40001, VIP, 31400, SYN, b"");
        let (action, out, _) = e.dp.test_run(&syn).unwrap();
        assert_eq!(
            action, XDP_REDIRECT,
            "new flow goes out of the backend-facing interface"
        );
        let o = parse(&out);
        assert!(o.dst == B1 || o.dst == B2, "backend chosen: {:?}", o.dst);
        assert_eq!(o.dport, 9000);
        assert_eq!(
            o.src, NODE_B,
            "snat: source is the egress interface's address"
        );
        assert!(
            o.sport >= gateway_common::NAT_PORT_MIN,
            "snat port {} in range",
            o.sport
        );
        assert_eq!(o.smac, NODE_MAC);
        assert_eq!(
            o.dmac[5],
            if o.dst == B1 { 2 } else { 3 },
            "neighbour MAC of the backend"
        );

        // Same flow again (a retransmitted SYN): same backend, same port.
        let (_, out2, _) = e.dp.test_run(&syn).unwrap();
        let o2 = parse(&out2);
        assert_eq!((o2.dst, o2.sport), (o.dst, o.sport));

        // Established packet with payload follows the entry.
        let data = packet(6, CLIENT, 40001, VIP, 31400, ACK, b"hello");
        let (action, out3, _) = e.dp.test_run(&data).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let o3 = parse(&out3);
        assert_eq!((o3.dst, o3.sport), (o.dst, o.sport));
        assert_eq!(&out3[out3.len() - 5..], b"hello");

        // The backend's reply to the NAT port is turned back into VIP -> client, sent back out
        // of the interface the client's packet came in on (here: the test's ingress, so TX).
        let reply = packet(6, o.dst, 9000, NODE_B, o.sport, SYN | ACK, b"");
        let (action, out4, _) = e.dp.test_run(&reply).unwrap();
        assert_eq!(action, XDP_TX);
        let r = parse(&out4);
        assert_eq!(
            (r.src, r.sport, r.dst, r.dport),
            (VIP, 31400, CLIENT, 40001)
        );
        assert_eq!(
            r.dmac, CLIENT_MAC,
            "reply goes to the MAC the client's packet came from"
        );

        let st = e.dp.stats().unwrap();
        assert_eq!(st.verdicts["fwd_new"].packets, 2);
        assert_eq!(st.verdicts["fwd_established"].packets, 2);
        assert_eq!(st.services["198.18.0.1:31400/tcp"].packets, 4);
        let b = format!("{}:9000", Ipv4Addr::from(o.dst));
        assert_eq!(st.backends[&b].packets, 4);
    })
    .join()
    .unwrap();
}

#[test]
fn preserve_source_keeps_client_address() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let (action, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40002, VIP, 31401, SYN, b""))
                .unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let o = parse(&out);
        assert_eq!((o.src, o.sport, o.dst, o.dport), (CLIENT, 40002, B1, 9000));
        let reply = packet(6, B1, 9000, CLIENT, 40002, SYN | ACK, b"");
        let (action, out, _) = e.dp.test_run(&reply).unwrap();
        assert_eq!(action, XDP_TX);
        let r = parse(&out);
        assert_eq!(
            (r.src, r.sport, r.dst, r.dport),
            (VIP, 31401, CLIENT, 40002)
        );
    })
    .join()
    .unwrap();
}

#[test]
fn udp_with_and_without_checksum() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let p = packet(17, CLIENT, 50000, VIP, 5353, 0, b"query");
        let (action, out, _) = e.dp.test_run(&p).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let o = parse(&out);
        assert_eq!((o.dst, o.dport, o.src), (B2, 9000, NODE_B));
        // A zero UDP checksum means "none" and must stay zero after the rewrite.
        let mut p = packet(17, CLIENT, 50001, VIP, 5353, 0, b"query");
        p[40] = 0;
        p[41] = 0;
        let (_, out, _) = e.dp.test_run(&p).unwrap();
        assert_eq!(&out[40..42], &[0, 0]);
        parse(&out);
    })
    .join()
    .unwrap();
}

#[test]
fn l7_port_goes_to_local_stack_and_empty_service_drops() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let p = packet(6, CLIENT, 40003, VIP, 80, SYN, b"");
        let (action, out, _) = e.dp.test_run(&p).unwrap();
        assert_eq!((action, out), (XDP_PASS, p));
        assert_eq!(verdict(&e, "pass_local"), 1);
        let (action, _, _) =
            e.dp.test_run(&packet(6, CLIENT, 40004, VIP, 31402, SYN, b""))
                .unwrap();
        assert_eq!(action, XDP_DROP);
        assert_eq!(verdict(&e, "drop_no_backend"), 1);
    })
    .join()
    .unwrap();
}

#[test]
fn malformed_and_truncated_packets_pass_untouched() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let good = packet(6, CLIENT, 40005, VIP, 31400, SYN, b"");
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],              // empty
            good[..10].to_vec(), // shorter than Ethernet
            good[..14].to_vec(), // Ethernet only
            good[..30].to_vec(), // IPv4 header cut
            good[..40].to_vec(), // TCP header cut (ports present, flags not)
            good[..36].to_vec(), // only source port
        ];
        let mut arp = good.clone();
        arp[12] = 0x08;
        arp[13] = 0x06;
        cases.push(arp);
        let mut opts = good.clone();
        opts[14] = 0x46; // IHL 6: options
        cases.push(opts);
        let mut frag = good.clone();
        frag[20] = 0x20; // MF
        cases.push(frag);
        let mut v6 = good.clone();
        v6[14] = 0x65;
        cases.push(v6);
        let mut icmp = good.clone();
        icmp[23] = 1;
        cases.push(icmp);
        let n = cases.len() as u64;
        for c in cases {
            if c.len() < 14 {
                // The kernel refuses an XDP test packet shorter than an Ethernet header itself.
                assert!(e.dp.test_run(&c).is_err());
                continue;
            }
            let (action, out, _) = e.dp.test_run(&c).unwrap();
            assert_eq!(action, XDP_PASS, "packet of {} bytes", c.len());
            assert_eq!(out, c);
        }
        // The two short ones never ran; the fragment is counted apart.
        assert_eq!(verdict(&e, "pass_unparsed"), n - 3);
        assert_eq!(verdict(&e, "pass_fragment"), 1);
        assert_eq!(verdict(&e, "fwd_new"), 0);
    })
    .join()
    .unwrap();
}

#[test]
fn weights_and_consistency_across_flows() {
    std::thread::spawn(|| {
        let mut p = plan();
        p.l4[0] = svc(31400, Proto::Tcp, NatMode::Snat, &[(B1, 3), (B2, 1)]);
        let mut e = env(&p);
        let mut b1 = 0;
        let n = 2000;
        for i in 0..n {
            let (_, out, _) =
                e.dp.test_run(&packet(6, CLIENT, 20000 + i, VIP, 31400, SYN, b""))
                    .unwrap();
            if parse(&out).dst == B1 {
                b1 += 1;
            }
        }
        // 75% expected; 2000 flows over a 4099-slot ring: a few points of spread at most.
        let share = b1 as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.05, "B1 share {share}");
    })
    .join()
    .unwrap();
}

#[test]
fn established_flow_keeps_backend_when_another_is_removed() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        // Find flows on each backend.
        let mut on = std::collections::HashMap::new();
        for port in 41000..41100u16 {
            let (_, out, _) =
                e.dp.test_run(&packet(6, CLIENT, port, VIP, 31400, SYN, b""))
                    .unwrap();
            on.entry(parse(&out).dst).or_insert(port);
        }
        let (p1, p2) = (on[&B1], on[&B2]);
        // Remove B2: B1's flow continues; B2's established flow also keeps its entry.
        let mut p = plan();
        p.l4[0] = svc(31400, Proto::Tcp, NatMode::Snat, &[(B1, 1)]);
        e.dp.apply(&p).unwrap();
        let (_, out, _) =
            e.dp.test_run(&packet(6, CLIENT, p1, VIP, 31400, ACK, b"x"))
                .unwrap();
        assert_eq!(parse(&out).dst, B1);
        let (_, out, _) =
            e.dp.test_run(&packet(6, CLIENT, p2, VIP, 31400, ACK, b"x"))
                .unwrap();
        assert_eq!(parse(&out).dst, B2, "an established flow keeps its backend");
        // New flows only reach B1 now.
        for port in 42000..42050u16 {
            let (_, out, _) =
                e.dp.test_run(&packet(6, CLIENT, port, VIP, 31400, SYN, b""))
                    .unwrap();
            assert_eq!(parse(&out).dst, B1);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn learned_reply_hop_survives_a_failed_refresh() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let (_, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40010, VIP, 31401, SYN, b""))
                .unwrap();
        assert_eq!(parse(&out).dst, B1);
        // After the next-hop TTL the reply entry refreshes through the FIB, which has no route
        // to the client here: the hop learned from the client's packet must still be used.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        for _ in 0..2 {
            let reply = packet(6, B1, 9000, CLIENT, 40010, ACK, b"data");
            let (action, out, _) = e.dp.test_run(&reply).unwrap();
            assert_eq!(action, XDP_TX);
            let r = parse(&out);
            assert_eq!((r.src, r.dst, r.dmac), (VIP, CLIENT, CLIENT_MAC));
        }
    })
    .join()
    .unwrap();
}

#[test]
fn reply_to_unknown_nat_port_is_counted() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        // The test's ingress is lo, whose address is 127.0.0.1: a backend's reply to a SNAT port
        // the table does not know (evicted) passes and is counted as such.
        let p = packet(6, B1, 9000, [127, 0, 0, 1], 62000, ACK, b"");
        let (action, out, _) = e.dp.test_run(&p).unwrap();
        assert_eq!((action, out), (XDP_PASS, p));
        assert_eq!(verdict(&e, "pass_nat_miss"), 1);
        // Below the SNAT range it is just not ours.
        let p = packet(6, B1, 9000, [127, 0, 0, 1], 40000, ACK, b"");
        e.dp.test_run(&p).unwrap();
        assert_eq!(verdict(&e, "pass_nat_miss"), 1);
        assert_eq!(verdict(&e, "pass_not_ours"), 1);
    })
    .join()
    .unwrap();
}

#[test]
fn removing_a_service_drains_its_established_flows() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let (_, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40020, VIP, 31401, SYN, b""))
                .unwrap();
        assert_eq!(parse(&out).dst, B1);
        // The whole service goes away: its established flow keeps going during the drain
        // period, while new flows to the port are no longer ours.
        let mut p = plan();
        p.l4.retain(|s| s.port != 31401);
        e.dp.apply(&p).unwrap();
        let (action, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40020, VIP, 31401, ACK, b"x"))
                .unwrap();
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(parse(&out).dst, B1);
        let syn = packet(6, CLIENT, 40021, VIP, 31401, SYN, b"");
        let (action, out, _) = e.dp.test_run(&syn).unwrap();
        assert_eq!((action, out), (XDP_PASS, syn));
        // Expiry closes nothing before the drain period ends.
        e.dp.expire_drains().unwrap();
        let (action, _, _) =
            e.dp.test_run(&packet(6, CLIENT, 40020, VIP, 31401, ACK, b"y"))
                .unwrap();
        assert_eq!(action, XDP_REDIRECT);
    })
    .join()
    .unwrap();
}

#[test]
fn backend_next_hop_is_resolved_in_advance_and_refreshed() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        // The neighbour changes behind the data plane's back: flows keep the hop resolved at
        // apply (no per-packet or per-flow FIB lookup) until the next refresh.
        sh("ip neigh replace 198.18.1.2 lladdr 02:00:00:00:01:99 dev gwd0 nud permanent");
        let (action, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40030, VIP, 31401, SYN, b""))
                .unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let o = parse(&out);
        assert_eq!(
            (o.dst, o.dmac[5]),
            (B1, 0x02),
            "the hop resolved in advance"
        );
        assert_eq!(o.smac, NODE_MAC);

        assert_eq!(e.dp.refresh_next_hops().unwrap(), Vec::<IpAddr>::new());
        let (_, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40030, VIP, 31401, ACK, b"x"))
                .unwrap();
        assert_eq!(
            parse(&out).dmac[5],
            0x99,
            "an established flow follows the refreshed hop"
        );
        let (_, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40031, VIP, 31401, SYN, b""))
                .unwrap();
        assert_eq!(
            parse(&out).dmac[5],
            0x99,
            "a new flow takes the refreshed hop"
        );
        assert_eq!(verdict(&e, "fwd_new"), 2);
        assert_eq!(verdict(&e, "fwd_established"), 1);
    })
    .join()
    .unwrap();
}

#[test]
fn unresolved_backend_falls_back_to_a_fib_lookup_per_flow() {
    std::thread::spawn(|| {
        const B3: [u8; 4] = [198, 18, 1, 4];
        let mut p = plan();
        p.l4[1] = svc(31401, Proto::Tcp, NatMode::PreserveSource, &[(B3, 1)]);
        let mut e = env(&p);
        // No neighbour entry for B3: not resolved, and the per-flow lookup finds none either,
        // so the kernel gets the packet (and resolves the neighbour).
        assert_eq!(e.dp.refresh_next_hops().unwrap(), vec![IpAddr::from(B3)]);
        let syn = packet(6, CLIENT, 40040, VIP, 31401, SYN, b"");
        let (action, _, _) = e.dp.test_run(&syn).unwrap();
        assert_eq!(action, XDP_PASS);
        assert_eq!(verdict(&e, "pass_fib_miss"), 1);
        // The neighbour appears; before the next refresh, the flow's own FIB lookup finds it.
        sh("ip neigh replace 198.18.1.4 lladdr 02:00:00:00:01:04 dev gwd0 nud permanent");
        let (action, out, _) = e.dp.test_run(&syn).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let o = parse(&out);
        assert_eq!((o.dst, o.dmac[5], o.smac), (B3, 0x04, NODE_MAC));
        assert!(e.dp.refresh_next_hops().unwrap().is_empty());
    })
    .join()
    .unwrap();
}

#[test]
fn a_reused_backend_id_does_not_steer_an_older_flow() {
    std::thread::spawn(|| {
        const B3: [u8; 4] = [198, 18, 1, 4];
        let mut e = env(&plan());
        sh("ip neigh replace 198.18.1.4 lladdr 02:00:00:00:01:04 dev gwd0 nud permanent");
        let mut on_b2 = None;
        for port in 43000..43100u16 {
            let (_, out, _) =
                e.dp.test_run(&packet(6, CLIENT, port, VIP, 31400, SYN, b""))
                    .unwrap();
            if parse(&out).dst == B2 {
                on_b2 = Some(port);
                break;
            }
        }
        let port = on_b2.expect("a flow on B2");
        // B2 leaves (its id is freed), then B3 arrives and takes that id.
        let mut p = plan();
        p.l4[0] = svc(31400, Proto::Tcp, NatMode::Snat, &[(B1, 1)]);
        p.l4[3] = svc(5353, Proto::Udp, NatMode::Snat, &[(B1, 1)]);
        e.dp.apply(&p).unwrap();
        p.l4[0] = svc(31400, Proto::Tcp, NatMode::Snat, &[(B1, 1), (B3, 1)]);
        e.dp.apply(&p).unwrap();
        let (action, out, _) =
            e.dp.test_run(&packet(6, CLIENT, port, VIP, 31400, ACK, b"x"))
                .unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let o = parse(&out);
        assert_eq!(
            (o.dst, o.dmac[5]),
            (B2, 0x03),
            "the old flow keeps its backend and that backend's hop"
        );
    })
    .join()
    .unwrap();
}

/// SNAT ports of closed TCP flows are reused: more flows than the range holds reach one
/// backend when each closes (FIN both ways, or RST), while half-closed flows keep their ports
/// and new flows are refused once the range is full.
#[test]
fn snat_ports_of_closed_flows_are_reused() {
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;
    let range = (gateway_common::NAT_PORT_MAX - gateway_common::NAT_PORT_MIN) as usize + 1;
    let flows = range + range / 2;
    // How each flow ends: both FINs, the backend's RST, or only the client's FIN.
    #[derive(Clone, Copy, Debug)]
    enum End {
        Fins,
        Rst,
        HalfClose,
    }
    for end in [End::Fins, End::Rst, End::HalfClose] {
        std::thread::spawn(move || {
            let p = Plan {
                l4: vec![svc(31403, Proto::Tcp, NatMode::Snat, &[(B1, 1)])],
                ..Default::default()
            };
            let mut e = env(&p);
            let mut refused = 0;
            for i in 0..flows {
                let (addr, port) = (
                    [198, 18, 2 + (i / 50_000) as u8, 2],
                    1024 + (i % 50_000) as u16,
                );
                let syn = packet(6, addr, port, VIP, 31403, SYN, b"");
                let (action, out, _) = e.dp.test_run(&syn).unwrap();
                if action != XDP_REDIRECT {
                    refused += 1;
                    continue;
                }
                let nat = parse(&out).sport;
                let client_fin = packet(6, addr, port, VIP, 31403, FIN | ACK, b"");
                let backend_fin = packet(6, B1, 9000, NODE_B, nat, FIN | ACK, b"");
                let backend_rst = packet(6, B1, 9000, NODE_B, nat, RST, b"");
                let closing: &[&Vec<u8>] = match end {
                    End::Fins => &[&client_fin, &backend_fin],
                    End::Rst => &[&backend_rst],
                    End::HalfClose => &[&client_fin],
                };
                for pkt in closing {
                    let (action, _, _) = e.dp.test_run(pkt).unwrap();
                    assert_ne!(
                        action, XDP_PASS,
                        "{end:?}: flow {i} close packet not translated"
                    );
                }
            }
            match end {
                End::Fins | End::Rst => assert_eq!(
                    refused, 0,
                    "{end:?}: {refused} of {flows} flows refused although every earlier flow closed"
                ),
                End::HalfClose => {
                    assert!(
                        refused > 0 && verdict(&e, "drop_nat_exhausted") == refused as u64,
                        "{end:?}: half-closed flows must keep their ports: {refused} refused"
                    );
                }
            }
        })
        .join()
        .unwrap();
    }
}

/// The folded pseudo-header sum a sender offloading its checksum leaves in the field.
fn seed(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u16 {
    !csum(&[], pseudo(src, dst, proto, len))
}

/// A packet as a veth peer with TX checksum offload sends it: the L4 field holds the seed only.
fn partial(mut p: Vec<u8>) -> Vec<u8> {
    let proto = p[23];
    let (src, dst) = (p[26..30].to_vec(), p[30..34].to_vec());
    let l4_len = p.len() - 34;
    let off = 34 + if proto == 6 { 16 } else { 6 };
    p[off..off + 2].copy_from_slice(&seed(&src, &dst, proto, l4_len).to_be_bytes());
    p
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: c is a NUL-terminated name that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

#[test]
fn partial_checksums_from_a_veth_keep_a_valid_seed_in_generic_mode() {
    std::thread::spawn(|| {
        // Auto on a veth: generic mode, whose skb keeps CHECKSUM_PARTIAL through the redirect.
        let mut e = env_on(&plan(), &["gwd0"], Mode::Auto);
        assert_eq!(e.dp.ifmodes[0].mode, "generic", "{:?}", e.dp.ifmodes);
        assert_eq!(e.dp.ifmodes[0].driver, "veth");
        let gwd0 = ifindex("gwd0");
        for (proto, port) in [(6u8, 31400u16), (17, 5353)] {
            let flags = if proto == 6 { SYN } else { 0 };
            let pkt = partial(packet(proto, CLIENT, 40100, VIP, port, flags, b"data"));
            let (action, out, _) = e.dp.test_run_on(&pkt, gwd0).unwrap();
            assert_eq!(action, XDP_TX, "backend behind the ingress veth");
            let (src, dst) = (&out[26..30], &out[30..34]);
            assert_eq!(src, NODE_B, "snat");
            let off = 34 + if proto == 6 { 16 } else { 6 };
            let field = u16::from_be_bytes([out[off], out[off + 1]]);
            assert_eq!(
                field,
                seed(src, dst, proto, out.len() - 34),
                "proto {proto}: the seed must cover the rewritten pseudo-header (ports excluded)"
            );
            assert_eq!(csum(&out[14..34], 0), 0, "IPv4 header checksum");
        }
        // A full checksum arriving on the same veth stays a valid full checksum.
        let full = packet(6, CLIENT, 40101, VIP, 31400, SYN, b"x");
        let (action, out, _) = e.dp.test_run_on(&full, gwd0).unwrap();
        assert_eq!(action, XDP_TX);
        parse(&out);
        assert_eq!(verdict(&e, "pass_csum_partial"), 0);
        assert_eq!(verdict(&e, "fwd_new"), 3);
    })
    .join()
    .unwrap();
}

#[test]
fn partial_checksums_on_a_native_veth_are_passed_not_forwarded_broken() {
    std::thread::spawn(|| {
        let mut e = env_on(&plan(), &["gwd0"], Mode::Native);
        assert_eq!(e.dp.ifmodes[0].mode, "native");
        let gwd0 = ifindex("gwd0");
        let pkt = partial(packet(6, CLIENT, 40102, VIP, 31400, SYN, b""));
        let (action, out, _) = e.dp.test_run_on(&pkt, gwd0).unwrap();
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, pkt, "passed untouched");
        assert_eq!(verdict(&e, "pass_csum_partial"), 1);
        // Full checksums still take the fast path there.
        let full = packet(6, CLIENT, 40103, VIP, 31400, SYN, b"");
        let (action, out, _) = e.dp.test_run_on(&full, gwd0).unwrap();
        assert_eq!(action, XDP_TX);
        parse(&out);
        // The same partial packet arriving on an interface without the flag (lo here, as on a
        // real NIC) is treated as a full checksum: the heuristic is confined to veths.
        let (action, _, _) =
            e.dp.test_run(&partial(packet(6, CLIENT, 40104, VIP, 31400, SYN, b"")))
                .unwrap();
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(verdict(&e, "pass_csum_partial"), 1);
    })
    .join()
    .unwrap();
}

/// `p` with its IPv4 TTL set to `ttl` (header checksum recomputed).
fn with_ttl(mut p: Vec<u8>, ttl: u8) -> Vec<u8> {
    p[22] = ttl;
    p[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&p[14..34], 0);
    p[24..26].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn ttl_is_decremented_on_forward() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        // Both directions are a hop: the client's packet and the backend's reply.
        let (action, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40200, VIP, 31400, SYN, b""))
                .unwrap();
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(out[22], 63, "TTL 64 leaves as 63");
        let o = parse(&out); // the header checksum covers the new TTL
        let reply = packet(6, o.dst, 9000, NODE_B, o.sport, SYN | ACK, b"");
        let (action, out, _) = e.dp.test_run(&reply).unwrap();
        assert_eq!(action, XDP_TX);
        assert_eq!(out[22], 63);
        parse(&out);

        // TTL 2 is forwarded with 1 (1 and 0 get a time exceeded: `icmp`).
        let two = with_ttl(packet(6, CLIENT, 40200, VIP, 31400, ACK, b"a"), 2);
        let (action, out, _) = e.dp.test_run(&two).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(out[22], 1);
        parse(&out);
    })
    .join()
    .unwrap();
}

#[test]
fn packets_longer_than_the_egress_mtu_are_passed_rewritten_with_their_macs() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let (_, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40300, VIP, 31400, SYN, b""))
                .unwrap();
        let o = parse(&out);
        // 2,000 bytes of payload: more than gwd0's 1500-byte MTU (as a GSO packet would be).
        let big = packet(6, CLIENT, 40300, VIP, 31400, ACK, &[7u8; 2000]);
        let (action, out, _) = e.dp.test_run(&big).unwrap();
        assert_eq!(action, XDP_PASS, "an XDP redirect would drop it");
        let b = parse(&out);
        assert_eq!(
            (b.src, b.sport, b.dst, b.dport),
            (o.src, o.sport, o.dst, 9000)
        );
        assert_eq!(
            (b.dmac, b.smac),
            (NODE_MAC, CLIENT_MAC),
            "MACs kept for the stack"
        );
        assert_eq!(out[22], 64, "TTL left to the kernel's forwarding");
        assert_eq!(verdict(&e, "pass_oversize"), 1);
        // A full-size frame still takes the redirect.
        let (action, _, _) =
            e.dp.test_run(&packet(6, CLIENT, 40300, VIP, 31400, ACK, &[7u8; 1460]))
                .unwrap();
        assert_eq!(action, XDP_REDIRECT);
    })
    .join()
    .unwrap();
}
