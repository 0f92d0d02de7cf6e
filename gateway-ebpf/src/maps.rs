//! The maps, declared once; names and sizes come from gateway-common, which the agent shares.
//! All are pinned by name so that a restarted agent adopts them and flows keep going.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use gateway_common::{
    Addr6, Backend, Backend6, Counters, CtValue, CtValue6, FlowCounters, FlowKey, FlowKey6, IfAddr,
    ServiceKey, ServiceKey6, ServiceValue, SnatPool, CONNTRACK6_MAX, CONNTRACK6_NEW_MAX,
    CONNTRACK_MAX, CONNTRACK_NEW_MAX, MAGLEV_MAP_FLAGS, MAGLEV_RING, MAX_ADDRS, MAX_BACKENDS, MAX_IFADDRS, MAX_RINGS,
    MAX_SERVICES,
};

/// Index `port_index(proto, port)` -> `port_flags` (what uses the port): the first, inlined
/// check of every packet.
#[map]
pub static PORTS: Array<u32> = Array::pinned(gateway_common::PORTS_LEN, 0);

/// Address -> `addr_flags` (the node's own addresses).
#[map]
pub static ADDRS: HashMap<u32, u32> = HashMap::pinned(MAX_ADDRS, 0);

#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_SERVICES, 0);

#[map]
pub static BACKENDS: Array<Backend> = Array::pinned(MAX_BACKENDS, 0);

/// Rings of `MAGLEV_RING` backend ids, `MAX_RINGS` of them back to back. Mmapable: the agent
/// writes rings through a shared mapping (`MAGLEV_MAP_FLAGS`).
#[map]
pub static MAGLEV: Array<u32> = Array::pinned(MAX_RINGS * MAGLEV_RING, MAGLEV_MAP_FLAGS);

/// Shared (not per-CPU): a flow's reply may arrive on another CPU than its request.
#[map]
pub static CONNTRACK: LruHashMap<FlowKey, CtValue> = LruHashMap::pinned(CONNTRACK_MAX, 0);

/// Unconfirmed flows (both entries of a flow whose client sent one packet so far): a table of
/// their own, so that a SYN flood never evicts an established flow from `CONNTRACK`.
#[map]
pub static CONNTRACK_NEW: LruHashMap<FlowKey, CtValue> = LruHashMap::pinned(CONNTRACK_NEW_MAX, 0);

#[map]
pub static IFADDRS: HashMap<u32, IfAddr> = HashMap::pinned(MAX_IFADDRS, 0);

/// Interface index -> its SNAT pool (IPv4), set by `--snat-pool`.
#[map]
pub static SNAT_POOLS: HashMap<u32, SnatPool> = HashMap::pinned(MAX_IFADDRS, 0);

/// Per service: TCP connections opened and closed, bytes each way.
#[map]
pub static SERVICE_FLOWS: PerCpuArray<FlowCounters> = PerCpuArray::pinned(MAX_SERVICES, 0);

#[map]
pub static SERVICE_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(MAX_SERVICES, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(MAX_BACKENDS, 0);

#[map]
pub static VERDICTS: PerCpuArray<Counters> = PerCpuArray::pinned(gateway_common::verdict::COUNT, 0);

// IPv6: the same roles with IPv6 keys, so the IPv4 maps keep their sizes. Services of both
// families share the service ids (`SERVICE_STATS`) and `MAGLEV` slots; backends share the id
// space (`BACKEND_STATS`), each id used in `BACKENDS` or `BACKENDS6`.

/// IPv6 address -> `addr_flags` (the node's own addresses).
#[map]
pub static ADDRS6: HashMap<Addr6, u32> = HashMap::pinned(MAX_ADDRS, 0);

#[map]
pub static SERVICES6: HashMap<ServiceKey6, ServiceValue> = HashMap::pinned(MAX_SERVICES, 0);

#[map]
pub static BACKENDS6: Array<Backend6> = Array::pinned(MAX_BACKENDS, 0);

#[map]
pub static CONNTRACK6: LruHashMap<FlowKey6, CtValue6> = LruHashMap::pinned(CONNTRACK6_MAX, 0);

#[map]
pub static CONNTRACK6_NEW: LruHashMap<FlowKey6, CtValue6> =
    LruHashMap::pinned(CONNTRACK6_NEW_MAX, 0);

/// Interface index -> its IPv6 SNAT source (a global address; zero: none).
#[map]
pub static IFADDRS6: HashMap<u32, Addr6> = HashMap::pinned(MAX_IFADDRS, 0);

/// The IPv6 path's per-CPU work area (new-flow entries, FIB query): too large for its stack.
/// Not pinned: nothing in it outlives one packet.
#[map]
pub static SCRATCH6: PerCpuArray<crate::family::Scratch6> = PerCpuArray::with_max_entries(1, 0);

/// The per-CPU token bucket limiting the time-exceeded messages the program sends (`icmp`).
/// Not pinned: a restarted agent starts with a full bucket.
#[map]
pub static ICMP_BUCKET: PerCpuArray<crate::icmp::IcmpBucket> = PerCpuArray::with_max_entries(1, 0);
