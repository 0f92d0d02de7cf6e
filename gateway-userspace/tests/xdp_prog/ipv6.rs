//! Packet-level tests of the XDP program's IPv6 path through BPF_PROG_TEST_RUN (a module of
//! `xdp_prog`, so `cargo xtask kernels` runs them on the other kernels too), as the parent does
//! for IPv4: build a packet, fill the maps through the agent's own apply
//! path, run the program once, check the verdict, the output packet (addresses, ports, MACs,
//! hop limit, the L4 checksum over the IPv6 pseudo-header) and the counters.
//!
//! Each test runs in a private network namespace (unshare on its own thread) holding a veth
//! towards the backends (2001:db8:1::/64) with permanent neighbour entries, so FIB lookups
//! resolve without any traffic (the fixture's [`Net::Dual`]). Needs root; fails (does not
//! skip) without it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gateway::{
    dataplane::Mode,
    plan::{L4Service, LocalPort, NatMode, Plan, Proto},
};
use gateway_testpkt::{seed, v6 as frame6};

use super::{ifindex, service, sh, Env, Net, PinDir};
pub(super) use super::{run, verdict};
pub(super) use gateway_testpkt::{
    v6::{parse, Ext, NEXTHDR_DEST, NEXTHDR_ESP, NEXTHDR_FRAGMENT, NEXTHDR_HOP, NEXTHDR_ROUTING},
    ACK, CLIENT_MAC, NODE_MAC, SYN,
};

use super::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};

pub(super) const CLIENT: &str = "2001:db8::2";
pub(super) const VIP: &str = "2001:db8::1";
pub(super) const NODE_B: &str = "2001:db8:1::1";
pub(super) const B1: &str = "2001:db8:1::2";
pub(super) const B2: &str = "2001:db8:1::3";
const VIP4: [u8; 4] = [198, 18, 0, 1];
const B4: [u8; 4] = [198, 18, 1, 2];

pub(super) fn a6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// [`Net::Dual`], nothing attached.
pub(super) fn env(plan: &Plan) -> Env {
    env_on(plan, &[])
}

/// [`env`] with XDP attached (mode auto) to `ifaces` of the test namespace.
pub(super) fn env_on(plan: &Plan, ifaces: &[&str]) -> Env {
    Env::open(Net::Dual, PinDir::new("gwunit6"), plan, ifaces, Mode::Auto)
}

/// [`super::service`] with backends of weight 1.
pub(super) fn svc(
    vip: IpAddr,
    port: u16,
    proto: Proto,
    nat: NatMode,
    backends: &[IpAddr],
) -> L4Service {
    let backends: Vec<(IpAddr, u32)> = backends.iter().map(|&a| (a, 1)).collect();
    service(vip, port, proto, nat, &backends)
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn plan() -> Plan {
    let v = ip(VIP);
    Plan {
        l4: vec![
            svc(v, 31400, Proto::Tcp, NatMode::Snat, &[ip(B1), ip(B2)]),
            svc(v, 31401, Proto::Tcp, NatMode::PreserveSource, &[ip(B1)]),
            svc(v, 31402, Proto::Tcp, NatMode::Snat, &[]),
            svc(v, 5353, Proto::Udp, NatMode::Snat, &[ip(B2)]),
            // Dual stack: the same port on an IPv4 VIP, with an IPv4 backend.
            svc(
                Ipv4Addr::from(VIP4).into(),
                31400,
                Proto::Tcp,
                NatMode::Snat,
                &[Ipv4Addr::from(B4).into()],
            ),
        ],
        local: vec![LocalPort {
            vip: v,
            port: 80,
            origin: "test".into(),
        }],
        ..Default::default()
    }
}

// ---- packets ----

/// [`frame6::packet`] with the addresses written as text.
#[allow(
    clippy::too_many_arguments,
    reason = "the fields of the frame, in the order a packet lists them"
)]
pub(super) fn packet6(
    proto: u8,
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    tcp_flags: u8,
    payload: &[u8],
    exts: &[Ext],
) -> Vec<u8> {
    frame6::packet(
        proto,
        a6(src),
        sport,
        a6(dst),
        dport,
        tcp_flags,
        payload,
        exts,
    )
}

