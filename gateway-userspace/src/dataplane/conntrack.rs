//! The connection tables' garbage collector: walks `CONNTRACK`/`CONNTRACK6` (confirmed flows)
//! and `CONNTRACK_NEW`/`CONNTRACK6_NEW` (flows whose client sent one packet), pairs each flow's
//! two entries, and deletes both once the flow has been idle longer than its state's timeout.
//! The program only marks state (FIN/RST per direction, the latest packet's time in `seen`);
//! deciding and deleting is here, as Cilium's agent does for its CT maps.
//!
//! Per-state timeouts, each a `gateway run` flag with Cilium's default (IPVS's in brackets):
//! confirmed TCP 6h (`--ct-timeout-tcp`; IPVS 900 s), unconfirmed TCP (SYN seen, no second
//! client packet) 60 s (`--ct-timeout-tcp-syn`; IPVS 120 s for SYN_RECV), closed TCP (a RST, or
//! a FIN each way) 10 s (`--ct-timeout-tcp-fin`; IPVS 120 s TIME_WAIT), anything else (UDP)
//! 60 s (`--ct-timeout-any`; IPVS 300 s). A half-closed flow (FIN one way) keeps the TCP timeout:
//! it may still carry data.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    hash::Hash,
    net::SocketAddr,
    time::Duration,
};

use aya::maps::{HashMap, MapData};
use gateway_common::{ct_closed, ct_flags, Address, CtValueOf, FlowKeyOf, PROTO_TCP};

use super::{
    ct_dump::{sock, IpOf, SnatUse},
    map_err, DataplaneError,
};

/// Per-state idle timeouts and how often the collector runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtTimeouts {
    pub tcp: Duration,
    pub tcp_syn: Duration,
    pub tcp_fin: Duration,
    pub any: Duration,
    pub gc_interval: Duration,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        CtTimeouts {
            tcp: Duration::from_secs(6 * 3600),
            tcp_syn: Duration::from_secs(60),
            tcp_fin: Duration::from_secs(10),
            any: Duration::from_secs(60),
            gc_interval: Duration::from_secs(5),
        }
    }
}

/// A flow's state as the collector names it (the `state` label of
/// `gateway_conntrack_entries`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    /// TCP, unconfirmed table: the SYN forwarded, no second client packet yet.
    SynSent,
    /// TCP, confirmed, neither side closed.
    Established,
    /// TCP, confirmed, a FIN one way only.
    HalfClosed,
    /// TCP: a RST, or a FIN each way.
    Closed,
    /// UDP (either table).
    Udp,
}

impl CtState {
    pub fn name(self) -> &'static str {
        match self {
            CtState::SynSent => "syn_sent",
            CtState::Established => "established",
            CtState::HalfClosed => "half_closed",
            CtState::Closed => "closed",
            CtState::Udp => "udp",
        }
    }

    /// Why an expired flow of this state was deleted (the `reason` label of
    /// `gateway_conntrack_deleted_total`).
    pub fn expiry_reason(self) -> &'static str {
        match self {
            CtState::SynSent => "syn_timeout",
            CtState::Established | CtState::HalfClosed => "tcp_idle",
            CtState::Closed => "closed",
            CtState::Udp => "udp_idle",
        }
    }

    fn timeout(self, t: &CtTimeouts) -> Duration {
        match self {
            CtState::SynSent => t.tcp_syn,
            CtState::Established | CtState::HalfClosed => t.tcp,
            CtState::Closed => t.tcp_fin,
            CtState::Udp => t.any,
        }
    }
}

/// The state of a flow whose entries carry `a` and `b` (`ct_flags`; 0 for a missing entry).
pub fn state_of(proto: u8, confirmed: bool, a: u32, b: u32) -> CtState {
    if proto != PROTO_TCP {
        CtState::Udp
    } else if ct_closed(a, b) {
        CtState::Closed
    } else if !confirmed {
        CtState::SynSent
    } else if (a | b) & ct_flags::FIN != 0 {
        CtState::HalfClosed
    } else {
        CtState::Established
    }
}

