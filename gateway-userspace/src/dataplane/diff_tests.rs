//! Unit tests of the pure apply diff: no root, no maps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use gateway_common::{port_flags, svc_flags, ServiceValue, MAGLEV_RING, PROTO_TCP, PROTO_UDP};

use super::{
    diff, expire, port_ops, service_key, sync_hash, Applied, BackendKey, Diff, Op, State, SvcKey,
};
use crate::{
    maglev,
    plan::{Backend, HashMode, L4Service, LocalPort, NatMode, Plan, Proto},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn be(i: u8) -> Backend {
    Backend {
        addr: Ipv4Addr::new(10, 1, 0, i).into(),
        port: 8080,
        weight: 1,
    }
}

fn svc(port: u16, backends: Vec<Backend>) -> L4Service {
    L4Service {
        vip: VIP.into(),
        port,
        proto: Proto::Tcp,
        nat: NatMode::Snat,
        hash: HashMode::FiveTuple,
        backends,
        origin: format!("test {port}"),
    }
}

fn plan(l4: Vec<L4Service>, local: &[u16]) -> Plan {
    Plan {
        l4,
        local: local
            .iter()
            .map(|p| LocalPort {
                vip: VIP.into(),
                port: *p,
                origin: format!("local {p}"),
            })
            .collect(),
        ..Default::default()
    }
}

fn bkey(b: &Backend) -> BackendKey {
    (b.addr, b.port)
}

fn tcp(port: u16) -> u32 {
    gateway_common::port_index(PROTO_TCP, port)
}

/// Diffs, then checks that recording every op onto the old state gives `next`.
fn run(state: &State, p: &Plan, now: Instant) -> Diff {
    let d = diff(state, p, now).expect("diff");
    let mut st = state.clone();
    for op in &d.ops {
        st.record(op);
    }
    assert_eq!(st, d.next, "recording the ops must give the next state");
    d
}

/// The position of the first op matching `f`.
fn pos(ops: &[Op], f: impl Fn(&Op) -> bool) -> usize {
    ops.iter()
        .position(f)
        .unwrap_or_else(|| panic!("no such op in {ops:#?}"))
}

fn is_set_service(op: &Op, k: &SvcKey) -> bool {
    matches!(op, Op::SetService { key, .. } if key == k)
}

#[test]
fn first_apply_writes_backends_then_ports_then_ring_then_service() {
    let now = Instant::now();
    let p = plan(vec![svc(80, vec![be(1), be(2)])], &[]);
    let d = run(&State::default(), &p, now);
    let key = service_key(VIP, 80, PROTO_TCP);
    let add = pos(&d.ops, |o| matches!(o, Op::AddBackend { .. }));
    let resolve = pos(&d.ops, |o| matches!(o, Op::ResolveNextHops(_)));
    let port = pos(&d.ops, |o| matches!(o, Op::SetPort { .. }));
    let stats = pos(&d.ops, |o| matches!(o, Op::ResetServiceStats { .. }));
    let ring = pos(&d.ops, |o| matches!(o, Op::WriteRing { .. }));
    let switch = pos(&d.ops, |o| is_set_service(o, &key));
    assert!(add < resolve && resolve < port && port < stats && stats < ring && ring < switch);

    assert_eq!(
        d.ops[..2],
        [
            Op::AddBackend {
                id: 0,
                addr: bkey(&be(1)).0,
                port: bkey(&be(1)).1
            },
            Op::AddBackend {
                id: 1,
                addr: bkey(&be(2)).0,
                port: bkey(&be(2)).1
            },
        ]
    );
    let Op::ResolveNextHops(r) = &d.ops[resolve] else {
        unreachable!()
    };
    assert_eq!(r.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(
        d.ops[port],
        Op::SetPort {
            idx: tcp(80),
            value: port_flags::L4
        }
    );
    let Op::SetService { value, ring, .. } = &d.ops[switch] else {
        unreachable!()
    };
    assert_eq!(value.id, 0);
    assert_eq!(value.ring, 0);
    assert_eq!(value.flags, svc_flags::SNAT);
    assert_eq!(value.backend_count, 2);
    assert_eq!(ring.len(), MAGLEV_RING as usize);
    assert!(ring.iter().all(|id| *id < 2));
    // No deletion of any kind in a first apply.
    assert!(!d.ops.iter().any(|o| matches!(
        o,
        Op::RemoveService { .. } | Op::RemoveBackend { .. } | Op::StartDrain { .. }
    )));
}

#[test]
fn reapplying_the_same_plan_writes_nothing() {
    let now = Instant::now();
    let p = plan(vec![svc(80, vec![be(1), be(2)])], &[443]);
    let d1 = run(&State::default(), &p, now);
    let d2 = run(&d1.next, &p, now);
    assert_eq!(d2.ops, vec![]);
    assert_eq!(d2.next, d1.next);
}

#[test]
fn changed_backends_take_a_new_ring_slot_and_free_the_old_one_after_the_switch() {
    let now = Instant::now();
    let key = service_key(VIP, 80, PROTO_TCP);
    let d1 = run(
        &State::default(),
        &plan(vec![svc(80, vec![be(1), be(2)])], &[]),
        now,
    );
    let p2 = plan(vec![svc(80, vec![be(2), be(3)])], &[]);
    let d2 = run(&d1.next, &p2, now);
    // Known backend keeps its id, the new one takes the lowest free id (2), the stale one goes
    // last.
    assert_eq!(d2.next.backend_ids[&bkey(&be(2))], 1);
    assert_eq!(d2.next.backend_ids[&bkey(&be(3))], 2);
    assert!(!d2.next.backend_ids.contains_key(&bkey(&be(1))));
    let switch = pos(&d2.ops, |o| is_set_service(o, &key));
    let Op::SetService {
        value, ring, freed, ..
    } = &d2.ops[switch]
    else {
        unreachable!()
    };
    // The new ring goes beside the live one, which is freed by the switch.
    assert_eq!(value.ring, 1);
    assert_eq!(*freed, Some(0));
    assert_eq!(value.id, 0, "the service keeps its id");
    assert!(ring.iter().all(|id| *id == 1 || *id == 2));
    let ring_at = pos(&d2.ops, |o| matches!(o, Op::WriteRing { slot: 1, .. }));
    let add = pos(&d2.ops, |o| matches!(o, Op::AddBackend { id: 2, .. }));
    let remove = pos(&d2.ops, |o| matches!(o, Op::RemoveBackend { id: 0, .. }));
    assert!(add < ring_at && ring_at < switch && switch < remove);
    assert_eq!(remove, d2.ops.len() - 1, "backend deletions come last");
    // No new service id: its counters are kept.
    assert!(!d2
        .ops
        .iter()
        .any(|o| matches!(o, Op::ResetServiceStats { .. })));
    // A third change reuses slot 0.
    let d3 = run(&d2.next, &plan(vec![svc(80, vec![be(3)])], &[]), now);
    let Op::SetService { value, freed, .. } = &d3.ops[pos(&d3.ops, |o| is_set_service(o, &key))]
    else {
        unreachable!()
    };
    assert_eq!((value.ring, *freed), (0, Some(1)));
}

#[test]
fn ring_slots_freed_by_switches_are_taken_by_the_next_apply() {
    let now = Instant::now();
    let d1 = run(
        &State::default(),
        &plan(vec![svc(80, vec![be(1)]), svc(81, vec![be(2)])], &[]),
        now,
    );
    let d2 = run(
        &d1.next,
        &plan(vec![svc(80, vec![be(3)]), svc(81, vec![be(4)])], &[]),
        now,
    );
    let slots: Vec<(u32, Option<u32>)> = d2
        .ops
        .iter()
        .filter_map(|o| match o {
            Op::SetService { value, freed, .. } => Some((value.ring, *freed)),
            _ => None,
        })
        .collect();
    // 80 was at 0, 81 at 1: each moves to a slot never live during this apply (the cursor only
    // moves forward), so no ring is rewritten while a service could still point at it.
    assert_eq!(slots, vec![(2, Some(0)), (3, Some(1))]);
    // The next apply takes the lowest free slots again.
    let d3 = run(
        &d2.next,
        &plan(vec![svc(80, vec![be(5)]), svc(81, vec![be(6)])], &[]),
        now,
    );
    let slots: Vec<u32> = d3
        .ops
        .iter()
        .filter_map(|o| match o {
            Op::SetService { value, .. } => Some(value.ring),
            _ => None,
        })
        .collect();
    assert_eq!(slots, vec![0, 1]);
}

#[test]
fn removed_service_is_deleted_after_the_switches_and_its_port_drains() {
    let t0 = Instant::now();
    let d1 = run(
        &State::default(),
        &plan(vec![svc(80, vec![be(1)]), svc(81, vec![be(2)])], &[]),
        t0,
    );
    let t1 = t0 + Duration::from_secs(5);
    let d2 = run(&d1.next, &plan(vec![svc(81, vec![be(3)])], &[]), t1);
    let k80 = service_key(VIP, 80, PROTO_TCP);
    let k81 = service_key(VIP, 81, PROTO_TCP);
    let switch = pos(&d2.ops, |o| is_set_service(o, &k81));
    let remove = pos(
        &d2.ops,
        |o| matches!(o, Op::RemoveService { key } if *key == k80),
    );
    assert!(switch < remove);
    assert_eq!(d2.next.draining.get(&tcp(80)), Some(&t1));
    // The port stays open while it drains.
    assert_eq!(d2.next.port_values.get(&tcp(80)), Some(&port_flags::L4));
    assert!(!d2
        .ops
        .iter()
        .any(|o| matches!(o, Op::SetPort { idx, .. } if *idx == tcp(80))));

    // Before the period ends, nothing expires; after, the port closes.
    assert_eq!(
        expire(
            &d2.next,
            t1 + Duration::from_secs(44),
            Duration::from_secs(45)
        ),
        vec![]
    );
    let ops = expire(
        &d2.next,
        t1 + Duration::from_secs(45),
        Duration::from_secs(45),
    );
    assert_eq!(
        ops,
        vec![
            Op::EndDrain { idx: tcp(80) },
            Op::SetPort {
                idx: tcp(80),
                value: 0
            }
        ]
    );
    let mut st = d2.next.clone();
    for op in &ops {
        st.record(op);
    }
    assert!(st.draining.is_empty());
    assert!(!st.port_values.contains_key(&tcp(80)));
}

#[test]
fn a_draining_port_used_again_stops_draining() {
    let t0 = Instant::now();
    let d1 = run(
        &State::default(),
        &plan(vec![svc(80, vec![be(1)])], &[]),
        t0,
    );
    let d2 = run(&d1.next, &plan(vec![], &[]), t0);
    assert!(d2.next.draining.contains_key(&tcp(80)));
    let d3 = run(&d2.next, &plan(vec![svc(80, vec![be(1)])], &[]), t0);
    assert!(d3.ops.contains(&Op::EndDrain { idx: tcp(80) }));
    assert!(d3.next.draining.is_empty());
    // The service came back under a fresh id (its old one was freed) with fresh counters.
    assert!(d3.ops.contains(&Op::ResetServiceStats { id: 0 }));
}

#[test]
fn expiring_keeps_the_other_flags_of_a_port() {
    let t0 = Instant::now();
    // 80 was L4, now a local (L7) port: L4 drains, LOCAL stays.
    let d1 = run(
        &State::default(),
        &plan(vec![svc(80, vec![be(1)])], &[]),
        t0,
    );
    let d2 = run(&d1.next, &plan(vec![], &[80]), t0);
    assert_eq!(
        d2.next.port_values.get(&tcp(80)),
        Some(&(port_flags::L4 | port_flags::LOCAL))
    );
    let ops = expire(
        &d2.next,
        t0 + Duration::from_secs(60),
        Duration::from_secs(45),
    );
    assert_eq!(
        ops,
        vec![
            Op::EndDrain { idx: tcp(80) },
            Op::SetPort {
                idx: tcp(80),
                value: port_flags::LOCAL
            }
        ]
    );
}

#[test]
fn local_ports_have_no_ring_and_an_l4_service_wins_the_key() {
    let now = Instant::now();
    let p = plan(vec![svc(80, vec![be(1)])], &[80, 443]);
    let d = run(&State::default(), &p, now);
    let k80 = service_key(VIP, 80, PROTO_TCP);
    let k443 = service_key(VIP, 443, PROTO_TCP);
    assert_eq!(d.next.applied[&k80].value.flags, svc_flags::SNAT);
    let local = &d.next.applied[&k443];
    assert_eq!(local.value.flags, svc_flags::LOCAL);
    assert!(local.ring.is_empty());
    assert_eq!(local.value.backend_count, 0);
    assert_eq!(
        d.ops
            .iter()
            .filter(|o| matches!(o, Op::WriteRing { .. }))
            .count(),
        1
    );
    // The local port the L4 service shadows is not opened as local.
    assert_eq!(d.next.port_values.get(&tcp(80)), Some(&port_flags::L4));
    assert_eq!(d.next.port_values.get(&tcp(443)), Some(&port_flags::LOCAL));
}

#[test]
fn service_without_backends_gets_an_entry_without_ring() {
    let d = run(
        &State::default(),
        &plan(vec![svc(80, vec![])], &[]),
        Instant::now(),
    );
    let a = &d.next.applied[&service_key(VIP, 80, PROTO_TCP)];
    assert_eq!(a.value.backend_count, 0);
    assert!(a.ring.is_empty());
    assert!(!d.ops.iter().any(|o| matches!(
        o,
        Op::WriteRing { .. } | Op::AddBackend { .. } | Op::ResolveNextHops(_)
    )));
}

#[test]
fn flags_follow_nat_and_hash_and_preserve_source_opens_backend_ports() {
    let mut s = svc(53, vec![be(1)]);
    s.proto = Proto::Udp;
    s.nat = NatMode::PreserveSource;
    s.hash = HashMode::SourceIp;
    let d = run(&State::default(), &plan(vec![s], &[]), Instant::now());
    let a = &d.next.applied[&service_key(VIP, 53, PROTO_UDP)];
    assert_eq!(a.value.flags, svc_flags::HASH_SRC_IP);
    let udp = |p| gateway_common::port_index(PROTO_UDP, p);
    assert_eq!(d.next.port_values.get(&udp(53)), Some(&port_flags::L4));
    assert_eq!(
        d.next.port_values.get(&udp(8080)),
        Some(&port_flags::PS_SRC)
    );
    // Only the flags changed: a new ring is still written and switched to.
    let mut s2 = svc(53, vec![be(1)]);
    s2.proto = Proto::Udp;
    let d2 = run(&d.next, &plan(vec![s2], &[]), Instant::now());
    let Op::SetService { value, .. } = d2
        .ops
        .iter()
        .find(|o| matches!(o, Op::SetService { .. }))
        .expect("switch")
    else {
        unreachable!()
    };
    assert_eq!(value.flags, svc_flags::SNAT);
    assert_eq!(value.ring, 1);
    // The preserve-source port closes at once (no drain: it is not a service port).
    assert!(d2.ops.contains(&Op::SetPort {
        idx: udp(8080),
        value: 0
    }));
}

#[test]
fn freed_backend_ids_are_reused_lowest_first() {
    let now = Instant::now();
    let d1 = run(
        &State::default(),
        &plan(vec![svc(80, vec![be(1), be(2), be(3)])], &[]),
        now,
    );
    let d2 = run(&d1.next, &plan(vec![svc(80, vec![be(3)])], &[]), now);
    let d3 = run(
        &d2.next,
        &plan(vec![svc(80, vec![be(3), be(4), be(5)])], &[]),
        now,
    );
    assert_eq!(d3.next.backend_ids[&bkey(&be(3))], 2);
    assert_eq!(d3.next.backend_ids[&bkey(&be(4))], 0);
    assert_eq!(d3.next.backend_ids[&bkey(&be(5))], 1);
}

#[test]
fn adopted_state_rewrites_rings_once_and_drains_orphan_ports() {
    let now = Instant::now();
    let p = plan(vec![svc(80, vec![be(1)])], &[443]);
    let d1 = run(&State::default(), &p, now);
    // What the maps hold after d1, read back by a new agent, plus an L4 port open for a service
    // removed before the restart.
    let services: Vec<_> = d1.next.applied.iter().map(|(k, a)| (*k, a.value)).collect();
    let mut ports = vec![0u32; 2 * 65536];
    for (i, v) in &d1.next.port_values {
        ports[*i as usize] = *v;
    }
    ports[tcp(90) as usize] = port_flags::L4;
    let backends = vec![(0, bkey(&be(1)))];
    let later = now + Duration::from_secs(1);
    let st = State::adopt(services, ports, backends, later);
    assert_eq!(st.backend_ids, d1.next.backend_ids);
    assert_eq!(
        st.draining.keys().copied().collect::<Vec<_>>(),
        vec![tcp(90)]
    );
    assert_eq!(
        *st.applied[&service_key(VIP, 80, PROTO_TCP)].ring,
        [u32::MAX]
    );

    // The first apply rewrites the L4 service's ring into a spare slot (ids kept), leaves the
    // local port alone and keeps the orphan port open while it drains.
    let d2 = run(&st, &p, later);
    let switches: Vec<&Op> = d2
        .ops
        .iter()
        .filter(|o| matches!(o, Op::SetService { .. }))
        .collect();
    assert_eq!(switches.len(), 1);
    let Op::SetService { value, freed, .. } = switches[0] else {
        unreachable!()
    };
    assert_eq!((value.id, value.ring, *freed), (0, 1, Some(0)));
    assert!(!d2.ops.iter().any(|o| matches!(o, Op::AddBackend { .. })));
    assert_eq!(d2.next.port_values.get(&tcp(90)), Some(&port_flags::L4));
}

#[test]
fn full_maps_fail_before_any_write() {
    let mut st = State::default();
    for i in 0..gateway_common::MAX_RINGS {
        st.applied.insert(
            service_key(Ipv4Addr::from(0x0b00_0000 + i), 1, PROTO_TCP),
            Applied {
                value: ServiceValue {
                    id: i % gateway_common::MAX_SERVICES,
                    ring: i,
                    flags: 0,
                    backend_count: 1,
                },
                ring: Arc::from([u32::MAX]),
                built_from: None,
            },
        );
    }
    let e = diff(&st, &plan(vec![svc(80, vec![be(1)])], &[]), Instant::now()).unwrap_err();
    assert_eq!(e.what, "services");
    assert_eq!(e.to_string(), "services: limit of 1024 reached");
}

#[test]
fn port_ops_write_only_changes() {
    let have = BTreeMap::from([(1, 1), (2, 2), (3, 3)]);
    let want = BTreeMap::from([(2, 2), (3, 1), (4, 4)]);
    assert_eq!(
        port_ops(&have, &want),
        vec![
            Op::SetPort { idx: 1, value: 0 },
            Op::SetPort { idx: 3, value: 1 },
            Op::SetPort { idx: 4, value: 4 },
        ]
    );
}

#[test]
fn sync_hash_upserts_changes_then_removes() {
    let have = BTreeMap::from([(1u32, 10u32), (2, 20), (3, 30)]);
    let want = BTreeMap::from([(2u32, 20u32), (3, 31), (4, 40)]);
    assert_eq!(sync_hash(&have, &want), (vec![(3, 31), (4, 40)], vec![1]));
}

/// A dual-stack plan: each family's service gets its own key (`SERVICES` / `SERVICES6`), both
/// share the port filter entry, the service ids and the backend id space; adopting the state
/// back from both families' maps gives the same ids.
#[test]
fn dual_stack_services_share_ids_and_ports() {
    let now = Instant::now();
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let b6 = |i: u16| Backend {
        addr: IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i)),
        port: 8080,
        weight: 1,
    };
    let mut s6 = svc(80, vec![b6(1), b6(2)]);
    s6.vip = v6;
    let p = plan(vec![svc(80, vec![be(1)]), s6], &[]);
    let d = run(&State::default(), &p, now);
    let k4 = service_key(VIP, 80, PROTO_TCP);
    let k6 = service_key(v6, 80, PROTO_TCP);
    assert!(matches!(k4, SvcKey::V4(_)) && matches!(k6, SvcKey::V6(_)));
    let (a4, a6) = (&d.next.applied[&k4], &d.next.applied[&k6]);
    assert_ne!(a4.value.id, a6.value.id, "one service id space");
    assert_ne!(a4.value.ring, a6.value.ring, "one ring space");
    assert_eq!((a4.value.backend_count, a6.value.backend_count), (1, 2));
    let ids: BTreeSet<u32> = d.next.backend_ids.values().copied().collect();
    assert_eq!(ids, BTreeSet::from([0, 1, 2]), "one backend id space");
    assert_eq!(d.next.port_values.get(&tcp(80)), Some(&port_flags::L4));
    assert_eq!(k6.addr(), v6);
    assert_eq!(k6.port(), 80);

    let services: Vec<_> = d.next.applied.iter().map(|(k, a)| (*k, a.value)).collect();
    let mut ports = vec![0u32; 2 * 65536];
    for (i, v) in &d.next.port_values {
        ports[*i as usize] = *v;
    }
    let backends: Vec<_> = d.next.backend_ids.iter().map(|(k, id)| (*id, *k)).collect();
    let st = State::adopt(services, ports, backends, now);
    assert_eq!(st.backend_ids, d.next.backend_ids);
    let d2 = run(&st, &p, now);
    assert!(
        !d2.ops.iter().any(|o| matches!(o, Op::AddBackend { .. })),
        "adopted ids kept: {:#?}",
        d2.ops
    );
}

