//! The pure half of an apply: from the state last applied and a new plan, the exact map writes,
//! as plain data and in the order that keeps forwarding correct while they happen
//! (make-before-break):
//!
//! 1. new backends (`BACKENDS`, their counters zeroed), then their next hops resolved, before any
//!    service points at them;
//! 2. the port filter (`PORTS`) opened for every port the plan uses, before its service exists;
//! 3. per new or changed service: its Maglev ring written into a free slot beside the live one,
//!    then the switch (one `SERVICES` update), after which the old slot is free for the next;
//! 4. deletions last: services gone from the plan, drain periods for their L4 ports, the port
//!    filter brought to the plan (draining ports kept open), then backends nothing refers to.
//!
//! Nothing here touches the kernel: `apply` executes the [`Op`]s one by one and records each in
//! the [`State`] once it succeeded ([`State::record`]), so a failed write leaves the state
//! describing what the maps hold. Ids are stable: a known backend `(addr, port)` or service key
//! keeps its id; new ones take the lowest free id.
//!
//! Ring cache: each applied service remembers what its ring was built from (its backends with
//! their weights and ids, in plan order). A service whose list is unchanged reuses its ring
//! without running Maglev again, and is neither rewritten nor switched. Adopted services have no
//! such record (ring contents are not read back), so their first apply rebuilds them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use gateway_common::{
    addr6, port_flags, svc_flags, ServiceKey, ServiceKey6, ServiceValue, MAGLEV_RING, MAX_BACKENDS,
    MAX_RINGS, MAX_SERVICES,
};

use crate::{
    maglev,
    plan::{Backend, HashMode, L4Service, NatMode, Plan},
};

/// A service's key in its family's map (`SERVICES` or `SERVICES6`). Both families share the
/// service ids, the rings and the port filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SvcKey {
    V4(ServiceKey),
    V6(ServiceKey6),
}

impl SvcKey {
    pub fn port(&self) -> u16 {
        match self {
            SvcKey::V4(k) => u16::from_be(k.port),
            SvcKey::V6(k) => u16::from_be(k.port),
        }
    }

    pub fn proto(&self) -> u8 {
        match self {
            SvcKey::V4(k) => k.proto,
            SvcKey::V6(k) => k.proto,
        }
    }

    pub fn addr(&self) -> IpAddr {
        match self {
            SvcKey::V4(k) => IpAddr::from(u32::from_be(k.addr).to_be_bytes()),
            SvcKey::V6(k) => IpAddr::from(gateway_common::addr6_bytes(k.addr)),
        }
    }
}

/// A backend: address and port (host order). Its id indexes `BACKENDS` or `BACKENDS6` by its
/// family (one id space for both).
pub type BackendKey = (IpAddr, u16);

/// What the data plane holds for one service, as last applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub value: ServiceValue,
    /// Backend ids in ring order (empty for local ports and services without backends).
    /// Shared, so that cloning the state or an op copies no ring.
    pub ring: Arc<[u32]>,
    /// What `ring` was built from (the ring cache's key); `None` when unknown (adopted state).
    pub built_from: Option<RingSource>,
}

/// A service's backends in plan order, each with its weight (in `Backend`) and its id: the ring
/// Maglev builds from them is a function of exactly this.
pub type RingSource = Arc<[(Backend, u32)]>;

/// What the maps hold, as far as applies are concerned (the connection table is never touched).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub applied: BTreeMap<SvcKey, Applied>,
    /// `(addr, port)` -> `BACKENDS`/`BACKENDS6` index.
    pub backend_ids: BTreeMap<BackendKey, u32>,
    /// Non-zero `PORTS` entries as last written (`port_flags`).
    pub port_values: BTreeMap<u32, u32>,
    /// L4 ports of removed services, open until their drain period ends.
    pub draining: BTreeMap<u32, Instant>,
    /// SNAT pools' port ranges (`--snat-pool`), whose ports get `port_flags::NAT` where they
    /// lie outside the default range: set by the agent, not by an apply.
    pub nat_ranges: Vec<(u16, u16)>,
}