/// What one collection saw and did, per family ("ipv4", "ipv6").
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CtCounts {
    /// Entries left after the collection, by (family, table, state); table "main" or "new".
    #[serde(serialize_with = "joined3")]
    pub entries: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// Entries deleted, by (family, reason), since the agent started.
    #[serde(serialize_with = "joined2")]
    pub deleted: BTreeMap<(&'static str, &'static str), u64>,
    /// TCP connections of confirmed flows the collector ended without a close seen (idle), per
    /// service id: added to the program's closed count.
    pub idle_closed: BTreeMap<u32, u64>,
    /// Flows whose other entry was missing (evicted by the LRU), since the agent started.
    pub orphans: u64,
    /// The SNAT sources of the flows left, per egress interface and address (the
    /// `gateway_snat_*` series; `gateway dump bpf` computes the same from its own walk).
    pub snat: Vec<SnatUse>,
}

/// The SNAT source and backend of the flow `k`/`v` is an entry of, if it is masqueraded. A
/// forward entry (client -> VIP) rewrites to SNAT source -> backend; a reply entry (backend ->
/// SNAT source) rewrites to VIP -> client.
pub fn snat_of<A: Address + IpOf>(
    k: &FlowKeyOf<A>,
    v: &CtValueOf<A>,
) -> Option<(SocketAddr, SocketAddr)> {
    if v.flags & ct_flags::REPLY == 0 {
        (v.saddr != k.saddr || v.sport != k.sport)
            .then(|| (sock(v.saddr, v.sport), sock(v.daddr, v.dport)))
    } else {
        (v.daddr != k.daddr || v.dport != k.dport)
            .then(|| (sock(k.daddr, k.dport), sock(k.saddr, k.sport)))
    }
}

/// JSON object keys are strings: `ipv4/main/established`.
fn joined3<S: serde::Serializer>(
    m: &BTreeMap<(&'static str, &'static str, &'static str), u64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|((a, b, c), n)| (format!("{a}/{b}/{c}"), n)))
}

/// As `joined3`: `ipv4/closed`.
fn joined2<S: serde::Serializer>(
    m: &BTreeMap<(&'static str, &'static str), u64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|((a, b), n)| (format!("{a}/{b}"), n)))
}

/// The monotonic clock the program's `bpf_ktime_get_coarse_ns` reads.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The key of the other direction's entry of the flow whose entry holds `v`.
fn peer_key<A: Address>(v: &CtValueOf<A>, proto: u8) -> FlowKeyOf<A> {
    FlowKeyOf {
        saddr: v.daddr,
        daddr: v.saddr,
        sport: v.dport,
        dport: v.sport,
        proto,
        _pad: [0; 3],
    }
}

