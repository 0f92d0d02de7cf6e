//! ICMP and ICMPv6 through the XDP program (a module of `xdp_prog`, so `cargo xtask kernels`
//! runs it on the other kernels too): errors about a forwarded flow translated each way in both
//! families and both NAT modes (outer and quoted headers, every checksum checked from scratch),
//! the time exceeded sent for an expiring packet (TTL 1 / hop limit 1) and its rate limit, and
//! VLAN-tagged frames passed and counted.

use std::net::Ipv6Addr;

use super::ipv6 as v6;
use super::{
    env, env_on, ifindex, packet, parse, plan, verdict, with_ttl, ACK, B1, B2, CLIENT, CLIENT_MAC,
    NODE_B, NODE_MAC, SYN, VIP, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
};
use gateway::dataplane::Mode;
use gateway_testpkt::{
    v4::{icmp as icmp4, parse_icmp as parse_icmp4, quoted as quoted4},
    v6::{self as frame6, parse_icmp as parse_icmp6, quoted as quoted6},
    vlan,
};

/// A router on the backends' side, and one on the clients' side.
const R: [u8; 4] = [198, 18, 1, 9];
const CR: [u8; 4] = [198, 18, 0, 9];
const R6: &str = "2001:db8:1::9";
const CR6: &str = "2001:db8::9";
/// The "rest of header" of a fragmentation needed / packet too big: the next hop's MTU.
const MTU4: [u8; 4] = [0, 0, 0x05, 0x78];
const MTU6: [u8; 4] = [0, 0, 0x05, 0x00];

// ---- IPv4 ----

#[test]
fn icmp_errors_about_a_snat_flow_are_translated_both_ways() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let (_, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40001, VIP, 31400, SYN, b""))
                .unwrap();
        let o = parse(&out);
        assert_eq!(o.src, NODE_B);
        // A router towards the backend cannot forward the segment: fragmentation needed, sent
        // to the node's SNAT address, quoting the whole segment, then only 8 bytes of it.
        for qlen in [out.len() - 14, 28] {
            let err = icmp4(R, NODE_B, 64, 3, 4, MTU4, &out[14..14 + qlen]);
            let (action, got, _) = e.dp.test_run(&err).unwrap();
            assert_eq!(action, XDP_TX, "to the client, behind the ingress");
            let m = parse_icmp4(&got);
            assert_eq!(
                (m.src, m.dst, m.hops, m.ty, m.code, m.rest),
                (VIP, CLIENT, 63, 3, 4, MTU4),
                "from the VIP (the outer source is un-DNATed, as Linux and IPVS do)"
            );
            assert_eq!((m.dmac, m.smac), (CLIENT_MAC, NODE_MAC));
            assert_eq!(m.quote.len(), qlen);
            assert_eq!(quoted4(&m.quote), (CLIENT, 40001, VIP, 31400));
        }
        // The client's router cannot take the backend's reply: the error goes to the VIP and
        // is sent on to the backend, from the node's SNAT address, quoting the reply as the
        // backend sent it.
        let reply = packet(6, o.dst, 9000, NODE_B, o.sport, SYN | ACK, b"");
        let (_, rout, _) = e.dp.test_run(&reply).unwrap();
        let err = icmp4(CR, VIP, 64, 3, 4, MTU4, &rout[14..]);
        let (action, got, _) = e.dp.test_run(&err).unwrap();
        assert_eq!(action, XDP_REDIRECT, "out of the backends' interface");
        let m = parse_icmp4(&got);
        assert_eq!((m.src, m.dst, m.hops), (NODE_B, o.dst, 63));
        assert_eq!(m.dmac[5], if o.dst == B1 { 2 } else { 3 });
        assert_eq!(quoted4(&m.quote), (o.dst, 9000, NODE_B, o.sport));
        assert_eq!(verdict(&e, "fwd_icmp_error"), 3);
    })
    .join()
    .unwrap();
}