/// The ring `backends` get from Maglev with the ids of `st`: what a cache hit must equal.
fn fresh_ring(st: &State, backends: &[Backend]) -> Vec<u32> {
    maglev::build(backends, MAGLEV_RING)
        .into_iter()
        .map(|i| st.backend_ids[&bkey(&backends[i as usize])])
        .collect()
}

#[test]
fn an_unchanged_service_reuses_its_cached_ring_and_is_not_rewritten() {
    let now = Instant::now();
    let (k80, k81) = (
        service_key(VIP, 80, PROTO_TCP),
        service_key(VIP, 81, PROTO_TCP),
    );
    let kept = vec![be(3), be(4)];
    let d1 = run(
        &State::default(),
        &plan(
            vec![svc(80, vec![be(1), be(2)]), svc(81, kept.clone())],
            &[],
        ),
        now,
    );
    let d2 = run(
        &d1.next,
        &plan(
            vec![svc(80, vec![be(1), be(5)]), svc(81, kept.clone())],
            &[],
        ),
        now,
    );
    // Only the changed service gets a ring and a switch.
    let written: Vec<&Op> = d2
        .ops
        .iter()
        .filter(|o| matches!(o, Op::WriteRing { .. } | Op::SetService { .. }))
        .collect();
    assert_eq!(written.len(), 2, "{written:#?}");
    assert!(is_set_service(written[1], &k80));
    // The unchanged one is the cached ring itself (not rebuilt), equal to a fresh build.
    assert!(Arc::ptr_eq(
        &d1.next.applied[&k81].ring,
        &d2.next.applied[&k81].ring
    ));
    assert_eq!(*d2.next.applied[&k81].ring, *fresh_ring(&d2.next, &kept));
    assert_eq!(
        *d2.next.applied[&k80].ring,
        *fresh_ring(&d2.next, &[be(1), be(5)])
    );
    // Proof that Maglev did not run for it: a cached ring that no build gives (every slot one
    // backend) is kept as it is, not rebuilt and rewritten.
    let mut st = d2.next.clone();
    let mut doctored = st.applied[&k81].clone();
    doctored.ring = vec![doctored.ring[0]; MAGLEV_RING as usize].into();
    st.applied.insert(k81, doctored.clone());
    let d3 = run(
        &st,
        &plan(vec![svc(80, vec![be(1), be(5)]), svc(81, kept)], &[]),
        now,
    );
    assert_eq!(d3.ops, vec![]);
    assert_eq!(d3.next.applied[&k81], doctored);
}

