//! Connection-table state through BPF_PROG_TEST_RUN: the unconfirmed table and the move to the
//! main one, TCP state and the agent's garbage collector, the per-service connection counters,
//! a SYN flood against established flows, and SNAT pools.

use std::{net::Ipv4Addr, time::Duration};

use gateway::{
    dataplane::{conntrack::CtTimeouts, snat_pool::PoolSpec},
    plan::{NatMode, Plan, Proto},
};

use super::{
    env, packet, parse, plan, run, sh, svc, verdict, Env, ACK, B1, NODE_B, SYN, VIP, XDP_REDIRECT,
    XDP_TX,
};

const FIN: u8 = 0x01;
const RST: u8 = 0x04;

fn entries(e: &Env, table: &str, state: &str) -> u64 {
    let st = e.dp.stats().unwrap();
    st.conntrack
        .entries
        .get(&("ipv4", table, state))
        .copied()
        .unwrap_or(0)
}

fn deleted(e: &Env, reason: &str) -> u64 {
    let st = e.dp.stats().unwrap();
    st.conntrack
        .deleted
        .get(&("ipv4", reason))
        .copied()
        .unwrap_or(0)
}

fn total_entries(e: &Env) -> u64 {
    e.dp.stats().unwrap().conntrack.entries.values().sum()
}

fn short(e: &mut Env, tcp: u64, fin_ms: u64) {
    e.dp.ct_timeouts = CtTimeouts {
        tcp: Duration::from_secs(tcp),
        tcp_syn: Duration::from_secs(60),
        tcp_fin: Duration::from_millis(fin_ms),
        any: Duration::from_secs(60),
        gc_interval: Duration::from_secs(1),
    };
}

/// SYN: both entries unconfirmed; the client's ACK: confirmed (an opened connection); FIN each
/// way: closed (counted), expired by the collector after the FIN timeout, both entries.
#[test]
fn tcp_flow_moves_to_the_main_table_then_closes_and_expires() {
    run(|| {
        let mut e = env(&plan());
        short(&mut e, 3600, 800);
        let syn = packet(6, super::CLIENT, 40500, VIP, 31400, SYN, b"");
        let (action, out, _) = e.dp.test_run(&syn).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        let o = parse(&out);
        e.dp.collect_conntrack().unwrap();
        assert_eq!(
            entries(&e, "new", "syn_sent"),
            2,
            "both entries unconfirmed"
        );
        assert_eq!(entries(&e, "main", "established"), 0);

        // The backend's SYN-ACK is translated from the unconfirmed table; it confirms nothing.
        let synack = packet(6, o.dst, 9000, NODE_B, o.sport, SYN | ACK, b"");
        assert_eq!(e.dp.test_run(&synack).unwrap().0, XDP_TX);
        e.dp.collect_conntrack().unwrap();
        assert_eq!(entries(&e, "new", "syn_sent"), 2);

        let ack = packet(6, super::CLIENT, 40500, VIP, 31400, ACK, b"hi");
        let (action, out, _) = e.dp.test_run(&ack).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            (parse(&out).dst, parse(&out).sport),
            (o.dst, o.sport),
            "same backend, same SNAT port after the move"
        );
        e.dp.collect_conntrack().unwrap();
        assert_eq!(entries(&e, "main", "established"), 2);
        assert_eq!(entries(&e, "new", "syn_sent"), 0);
        let flows = e.dp.stats().unwrap().flows["198.18.0.1:31400/tcp"];
        assert_eq!((flows.opened, flows.closed), (1, 0));

        // Data back and forth, then FIN each way.
        let data_back = packet(6, o.dst, 9000, NODE_B, o.sport, ACK, b"hello");
        assert_eq!(e.dp.test_run(&data_back).unwrap().0, XDP_TX);
        let fin = packet(6, super::CLIENT, 40500, VIP, 31400, FIN | ACK, b"");
        assert_eq!(e.dp.test_run(&fin).unwrap().0, XDP_REDIRECT);
        e.dp.collect_conntrack().unwrap();
        assert_eq!(
            entries(&e, "main", "half_closed"),
            2,
            "one FIN: half closed"
        );
        assert_eq!(
            e.dp.stats().unwrap().flows["198.18.0.1:31400/tcp"].closed,
            0
        );
        let fin_back = packet(6, o.dst, 9000, NODE_B, o.sport, FIN | ACK, b"");
        assert_eq!(e.dp.test_run(&fin_back).unwrap().0, XDP_TX);
        // A retransmitted FIN closes nothing twice.
        assert_eq!(e.dp.test_run(&fin_back).unwrap().0, XDP_TX);
        let st = e.dp.stats().unwrap();
        let flows = st.flows["198.18.0.1:31400/tcp"];
        assert_eq!((flows.opened, flows.closed), (1, 1));
        // Frames each way: SYN 54 + ACK 56 + FIN 54 from the client; SYN-ACK 54, data 59 and
        // two FINs 54 from the backend.
        assert_eq!(flows.received_bytes, 54 + 56 + 54);
        assert_eq!(flows.sent_bytes, 54 + 59 + 54 + 54);

        e.dp.collect_conntrack().unwrap();
        assert_eq!(entries(&e, "main", "closed"), 2, "kept for the FIN timeout");
        std::thread::sleep(Duration::from_millis(1000));
        e.dp.collect_conntrack().unwrap();
        assert_eq!(deleted(&e, "closed"), 2, "both entries of the closed flow");
        assert_eq!(total_entries(&e), 0);
        // A late reply to its SNAT port is unknown now: passed, counted as a miss.
        let late = packet(6, o.dst, 9000, NODE_B, o.sport, ACK, b"");
        assert_eq!(e.dp.test_run(&late).unwrap().0, super::XDP_PASS);
        assert_eq!(verdict(&e, "pass_nat_miss"), 1);
    });
}

