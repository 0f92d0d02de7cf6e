//! The connection tables as `gateway dump bpf` shows them (admin `/conntrack?limit=N`): entry
//! counts by family, table and state as of now, the flows (client, VIP, backend, SNAT source,
//! state, idle time; capped), and the SNAT sources in use per egress interface and address
//! against what each can hold. Read-only: a walk of the four tables, as the collector's (one
//! syscall pair per entry), never a write.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap as StdHashMap},
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use aya::maps::{HashMap, MapData};
use gateway_common::{
    addr6_bytes, ct_flags, Addr6, Address, CtValueOf, FlowKeyOf, NAT_PORT_MAX, NAT_PORT_MIN,
    PROTO_TCP,
};

use super::{
    conntrack::{now_ns, snat_of, state_of},
    interface_addrs, Dataplane,
};

/// An address of either family's maps as an `IpAddr`.
pub trait IpOf {
    fn ip(self) -> IpAddr;
}
impl IpOf for u32 {
    fn ip(self) -> IpAddr {
        Ipv4Addr::from(u32::from_be(self)).into()
    }
}
impl IpOf for Addr6 {
    fn ip(self) -> IpAddr {
        Ipv6Addr::from(addr6_bytes(self)).into()
    }
}

/// One flow (its two entries, or the one the LRU left).
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct CtFlow {
    pub family: &'static str,
    /// "main" (confirmed) or "new" (unconfirmed).
    pub table: &'static str,
    pub proto: &'static str,
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub backend: SocketAddr,
    /// The source the backend sees, if the flow is masqueraded.
    pub snat: Option<SocketAddr>,
    pub state: &'static str,
    /// Since the latest packet either way (to within the program's 1 s refresh of `seen`).
    pub idle_s: u64,
    /// False if the LRU evicted the other direction's entry.
    pub paired: bool,
}

/// The SNAT sources of one egress interface's address.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct SnatUse {
    pub iface: String,
    pub addr: IpAddr,
    /// From a `--snat-pool` (else the interface's own address and the default range).
    pub pool: bool,
    /// Flows translated to this address.
    pub flows: u64,
    /// Distinct ports those flows hold.
    pub ports_used: u64,
    /// Ports of the range: what one backend can take from this address (a port is reused
    /// towards different backends, so `flows` may exceed it).
    pub capacity: u64,
    /// Flows of the backend holding the most on this address: the one that exhausts first.
    pub busiest_backend: u64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CtDump {
    /// Entries by `family/table/state` (two per paired flow).
    pub entries: BTreeMap<String, u64>,
    pub flows_total: u64,
    /// The first `limit` flows, ordered by family, VIP, client.
    pub flows: Vec<CtFlow>,
    /// Flows beyond the limit.
    pub left_out: u64,
    pub snat: Vec<SnatUse>,
}

/// A map address and network-order port as a socket address.
pub(super) fn sock<A: IpOf>(a: A, port: u16) -> SocketAddr {
    SocketAddr::new(a.ip(), u16::from_be(port))
}

/// The flows of one table.
fn walk<A>(
    map: &HashMap<MapData, FlowKeyOf<A>, CtValueOf<A>>,
    family: &'static str,
    confirmed: bool,
    now: u64,
    entries: &mut BTreeMap<String, u64>,
    out: &mut Vec<CtFlow>,
) where
    A: Address + Eq + Hash + aya::Pod + IpOf,
    FlowKeyOf<A>: aya::Pod,
    CtValueOf<A>: aya::Pod,
{
    let all: StdHashMap<FlowKeyOf<A>, CtValueOf<A>> = map.iter().filter_map(Result::ok).collect();
    let table = if confirmed { "main" } else { "new" };
    for (k, v) in &all {
        let pk = FlowKeyOf {
            saddr: v.daddr,
            daddr: v.saddr,
            sport: v.dport,
            dport: v.sport,
            proto: k.proto,
            _pad: [0; 3],
        };
        let peer = all.get(&pk);
        let reply = v.flags & ct_flags::REPLY != 0;
        // Each flow once: from its forward entry, or its reply entry if that is all there is.
        if reply && peer.is_some() {
            continue;
        }
        let (fk, fv) = if reply {
            // Reply key: backend -> SNAT source (or client); its value rewrites to VIP -> client.
            (
                FlowKeyOf {
                    saddr: v.daddr,
                    daddr: v.saddr,
                    sport: v.dport,
                    dport: v.sport,
                    proto: k.proto,
                    _pad: [0; 3],
                },
                CtValueOf {
                    saddr: k.daddr,
                    daddr: k.saddr,
                    sport: k.dport,
                    dport: k.sport,
                    ..*v
                },
            )
        } else {
            (*k, *v)
        };
        let pf = peer.map_or(0, |p| p.flags);
        let state = state_of(k.proto, confirmed, v.flags, pf).name();
        *entries
            .entry(format!("{family}/{table}/{state}"))
            .or_default() += 1 + u64::from(peer.is_some());
        let seen = peer.map_or(v.seen, |p| p.seen.max(v.seen));
        let snat = snat_of(k, v).map(|(s, _)| s);
        out.push(CtFlow {
            family,
            table,
            proto: if k.proto == PROTO_TCP { "tcp" } else { "udp" },
            client: sock(fk.saddr, fk.sport),
            vip: sock(fk.daddr, fk.dport),
            backend: sock(fv.daddr, fv.dport),
            snat,
            state,
            idle_s: now.saturating_sub(seen) / 1_000_000_000,
            paired: peer.is_some(),
        });
    }
}

/// One address's ports in use, flows per backend, and flows.
type Used = (BTreeSet<u16>, BTreeMap<SocketAddr, u64>, u64);