#[test]
fn a_weight_change_misses_the_ring_cache() {
    let now = Instant::now();
    let key = service_key(VIP, 80, PROTO_TCP);
    let d1 = run(
        &State::default(),
        &plan(vec![svc(80, vec![be(1), be(2)])], &[]),
        now,
    );
    let heavy = Backend { weight: 3, ..be(2) };
    let d2 = run(
        &d1.next,
        &plan(vec![svc(80, vec![be(1), heavy.clone()])], &[]),
        now,
    );
    assert!(d2.ops.iter().any(|o| matches!(o, Op::WriteRing { .. })));
    assert_eq!(
        *d2.next.applied[&key].ring,
        *fresh_ring(&d2.next, &[be(1), heavy])
    );
}

#[test]
fn a_cached_ring_whose_backend_ids_changed_is_rebuilt() {
    // A cache entry recorded with other ids than the state now gives (not reachable through
    // applies, which keep known backends' ids): it must miss, never hand out stale ids.
    let now = Instant::now();
    let key = service_key(VIP, 80, PROTO_TCP);
    let bs = vec![be(1), be(2)];
    let d1 = run(
        &State::default(),
        &plan(vec![svc(80, bs.clone())], &[]),
        now,
    );
    let mut st = d1.next.clone();
    st.backend_ids.insert(bkey(&be(1)), 7);
    let d2 = run(&st, &plan(vec![svc(80, bs.clone())], &[]), now);
    assert!(d2.ops.iter().any(|o| matches!(o, Op::WriteRing { .. })));
    assert_eq!(*d2.next.applied[&key].ring, *fresh_ring(&st, &bs));
    assert!(d2.next.applied[&key].ring.contains(&7));
}