/// An established flow expires after the TCP idle timeout, not while packets keep its entry's
/// `seen` fresh (written at most once a second); an idle-expired connection counts as closed.
/// A RST closes at once.
#[test]
fn idle_flows_expire_and_rst_closes() {
    run(|| {
        let mut e = env(&plan());
        short(&mut e, 3, 500);
        let syn = packet(6, super::CLIENT, 40600, VIP, 31401, SYN, b"");
        let ack = packet(6, super::CLIENT, 40600, VIP, 31401, ACK, b"x");
        e.dp.test_run(&syn).unwrap();
        e.dp.test_run(&ack).unwrap();
        std::thread::sleep(Duration::from_millis(2100));
        // A packet now refreshes `seen` (older than a second): idle time restarts.
        assert_eq!(e.dp.test_run(&ack).unwrap().0, XDP_REDIRECT);
        std::thread::sleep(Duration::from_millis(1900));
        e.dp.collect_conntrack().unwrap();
        assert_eq!(
            entries(&e, "main", "established"),
            2,
            "4 s after the start but 1.9 s after its last packet: kept"
        );
        std::thread::sleep(Duration::from_millis(1300));
        e.dp.collect_conntrack().unwrap();
        assert_eq!(deleted(&e, "tcp_idle"), 2);
        let f = e.dp.stats().unwrap().flows["198.18.0.1:31401/tcp"];
        assert_eq!((f.opened, f.closed), (1, 1), "idle expiry counts as closed");

        // RST from the backend: closed at once, expired after the FIN timeout.
        let syn = packet(6, super::CLIENT, 40601, VIP, 31401, SYN, b"");
        let ack = packet(6, super::CLIENT, 40601, VIP, 31401, ACK, b"x");
        e.dp.test_run(&syn).unwrap();
        e.dp.test_run(&ack).unwrap();
        let rst = packet(6, B1, 9000, super::CLIENT, 40601, RST, b"");
        assert_eq!(e.dp.test_run(&rst).unwrap().0, XDP_TX);
        let f = e.dp.stats().unwrap().flows["198.18.0.1:31401/tcp"];
        assert_eq!((f.opened, f.closed), (2, 2));
        std::thread::sleep(Duration::from_millis(700));
        e.dp.collect_conntrack().unwrap();
        assert_eq!(deleted(&e, "closed"), 2);
        assert_eq!(total_entries(&e), 0);

        // UDP: one datagram stays unconfirmed; a second one confirms; nothing counts as TCP.
        let q = packet(17, super::CLIENT, 50600, VIP, 5353, 0, b"q");
        e.dp.test_run(&q).unwrap();
        e.dp.collect_conntrack().unwrap();
        assert_eq!(entries(&e, "new", "udp"), 2);
        e.dp.test_run(&q).unwrap();
        e.dp.collect_conntrack().unwrap();
        assert_eq!(entries(&e, "main", "udp"), 2);
        let f = e.dp.stats().unwrap().flows["198.18.0.1:5353/udp"];
        assert_eq!((f.opened, f.closed), (0, 0));
    });
}