/// Per (interface, address) in use or configured: what `SnatUse` says.
pub fn snat_use(
    flows: impl IntoIterator<Item = (SocketAddr, SocketAddr)>,
    pools: &[super::snat_pool::PoolSpec],
    if_addrs: &StdHashMap<u32, Vec<IpAddr>>,
) -> Vec<SnatUse> {
    let if_name = |addr: &IpAddr| -> String {
        let idx = if_addrs
            .iter()
            .find(|(_, a)| a.contains(addr))
            .map(|(i, _)| *i);
        idx.and_then(nix_name).unwrap_or_else(|| "-".into())
    };
    // (iface, addr) -> (pool, capacity).
    let mut want: BTreeMap<(String, IpAddr), (bool, u64)> = BTreeMap::new();
    for p in pools {
        for a in p.ip_addrs() {
            want.insert(
                (p.iface.clone(), a),
                (true, u64::from(p.ports.1 - p.ports.0) + 1),
            );
        }
    }
    let default_cap = u64::from(NAT_PORT_MAX - NAT_PORT_MIN) + 1;
    let mut used: BTreeMap<(String, IpAddr), Used> = BTreeMap::new();
    for (s, backend) in flows {
        let key = want
            .keys()
            .find(|(_, a)| *a == s.ip())
            .cloned()
            .unwrap_or_else(|| (if_name(&s.ip()), s.ip()));
        want.entry(key.clone()).or_insert((false, default_cap));
        let u = used.entry(key).or_default();
        u.0.insert(s.port());
        *u.1.entry(backend).or_default() += 1;
        u.2 += 1;
    }
    want.into_iter()
        .map(|((iface, addr), (pool, capacity))| {
            let u = used.remove(&(iface.clone(), addr)).unwrap_or_default();
            SnatUse {
                iface,
                addr,
                pool,
                flows: u.2,
                ports_used: u.0.len() as u64,
                capacity,
                busiest_backend: u.1.values().copied().max().unwrap_or(0),
            }
        })
        .collect()
}

fn nix_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes, NUL-terminated, into buf.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

impl Dataplane {
    /// The connection tables now, with at most `limit` flows listed.
    pub fn conntrack_dump(&self, limit: usize) -> CtDump {
        let now = now_ns();
        let mut d = CtDump::default();
        let mut flows = Vec::new();
        walk(
            &self.conntrack,
            "ipv4",
            true,
            now,
            &mut d.entries,
            &mut flows,
        );
        walk(
            &self.conntrack_new,
            "ipv4",
            false,
            now,
            &mut d.entries,
            &mut flows,
        );
        walk(
            &self.conntrack6,
            "ipv6",
            true,
            now,
            &mut d.entries,
            &mut flows,
        );
        walk(
            &self.conntrack6_new,
            "ipv6",
            false,
            now,
            &mut d.entries,
            &mut flows,
        );
        let pairs = flows.iter().filter_map(|f| f.snat.map(|s| (s, f.backend)));
        d.snat = snat_use(pairs, &self.pools, &interface_addrs());
        flows.sort_by(|a, b| (a.family, a.vip, a.client).cmp(&(b.family, b.vip, b.client)));
        d.flows_total = flows.len() as u64;
        d.left_out = flows.len().saturating_sub(limit) as u64;
        flows.truncate(limit);
        d.flows = flows;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(client: &str, backend: &str, snat: Option<&str>) -> CtFlow {
        CtFlow {
            family: "ipv4",
            table: "main",
            proto: "tcp",
            client: client.parse().unwrap(),
            vip: "198.18.0.1:80".parse().unwrap(),
            backend: backend.parse().unwrap(),
            snat: snat.map(|s| s.parse().unwrap()),
            state: "established",
            idle_s: 0,
            paired: true,
        }
    }

    #[test]
    fn snat_use_counts_ports_per_address_and_lists_idle_pool_addresses() {
        let pools =
            vec![
                super::super::snat_pool::parse("eth9=198.18.1.10,198.18.1.11:20000-20009").unwrap(),
            ];
        let flows = [
            flow(
                "198.18.2.1:1000",
                "198.18.3.1:80",
                Some("198.18.1.10:20001"),
            ),
            flow(
                "198.18.2.1:1001",
                "198.18.3.2:80",
                Some("198.18.1.10:20001"),
            ),
            flow(
                "198.18.2.1:1002",
                "198.18.3.1:80",
                Some("198.18.1.10:20002"),
            ),
            flow("198.18.2.1:1003", "198.18.3.1:80", Some("198.18.4.1:61000")),
            flow("198.18.2.1:1004", "198.18.3.1:80", None),
        ];
        let pairs = flows.iter().filter_map(|f| f.snat.map(|s| (s, f.backend)));
        let u = snat_use(pairs, &pools, &StdHashMap::new());
        assert_eq!(u.len(), 3, "{u:?}");
        let a = u
            .iter()
            .find(|s| s.addr.to_string() == "198.18.1.10")
            .unwrap();
        assert_eq!(
            (
                a.iface.as_str(),
                a.pool,
                a.flows,
                a.ports_used,
                a.capacity,
                a.busiest_backend
            ),
            ("eth9", true, 3, 2, 10, 2)
        );
        let b = u
            .iter()
            .find(|s| s.addr.to_string() == "198.18.1.11")
            .unwrap();
        assert_eq!((b.flows, b.capacity), (0, 10));
        let c = u
            .iter()
            .find(|s| s.addr.to_string() == "198.18.4.1")
            .unwrap();
        assert_eq!(
            (c.iface.as_str(), c.pool, c.flows, c.capacity),
            ("-", false, 1, 4536)
        );
    }
}