#[test]
fn icmp_errors_about_a_preserve_source_flow_keep_the_client_address() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let (_, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40002, VIP, 31401, SYN, b""))
                .unwrap();
        let o = parse(&out);
        assert_eq!((o.src, o.dst), (CLIENT, B1));
        // Towards the backend: the error is addressed to the client itself and routed through
        // the gateway (preserve-source backends route clients through it).
        let err = icmp4(R, CLIENT, 64, 3, 4, MTU4, &out[14..]);
        let (action, got, _) = e.dp.test_run(&err).unwrap();
        assert_eq!(action, XDP_TX);
        let m = parse_icmp4(&got);
        assert_eq!((m.src, m.dst, m.rest), (VIP, CLIENT, MTU4));
        assert_eq!(quoted4(&m.quote), (CLIENT, 40002, VIP, 31401));
        // Towards the client: the source is not rewritten (no SNAT), the destination is.
        let reply = packet(6, B1, 9000, CLIENT, 40002, SYN | ACK, b"");
        let (_, rout, _) = e.dp.test_run(&reply).unwrap();
        let err = icmp4(CR, VIP, 64, 3, 4, MTU4, &rout[14..]);
        let (action, got, _) = e.dp.test_run(&err).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let m = parse_icmp4(&got);
        assert_eq!((m.src, m.dst, m.dmac[5]), (CR, B1, 2));
        assert_eq!(quoted4(&m.quote), (B1, 9000, CLIENT, 40002));
        assert_eq!(verdict(&e, "fwd_icmp_error"), 2);
    })
    .join()
    .unwrap();
}

#[test]
fn icmp_port_unreachable_from_a_udp_backend_reaches_the_client() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let (_, out, _) =
            e.dp.test_run(&packet(17, CLIENT, 50000, VIP, 5353, 0, b"query"))
                .unwrap();
        let o = parse(&out);
        assert_eq!(o.dst, B2);
        let err = icmp4(B2, NODE_B, 64, 3, 3, [0; 4], &out[14..]);
        let (action, got, _) = e.dp.test_run(&err).unwrap();
        assert_eq!(action, XDP_TX);
        let m = parse_icmp4(&got);
        assert_eq!((m.src, m.dst, m.ty, m.code), (VIP, CLIENT, 3, 3));
        assert_eq!(quoted4(&m.quote), (CLIENT, 50000, VIP, 5353));
        // A zero UDP checksum in the quote stays zero.
        let mut q = out[14..].to_vec();
        q[26..28].copy_from_slice(&[0, 0]);
        let (_, got, _) =
            e.dp.test_run(&icmp4(B2, NODE_B, 64, 3, 3, [0; 4], &q))
                .unwrap();
        let m = parse_icmp4(&got);
        assert_eq!(&m.quote[26..28], &[0, 0]);
        assert_eq!(&m.quote[12..16], &CLIENT);
    })
    .join()
    .unwrap();
}

#[test]
fn icmp_not_about_our_flows_passes_untouched() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let (_, out, _) =
            e.dp.test_run(&packet(6, CLIENT, 40003, VIP, 31400, SYN, b""))
                .unwrap();
        // An error quoting a flow the table does not know (another port), an echo request,
        // and an error about a known flow that expires here itself.
        let mut unknown = out[14..].to_vec();
        unknown[20..22].copy_from_slice(&12345u16.to_be_bytes());
        let cases = [
            (icmp4(R, NODE_B, 64, 3, 4, MTU4, &unknown), "pass_not_ours"),
            (
                icmp4(CLIENT, VIP, 64, 8, 0, [0, 1, 0, 1], b"ping"),
                "pass_unparsed",
            ),
            (
                icmp4(R, NODE_B, 1, 3, 4, MTU4, &out[14..]),
                "pass_ttl_expired",
            ),
        ];
        for (pkt, reason) in cases {
            let (action, got, _) = e.dp.test_run(&pkt).unwrap();
            assert_eq!((action, &got), (XDP_PASS, &pkt), "{reason}");
            assert_eq!(verdict(&e, reason), 1, "{reason}");
        }
        assert_eq!(verdict(&e, "fwd_icmp_error"), 0);
    })
    .join()
    .unwrap();
}