pub(super) fn tcp(
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    packet6(6, src, sport, dst, dport, flags, payload, &[])
}

pub(super) fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

// ---- tests ----

#[test]
fn ipv6_not_ours_passes_untouched() {
    run(|| {
        let mut e = env(&plan());
        for pkt in [
            tcp(CLIENT, 40000, VIP, 22, SYN, b""),
            packet6(17, CLIENT, 40000, VIP, 53, 0, b"q", &[]),
            tcp(CLIENT, 40000, "2001:db8::9", 31400, SYN, b""),
        ] {
            let (action, out, _) = e.dp.test_run(&pkt).unwrap();
            assert_eq!(action, XDP_PASS);
            assert_eq!(out, pkt, "a packet we do not own must not change");
        }
        assert_eq!(verdict(&e, "pass_not_ours"), 3);
    })
}

#[test]
fn ipv6_snat_new_flow_reply_and_established() {
    run(|| {
        let mut e = env(&plan());
        let syn = tcp(CLIENT, 40001, VIP, 31400, SYN, b"");
        let (action, out, _) = e.dp.test_run(&syn).unwrap();
        assert_eq!(action, XDP_REDIRECT, "out of the backend-facing interface");
        let o = parse(&out);
        assert!(
            o.dst == v6(B1) || o.dst == v6(B2),
            "backend chosen: {}",
            o.dst
        );
        assert_eq!(o.dport, 9000);
        assert_eq!(
            o.src,
            v6(NODE_B),
            "snat: the egress interface's IPv6 address"
        );
        assert!(
            o.sport >= gateway_common::NAT_PORT_MIN,
            "snat port {}",
            o.sport
        );
        assert_eq!(o.hop_limit, 63, "a hop");
        assert_eq!(o.smac, NODE_MAC);
        assert_eq!(o.dmac[5], if o.dst == v6(B1) { 2 } else { 3 });

        // A retransmitted SYN: same backend, same port.
        let (_, out2, _) = e.dp.test_run(&syn).unwrap();
        let o2 = parse(&out2);
        assert_eq!((o2.dst, o2.sport), (o.dst, o.sport));

        let data = tcp(CLIENT, 40001, VIP, 31400, ACK, b"hello");
        let (action, out3, _) = e.dp.test_run(&data).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let o3 = parse(&out3);
        assert_eq!((o3.dst, o3.sport), (o.dst, o.sport));
        assert_eq!(&out3[out3.len() - 5..], b"hello");

        // The backend's reply to the NAT port goes back as VIP -> client.
        let reply = tcp(&o.dst.to_string(), 9000, NODE_B, o.sport, SYN | ACK, b"");
        let (action, out4, _) = e.dp.test_run(&reply).unwrap();
        assert_eq!(action, XDP_TX);
        let r = parse(&out4);
        assert_eq!(
            (r.src, r.sport, r.dst, r.dport),
            (v6(VIP), 31400, v6(CLIENT), 40001)
        );
        assert_eq!(r.dmac, CLIENT_MAC);
        assert_eq!(r.hop_limit, 63);

        let st = e.dp.stats().unwrap();
        assert_eq!(st.verdicts["fwd_new"].packets, 2);
        assert_eq!(st.verdicts["fwd_established"].packets, 2);
        assert_eq!(st.services["[2001:db8::1]:31400/tcp"].packets, 4);
        assert_eq!(st.backends[&format!("[{}]:9000", o.dst)].packets, 4);
    })
}

