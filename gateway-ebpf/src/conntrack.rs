//! The connection tables: packets of known flows either way, replies recognised by port, the
//! move of a flow from the unconfirmed table (`CONNTRACK_NEW`) to the main one (`CONNTRACK`),
//! TCP state (FIN and RST per direction, the latest packet's time) and whether a flow is over so
//! that its SNAT port may be reused.
//!
//! State lives in the entries: which table (unconfirmed: only the client's first packet seen;
//! main: confirmed), `ct_flags::FIN`/`RST` per direction, and `seen`. The agent's garbage
//! collector expires entries by state and `seen`; the program never deletes on a timer.

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, maps::LruHashMap, programs::XdpContext,
};
use gateway_common::{
    ct_closed, ct_flags, port_flags, port_index, verdict, CtValueOf, FlowKeyOf, NAT_PORT_MAX,
    NAT_PORT_MIN, PROTO_TCP, SEEN_REFRESH_NS,
};

use crate::{
    family::Family,
    forward::{forward, send},
    maps::{BACKEND_STATS, PORTS, SERVICE_FLOWS, SERVICE_STATS},
    metrics,
    packet::Packet,
};

/// No service owns the packet. Still ours: a SNAT reply (to a port in the SNAT range or a
/// pool's) or a preserve-source reply (addressed to the client, from a backend's source port), if
/// a connection table knows it. Otherwise passed, and a miss on a SNAT port of the node is
/// counted apart (the connection-table pressure signal).
#[inline(always)]
pub fn not_ours<F: Family>(
    ctx: &XdpContext,
    pkt: &Packet<F>,
    key: &FlowKeyOf<F::A>,
    len: u64,
) -> (u32, u32) {
    let dport = u16::from_be(key.dport);
    let nat_range = (NAT_PORT_MIN..=NAT_PORT_MAX).contains(&dport)
        || PORTS
            .get(port_index(key.proto, dport))
            .is_some_and(|f| f & port_flags::NAT != 0);
    let ps_reply = || {
        PORTS
            .get(port_index(key.proto, u16::from_be(key.sport)))
            .is_some_and(|f| f & port_flags::PS_SRC != 0)
    };
    if nat_range || ps_reply() {
        if let Some(r) = known(ctx, pkt, key, len) {
            return r;
        }
    }
    let to_node = nat_range && F::is_node(&key.daddr);
    let reason = if to_node {
        verdict::PASS_NAT_MISS
    } else {
        verdict::PASS_NOT_OURS
    };
    (xdp_action::XDP_PASS, reason)
}

/// A packet of a flow either table knows (the main one first: one lookup for an established
/// flow), or None. The client's second packet of an unconfirmed flow moves both its entries to
/// the main table.
#[inline(always)]
pub fn known<F: Family>(
    ctx: &XdpContext,
    pkt: &Packet<F>,
    key: &FlowKeyOf<F::A>,
    len: u64,
) -> Option<(u32, u32)> {
    // One call of `established` whatever the table: each inlined copy is verified anew.
    let (ct, confirmed) = match F::conntrack().get_ptr_mut(key) {
        Some(ct) => (ct, true),
        None => {
            let new = F::conntrack_new().get_ptr_mut(key)?;
            // Safety: a map value pointer stays valid for the duration of the program.
            if unsafe { (*new).flags } & ct_flags::REPLY != 0 {
                // The backend's answer (a SYN-ACK, a UDP reply): confirms nothing.
                (new, false)
            } else {
                (confirm::<F>(key, new)?, true)
            }
        }
    };
    Some(established(ctx, pkt, ct, len, confirmed))
}

/// Moves an unconfirmed flow (forward entry `new` under `key`) to the main table: its reply
/// entry first, so a reply never misses, then the forward one; counted as a TCP connection
/// opened. Returns the main table's forward entry; None if the reply entry is gone (evicted
/// from the unconfirmed table) or the main table refused an insert: the caller then takes a
/// fresh decision for the packet.
#[inline(always)]
fn confirm<F: Family>(
    key: &FlowKeyOf<F::A>,
    new: *mut CtValueOf<F::A>,
) -> Option<*mut CtValueOf<F::A>> {
    let (main, unconfirmed) = (F::conntrack(), F::conntrack_new());
    // Safety: as above; nothing else frees the entry while this program runs on it.
    let fwd = unsafe { &mut *new };
    fwd.seen = unsafe { bpf_ktime_get_coarse_ns() };
    let rkey = F::flow_key(fwd.daddr, fwd.saddr, fwd.dport, fwd.sport, key.proto);
    let rev = unconfirmed.get_ptr_mut(&rkey)?;
    // Replaced if present: a main-table entry under this reply key belongs to an earlier flow
    // of the same client tuple (its port search saw it) or to a flow already over.
    main.insert(&rkey, unsafe { &*rev }, 0).ok()?;
    if main.insert(key, &*fwd, 0).is_err() {
        let _ = main.remove(&rkey);
        return None;
    }
    let _ = unconfirmed.remove(&rkey);
    let _ = unconfirmed.remove(key);
    if key.proto == PROTO_TCP {
        if let Some(c) = SERVICE_FLOWS.get_ptr_mut(fwd.service_id) {
            // Safety: per-CPU value, only this CPU writes it while the program runs.
            unsafe { (*c).opened += 1 };
        }
    }
    main.get_ptr_mut(key)
}

