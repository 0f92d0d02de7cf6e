//! Forwarding through the program, one packet at a time: what is not ours passes untouched,
//! SNAT and preserve-source flows both ways (addresses, ports, MACs, checksums, TTL), UDP with
//! and without a checksum, the L7 port, services without backends, malformed packets.

use std::net::Ipv4Addr;

use super::{
    env, packet, parse, plan, verdict, with_ttl, ACK, B1, B2, CLIENT, CLIENT_MAC, NODE_B, NODE_MAC,
    SYN, VIP, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
};

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