#[test]
fn ipv6_preserve_source_keeps_client_address() {
    run(|| {
        let mut e = env(&plan());
        let (action, out, _) =
            e.dp.test_run(&tcp(CLIENT, 40002, VIP, 31401, SYN, b""))
                .unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let o = parse(&out);
        assert_eq!(
            (o.src, o.sport, o.dst, o.dport),
            (v6(CLIENT), 40002, v6(B1), 9000)
        );
        let reply = tcp(B1, 9000, CLIENT, 40002, SYN | ACK, b"");
        let (action, out, _) = e.dp.test_run(&reply).unwrap();
        assert_eq!(action, XDP_TX);
        let r = parse(&out);
        assert_eq!(
            (r.src, r.sport, r.dst, r.dport),
            (v6(VIP), 31401, v6(CLIENT), 40002)
        );
    })
}

#[test]
fn ipv6_udp_is_translated_both_ways() {
    run(|| {
        let mut e = env(&plan());
        let p = packet6(17, CLIENT, 50000, VIP, 5353, 0, b"query", &[]);
        let (action, out, _) = e.dp.test_run(&p).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let o = parse(&out);
        assert_eq!((o.dst, o.dport, o.src), (v6(B2), 9000, v6(NODE_B)));
        let reply = packet6(17, B2, 9000, NODE_B, o.sport, 0, b"answer", &[]);
        let (action, out, _) = e.dp.test_run(&reply).unwrap();
        assert_eq!(action, XDP_TX);
        let r = parse(&out);
        assert_eq!(
            (r.src, r.sport, r.dst, r.dport),
            (v6(VIP), 5353, v6(CLIENT), 50000)
        );
    })
}