/// A packet of a known flow, either direction; `confirmed`: the entry is in the main table.
#[inline(always)]
pub fn established<F: Family>(
    ctx: &XdpContext,
    pkt: &Packet<F>,
    ct: *mut CtValueOf<F::A>,
    len: u64,
    confirmed: bool,
) -> (u32, u32) {
    // Safety: a map value pointer stays valid for the duration of the program.
    let ct = unsafe { &mut *ct };
    metrics::count(&SERVICE_STATS, ct.service_id, len);
    metrics::count(&BACKEND_STATS, ct.backend_id, len);
    let reply = ct.flags & ct_flags::REPLY != 0;
    metrics::count_flow(ct.service_id, reply, len);
    // The shared entry is written at most once a second per direction (the idle clock).
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.wrapping_sub(ct.seen) > SEEN_REFRESH_NS {
        ct.seen = now;
    }
    // FIN/RST mark the entry, so the collector expires a closed flow within seconds and its
    // SNAT port can be taken by a new flow (only these rare packets write the flags).
    let close = pkt.close_flags();
    if close != 0 && ct.flags & close != close {
        let before = ct.flags;
        ct.flags |= close;
        if confirmed {
            count_close::<F>(ct, before);
        }
    }
    if !reply {
        // Towards the backend: its next hop, resolved in advance, unless the backend is gone
        // (its id free or reused by another address) or not resolved yet.
        if let Some(b) = F::backends().get(ct.backend_id) {
            if b.nh_ifindex != 0 && b.addr == ct.daddr {
                return send(
                    ctx,
                    pkt,
                    ct,
                    b.nh_ifindex,
                    &b.nh_smac,
                    &b.nh_dmac,
                    verdict::FWD_ESTABLISHED,
                );
            }
        }
    }
    forward(ctx, pkt, ct, verdict::FWD_ESTABLISHED)
}

/// Counts a TCP connection closed when the flags just set on `ct` (they were `before`) end it:
/// the first RST, or the FIN that completes both. Two closing packets racing on two CPUs may
/// both or neither count it (rare; the agent's collector never counts a flow twice either way).
#[inline(always)]
fn count_close<F: Family>(ct: &CtValueOf<F::A>, before: u32) {
    let peer_key = F::flow_key(ct.daddr, ct.saddr, ct.dport, ct.sport, PROTO_TCP);
    let peer = unsafe { F::conntrack().get(&peer_key) }.map_or(0, |p| p.flags);
    if !ct_closed(before, peer) && ct_closed(ct.flags, peer) {
        if let Some(c) = SERVICE_FLOWS.get_ptr_mut(ct.service_id) {
            // Safety: per-CPU value, only this CPU writes it while the program runs.
            unsafe { (*c).closed += 1 };
        }
    }
}

/// The forward key of the flow owning the reply entry `rev` (in `table`, the main or the
/// unconfirmed one) if that flow is over, so its SNAT port may be reused: a RST either way, a
/// FIN both ways, or its forward entry already gone (evicted). A half-closed flow (FIN one way
/// only) may still carry data and keeps its port. Reusing right after the close is what the
/// kernel's conntrack does for a new SYN on a TIME_WAIT tuple; a backend that closed first and
/// still holds TIME_WAIT answers the new SYN by its own rules (RFC 6191 timestamps, or a
/// challenge ACK and a client retry).
#[inline(always)]
pub fn closed_flow<F: Family>(
    table: &LruHashMap<FlowKeyOf<F::A>, CtValueOf<F::A>>,
    rev: &CtValueOf<F::A>,
    proto: u8,
) -> Option<FlowKeyOf<F::A>> {
    if proto != PROTO_TCP {
        return None;
    }
    let fwd_key = F::flow_key(rev.daddr, rev.saddr, rev.dport, rev.sport, proto);
    if rev.flags & ct_flags::RST != 0 {
        return Some(fwd_key);
    }
    match unsafe { table.get(&fwd_key) } {
        None => Some(fwd_key),
        Some(f) if ct_closed(f.flags, rev.flags) => Some(fwd_key),
        Some(_) => None,
    }
}