#[test]
fn an_adopted_state_has_an_empty_cache_that_the_first_apply_fills() {
    let now = Instant::now();
    let key = service_key(VIP, 80, PROTO_TCP);
    let p = plan(vec![svc(80, vec![be(1), be(2)])], &[]);
    let d1 = run(&State::default(), &p, now);
    let services: Vec<_> = d1.next.applied.iter().map(|(k, a)| (*k, a.value)).collect();
    let mut ports = vec![0u32; 2 * 65536];
    for (i, v) in &d1.next.port_values {
        ports[*i as usize] = *v;
    }
    let backends: Vec<_> = d1
        .next
        .backend_ids
        .iter()
        .map(|(k, id)| (*id, *k))
        .collect();
    let st = State::adopt(services, ports, backends, now);
    assert_eq!(st.applied[&key].built_from, None);
    // Rebuilt from nothing (the same ring as before the restart, into a spare slot)...
    let d2 = run(&st, &p, now);
    assert!(d2.ops.iter().any(|o| matches!(o, Op::WriteRing { .. })));
    assert_eq!(d2.next.applied[&key].ring, d1.next.applied[&key].ring);
    // ...after which the cache holds and the same plan writes nothing.
    let d3 = run(&d2.next, &p, now);
    assert_eq!(d3.ops, vec![]);
}