/// A flood of SYNs from many sources, more than the main table holds (two entries each), never
/// reaches the main table: every established flow keeps its entries and its backend.
#[test]
fn syn_flood_does_not_evict_established_flows() {
    run(|| {
        let mut e = env(&plan());
        let established = 1000u16;
        let client = |i: u16| [198, 18, 3 + (i >> 8) as u8, i as u8];
        for i in 0..established {
            e.dp.test_run(&packet(6, client(i), 40000, VIP, 31401, SYN, b""))
                .unwrap();
            e.dp.test_run(&packet(6, client(i), 40000, VIP, 31401, ACK, b"x"))
                .unwrap();
        }
        // Every SYN of its own spoofed source: 2 entries each, 140,000 of them against a main
        // table of CONNTRACK_MAX (262,144) entries.
        let flood = gateway_common::CONNTRACK_MAX / 2 + 9000;
        let mut forwarded = 0u32;
        for i in 0..flood {
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i).octets();
            let (action, _, _) =
                e.dp.test_run(&packet(
                    6,
                    src,
                    1024 + (i % 60000) as u16,
                    VIP,
                    31401,
                    SYN,
                    b"",
                ))
                .unwrap();
            forwarded += u32::from(action == XDP_REDIRECT);
        }
        assert_eq!(forwarded, flood, "the flood's SYNs are still forwarded");
        let before = verdict(&e, "fwd_established");
        for i in 0..established {
            let (action, out, _) =
                e.dp.test_run(&packet(6, client(i), 40000, VIP, 31401, ACK, b"y"))
                    .unwrap();
            assert_eq!(action, XDP_REDIRECT, "established flow {i}");
            assert_eq!(parse(&out).dst, B1);
        }
        assert_eq!(
            verdict(&e, "fwd_established") - before,
            u64::from(established),
            "every established flow found in the main table, none re-created"
        );
        e.dp.collect_conntrack().unwrap();
        assert_eq!(
            entries(&e, "main", "established"),
            2 * u64::from(established)
        );
        let new = entries(&e, "new", "syn_sent");
        assert!(
            new <= u64::from(gateway_common::CONNTRACK_NEW_MAX),
            "the flood holds at most the unconfirmed table: {new}"
        );
    });
}

/// A SNAT pool spreads one backend's flows over its addresses and port range, beyond what one
/// address's range holds; replies to pool ports outside the default range are translated back;
/// exhaustion is counted apart.
#[test]
fn snat_pool_spreads_flows_over_addresses_and_ports() {
    run(|| {
        let p = Plan {
            l4: vec![svc(31403, Proto::Tcp, NatMode::Snat, &[(B1, 1)])],
            ..Default::default()
        };
        let mut e = env(&p);
        sh("ip addr add 198.18.1.10/24 dev gwd0 && ip addr add 198.18.1.11/24 dev gwd0");
        let a10 = Ipv4Addr::new(198, 18, 1, 10);
        let a11 = Ipv4Addr::new(198, 18, 1, 11);
        e.dp.set_snat_pools(vec![PoolSpec {
            iface: "gwd0".into(),
            addrs: vec![a10, a11],
            ports: (20000, 20499),
        }])
        .unwrap();
        e.dp.apply(&p).unwrap();
        let mut seen = std::collections::BTreeMap::<[u8; 4], u32>::new();
        let mut first = None;
        let flows = 700u16;
        let mut ok = 0;
        for i in 0..flows {
            let (action, out, _) =
                e.dp.test_run(&packet(6, super::CLIENT, 30000 + i, VIP, 31403, SYN, b""))
                    .unwrap();
            if action != XDP_REDIRECT {
                continue;
            }
            ok += 1;
            let o = parse(&out);
            assert!(
                (20000..=20499).contains(&o.sport),
                "port {} in the pool's range",
                o.sport
            );
            *seen.entry(o.src).or_default() += 1;
            first.get_or_insert((o.src, o.sport, 30000 + i));
        }
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            vec![a10.octets(), a11.octets()],
            "both pool addresses used"
        );
        assert!(
            ok > 500,
            "{ok} of {flows} flows to one backend: more than one address's 500 ports"
        );
        assert_eq!(
            verdict(&e, "drop_nat_pool_exhausted"),
            u64::from(flows) - ok,
            "each refused flow counted as pool exhaustion"
        );
        // The backend's reply to a pool port (outside 61000-65535) goes back to the client.
        let (src, sport, cport) = first.unwrap();
        let reply = packet(6, B1, 9000, src, sport, SYN | ACK, b"");
        let (action, out, _) = e.dp.test_run(&reply).unwrap();
        assert_eq!(action, XDP_TX);
        let r = parse(&out);
        assert_eq!(
            (r.src, r.sport, r.dst, r.dport),
            (VIP, 31403, super::CLIENT, cport)
        );
        // Far beyond the pool's 1,000 pairs: refusals, counted.
        for i in 0..1500u16 {
            e.dp.test_run(&packet(6, [198, 18, 4, 2], 2000 + i, VIP, 31403, SYN, b""))
                .unwrap();
        }
        assert!(verdict(&e, "drop_nat_pool_exhausted") > u64::from(flows) - ok);
        assert_eq!(verdict(&e, "drop_nat_exhausted"), 0);
    });
}

/// Bad pools are refused, naming the flag and what is wrong.
#[test]
fn snat_pool_addresses_must_be_the_nodes() {
    run(|| {
        let mut e = env(&plan());
        let err =
            e.dp.set_snat_pools(vec![PoolSpec {
                iface: "gwd0".into(),
                addrs: vec![Ipv4Addr::new(198, 18, 1, 99)],
                ports: (20000, 20999),
            }])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--snat-pool gwd0") && err.contains("198.18.1.99"),
            "{err}"
        );
        let err =
            e.dp.set_snat_pools(vec![PoolSpec {
                iface: "gwd0".into(),
                addrs: vec![Ipv4Addr::new(198, 18, 1, 1)],
                ports: (40000, 40999),
            }])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ephemeral"), "{err}");
    });
}