/// One step of an apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `BACKENDS[id]` (or `BACKENDS6[id]`) = `addr:port` with no next hop yet;
    /// `BACKEND_STATS[id]` zeroed.
    AddBackend { id: u32, addr: IpAddr, port: u16 },
    /// Resolve the next hops of these backends (id -> address) into their family's map.
    ResolveNextHops(BTreeMap<u32, IpAddr>),
    /// `PORTS[idx]` = `value` (`port_flags`; 0 closes the port).
    SetPort { idx: u32, value: u32 },
    /// `SERVICE_STATS[id]` zeroed: a service id taken for the first time.
    ResetServiceStats { id: u32 },
    /// `MAGLEV[slot * MAGLEV_RING ..]` = `ring`.
    WriteRing { slot: u32, ring: Arc<[u32]> },
    /// `SERVICES[key]` = `value`: the switch to the ring in `value.ring`. `ring` is what that
    /// slot holds and `built_from` what it was built from (both for the state), and `freed` the
    /// slot this service leaves, if any.
    SetService {
        key: SvcKey,
        value: ServiceValue,
        ring: Arc<[u32]>,
        built_from: Option<RingSource>,
        freed: Option<u32>,
    },
    /// `SERVICES[key]` removed.
    RemoveService { key: SvcKey },
    /// State only: `PORTS[idx]` stays open for L4 until `since` + the drain period.
    StartDrain { idx: u32, since: Instant },
    /// State only: the drain of `PORTS[idx]` ends (the port is used again, or its period ended).
    EndDrain { idx: u32 },
    /// `BACKENDS[id]` (or `BACKENDS6[id]`) cleared (established flows carry their own rewrite
    /// and keep going).
    RemoveBackend { id: u32, addr: IpAddr, port: u16 },
}

/// A limit of the maps reached; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: limit of {limit} reached")]
pub struct Full {
    pub what: &'static str,
    pub limit: u32,
}

impl State {
    /// The state that pinned maps left by a previous agent describe: `services` as in
    /// `SERVICES` and `SERVICES6`, `ports` every `PORTS` entry in index order, `backends` the
    /// id and `(addr, port)` of every non-empty `BACKENDS` and `BACKENDS6` entry. Ring contents are not read back: a service with
    /// backends gets a ring no plan produces, so the first apply rewrites it once into a spare
    /// slot. Open L4 ports no adopted L4 service uses belong to services removed before the
    /// restart: they get a fresh drain period from `now`.
    pub fn adopt(
        services: impl IntoIterator<Item = (SvcKey, ServiceValue)>,
        ports: impl IntoIterator<Item = u32>,
        backends: impl IntoIterator<Item = (u32, BackendKey)>,
        now: Instant,
    ) -> State {
        let mut st = State::default();
        for (k, v) in services {
            let ring: Arc<[u32]> = if v.backend_count > 0 {
                Arc::from([u32::MAX])
            } else {
                Arc::from([])
            };
            st.applied.insert(
                k,
                Applied {
                    value: v,
                    ring,
                    built_from: None,
                },
            );
        }
        let used = st.l4_ports();
        for (idx, v) in ports.into_iter().enumerate() {
            let idx = idx as u32;
            if v != 0 {
                st.port_values.insert(idx, v);
            }
            if v & port_flags::L4 != 0 && !used.contains(&idx) {
                st.draining.insert(idx, now);
            }
        }
        for (id, key) in backends {
            st.backend_ids.insert(key, id);
        }
        st
    }

    /// Records `op` as done.
    pub fn record(&mut self, op: &Op) {
        match *op {
            Op::AddBackend { id, addr, port } => {
                self.backend_ids.insert((addr, port), id);
            }
            Op::ResolveNextHops(_) | Op::ResetServiceStats { .. } | Op::WriteRing { .. } => {}
            Op::SetPort { idx, value } => {
                if value == 0 {
                    self.port_values.remove(&idx);
                } else {
                    self.port_values.insert(idx, value);
                }
            }
            Op::SetService {
                key,
                value,
                ref ring,
                ref built_from,
                ..
            } => {
                self.applied.insert(
                    key,
                    Applied {
                        value,
                        ring: ring.clone(),
                        built_from: built_from.clone(),
                    },
                );
            }
            Op::RemoveService { key } => {
                self.applied.remove(&key);
            }
            Op::StartDrain { idx, since } => {
                self.draining.insert(idx, since);
            }
            Op::EndDrain { idx } => {
                self.draining.remove(&idx);
            }
            Op::RemoveBackend { addr, port, .. } => {
                self.backend_ids.remove(&(addr, port));
            }
        }
    }

    /// The `PORTS` indexes of the applied L4 (not local) services.
    fn l4_ports(&self) -> BTreeSet<u32> {
        self.applied
            .iter()
            .filter(|(_, a)| a.value.flags & svc_flags::LOCAL == 0)
            .map(|(k, _)| port_of(k))
            .collect()
    }
}