/// One table's collection: deletes the expired flows (both entries), counts what stays, and
/// adds the (SNAT source, backend) of each masqueraded flow that stays to `snat`.
/// `confirmed`: the main table (else the unconfirmed one).
#[allow(clippy::too_many_arguments)]
pub fn collect<A>(
    map: &mut HashMap<MapData, FlowKeyOf<A>, CtValueOf<A>>,
    name: &'static str,
    family: &'static str,
    confirmed: bool,
    t: &CtTimeouts,
    now: u64,
    counts: &mut CtCounts,
    snat: &mut Vec<(SocketAddr, SocketAddr)>,
) -> Result<(), DataplaneError>
where
    A: Address + Eq + Hash + aya::Pod + IpOf,
    FlowKeyOf<A>: aya::Pod,
    CtValueOf<A>: aya::Pod,
{
    // Read first, delete after: deleting while walking a hash map restarts the walk.
    let entries: StdHashMap<FlowKeyOf<A>, CtValueOf<A>> = map
        .iter()
        .filter_map(Result::ok)
        .collect::<StdHashMap<_, _>>();
    let table = if confirmed { "main" } else { "new" };
    let mut done: std::collections::HashSet<FlowKeyOf<A>> = Default::default();
    let mut expired: Vec<(FlowKeyOf<A>, Option<FlowKeyOf<A>>, CtState)> = Vec::new();
    for (k, v) in &entries {
        if done.contains(k) {
            continue;
        }
        let pk = peer_key(v, k.proto);
        let peer = entries.get(&pk);
        done.insert(*k);
        if peer.is_some() {
            done.insert(pk);
        } else {
            counts.orphans += 1;
        }
        let pf = peer.map_or(0, |p| p.flags);
        let state = state_of(k.proto, confirmed, v.flags, pf);
        let seen = peer.map_or(v.seen, |p| p.seen.max(v.seen));
        let idle = Duration::from_nanos(now.saturating_sub(seen));
        let n = 1 + u64::from(peer.is_some());
        if idle > state.timeout(t) {
            expired.push((*k, peer.map(|_| pk), state));
            if confirmed
                && k.proto == PROTO_TCP
                && matches!(state, CtState::Established | CtState::HalfClosed)
            {
                *counts.idle_closed.entry(v.service_id).or_default() += 1;
            }
        } else {
            *counts
                .entries
                .entry((family, table, state.name()))
                .or_default() += n;
            snat.extend(snat_of(k, v));
        }
    }
    for (k, pk, state) in expired {
        for key in std::iter::once(k).chain(pk) {
            match map.remove(&key) {
                Ok(()) => {
                    *counts
                        .deleted
                        .entry((family, state.expiry_reason()))
                        .or_default() += 1;
                }
                // Gone meanwhile (the LRU evicted it, or the program replaced the flow).
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{ct_flags, snat_of, state_of, CtCounts, CtState, CtValueOf, FlowKeyOf, PROTO_TCP};

    #[test]
    fn states_follow_flags_and_table() {
        use ct_flags::{FIN, REPLY, RST};
        assert_eq!(state_of(17, true, 0, REPLY), CtState::Udp);
        assert_eq!(state_of(PROTO_TCP, false, 0, REPLY), CtState::SynSent);
        assert_eq!(state_of(PROTO_TCP, false, 0, REPLY | RST), CtState::Closed);
        assert_eq!(state_of(PROTO_TCP, true, 0, REPLY), CtState::Established);
        assert_eq!(state_of(PROTO_TCP, true, FIN, REPLY), CtState::HalfClosed);
        assert_eq!(state_of(PROTO_TCP, true, FIN, REPLY | FIN), CtState::Closed);
        assert_eq!(state_of(PROTO_TCP, true, RST, REPLY), CtState::Closed);
    }

    #[test]
    fn snat_source_and_backend_from_either_entry() {
        // Client 198.18.0.1:1000 -> VIP 198.18.0.100:80, masqueraded to 198.18.0.2:30000 towards
        // backend 198.18.1.1:8080.
        let ip = |a: [u8; 4]| u32::from_ne_bytes(a);
        let (client, vip, src, be) = (
            ip([198, 18, 0, 1]),
            ip([198, 18, 0, 100]),
            ip([198, 18, 0, 2]),
            ip([198, 18, 1, 1]),
        );
        let (cp, vp, sp, bp) = (
            1000u16.to_be(),
            80u16.to_be(),
            30000u16.to_be(),
            8080u16.to_be(),
        );
        let key = |saddr, sport, daddr, dport| FlowKeyOf {
            saddr,
            daddr,
            sport,
            dport,
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        let val = |saddr, sport, daddr, dport, flags| CtValueOf {
            saddr,
            daddr,
            sport,
            dport,
            service_id: 1,
            backend_id: 1,
            flags,
            nh_ifindex: 0,
            nh_smac: [0; 6],
            nh_dmac: [0; 6],
            nh_ts: 0,
            seen: 0,
        };
        let want = Some((
            "198.18.0.2:30000".parse().unwrap(),
            "198.18.1.1:8080".parse().unwrap(),
        ));
        let fwd = (key(client, cp, vip, vp), val(src, sp, be, bp, 0));
        assert_eq!(snat_of(&fwd.0, &fwd.1), want);
        let reply = (
            key(be, bp, src, sp),
            val(vip, vp, client, cp, ct_flags::REPLY),
        );
        assert_eq!(snat_of(&reply.0, &reply.1), want);
        // Preserve-source: the backend sees the client itself.
        let fwd = (key(client, cp, vip, vp), val(client, cp, be, bp, 0));
        assert_eq!(snat_of(&fwd.0, &fwd.1), None);
        let reply = (
            key(be, bp, client, cp),
            val(vip, vp, client, cp, ct_flags::REPLY),
        );
        assert_eq!(snat_of(&reply.0, &reply.1), None);
    }

    #[test]
    fn counts_serialize_with_string_keys() {
        let mut c = CtCounts::default();
        c.entries.insert(("ipv4", "main", "established"), 2);
        c.deleted.insert(("ipv6", "closed"), 4);
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["entries"]["ipv4/main/established"], 2);
        assert_eq!(j["deleted"]["ipv6/closed"], 4);
    }
}