#[test]
fn ipv6_extension_headers_are_walked_and_kept() {
    run(|| {
        let mut e = env(&plan());
        // Hop-by-hop (a PadN option), a type-0-free routing header with no segments left, and
        // destination options of 16 bytes: all walked, all kept as they were.
        let hop = Ext(NEXTHDR_HOP, vec![1, 4, 0, 0, 0, 0]);
        let routing = Ext(NEXTHDR_ROUTING, vec![4, 0, 0, 0, 0, 0]);
        let dest = Ext(
            NEXTHDR_DEST,
            vec![1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        for (i, exts) in [vec![hop], vec![routing, dest]].into_iter().enumerate() {
            let port = 40100 + i as u16;
            let syn = packet6(6, CLIENT, port, VIP, 31401, SYN, b"", &exts);
            let (action, out, _) = e.dp.test_run(&syn).unwrap();
            assert_eq!(action, XDP_REDIRECT, "extension headers {i}");
            let o = parse(&out);
            assert_eq!((o.src, o.dst, o.dport), (v6(CLIENT), v6(B1), 9000));
            assert_eq!(o.hop_limit, 63);
            let hdrs = 54..out.len() - 20;
            assert_eq!(
                &out[hdrs.clone()],
                &syn[hdrs],
                "extension headers unchanged"
            );
            // The same flow's later packets (and UDP behind the same headers) too.
            let data = packet6(6, CLIENT, port, VIP, 31401, ACK, b"xyz", &exts);
            let (action, out, _) = e.dp.test_run(&data).unwrap();
            assert_eq!(action, XDP_REDIRECT);
            assert_eq!(parse(&out).dst, v6(B1));
            let udp = packet6(17, CLIENT, port, VIP, 5353, 0, b"q", &exts);
            let (action, out, _) = e.dp.test_run(&udp).unwrap();
            assert_eq!(action, XDP_REDIRECT);
            assert_eq!(parse(&out).dst, v6(B2));
        }
        assert_eq!(verdict(&e, "fwd_new"), 4);
        assert_eq!(verdict(&e, "fwd_established"), 2);
    })
}

#[test]
fn ipv6_fragments_and_unknown_headers_pass_counted() {
    run(|| {
        let mut e = env(&plan());
        // A first fragment (offset 0, more fragments), directly and behind hop-by-hop.
        let frag = Ext(NEXTHDR_FRAGMENT, vec![0, 1, 0, 0, 0, 7]);
        let frag2 = Ext(NEXTHDR_FRAGMENT, vec![0, 1, 0, 0, 0, 8]);
        let hop = Ext(NEXTHDR_HOP, vec![1, 4, 0, 0, 0, 0]);
        let esp = Ext(NEXTHDR_ESP, vec![0, 0, 0, 0, 0, 0]);
        let hops: Vec<Ext> = (0..5)
            .map(|_| Ext(NEXTHDR_DEST, vec![1, 4, 0, 0, 0, 0]))
            .collect();
        let cases = [
            (
                packet6(6, CLIENT, 40200, VIP, 31400, SYN, b"", &[frag]),
                "pass_fragment",
            ),
            (
                packet6(17, CLIENT, 40201, VIP, 5353, 0, b"q", &[hop, frag2]),
                "pass_fragment",
            ),
            (
                packet6(6, CLIENT, 40202, VIP, 31400, SYN, b"", &[esp]),
                "pass_unparsed",
            ),
            // More extension headers than the parser walks.
            (
                packet6(6, CLIENT, 40203, VIP, 31400, SYN, b"", &hops),
                "pass_unparsed",
            ),
        ];
        for (pkt, _) in &cases {
            let (action, out, _) = e.dp.test_run(pkt).unwrap();
            assert_eq!(action, XDP_PASS);
            assert_eq!(&out, pkt, "passed untouched");
        }
        assert_eq!(verdict(&e, "pass_fragment"), 2);
        assert_eq!(verdict(&e, "pass_unparsed"), 2);
        // Truncated: cut inside the IPv6 header, inside an extension header, inside TCP.
        let good = packet6(
            6,
            CLIENT,
            40204,
            VIP,
            31400,
            SYN,
            b"",
            &[Ext(NEXTHDR_HOP, vec![1, 4, 0, 0, 0, 0])],
        );
        for cut in [30, 56, 70] {
            let (action, _, _) = e.dp.test_run(&good[..cut]).unwrap();
            assert_eq!(action, XDP_PASS, "cut at {cut}");
        }
        assert_eq!(verdict(&e, "pass_unparsed"), 5);
        assert_eq!(verdict(&e, "fwd_new"), 0);
    })
}

#[test]
fn ipv6_empty_service_drops_and_l7_port_goes_local() {
    run(|| {
        let mut e = env(&plan());
        let p = tcp(CLIENT, 40400, VIP, 80, SYN, b"");
        let (action, out, _) = e.dp.test_run(&p).unwrap();
        assert_eq!((action, out), (XDP_PASS, p));
        assert_eq!(verdict(&e, "pass_local"), 1);
        let (action, _, _) =
            e.dp.test_run(&tcp(CLIENT, 40401, VIP, 31402, SYN, b""))
                .unwrap();
        assert_eq!(action, XDP_DROP);
        assert_eq!(verdict(&e, "drop_no_backend"), 1);
    })
}

#[test]
fn ipv6_reply_to_unknown_nat_port_of_the_node_is_counted() {
    run(|| {
        let mut e = env(&plan());
        let p = tcp(B1, 9000, NODE_B, 62000, ACK, b"");
        let (action, out, _) = e.dp.test_run(&p).unwrap();
        assert_eq!((action, out), (XDP_PASS, p));
        assert_eq!(verdict(&e, "pass_nat_miss"), 1);
    })
}

/// Both families on one port: each VIP's flows reach its own family's backends, through its
/// own tables, and the IPv4 path is untouched by the IPv6 one.
#[test]
fn dual_stack_service_keeps_families_apart() {
    run(|| {
        let mut e = env(&plan());
        let (action, out, _) =
            e.dp.test_run(&tcp(CLIENT, 40500, VIP, 31400, SYN, b""))
                .unwrap();
        assert_eq!(action, XDP_REDIRECT);
        assert!(parse(&out).dst.segments()[0] == 0x2001);
        // IPv4 to the same port of the IPv4 VIP (minimal IPv4 SYN, checksums not checked by
        // the program's parse, only updated).
        let mut p4 = gateway_testpkt::v4::packet(6, [198, 18, 0, 2], 40500, VIP4, 31400, SYN, b"");
        p4[24..26].copy_from_slice(&[0, 0]);
        p4[50..52].copy_from_slice(&[0, 0]);
        let (action, out, _) = e.dp.test_run(&p4).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(&out[30..34], &B4, "IPv4 VIP -> IPv4 backend");
        assert_eq!(
            out[0..6],
            [2, 0, 0, 0, 1, 0x42],
            "to the IPv4 backend's neighbour"
        );
        let st = e.dp.stats().unwrap();
        assert_eq!(st.services["[2001:db8::1]:31400/tcp"].packets, 1);
        assert_eq!(st.services["198.18.0.1:31400/tcp"].packets, 1);
        assert_eq!(st.verdicts["fwd_new"].packets, 2);
    })
}

#[test]
fn ipv6_backends_resolve_and_unresolved_ones_are_reported() {
    run(|| {
        let mut p = plan();
        p.l4[1] = svc(
            ip(VIP),
            31401,
            Proto::Tcp,
            NatMode::PreserveSource,
            &[ip("2001:db8:1::4")],
        );
        let mut e = env(&p);
        assert_eq!(e.dp.refresh_next_hops().unwrap(), vec![ip("2001:db8:1::4")]);
        let syn = tcp(CLIENT, 40600, VIP, 31401, SYN, b"");
        let (action, _, _) = e.dp.test_run(&syn).unwrap();
        assert_eq!(action, XDP_PASS);
        assert_eq!(verdict(&e, "pass_fib_miss"), 1);
        sh("ip -6 neigh replace 2001:db8:1::4 lladdr 02:00:00:00:01:04 dev gwd0 nud permanent");
        let (action, out, _) = e.dp.test_run(&syn).unwrap();
        assert_eq!(action, XDP_REDIRECT, "the flow's own FIB lookup finds it");
        let o = parse(&out);
        assert_eq!(
            (o.dst, o.dmac[5], o.smac),
            (v6("2001:db8:1::4"), 0x04, NODE_MAC)
        );
        assert!(e.dp.refresh_next_hops().unwrap().is_empty());
    })
}

/// A veth peer with TX checksum offload leaves only the IPv6 pseudo-header sum in the L4
/// field; in generic mode the rewritten packet must carry the seed of the new pseudo-header.
#[test]
fn ipv6_partial_checksums_keep_a_valid_seed_in_generic_mode() {
    run(|| {
        let mut e = env_on(&plan(), &["gwd0"]);
        assert_eq!(e.dp.ifmodes[0].mode, "generic");
        let gwd0 = ifindex("gwd0");
        for (proto, port) in [(6u8, 31400u16), (17, 5353)] {
            let flags = if proto == 6 { SYN } else { 0 };
            let mut pkt = packet6(proto, CLIENT, 40700, VIP, port, flags, b"data", &[]);
            let off = 54 + if proto == 6 { 16 } else { 6 };
            let l4_len = pkt.len() - 54;
            let seed = |p: &[u8], len: usize| seed(&p[22..38], &p[38..54], proto, len);
            let s = seed(&pkt, l4_len);
            pkt[off..off + 2].copy_from_slice(&s.to_be_bytes());
            let (action, out, _) = e.dp.test_run_on(&pkt, gwd0).unwrap();
            assert_eq!(action, XDP_TX, "backend behind the ingress veth");
            assert_eq!(&out[22..38], &a6(NODE_B), "snat");
            let field = u16::from_be_bytes([out[off], out[off + 1]]);
            assert_eq!(
                field,
                seed(&out, out.len() - 54),
                "proto {proto}: the seed covers the rewritten pseudo-header"
            );
        }
        assert_eq!(verdict(&e, "pass_csum_partial"), 0);
        assert_eq!(verdict(&e, "fwd_new"), 2);
    })
}