#[test]
fn expiring_packets_get_a_time_exceeded() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        // TTL 2 still goes through with 1.
        let two = with_ttl(packet(6, CLIENT, 40200, VIP, 31400, SYN, b""), 2);
        let (action, out, _) = e.dp.test_run(&two).unwrap();
        assert_eq!((action, out[22]), (XDP_REDIRECT, 1));
        // An established flow's packet, a new flow's SYN, a UDP datagram with TTL 0, and a
        // segment longer than the quote: each answered from the VIP (no interface address
        // on the test's loopback ingress) quoting as much as fits in 576 bytes, in words.
        for (pkt, quote) in [
            (
                with_ttl(packet(6, CLIENT, 40200, VIP, 31400, ACK, b"ab"), 1),
                40,
            ),
            (
                with_ttl(packet(6, CLIENT, 40201, VIP, 31400, SYN, b""), 1),
                40,
            ),
            (
                with_ttl(packet(17, CLIENT, 40202, VIP, 5353, 0, b"q"), 0),
                28,
            ),
            (
                with_ttl(packet(6, CLIENT, 40200, VIP, 31400, ACK, &[5; 1000]), 1),
                548,
            ),
        ] {
            let (action, got, _) = e.dp.test_run(&pkt).unwrap();
            assert_eq!(action, XDP_TX);
            let m = parse_icmp4(&got);
            assert_eq!(
                (m.src, m.dst, m.hops, m.ty, m.code),
                (VIP, CLIENT, 64, 11, 0)
            );
            assert_eq!(
                (m.dmac, m.smac),
                (CLIENT_MAC, NODE_MAC),
                "back to the sender's hop"
            );
            assert_eq!(m.rest, [0; 4]);
            assert_eq!(
                m.quote,
                pkt[14..14 + quote],
                "the packet as it came, cut to {quote}"
            );
        }
        assert_eq!(verdict(&e, "tx_time_exceeded"), 4);
        assert_eq!(verdict(&e, "pass_ttl_expired"), 0);
    })
    .join()
    .unwrap();
}

#[test]
fn time_exceeded_comes_from_the_ingress_address_and_is_rate_limited() {
    std::thread::spawn(|| {
        let mut e = env_on(&plan(), &["gwd0"], Mode::Auto);
        let gwd0 = ifindex("gwd0");
        let pkt = with_ttl(packet(6, CLIENT, 40210, VIP, 31400, SYN, b""), 1);
        let (action, got, _) = e.dp.test_run_on(&pkt, gwd0).unwrap();
        assert_eq!(action, XDP_TX);
        assert_eq!(
            parse_icmp4(&got).src,
            NODE_B,
            "the address of the ingress interface"
        );
        // The kernel's defaults: bursts of 50, then 1,000 a second, per CPU.
        let start = std::time::Instant::now();
        let n = 600;
        let mut sent = 1;
        for _ in 0..n {
            let (action, _, _) = e.dp.test_run_on(&pkt, gwd0).unwrap();
            if action == XDP_TX {
                sent += 1;
            } else {
                assert_eq!(action, XDP_DROP);
            }
        }
        let ms = start.elapsed().as_millis() as u64;
        let cpus = std::thread::available_parallelism().unwrap().get() as u64;
        // At most a burst per CPU the thread ran on plus what the time since earned; on a
        // fast machine (600 calls in a few ms) that is well below 600, so some were dropped.
        let bound = cpus * (50 + ms + 1);
        assert!(
            sent <= bound,
            "{sent} of {n} sent in {ms} ms (at most {bound})"
        );
        assert_eq!(verdict(&e, "tx_time_exceeded"), sent);
        assert_eq!(verdict(&e, "drop_ttl_expired"), n + 1 - sent);
    })
    .join()
    .unwrap();
}

