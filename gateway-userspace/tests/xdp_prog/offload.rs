//! What the NIC or the stack does for the sender: partial (offloaded) checksums from a veth in
//! generic and native mode, and packets longer than the egress MTU (GSO-sized).

use gateway::dataplane::Mode;

use super::{
    csum, env, env_on, ifindex, packet, parse, partial, plan, seed, verdict, ACK, CLIENT,
    CLIENT_MAC, NODE_B, NODE_MAC, SYN, VIP, XDP_PASS, XDP_REDIRECT, XDP_TX,
};

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