/// The ops of an apply and the state once they are all done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    pub ops: Vec<Op>,
    pub next: State,
}

/// Collects ops while keeping the state they lead to.
struct Builder {
    ops: Vec<Op>,
    st: State,
}

impl Builder {
    fn push(&mut self, op: Op) {
        self.st.record(&op);
        self.ops.push(op);
    }

    /// Brings `PORTS` to `want` (absent = 0), writing only the entries that change.
    fn ports(&mut self, want: &BTreeMap<u32, u32>) {
        for op in port_ops(&self.st.port_values, want) {
            self.push(op);
        }
    }
}

/// The `SetPort` ops that bring `PORTS` from `have` to `want` (absent = 0), in index order.
pub fn port_ops(have: &BTreeMap<u32, u32>, want: &BTreeMap<u32, u32>) -> Vec<Op> {
    let idxs: BTreeSet<u32> = want.keys().chain(have.keys()).copied().collect();
    idxs.into_iter()
        .filter_map(|idx| {
            let old = have.get(&idx).copied().unwrap_or(0);
            let new = want.get(&idx).copied().unwrap_or(0);
            (old != new).then_some(Op::SetPort { idx, value: new })
        })
        .collect()
}

/// Computes the apply of `plan` over `state` (see the module doc for the order). `now` starts
/// the drain periods of removed services' ports. Fails, before any write, if a map is full.
pub fn diff(state: &State, plan: &Plan, now: Instant) -> Result<Diff, Full> {
    let mut b = Builder {
        ops: Vec::new(),
        st: state.clone(),
    };

    // 1. Backends: keep ids of known (addr, port), allocate the lowest free id for new ones.
    let wanted: BTreeSet<BackendKey> = plan
        .l4
        .iter()
        .flat_map(|s| s.backends.iter())
        .map(|b| (b.addr, b.port))
        .collect();
    let mut used: BTreeSet<u32> = state.backend_ids.values().copied().collect();
    let mut backend_cursor = 0;
    let mut new_backends: BTreeMap<u32, IpAddr> = BTreeMap::new();
    for key in &wanted {
        if state.backend_ids.contains_key(key) {
            continue;
        }
        let id = next_free(&used, &mut backend_cursor, MAX_BACKENDS).ok_or(Full {
            what: "backends",
            limit: MAX_BACKENDS,
        })?;
        used.insert(id);
        b.push(Op::AddBackend {
            id,
            addr: key.0,
            port: key.1,
        });
        new_backends.insert(id, key.0);
    }

    // 2. Services: desired entries with their rings (unchanged ones taken from the cache).
    let desired = desired(plan, &b.st.backend_ids, &state.applied);

    // New backends get their next hop before any service points at them (known ones are kept
    // fresh by the agent's periodic refresh). Those not resolved yet are looked up per flow
    // until then.
    if !new_backends.is_empty() {
        b.push(Op::ResolveNextHops(new_backends));
    }

    // The port filter opens new ports before their services exist (make before break); L4
    // ports no longer used are closed after a drain period (`expire`).
    let ports_before = state.l4_ports();
    let ports_after: BTreeSet<u32> = desired
        .iter()
        .filter(|(_, w)| w.flags & svc_flags::LOCAL == 0)
        .map(|(k, _)| port_of(k))
        .collect();
    let mut want_ports = plan_ports(plan, &desired);
    nat_ports(&state.nat_ranges, &mut want_ports);
    let mut opening = b.st.port_values.clone();
    for (idx, f) in &want_ports {
        *opening.entry(*idx).or_default() |= f;
    }
    b.ports(&opening);

    let mut ids_used: BTreeSet<u32> = state.applied.values().map(|a| a.value.id).collect();
    let mut rings_used: BTreeSet<u32> = state
        .applied
        .values()
        .filter(|a| !a.ring.is_empty())
        .map(|a| a.value.ring)
        .collect();
    let (mut id_cursor, mut ring_cursor) = (0, 0);
    for (key, w) in desired.iter() {
        let (flags, ring) = (&w.flags, &w.ring);
        let old = state.applied.get(key);
        if let Some(o) = old {
            // A cached ring is the same allocation: no 4,099-slot comparison for it.
            if o.value.flags == *flags && (Arc::ptr_eq(&o.ring, ring) || o.ring == *ring) {
                continue;
            }
        }
        let id = match old {
            Some(o) => o.value.id,
            None => {
                let id = next_free(&ids_used, &mut id_cursor, MAX_SERVICES).ok_or(Full {
                    what: "services",
                    limit: MAX_SERVICES,
                })?;
                ids_used.insert(id);
                b.push(Op::ResetServiceStats { id });
                id
            }
        };
        let mut slot = 0;
        if !ring.is_empty() {
            slot = next_free(&rings_used, &mut ring_cursor, MAX_RINGS).ok_or(Full {
                what: "maglev rings",
                limit: MAX_RINGS,
            })?;
            rings_used.insert(slot);
            b.push(Op::WriteRing {
                slot,
                ring: ring.clone(),
            });
        }
        let value = ServiceValue {
            id,
            ring: slot,
            flags: *flags,
            backend_count: count_distinct(ring),
        };
        // After the switch the old slot serves nothing and may take the next service's ring.
        let freed = old.filter(|o| !o.ring.is_empty()).map(|o| o.value.ring);
        if let Some(f) = freed {
            rings_used.remove(&f);
        }
        b.push(Op::SetService {
            key: *key,
            value,
            ring: ring.clone(),
            built_from: w.built_from.clone(),
            freed,
        });
    }

    // 3. Deletions last: services gone from the plan, then backends nothing refers to.
    for key in state.applied.keys().filter(|k| !desired.contains_key(k)) {
        b.push(Op::RemoveService { key: *key });
    }
    // A removed service's port stays open for a drain period, so its established flows keep
    // reaching the connection table (a config change never drops a connection at once).
    for idx in ports_before.difference(&ports_after) {
        b.push(Op::StartDrain {
            idx: *idx,
            since: now,
        });
    }
    for idx in &ports_after {
        if b.st.draining.contains_key(idx) {
            b.push(Op::EndDrain { idx: *idx });
        }
    }
    for idx in b.st.draining.keys() {
        *want_ports.entry(*idx).or_default() |= port_flags::L4;
    }
    b.ports(&want_ports);
    let stale: Vec<BackendKey> = state
        .backend_ids
        .keys()
        .filter(|k| !wanted.contains(k))
        .copied()
        .collect();
    for (addr, port) in stale {
        let id = state.backend_ids[&(addr, port)];
        b.push(Op::RemoveBackend { id, addr, port });
    }
    Ok(Diff {
        ops: b.ops,
        next: b.st,
    })
}

