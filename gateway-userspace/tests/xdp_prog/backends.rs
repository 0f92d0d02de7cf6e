//! Backend choice and change: Maglev weights, flows that keep their backend across applies,
//! drained services, next hops resolved in advance (and the per-flow FIB fallback), reused
//! backend ids, SNAT ports of closed flows.

use std::net::IpAddr;

use gateway::plan::{NatMode, Plan, Proto};

use super::{
    env, packet, parse, plan, sh, svc, verdict, ACK, B1, B2, CLIENT, CLIENT_MAC, NODE_B, NODE_MAC,
    SYN, VIP, XDP_PASS, XDP_REDIRECT, XDP_TX,
};

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