#[test]
fn vlan_tagged_frames_pass_counted() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let plain = packet(6, CLIENT, 40300, VIP, 31400, SYN, b"");
        let dot1q = vlan([0x81, 0x00], &plain);
        let qinq = vlan([0x88, 0xa8], &dot1q);
        for f in [&dot1q, &qinq] {
            let (action, got, _) = e.dp.test_run(f).unwrap();
            assert_eq!((action, &got), (XDP_PASS, f));
        }
        assert_eq!(verdict(&e, "pass_vlan"), 2);
        assert_eq!(verdict(&e, "fwd_new"), 0);
    })
    .join()
    .unwrap();
}

// ---- IPv6 ----

/// [`frame6::icmp`] with the addresses written as text.
fn icmp6(src: &str, dst: &str, hops: u8, ty: u8, code: u8, rest: [u8; 4], quote: &[u8]) -> Vec<u8> {
    frame6::icmp(v6::a6(src), v6::a6(dst), hops, ty, code, rest, quote)
}

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn icmpv6_packet_too_big_is_translated_both_ways_with_snat() {
    v6::run(|| {
        let mut e = v6::env(&v6::plan());
        let (_, out, _) =
            e.dp.test_run(&v6::tcp(v6::CLIENT, 40001, v6::VIP, 31400, v6::SYN, b""))
                .unwrap();
        let o = v6::parse(&out);
        assert_eq!(o.src, a(v6::NODE_B));
        for qlen in [out.len() - 14, 48] {
            let err = icmp6(R6, v6::NODE_B, 64, 2, 0, MTU6, &out[14..14 + qlen]);
            let (action, got, _) = e.dp.test_run(&err).unwrap();
            assert_eq!(action, XDP_TX);
            let m = parse_icmp6(&got);
            assert_eq!(
                (m.src, m.dst, m.hops, m.ty, m.code, m.rest),
                (a(v6::VIP), a(v6::CLIENT), 63, 2, 0, MTU6)
            );
            assert_eq!(m.dmac, v6::CLIENT_MAC);
            assert_eq!(m.quote.len(), qlen);
            assert_eq!(quoted6(&m.quote), (a(v6::CLIENT), 40001, a(v6::VIP), 31400));
        }
        let reply = v6::tcp(
            &o.dst.to_string(),
            9000,
            v6::NODE_B,
            o.sport,
            v6::SYN | v6::ACK,
            b"",
        );
        let (_, rout, _) = e.dp.test_run(&reply).unwrap();
        let err = icmp6(CR6, v6::VIP, 64, 2, 0, MTU6, &rout[14..]);
        let (action, got, _) = e.dp.test_run(&err).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let m = parse_icmp6(&got);
        assert_eq!((m.src, m.dst, m.hops), (a(v6::NODE_B), o.dst, 63));
        assert_eq!(m.dmac[5], if o.dst == a(v6::B1) { 2 } else { 3 });
        assert_eq!(quoted6(&m.quote), (o.dst, 9000, a(v6::NODE_B), o.sport));
        assert_eq!(v6::verdict(&e, "fwd_icmp_error"), 3);
    })
}