/// The ops that close the L4 ports whose drain period (`period`) is over at `now`: the drains
/// end, then `PORTS` loses the L4 flag of those ports (the other flags stay).
pub fn expire(state: &State, now: Instant, period: Duration) -> Vec<Op> {
    let due: Vec<u32> = state
        .draining
        .iter()
        .filter(|(_, since)| now.saturating_duration_since(**since) >= period)
        .map(|(idx, _)| *idx)
        .collect();
    let mut want = state.port_values.clone();
    let mut ops = Vec::new();
    for idx in due {
        ops.push(Op::EndDrain { idx });
        if let Some(v) = want.get_mut(&idx) {
            *v &= !port_flags::L4;
        }
    }
    ops.extend(port_ops(&state.port_values, &want));
    ops
}

/// The writes that bring a hash map holding `have` to `want`: entries to insert or update (in key
/// order), then keys to remove.
pub fn sync_hash<K: Ord + Copy, V: PartialEq + Copy>(
    have: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) -> (Vec<(K, V)>, Vec<K>) {
    let upsert = want
        .iter()
        .filter(|(k, v)| have.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect();
    let remove = have
        .keys()
        .filter(|k| !want.contains_key(k))
        .copied()
        .collect();
    (upsert, remove)
}

/// What one service of a plan should be in the maps.
struct Want {
    flags: u32,
    ring: Arc<[u32]>,
    built_from: Option<RingSource>,
}

/// Service key -> what it should be, for every service of `plan`; `backend_ids` must know every
/// backend of the plan. A service whose backends, weights and ids are those its applied ring
/// was built from (`applied`) reuses that ring: Maglev runs only for new or changed services.
fn desired(
    plan: &Plan,
    backend_ids: &BTreeMap<BackendKey, u32>,
    applied: &BTreeMap<SvcKey, Applied>,
) -> BTreeMap<SvcKey, Want> {
    let mut desired: BTreeMap<SvcKey, Want> = BTreeMap::new();
    for s in &plan.l4 {
        let key = service_key(s.vip, s.port, s.proto.number());
        // Ids looked up once per backend, not once per ring slot (4,099 tree lookups per
        // service were most of a no-change apply).
        let src: Vec<(Backend, u32)> = s
            .backends
            .iter()
            .map(|b| (b.clone(), backend_ids[&(b.addr, b.port)]))
            .collect();
        let cached = applied.get(&key).and_then(|a| {
            a.built_from
                .as_ref()
                .filter(|f| ***f == *src)
                .map(|f| (a.ring.clone(), f.clone()))
        });
        let (ring, built_from) = cached.unwrap_or_else(|| {
            let ring: Arc<[u32]> = maglev::build(&s.backends, MAGLEV_RING)
                .into_iter()
                .map(|i| src[i as usize].1)
                .collect();
            (ring, Arc::from(src))
        });
        desired.insert(
            key,
            Want {
                flags: l4_flags(s),
                ring,
                built_from: Some(built_from),
            },
        );
    }
    for l in &plan.local {
        desired
            .entry(service_key(l.vip, l.port, gateway_common::PROTO_TCP))
            .or_insert(Want {
                flags: svc_flags::LOCAL,
                ring: Arc::from([]),
                built_from: None,
            });
    }
    desired
}

/// The lowest id at or above `cursor` not in `used`; the cursor moves past it, so allocating n
/// ids costs O(n log n), not O(n^2) (ids freed below the cursor are reused by the next apply).
fn next_free(used: &BTreeSet<u32>, cursor: &mut u32, max: u32) -> Option<u32> {
    while *cursor < max && used.contains(cursor) {
        *cursor += 1;
    }
    if *cursor >= max {
        return None;
    }
    let id = *cursor;
    *cursor += 1;
    Some(id)
}

/// `PORTS` entries a plan needs: its services' ports (L4 or L7), and the ports of
/// preserve-source backends, whose replies are recognised by source port.
fn plan_ports(plan: &Plan, desired: &BTreeMap<SvcKey, Want>) -> BTreeMap<u32, u32> {
    let mut m: BTreeMap<u32, u32> = BTreeMap::new();
    for (k, w) in desired {
        let f = if w.flags & svc_flags::LOCAL != 0 {
            port_flags::LOCAL
        } else {
            port_flags::L4
        };
        *m.entry(port_of(k)).or_default() |= f;
    }
    let ps = plan.l4.iter().filter(|s| s.nat == NatMode::PreserveSource);
    for s in ps {
        for b in &s.backends {
            let idx = gateway_common::port_index(s.proto.number(), b.port);
            *m.entry(idx).or_default() |= port_flags::PS_SRC;
        }
    }
    m
}

/// `port_flags::NAT` on every port of `ranges` outside `NAT_PORT_MIN..=NAT_PORT_MAX`, for TCP
/// and UDP: backends' replies to them are looked up in the connection tables.
fn nat_ports(ranges: &[(u16, u16)], m: &mut BTreeMap<u32, u32>) {
    let default = gateway_common::NAT_PORT_MIN..=gateway_common::NAT_PORT_MAX;
    for &(lo, hi) in ranges {
        for port in (lo..=hi).filter(|p| !default.contains(p)) {
            for proto in [gateway_common::PROTO_TCP, gateway_common::PROTO_UDP] {
                let idx = gateway_common::port_index(proto, port);
                *m.entry(idx).or_default() |= port_flags::NAT;
            }
        }
    }
}

/// A service key's index in `PORTS`.
pub fn port_of(k: &SvcKey) -> u32 {
    gateway_common::port_index(k.proto(), k.port())
}

/// The key of `vip:port/proto` in its family's services map.
pub fn service_key(vip: impl Into<IpAddr>, port: u16, proto: u8) -> SvcKey {
    match vip.into() {
        IpAddr::V4(a) => SvcKey::V4(ServiceKey {
            addr: u32::from(a).to_be(),
            port: port.to_be(),
            proto,
            _pad: 0,
        }),
        IpAddr::V6(a) => SvcKey::V6(ServiceKey6 {
            addr: addr6(a.octets()),
            port: port.to_be(),
            proto,
            _pad: 0,
        }),
    }
}

fn l4_flags(s: &L4Service) -> u32 {
    let mut f = 0;
    if s.nat == NatMode::Snat {
        f |= svc_flags::SNAT;
    }
    if s.hash == HashMode::SourceIp {
        f |= svc_flags::HASH_SRC_IP;
    }
    f
}

fn count_distinct(ring: &[u32]) -> u32 {
    let mut ids = ring.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.len() as u32
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
