//! Maglev rings written through the agent's shared mapping of `MAGLEV` (a module of `xdp_prog`):
//! the backend each flow's packets go to is the one the ring built in userspace gives for that
//! flow's hash, slot by slot, for services whose rings lie at different offsets of the map, and
//! again after a change writes a new ring beside the live one and switches to it.

use std::net::Ipv4Addr;

use gateway::{
    maglev,
    plan::{Backend, Plan, Proto},
};
use gateway_common::MAGLEV_RING;

use super::{env, packet, parse, plan, sh, svc, CLIENT, SYN, VIP, XDP_REDIRECT};
use gateway::plan::NatMode;

/// Backends 198.18.1.10 .. 198.18.1.(10 + n - 1), on the test namespace's backend subnet.
fn backends(n: u8) -> Vec<([u8; 4], u32)> {
    (0..n)
        .map(|i| ([198, 18, 1, 10 + i], 1 + i as u32 % 3))
        .collect()
}

/// The backend address the program must pick for a SYN from CLIENT:`sport` to VIP:`port`: the
/// userspace ring's entry at the flow hash, as the program indexes it.
fn expected(bs: &[Backend], port: u16, sport: u16) -> [u8; 4] {
    let ring = maglev::build(bs, MAGLEV_RING);
    let h = gateway_common::flow_hash(
        u32::from(Ipv4Addr::from(CLIENT)).to_be(),
        u32::from(Ipv4Addr::from(VIP)).to_be(),
        sport.to_be(),
        port.to_be(),
        6,
    );
    let i = maglev::pick(&ring, h).expect("non-empty ring") as usize;
    match bs[i].addr {
        std::net::IpAddr::V4(a) => a.octets(),
        a => panic!("IPv4 backend expected, got {a}"),
    }
}

/// Sends `n` new flows to each L4 service of `p` and checks every one reached the backend its
/// ring gives; returns the number of flows checked.
fn check_picks(e: &mut super::Env, p: &Plan, sport0: u16, n: u16) -> usize {
    let mut checked = 0;
    for s in &p.l4 {
        for i in 0..n {
            let sport = sport0 + i;
            let (action, out, _) =
                e.dp.test_run(&packet(6, CLIENT, sport, VIP, s.port, SYN, b""))
                    .unwrap();
            assert_eq!(action, XDP_REDIRECT, "service {} flow {sport}", s.port);
            let got = parse(&out).dst;
            let want = expected(&s.backends, s.port, sport);
            assert_eq!(
                got, want,
                "service {} flow from port {sport}: program picked {got:?}, ring gives {want:?}",
                s.port
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn maglev_ring_written_through_the_mapping_is_what_the_program_picks() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        for i in 0..12u8 {
            sh(&format!(
                "ip neigh add 198.18.1.{} lladdr 02:00:00:00:02:{:02x} dev gwd0 nud permanent",
                10 + i,
                10 + i
            ));
        }
        let before = e.dp.ring_writes();
        // Three services after the four of `plan()`: their rings sit at slots 4 and up, so a
        // write at the wrong offset or stride shows as wrong picks.
        let mut p = plan();
        p.l4.push(svc(31500, Proto::Tcp, NatMode::Snat, &backends(5)));
        p.l4.push(svc(
            31501,
            Proto::Tcp,
            NatMode::PreserveSource,
            &backends(3),
        ));
        p.l4.push(svc(31502, Proto::Tcp, NatMode::Snat, &backends(12)));
        e.dp.apply(&p).expect("apply");
        let after = e.dp.ring_writes();
        assert_eq!(
            after.mapped - before.mapped,
            3,
            "the three new rings were written through the mapping: {before:?} -> {after:?}"
        );
        assert_eq!(after.syscall, before.syscall, "no ring written by syscall");
        let new = Plan {
            l4: p.l4[4..].to_vec(),
            ..Default::default()
        };
        assert_eq!(check_picks(&mut e, &new, 40000, 200), 600);

        // A change: the new ring goes into a free slot, then the switch; flows decided after it
        // follow the new ring (new source ports, so no connection entry decides for them).
        p.l4[6] = svc(31502, Proto::Tcp, NatMode::Snat, &backends(7));
        e.dp.apply(&p).expect("apply the change");
        assert_eq!(e.dp.ring_writes().mapped - after.mapped, 1);
        let changed = Plan {
            l4: vec![p.l4[6].clone()],
            ..Default::default()
        };
        assert_eq!(check_picks(&mut e, &changed, 50000, 300), 300);
    })
    .join()
    .unwrap();
}