#[test]
fn icmpv6_errors_about_a_preserve_source_flow() {
    v6::run(|| {
        let mut e = v6::env(&v6::plan());
        let (_, out, _) =
            e.dp.test_run(&v6::tcp(v6::CLIENT, 40002, v6::VIP, 31401, v6::SYN, b""))
                .unwrap();
        let o = v6::parse(&out);
        assert_eq!((o.src, o.dst), (a(v6::CLIENT), a(v6::B1)));
        // Destination unreachable (address unreachable) from a router towards the backend.
        let err = icmp6(R6, v6::CLIENT, 64, 1, 3, [0; 4], &out[14..]);
        let (action, got, _) = e.dp.test_run(&err).unwrap();
        assert_eq!(action, XDP_TX);
        let m = parse_icmp6(&got);
        assert_eq!(
            (m.src, m.dst, m.ty, m.code),
            (a(v6::VIP), a(v6::CLIENT), 1, 3)
        );
        assert_eq!(quoted6(&m.quote), (a(v6::CLIENT), 40002, a(v6::VIP), 31401));
        let reply = v6::tcp(v6::B1, 9000, v6::CLIENT, 40002, v6::SYN | v6::ACK, b"");
        let (_, rout, _) = e.dp.test_run(&reply).unwrap();
        let err = icmp6(CR6, v6::VIP, 64, 2, 0, MTU6, &rout[14..]);
        let (action, got, _) = e.dp.test_run(&err).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let m = parse_icmp6(&got);
        assert_eq!((m.src, m.dst, m.dmac[5]), (a(CR6), a(v6::B1), 2));
        assert_eq!(quoted6(&m.quote), (a(v6::B1), 9000, a(v6::CLIENT), 40002));
        // Not ours: an error quoting an unknown flow; an echo request; a neighbour solicitation.
        let mut unknown = out[14..].to_vec();
        unknown[40..42].copy_from_slice(&12345u16.to_be_bytes());
        for (pkt, reason) in [
            (
                icmp6(R6, v6::CLIENT, 64, 1, 3, [0; 4], &unknown),
                "pass_not_ours",
            ),
            (
                icmp6(v6::CLIENT, v6::VIP, 64, 128, 0, [0, 1, 0, 1], b"ping"),
                "pass_unparsed",
            ),
            (
                icmp6(v6::CLIENT, v6::VIP, 255, 135, 0, [0; 4], &v6::a6(v6::VIP)),
                "pass_unparsed",
            ),
        ] {
            let (action, got, _) = e.dp.test_run(&pkt).unwrap();
            assert_eq!((action, &got), (XDP_PASS, &pkt), "{reason}");
        }
        assert_eq!(v6::verdict(&e, "pass_not_ours"), 1);
        assert_eq!(v6::verdict(&e, "pass_unparsed"), 2);
        assert_eq!(v6::verdict(&e, "fwd_icmp_error"), 2);
    })
}

#[test]
fn expiring_ipv6_packets_get_a_time_exceeded() {
    v6::run(|| {
        let mut e = v6::env(&v6::plan());
        let hops = |mut p: Vec<u8>, h: u8| {
            p[21] = h;
            p
        };
        let two = hops(v6::tcp(v6::CLIENT, 40300, v6::VIP, 31401, v6::SYN, b""), 2);
        let (action, out, _) = e.dp.test_run(&two).unwrap();
        assert_eq!((action, v6::parse(&out).hop_limit), (XDP_REDIRECT, 1));
        for (pkt, quote) in [
            (
                hops(v6::tcp(v6::CLIENT, 40300, v6::VIP, 31401, v6::ACK, b"a"), 1),
                60,
            ),
            (
                hops(v6::tcp(v6::CLIENT, 40301, v6::VIP, 31401, v6::SYN, b""), 1),
                60,
            ),
            (
                hops(
                    v6::packet6(17, v6::CLIENT, 40302, v6::VIP, 5353, 0, b"q", &[]),
                    0,
                ),
                48,
            ),
            (
                hops(
                    v6::tcp(v6::CLIENT, 40300, v6::VIP, 31401, v6::ACK, &[5; 1400]),
                    1,
                ),
                1232,
            ),
        ] {
            let (action, got, _) = e.dp.test_run(&pkt).unwrap();
            assert_eq!(action, XDP_TX);
            let m = parse_icmp6(&got);
            assert_eq!(
                (m.src, m.dst, m.hops, m.ty, m.code),
                (a(v6::VIP), a(v6::CLIENT), 64, 3, 0)
            );
            assert_eq!((m.dmac, m.smac), (v6::CLIENT_MAC, v6::NODE_MAC));
            assert_eq!(
                m.quote,
                pkt[14..14 + quote],
                "quoted up to the IPv6 minimum MTU"
            );
        }
        assert_eq!(v6::verdict(&e, "tx_time_exceeded"), 4);
    })
}
